//! Radial frequency bands: which DFT bin belongs to which band.
//!
//! The spectral-bias measures all aggregate per band, so the assignment is computed once per
//! (size, band count, spacing) and shared through [`Bands::cached`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use super::fft::radial_frequencies;
use crate::error::{Error, Result};

/// How band edges are placed between DC and Nyquist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BandSpacing {
    /// Equal widths `0.5 / n` in normalised frequency.
    Linear,
    /// Band 0 is `[0, f_lo)` with `f_lo = 1 / max(width, height)` (the lowest non-zero
    /// frequency along the longer axis, so band 0 holds DC alone); the remaining edges are
    /// geometric from `f_lo` to 0.5. Natural images have power-law spectra, so this gives the
    /// low bands (where most energy is) finer resolution.
    Log,
}

/// A partition of the DFT bins of one image size into radial bands.
///
/// Band `b` holds the bins with radial frequency `r` in `[edges[b], edges[b + 1])`, half-open,
/// so a bin lying exactly on an edge goes to the upper band. The last band is closed above by
/// nothing: the corner bins beyond Nyquist (`0.5 < r ≤ 0.707`) belong to it, because they are
/// the highest frequencies the image has and dropping them would break Parseval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bands {
    /// Image columns.
    pub width: usize,
    /// Image rows.
    pub height: usize,
    /// How the edges were placed.
    pub spacing: BandSpacing,
    /// `n_bands + 1` edges in cycles/pixel; `edges[0] = 0`, the last is 0.5 (nominal: see above).
    pub edges: Vec<f64>,
    /// Band of each bin, unshifted DFT layout (`ky * width + kx`).
    pub band_of: Vec<u32>,
    /// Number of bins in each band.
    pub counts: Vec<usize>,
}

impl Bands {
    /// Assigns every bin of a `width × height` spectrum to one of `n_bands` radial bands.
    ///
    /// Errors if a band would contain no bin (too many bands for the size), since every
    /// per-band measure would be undefined there.
    pub fn new(width: usize, height: usize, n_bands: usize, spacing: BandSpacing) -> Result<Self> {
        if width == 0 || height == 0 {
            return Err(Error::invalid(format!(
                "bands need a non-empty image, not {width}x{height}"
            )));
        }
        if n_bands == 0 || n_bands > u32::MAX as usize {
            return Err(Error::invalid(format!(
                "the number of bands must be at least 1, not {n_bands}"
            )));
        }
        let edges = band_edges(width, height, n_bands, spacing)?;
        let radial = radial_frequencies(width, height);
        let mut counts = vec![0usize; n_bands];
        let band_of: Vec<u32> = radial
            .iter()
            .map(|&r| {
                // Count of edges[1..n] that are ≤ r: the band index, capped at n−1 by construction.
                let b = edges[1..n_bands].partition_point(|&e| e <= r);
                counts[b] += 1;
                b as u32
            })
            .collect();
        if let Some(empty) = counts.iter().position(|&c| c == 0) {
            return Err(Error::invalid(format!(
                "band {empty} of {n_bands} ({:?}, [{:.4}, {:.4})) has no frequency bin in a \
                 {width}x{height} image; use fewer bands",
                spacing,
                edges[empty],
                edges[empty + 1]
            )));
        }
        Ok(Bands {
            width,
            height,
            spacing,
            edges,
            band_of,
            counts,
        })
    }

    /// Like [`Bands::new`], but shared: the same arguments return the same `Arc` for the life of
    /// the process, so analysers of many runs of one size build the masks once.
    pub fn cached(
        width: usize,
        height: usize,
        n_bands: usize,
        spacing: BandSpacing,
    ) -> Result<Arc<Self>> {
        type Key = (usize, usize, usize, BandSpacing);
        static CACHE: OnceLock<Mutex<HashMap<Key, Arc<Bands>>>> = OnceLock::new();
        let key = (width, height, n_bands, spacing);
        let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
        if let Some(b) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(Arc::clone(b));
        }
        // Built outside the lock: a race only builds the same thing twice.
        let built = Arc::new(Bands::new(width, height, n_bands, spacing)?);
        let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
        Ok(Arc::clone(map.entry(key).or_insert(built)))
    }

    /// Number of bands.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Always false: construction refuses zero bands. Present for clippy's `len` convention.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Bins per channel (`width * height`).
    pub fn bins(&self) -> usize {
        self.band_of.len()
    }

    /// The band containing radial frequency `r` (cycles/pixel), by the same rule as the masks.
    pub fn band_of_frequency(&self, r: f64) -> usize {
        self.edges[1..self.len()].partition_point(|&e| e <= r)
    }

    /// Boolean mask of band `b` over the unshifted layout, for callers that want a picture.
    pub fn mask(&self, b: usize) -> Vec<bool> {
        self.band_of.iter().map(|&k| k as usize == b).collect()
    }

    /// Sums a per-bin quantity into bands.
    pub fn sum_per_band(&self, per_bin: &[f64]) -> Vec<f64> {
        debug_assert_eq!(per_bin.len(), self.bins());
        let mut acc = vec![0.0; self.len()];
        for (&b, &v) in self.band_of.iter().zip(per_bin) {
            acc[b as usize] += v;
        }
        acc
    }
}

fn band_edges(width: usize, height: usize, n: usize, spacing: BandSpacing) -> Result<Vec<f64>> {
    let mut edges = Vec::with_capacity(n + 1);
    edges.push(0.0);
    match spacing {
        BandSpacing::Linear => {
            // b / (2n) rather than 0.5 * b / n: exact for the edges that coincide with bins.
            edges.extend((1..=n).map(|b| b as f64 / (2 * n) as f64));
        }
        BandSpacing::Log => {
            if n > 1 {
                let lo = 1.0 / width.max(height) as f64;
                if lo >= 0.5 {
                    return Err(Error::invalid(format!(
                        "log-spaced bands need an image larger than {width}x{height}"
                    )));
                }
                let ratio = 0.5 / lo;
                for b in 1..n {
                    edges.push(lo * ratio.powf((b - 1) as f64 / (n - 1) as f64));
                }
            }
            edges.push(0.5);
        }
    }
    Ok(edges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_edges_are_even() {
        let b = Bands::new(16, 16, 4, BandSpacing::Linear).unwrap();
        assert_eq!(b.edges, vec![0.0, 0.125, 0.25, 0.375, 0.5]);
        // DC in band 0; a bin on an edge goes to the upper band; the corner goes to the last.
        assert_eq!(b.band_of[0], 0);
        assert_eq!(b.band_of[2], 1); // fx = 2/16 = 0.125
        assert_eq!(b.band_of[8 * 16 + 8], 3); // r ≈ 0.707
    }

    #[test]
    fn log_edges_start_at_lowest_frequency() {
        let b = Bands::new(32, 20, 5, BandSpacing::Log).unwrap();
        assert_eq!(b.edges.len(), 6);
        assert!((b.edges[1] - 1.0 / 32.0).abs() < 1e-15);
        assert_eq!(*b.edges.last().unwrap(), 0.5);
        assert_eq!(b.counts[0], 1, "band 0 is DC alone");
        for w in b.edges.windows(2) {
            assert!(w[0] < w[1]);
        }
    }

    #[test]
    fn too_many_bands_is_an_error() {
        assert!(Bands::new(8, 8, 40, BandSpacing::Linear).is_err());
        assert!(Bands::new(8, 8, 0, BandSpacing::Linear).is_err());
    }

    #[test]
    fn cache_shares() {
        let a = Bands::cached(12, 10, 3, BandSpacing::Linear).unwrap();
        let b = Bands::cached(12, 10, 3, BandSpacing::Linear).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    }
}

//! Per-band measures of a DIP trajectory: energy, fit, Shi et al.'s correspondence, half-times,
//! and the distance between two runs.
//!
//! Energies are Parseval-normalised, `E_b(x) = Σ_{bins in b} |F(x)|² / N` with `N = w·h`, so
//! the bands of an image add up to its pixel-domain `Σ x²` and distances per band add up to
//! the ordinary squared distance. Ratios such as the per-band fit do not depend on the factor.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::bands::Bands;
use super::fft::{Fft2d, Spectrum};
use crate::error::{Error, Result};
use crate::image::Image;

/// Energy of an image per band, per channel and over all channels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BandEnergy {
    /// `per_channel[c][b]` = `Σ_{bins in b} |F_c|² / N`.
    pub per_channel: Vec<Vec<f64>>,
    /// Summed over channels, per band.
    pub total: Vec<f64>,
}

fn check_bands(spec_w: usize, spec_h: usize, bands: &Bands) -> Result<()> {
    if spec_w != bands.width || spec_h != bands.height {
        return Err(Error::invalid(format!(
            "bands are for {}x{} images, the spectrum is {spec_w}x{spec_h}",
            bands.width, bands.height
        )));
    }
    Ok(())
}

/// Band energies of a spectrum (see the module note on normalisation).
pub fn band_energy(spec: &Spectrum, bands: &Bands) -> Result<BandEnergy> {
    check_bands(spec.width, spec.height, bands)?;
    let scale = 1.0 / spec.bins() as f64;
    let mut total = vec![0.0; bands.len()];
    let per_channel = (0..spec.channels)
        .map(|c| {
            let mut e = vec![0.0; bands.len()];
            for (&b, z) in bands.band_of.iter().zip(spec.channel(c)) {
                e[b as usize] += z.norm_sqr();
            }
            for (t, v) in total.iter_mut().zip(e.iter_mut()) {
                *v *= scale;
                *t += *v;
            }
            e
        })
        .collect();
    Ok(BandEnergy { per_channel, total })
}

/// Per-band energies of `a − b` over all channels, `Σ_c Σ_{bins in b} |A − B|² / N`.
fn band_energy_of_difference(a: &Spectrum, b: &Spectrum, bands: &Bands) -> Vec<f64> {
    let mut e = vec![0.0; bands.len()];
    for c in 0..a.channels {
        for ((&k, za), zb) in bands.band_of.iter().zip(a.channel(c)).zip(b.channel(c)) {
            e[k as usize] += (za - zb).norm_sqr();
        }
    }
    let scale = 1.0 / a.bins() as f64;
    e.iter_mut().for_each(|v| *v *= scale);
    e
}

/// `1 − E_b(x − ref) / E_b(ref)` per band; NaN where the reference has no energy in the band
/// (nothing to fit, so no honest number to give).
fn fit_ratio(err: &[f64], reference: &[f64]) -> Vec<f64> {
    err.iter()
        .zip(reference)
        .map(|(&e, &r)| if r > 0.0 { 1.0 - e / r } else { f64::NAN })
        .collect()
}

/// How far the output has fitted each band at one step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BandFit {
    /// `r_b = 1 − E_b(x − y) / E_b(y)` against the observation `y`: 1 when the band is fitted
    /// exactly, 0 for a zero output, negative when the output adds energy that is not there.
    pub fit: Vec<f64>,
    /// The same against the clean image, when one was given.
    pub fit_clean: Option<Vec<f64>>,
    /// Shi et al.'s frequency-band correspondence, see [`BandTracker::observe`].
    pub correspondence: Vec<f64>,
}

/// Relative threshold below which `|F(y)|` counts as zero in the correspondence ratio: a bin
/// whose magnitude is only rounding noise would otherwise give an arbitrary ratio.
const ZERO_MAGNITUDE: f64 = 1e-12;

/// Tracks one fit: the spectra of the observation (and clean image) are taken once, then each
/// output frame costs one FFT.
#[derive(Clone, Debug)]
pub struct BandTracker {
    fft: Fft2d,
    bands: Arc<Bands>,
    observation: Spectrum,
    clean: Option<Spectrum>,
    observation_energy: Vec<f64>,
    clean_energy: Option<Vec<f64>>,
    noise_energy: Option<Vec<f64>>,
    /// Per channel: `|Y|` at or below this is treated as zero.
    zero_magnitude: Vec<f64>,
    frame: Spectrum,
}

impl BandTracker {
    /// Prepares to measure outputs against `observation` (and `clean`, when known).
    pub fn new(bands: Arc<Bands>, observation: &Image, clean: Option<&Image>) -> Result<Self> {
        let mut fft = Fft2d::new(bands.width, bands.height)?;
        fft.check_size(observation)?;
        let y = fft.forward(observation)?;
        let observation_energy = band_energy(&y, &bands)?.total;
        let (clean, clean_energy, noise_energy) = match clean {
            Some(img) => {
                fft.check_size(img)?;
                if img.channels != observation.channels {
                    return Err(Error::invalid(format!(
                        "the clean image has {} channel(s), the observation {}",
                        img.channels, observation.channels
                    )));
                }
                let s = fft.forward(img)?;
                let ce = band_energy(&s, &bands)?.total;
                let ne = band_energy_of_difference(&y, &s, &bands);
                (Some(s), Some(ce), Some(ne))
            }
            None => (None, None, None),
        };
        let zero_magnitude = (0..y.channels)
            .map(|c| {
                let norm = y
                    .channel(c)
                    .iter()
                    .map(|z| z.norm_sqr())
                    .sum::<f64>()
                    .sqrt();
                ZERO_MAGNITUDE * norm
            })
            .collect();
        let frame = Spectrum::zeros(bands.width, bands.height, observation.channels);
        Ok(BandTracker {
            fft,
            bands,
            observation: y,
            clean,
            observation_energy,
            clean_energy,
            noise_energy,
            zero_magnitude,
            frame,
        })
    }

    /// The bands measured.
    pub fn bands(&self) -> &Bands {
        &self.bands
    }

    /// `E_b(y)`, summed over channels.
    pub fn observation_energy(&self) -> &[f64] {
        &self.observation_energy
    }

    /// `E_b(clean)`, when a clean image was given.
    pub fn clean_energy(&self) -> Option<&[f64]> {
        self.clean_energy.as_deref()
    }

    /// Noise energy per band, `E_b(y − clean)`: where it rivals `E_b(clean)` the observation's
    /// band is mostly noise, which is where fitting it hurts.
    pub fn noise_energy(&self) -> Option<&[f64]> {
        self.noise_energy.as_deref()
    }

    /// Measures one output image.
    pub fn observe(&mut self, x: &Image) -> Result<BandFit> {
        self.fft.check_size(x)?;
        self.observe_data(&x.data, x.channels)
    }

    /// Measures one output given as HWC samples (e.g. a network tensor).
    ///
    /// The correspondence of band `b` is the mean over its bins, and then over channels, of
    /// `clip(|F(x)| / |F(y)|, 0, 1)`, with the ratio taken as 0 where `|F(y)|` is zero (at most
    /// `1e-12` times the channel's spectral norm), following Shi et al. (2022).
    pub fn observe_data(&mut self, data: &[f32], channels: usize) -> Result<BandFit> {
        if channels != self.observation.channels {
            return Err(Error::invalid(format!(
                "the output has {channels} channel(s), the observation {}",
                self.observation.channels
            )));
        }
        self.fft.forward_into(data, channels, &mut self.frame)?;
        let bands = &*self.bands;
        let err = band_energy_of_difference(&self.frame, &self.observation, bands);
        let fit = fit_ratio(&err, &self.observation_energy);
        let fit_clean = match (&self.clean, &self.clean_energy) {
            (Some(clean), Some(ce)) => Some(fit_ratio(
                &band_energy_of_difference(&self.frame, clean, bands),
                ce,
            )),
            _ => None,
        };
        let mut corr = vec![0.0; bands.len()];
        for c in 0..channels {
            let zero = self.zero_magnitude[c];
            for ((&b, zx), zy) in bands
                .band_of
                .iter()
                .zip(self.frame.channel(c))
                .zip(self.observation.channel(c))
            {
                let my = zy.norm();
                if my > zero {
                    corr[b as usize] += (zx.norm() / my).clamp(0.0, 1.0);
                }
            }
        }
        for (v, &n) in corr.iter_mut().zip(&bands.counts) {
            *v /= (n * channels) as f64;
        }
        Ok(BandFit {
            fit,
            fit_clean,
            correspondence: corr,
        })
    }
}

/// The first step at which `records` (sorted by step) reach `level`, linearly interpolated
/// between the last record below and the first at or above it; the first record's step if it
/// already reaches it; `None` if the series never does.
///
/// Interpolation matters because records are usually taken every few dozen steps and the
/// spectral-bias claim is about the *order* of bands, which coarse steps would blur into ties.
pub fn crossing_step(records: &[(usize, f64)], level: f64) -> Option<f64> {
    let mut prev: Option<(usize, f64)> = None;
    for &(step, r) in records {
        if r >= level {
            return Some(match prev {
                Some((s0, r0)) if r0.is_finite() && r > r0 => {
                    let s0 = s0 as f64;
                    s0 + (level - r0) / (r - r0) * (step as f64 - s0)
                }
                _ => step as f64,
            });
        }
        prev = Some((step, r));
    }
    None
}

/// The step at which a band's fit `r_b` first reaches 0.5 (see [`crossing_step`]).
pub fn half_time(records: &[(usize, f64)]) -> Option<f64> {
    crossing_step(records, 0.5)
}

/// Half-time of every band of a series of `(step, r_b for all bands)` records.
pub fn band_half_times(records: &[(usize, Vec<f64>)]) -> Vec<Option<f64>> {
    let n = records.first().map_or(0, |(_, r)| r.len());
    (0..n)
        .map(|b| {
            let series: Vec<(usize, f64)> = records
                .iter()
                .map(|(s, r)| (*s, r.get(b).copied().unwrap_or(f64::NAN)))
                .collect();
            half_time(&series)
        })
        .collect()
}

/// Squared distance between two outputs, overall and per band.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairDistance {
    /// `‖x − x'‖²` over all samples, computed in the pixel domain.
    pub total: f64,
    /// `E_b(x − x')`, summed over channels; by Parseval these add up to `total`.
    pub per_band: Vec<f64>,
}

/// Compares two runs frame by frame: do they agree on the low bands first and differ only in
/// the high ones? One FFT (of the difference) per pair.
#[derive(Clone, Debug)]
pub struct PairAnalyzer {
    fft: Fft2d,
    bands: Arc<Bands>,
    diff: Vec<f32>,
    spec: Spectrum,
}

impl PairAnalyzer {
    /// Plans for images of the bands' size.
    pub fn new(bands: Arc<Bands>) -> Result<Self> {
        let fft = Fft2d::new(bands.width, bands.height)?;
        let spec = Spectrum::zeros(bands.width, bands.height, 1);
        Ok(PairAnalyzer {
            fft,
            bands,
            diff: Vec::new(),
            spec,
        })
    }

    /// Distance between two images of the planned size and equal channel counts.
    pub fn distance(&mut self, a: &Image, b: &Image) -> Result<PairDistance> {
        self.fft.check_size(a)?;
        self.fft.check_size(b)?;
        if a.channels != b.channels {
            return Err(Error::invalid(format!(
                "cannot compare images with {} and {} channels",
                a.channels, b.channels
            )));
        }
        self.diff.clear();
        self.diff
            .extend(a.data.iter().zip(&b.data).map(|(&p, &q)| p - q));
        // In f64 from the inputs: the f32 difference above rounds (by up to half an ulp of each
        // pixel's difference), which is fine for the spectrum but not for the reference total.
        let total = a
            .data
            .iter()
            .zip(&b.data)
            .map(|(&p, &q)| (f64::from(p) - f64::from(q)).powi(2))
            .sum();
        self.fft
            .forward_into(&self.diff, a.channels, &mut self.spec)?;
        let per_band = band_energy(&self.spec, &self.bands)?.total;
        Ok(PairDistance { total, per_band })
    }
}

/// Distances between two trajectories recorded at the same steps, frame by frame.
pub fn trajectory_distances(
    bands: Arc<Bands>,
    a: &[Image],
    b: &[Image],
) -> Result<Vec<PairDistance>> {
    if a.len() != b.len() {
        return Err(Error::invalid(format!(
            "the trajectories have {} and {} frames",
            a.len(),
            b.len()
        )));
    }
    let mut pa = PairAnalyzer::new(bands)?;
    a.iter().zip(b).map(|(x, y)| pa.distance(x, y)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crossing_interpolates_and_handles_edges() {
        assert_eq!(half_time(&[]), None);
        assert_eq!(half_time(&[(10, 0.7)]), Some(10.0));
        assert_eq!(half_time(&[(0, 0.0), (10, 0.4)]), None);
        // 0.2 → 0.8 between steps 10 and 20: 0.5 is halfway.
        assert_eq!(half_time(&[(0, 0.0), (10, 0.2), (20, 0.8)]), Some(15.0));
        // NaN before the crossing: no interpolation possible, take the step.
        assert_eq!(half_time(&[(0, f64::NAN), (10, 0.9)]), Some(10.0));
    }

    #[test]
    fn fit_ratio_undefined_without_energy() {
        let r = fit_ratio(&[0.0, 1.0], &[0.0, 4.0]);
        assert!(r[0].is_nan());
        assert_eq!(r[1], 0.75);
    }
}

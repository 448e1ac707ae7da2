//! Early stopping as a low-pass filter: which Gaussian low-pass of the observation does an
//! output resemble most?
//!
//! If the DIP's spectral bias is the whole story, an early-stopped output `x_t` is close to
//! `LPF_c(y)` for some cutoff `c` that grows with `t`, and the residual says how much of `x_t`
//! the filter does not explain. The filter is `H_c(r) = exp(−r² / (2c²))` in normalised radial
//! frequency `r` (cycles/pixel), applied with periodic boundaries (it is a DFT multiplier).

use serde::{Deserialize, Serialize};

use super::fft::{Fft2d, Spectrum, axis_frequency};
use crate::error::{Error, Result};
use crate::image::Image;

/// Smallest cutoff searched (cycles/pixel): below 1/1000 the filter keeps only DC for any image
/// this crate handles.
pub const MIN_CUTOFF: f64 = 1e-3;
/// Largest cutoff searched: at 10 the filter passes even the corner frequencies at 99.7 %, so it
/// is indistinguishable from no filter.
pub const MAX_CUTOFF: f64 = 10.0;
/// Grid points of the coarse log-spaced search, before golden-section refinement.
const GRID: usize = 241;

/// Gaussian low-pass transfer at radial frequency `r` for cutoff `c` (both in cycles/pixel).
pub fn gaussian_transfer(r: f64, cutoff: f64) -> f64 {
    (-(r * r) / (2.0 * cutoff * cutoff)).exp()
}

/// The best-matching low-pass filter of an output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LowpassFit {
    /// Cutoff `c` minimising `‖LPF_c(y) − x‖²`, in cycles/pixel.
    pub cutoff: f64,
    /// `‖LPF_c(y) − x‖ / ‖x‖`: near 0 when the output *is* a low-pass of the observation.
    /// NaN when `x` is zero.
    pub residual: f64,
    /// The minimum is at [`MIN_CUTOFF`] or [`MAX_CUTOFF`], so `cutoff` is a bound, not a fit
    /// (e.g. an output that has fitted all of `y` sits at the top).
    pub at_bound: bool,
}

/// Fits low-pass filters of one observation to many outputs: `y` is transformed once, each
/// output costs one FFT plus a 1-D search over a folded quarter of the spectrum.
#[derive(Clone, Debug)]
pub struct LowpassFitter {
    fft: Fft2d,
    observation: Spectrum,
    frame: Spectrum,
    /// `r²` of each folded bin (`min(k, n − k)` per axis: the filter only depends on that).
    fold_r2: Vec<f64>,
    /// Folded index of each full-layout bin.
    fold_of: Vec<usize>,
    /// `Σ |Y|²` per folded bin, all channels.
    yy: Vec<f64>,
    /// `Σ Re(conj(Y)·X)` per folded bin, scratch.
    yx: Vec<f64>,
}

impl LowpassFitter {
    /// Prepares to fit outputs against `observation`.
    pub fn new(observation: &Image) -> Result<Self> {
        let (w, h) = (observation.width, observation.height);
        let mut fft = Fft2d::new(w, h)?;
        let y = fft.forward(observation)?;
        let (fw, fh) = (w / 2 + 1, h / 2 + 1);
        let mut fold_r2 = vec![0.0; fw * fh];
        for qy in 0..fh {
            let fy = axis_frequency(qy, h);
            for qx in 0..fw {
                let fx = axis_frequency(qx, w);
                fold_r2[qy * fw + qx] = fx * fx + fy * fy;
            }
        }
        let mut fold_of = Vec::with_capacity(w * h);
        for ky in 0..h {
            let qy = ky.min(h - ky);
            for kx in 0..w {
                fold_of.push(qy * fw + kx.min(w - kx));
            }
        }
        let mut yy = vec![0.0; fw * fh];
        for c in 0..y.channels {
            for (&q, z) in fold_of.iter().zip(y.channel(c)) {
                yy[q] += z.norm_sqr();
            }
        }
        let frame = Spectrum::zeros(w, h, observation.channels);
        Ok(LowpassFitter {
            fft,
            observation: y,
            frame,
            fold_r2,
            fold_of,
            yy,
            yx: vec![0.0; fw * fh],
        })
    }

    /// The Gaussian low-pass of the observation closest to `x` in least squares.
    ///
    /// Searches a log grid of cutoffs in \[[`MIN_CUTOFF`], [`MAX_CUTOFF`]\], then refines the best
    /// grid bracket by golden section in `log c`. The error of a candidate is computed from the
    /// spectra by Parseval, `Σ |H_c·Y − X|² / N`, expanded as `Σ H²|Y|² − 2H·Re(conj(Y)X) + |X|²`
    /// so each candidate is one pass over the folded bins.
    pub fn fit(&mut self, x: &Image) -> Result<LowpassFit> {
        self.fft.check_size(x)?;
        if x.channels != self.observation.channels {
            return Err(Error::invalid(format!(
                "the output has {} channel(s), the observation {}",
                x.channels, self.observation.channels
            )));
        }
        self.fft
            .forward_into(&x.data, x.channels, &mut self.frame)?;
        self.yx.iter_mut().for_each(|v| *v = 0.0);
        let mut xx = 0.0;
        for c in 0..x.channels {
            for ((&q, zx), zy) in self
                .fold_of
                .iter()
                .zip(self.frame.channel(c))
                .zip(self.observation.channel(c))
            {
                self.yx[q] += (zy.conj() * zx).re;
                xx += zx.norm_sqr();
            }
        }
        let (r2, yy, yx) = (&self.fold_r2, &self.yy, &self.yx);
        // Error up to the constant Σ|X|²; all sums unnormalised (÷N only in the residual ratio).
        let err = |log_c: f64| -> f64 {
            let c = log_c.exp();
            let k = -1.0 / (2.0 * c * c);
            r2.iter()
                .zip(yy)
                .zip(yx)
                .map(|((&r2, &a), &b)| {
                    let hval = (k * r2).exp();
                    hval * (hval * a - 2.0 * b)
                })
                .sum::<f64>()
        };
        let (lo, hi) = (MIN_CUTOFF.ln(), MAX_CUTOFF.ln());
        let step = (hi - lo) / (GRID - 1) as f64;
        let grid: Vec<f64> = (0..GRID).map(|i| err(lo + step * i as f64)).collect();
        let best = grid
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i);
        let at_bound = best == 0 || best == GRID - 1;
        let log_c = if at_bound {
            lo + step * best as f64
        } else {
            golden_min(
                err,
                lo + step * (best - 1) as f64,
                lo + step * (best + 1) as f64,
            )
        };
        let e = (err(log_c) + xx).max(0.0);
        let residual = if xx > 0.0 { (e / xx).sqrt() } else { f64::NAN };
        Ok(LowpassFit {
            cutoff: log_c.exp(),
            residual,
            at_bound,
        })
    }
}

/// Minimum of a unimodal `f` on `[a, b]` by golden-section search, to about 1e-12 in the argument.
fn golden_min(f: impl Fn(f64) -> f64, mut a: f64, mut b: f64) -> f64 {
    let inv_phi = (5f64.sqrt() - 1.0) / 2.0;
    let mut c = b - inv_phi * (b - a);
    let mut d = a + inv_phi * (b - a);
    let (mut fc, mut fd) = (f(c), f(d));
    for _ in 0..200 {
        if (b - a).abs() < 1e-12 {
            break;
        }
        if fc < fd {
            b = d;
            d = c;
            fd = fc;
            c = b - inv_phi * (b - a);
            fc = f(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + inv_phi * (b - a);
            fd = f(d);
        }
    }
    0.5 * (a + b)
}

/// Applies `LPF_c` with a caller's plan (for many images of one size).
///
/// The result is not clamped to \[0, 1\]: the sampled Gaussian has tiny negative lobes, and
/// clamping would make the picture disagree with the filter the fit measured.
pub fn apply_lowpass(fft: &mut Fft2d, img: &Image, cutoff: f64) -> Result<Image> {
    if !(cutoff > 0.0 && cutoff.is_finite()) {
        return Err(Error::invalid(format!(
            "a low-pass cutoff must be positive, not {cutoff}"
        )));
    }
    fft.check_size(img)?;
    let n = fft.bins();
    let transfer: Vec<f64> = fft
        .radial()
        .iter()
        .map(|&r| gaussian_transfer(r, cutoff))
        .collect();
    let mut spec = vec![Default::default(); n];
    let mut plane = vec![0.0; n];
    let mut out = img.clone();
    for c in 0..img.channels {
        fft.forward_channel(&img.data, img.channels, c, &mut spec)?;
        for (z, &t) in spec.iter_mut().zip(&transfer) {
            *z *= t;
        }
        fft.inverse_channel_real(&mut spec, &mut plane)?;
        for (i, &v) in plane.iter().enumerate() {
            out.data[i * img.channels + c] = v as f32;
        }
    }
    Ok(out)
}

/// `LPF_c(img)`: the Gaussian low-pass of an image with cutoff `c` in cycles/pixel.
pub fn lowpass(img: &Image, cutoff: f64) -> Result<Image> {
    let mut fft = Fft2d::new(img.width, img.height)?;
    apply_lowpass(&mut fft, img, cutoff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_finds_parabola_minimum() {
        let m = golden_min(|x| (x - 0.3).powi(2), -1.0, 2.0);
        assert!((m - 0.3).abs() < 1e-9);
    }

    #[test]
    fn lowpass_keeps_a_constant() {
        let img = Image::new(6, 5, 1, vec![0.25; 30]);
        let out = lowpass(&img, 0.05).unwrap();
        for v in out.data {
            assert!((v - 0.25).abs() < 1e-6);
        }
    }
}

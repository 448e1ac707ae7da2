//! Predicted band rates: the network's kernel eigenvalue per radial frequency band, by probing.
//!
//! Under linearised (NTK) training, gradient descent on `½‖f(θ) − y‖²` moves the residual by
//! `−η J Jᵀ r`: each eigendirection of the tangent kernel `Θ = J Jᵀ` decays at a rate
//! proportional to its eigenvalue. For a stationary `Θ` the eigendirections are Fourier modes,
//! so band `b` converges at a rate `∝ λ_b` and its half-time is `t½(b) ∝ 1/λ_b`.
//!
//! `λ_b` is estimated without forming `J`: for an image `p_b` of unit norm whose spectrum is
//! random-phase white noise restricted to band `b`, `pᵀΘp = ‖Jᵀ p_b‖²`, which one backward
//! pass (with `p_b` as the output gradient) gives as the squared norm of the parameter
//! gradient. Averaging over a few probes gives the mean eigenvalue over the band.

use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use rand_pcg::Pcg64Mcg;
use rustfft::num_complex::Complex64;
use serde::Serialize;

use super::grid::Grid;
use crate::fit::{FitConfig, network_input};
use crate::nets::Arch;
use crate::spectral::{BandSpacing, Bands};
use crate::{Error, Result};

/// Settings of the probing.
#[derive(Debug, Clone, Copy)]
pub struct RatesConfig {
    pub bands: usize,
    pub spacing: BandSpacing,
    /// Probes per band.
    pub probes: usize,
    /// Seed of the probes (the network's comes from the fit settings).
    pub seed: u64,
}

impl Default for RatesConfig {
    fn default() -> Self {
        RatesConfig {
            bands: 8,
            spacing: BandSpacing::Linear,
            probes: 4,
            seed: 0,
        }
    }
}

/// A unit-norm `w × h × channels` image whose spectrum is white noise restricted to band `b`.
pub fn band_probe(bands: &Bands, b: usize, channels: usize, seed: u64) -> Vec<f32> {
    let (w, h) = (bands.width, bands.height);
    let mut grid = Grid::new(w, h);
    let mut rng = Pcg64Mcg::seed_from_u64(seed);
    let mut out = vec![0.0f32; w * h * channels];
    let mut buf = vec![Complex64::new(0.0, 0.0); w * h];
    for c in 0..channels {
        for z in buf.iter_mut() {
            *z = Complex64::new(StandardNormal.sample(&mut rng), 0.0);
        }
        grid.forward(&mut buf);
        for (z, &k) in buf.iter_mut().zip(&bands.band_of) {
            if k as usize != b {
                *z = Complex64::new(0.0, 0.0);
            }
        }
        grid.inverse(&mut buf);
        for (p, z) in buf.iter().enumerate() {
            out[p * channels + c] = z.re as f32;
        }
    }
    let norm = out.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
    if norm > 0.0 {
        out.iter_mut().for_each(|v| *v = (*v as f64 / norm) as f32);
    }
    out
}

/// `λ_b ≈ mean over probes of ‖Jᵀ p_b‖²` for every band, with `J` the Jacobian of the network
/// of `spec` at its initialisation for `fit` (same seed, same input) on an `h × w` output.
pub fn band_eigenvalues(
    spec: &Arch,
    h: usize,
    w: usize,
    fit: &FitConfig,
    cfg: &RatesConfig,
) -> Result<Vec<f64>> {
    if cfg.probes == 0 {
        return Err(Error::invalid("at least 1 probe per band is needed"));
    }
    let bands = Bands::new(w, h, cfg.bands, cfg.spacing)?;
    let mut net = spec.build::<f32>(h, w, fit.seed)?;
    let z = network_input(spec, fit, h, w);
    net.input_mut().data.copy_from_slice(&z);
    net.forward();
    let ch = spec.out_channels();
    let mut lambda = Vec::with_capacity(cfg.bands);
    for b in 0..cfg.bands {
        let mut sum = 0.0;
        for j in 0..cfg.probes {
            let seed = cfg.seed ^ ((b as u64) << 32) ^ (j as u64).wrapping_mul(0x9E37_79B9);
            let p = band_probe(&bands, b, ch, seed);
            net.output_grad_mut().data.copy_from_slice(&p);
            net.backward();
            sum += net.grads().iter().map(|&g| (g as f64).powi(2)).sum::<f64>();
        }
        lambda.push(sum / cfg.probes as f64);
    }
    Ok(lambda)
}

/// Predicted against measured half-times.
#[derive(Debug, Clone, Serialize)]
pub struct RatePrediction {
    /// `c` in `t½(b) ≈ c / λ_b`, fitted in log space over the bands with a measured half-time.
    pub constant: f64,
    /// Spearman rank correlation of the measured `t½(b)` with `1/λ_b`.
    pub spearman: Option<f64>,
    pub predicted: Vec<f64>,
    /// RMS of `ln(measured / predicted)` over the bands with a measured half-time.
    pub log_rms_error: f64,
    /// The free power law instead: `t½ ∝ λ^(−exponent)` fitted in log space (1 is the
    /// linearised prediction; Adam's normalised steps compress the spread of rates below it).
    pub exponent: Option<f64>,
}

/// Fits `t½(b) = c / λ_b` to the measured half-times.
pub fn predict_half_times(lambda: &[f64], measured: &[Option<f64>]) -> Result<RatePrediction> {
    let pairs: Vec<(f64, f64)> = lambda
        .iter()
        .zip(measured)
        .filter_map(|(&l, t)| t.filter(|t| *t > 0.0 && l > 0.0).map(|t| (l, t)))
        .collect();
    if pairs.is_empty() {
        return Err(Error::invalid(
            "no band reached its half-time: fit longer to compare rates",
        ));
    }
    let log_c = pairs.iter().map(|(l, t)| t.ln() + l.ln()).sum::<f64>() / pairs.len() as f64;
    let constant = log_c.exp();
    let log_rms_error = (pairs
        .iter()
        .map(|(l, t)| (t.ln() - (log_c - l.ln())).powi(2))
        .sum::<f64>()
        / pairs.len() as f64)
        .sqrt();
    let exponent = (pairs.len() >= 2).then(|| {
        let n = pairs.len() as f64;
        let mx = pairs.iter().map(|(l, _)| l.ln()).sum::<f64>() / n;
        let my = pairs.iter().map(|(_, t)| t.ln()).sum::<f64>() / n;
        let sxy: f64 = pairs
            .iter()
            .map(|(l, t)| (l.ln() - mx) * (t.ln() - my))
            .sum();
        let sxx: f64 = pairs.iter().map(|(l, _)| (l.ln() - mx).powi(2)).sum();
        if sxx > 0.0 { -sxy / sxx } else { f64::NAN }
    });
    let inv: Vec<f64> = lambda.iter().map(|l| 1.0 / l).collect();
    let meas: Vec<f64> = measured.iter().map(|t| t.unwrap_or(f64::NAN)).collect();
    Ok(RatePrediction {
        constant,
        spearman: crate::spectral::study::spearman(&meas, &inv),
        predicted: lambda.iter().map(|l| constant / l).collect(),
        log_rms_error,
        exponent: exponent.filter(|e| e.is_finite()),
    })
}

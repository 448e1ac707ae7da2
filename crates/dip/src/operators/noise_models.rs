//! Noise models for synthetic observations: Poisson (shot) noise and impulse (salt-and-pepper)
//! noise. Gaussian noise is [`crate::noise::add_gaussian_noise`], re-exported here as
//! [`gaussian`] so that all the models are in one place.
//!
//! Like the Gaussian model, each takes a `seed` for a `Pcg64Mcg`, draws in data order (HWC,
//! row-major), clips to \[0, 1\], and keeps the image's shape and bit depth.

use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Poisson};
use rand_pcg::Pcg64Mcg;

use crate::error::{Error, Result};
use crate::image::Image;

pub use crate::noise::add_gaussian_noise as gaussian;

/// Poisson (photon-counting) noise at `peak` photons for a sample of value 1.
///
/// Each sample becomes `Poisson(peak · x) / peak`, clipped to \[0, 1\] (inputs are clipped to
/// \[0, 1\] first; a sample of 0 stays 0). Lower `peak` is noisier: the standard deviation at
/// value `x` is `√(x / peak)`. `peak` must be positive and finite (and at most 10¹⁰).
pub fn poisson(img: &Image, peak: f64, seed: u64) -> Result<Image> {
    if !(peak.is_finite() && peak > 0.0 && peak <= 1e10) {
        return Err(Error::invalid(format!(
            "Poisson peak must be positive (and at most 1e10), not {peak}"
        )));
    }
    let mut rng = Pcg64Mcg::seed_from_u64(seed);
    let data = img
        .data
        .iter()
        .map(|&x| {
            let lambda = peak * f64::from(x).clamp(0.0, 1.0);
            if lambda.is_nan() || lambda <= 0.0 {
                return 0.0;
            }
            let k: f64 = Poisson::new(lambda)
                .expect("lambda is positive and finite")
                .sample(&mut rng);
            (k / peak).clamp(0.0, 1.0) as f32
        })
        .collect();
    Ok(Image {
        data,
        ..img.clone()
    })
}

/// Salt-and-pepper noise: each sample, with probability `fraction`, is replaced by 0 or 1
/// (equally likely); the others are kept.
///
/// Samples, not pixels, are corrupted independently (scikit-image's `random_noise('s&p')`
/// convention), so a colour image gets coloured specks. Two draws are made per sample, in data
/// order: whether it is hit, then (only if hit) salt or pepper. `fraction` must be in \[0, 1\].
pub fn impulse(img: &Image, fraction: f64, seed: u64) -> Result<Image> {
    if !(0.0..=1.0).contains(&fraction) {
        return Err(Error::invalid(format!(
            "impulse noise fraction must be in [0, 1], not {fraction}"
        )));
    }
    let mut rng = Pcg64Mcg::seed_from_u64(seed);
    let data = img
        .data
        .iter()
        .map(|&x| {
            if rng.random::<f64>() < fraction {
                if rng.random::<bool>() { 1.0 } else { 0.0 }
            } else {
                x
            }
        })
        .collect();
    Ok(Image {
        data,
        ..img.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_mean_and_spread() {
        let img = Image::new(128, 128, 1, vec![0.5; 128 * 128]);
        let peak = 30.0;
        let noisy = poisson(&img, peak, 1).unwrap();
        let n = noisy.data.len() as f64;
        let mean = noisy.data.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = noisy
            .data
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
        let want = 0.5 / peak;
        assert!((var / want - 1.0).abs() < 0.1, "var {var} vs {want}");
        // Outputs are multiples of 1/peak.
        assert!(
            noisy
                .data
                .iter()
                .all(|&v| ((f64::from(v) * peak).round() - f64::from(v) * peak).abs() < 1e-4)
        );
        assert_eq!(poisson(&img, peak, 1).unwrap(), noisy);
        assert!(poisson(&img, 0.0, 1).is_err());
        assert!(poisson(&img, f64::NAN, 1).is_err());
    }

    #[test]
    fn impulse_hits_the_requested_fraction() {
        let img = Image::new(64, 64, 3, vec![0.5; 64 * 64 * 3]);
        let noisy = impulse(&img, 0.2, 9).unwrap();
        let n = noisy.data.len() as f64;
        let salt = noisy.data.iter().filter(|&&v| v == 1.0).count() as f64 / n;
        let pepper = noisy.data.iter().filter(|&&v| v == 0.0).count() as f64 / n;
        let kept = noisy.data.iter().filter(|&&v| v == 0.5).count() as f64 / n;
        assert!((salt - 0.1).abs() < 0.015 && (pepper - 0.1).abs() < 0.015);
        assert!((salt + pepper + kept - 1.0).abs() < 1e-12);
        assert_eq!(impulse(&img, 0.0, 9).unwrap(), img);
        assert!(impulse(&img, 1.5, 9).is_err());
    }
}

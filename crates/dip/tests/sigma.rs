//! The noise-level estimators on synthetic noise over smooth and textured images.

use dip::image::Image;
use dip::sigma::{SigmaEstimator, estimate_sigma};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use rand_pcg::Pcg64Mcg;

/// A smooth image with an edge, values in [0.2, 0.8].
fn smooth(n: usize) -> Vec<f32> {
    let mut d = Vec::with_capacity(n * n);
    for y in 0..n {
        for x in 0..n {
            let (u, v) = (x as f32 / n as f32, y as f32 / n as f32);
            let edge = if u + 0.3 * v > 0.6 { 0.15 } else { 0.0 };
            d.push(0.45 + 0.2 * (4.0 * u).sin() * (3.0 * v + 1.0).cos() + edge);
        }
    }
    d
}

/// Vertical stripes of period 2 (the finest texture there is) with amplitude 0.3.
fn stripes(n: usize) -> Vec<f32> {
    (0..n * n)
        .map(|i| {
            if (i % n).is_multiple_of(2) {
                0.35
            } else {
                0.65
            }
        })
        .collect()
}

/// A one-pixel checkerboard: all its energy sits in the finest diagonal band, which is where
/// the Haar estimator looks for noise.
fn checker(n: usize) -> Vec<f32> {
    (0..n * n)
        .map(|i| {
            if (i % n + i / n).is_multiple_of(2) {
                0.35
            } else {
                0.65
            }
        })
        .collect()
}

/// `clean` plus white Gaussian noise of std `s255 / 255` (no clipping: the values stay inside
/// [0, 1] far more often than not, and the truth is then exactly σ).
fn noisy(clean: &[f32], n: usize, s255: f64, seed: u64) -> Image {
    let mut r = Pcg64Mcg::seed_from_u64(seed);
    let dist = Normal::new(0.0, s255 / 255.0).unwrap();
    let data = clean
        .iter()
        .map(|&c| c + dist.sample(&mut r) as f32)
        .collect();
    Image::new(n, n, 1, data)
}

#[test]
fn pca_estimate_is_within_ten_percent_on_smooth_images() {
    for s255 in [5.0, 10.0, 15.0, 25.0, 35.0, 50.0, 75.0] {
        for (n, seed) in [(64, 1), (128, 2)] {
            let e = estimate_sigma(&noisy(&smooth(n), n, s255, seed)) * 255.0;
            assert!(
                (e / s255 - 1.0).abs() < 0.1,
                "sigma {s255}, {n}x{n}: estimated {e:.2}"
            );
        }
    }
}

#[test]
fn texture_is_not_read_as_noise() {
    for (name, clean) in [("stripes", stripes(96)), ("checker", checker(96))] {
        for s255 in [5.0, 15.0, 25.0, 50.0] {
            let img = noisy(&clean, 96, s255, 3);
            let e = estimate_sigma(&img) * 255.0;
            assert!(
                (e / s255 - 1.0).abs() < 0.15,
                "{name}, sigma {s255}: estimated {e:.2}"
            );
        }
    }
    // The pattern without noise reads as (nearly) noise-free.
    for clean in [stripes(96), checker(96)] {
        let e = estimate_sigma(&Image::new(96, 96, 1, clean)) * 255.0;
        assert!(e < 0.5, "clean pattern read as sigma {e:.2}");
    }
    // The Haar estimator, by contrast, takes the checkerboard for strong noise: the test above
    // has teeth.
    let img = noisy(&checker(96), 96, 25.0, 3);
    let mad = SigmaEstimator::Mad.estimate(&img) * 255.0;
    assert!(mad > 50.0, "MAD read {mad:.1}");
}

#[test]
fn colour_channels_are_pooled() {
    let n = 64;
    let base = smooth(n);
    let mut r = Pcg64Mcg::seed_from_u64(9);
    let dist = Normal::new(0.0, 20.0 / 255.0).unwrap();
    let data: Vec<f32> = base
        .iter()
        .flat_map(|&v| [v, 1.0 - v, 0.5 * v + 0.2])
        .map(|v| v + dist.sample(&mut r) as f32)
        .collect();
    let e = estimate_sigma(&Image::new(n, n, 3, data)) * 255.0;
    assert!((e / 20.0 - 1.0).abs() < 0.1, "estimated {e:.2}");
}

#[test]
fn every_estimator_reads_plain_noise() {
    let img = noisy(&vec![0.5; 128 * 128], 128, 20.0, 5);
    for est in SigmaEstimator::ALL {
        let e = est.estimate(&img) * 255.0;
        assert!((e / 20.0 - 1.0).abs() < 0.1, "{est}: estimated {e:.2}");
    }
}

#[test]
fn tiny_images_do_not_panic() {
    for (w, h) in [(1, 1), (3, 2), (7, 9), (8, 8)] {
        let img = Image::new(w, h, 1, vec![0.5; w * h]);
        for est in SigmaEstimator::ALL {
            assert!(est.estimate(&img).is_finite());
        }
    }
}

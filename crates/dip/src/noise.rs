//! Synthetic degradations for experiments with a known clean image.

use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use rand_pcg::Pcg64Mcg;

use crate::image::Image;

/// Adds white Gaussian noise of standard deviation `sigma_255 / 255` to every sample and clips
/// to \[0, 1\], as the reference Deep Image Prior does (`np.clip(x + normal(scale=sigma/255), 0, 1)`).
///
/// `sigma_255` is on the 0–255 scale because that is how denoising results are reported
/// (σ = 25, 50). The same `seed` gives the same noise on every platform, so experiments can be
/// repeated; samples are drawn in data order (HWC, row-major). The noisy values are not
/// quantised, again as in the reference; the bit depth of `img` is kept so that saving writes
/// the same precision as the input.
pub fn add_gaussian_noise(img: &Image, sigma_255: f32, seed: u64) -> Image {
    let mut rng = Pcg64Mcg::seed_from_u64(seed);
    let scale = f64::from(sigma_255) / 255.0;
    let data = img
        .data
        .iter()
        .map(|&x| {
            let z: f64 = rng.sample(StandardNormal);
            (f64::from(x) + scale * z).clamp(0.0, 1.0) as f32
        })
        .collect();
    Image {
        data,
        ..img.clone()
    }
}

/// `img` plus white Gaussian noise of standard deviation `sigma` in its own units, not clipped:
/// noise on measurements (sinograms, k-space) that are not pixels in [0, 1].
pub fn add_measurement_noise(img: &Image, sigma: f64, seed: u64) -> Image {
    let mut rng = Pcg64Mcg::seed_from_u64(seed);
    let data = img
        .data
        .iter()
        .map(|&x| {
            let z: f64 = rng.sample(StandardNormal);
            (f64::from(x) + sigma * z) as f32
        })
        .collect();
    Image {
        data,
        ..img.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::BitDepth;

    fn gray(w: usize, h: usize, v: f32) -> Image {
        Image::new(w, h, 1, vec![v; w * h])
    }

    #[test]
    fn same_seed_same_noise_other_seed_other_noise() {
        let img = gray(32, 32, 0.5);
        let a = add_gaussian_noise(&img, 25.0, 7);
        let b = add_gaussian_noise(&img, 25.0, 7);
        let c = add_gaussian_noise(&img, 25.0, 8);
        assert_eq!(a, b);
        assert_ne!(a.data, c.data);
        let differing = a.data.iter().zip(&c.data).filter(|(x, y)| x != y).count();
        assert!(differing > 1000, "{differing}");
    }

    #[test]
    fn noise_has_the_requested_spread() {
        for sigma in [15.0f32, 25.0, 50.0] {
            let img = gray(256, 256, 0.5);
            let noisy = add_gaussian_noise(&img, sigma, 1234);
            let n = noisy.data.len() as f64;
            let diffs: Vec<f64> = noisy.data.iter().map(|&v| f64::from(v) - 0.5).collect();
            let mean = diffs.iter().sum::<f64>() / n;
            let std = (diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / n).sqrt();
            let want = f64::from(sigma) / 255.0;
            assert!(
                (std / want - 1.0).abs() < 0.02,
                "sigma {sigma}: std {std} vs {want}"
            );
            assert!(
                mean.abs() < 0.01 * want + 3.0 * want / n.sqrt(),
                "mean {mean}"
            );
        }
    }

    #[test]
    fn output_is_clipped_and_shape_and_depth_kept() {
        let mut img = Image::new(8, 4, 3, (0..96).map(|i| (i % 3) as f32 / 2.0).collect());
        img.bit_depth = BitDepth::Sixteen;
        let noisy = add_gaussian_noise(&img, 100.0, 3);
        assert_eq!((noisy.width, noisy.height, noisy.channels), (8, 4, 3));
        assert_eq!(noisy.bit_depth, BitDepth::Sixteen);
        assert!(noisy.data.iter().all(|v| (0.0..=1.0).contains(v)));
        // With sigma this large, clipping must actually happen at both ends.
        assert!(noisy.data.contains(&0.0) && noisy.data.contains(&1.0));
        // Zero sigma changes nothing.
        assert_eq!(add_gaussian_noise(&img, 0.0, 3), img);
    }
}

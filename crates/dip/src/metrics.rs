//! Image quality metrics: MSE, PSNR, SSIM, and the luma conversion used for super-resolution.
//!
//! All accumulate in `f64`, because sums over millions of `f32` samples lose the digits that
//! distinguish two good restorations. Images are taken to have a data range of 1 (samples in
//! \[0, 1\]).

use crate::image::Image;

/// Mean squared error between two equally long sample slices.
///
/// # Panics
/// If the lengths differ or are zero: comparing mismatched images is a programming error, and a
/// silent number would hide it.
pub fn mse(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "mse: lengths differ");
    assert!(!a.is_empty(), "mse: no samples");
    let sum: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = f64::from(x) - f64::from(y);
            d * d
        })
        .sum();
    sum / a.len() as f64
}

/// Peak signal-to-noise ratio in dB with peak 1.0: `10 log10(1 / mse)`.
///
/// Identical inputs give `f64::INFINITY`.
///
/// # Panics
/// As [`mse`].
pub fn psnr(a: &[f32], b: &[f32]) -> f64 {
    let m = mse(a, b);
    if m == 0.0 {
        f64::INFINITY
    } else {
        -10.0 * m.log10()
    }
}

const K1: f64 = 0.01;
const K2: f64 = 0.03;
const SIGMA: f64 = 1.5;
/// Full window: radius `int(3.5 * 1.5 + 0.5) = 5`, as scipy's Gaussian filter with skimage's
/// `truncate = 3.5`.
const WINDOW: usize = 11;

/// Structural similarity (Wang et al. 2004), averaged over channels.
///
/// The convention is that of scikit-image's
/// `structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
/// data_range=1, channel_axis=-1)`:
/// * local statistics are weighted by an 11 × 11 Gaussian window (σ = 1.5, the separable 1-D
///   kernel normalised to sum 1);
/// * variances and covariance are population (biased) estimates, `E[x²] − E[x]²`;
/// * `C1 = (0.01)²`, `C2 = (0.03)²`;
/// * the SSIM map is averaged only over positions where the whole window lies inside the image
///   (skimage computes the map with padding and then crops 5 pixels from every side, which is
///   the same thing);
/// * the result is the mean of the per-channel values.
///
/// Images smaller than 11 pixels in a dimension (where skimage raises an error) use the largest
/// odd window that fits, `min(width, height)` rounded down to odd, with the same σ and the
/// kernel renormalised; a 1-pixel image therefore compares means only.
///
/// # Panics
/// If the images differ in size or channel count, or are empty.
pub fn ssim(a: &Image, b: &Image) -> f64 {
    assert!(
        a.width == b.width && a.height == b.height && a.channels == b.channels,
        "ssim: images differ in shape ({}x{}x{} vs {}x{}x{})",
        a.width,
        a.height,
        a.channels,
        b.width,
        b.height,
        b.channels
    );
    assert!(
        a.width > 0 && a.height > 0 && a.channels > 0,
        "ssim: empty image"
    );
    assert_eq!(
        a.data.len(),
        a.width * a.height * a.channels,
        "ssim: malformed image"
    );
    assert_eq!(
        b.data.len(),
        b.width * b.height * b.channels,
        "ssim: malformed image"
    );

    let smallest = a.width.min(a.height);
    let win = if smallest >= WINDOW {
        WINDOW
    } else if smallest % 2 == 1 {
        smallest
    } else {
        smallest - 1
    };
    let kernel = gaussian_kernel(win, SIGMA);
    let c = a.channels;
    let total: f64 = (0..c)
        .map(|ch| {
            let x: Vec<f64> = a
                .data
                .iter()
                .skip(ch)
                .step_by(c)
                .map(|&v| f64::from(v))
                .collect();
            let y: Vec<f64> = b
                .data
                .iter()
                .skip(ch)
                .step_by(c)
                .map(|&v| f64::from(v))
                .collect();
            ssim_plane(&x, &y, a.width, a.height, &kernel)
        })
        .sum();
    total / c as f64
}

/// The 1-D Gaussian of odd length `n`, normalised to sum 1 (scipy's `_gaussian_kernel1d`).
fn gaussian_kernel(n: usize, sigma: f64) -> Vec<f64> {
    let r = (n / 2) as f64;
    let k: Vec<f64> = (0..n)
        .map(|i| {
            let d = i as f64 - r;
            (-0.5 * d * d / (sigma * sigma)).exp()
        })
        .collect();
    let s: f64 = k.iter().sum();
    k.into_iter().map(|v| v / s).collect()
}

/// Weighted sums over the valid positions of a separable window: rows first, then columns.
fn filter_valid(src: &[f64], w: usize, h: usize, k: &[f64]) -> Vec<f64> {
    let n = k.len();
    let (ow, oh) = (w + 1 - n, h + 1 - n);
    let mut rows = vec![0.0; ow * h];
    for y in 0..h {
        let line = &src[y * w..(y + 1) * w];
        for x in 0..ow {
            rows[y * ow + x] = line[x..x + n].iter().zip(k).map(|(v, kv)| v * kv).sum();
        }
    }
    let mut out = vec![0.0; ow * oh];
    for y in 0..oh {
        for (i, kv) in k.iter().enumerate() {
            let line = &rows[(y + i) * ow..(y + i + 1) * ow];
            for (o, v) in out[y * ow..(y + 1) * ow].iter_mut().zip(line) {
                *o += kv * v;
            }
        }
    }
    out
}

fn ssim_plane(x: &[f64], y: &[f64], w: usize, h: usize, k: &[f64]) -> f64 {
    let c1 = K1 * K1;
    let c2 = K2 * K2;
    let xx: Vec<f64> = x.iter().map(|v| v * v).collect();
    let yy: Vec<f64> = y.iter().map(|v| v * v).collect();
    let xy: Vec<f64> = x.iter().zip(y).map(|(a, b)| a * b).collect();
    let ux = filter_valid(x, w, h, k);
    let uy = filter_valid(y, w, h, k);
    let uxx = filter_valid(&xx, w, h, k);
    let uyy = filter_valid(&yy, w, h, k);
    let uxy = filter_valid(&xy, w, h, k);
    let n = ux.len();
    let sum: f64 = (0..n)
        .map(|i| {
            let (mx, my) = (ux[i], uy[i]);
            let vx = uxx[i] - mx * mx;
            let vy = uyy[i] - my * my;
            let vxy = uxy[i] - mx * my;
            ((2.0 * mx * my + c1) * (2.0 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        })
        .sum();
    sum / n as f64
}

/// Luma Y of ITU-R BT.601 as MATLAB's `rgb2ycbcr` computes it for floating-point input:
/// `Y = 16/255 + (65.481 R + 128.553 G + 24.966 B) / 255`, so Y lies in \[16/255, 235/255\].
///
/// Super-resolution papers report PSNR/SSIM on this channel; using MATLAB's exact formula (not
/// the full-range JPEG luma) keeps numbers comparable with theirs. Gray images are returned as
/// they are, without the studio-range offset, since they have no colour to convert.
pub fn rgb_to_y(img: &Image) -> Vec<f32> {
    match img.channels {
        1 => img.data.clone(),
        3 => img
            .data
            .chunks_exact(3)
            .map(|p| {
                let (r, g, b) = (f64::from(p[0]), f64::from(p[1]), f64::from(p[2]));
                (16.0 / 255.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0) as f32
            })
            .collect(),
        n => panic!("rgb_to_y: an image has 1 or 3 channels, not {n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [0, 1) from a small LCG.
    fn pseudo(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed ^ 0x9E37_79B9_7F4A_7C15;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 40) as f32 / (1u64 << 24) as f32
            })
            .collect()
    }

    /// A smooth test picture with some texture, so SSIM has structure to measure.
    fn picture(w: usize, h: usize, c: usize) -> Image {
        let noise = pseudo(w * h * c, 7);
        let mut data = Vec::with_capacity(w * h * c);
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    let v = 0.5
                        + 0.3 * ((x as f32) * 0.3 + ch as f32).sin() * ((y as f32) * 0.2).cos()
                        + 0.1 * noise[(y * w + x) * c + ch];
                    data.push(v.clamp(0.0, 1.0));
                }
            }
        }
        Image::new(w, h, c, data)
    }

    fn perturb(img: &Image, amount: f32, seed: u64) -> Image {
        let n = pseudo(img.data.len(), seed);
        let data = img
            .data
            .iter()
            .zip(n)
            .map(|(v, r)| (v + amount * (r - 0.5)).clamp(0.0, 1.0))
            .collect();
        Image::new(img.width, img.height, img.channels, data)
    }

    /// SSIM written the slow, obvious way: for every valid window position, direct 2-D weighted
    /// sums with the outer-product Gaussian, then the formula.
    fn reference_ssim(a: &Image, b: &Image) -> f64 {
        let win = WINDOW.min(a.width.min(a.height));
        let win = if win & 1 == 0 { win - 1 } else { win };
        let r = (win / 2) as f64;
        let mut g2 = vec![vec![0.0f64; win]; win];
        let mut total = 0.0;
        for (i, row) in g2.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                let (di, dj) = (i as f64 - r, j as f64 - r);
                *v = (-(di * di + dj * dj) / (2.0 * 1.5 * 1.5)).exp();
                total += *v;
            }
        }
        let c = a.channels;
        let mut per_channel = 0.0;
        for ch in 0..c {
            let at =
                |img: &Image, x: usize, y: usize| f64::from(img.data[(y * img.width + x) * c + ch]);
            let mut sum = 0.0;
            let mut count = 0;
            for y0 in 0..=a.height - win {
                for x0 in 0..=a.width - win {
                    let (mut mx, mut my, mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
                    for (i, row) in g2.iter().enumerate() {
                        for (j, g) in row.iter().enumerate() {
                            let wgt = g / total;
                            let (p, q) = (at(a, x0 + j, y0 + i), at(b, x0 + j, y0 + i));
                            mx += wgt * p;
                            my += wgt * q;
                            sxx += wgt * p * p;
                            syy += wgt * q * q;
                            sxy += wgt * p * q;
                        }
                    }
                    let (vx, vy, cov) = (sxx - mx * mx, syy - my * my, sxy - mx * my);
                    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
                    sum += (2.0 * mx * my + c1) * (2.0 * cov + c2)
                        / ((mx * mx + my * my + c1) * (vx + vy + c2));
                    count += 1;
                }
            }
            per_channel += sum / count as f64;
        }
        per_channel / c as f64
    }

    #[test]
    fn mse_and_psnr_of_known_error() {
        let a = vec![0.5f32; 1000];
        let b: Vec<f32> = (0..1000)
            .map(|i| if i % 2 == 0 { 0.6 } else { 0.4 })
            .collect();
        let m = mse(&a, &b);
        // Every difference is 0.1 (up to f32 rounding of 0.6 and 0.4).
        assert!((m - 0.01).abs() < 1e-8, "{m}");
        assert!((psnr(&a, &b) - 20.0).abs() < 1e-5);
        let c = vec![0.5f32 + 1.0 / 255.0; 1000];
        let expected = 20.0 * 255.0f64.log10();
        assert!((psnr(&a, &c) - expected).abs() < 1e-4, "{}", psnr(&a, &c));
        assert_eq!(psnr(&a, &a), f64::INFINITY);
        assert_eq!(mse(&[0.0, 1.0], &[1.0, 1.0]), 0.5);
    }

    #[test]
    #[should_panic(expected = "lengths differ")]
    fn mse_rejects_mismatched_lengths() {
        mse(&[0.0, 1.0], &[0.0]);
    }

    #[test]
    fn kernel_matches_scipy() {
        // scipy.ndimage._filters._gaussian_kernel1d(1.5, 0, 5)
        let k = gaussian_kernel(11, 1.5);
        let want = [
            0.001_028_380_084_479_11,
            0.007_598_758_135_239_185,
            0.036_000_772_128_430_83,
            0.109_360_689_509_700_02,
            0.213_005_537_711_253_7,
            0.266_011_724_861_794_36,
        ];
        for (i, w) in want.iter().enumerate() {
            assert!((k[i] - w).abs() < 1e-8, "{i}: {} vs {w}", k[i]);
            assert!((k[10 - i] - w).abs() < 1e-8);
        }
    }

    #[test]
    fn ssim_of_identical_images_is_one() {
        let img = picture(40, 30, 3);
        assert!((ssim(&img, &img) - 1.0).abs() < 1e-12);
        let flat = Image::new(16, 16, 1, vec![0.25; 256]);
        assert!((ssim(&flat, &flat) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn ssim_matches_direct_reference() {
        for &(w, h, c) in &[(24, 19, 1), (15, 13, 3), (9, 14, 1), (6, 6, 3), (1, 5, 1)] {
            let a = picture(w, h, c);
            let b = perturb(&a, 0.3, 11);
            let fast = ssim(&a, &b);
            let slow = reference_ssim(&a, &b);
            assert!((fast - slow).abs() < 1e-10, "{w}x{h}x{c}: {fast} vs {slow}");
            assert!(fast < 0.999);
        }
    }

    #[test]
    fn ssim_decreases_with_noise_and_is_symmetric() {
        let a = picture(48, 40, 3);
        let mut last = 1.0;
        for (i, amount) in [0.05, 0.15, 0.4, 0.8].into_iter().enumerate() {
            let b = perturb(&a, amount, 100 + i as u64);
            let s = ssim(&a, &b);
            assert!(s < last, "{amount}: {s} !< {last}");
            assert!((s - ssim(&b, &a)).abs() < 1e-12);
            last = s;
        }
        assert!(last < 0.8);
    }

    #[test]
    fn ssim_averages_channels() {
        let a = picture(20, 20, 3);
        let b = perturb(&a, 0.5, 3);
        let plane = |img: &Image, ch: usize| {
            Image::new(
                img.width,
                img.height,
                1,
                img.data.iter().skip(ch).step_by(3).copied().collect(),
            )
        };
        let mean = (0..3)
            .map(|ch| ssim(&plane(&a, ch), &plane(&b, ch)))
            .sum::<f64>()
            / 3.0;
        assert!((ssim(&a, &b) - mean).abs() < 1e-12);
    }

    #[test]
    fn ssim_sees_a_mean_shift() {
        // Luminance term only: a constant offset on a flat image.
        let a = Image::new(12, 12, 1, vec![0.5; 144]);
        let b = Image::new(12, 12, 1, vec![0.6; 144]);
        let c1 = 0.0001;
        let want = (2.0 * 0.5 * 0.6f32 as f64 + c1) / (0.25 + (0.6f32 as f64).powi(2) + c1);
        assert!(
            (ssim(&a, &b) - want).abs() < 1e-9,
            "{} vs {want}",
            ssim(&a, &b)
        );
    }

    #[test]
    fn luma_follows_matlab() {
        let img = Image::new(
            4,
            1,
            3,
            vec![0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.2, 0.4, 0.6],
        );
        let y = rgb_to_y(&img);
        assert!((y[0] - 16.0 / 255.0).abs() < 1e-7);
        assert!((y[1] - 235.0 / 255.0).abs() < 1e-6);
        assert!((y[2] - (16.0 + 65.481) / 255.0).abs() < 1e-6);
        let want = (16.0 + 65.481 * 0.2 + 128.553 * 0.4 + 24.966 * 0.6) / 255.0;
        assert!((y[3] - want).abs() < 1e-6);
        let gray = Image::new(2, 1, 1, vec![0.1, 0.9]);
        assert_eq!(rgb_to_y(&gray), gray.data);
    }
}

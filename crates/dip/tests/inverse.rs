//! The fit loop on inverse problems other than denoising: A(f(z)) is matched to the observation
//! through the operator's forward and adjoint, and the restored image must beat the obvious
//! baselines on small images.

use dip::fit::{FitConfig, InputKind, Loss, fit, fit_denoise};
use dip::image::Image;
use dip::metrics::psnr;
use dip::nets::SkipSpec;
use dip::operators::{Blur, Downsample, Mask, Operator, Psf, bicubic_upscale, noise_models};

/// A smooth, structured test image: blobs and an edge, values in [0, 1].
fn test_image(w: usize, h: usize, c: usize) -> Image {
    let mut data = Vec::with_capacity(w * h * c);
    for y in 0..h {
        for x in 0..w {
            let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
            for ch in 0..c {
                let blob = (-((u - 0.35).powi(2) + (v - 0.4).powi(2)) * 18.0).exp();
                let edge = if u + 0.5 * v > 0.7 { 0.35 } else { 0.0 };
                data.push((0.15 + 0.5 * blob + edge + 0.1 * ch as f32 * v).clamp(0.0, 1.0));
            }
        }
    }
    Image::new(w, h, c, data)
}

fn small_spec(c: usize) -> SkipSpec {
    SkipSpec::uniform(8, c, 3, 16, 4)
}

/// PSNR over the pixels where `sel` is true.
fn psnr_where(a: &Image, b: &Image, sel: &[bool]) -> f64 {
    let c = a.channels;
    let (mut se, mut n) = (0.0f64, 0usize);
    for (i, &s) in sel.iter().enumerate() {
        if s {
            for k in 0..c {
                let d = (a.data[i * c + k] - b.data[i * c + k]) as f64;
                se += d * d;
                n += 1;
            }
        }
    }
    -10.0 * (se / n as f64).log10()
}

#[test]
fn inpainting_fills_missing_pixels_better_than_the_mean() {
    let clean = test_image(48, 48, 3);
    let mask = Mask::random(48, 48, 0.5, 3).unwrap().with_channels(3);
    let obs = mask.apply(&clean).unwrap();
    let cfg = FitConfig {
        iters: 200,
        reg_noise: 0.03,
        ema: 0.0,
        observe_every: 50,
        ..FitConfig::default()
    };
    let r = fit(&obs, &mask, Some(&clean), small_spec(3), &cfg, &mut []).unwrap();
    let missing: Vec<bool> = mask.known().iter().map(|k| !k).collect();
    // Baseline: every missing pixel set to the mean of the known ones, per channel.
    let mut fill = obs.clone();
    for ch in 0..3 {
        let (mut s, mut n) = (0.0f32, 0.0f32);
        for (i, &k) in mask.known().iter().enumerate() {
            if k {
                s += obs.data[i * 3 + ch];
                n += 1.0;
            }
        }
        for (i, &m) in missing.iter().enumerate() {
            if m {
                fill.data[i * 3 + ch] = s / n;
            }
        }
    }
    let dip_missing = psnr_where(&r.output_raw, &clean, &missing);
    let mean_missing = psnr_where(&fill, &clean, &missing);
    assert!(
        dip_missing > mean_missing + 6.0,
        "missing pixels: DIP {dip_missing:.2} dB vs mean fill {mean_missing:.2} dB"
    );
    // The observation is the masked image, the same shape as the result.
    assert!(r.psnr_noisy.is_some());
    assert!(r.psnr_final.unwrap() > r.psnr_noisy.unwrap() + 10.0);
}

#[test]
fn super_resolution_beats_bicubic_upscaling() {
    let hr = test_image(64, 64, 3);
    let down = Downsample::new(64, 64, 3, 2).unwrap();
    let lr = down.apply(&hr).unwrap();
    assert_eq!((lr.width, lr.height), (32, 32));
    let cfg = FitConfig {
        iters: 600,
        reg_noise: 0.03,
        ema: 0.0,
        observe_every: 50,
        ..FitConfig::default()
    };
    let r = fit(&lr, &down, Some(&hr), small_spec(3), &cfg, &mut []).unwrap();
    assert_eq!((r.output_raw.width, r.output_raw.height), (64, 64));
    // No PSNR of the observation: it is a different size from the clean image.
    assert!(r.psnr_noisy.is_none());
    let bicubic = bicubic_upscale(&lr, 2).unwrap();
    let p_bic = psnr(&bicubic.data, &hr.data);
    let p_dip = psnr(&r.output_raw.data, &hr.data);
    assert!(
        p_dip > p_bic + 0.5,
        "DIP {p_dip:.2} dB vs bicubic {p_bic:.2} dB"
    );
    // And the result, downsampled again, reproduces the observation closely.
    let again = down.apply(&r.output_raw).unwrap();
    assert!(psnr(&again.data, &lr.data) > 40.0);
}

#[test]
fn deblurring_sharpens_above_the_blurred_input() {
    // Blocks with sharp edges: what a blur destroys and a deblurrer must bring back. (On a
    // smooth image a Gaussian blur loses little, and there is little to win.)
    let mut clean = Image::zeros(48, 48, 1);
    for y in 0..48 {
        for x in 0..48 {
            clean.data[y * 48 + x] = if (x / 8 + y / 12) % 2 == 0 { 0.8 } else { 0.2 };
        }
    }
    let blur = Blur::new(Psf::gaussian(1.5, 9).unwrap(), 48, 48, 1).unwrap();
    let obs = blur.apply(&clean).unwrap();
    let cfg = FitConfig {
        iters: 600,
        reg_noise: 0.0,
        ema: 0.0,
        observe_every: 50,
        ..FitConfig::default()
    };
    let r = fit(&obs, &blur, Some(&clean), small_spec(1), &cfg, &mut []).unwrap();
    let p_blur = r.psnr_noisy.unwrap();
    let p_dip = psnr(&r.output_raw.data, &clean.data);
    assert!(
        p_dip > p_blur + 4.0,
        "DIP {p_dip:.2} dB vs blurred {p_blur:.2} dB"
    );
}

#[test]
fn l1_loss_beats_l2_on_impulse_noise() {
    let clean = test_image(48, 48, 1);
    let noisy = noise_models::impulse(&clean, 0.15, 5).unwrap();
    let base = FitConfig {
        iters: 200,
        ema: 0.0,
        observe_every: 50,
        ..FitConfig::default()
    };
    let l2 = fit_denoise(&noisy, Some(&clean), small_spec(1), &base, &mut []).unwrap();
    let l1 = fit_denoise(
        &noisy,
        Some(&clean),
        small_spec(1),
        &FitConfig {
            loss: Loss::L1,
            ..base.clone()
        },
        &mut [],
    )
    .unwrap();
    let (p_noisy, p2, p1) = (
        l1.psnr_noisy.unwrap(),
        l2.psnr_best_raw.unwrap(),
        l1.psnr_best_raw.unwrap(),
    );
    assert!(p1 > p_noisy + 8.0, "L1 {p1:.2} dB vs noisy {p_noisy:.2} dB");
    assert!(p1 > p2 + 2.0, "L1 {p1:.2} dB vs L2 {p2:.2} dB");
    // The reported loss is the mean absolute error of the step.
    assert!(l1.history[0].loss < 0.5 && l1.history[0].loss > 0.0);
}

#[test]
fn meshgrid_input_fits_and_needs_two_channels() {
    let clean = test_image(32, 32, 3);
    let mask = Mask::random(32, 32, 0.7, 1).unwrap().with_channels(3);
    let obs = mask.apply(&clean).unwrap();
    let cfg = FitConfig {
        iters: 150,
        reg_noise: 0.03,
        ema: 0.0,
        input: InputKind::Meshgrid,
        observe_every: 50,
        ..FitConfig::default()
    };
    let wrong = fit(&obs, &mask, None, small_spec(3), &cfg, &mut []).unwrap_err();
    assert!(wrong.to_string().contains("meshgrid"), "{wrong}");
    let spec = SkipSpec::uniform(2, 3, 3, 16, 4);
    let r = fit(&obs, &mask, Some(&clean), &spec, &cfg, &mut []).unwrap();
    assert!(r.psnr_final.unwrap() > r.psnr_noisy.unwrap() + 5.0);
    // Deterministic: the meshgrid input has no randomness of its own.
    let again = fit(&obs, &mask, Some(&clean), &spec, &cfg, &mut []).unwrap();
    assert_eq!(r.output_raw.data, again.output_raw.data);
}

#[test]
fn shapes_that_do_not_fit_the_operator_are_errors() {
    let hr = test_image(32, 32, 3);
    let down = Downsample::new(32, 32, 3, 4).unwrap();
    let cfg = FitConfig {
        iters: 2,
        ..FitConfig::default()
    };
    // The observation must be what the operator gives.
    let e = fit(&hr, &down, None, small_spec(3), &cfg, &mut []).unwrap_err();
    assert!(e.to_string().contains("8x8x3"), "{e}");
    // The clean image must have the restored image's shape.
    let lr = down.apply(&hr).unwrap();
    let e = fit(&lr, &down, Some(&lr), small_spec(3), &cfg, &mut []).unwrap_err();
    assert!(e.to_string().contains("clean image"), "{e}");
}

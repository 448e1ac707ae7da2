//! The fit loop end to end on small images: DIP must denoise, be deterministic, handle any size.

use dip::fit::{Control, FitConfig, StepInfo, fit_denoise};
use dip::image::Image;
use dip::metrics::psnr;
use dip::nets::SkipSpec;
use dip::noise::add_gaussian_noise;

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

#[test]
fn dip_denoises_above_the_noisy_input() {
    let clean = test_image(48, 48, 3);
    let noisy = add_gaussian_noise(&clean, 25.0, 1);
    let cfg = FitConfig {
        iters: 150,
        observe_every: 25,
        ..FitConfig::default()
    };
    let report = fit_denoise(&noisy, Some(&clean), small_spec(3), &cfg, &mut []).unwrap();
    let noisy_psnr = report.psnr_noisy.unwrap();
    let final_psnr = report.psnr_final.unwrap();
    assert!((noisy_psnr - psnr(&noisy.data, &clean.data)).abs() < 1e-9);
    assert!(
        final_psnr > noisy_psnr + 3.0,
        "PSNR {final_psnr:.2} dB vs noisy {noisy_psnr:.2} dB"
    );
    assert_eq!(report.iterations_run, 150);
    assert_eq!(report.history.len(), 6);
    assert_eq!(
        (
            report.output_ema.width,
            report.output_ema.height,
            report.output_ema.channels
        ),
        (48, 48, 3)
    );
}

#[test]
fn same_seed_same_result_and_other_seed_differs() {
    let clean = test_image(40, 24, 1);
    let noisy = add_gaussian_noise(&clean, 25.0, 2);
    let cfg = FitConfig {
        iters: 5,
        ..FitConfig::default()
    };
    let a = fit_denoise(&noisy, None, small_spec(1), &cfg, &mut []).unwrap();
    let b = fit_denoise(&noisy, None, small_spec(1), &cfg, &mut []).unwrap();
    assert_eq!(a.output_ema.data, b.output_ema.data);
    let c = fit_denoise(
        &noisy,
        None,
        small_spec(1),
        &FitConfig { seed: 1, ..cfg },
        &mut [],
    )
    .unwrap();
    assert_ne!(a.output_ema.data, c.output_ema.data);
}

#[test]
fn odd_sizes_are_padded_and_cropped_back() {
    // 37x21 pads to 40x32 for a 3-scale net (multiple 8, minimum 16): the output has the input size.
    let clean = test_image(37, 21, 3);
    let cfg = FitConfig {
        iters: 2,
        ..FitConfig::default()
    };
    let r = fit_denoise(&clean, Some(&clean), small_spec(3), &cfg, &mut []).unwrap();
    assert_eq!((r.output_ema.width, r.output_ema.height), (37, 21));
    assert_eq!((r.output_raw.width, r.output_raw.height), (37, 21));
}

#[test]
fn observers_see_every_check_and_can_stop_the_run() {
    let clean = test_image(32, 32, 1);
    let mut seen = Vec::new();
    let mut obs = |i: &StepInfo<'_>| {
        seen.push(i.iter);
        if i.iter >= 6 {
            Control::Stop
        } else {
            Control::Continue
        }
    };
    let cfg = FitConfig {
        iters: 100,
        observe_every: 3,
        ..FitConfig::default()
    };
    let r = fit_denoise(&clean, None, small_spec(1), &cfg, &mut [&mut obs]).unwrap();
    assert_eq!(seen, vec![3, 6]);
    assert_eq!(r.iterations_run, 6);
}

#[test]
fn bad_settings_are_refused() {
    let clean = test_image(32, 32, 1);
    for cfg in [
        FitConfig {
            iters: 0,
            ..FitConfig::default()
        },
        FitConfig {
            lr: -1.0,
            ..FitConfig::default()
        },
        FitConfig {
            lr: f64::NAN,
            ..FitConfig::default()
        },
        FitConfig {
            ema: 1.0,
            ..FitConfig::default()
        },
    ] {
        assert!(
            fit_denoise(&clean, None, small_spec(1), &cfg, &mut []).is_err(),
            "{cfg:?}"
        );
    }
    // Channel mismatch between network and image.
    assert!(
        fit_denoise(
            &clean,
            None,
            small_spec(3),
            &FitConfig {
                iters: 1,
                ..FitConfig::default()
            },
            &mut []
        )
        .is_err()
    );
}

#[test]
fn a_collapsing_fit_is_rolled_back() {
    // An absurd learning rate makes the output collapse (PSNR against the observation falls by
    // more than 5 dB between checks); the loop must restore the last good state instead of
    // carrying on from the collapse, and still return a finite image.
    let clean = test_image(32, 32, 1);
    let noisy = add_gaussian_noise(&clean, 25.0, 3);
    let cfg = FitConfig {
        iters: 60,
        lr: 5.0,
        check_every: 1,
        ..FitConfig::default()
    };
    let r = fit_denoise(&noisy, Some(&clean), small_spec(1), &cfg, &mut []).unwrap();
    assert!(r.rollbacks > 0, "no rollback at lr 5");
    // Each rollback halves the step size, so the replay is not the same collapse again.
    assert_eq!(r.lr_final, 5.0 * 0.5f64.powi(r.rollbacks as i32));
    assert!(r.output_ema.data.iter().all(|v| v.is_finite()));
}

#[test]
fn the_trajectory_recorder_streams_frames_and_an_index() {
    use dip::fit::{TrajectoryIndex, TrajectoryRecorder};
    use ndarray::Array3;
    use ndarray_npy::ReadNpyExt;

    let dir = std::env::temp_dir().join(format!("dip-trajectory-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let clean = test_image(40, 24, 3);
    let noisy = add_gaussian_noise(&clean, 25.0, 4);
    let cfg = FitConfig {
        iters: 12,
        observe_every: 2,
        ..FitConfig::default()
    };
    let mut rec =
        TrajectoryRecorder::new(&dir, 4, cfg.seed, serde_json::json!({"iters": 12})).unwrap();
    let mut last = Vec::new();
    let mut keep_last = |i: &StepInfo<'_>| {
        last = i.output.data.clone();
        Control::Continue
    };
    fit_denoise(
        &noisy,
        Some(&clean),
        small_spec(3),
        &cfg,
        &mut [&mut rec, &mut keep_last],
    )
    .unwrap();
    assert!(rec.take_error().is_none());

    let index: TrajectoryIndex =
        serde_json::from_slice(&std::fs::read(dir.join("trajectory.json")).unwrap()).unwrap();
    assert_eq!(index.steps, vec![4, 8, 12]);
    assert_eq!(index.frames.len(), 3);
    assert!(index.psnr_ema.iter().all(|p| p.is_some()));
    assert_eq!((index.width, index.height, index.channels), (40, 24, 3));
    let frame =
        Array3::<f32>::read_npy(std::fs::File::open(dir.join(&index.frames[2])).unwrap()).unwrap();
    assert_eq!(frame.shape(), &[24, 40, 3]);
    // The last frame is the raw output of step 12, exactly.
    assert_eq!(frame.as_slice().unwrap(), &last[..]);
    let _ = std::fs::remove_dir_all(&dir);
}

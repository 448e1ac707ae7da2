//! `dip::task`: degradations make the problems the operators define, problems refuse clean
//! images of the wrong shape, and `restore` restores, deterministically, honouring its rule,
//! SGLD and cancellation.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use dip::fit::{InputKind, Loss, StopKind};
use dip::image::{self, Image};
use dip::metrics::psnr;
use dip::operators::{Blur, Downsample, Mask, Operator, Psf};
use dip::recipe::{FitRecipe, NetRecipe, PerScale, Recipe, SgldRecipe, StopRecipe};
use dip::task::{
    Degradation, MaskKind, Noise, NoiseModel, Problem, RunContext, Seeds, TaskKind, restore,
};

/// A smooth gray picture with one edge, on the 8-bit grid.
fn picture(w: usize, h: usize) -> Image {
    let data = (0..w * h)
        .map(|i| {
            let (x, y) = ((i % w) as f32, (i / w) as f32);
            let v = 0.2 + 0.5 * x / w as f32 + if y > h as f32 / 2.0 { 0.2 } else { 0.0 };
            (v * 255.0).round() / 255.0
        })
        .collect();
    Image::new(w, h, 1, data)
}

fn narrow(iters: usize, rule: StopKind) -> Recipe {
    Recipe {
        description: String::new(),
        fit: FitRecipe {
            iters,
            lr: 0.01,
            reg_noise: 1.0 / 30.0,
            ema: 0.0,
            seed: 7,
            loss: Loss::L2,
            input: InputKind::Noise,
            lipschitz: None,
            pixel_batch: None,
            precision: Default::default(),
        },
        net: NetRecipe {
            input_channels: 8,
            scales: 3,
            down: PerScale::All(16),
            up: PerScale::All(16),
            skip: PerScale::All(4),
            ..NetRecipe::default()
        },
        stop: StopRecipe {
            rule,
            ..StopRecipe::default()
        },
        sgld: None,
    }
}

#[test]
fn degradations_make_what_their_operators_make() {
    let clean = picture(36, 28);
    let seeds = Seeds::from_one(3);
    // Without noise, the observation is the operator applied to the clean image, quantised.
    let q = |img: Image| image::quantize(&img, clean.bit_depth);

    let p = Degradation::Blur {
        psf: Psf::gaussian(1.5, Psf::default_gaussian_size(1.5)).unwrap(),
        noise: Noise::None,
    }
    .apply(&clean, seeds)
    .unwrap();
    let blur = Blur::new(
        Psf::gaussian(1.5, Psf::default_gaussian_size(1.5)).unwrap(),
        36,
        28,
        1,
    )
    .unwrap();
    assert_eq!(p.kind, TaskKind::Deblur);
    assert_eq!(p.observation, q(blur.apply(&clean).unwrap()));
    assert_eq!(p.clean.as_ref(), Some(&clean));

    // Downsampling crops to a multiple of the factor first: 36x28 at x8 keeps 32x24.
    let p = Degradation::Downsample {
        factor: 8,
        crop_to: None,
        noise: Noise::None,
    }
    .apply(&clean, seeds)
    .unwrap();
    let hr = image::center_crop(&clean, 32, 24);
    let down = Downsample::new(32, 24, 1, 8).unwrap();
    assert_eq!(p.observation, q(down.apply(&hr).unwrap()));
    assert_eq!(p.clean.as_ref(), Some(&hr));
    assert_eq!(p.result_shape(), (32, 24, 1));
    let (name, bicubic) = p.baseline().unwrap().unwrap();
    assert_eq!((name, bicubic.width, bicubic.height), ("bicubic", 32, 24));

    // Inpainting: the mask of the mask seed; unknown pixels hold 0; noise-free to the fit.
    let p = Degradation::Inpaint {
        mask: MaskKind::Random(0.5),
        noise: Noise::None,
    }
    .apply(&clean, seeds)
    .unwrap();
    let mask = Mask::random(36, 28, 0.5, seeds.mask).unwrap();
    assert_eq!(p.mask().unwrap().known(), mask.known());
    assert_eq!(p.noise, NoiseModel::NoiseFree);
    for (i, &k) in mask.known().iter().enumerate() {
        let want = if k { clean.data[i] } else { 0.0 };
        assert_eq!(p.observation.data[i], want, "pixel {i}");
    }
    let (name, fill) = p.baseline().unwrap().unwrap();
    assert_eq!(name, "harmonic fill");
    // The fill keeps the known pixels and beats leaving the holes black.
    assert!(psnr(&fill.data, &clean.data) > psnr(&p.observation.data, &clean.data) + 10.0);

    // Gaussian noise: of the requested spread (clipping aside, the picture stays in 0.2–0.9),
    // and from the noise seed alone.
    let p = Degradation::Noise(Noise::gaussian(25.0))
        .apply(&clean, seeds)
        .unwrap();
    let n = clean.data.len() as f64;
    let var = p
        .observation
        .data
        .iter()
        .zip(&clean.data)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum::<f64>()
        / n;
    let sigma = var.sqrt() * 255.0;
    assert!((sigma - 25.0).abs() < 2.5, "noise sigma {sigma}");
    let again = Degradation::Noise(Noise::gaussian(25.0))
        .apply(&clean, Seeds { mask: 99, ..seeds })
        .unwrap();
    assert_eq!(p.observation, again.observation);
}

#[test]
fn bad_shapes_are_errors_that_name_them() {
    let clean = picture(32, 32);
    let p = Problem::denoise(clean.clone());
    let e = p.with_clean(picture(16, 32)).unwrap_err().to_string();
    assert!(e.contains("16x32") && e.contains("32x32"), "{e}");
    let e = Problem::inpaint(clean.clone(), Mask::random(16, 16, 0.5, 0).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("16x16") && e.contains("32x32"), "{e}");
    let none = Mask::from_known(32, 32, vec![false; 32 * 32]).unwrap();
    let e = Problem::inpaint(clean.clone(), none)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no known pixel"), "{e}");
    let e = Problem::super_resolve(clean.clone(), 3)
        .unwrap_err()
        .to_string();
    assert!(e.contains("factor"), "{e}");
    let e = Degradation::Downsample {
        factor: 8,
        crop_to: None,
        noise: Noise::None,
    }
    .apply(&picture(6, 40), Seeds::from_one(0))
    .unwrap_err()
    .to_string();
    assert!(e.contains("6x40"), "{e}");
    let op = Downsample::new(32, 32, 1, 2).unwrap();
    let e = Problem::new(clean, Box::new(op)).unwrap_err().to_string();
    assert!(e.contains("16x16"), "{e}");
}

#[test]
fn restore_denoises_deterministically_and_measures_what_it_returns() {
    let clean = picture(32, 32);
    let problem = Degradation::Noise(Noise::gaussian(25.0))
        .apply(&clean, Seeds::from_one(1))
        .unwrap();
    let noisy = psnr(&problem.observation.data, &clean.data);
    let recipe = narrow(300, StopKind::Fixed);
    let a = restore(&problem, &recipe, RunContext::default()).unwrap();
    let b = restore(&problem, &recipe, RunContext::default()).unwrap();
    assert_eq!(a.image, b.image, "same seed, same threads: the same result");
    assert_eq!((a.stopped_at, a.chosen), (300, false));
    let got = psnr(&a.image.data, &clean.data);
    assert_eq!(a.psnr, Some(got));
    assert!(
        got > noisy + 2.0,
        "restored {got:.2} dB against noisy {noisy:.2}"
    );
    assert!(a.ssim.is_some());
    // The summary carries the rule and the recipe.
    let v = a.summary(vec![]).unwrap();
    assert_eq!(v["stop_rule"], "fixed");
    assert_eq!(v["recipe"]["fit"]["iters"], 300);

    // A rule that chooses returns the image of its step.
    let mut recipe = narrow(400, StopKind::Discrepancy);
    recipe.stop.patience = 50;
    let problem = problem.with_noise_sigma(25.0).unwrap();
    let r = restore(&problem, &recipe, RunContext::default()).unwrap();
    assert!(r.chosen, "the discrepancy principle fires within 400 steps");
    // The discrepancy principle's step is final: the fit ends there, before its budget.
    assert!(r.stopped_at <= r.report.iterations_run && r.report.iterations_run < 400);
    assert!((r.stop_sigma.unwrap() - 25.0).abs() < 1e-9);
    assert_eq!(r.psnr, Some(psnr(&r.image.data, &clean.data)));
}

#[test]
fn restore_honours_sgld_and_cancellation() {
    let clean = picture(32, 32);
    let problem = Degradation::Noise(Noise::gaussian(25.0))
        .apply(&clean, Seeds::from_one(2))
        .unwrap();
    let mut recipe = narrow(60, StopKind::Auto);
    recipe.sgld = Some(SgldRecipe {
        burn_in: Some(20),
        every: 10,
        noise: 2.0,
    });
    let r = restore(&problem, &recipe, RunContext::default()).unwrap();
    let s = r.sgld.as_ref().expect("SGLD ran");
    // Samples at steps 30, 40, 50, 60 (after the burn-in of 20, every 10).
    assert_eq!(s.samples, 4);
    assert_eq!(r.stop_kind, StopKind::Fixed, "SGLD runs every step");
    assert_eq!(r.report.iterations_run, 60);
    assert!(s.std_max > 0.0 && s.std_mean > 0.0 && s.std_mean <= s.std_max);

    // Cancelled before the first step: interrupted, with what it has.
    let cancel = Arc::new(AtomicBool::new(true));
    let ctx = RunContext {
        cancel: Some(cancel),
        ..RunContext::default()
    };
    let r = restore(&problem, &narrow(100, StopKind::Auto), ctx).unwrap();
    assert!(r.report.interrupted);
    assert!(r.report.iterations_run < 100);
    assert!(r.stop_warnings.is_empty());
}

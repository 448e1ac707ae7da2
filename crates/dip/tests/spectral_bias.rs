//! The paper's claims, checked end to end on small images: a DIP fit learns the low
//! frequencies of its target first, and images with more high-frequency content take longer to
//! fit. These run real fits (a narrow network, a few hundred steps) and the real analysis.

use dip::fit::{FitConfig, TrajectoryRecorder, fit_denoise};
use dip::image::{self, Image};
use dip::metrics::psnr;
use dip::nets::SkipSpec;
use dip::noise::add_gaussian_noise;
use dip::operators::bicubic_resize;
use dip::spectral::crossing_step;
use dip::spectral::study::{RecordedRun, StudyOptions, analyze, spearman};
use dip::synthetic::{high_frequency_fraction, triangle_family};

fn spec() -> SkipSpec {
    SkipSpec::uniform(16, 3, 3, 32, 4)
}

/// The built-in demo image (a 128x128 F16), reduced to `side` pixels.
fn natural_image(side: usize) -> Image {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../dip-cli/assets/f16_128.png");
    let (img, _) = image::load(std::path::Path::new(path)).unwrap();
    bicubic_resize(&img, side, side).unwrap()
}

/// Fits `obs` (one seed per entry of `seeds`) recording every `every` steps into a fresh
/// temporary folder; returns the folder and the run folders.
fn record(
    obs: &Image,
    clean: Option<&Image>,
    seeds: &[u64],
    iters: usize,
    every: usize,
) -> (tempfile::TempDir, Vec<RecordedRun>) {
    let dir = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for &seed in seeds {
        let cfg = FitConfig {
            iters,
            seed,
            observe_every: every,
            ..FitConfig::default()
        };
        let run_dir = dir.path().join(format!("seed{seed}"));
        let mut rec =
            TrajectoryRecorder::new(&run_dir, every, seed, serde_json::json!({})).unwrap();
        fit_denoise(obs, clean, spec(), &cfg, &mut [&mut rec]).unwrap();
        assert!(rec.take_error().is_none());
        runs.push(RecordedRun::open(&run_dir).unwrap());
    }
    (dir, runs)
}

#[test]
fn a_noisy_natural_image_is_fitted_low_bands_first() {
    let clean = natural_image(64);
    let noisy = add_gaussian_noise(&clean, 25.0, 0);
    let (_dir, runs) = record(&noisy, Some(&clean), &[0, 1], 400, 10);
    let a = analyze(&runs, &noisy, Some(&clean), &StudyOptions::default()).unwrap();
    let t: Vec<Option<f64>> = a.t_half();
    // The lowest bands (most of the image's energy) are fitted well before the noise-dominated
    // top bands; those that are reached are reached in order of frequency.
    let reached: Vec<f64> = t.iter().flatten().copied().collect();
    assert!(reached.len() >= 3, "t1/2 per band: {t:?}");
    assert_eq!(a.summary.t_half_monotone, Some(1.0), "t1/2 per band: {t:?}");
    assert!(
        a.summary.t_half_spearman.unwrap() > 0.9,
        "t1/2 per band: {t:?}"
    );
    // The top band, pure noise at this size, is not fitted within the run's best.
    assert!(t[t.len() - 1].is_none_or(|v| v > a.best_step.unwrap() as f64));
    // Early stopping beats the observation, and the best output looks like a low-pass of y
    // (the cutoff grows with time).
    assert!(a.best_psnr.unwrap() > psnr(&noisy.data, &clean.data) + 3.0);
    assert!(a.summary.cutoff_spearman.unwrap() > 0.8);
    // Two seeds were compared step by step.
    let two = a.two_run.as_ref().unwrap();
    assert_eq!(two.steps.len(), runs[0].len());
}

#[test]
fn triangles_with_more_high_frequencies_take_longer_to_fit() {
    let family = triangle_family(32, 5, 0).unwrap();
    let mut hf = Vec::new();
    let mut steps = Vec::new();
    for level in &family {
        let img = &level.image;
        let (_dir, runs) = record(img, Some(img), &[0], 300, 5);
        let a = analyze(&runs, img, Some(img), &StudyOptions::default()).unwrap();
        let r = &a.runs[0];
        let records: Vec<(usize, f64)> = r
            .steps
            .iter()
            .zip(&r.psnr_raw)
            .map(|(&s, p)| (s, p.unwrap()))
            .collect();
        hf.push(high_frequency_fraction(img).unwrap());
        steps.push(crossing_step(&records, 30.0).unwrap_or(1e9));
    }
    // The family rises in high-frequency content...
    assert!(hf.windows(2).all(|w| w[1] > w[0]), "{hf:?}");
    // ... and so does the time to fit it.
    let levels: Vec<f64> = (0..family.len()).map(|l| l as f64).collect();
    let rho = spearman(&levels, &steps).unwrap();
    assert!(
        rho > 0.85,
        "steps to 30 dB per level: {steps:?} (rank correlation {rho:.2})"
    );
    assert!(steps[steps.len() - 1] > 1.5 * steps[0], "{steps:?}");
}

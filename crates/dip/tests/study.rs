//! The spectral-bias study on recorded trajectories: loading, the analysis against independent
//! computations, the files it writes, and its errors.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dip::fit::{FitConfig, TrajectoryIndex, TrajectoryRecorder, fit_denoise};
use dip::image::Image;
use dip::metrics::psnr;
use dip::nets::SkipSpec;
use dip::noise::add_gaussian_noise;
use dip::spectral::study::{
    ANALYSIS_FILE, FORMAT_VERSION, TURNING_PROMINENCE, moving_average3, radial_power_spectrum,
    spearman, turning_points,
};
use dip::spectral::{
    Analysis, BandSpacing, BandTracker, Bands, Fft2d, PairAnalyzer, Progress, RecordedRun,
    StudyOptions, TurningKind, analyze, analyze_with_progress, band_half_times, lowpass,
};
use ndarray::ArrayView3;
use ndarray_npy::WriteNpyExt;
use serde_json::Value;

/// A scratch folder removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("dip-study-test-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A smooth, structured test image: a blob, an edge and a ramp, values in [0, 1].
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

fn write_npy(path: &Path, img: &Image) {
    let view =
        ArrayView3::from_shape((img.height, img.width, img.channels), &img.data[..]).unwrap();
    let mut bytes = Vec::new();
    view.write_npy(&mut bytes).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Writes a trajectory by hand: the given frames at the given steps.
fn write_trajectory(dir: &Path, frames: &[(usize, Image)], seed: u64) {
    std::fs::create_dir_all(dir.join("frames")).unwrap();
    let first = &frames[0].1;
    let mut index = TrajectoryIndex {
        width: first.width,
        height: first.height,
        channels: first.channels,
        seed,
        config: serde_json::json!({"hand": "made"}),
        ..TrajectoryIndex::default()
    };
    for (k, (step, img)) in frames.iter().enumerate() {
        let name = format!("frames/step_{step:06}.npy");
        write_npy(&dir.join(&name), img);
        index.steps.push(*step);
        index.loss.push(0.1 / (k + 1) as f64);
        index.psnr_raw.push(None);
        index.psnr_ema.push(None);
        index.frames.push(name);
    }
    std::fs::write(
        dir.join("trajectory.json"),
        serde_json::to_vec_pretty(&index).unwrap(),
    )
    .unwrap();
}

/// An idealised spectral-bias trajectory: the output at step `10 k` is a Gaussian low-pass of
/// the observation whose cutoff grows geometrically.
fn lowpass_trajectory(noisy: &Image) -> (Vec<(usize, Image)>, Vec<f64>) {
    let cutoffs: Vec<f64> = (0..12)
        .map(|k| 0.01 * (300f64).powf(k as f64 / 11.0))
        .collect();
    let frames = cutoffs
        .iter()
        .enumerate()
        .map(|(k, &c)| (10 * (k + 1), lowpass(noisy, c).unwrap()))
        .collect();
    (frames, cutoffs)
}

struct Scene {
    clean: Image,
    noisy: Image,
    frames: Vec<(usize, Image)>,
    cutoffs: Vec<f64>,
}

fn scene(w: usize, h: usize, c: usize) -> Scene {
    let clean = test_image(w, h, c);
    let noisy = add_gaussian_noise(&clean, 25.0, 7);
    let (frames, cutoffs) = lowpass_trajectory(&noisy);
    Scene {
        clean,
        noisy,
        frames,
        cutoffs,
    }
}

#[test]
fn half_times_lowpass_and_best_step_match_independent_computations() {
    let tmp = TempDir::new("ideal");
    let s = scene(32, 24, 3);
    write_trajectory(tmp.path(), &s.frames, 5);
    let run = RecordedRun::open(tmp.path()).unwrap();
    assert_eq!(run.len(), 12);
    assert_eq!(run.seed(), 5);
    let opts = StudyOptions::default();
    assert_eq!((opts.bands, opts.spacing), (8, BandSpacing::Linear));
    let a = analyze(&[run], &s.noisy, Some(&s.clean), &opts).unwrap();

    // Half-times: the same as band_half_times on an independent tracker over the frames.
    let bands = Bands::cached(32, 24, 8, BandSpacing::Linear).unwrap();
    let mut tracker = BandTracker::new(Arc::clone(&bands), &s.noisy, Some(&s.clean)).unwrap();
    let mut obs_rec = Vec::new();
    let mut clean_rec = Vec::new();
    for (step, img) in &s.frames {
        let f = tracker.observe(img).unwrap();
        obs_rec.push((*step, f.fit.clone()));
        clean_rec.push((*step, f.fit_clean.unwrap()));
    }
    let t_obs = band_half_times(&obs_rec);
    let t_clean = band_half_times(&clean_rec);
    assert_eq!(a.bands.len(), 8);
    for (b, band) in a.bands.iter().enumerate() {
        assert_eq!(band.t_half, t_obs[b], "band {b}");
        assert_eq!(band.t_half_clean, t_clean[b], "band {b}");
        assert_eq!(band.t_half_runs, vec![t_obs[b]]);
        assert_eq!((band.lo, band.hi), (bands.edges[b], bands.edges[b + 1]));
        assert_eq!(band.bins, bands.counts[b]);
        assert_eq!(band.energy_observation, tracker.observation_energy()[b]);
        assert_eq!(band.energy_noise, Some(tracker.noise_energy().unwrap()[b]));
        assert_eq!(a.runs[0].band_fit[a.runs[0].steps.len() - 1], obs_rec[11].1);
    }
    // A low-pass trajectory fits low bands first: t½ never decreases with the band.
    assert!(a.summary.bands_reaching_half >= 4, "{:?}", a.t_half());
    assert_eq!(a.summary.t_half_monotone, Some(1.0));
    assert!(a.summary.t_half_spearman.unwrap() > 0.9);

    // Low-pass: each frame is LPF_c(y), so the fit recovers c with (almost) no residual.
    for (i, &c) in s.cutoffs.iter().enumerate() {
        let (got, res) = (a.lowpass.cutoff[i], a.lowpass.residual[i]);
        if !a.lowpass.at_bound[i] {
            assert!(
                (got / c - 1.0).abs() < 1e-3,
                "step {i}: cutoff {got} vs {c}"
            );
        }
        assert!(res < 1e-3, "step {i}: residual {res}");
    }
    assert_eq!(a.summary.cutoff_spearman, Some(1.0));

    // Best step: highest PSNR of a frame against the clean image.
    let psnrs: Vec<f64> = s
        .frames
        .iter()
        .map(|(_, x)| psnr(&x.data, &s.clean.data))
        .collect();
    let (bi, bp) =
        psnrs.iter().enumerate().fold(
            (0, f64::NEG_INFINITY),
            |acc, (i, &p)| if p > acc.1 { (i, p) } else { acc },
        );
    assert_eq!(a.best_step, Some(s.frames[bi].0));
    assert_eq!(a.best_psnr, Some(bp));
    assert_eq!(a.lowpass.dip_best_psnr, Some(bp));
    assert_eq!(a.runs[0].psnr_clean.as_deref(), Some(&psnrs[..]));
    assert_eq!(a.summary.final_psnr, Some(psnrs[11]));

    // The best low-pass is at least as good as any low-pass we try, and as every frame (each
    // frame *is* a low-pass of y).
    let best_lp = a.lowpass.best_lowpass_psnr.unwrap();
    let best_c = a.lowpass.best_lowpass_cutoff.unwrap();
    for c in [0.01, 0.03, 0.05, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 3.0] {
        let p = psnr(&lowpass(&s.noisy, c).unwrap().data, &s.clean.data);
        assert!(best_lp >= p - 1e-4, "cutoff {c}: {p} > best {best_lp}");
    }
    for c in [best_c * 0.98, best_c * 1.02] {
        let p = psnr(&lowpass(&s.noisy, c).unwrap().data, &s.clean.data);
        assert!(
            best_lp >= p - 1e-4,
            "near the optimum, {c}: {p} > {best_lp}"
        );
    }
    assert!(best_lp >= bp - 1e-4);
    assert!(best_lp > psnr(&s.noisy.data, &s.clean.data));
    let gap = a.summary.dip_minus_lowpass_db.unwrap();
    assert!((gap - (bp - best_lp)).abs() < 1e-12);

    // One run: no comparison.
    assert!(a.two_run.is_none());
    assert_eq!((a.width, a.height, a.channels, a.num_runs), (32, 24, 3, 1));
    assert_eq!(a.seeds, vec![5]);

    // Spectra: the function on the same images.
    let mut fft = Fft2d::new(32, 24).unwrap();
    assert_eq!(
        a.spectra.observation,
        radial_power_spectrum(&mut fft, &s.noisy).unwrap()
    );
    assert_eq!(
        a.spectra.best.as_ref().unwrap(),
        &radial_power_spectrum(&mut fft, &s.frames[bi].1).unwrap()
    );
    assert_eq!(a.spectra.final_step, 120);
    assert_eq!(a.spectra.frequency.len(), 17);
    assert_eq!(a.spectra.frequency.len(), a.spectra.final_output.len());
}

#[test]
fn radial_spectrum_of_white_noise_is_flat_at_its_variance() {
    // Mean power per ring, normalised per bin and channel: a zero-mean image with Parseval
    // total Σx² spreads it over the bins, so the average over all bins is the mean square.
    let img = add_gaussian_noise(&Image::new(64, 64, 1, vec![0.5; 64 * 64]), 20.0, 3);
    let mut fft = Fft2d::new(64, 64).unwrap();
    let p = radial_power_spectrum(&mut fft, &img).unwrap();
    let var = (20.0f64 / 255.0).powi(2);
    let high: Vec<f64> = p[8..].to_vec();
    let mean = high.iter().sum::<f64>() / high.len() as f64;
    assert!((mean / var - 1.0).abs() < 0.15, "{mean} vs {var}");
    // DC holds the mean's power: 0.25 · N / 1.
    assert!((p[0] / (0.25 * 64.0 * 64.0) - 1.0).abs() < 0.01);
}

/// Runs a tiny fit, recording every `every` steps into `dir`.
fn record_fit(dir: &Path, noisy: &Image, clean: &Image, seed: u64, every: usize) {
    let cfg = FitConfig {
        iters: 40,
        observe_every: 5,
        seed,
        ..FitConfig::default()
    };
    let mut rec = TrajectoryRecorder::new(dir, every, seed, serde_json::json!({"iters": 40}))
        .expect("recorder");
    fit_denoise(
        noisy,
        Some(clean),
        SkipSpec::uniform(8, clean.channels, 2, 8, 2),
        &cfg,
        &mut [&mut rec],
    )
    .unwrap();
    assert!(rec.take_error().is_none());
}

#[test]
fn two_recorded_fits_are_compared_at_their_common_steps() {
    let tmp = TempDir::new("two");
    let clean = test_image(24, 16, 1);
    let noisy = add_gaussian_noise(&clean, 25.0, 2);
    let (d0, d1) = (tmp.path().join("seed0"), tmp.path().join("seed1"));
    record_fit(&d0, &noisy, &clean, 0, 5);
    record_fit(&d1, &noisy, &clean, 1, 10);
    let runs = [
        RecordedRun::open(&d0).unwrap(),
        RecordedRun::open(&d1).unwrap(),
    ];
    assert_eq!(runs[0].steps(), &[5, 10, 15, 20, 25, 30, 35, 40]);
    assert_eq!(runs[1].steps(), &[10, 20, 30, 40]);
    assert_eq!(runs[0].name(), "seed0");

    let opts = StudyOptions {
        bands: 4,
        spacing: BandSpacing::Log,
    };
    let mut seen = Vec::new();
    let a = analyze_with_progress(&runs, &noisy, Some(&clean), &opts, &mut |p: Progress| {
        seen.push(p)
    })
    .unwrap();
    // Every frame read is reported, ending at the total.
    assert_eq!(seen.last().map(|p| (p.done, p.total)), Some((17, 17)));
    assert!(seen.windows(2).all(|w| w[1].done == w[0].done + 1));

    assert_eq!(a.num_runs, 2);
    assert_eq!(a.seeds, vec![0, 1]);
    assert_eq!(a.spacing, BandSpacing::Log);
    for (r, run) in a.runs.iter().enumerate() {
        let n = runs[r].len();
        assert_eq!(run.steps, runs[r].steps());
        assert_eq!(run.loss.len(), n);
        assert_eq!(run.band_fit.len(), n);
        assert!(run.band_fit.iter().all(|row| row.len() == 4));
        assert_eq!(run.band_fit_clean.as_ref().unwrap().len(), n);
        assert_eq!(run.correspondence.len(), n);
        // The fit recorded the PSNR of its raw output; the analysis measures the same frames.
        let measured = run.psnr_clean.as_ref().unwrap();
        for (m, rec) in measured.iter().zip(&run.psnr_raw) {
            assert!((m - rec.unwrap()).abs() < 1e-6, "{m} vs {rec:?}");
        }
    }
    for band in &a.bands {
        assert_eq!(band.t_half_runs.len(), 2);
        assert_eq!(band.t_half, band.t_half_runs[0]);
    }

    let t = a.two_run.as_ref().expect("two runs give a comparison");
    assert_eq!(t.runs, [0, 1]);
    assert_eq!(t.steps, vec![10, 20, 30, 40]);
    assert_eq!(t.distance.len(), 4);
    assert_eq!(t.per_band.len(), 4);
    // Mean squared difference per sample, and its bands add up to it.
    let bands = Bands::cached(24, 16, 4, BandSpacing::Log).unwrap();
    let mut pair = PairAnalyzer::new(bands).unwrap();
    for (i, &step) in t.steps.iter().enumerate() {
        let x = runs[0].frame_at_step(step).unwrap();
        let y = runs[1].frame_at_step(step).unwrap();
        let n = x.data.len() as f64;
        let mse: f64 = x
            .data
            .iter()
            .zip(&y.data)
            .map(|(&p, &q)| (f64::from(p) - f64::from(q)).powi(2))
            .sum::<f64>()
            / n;
        assert!(
            (t.distance[i] / mse - 1.0).abs() < 1e-9,
            "{} vs {mse}",
            t.distance[i]
        );
        let d = pair.distance(&x, &y).unwrap();
        for (got, want) in t.per_band[i].iter().zip(&d.per_band) {
            assert!((got - want / n).abs() <= 1e-12 * (1.0 + want / n));
        }
        let sum: f64 = t.per_band[i].iter().sum();
        assert!((sum / t.distance[i] - 1.0).abs() < 1e-6);
    }
    for tp in &t.turning_points {
        let i = t.steps.binary_search(&tp.step).expect("a common step");
        assert_eq!(tp.value, t.distance[i]);
        assert_eq!(
            tp.steps_from_best,
            a.best_step.map(|b| tp.step as i64 - b as i64)
        );
    }

    // The whole thing round-trips through JSON.
    let back: Analysis = serde_json::from_str(&a.to_json().unwrap()).unwrap();
    assert_eq!(back.two_run.unwrap().steps, t.steps);
}

#[test]
fn turning_points_of_hand_made_curves() {
    // A valley at 30 with deterministic wiggles well below its depth.
    let wiggle = |i: usize| 0.3 * ((i * 7919 % 13) as f64 / 13.0 - 0.5);
    let valley: Vec<f64> = (0..80)
        .map(|i| ((i as f64 - 30.0) / 10.0).powi(2) + 1.0 + wiggle(i))
        .collect();
    let tp = turning_points(&valley, TURNING_PROMINENCE);
    assert_eq!(tp.len(), 1, "{tp:?}");
    assert_eq!(tp[0].1, TurningKind::Min);
    assert!(tp[0].0.abs_diff(30) <= 2, "{tp:?}");

    // Up, down, up: a maximum then a minimum, in order.
    let wave: Vec<f64> = (0..100)
        .map(|i| (i as f64 / 100.0 * 2.5 * std::f64::consts::PI).sin() + 0.05 * wiggle(i))
        .collect();
    let tp = turning_points(&wave, TURNING_PROMINENCE);
    let kinds: Vec<TurningKind> = tp.iter().map(|t| t.1).collect();
    assert_eq!(kinds, vec![TurningKind::Max, TurningKind::Min], "{tp:?}");
    assert!(
        tp[0].0.abs_diff(20) <= 2 && tp[1].0.abs_diff(60) <= 2,
        "{tp:?}"
    );

    // Monotone with noise, constant, too short: none.
    let rising: Vec<f64> = (0..60).map(|i| i as f64 + 2.0 * wiggle(i)).collect();
    assert!(turning_points(&rising, TURNING_PROMINENCE).is_empty());
    assert!(turning_points(&[1.0; 20], TURNING_PROMINENCE).is_empty());
    assert!(turning_points(&[1.0, 0.0], TURNING_PROMINENCE).is_empty());
    assert!(turning_points(&[], TURNING_PROMINENCE).is_empty());

    // Non-finite samples are skipped; indices still refer to the input.
    let mut holes = valley.clone();
    holes[10] = f64::NAN;
    holes[50] = f64::INFINITY;
    let tp = turning_points(&holes, TURNING_PROMINENCE);
    assert_eq!(tp.len(), 1);
    assert!(tp[0].0.abs_diff(30) <= 2);

    assert_eq!(
        moving_average3(&[3.0, 0.0, 3.0, 6.0]),
        vec![1.5, 2.0, 3.0, 4.5]
    );
    assert_eq!(spearman(&[1.0, 2.0, 3.0], &[1.0, 5.0, 2.0]), Some(0.5));
}

/// Asserts two JSON trees are equal, numbers to a relative 1e-12.
fn assert_json_close(a: &Value, b: &Value, at: &str) {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!(
                (x - y).abs() <= 1e-12 * x.abs().max(y.abs()),
                "{at}: {x} vs {y}"
            );
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{at}: lengths");
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                assert_json_close(p, q, &format!("{at}[{i}]"));
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(
                x.keys().collect::<Vec<_>>(),
                y.keys().collect::<Vec<_>>(),
                "{at}: keys"
            );
            for (k, p) in x {
                assert_json_close(p, &y[k], &format!("{at}.{k}"));
            }
        }
        _ => assert_eq!(a, b, "{at}"),
    }
}

#[test]
fn analysis_files_round_trip_with_the_required_keys() {
    let tmp = TempDir::new("files");
    let s = scene(20, 20, 1);
    let run_dir = tmp.path().join("run");
    write_trajectory(&run_dir, &s.frames, 3);
    let run = RecordedRun::open(&run_dir).unwrap();
    let a = analyze(&[run], &s.noisy, Some(&s.clean), &StudyOptions::default()).unwrap();
    let out = tmp.path().join("out");
    let written = a.write(&out).unwrap();
    let names: Vec<String> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "analysis.json",
            "bands.csv",
            "band_fit.csv",
            "lowpass.csv",
            "two_run.csv",
            "history.csv"
        ]
    );
    // Atomic writes leave no temporary files behind.
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 6);

    // Required keys, with the right lengths.
    let json: Value =
        serde_json::from_slice(&std::fs::read(out.join(ANALYSIS_FILE)).unwrap()).unwrap();
    let n = s.frames.len();
    assert_eq!(json["format_version"], FORMAT_VERSION);
    for key in [
        "width",
        "height",
        "channels",
        "num_runs",
        "seeds",
        "bands",
        "best_step",
        "best_psnr",
        "lowpass",
        "two_run",
        "runs",
        "spectra",
        "summary",
    ] {
        assert!(json.get(key).is_some(), "missing key {key}");
    }
    assert!(json["two_run"].is_null());
    assert_eq!(json["bands"].as_array().unwrap().len(), 8);
    for band in json["bands"].as_array().unwrap() {
        for key in [
            "lo",
            "hi",
            "t_half",
            "t_half_clean",
            "t_half_runs",
            "energy_observation",
            "energy_clean",
            "energy_noise",
        ] {
            assert!(band.get(key).is_some(), "band lacks {key}");
        }
    }
    assert!(json["best_step"].as_u64().is_some());
    let lp = &json["lowpass"];
    for key in ["steps", "cutoff", "residual"] {
        assert_eq!(lp[key].as_array().unwrap().len(), n, "lowpass.{key}");
    }
    for key in ["best_lowpass_psnr", "best_lowpass_cutoff", "dip_best_psnr"] {
        assert!(lp[key].as_f64().is_some(), "lowpass.{key}");
    }
    let run0 = &json["runs"][0];
    for key in [
        "steps",
        "loss",
        "psnr_raw",
        "psnr_ema",
        "psnr_clean",
        "band_fit",
        "band_fit_clean",
        "correspondence",
    ] {
        assert_eq!(run0[key].as_array().unwrap().len(), n, "runs[0].{key}");
    }
    assert_eq!(run0["band_fit"][0].as_array().unwrap().len(), 8);
    for key in ["t_half_monotone", "t_half_spearman"] {
        assert!(json["summary"].get(key).is_some(), "summary.{key}");
    }

    // Read back: the same analysis.
    let back = Analysis::read(&out.join(ANALYSIS_FILE)).unwrap();
    let back_dir = Analysis::read(&out).unwrap();
    assert_json_close(
        &serde_json::to_value(&back).unwrap(),
        &serde_json::to_value(&a).unwrap(),
        "analysis",
    );
    assert_eq!(back.best_step, a.best_step);
    assert_eq!(back_dir.bands.len(), 8);

    // CSV shapes.
    let lines = |name: &str| -> Vec<String> {
        std::fs::read_to_string(out.join(name))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    };
    assert_eq!(lines("bands.csv").len(), 9);
    assert!(lines("bands.csv")[0].starts_with("band,lo,hi,bins,t_half,t_half_clean,t_half_run0"));
    let bf = lines("band_fit.csv");
    assert_eq!(bf.len(), n + 1);
    assert_eq!(bf[0].split(',').count(), 2 + 3 * 8);
    assert!(bf[1..].iter().all(|l| l.split(',').count() == 2 + 3 * 8));
    assert_eq!(lines("lowpass.csv").len(), n + 1);
    assert_eq!(lines("two_run.csv").len(), 1, "header only with one run");
    let hist = lines("history.csv");
    assert_eq!(hist.len(), n + 1);
    assert_eq!(hist[0], "run,seed,step,loss,psnr_raw,psnr_ema,psnr_clean");
    assert!(hist[1].starts_with("0,3,10,"));

    // Errors name the file.
    let bad = out.join("broken.json");
    std::fs::write(&bad, b"{\"width\": 3").unwrap();
    let e = Analysis::read(&bad).unwrap_err().to_string();
    assert!(
        e.contains("broken.json") && e.contains("not a valid analysis"),
        "{e}"
    );
    let e = Analysis::read(&out.join("nope.json"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope.json"), "{e}");
}

#[test]
fn without_clean_image_best_step_and_low_pass_psnr_are_null() {
    let tmp = TempDir::new("noclean");
    let s = scene(16, 16, 1);
    write_trajectory(tmp.path(), &s.frames, 0);
    let run = RecordedRun::open(tmp.path()).unwrap();
    let a = analyze(&[run], &s.noisy, None, &StudyOptions::default()).unwrap();
    assert!(!a.has_clean);
    assert_eq!(a.best_step, None);
    assert_eq!(a.best_psnr, None);
    assert_eq!(a.lowpass.best_lowpass_psnr, None);
    assert!(a.runs[0].band_fit_clean.is_none() && a.runs[0].psnr_clean.is_none());
    assert!(
        a.bands
            .iter()
            .all(|b| b.t_half_clean.is_none() && b.energy_clean.is_none())
    );
    assert!(a.spectra.best.is_none() && a.spectra.clean.is_none());
    assert_eq!(a.lowpass.cutoff.len(), s.frames.len());
    let json: Value = serde_json::from_str(&a.to_json().unwrap()).unwrap();
    assert!(json["best_step"].is_null());
    assert!(json["lowpass"]["best_lowpass_psnr"].is_null());
}

#[test]
fn bad_trajectories_give_errors_naming_the_file() {
    let tmp = TempDir::new("errors");
    let s = scene(16, 12, 1);
    let frames = &s.frames[..4];

    // Missing folder / index.
    let e = RecordedRun::open(tmp.path().join("none"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("trajectory.json"), "{e}");

    // Corrupt index.
    let dir = tmp.path().join("corrupt");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("trajectory.json"), b"{\"steps\": [1, 2").unwrap();
    let e = RecordedRun::open(&dir).unwrap_err().to_string();
    assert!(
        e.contains("trajectory.json") && e.contains("not a valid"),
        "{e}"
    );

    // Inconsistent index: fewer frames than steps; steps out of order; a frame outside.
    let dir = tmp.path().join("short");
    write_trajectory(&dir, frames, 0);
    let path = dir.join("trajectory.json");
    let good: TrajectoryIndex = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut ix = good.clone();
    ix.frames.pop();
    std::fs::write(&path, serde_json::to_vec(&ix).unwrap()).unwrap();
    let e = RecordedRun::open(&dir).unwrap_err().to_string();
    assert!(e.contains("trajectory.json") && e.contains("frames"), "{e}");
    let mut ix = good.clone();
    ix.steps.swap(0, 1);
    std::fs::write(&path, serde_json::to_vec(&ix).unwrap()).unwrap();
    let e = RecordedRun::open(&dir).unwrap_err().to_string();
    assert!(e.contains("not increasing"), "{e}");
    let mut ix = good.clone();
    ix.frames[0] = "../elsewhere.npy".into();
    std::fs::write(&path, serde_json::to_vec(&ix).unwrap()).unwrap();
    assert!(RecordedRun::open(&dir).is_err());
    std::fs::write(&path, serde_json::to_vec(&good).unwrap()).unwrap();

    // The index file itself can be given.
    let run = RecordedRun::open(&path).unwrap();
    assert_eq!(run.len(), 4);

    // Missing frame: analysis stops with an error naming it.
    let missing = dir.join("frames/step_000030.npy");
    std::fs::remove_file(&missing).unwrap();
    let e = analyze(
        std::slice::from_ref(&run),
        &s.noisy,
        None,
        &StudyOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("step_000030.npy") && e.contains("missing frame"),
        "{e}"
    );
    let e = run.frame(2).unwrap_err().to_string();
    assert!(e.contains("step_000030.npy"), "{e}");

    // A frame of the wrong shape, and one that is not NPY.
    write_npy(&missing, &test_image(12, 16, 1));
    let e = run.frame(2).unwrap_err().to_string();
    assert!(e.contains("step_000030.npy") && e.contains("shape"), "{e}");
    std::fs::write(&missing, b"not an array").unwrap();
    let e = run.frame(2).unwrap_err().to_string();
    assert!(e.contains("step_000030.npy") && e.contains("NPY"), "{e}");

    // Step not recorded.
    assert!(run.frame_at_step(11).is_err());

    // Observation of another size: the error names the run.
    let e = analyze(
        std::slice::from_ref(&run),
        &test_image(16, 16, 1),
        None,
        &StudyOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("trajectory.json") && e.contains("16x12"), "{e}");
    // Bad options and no runs are errors too, not panics.
    let bad_bands = StudyOptions {
        bands: 0,
        ..StudyOptions::default()
    };
    assert!(analyze(std::slice::from_ref(&run), &s.noisy, None, &bad_bands).is_err());
    assert!(analyze(&[], &s.noisy, None, &StudyOptions::default()).is_err());
    assert!(
        analyze(
            &[run],
            &s.noisy,
            Some(&test_image(16, 12, 3)),
            &StudyOptions::default()
        )
        .is_err()
    );
}

//! `dip analyze` and `dip experiment` end to end on tiny images: the files other tools read
//! are written with their keys, `--from` redoes the analysis without fitting, and bad folders
//! are clear errors.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn run(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dip"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn write_image(path: &Path, w: u32, h: u32) {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
        let blob = (-((u - 0.4).powi(2) + (v - 0.4).powi(2)) * 12.0).exp();
        let edge = if u + 0.5 * v > 0.8 { 0.3 } else { 0.0 };
        let noise = (((x * 7 + y * 13) % 11) as f32 / 11.0 - 0.5) * 0.2;
        let g =
            |k: f32| ((0.15 + 0.5 * blob + edge + k * v + noise) * 255.0).clamp(0.0, 255.0) as u8;
        image::Rgb([g(0.0), g(0.1), g(0.2)])
    });
    img.save(path).unwrap();
}

const SMALL: [&str; 10] = [
    "--set",
    "net.scales=3",
    "--set",
    "net.down=16",
    "--set",
    "net.up=16",
    "--iters",
    "60",
    "--every",
    "5",
];

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn analyze_writes_the_analysis_the_csvs_and_a_self_contained_report() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    write_image(&p.join("noisy.png"), 32, 32);
    write_image(&p.join("clean.png"), 32, 32);
    let mut args = vec!["analyze", "noisy.png", "--clean", "clean.png", "-o", "an"];
    args.extend(SMALL);
    let stdout = ok(&run(&args, p));
    assert!(stdout.contains("t1/2 per band"), "{stdout}");
    let an = p.join("an");
    assert_eq!(json(&an.join("analyze.json"))["device"], "cpu");
    let a = json(&an.join("analysis.json"));
    // The keys other tools read.
    let bands = a["bands"].as_array().unwrap();
    assert_eq!(bands.len(), 8);
    for b in bands {
        assert!(b["lo"].is_number() && b["hi"].is_number());
        assert!(b["t_half"].is_number() || b["t_half"].is_null());
    }
    assert!(a["best_step"].is_number());
    for k in ["steps", "cutoff", "residual", "best_lowpass_psnr"] {
        assert!(!a["lowpass"][k].is_null(), "lowpass.{k}");
    }
    let steps = a["two_run"]["steps"].as_array().unwrap().len();
    assert_eq!(steps, 12);
    assert_eq!(a["two_run"]["distance"].as_array().unwrap().len(), steps);
    for f in [
        "bands.csv",
        "band_fit.csv",
        "lowpass.csv",
        "two_run.csv",
        "history.csv",
    ] {
        assert!(an.join(f).exists(), "{f}");
    }
    let html = std::fs::read_to_string(an.join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("data:image/png;base64,"));
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));
    // Two seeds, each with its trajectory.
    for seed in ["run-seed0", "run-seed1"] {
        assert!(an.join(seed).join("trajectory.json").exists());
    }

    // --from redoes the analysis with other bands, without fitting.
    let stdout = ok(&run(&["analyze", "--from", "an", "--bands", "4"], p));
    assert!(stdout.contains("4 bands"), "{stdout}");
    assert_eq!(
        json(&an.join("analysis.json"))["bands"]
            .as_array()
            .unwrap()
            .len(),
        4
    );

    // The folder is not reused without --force.
    let out = run(&args, p);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
}

#[test]
fn analyze_from_a_folder_that_is_not_an_analysis_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    let out = run(&["analyze", "--from", "empty"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("analyze.json") && err.starts_with("error:"),
        "{err}"
    );
}

#[test]
fn the_triangles_experiment_writes_one_analysis_per_level_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let mut args = vec![
        "experiment",
        "triangles",
        "-o",
        "tri",
        "--size",
        "32",
        "--levels",
        "3",
    ];
    args.extend(SMALL);
    let stdout = ok(&run(&args, p));
    assert!(stdout.contains("steps to 30 dB"), "{stdout}");
    let e = json(&p.join("tri/experiment.json"));
    let rows = e["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let hf: Vec<f64> = rows
        .iter()
        .map(|r| r["high_frequency_fraction"].as_f64().unwrap())
        .collect();
    assert!(hf[0] < hf[1] && hf[1] < hf[2], "{hf:?}");
    for l in 0..3 {
        assert!(p.join(format!("tri/level-{l}/report.html")).exists());
    }
    let html = std::fs::read_to_string(p.join("tri/index.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("level-2/report.html"));
}

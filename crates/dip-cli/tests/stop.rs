//! `--stop` from the command line: a rule ends the fit early and the summary says where.

use std::path::Path;
use std::process::{Command, Output};

fn run(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dip"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn auto_stops_a_denoising_fit_before_the_step_limit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let img = image::GrayImage::from_fn(32, 32, |x, y| {
        let edge = if x + y / 2 > 18 { 90.0 } else { 0.0 };
        image::Luma([(60.0 + 3.0 * x as f32 + edge) as u8])
    });
    img.save(d.join("clean.png")).unwrap();
    let out = run(
        &["add-noise", "clean.png", "-o", "noisy.png", "--sigma", "25"],
        d,
    );
    assert!(out.status.success());
    let out = run(
        &[
            "denoise",
            "noisy.png",
            "--clean",
            "clean.png",
            "-o",
            "r.png",
            "--json",
            "r.json",
            "--iters",
            "3000",
            "--set",
            "net.scales=3",
            "--set",
            "net.down=16",
            "--set",
            "net.up=16",
            "--quiet",
        ],
        d,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("r.json")).unwrap()).unwrap();
    // `auto` is the default; for denoising it is the discrepancy principle plus a delay,
    // cross-checked by the output variance.
    let rule = s["stop_rule"].as_str().unwrap();
    assert!(
        rule.starts_with("auto(") && rule.contains("discrepancy + 200"),
        "{rule}"
    );
    let (stopped, ran) = (
        s["stopped_at"].as_u64().unwrap(),
        s["iterations_run"].as_u64().unwrap(),
    );
    assert!(
        ran < 3000 && stopped <= ran,
        "stopped at {stopped}, ran {ran}"
    );
    // The returned image is the chosen step's, and better than the noisy input.
    assert!(s["psnr_final"].as_f64().unwrap() > s["psnr_noisy"].as_f64().unwrap());
    // The estimate is of the noise actually in the file: its bright half (up to 243 before the
    // noise) is clipped at 255, which lowers the noise there below the σ = 25 asked for.
    let sigma = s["stop_sigma"].as_f64().unwrap();
    let (a, b) = (
        image::open(d.join("noisy.png")).unwrap().to_luma8(),
        image::open(d.join("clean.png")).unwrap().to_luma8(),
    );
    let diff: Vec<f64> = a
        .pixels()
        .zip(b.pixels())
        .map(|(p, q)| f64::from(p.0[0]) - f64::from(q.0[0]))
        .collect();
    let mean = diff.iter().sum::<f64>() / diff.len() as f64;
    let actual = (diff.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / diff.len() as f64).sqrt();
    assert!(
        (sigma / actual - 1.0).abs() < 0.15,
        "estimated sigma {sigma}, noise in the file {actual}"
    );

    // The noise-level rules refuse other tasks clearly.
    let out = run(
        &[
            "sr",
            "clean.png",
            "--factor",
            "2",
            "-o",
            "sr.png",
            "--stop",
            "spectral",
            "--iters",
            "5",
        ],
        d,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wmv"));
}

/// A strongly textured image (fine oriented gratings, the kind of texture an estimator can take
/// for noise, over smooth shading with an edge) plus σ = 25 noise: `auto` keeps a real gain.
#[test]
fn auto_gains_on_a_textured_image() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tau = std::f32::consts::TAU;
    let img = image::GrayImage::from_fn(64, 64, |x, y| {
        let (u, v) = (x as f32, y as f32);
        let grating =
            0.16 * (tau * (0.23 * u + 0.11 * v)).sin() + 0.12 * (tau * (0.07 * u - 0.19 * v)).sin();
        let shade = 0.45 + 0.15 * (u / 64.0) + if u + 0.5 * v > 50.0 { 0.12 } else { 0.0 };
        image::Luma([((shade + grating).clamp(0.0, 1.0) * 255.0).round() as u8])
    });
    img.save(d.join("clean.png")).unwrap();
    let out = run(
        &[
            "add-noise",
            "clean.png",
            "-o",
            "noisy.png",
            "--sigma",
            "25",
            "--seed",
            "1",
        ],
        d,
    );
    assert!(out.status.success());
    let out = run(
        &[
            "denoise",
            "noisy.png",
            "--clean",
            "clean.png",
            "-o",
            "r.png",
            "--json",
            "r.json",
            "--iters",
            "2000",
            "--set",
            "net.down=32",
            "--set",
            "net.up=32",
            "--quiet",
        ],
        d,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("r.json")).unwrap()).unwrap();
    let (noisy, result) = (
        s["psnr_noisy"].as_f64().unwrap(),
        s["psnr_final"].as_f64().unwrap(),
    );
    eprintln!(
        "{}: noisy {noisy:.2} dB, auto {result:.2} dB at step {} (best {:.2} at {}), sigma {:.1}",
        s["stop_rule"], s["stopped_at"], s["psnr_best"], s["iter_best"], s["stop_sigma"]
    );
    assert!(
        result >= noisy + 2.0,
        "auto gained {:.2} dB",
        result - noisy
    );
}

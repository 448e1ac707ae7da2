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
    // `auto` is the default; for denoising it is the discrepancy principle plus a delay.
    assert_eq!(s["stop_rule"], "auto(discrepancy + 200)");
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
    let sigma = s["stop_sigma"].as_f64().unwrap();
    assert!((20.0..30.0).contains(&sigma), "estimated sigma {sigma}");

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

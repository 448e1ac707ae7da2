//! `dip gp` and `--sgld` from the command line, on tiny images.

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

fn fails(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !err.contains("panicked") && !err.contains("internal error"),
        "{err}"
    );
    err
}

fn write_gray(path: &Path, w: u32, h: u32) {
    let img = image::GrayImage::from_fn(w, h, |x, y| {
        let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
        let blob = (-((u - 0.4).powi(2) + (v - 0.4).powi(2)) * 12.0).exp();
        image::Luma([((0.2 + 0.5 * blob + 0.1 * u) * 255.0) as u8])
    });
    img.save(path).unwrap();
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn prior_writes_its_kernel_and_report_and_the_kernel_denoises() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let args = [
        "gp",
        "prior",
        "--arch",
        "skip",
        "--widths",
        "8",
        "--size",
        "64",
        "--samples",
        "8",
        "-o",
        "prior",
    ];
    let text = ok(&run(&args, d));
    assert!(text.contains("corner top-left"), "{text}");
    for f in [
        "prior.json",
        "kernel.json",
        "kernel.png",
        "index.html",
        "prior.md",
    ] {
        assert!(d.join("prior").join(f).is_file(), "{f} missing");
    }
    let p = json(&d.join("prior/prior.json"));
    let stats = &p["runs"][0]["stats"];
    assert_eq!(stats["anchors"].as_array().unwrap().len(), 9);
    assert_eq!(stats["samples"], 8);
    assert_eq!(json(&d.join("prior/kernel.json"))["radius"], 32);
    // The folder is not overwritten without --force.
    let err = fails(&run(&args, d));
    assert!(err.contains("not empty"), "{err}");
    // A size the network cannot take is refused before any work.
    let err = fails(&run(
        &[
            "gp",
            "prior",
            "--size",
            "48",
            "--widths",
            "8",
            "--samples",
            "4",
            "-o",
            "p2",
        ],
        d,
    ));
    assert!(err.contains("multiple of 32"), "{err}");

    // Denoising with the saved kernel beats the noisy input.
    write_gray(&d.join("clean.png"), 32, 32);
    ok(&run(
        &["add-noise", "clean.png", "-o", "noisy.png", "--sigma", "25"],
        d,
    ));
    for kernel in ["prior/kernel.json", "rbf"] {
        ok(&run(
            &[
                "gp",
                "denoise",
                "noisy.png",
                "-o",
                "out.png",
                "--kernel",
                kernel,
                "--clean",
                "clean.png",
                "--json",
                "out.json",
                "--force",
            ],
            d,
        ));
        let j = json(&d.join("out.json"));
        let (p, n) = (
            j["psnr"].as_f64().unwrap(),
            j["psnr_noisy"].as_f64().unwrap(),
        );
        assert!(p > n + 3.0, "{kernel}: {p:.2} dB against noisy {n:.2} dB");
    }
    // A kernel file that is not one.
    std::fs::write(d.join("bad.json"), "{\"radius\": 1}").unwrap();
    let err = fails(&run(
        &[
            "gp",
            "denoise",
            "noisy.png",
            "-o",
            "o2.png",
            "--kernel",
            "bad.json",
        ],
        d,
    ));
    assert!(err.contains("bad.json"), "{err}");
}

#[test]
fn inpainting_converges_and_restores_a_smooth_image() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_gray(&d.join("clean.png"), 32, 32);
    let text = ok(&run(
        &[
            "gp",
            "inpaint",
            "clean.png",
            "--random-mask",
            "0.5",
            "-o",
            "out.png",
            "--kernel",
            "rbf",
            "--clean",
            "clean.png",
            "--json",
            "out.json",
        ],
        d,
    ));
    assert!(text.contains("conjugate gradients"), "{text}");
    let j = json(&d.join("out.json"));
    assert_eq!(j["cg"]["converged"], true);
    assert!(j["cg"]["relative_residual"].as_f64().unwrap() <= 1e-6);
    let p = j["psnr"].as_f64().unwrap();
    assert!(p > 35.0, "a smooth image from half its pixels: {p:.2} dB");
    // An all-black mask has nothing to regress on.
    image::GrayImage::new(32, 32)
        .save(d.join("black.png"))
        .unwrap();
    let err = fails(&run(
        &[
            "gp",
            "inpaint",
            "clean.png",
            "--mask",
            "black.png",
            "-o",
            "o2.png",
            "--kernel",
            "rbf",
        ],
        d,
    ));
    assert!(
        err.contains("no pixel") || err.contains("no known pixel"),
        "{err}"
    );
}

#[test]
fn rates_probe_every_band_and_compare_with_a_fit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_gray(&d.join("img.png"), 32, 32);
    ok(&run(
        &[
            "gp",
            "rates",
            "img.png",
            "--arch",
            "decoder-16,linear-32",
            "--size",
            "32",
            "--iters",
            "80",
            "--every",
            "5",
            "--bands",
            "4",
            "--probes",
            "1",
            "-o",
            "rates",
        ],
        d,
    ));
    let j = json(&d.join("rates/rates.json"));
    let results = j["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for r in results {
        let lambda = r["lambda"].as_array().unwrap();
        assert_eq!(lambda.len(), 4);
        // The spectral bias in the kernel's own terms: the lowest band's eigenvalue exceeds the
        // highest's (the low band is fitted faster).
        let l: Vec<f64> = lambda.iter().map(|l| l.as_f64().unwrap()).collect();
        assert!(l[0] > l[3], "{r}");
    }
    assert!(d.join("rates/index.html").is_file());
    assert!(d.join("rates/rates.md").is_file());
}

#[test]
fn sgld_writes_the_posterior_mean_and_its_spread() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_gray(&d.join("clean.png"), 32, 32);
    ok(&run(
        &["add-noise", "clean.png", "-o", "noisy.png", "--sigma", "25"],
        d,
    ));
    let args = [
        "denoise",
        "noisy.png",
        "-o",
        "out.png",
        "--clean",
        "clean.png",
        "--iters",
        "40",
        "--sgld",
        "--sgld-burnin",
        "10",
        "--sgld-every",
        "10",
        "--set",
        "net.scales=2",
        "--set",
        "net.down=8",
        "--set",
        "net.up=8",
        "--json",
        "out.json",
    ];
    let text = ok(&run(&args, d));
    assert!(text.contains("SGLD"), "{text}");
    assert!(d.join("out_std.png").is_file());
    let j = json(&d.join("out.json"));
    assert_eq!(j["sgld"]["samples"], 3);
    // The spread file is the per-pixel std scaled to its maximum: its brightest pixel is white
    // and its mean, scaled back, is the mean std the summary reports.
    let (mean, max) = (
        j["sgld"]["std_mean"].as_f64().unwrap(),
        j["sgld"]["std_max"].as_f64().unwrap(),
    );
    let png = image::open(d.join("out_std.png")).unwrap().to_luma8();
    assert_eq!(png.pixels().map(|p| p.0[0]).max(), Some(255));
    let png_mean = png.pixels().map(|p| f64::from(p.0[0])).sum::<f64>() / png.len() as f64;
    assert!(max > 0.0 && mean <= max, "{mean} {max}");
    assert!(
        (png_mean / 255.0 * max - mean).abs() <= 0.5 / 255.0 * max + 1e-6,
        "file mean {png_mean} vs std mean {mean} (max {max})"
    );
    // The spread file is an output like the others: not overwritten without --force.
    std::fs::remove_file(d.join("out.png")).unwrap();
    std::fs::remove_file(d.join("out.json")).unwrap();
    let before = std::fs::read(d.join("out_std.png")).unwrap();
    let err = fails(&run(&args, d));
    assert!(err.contains("out_std.png"), "{err}");
    assert_eq!(std::fs::read(d.join("out_std.png")).unwrap(), before);
    // A burn-in past the end is refused.
    let err = fails(&run(
        &[
            "denoise",
            "noisy.png",
            "-o",
            "o3.png",
            "--iters",
            "10",
            "--sgld",
            "--sgld-burnin",
            "10",
        ],
        d,
    ));
    assert!(err.contains("burn-in"), "{err}");
}

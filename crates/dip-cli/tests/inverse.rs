//! `dip inpaint`, `dip sr`, `dip deblur` and `dip presets` end to end on tiny images: they
//! restore, report, and refuse bad input with one clear line and exit code 2.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn dip() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dip"))
}

fn run(args: &[&str], dir: &Path) -> Output {
    dip().args(args).current_dir(dir).output().unwrap()
}

/// A small, smooth RGB test image with an edge.
fn write_image(path: &Path, w: u32, h: u32) {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
        let blob = (-((u - 0.4).powi(2) + (v - 0.4).powi(2)) * 12.0).exp();
        let edge = if u + 0.5 * v > 0.8 { 0.3 } else { 0.0 };
        let g = |k: f32| ((0.15 + 0.5 * blob + edge + k * v) * 255.0).clamp(0.0, 255.0) as u8;
        image::Rgb([g(0.0), g(0.1), g(0.2)])
    });
    img.save(path).unwrap();
}

fn write_gray(path: &Path, w: u32, h: u32, value: u8) {
    image::GrayImage::from_pixel(w, h, image::Luma([value]))
        .save(path)
        .unwrap();
}

/// A narrow network and few steps, so each fit takes a fraction of a second.
const SMALL: [&str; 8] = [
    "--set",
    "net.scales=3",
    "--set",
    "net.down=16",
    "--set",
    "net.up=16",
    "--iters",
    "150",
];

fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().to_path_buf();
    write_image(&p.join("clean.png"), 48, 48);
    (dir, p)
}

fn error_line(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(!err.contains("internal error"), "{err}");
    err.lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line in {err}"))
        .to_string()
}

fn summary(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn inpaint_from_random_pixels_reports_psnr_against_the_image() {
    let (_d, p) = setup();
    let mut args = vec![
        "inpaint",
        "clean.png",
        "--random-mask",
        "0.5",
        "--mask-out",
        "mask.png",
        "-o",
        "out.png",
        "--json",
        "run.json",
    ];
    args.extend(SMALL);
    let out = run(&args, &p);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = summary(&p.join("run.json"));
    assert_eq!(s["preset"], "inpaint-random");
    assert_eq!(s["recipe"]["fit"]["lr"], 0.001);
    let known = s["known_fraction"].as_f64().unwrap();
    assert!((known - 0.5).abs() < 0.05, "{known}");
    // The result is far better than the masked image (half the pixels black).
    let (input, fin) = (
        s["psnr_noisy"].as_f64().unwrap(),
        s["psnr_final"].as_f64().unwrap(),
    );
    assert!(fin > input + 5.0, "final {fin:.2} vs masked {input:.2}");
    // SSIM: the summary's is that of the file written, and far above the masked image's.
    let ssim_final = s["ssim_final"].as_f64().unwrap();
    let eval_ssim = |img: &str| -> f64 {
        let out = run(
            &["eval", img, "clean.png", "--json", "e.json", "--force"],
            &p,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        summary(&p.join("e.json"))["ssim"].as_f64().unwrap()
    };
    assert!(
        (ssim_final - eval_ssim("out.png")).abs() < 1e-9,
        "{ssim_final}"
    );
    let out = run(
        &[
            "degrade",
            "clean.png",
            "--task",
            "inpaint",
            "--mask",
            "mask.png",
            "-o",
            "holes.png",
        ],
        &p,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ssim_holes = eval_ssim("holes.png");
    assert!(
        ssim_final > ssim_holes + 0.2,
        "SSIM {ssim_final:.3} vs masked {ssim_holes:.3}"
    );
    // The mask written is the one used, and can be given back with --mask.
    let mut again = vec![
        "inpaint",
        "clean.png",
        "--mask",
        "mask.png",
        "-o",
        "out2.png",
    ];
    again.extend(SMALL);
    let out = run(&again, &p);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn super_resolution_writes_an_image_factor_times_larger_and_prints_bicubic() {
    let (_d, p) = setup();
    write_image(&p.join("lr.png"), 12, 12);
    let mut args = vec![
        "sr",
        "lr.png",
        "--factor",
        "4",
        "-o",
        "hr.png",
        "--clean",
        "clean.png",
        "--json",
        "run.json",
    ];
    args.extend(SMALL);
    let out = run(&args, &p);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hr = image::open(p.join("hr.png")).unwrap();
    assert_eq!((hr.width(), hr.height()), (48, 48));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("PSNR bicubic:"), "{stdout}");
    assert!(stdout.contains("PSNR Y, border 4:"), "{stdout}");
    let s = summary(&p.join("run.json"));
    assert_eq!(s["preset"], "sr4");
    assert_eq!(s["baseline"]["name"], "bicubic");
    assert!(s["psnr_noisy"].is_null());
}

#[test]
fn deblur_runs_with_a_parametric_psf() {
    let (_d, p) = setup();
    let mut args = vec![
        "deblur",
        "clean.png",
        "--psf",
        "gaussian:1.2",
        "-o",
        "sharp.png",
        "--json",
        "run.json",
    ];
    args.extend(SMALL);
    let out = run(&args, &p);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = summary(&p.join("run.json"));
    assert!(s["operator"].as_str().unwrap().contains("gaussian"));
}

#[test]
fn bad_masks_factors_and_psfs_are_clear_errors() {
    let (_d, p) = setup();
    write_gray(&p.join("black.png"), 48, 48, 0);
    write_gray(&p.join("small_mask.png"), 40, 48, 255);
    write_gray(&p.join("black_psf.png"), 5, 5, 0);
    write_image(&p.join("lr.png"), 12, 12);
    write_image(&p.join("odd.png"), 50, 50);

    let e = error_line(&run(
        &["inpaint", "clean.png", "--mask", "black.png", "-o", "o.png"],
        &p,
    ));
    assert!(
        e.contains("black.png") && e.contains("no known pixel"),
        "{e}"
    );
    let e = error_line(&run(
        &[
            "inpaint",
            "clean.png",
            "--mask",
            "small_mask.png",
            "-o",
            "o.png",
        ],
        &p,
    ));
    assert!(e.contains("small_mask.png") && e.contains("40x48"), "{e}");
    let e = error_line(&run(
        &[
            "inpaint",
            "clean.png",
            "--random-mask",
            "1.5",
            "-o",
            "o.png",
        ],
        &p,
    ));
    assert!(e.contains("--random-mask"), "{e}");
    let e = error_line(&run(&["sr", "lr.png", "--factor", "3", "-o", "o.png"], &p));
    assert!(e.contains("--factor") && e.contains('3'), "{e}");
    // A clean image whose size does not divide by the factor.
    let e = error_line(&run(
        &[
            "sr", "lr.png", "--factor", "4", "--clean", "odd.png", "-o", "o.png",
        ],
        &p,
    ));
    assert!(
        e.contains("odd.png") && e.contains("does not divide"),
        "{e}"
    );
    let e = error_line(&run(
        &[
            "deblur",
            "clean.png",
            "--psf",
            "black_psf.png",
            "-o",
            "o.png",
        ],
        &p,
    ));
    assert!(
        e.contains("black_psf.png") && e.contains("sum to zero"),
        "{e}"
    );
    let e = error_line(&run(
        &["deblur", "clean.png", "--psf", "gaussian:x", "-o", "o.png"],
        &p,
    ));
    assert!(e.contains("gaussian:x"), "{e}");
    // Nothing was written by any of them.
    assert!(!p.join("o.png").exists());
}

#[test]
fn settings_come_from_presets_config_files_and_flags() {
    let (_d, p) = setup();
    let out = run(&["presets"], &p);
    let list = String::from_utf8_lossy(&out.stdout);
    for name in [
        "denoise",
        "sr4",
        "sr8",
        "inpaint",
        "inpaint-vase",
        "inpaint-library",
    ] {
        assert!(list.contains(name), "{list}");
    }
    let out = run(&["presets", "inpaint-vase"], &p);
    assert!(String::from_utf8_lossy(&out.stdout).contains("meshgrid"));

    std::fs::write(p.join("cfg.toml"), "[fit]\nlr = 0.005\n[net]\nskip = 0\n").unwrap();
    let mut args = vec![
        "denoise",
        "clean.png",
        "-o",
        "o.png",
        "--config",
        "cfg.toml",
        "--json",
        "run.json",
    ];
    args.extend(SMALL);
    let out = run(&args, &p);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = summary(&p.join("run.json"));
    assert_eq!(s["config"]["lr"], 0.005);
    assert_eq!(s["config"]["iters"], 150);
    assert_eq!(s["network"]["skip"], serde_json::json!([0, 0, 0]));

    std::fs::write(p.join("bad.toml"), "[fit]\nlr = \n").unwrap();
    let e = error_line(&run(
        &[
            "denoise",
            "clean.png",
            "-o",
            "o2.png",
            "--config",
            "bad.toml",
        ],
        &p,
    ));
    assert!(e.contains("bad.toml") && e.contains("TOML"), "{e}");
    std::fs::write(p.join("typo.toml"), "[fit]\nlearning_rate = 0.1\n").unwrap();
    let e = error_line(&run(
        &[
            "denoise",
            "clean.png",
            "-o",
            "o2.png",
            "--config",
            "typo.toml",
        ],
        &p,
    ));
    assert!(
        e.contains("typo.toml") && e.contains("learning_rate"),
        "{e}"
    );
    let e = error_line(&run(
        &["denoise", "clean.png", "-o", "o2.png", "--preset", "nope"],
        &p,
    ));
    assert!(e.contains("unknown preset"), "{e}");
}

#[test]
fn ct_from_a_phantom_beats_filtered_back_projection() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let ok = |out: Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    ok(run(&["phantom", "--size", "32", "-o", "ph.png"], p));
    let made = ok(run(
        &[
            "degrade",
            "ph.png",
            "--task",
            "ct",
            "--views",
            "12",
            "-o",
            "sino.npy",
            "--angles-out",
            "ang.npy",
        ],
        p,
    ));
    assert!(made.contains("12 views, 32 bins"), "{made}");
    let mut args = vec![
        "--threads",
        "1",
        "ct",
        "sino.npy",
        "--angles",
        "ang.npy",
        "-o",
        "rec.png",
        "--clean",
        "ph.png",
        "--fbp-out",
        "fbp.png",
        "--json",
        "run.json",
        "--stop",
        "fixed",
        "--set",
        "net.scales=3",
        "--set",
        "net.down=16",
        "--set",
        "net.up=16",
        "--set",
        "net.skip=4",
        "--set",
        "net.input_channels=8",
        "--iters",
        "600",
    ];
    ok(run(&args, p));
    let s = summary(&p.join("run.json"));
    let (dip_psnr, fbp) = (
        s["psnr_final"].as_f64().unwrap(),
        s["baseline"]["psnr"].as_f64().unwrap(),
    );
    assert_eq!(s["baseline"]["name"], "FBP");
    // The library's own numbers for this problem (12 views of a 32 px phantom): FBP 23.0 dB
    // with its streaks, the prior about 24.7 dB.
    assert!(
        dip_psnr > fbp + 1.0,
        "DIP {dip_psnr:.2} against FBP {fbp:.2}"
    );
    assert!(p.join("fbp.png").exists() && p.join("rec.png").exists());
    // The same reconstruction from --views (the same even angles).
    args[4] = "--views";
    args[5] = "12";
    args.extend(["--force"]);
    ok(run(&args, p));
    assert_eq!(
        summary(&p.join("run.json"))["psnr_final"].as_f64().unwrap(),
        dip_psnr
    );

    // Bad input: one line naming the file and the problem.
    let e = error_line(&run(&["ct", "ph.png", "--views", "12", "-o", "x.png"], p));
    assert!(e.contains("ph.png") && e.contains("not a NumPy"), "{e}");
    let e = error_line(&run(&["ct", "sino.npy", "--views", "10", "-o", "x.png"], p));
    assert!(
        e.contains("sino.npy") && e.contains("one column per angle"),
        "{e}"
    );
    let e = error_line(&run(
        &[
            "degrade", "ph.png", "--task", "ct", "--views", "12", "-o", "s.png",
        ],
        p,
    ));
    assert!(e.contains(".npy"), "{e}");
    let e = error_line(&run(
        &[
            "degrade", "ph.png", "--task", "ct", "--views", "12", "-o", "sino.npy",
        ],
        p,
    ));
    assert!(e.contains("exists"), "{e}");
}

#[test]
fn restore_through_a_matrix_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dip/tests/matrix");
    for f in ["a.mtx", "a_csr.npz", "y.npy"] {
        std::fs::copy(fixtures.join(f), p.join(f)).unwrap();
    }
    let mut args = vec![
        "--threads",
        "1",
        "restore",
        "y.npy",
        "--operator",
        "a.mtx",
        "--size",
        "8x8",
        "-o",
        "x.png",
        "--json",
        "run.json",
        "--stop",
        "fixed",
    ];
    args.extend(SMALL);
    let out = run(&args, p);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = summary(&p.join("run.json"));
    assert_eq!(s["command"], "restore");
    assert!(s["operator"].as_str().unwrap().contains("a.mtx"), "{s}");
    // The .npz of the same matrix fits the same problem: the same result.
    args[5] = "a_csr.npz";
    args.extend(["--force"]);
    let first = std::fs::read(p.join("x.png")).unwrap();
    assert!(run(&args, p).status.success());
    assert_eq!(std::fs::read(p.join("x.png")).unwrap(), first);

    let e = error_line(&run(
        &[
            "restore",
            "y.npy",
            "--operator",
            "a.mtx",
            "--size",
            "4x4",
            "-o",
            "z.png",
        ],
        p,
    ));
    assert!(e.contains("a.mtx") && e.contains("64 columns"), "{e}");
    let e = error_line(&run(
        &[
            "restore",
            "y.npy",
            "--operator",
            "a.mtx",
            "--size",
            "8x8x2",
            "-o",
            "z.png",
        ],
        p,
    ));
    assert!(e.contains("--size"), "{e}");
    std::fs::write(p.join("short.npy"), b"x").unwrap();
    let e = error_line(&run(
        &[
            "restore",
            "short.npy",
            "--operator",
            "a.mtx",
            "--size",
            "8x8",
            "-o",
            "z.png",
        ],
        p,
    ));
    assert!(e.contains("short.npy"), "{e}");
}

//! `dip add-noise`, `dip degrade` and `dip eval` from the outside: bad input gives one `error:`
//! line and exit code 2 (never a panic, which would be 101), outputs are never overwritten
//! without --force nor written over an input, and degrade → eval round trips give the numbers
//! they should.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use tempfile::TempDir;

/// Runs `dip` in `dir` on one thread.
fn dip(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dip"))
        .current_dir(dir)
        .args(["--threads", "1"])
        .args(args)
        .output()
        .expect("the dip binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Exit code 2 and stderr exactly one `error: ...` line containing every one of `needles`
/// (case-insensitive), with no sign of a panic.
#[track_caller]
fn assert_error(out: &Output, needles: &[&str]) {
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "exit status {:?}, stderr:\n{stderr}",
        out.status
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("internal error"),
        "panic:\n{stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "stderr is not one line:\n{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    let lower = lines[0].to_lowercase();
    for n in needles {
        assert!(lower.contains(&n.to_lowercase()), "'{n}' not in: {stderr}");
    }
}

/// Success; returns stdout.
#[track_caller]
fn assert_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn tmp() -> TempDir {
    tempfile::tempdir().unwrap()
}

/// A colour picture with smooth ramps and sharp blocks, 8-bit RGB.
fn write_rgb8(path: &Path, w: u32, h: u32) {
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (40 + x * 170 / w.max(1)) as u8,
            (30 + y * 180 / h.max(1)) as u8,
            if (x / 8 + y / 8) % 2 == 0 { 60 } else { 190 },
        ])
    })
    .save(path)
    .unwrap();
}

/// A uniform 8-bit gray image.
fn write_flat_gray(path: &Path, w: u32, h: u32, v: u8) {
    image::GrayImage::from_pixel(w, h, image::Luma([v]))
        .save(path)
        .unwrap();
}

/// The samples of an 8-bit image file, with its size.
fn read8(path: &Path) -> (u32, u32, Vec<u8>) {
    let img = image::open(path).unwrap();
    let (w, h) = (img.width(), img.height());
    let raw = match img {
        image::DynamicImage::ImageLuma8(g) => g.into_raw(),
        other => other.to_rgb8().into_raw(),
    };
    (w, h, raw)
}

fn size_of(path: &Path) -> (u32, u32) {
    let img = image::open(path).unwrap();
    (img.width(), img.height())
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(p).unwrap()).unwrap()
}

/// The number after `key` in a line like `... PSNR 23.45 dB ...`.
fn number_after(s: &str, key: &str) -> f64 {
    let rest = &s[s.find(key).unwrap_or_else(|| panic!("'{key}' not in {s}")) + key.len()..];
    let word = rest.split_whitespace().next().unwrap();
    if word == "inf" {
        f64::INFINITY
    } else {
        word.parse()
            .unwrap_or_else(|_| panic!("no number after '{key}' in {s}"))
    }
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n;
    (m, var.sqrt())
}

// ---------------------------------------------------------------------------------------------
// Bad input: exit 2, one clear line.

#[test]
fn missing_and_unreadable_files() {
    let d = tmp();
    write_rgb8(&d.path().join("c.png"), 32, 32);
    fs::write(d.path().join("fake.png"), "not an image at all\n").unwrap();
    for args in [
        &[
            "degrade", "nope.png", "--task", "deblur", "--psf", "box:3", "-o", "o.png",
        ][..],
        &["eval", "nope.png", "c.png"],
        &["eval", "c.png", "nope.png"],
        &[
            "add-noise",
            "nope.png",
            "-o",
            "o.png",
            "--kind",
            "poisson",
            "--peak",
            "5",
        ],
        &[
            "degrade", "c.png", "--task", "inpaint", "--mask", "nope.png", "-o", "o.png",
        ],
        &[
            "degrade", "c.png", "--task", "deblur", "--psf", "nope.png", "-o", "o.png",
        ],
    ] {
        assert_error(&dip(d.path(), args), &["nope.png", "no such file"]);
    }
    for args in [
        &[
            "degrade", "fake.png", "--task", "sr", "--factor", "2", "-o", "o.png",
        ][..],
        &["eval", "fake.png", "c.png"],
        &[
            "degrade", "c.png", "--task", "inpaint", "--mask", "fake.png", "-o", "o.png",
        ],
    ] {
        assert_error(&dip(d.path(), args), &["fake.png", "not an image"]);
    }
    assert!(!d.path().join("o.png").exists());
}

#[test]
fn bad_masks() {
    let d = tmp();
    write_rgb8(&d.path().join("c.png"), 32, 24);
    write_flat_gray(&d.path().join("small.png"), 16, 16, 255);
    write_flat_gray(&d.path().join("black.png"), 32, 24, 0);
    let run = |extra: &[&str]| {
        let mut a = vec!["degrade", "c.png", "--task", "inpaint", "-o", "o.png"];
        a.extend_from_slice(extra);
        dip(d.path(), &a)
    };
    assert_error(
        &run(&["--mask", "small.png"]),
        &["small.png", "16x16", "32x24", "same size"],
    );
    assert_error(
        &run(&["--mask", "black.png"]),
        &["black.png", "no known pixel"],
    );
    for p in ["0", "1.5", "-0.2", "nan"] {
        assert_error(
            &run(&["--random-mask", p, "--mask-out", "m.png"]),
            &["--random-mask", "(0, 1]"],
        );
    }
    // Blocks that cover everything leave nothing known.
    assert_error(
        &run(&["--block-mask", "--block-size", "64", "--mask-out", "m.png"]),
        &["no known pixel"],
    );
    assert_error(&run(&[]), &["needs a mask"]);
    assert_error(
        &run(&["--random-mask", "0.5", "--text-mask", "--mask-out", "m.png"]),
        &["only one mask", "--random-mask", "--text-mask"],
    );
    assert_error(&run(&["--random-mask", "0.5"]), &["--mask-out"]);
    assert_error(&run(&["--text-mask"]), &["--mask-out"]);
    assert_error(
        &run(&[
            "--blocks",
            "3",
            "--random-mask",
            "0.5",
            "--mask-out",
            "m.png",
        ]),
        &["--block-mask"],
    );
    assert_error(
        &run(&["--block-mask", "--blocks", "0", "--mask-out", "m.png"]),
        &["--blocks"],
    );
    for f in ["o.png", "m.png"] {
        assert!(!d.path().join(f).exists(), "{f} was written");
    }
}

#[test]
fn bad_super_resolution_settings() {
    let d = tmp();
    write_rgb8(&d.path().join("c.png"), 30, 33);
    let run = |extra: &[&str]| {
        let mut a = vec!["degrade", "c.png", "--task", "sr", "-o", "o.png"];
        a.extend_from_slice(extra);
        dip(d.path(), &a)
    };
    assert_error(&run(&[]), &["--factor"]);
    for f in ["3", "0", "18"] {
        assert_error(&run(&["--factor", f]), &["--factor", f]);
    }
    assert_error(
        &run(&["--factor", "4", "--no-crop"]),
        &["c.png", "30x33", "does not divide", "--factor 4", "28x32"],
    );
    assert_error(
        &run(&["--factor", "8", "--crop-to", "12"]),
        &["--crop-to 12", "multiple", "--factor 8"],
    );
    assert_error(
        &run(&["--factor", "4", "--crop-to", "64"]),
        &["c.png", "30x33", "64"],
    );
    assert_error(
        &run(&["--factor", "2", "--crop-to", "4", "--no-crop"]),
        &["--crop-to", "--no-crop"],
    );
    // Options of another task are refused by name.
    assert_error(
        &run(&["--factor", "2", "--psf", "box:3"]),
        &["--psf", "deblur"],
    );
    assert_error(
        &run(&["--factor", "2", "--random-mask", "0.5"]),
        &["--random-mask", "inpaint"],
    );
    assert!(!d.path().join("o.png").exists());
}

#[test]
fn bad_blurs_and_noise() {
    let d = tmp();
    write_rgb8(&d.path().join("c.png"), 32, 32);
    write_flat_gray(&d.path().join("zero-psf.png"), 5, 5, 0);
    write_flat_gray(&d.path().join("even-psf.png"), 4, 4, 255);
    let run = |extra: &[&str]| {
        let mut a = vec!["degrade", "c.png", "--task", "deblur", "-o", "o.png"];
        a.extend_from_slice(extra);
        dip(d.path(), &a)
    };
    assert_error(&run(&[]), &["--psf"]);
    assert_error(
        &run(&["--psf", "zero-psf.png"]),
        &["zero-psf.png", "sum to zero"],
    );
    assert_error(&run(&["--psf", "even-psf.png"]), &["even-psf.png", "odd"]);
    assert_error(&run(&["--psf", "gaussian:0"]), &["gaussian:0", "positive"]);
    assert_error(&run(&["--psf", "box:4"]), &["box:4", "odd"]);
    assert_error(
        &run(&["--psf", "box:3", "--sigma", "-1"]),
        &["--sigma", "-1"],
    );
    assert_error(
        &run(&["--psf", "box:3", "--factor", "2"]),
        &["--factor", "sr"],
    );
    assert!(!d.path().join("o.png").exists());

    // add-noise: each option belongs to its kind, and values are checked by name.
    let noise = |extra: &[&str]| {
        let mut a = vec!["add-noise", "c.png", "-o", "n.png"];
        a.extend_from_slice(extra);
        dip(d.path(), &a)
    };
    assert_error(
        &noise(&["--kind", "impulse", "--amount", "0.1", "--sigma", "5"]),
        &["--sigma", "gaussian", "impulse"],
    );
    assert_error(&noise(&["--peak", "5"]), &["--peak", "poisson", "gaussian"]);
    assert_error(
        &noise(&["--kind", "poisson", "--amount", "0.1"]),
        &["--amount", "impulse"],
    );
    assert_error(&noise(&["--kind", "poisson"]), &["--peak"]);
    assert_error(&noise(&["--kind", "impulse"]), &["--amount"]);
    for p in ["0", "-3", "inf"] {
        assert_error(&noise(&["--kind", "poisson", "--peak", p]), &["--peak"]);
    }
    for a in ["1.5", "-0.1"] {
        assert_error(&noise(&["--kind", "impulse", "--amount", a]), &["--amount"]);
    }
    assert!(!d.path().join("n.png").exists());
}

#[test]
fn bad_eval() {
    let d = tmp();
    write_rgb8(&d.path().join("a.png"), 32, 32);
    write_rgb8(&d.path().join("b.png"), 32, 30);
    write_flat_gray(&d.path().join("g.png"), 32, 32, 100);
    assert_error(
        &dip(d.path(), &["eval", "a.png", "b.png"]),
        &["a.png", "32x32", "b.png", "32x30", "same size"],
    );
    assert_error(
        &dip(d.path(), &["eval", "g.png", "a.png"]),
        &["g.png", "gray", "a.png", "rgb"],
    );
    for n in ["16", "40"] {
        assert_error(
            &dip(d.path(), &["eval", "a.png", "a.png", "--crop-border", n]),
            &["--crop-border", n, "32x32"],
        );
    }
    // 15 leaves a 2x2 middle: allowed.
    assert_ok(&dip(
        d.path(),
        &["eval", "a.png", "a.png", "--crop-border", "15"],
    ));
}

#[test]
fn outputs_are_never_overwritten_without_force_nor_inputs_ever() {
    let d = tmp();
    let p = |n: &str| d.path().join(n);
    write_rgb8(&p("c.png"), 32, 32);
    fs::write(p("taken.png"), b"keep me").unwrap();
    fs::write(p("taken.json"), b"keep me").unwrap();
    let sr = |extra: &[&str]| {
        let mut a = vec!["degrade", "c.png", "--task", "sr", "--factor", "2"];
        a.extend_from_slice(extra);
        dip(d.path(), &a)
    };
    assert_error(&sr(&["-o", "taken.png"]), &["taken.png exists", "--force"]);
    assert_error(
        &sr(&["-o", "lr.png", "--hr-out", "taken.png"]),
        &["taken.png exists", "--force"],
    );
    assert_error(
        &sr(&["-o", "lr.png", "--bicubic-out", "taken.png"]),
        &["taken.png exists"],
    );
    assert_error(
        &sr(&["-o", "lr.png", "--hr-out", "./c.png", "--force"]),
        &["c.png", "input"],
    );
    assert_error(
        &sr(&["-o", "x.png", "--hr-out", "./x.png"]),
        &["x.png", "same file"],
    );
    assert!(!p("lr.png").exists() && !p("x.png").exists());
    assert_error(
        &dip(
            d.path(),
            &[
                "degrade",
                "c.png",
                "--task",
                "inpaint",
                "--random-mask",
                "0.5",
                "--mask-out",
                "c.png",
                "-o",
                "o.png",
                "--force",
            ],
        ),
        &["c.png", "input"],
    );
    write_flat_gray(&p("m.png"), 32, 32, 255);
    assert_error(
        &dip(
            d.path(),
            &[
                "degrade", "c.png", "--task", "inpaint", "--mask", "m.png", "-o", "m.png",
                "--force",
            ],
        ),
        &["m.png", "input"],
    );
    assert_error(
        &dip(
            d.path(),
            &["eval", "c.png", "c.png", "--json", "taken.json"],
        ),
        &["taken.json exists"],
    );
    assert_error(
        &dip(
            d.path(),
            &["eval", "c.png", "c.png", "--json", "c.png", "--force"],
        ),
        &["c.png", "input"],
    );
    assert_eq!(fs::read(p("taken.png")).unwrap(), b"keep me");
    assert_eq!(fs::read(p("taken.json")).unwrap(), b"keep me");
    // With --force an ordinary file is replaced.
    assert_ok(&sr(&["-o", "taken.png", "--force"]));
    assert_eq!(size_of(&p("taken.png")), (16, 16));
    assert_ok(&dip(
        d.path(),
        &["eval", "c.png", "c.png", "--json", "taken.json", "--force"],
    ));
    assert_eq!(read_json(&p("taken.json"))["ssim"], 1.0);
}

// ---------------------------------------------------------------------------------------------
// Round trips.

#[test]
fn eval_of_an_image_against_itself() {
    let d = tmp();
    write_rgb8(&d.path().join("c.png"), 40, 36);
    let out = assert_ok(&dip(
        d.path(),
        &["eval", "c.png", "c.png", "--json", "s.json"],
    ));
    assert!(out.contains("PSNR inf dB"), "{out}");
    assert!(out.contains("SSIM 1.0000"), "{out}");
    let j = read_json(&d.path().join("s.json"));
    assert!(j["psnr"].is_null(), "{j}");
    assert_eq!(j["mse"], 0.0);
    assert_eq!(j["ssim"], 1.0);
    assert_eq!(
        (j["width"].as_u64(), j["height"].as_u64()),
        (Some(40), Some(36))
    );
    let out = assert_ok(&dip(
        d.path(),
        &[
            "eval",
            "c.png",
            "c.png",
            "--y-channel",
            "--crop-border",
            "4",
            "--json",
            "y.json",
        ],
    ));
    assert!(
        out.contains("PSNR inf dB") && out.contains("Y channel"),
        "{out}"
    );
    let j = read_json(&d.path().join("y.json"));
    assert_eq!(j["channels"], 1);
    assert_eq!(
        (j["width"].as_u64(), j["height"].as_u64()),
        (Some(32), Some(28))
    );
}

#[test]
fn super_resolution_round_trip() {
    let d = tmp();
    let p = |n: &str| d.path().join(n);
    write_rgb8(&p("c.png"), 66, 65);
    let out = assert_ok(&dip(
        d.path(),
        &[
            "degrade",
            "c.png",
            "--task",
            "sr",
            "--factor",
            "4",
            "-o",
            "lr.png",
            "--hr-out",
            "hr.png",
            "--bicubic-out",
            "bic.png",
        ],
    ));
    assert!(out.contains("cropped") && out.contains("66x65"), "{out}");
    assert!(out.contains("lanczos2"), "{out}");
    assert_eq!(size_of(&p("lr.png")), (16, 16));
    assert_eq!(size_of(&p("hr.png")), (64, 64));
    assert_eq!(size_of(&p("bic.png")), (64, 64));
    let baseline = number_after(&out, "bicubic baseline PSNR ");
    assert!(baseline.is_finite() && baseline > 12.0, "{out}");

    // dip eval of the baseline against the ground truth gives the number degrade printed.
    let ev = assert_ok(&dip(
        d.path(),
        &["eval", "bic.png", "hr.png", "--json", "e.json"],
    ));
    let psnr = number_after(&ev, "PSNR ");
    assert!((psnr - baseline).abs() < 0.011, "{ev} vs {out}");
    let ssim = read_json(&p("e.json"))["ssim"].as_f64().unwrap();
    assert!(ssim > 0.2 && ssim < 1.0, "{ssim}");
    // The SR protocol: Y channel, border cropped, still finite and different.
    let y = assert_ok(&dip(
        d.path(),
        &[
            "eval",
            "bic.png",
            "hr.png",
            "--y-channel",
            "--crop-border",
            "4",
        ],
    ));
    let py = number_after(&y, "PSNR ");
    assert!(py.is_finite() && py > 12.0 && py != psnr, "{y}");
    // The low-resolution file against the ground truth: sizes differ.
    assert_error(
        &dip(d.path(), &["eval", "lr.png", "hr.png"]),
        &["lr.png", "16x16", "hr.png", "64x64"],
    );

    // Without --hr-out a crop is pointed out on stderr; --crop-to crops to its multiple.
    let o = dip(
        d.path(),
        &[
            "degrade",
            "c.png",
            "--task",
            "sr",
            "--factor",
            "8",
            "--crop-to",
            "32",
            "-o",
            "lr8.png",
        ],
    );
    assert_ok(&o);
    assert!(text(&o.stderr).contains("--hr-out"), "{}", text(&o.stderr));
    assert_eq!(size_of(&p("lr8.png")), (8, 8));
    // An image that divides is not cropped, and --no-crop is then fine.
    let o = assert_ok(&dip(
        d.path(),
        &[
            "degrade",
            "hr.png",
            "--task",
            "sr",
            "--factor",
            "2",
            "--no-crop",
            "-o",
            "lr2.png",
            "--sigma",
            "5",
            "--seed",
            "3",
        ],
    ));
    assert!(!o.contains("cropped"), "{o}");
    assert_eq!(size_of(&p("lr2.png")), (32, 32));
}

#[test]
fn random_mask_round_trip() {
    let d = tmp();
    let p = |n: &str| d.path().join(n);
    write_rgb8(&p("c.png"), 64, 64);
    let out = assert_ok(&dip(
        d.path(),
        &[
            "degrade",
            "c.png",
            "--task",
            "inpaint",
            "--random-mask",
            "0.3",
            "--mask-seed",
            "5",
            "--mask-out",
            "m.png",
            "-o",
            "obs.png",
        ],
    ));
    assert!(out.contains("known"), "{out}");
    let (w, h, mask) = read8(&p("m.png"));
    assert_eq!((w, h), (64, 64));
    assert!(mask.iter().all(|&v| v == 0 || v == 255));
    let known = mask.iter().filter(|&&v| v == 255).count() as f64 / mask.len() as f64;
    assert!((known - 0.3).abs() < 0.04, "known fraction {known}");
    // Known pixels are the clean ones (no noise asked for), missing ones are black.
    let (_, _, clean) = read8(&p("c.png"));
    let (_, _, obs) = read8(&p("obs.png"));
    for (i, &m) in mask.iter().enumerate() {
        let (o, c) = (&obs[3 * i..3 * i + 3], &clean[3 * i..3 * i + 3]);
        if m == 255 {
            assert_eq!(o, c, "pixel {i}");
        } else {
            assert_eq!(o, [0, 0, 0], "pixel {i}");
        }
    }
    // The saved mask, given back with --mask, makes the same observation.
    assert_ok(&dip(
        d.path(),
        &[
            "degrade", "c.png", "--task", "inpaint", "--mask", "m.png", "-o", "obs2.png",
        ],
    ));
    assert_eq!(read8(&p("obs2.png")).2, obs);
    // The same seed gives the same mask; another seed another one.
    for (seed, name) in [("5", "m5.png"), ("6", "m6.png")] {
        assert_ok(&dip(
            d.path(),
            &[
                "degrade",
                "c.png",
                "--task",
                "inpaint",
                "--random-mask",
                "0.3",
                "--mask-seed",
                seed,
                "--mask-out",
                name,
                "-o",
                &format!("o{seed}.png"),
            ],
        ));
    }
    assert_eq!(read8(&p("m5.png")).2, mask);
    assert_ne!(read8(&p("m6.png")).2, mask);
    // Generated block and text masks, with noise on the known pixels.
    for kind in ["--block-mask", "--text-mask"] {
        let out = assert_ok(&dip(
            d.path(),
            &[
                "degrade",
                "c.png",
                "--task",
                "inpaint",
                kind,
                "--mask-out",
                "mk.png",
                "-o",
                "ok.png",
                "--sigma",
                "10",
                "--force",
            ],
        ));
        let psnr = number_after(&out, "PSNR on known pixels ");
        assert!(psnr > 20.0 && psnr < 40.0, "{out}");
        let (_, _, m) = read8(&p("mk.png"));
        let missing = m.iter().filter(|&&v| v == 0).count();
        assert!(
            missing > 0 && missing < m.len(),
            "{kind}: {missing} missing"
        );
    }
}

#[test]
fn deblur_round_trip_and_bit_depth() {
    let d = tmp();
    let p = |n: &str| d.path().join(n);
    write_rgb8(&p("c.png"), 48, 40);
    let out = assert_ok(&dip(
        d.path(),
        &[
            "degrade",
            "c.png",
            "--task",
            "deblur",
            "--psf",
            "gaussian:1.5",
            "-o",
            "b.png",
        ],
    ));
    assert!(out.contains("gaussian:1.5"), "{out}");
    assert_eq!(size_of(&p("b.png")), (48, 40));
    let printed = number_after(&out, "PSNR ");
    let ev = assert_ok(&dip(d.path(), &["eval", "b.png", "c.png"]));
    assert!(
        (number_after(&ev, "PSNR ") - printed).abs() < 0.011,
        "{ev} vs {out}"
    );
    assert!(printed.is_finite() && printed > 10.0, "{out}");
    // A PSF image works too, and a 16-bit gray input stays 16-bit gray.
    image::GrayImage::from_fn(3, 3, |x, y| {
        image::Luma([if x == 1 || y == 1 { 200 } else { 0 }])
    })
    .save(p("plus.png"))
    .unwrap();
    image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_fn(32, 32, |x, y| {
        image::Luma([((x * 2000 + y * 37) % 65536) as u16])
    })
    .save(p("g16.png"))
    .unwrap();
    assert_ok(&dip(
        d.path(),
        &[
            "degrade", "g16.png", "--task", "deblur", "--psf", "plus.png", "--sigma", "1", "-o",
            "b16.png",
        ],
    ));
    assert_eq!(
        image::open(p("b16.png")).unwrap().color(),
        image::ColorType::L16
    );
}

// ---------------------------------------------------------------------------------------------
// add-noise statistics.

#[test]
fn add_noise_kinds_have_the_right_statistics() {
    let d = tmp();
    let p = |n: &str| d.path().join(n);
    // Mid-gray everywhere: no sample is 0 or 255 before the noise.
    write_flat_gray(&p("flat.png"), 64, 64, 128);
    write_rgb8(&p("rgb.png"), 64, 64);

    // Impulse: about the requested fraction of samples become 0 or 255, half each.
    let out = assert_ok(&dip(
        d.path(),
        &[
            "add-noise",
            "rgb.png",
            "-o",
            "imp.png",
            "--kind",
            "impulse",
            "--amount",
            "0.2",
            "--seed",
            "1",
        ],
    ));
    assert!(out.contains("impulse") && out.contains("PSNR"), "{out}");
    let (_, _, s) = read8(&p("imp.png"));
    let zeros = s.iter().filter(|&&v| v == 0).count() as f64 / s.len() as f64;
    let ones = s.iter().filter(|&&v| v == 255).count() as f64 / s.len() as f64;
    assert!((zeros + ones - 0.2).abs() < 0.02, "{zeros} + {ones}");
    assert!((zeros - ones).abs() < 0.02, "{zeros} vs {ones}");

    // Poisson at peak 10 on 0.5: mean 0.5, standard deviation sqrt(0.5 / 10).
    let out = assert_ok(&dip(
        d.path(),
        &[
            "add-noise",
            "flat.png",
            "-o",
            "poi.png",
            "--kind",
            "poisson",
            "--peak",
            "10",
        ],
    ));
    assert!(out.contains("poisson"), "{out}");
    let v: Vec<f64> = read8(&p("poi.png"))
        .2
        .iter()
        .map(|&x| f64::from(x) / 255.0)
        .collect();
    let (m, sd) = mean_std(&v);
    let want = (128.0 / 255.0 / 10.0f64).sqrt();
    assert!((m - 128.0 / 255.0).abs() < 0.02, "mean {m}");
    assert!((sd - want).abs() < 0.1 * want, "std {sd}, want {want}");
    // Photon counts: every sample is a multiple of 1/peak (up to 8-bit rounding).
    assert!(
        v.iter()
            .all(|x| ((x * 10.0) - (x * 10.0).round()).abs() < 0.03)
    );

    // Gaussian, the default kind, sigma 20 on the 0-255 scale.
    assert_ok(&dip(
        d.path(),
        &["add-noise", "flat.png", "-o", "gau.png", "--sigma", "20"],
    ));
    let v: Vec<f64> = read8(&p("gau.png"))
        .2
        .iter()
        .map(|&x| f64::from(x))
        .collect();
    let (m, sd) = mean_std(&v);
    assert!(
        (m - 128.0).abs() < 1.5 && (sd - 20.0).abs() < 1.5,
        "{m} {sd}"
    );
    // Default sigma 25.
    assert_ok(&dip(d.path(), &["add-noise", "flat.png", "-o", "g25.png"]));
    let v: Vec<f64> = read8(&p("g25.png"))
        .2
        .iter()
        .map(|&x| f64::from(x))
        .collect();
    assert!((mean_std(&v).1 - 25.0).abs() < 1.5);
    // Same seed, same noise.
    assert_ok(&dip(
        d.path(),
        &[
            "add-noise",
            "rgb.png",
            "-o",
            "imp2.png",
            "--kind",
            "impulse",
            "--amount",
            "0.2",
            "--seed",
            "1",
        ],
    ));
    assert_eq!(read8(&p("imp2.png")).2, s);
}

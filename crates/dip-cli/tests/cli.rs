//! The `dip` binary from the outside: bad input gives one `error:` line and exit code 2, never a
//! panic; a tiny end-to-end run writes what it promises.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

/// Runs `dip` in `dir`, on two threads unless `args` say otherwise.
fn dip(dir: &Path, args: &[&str]) -> Output {
    let threads: &[&str] = if args.contains(&"--threads") {
        &[]
    } else {
        &["--threads", "2"]
    };
    Command::new(env!("CARGO_BIN_EXE_dip"))
        .current_dir(dir)
        .args(threads)
        .args(args)
        .output()
        .expect("the dip binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Exit code 2, and stderr is exactly one line `error: ...` that contains every one of `needles`
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

#[track_caller]
fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// A smooth colour picture with some edges, 8-bit RGB.
fn write_rgb8(path: &Path, w: u32, h: u32) {
    image::RgbImage::from_fn(w, h, |x, y| {
        let v = |a: u32, b: u32| ((a * 255 / w.max(1) + b * 3) % 256) as u8;
        image::Rgb([
            v(x, y),
            v(y, x),
            if (x / 8 + y / 8) % 2 == 0 { 40 } else { 200 },
        ])
    })
    .save(path)
    .unwrap();
}

/// A gray 16-bit picture.
fn write_gray16(path: &Path, w: u32, h: u32) {
    image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_fn(w, h, |x, y| {
        image::Luma([((x * 997 + y * 331) % 65536) as u16])
    })
    .save(path)
    .unwrap();
}

fn png_chunk(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    let mut typed = kind.to_vec();
    typed.extend_from_slice(body);
    out.extend_from_slice(&typed);
    out.extend_from_slice(&crc32fast::hash(&typed).to_be_bytes());
    out
}

/// A well-formed PNG header declaring a 0×0 RGB image, then IEND.
fn zero_size_png() -> Vec<u8> {
    let mut ihdr = 0u32.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&0u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(png_chunk(b"IHDR", &ihdr));
    out.extend(png_chunk(b"IEND", &[]));
    out
}

fn tmp() -> TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn missing_input_file() {
    let d = tmp();
    let out = dip(d.path(), &["denoise", "nope.png", "-o", "out.png"]);
    assert_error(&out, &["nope.png", "no such file"]);
    let out = dip(d.path(), &["add-noise", "nope.png", "-o", "out.png"]);
    assert_error(&out, &["nope.png", "no such file"]);
}

#[test]
fn text_file_named_png() {
    let d = tmp();
    fs::write(d.path().join("fake.png"), "this is not an image\n").unwrap();
    let out = dip(d.path(), &["denoise", "fake.png", "-o", "out.png"]);
    assert_error(&out, &["fake.png", "not an image"]);
}

#[test]
fn truncated_png() {
    let d = tmp();
    let full = d.path().join("full.png");
    write_rgb8(&full, 64, 64);
    let bytes = fs::read(&full).unwrap();
    fs::write(d.path().join("cut.png"), &bytes[..bytes.len() / 2]).unwrap();
    let out = dip(d.path(), &["denoise", "cut.png", "-o", "out.png"]);
    assert_error(&out, &["cut.png", "truncated"]);
}

#[test]
fn zero_size_image() {
    let d = tmp();
    fs::write(d.path().join("zero.png"), zero_size_png()).unwrap();
    let out = dip(d.path(), &["denoise", "zero.png", "-o", "out.png"]);
    assert_error(&out, &["zero.png"]);
}

#[test]
fn missing_output_folder() {
    let d = tmp();
    write_rgb8(&d.path().join("in.png"), 64, 64);
    let out = dip(
        d.path(),
        &["denoise", "in.png", "-o", "no/such/dir/out.png"],
    );
    assert_error(&out, &["out.png", "does not exist"]);
    let out = dip(
        d.path(),
        &["add-noise", "in.png", "-o", "no/such/dir/out.png"],
    );
    assert_error(&out, &["out.png", "does not exist"]);
    // A file where the folder should be.
    let out = dip(d.path(), &["denoise", "in.png", "-o", "in.png/out.png"]);
    assert_error(&out, &["out.png", "not a folder"]);
}

#[cfg(unix)]
#[test]
fn unwritable_output_folder() {
    use std::os::unix::fs::PermissionsExt;
    let d = tmp();
    write_rgb8(&d.path().join("in.png"), 64, 64);
    let ro = d.path().join("ro");
    fs::create_dir(&ro).unwrap();
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
    // Root (as in many containers) writes anyway; then there is nothing to test.
    let probe = ro.join("probe");
    if fs::write(&probe, b"x").is_ok() {
        fs::remove_file(&probe).unwrap();
        eprintln!("skipped: this user can write into a read-only folder");
        return;
    }
    let out = dip(
        d.path(),
        &["denoise", "in.png", "-o", "ro/out.png", "--iters", "3"],
    );
    assert_error(&out, &["out.png", "not writable"]);
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn bad_flags() {
    let d = tmp();
    write_rgb8(&d.path().join("in.png"), 64, 64);
    let cases: &[(&[&str], &[&str])] = &[
        (&["--iters", "0"], &["--iters"]),
        (&["--lr", "-1"], &["--lr", "-1"]),
        (&["--lr", "0"], &["--lr"]),
        (&["--lr", "nan"], &["--lr"]),
        (&["--ema", "1"], &["--ema"]),
        (&["--ema", "-0.5"], &["--ema"]),
        (&["--reg-noise", "-0.1"], &["--reg-noise"]),
    ];
    for (flags, needles) in cases {
        let mut args = vec!["denoise", "in.png", "-o", "out.png"];
        args.extend_from_slice(flags);
        let out = dip(d.path(), &args);
        assert_error(&out, needles);
        assert!(!d.path().join("out.png").exists());
    }
    let out = dip(
        d.path(),
        &["add-noise", "in.png", "-o", "n.png", "--sigma", "-5"],
    );
    assert_error(&out, &["--sigma"]);
    let out = dip(d.path(), &["--threads", "0", "bench", "--sizes", "64"]);
    assert_error(&out, &["--threads"]);
    let out = dip(d.path(), &["bench", "--sizes", "100"]);
    assert_error(&out, &["--sizes", "100"]);
    let out = dip(d.path(), &["denoise", "in.png", "-o", "out.gif2"]);
    assert_error(&out, &["out.gif2", "extension"]);
}

#[test]
fn usage_errors_exit_2() {
    let d = tmp();
    let out = dip(d.path(), &["denoise"]);
    assert_eq!(out.status.code(), Some(2));
    let out = dip(d.path(), &["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    let out = dip(d.path(), &["--help"]);
    assert_ok(&out);
    assert!(text(&out.stdout).contains("Examples:"));
}

#[test]
fn existing_output_needs_force_and_never_the_input() {
    let d = tmp();
    write_rgb8(&d.path().join("in.png"), 64, 64);
    fs::write(d.path().join("taken.png"), b"keep me").unwrap();
    let out = dip(d.path(), &["add-noise", "in.png", "-o", "taken.png"]);
    assert_error(&out, &["taken.png exists; pass --force to overwrite"]);
    let out = dip(
        d.path(),
        &["denoise", "in.png", "-o", "taken.png", "--iters", "3"],
    );
    assert_error(&out, &["taken.png exists; pass --force to overwrite"]);
    assert_eq!(fs::read(d.path().join("taken.png")).unwrap(), b"keep me");
    // The input itself, even with --force, and even under another name for it.
    let out = dip(
        d.path(),
        &["add-noise", "in.png", "-o", "in.png", "--force"],
    );
    assert_error(&out, &["in.png", "input"]);
    let out = dip(
        d.path(),
        &[
            "denoise", "in.png", "-o", "./in.png", "--force", "--iters", "3",
        ],
    );
    assert_error(&out, &["in.png", "input"]);
    // --force does overwrite an ordinary file.
    let out = dip(
        d.path(),
        &["add-noise", "in.png", "-o", "taken.png", "--force"],
    );
    assert_ok(&out);
    assert_ne!(fs::read(d.path().join("taken.png")).unwrap(), b"keep me");
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn add_noise_then_denoise_end_to_end() {
    let d = tmp();
    let p = |n: &str| -> PathBuf { d.path().join(n) };
    write_rgb8(&p("clean.png"), 64, 64);
    let out = dip(
        d.path(),
        &[
            "add-noise",
            "clean.png",
            "-o",
            "noisy.png",
            "--sigma",
            "25",
            "--seed",
            "3",
        ],
    );
    assert_ok(&out);
    let noisy = image::open(p("noisy.png")).unwrap();
    assert_eq!((noisy.width(), noisy.height()), (64, 64));
    assert_eq!(noisy.color(), image::ColorType::Rgb8);

    let out = dip(
        d.path(),
        &[
            "denoise",
            "noisy.png",
            "-o",
            "restored.png",
            "--clean",
            "clean.png",
            "--iters",
            "3",
            "--json",
            "run.json",
        ],
    );
    assert_ok(&out);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("PSNR input") && stdout.contains("PSNR final"),
        "{stdout}"
    );
    let restored = image::open(p("restored.png")).unwrap();
    assert_eq!((restored.width(), restored.height()), (64, 64));
    assert_eq!(restored.color(), image::ColorType::Rgb8);

    let j = read_json(&p("run.json"));
    for key in [
        "psnr_noisy",
        "psnr_final",
        "psnr_best",
        "iter_best",
        "iterations_run",
        "seconds",
        "seed",
        "parameters",
        "history",
        "command",
        "input",
        "output",
    ] {
        assert!(j.get(key).is_some(), "{key} missing from {j}");
    }
    for key in ["psnr_noisy", "psnr_final", "psnr_best"] {
        assert!(j[key].is_f64(), "{key} is {}", j[key]);
    }
    assert_eq!(j["iterations_run"], 3);
    assert_eq!(j["command"], "denoise");
    assert_eq!(j["input"], "noisy.png");
    assert_eq!(j["output"], "restored.png");
    let history = j["history"].as_array().unwrap();
    assert!(!history.is_empty());
    for row in history {
        for key in ["iter", "loss", "psnr_raw", "psnr_ema"] {
            assert!(row.get(key).is_some(), "{key} missing from {row}");
        }
        assert!(row["psnr_ema"].is_f64());
    }
    // The summary may not be overwritten without --force either.
    let out = dip(
        d.path(),
        &[
            "denoise",
            "noisy.png",
            "-o",
            "again.png",
            "--iters",
            "3",
            "--json",
            "run.json",
        ],
    );
    assert_error(&out, &["run.json exists; pass --force to overwrite"]);
}

#[test]
fn sixteen_bit_gray_stays_sixteen_bit_gray() {
    let d = tmp();
    write_gray16(&d.path().join("g16.png"), 48, 40);
    let out = dip(
        d.path(),
        &["add-noise", "g16.png", "-o", "n16.png", "--sigma", "10"],
    );
    assert_ok(&out);
    assert_eq!(
        image::open(d.path().join("n16.png")).unwrap().color(),
        image::ColorType::L16
    );
    let out = dip(
        d.path(),
        &[
            "denoise", "n16.png", "-o", "r16.png", "--iters", "2", "--quiet",
        ],
    );
    assert_ok(&out);
    let r = image::open(d.path().join("r16.png")).unwrap();
    assert_eq!((r.width(), r.height()), (48, 40));
    assert_eq!(r.color(), image::ColorType::L16);
}

#[test]
fn alpha_is_dropped_with_a_note() {
    let d = tmp();
    image::RgbaImage::from_fn(64, 64, |x, y| {
        image::Rgba([x as u8 * 4, y as u8 * 4, 128, 200])
    })
    .save(d.path().join("rgba.png"))
    .unwrap();
    let out = dip(d.path(), &["add-noise", "rgba.png", "-o", "n.png"]);
    assert_ok(&out);
    assert!(text(&out.stderr).contains("alpha"), "{}", text(&out.stderr));
    assert_eq!(
        image::open(d.path().join("n.png")).unwrap().color(),
        image::ColorType::Rgb8
    );
}

#[test]
fn interrupted_fit_saves_its_result_and_exits_130() {
    let t = tmp();
    let dir = t.path();
    write_rgb8(&dir.join("noisy.png"), 64, 64);
    let mut child = Command::new(env!("CARGO_BIN_EXE_dip"))
        .current_dir(dir)
        .args([
            "--threads",
            "1",
            "denoise",
            "noisy.png",
            "-o",
            "out.png",
            "--iters",
            "1000000",
            "--json",
            "run.json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Let the fit get going, then Ctrl-C.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "dip did not stop after SIGINT"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    assert_eq!(status.code(), Some(130), "stderr: {}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("panicked"));
    let img = image::open(dir.join("out.png")).unwrap();
    assert_eq!((img.width(), img.height()), (64, 64));
    let j = read_json(&dir.join("run.json"));
    assert_eq!(j["interrupted"], true);
    let n = j["iterations_run"].as_u64().unwrap();
    assert!((1..1_000_000).contains(&n), "iterations_run {n}");
    assert!(!j["history"].as_array().unwrap().is_empty());
}

#[test]
fn bench_memory_lists_the_parts_of_the_planned_memory() {
    let d = tmp();
    let out = dip(d.path(), &["bench", "--memory", "--sizes", "64,128"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    let value = |name: &str, col: usize| -> f64 {
        let line = s
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no line {name}:\n{s}"));
        line[name.len()..].split_whitespace().collect::<Vec<_>>()[col]
            .parse()
            .unwrap()
    };
    // The network input is 32 channels of f32: 0.5 MiB at 64², 2 MiB at 128².
    assert_eq!(value("network input", 0), 0.5);
    assert_eq!(value("network input", 1), 2.0);
    // Activations grow with the pixels, parameters do not; the total is the sum of the parts.
    assert!(
        value("batch-norm (+LeakyReLU) outputs", 1)
            > 3.9 * value("batch-norm (+LeakyReLU) outputs", 0)
    );
    assert_eq!(
        value("parameters, gradients, tables", 0),
        value("parameters, gradients, tables", 1)
    );
    let names = [
        "network input",
        "conv outputs",
        "batch-norm (+LeakyReLU) outputs",
        "upsample outputs",
        "concat outputs",
        "other activations",
        "activation gradients",
        "conv scratch",
        "parameters, gradients, tables",
        "Adam moments",
    ];
    for col in 0..2 {
        let sum: f64 = names.iter().map(|n| value(n, col)).sum();
        assert!((sum - value("total", col)).abs() < 0.1 * names.len() as f64);
    }
}

/// The demo runs on its built-in image and writes its four files; its summary says which rule
/// chose the result and at which step, and the result is better than the noisy image.
#[test]
fn demo_writes_its_files_and_says_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let out = dip(
        dir.path(),
        &["demo", "--out", "d", "--iters", "250", "--quiet"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    for f in ["clean.png", "noisy.png", "restored.png", "summary.json"] {
        assert!(dir.path().join("d").join(f).is_file(), "{f}");
    }
    let s: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join("d/summary.json")).unwrap()).unwrap();
    assert!(s["stop_rule"].as_str().unwrap().starts_with("auto("), "{s}");
    // 250 steps are too few for the rule to be sure: the result is the last step's, and the
    // summary says so.
    assert_eq!(s["stopped_at"], 250);
    let warnings = s["stop_warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("raise --iters")),
        "{s}"
    );
    assert_eq!(
        s["network"]["down"],
        serde_json::json!([32, 32, 32, 32, 32])
    );
    assert!(s["psnr_final"].as_f64().unwrap() > s["psnr_noisy"].as_f64().unwrap());
}

//! Interruption and `dip resume` from the command line: Ctrl-C (SIGINT) mid-fit leaves the
//! result, the summary and a checkpoint; resuming gives the same image, bit for bit, as a run
//! that was never interrupted.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn dip(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dip"));
    c.current_dir(dir);
    c
}

fn run(args: &[&str], dir: &Path) -> Output {
    dip(dir).args(args).output().unwrap()
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn fails(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !err.contains("panicked") && !err.contains("internal error"),
        "{err}"
    );
    err
}

fn write_gray(path: &Path) {
    let img = image::GrayImage::from_fn(64, 64, |x, y| {
        let v = 0.3 + 0.3 * ((x as f32 / 9.0).sin() * (y as f32 / 7.0).cos()) + 0.1;
        image::Luma([(v.clamp(0.0, 1.0) * 255.0) as u8])
    });
    img.save(path).unwrap();
}

const NET: [&str; 7] = [
    "--threads",
    "2",
    "--iters",
    "1000",
    "--config",
    "net.toml",
    "--quiet",
];

/// Starts a fit, waits for its first checkpoint, then sends SIGINT; returns the exit code.
fn interrupted_run(dir: &Path, out: &str) -> Option<i32> {
    let ckpt = dir.join(Path::new(out).with_extension("ckpt"));
    let mut child = dip(dir)
        .args([
            "denoise",
            "noisy.png",
            "-o",
            out,
            "--checkpoint-every",
            "20",
            "--json",
        ])
        .arg(format!("{out}.json"))
        .args(NET)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !ckpt.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    child.wait().unwrap().code()
}

#[test]
fn an_interrupted_fit_resumes_to_the_same_image() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_gray(&d.join("clean.png"));
    ok(&run(
        &["add-noise", "clean.png", "-o", "noisy.png", "--sigma", "25"],
        d,
    ));
    std::fs::write(
        d.join("net.toml"),
        "[net]\nscales = 3\ndown = 16\nup = 16\n",
    )
    .unwrap();
    // The uninterrupted run.
    let mut args = vec!["denoise", "noisy.png", "-o", "full.png", "--no-checkpoint"];
    args.extend(NET);
    ok(&run(&args, d));

    let code = interrupted_run(d, "cut.png");
    assert_eq!(code, Some(130), "an interrupted fit exits with 130");
    for f in ["cut.png", "cut.png.json", "cut.ckpt"] {
        assert!(d.join(f).is_file(), "{f} was not written");
    }
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("cut.png.json")).unwrap()).unwrap();
    assert_eq!(summary["interrupted"], true);
    let stopped = summary["iterations_run"].as_u64().unwrap();
    assert!(stopped < 1000, "stopped at {stopped}");

    // Resuming by the folder finds the one checkpoint.
    ok(&run(&["resume", "."], d));
    assert_eq!(
        std::fs::read(d.join("full.png")).unwrap(),
        std::fs::read(d.join("cut.png")).unwrap(),
        "the resumed result differs from the uninterrupted one"
    );
    assert!(
        !d.join("cut.ckpt").exists(),
        "a finished fit removes its checkpoint"
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("cut.png.json")).unwrap()).unwrap();
    assert_eq!(summary["iterations_run"], 1000);
    assert_eq!(summary["interrupted"], false);
}

#[test]
fn resume_refuses_missing_foreign_and_damaged_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let err = fails(&run(&["resume", "nothing.ckpt"], d));
    assert!(
        err.contains("nothing.ckpt") && err.contains("no such checkpoint"),
        "{err}"
    );
    let err = fails(&run(&["resume", "."], d));
    assert!(err.contains("no checkpoint"), "{err}");
    std::fs::write(d.join("junk.ckpt"), b"definitely not a checkpoint").unwrap();
    let err = fails(&run(&["resume", "junk.ckpt"], d));
    assert!(
        err.contains("junk.ckpt") && err.contains("not a dip checkpoint"),
        "{err}"
    );
    std::fs::remove_file(d.join("junk.ckpt")).unwrap();

    // A checkpoint whose settings changed underneath it: the network no longer matches.
    write_gray(&d.join("clean.png"));
    ok(&run(
        &["add-noise", "clean.png", "-o", "noisy.png", "--sigma", "25"],
        d,
    ));
    std::fs::write(
        d.join("net.toml"),
        "[net]\nscales = 3\ndown = 16\nup = 16\n",
    )
    .unwrap();
    let code = interrupted_run(d, "cut.png");
    assert_eq!(code, Some(130));
    std::fs::write(d.join("net.toml"), "[net]\nscales = 3\ndown = 8\nup = 8\n").unwrap();
    let err = fails(&run(&["resume", "cut.ckpt"], d));
    assert!(
        err.contains("cut.ckpt") && err.contains("another network"),
        "{err}"
    );
}

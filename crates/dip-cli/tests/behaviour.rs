//! The behaviour of every command that makes images, pinned: a tiny seeded run of each (32–48
//! px, a narrow network, tens of steps, one thread), whose output images and summary fields are
//! compared with the ones recorded in `tests/behaviour/`.
//!
//! On the machine that recorded them the outputs are bit-identical (the test says how many
//! were). Another CPU may pick other GEMM kernels, whose sums round differently, so an output
//! that is not bit-identical must still match the recorded image to within 2 levels in 255 at
//! every sample, with a PSNR against it of at least 50 dB, and every recorded summary number
//! must agree to 0.05 (dB, or its own unit); steps and counts must be equal.
//!
//! After a change that is meant to change behaviour, record again with
//! `DIP_BLESS=1 cargo test --release -p dip-cli --test behaviour` and explain the change in the
//! commit.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use tempfile::TempDir;

/// A narrow network for every fitting run: the same code paths, a fraction of the time.
const NARROW: &[&str] = &[
    "--set",
    "net.scales=3",
    "--set",
    "net.down=8",
    "--set",
    "net.up=8",
    "--set",
    "net.skip=2",
    "--set",
    "net.input_channels=4",
];

/// Summary fields compared (those present in a summary; nested ones by `a.b`).
const FIELDS: &[&str] = &[
    "iterations_run",
    "stopped_at",
    "stop_rule",
    "stop_sigma",
    "psnr_noisy",
    "psnr_final",
    "psnr_best",
    "iter_best",
    "ssim_final",
    "loss_final",
    "baseline.psnr",
    "known_fraction",
    "rollbacks",
    "sgld.samples",
];

fn recorded() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/behaviour")
}

fn dip(dir: &Path, args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_dip"))
        .current_dir(dir)
        .args(["--threads", "1", "--quiet"])
        .args(args)
        .output()
        .expect("the dip binary runs");
    assert!(
        out.status.success(),
        "dip {}\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A colour picture with smooth parts, edges and a checker, 8-bit RGB.
fn write_rgb(path: &Path, w: u32, h: u32) {
    image::RgbImage::from_fn(w, h, |x, y| {
        let r = (x * 255 / w) as u8;
        let g = (y * 255 / h) as u8;
        let b = if (x / 6 + y / 6) % 2 == 0 { 50 } else { 190 };
        image::Rgb([r, g, b])
    })
    .save(path)
    .unwrap();
}

/// A gray picture: a disc on a ramp.
fn write_gray(path: &Path, w: u32, h: u32) {
    image::GrayImage::from_fn(w, h, |x, y| {
        let (dx, dy) = (x as f64 - w as f64 / 2.0, y as f64 - h as f64 / 2.0);
        let v = if dx * dx + dy * dy < (w as f64 / 4.0).powi(2) {
            220.0
        } else {
            30.0 + 150.0 * x as f64 / w as f64
        };
        image::Luma([v as u8])
    })
    .save(path)
    .unwrap();
}

/// Every run: a name, the command line, and the images and summary it writes.
/// A run: its name, its command line, the images it writes and its summary (file or folder).
type Run = (
    &'static str,
    Vec<&'static str>,
    Vec<&'static str>,
    Option<&'static str>,
);

fn runs() -> Vec<Run> {
    let fit = |v: &[&'static str]| -> Vec<&'static str> {
        let mut a = v.to_vec();
        a.extend_from_slice(NARROW);
        a
    };
    vec![
        (
            "add-noise-gaussian",
            vec![
                "add-noise",
                "rgb.png",
                "--sigma",
                "25",
                "--seed",
                "3",
                "-o",
                "noisy.png",
            ],
            vec!["noisy.png"],
            None,
        ),
        (
            "add-noise-poisson",
            vec![
                "add-noise",
                "gray.png",
                "--kind",
                "poisson",
                "--peak",
                "30",
                "--seed",
                "4",
                "-o",
                "poisson.png",
            ],
            vec!["poisson.png"],
            None,
        ),
        (
            "degrade-inpaint",
            vec![
                "degrade",
                "gray.png",
                "--task",
                "inpaint",
                "--random-mask",
                "0.5",
                "--mask-seed",
                "5",
                "--sigma",
                "5",
                "--seed",
                "6",
                "--mask-out",
                "holes_mask.png",
                "-o",
                "holes.png",
            ],
            vec!["holes.png", "holes_mask.png"],
            None,
        ),
        (
            "degrade-sr",
            vec![
                "degrade",
                "rgb.png",
                "--task",
                "sr",
                "--factor",
                "2",
                "--sigma",
                "2",
                "--seed",
                "7",
                "--hr-out",
                "hr.png",
                "--bicubic-out",
                "bicubic.png",
                "-o",
                "lr.png",
            ],
            vec!["lr.png", "hr.png", "bicubic.png"],
            None,
        ),
        (
            "degrade-deblur",
            vec![
                "degrade",
                "gray.png",
                "--task",
                "deblur",
                "--psf",
                "gaussian:1.5",
                "--sigma",
                "3",
                "--seed",
                "8",
                "-o",
                "blurred.png",
            ],
            vec!["blurred.png"],
            None,
        ),
        (
            "denoise-fixed",
            fit(&[
                "denoise",
                "noisy.png",
                "--clean",
                "rgb.png",
                "--iters",
                "40",
                "--stop",
                "fixed",
                "--seed",
                "1",
                "-o",
                "den.png",
                "--json",
                "den.json",
                "--no-checkpoint",
            ]),
            vec!["den.png"],
            Some("den.json"),
        ),
        (
            "denoise-auto",
            fit(&[
                "denoise",
                "noisy.png",
                "--clean",
                "rgb.png",
                "--iters",
                "60",
                "--seed",
                "2",
                "--ema",
                "0.9",
                "-o",
                "auto.png",
                "--json",
                "auto.json",
                "--no-checkpoint",
            ]),
            vec!["auto.png"],
            Some("auto.json"),
        ),
        (
            "denoise-sgld",
            fit(&[
                "denoise",
                "noisy.png",
                "--iters",
                "40",
                "--sgld",
                "--sgld-burnin",
                "10",
                "--sgld-every",
                "10",
                "--seed",
                "3",
                "-o",
                "sgld.png",
                "--json",
                "sgld.json",
                "--no-checkpoint",
            ]),
            vec!["sgld.png", "sgld_std.png"],
            Some("sgld.json"),
        ),
        (
            "inpaint",
            fit(&[
                "inpaint",
                "holes.png",
                "--mask",
                "holes_mask.png",
                "--clean",
                "gray.png",
                "--iters",
                "40",
                "--stop",
                "wmv",
                "--seed",
                "4",
                "-o",
                "inp.png",
                "--json",
                "inp.json",
                "--no-checkpoint",
            ]),
            vec!["inp.png"],
            Some("inp.json"),
        ),
        (
            "sr",
            fit(&[
                "sr",
                "lr.png",
                "--factor",
                "2",
                "--clean",
                "hr.png",
                "--iters",
                "40",
                "--stop",
                "fixed",
                "--seed",
                "5",
                "-o",
                "sr.png",
                "--json",
                "sr.json",
                "--no-checkpoint",
            ]),
            vec!["sr.png"],
            Some("sr.json"),
        ),
        (
            "demo",
            vec!["demo", "--out", "demo", "--iters", "20"],
            vec!["demo/noisy.png", "demo/restored.png"],
            Some("demo/summary.json"),
        ),
        (
            "sweep",
            vec!["sweep", "run", "plan.toml", "-o", "sweep"],
            vec![],
            Some("sweep"),
        ),
        (
            "deblur",
            fit(&[
                "deblur",
                "blurred.png",
                "--psf",
                "gaussian:1.5",
                "--clean",
                "gray.png",
                "--iters",
                "40",
                "--stop",
                "fixed",
                "--seed",
                "6",
                "-o",
                "deb.png",
                "--json",
                "deb.json",
                "--no-checkpoint",
            ]),
            vec!["deb.png"],
            Some("deb.json"),
        ),
    ]
}

/// The decoded samples of an image file, widened to u16, with its shape.
fn samples(path: &Path) -> (u32, u32, u8, Vec<u16>) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let c = img.color().channel_count();
    let (w, h) = (img.width(), img.height());
    let v: Vec<u16> = match c {
        1 => img.to_luma16().into_raw(),
        2 => img.to_luma_alpha16().into_raw(),
        3 => img.to_rgb16().into_raw(),
        _ => img.to_rgba16().into_raw(),
    };
    (w, h, c, v)
}

/// The file a run's output image is recorded in.
fn recorded_name(run: &str, img: &str) -> String {
    format!("{run}--{}", img.replace('/', "-"))
}

fn fnv(v: &[u16]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|s| s.to_le_bytes()).collect();
    format!("{:016x}", dip::sweep::fnv1a64(&bytes))
}

fn field<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

/// A plan of four small cells: denoising, inpainting, sr and deblurring, every rule watching.
const PLAN: &str = r#"
title = "behaviour"
images = ["gray.png"]
seeds = 1
set = ["fit.iters=30", "net.scales=3", "net.down=8", "net.up=8", "net.skip=2", "net.input_channels=4"]
stop_rules = ["wmv", "auto"]
metrics = ["psnr_noisy", "psnr_final", "psnr_best", "iter_best", "psnr_baseline"]

[[degradations]]
task = "denoise"
levels = [25]

[[degradations]]
task = "inpaint"
levels = [0.5]

[[degradations]]
task = "sr"
levels = [2]

[[degradations]]
task = "deblur"
levels = [1.0]
sigma = 5
"#;

/// The compared fields of a summary; for a sweep folder, the metrics of every cell, by label.
fn summary_fields(path: &Path) -> BTreeMap<String, Value> {
    if path.is_dir() {
        let mut out = BTreeMap::new();
        for e in fs::read_dir(path.join("cells")).unwrap() {
            let v: Value =
                serde_json::from_str(&fs::read_to_string(e.unwrap().path()).unwrap()).unwrap();
            let s = &v["settings"];
            let label = format!("{}-{}", s["task"].as_str().unwrap_or("?"), s["level"]);
            for (k, m) in v["metrics"].as_object().into_iter().flatten() {
                if !k.ends_with("seconds") && k != "seconds" {
                    out.insert(format!("{label}.{k}"), m.clone());
                }
            }
        }
        return out;
    }
    let v: Value = serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap();
    FIELDS
        .iter()
        .filter_map(|f| field(&v, f).map(|x| (f.to_string(), x.clone())))
        .collect()
}

#[test]
fn every_command_behaves_as_recorded() {
    let bless = std::env::var_os("DIP_BLESS").is_some();
    let tmp = TempDir::new().unwrap();
    let d = tmp.path();
    write_rgb(&d.join("rgb.png"), 48, 40);
    write_gray(&d.join("gray.png"), 40, 40);
    fs::write(d.join("plan.toml"), PLAN).unwrap();
    let expected_path = recorded().join("expected.json");
    let expected: Value = if bless {
        json!({})
    } else {
        serde_json::from_str(&fs::read_to_string(&expected_path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; record it with DIP_BLESS=1",
                expected_path.display()
            )
        }))
        .unwrap()
    };
    let mut record = serde_json::Map::new();
    let (mut identical, mut close) = (0, 0);
    let mut problems = Vec::new();
    for (name, args, images, summary) in runs() {
        dip(d, &args);
        let mut entry = serde_json::Map::new();
        for img in &images {
            let (w, h, c, v) = samples(&d.join(img));
            let hash = fnv(&v);
            entry.insert(
                img.to_string(),
                json!({"width": w, "height": h, "channels": c, "hash": hash}),
            );
            if bless {
                fs::create_dir_all(recorded()).unwrap();
                fs::copy(d.join(img), recorded().join(recorded_name(name, img))).unwrap();
                continue;
            }
            let want = &expected[name][*img];
            if want.is_null() {
                problems.push(format!("{name}: {img} is not recorded"));
                continue;
            }
            if want["hash"] == json!(hash) {
                identical += 1;
                continue;
            }
            let (rw, rh, rc, rv) = samples(&recorded().join(recorded_name(name, img)));
            if (rw, rh, rc) != (w, h, c) {
                problems.push(format!(
                    "{name}: {img} is {w}x{h}x{c}, recorded {rw}x{rh}x{rc}"
                ));
                continue;
            }
            let scale = 255.0 / 65535.0;
            let diffs: Vec<f64> = v
                .iter()
                .zip(&rv)
                .map(|(&a, &b)| (a as f64 - b as f64).abs() * scale)
                .collect();
            let max = diffs.iter().cloned().fold(0.0, f64::max);
            let mse = diffs.iter().map(|d| d * d).sum::<f64>() / diffs.len() as f64;
            let psnr = 10.0 * (255.0f64 * 255.0 / mse.max(1e-12)).log10();
            if max <= 2.0 && psnr >= 50.0 {
                close += 1;
            } else {
                problems.push(format!(
                    "{name}: {img} differs from the recorded image: max {max:.1} levels, PSNR \
                     {psnr:.1} dB"
                ));
            }
        }
        if let Some(s) = summary {
            let fields = summary_fields(&d.join(s));
            if !bless {
                for (k, want) in expected[name]["summary"].as_object().into_iter().flatten() {
                    let got = fields.get(k).cloned().unwrap_or(Value::Null);
                    let same = match (want.as_f64(), got.as_f64()) {
                        (Some(a), Some(b)) if want.is_f64() || got.is_f64() => {
                            (a - b).abs() <= 0.05
                        }
                        _ => *want == got,
                    };
                    if !same {
                        problems.push(format!("{name}: {s} {k} = {got}, recorded {want}"));
                    }
                }
            }
            entry.insert("summary".into(), json!(fields));
        }
        record.insert(name.to_string(), Value::Object(entry));
    }
    if bless {
        fs::write(
            &expected_path,
            serde_json::to_string_pretty(&Value::Object(record)).unwrap() + "\n",
        )
        .unwrap();
        eprintln!("recorded {}", expected_path.display());
        return;
    }
    eprintln!("behaviour: {identical} image(s) bit-identical, {close} within tolerance");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

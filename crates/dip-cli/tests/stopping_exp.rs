//! `dip experiment stopping` end to end on a tiny data folder: every rule is reported against
//! the oracle, the gaps are consistent with the cells, and a second run resumes without fitting.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn dip(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dip"))
        .args(["--threads", "1"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

#[track_caller]
fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn every_rule_is_measured_against_the_oracle_and_the_run_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (sub, phase) in [("cset9", 0.0f32), ("set12", 1.3)] {
        std::fs::create_dir_all(d.join("data").join(sub)).unwrap();
        let img = image::RgbImage::from_fn(32, 32, |x, y| {
            let v = |k: f32| {
                (128.0 + 70.0 * ((x as f32 * 0.3 + k + phase).sin() * (y as f32 * 0.2).cos())) as u8
            };
            image::Rgb([v(0.0), v(1.0), v(2.0)])
        });
        img.save(d.join("data").join(sub).join("a.png")).unwrap();
    }
    let args = [
        "experiment",
        "stopping",
        "--data",
        "data",
        "-o",
        "out",
        "--sigmas",
        "25",
        "--seeds",
        "1",
        "--downsample",
        "1",
        "--size",
        "32",
        "--iters",
        "40",
    ];
    ok(&dip(&args, d));
    let md = std::fs::read_to_string(d.join("out/stopping.md")).unwrap();
    for r in ["wmv", "emv", "discrepancy", "spectral", "auto"] {
        assert!(md.contains(&format!("| {r} |")), "{r} missing:\n{md}");
    }
    assert!(md.contains("Goal for `auto`"), "{md}");
    let s: Value =
        serde_json::from_slice(&std::fs::read(d.join("out/stopping.json")).unwrap()).unwrap();
    assert_eq!(s["cells"], 2);
    // Each cell's gap is its oracle minus the rule's PSNR, never negative: the oracle is the
    // best of every step's raw and averaged output, and each rule returns one of those.
    let cells: Vec<Value> = std::fs::read_dir(d.join("out/cells"))
        .unwrap()
        .map(|e| serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap())
        .collect();
    assert_eq!(cells.len(), 2);
    for c in &cells {
        let m = &c["metrics"];
        let best = m["psnr_best"]
            .as_f64()
            .unwrap()
            .max(m["psnr_best_raw"].as_f64().unwrap());
        for r in ["wmv", "emv", "discrepancy", "spectral", "auto"] {
            let gap = m[format!("stop_{r}_gap")].as_f64().unwrap();
            let psnr = m[format!("stop_{r}_psnr")].as_f64().unwrap();
            assert!(gap >= -1e-9, "{r}: gap {gap}");
            assert!(
                (best - psnr - gap).abs() < 1e-6,
                "{r}: {best} − {psnr} ≠ {gap}"
            );
            let steps = m[format!("stop_{r}_steps")].as_f64().unwrap();
            assert!((1.0..=40.0).contains(&steps), "{r}: {steps} steps");
        }
    }
    for chart in ["gaps.svg", "curve.svg"] {
        let svg = std::fs::read_to_string(d.join("out").join(chart)).unwrap();
        assert!(svg.starts_with("<svg"), "{chart}");
    }
    let curve = std::fs::read_to_string(d.join("out/curve.svg")).unwrap();
    assert!(curve.contains("auto: step"), "the chosen steps are marked");
    // Running again finds every cell finished.
    let again = ok(&dip(&args, d));
    assert!(again.contains("0 cell(s) fitted"), "{again}");
    // Summarising alone needs no data folder and rewrites the same table.
    let md_before = std::fs::read_to_string(d.join("out/stopping.md")).unwrap();
    std::fs::remove_file(d.join("out/stopping.md")).unwrap();
    ok(&dip(
        &[
            "experiment",
            "stopping",
            "-o",
            "out",
            "--summarise-only",
            "--iters",
            "40",
        ],
        d,
    ));
    assert_eq!(
        std::fs::read_to_string(d.join("out/stopping.md")).unwrap(),
        md_before
    );
}

//! The architectures from the command line: `--arch` on a fitting command, the architecture
//! experiments end to end on tiny images, their resume, and clear refusals.

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

fn write_gray(path: &Path, w: u32, h: u32) {
    let img = image::GrayImage::from_fn(w, h, |x, y| {
        let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
        let blob = (-((u - 0.4).powi(2) + (v - 0.4).powi(2)) * 12.0).exp();
        let edge = if u + 0.5 * v > 0.8 { 0.3 } else { 0.0 };
        image::Luma([((0.15 + 0.5 * blob + edge) * 255.0) as u8])
    });
    img.save(path).unwrap();
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Narrow skip network settings so that the skip cells stay fast.
const NARROW: [&str; 6] = [
    "--set",
    "net.scales=2",
    "--set",
    "net.down=8",
    "--set",
    "net.up=8",
];

#[test]
fn arch_table_runs_a_small_table_end_to_end_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_gray(&d.join("img.png"), 64, 64);
    let mut args = vec![
        "experiment",
        "arch-table",
        "img.png",
        "-o",
        "table",
        "--factors",
        "4",
        "--sigmas",
        "25",
        "--archs",
        "skip,linear-32,relunet-32,decoder-16,convgen2-8",
        "--seeds",
        "2",
        "--iters",
        "20",
        "--bands",
        "4",
        "--quiet",
    ];
    args.extend(NARROW);
    let out = ok(&run(&args, d));
    assert!(out.contains("10 of 10 cells"), "{out}");
    // The table is a sweep: its plan, its cells (one record per fit) and the sweep's tables.
    let results = json(&d.join("table/table.json"));
    assert_eq!(results["groups"].as_array().unwrap().len(), 5);
    assert_eq!(results["missing"], 0);
    let cells = results["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 10);
    let cell = cells
        .iter()
        .find(|c| c["name"] == "img_x4_s25_decoder-16_seed1")
        .expect("the decoder cell of seed 1");
    assert_eq!(cell["size"], serde_json::json!([16, 16]));
    assert_eq!(cell["iterations"], 20);
    assert_eq!(cell["t_half"].as_array().unwrap().len(), 4);
    let record = json(&d.join(format!("table/cells/{}.json", cell["id"].as_str().unwrap())));
    // The best and final PSNR are those of the recorded history: its largest result PSNR and
    // its last (every step is observed here, the last one included).
    let history = record["info"]["history"].as_array().unwrap();
    let ema: Vec<f64> = history.iter().map(|h| h[2].as_f64().unwrap()).collect();
    let best = ema.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(history.last().unwrap()[0], 20);
    assert!(
        (cell["psnr_best"].as_f64().unwrap() - best).abs() < 1e-9,
        "{cell}"
    );
    assert!(
        (cell["psnr_final"].as_f64().unwrap() - ema.last().unwrap()).abs() < 1e-9,
        "{cell}"
    );
    assert_eq!(record["settings"]["arch"], "decoder-16");
    assert_eq!(record["settings"]["bands"], 4);
    assert_eq!(record["metrics"]["t_half_b0"], cell["t_half"][0]);
    // Every architecture and seed sees the same noisy image.
    let noisy: Vec<f64> = cells
        .iter()
        .map(|c| c["psnr_noisy"].as_f64().unwrap())
        .collect();
    assert!(noisy.iter().all(|v| *v == noisy[0]), "{noisy:?}");
    for f in ["plan.toml", "results.md", "results.csv", "table.md"] {
        assert!(d.join("table").join(f).is_file(), "{f}");
    }
    let md = std::fs::read_to_string(d.join("table/table.md")).unwrap();
    assert!(md.contains("| 4 | 25 | decoder-16 | 2 |"), "{md}");
    assert!(
        std::fs::read_to_string(d.join("table/index.html"))
            .unwrap()
            .contains("<svg")
    );

    // A second run reads every cell back: nothing is fitted and nothing changes.
    let skip0 = cells
        .iter()
        .find(|c| c["name"] == "img_x4_s25_skip_seed0")
        .unwrap();
    let skip0_path = d.join(format!(
        "table/cells/{}.json",
        skip0["id"].as_str().unwrap()
    ));
    let before = std::fs::read(&skip0_path).unwrap();
    let again = ok(&run(&args, d));
    assert!(again.contains("0 cell(s) fitted"), "{again}");
    assert_eq!(before, std::fs::read(&skip0_path).unwrap());

    // Shards split the cells: shard 0 of 2 in a fresh folder runs every other cell.
    let mut sharded: Vec<&str> = args.clone();
    sharded[4] = "sharded";
    sharded.extend(["--shard", "0/2"]);
    let out = ok(&run(&sharded, d));
    assert!(out.contains("5 of 10 cells"), "{out}");
    // The cells are the same as in the single run (same seeds, same noise).
    let id = skip0["id"].as_str().unwrap();
    let a = json(&d.join(format!("table/cells/{id}.json")));
    let b = json(&d.join(format!("sharded/cells/{id}.json")));
    assert_eq!(a["metrics"]["psnr_best"], b["metrics"]["psnr_best"]);
    assert_eq!(a["metrics"]["t_half_b1"], b["metrics"]["t_half_b1"]);
    let bad = run(
        &[
            "experiment",
            "arch-table",
            "img.png",
            "-o",
            "x",
            "--shard",
            "2/2",
        ],
        d,
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--shard 2/2"));
}

#[test]
fn arch_flag_fits_with_each_architecture_and_refuses_what_does_not_fit_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_gray(&d.join("img.png"), 32, 32);
    for arch in ["decoder-16", "convgen2-8", "relunet-32", "linear-16"] {
        let out = format!("{arch}.png");
        let json_out = format!("{arch}.json");
        ok(&run(
            &[
                "denoise", "img.png", "--clean", "img.png", "-o", &out, "--json", &json_out,
                "--arch", arch, "--iters", "15", "--quiet",
            ],
            d,
        ));
        let s = json(&d.join(&json_out));
        assert_eq!(s["network"]["arch"], arch.split('-').next().unwrap());
        assert_eq!(s["iterations_run"], 15);
    }
    let out = run(
        &[
            "denoise",
            "img.png",
            "-o",
            "big.png",
            "--arch",
            "linear-2048",
            "--max-memory",
            "0.1",
        ],
        d,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("linear-2048") && err.contains("--max-memory"),
        "{err}"
    );
    assert!(!d.join("big.png").exists());
    let out = run(
        &["denoise", "img.png", "-o", "x.png", "--arch", "resnet"],
        d,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown architecture"));
}

#[test]
fn structure_and_upsampling_experiments_write_their_tables_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_gray(&d.join("img.png"), 32, 32);
    let mut svn = vec![
        "experiment",
        "structure-vs-noise",
        "img.png",
        "-o",
        "svn",
        "--size",
        "16",
        "--archs",
        "skip,decoder-16",
        "--iters",
        "30",
        "--quiet",
    ];
    svn.extend(NARROW);
    ok(&run(&svn, d));
    let cells = json(&d.join("svn/results.json"));
    assert_eq!(cells.as_array().unwrap().len(), 8);
    assert_eq!(json(&d.join("svn/cells/skip_noise.json"))["device"], "cpu");
    let md = std::fs::read_to_string(d.join("svn/results.md")).unwrap();
    assert!(
        md.contains("MSE noise / image") && md.contains("decoder-16"),
        "{md}"
    );
    let t0 = std::fs::metadata(d.join("svn/cells/skip_noise.json"))
        .unwrap()
        .modified()
        .unwrap();
    ok(&run(&svn, d));
    let t1 = std::fs::metadata(d.join("svn/cells/skip_noise.json"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(t0, t1, "a finished cell is read back, not redone");

    let mut up = vec![
        "experiment",
        "upsampling",
        "img.png",
        "-o",
        "up",
        "--size",
        "16",
        "--iters",
        "20",
        "--every",
        "5",
        "--bands",
        "4",
        "--quiet",
    ];
    up.extend(NARROW);
    ok(&run(&up, d));
    let rows = json(&d.join("up/results.json"));
    let names: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["variant"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "nearest",
            "bilinear",
            "transposed",
            "gaussian-1",
            "bilinear+lipschitz-2",
            "gaussian-1+lipschitz-2"
        ]
    );
    assert!(d.join("up/transposed/report.html").exists());
}

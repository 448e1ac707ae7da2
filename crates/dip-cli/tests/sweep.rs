//! `dip sweep` as users run it: a small plan fitted by one process, and by three shards at once
//! of which one is killed and one stopped with SIGTERM, then resumed; the two runs must give the
//! same cells and the same tables.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// Cells are long enough (a few hundred steps) that a shard can be stopped between its first
/// and its last cell.
const PLAN: &str = r#"
title = "test sweep"
images = ["img/*.png"]
seeds = 2
set = ["fit.iters=200", "net.scales=2", "net.down=8", "net.up=8", "net.skip=2", "net.input_channels=4"]
metrics = ["psnr_noisy", "psnr_final", "psnr_best", "iter_best", "ssim_final"]

[[degradations]]
task = "denoise"
levels = [25, 50]
"#;

fn dip() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dip"));
    c.args(["--threads", "1"]);
    c
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
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

/// A folder with the plan and two 32x32 images, one gray and one colour.
fn setup() -> TempDir {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    fs::create_dir_all(d.join("img")).unwrap();
    let gray = image::GrayImage::from_fn(32, 32, |x, y| {
        image::Luma([((x * 7 + y * 3) % 190 + if (x / 8 + y / 8) % 2 == 0 { 60 } else { 0 }) as u8])
    });
    gray.save(d.join("img/a-gray.png")).unwrap();
    let rgb = image::RgbImage::from_fn(32, 32, |x, y| {
        let r = (x * 8) as u8;
        let g = (y * 8) as u8;
        let b = if (x as i32 - 16).pow(2) + (y as i32 - 16).pow(2) < 100 {
            220
        } else {
            40
        };
        image::Rgb([r, g, b])
    });
    rgb.save(d.join("img/b-rgb.png")).unwrap();
    fs::write(d.join("plan.toml"), PLAN).unwrap();
    t
}

fn run(dir: &Path, args: &[&str]) -> Output {
    dip().current_dir(dir).args(args).output().unwrap()
}

fn spawn_shard(dir: &Path, out: &str, shard: &str) -> Child {
    dip()
        .current_dir(dir)
        .args(["sweep", "run", "plan.toml", "-o", out, "--shard", shard])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The ids of the plan's cells, in the plan's order, from the manifest.
fn cell_ids(dir: &Path) -> Vec<String> {
    let m: Value =
        serde_json::from_str(&fs::read_to_string(dir.join("sweep.json")).unwrap()).unwrap();
    m["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

/// Every cell file of a folder: id → record.
fn cells(dir: &Path) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(dir.join("cells")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let v: Value = serde_json::from_str(&fs::read_to_string(e.path()).unwrap()).unwrap();
        let id = v["id"].as_str().unwrap().to_string();
        assert_eq!(name, format!("{id}.json"));
        assert!(out.insert(id, v).is_none());
    }
    out
}

/// How many of `ids` have a cell file.
fn finished(dir: &Path, ids: &[&String]) -> usize {
    ids.iter()
        .filter(|id| dir.join("cells").join(format!("{id}.json")).exists())
        .count()
}

/// Waits until the shard has finished its first cell, and returns how many it has finished.
fn wait_for_first_cell(child: &mut Child, dir: &Path, ids: &[&String]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = finished(dir, ids);
        if n > 0 {
            return n;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the shard ended ({status}) before finishing a cell");
        }
        assert!(Instant::now() < deadline, "no cell finished within 60 s");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The metrics of a cell that do not measure time.
fn stable_metrics(cell: &Value) -> Value {
    let mut m = cell["metrics"].clone();
    m.as_object_mut().unwrap().remove("seconds");
    m
}

#[test]
fn three_shards_with_a_kill_give_the_single_process_result() {
    let started = Instant::now();
    let t = setup();
    let d = t.path();

    // One process.
    let single = run(d, &["sweep", "run", "plan.toml", "-o", "single"]);
    assert_ok(&single);
    let ids = cell_ids(&d.join("single"));
    assert_eq!(ids.len(), 8, "2 images x 2 levels x 2 seeds");
    let single_cells = cells(&d.join("single"));
    assert_eq!(single_cells.len(), 8);

    // Three shards at once; the cells of shard I are at positions I, I+3, I+6.
    let shard_ids: Vec<Vec<&String>> = (0..3)
        .map(|i| ids.iter().skip(i).step_by(3).collect())
        .collect();
    let sharded = d.join("sharded");
    let mut children: Vec<Child> = (0..3)
        .map(|i| spawn_shard(d, "sharded", &format!("{i}/3")))
        .collect();
    // Shard 0 is killed outright after its first cell, as by a crash or a node failure.
    let done0 = wait_for_first_cell(&mut children[0], &sharded, &shard_ids[0]);
    children[0].kill().unwrap();
    // Shard 1 gets SIGTERM (as from Slurm at its time limit): it stops within its cell in
    // progress, saves nothing of it, and exits with 130.
    let done1 = wait_for_first_cell(&mut children[1], &sharded, &shard_ids[1]);
    let term = Command::new("kill")
        .args(["-TERM", &children[1].id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let outs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    assert!(
        done0 < shard_ids[0].len() && done1 < shard_ids[1].len(),
        "the shards finished before they could be stopped ({done0}, {done1}): the cells are \
         too quick for this test"
    );
    assert!(!outs[0].status.success(), "shard 0 was killed");
    assert_eq!(
        outs[1].status.code(),
        Some(130),
        "shard 1 after SIGTERM: {}",
        text(&outs[1].stderr)
    );
    assert!(text(&outs[1].stderr).contains("Run the same command again to resume"));
    assert_ok(&outs[2]);
    let after_stop0 = finished(&sharded, &shard_ids[0]);
    let after_stop1 = finished(&sharded, &shard_ids[1]);
    assert!(after_stop0 < shard_ids[0].len() && after_stop1 < shard_ids[1].len());
    assert_eq!(finished(&sharded, &shard_ids[2]), shard_ids[2].len());

    // Running the stopped shards again finishes them, without redoing finished cells.
    for (i, before) in [(0usize, after_stop0), (1, after_stop1)] {
        let out = run(
            d,
            &[
                "sweep",
                "run",
                "plan.toml",
                "-o",
                "sharded",
                "--shard",
                &format!("{i}/3"),
            ],
        );
        assert_ok(&out);
        let stdout = text(&out.stdout);
        let want = format!(
            "{} cell(s) fitted, {before} already finished, 0 failed",
            shard_ids[i].len() - before
        );
        assert!(stdout.contains(&want), "shard {i}: {stdout}");
    }

    // Every cell is there exactly once, equal to the single-process one.
    let sharded_cells = cells(&sharded);
    assert_eq!(
        sharded_cells.keys().collect::<Vec<_>>(),
        single_cells.keys().collect::<Vec<_>>()
    );
    for (id, cell) in &single_cells {
        let other = &sharded_cells[id];
        assert_eq!(cell["settings"], other["settings"], "cell {id}");
        assert_eq!(stable_metrics(cell), stable_metrics(other), "cell {id}");
        assert!(cell["metrics"]["psnr_final"].as_f64().unwrap() > 10.0);
        assert!(d.join("sharded/images").join(format!("{id}.png")).exists());
    }

    // Merging: the same tables from both runs (the plan's metrics do not include time), and
    // the same bytes when merged again.
    for dir in ["single", "sharded"] {
        assert_ok(&run(d, &["sweep", "merge", dir]));
    }
    let read = |p: &str| fs::read_to_string(d.join(p)).unwrap();
    let csv = read("sharded/results.csv");
    let md = read("sharded/results.md");
    assert_eq!(csv, read("single/results.csv"));
    assert_eq!(md, read("single/results.md"));
    assert_ok(&run(d, &["sweep", "merge", "sharded"]));
    assert_eq!(read("sharded/results.csv"), csv);
    assert_eq!(read("sharded/results.md"), md);
    // One row per image and level, two seeds each, nothing missing.
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 5, "{csv}");
    assert!(
        lines[0].starts_with("image,task,level,arch,psnr_noisy_mean,psnr_noisy_std,"),
        "{csv}"
    );
    assert!(lines[0].ends_with(",n_seeds,missing"), "{csv}");
    assert!(
        lines[1].starts_with("img/a-gray.png,denoise,25,skip,"),
        "{csv}"
    );
    assert!(lines[1..].iter().all(|l| l.ends_with(",2,0")), "{csv}");
    assert!(md.contains("8 of 8 cells finished, 0 missing"), "{md}");

    // A lost cell shows up as missing.
    fs::remove_file(sharded.join("cells").join(format!("{}.json", ids[7]))).unwrap();
    let out = run(d, &["sweep", "merge", "sharded"]);
    assert_ok(&out);
    assert!(text(&out.stdout).contains("7 of 8 cells finished, 1 missing"));
    assert!(
        read("sharded/results.csv")
            .lines()
            .nth(4)
            .unwrap()
            .ends_with(",1,1")
    );
    eprintln!("sweep test took {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn plan_errors_name_the_plan_and_the_key() {
    let t = setup();
    let d = t.path();
    fs::write(d.join("bad.toml"), PLAN.replace("seeds = 2", "seedz = 2")).unwrap();
    let out = run(d, &["sweep", "run", "bad.toml", "-o", "out"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: bad.toml: line "), "{err}");
    assert!(err.contains("seedz"), "{err}");
    // A bad override is found before anything runs.
    fs::write(d.join("bad.toml"), PLAN.replace("net.skip=2", "net.skp=2")).unwrap();
    let out = run(d, &["sweep", "run", "bad.toml", "-o", "out"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("bad.toml") && err.contains("skp"), "{err}");
    assert!(
        !d.join("out/cells").exists() || fs::read_dir(d.join("out/cells")).unwrap().count() == 0
    );
    // A pattern that matches nothing.
    fs::write(d.join("bad.toml"), PLAN.replace("img/*.png", "none/*.png")).unwrap();
    let err = text(&run(d, &["sweep", "run", "bad.toml", "-o", "out"]).stderr);
    assert!(err.contains("'none/*.png' matches no file"), "{err}");
    // Merging a folder that is not a sweep.
    let err = text(&run(d, &["sweep", "merge", "img"]).stderr);
    assert!(err.contains("not a sweep folder"), "{err}");
}

#[test]
fn slurm_script_and_array_variables() {
    let t = setup();
    let d = t.path();
    let out = run(
        d,
        &[
            "sweep",
            "slurm",
            "plan.toml",
            "-o",
            "out",
            "--partition",
            "cpu",
            "--time",
            "02:00:00",
            "--gpus",
            "1",
            "--shards",
            "3",
        ],
    );
    assert_ok(&out);
    let script = text(&out.stdout);
    assert!(script.starts_with("#!/bin/bash\n"), "{script}");
    for line in [
        "#SBATCH --array=0-2\n",
        "#SBATCH --partition=cpu\n",
        "#SBATCH --time=02:00:00\n",
        "#SBATCH --gpus=1\n",
    ] {
        assert!(script.contains(line), "{line} not in:\n{script}");
    }
    let plan = fs::canonicalize(d.join("plan.toml")).unwrap();
    let exec = script.lines().last().unwrap();
    assert!(exec.starts_with("exec "), "{script}");
    assert!(exec.contains(" sweep run "), "{exec}");
    assert!(
        exec.contains(plan.to_str().unwrap())
            || exec.contains(d.join("plan.toml").to_str().unwrap()),
        "{exec}"
    );
    assert!(
        !exec.contains("--shard"),
        "the shard comes from Slurm: {exec}"
    );
    assert!(!exec.contains("--jobs"), "{exec}");
    assert!(!exec.contains("--device"), "{exec}");
    // Without --shards: one task per cell.
    let out = run(d, &["sweep", "slurm", "plan.toml", "-o", "out"]);
    assert!(text(&out.stdout).contains("#SBATCH --array=0-7\n"));
    // --jobs and the global --device reach every array task's command.
    let out = run(
        d,
        &["sweep", "slurm", "plan.toml", "-o", "out", "--jobs", "4"],
    );
    assert_ok(&out);
    let script = text(&out.stdout);
    let exec = script.lines().last().unwrap();
    assert!(exec.ends_with(" --jobs 4"), "{exec}");
    let out = run(
        d,
        &[
            "--device",
            "cuda",
            "sweep",
            "slurm",
            "plan.toml",
            "-o",
            "out",
            "--jobs",
            "2",
        ],
    );
    if cfg!(feature = "cuda") {
        // Written on a login node without a GPU: the tasks probe the GPU where they run.
        assert_ok(&out);
        let script = text(&out.stdout);
        let exec = script.lines().last().unwrap();
        assert!(exec.contains(" --device cuda:0 "), "{exec}");
        assert!(exec.ends_with(" --jobs 2"), "{exec}");
    } else {
        let err = text(&out.stderr);
        assert!(err.contains("built without CUDA support"), "{err}");
    }

    // What an array task sees: shard 1 of 3 takes cells 2, 5 and 8.
    let out = dip()
        .current_dir(d)
        .args(["sweep", "run", "plan.toml", "-o", "out", "--list"])
        .env("SLURM_ARRAY_TASK_ID", "1")
        .env("SLURM_ARRAY_TASK_COUNT", "3")
        .env("SLURM_ARRAY_TASK_MIN", "0")
        .env("SLURM_ARRAY_TASK_MAX", "2")
        .output()
        .unwrap();
    assert_ok(&out);
    let positions: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    assert_eq!(positions, vec!["2", "5", "8"]);
    // --shard wins over the variables.
    let out = dip()
        .current_dir(d)
        .args([
            "sweep",
            "run",
            "plan.toml",
            "-o",
            "out",
            "--list",
            "--shard",
            "0/4",
        ])
        .env("SLURM_ARRAY_TASK_ID", "1")
        .env("SLURM_ARRAY_TASK_COUNT", "3")
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout).lines().count(), 2);
}

/// Each cell records where it ran; a run that finds finished cells from another device says so
/// (same settings, other noise streams) and keeps them.
#[test]
fn cells_record_their_device_and_a_mixed_store_is_noted() {
    let t = setup();
    let d = t.path();
    let small = PLAN
        .replace("seeds = 2", "seeds = 1")
        .replace("fit.iters=200", "fit.iters=20")
        .replace("levels = [25, 50]", "levels = [25]");
    fs::write(d.join("small.toml"), small).unwrap();
    assert_ok(&run(d, &["sweep", "run", "small.toml", "-o", "out"]));
    let done = cells(&d.join("out"));
    assert_eq!(done.len(), 2);
    for c in done.values() {
        assert_eq!(c["info"]["device"], "cpu", "{c}");
    }
    // One cell as if a GPU had run it, one removed: the rerun fits the missing one here.
    let ids: Vec<&String> = done.keys().collect();
    let path = d.join("out/cells").join(format!("{}.json", ids[0]));
    let mut moved = done[ids[0]].clone();
    moved["info"]["device"] = "cuda:0".into();
    fs::write(&path, serde_json::to_string(&moved).unwrap()).unwrap();
    fs::remove_file(d.join("out/cells").join(format!("{}.json", ids[1]))).unwrap();
    let out = run(d, &["sweep", "run", "small.toml", "-o", "out"]);
    assert_ok(&out);
    let err = text(&out.stderr);
    assert!(
        err.contains("note: 1 finished cell(s) ran on cuda:0, this run uses cpu"),
        "{err}"
    );
    let again = cells(&d.join("out"));
    assert_eq!(again[ids[0]]["info"]["device"], "cuda:0");
    assert_eq!(again[ids[1]]["info"]["device"], "cpu");
}

/// Several cells fitted at once give the records of one at a time: each fit is deterministic
/// however the worker threads are shared.
#[test]
fn jobs_fit_cells_at_once_with_the_same_results() {
    let t = setup();
    let d = t.path();
    let small = PLAN
        .replace("fit.iters=200", "fit.iters=30")
        .replace("levels = [25, 50]", "levels = [25]");
    fs::write(d.join("small.toml"), small).unwrap();
    let two_threads = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_dip"));
        c.current_dir(d).args(["--threads", "2"]);
        c
    };
    let one = two_threads()
        .args(["sweep", "run", "small.toml", "-o", "one"])
        .output()
        .unwrap();
    assert_ok(&one);
    let three = two_threads()
        .args(["sweep", "run", "small.toml", "-o", "three", "--jobs", "3"])
        .output()
        .unwrap();
    assert_ok(&three);
    let (a, b) = (cells(&d.join("one")), cells(&d.join("three")));
    assert_eq!(a.len(), 4);
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (id, c) in &a {
        assert_eq!(stable_metrics(c), stable_metrics(&b[id]), "cell {id}");
        assert_eq!(c["info"], b[id]["info"], "cell {id}");
    }
    let out = run(
        d,
        &["sweep", "run", "small.toml", "-o", "zero", "--jobs", "0"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--jobs"),
        "{}",
        text(&out.stderr)
    );
}

//! `dip experiment robustness`: does the restoration hold on a folder of images nobody tuned on?
//!
//! Two parts, over every image under `--images` (duplicates by content counted once):
//! 1. the noise-estimator study (every estimator, colour and gray, each crop size and noise
//!    level; no fitting, seconds);
//! 2. the stopping study: a sweep of fits (central crops, each noise level and seed, the whole
//!    step budget with every rule watching), and per cell the gain of `auto` and of the oracle
//!    over the noisy image. A cell where `auto` gains under 2 dB while the oracle gains 4 dB or
//!    more is flagged.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use dip::robustness::{estimator_study, summarise, to_markdown};
use dip::sweep::Store;
use serde_json::json;

use crate::output::{write_json, write_text};
use crate::sweep::{RunArgs, run_plan};
use crate::task::load_image;
use crate::{Global, Outcome};

const EXAMPLES: &str = "\
Examples:
  dip experiment robustness -o robust/ --images photos/
  dip experiment robustness -o robust/ --no-fits                 (the estimator study only)
  dip experiment robustness -o robust/ --sizes 64,128 --seeds 2 --iters 1500";

#[derive(clap::Args, Debug)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Folder of clean images (PNG, BMP, JPEG, TIFF; searched recursively, `*_mask.*` skipped).
    #[arg(long, value_name = "DIR", default_value = "../shared/data")]
    images: PathBuf,

    /// Output folder: estimators.md/json, stop-<size>/ (a sweep each), robustness.md.
    /// Running again with the same folder skips the finished fits.
    #[arg(short, long = "output", value_name = "DIR")]
    output: PathBuf,

    /// Noise levels of the estimator study (0–255 scale).
    #[arg(long, value_delimiter = ',', default_values_t = [0.0, 5.0, 10.0, 15.0, 25.0, 35.0, 50.0, 75.0], value_name = "S,…")]
    estimator_sigmas: Vec<f64>,

    /// Crop sizes of the estimator study (0: the whole image).
    #[arg(long, value_delimiter = ',', default_values_t = [48usize, 64, 128, 256, 0], value_name = "N,…")]
    crops: Vec<usize>,

    /// Noise levels of the stopping study.
    #[arg(long, value_delimiter = ',', default_values_t = [15.0, 25.0, 50.0], value_name = "S,…")]
    sigmas: Vec<f64>,

    /// Crop sizes of the stopping study (central crops of the images as they are).
    #[arg(long, value_delimiter = ',', default_values_t = [64usize], value_name = "N,…")]
    sizes: Vec<usize>,

    /// Seeds per image and level.
    #[arg(long, default_value_t = 1, value_name = "N")]
    seeds: usize,

    /// The step budget of each fit (the oracle is the best step within it).
    #[arg(long, default_value_t = 1200, value_name = "N")]
    iters: usize,

    /// Only the estimator study.
    #[arg(long)]
    no_fits: bool,

    /// Run only the fits I, I+N, … (see `dip sweep run --shard`).
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
}

/// Image files under `dir`, sorted, masks left out.
fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        bail!("{}: no such folder (--images)", dir.display());
    }
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("{}: cannot list", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let ext = p
                .extension()
                .map(|e| e.to_string_lossy().to_ascii_lowercase())
                .unwrap_or_default();
            let stem = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            if ["png", "bmp", "jpg", "jpeg", "tif", "tiff"].contains(&ext.as_str())
                && !stem.ends_with("_mask")
            {
                out.push(p);
            }
        }
    }
    out.sort();
    if out.is_empty() {
        bail!("{}: no image files found (--images)", dir.display());
    }
    Ok(out)
}

pub fn run(a: Args, g: &Global) -> Result<Outcome> {
    if a.seeds == 0 || a.iters == 0 {
        bail!("--seeds and --iters must be at least 1");
    }
    for s in a.estimator_sigmas.iter().chain(&a.sigmas) {
        if !(s.is_finite() && *s >= 0.0) {
            bail!("noise levels must be zero or positive, got {s}");
        }
    }
    let files = image_files(&a.images)?;
    std::fs::create_dir_all(&a.output)
        .with_context(|| format!("{}: cannot create the folder", a.output.display()))?;

    // Every distinct image once (the public set repeats some under other names).
    let mut seen = HashSet::new();
    let mut images = Vec::new();
    let mut paths = Vec::new();
    for f in &files {
        let img = load_image(f, g)?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (img.width, img.height, img.channels).hash(&mut h);
        img.data.iter().for_each(|v| v.to_bits().hash(&mut h));
        if seen.insert(h.finish()) {
            let name = f
                .strip_prefix(&a.images)
                .unwrap_or(f)
                .to_string_lossy()
                .into_owned();
            images.push((name, img));
            paths.push(std::path::absolute(f).unwrap_or(f.clone()));
        }
    }
    if !g.quiet {
        eprintln!(
            "robustness: {} distinct images of {} files; estimator study",
            images.len(),
            files.len()
        );
    }
    let cases = estimator_study(&images, &a.estimator_sigmas, &a.crops, 0);
    let rows = summarise(&cases);
    let est_md = to_markdown(&rows);
    write_text(&a.output.join("estimators.md"), &est_md)?;
    write_json(
        &a.output.join("estimators.json"),
        &json!({"summary": rows, "cases": cases}),
    )?;
    let mut md = format!(
        "# Robustness on {}\n\n{} distinct images. Estimators of the noise level, |σ̂/σ − 1| \
         over σ ≥ 10 and the estimate on the clean image (σ = 0), per crop size:\n\n{est_md}",
        a.images.display(),
        images.len()
    );
    if a.no_fits {
        write_text(&a.output.join("robustness.md"), &md)?;
        print!("{md}");
        return Ok(Outcome::Done);
    }

    let rules = ["wmv", "discrepancy", "auto"];
    let mut flagged = Vec::new();
    let mut table = Vec::new();
    for &size in &a.sizes {
        let dir = a.output.join(format!("stop-{size}"));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("{}: cannot create the folder", dir.display()))?;
        let list: Vec<String> = paths
            .iter()
            .map(|p| toml::Value::String(p.display().to_string()).to_string())
            .collect();
        let plan = format!(
            "title = \"Robustness: stopping at {size}x{size}\"\n\
             images = [{}]\n\
             seeds = {}\n\
             crop = {size}\n\
             set = [\"fit.iters={}\"]\n\
             stop_rules = [{}]\n\
             metrics = [\"psnr_noisy\", \"psnr_best\", \"iter_best\"]\n\
             save_images = false\n\n\
             [[degradations]]\ntask = \"denoise\"\nlevels = [{}]\n",
            list.join(", "),
            a.seeds,
            a.iters,
            rules.map(|r| format!("\"{r}\"")).join(", "),
            a.sigmas
                .iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let plan_path = dir.join("plan.toml");
        write_text(&plan_path, &plan)?;
        let outcome = run_plan(
            RunArgs {
                plan: plan_path,
                output: dir.clone(),
                shard: a.shard.clone(),
                list: false,
                max_memory: None,
                jobs: 1,
                no_batch: false,
            },
            g,
        )?;
        if matches!(outcome, Outcome::Interrupted) {
            return Ok(outcome);
        }
        let scan = Store::new(&dir).scan()?;
        for c in &scan.records {
            let noisy = c.metric("psnr_noisy");
            let oracle = match (c.metric("psnr_best"), c.metric("psnr_best_raw")) {
                (Some(x), Some(y)) => Some(x.max(y)),
                (x, y) => x.or(y),
            };
            let auto = c.metric("stop_auto_psnr");
            let (Some(n), Some(o), Some(au)) = (noisy, oracle, auto) else {
                continue;
            };
            let flag = au - n < 2.0 && o - n >= 4.0;
            let row = json!({
                "image": c.settings.image, "size": size, "sigma": c.settings.level,
                "seed": c.settings.seed, "noisy": n, "oracle": o, "auto": au, "gap": o - au,
                "auto_step": c.metric("stop_auto_step"), "oracle_step": c.metric("iter_best"),
                "flagged": flag,
            });
            if flag {
                flagged.push(row.clone());
            }
            table.push(row);
        }
    }
    let gaps: Vec<f64> = table.iter().filter_map(|r| r["gap"].as_f64()).collect();
    let mean = gaps.iter().sum::<f64>() / gaps.len().max(1) as f64;
    let worst = gaps.iter().copied().fold(f64::NAN, f64::max);
    md.push_str(&format!(
        "\n## Stopping: `auto` against the oracle\n\n{} fits; gap = oracle − auto (dB): mean \
         {mean:.2}, worst {worst:.2}. Flagged (auto gains < 2 dB while the oracle gains ≥ 4 dB): \
         {}.\n\n| image | size | σ | seed | noisy | oracle | auto | gap | auto step | oracle step | flag |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
        table.len(),
        flagged.len()
    ));
    for r in &table {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} |\n",
            r["image"].as_str().unwrap_or(""),
            r["size"],
            r["sigma"],
            r["seed"],
            r["noisy"].as_f64().unwrap_or(f64::NAN),
            r["oracle"].as_f64().unwrap_or(f64::NAN),
            r["auto"].as_f64().unwrap_or(f64::NAN),
            r["gap"].as_f64().unwrap_or(f64::NAN),
            r["auto_step"],
            r["oracle_step"],
            if r["flagged"].as_bool() == Some(true) {
                "**FLAG**"
            } else {
                ""
            }
        ));
    }
    write_text(&a.output.join("robustness.md"), &md)?;
    write_json(
        &a.output.join("robustness.json"),
        &json!({"cells": table, "flagged": flagged, "mean_gap": mean, "worst_gap": worst}),
    )?;
    print!("{md}");
    Ok(Outcome::Done)
}

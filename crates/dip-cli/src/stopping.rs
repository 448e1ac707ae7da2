//! `dip experiment stopping`: every stopping rule against the oracle, over CSet9 and Set12.
//!
//! The experiment is a sweep plan (written to `DIR/plan.toml` and run by the sweep runner, so
//! it resumes and shards like any sweep): every image × noise level × seed is one fit of the
//! full step budget, watched by all the rules at once, none of which ends it. Each cell records,
//! per rule, the step it chose, the PSNR of its result, the gap to the run's best PSNR (the
//! oracle, which needs the clean image), the step where it would have ended the run, and the
//! wall time of those steps. `DIR/stopping.md` summarises them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::output::{write_json, write_text};
use crate::sweep::{RunArgs, run_plan};
use crate::{Global, Outcome};

/// The rules the experiment compares.
pub const RULES: [&str; 5] = ["wmv", "emv", "discrepancy", "spectral", "auto"];

const EXAMPLES: &str = "\
Examples:
  dip experiment stopping --data shared/data -o stopping/
  dip experiment stopping --data shared/data -o stopping/ --size 128 --downsample 1 --seeds 2
  dip experiment stopping --data shared/data -o stopping/ --shard 0/4    (and 1/4, 2/4, 3/4)";

#[derive(clap::Args, Debug)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The data folder holding cset9/ and set12/.
    #[arg(long, value_name = "DIR")]
    data: PathBuf,

    /// Output folder: plan.toml, the sweep's cells, results.md, stopping.md, stopping.json.
    /// Running again with the same folder skips the finished cells.
    #[arg(short, long = "output", value_name = "DIR")]
    output: PathBuf,

    /// Noise levels (0–255 scale).
    #[arg(long, value_delimiter = ',', default_values_t = [15.0, 25.0, 50.0], value_name = "S,…")]
    sigmas: Vec<f64>,

    /// Seeds per image and level.
    #[arg(long, default_value_t = 2, value_name = "N")]
    seeds: usize,

    /// Shrink every image by this factor first (box average); 1 keeps full size.
    #[arg(long, default_value_t = 4, value_name = "F")]
    downsample: usize,

    /// Then take the central S×S crop (0: the whole image).
    #[arg(long, default_value_t = 64, value_name = "S")]
    size: usize,

    /// The fixed step budget each fit runs (the rules are compared with it).
    #[arg(long, default_value_t = 3000, value_name = "N")]
    iters: usize,

    /// Run only the cells I, I+N, … (see `dip sweep run --shard`).
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
}

pub fn run(a: Args, g: &Global) -> Result<Outcome> {
    if a.seeds == 0 || a.iters == 0 || a.sigmas.is_empty() {
        bail!("--seeds, --iters and --sigmas need at least one value");
    }
    if let Some(s) = a.sigmas.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        bail!("--sigmas: {s} is not a positive noise level");
    }
    for sub in ["cset9", "set12"] {
        let p = a.data.join(sub);
        if !p.is_dir() {
            bail!(
                "{}: no such folder (--data must hold cset9/ and set12/)",
                p.display()
            );
        }
    }
    std::fs::create_dir_all(&a.output)
        .with_context(|| format!("{}: cannot create the folder", a.output.display()))?;
    let data = std::path::absolute(&a.data).unwrap_or(a.data.clone());
    let glob =
        |sub: &str| toml::Value::String(format!("{}/{sub}/*.png", data.display())).to_string();
    let mut plan = format!(
        "title = \"Stopping rules against the oracle\"\n\
         images = [{}, {}]\n\
         seeds = {}\n\
         set = [\"fit.iters={}\"]\n\
         stop_rules = [{}]\n\
         metrics = [\"psnr_noisy\", \"psnr_best\", \"iter_best\", {}]\n\
         save_images = false\n",
        glob("cset9"),
        glob("set12"),
        a.seeds,
        a.iters,
        RULES.map(|r| format!("\"{r}\"")).join(", "),
        RULES.map(|r| format!("\"stop_{r}_gap\"")).join(", "),
    );
    if a.downsample > 1 {
        plan.push_str(&format!("downsample = {}\n", a.downsample));
    }
    if a.size > 0 {
        plan.push_str(&format!("crop = {}\n", a.size));
    }
    plan.push_str(&format!(
        "\n[[degradations]]\ntask = \"denoise\"\nlevels = [{}]\n",
        a.sigmas
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let plan_path = a.output.join("plan.toml");
    write_text(&plan_path, &plan)?;
    let outcome = run_plan(
        RunArgs {
            plan: plan_path,
            output: a.output.clone(),
            shard: a.shard.clone(),
            list: false,
            max_memory: None,
        },
        g,
    )?;
    if matches!(outcome, Outcome::Interrupted) {
        return Ok(outcome);
    }
    summarise(&a.output, a.iters)?;
    Ok(Outcome::Done)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Reads every finished cell of the folder and writes `stopping.md` and `stopping.json`.
pub fn summarise(dir: &std::path::Path, budget: usize) -> Result<()> {
    let mut cells: Vec<Value> = Vec::new();
    let cells_dir = dir.join("cells");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&cells_dir)
        .with_context(|| format!("{}: cannot list the cells", cells_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    for f in &files {
        let v: Value = serde_json::from_slice(&std::fs::read(f)?)
            .with_context(|| format!("{}: not a cell record", f.display()))?;
        cells.push(v);
    }
    if cells.is_empty() {
        bail!("{}: no finished cell to summarise", cells_dir.display());
    }
    let metric = |c: &Value, k: &str| c["metrics"][k].as_f64();
    let mut levels: Vec<f64> = cells
        .iter()
        .filter_map(|c| c["settings"]["level"].as_f64())
        .collect();
    levels.sort_by(f64::total_cmp);
    levels.dedup();
    let mut header: Vec<String> = [
        "rule",
        "mean gap (dB)",
        "max gap (dB)",
        "mean steps",
        "steps / budget",
        "mean seconds",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    header.extend(levels.iter().map(|l| format!("mean gap σ={l}")));
    let mut rows = Vec::new();
    let mut summary = BTreeMap::new();
    for r in RULES {
        let gaps: Vec<f64> = cells
            .iter()
            .filter_map(|c| metric(c, &format!("stop_{r}_gap")))
            .collect();
        if gaps.is_empty() {
            continue;
        }
        let steps: Vec<f64> = cells
            .iter()
            .filter_map(|c| metric(c, &format!("stop_{r}_steps")))
            .collect();
        let secs: Vec<f64> = cells
            .iter()
            .filter_map(|c| metric(c, &format!("stop_{r}_seconds")))
            .collect();
        let max = gaps.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut row = vec![
            r.to_string(),
            format!("{:.2}", mean(&gaps)),
            format!("{max:.2}"),
            format!("{:.0}", mean(&steps)),
            format!("{:.2}", mean(&steps) / budget as f64),
            format!("{:.1}", mean(&secs)),
        ];
        for l in &levels {
            let g: Vec<f64> = cells
                .iter()
                .filter(|c| c["settings"]["level"].as_f64() == Some(*l))
                .filter_map(|c| metric(c, &format!("stop_{r}_gap")))
                .collect();
            row.push(format!("{:.2}", mean(&g)));
        }
        rows.push(row);
        summary.insert(
            r,
            json!({"mean_gap": mean(&gaps), "max_gap": max, "mean_steps": mean(&steps),
                   "mean_seconds": mean(&secs), "cells": gaps.len()}),
        );
    }
    let fixed_secs: Vec<f64> = cells.iter().filter_map(|c| metric(c, "seconds")).collect();
    let goal = summary.get("auto").map(|a| {
        let (mg, xg, ms) = (
            a["mean_gap"].as_f64().unwrap_or(f64::NAN),
            a["max_gap"].as_f64().unwrap_or(f64::NAN),
            a["mean_steps"].as_f64().unwrap_or(f64::NAN),
        );
        (mg <= 0.5, xg <= 1.5, ms < 1500.0, mg, xg, ms)
    });
    let mut md = format!(
        "{} fits ({} images × {} noise levels × seeds), each run for the fixed budget of {budget} \
         steps with every rule watching; the gap is the run's best PSNR (raw or averaged output, \
         over all steps, which needs the clean image) minus the PSNR of the rule's result. A fit \
         of the whole budget took {:.1} s on average.\n\n",
        cells.len(),
        cells
            .iter()
            .filter_map(|c| c["settings"]["image"].as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        levels.len(),
        mean(&fixed_secs)
    );
    md.push_str(&dip::report::page::markdown_table(&header, &rows));
    if let Some((a, b, c, mg, xg, ms)) = goal {
        let yes = |x: bool| if x { "yes" } else { "**no**" };
        md.push_str(&format!(
            "\nGoal for `auto`: mean gap ≤ 0.5 dB: {} ({mg:.2}); every gap ≤ 1.5 dB: {} (worst \
             {xg:.2}); under half of 3000 steps on average: {} ({ms:.0}).\n",
            yes(a),
            yes(b),
            yes(c)
        ));
    }
    write_text(&dir.join("stopping.md"), &md)?;
    write_json(
        &dir.join("stopping.json"),
        &json!({"budget": budget, "cells": cells.len(), "rules": summary}),
    )?;
    print!("{md}");
    Ok(())
}

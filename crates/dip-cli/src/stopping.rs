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
use dip::sweep::{CellRecord, Store};
use serde_json::json;

use dip::report::page::Series;

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
    #[arg(long, value_name = "DIR", required_unless_present = "summarise_only")]
    data: Option<PathBuf>,

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

    /// Fit this many cells at once (see `dip sweep run --jobs`).
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    jobs: usize,

    /// Fit nothing: only summarise the finished cells of the folder (e.g. after the shards of
    /// a Slurm array are done, or over cells copied together from several runs).
    #[arg(long)]
    summarise_only: bool,
}

pub fn run(a: Args, g: &Global) -> Result<Outcome> {
    if a.summarise_only {
        summarise(&a.output, a.iters)?;
        return Ok(Outcome::Done);
    }
    let data = a.data.clone().unwrap_or_default();
    if a.seeds == 0 || a.iters == 0 || a.sigmas.is_empty() {
        bail!("--seeds, --iters and --sigmas need at least one value");
    }
    if let Some(s) = a.sigmas.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        bail!("--sigmas: {s} is not a positive noise level");
    }
    for sub in ["cset9", "set12"] {
        let p = data.join(sub);
        if !p.is_dir() {
            bail!(
                "{}: no such folder (--data must hold cset9/ and set12/)",
                p.display()
            );
        }
    }
    std::fs::create_dir_all(&a.output)
        .with_context(|| format!("{}: cannot create the folder", a.output.display()))?;
    let data = std::path::absolute(&data).unwrap_or(data.clone());
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
            jobs: a.jobs,
            no_batch: false,
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
    let store = Store::new(dir);
    let scan = store.scan()?;
    if let Some((name, why)) = scan.unreadable.first() {
        bail!("{}: {why}", store.cells_dir().join(name).display());
    }
    let cells = scan.records;
    if cells.is_empty() {
        bail!(
            "{}: no finished cell to summarise",
            store.cells_dir().display()
        );
    }
    let metric = |c: &CellRecord, k: &str| c.metric(k);
    let mut levels: Vec<f64> = cells.iter().map(|c| c.settings.level).collect();
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
                .filter(|c| c.settings.level == *l)
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
        "{} fits ({} images × {} noise levels × seeds), each run for its whole budget ({}) with \
         every rule watching; the gap is the run's best PSNR (raw or averaged output, over all \
         steps, which needs the clean image) minus the PSNR of the rule's result. A whole fit \
         took {:.1} s on average; steps / budget compares with {budget} steps.\n\n",
        cells.len(),
        cells
            .iter()
            .map(|c| c.settings.image.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        levels.len(),
        {
            let mut runs: Vec<u64> = cells
                .iter()
                .filter_map(|c| c.metric("iterations_run"))
                .map(|v| v as u64)
                .collect();
            runs.sort_unstable();
            runs.dedup();
            match (runs.first(), runs.last()) {
                (Some(a), Some(b)) if a != b => format!("{a}–{b} steps"),
                (Some(a), _) => format!("{a} steps"),
                _ => "unknown".into(),
            }
        },
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
    md.push_str(
        "\nCharts: `gaps.svg` (every cell's gap per rule, sorted) and `curve.svg` (the PSNR \
         of the result over the steps of the cell with the median auto gap, with each rule's \
         chosen step).\n",
    );
    write_text(&dir.join("stopping.md"), &md)?;
    write_text(&dir.join("gaps.svg"), &gaps_chart(&cells)?)?;
    if let Some(svg) = curve_chart(&cells)? {
        write_text(&dir.join("curve.svg"), &svg)?;
    }
    write_json(
        &dir.join("stopping.json"),
        &json!({"budget": budget, "cells": cells.len(), "rules": summary}),
    )?;
    print!("{md}");
    Ok(())
}

/// Every cell's gap for each rule, sorted: the further right a rule's curve stays low, the more
/// often it lands near the oracle.
fn gaps_chart(cells: &[CellRecord]) -> Result<String> {
    let series: Vec<Series> = RULES
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let mut g: Vec<f64> = cells
                .iter()
                .filter_map(|c| c.metric(&format!("stop_{r}_gap")))
                .collect();
            if g.is_empty() {
                return None;
            }
            g.sort_by(f64::total_cmp);
            Some(Series {
                name: r.to_string(),
                points: g
                    .iter()
                    .enumerate()
                    .map(|(k, v)| (k as f64 + 1.0, *v))
                    .collect(),
                color: i,
                dashed: false,
            })
        })
        .collect();
    Ok(dip::report::page::line_chart(
        "Gap to the oracle, every cell, sorted",
        "cell (sorted by gap)",
        "gap (dB)",
        &series,
        false,
    )?)
}

/// The result's PSNR over the steps of the cell whose `auto` gap is the median, with each
/// rule's chosen step as a vertical line.
fn curve_chart(cells: &[CellRecord]) -> Result<Option<String>> {
    let mut with: Vec<(&CellRecord, f64)> = cells
        .iter()
        .filter_map(|c| Some((c, c.metric("stop_auto_gap")?)))
        .filter(|(c, _)| c.info["history"].as_array().is_some_and(|h| !h.is_empty()))
        .collect();
    if with.is_empty() {
        return Ok(None);
    }
    with.sort_by(|a, b| a.1.total_cmp(&b.1));
    let cell = with[with.len() / 2].0;
    let hist: Vec<(f64, Option<f64>, Option<f64>)> = cell.info["history"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| Some((h[0].as_f64()?, h[1].as_f64(), h[2].as_f64())))
        .collect();
    let raw: Vec<(f64, f64)> = hist.iter().filter_map(|h| Some((h.0, h.1?))).collect();
    let ema: Vec<(f64, f64)> = hist.iter().filter_map(|h| Some((h.0, h.2?))).collect();
    let ys = raw.iter().chain(&ema).map(|p| p.1);
    let lo = ys.clone().fold(f64::INFINITY, f64::min);
    let hi = ys.fold(f64::NEG_INFINITY, f64::max);
    let mut series = vec![
        Series {
            name: "raw output".into(),
            points: raw,
            color: 7,
            dashed: true,
        },
        Series {
            name: "result (moving average)".into(),
            points: ema,
            color: 7,
            dashed: false,
        },
    ];
    for (i, r) in RULES.iter().enumerate() {
        if let Some(step) = cell.metric(&format!("stop_{r}_step")) {
            series.push(Series {
                name: format!("{r}: step {step:.0}"),
                points: vec![(step, lo), (step, hi)],
                color: i,
                dashed: *r != "auto",
            });
        }
    }
    let name = cell.settings.image.rsplit('/').next().unwrap_or("?");
    let level = cell.settings.level;
    Ok(Some(dip::report::page::line_chart(
        &format!("{name}, σ = {level}: PSNR and each rule's step"),
        "step",
        "PSNR (dB)",
        &series,
        false,
    )?))
}

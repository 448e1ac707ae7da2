//! `dip experiment arch-table`: the protocol of the paper's Tables 1–2. Grayscale images shrunk
//! ×4 and ×2 are denoised at σ = 25 and 50 by every architecture from two seeds; each fit
//! records its best PSNR against the clean image, the step of the best, the final PSNR, and the
//! half-time of every radial frequency band.
//!
//! The table is a sweep plan (`DIR/plan.toml`, run by the sweep runner): every fit is a cell
//! with a stable id written to `DIR/cells/<id>.json` when it ends, a re-run skips finished
//! cells, and `--shard I/N` (or a Slurm array) splits the cells between processes that share
//! the folder. The band half-times are the sweep's `bands` metrics. The tables are
//! `DIR/table.md`, `DIR/table.json` and `DIR/index.html`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use dip::report::page::{Block, Page, Series, line_chart, markdown_table};
use dip::sweep::{CellRecord, CellState, Store};
use serde::{Deserialize, Serialize};

use crate::recipe::RecipeArgs;
use crate::sweep::{RunArgs, run_plan};
use crate::{Global, Outcome};

const EXAMPLES: &str = "\
Examples:
  dip experiment arch-table data/bm3d_gray/{Cameraman256,house,peppers256,montage}.png -o arch/
  dip experiment arch-table house.png --factors 4 --sigmas 25 --archs skip,decoder-64 --iters 500 -o arch/
  dip experiment arch-table IMAGES... -o arch/ --shard 0/4   # one of four processes";

#[derive(clap::Args, Debug)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Clean images (converted to grayscale).
    #[arg(required = true)]
    images: Vec<PathBuf>,

    /// Output folder: plan.toml, cells/, the sweep's results.csv and results.md, and the
    /// tables table.md, table.json and index.html. Re-running with the same folder skips the
    /// finished cells.
    #[arg(short, long = "output", value_name = "DIR")]
    output: PathBuf,

    /// Shrink factors (box averaging), comma-separated.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "4,2"
    )]
    factors: Vec<usize>,

    /// Noise levels (0–255 scale), comma-separated.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "25,50"
    )]
    sigmas: Vec<f32>,

    /// Architectures, comma-separated (see --arch of the fitting commands).
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "skip,linear-128,linear-2048,relunet,decoder-64,decoder-128,convgen2"
    )]
    archs: Vec<String>,

    /// Seeds per cell: 0, 1, ….
    #[arg(long, value_name = "N", default_value_t = 2)]
    seeds: u64,

    /// Number of radial frequency bands.
    #[arg(long, value_name = "B", default_value_t = 8)]
    bands: usize,

    /// Run only cells I, I+N, I+2N, … (0-based) of the full list. Without it, Slurm's
    /// SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT are used when set.
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,

    /// Fit this many cells at once (see `dip sweep run --jobs`).
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    jobs: usize,

    /// Only merge the finished cells into the tables; fit nothing.
    #[arg(long)]
    merge_only: bool,

    #[command(flatten)]
    recipe: RecipeArgs,
}

/// Steps of each fit unless --iters says otherwise.
const ITERS: usize = 1500;

/// One finished fit, as the table reads it from the sweep's cell record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cell {
    pub name: String,
    /// The sweep cell id: `cells/<id>.json` holds the full record.
    pub id: String,
    pub image: String,
    pub factor: usize,
    pub sigma: f32,
    pub arch: String,
    pub seed: u64,
    pub size: (usize, usize),
    pub parameters: usize,
    pub iterations: usize,
    pub psnr_noisy: f64,
    pub psnr_best: f64,
    pub iter_best: usize,
    pub psnr_final: f64,
    /// Steps for each band's fit to the observation to reach one half (`null`: never).
    pub t_half: Vec<Option<f64>>,
    pub seconds: f64,
}

/// The settings of every cell as `--set` overrides, from the recipe options.
fn overrides(r: &RecipeArgs) -> Result<Vec<String>> {
    if r.config.is_some() {
        bail!("arch-table: --config is not supported; give the settings with --set KEY=VALUE");
    }
    if r.arch.is_some() || r.seed.is_some() {
        bail!("arch-table: use --archs and --seeds, not --arch and --seed");
    }
    let mut set = r.set.clone();
    let given = |key: &str| r.set.iter().any(|s| s.trim_start().starts_with(key));
    let iters = r.iters.unwrap_or(ITERS);
    if r.iters.is_some() || !given("fit.iters") {
        set.push(format!("fit.iters={iters}"));
    }
    if let Some(v) = r.lr {
        set.push(format!("fit.lr={v:?}"));
    }
    if let Some(v) = r.reg_noise {
        set.push(format!("fit.reg_noise={v:?}"));
    }
    // The paper's protocol has no output averaging: the best and final PSNR are of raw outputs.
    match r.ema {
        Some(v) => set.push(format!("fit.ema={v:?}")),
        None if !given("fit.ema") => set.push("fit.ema=0.0".into()),
        None => {}
    }
    if let Some(v) = r.loss {
        set.push(format!("fit.loss={}", format!("{v:?}").to_lowercase()));
    }
    if let Some(v) = r.input {
        set.push(format!("fit.input={}", format!("{v:?}").to_lowercase()));
    }
    if let Some(v) = r.width {
        set.push(format!("net.width={v}"));
    }
    Ok(set)
}

/// A TOML list of strings.
fn toml_list<T: ToString>(items: impl IntoIterator<Item = T>) -> String {
    let v: Vec<String> = items
        .into_iter()
        .map(|x| toml::Value::String(x.to_string()).to_string())
        .collect();
    format!("[{}]", v.join(", "))
}

/// The sweep plan of the table.
fn plan_text(args: &Args) -> Result<String> {
    let images: Vec<String> = args
        .images
        .iter()
        .map(|p| {
            let abs = std::path::absolute(p).unwrap_or_else(|_| p.clone());
            glob::Pattern::escape(&abs.to_string_lossy())
        })
        .collect();
    let set = overrides(&args.recipe)?;
    let mut metrics = vec![
        "psnr_noisy".to_string(),
        "psnr_best".into(),
        "iter_best".into(),
        "psnr_final".into(),
    ];
    metrics.extend((0..args.bands).map(|b| format!("t_half_b{b}")));
    let mut text = format!(
        "title = \"Architectures: denoising and band half-times\"\n\
         images = {}\n\
         gray = true\n\
         downsample = [{}]\n\
         arch = {}\n\
         set = {}\n\
         seeds = {}\n\
         fixed_noise = true\n\
         bands = {}\n\
         metrics = {}\n\
         save_images = false\n",
        toml_list(&images),
        args.factors
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        toml_list(&args.archs),
        toml_list(&set),
        args.seeds,
        args.bands,
        toml_list(&metrics),
    );
    if let Some(p) = &args.recipe.preset {
        text.push_str(&format!("preset = {}\n", toml::Value::String(p.clone())));
    }
    text.push_str(&format!(
        "\n[[degradations]]\ntask = \"denoise\"\nlevels = [{}]\n",
        args.sigmas
            .iter()
            .map(|s| format!("{:?}", *s as f64))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(text)
}

pub fn run(args: Args, g: &Global) -> Result<Outcome> {
    if args.bands == 0 || args.seeds == 0 {
        bail!("--bands and --seeds must be at least 1");
    }
    if args.factors.contains(&0) {
        bail!("--factors must be at least 1");
    }
    let dir = &args.output;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("{}: cannot create the folder", dir.display()))?;
    crate::output::check_folder_writable(dir, dir)?;
    let plan_path = dir.join("plan.toml");
    crate::output::write_text(&plan_path, &plan_text(&args)?)?;
    let mut outcome = Outcome::Done;
    if !args.merge_only {
        outcome = run_plan(
            RunArgs {
                plan: plan_path.clone(),
                output: dir.clone(),
                shard: args.shard.clone(),
                list: false,
                max_memory: args.recipe.max_memory,
                jobs: args.jobs,
                no_batch: false,
            },
            g,
        )?;
    }
    // The table: every finished cell of the plan, from the sweep's records.
    let plan = dip::sweep::Plan::load(&plan_path)?;
    let all = plan.expand(&plan_path)?;
    let store = Store::new(dir);
    let mut cells = Vec::new();
    for c in &all {
        if let CellState::Done(r) = store.read(c) {
            cells.push(to_cell(&r, args.bands));
        }
    }
    let total = all.len();
    let missing = total - cells.len();
    write_results(dir, &args, &cells, missing)?;
    println!(
        "arch-table: {} of {total} cells finished; tables in {}",
        cells.len(),
        dir.join("table.md").display()
    );
    Ok(outcome)
}

/// A sweep record as a row of the table.
fn to_cell(r: &CellRecord, bands: usize) -> Cell {
    let s = &r.settings;
    let m = |k: &str| r.metric(k).unwrap_or(f64::NAN);
    let image = Path::new(&s.image)
        .file_stem()
        .map(|x| x.to_string_lossy().into_owned())
        .unwrap_or_default();
    let factor = s.downsample.unwrap_or(1);
    let size = r.info["size"]
        .as_array()
        .map(|v| {
            let at = |i: usize| v.get(i).and_then(|x| x.as_u64()).unwrap_or(0) as usize;
            (at(0), at(1))
        })
        .unwrap_or_default();
    Cell {
        name: format!("{image}_x{factor}_s{}_{}_seed{}", s.level, s.arch, s.seed),
        id: r.id.clone(),
        image,
        factor,
        sigma: s.level as f32,
        arch: s.arch.clone(),
        seed: s.seed,
        size,
        parameters: m("parameters") as usize,
        iterations: m("iterations_run") as usize,
        psnr_noisy: m("psnr_noisy"),
        psnr_best: m("psnr_best"),
        iter_best: m("iter_best") as usize,
        psnr_final: m("psnr_final"),
        t_half: (0..bands)
            .map(|b| r.metric(&format!("t_half_b{b}")))
            .collect(),
        seconds: m("seconds"),
    }
}

/// Mean and sample standard deviation.
fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let s = if v.len() > 1 {
        (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        f64::NAN
    };
    (m, s)
}

fn pm(v: &[f64], digits: usize) -> String {
    if v.is_empty() {
        return "–".into();
    }
    let (m, s) = mean_std(v);
    if s.is_finite() {
        format!("{m:.digits$} ± {s:.digits$}")
    } else {
        format!("{m:.digits$}")
    }
}

/// One row of the summary: a factor, a level and an architecture over images and seeds.
#[derive(Debug, Clone, Serialize)]
struct Group {
    factor: usize,
    sigma: f32,
    arch: String,
    cells: usize,
    psnr_noisy: f64,
    psnr_best: f64,
    psnr_best_std: f64,
    iter_best: f64,
    psnr_final: f64,
    /// Mean over cells of each band's t½, over the cells where the band reached one half.
    t_half: Vec<Option<f64>>,
    /// Cells where the band never reached one half.
    t_half_missing: Vec<usize>,
}

fn groups(cells: &[Cell], bands: usize) -> Vec<Group> {
    let mut keys: Vec<(usize, String, String)> = Vec::new();
    for c in cells {
        let k = (c.factor, format!("{}", c.sigma), c.arch.clone());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys.iter()
        .map(|(f, s, a)| {
            let cs: Vec<&Cell> = cells
                .iter()
                .filter(|c| c.factor == *f && format!("{}", c.sigma) == *s && c.arch == *a)
                .collect();
            let col = |get: &dyn Fn(&Cell) -> f64| cs.iter().map(|c| get(c)).collect::<Vec<_>>();
            let best = col(&|c| c.psnr_best);
            let (bm, bs) = mean_std(&best);
            let t_half = (0..bands)
                .map(|b| {
                    let v: Vec<f64> = cs
                        .iter()
                        .filter_map(|c| c.t_half.get(b).copied().flatten())
                        .collect();
                    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
                })
                .collect();
            let t_half_missing = (0..bands)
                .map(|b| {
                    cs.iter()
                        .filter(|c| c.t_half.get(b).copied().flatten().is_none())
                        .count()
                })
                .collect();
            Group {
                factor: *f,
                sigma: cs[0].sigma,
                arch: a.clone(),
                cells: cs.len(),
                psnr_noisy: mean_std(&col(&|c| c.psnr_noisy)).0,
                psnr_best: bm,
                psnr_best_std: bs,
                iter_best: mean_std(&col(&|c| c.iter_best as f64)).0,
                psnr_final: mean_std(&col(&|c| c.psnr_final)).0,
                t_half,
                t_half_missing,
            }
        })
        .collect()
}

fn write_results(dir: &Path, args: &Args, cells: &[Cell], missing: usize) -> Result<()> {
    let bands = args.bands;
    let gs = groups(cells, bands);
    let mut header: Vec<String> = [
        "×",
        "σ",
        "architecture",
        "cells",
        "noisy",
        "best PSNR",
        "best step",
        "final PSNR",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    header.extend((0..bands).map(|b| format!("t½ b{b}")));
    let rows: Vec<Vec<String>> = gs
        .iter()
        .map(|g| {
            let of = |f: &dyn Fn(&Cell) -> f64| {
                cells
                    .iter()
                    .filter(|c| c.factor == g.factor && c.sigma == g.sigma && c.arch == g.arch)
                    .map(f)
                    .collect::<Vec<f64>>()
            };
            let mut r = vec![
                g.factor.to_string(),
                g.sigma.to_string(),
                g.arch.clone(),
                g.cells.to_string(),
                format!("{:.2}", g.psnr_noisy),
                pm(&of(&|c| c.psnr_best), 2),
                format!("{:.0}", g.iter_best),
                pm(&of(&|c| c.psnr_final), 2),
            ];
            r.extend(
                g.t_half
                    .iter()
                    .zip(&g.t_half_missing)
                    .map(|(t, &m)| match (t, m) {
                        (Some(t), 0) => format!("{t:.0}"),
                        (Some(t), m) => format!("{t:.0} ({m}✗)"),
                        (None, _) => "–".into(),
                    }),
            );
            r
        })
        .collect();
    let md = format!(
        "# Architectures: denoising and band half-times\n\n{} cells finished, {missing} \
         missing. PSNR in dB against the clean image, mean ± std over images and seeds; \
         best = the best raw output seen (every 10 steps), final = the last. t½ b: steps for \
         band b (low → high) of the output to fit half of the observation's band energy, \
         mean over the cells that got there ((n✗): cells that never did).\n\n{}",
        cells.len(),
        markdown_table(&header, &rows)
    );
    crate::output::write_text(&dir.join("table.md"), &md)?;
    crate::output::write_json(
        &dir.join("table.json"),
        &serde_json::json!({ "groups": gs, "cells": cells, "missing": missing }),
    )?;
    let mut page = Page::new("Architectures: denoising and band half-times");
    page.push(Block::Text(format!(
        "The protocol of the paper's Tables 1–2 on {} image(s): {} cells finished, {missing} \
         missing. Convolutional generators should denoise better than DIP-Linear and the \
         coordinate MLP, and fit low bands first.",
        args.images.len(),
        cells.len()
    )));
    page.push(Block::Table {
        header,
        rows: rows.clone(),
    });
    let mut keys: Vec<(usize, f32)> = gs.iter().map(|g| (g.factor, g.sigma)).collect();
    keys.dedup();
    for (f, s) in keys {
        let series: Vec<Series> = gs
            .iter()
            .filter(|g| g.factor == f && g.sigma == s)
            .enumerate()
            .map(|(i, g)| Series {
                name: g.arch.clone(),
                points: g
                    .t_half
                    .iter()
                    .enumerate()
                    .filter_map(|(b, t)| t.map(|t| (b as f64, t)))
                    .collect(),
                color: i,
                dashed: false,
            })
            .collect();
        if series.iter().any(|s| !s.points.is_empty()) {
            page.push(Block::Svg(line_chart(
                &format!("×{f}, σ = {s}: t½ per band"),
                "band (low → high)",
                "t½ (steps)",
                &series,
                true,
            )?));
        }
    }
    page.write(&dir.join("index.html"))?;
    Ok(())
}

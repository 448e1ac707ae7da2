//! `dip experiment arch-table`: the protocol of the paper's Tables 1–2. Grayscale images shrunk
//! ×4 and ×2 are denoised at σ = 25 and 50 by every architecture from two seeds; each fit
//! records its best PSNR against the clean image, the step of the best, the final PSNR, and the
//! half-time of every radial frequency band.
//!
//! Every fit is a cell with a stable name, written to `DIR/cells/<name>.json` when it ends; a
//! re-run reads finished cells back instead of fitting them again, and `--shard I/N` splits the
//! cells between processes (or Slurm array tasks) that share the folder.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use dip::fit::{Control, FitConfig, Observer, StepInfo};
use dip::image::{self, Image};
use dip::noise::add_gaussian_noise;
use dip::operators::Identity;
use dip::report::page::{Block, Page, Series, line_chart, markdown_table};
use dip::spectral::analysis::{BandTracker, band_half_times};
use dip::spectral::{BandSpacing, bands::Bands};
use serde::{Deserialize, Serialize};

use crate::recipe::RecipeArgs;
use crate::task::{fit_with_progress, load_image};
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

    /// Output folder: cells/, results.json, results.md, index.html. Re-running with the same
    /// folder skips the finished cells.
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

    /// Measure the bands every K steps.
    #[arg(long, value_name = "K", default_value_t = 10)]
    every: usize,

    /// Number of radial frequency bands.
    #[arg(long, value_name = "B", default_value_t = 8)]
    bands: usize,

    /// Run only cells I, I+N, I+2N, … (0-based) of the full list. Without it, Slurm's
    /// SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT are used when set.
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,

    /// Only merge the finished cells into the tables; fit nothing.
    #[arg(long)]
    merge_only: bool,

    #[command(flatten)]
    recipe: RecipeArgs,
}

/// Steps of each fit unless --iters says otherwise.
const ITERS: usize = 1500;

/// One finished fit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cell {
    pub name: String,
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

/// What a cell needs before fitting.
struct Plan {
    name: String,
    image: usize,
    factor: usize,
    sigma: f32,
    arch: String,
    seed: u64,
}

fn parse_shard(arg: Option<&str>) -> Result<(usize, usize)> {
    let text = match arg {
        Some(t) => t.to_string(),
        None => match (
            std::env::var("SLURM_ARRAY_TASK_ID"),
            std::env::var("SLURM_ARRAY_TASK_COUNT"),
        ) {
            (Ok(i), Ok(n)) => format!("{i}/{n}"),
            _ => return Ok((0, 1)),
        },
    };
    let parsed = text
        .split_once('/')
        .and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
    match parsed {
        Some((i, n)) if n > 0 && i < n => Ok((i, n)),
        _ => bail!("--shard {text}: expected I/N with 0 <= I < N, e.g. 0/4"),
    }
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into())
}

/// Measures the band fits every `every` steps.
struct BandObserver {
    tracker: BandTracker,
    records: Vec<(usize, Vec<f64>)>,
    error: Option<dip::Error>,
}

impl Observer for BandObserver {
    fn observe(&mut self, info: &StepInfo<'_>) -> Control {
        match self.tracker.observe(info.output) {
            Ok(f) => self.records.push((info.iter, f.fit)),
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
        Control::Continue
    }
}

pub fn run(args: Args, g: &Global) -> Result<Outcome> {
    if args.every == 0 || args.bands == 0 || args.seeds == 0 {
        bail!("--every, --bands and --seeds must be at least 1");
    }
    if args.factors.contains(&0) {
        bail!("--factors must be at least 1");
    }
    let (shard, shards) = parse_shard(args.shard.as_deref())?;
    let dir = &args.output;
    let cells_dir = dir.join("cells");
    std::fs::create_dir_all(&cells_dir)
        .with_context(|| format!("{}: cannot create the folder", dir.display()))?;
    crate::output::check_folder_writable(dir, dir)?;

    // The clean images at each factor, in grayscale.
    let mut sources = Vec::new();
    for p in &args.images {
        let img = load_image(p, g)?;
        let gray = if img.channels == 3 {
            Image::new(img.width, img.height, 1, dip::metrics::rgb_to_y(&img))
        } else {
            img
        };
        sources.push((stem(p), gray));
    }
    let mut plans = Vec::new();
    for (ii, (name, _)) in sources.iter().enumerate() {
        for &factor in &args.factors {
            for &sigma in &args.sigmas {
                for arch in &args.archs {
                    for seed in 0..args.seeds {
                        plans.push(Plan {
                            name: format!("{name}_x{factor}_s{sigma}_{arch}_seed{seed}"),
                            image: ii,
                            factor,
                            sigma,
                            arch: arch.clone(),
                            seed,
                        });
                    }
                }
            }
        }
    }
    let mut outcome = Outcome::Done;
    let total = plans.len();
    for (k, plan) in plans.iter().enumerate() {
        if k % shards != shard || args.merge_only {
            continue;
        }
        let file = cells_dir.join(format!("{}.json", plan.name));
        if read_cell(&file).is_some() {
            continue;
        }
        if !g.quiet {
            eprintln!("arch-table: cell {} of {total}: {}", k + 1, plan.name);
        }
        match fit_cell(plan, &sources[plan.image].1, &args, g)? {
            Some(cell) => crate::output::write_json(&file, &serde_json::to_value(&cell)?)?,
            None => {
                outcome = Outcome::Interrupted;
                break;
            }
        }
    }
    let cells: Vec<Cell> = plans
        .iter()
        .filter_map(|p| read_cell(&cells_dir.join(format!("{}.json", p.name))))
        .collect();
    let missing = total - cells.len();
    write_results(dir, &args, &cells, missing)?;
    println!(
        "arch-table: {} of {total} cells finished; tables in {}",
        cells.len(),
        dir.join("results.md").display()
    );
    Ok(outcome)
}

fn read_cell(path: &Path) -> Option<Cell> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// Fits one cell; `None` when interrupted.
fn fit_cell(plan: &Plan, source: &Image, args: &Args, g: &Global) -> Result<Option<Cell>> {
    let clean = image::downsample_box(source, plan.factor)?;
    // The noise depends on the image, factor and level only: every architecture and seed sees
    // the same noisy image.
    let noise_seed = plan.name.split("_").take(3).fold(0xA5C3u64, |h, part| {
        part.bytes()
            .fold(h, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01B3))
    });
    let noisy = add_gaussian_noise(&clean, plan.sigma, noise_seed);
    let mut ra = args.recipe.clone();
    ra.arch = Some(plan.arch.clone());
    ra.seed = Some(plan.seed);
    if ra.iters.is_none() && !ra.set.iter().any(|s| s.starts_with("fit.iters")) {
        ra.iters = Some(ITERS);
    }
    // The paper's protocol has no output averaging: the best and final PSNR are of raw outputs.
    if ra.ema.is_none() {
        ra.ema = Some(0.0);
    }
    let recipe = ra.resolve("denoise")?;
    let spec = recipe.arch(1)?;
    let cfg = FitConfig {
        observe_every: args.every,
        max_memory: ra.max_memory()?,
        cancel: Some(g.cancel.clone()),
        ..recipe.fit_config()?
    };
    let bands = Arc::new(Bands::new(
        clean.width,
        clean.height,
        args.bands,
        BandSpacing::Linear,
    )?);
    let mut obs = BandObserver {
        tracker: BandTracker::new(bands, &noisy, Some(&clean))?,
        records: Vec::new(),
        error: None,
    };
    let op = Identity::new(noisy.width, noisy.height, 1);
    let report = fit_with_progress(&noisy, &op, Some(&clean), &spec, &cfg, g, &mut [&mut obs])?;
    if let Some(e) = obs.error {
        return Err(e.into());
    }
    if report.interrupted {
        return Ok(None);
    }
    let (psnr_best, iter_best) = report.psnr_best.zip(report.iter_best).unwrap_or_default();
    Ok(Some(Cell {
        name: plan.name.clone(),
        image: plan.name.split('_').next().unwrap_or_default().to_string(),
        factor: plan.factor,
        sigma: plan.sigma,
        arch: spec.label(),
        seed: plan.seed,
        size: (clean.width, clean.height),
        parameters: report.parameters,
        iterations: report.iterations_run,
        psnr_noisy: report.psnr_noisy.unwrap_or(f64::NAN),
        psnr_best,
        iter_best,
        psnr_final: report.psnr_final.unwrap_or(f64::NAN),
        t_half: band_half_times(&obs.records),
        seconds: report.seconds,
    }))
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
         best = the best raw output seen (every {} steps), final = the last. t½ b: steps for \
         band b (low → high) of the output to fit half of the observation's band energy, \
         mean over the cells that got there ((n✗): cells that never did).\n\n{}",
        cells.len(),
        args.every,
        markdown_table(&header, &rows)
    );
    crate::output::write_text(&dir.join("results.md"), &md)?;
    crate::output::write_json(
        &dir.join("results.json"),
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

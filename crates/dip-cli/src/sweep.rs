//! `dip sweep`: many independent fits from one plan file, resumable and shardable.
//!
//! - `run PLAN -o DIR [--shard I/N]`: fits the cells of the plan (or of one shard of it) that are
//!   not finished yet, each written to `DIR/cells/<id>.json` when it ends;
//! - `merge DIR`: `results.csv` and `results.md`, mean ± std over seeds per group;
//! - `slurm PLAN -o DIR`: prints an `sbatch` array script whose tasks run the shards.
//!
//! A cell: load the image (gray, shrunk, cropped as the plan says), degrade it with a seed taken
//! from the cell's settings, build the recipe (preset, architecture, overrides, seed), fit, and
//! measure. Nothing depends on which process or shard runs a cell. The plan format, ids, shards
//! and the store are in [`dip::sweep`]; `docs/SWEEPS.md` has the user's view.

use std::collections::{BTreeMap, HashSet};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use dip::fit::{
    BandRecorder, Control, Observer, StepInfo, StopConfig, StopKind, StopRule, make_rule,
};
use dip::image::{self, Image};
use dip::metrics::{psnr, rgb_to_y, ssim};
use dip::operators::Psf;
use dip::recipe::Recipe;
use dip::spectral::{BandSpacing, bands::Bands};
use dip::sweep::{
    Cell, CellRecord, CellSettings, CellState, Manifest, Plan, Shard, Store, Task, merge,
};
use dip::task::{Degradation, MaskKind, Noise, NoiseModel, Problem, RunContext, Seeds, restore};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::output::write_text;
use crate::recipe::RecipeArgs;
use crate::{Global, Outcome};

/// The fit reports to its bar, and measures its best PSNR, every this many steps.
const OBSERVE_EVERY: usize = 10;

/// `dip sweep slurm` makes at most this many array tasks unless told otherwise (Slurm's default
/// MaxArraySize is 1001).
const MAX_ARRAY_TASKS: usize = 1000;

#[derive(clap::Subcommand, Debug)]
pub enum Which {
    /// Fit the cells of a plan that are not finished yet (all of them, or one shard).
    Run(RunArgs),
    /// Merge the finished cells of a folder into results.csv and results.md.
    Merge(MergeArgs),
    /// Print an sbatch script: a Slurm job array whose tasks run the shards of a plan.
    Slurm(SlurmArgs),
}

const RUN_EXAMPLES: &str = "\
Examples:
  dip sweep run plan.toml -o results/
  dip sweep run plan.toml -o results/ --shard 0/4      # one of four processes
  dip sweep run plan.toml -o results/ --list           # the cells and which are finished
  dip sweep merge results/";

#[derive(clap::Args, Debug)]
#[command(after_help = RUN_EXAMPLES)]
pub struct RunArgs {
    /// The plan (TOML; see docs/SWEEPS.md). Image patterns are relative to its folder.
    pub plan: PathBuf,

    /// Output folder, shared by every shard: sweep.json, cells/, images/. Running again with
    /// the same folder skips the finished cells.
    #[arg(short, long = "output", value_name = "DIR")]
    pub output: PathBuf,

    /// Run only the cells I, I+N, I+2N, … (0-based) of the plan. Without it, Slurm's
    /// SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT give the shard when they are set.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,

    /// List the cells of the shard with their state; fit nothing.
    #[arg(long)]
    pub list: bool,

    /// Refuse networks estimated to need more memory than this, in GiB
    /// [default: the memory available now].
    #[arg(long, value_name = "GIB")]
    pub max_memory: Option<f64>,

    /// Fit this many cells at once, sharing the worker threads (--threads) or the GPU. On a GPU
    /// the K fits are lanes of one batch: each step of all of them is one launch sequence
    /// (cells of another network or step recipe than the batch's run on a network of their
    /// own). Small images use more of a machine this way; --max-memory is shared among them.
    /// Every cell's result is the same as with one at a time (on a GPU, up to the summation
    /// order cuBLAS picks for K lanes).
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub jobs: usize,

    /// On a GPU, give each of the --jobs fits a network (and a stream) of its own instead of a
    /// lane of one batch.
    #[arg(long)]
    pub no_batch: bool,
}

#[derive(clap::Args, Debug)]
pub struct MergeArgs {
    /// The output folder of `dip sweep run`.
    dir: PathBuf,
}

const SLURM_EXAMPLES: &str = "\
Examples:
  dip sweep slurm plan.toml -o results/ > sweep.sbatch && sbatch sweep.sbatch
  dip sweep slurm plan.toml -o results/ --shards 16 --partition cpu --time 04:00:00 --cpus 8
  dip sweep slurm plan.toml -o results/ --sbatch=--account=proj42 --max-running 20";

#[derive(clap::Args, Debug)]
#[command(after_help = SLURM_EXAMPLES)]
pub struct SlurmArgs {
    /// The plan.
    plan: PathBuf,

    /// Output folder of the sweep.
    #[arg(short, long = "output", value_name = "DIR")]
    output: PathBuf,

    /// Array tasks, one shard each [default: one per cell, at most 1000].
    #[arg(long, value_name = "N")]
    shards: Option<usize>,

    /// #SBATCH --partition.
    #[arg(long, value_name = "P")]
    partition: Option<String>,

    /// #SBATCH --time, e.g. 04:00:00 (a task that runs out of time loses only its cell in
    /// progress).
    #[arg(long, value_name = "T")]
    time: Option<String>,

    /// #SBATCH --gpus (the fits run on CPUs; for clusters whose partitions ask for it).
    #[arg(long, value_name = "G")]
    gpus: Option<String>,

    /// #SBATCH --cpus-per-task; each task then runs that many threads.
    #[arg(long, value_name = "C")]
    cpus: Option<usize>,

    /// #SBATCH --mem, e.g. 8G.
    #[arg(long, value_name = "M")]
    mem: Option<String>,

    /// Run at most K tasks at once (--array=0-N%K).
    #[arg(long, value_name = "K")]
    max_running: Option<usize>,

    /// #SBATCH --job-name [default: dip-<plan name>].
    #[arg(long, value_name = "NAME")]
    job_name: Option<String>,

    /// Another #SBATCH line, e.g. --sbatch=--account=proj42 (repeatable).
    #[arg(long = "sbatch", value_name = "OPTION", allow_hyphen_values = true)]
    sbatch: Vec<String>,

    /// The dip binary the tasks run [default: this one].
    #[arg(long, value_name = "PATH")]
    bin: Option<PathBuf>,

    /// Each task fits this many cells at once (passed to `sweep run --jobs`). The device comes
    /// from the global `--device` (e.g. `dip --device cuda sweep slurm …`): each task runs on it.
    #[arg(long, value_name = "K", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    jobs: Option<usize>,
}

pub fn run(which: Which, g: &Global) -> Result<Outcome> {
    match which {
        Which::Run(a) => run_plan(a, g),
        Which::Merge(a) => merge_dir(&a.dir, g).map(|()| Outcome::Done),
        Which::Slurm(a) => slurm(a, g).map(|()| Outcome::Done),
    }
}

/// The preset of a cell: the plan's, else the one its task's command uses.
fn preset_of(s: &CellSettings) -> String {
    if let Some(p) = &s.preset {
        return p.clone();
    }
    match s.task {
        Task::Denoise => "denoise",
        Task::Inpaint => "inpaint-random",
        Task::Sr if s.level >= 8.0 => "sr8",
        Task::Sr => "sr4",
        Task::Deblur => "deblur",
    }
    .to_string()
}

/// The recipe of a cell: its preset, then the architecture (with the fit settings it brings),
/// then the overrides, then its seed.
fn recipe_of(s: &CellSettings) -> Result<(String, Recipe)> {
    let preset = preset_of(s);
    let args = RecipeArgs {
        preset: Some(preset.clone()),
        arch: Some(s.arch.clone()),
        set: s.set.clone(),
        seed: Some(s.seed),
        ..RecipeArgs::default()
    };
    let recipe = args.resolve(&preset)?;
    Ok((preset, recipe))
}

/// The plan's title: its own, else the plan file's name.
fn title_of(plan: &Plan, path: &Path) -> String {
    plan.title.clone().unwrap_or_else(|| {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "sweep".into())
    })
}

/// Loads and expands a plan, and checks the settings of every cell before anything runs.
fn load_plan(path: &Path) -> Result<(Plan, Vec<Cell>)> {
    let plan = Plan::load(path)?;
    let cells = plan.expand(path)?;
    let mut checked = HashSet::new();
    for c in &cells {
        let s = &c.settings;
        if !checked.insert((preset_of(s), s.arch.clone(), s.set.clone())) {
            continue;
        }
        let check = || -> Result<()> {
            let (_, recipe) = recipe_of(s)?;
            recipe.fit_config()?;
            recipe.arch(if s.gray { 1 } else { 3 })?;
            Ok(())
        };
        check().with_context(|| {
            format!(
                "{}: the cells with preset {}, arch {}{}",
                path.display(),
                preset_of(s),
                s.arch,
                if s.set.is_empty() {
                    String::new()
                } else {
                    format!(" and set [{}]", s.set.join(", "))
                }
            )
        })?;
    }
    Ok((plan, cells))
}

/// A cell's description without the overrides every cell of the plan has.
fn short_label(s: &CellSettings, common: &[String]) -> String {
    let mut t = s.clone();
    t.set.retain(|kv| !common.contains(kv));
    t.label()
}

/// The shard of this process: `--shard`, else Slurm's array variables, else everything.
fn shard_of(arg: Option<&str>) -> Result<Shard> {
    Ok(match arg {
        Some(text) => Shard::parse(text)?,
        None => Shard::from_env()?.unwrap_or(Shard::ALL),
    })
}

/// A clean image as the plan prepares it, kept while consecutive cells use it.
struct ImageCache<'a> {
    plan_dir: PathBuf,
    last: Option<(String, Image)>,
    /// Images whose dropped alpha channel was noted (shared by the jobs: one note each).
    noted_alpha: &'a Mutex<HashSet<String>>,
}

impl ImageCache<'_> {
    fn get(&mut self, s: &CellSettings, g: &Global, log: &Log) -> Result<Image> {
        if let Some((name, img)) = &self.last
            && name == &s.image
        {
            return Ok(img.clone());
        }
        let path = self.plan_dir.join(&s.image);
        let (mut img, info) = image::load(&path)?;
        if info.dropped_alpha
            && !g.quiet
            && self
                .noted_alpha
                .lock()
                .expect("no job panics holding the notes")
                .insert(s.image.clone())
        {
            log.line(&format!(
                "note: {} has an alpha channel; it was dropped",
                path.display()
            ));
        }
        if s.gray && img.channels == 3 {
            img =
                Image::new(img.width, img.height, 1, rgb_to_y(&img)).with_bit_depth(img.bit_depth);
        }
        if let Some(f) = s.downsample.filter(|&f| f > 1) {
            img = image::downsample_box(&img, f).with_context(|| path.display().to_string())?;
        }
        if let Some(c) = s.crop {
            if img.width < c || img.height < c {
                bail!(
                    "{}: the image is {}x{}{}, smaller than crop = {c}",
                    path.display(),
                    img.width,
                    img.height,
                    if s.downsample.is_some_and(|f| f > 1) {
                        " after downsampling"
                    } else {
                        ""
                    }
                );
            }
            img = image::center_crop(&img, c, c);
        }
        self.last = Some((s.image.clone(), img.clone()));
        Ok(img)
    }
}

/// The degradation of a cell, as `dip degrade` would make it.
fn degradation(s: &CellSettings) -> Result<Degradation> {
    Ok(match s.task {
        Task::Denoise => Degradation::Noise(Noise::gaussian(s.level)),
        Task::Inpaint => Degradation::Inpaint {
            mask: MaskKind::Random(s.level),
            noise: Noise::gaussian(s.sigma),
        },
        Task::Sr => Degradation::Downsample {
            factor: s.level as usize,
            crop_to: None,
            noise: Noise::gaussian(s.sigma),
        },
        Task::Deblur => Degradation::Blur {
            psf: Psf::gaussian(s.level, Psf::default_gaussian_size(s.level))?,
            noise: Noise::gaussian(s.sigma),
        },
    })
}

/// The problem of a cell (observation quantised to the image's bit depth, the clean image),
/// from the cell's degradation seed.
fn degrade(clean: &Image, s: &CellSettings) -> Result<Problem> {
    Ok(degradation(s)?.apply(clean, Seeds::from_one(s.degradation_seed()))?)
}

/// Lines for people: above the bars on a terminal, plain lines on stderr otherwise (a Slurm
/// log), nothing with --quiet.
struct Log {
    multi: MultiProgress,
    quiet: bool,
    terminal: bool,
}

impl Log {
    fn line(&self, text: &str) {
        if self.quiet {
            return;
        }
        if self.terminal {
            let _ = self.multi.println(text);
        } else {
            eprintln!("{text}");
        }
    }
}

/// The bar of the current fit.
struct FitBar {
    bar: ProgressBar,
}

impl Observer for FitBar {
    fn observe(&mut self, info: &StepInfo<'_>) -> Control {
        self.bar.set_position(info.iter as u64);
        let mut msg = format!("loss {:.3e}", info.loss);
        if let Some(p) = info.psnr_ema {
            msg.push_str(&format!("  PSNR {p:.2} dB"));
        }
        self.bar.set_message(msg);
        Control::Continue
    }
}

/// A stopping rule that watches a fit without ending it: it records where it would have ended
/// the run, and sees nothing after that (its choice is what that run would have returned).
struct Watch {
    name: String,
    rule: Box<dyn StopRule>,
    asked: Option<usize>,
}

impl Observer for Watch {
    fn observe(&mut self, info: &StepInfo<'_>) -> Control {
        if self.asked.is_none() && self.rule.observe(info) == Control::Stop {
            self.asked = Some(info.iter);
        }
        Control::Continue
    }
}

/// A recorder of `n` band fits, linear in radius, over the observation's size; the observation
/// must have the output's size (not super-resolution).
fn band_recorder(observation: &Image, clean: &Image, n: usize) -> Result<BandRecorder> {
    if (observation.width, observation.height) != (clean.width, clean.height) {
        bail!(
            "bands: band half-times need an observation of the output's size; this task \
             changes the size ({}x{} -> {}x{})",
            clean.width,
            clean.height,
            observation.width,
            observation.height
        );
    }
    let bands = Arc::new(Bands::new(
        observation.width,
        observation.height,
        n,
        BandSpacing::Linear,
    )?);
    Ok(BandRecorder::new(bands, observation, Some(clean))?)
}

/// What the jobs of a run did.
#[derive(Default)]
struct Tally {
    fitted: usize,
    /// Failed cells: "id (message)".
    failed: Vec<String>,
    /// A fit was stopped by Ctrl-C / SIGTERM (the other jobs take no new cell).
    interrupted: bool,
}

/// What happened to one cell.
enum CellOutcome {
    Done(Box<CellRecord>),
    Interrupted,
}

/// What a cell's fit may use: its share of the memory, and the GPU batch its fit joins.
struct FitRoom {
    max_memory: Option<usize>,
    batch: crate::gpu::Batch,
}

/// Degrades, fits and measures one cell.
fn run_cell(
    cell: &Cell,
    images: &mut ImageCache<'_>,
    store: &Store,
    save_images: bool,
    room: &FitRoom,
    log: &Log,
    g: &Global,
) -> Result<CellOutcome> {
    let s = &cell.settings;
    let (preset, mut recipe) = recipe_of(s)?;
    // The fit runs its whole budget; the plan's rules watch it and record their choices.
    recipe.stop.rule = StopKind::Fixed;
    let clean = images.get(s, g, log)?;
    let p = degrade(&clean, s)?;
    let clean = p
        .clean
        .as_ref()
        .expect("a degraded problem holds its clean image");
    let bar = log.multi.add(ProgressBar::new(recipe.fit.iters as u64));
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .expect("the progress template is valid")
            .progress_chars("=> "),
    );
    let mut observer = FitBar { bar: bar.clone() };
    let denoising = s.task == Task::Denoise;
    let mut watches: Vec<Watch> = Vec::new();
    for r in &s.stop_rules {
        let kind: StopKind = r.parse()?;
        // The noise-level rules apply to denoising only; elsewhere their metrics stay empty.
        let stop_cfg = StopConfig {
            noise_free: p.noise == NoiseModel::NoiseFree,
            ..StopConfig::default()
        };
        if let Ok(rule) = make_rule(kind, &stop_cfg, &p.observation, denoising) {
            watches.push(Watch {
                name: r.clone(),
                rule,
                asked: None,
            });
        }
    }
    let mut bands = match s.bands {
        Some(n) => Some(band_recorder(&p.observation, clean, n)?),
        None => None,
    };
    let mut ctx = RunContext {
        device: g.device,
        cancel: Some(g.cancel.clone()),
        max_memory: room.max_memory,
        observe_every: OBSERVE_EVERY,
        ..RunContext::default()
    };
    room.batch.join(&mut ctx);
    ctx.observers.push(&mut observer);
    for w in watches.iter_mut() {
        ctx.observers.push(w);
    }
    if let Some(b) = bands.as_mut() {
        ctx.observers.push(b);
    }
    let restored = restore(&p, &recipe, ctx);
    bar.finish_and_clear();
    log.multi.remove(&bar);
    let restored = restored?;
    let report = &restored.report;
    if report.interrupted {
        return Ok(CellOutcome::Interrupted);
    }
    let spec = &restored.network;
    let half_times = match bands {
        Some(b) => Some(b.half_times()?),
        None => None,
    };
    let same_shape = (
        p.observation.width,
        p.observation.height,
        p.observation.channels,
    ) == (clean.width, clean.height, clean.channels);
    let mut m: BTreeMap<String, Option<f64>> = BTreeMap::new();
    let mut put = |k: &str, v: Option<f64>| {
        m.insert(k.to_string(), v);
    };
    put("psnr_noisy", report.psnr_noisy);
    put("psnr_baseline", restored.baseline.map(|(_, b)| b));
    put("psnr_final", report.psnr_final);
    put("psnr_best", report.psnr_best);
    put("psnr_best_raw", report.psnr_best_raw);
    put("iter_best", report.iter_best.map(|i| i as f64));
    put("ssim_final", restored.ssim);
    put(
        "ssim_noisy",
        same_shape.then(|| ssim(&p.observation, clean)),
    );
    put("loss_final", report.history.last().map(|r| r.loss));
    put("iterations_run", Some(report.iterations_run as f64));
    put("parameters", Some(report.parameters as f64));
    put("rollbacks", Some(report.rollbacks as f64));
    put("seconds", Some(report.seconds));
    if denoising {
        // What each noise-level estimator reads on the observation (0–255 scale), so that a
        // stopping rule can be replayed with any of them from the recorded history.
        for est in dip::sigma::SigmaEstimator::ALL {
            put(
                &format!("sigma_est_{est}"),
                Some(est.estimate(&p.observation) * 255.0),
            );
        }
    }
    for (k, t) in half_times.iter().flatten().enumerate() {
        put(&format!("t_half_b{k}"), *t);
    }
    let oracle = match (report.psnr_best, report.psnr_best_raw) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let per_step = report.seconds / report.iterations_run.max(1) as f64;
    for w in &watches {
        // A rule that chose nothing within the budget returns what the fit returns: the last
        // step's result.
        let chosen = w.rule.chosen();
        let p_rule = match chosen {
            Some(c) => Some(psnr(&c.image.data, &clean.data)),
            None => report.psnr_final,
        };
        let steps = w.asked.unwrap_or(report.iterations_run);
        let key = |what: &str| format!("stop_{}_{what}", w.name);
        m.insert(
            key("step"),
            Some(chosen.map_or(report.iterations_run, |c| c.step) as f64),
        );
        m.insert(key("psnr"), p_rule);
        m.insert(key("gap"), oracle.zip(p_rule).map(|(o, q)| o - q));
        m.insert(key("steps"), Some(steps as f64));
        m.insert(key("seconds"), Some(steps as f64 * per_step));
    }
    let info = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "preset": preset,
        "network": spec.label(),
        "operator": p.operator.name(),
        // Where the fit ran: a GPU draws other (equally deterministic) noise than the CPU.
        "device": g.device.to_string(),
        "size": [clean.width, clean.height, clean.channels],
        "lr_final": report.lr_final,
        // (step, PSNR of the raw output, PSNR of the result, loss) at every observed step.
        "history": report
            .history
            .iter()
            .map(|h| json!([h.iter, h.psnr_raw, h.psnr_ema, h.loss]))
            .collect::<Vec<_>>(),
        "recipe": recipe,
    });
    if save_images {
        let path = store.dir().join("images").join(format!("{}.png", cell.id));
        image::save(&report.output_ema, &path)?;
    }
    let record = CellRecord::new(cell, m, info);
    store.write(&record)?;
    Ok(CellOutcome::Done(Box::new(record)))
}

pub fn run_plan(args: RunArgs, g: &Global) -> Result<Outcome> {
    let (plan, cells) = load_plan(&args.plan)?;
    let shard = shard_of(args.shard.as_deref())?;
    let max_memory = RecipeArgs {
        max_memory: args.max_memory,
        ..RecipeArgs::default()
    }
    .max_memory()?;
    let store = Store::new(&args.output);
    let mine: Vec<(usize, &Cell)> = shard.select(&cells).collect();

    let label = |c: &Cell| short_label(&c.settings, &plan.set);
    if args.list {
        let mut out = std::io::stdout().lock();
        for (k, c) in &mine {
            let state = match store.read(c) {
                CellState::Missing => "missing".to_string(),
                CellState::Done(_) => "done".to_string(),
                CellState::Corrupt(why) => format!("unreadable ({why})"),
            };
            let line = writeln!(out, "{:>5} {} {state:<8} {}", k + 1, c.id, label(c));
            match line {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
                r => r.context("cannot write to stdout")?,
            }
        }
        return Ok(Outcome::Done);
    }

    store.create()?;
    crate::output::check_folder_writable(&store.cells_dir(), &store.cells_dir())?;
    if plan.save_images {
        let dir = store.dir().join("images");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("{}: cannot create the folder", dir.display()))?;
    }
    let manifest = Manifest {
        title: title_of(&plan, &args.plan),
        metrics: plan.table_metrics(),
        plan: plan.clone(),
        cells: cells.clone(),
    };
    let replaced = store.write_manifest(&manifest)?;

    let terminal = std::io::stderr().is_terminal();
    let multi = if g.quiet {
        MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
    } else {
        MultiProgress::new()
    };
    let log = Log {
        multi,
        quiet: g.quiet,
        terminal,
    };
    if let Some(before) = replaced {
        log.line(&format!(
            "note: the plan changed since the last run in {}: it now has {} cells (it had {}); \
             finished cells of the same settings are kept",
            args.output.display(),
            cells.len(),
            before.cells.len()
        ));
    }
    let mut todo = Vec::new();
    let mut already = 0;
    let here = g.device.to_string();
    let mut elsewhere: BTreeMap<String, usize> = BTreeMap::new();
    for (k, c) in &mine {
        match store.read(c) {
            CellState::Done(r) => {
                already += 1;
                // Records from before devices were recorded ran on the CPU.
                let ran = r.info["device"].as_str().unwrap_or("cpu");
                if ran != here {
                    *elsewhere.entry(ran.to_string()).or_default() += 1;
                }
            }
            CellState::Missing => todo.push((*k, *c)),
            CellState::Corrupt(why) => {
                log.line(&format!(
                    "note: {}: {why}; running the cell again",
                    store.cell_path(&c.id).display()
                ));
                todo.push((*k, *c));
            }
        }
    }
    for (ran, n) in &elsewhere {
        log.line(&format!(
            "note: {n} finished cell(s) ran on {ran}, this run uses {here}: same settings, other \
             noise streams (each cell records its device)"
        ));
    }
    log.line(&format!(
        "sweep {}: shard {shard} has {} of the {} cells: {already} finished, {} to run",
        title_of(&plan, &args.plan),
        mine.len(),
        cells.len(),
        todo.len()
    ));

    let overall = log.multi.add(ProgressBar::new(mine.len() as u64));
    overall.set_style(
        ProgressStyle::with_template("cells {pos}/{len} [{bar:30}] ETA {eta}  {msg}")
            .expect("the progress template is valid")
            .progress_chars("=> "),
    );
    overall.set_position(already as u64);
    let plan_dir = args
        .plan
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let noted_alpha = Mutex::new(HashSet::new());
    let jobs = args.jobs.clamp(1, todo.len().max(1));
    // Each of `jobs` fits at once gets its share of the memory limit.
    let max_memory = max_memory.map(|m| m / jobs);
    let room = FitRoom {
        max_memory,
        batch: crate::gpu::Batch::new(g.device, jobs, !args.no_batch),
    };
    let batch = &room.batch;
    if batch.lanes() > 0 {
        // Cells that share a network (and so a batch) run next to each other, so that the
        // batch's lanes fill: by what shapes the network and its step, then the image.
        todo.sort_by_cached_key(|(_, c)| {
            let s = &c.settings;
            (
                s.preset.clone(),
                s.arch.clone(),
                s.set.clone(),
                format!("{:?}", s.task),
                (s.downsample, s.crop, s.gray),
                s.image.clone(),
                s.level.to_bits(),
            )
        });
    }
    let next = AtomicUsize::new(0);
    let tally = Mutex::new(Tally::default());
    let job = || {
        let mut images = ImageCache {
            plan_dir: plan_dir.clone(),
            last: None,
            noted_alpha: &noted_alpha,
        };
        loop {
            {
                let mut t = tally.lock().expect("no job panics holding the tally");
                if g.cancel.load(Ordering::SeqCst) {
                    t.interrupted = true;
                }
                if t.interrupted {
                    return;
                }
            }
            let Some(&(k, cell)) = todo.get(next.fetch_add(1, Ordering::SeqCst)) else {
                return;
            };
            overall.set_message(format!("{} {}", cell.id, label(cell)));
            let head = format!("cell {}/{} {}", k + 1, cells.len(), cell.id);
            let result = run_cell(cell, &mut images, &store, plan.save_images, &room, &log, g);
            let mut t = tally.lock().expect("no job panics holding the tally");
            match result {
                Ok(CellOutcome::Done(r)) => {
                    t.fitted += 1;
                    overall.inc(1);
                    let f = |m: &str| {
                        r.metric(m)
                            .map_or("-".to_string(), |v| dip::sweep::format_metric(m, v))
                    };
                    log.line(&format!(
                        "{head} {}: PSNR final {} dB, best {} dB at step {} ({} s)",
                        label(cell),
                        f("psnr_final"),
                        f("psnr_best"),
                        f("iter_best"),
                        f("seconds")
                    ));
                }
                Ok(CellOutcome::Interrupted) => {
                    t.interrupted = true;
                    return;
                }
                Err(e) => {
                    let msg = crate::one_line(&format!("{e:#}"));
                    log.line(&format!("error: {head} {}: {msg}", label(cell)));
                    t.failed.push(format!("{} ({msg})", cell.id));
                    overall.inc(1);
                }
            }
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..jobs {
            scope.spawn(job);
        }
        job();
    });
    let Tally {
        fitted,
        failed,
        interrupted,
    } = tally.into_inner().expect("no job panics holding the tally");
    let outcome = if interrupted {
        Outcome::Interrupted
    } else {
        Outcome::Done
    };
    overall.finish_and_clear();
    if batch.lanes() > 0 && !g.quiet {
        eprintln!(
            "{} of the fits ran as lanes of a batch of {} on {}",
            batch.fits_in_lanes(),
            batch.lanes(),
            g.device
        );
    }
    if matches!(outcome, Outcome::Interrupted) {
        eprintln!(
            "interrupted: {fitted} cell(s) finished in this run; the cell in progress was not \
             saved. Run the same command again to resume."
        );
        return Ok(outcome);
    }
    println!(
        "sweep shard {shard}: {fitted} cell(s) fitted, {already} already finished, {} failed; \
         cells in {}",
        failed.len(),
        store.cells_dir().display()
    );
    if shard.count == 1 {
        merge_dir(&args.output, g)?;
    } else if !g.quiet {
        eprintln!(
            "when every shard is done: dip sweep merge {}",
            args.output.display()
        );
    }
    if !failed.is_empty() {
        bail!(
            "{} of the shard's cells failed, the others were saved; first: {}",
            failed.len(),
            failed[0]
        );
    }
    Ok(outcome)
}

/// `dip sweep merge DIR`.
fn merge_dir(dir: &Path, g: &Global) -> Result<()> {
    let store = Store::new(dir);
    let manifest = store.read_manifest()?;
    if manifest.is_none() && !store.cells_dir().is_dir() {
        bail!(
            "{}: not a sweep folder (no {} and no {}/); run dip sweep run PLAN -o {} first",
            dir.display(),
            dip::sweep::MANIFEST,
            dip::sweep::CELLS_DIR,
            dir.display()
        );
    }
    let scan = store.scan()?;
    let merged = merge(manifest.as_ref(), &scan, "sweep");
    write_text(&dir.join("results.csv"), &merged.to_csv())?;
    write_text(&dir.join("results.md"), &merged.to_markdown())?;
    if !g.quiet {
        for (name, why) in &merged.unreadable {
            eprintln!(
                "note: {}/{name}: {why}; it counts as missing",
                store.cells_dir().display()
            );
        }
        if manifest.is_none() {
            eprintln!(
                "note: {} has no {}: the tables hold the cells found, and cannot count the \
                 missing ones",
                dir.display(),
                dip::sweep::MANIFEST
            );
        }
    }
    println!(
        "wrote {} and results.md: {} of {} cells finished, {} missing, in {} groups",
        dir.join("results.csv").display(),
        merged.finished,
        merged.expected,
        merged.missing,
        merged.groups.len()
    );
    Ok(())
}

/// A word for a POSIX shell, single-quoted.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Slurm's job names: letters, digits, `-`, `_` and `.`.
fn job_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// `dip sweep slurm`: the script on stdout.
fn slurm(args: SlurmArgs, g: &Global) -> Result<()> {
    let (plan, cells) = load_plan(&args.plan)?;
    let n = cells.len();
    let shards = match args.shards {
        Some(0) => bail!("--shards must be at least 1"),
        Some(s) => s,
        None => n.clamp(1, MAX_ARRAY_TASKS),
    };
    if args.max_running == Some(0) {
        bail!("--max-running must be at least 1");
    }
    if args.cpus == Some(0) {
        bail!("--cpus must be at least 1");
    }
    let bin = match args.bin {
        Some(b) => b,
        None => std::env::current_exe().context("cannot tell where this dip binary is")?,
    };
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let (plan_path, dir) = (abs(&args.plan), abs(&args.output));
    let title = title_of(&plan, &args.plan);
    let name = args
        .job_name
        .unwrap_or_else(|| job_name(&format!("dip-{title}")));
    let mut s = String::from("#!/bin/bash\n");
    s.push_str(&format!(
        "# dip sweep \"{title}\": {n} cells in {shards} array tasks (task I runs cells I, I+{shards}, ...).\n\
         # Submit with sbatch. Finished cells are skipped, so submitting again runs only what is\n\
         # missing; a task that is killed or runs out of time loses only its cell in progress.\n\
         # When every task has ended: {} sweep merge {}\n",
        bin.display(),
        shell_quote(&dir.to_string_lossy())
    ));
    s.push_str(&format!("#SBATCH --job-name={name}\n"));
    let throttle = args
        .max_running
        .map(|k| format!("%{k}"))
        .unwrap_or_default();
    s.push_str(&format!("#SBATCH --array=0-{}{throttle}\n", shards - 1));
    s.push_str("#SBATCH --output=slurm-%x-%A_%a.out\n");
    if let Some(p) = &args.partition {
        s.push_str(&format!("#SBATCH --partition={p}\n"));
    }
    if let Some(t) = &args.time {
        s.push_str(&format!("#SBATCH --time={t}\n"));
    }
    if let Some(gpus) = &args.gpus {
        s.push_str(&format!("#SBATCH --gpus={gpus}\n"));
    }
    if let Some(c) = args.cpus {
        s.push_str(&format!("#SBATCH --cpus-per-task={c}\n"));
    }
    if let Some(m) = &args.mem {
        s.push_str(&format!("#SBATCH --mem={m}\n"));
    }
    for extra in &args.sbatch {
        s.push_str(&format!("#SBATCH {extra}\n"));
    }
    s.push_str("\nset -euo pipefail\n");
    s.push_str("# The shard comes from SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT.\n");
    let device = match g.device {
        dip::device::Device::Cpu => String::new(),
        d => format!(" --device {d}"),
    };
    let jobs = args
        .jobs
        .map(|k| format!(" --jobs {k}"))
        .unwrap_or_default();
    s.push_str(&format!(
        "exec {}{device} ${{SLURM_CPUS_PER_TASK:+--threads \"$SLURM_CPUS_PER_TASK\"}} sweep run {} -o {}{jobs}\n",
        shell_quote(&bin.to_string_lossy()),
        shell_quote(&plan_path.to_string_lossy()),
        shell_quote(&dir.to_string_lossy())
    ));
    print!("{s}");
    if shards > n {
        eprintln!(
            "note: {shards} tasks for {n} cells: {} task(s) will have nothing to do",
            shards - n
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_follow_the_task() {
        let plan = Plan::parse(
            "images = [\"a.png\"]\nseeds = 1\n\
             [[degradations]]\ntask = \"sr\"\nlevels = [4, 8]\n\
             [[degradations]]\ntask = \"inpaint\"\nlevel = 0.5\npreset = \"inpaint\"\n",
            Path::new("p.toml"),
        )
        .unwrap();
        let cells = plan.cells(&["a.png".into()]).unwrap();
        let presets: Vec<String> = cells.iter().map(|c| preset_of(&c.settings)).collect();
        assert_eq!(presets, vec!["sr4", "sr8", "inpaint"]);
        let (_, r) = recipe_of(&cells[0].settings).unwrap();
        assert_eq!(r.fit.seed, 0);
    }

    #[test]
    fn degradations_depend_on_the_cell_only() {
        let clean = Image::new(
            16,
            16,
            3,
            (0..16 * 16 * 3).map(|i| (i % 7) as f32 / 7.0).collect(),
        );
        let plan = Plan::parse(
            "images = [\"a.png\"]\nseeds = 2\narch = [\"skip\", \"decoder\"]\n\
             [[degradations]]\ntask = \"denoise\"\nlevel = 25\n\
             [[degradations]]\ntask = \"inpaint\"\nlevel = 0.5\n\
             [[degradations]]\ntask = \"sr\"\nlevel = 4\n\
             [[degradations]]\ntask = \"deblur\"\nlevel = 1\nsigma = 2\n",
            Path::new("p.toml"),
        )
        .unwrap();
        let cells = plan.cells(&["a.png".into()]).unwrap();
        let obs = |i: usize| degrade(&clean, &cells[i].settings).unwrap();
        // Cell order: degradation, arch, seed.
        for d in 0..4 {
            let base = d * 4;
            let (a, b, c) = (obs(base), obs(base + 1), obs(base + 2));
            assert_eq!(a.observation, obs(base).observation, "repeatable");
            assert_eq!(
                a.observation, c.observation,
                "the architecture does not matter"
            );
            if d != 2 {
                assert_ne!(a.observation, b.observation, "the seed draws new noise");
            }
        }
        let sr = obs(8);
        assert_eq!((sr.observation.width, sr.observation.height), (4, 4));
        assert!(sr.baseline().unwrap().is_some());
    }

    #[test]
    fn shell_words_are_quoted() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(job_name("dip-my plan/1"), "dip-my-plan-1");
    }
}

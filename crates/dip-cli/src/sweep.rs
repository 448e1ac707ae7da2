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
use dip::fit::{Control, Observer, StepInfo};
use dip::image::{self, Image};
use dip::sweep::{
    Cell, CellRecord, CellSettings, CellState, Manifest, Plan, Shard, Store, fit_cell, merge,
    prepare_image, preset_of, recipe_of,
};
use dip::task::RunContext;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

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
        let (img, dropped_alpha) = prepare_image(&self.plan_dir, s)?;
        if dropped_alpha
            && !g.quiet
            && self
                .noted_alpha
                .lock()
                .expect("no job panics holding the notes")
                .insert(s.image.clone())
        {
            log.line(&format!(
                "note: {} has an alpha channel; it was dropped",
                self.plan_dir.join(&s.image).display()
            ));
        }
        self.last = Some((s.image.clone(), img.clone()));
        Ok(img)
    }
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
    let clean = images.get(s, g, log)?;
    let iters = recipe_of(s)?.1.fit.iters;
    let bar = log.multi.add(ProgressBar::new(iters as u64));
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .expect("the progress template is valid")
            .progress_chars("=> "),
    );
    let mut observer = FitBar { bar: bar.clone() };
    let mut ctx = RunContext {
        device: g.device,
        cancel: Some(g.cancel.clone()),
        max_memory: room.max_memory,
        observe_every: OBSERVE_EVERY,
        ..RunContext::default()
    };
    room.batch.join(&mut ctx);
    ctx.observers.push(&mut observer);
    let fitted = fit_cell(cell, &clean, ctx);
    bar.finish_and_clear();
    log.multi.remove(&bar);
    let Some(fitted) = fitted? else {
        return Ok(CellOutcome::Interrupted);
    };
    if save_images {
        let path = store.dir().join("images").join(format!("{}.png", cell.id));
        image::save(&fitted.image, &path)?;
    }
    store.write(&fitted.record)?;
    Ok(CellOutcome::Done(Box::new(fitted.record)))
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
    fn shell_words_are_quoted() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(job_name("dip-my plan/1"), "dip-my-plan-1");
    }
}

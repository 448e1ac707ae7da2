//! `dip analyze`: fit with the trajectory recorder on several seeds, then the spectral-bias
//! analysis and its report.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use dip::fit::{FitConfig, FitReport, TrajectoryRecorder};
use dip::image::{self, Image};
use dip::operators::Identity;
use dip::recipe::Recipe;
use dip::report::{ReportImages, write_report};
use dip::spectral::BandSpacing;
use dip::spectral::study::{Analysis, RecordedRun, StudyOptions, analyze_with_progress};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::recipe::RecipeArgs;
use crate::task::load_image;
use crate::{Global, Outcome};

const EXAMPLES: &str = "\
Examples:
  dip analyze noisy.png --clean clean.png --iters 1500 -o analysis/
  dip analyze noisy.png --seeds 1 --every 5 --bands 12 -o analysis/
  dip analyze --from analysis/ --bands 16 --log-bands";

#[derive(clap::Args, Debug)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The observation (a noisy image). Not needed with --from.
    #[arg(required_unless_present = "from", conflicts_with = "from")]
    observation: Option<PathBuf>,

    /// The clean image, if known: PSNR, the best step and fits against it.
    #[arg(long, value_name = "CLEAN", conflicts_with = "from")]
    clean: Option<PathBuf>,

    /// Output folder: trajectories, analysis.json, CSVs and report.html. It must not exist or
    /// be empty (unless --force).
    #[arg(
        short,
        long = "output",
        value_name = "DIR",
        required_unless_present = "from"
    )]
    output: Option<PathBuf>,

    /// Redo the analysis of a folder written by an earlier `dip analyze`, without fitting.
    #[arg(long, value_name = "DIR")]
    from: Option<PathBuf>,

    /// Record the output every K steps.
    #[arg(long, value_name = "K", default_value_t = 10)]
    every: usize,

    /// Number of radial frequency bands.
    #[arg(long, value_name = "B", default_value_t = 8)]
    bands: usize,

    /// Log-spaced bands instead of equal width.
    #[arg(long)]
    log_bands: bool,

    /// Number of runs from different seeds (seed, seed+1, ...); 2 gives the two-run distance.
    #[arg(long, value_name = "N", default_value_t = 2)]
    seeds: usize,

    #[command(flatten)]
    recipe: RecipeArgs,

    /// Write into a non-empty DIR.
    #[arg(long)]
    force: bool,
}

/// What `dip analyze` records about its runs (`analyze.json`), so that `--from` can redo the
/// analysis.
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub observation: String,
    pub clean: Option<String>,
    /// Run folders, relative to the output folder.
    pub runs: Vec<String>,
    pub every: usize,
    pub preset: String,
    pub recipe: Recipe,
    pub version: String,
    /// Where the runs were fitted (`cpu`, `cuda:0`); older folders: the CPU.
    #[serde(default = "cpu")]
    pub device: String,
}

fn cpu() -> String {
    "cpu".into()
}

pub const MANIFEST: &str = "analyze.json";

pub fn run(args: Args, g: &Global) -> Result<Outcome> {
    if args.every == 0 {
        bail!("--every must be at least 1");
    }
    if args.bands == 0 {
        bail!("--bands must be at least 1");
    }
    if let Some(dir) = &args.from {
        analyse_folder(dir, &args, g)?;
        return Ok(Outcome::Done);
    }
    if args.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    let (Some(obs_path), Some(dir)) = (&args.observation, &args.output) else {
        bail!("give an observation and -o DIR, or --from DIR");
    };
    let preset = args.recipe.preset_name("denoise").to_string();
    let recipe = args.recipe.resolve(&preset)?;
    recipe.fit_config()?;
    prepare_folder(dir, args.force)?;

    let observation = load_image(obs_path, g)?;
    let clean = args
        .clean
        .as_deref()
        .map(|p| load_image(p, g))
        .transpose()?;
    if let (Some(c), Some(p)) = (&clean, &args.clean)
        && (c.width, c.height, c.channels)
            != (observation.width, observation.height, observation.channels)
    {
        bail!(
            "{}: the clean image is {}x{}x{} but {} is {}x{}x{}",
            p.display(),
            c.width,
            c.height,
            c.channels,
            obs_path.display(),
            observation.width,
            observation.height,
            observation.channels
        );
    }
    let plan = Plan {
        observation_name: obs_path.display().to_string(),
        clean_name: args.clean.as_ref().map(|p| p.display().to_string()),
        preset,
        every: args.every,
        seeds: args.seeds,
        opts: study_options(&args),
    };
    let (outcome, analysis) =
        record_and_analyse(&observation, clean.as_ref(), &recipe, &plan, dir, g)?;
    print_findings(&analysis, dir);
    Ok(outcome)
}

/// How to record and analyse.
pub struct Plan {
    /// How the observation and clean image are named in the manifest.
    pub observation_name: String,
    pub clean_name: Option<String>,
    pub preset: String,
    pub every: usize,
    pub seeds: usize,
    pub opts: StudyOptions,
}

fn study_options(args: &Args) -> StudyOptions {
    StudyOptions {
        bands: args.bands,
        spacing: if args.log_bands {
            BandSpacing::Log
        } else {
            BandSpacing::Linear
        },
    }
}

/// Saves the images into `dir` (an empty folder), fits once per seed with the recorder, writes
/// the manifest, and analyses the runs.
pub fn record_and_analyse(
    observation: &Image,
    clean: Option<&Image>,
    recipe: &Recipe,
    plan: &Plan,
    dir: &Path,
    g: &Global,
) -> Result<(Outcome, Analysis)> {
    // Lossless copies, so that --from needs nothing outside the folder.
    image::save(observation, &dir.join("observation.png"))?;
    if let Some(c) = clean {
        image::save(c, &dir.join("clean.png"))?;
    }
    let (outcome, runs) = fit_runs(observation, clean, recipe, plan, dir, g)?;
    let manifest = Manifest {
        observation: plan.observation_name.clone(),
        clean: plan.clean_name.clone(),
        runs,
        every: plan.every,
        preset: plan.preset.clone(),
        recipe: recipe.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        device: g.device.to_string(),
    };
    crate::output::write_json(&dir.join(MANIFEST), &serde_json::to_value(&manifest)?)?;
    let analysis = analyse_runs(dir, &manifest.runs, &plan.opts, g)?;
    Ok((outcome, analysis))
}

/// Creates `dir`, or checks that it is empty (or `force`).
pub fn prepare_folder(dir: &Path, force: bool) -> Result<()> {
    if dir.is_file() {
        bail!("{}: is a file, not a folder", dir.display());
    }
    if dir.exists() {
        let non_empty = fs::read_dir(dir)
            .with_context(|| format!("{}: cannot list the folder", dir.display()))?
            .next()
            .is_some();
        if non_empty && !force {
            bail!(
                "{}: the folder is not empty; choose a new one or pass --force",
                dir.display()
            );
        }
    }
    fs::create_dir_all(dir)
        .with_context(|| format!("{}: cannot create the folder", dir.display()))?;
    crate::output::check_folder_writable(dir, dir)
}

/// Fits once per seed with the recorder; on a GPU all seeds at once, as lanes of one batch
/// (each run is the one it would be alone). Stops early (and says so) on Ctrl-C, keeping the
/// runs recorded so far.
fn fit_runs(
    observation: &Image,
    clean: Option<&Image>,
    recipe: &Recipe,
    plan: &Plan,
    dir: &Path,
    g: &Global,
) -> Result<(Outcome, Vec<String>)> {
    let base = recipe.fit_config()?;
    let spec = recipe.arch(observation.channels)?;
    let identity = Identity::new(observation.width, observation.height, observation.channels);
    // Run k (seed base + k), with the progress bar or without.
    let run = |k: usize, batch: &crate::gpu::Batch, show: bool| -> Result<(String, FitReport)> {
        let seed = base.seed + k as u64;
        if !g.quiet {
            eprintln!("analyze: run {} of {} (seed {seed})", k + 1, plan.seeds);
        }
        let cfg = batch.apply(FitConfig {
            seed,
            observe_every: plan.every,
            cancel: Some(g.cancel.clone()),
            device: g.device,
            ..base.clone()
        });
        let name = format!("run-seed{seed}");
        let mut rec = TrajectoryRecorder::new(
            &dir.join(&name),
            plan.every,
            seed,
            serde_json::to_value(recipe)?,
        )?;
        let report = crate::task::fit_shown(
            observation,
            &identity,
            clean,
            &spec,
            &cfg,
            g,
            show,
            &mut [&mut rec],
        )?;
        if let Some(e) = rec.take_error() {
            return Err(e.into());
        }
        Ok((name, report))
    };
    let mut runs = Vec::new();
    let mut stopped = None;
    for (k, r) in crate::gpu::fits_at_once(g, plan.seeds, run, |(_, r)| r.interrupted)
        .into_iter()
        .enumerate()
    {
        let (name, report) = r?;
        runs.push(name);
        if report.interrupted {
            stopped.get_or_insert((k, report.iterations_run));
        }
    }
    if let Some((k, step)) = stopped {
        eprintln!(
            "interrupted in run {} at step {step}: analysing what was recorded",
            k + 1
        );
        return Ok((Outcome::Interrupted, runs));
    }
    Ok((Outcome::Done, runs))
}

/// The analysis of a folder written by `dip analyze`: analysis.json, CSVs, report.html.
fn analyse_folder(dir: &Path, args: &Args, g: &Global) -> Result<()> {
    let manifest_path = dir.join(MANIFEST);
    let manifest: Manifest =
        serde_json::from_slice(&fs::read(&manifest_path).with_context(|| {
            format!(
                "{}: cannot read the analysis manifest (is this a folder written by dip analyze?)",
                manifest_path.display()
            )
        })?)
        .with_context(|| format!("{}: not an analysis manifest", manifest_path.display()))?;
    let analysis = analyse_runs(dir, &manifest.runs, &study_options(args), g)?;
    print_findings(&analysis, dir);
    Ok(())
}

/// Analyses the run folders `runs` (relative to `dir`) against `dir/observation.png` and, when
/// present, `dir/clean.png`; writes analysis.json, the CSVs and report.html into `dir`.
pub fn analyse_runs(
    dir: &Path,
    runs: &[String],
    opts: &StudyOptions,
    g: &Global,
) -> Result<Analysis> {
    let (observation, _) = image::load(&dir.join("observation.png"))?;
    let clean_path = dir.join("clean.png");
    let clean = if clean_path.exists() {
        Some(image::load(&clean_path)?.0)
    } else {
        None
    };
    let runs = runs
        .iter()
        .map(|r| RecordedRun::open(dir.join(r)))
        .collect::<dip::Result<Vec<_>>>()?;
    let bar = if g.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template("analysing {pos}/{len} frames [{bar:30}] ETA {eta}")
            .expect("the progress template is valid")
            .progress_chars("=> "),
    );
    let analysis = analyze_with_progress(&runs, &observation, clean.as_ref(), opts, &mut |p| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
    });
    bar.finish_and_clear();
    let analysis = analysis?;
    analysis.write(dir)?;
    let images = ReportImages::from_run(&runs[0], &analysis, observation, clean, STRIP_FRAMES)?;
    write_report(&dir.join("report.html"), &analysis, &images)?;
    Ok(analysis)
}

/// Frames in the report's image strip.
const STRIP_FRAMES: usize = 7;

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("never".into(), |x| format!("{x:.digits$}"))
}

/// The headline numbers on stdout.
pub fn print_findings(a: &Analysis, dir: &Path) {
    println!(
        "wrote {}: analysis.json, CSVs and report.html ({} run(s), {} bands)",
        dir.display(),
        a.num_runs,
        a.bands.len()
    );
    let halves: Vec<String> = a.bands.iter().map(|b| fmt_opt(b.t_half, 0)).collect();
    println!("t1/2 per band (low to high): {}", halves.join(", "));
    if let Some(f) = a.summary.t_half_monotone {
        println!(
            "bands fitted in order of frequency: {:.0}% of neighbouring pairs{}",
            100.0 * f,
            a.summary
                .t_half_spearman
                .map(|r| format!(", rank correlation {r:.2}"))
                .unwrap_or_default()
        );
    }
    if let (Some(s), Some(p)) = (a.best_step, a.best_psnr) {
        println!("best step {s}: PSNR {p:.2} dB");
    }
    if let Some(p) = a.lowpass.best_lowpass_psnr {
        println!("best Gaussian low-pass of the observation: PSNR {p:.2} dB");
    }
}

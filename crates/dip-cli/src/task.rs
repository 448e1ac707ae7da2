//! What every fitting command shares: the output checks, the fit with its progress bar, the
//! JSON summary and the printed lines.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use dip::fit::{CheckpointSink, FitConfig, FitReport, FitState, Observer, StopKind, fit};
use dip::image::{self, Image};
use dip::nets::Arch;
use dip::operators::Operator;
use dip::recipe::{Recipe, SgldRecipe};
use dip::task::{Problem, RunContext, check_resumable, restore};
use serde_json::{Value, json};

use crate::output::{check_image_output, check_writable, write_json};
use crate::progress::{OBSERVE_EVERY, Progress};
use crate::recipe::RecipeArgs;
use crate::{Global, Outcome};

/// Options every fitting command shares.
#[derive(clap::Args, Debug)]
pub struct Common {
    /// Where to write the restored image; the format follows the extension, and the bit depth
    /// and channels follow the input.
    #[arg(short, long = "output", value_name = "OUT")]
    pub output: PathBuf,

    /// The clean image, if known: only used to report PSNR and SSIM.
    #[arg(long, value_name = "CLEAN")]
    pub clean: Option<PathBuf>,

    #[command(flatten)]
    pub recipe: RecipeArgs,

    #[command(flatten)]
    pub stop: StopArgs,

    /// Also write a JSON summary: PSNR (with --clean), timing, settings and the history.
    #[arg(long, value_name = "SUMMARY.json")]
    pub json: Option<PathBuf>,

    /// Overwrite existing outputs.
    #[arg(long)]
    pub force: bool,

    /// Save a checkpoint (`<output stem>.ckpt` beside the output) every N steps
    /// [default: about every 2 minutes]. `dip resume` continues from it; it is removed when the
    /// fit ends normally.
    #[arg(long, value_name = "N")]
    pub checkpoint_every: Option<usize>,

    /// Write no checkpoint.
    #[arg(long, conflicts_with = "checkpoint_every")]
    pub no_checkpoint: bool,
}

/// A run being resumed: the checkpoint's path and state, and the original command line.
pub struct Resume {
    pub path: PathBuf,
    pub state: std::sync::Arc<FitState>,
    pub argv: Vec<String>,
}

/// Set by `dip resume` before it runs the original command again.
pub static RESUME: std::sync::OnceLock<Resume> = std::sync::OnceLock::new();

/// Seconds between checkpoints when no step interval is given.
const CHECKPOINT_SECONDS: f64 = 120.0;

/// When to stop and which step's image to return.
#[derive(clap::Args, Debug, Clone)]
pub struct StopArgs {
    /// Stopping rule: auto (when denoising, the discrepancy principle's step on the estimated
    /// noise level plus the 200-step lag of the moving average; on a noise-free observation,
    /// such as inpainting, the latest result once the fit stops improving; otherwise wmv's step
    /// plus 300), fixed (run every step), wmv or emv (output variance, any task), discrepancy
    /// or spectral (noise level, denoising only). The result is the image at the rule's chosen
    /// step, and the run ends soon after it.
    /// [default: the preset's, auto]
    #[arg(long, value_name = "RULE")]
    pub stop: Option<StopKind>,

    /// Noise std for the discrepancy and spectral rules, 0-255 scale [default: estimated from
    /// the image].
    #[arg(long, value_name = "SIGMA")]
    pub stop_sigma: Option<f64>,

    /// Steps without a better choice before a rule ends the fit [default: the preset's, 200].
    #[arg(long, value_name = "N")]
    pub stop_patience: Option<usize>,

    /// SGLD (Cheng et al.): noise on the weights after every step; the result is the mean of
    /// the outputs sampled after the burn-in, and their per-pixel standard deviation is written
    /// beside it (`<output>_std.png`, scaled to its maximum). Runs every step: no early stop.
    #[arg(long)]
    pub sgld: bool,

    /// SGLD: steps before the first sample [default: a third of the steps].
    #[arg(long, value_name = "N", requires = "sgld")]
    pub sgld_burnin: Option<usize>,

    /// SGLD: steps between samples.
    #[arg(long, value_name = "N", default_value_t = 50, requires = "sgld")]
    pub sgld_every: usize,

    /// SGLD: std of the weight noise as a multiple of the learning rate.
    #[arg(long, value_name = "X", default_value_t = 2.0, requires = "sgld")]
    pub sgld_noise: f64,
}

impl StopArgs {
    /// Writes the flags given into `recipe` (its `stop` and `sgld` tables).
    pub fn overlay(&self, recipe: &mut Recipe) {
        if let Some(k) = self.stop {
            recipe.stop.rule = k;
        }
        if let Some(p) = self.stop_patience {
            recipe.stop.patience = p;
        }
        if self.sgld {
            let base = recipe.sgld.clone().unwrap_or_default();
            recipe.sgld = Some(SgldRecipe {
                burn_in: self.sgld_burnin.or(base.burn_in),
                every: self.sgld_every,
                noise: self.sgld_noise,
            });
        }
    }

    /// Where the SGLD standard deviation goes: `<stem>_std.png` beside `out`.
    pub fn sgld_std_path(&self, out: &Path) -> Option<PathBuf> {
        self.sgld.then(|| {
            let stem = out
                .file_stem()
                .map_or("out".into(), |s| s.to_string_lossy());
            out.with_file_name(format!("{stem}_std.png"))
        })
    }

    /// `problem` with the noise level of --stop-sigma, when given.
    pub fn with_sigma(&self, problem: Problem) -> Result<Problem> {
        match self.stop_sigma {
            Some(s) => problem
                .with_noise_sigma(s)
                .map_err(|_| anyhow::anyhow!("--stop-sigma must be a positive number, got {s}")),
            None => Ok(problem),
        }
    }
}

impl Common {
    /// The preset's name and the recipe: the preset, then the settings file, --set and the
    /// flags, then the stopping flags; validated, --stop-sigma included.
    pub fn resolve(&self, default_preset: &str) -> Result<(String, Recipe)> {
        let preset = self.recipe.preset_name(default_preset).to_string();
        let mut recipe = self.recipe.resolve(&preset)?;
        self.stop.overlay(&mut recipe);
        recipe.fit_config()?;
        // Refused here, before any file is read or written (`dip inpaint --mask-out` writes
        // before the problem exists); `with_sigma` hands the level to the problem.
        if let Some(s) = self.stop.stop_sigma
            && !(s.is_finite() && s > 0.0)
        {
            bail!("--stop-sigma must be a positive number, got {s}");
        }
        Ok((preset, recipe))
    }

    pub fn outputs(&self) -> Outputs {
        Outputs {
            image: self.output.clone(),
            json: self.json.clone(),
            sgld_std: self.stop.sgld_std_path(&self.output),
            checkpoint: (!self.no_checkpoint).then(|| self.output.with_extension("ckpt")),
            checkpoint_every: self.checkpoint_every,
            force: self.force,
        }
    }

    pub fn load_clean(&self, g: &Global) -> Result<Option<Image>> {
        self.clean.as_deref().map(|p| load_image(p, g)).transpose()
    }
}

/// Where a fitting command writes.
pub struct Outputs {
    pub image: PathBuf,
    pub json: Option<PathBuf>,
    /// Where the SGLD standard deviation goes, with --sgld.
    pub sgld_std: Option<PathBuf>,
    /// Where checkpoints go, and how often (steps; else every 2 minutes).
    pub checkpoint: Option<PathBuf>,
    pub checkpoint_every: Option<usize>,
    pub force: bool,
}

impl Outputs {
    /// Checks every output before the (long) fit, so that it cannot fail at the end.
    pub fn check(&self, inputs: &[&Path]) -> Result<()> {
        // A resumed run may overwrite what its first part wrote (never the inputs).
        let force = self.force || RESUME.get().is_some();
        let this = Outputs {
            image: self.image.clone(),
            json: self.json.clone(),
            sgld_std: self.sgld_std.clone(),
            checkpoint: self.checkpoint.clone(),
            checkpoint_every: self.checkpoint_every,
            force,
        };
        this.check_paths(inputs)
    }

    fn check_paths(&self, inputs: &[&Path]) -> Result<()> {
        if self.checkpoint_every == Some(0) {
            bail!("--checkpoint-every must be at least 1 step");
        }
        check_image_output(&self.image, inputs, self.force)?;
        if let Some(json) = &self.json {
            if json == &self.image {
                bail!("{}: --json and -o name the same file", json.display());
            }
            check_writable(json, inputs, self.force)?;
        }
        if let Some(p) = &self.sgld_std {
            if p == &self.image || Some(p) == self.json.as_ref() {
                bail!(
                    "{}: the SGLD spread would overwrite another output",
                    p.display()
                );
            }
            check_writable(p, inputs, self.force)?;
        }
        if let Some(p) = &self.checkpoint {
            if p == &self.image || Some(p) == self.json.as_ref() {
                bail!(
                    "{}: the checkpoint would overwrite another output",
                    p.display()
                );
            }
            check_writable(p, inputs, self.force)?;
        }
        Ok(())
    }
}

/// One inverse problem, ready to fit, and what the command adds to its summary.
pub struct Task {
    pub command: &'static str,
    pub problem: Problem,
    /// Fields added to the JSON summary.
    pub extra: Vec<(&'static str, Value)>,
    /// Refuse networks estimated to need more bytes than this.
    pub max_memory: Option<usize>,
}

/// Restores the task's problem (`dip::task::restore`), saves the result, writes the summary and
/// prints what happened.
pub fn run_task(
    task: Task,
    recipe: &Recipe,
    preset: &str,
    out: &Outputs,
    g: &Global,
) -> Result<Outcome> {
    let problem = &task.problem;
    let iters = recipe.fit.iters;
    let mut ctx = RunContext {
        device: g.device,
        cancel: Some(g.cancel.clone()),
        max_memory: task.max_memory,
        observe_every: OBSERVE_EVERY,
        ..RunContext::default()
    };
    let resume = RESUME.get();
    if let Some(r) = resume {
        let cmd = r.state.meta["command"].as_str().unwrap_or("");
        if cmd != task.command {
            bail!(
                "{}: the checkpoint is of a `dip {cmd}` run, not `dip {}`",
                r.path.display(),
                task.command
            );
        }
        check_resumable(problem, recipe, &r.state)
            .map_err(|e| anyhow::anyhow!("{}: {e}", r.path.display()))?;
        if !g.quiet {
            eprintln!(
                "resuming from {} at step {} of {iters}",
                r.path.display(),
                r.state.step,
            );
        }
        ctx.resume = Some(r.state.clone());
    }
    if let Some(path) = &out.checkpoint {
        let argv: Vec<String> = match resume {
            Some(r) => r.argv.clone(),
            None => std::env::args().collect(),
        };
        let cwd = std::env::current_dir()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let path = path.clone();
        let quiet = g.quiet;
        let warned = std::sync::atomic::AtomicBool::new(false);
        ctx.checkpoint = Some(CheckpointSink {
            every_steps: out.checkpoint_every,
            every_seconds: CHECKPOINT_SECONDS,
            meta: json!({
                "version": env!("CARGO_PKG_VERSION"),
                "command": task.command,
                "argv": argv,
                "cwd": cwd,
            }),
            write: std::sync::Arc::new(move |state: &FitState| {
                if let Err(e) = state.save(&path)
                    && !quiet
                    && !warned.swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    eprintln!("warning: cannot write the checkpoint: {e}");
                }
            }),
        });
    }
    if recipe.sgld.is_some()
        && !matches!(recipe.stop.rule, StopKind::Fixed | StopKind::Auto)
        && !g.quiet
    {
        eprintln!(
            "note: --sgld runs every step; --stop {} is ignored",
            recipe.stop.rule
        );
    }
    let (w, h, channels) = problem.result_shape();
    if !g.quiet {
        eprintln!(
            "{}: {} ({w}x{h} -> {}x{}), preset {preset}, {} network, {iters} steps",
            task.command,
            problem.operator.name(),
            problem.observation.width,
            problem.observation.height,
            recipe.arch(channels)?.label(),
        );
    }
    let mut progress = Progress::new(iters, g.quiet);
    ctx.observers.push(&mut progress);
    let restored = restore(problem, recipe, ctx);
    progress.finish();
    let r = restored.map_err(|e| match resume {
        Some(r) => anyhow::anyhow!("{}: {e}", r.path.display()),
        None => e.into(),
    })?;
    rollback_note(&r.report, &r.config, g);
    if let Some(p) = &out.checkpoint {
        if r.report.interrupted {
            if p.exists() {
                eprintln!(
                    "checkpoint saved: continue with `dip resume {}`",
                    p.display()
                );
            }
        } else if p.exists() {
            // The fit is complete: its checkpoint has served.
            let _ = std::fs::remove_file(p);
        }
    }
    // SGLD: the result is the posterior mean; its spread is written beside it.
    let std_path = out.sgld_std.clone();
    if let Some(s) = &r.sgld {
        let max = s.std_max as f32;
        if let Some(p) = &std_path {
            let scaled: Vec<f32> = s
                .std
                .data
                .iter()
                .map(|&v| if max > 0.0 { v / max } else { 0.0 })
                .collect();
            image::save(
                &Image::new(s.std.width, s.std.height, s.std.channels, scaled),
                p,
            )?;
        }
        println!(
            "SGLD: the result is the mean of {} samples (burn-in {}, every {}); posterior std \
             mean {:.4}, max {:.4}{}",
            s.samples,
            s.config.burn_in,
            s.config.sample_every,
            s.std_mean,
            max,
            std_path
                .as_ref()
                .map(|p| format!(", written to {}", p.display()))
                .unwrap_or_default()
        );
    }
    image::save(&r.image, &out.image)?;
    if let Some(json_path) = &out.json {
        let mut extra = task.extra;
        extra.push(("command", json!(task.command)));
        extra.push(("output", json!(out.image.display().to_string())));
        extra.push(("preset", json!(preset)));
        let mut value = r.summary(extra)?;
        if let (Some(sgld), Some(p)) = (value.get_mut("sgld"), &std_path)
            && let Value::Object(m) = sgld
        {
            m.insert("std_file".into(), json!(p.display().to_string()));
        }
        write_json(json_path, &value)?;
    }
    println!(
        "wrote {}: {} iterations in {:.1} s",
        out.image.display(),
        r.report.iterations_run,
        r.report.seconds
    );
    if r.chosen {
        println!(
            "stopped by the {} rule: the result is step {}{}",
            r.stop_rule,
            r.stopped_at,
            r.stop_sigma
                .map_or(String::new(), |s| format!(" (noise sigma {s:.1})"))
        );
    }
    // What the rule was unsure of is said whatever --quiet says: it is about the result.
    for w in &r.stop_warnings {
        eprintln!("warning: {w}");
    }
    if let Some((name, p)) = r.baseline {
        println!("PSNR {:<7}{p:.2} dB", format!("{name}:"));
    }
    print_psnr(&r.report, r.chosen.then_some(r.stopped_at));
    if let Some(s) = r.ssim {
        println!("SSIM final:  {s:.4}");
    }
    Ok(outcome(&r.report))
}

/// An interrupted fit still saved its result; the exit code says it was cut short.
pub fn outcome(report: &FitReport) -> Outcome {
    if report.interrupted {
        eprintln!(
            "interrupted after step {}: the result and summary so far were written",
            report.iterations_run
        );
        Outcome::Interrupted
    } else {
        Outcome::Done
    }
}

/// Loads an image and says so when its alpha channel was dropped.
pub fn load_image(path: &Path, g: &Global) -> Result<Image> {
    let (img, info) = image::load(path)?;
    if info.dropped_alpha && !g.quiet {
        eprintln!(
            "note: {} has an alpha channel; it was dropped (not composited)",
            path.display()
        );
    }
    Ok(img)
}

/// Runs the fit with a progress bar on stderr, and any other observers.
/// [`fit_with_progress`], or (not `show`) the fit with no bar, its rollback note still said.
#[allow(clippy::too_many_arguments)]
pub fn fit_shown(
    observation: &Image,
    operator: &dyn Operator,
    clean: Option<&Image>,
    spec: &Arch,
    cfg: &FitConfig,
    g: &Global,
    show: bool,
    others: &mut [&mut dyn Observer],
) -> Result<FitReport> {
    if show {
        return fit_with_progress(observation, operator, clean, spec, cfg, g, others);
    }
    let report = fit(observation, operator, clean, spec, cfg, others)?;
    rollback_note(&report, cfg, g);
    Ok(report)
}

/// Says that a fit diverged and went back, and its learning rate now.
pub fn rollback_note(report: &FitReport, cfg: &FitConfig, g: &Global) {
    if report.rollbacks > 0 && !g.quiet {
        eprintln!(
            "note: the fit (seed {}) diverged {} time(s) and went back to its last good state; \
             the learning rate is now {}",
            cfg.seed, report.rollbacks, report.lr_final
        );
    }
}

pub fn fit_with_progress(
    observation: &Image,
    operator: &dyn Operator,
    clean: Option<&Image>,
    spec: &Arch,
    cfg: &FitConfig,
    g: &Global,
    others: &mut [&mut dyn Observer],
) -> Result<FitReport> {
    let mut progress = Progress::new(cfg.iters, g.quiet);
    let mut observers: Vec<&mut dyn Observer> = vec![&mut progress];
    for o in others.iter_mut() {
        observers.push(&mut **o);
    }
    let report = fit(observation, operator, clean, spec, cfg, &mut observers);
    drop(observers);
    progress.finish();
    let report = report?;
    rollback_note(&report, cfg, g);
    Ok(report)
}

/// The PSNR lines, when a clean image was given.
pub fn print_psnr(report: &FitReport, result_step: Option<usize>) {
    if let Some(p) = report.psnr_noisy {
        println!("PSNR input:  {p:.2} dB");
    }
    if let Some(p) = report.psnr_final {
        println!(
            "PSNR final:  {p:.2} dB (result, step {})",
            result_step.unwrap_or(report.iterations_run)
        );
    }
    if let (Some(p), Some(it)) = (report.psnr_best, report.iter_best) {
        println!("PSNR best:   {p:.2} dB (result, step {it})");
    }
}

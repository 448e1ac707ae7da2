//! What every fitting command shares: the output checks, the fit with its progress bar, the
//! JSON summary and the printed lines.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use dip::fit::{
    CheckpointSink, FitConfig, FitReport, FitState, Observer, SgldConfig, StopConfig, StopKind,
    check_resume, fit, make_rule,
};
use dip::image::{self, Image};
use dip::nets::Arch;
use dip::operators::Operator;
use dip::recipe::Recipe;
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
    #[arg(long, value_name = "RULE", default_value = "auto")]
    pub stop: StopKind,

    /// Noise std for the discrepancy and spectral rules, 0-255 scale [default: estimated from
    /// the image].
    #[arg(long, value_name = "SIGMA")]
    pub stop_sigma: Option<f64>,

    /// Steps without a better choice before a rule ends the fit.
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub stop_patience: usize,

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
    /// The SGLD settings for a run of `iters` steps, when --sgld is on.
    pub fn sgld(&self, iters: usize) -> Option<SgldConfig> {
        self.sgld.then(|| SgldConfig {
            noise: self.sgld_noise,
            burn_in: self.sgld_burnin.unwrap_or(iters / 3),
            sample_every: self.sgld_every,
            ..SgldConfig::for_iters(iters)
        })
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

    pub fn config(&self) -> Result<StopConfig> {
        if let Some(s) = self.stop_sigma
            && !(s.is_finite() && s > 0.0)
        {
            bail!("--stop-sigma must be a positive number, got {s}");
        }
        Ok(StopConfig {
            sigma: self.stop_sigma.map(|s| s / 255.0),
            patience: self.stop_patience,
            ..StopConfig::default()
        })
    }
}

impl Common {
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

/// One inverse problem, ready to fit.
pub struct Task<'a> {
    pub command: &'static str,
    pub observation: &'a Image,
    pub operator: &'a dyn Operator,
    pub clean: Option<&'a Image>,
    /// A baseline to print beside the result: name and PSNR against the clean image.
    pub baseline: Option<(&'static str, f64)>,
    /// Fields added to the JSON summary.
    pub extra: Vec<(&'static str, Value)>,
    /// Refuse networks estimated to need more bytes than this.
    pub max_memory: Option<usize>,
    /// The stopping rule.
    pub stop: StopArgs,
}

/// Fits, saves the result (the EMA output, which is the raw output when the EMA weight is 0),
/// writes the summary and prints what happened.
pub fn run_task(
    task: Task<'_>,
    recipe: &Recipe,
    preset: &str,
    out: &Outputs,
    g: &Global,
) -> Result<Outcome> {
    let (_, _, channels) = task.operator.input_shape();
    let spec = recipe.arch(channels)?;
    let base = recipe.fit_config()?;
    let cfg = FitConfig {
        observe_every: OBSERVE_EVERY,
        max_memory: task.max_memory,
        cancel: Some(g.cancel.clone()),
        sgld: task.stop.sgld(base.iters),
        device: g.device,
        ..base
    };
    let std_path = out.sgld_std.clone();
    let resume = RESUME.get();
    let mut cfg = cfg;
    if let Some(r) = resume {
        let cmd = r.state.meta["command"].as_str().unwrap_or("");
        if cmd != task.command {
            bail!(
                "{}: the checkpoint is of a `dip {cmd}` run, not `dip {}`",
                r.path.display(),
                task.command
            );
        }
        // The command line builds the network again; a checkpoint that says it holds another
        // (a preset changed since, or an edited file) is refused before its arrays are used.
        if let Some(net) = r.state.meta["network"].as_str()
            && net != spec.label()
        {
            bail!(
                "{}: the checkpoint is of a {net} network, this run builds a {} network",
                r.path.display(),
                spec.label()
            );
        }
        check_resume(&r.state, task.operator, &spec, &cfg)
            .map_err(|e| anyhow::anyhow!("{}: {e}", r.path.display()))?;
        if !g.quiet {
            eprintln!(
                "resuming from {} at step {} of {}",
                r.path.display(),
                r.state.step,
                cfg.iters
            );
        }
        cfg.resume = Some(r.state.clone());
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
        cfg.checkpoint = Some(CheckpointSink {
            every_steps: out.checkpoint_every,
            every_seconds: CHECKPOINT_SECONDS,
            meta: json!({
                "version": env!("CARGO_PKG_VERSION"),
                "command": task.command,
                "argv": argv,
                "cwd": cwd,
                "network": spec.label(),
                "iters": cfg.iters,
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
    // SGLD averages over the whole run: no stopping rule.
    let stop_kind = if cfg.sgld.is_some() {
        if !matches!(task.stop.stop, StopKind::Fixed | StopKind::Auto) && !g.quiet {
            eprintln!(
                "note: --sgld runs every step; --stop {} is ignored",
                task.stop.stop
            );
        }
        StopKind::Fixed
    } else {
        task.stop.stop
    };
    if !g.quiet {
        eprintln!(
            "{}: {} ({}x{} -> {}x{}), preset {preset}, {} network, {} steps",
            task.command,
            task.operator.name(),
            task.operator.input_shape().0,
            task.operator.input_shape().1,
            task.observation.width,
            task.observation.height,
            spec.label(),
            cfg.iters
        );
    }
    let denoising = task.command == "denoise";
    let mut stop_cfg = task.stop.config()?;
    // An inpainting observation is the image itself where known: noise-free unless a noise
    // level is given.
    stop_cfg.noise_free = task.command == "inpaint" && stop_cfg.sigma.is_none();
    let mut rule = make_rule(stop_kind, &stop_cfg, task.observation, denoising)?;
    let mut report = fit_with_progress(
        task.observation,
        task.operator,
        task.clean,
        &spec,
        &cfg,
        g,
        &mut [rule.as_mut()],
    )
    .map_err(|e| match resume {
        Some(r) => e.context(format!("{}", r.path.display())),
        None => e,
    })?;
    if let Some(p) = &out.checkpoint {
        if report.interrupted {
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
    let stopped_at = take_choice(&mut report, stop_kind, rule.as_ref(), task.clean);
    // SGLD: the result is the posterior mean; its spread is written beside it.
    let mut sgld_json = Value::Null;
    if let (Some(s), Some(conf)) = (&report.sgld, &cfg.sgld) {
        report.output_ema = s.mean.clone();
        report.psnr_final = task
            .clean
            .map(|cl| dip::metrics::psnr(&report.output_ema.data, &cl.data));
        let max = s.std.data.iter().fold(0.0f32, |a, &b| a.max(b));
        let mean = s.std.data.iter().map(|&v| v as f64).sum::<f64>() / s.std.data.len() as f64;
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
            conf.burn_in,
            conf.sample_every,
            mean,
            max,
            std_path
                .as_ref()
                .map(|p| format!(", written to {}", p.display()))
                .unwrap_or_default()
        );
        sgld_json = json!({
            "samples": s.samples,
            "burn_in": conf.burn_in,
            "sample_every": conf.sample_every,
            "noise": conf.noise,
            "weight_decay": conf.weight_decay,
            "std_mean": mean,
            "std_max": max,
            "std_file": std_path.as_ref().map(|p| p.display().to_string()),
        });
    }
    image::save(&report.output_ema, &out.image)?;
    // SSIM of what the file holds, like the PSNR lines.
    let ssim = task.clean.map(|c| {
        let saved = image::quantize(&report.output_ema, report.output_ema.bit_depth);
        dip::metrics::ssim(&saved, c)
    });
    if let Some(json_path) = &out.json {
        let mut extra = task.extra;
        extra.push(("command", json!(task.command)));
        extra.push(("output", json!(out.image.display().to_string())));
        extra.push(("operator", json!(task.operator.name())));
        extra.push(("preset", json!(preset)));
        extra.push(("recipe", serde_json::to_value(recipe)?));
        if let Some((name, p)) = task.baseline {
            extra.push(("baseline", json!({"name": name, "psnr": p})));
        }
        extra.push(("ssim_final", json!(ssim)));
        extra.push(("stop_rule", json!(rule.name())));
        extra.push((
            "stopped_at",
            json!(stopped_at.unwrap_or(report.iterations_run)),
        ));
        extra.push(("stop_sigma", json!(rule.sigma().map(|s| s * 255.0))));
        extra.push(("stop_warnings", json!(rule.warnings())));
        extra.push(("sgld", sgld_json));
        let value = summary(&report, &cfg, &spec, extra)?;
        write_json(json_path, &value)?;
    }
    println!(
        "wrote {}: {} iterations in {:.1} s",
        out.image.display(),
        report.iterations_run,
        report.seconds
    );
    if let Some(step) = stopped_at {
        println!(
            "stopped by the {} rule: the result is step {step}{}",
            rule.name(),
            rule.sigma().map_or(String::new(), |s| format!(
                " (noise sigma {:.1})",
                s * 255.0
            ))
        );
    }
    // What the rule was unsure of is said whatever --quiet says: it is about the result.
    if stop_kind != StopKind::Fixed && !report.interrupted {
        for w in rule.warnings() {
            eprintln!("warning: {w}");
        }
    }
    if let Some((name, p)) = task.baseline {
        println!("PSNR {:<7}{p:.2} dB", format!("{name}:"));
    }
    print_psnr(&report, stopped_at);
    if let Some(s) = ssim {
        println!("SSIM final:  {s:.4}");
    }
    Ok(outcome(&report))
}

/// The result of a fit watched by `rule`: the image at the rule's chosen step (the last step's
/// with `fixed` or without a choice), with its PSNR; returns the chosen step.
pub fn take_choice(
    report: &mut FitReport,
    kind: StopKind,
    rule: &dyn dip::fit::StopRule,
    clean: Option<&Image>,
) -> Option<usize> {
    match (kind, rule.chosen()) {
        (StopKind::Fixed, _) | (_, None) => None,
        (_, Some(c)) => {
            report.output_ema = c.image.clone().with_bit_depth(report.output_ema.bit_depth);
            report.psnr_final =
                clean.map(|cl| dip::metrics::psnr(&report.output_ema.data, &cl.data));
            Some(c.step)
        }
    }
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
fn rollback_note(report: &FitReport, cfg: &FitConfig, g: &Global) {
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

/// The JSON summary: the report's fields, the settings, the network, and `extra` fields.
pub fn summary(
    report: &FitReport,
    cfg: &FitConfig,
    spec: &Arch,
    extra: Vec<(&str, Value)>,
) -> Result<Value> {
    let mut value = serde_json::to_value(report)?;
    let Value::Object(map) = &mut value else {
        bail!("internal: the fit report does not serialise to a JSON object");
    };
    for (k, v) in extra {
        map.insert(k.to_string(), v);
    }
    map.insert("config".to_string(), serde_json::to_value(cfg)?);
    map.insert("network".to_string(), serde_json::to_value(spec)?);
    map.insert("version".to_string(), json!(env!("CARGO_PKG_VERSION")));
    Ok(value)
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

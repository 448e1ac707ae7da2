//! [`restore`]: a [`Problem`] and a [`Recipe`] in, a [`Restoration`] out. Every front end (the
//! command line, sweeps, the demo) restores through it, so that the stopping rule, the chosen
//! step, SGLD's mean and spread, checkpoints and the summary are made in one place.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde_json::{Value, json};

use crate::device::Device;
use crate::fit::{
    CheckpointSink, FitConfig, FitReport, FitState, Observer, SgldConfig, StopConfig, StopKind,
    StopRule, check_resume, fit, make_rule,
};
use crate::image::{self, Image};
use crate::metrics::{psnr, ssim};
use crate::nets::Arch;
use crate::recipe::Recipe;
use crate::{Error, Result};

use super::problem::{NoiseModel, Problem, TaskKind};

/// How often observers (progress, stopping rules, the history) see the fit, in steps.
pub const OBSERVE_EVERY: usize = 10;

/// The run's wiring, as opposed to its settings (those are the [`Recipe`]'s): where it runs,
/// how it is stopped from outside, where its state is saved, and who watches it.
pub struct RunContext<'a> {
    /// The CPU (the current rayon pool's threads) or a CUDA GPU.
    pub device: Device,
    /// Set from elsewhere (a signal handler, a callback) to end the fit after the current step;
    /// the restoration then says `interrupted` and holds the best result so far.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Where and how often the fit's state is saved. Its metadata gains `network` and `iters`.
    pub checkpoint: Option<CheckpointSink>,
    /// Continue from this state; it must be of the same network, operator and settings.
    pub resume: Option<Arc<FitState>>,
    /// Refuse networks estimated to need more bytes than this.
    pub max_memory: Option<usize>,
    /// Observers, stopping rules and the history see the fit every this many steps.
    pub observe_every: usize,
    /// Watchers besides the stopping rule: a progress bar, recorders, other rules.
    pub observers: Vec<&'a mut dyn Observer>,
    /// On a GPU: the batch whose lane this fit becomes.
    #[cfg(feature = "cuda")]
    pub lanes: Option<Arc<crate::fit::LanePool>>,
}

impl Default for RunContext<'_> {
    fn default() -> Self {
        RunContext {
            device: Device::Cpu,
            cancel: None,
            checkpoint: None,
            resume: None,
            max_memory: None,
            observe_every: OBSERVE_EVERY,
            observers: Vec::new(),
            #[cfg(feature = "cuda")]
            lanes: None,
        }
    }
}

/// SGLD's outcome: the result is the mean of the samples; this is their spread.
#[derive(Debug, Clone)]
pub struct SgldOutcome {
    pub config: SgldConfig,
    pub samples: usize,
    /// Per-sample standard deviation of the sampled outputs.
    pub std: Image,
    pub std_mean: f64,
    pub std_max: f64,
}

/// What [`restore`] returns.
#[derive(Debug)]
pub struct Restoration {
    /// The result: the image at the rule's chosen step (the moving average of the outputs, or
    /// the raw output with `ema = 0`), or SGLD's posterior mean.
    pub image: Image,
    /// The step whose result `image` is.
    pub stopped_at: usize,
    /// Whether a rule chose that step (else the fit ran to its end, or was interrupted).
    pub chosen: bool,
    /// The rule that watched the fit, as asked for, and as it names itself.
    pub stop_kind: StopKind,
    pub stop_rule: String,
    /// The noise level the rule used (0–255 scale), given or estimated.
    pub stop_sigma: Option<f64>,
    /// What the rule was unsure of.
    pub stop_warnings: Vec<String>,
    /// PSNR and SSIM of the result against the clean image, when known (SSIM of the result as a
    /// file of the observation's bit depth holds it).
    pub psnr: Option<f64>,
    pub ssim: Option<f64>,
    /// The classical baseline's name and PSNR, when the problem has one and the clean image is
    /// known.
    pub baseline: Option<(&'static str, f64)>,
    pub sgld: Option<SgldOutcome>,
    /// The whole fit: history, timing, the last raw output, the trajectory's counters.
    pub report: FitReport,
    pub network: Arch,
    pub config: FitConfig,
    pub recipe: Recipe,
    pub operator: String,
}

/// Fits `recipe`'s network to `problem` and returns the result its stopping rule chose.
///
/// The rule is `recipe.stop.rule`; `auto` reads the problem's noise model (a given level, an
/// estimate, or noise-free). With SGLD the fit runs every step and the result is the mean of
/// the samples. A cancelled fit returns what it has, with `report.interrupted` set.
pub fn restore(problem: &Problem, recipe: &Recipe, ctx: RunContext<'_>) -> Result<Restoration> {
    recipe.validate()?;
    let (_, _, channels) = problem.result_shape();
    let network = recipe.arch(channels)?;
    let base = recipe.fit_config()?;
    let sgld = recipe.sgld_config(base.iters);
    let RunContext {
        device,
        cancel,
        mut checkpoint,
        resume,
        max_memory,
        observe_every,
        observers,
        #[cfg(feature = "cuda")]
        lanes,
    } = ctx;
    let mut config = FitConfig {
        observe_every,
        max_memory,
        cancel,
        sgld,
        device,
        #[cfg(feature = "cuda")]
        lanes,
        ..base
    };
    if let Some(state) = &resume {
        check_state(state, problem, &network, &config)?;
        config.resume = Some(state.clone());
    }
    if let Some(sink) = checkpoint.as_mut()
        && let Value::Object(meta) = &mut sink.meta
    {
        meta.insert("network".into(), json!(network.label()));
        meta.insert("iters".into(), json!(config.iters));
    }
    config.checkpoint = checkpoint;

    // SGLD averages over the whole run: no stopping rule.
    let stop_kind = if config.sgld.is_some() {
        StopKind::Fixed
    } else {
        recipe.stop.rule
    };
    let stop_cfg = StopConfig {
        sigma: match problem.noise {
            NoiseModel::Gaussian { sigma } => sigma,
            NoiseModel::NoiseFree => None,
        },
        noise_free: problem.noise == NoiseModel::NoiseFree,
        patience: recipe.stop.patience,
        ..StopConfig::default()
    };
    let mut rule = make_rule(
        stop_kind,
        &stop_cfg,
        &problem.observation,
        problem.kind == TaskKind::Denoise,
    )?;
    let mut watching: Vec<&mut dyn Observer> = Vec::with_capacity(observers.len() + 1);
    for o in observers {
        watching.push(o);
    }
    watching.push(rule.as_mut());
    let report = fit(
        &problem.observation,
        problem.operator.as_ref(),
        problem.clean.as_ref(),
        &network,
        &config,
        &mut watching,
    );
    drop(watching);
    let mut report = report?;
    let clean = problem.clean.as_ref();
    let chosen_step = take_choice(&mut report, stop_kind, rule.as_ref(), clean);
    let sgld = match (&report.sgld, &config.sgld) {
        (Some(s), Some(conf)) => {
            report.output_ema = s.mean.clone();
            report.psnr_final = clean.map(|cl| psnr(&report.output_ema.data, &cl.data));
            let max = s.std.data.iter().fold(0.0f32, |a, &b| a.max(b));
            let mean = s.std.data.iter().map(|&v| v as f64).sum::<f64>() / s.std.data.len() as f64;
            Some(SgldOutcome {
                config: *conf,
                samples: s.samples,
                std: s.std.clone(),
                std_mean: mean,
                std_max: max as f64,
            })
        }
        _ => None,
    };
    let image = report.output_ema.clone();
    let ssim = clean.map(|c| ssim(&image::quantize(&image, image.bit_depth), c));
    let rule_stopped = stop_kind != StopKind::Fixed && !report.interrupted;
    // The classical result, made once: scored against the clean image, and compared with the
    // result on the measurements.
    let classical = if clean.is_some() || (rule_stopped && problem.baseline_fits_the_data()) {
        problem.baseline()?
    } else {
        None
    };
    let baseline = match (clean, &classical) {
        (Some(c), Some((name, b))) => Some((*name, psnr(&b.data, &c.data))),
        _ => None,
    };
    let mut stop_warnings = if rule_stopped {
        rule.warnings()
    } else {
        Vec::new()
    };
    // No clean image is needed to see that a rule stopped before the network explained the
    // measurements as well as the classical estimate does (seen with `auto` on sparse-view CT,
    // which chose step 510 at 21.6 dB where FBP gives 25.0 and step 3000 gives 33.8).
    if rule_stopped
        && problem.baseline_fits_the_data()
        && let Some((name, b)) = &classical
    {
        let (ours, theirs) = (
            problem.relative_residual(&image),
            problem.relative_residual(b),
        );
        if ours > theirs {
            stop_warnings.push(format!(
                "the result explains the measurements less well than {name} does (relative \
                 residual {ours:.3} against {theirs:.3}): the {} rule stopped at step {} before \
                 the fit reached the data; rerun with --stop fixed and more steps",
                rule.name(),
                chosen_step.unwrap_or(report.iterations_run)
            ));
        }
    }
    Ok(Restoration {
        image,
        stopped_at: chosen_step.unwrap_or(report.iterations_run),
        chosen: chosen_step.is_some(),
        stop_kind,
        stop_rule: rule.name(),
        stop_sigma: rule.sigma().map(|s| s * 255.0),
        stop_warnings,
        psnr: report.psnr_final,
        ssim,
        baseline,
        sgld,
        report,
        network,
        config,
        recipe: recipe.clone(),
        operator: problem.operator.name(),
    })
}

/// Errors unless `state` can continue a fit of `recipe`'s network on `problem`: the same
/// network, image size, operator and settings. [`restore`] checks this itself; a front end may
/// check first, to refuse before it says anything.
pub fn check_resumable(problem: &Problem, recipe: &Recipe, state: &FitState) -> Result<()> {
    let network = recipe.arch(problem.result_shape().2)?;
    let base = recipe.fit_config()?;
    let config = FitConfig {
        sgld: recipe.sgld_config(base.iters),
        ..base
    };
    check_state(state, problem, &network, &config)
}

fn check_state(
    state: &FitState,
    problem: &Problem,
    network: &Arch,
    config: &FitConfig,
) -> Result<()> {
    // A checkpoint that says it holds another network (a preset changed since, or an edited
    // file) is refused before its arrays are used.
    if let Some(net) = state.meta["network"].as_str()
        && net != network.label()
    {
        return Err(Error::invalid(format!(
            "the checkpoint is of a {net} network, this run builds a {} network",
            network.label()
        )));
    }
    check_resume(state, problem.operator.as_ref(), network, config)
}

/// Makes the result of a fit watched by `rule` the image at the rule's chosen step (the last
/// step's with `fixed` or without a choice), with its PSNR; returns the chosen step.
fn take_choice(
    report: &mut FitReport,
    kind: StopKind,
    rule: &dyn StopRule,
    clean: Option<&Image>,
) -> Option<usize> {
    match (kind, rule.chosen()) {
        (StopKind::Fixed, _) | (_, None) => None,
        (_, Some(c)) => {
            report.output_ema = c.image.clone().with_bit_depth(report.output_ema.bit_depth);
            report.psnr_final = clean.map(|cl| psnr(&report.output_ema.data, &cl.data));
            Some(c.step)
        }
    }
}

/// The JSON summary of a fit: the report's fields, the settings, the network, the version, and
/// `extra` fields.
fn fit_summary(
    report: &FitReport,
    config: &FitConfig,
    network: &Arch,
    extra: Vec<(&str, Value)>,
) -> Result<Value> {
    let mut value = serde_json::to_value(report).map_err(|e| Error::invalid(e.to_string()))?;
    let Value::Object(map) = &mut value else {
        return Err(Error::invalid(
            "internal: the fit report does not serialise to a JSON object",
        ));
    };
    for (k, v) in extra {
        map.insert(k.to_string(), v);
    }
    map.insert(
        "config".to_string(),
        serde_json::to_value(config).map_err(|e| Error::invalid(e.to_string()))?,
    );
    map.insert(
        "network".to_string(),
        serde_json::to_value(network).map_err(|e| Error::invalid(e.to_string()))?,
    );
    map.insert("version".to_string(), json!(env!("CARGO_PKG_VERSION")));
    Ok(value)
}

impl Restoration {
    /// The JSON summary: the fit's, the recipe, the operator, the stop, SGLD's spread, the
    /// baseline, and `extra` fields (a front end's: paths, the command, the preset).
    pub fn summary(&self, extra: Vec<(&str, Value)>) -> Result<Value> {
        let sgld = match &self.sgld {
            Some(s) => json!({
                "samples": s.samples,
                "burn_in": s.config.burn_in,
                "sample_every": s.config.sample_every,
                "noise": s.config.noise,
                "weight_decay": s.config.weight_decay,
                "std_mean": s.std_mean,
                "std_max": s.std_max,
            }),
            None => Value::Null,
        };
        let mut fields: Vec<(&str, Value)> = vec![
            ("operator", json!(self.operator)),
            (
                "recipe",
                serde_json::to_value(&self.recipe).map_err(|e| Error::invalid(e.to_string()))?,
            ),
            ("ssim_final", json!(self.ssim)),
            ("stop_rule", json!(self.stop_rule)),
            ("stopped_at", json!(self.stopped_at)),
            ("stop_sigma", json!(self.stop_sigma)),
            ("stop_warnings", json!(self.stop_warnings)),
            ("sgld", sgld),
        ];
        if let Some((name, p)) = self.baseline {
            fields.push(("baseline", json!({"name": name, "psnr": p})));
        }
        fields.extend(extra);
        fit_summary(&self.report, &self.config, &self.network, fields)
    }
}

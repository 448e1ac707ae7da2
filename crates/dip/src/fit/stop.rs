//! Stopping rules: choose the step to return without the clean image.
//!
//! Each rule is an [`Observer`]: it sees the fit every `observe_every` steps, keeps the result
//! image (the EMA output) at the step it currently favours, and asks the loop to stop once it is
//! sure, `patience` steps after its choice. [`StopRule::chosen`] then gives the step and image.
//!
//! - `fixed`: never stops early; the choice is the last step.
//! - `wmv` (Wang et al., ES-WMV): the variance of the outputs over a sliding window of `window`
//!   steps (the mean over the window of the per-sample squared distance to the window mean).
//!   It falls while the network converges to the image and rises once noise is fitted; the
//!   choice is its minimum, final after `patience` steps without a new minimum.
//! - `emv`: the same with exponential moving averages instead of a window (Wang et al.'s
//!   memory-light variant).
//! - `discrepancy` (Morozov): the first step where the mean squared residual to the
//!   observation reaches the noise variance σ²; fitting closer than the noise means fitting it.
//! - `spectral`: the discrepancy principle restricted to the highest radial frequency bands,
//!   where white noise dominates the observation. If the output were the clean image, its
//!   residual in those bands would be the noise alone, so the fitted fraction
//!   `r_H = 1 − E_H(x − y)/E_H(y)` would equal the signal share `s_H = 1 − E_H(n)/E_H(y)`, with
//!   `E_H(n)` the energy white noise of variance σ² puts there. The rule stops when `r_H`
//!   first reaches `s_H`: past that point the output explains more of those bands than the
//!   signal holds. The low bands, fitted first and dominated by signal, do not dilute the test
//!   as they do the global residual.
//!
//! - `auto` (the default): the discrepancy principle's step (denoising, σ estimated) or `wmv`'s
//!   (other tasks), with the result taken 200 (300 after `wmv`) steps later.
//!   Every rule watches the raw output, and the raw output's best step comes before that of its
//!   moving average, which is the result: on CSet9 and Set12 crops the rules' own steps lost
//!   1.9–5.7 dB to the oracle on average, most of it this lag (docs/STOPPING.md).
//!
//! `discrepancy` and `spectral` need σ (given, or [`estimate_sigma`]) and suit denoising (the
//! identity operator). `wmv`, `emv` and `auto` suit every operator.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::observer::{Control, Observer, ObserverState, StepInfo};
use crate::image::Image;
pub use crate::sigma::estimate_sigma;
use crate::spectral::analysis::{BandTracker, band_energy};
use crate::spectral::bands::Bands;
use crate::spectral::{BandSpacing, fft::Fft2d};
use crate::{Error, Result};

/// Which stopping rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StopKind {
    Fixed,
    Wmv,
    Emv,
    Discrepancy,
    Spectral,
    /// The default: the discrepancy principle's step plus the lag of the moving average (200
    /// steps) when denoising, else `wmv`'s plus 300; chosen on the public data
    /// (docs/STOPPING.md).
    Auto,
}

impl std::str::FromStr for StopKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "fixed" => StopKind::Fixed,
            "wmv" => StopKind::Wmv,
            "emv" => StopKind::Emv,
            "discrepancy" => StopKind::Discrepancy,
            "spectral" => StopKind::Spectral,
            "auto" => StopKind::Auto,
            _ => {
                return Err(Error::invalid(format!(
                    "unknown stopping rule '{s}'; the rules are fixed, wmv, emv, discrepancy, \
                     spectral, auto"
                )));
            }
        })
    }
}

impl std::fmt::Display for StopKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopKind::Fixed => "fixed",
            StopKind::Wmv => "wmv",
            StopKind::Emv => "emv",
            StopKind::Discrepancy => "discrepancy",
            StopKind::Spectral => "spectral",
            StopKind::Auto => "auto",
        })
    }
}

/// Settings of the rules.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StopConfig {
    /// Window of `wmv`, in steps (`emv` waits this long before trusting its average).
    pub window: usize,
    /// Weight of each step in `emv`'s moving averages.
    pub emv_alpha: f64,
    /// Steps without a better choice before a rule is sure.
    pub patience: usize,
    /// Noise std in [0, 1] units; estimated from the observation when `None`.
    pub sigma: Option<f64>,
    /// Number of radial bands of `spectral`, and how many of the highest it tests.
    pub bands: usize,
    pub high_bands: usize,
    /// `auto`: steps past the underlying rule's choice at which the result (the output's
    /// moving average, which lags the raw output) is taken [default: [`AUTO_DELAY`] after the
    /// discrepancy principle, [`AUTO_DELAY_WMV`] after `wmv`].
    pub auto_delay: Option<usize>,
    /// The observation carries no noise (inpainting of a clean image, say): `auto` has nothing
    /// to overfit and runs until the data residual stops improving (see [`PLATEAU_DROP`]).
    /// Also assumed when no σ is given and the estimated σ is below [`NOISE_FREE_SIGMA`].
    pub noise_free: bool,
}

impl Default for StopConfig {
    fn default() -> Self {
        StopConfig {
            window: 100,
            emv_alpha: 0.1,
            patience: 200,
            sigma: None,
            bands: 8,
            high_bands: 3,
            auto_delay: None,
            noise_free: false,
        }
    }
}

/// `auto`'s delay after the discrepancy principle (denoising), chosen on the public data
/// (docs/STOPPING.md).
pub const AUTO_DELAY: usize = 200;
/// `auto`'s delay after `wmv` (other tasks), whose choice is earlier and less steady.
pub const AUTO_DELAY_WMV: usize = 300;
/// `auto` (denoising) warns when the estimate over all patches exceeds the weak-texture
/// estimate it uses by more than this factor: the image holds texture one of them reads as
/// noise. On the 64–128 pixel noisy crops of the images the rules were chosen on, the ratio
/// never exceeded 1.28 at σ ≥ 15 (95th percentile 1.13; docs/STOPPING.md).
pub const ESTIMATES_DISAGREE: f64 = 1.3;
/// Below this estimated noise std (3 8-bit levels) an observation counts as noise-free: the
/// estimator reads a median 1.8 on clean 64–128 pixel crops of the public photos (many carry
/// grain of their own) and 5 on σ = 5 (docs/STOPPING.md), and noise this weak costs little if
/// it is fitted.
pub const NOISE_FREE_SIGMA: f64 = 3.0 / 255.0;
/// `auto` on a noise-free observation ends when the smallest data residual so far fell by less
/// than this fraction over the second half of the steps run (a power-law decay slower than
/// `t^-0.15`): later steps would still fit, but buy almost nothing.
pub const PLATEAU_DROP: f64 = 0.1;
/// …and never before this step.
pub const PLATEAU_MIN_STEPS: usize = 400;

/// A rule's choice.
#[derive(Debug, Clone)]
pub struct Chosen {
    pub step: usize,
    /// The result image (the fit's EMA output) at that step.
    pub image: Image,
}

/// Keeps the result of the step `info` describes in `slot`, reusing its buffer.
fn keep_latest(slot: &mut Option<Chosen>, info: &StepInfo<'_>) {
    match slot {
        Some(l) if l.image.data.len() == info.ema.data.len() => {
            l.step = info.iter;
            l.image.data.copy_from_slice(&info.ema.data);
        }
        _ => {
            *slot = Some(Chosen {
                step: info.iter,
                image: info.ema.clone(),
            })
        }
    }
}

/// A stopping rule.
pub trait StopRule: Observer {
    /// The rule's name (`wmv`, `spectral`, …).
    fn name(&self) -> String;
    /// The current choice: final once the rule has asked the fit to stop, or at the end.
    fn chosen(&self) -> Option<&Chosen>;
    /// The σ the rule used, if it uses one.
    fn sigma(&self) -> Option<f64> {
        None
    }
    /// What the user should know about the choice, at the end of the run: the rule was not yet
    /// sure when the step limit came, or its parts disagreed. Empty when all went as designed.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
}

/// The rule of `kind` for a fit of `observation`. `denoising` says whether the observation is
/// the image plus white noise (the identity operator), which `discrepancy` and `spectral` need;
/// `auto` picks by it.
pub fn make_rule(
    kind: StopKind,
    cfg: &StopConfig,
    observation: &Image,
    denoising: bool,
) -> Result<Box<dyn StopRule>> {
    if kind == StopKind::Auto {
        // A noise-free observation has no noise to overfit: run until the fit stops improving.
        // (A mask's observation holds its holes, which no estimator should read: the caller
        // says `noise_free` there.)
        if cfg.noise_free {
            return Ok(Box::new(Plateau::new()));
        }
        let sigma = cfg.sigma.unwrap_or_else(|| estimate_sigma(observation));
        if cfg.sigma.is_none() && sigma < NOISE_FREE_SIGMA {
            return Ok(Box::new(Plateau::new()));
        }
        if !denoising {
            let inner = make_rule(StopKind::Wmv, cfg, observation, denoising)?;
            return Ok(Box::new(Lagged::new(
                inner,
                cfg.auto_delay.unwrap_or(AUTO_DELAY_WMV),
                Vec::new(),
            )));
        }
        // Denoising: the discrepancy principle on the estimated σ (the weak-texture estimator,
        // which texture lifts far less than the Haar one). Cross-checks by the output variance
        // were measured and dropped: `wmv`'s minimum is erratic both ways (docs/STOPPING.md).
        // What can still go wrong is said: when the estimators read the noise level very
        // differently, the image holds texture that one of them takes for noise.
        let cfg_d = StopConfig {
            sigma: Some(sigma),
            ..*cfg
        };
        let mut warnings = Vec::new();
        if cfg.sigma.is_none() {
            let all_patches = crate::sigma::sigma_pca(observation);
            if all_patches > ESTIMATES_DISAGREE * sigma {
                warnings.push(format!(
                    "the noise level is uncertain: {:.1} from the image's flattest patches, {:.1} \
                     from all of them (texture that looks like noise?). The result relies on the \
                     first; if it looks noisy, give the level with --stop-sigma",
                    sigma * 255.0,
                    all_patches * 255.0
                ));
            }
        }
        let inner = make_rule(StopKind::Discrepancy, &cfg_d, observation, true)?;
        return Ok(Box::new(Lagged::new(
            inner,
            cfg.auto_delay.unwrap_or(AUTO_DELAY),
            warnings,
        )));
    }
    if matches!(kind, StopKind::Discrepancy | StopKind::Spectral) && !denoising {
        return Err(Error::invalid(format!(
            "the {kind} stopping rule needs a noisy image as the observation (denoising); use \
             wmv or emv"
        )));
    }
    if !(cfg.emv_alpha > 0.0 && cfg.emv_alpha <= 1.0) {
        return Err(Error::invalid("the emv weight must be in (0, 1]"));
    }
    if cfg.window == 0 {
        return Err(Error::invalid(
            "the stopping window must be at least 1 step",
        ));
    }
    let sigma = || -> Result<f64> {
        let s = match cfg.sigma {
            Some(s) => s,
            None => estimate_sigma(observation),
        };
        if !(s.is_finite() && s > 0.0) {
            return Err(Error::invalid(format!(
                "the noise level must be positive, got {s}"
            )));
        }
        Ok(s)
    };
    Ok(match kind {
        StopKind::Fixed => Box::new(Fixed { last: None }),
        StopKind::Wmv => Box::new(Wmv::new(cfg.window, cfg.patience)),
        StopKind::Emv => Box::new(Emv::new(cfg.emv_alpha, cfg.window, cfg.patience)),
        StopKind::Discrepancy => Box::new(Discrepancy {
            sigma: sigma()?,
            chosen: None,
        }),
        StopKind::Spectral => Box::new(Spectral::new(observation, sigma()?, cfg)?),
        StopKind::Auto => unreachable!("resolved above"),
    })
}

/// `auto`: another rule's choice, taken `delay` steps later. The rules watch the raw output,
/// whose best step comes before that of its moving average (the result): the average lags by
/// about its time constant (100 steps for a weight of 0.99). So the result is taken at the
/// underlying rule's step plus `delay`, and the run ends there (or when the rule is sure,
/// whichever is later).
struct Lagged {
    inner: Box<dyn StopRule>,
    delay: usize,
    /// The inner rule asked to stop: its choice is final and it sees nothing more.
    inner_done: bool,
    /// The inner rule's current choice, and the result taken `delay` steps after it.
    candidate: Option<usize>,
    captured: Option<Chosen>,
    /// The latest result after the candidate, in case the run ends before the delay is over
    /// (its buffer is reused from one observed step to the next).
    latest: Option<Chosen>,
    /// Known at the start: what the user should know about this run's choice.
    warnings: Vec<String>,
}

impl Lagged {
    fn new(inner: Box<dyn StopRule>, delay: usize, warnings: Vec<String>) -> Self {
        Lagged {
            inner,
            delay,
            inner_done: false,
            candidate: None,
            captured: None,
            latest: None,
            warnings,
        }
    }

    /// The inner rule is sure and the delayed result is taken: the run can end.
    fn done(&self) -> bool {
        self.inner_done && self.captured.is_some()
    }
}

impl Observer for Lagged {
    fn observe(&mut self, info: &StepInfo<'_>) -> Control {
        if self.done() {
            return Control::Stop;
        }
        if !self.inner_done && self.inner.observe(info) == Control::Stop {
            self.inner_done = true;
        }
        let c = self.inner.chosen().map(|c| c.step);
        if c != self.candidate {
            self.candidate = c;
            self.captured = None;
            self.latest = None;
        }
        if let Some(cs) = self.candidate
            && self.captured.is_none()
            && (info.iter > cs || info.iter >= cs + self.delay)
        {
            keep_latest(&mut self.latest, info);
            if info.iter >= cs + self.delay {
                self.captured = self.latest.take();
            }
        }
        if self.done() {
            return Control::Stop;
        }
        Control::Continue
    }
    fn save_state(&self) -> Option<ObserverState> {
        let inner = self.inner.save_state().unwrap_or_default();
        let n = inner.arrays.len();
        let mut e = Enc {
            arrays: inner.arrays,
            ..Enc::default()
        };
        e.val("inner", &inner.meta);
        e.val("inner_arrays", n);
        e.val("inner_done", self.inner_done);
        e.val("candidate", self.candidate);
        e.chosen("captured", self.captured.as_ref());
        e.chosen("latest", self.latest.as_ref());
        e.finish()
    }
    fn load_state(&mut self, st: &ObserverState) -> Result<()> {
        let d = Dec(st);
        let n: usize = d.val("inner_arrays")?;
        let inner = ObserverState {
            meta: d.val("inner")?,
            arrays: st
                .arrays
                .get(..n)
                .ok_or_else(|| bad_state("inner"))?
                .to_vec(),
        };
        self.inner.load_state(&inner)?;
        self.inner_done = d.val("inner_done")?;
        self.candidate = d.val("candidate")?;
        self.captured = d.chosen("captured")?;
        self.latest = d.chosen("latest")?;
        Ok(())
    }
}

impl StopRule for Lagged {
    fn name(&self) -> String {
        format!("auto({} + {})", self.inner.name(), self.delay)
    }
    fn chosen(&self) -> Option<&Chosen> {
        self.captured
            .as_ref()
            .or(self.latest.as_ref())
            .or_else(|| self.inner.chosen())
    }
    fn sigma(&self) -> Option<f64> {
        self.inner.sigma()
    }
    fn warnings(&self) -> Vec<String> {
        let inner = self.inner.name();
        let mut w = self.warnings.clone();
        w.extend(
            match (
                self.inner_done,
                self.inner.chosen(),
                self.captured.is_some(),
            ) {
                (_, None, _) => vec![format!(
                    "{inner} chose no step before the step limit{}: the result is the last step's; \
                 raise --iters",
                    self.inner
                        .sigma()
                        .map(|s| format!(
                            " (the residual never reached the estimated noise level, {:.1})",
                            s * 255.0
                        ))
                        .unwrap_or_default()
                )],
                (false, Some(c), _) | (_, Some(c), false) => vec![format!(
                    "the step limit came before {inner} was sure of its choice (step {}): raise \
                 --iters to let it finish",
                    c.step
                )],
                _ => Vec::new(),
            },
        );
        w
    }
}

/// `auto` on a noise-free observation: the latest result, until the smallest data residual so
/// far has fallen by less than [`PLATEAU_DROP`] over the second half of the steps run.
struct Plateau {
    /// (step, smallest loss up to that step) at each observation.
    mins: Vec<(usize, f64)>,
    last: Option<Chosen>,
    done: bool,
}

impl Plateau {
    fn new() -> Self {
        Plateau {
            mins: Vec::new(),
            last: None,
            done: false,
        }
    }
}

impl Observer for Plateau {
    fn observe(&mut self, info: &StepInfo<'_>) -> Control {
        if self.done {
            return Control::Stop;
        }
        keep_latest(&mut self.last, info);
        let min = self
            .mins
            .last()
            .map_or(info.loss, |&(_, m)| m.min(info.loss));
        self.mins.push((info.iter, min));
        if info.iter >= PLATEAU_MIN_STEPS {
            let half = info.iter / 2;
            // The steps are increasing: the last observation at or before half the run.
            let at_half = self
                .mins
                .partition_point(|&(s, _)| s <= half)
                .checked_sub(1)
                .map(|i| self.mins[i].1);
            if let Some(h) = at_half
                && min.is_finite()
                && min >= (1.0 - PLATEAU_DROP) * h
            {
                self.done = true;
                return Control::Stop;
            }
        }
        Control::Continue
    }
    fn save_state(&self) -> Option<ObserverState> {
        let mut e = Enc::default();
        e.array("steps", self.mins.iter().map(|&(s, _)| s as f64).collect());
        e.array("mins", self.mins.iter().map(|&(_, m)| m).collect());
        e.chosen("last", self.last.as_ref());
        e.val("done", self.done);
        e.finish()
    }
    fn load_state(&mut self, st: &ObserverState) -> Result<()> {
        let d = Dec(st);
        let steps = d.array("steps")?;
        let mins = d.array("mins")?;
        if steps.len() != mins.len() {
            return Err(bad_state("mins"));
        }
        self.mins = steps.iter().map(|&s| s as usize).zip(mins).collect();
        self.last = d.chosen("last")?;
        self.done = d.val("done")?;
        Ok(())
    }
}

impl StopRule for Plateau {
    fn name(&self) -> String {
        "auto(plateau)".into()
    }
    fn chosen(&self) -> Option<&Chosen> {
        self.last.as_ref()
    }
    fn warnings(&self) -> Vec<String> {
        if self.done {
            Vec::new()
        } else {
            vec![
                "the data residual was still falling at the step limit: more --iters may \
                  improve the result"
                    .into(),
            ]
        }
    }
}

struct Fixed {
    last: Option<Chosen>,
}

impl Observer for Fixed {
    fn observe(&mut self, info: &StepInfo<'_>) -> Control {
        self.last = Some(Chosen {
            step: info.iter,
            image: info.ema.clone(),
        });
        Control::Continue
    }
    fn save_state(&self) -> Option<ObserverState> {
        let mut e = Enc::default();
        e.chosen("last", self.last.as_ref());
        e.finish()
    }
    fn load_state(&mut self, st: &ObserverState) -> Result<()> {
        self.last = Dec(st).chosen("last")?;
        Ok(())
    }
}

impl StopRule for Fixed {
    fn name(&self) -> String {
        "fixed".into()
    }
    fn chosen(&self) -> Option<&Chosen> {
        self.last.as_ref()
    }
}

/// Keeps the best-scoring step so far and stops after `patience` steps without a better one.
struct Minimum {
    best: Option<(f64, Chosen)>,
    patience: usize,
}

impl Minimum {
    fn offer(&mut self, score: f64, info: &StepInfo<'_>) -> Control {
        if score.is_finite() && self.best.as_ref().is_none_or(|(b, _)| score < *b) {
            match &mut self.best {
                Some((b, c)) => {
                    *b = score;
                    c.step = info.iter;
                    c.image.data.copy_from_slice(&info.ema.data);
                }
                None => {
                    self.best = Some((
                        score,
                        Chosen {
                            step: info.iter,
                            image: info.ema.clone(),
                        },
                    ))
                }
            }
        }
        match &self.best {
            Some((_, c)) if info.iter >= c.step + self.patience => Control::Stop,
            _ => Control::Continue,
        }
    }
}

/// ES-WMV: the windowed moving variance of the raw outputs, kept as running sums so that each
/// observation costs O(pixels) whatever the window.
struct Wmv {
    window: usize,
    frames: std::collections::VecDeque<(usize, Vec<f32>)>,
    sum: Vec<f64>,
    sum_sq: f64,
    first_seen: Option<usize>,
    min: Minimum,
    /// The variance at each observation once the window is full: (step, variance).
    pub history: Vec<(usize, f64)>,
}

impl Wmv {
    fn new(window: usize, patience: usize) -> Self {
        Wmv {
            window,
            frames: Default::default(),
            sum: Vec::new(),
            sum_sq: 0.0,
            first_seen: None,
            min: Minimum {
                best: None,
                patience,
            },
            history: Vec::new(),
        }
    }

    /// Mean over the window of the per-sample squared distance to the window mean.
    fn variance(&self) -> f64 {
        let n = self.frames.len() as f64;
        let m = self.sum.len() as f64;
        let sq_of_mean: f64 = self.sum.iter().map(|s| s * s).sum::<f64>() / n;
        ((self.sum_sq - sq_of_mean) / (n * m)).max(0.0)
    }
}

impl Observer for Wmv {
    fn observe(&mut self, info: &StepInfo<'_>) -> Control {
        let x = &info.output.data;
        if self.sum.len() != x.len() {
            self.sum = vec![0.0; x.len()];
        }
        // Frames older than the window leave it.
        while let Some((s, _)) = self.frames.front() {
            if *s + self.window <= info.iter {
                let (_, old) = self.frames.pop_front().expect("a frame");
                for (a, &v) in self.sum.iter_mut().zip(&old) {
                    *a -= v as f64;
                }
                self.sum_sq -= old.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>();
            } else {
                break;
            }
        }
        for (a, &v) in self.sum.iter_mut().zip(x) {
            *a += v as f64;
        }
        self.sum_sq += x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>();
        self.frames.push_back((info.iter, x.clone()));
        // Only a full window gives a comparable variance: the frames must span `window` steps
        // (each frame stands for the `gap` steps up to it).
        let gap = self
            .frames
            .len()
            .checked_sub(2)
            .map_or(0, |i| info.iter - self.frames[i].0);
        let first = *self.first_seen.get_or_insert(info.iter);
        if self.frames.len() < 2 || info.iter + gap < first + self.window {
            return Control::Continue;
        }
        let v = self.variance();
        self.history.push((info.iter, v));
        self.min.offer(v, info)
    }
    fn save_state(&self) -> Option<ObserverState> {
        let mut e = Enc::default();
        e.val(
            "frame_steps",
            self.frames.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        );
        for (i, (_, f)) in self.frames.iter().enumerate() {
            e.array(&format!("frame{i}"), f.iter().map(|&v| v as f64).collect());
        }
        e.array("sum", self.sum.clone());
        e.val("sum_sq", self.sum_sq);
        e.val("first_seen", self.first_seen);
        e.val("history", &self.history);
        self.min.save(&mut e);
        e.finish()
    }
    fn load_state(&mut self, st: &ObserverState) -> Result<()> {
        let d = Dec(st);
        let steps: Vec<usize> = d.val("frame_steps")?;
        self.frames = steps
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                let f = d.array(&format!("frame{i}"))?;
                Ok((s, f.iter().map(|&v| v as f32).collect()))
            })
            .collect::<Result<_>>()?;
        self.sum = d.array("sum")?;
        self.sum_sq = d.val("sum_sq")?;
        self.first_seen = d.val("first_seen")?;
        self.history = d.val("history")?;
        self.min.load(&d)
    }
}

impl StopRule for Wmv {
    fn name(&self) -> String {
        "wmv".into()
    }
    fn chosen(&self) -> Option<&Chosen> {
        self.min.best.as_ref().map(|(_, c)| c)
    }
}

/// The exponential-moving variant: `m ← m + α(x − m)`, `v ← (1 − α)(v + α‖x − m_old‖²/n)`,
/// with Wang et al.'s `α` of 0.1 per step, compounded over the steps between observations
/// (`1 − 0.9^Δt`). A slower average would remember the early transient for hundreds of steps
/// and find its minimum late.
struct Emv {
    alpha: f64,
    window: usize,
    mean: Vec<f64>,
    var: f64,
    last_step: usize,
    seen: usize,
    min: Minimum,
}

impl Emv {
    fn new(alpha: f64, window: usize, patience: usize) -> Self {
        Emv {
            alpha,
            window,
            mean: Vec::new(),
            var: 0.0,
            last_step: 0,
            seen: 0,
            min: Minimum {
                best: None,
                patience,
            },
        }
    }
}

impl Observer for Emv {
    fn observe(&mut self, info: &StepInfo<'_>) -> Control {
        let x = &info.output.data;
        if self.mean.len() != x.len() {
            self.mean = x.iter().map(|&v| v as f64).collect();
            self.last_step = info.iter;
            self.seen = 1;
            return Control::Continue;
        }
        let dt = (info.iter - self.last_step).max(1);
        self.last_step = info.iter;
        let a = 1.0 - (1.0 - self.alpha).powi(dt as i32);
        let mut d2 = 0.0;
        for (m, &v) in self.mean.iter_mut().zip(x) {
            let d = v as f64 - *m;
            d2 += d * d;
            *m += a * d;
        }
        self.var = (1.0 - a) * (self.var + a * d2 / x.len() as f64);
        self.seen += 1;
        // Let the average forget its start (one time constant) before trusting it.
        if self.seen * dt < self.window {
            return Control::Continue;
        }
        self.min.offer(self.var, info)
    }
    fn save_state(&self) -> Option<ObserverState> {
        let mut e = Enc::default();
        e.array("mean", self.mean.clone());
        e.val("var", self.var);
        e.val("last_step", self.last_step);
        e.val("seen", self.seen);
        self.min.save(&mut e);
        e.finish()
    }
    fn load_state(&mut self, st: &ObserverState) -> Result<()> {
        let d = Dec(st);
        self.mean = d.array("mean")?;
        self.var = d.val("var")?;
        self.last_step = d.val("last_step")?;
        self.seen = d.val("seen")?;
        self.min.load(&d)
    }
}

impl StopRule for Emv {
    fn name(&self) -> String {
        "emv".into()
    }
    fn chosen(&self) -> Option<&Chosen> {
        self.min.best.as_ref().map(|(_, c)| c)
    }
}

/// Morozov's discrepancy principle on the fit's loss (the mean squared residual to the
/// observation of the step's output).
struct Discrepancy {
    sigma: f64,
    chosen: Option<Chosen>,
}

impl Observer for Discrepancy {
    fn observe(&mut self, info: &StepInfo<'_>) -> Control {
        if self.chosen.is_some() {
            return Control::Stop;
        }
        if info.loss <= self.sigma * self.sigma {
            self.chosen = Some(Chosen {
                step: info.iter,
                image: info.ema.clone(),
            });
            return Control::Stop;
        }
        Control::Continue
    }
    fn save_state(&self) -> Option<ObserverState> {
        let mut e = Enc::default();
        e.chosen("chosen", self.chosen.as_ref());
        e.finish()
    }
    fn load_state(&mut self, st: &ObserverState) -> Result<()> {
        self.chosen = Dec(st).chosen("chosen")?;
        Ok(())
    }
}

impl StopRule for Discrepancy {
    fn name(&self) -> String {
        "discrepancy".into()
    }
    fn chosen(&self) -> Option<&Chosen> {
        self.chosen.as_ref()
    }
    fn sigma(&self) -> Option<f64> {
        Some(self.sigma)
    }
}

/// The spectral rule (see the module documentation).
struct Spectral {
    tracker: BandTracker,
    sigma: f64,
    /// E_b(y) of the observation per band.
    energy: Vec<f64>,
    high: std::ops::Range<usize>,
    /// The signal share of the high bands.
    share: f64,
    chosen: Option<Chosen>,
    /// (step, r_H) at each observation.
    pub history: Vec<(usize, f64)>,
}

impl Spectral {
    fn new(observation: &Image, sigma: f64, cfg: &StopConfig) -> Result<Self> {
        let (w, h, c) = (observation.width, observation.height, observation.channels);
        if cfg.bands == 0 || cfg.high_bands == 0 || cfg.high_bands > cfg.bands {
            return Err(Error::invalid(
                "the spectral rule needs 1 <= high bands <= bands",
            ));
        }
        let bands: Arc<Bands> = Bands::cached(w, h, cfg.bands, BandSpacing::Linear)?;
        let tracker = BandTracker::new(bands.clone(), observation, None)?;
        let energy = tracker.observation_energy().to_vec();
        // The band energies of white noise of unit variance: Σ|F|²/N per bin is the variance,
        // so a band holds (bins in the band) × (channels) × σ², up to how the real FFT counts
        // bins; measure it on the same transform instead of assuming.
        let mut fft = Fft2d::new(w, h)?;
        let unit = white_noise_energy(&mut fft, &bands, w, h, c)?;
        let high = cfg.bands - cfg.high_bands..cfg.bands;
        let ey: f64 = energy[high.clone()].iter().sum();
        let en: f64 = unit[high.clone()].iter().sum::<f64>() * sigma * sigma;
        let share = if ey > 0.0 {
            (1.0 - en / ey).max(0.0)
        } else {
            0.0
        };
        Ok(Spectral {
            tracker,
            sigma,
            energy,
            high,
            share,
            chosen: None,
            history: Vec::new(),
        })
    }
}

/// The expected band energies of unit-variance white noise on a `w × h × c` grid: the exact
/// expectation, per bin, of `|F|²/N` for i.i.d. unit samples is 1, so this is the band energy of
/// an image whose spectrum has unit magnitude everywhere — computed from the FFT of a delta,
/// whose spectrum is flat, scaled by N.
fn white_noise_energy(
    fft: &mut Fft2d,
    bands: &Bands,
    w: usize,
    h: usize,
    c: usize,
) -> Result<Vec<f64>> {
    let mut delta = vec![0.0f32; w * h * c];
    delta[..c].fill(1.0);
    let s = fft.forward_data(&delta, c)?;
    let e = band_energy(&s, bands)?.total;
    Ok(e.iter().map(|v| v * (w * h) as f64).collect())
}

impl Observer for Spectral {
    fn observe(&mut self, info: &StepInfo<'_>) -> Control {
        if self.chosen.is_some() {
            return Control::Stop;
        }
        let Ok(fit) = self.tracker.observe(info.output) else {
            return Control::Continue;
        };
        let ey: f64 = self.energy[self.high.clone()].iter().sum();
        let err: f64 = self
            .high
            .clone()
            .map(|b| (1.0 - fit.fit[b]) * self.energy[b])
            .filter(|v| v.is_finite())
            .sum();
        let r = if ey > 0.0 { 1.0 - err / ey } else { 0.0 };
        self.history.push((info.iter, r));
        if r >= self.share {
            self.chosen = Some(Chosen {
                step: info.iter,
                image: info.ema.clone(),
            });
            return Control::Stop;
        }
        Control::Continue
    }
    fn save_state(&self) -> Option<ObserverState> {
        let mut e = Enc::default();
        e.chosen("chosen", self.chosen.as_ref());
        e.val("history", &self.history);
        e.finish()
    }
    fn load_state(&mut self, st: &ObserverState) -> Result<()> {
        let d = Dec(st);
        self.chosen = d.chosen("chosen")?;
        self.history = d.val("history")?;
        Ok(())
    }
}

impl StopRule for Spectral {
    fn name(&self) -> String {
        "spectral".into()
    }
    fn chosen(&self) -> Option<&Chosen> {
        self.chosen.as_ref()
    }
    fn sigma(&self) -> Option<f64> {
        Some(self.sigma)
    }
}

/// Writes a rule's state: scalars into JSON, images and sums into arrays.
#[derive(Default)]
struct Enc {
    meta: serde_json::Map<String, serde_json::Value>,
    arrays: Vec<Vec<f64>>,
}

impl Enc {
    fn val(&mut self, k: &str, v: impl serde::Serialize) {
        self.meta.insert(
            k.into(),
            serde_json::to_value(v).expect("a state value serialises"),
        );
    }
    fn array(&mut self, k: &str, a: Vec<f64>) {
        self.val(k, self.arrays.len());
        self.arrays.push(a);
    }
    fn chosen(&mut self, k: &str, c: Option<&Chosen>) {
        match c {
            Some(c) => {
                self.val(
                    k,
                    serde_json::json!({
                        "step": c.step, "w": c.image.width, "h": c.image.height,
                        "c": c.image.channels, "at": self.arrays.len()
                    }),
                );
                self.arrays
                    .push(c.image.data.iter().map(|&v| v as f64).collect());
            }
            None => self.val(k, serde_json::Value::Null),
        }
    }
    fn finish(self) -> Option<ObserverState> {
        Some(ObserverState {
            meta: serde_json::Value::Object(self.meta),
            arrays: self.arrays,
        })
    }
}

/// Reads what [`Enc`] wrote, with errors instead of panics for a damaged checkpoint.
struct Dec<'a>(&'a ObserverState);

fn bad_state(k: &str) -> Error {
    Error::invalid(format!(
        "the checkpoint's stopping-rule state is damaged or from another rule ({k})"
    ))
}

impl Dec<'_> {
    fn val<T: serde::de::DeserializeOwned>(&self, k: &str) -> Result<T> {
        let v = self.0.meta.get(k).ok_or_else(|| bad_state(k))?;
        serde_json::from_value(v.clone()).map_err(|_| bad_state(k))
    }
    fn array(&self, k: &str) -> Result<Vec<f64>> {
        let i: usize = self.val(k)?;
        self.0.arrays.get(i).cloned().ok_or_else(|| bad_state(k))
    }
    fn chosen(&self, k: &str) -> Result<Option<Chosen>> {
        let v = self.0.meta.get(k).ok_or_else(|| bad_state(k))?;
        if v.is_null() {
            return Ok(None);
        }
        let get = |f: &str| {
            v[f].as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| bad_state(k))
        };
        let (step, w, h, c, at) = (get("step")?, get("w")?, get("h")?, get("c")?, get("at")?);
        let data: Vec<f32> = self
            .0
            .arrays
            .get(at)
            .ok_or_else(|| bad_state(k))?
            .iter()
            .map(|&x| x as f32)
            .collect();
        let image = Image::try_new(w, h, c, data).map_err(|_| bad_state(k))?;
        Ok(Some(Chosen { step, image }))
    }
}

impl Minimum {
    fn save(&self, e: &mut Enc) {
        e.val("min_score", self.best.as_ref().map(|(b, _)| *b));
        e.chosen("min_chosen", self.best.as_ref().map(|(_, c)| c));
    }
    fn load(&mut self, d: &Dec<'_>) -> Result<()> {
        let score: Option<f64> = d.val("min_score")?;
        self.best = match (score, d.chosen("min_chosen")?) {
            (Some(b), Some(c)) => Some((b, c)),
            (None, None) => None,
            _ => return Err(bad_state("min")),
        };
        Ok(())
    }
}

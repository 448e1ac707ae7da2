//! The loop itself.

use serde::{Deserialize, Serialize};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;

pub use super::checkpoint::HistoryRow;
use super::checkpoint::{FitState, SnapshotState};
use super::observer::{Control, Observer, StepInfo};
use crate::device::Device;
use crate::engine::{AdamConfig, Net, Precision};
use crate::image::{self, Image, Padding};
use crate::metrics::psnr;
use crate::nets::{Arch, NetInput};
use crate::operators::Operator;
use crate::{Error, Result};

/// The data term `‖A(x) − y‖`: which norm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Loss {
    /// Mean squared error (the reference): right for Gaussian noise.
    #[default]
    L2,
    /// Mean absolute error: robust to impulse (salt-and-pepper) noise, where a few samples are
    /// arbitrarily wrong and squared errors would let them dominate.
    L1,
}

/// The fixed input `z` of the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputKind {
    /// Uniform noise in [0, 0.1) on every input channel (the reference's `get_noise`).
    #[default]
    Noise,
    /// Two channels holding the pixel coordinates, x then y, each running from 0 to 1 across
    /// the network's (padded) size; the reference's `meshgrid` input. Needs 2 input channels.
    Meshgrid,
}

/// Settings of a fit. Defaults are the reference denoising recipe.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FitConfig {
    pub iters: usize,
    pub lr: f64,
    /// Std of the Gaussian perturbation added to the network input each step.
    pub reg_noise: f64,
    /// Weight of the output exponential moving average.
    pub ema: f64,
    pub seed: u64,
    /// The data term.
    #[serde(default)]
    pub loss: Loss,
    /// The fixed network input.
    #[serde(default)]
    pub input: InputKind,
    /// Observers and the history run every this many steps (and at the last step).
    pub observe_every: usize,
    /// Divergence check interval: a PSNR drop of more than 5 dB against the observation since the
    /// previous check restores the parameters and Adam state saved then, and halves the
    /// learning rate for the rest of the run.
    pub check_every: usize,
    /// Lipschitz control (Shi et al.): after every step, each convolution and dense weight is
    /// scaled so that its largest singular value is at most this.
    #[serde(default)]
    pub lipschitz: Option<f64>,
    /// Fit on this many random pixels of the observation per step, drawn with replacement (all
    /// channels of each), instead of all of them: the coordinate-MLP recipe.
    #[serde(default)]
    pub pixel_batch: Option<usize>,
    /// Refuse networks whose estimated memory (activations, gradients, parameters and Adam
    /// state) exceeds this many bytes.
    #[serde(default)]
    pub max_memory: Option<usize>,
    /// Stochastic gradient Langevin dynamics: noise on the weights after every step, and the
    /// posterior mean and spread of the outputs sampled after a burn-in.
    #[serde(default)]
    pub sgld: Option<SgldConfig>,
    /// Number format of the convolution GEMM inputs (bf16 falls back to f32 on a CPU without
    /// AVX-512-BF16).
    #[serde(default)]
    pub precision: Precision,
    /// Set from elsewhere (a signal handler) to end the run after the current step; the report
    /// then says `interrupted` and holds everything up to that step.
    #[serde(skip)]
    pub cancel: Option<Arc<AtomicBool>>,
    /// Where and how often to save the fit's state (see [`FitState`]).
    #[serde(skip)]
    pub checkpoint: Option<CheckpointSink>,
    /// Continue from this state instead of starting afresh.
    #[serde(skip)]
    pub resume: Option<Arc<FitState>>,
    /// Where the fit runs: the CPU, or a CUDA GPU (a build with the `cuda` feature).
    #[serde(skip)]
    pub device: Device,
    /// On a GPU: run the fit as a lane of this batch, whose other lanes are fits running on
    /// other threads (see [`super::LanePool`]); `device` is then the pool's.
    #[cfg(feature = "cuda")]
    #[serde(skip)]
    pub lanes: Option<Arc<super::LanePool>>,
}

/// Receives the fit's state every `every_steps` steps (or, without it, every `every_seconds`
/// seconds of wall time) and when the fit is cancelled. The sink handles its own errors (a
/// failed checkpoint should warn, not end a long fit).
#[derive(Clone)]
pub struct CheckpointSink {
    pub every_steps: Option<usize>,
    pub every_seconds: f64,
    /// Stored in the checkpoint as [`FitState::meta`].
    pub meta: serde_json::Value,
    pub write: Arc<dyn Fn(&FitState) + Send + Sync>,
}

impl std::fmt::Debug for CheckpointSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointSink")
            .field("every_steps", &self.every_steps)
            .field("every_seconds", &self.every_seconds)
            .finish_non_exhaustive()
    }
}

impl Default for FitConfig {
    fn default() -> Self {
        FitConfig {
            iters: 3000,
            lr: 0.01,
            reg_noise: 1.0 / 30.0,
            ema: 0.99,
            seed: 0,
            loss: Loss::L2,
            input: InputKind::Noise,
            observe_every: 50,
            check_every: 10,
            lipschitz: None,
            pixel_batch: None,
            max_memory: None,
            sgld: None,
            precision: Precision::F32,
            cancel: None,
            checkpoint: None,
            resume: None,
            device: Device::Cpu,
            #[cfg(feature = "cuda")]
            lanes: None,
        }
    }
}

/// SGLD as Cheng et al. run it on the Deep Image Prior ("A Bayesian Perspective on the Deep
/// Image Prior", CVPR 2019, and their public code): after each Adam step, Gaussian noise of std
/// `noise · lr` is added to every convolution and dense weight; Adam carries a weight decay
/// (the Gaussian prior on the weights); after `burn_in` steps the network output is sampled
/// every `sample_every` steps, and the mean of the samples is the result, their spread its
/// uncertainty. (Textbook Langevin dynamics would add noise of std `√(2·lr)` to plain gradient
/// descent; with Adam's normalised steps the authors scale it with `lr` instead.)
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SgldConfig {
    /// Std of the weight noise as a multiple of the learning rate (theirs: 2).
    pub noise: f64,
    /// Adam's L2 weight decay (theirs: 5e-8).
    pub weight_decay: f64,
    /// Steps before the first sample.
    pub burn_in: usize,
    /// Steps between samples (theirs: 50).
    pub sample_every: usize,
}

impl SgldConfig {
    /// Their settings for a run of `iters` steps: burn-in for the first third.
    pub fn for_iters(iters: usize) -> Self {
        SgldConfig {
            noise: 2.0,
            weight_decay: 5e-8,
            burn_in: iters / 3,
            sample_every: 50,
        }
    }
}

/// What SGLD gives: the posterior mean and the per-pixel standard deviation of the samples.
#[derive(Debug, Clone)]
pub struct SgldResult {
    pub mean: Image,
    pub std: Image,
    pub samples: usize,
}

/// What a fit returns.
#[derive(Debug, Clone, Serialize)]
pub struct FitReport {
    /// PSNR of the observation itself against the clean image, where the two have the same
    /// shape (denoising, inpainting, deblurring); `None` otherwise.
    pub psnr_noisy: Option<f64>,
    pub psnr_final: Option<f64>,
    /// Best PSNR of the EMA output over the observed steps, and where it was.
    pub psnr_best: Option<f64>,
    pub iter_best: Option<usize>,
    /// Best PSNR of the raw output over the observed steps.
    pub psnr_best_raw: Option<f64>,
    pub iterations_run: usize,
    pub seconds: f64,
    pub seed: u64,
    pub parameters: usize,
    pub rollbacks: usize,
    /// The learning rate at the end: `lr` halved once per rollback.
    pub lr_final: f64,
    /// The run was cancelled (see [`FitConfig::cancel`]) before its last step.
    pub interrupted: bool,
    pub history: Vec<HistoryRow>,
    /// The EMA image, cropped to the observation size.
    #[serde(skip)]
    pub output_ema: Image,
    /// The last raw output.
    #[serde(skip)]
    pub output_raw: Image,
    /// The SGLD posterior mean and spread, when the fit ran SGLD and drew samples.
    #[serde(skip)]
    pub sgld: Option<SgldResult>,
}

impl FitConfig {
    /// Whether [`FitConfig::cancel`] has been set.
    pub fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// Rejects settings that cannot give a meaningful fit.
    pub fn validate(&self) -> Result<()> {
        if self.iters == 0 {
            return Err(Error::invalid("--iters must be at least 1"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::invalid(format!(
                "--lr must be a positive number, got {}",
                self.lr
            )));
        }
        if !(self.reg_noise.is_finite() && self.reg_noise >= 0.0) {
            return Err(Error::invalid(format!(
                "--reg-noise must be zero or positive, got {}",
                self.reg_noise
            )));
        }
        if !(0.0..1.0).contains(&self.ema) {
            return Err(Error::invalid(format!(
                "--ema must be in [0, 1), got {}",
                self.ema
            )));
        }
        if let Some(l) = self.lipschitz
            && !(l.is_finite() && l > 0.0)
        {
            return Err(Error::invalid(format!(
                "the Lipschitz bound must be a positive number, got {l}"
            )));
        }
        if self.pixel_batch == Some(0) {
            return Err(Error::invalid("the pixel batch must be at least 1"));
        }
        if let Some(g) = &self.sgld {
            if !(g.noise.is_finite() && g.noise >= 0.0) {
                return Err(Error::invalid(format!(
                    "the SGLD noise must be zero or positive, got {}",
                    g.noise
                )));
            }
            if !(g.weight_decay.is_finite() && g.weight_decay >= 0.0) {
                return Err(Error::invalid(format!(
                    "the SGLD weight decay must be zero or positive, got {}",
                    g.weight_decay
                )));
            }
            if g.sample_every == 0 {
                return Err(Error::invalid("SGLD must sample every 1 step or more"));
            }
            if g.burn_in >= self.iters {
                return Err(Error::invalid(format!(
                    "the SGLD burn-in ({} steps) leaves no sample within {} steps",
                    g.burn_in, self.iters
                )));
            }
        }
        if self.observe_every == 0 || self.check_every == 0 {
            return Err(Error::invalid(
                "observation and check intervals must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Elements per independent stream of the input perturbation: chunks are drawn in parallel from
/// generators seeded by (seed, step, chunk), so the result does not depend on the thread count.
pub(super) const NOISE_CHUNK: usize = 1 << 16;

/// The reflection padding that takes a `width × height` image to what `spec` accepts: sides a
/// multiple of its size multiple (2^scales for the skip network) and at least its minimum.
pub fn network_padding(width: usize, height: usize, spec: &Arch) -> Padding {
    let m = spec.size_multiple();
    let side = |n: usize| n.div_ceil(m).max(1) * m;
    let min = spec.min_side();
    image::padding_to(width, height, side(width).max(min), side(height).max(min))
}

/// The fixed input `z` of `spec` for an `h × w` output, as a fit with `cfg` draws it.
pub fn network_input(spec: &Arch, cfg: &FitConfig, h: usize, w: usize) -> Vec<f32> {
    match spec.own_input(h, w, cfg.seed) {
        Some(z) => z,
        None => {
            let (ih, iw, ic) = spec.input_shape(h, w);
            initial_input(cfg, ih, iw, ic)
        }
    }
}

/// The fixed input `z` for a network input of `h × w × c`, from the seed.
fn initial_input(cfg: &FitConfig, h: usize, w: usize, c: usize) -> Vec<f32> {
    match cfg.input {
        InputKind::Noise => {
            // Uniform noise in [0, 0.1), as the reference.
            let mut rng = Pcg64Mcg::seed_from_u64(cfg.seed.wrapping_add(0x9E37_79B9_7F4A_7C15));
            (0..h * w * c).map(|_| rng.random::<f32>() * 0.1).collect()
        }
        InputKind::Meshgrid => {
            let coord = |i: usize, n: usize| {
                if n > 1 {
                    i as f32 / (n - 1) as f32
                } else {
                    0.0
                }
            };
            let mut z = Vec::with_capacity(h * w * c);
            for y in 0..h {
                for x in 0..w {
                    z.push(coord(x, w));
                    z.push(coord(y, h));
                }
            }
            z
        }
    }
}

/// The data term over all samples of the observation, and its gradient with respect to `A(x)`
/// written into `grad`. Also returns the mean squared error, which the divergence check uses
/// whatever the loss.
///
/// With `counts` (one per pixel of `channels` samples), the data term is the mean over a batch
/// of pixels drawn with replacement: pixel `p` counts `counts[p]` times, out of `batch`.
pub(super) fn data_term(
    ax: &[f32],
    y: &[f32],
    grad: &mut [f32],
    loss: Loss,
    batch: Option<(&[u32], usize, usize)>,
) -> (f64, f64) {
    if let Some((counts, n, channels)) = batch {
        return data_term_batch(ax, y, grad, loss, counts, n, channels);
    }
    let n = y.len() as f64;
    let mut sq = 0.0f64;
    let mut abs = 0.0f64;
    match loss {
        Loss::L2 => {
            let scale = (2.0 / n) as f32;
            for ((g, &a), &t) in grad.iter_mut().zip(ax).zip(y) {
                let d = a - t;
                sq += (d as f64) * (d as f64);
                *g = d * scale;
            }
        }
        Loss::L1 => {
            let scale = (1.0 / n) as f32;
            for ((g, &a), &t) in grad.iter_mut().zip(ax).zip(y) {
                let d = a - t;
                sq += (d as f64) * (d as f64);
                abs += d.abs() as f64;
                // The subgradient 0 at d = 0, as PyTorch's L1 loss.
                *g = if d > 0.0 {
                    scale
                } else if d < 0.0 {
                    -scale
                } else {
                    0.0
                };
            }
        }
    }
    let mse = sq / n;
    let value = match loss {
        Loss::L2 => mse,
        Loss::L1 => abs / n,
    };
    (value, mse)
}

/// [`data_term`] over a batch of pixels.
/// Step `it`'s batch of `n` pixels drawn with replacement from `counts.len()`: how often each
/// is drawn (the same on every device).
pub(super) fn draw_batch(seed: u64, it: usize, n: usize, counts: &mut [u32]) {
    counts.fill(0);
    let mut r = Pcg64Mcg::seed_from_u64(
        seed ^ 0xBA7C_0000_0000_0000 ^ (it as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let pixels = counts.len();
    for _ in 0..n {
        counts[r.random_range(0..pixels)] += 1;
    }
}

fn data_term_batch(
    ax: &[f32],
    y: &[f32],
    grad: &mut [f32],
    loss: Loss,
    counts: &[u32],
    n: usize,
    channels: usize,
) -> (f64, f64) {
    let samples = (n * channels) as f64;
    let (mut sq, mut value) = (0.0f64, 0.0f64);
    for (p, &k) in counts.iter().enumerate() {
        let r = p * channels..(p + 1) * channels;
        for ((g, &a), &t) in grad[r.clone()].iter_mut().zip(&ax[r.clone()]).zip(&y[r]) {
            let d = a - t;
            sq += (d as f64) * (d as f64);
            let w = k as f64 / samples;
            *g = match loss {
                Loss::L2 => {
                    value += w * (d as f64) * (d as f64);
                    (2.0 * w) as f32 * d
                }
                Loss::L1 => {
                    value += w * d.abs() as f64;
                    if d > 0.0 {
                        w as f32
                    } else if d < 0.0 {
                        -w as f32
                    } else {
                        0.0
                    }
                }
            };
        }
    }
    (value, sq / y.len() as f64)
}

/// The shapes of a fit: the image to restore (`xw × xh × xc`) and the network's padded grid
/// (`w × h × c`, `pad` around the image).
#[derive(Debug, Clone, Copy)]
pub(super) struct Grid {
    pub xw: usize,
    pub xh: usize,
    pub xc: usize,
    pub pad: Padding,
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

/// What [`setup`] prepares for a fit: the image and network shapes, the network and its input.
pub(super) struct Setup {
    pub grid: Grid,
    pub net: Net<f32>,
    pub z: Vec<f32>,
    pub started: Instant,
}

/// Checks a fit's inputs and settings, and builds its network (parameters initialised from the
/// seed) and input `z`.
pub(super) fn setup(
    observation: &Image,
    operator: &dyn Operator,
    clean: Option<&Image>,
    spec: &Arch,
    cfg: &FitConfig,
) -> Result<Setup> {
    cfg.validate()?;
    let (xw, xh, xc) = operator.input_shape();
    let obs_shape = (observation.width, observation.height, observation.channels);
    if observation.data.is_empty() {
        return Err(Error::invalid("the observation is empty"));
    }
    if operator.output_shape() != obs_shape {
        let o = operator.output_shape();
        return Err(Error::invalid(format!(
            "{} gives {}x{}x{} but the observation is {}x{}x{}",
            operator.name(),
            o.0,
            o.1,
            o.2,
            obs_shape.0,
            obs_shape.1,
            obs_shape.2
        )));
    }
    if xw == 0 || xh == 0 || xc == 0 {
        return Err(Error::invalid("the image to restore is empty"));
    }
    if spec.out_channels() != xc {
        return Err(Error::invalid(format!(
            "the network outputs {} channels but the image to restore has {xc}",
            spec.out_channels()
        )));
    }
    let configured = spec.input_kind() == NetInput::Configured;
    if configured && cfg.input == InputKind::Meshgrid && spec.input_shape(xh, xw).2 != 2 {
        return Err(Error::invalid(format!(
            "the meshgrid input has 2 channels but the network takes {}",
            spec.input_shape(xh, xw).2
        )));
    }
    if cfg.pixel_batch.is_some() && operator.output_shape() != operator.input_shape() {
        return Err(Error::invalid(
            "pixel batches need an observation of the image's own size (denoising, inpainting \
             or deblurring)",
        ));
    }
    if let Some(c) = clean
        && (c.width, c.height, c.channels) != (xw, xh, xc)
    {
        return Err(Error::invalid(format!(
            "the clean image is {}x{}x{} but the restored image will be {xw}x{xh}x{xc}",
            c.width, c.height, c.channels
        )));
    }
    let started = Instant::now();
    let pad = network_padding(xw, xh, spec);
    let (h, w, c) = (xh + pad.top + pad.bottom, xw + pad.left + pad.right, xc);
    let (mut builder, out_act) = spec.builder::<f32>(h, w)?;
    let need = builder.estimate_bytes(out_act);
    if let Some(max) = cfg.max_memory
        && need > max
    {
        return Err(Error::invalid(format!(
            "the {} network at {w}x{h} needs about {:.1} GiB, more than the allowed {:.1} GiB; \
             use a smaller image or width, or raise --max-memory",
            spec.label(),
            need as f64 / (1u64 << 30) as f64,
            max as f64 / (1u64 << 30) as f64
        )));
    }
    let mut net: Net<f32> = builder.build(out_act, cfg.seed, false);
    net.set_precision(cfg.precision);
    let z = match spec.own_input(h, w, cfg.seed) {
        Some(z) => z,
        None => initial_input(cfg, net.input().h, net.input().w, net.input().c),
    };
    net.input_mut().data.copy_from_slice(&z);
    Ok(Setup {
        grid: Grid {
            xw,
            xh,
            xc,
            pad,
            h,
            w,
            c,
        },
        net,
        z,
        started,
    })
}

/// Adam's settings for a fit.
pub(super) fn adam_config(cfg: &FitConfig) -> AdamConfig {
    AdamConfig {
        lr: cfg.lr,
        weight_decay: cfg.sgld.map_or(0.0, |g| g.weight_decay),
        ..AdamConfig::default()
    }
}

/// The weights SGLD puts noise on (convolution and dense weights): `(offset, length)` of each.
pub(super) fn sgld_tensors(net: &Net<f32>, cfg: &FitConfig) -> Vec<(usize, usize)> {
    if cfg.sgld.is_none() {
        return Vec::new();
    }
    net.param_info()
        .iter()
        .filter(|p| {
            matches!(
                p.kind,
                crate::engine::ParamKind::ConvWeight { .. }
                    | crate::engine::ParamKind::Dense { .. }
            )
        })
        .map(|p| (p.offset, p.len))
        .collect()
}

/// The PSNR of `A(x)` against the observation at a divergence check, from the mean squared
/// error; `None` off checks or when the error is not finite.
pub(super) fn check_psnr(check: bool, loss: f64, mse: f64) -> Option<f64> {
    (check && loss.is_finite() && mse.is_finite()).then(|| -10.0 * mse.max(1e-30).log10())
}

/// Whether the PSNR against the observation at this check fell more than 5 dB below the last
/// good check's.
pub(super) fn dropped(psnr_obs: Option<f64>, last_good: Option<f64>) -> bool {
    matches!((psnr_obs, last_good), (Some(p), Some(s)) if p < s - 5.0)
}

/// Whether a checkpoint is due after step `it`.
pub(super) fn checkpoint_due(
    cfg: &FitConfig,
    it: usize,
    cancel: bool,
    last_checkpoint: Instant,
) -> bool {
    cfg.checkpoint.as_ref().is_some_and(|ck| {
        it < cfg.iters
            && (cancel
                || match ck.every_steps {
                    Some(n) => it.is_multiple_of(n),
                    None => last_checkpoint.elapsed().as_secs_f64() >= ck.every_seconds,
                })
    })
}

/// Checks that `st` can continue this fit (see [`check_resume`]) and has one state slot per
/// observer.
pub(super) fn check_resume_state(
    st: &FitState,
    operator: &dyn Operator,
    spec: &Arch,
    cfg: &FitConfig,
    params: usize,
    ema: usize,
    observers: &[&mut dyn Observer],
) -> Result<()> {
    check_resume(st, operator, spec, cfg)?;
    if st.params.len() != params || st.ema.len() != ema {
        return Err(Error::invalid(
            "internal: the checkpoint passed its checks but does not fit the network",
        ));
    }
    if st.observers.len() != observers.len() {
        return Err(Error::invalid(format!(
            "the checkpoint holds {} observer states, the fit has {} observers",
            st.observers.len(),
            observers.len()
        )));
    }
    Ok(())
}

/// The network-side parts of a checkpoint, which each backend gathers its own way.
pub(super) struct Parts {
    pub params: Vec<f32>,
    pub adam_m: Vec<f32>,
    pub adam_v: Vec<f32>,
    pub adam_t: u64,
    pub lr: f64,
    pub ema: Vec<f32>,
    pub snapshot: Option<SnapshotState>,
    pub raw_is_current: bool,
    pub seconds: f64,
}

/// What a fit has seen so far, whatever runs it: the history and best PSNRs, rollbacks, SGLD's
/// sums, and the latest cropped output and moving average.
pub(super) struct Progress {
    pub history: Vec<HistoryRow>,
    pub psnr_best: Option<f64>,
    pub iter_best: Option<usize>,
    pub psnr_best_raw: Option<f64>,
    pub rollbacks: usize,
    pub failures_in_a_row: usize,
    pub iterations_run: usize,
    pub sgld_sum: Vec<f64>,
    pub sgld_sq: Vec<f64>,
    pub sgld_samples: usize,
    pub out_img: Image,
    pub ema_img: Image,
}

impl Progress {
    pub fn new(xw: usize, xh: usize, xc: usize, cfg: &FitConfig) -> Self {
        let sgld_len = if cfg.sgld.is_some() { xw * xh * xc } else { 0 };
        Progress {
            history: Vec::new(),
            psnr_best: None,
            iter_best: None,
            psnr_best_raw: None,
            rollbacks: 0,
            failures_in_a_row: 0,
            iterations_run: 0,
            sgld_sum: vec![0.0; sgld_len],
            sgld_sq: vec![0.0; sgld_len],
            sgld_samples: 0,
            out_img: Image::zeros(xw, xh, xc),
            ema_img: Image::zeros(xw, xh, xc),
        }
    }

    /// Takes over a checkpoint's progress and gives each observer its state back.
    pub fn resume(&mut self, st: &FitState, observers: &mut [&mut dyn Observer]) -> Result<()> {
        self.rollbacks = st.rollbacks;
        self.failures_in_a_row = st.failures_in_a_row;
        self.history = st.history.clone();
        self.psnr_best = st.psnr_best;
        self.iter_best = st.iter_best;
        self.psnr_best_raw = st.psnr_best_raw;
        self.sgld_sum.copy_from_slice(&st.sgld_sum);
        self.sgld_sq.copy_from_slice(&st.sgld_sq);
        self.sgld_samples = st.sgld_samples;
        self.iterations_run = st.step;
        for (o, state) in observers.iter_mut().zip(&st.observers) {
            if let Some(v) = state {
                o.load_state(v)?;
            }
        }
        Ok(())
    }

    /// Counts a rollback at step `it`; errors when there is nothing to go back to or it is the
    /// third in a row.
    pub fn rollback(&mut self, it: usize, loss: f64, have_snapshot: bool) -> Result<()> {
        if !have_snapshot {
            return Err(Error::Diverged(format!(
                "the loss is {loss} at step {it}, before any good state to go back to"
            )));
        }
        self.failures_in_a_row += 1;
        self.rollbacks += 1;
        if self.failures_in_a_row >= 3 {
            return Err(Error::Diverged(format!(
                "the fit diverged 3 times in a row (last at step {it})"
            )));
        }
        Ok(())
    }

    /// Whether SGLD samples the output of step `it`.
    pub fn sample_due(&self, cfg: &FitConfig, it: usize) -> bool {
        cfg.sgld
            .as_ref()
            .is_some_and(|g| it > g.burn_in && (it - g.burn_in).is_multiple_of(g.sample_every))
    }

    /// Adds a cropped output to SGLD's sums.
    pub fn sample(&mut self, x: &[f32]) {
        for ((s, q), &v) in self.sgld_sum.iter_mut().zip(&mut self.sgld_sq).zip(x) {
            *s += v as f64;
            *q += (v as f64) * (v as f64);
        }
        self.sgld_samples += 1;
    }

    /// Records step `it` (its output and moving average are in `out_img` and `ema_img`) in the
    /// history and shows it to the observers; true when one of them ends the fit.
    pub fn observe(
        &mut self,
        it: usize,
        loss: f64,
        clean: Option<&Image>,
        observers: &mut [&mut dyn Observer],
    ) -> bool {
        let psnr_raw = clean.map(|c| psnr(&self.out_img.data, &c.data));
        let psnr_ema = clean.map(|c| psnr(&self.ema_img.data, &c.data));
        if let Some(p) = psnr_ema
            && self.psnr_best.is_none_or(|b| p > b)
        {
            self.psnr_best = Some(p);
            self.iter_best = Some(it);
        }
        if let Some(p) = psnr_raw {
            self.psnr_best_raw = Some(self.psnr_best_raw.map_or(p, |b: f64| b.max(p)));
        }
        let psnr_sgld = match clean {
            Some(cl) if self.sgld_samples > 0 => {
                let k = self.sgld_samples as f64;
                let mean: Vec<f32> = self.sgld_sum.iter().map(|s| (s / k) as f32).collect();
                Some(psnr(&mean, &cl.data))
            }
            _ => None,
        };
        self.history.push(HistoryRow {
            iter: it,
            loss,
            psnr_raw,
            psnr_ema,
            psnr_sgld,
        });
        let info = StepInfo {
            iter: it,
            loss,
            output: &self.out_img,
            ema: &self.ema_img,
            psnr_raw,
            psnr_ema,
        };
        let mut stop = false;
        for o in observers.iter_mut() {
            stop |= o.observe(&info) == Control::Stop;
        }
        stop
    }

    /// The checkpoint of step `it`.
    pub fn state(
        &self,
        ck: &CheckpointSink,
        it: usize,
        parts: Parts,
        observers: &[&mut dyn Observer],
    ) -> FitState {
        FitState {
            meta: ck.meta.clone(),
            step: it,
            params: parts.params,
            adam_m: parts.adam_m,
            adam_v: parts.adam_v,
            adam_t: parts.adam_t,
            lr: parts.lr,
            ema: parts.ema,
            snapshot: parts.snapshot,
            rollbacks: self.rollbacks,
            failures_in_a_row: self.failures_in_a_row,
            raw_is_current: parts.raw_is_current,
            history: self.history.clone(),
            psnr_best: self.psnr_best,
            iter_best: self.iter_best,
            psnr_best_raw: self.psnr_best_raw,
            sgld_sum: self.sgld_sum.clone(),
            sgld_sq: self.sgld_sq.clone(),
            sgld_samples: self.sgld_samples,
            seconds: parts.seconds,
            observers: observers.iter().map(|o| o.save_state()).collect(),
        }
    }

    /// The report of the fit (`out_img` and `ema_img` hold its final images).
    #[allow(clippy::too_many_arguments)]
    pub fn report(
        self,
        observation: &Image,
        clean: Option<&Image>,
        cfg: &FitConfig,
        parameters: usize,
        lr_final: f64,
        interrupted: bool,
        seconds: f64,
    ) -> FitReport {
        let bit_depth = observation.bit_depth;
        let (xw, xh, xc) = (
            self.ema_img.width,
            self.ema_img.height,
            self.ema_img.channels,
        );
        let sgld = (self.sgld_samples > 0).then(|| {
            let k = self.sgld_samples as f64;
            let mean: Vec<f32> = self.sgld_sum.iter().map(|s| (s / k) as f32).collect();
            let std: Vec<f32> = self
                .sgld_sum
                .iter()
                .zip(&self.sgld_sq)
                .map(|(s, q)| ((q / k - (s / k) * (s / k)).max(0.0)).sqrt() as f32)
                .collect();
            SgldResult {
                mean: Image::new(xw, xh, xc, mean).with_bit_depth(bit_depth),
                std: Image::new(xw, xh, xc, std),
                samples: self.sgld_samples,
            }
        });
        let same_shape =
            (observation.width, observation.height, observation.channels) == (xw, xh, xc);
        FitReport {
            psnr_noisy: clean
                .filter(|_| same_shape)
                .map(|c| psnr(&observation.data, &c.data)),
            psnr_final: clean.map(|c| psnr(&self.ema_img.data, &c.data)),
            psnr_best: self.psnr_best,
            iter_best: self.iter_best,
            psnr_best_raw: self.psnr_best_raw,
            iterations_run: self.iterations_run,
            seconds,
            seed: cfg.seed,
            parameters,
            rollbacks: self.rollbacks,
            lr_final,
            interrupted,
            history: self.history,
            output_ema: self.ema_img.with_bit_depth(bit_depth),
            output_raw: self.out_img.with_bit_depth(bit_depth),
            sgld,
        }
    }
}

/// Whether `state` can continue a fit of `spec` on `operator` with `cfg`: the same number of
/// parameters and output samples, SGLD sums if and only if the fit samples, and a step before
/// the last. Cheap: the network is laid out but not allocated. [`fit`] checks the same before
/// it restores a checkpoint; a caller can check first to refuse the file before any work.
pub fn check_resume(
    state: &FitState,
    operator: &dyn Operator,
    spec: &Arch,
    cfg: &FitConfig,
) -> Result<()> {
    let (xw, xh, xc) = operator.input_shape();
    let pad = network_padding(xw, xh, spec);
    let (h, w) = (xh + pad.top + pad.bottom, xw + pad.left + pad.right);
    let n = spec.builder::<f32>(h, w)?.0.num_params();
    let samples = h * w * xc;
    if state.params.len() != n || state.ema.len() != samples {
        return Err(Error::invalid(format!(
            "the checkpoint is from another network or image: it holds {} parameters and {} \
             output samples, this fit has {n} and {samples}",
            state.params.len(),
            state.ema.len(),
        )));
    }
    let same = [state.adam_m.len(), state.adam_v.len()].into_iter().chain(
        state
            .snapshot
            .iter()
            .flat_map(|s| [s.params.len(), s.adam_m.len(), s.adam_v.len()]),
    );
    if same.into_iter().any(|l| l != n) || state.sgld_sq.len() != state.sgld_sum.len() {
        return Err(Error::invalid("the checkpoint's arrays disagree in length"));
    }
    let sgld_len = if cfg.sgld.is_some() { xw * xh * xc } else { 0 };
    if state.sgld_sum.len() != sgld_len {
        return Err(Error::invalid(if sgld_len == 0 {
            "the checkpoint is of a fit with --sgld, this one has none".to_string()
        } else if state.sgld_sum.is_empty() {
            "the checkpoint is of a fit without --sgld, this one has it".to_string()
        } else {
            format!(
                "the checkpoint holds SGLD sums of {} samples, this fit needs {sgld_len}",
                state.sgld_sum.len()
            )
        }));
    }
    if state.step >= cfg.iters {
        return Err(Error::invalid(format!(
            "the checkpoint is at step {}, not before the last step {}",
            state.step, cfg.iters
        )));
    }
    Ok(())
}

pub(super) fn crop_into(src: &[f32], w: usize, c: usize, pad: &Padding, dst: &mut Image) {
    crop_slice(src, w, c, pad, dst.width, &mut dst.data);
}

/// Copies the unpadded region (`xw` pixels wide) of a padded HWC buffer of row width `w`.
pub(super) fn crop_slice(
    src: &[f32],
    w: usize,
    c: usize,
    pad: &Padding,
    xw: usize,
    dst: &mut [f32],
) {
    let row = xw * c;
    for (y, d) in dst.chunks_exact_mut(row).enumerate() {
        let s = ((y + pad.top) * w + pad.left) * c;
        d.copy_from_slice(&src[s..s + row]);
    }
}

/// Writes an unpadded buffer (`xw` pixels wide) into its region of a padded HWC buffer.
pub(super) fn uncrop_slice(
    src: &[f32],
    w: usize,
    c: usize,
    pad: &Padding,
    xw: usize,
    dst: &mut [f32],
) {
    let row = xw * c;
    for (y, s) in src.chunks_exact(row).enumerate() {
        let d = ((y + pad.top) * w + pad.left) * c;
        dst[d..d + row].copy_from_slice(s);
    }
}

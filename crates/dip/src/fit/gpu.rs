//! The loop on a GPU (feature `cuda`): the same fit as [`super::fit`], with the network, its
//! input perturbation, the data term, Adam, the moving average and SGLD's weight noise on the
//! device. The host downloads images only where the loop needs them: at observed steps, SGLD
//! samples and checkpoints; and a loss at divergence checks. A step is two launch sequences
//! (up to the loss, and after it), each captured into a CUDA graph once ([`GpuNet::prepare_fit`]).
//!
//! Differences from the CPU loop, all from where the numbers are made:
//! - the input perturbation and SGLD's noise are drawn on the device from counter-based
//!   generators ([`crate::cuda::noise_key`]), so the same seed gives another (equally
//!   deterministic) stream than on the CPU;
//! - the loss is read at divergence checks (every `check_every` steps) and observed steps only,
//!   so a non-finite loss is caught at the next check; a rollback then also returns the moving
//!   average to what it was after the last good check (after a resume, before any check: the
//!   checkpoint's);
//! - diagonal operators (denoising, inpainting) are a factor per sample; the others
//!   (downsampling, blur, chains of these) an explicit sparse matrix and its transpose, each
//!   row summed in one order (the CPU applies them separably);
//! - Lipschitz control projects the updated weights on the device, in the graph after Adam (the
//!   CPU's power iteration in the same f64 operations, one thread per matrix: the same σ);
//! - a batch of pixels (`pixel_batch`) is drawn on the host as on the CPU and sent as per-sample
//!   weights of the data term before each step;
//! - `precision: bf16` rounds the operands of every GEMM (the CPU: the convolutions') to
//!   bfloat16 on the tensor cores; the caller's `open` chooses the device's precision.

use std::time::Instant;

use super::checkpoint::SnapshotState;
use super::observer::Observer;
use super::run::{
    FitConfig, FitReport, Loss, Parts, Progress, Setup, adam_config, check_psnr,
    check_resume_state, checkpoint_due, crop_into, crop_slice, draw_batch, dropped, setup,
    sgld_tensors, uncrop_slice,
};
use crate::cuda::{FitStep, GpuError, GpuNet, operator_space};
use crate::engine::{Net, Tensor};
use crate::image::Image;
use crate::nets::Arch;
use crate::operators::{Operator, SparseRows};
use crate::{Error, Result};

/// Makes the GPU network from the host network and the f32 words of room its forward operator
/// needs ([`GpuNet::with_room`]).
pub type OpenGpu<'a> = dyn FnMut(&Net<f32>, usize) -> std::result::Result<GpuNet, GpuError> + 'a;

type R<T> = std::result::Result<T, GpuError>;

/// What the loop needs of the device: a network of its own ([`GpuNet`]), or one lane of a
/// batch of fits that share one launch sequence ([`super::LanePool`]). The calls are
/// [`GpuNet`]'s; a step is `fit_front`, then `fit_back`, or `skip_back` where a rollback skips
/// the rest of the step.
pub trait FitDevice {
    fn set_fixed_input(&mut self, z: &[f32]) -> R<()>;
    fn set_target(&mut self, y: &Tensor<f32>, mask: Option<&[f32]>) -> R<()>;
    fn set_operator(&mut self, a: &SparseRows, target: &[f32]) -> R<()>;
    fn set_params(&mut self, params: &[f32]) -> R<()>;
    fn params(&self) -> R<Vec<f32>>;
    fn set_ema(&mut self, ema: &[f32]) -> R<()>;
    fn ema(&self) -> R<Tensor<f32>>;
    fn output(&self) -> R<Tensor<f32>>;
    fn set_adam(&mut self, m: &[f32], v: &[f32], t: u64, beta1: f64, beta2: f64) -> R<()>;
    fn moments(&self) -> R<(Vec<f32>, Vec<f32>)>;
    fn adam_t(&self) -> R<u64>;
    fn save(&mut self) -> R<[f64; 3]>;
    fn keep(&mut self) -> R<()>;
    fn save_ema(&mut self) -> R<()>;
    fn saved(&self) -> R<[Vec<f32>; 3]>;
    fn restore(&mut self, adam: [f64; 3]) -> R<()>;
    fn prepare_fit(&mut self, step: FitStep) -> R<()>;
    fn set_fit_state(&mut self, done: u64, lr: f64) -> R<()>;
    fn set_lr(&mut self, lr: f64) -> R<()>;
    fn set_weights(&mut self, w: &[f32]) -> R<()>;
    fn loss_sums_and_adam(&self) -> R<([f64; 4], [f64; 3])>;
    fn fit_front(&mut self) -> R<()>;
    fn fit_back(&mut self) -> R<()>;
    /// The rest of this step is skipped (a rollback): nothing to do for a network of its own.
    fn skip_back(&mut self) -> R<()>;
}

/// Forwards [`FitDevice`]'s calls to [`GpuNet`]'s methods of the same name.
macro_rules! forward_to_gpu_net {
    ({$($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*} {$($read:ident() -> $rret:ty;)*}) => {
        impl FitDevice for GpuNet {
            $(fn $name(&mut self, $($arg: $ty),*) -> R<$ret> {
                GpuNet::$name(self, $($arg),*)
            })*
            $(fn $read(&self) -> R<$rret> {
                GpuNet::$read(self)
            })*
            fn skip_back(&mut self) -> R<()> {
                Ok(())
            }
        }
    };
}

forward_to_gpu_net! {
    {
    set_fixed_input(z: &[f32]) -> ();
    set_target(y: &Tensor<f32>, mask: Option<&[f32]>) -> ();
    set_operator(a: &SparseRows, target: &[f32]) -> ();
    set_params(params: &[f32]) -> ();
    set_ema(ema: &[f32]) -> ();
    set_adam(m: &[f32], v: &[f32], t: u64, beta1: f64, beta2: f64) -> ();
    save() -> [f64; 3];
    keep() -> ();
    save_ema() -> ();
    restore(adam: [f64; 3]) -> ();
    prepare_fit(step: FitStep) -> ();
    set_fit_state(done: u64, lr: f64) -> ();
    set_lr(lr: f64) -> ();
    set_weights(w: &[f32]) -> ();
    fit_front() -> ();
    fit_back() -> ();
    }
    {
    params() -> Vec<f32>;
    ema() -> Tensor<f32>;
    output() -> Tensor<f32>;
    moments() -> (Vec<f32>, Vec<f32>);
    adam_t() -> u64;
    saved() -> [Vec<f32>; 3];
    loss_sums_and_adam() -> ([f64; 4], [f64; 3]);
    }
}

/// Makes the device side of a fit from the host network, the room its forward operator needs,
/// and what each step does (a lane of a batch shares its steps with the other lanes).
pub(crate) type OpenDevice<'a> =
    dyn FnMut(&Net<f32>, usize, &FitStep) -> Result<Box<dyn FitDevice + 'a>> + 'a;

/// The forward operator as the device applies it.
enum Data {
    Diagonal(Vec<f32>),
    Rows(SparseRows),
}

/// The last good state, kept on the device by [`GpuNet::save`]; the host keeps Adam's state and
/// what a checkpoint records of it.
struct Kept {
    adam: [f64; 3],
    lr: f64,
    psnr_obs: f64,
}

fn gpu(e: GpuError) -> Error {
    Error::invalid(e.0)
}

/// Runs [`super::fit`] on the GPU network `open` makes from the host network (its parameters
/// initialised from the seed) with the given room for the forward operator
/// ([`GpuNet::with_room`]).
pub fn fit_on_gpu(
    observation: &Image,
    operator: &dyn Operator,
    clean: Option<&Image>,
    spec: &Arch,
    cfg: &FitConfig,
    observers: &mut [&mut dyn Observer],
    open: &mut OpenGpu<'_>,
) -> Result<FitReport> {
    let mut open = |net: &Net<f32>, room: usize, _: &FitStep| -> Result<Box<dyn FitDevice>> {
        Ok(Box::new(open(net, room).map_err(gpu)?))
    };
    fit_on_device(
        observation,
        operator,
        clean,
        spec,
        cfg,
        observers,
        &mut open,
    )
}

/// [`fit_on_gpu`] on the device side `open` makes.
pub(crate) fn fit_on_device(
    observation: &Image,
    operator: &dyn Operator,
    clean: Option<&Image>,
    spec: &Arch,
    cfg: &FitConfig,
    observers: &mut [&mut dyn Observer],
    open: &mut OpenDevice<'_>,
) -> Result<FitReport> {
    let refuse = |what: &str| {
        Err(Error::invalid(format!(
            "{what}: not on the GPU yet; use --device cpu"
        )))
    };
    let Setup {
        xw,
        xh,
        xc,
        pad,
        h,
        w,
        c,
        net,
        z,
        started,
    } = setup(observation, operator, clean, spec, cfg)?;
    // What the data term needs on the device: the operator's diagonal, or its sparse matrix.
    let data = match (operator.diagonal(), operator.rows()) {
        (Some(d), _) => Data::Diagonal(d),
        (None, Some(rows)) => Data::Rows(rows),
        (None, None) => {
            return refuse(&format!("the forward operator {}", operator.name()));
        }
    };
    // The observation side on the padded grid: the padding carries no observation (factor 0,
    // or no column of the matrix), so its gradient is zero.
    let data = match data {
        Data::Diagonal(d) => {
            let mut a = vec![0.0f32; h * w * c];
            uncrop_slice(&d, w, c, &pad, xw, &mut a);
            Data::Diagonal(a)
        }
        Data::Rows(rows) => {
            let padded = rows.with_inputs(h * w * c, |i| {
                let (px, ch) = (i / xc, i % xc);
                ((px / xw + pad.top) * w + px % xw + pad.left) * c + ch
            });
            Data::Rows(padded.ok_or_else(|| {
                Error::invalid("the forward operator is too large for the GPU's 32-bit tables")
            })?)
        }
    };
    let room = match &data {
        Data::Rows(rows) => operator_space(rows),
        Data::Diagonal(_) => 0,
    };
    let n = observation.data.len() as f64;
    // With a batch of pixels the per-sample weights carry the mean (count / samples).
    let mean_over = if cfg.pixel_batch.is_some() { 1.0 } else { n };
    let scale = match cfg.loss {
        Loss::L2 => (2.0 / mean_over) as f32,
        Loss::L1 => (1.0 / mean_over) as f32,
    };
    let mut adam = adam_config(cfg);
    let noisy = sgld_tensors(&net, cfg);
    // Each step is two launch sequences, captured into graphs where the device allows; the step
    // number and the step size are read on the device.
    let step = FitStep {
        seed: cfg.seed,
        reg_noise: cfg.reg_noise.max(0.0),
        scale,
        l1: cfg.loss == Loss::L1,
        weighted: cfg.pixel_batch.is_some(),
        ema: cfg.ema as f32,
        adam,
        sgld: cfg
            .sgld
            .as_ref()
            .filter(|s| s.noise > 0.0)
            .map(|s| (s.noise, noisy)),
        lipschitz: cfg.lipschitz,
    };
    let mut g = open(&net, room, &step)?;
    g.set_fixed_input(&z).map_err(gpu)?;
    match &data {
        Data::Diagonal(a) => {
            let mut target = vec![0.0f32; h * w * c];
            uncrop_slice(&observation.data, w, c, &pad, xw, &mut target);
            g.set_target(
                &Tensor {
                    h,
                    w,
                    c,
                    data: target,
                },
                Some(a),
            )
            .map_err(gpu)?;
        }
        Data::Rows(rows) => g.set_operator(rows, &observation.data).map_err(gpu)?,
    }
    let diagonal = matches!(data, Data::Diagonal(_));
    drop(data);

    // Pixel batches: the draw counts, and the per-sample weights (on the padded grid for a
    // diagonal operator), allocated once.
    let batched = |len: usize| if cfg.pixel_batch.is_some() { len } else { 0 };
    let mut counts = vec![0u32; batched(observation.width * observation.height)];
    let mut weights = vec![0.0f32; batched(observation.data.len())];
    let mut padded_weights = vec![0.0f32; batched(if diagonal { h * w * c } else { 0 })];
    let n_params = net.num_params();
    let mut pr = Progress::new(xw, xh, xc, cfg);
    let mut kept: Option<Kept> = None;
    let mut interrupted = false;
    let mut raw_is_current = false;
    let mut first = 1;
    let mut seconds_before = 0.0;
    let mut x_buf = vec![0.0f32; xw * xh * xc];
    if let Some(st) = &cfg.resume {
        check_resume_state(st, operator, spec, cfg, n_params, h * w * c, observers)?;
        g.set_params(&st.params).map_err(gpu)?;
        g.set_ema(&st.ema).map_err(gpu)?;
        if let Some(s) = &st.snapshot {
            // The kept state goes to the device through the live buffers: set, save, then the
            // live state below replaces them.
            g.set_params(&s.params).map_err(gpu)?;
            g.set_adam(&s.adam_m, &s.adam_v, s.adam_t, adam.beta1, adam.beta2)
                .map_err(gpu)?;
            let state = g.save().map_err(gpu)?;
            kept = Some(Kept {
                adam: state,
                lr: s.adam_lr,
                psnr_obs: s.psnr_obs,
            });
            g.set_params(&st.params).map_err(gpu)?;
        }
        g.set_adam(&st.adam_m, &st.adam_v, st.adam_t, adam.beta1, adam.beta2)
            .map_err(gpu)?;
        g.save_ema().map_err(gpu)?;
        adam.lr = st.lr;
        pr.resume(st, observers)?;
        first = st.step + 1;
        seconds_before = st.seconds;
    }
    g.prepare_fit(step).map_err(gpu)?;
    g.set_fit_state(first as u64 - 1, adam.lr).map_err(gpu)?;
    let mut last_checkpoint = Instant::now();

    for it in first..=cfg.iters {
        if let Some(b) = cfg.pixel_batch {
            // The CPU's batch of this step, as weights per observation sample.
            draw_batch(cfg.seed, it, b, &mut counts);
            let samples = (b * xc) as f64;
            for (p, &k) in counts.iter().enumerate() {
                weights[p * xc..(p + 1) * xc].fill((k as f64 / samples) as f32);
            }
            if diagonal {
                uncrop_slice(&weights, w, c, &pad, xw, &mut padded_weights);
                g.set_weights(&padded_weights).map_err(gpu)?;
            } else {
                g.set_weights(&weights).map_err(gpu)?;
            }
        }
        g.fit_front().map_err(gpu)?;
        pr.iterations_run = it;

        let cancel = cfg.cancelled() && it < cfg.iters;
        let regular = it % cfg.observe_every == 0 || it == cfg.iters;
        let check = it % cfg.check_every == 0 || it == 1;
        // The loss is read (a wait for the device) only where the loop needs it.
        let (loss, mse, adam_state) = if check || regular || cancel {
            let ([sq, abs, wsq, wabs], adam_state) = g.loss_sums_and_adam().map_err(gpu)?;
            let value = match (cfg.loss, cfg.pixel_batch.is_some()) {
                (Loss::L2, false) => sq / n,
                (Loss::L1, false) => abs / n,
                (Loss::L2, true) => wsq,
                (Loss::L1, true) => wabs,
            };
            (value, sq / n, adam_state)
        } else {
            (0.0, 0.0, [0.0; 3])
        };
        let psnr_obs = check_psnr(check, loss, mse);
        let bad = check && !loss.is_finite();
        if bad || dropped(psnr_obs, kept.as_ref().map(|k| k.psnr_obs)) {
            pr.rollback(it, loss, kept.is_some())?;
            let k = kept.as_ref().expect("rollback checked the snapshot");
            g.restore(k.adam).map_err(gpu)?;
            adam.lr *= 0.5;
            g.set_lr(adam.lr).map_err(gpu)?;
            g.skip_back().map_err(gpu)?;
            raw_is_current = false;
            continue;
        }
        if let Some(p) = psnr_obs {
            pr.failures_in_a_row = 0;
            // Adam's state came with the loss: one wait per check.
            g.keep().map_err(gpu)?;
            kept = Some(Kept {
                adam: adam_state,
                lr: adam.lr,
                psnr_obs: p,
            });
        }

        // Backward, moving average, Adam, Lipschitz control, SGLD's noise. The output stays
        // the forward's.
        g.fit_back().map_err(gpu)?;
        if pr.sample_due(cfg, it) {
            let out = g.output().map_err(gpu)?;
            crop_slice(&out.data, w, c, &pad, xw, &mut x_buf);
            pr.sample(&x_buf);
        }
        if psnr_obs.is_some() {
            // The average including this checked step is the one a rollback goes back to.
            g.save_ema().map_err(gpu)?;
        }
        raw_is_current = true;

        let checkpoint_due = checkpoint_due(cfg, it, cancel, last_checkpoint);
        let save_checkpoint = |pr: &Progress, observers: &[&mut dyn Observer]| -> Result<()> {
            let Some(ck) = &cfg.checkpoint else {
                return Ok(());
            };
            let (adam_m, adam_v) = g.moments().map_err(gpu)?;
            let snapshot = match &kept {
                Some(k) => {
                    let [params, m, v] = g.saved().map_err(gpu)?;
                    Some(SnapshotState {
                        params,
                        adam_m: m,
                        adam_v: v,
                        adam_t: k.adam[0] as u64,
                        adam_lr: k.lr,
                        psnr_obs: k.psnr_obs,
                    })
                }
                None => None,
            };
            let parts = Parts {
                params: g.params().map_err(gpu)?,
                adam_m,
                adam_v,
                adam_t: g.adam_t().map_err(gpu)?,
                lr: adam.lr,
                ema: g.ema().map_err(gpu)?.data,
                snapshot,
                raw_is_current,
                seconds: seconds_before + started.elapsed().as_secs_f64(),
            };
            (ck.write)(&pr.state(ck, it, parts, observers));
            Ok(())
        };
        if checkpoint_due && !regular {
            save_checkpoint(&pr, observers)?;
            last_checkpoint = Instant::now();
        }
        if regular || cancel {
            crop_into(&g.output().map_err(gpu)?.data, w, c, &pad, &mut pr.out_img);
            crop_into(&g.ema().map_err(gpu)?.data, w, c, &pad, &mut pr.ema_img);
            if pr.observe(it, loss, clean, observers) {
                break;
            }
        }
        if checkpoint_due && regular {
            save_checkpoint(&pr, observers)?;
            last_checkpoint = Instant::now();
        }
        if cancel {
            interrupted = true;
            break;
        }
    }
    if raw_is_current {
        crop_into(&g.output().map_err(gpu)?.data, w, c, &pad, &mut pr.out_img);
    }
    crop_into(&g.ema().map_err(gpu)?.data, w, c, &pad, &mut pr.ema_img);
    Ok(pr.report(
        observation,
        clean,
        cfg,
        n_params,
        adam.lr,
        interrupted,
        seconds_before + started.elapsed().as_secs_f64(),
    ))
}

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

use super::checkpoint::FitState;
use super::driver::{Backend, Inputs, KeptParts, NetParts, drive};
use super::observer::Observer;
use super::run::{
    FitConfig, FitReport, Grid, Loss, adam_config, draw_batch, setup, sgld_tensors, uncrop_slice,
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
    let s = setup(observation, operator, clean, spec, cfg)?;
    let grid = s.grid;
    let mut backend = Gpu::new(cfg, observation, operator, grid, &s.net, &s.z, open)?;
    let inputs = Inputs {
        observation,
        operator,
        clean,
        spec,
        cfg,
    };
    drive(&mut backend, inputs, grid, s.started, observers)
}

/// The fit's network and state on the device, and what the host keeps of them.
struct Gpu<'a, 'd> {
    cfg: &'a FitConfig,
    grid: Grid,
    g: Box<dyn FitDevice + 'd>,
    n_params: usize,
    /// Number of observation samples.
    n: f64,
    /// Whether the operator is diagonal (its weights live on the padded grid).
    diagonal: bool,
    /// Adam's `(t, β₁ᵗ, β₂ᵗ)` read with the last loss, and those of the kept state.
    adam_now: [f64; 3],
    kept: Option<[f64; 3]>,
    /// Pixel batches: the draw counts and the per-sample weights (on the padded grid for a
    /// diagonal operator), allocated once.
    counts: Vec<u32>,
    weights: Vec<f32>,
    padded_weights: Vec<f32>,
    step: Option<FitStep>,
    beta: (f64, f64),
}

impl<'a, 'd> Gpu<'a, 'd> {
    fn new(
        cfg: &'a FitConfig,
        observation: &Image,
        operator: &dyn Operator,
        grid: Grid,
        net: &Net<f32>,
        z: &[f32],
        open: &mut OpenDevice<'d>,
    ) -> Result<Self> {
        let Grid {
            xw,
            xc,
            pad,
            h,
            w,
            c,
            ..
        } = grid;
        // What the data term needs on the device: the operator's diagonal, or its sparse matrix.
        let data = match (operator.diagonal(), operator.rows()) {
            (Some(d), _) => Data::Diagonal(d),
            (None, Some(rows)) => Data::Rows(rows),
            (None, None) => {
                return Err(Error::invalid(format!(
                    "the forward operator {}: not on the GPU yet; use --device cpu",
                    operator.name()
                )));
            }
        };
        // The observation side on the padded grid: the padding carries no observation (factor
        // 0, or no column of the matrix), so its gradient is zero.
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
        let adam = adam_config(cfg);
        let noisy = sgld_tensors(net, cfg);
        // Each step is two launch sequences, captured into graphs where the device allows; the
        // step number and the step size are read on the device.
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
        let mut g = open(net, room, &step)?;
        g.set_fixed_input(z).map_err(gpu)?;
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
        let batched = |len: usize| if cfg.pixel_batch.is_some() { len } else { 0 };
        Ok(Gpu {
            cfg,
            grid,
            g,
            n_params: net.num_params(),
            n,
            diagonal,
            adam_now: [0.0; 3],
            kept: None,
            counts: vec![0u32; batched(observation.width * observation.height)],
            weights: vec![0.0f32; batched(observation.data.len())],
            padded_weights: vec![0.0f32; batched(if diagonal { h * w * c } else { 0 })],
            step: Some(step),
            beta: (adam.beta1, adam.beta2),
        })
    }
}

impl Backend for Gpu<'_, '_> {
    const LOSS_EVERY_STEP: bool = false;

    fn num_params(&self) -> usize {
        self.n_params
    }

    fn resume(&mut self, st: &FitState) -> Result<()> {
        let (beta1, beta2) = self.beta;
        let g = &mut self.g;
        g.set_params(&st.params).map_err(gpu)?;
        g.set_ema(&st.ema).map_err(gpu)?;
        if let Some(s) = &st.snapshot {
            // The kept state goes to the device through the live buffers: set, save, then the
            // live state below replaces them.
            g.set_params(&s.params).map_err(gpu)?;
            g.set_adam(&s.adam_m, &s.adam_v, s.adam_t, beta1, beta2)
                .map_err(gpu)?;
            self.kept = Some(g.save().map_err(gpu)?);
            g.set_params(&st.params).map_err(gpu)?;
        }
        g.set_adam(&st.adam_m, &st.adam_v, st.adam_t, beta1, beta2)
            .map_err(gpu)?;
        g.save_ema().map_err(gpu)
    }

    fn start(&mut self, first: usize, lr: f64) -> Result<()> {
        let step = self.step.take().expect("the fit starts once");
        self.g.prepare_fit(step).map_err(gpu)?;
        self.g.set_fit_state(first as u64 - 1, lr).map_err(gpu)
    }

    fn front(&mut self, it: usize, read: bool) -> Result<Option<(f64, f64)>> {
        if let Some(b) = self.cfg.pixel_batch {
            // The CPU's batch of this step, as weights per observation sample.
            let Grid {
                xw, xc, pad, w, c, ..
            } = self.grid;
            draw_batch(self.cfg.seed, it, b, &mut self.counts);
            let samples = (b * xc) as f64;
            for (p, &k) in self.counts.iter().enumerate() {
                self.weights[p * xc..(p + 1) * xc].fill((k as f64 / samples) as f32);
            }
            if self.diagonal {
                uncrop_slice(&self.weights, w, c, &pad, xw, &mut self.padded_weights);
                self.g.set_weights(&self.padded_weights).map_err(gpu)?;
            } else {
                self.g.set_weights(&self.weights).map_err(gpu)?;
            }
        }
        self.g.fit_front().map_err(gpu)?;
        if !read {
            return Ok(None);
        }
        // The loss is read (a wait for the device) only where the loop needs it; Adam's state
        // comes with it, for a keep at a check: one wait per check.
        let ([sq, abs, wsq, wabs], adam_state) = self.g.loss_sums_and_adam().map_err(gpu)?;
        self.adam_now = adam_state;
        let n = self.n;
        let value = match (self.cfg.loss, self.cfg.pixel_batch.is_some()) {
            (Loss::L2, false) => sq / n,
            (Loss::L1, false) => abs / n,
            (Loss::L2, true) => wsq,
            (Loss::L1, true) => wabs,
        };
        Ok(Some((value, sq / n)))
    }

    fn keep(&mut self) -> Result<()> {
        self.g.keep().map_err(gpu)?;
        self.kept = Some(self.adam_now);
        Ok(())
    }

    fn rollback(&mut self, lr: f64) -> Result<()> {
        let adam = self.kept.expect("the loop checked the kept state");
        self.g.restore(adam).map_err(gpu)?;
        self.g.set_lr(lr).map_err(gpu)?;
        self.g.skip_back().map_err(gpu)
    }

    fn back(&mut self, _it: usize, checked: bool) -> Result<()> {
        // Backward, moving average, Adam, Lipschitz control, SGLD's noise. The output stays
        // the forward's.
        self.g.fit_back().map_err(gpu)?;
        if checked {
            // The average including this checked step is the one a rollback goes back to.
            self.g.save_ema().map_err(gpu)?;
        }
        Ok(())
    }

    fn with_output(&self, f: &mut dyn FnMut(&[f32])) -> Result<()> {
        f(&self.g.output().map_err(gpu)?.data);
        Ok(())
    }

    fn with_ema(&self, f: &mut dyn FnMut(&[f32])) -> Result<()> {
        f(&self.g.ema().map_err(gpu)?.data);
        Ok(())
    }

    fn parts(&self) -> Result<NetParts> {
        let g = &self.g;
        let (adam_m, adam_v) = g.moments().map_err(gpu)?;
        let kept = match self.kept {
            Some(k) => {
                let [params, adam_m, adam_v] = g.saved().map_err(gpu)?;
                Some(KeptParts {
                    params,
                    adam_m,
                    adam_v,
                    adam_t: k[0] as u64,
                })
            }
            None => None,
        };
        Ok(NetParts {
            params: g.params().map_err(gpu)?,
            adam_m,
            adam_v,
            adam_t: g.adam_t().map_err(gpu)?,
            ema: g.ema().map_err(gpu)?.data,
            kept,
        })
    }
}

//! The device side: context, kernels, cuBLAS, the arenas, and forward/backward/Adam over the
//! lowered node list.

use std::panic::{AssertUnwindSafe, catch_unwind};

use cudarc::cublas::sys as blas;
use cudarc::driver::CudaContext;

use super::GpuError;
use super::plan::{GpuNode, Layout};
use crate::engine::AdamConfig;
use crate::operators::SparseRows;

mod backend;
mod backward;
mod forward;
mod net;
mod state;
mod step;

use backend::Cuda;

/// Runs `f`, turning a panic of the CUDA bindings (a missing library or symbol) into an error.
pub(crate) fn catch<R>(what: &str, f: impl FnOnce() -> R) -> Result<R, GpuError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        let msg = p
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| p.downcast_ref::<&str>().copied())
            .unwrap_or("unknown failure");
        let first = msg.split(". ").next().unwrap_or(msg);
        GpuError(format!("{what}: {first}"))
    })
}

fn driver_present() -> Result<(), GpuError> {
    // SAFETY: only tries to open the library.
    if unsafe { cudarc::driver::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(GpuError(
            "no NVIDIA driver found (libcuda.so could not be loaded): --device cuda needs an \
             NVIDIA GPU with its driver"
                .into(),
        ))
    }
}

pub(crate) fn nvrtc_present() -> Result<(), GpuError> {
    // SAFETY: only tries to open the library.
    if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(GpuError(
            "NVRTC (libnvrtc.so) not found: install the CUDA runtime libraries or add their \
             folder to LD_LIBRARY_PATH"
                .into(),
        ))
    }
}

fn cublas_present() -> Result<(), GpuError> {
    // SAFETY: only tries to open the library.
    if unsafe { cudarc::cublas::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(GpuError(
            "cuBLAS (libcublas.so) not found: install the CUDA runtime libraries or add their \
             folder to LD_LIBRARY_PATH"
                .into(),
        ))
    }
}

/// What [`probe`] found.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    pub compute_capability: (i32, i32),
    pub memory_bytes: usize,
}

/// Checks that CUDA device `ordinal` exists and that the libraries the backend needs load.
pub fn probe(ordinal: usize) -> Result<DeviceInfo, GpuError> {
    driver_present()?;
    let count = catch("CUDA driver", CudaContext::device_count)?
        .map_err(|e| GpuError(format!("the CUDA driver did not start: {e}")))?;
    if count <= 0 {
        return Err(GpuError("no CUDA device found".into()));
    }
    if ordinal >= count as usize {
        return Err(GpuError(format!(
            "there is no CUDA device {ordinal} (found {count}: cuda:0..cuda:{})",
            count - 1
        )));
    }
    nvrtc_present()?;
    cublas_present()?;
    let ctx = catch("CUDA driver", || CudaContext::new(ordinal))?
        .map_err(|e| GpuError(format!("cannot open CUDA device {ordinal}: {e}")))?;
    Ok(DeviceInfo {
        ordinal,
        name: ctx.name().unwrap_or_else(|_| "unknown".into()),
        compute_capability: ctx.compute_capability().unwrap_or((0, 0)),
        memory_bytes: ctx.total_mem().unwrap_or(0),
    })
}

/// Arithmetic of the matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Full f32 (matches the CPU engine to about 1e-5).
    #[default]
    F32,
    /// TF32 tensor cores in cuBLAS (10-bit mantissa products, f32 sums: `32F_FAST_TF32`);
    /// everything else f32.
    Tf32,
    /// bf16 tensor cores in cuBLAS: the GEMMs' operands rounded to bfloat16 (7-bit mantissa),
    /// products summed in f32 (cuBLAS's `32F_FAST_16BF`); everything else f32.
    Bf16,
}

impl Precision {
    /// Largest relative error the golden tests allow in this mode. In f32, 1e-4 of each
    /// tensor's largest magnitude, as the CPU engine's tests. With tensor cores the kernels are
    /// the f32 ones (checked tightly by the f32 run); what changes is the GEMMs' rounding, which
    /// also moves activations across LeakyReLU's kink, so gradients are compared normwise
    /// (against the largest gradient) and bounded by twice what that rounding does on the host
    /// emulation (worst over the golden cases: TF32 4.6e-2, bf16 1.2e-1): 0.1 and 0.25.
    /// Whether a card of compute capability `cc` has this mode's tensor cores (TF32 and bf16:
    /// 8.0, Ampere, or newer); the error names the card's capability.
    pub fn check_card(self, cc: (i32, i32)) -> Result<(), GpuError> {
        let name = match self {
            Precision::F32 => return Ok(()),
            Precision::Tf32 => "TF32",
            Precision::Bf16 => "bf16",
        };
        if cc.0 >= 8 {
            return Ok(());
        }
        Err(GpuError(format!(
            "{name} tensor cores need a GPU of compute capability 8.0 or newer; this one is \
             {}.{} (use f32)",
            cc.0, cc.1
        )))
    }

    pub fn golden_tolerance(self) -> f64 {
        match self {
            Precision::F32 => 1e-4,
            Precision::Tf32 => 0.1,
            Precision::Bf16 => 0.25,
        }
    }
}

/// Kernel indices, in the order of [`super::KERNEL_NAMES`].
#[derive(Clone, Copy)]
#[repr(usize)]
pub(crate) enum K {
    Im2col,
    Col2im,
    AddBias,
    Fill,
    Copy,
    BnPartial,
    BnFinalize,
    BnApply,
    BnBwdPartial,
    BnBwdFinalize,
    BnBwdApply,
    UpsampleFwd,
    UpsampleBwd,
    ConcatFwd,
    ConcatBwd,
    SigmoidFwd,
    SigmoidBwd,
    LreluFwd,
    LreluBwd,
    DataLoss,
    AddGauss,
    Spmv,
    AdamTick,
    Adam,
    Ema,
    FitTick,
    PixGather,
    LossFinalize,
    LipschitzNorm,
    LipschitzScale,
}

/// Most arguments of a kernel (before the two lane strides every kernel takes last).
const MAX_ARGS: usize = 22;

/// A kernel argument.
#[derive(Clone, Copy)]
pub(crate) enum A {
    P(u64),
    I(i32),
    L(i64),
    F(f32),
    D(f64),
}

fn int(v: usize) -> A {
    A::I(v as i32)
}

fn long(v: usize) -> A {
    A::L(v as i64)
}

fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The key of the normals a fit with `seed` draws on the device at `step` for `stream` (0 the
/// input perturbation, 1 + k the SGLD noise of the k-th noisy weight tensor): distinct for
/// distinct triples, and the same on every run.
pub fn noise_key(seed: u64, step: u64, stream: u64) -> u64 {
    mix64(mix64(seed_key(seed) ^ step) ^ stream.wrapping_add(0x3c6e_f372))
}

/// The part of [`noise_key`] that depends on the seed only (the device adds step and stream).
fn seed_key(seed: u64) -> u64 {
    mix64(seed ^ 0x6a09_e667_f3bc_c908)
}

/// Graph slots: the bench's step, and a fit's two halves.
const FRONT: usize = 1;
const BACK: usize = 2;

/// What each step of a fit does on the device (see [`GpuNet::prepare_fit`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FitStep {
    /// The fit's seed, from which its noise is drawn (with the step and a stream).
    pub seed: u64,
    /// Standard deviation of the input perturbation (0: none).
    pub reg_noise: f64,
    /// The data term's gradient factor (2/n for the mean squared error, 1/n for the mean
    /// absolute error) and whether it is the absolute error.
    pub scale: f32,
    pub l1: bool,
    /// Whether the data term weights its samples ([`GpuNet::set_weights`], a batch of pixels;
    /// then `scale` is 2 or 1, the weights carrying the mean).
    pub weighted: bool,
    /// The moving average's β (the first step copies).
    pub ema: f32,
    /// Adam (its `lr` unused: the step size is the device-side one).
    pub adam: AdamConfig,
    /// SGLD's weight noise: the factor (sd = factor·lr) and the noisy tensors (offset, length).
    pub sgld: Option<(f64, Vec<(usize, usize)>)>,
    /// Lipschitz control after Adam: every weight matrix's σ_max at most this
    /// ([`GpuNet::lipschitz_project`]).
    pub lipschitz: Option<f64>,
}

/// How many lanes a BLAS call runs for, and the distance between two lanes' operands in f32
/// words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Batch {
    pub count: usize,
    pub stride: usize,
}

/// What the executor needs of a device: kernel launches, the two BLAS calls, copies. The CUDA
/// device is one; a host emulation (tests) is the other.
pub(crate) trait Backend {
    /// Addresses of the f32 and f64 arenas.
    fn base(&self) -> (u64, u64);
    fn launch(
        &self,
        k: K,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        args: &[A],
    ) -> Result<(), GpuError>;
    /// Column-major `C = op(A)·op(B) + beta·C` (a cuBLAS GEMM with alpha 1), for each of
    /// `batch.count` lanes (every operand `batch.stride` f32 words after the last lane's).
    #[allow(clippy::too_many_arguments)]
    fn sgemm(
        &self,
        ta: bool,
        tb: bool,
        m: usize,
        n: usize,
        k: usize,
        a: u64,
        lda: usize,
        b: u64,
        ldb: usize,
        beta: f32,
        c: u64,
        ldc: usize,
        batch: Batch,
    ) -> Result<(), GpuError>;
    /// Column-major `y = A·x` (`A` is m × n), for each lane of `batch`.
    #[allow(clippy::too_many_arguments)]
    fn sgemv(
        &self,
        m: usize,
        n: usize,
        a: u64,
        lda: usize,
        x: u64,
        y: u64,
        batch: Batch,
    ) -> Result<(), GpuError>;
    fn upload(&mut self, off: usize, src: &[f32]) -> Result<(), GpuError>;
    fn upload64(&mut self, off: usize, src: &[f64]) -> Result<(), GpuError>;
    fn download(&self, off: usize, n: usize) -> Result<Vec<f32>, GpuError>;
    fn download64(&self, off: usize, n: usize) -> Result<Vec<f64>, GpuError>;
    fn sync(&self) -> Result<(), GpuError>;
    /// Starts recording the launches that follow into a graph instead of running them.
    fn begin_capture(&mut self) -> Result<(), GpuError>;
    /// Ends the recording and keeps the graph as graph `slot` (replacing any earlier one).
    fn end_capture(&mut self, slot: usize) -> Result<(), GpuError>;
    /// Runs kept graph `slot`.
    fn replay(&self, slot: usize) -> Result<(), GpuError>;
}

/// A network on the GPU: parameters, Adam's moments, activations, gradients and scratch.
pub struct GpuNet {
    info: DeviceInfo,
    dev: Box<dyn Backend + Send>,
    base: u64,
    base64: u64,
    nodes: Vec<GpuNode>,
    layout: Layout,
    shapes: Vec<(usize, usize, usize)>,
    /// Adam's β1, β2 of the first [`GpuNet::adam_step`]; fixed afterwards (they are folded into
    /// the device-side bias corrections).
    adam_betas: Option<(f64, f64)>,
    /// The prepared fit step, whether it is captured (and why not), whether to capture.
    fit: Option<FitStep>,
    fit_captured: bool,
    graph_error: Option<String>,
    use_graphs: bool,
    /// A non-diagonal forward operator, when [`GpuNet::set_operator`] gave one.
    op: Option<OpLayout>,
    /// Lanes: `lanes` networks of one layout, lane `l`'s buffers `l·stride` (f32) and
    /// `l·stride64` (f64) words after lane 0's. Work for one lane (copies, per-lane kernels)
    /// goes to the selected `lane`; the network's work (forward, backward, a fit's step) runs
    /// for all lanes at once (`all`): the launches' third grid dimension and batched GEMMs.
    lanes: usize,
    lane: usize,
    all: bool,
    stride: usize,
    stride64: usize,
}

/// Where a sparse forward operator and its work buffers sit in the arena's extra room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OpLayout {
    n_obs: usize,
    /// `A x`, the observation, ones (the data term's factor), the gradient with respect to `A x`.
    ax: usize,
    target: usize,
    ones: usize,
    g_ax: usize,
    /// CSR tables (row starts, indices, weights) of `A` and of `Aᵀ`.
    a: [usize; 3],
    at: [usize; 3],
}

/// f32 words of the arena's extra room that [`GpuNet::set_operator`] needs for `a`.
pub fn operator_space(a: &SparseRows) -> usize {
    let take = |n: usize| n.div_ceil(super::plan::ALIGN).max(1) * super::plan::ALIGN;
    4 * take(a.n_out) + take(a.n_out + 1) + take(a.n_in + 1) + 4 * take(a.nnz())
}

fn derr(what: &str) -> impl Fn(cudarc::driver::DriverError) -> GpuError + '_ {
    move |e| GpuError(format!("{what}: {e}"))
}

/// `n` rounded up to the arenas' alignment (a lane starts aligned, as every buffer in it).
fn align_up(n: usize) -> usize {
    n.div_ceil(super::plan::ALIGN).max(1) * super::plan::ALIGN
}

/// The f32 and f64 arena lengths of `lanes` lanes of `layout`.
fn lane_lengths(layout: &Layout, lanes: usize) -> Result<(usize, usize), GpuError> {
    if lanes == 0 {
        return Err(GpuError("a network needs at least one lane".into()));
    }
    if lanes > 65_535 {
        return Err(GpuError(format!("{lanes} lanes: at most 65535")));
    }
    Ok((lanes * align_up(layout.len), lanes * align_up(layout.len64)))
}

fn check_len(what: &str, got: usize, want: usize) -> Result<(), GpuError> {
    if got == want {
        Ok(())
    } else {
        Err(GpuError(format!(
            "{what} has {got} values, the network on the GPU expects {want}"
        )))
    }
}

fn check_blas(s: blas::cublasStatus_t) -> Result<(), GpuError> {
    if s == blas::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
        Ok(())
    } else {
        Err(GpuError(format!("cuBLAS failed: {s:?}")))
    }
}

fn out_of_memory(bytes: usize, info: &DeviceInfo, e: cudarc::driver::DriverError) -> GpuError {
    GpuError(format!(
        "cannot allocate {:.2} GiB on {} ({:.1} GiB in all): {e}",
        bytes as f64 / (1u64 << 30) as f64,
        info.name,
        info.memory_bytes as f64 / (1u64 << 30) as f64
    ))
}

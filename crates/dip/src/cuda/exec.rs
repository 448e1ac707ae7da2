//! The device side: context, kernels, cuBLAS, the arenas, and forward/backward/Adam over the
//! lowered node list.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use cudarc::cublas::CudaBlas;
use cudarc::cublas::sys as blas;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg,
};

use super::GpuError;
use super::plan::{
    BLOCK, GpuNode, GpuOp, GradUse, LOSS_THREADS, Layout, RED_Y, grid_1d, lower_with_extra,
    reduction_parts,
};
use crate::engine::{AdamConfig, Net, Tensor};
use crate::operators::SparseRows;

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

/// The CUDA device.
struct Cuda {
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    funcs: Vec<CudaFunction>,
    arena: CudaSlice<f32>,
    arena64: CudaSlice<f64>,
    /// cuBLAS's workspace, fixed so that captured GEMMs allocate nothing.
    _workspace: CudaSlice<u8>,
    graphs: Vec<Option<cudarc::driver::CudaGraph>>,
    /// The GEMMs' compute type: f32, or f32 sums of operands rounded for TF32 or bf16 tensor
    /// cores (`32F_FAST_TF32`, `32F_FAST_16BF`).
    compute: blas::cublasComputeType_t,
}

/// The kernels compiled by NVRTC for a compute capability, once per process (a sweep opens a
/// network per cell).
fn ptx_for(cc: (i32, i32)) -> Result<String, GpuError> {
    static COMPILED: std::sync::Mutex<Vec<((i32, i32), String)>> =
        std::sync::Mutex::new(Vec::new());
    let mut done = COMPILED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, ptx)) = done.iter().find(|(c, _)| *c == cc) {
        return Ok(ptx.clone());
    }
    let (major, minor) = cc;
    let ptx = catch("NVRTC", || {
        cudarc::nvrtc::compile_ptx_with_opts(
            super::KERNELS,
            cudarc::nvrtc::CompileOptions {
                options: vec![
                    "--std=c++17".into(),
                    format!("--gpu-architecture=compute_{major}{minor}"),
                ],
                ..Default::default()
            },
        )
    })?
    .map_err(|e| GpuError(format!("NVRTC could not compile the kernels: {e}")))?
    .to_src();
    done.push((cc, ptx.clone()));
    Ok(ptx)
}

/// Bytes of cuBLAS workspace (NVIDIA suggests 32 MiB on Hopper).
const BLAS_WORKSPACE: usize = 32 << 20;

impl Cuda {
    fn open(
        info: &DeviceInfo,
        precision: Precision,
        len: usize,
        len64: usize,
    ) -> Result<Self, GpuError> {
        precision.check_card(info.compute_capability)?;
        let ordinal = info.ordinal;
        let ctx = catch("CUDA driver", || CudaContext::new(ordinal))?
            .map_err(derr("cannot open the CUDA device"))?;
        // One stream and fixed buffers: the bindings' per-buffer event tracking is not needed,
        // and it would get in the way of graph capture.
        // SAFETY: every launch and copy goes to the one stream below.
        unsafe { ctx.disable_event_tracking() };
        // A stream of its own: the legacy default stream cannot be captured into a graph.
        let stream = ctx
            .new_stream()
            .map_err(derr("cannot create a CUDA stream"))?;
        let ptx = cudarc::nvrtc::Ptx::from_src(ptx_for(info.compute_capability)?);
        let module = ctx
            .load_module(ptx)
            .map_err(derr("cannot load the compiled kernels"))?;
        let funcs = super::KERNEL_NAMES
            .iter()
            .map(|n| {
                module
                    .load_function(n)
                    .map_err(|e| GpuError(format!("kernel {n}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let blas = catch("cuBLAS", || CudaBlas::new(stream.clone()))?
            .map_err(|e| GpuError(format!("cuBLAS did not start: {e}")))?;
        let mode = match precision {
            Precision::F32 => blas::cublasMath_t::CUBLAS_DEFAULT_MATH,
            Precision::Tf32 => blas::cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH,
            Precision::Bf16 => blas::cublasMath_t::CUBLAS_DEFAULT_MATH,
        };
        // SAFETY: a live handle.
        check_blas(unsafe { blas::cublasSetMathMode(*blas.handle(), mode) })?;
        let arena = stream
            .alloc_zeros::<f32>(len)
            .map_err(|e| out_of_memory(len * 4, info, e))?;
        let arena64 = stream
            .alloc_zeros::<f64>(len64)
            .map_err(|e| out_of_memory(len64 * 8, info, e))?;
        let workspace = stream
            .alloc_zeros::<u8>(BLAS_WORKSPACE)
            .map_err(|e| out_of_memory(BLAS_WORKSPACE, info, e))?;
        let ws = workspace.device_ptr(&stream).0;
        // SAFETY: a live handle and a buffer that lives as long as it.
        check_blas(unsafe {
            blas::cublasSetWorkspace_v2(*blas.handle(), ws as *mut std::ffi::c_void, BLAS_WORKSPACE)
        })?;
        Ok(Cuda {
            stream,
            blas,
            funcs,
            arena,
            arena64,
            _workspace: workspace,
            graphs: Vec::new(),
            compute: match precision {
                Precision::F32 => blas::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                Precision::Tf32 => blas::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32,
                Precision::Bf16 => blas::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_16BF,
            },
        })
    }
}

impl Cuda {
    /// Makes the device's context current on this thread before a cuBLAS call (cudarc's own
    /// calls do it themselves): a batch's launches come from whichever fit's thread asks last.
    fn bind(&self) -> Result<(), GpuError> {
        self.stream
            .context()
            .bind_to_thread()
            .map_err(derr("cannot make the CUDA context current"))
    }
}

// SAFETY: the raw handles the device holds (context, stream, cuBLAS, the captured graphs) may be
// used from any thread, one at a time: CUDA binds none of them to the thread that made it, and
// a `GpuNet` is used through `&mut` or behind a lock (a batch of fits shares one).
unsafe impl Send for Cuda {}

impl Backend for Cuda {
    fn base(&self) -> (u64, u64) {
        (
            self.arena.device_ptr(&self.stream).0,
            self.arena64.device_ptr(&self.stream).0,
        )
    }

    fn launch(
        &self,
        k: K,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        args: &[A],
    ) -> Result<(), GpuError> {
        let f = &self.funcs[k as usize];
        let mut b = self.stream.launch_builder(f);
        for a in args {
            match a {
                A::P(v) => b.arg(v),
                A::I(v) => b.arg(v),
                A::L(v) => b.arg(v),
                A::F(v) => b.arg(v),
                A::D(v) => b.arg(v),
            };
        }
        let cfg = LaunchConfig {
            grid_dim: grid,
            block_dim: block,
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments match the kernel's signature (the host emulation runs the same
        // launches) and every pointer is inside the arenas (the layout is checked by tests).
        unsafe { b.launch(cfg) }
            .map(|_| ())
            .map_err(|e| GpuError(format!("kernel {}: {e}", super::KERNEL_NAMES[k as usize])))
    }

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
    ) -> Result<(), GpuError> {
        let op = |t: bool| {
            if t {
                blas::cublasOperation_t::CUBLAS_OP_T
            } else {
                blas::cublasOperation_t::CUBLAS_OP_N
            }
        };
        self.bind()?;
        let alpha = 1.0f32;
        let f32t = cudarc::cublas::sys::cudaDataType::CUDA_R_32F;
        // One lane is a batch of one.
        let stride = batch.stride as i64;
        // SAFETY: device pointers inside the arena, each lane's operands one stride after the
        // last's; sizes from the layout.
        check_blas(unsafe {
            blas::cublasGemmStridedBatchedEx(
                *self.blas.handle(),
                op(ta),
                op(tb),
                m as i32,
                n as i32,
                k as i32,
                &alpha as *const f32 as *const std::ffi::c_void,
                a as *const std::ffi::c_void,
                f32t,
                lda as i32,
                stride,
                b as *const std::ffi::c_void,
                f32t,
                ldb as i32,
                stride,
                &beta as *const f32 as *const std::ffi::c_void,
                c as *mut std::ffi::c_void,
                f32t,
                ldc as i32,
                stride,
                batch.count as i32,
                self.compute,
                blas::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        })
    }

    fn sgemv(
        &self,
        m: usize,
        n: usize,
        a: u64,
        lda: usize,
        x: u64,
        y: u64,
        batch: Batch,
    ) -> Result<(), GpuError> {
        self.bind()?;
        let (alpha, beta) = (1.0f32, 0.0f32);
        if batch.count > 1 {
            let stride = batch.stride as i64;
            // SAFETY: device pointers inside the arena, each lane's operands one stride on.
            return check_blas(unsafe {
                blas::cublasSgemvStridedBatched(
                    *self.blas.handle(),
                    blas::cublasOperation_t::CUBLAS_OP_N,
                    m as i32,
                    n as i32,
                    &alpha,
                    a as *const f32,
                    lda as i32,
                    stride,
                    x as *const f32,
                    1,
                    stride,
                    &beta,
                    y as *mut f32,
                    1,
                    stride,
                    batch.count as i32,
                )
            });
        }
        // SAFETY: device pointers inside the arena.
        check_blas(unsafe {
            blas::cublasSgemv_v2(
                *self.blas.handle(),
                blas::cublasOperation_t::CUBLAS_OP_N,
                m as i32,
                n as i32,
                &alpha,
                a as *const f32,
                lda as i32,
                x as *const f32,
                1,
                &beta,
                y as *mut f32,
                1,
            )
        })
    }

    fn upload(&mut self, off: usize, src: &[f32]) -> Result<(), GpuError> {
        let mut view = self.arena.slice_mut(off..off + src.len());
        self.stream
            .memcpy_htod(src, &mut view)
            .map_err(derr("copy to the GPU"))
    }

    fn upload64(&mut self, off: usize, src: &[f64]) -> Result<(), GpuError> {
        let mut view = self.arena64.slice_mut(off..off + src.len());
        self.stream
            .memcpy_htod(src, &mut view)
            .map_err(derr("copy to the GPU"))
    }

    fn download(&self, off: usize, n: usize) -> Result<Vec<f32>, GpuError> {
        self.stream
            .clone_dtoh(&self.arena.slice(off..off + n))
            .map_err(derr("copy from the GPU"))
    }

    fn download64(&self, off: usize, n: usize) -> Result<Vec<f64>, GpuError> {
        self.stream
            .clone_dtoh(&self.arena64.slice(off..off + n))
            .map_err(derr("copy from the GPU"))
    }

    fn sync(&self) -> Result<(), GpuError> {
        self.stream
            .synchronize()
            .map_err(derr("the GPU reported an error"))
    }

    fn begin_capture(&mut self) -> Result<(), GpuError> {
        self.stream
            .begin_capture(
                cudarc::driver::sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL,
            )
            .map_err(derr("cannot start capturing a CUDA graph"))
    }

    fn end_capture(&mut self, slot: usize) -> Result<(), GpuError> {
        let g = self
            .stream
            .end_capture(cudarc::driver::sys::CUgraphInstantiate_flags(0))
            .map_err(derr("cannot capture the step into a CUDA graph"))?
            .ok_or_else(|| GpuError("the captured CUDA graph is empty".into()))?;
        g.upload().map_err(derr("cannot upload the CUDA graph"))?;
        if self.graphs.len() <= slot {
            self.graphs.resize_with(slot + 1, || None);
        }
        self.graphs[slot] = Some(g);
        Ok(())
    }

    fn replay(&self, slot: usize) -> Result<(), GpuError> {
        self.graphs
            .get(slot)
            .and_then(Option::as_ref)
            .ok_or_else(|| GpuError("no captured CUDA graph".into()))?
            .launch()
            .map_err(derr("cannot launch the CUDA graph"))
    }
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

impl GpuNet {
    /// Uploads `net` (its parameters as they are) to CUDA device `ordinal`.
    pub fn new(net: &Net<f32>, ordinal: usize, precision: Precision) -> Result<Self, GpuError> {
        Self::with_room(net, ordinal, precision, 0)
    }

    /// [`GpuNet::new`] with `extra` f32 words of room for a forward operator
    /// ([`operator_space`]).
    pub fn with_room(
        net: &Net<f32>,
        ordinal: usize,
        precision: Precision,
        extra: usize,
    ) -> Result<Self, GpuError> {
        Self::with_lanes(net, ordinal, precision, extra, 1)
    }

    /// [`GpuNet::with_room`] for `lanes` networks of `net`'s layout, each starting from `net`'s
    /// parameters and input: a batch of independent fits that run in one launch sequence
    /// ([`GpuNet::select`] chooses the lane that per-lane calls address).
    pub fn with_lanes(
        net: &Net<f32>,
        ordinal: usize,
        precision: Precision,
        extra: usize,
        lanes: usize,
    ) -> Result<Self, GpuError> {
        let (nodes, layout) = lower_with_extra(net, extra)?;
        let info = probe(ordinal)?;
        let (len, len64) = lane_lengths(&layout, lanes)?;
        let dev = Cuda::open(&info, precision, len, len64)?;
        Self::with_backend(net, info, Box::new(dev), nodes, layout, lanes)
    }

    /// `net` on the host emulation of the GPU, its kernels compiled in `dir` (tests).
    #[doc(hidden)]
    pub fn emulated(net: &Net<f32>, dir: &std::path::Path) -> Result<Self, GpuError> {
        Self::emulated_with_room(net, dir, 0)
    }

    /// [`GpuNet::emulated`] with room for a forward operator (see [`GpuNet::with_room`]).
    #[doc(hidden)]
    pub fn emulated_with_room(
        net: &Net<f32>,
        dir: &std::path::Path,
        extra: usize,
    ) -> Result<Self, GpuError> {
        Self::emulated_with(net, dir, Precision::F32, extra)
    }

    /// [`GpuNet::emulated_with_room`] whose GEMMs round their operands as the tensor cores of
    /// `precision` do (TF32: to nearest, ties away; bf16: to nearest even) and sum in f64.
    #[doc(hidden)]
    pub fn emulated_with(
        net: &Net<f32>,
        dir: &std::path::Path,
        precision: Precision,
        extra: usize,
    ) -> Result<Self, GpuError> {
        Self::emulated_lanes(net, dir, precision, extra, 1)
    }

    /// [`GpuNet::with_lanes`] on the host emulation.
    #[doc(hidden)]
    pub fn emulated_lanes(
        net: &Net<f32>,
        dir: &std::path::Path,
        precision: Precision,
        extra: usize,
        lanes: usize,
    ) -> Result<Self, GpuError> {
        let (nodes, layout) = lower_with_extra(net, extra)?;
        let (len, len64) = lane_lengths(&layout, lanes)?;
        let dev = super::emu::Emulator::new(dir, len, len64, precision)?;
        let info = DeviceInfo {
            ordinal: 0,
            name: "host emulation".into(),
            compute_capability: (0, 0),
            memory_bytes: 0,
        };
        Self::with_backend(net, info, Box::new(dev), nodes, layout, lanes)
    }

    fn with_backend(
        net: &Net<f32>,
        info: DeviceInfo,
        dev: Box<dyn Backend + Send>,
        nodes: Vec<GpuNode>,
        mut layout: Layout,
        lanes: usize,
    ) -> Result<Self, GpuError> {
        let (base, base64) = dev.base();
        let (shapes, _) = net.buffer_plan();
        let constants = std::mem::take(&mut layout.constants);
        let (stride, stride64) = (align_up(layout.len), align_up(layout.len64));
        let mut g = GpuNet {
            info,
            dev,
            base,
            base64,
            nodes,
            layout,
            shapes,
            adam_betas: None,
            fit: None,
            fit_captured: false,
            graph_error: None,
            use_graphs: true,
            op: None,
            lanes,
            lane: 0,
            all: false,
            stride,
            stride64,
        };
        for lane in 0..lanes {
            g.select(lane)?;
            g.upload(g.layout.params, net.params())?;
            for (at, words) in &constants {
                g.upload(*at, words)?;
            }
            g.upload(g.layout.acts[0].0, &net.input().data)?;
            let (ones, ones_len, mask, out_len) = (
                g.layout.ones,
                g.layout.ones_len,
                g.layout.mask,
                g.output_len(),
            );
            g.fill(ones, ones_len, 1.0)?;
            g.fill(mask, out_len, 1.0)?;
            g.reset_adam()?;
        }
        g.select(0)?;
        g.sync()?;
        Ok(g)
    }

    /// How many networks run side by side ([`GpuNet::with_lanes`]).
    pub fn lanes(&self) -> usize {
        self.lanes
    }

    /// Makes `lane` the one that per-lane calls (parameters, targets, downloads, a fit's
    /// state, snapshots) address.
    pub fn select(&mut self, lane: usize) -> Result<(), GpuError> {
        if lane >= self.lanes {
            return Err(GpuError(format!(
                "lane {lane} of a network with {} lanes",
                self.lanes
            )));
        }
        self.lane = lane;
        Ok(())
    }

    /// The selected lane's first f32 word (0 while the network's work for all lanes is
    /// queued).
    fn lane_at(&self) -> usize {
        if self.all { 0 } else { self.lane * self.stride }
    }

    fn lane_at64(&self) -> usize {
        if self.all {
            0
        } else {
            self.lane * self.stride64
        }
    }

    /// Queues `f`'s work for every lane.
    fn collective<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let was = std::mem::replace(&mut self.all, true);
        let r = f(self);
        self.all = was;
        r
    }

    fn up64(&mut self, off: usize, src: &[f64]) -> Result<(), GpuError> {
        let at = off + self.lane_at64();
        self.dev.upload64(at, src)
    }

    fn down64(&self, off: usize, n: usize) -> Result<Vec<f64>, GpuError> {
        self.dev.download64(off + self.lane_at64(), n)
    }

    /// The BLAS calls' lanes: all of them while the network's work is queued.
    fn batch(&self) -> Batch {
        Batch {
            count: if self.all { self.lanes } else { 1 },
            stride: self.stride,
        }
    }

    pub fn device(&self) -> &DeviceInfo {
        &self.info
    }

    /// Bytes of device memory the network holds.
    pub fn memory_bytes(&self) -> usize {
        self.lanes * (self.stride * 4 + self.stride64 * 8)
    }

    fn p(&self, off: usize) -> A {
        A::P(self.ptr(off))
    }

    fn ptr(&self, off: usize) -> u64 {
        self.base + 4 * (off + self.lane_at()) as u64
    }

    fn p64(&self, off: usize) -> A {
        A::P(self.base64 + 8 * (off + self.lane_at64()) as u64)
    }

    fn output_len(&self) -> usize {
        self.layout.acts.last().map_or(0, |a| a.1)
    }

    fn launch(
        &self,
        k: K,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        args: &[A],
    ) -> Result<(), GpuError> {
        let lanes = if self.all { self.lanes } else { 1 };
        // The kernel's arguments and the lane strides, without an allocation per launch.
        let mut all = [A::I(0); MAX_ARGS + 2];
        let n = args.len();
        if n > MAX_ARGS {
            return Err(GpuError(format!(
                "{n} kernel arguments, at most {MAX_ARGS}"
            )));
        }
        all[..n].copy_from_slice(args);
        all[n] = long(4 * self.stride);
        all[n + 1] = long(8 * self.stride64);
        self.dev
            .launch(k, (grid.0, grid.1, lanes as u32), block, &all[..n + 2])
    }

    /// An elementwise launch over `n` elements.
    fn launch_n(&self, k: K, n: usize, args: &[A]) -> Result<(), GpuError> {
        self.launch(k, (grid_1d(n), 1, 1), (BLOCK, 1, 1), args)
    }

    fn fill(&self, off: usize, n: usize, v: f32) -> Result<(), GpuError> {
        self.launch_n(K::Fill, n, &[self.p(off), long(n), A::F(v)])
    }

    fn upload(&mut self, off: usize, src: &[f32]) -> Result<(), GpuError> {
        self.dev.upload(off + self.lane_at(), src)
    }

    fn download(&self, off: usize, n: usize) -> Result<Vec<f32>, GpuError> {
        self.dev.download(off + self.lane_at(), n)
    }

    /// Waits for all queued work; reports an error a kernel raised.
    pub fn sync(&self) -> Result<(), GpuError> {
        self.dev.sync()
    }

    /// Zeroes Adam's moments and step counter.
    pub fn reset_adam(&mut self) -> Result<(), GpuError> {
        let n = self.layout.n_params;
        self.fill(self.layout.adam_m, n, 0.0)?;
        self.fill(self.layout.adam_v, n, 0.0)?;
        self.up64(self.layout.adam_state, &[0.0, 1.0, 1.0])?;
        self.adam_betas = None;
        Ok(())
    }

    pub fn set_params(&mut self, params: &[f32]) -> Result<(), GpuError> {
        check_len("parameters", params.len(), self.layout.n_params)?;
        self.upload(self.layout.params, params)
    }

    pub fn params(&self) -> Result<Vec<f32>, GpuError> {
        self.download(self.layout.params, self.layout.n_params)
    }

    /// Gradients of the last backward, in the layout of [`Net::params`].
    pub fn grads(&self) -> Result<Vec<f32>, GpuError> {
        self.download(self.layout.dparams, self.layout.n_params)
    }

    pub fn set_input(&mut self, x: &Tensor<f32>) -> Result<(), GpuError> {
        let (off, n) = self.layout.acts[0];
        check_len("input", x.data.len(), n)?;
        self.upload(off, &x.data)
    }

    /// The loss target, and optionally the diagonal of the forward operator `a` (the data term
    /// compares `a·output` with the target; default all ones: denoising).
    pub fn set_target(&mut self, y: &Tensor<f32>, mask: Option<&[f32]>) -> Result<(), GpuError> {
        let n = self.output_len();
        check_len("target", y.data.len(), n)?;
        self.upload(self.layout.target, &y.data)?;
        match mask {
            Some(m) => {
                check_len("mask", m.len(), n)?;
                self.upload(self.layout.mask, m)
            }
            None => self.fill(self.layout.mask, n, 1.0),
        }
    }

    fn to_tensor(&self, act: usize, data: Vec<f32>) -> Tensor<f32> {
        let (h, w, c) = self.shapes[act];
        Tensor { h, w, c, data }
    }

    /// The output of the last forward (waits for it).
    pub fn output(&self) -> Result<Tensor<f32>, GpuError> {
        let (off, n) = *self.layout.acts.last().expect("an output");
        let data = self.download(off, n)?;
        Ok(self.to_tensor(self.layout.acts.len() - 1, data))
    }

    /// The moving average kept by [`GpuNet::ema_update`].
    pub fn ema(&self) -> Result<Tensor<f32>, GpuError> {
        let data = self.download(self.layout.ema, self.output_len())?;
        Ok(self.to_tensor(self.layout.acts.len() - 1, data))
    }

    /// `ema = β·ema + (1 − β)·output` on the device (β = 0 copies the output).
    pub fn ema_update(&mut self, beta: f32) -> Result<(), GpuError> {
        let n = self.output_len();
        let out = self.layout.acts.last().expect("an output").0;
        if beta == 0.0 {
            // A copy, not 0·ema + output: the average may not hold numbers yet.
            return self.copy(out, self.layout.ema, n);
        }
        self.launch_n(
            K::Ema,
            n,
            &[
                self.p(self.layout.ema),
                self.p(out),
                long(n),
                A::F(beta),
                A::P(0),
            ],
        )
    }

    /// Σ d² of the last [`GpuNet::loss_and_grad`] or [`GpuNet::data_term`], d = a·output −
    /// target (waits for it).
    pub fn loss_sum(&self) -> Result<f64, GpuError> {
        Ok(self.loss_sums()?.0)
    }

    /// `(Σ d², Σ |d|)` of the last data term (waits for it).
    pub fn loss_sums(&self) -> Result<(f64, f64), GpuError> {
        let l = self.down64(self.layout.loss, 2)?;
        Ok((l[0], l[1]))
    }

    /// The data term's sums `[Σ d², Σ |d|, Σ w·d², Σ w·|d|]` and Adam's state
    /// `[t, β1^t, β2^t]` in one copy (they are neighbours in the arena): one wait at a fit's
    /// divergence check.
    pub fn loss_sums_and_adam(&self) -> Result<([f64; 4], [f64; 3]), GpuError> {
        let l = self.down64(self.layout.loss, 7)?;
        Ok(([l[0], l[1], l[2], l[3]], [l[4], l[5], l[6]]))
    }

    /// Queues the squared-error loss and writes its gradient, `scale·a·(a·output − target)`, as
    /// the output gradient (`scale` = 2/n gives the mean squared error's; `a` is the diagonal
    /// operator of [`GpuNet::set_target`]).
    pub fn loss_and_grad(&mut self, scale: f32) -> Result<(), GpuError> {
        self.data_term(scale, false)
    }

    /// Queues the data term of the diagonal operator `a` and target of [`GpuNet::set_target`],
    /// d = a·output − target: its sums `[Σ d², Σ |d|]` and, as the output gradient,
    /// `scale·a·d` (squared error) or `scale·a·sign(d)` (`l1`, absolute error).
    pub fn data_term(&mut self, scale: f32, l1: bool) -> Result<(), GpuError> {
        self.weighted_data_term(scale, l1, false)
    }

    /// [`GpuNet::data_term`] with each sample's gradient also multiplied by its weight of
    /// [`GpuNet::set_weights`] (when `weighted`), whose weighted sums `[Σ w·d², Σ w·|d|]` are
    /// kept too ([`GpuNet::loss_sums_and_adam`]).
    pub fn weighted_data_term(
        &mut self,
        scale: f32,
        l1: bool,
        weighted: bool,
    ) -> Result<(), GpuError> {
        let last = self.layout.acts.len() - 1;
        let (out, n) = self.layout.acts[last];
        let dout = self.layout.grads[last].ok_or_else(|| GpuError("no output gradient".into()))?;
        let w = weighted.then_some(self.layout.weights);
        if let Some(op) = self.op {
            self.spmv(op.a, out, op.ax, op.n_obs)?;
            self.loss_kernels([op.ax, op.target, op.ones, op.g_ax], w, op.n_obs, scale, l1)?;
            return self.spmv(op.at, op.g_ax, dout, n);
        }
        let l = &self.layout;
        self.loss_kernels([out, l.target, l.mask, dout], w, n, scale, l1)
    }

    /// Replaces the data term's per-sample weights (over the observation: the output, or the
    /// sparse operator's rows).
    pub fn set_weights(&mut self, w: &[f32]) -> Result<(), GpuError> {
        let n = self.op.map_or(self.output_len(), |op| op.n_obs);
        check_len("sample weights", w.len(), n)?;
        self.upload(self.layout.weights, w)
    }

    /// The data term's two kernels over `[out, target, factor, gradient]` (and weights): partial
    /// sums per thread, then their fixed-order total in the loss slot.
    fn loss_kernels(
        &self,
        b: [usize; 4],
        w: Option<usize>,
        n: usize,
        scale: f32,
        l1: bool,
    ) -> Result<(), GpuError> {
        let part = self.layout.part;
        self.launch(
            K::DataLoss,
            ((LOSS_THREADS / BLOCK as usize) as u32, 1, 1),
            (BLOCK, 1, 1),
            &[
                self.p(b[0]),
                self.p(b[1]),
                self.p(b[2]),
                w.map_or(A::P(0), |w| self.p(w)),
                self.p(b[3]),
                self.p64(part),
                long(n),
                A::F(scale),
                int(l1 as usize),
            ],
        )?;
        self.launch(
            K::LossFinalize,
            (1, 1, 1),
            (1, 1, 1),
            &[
                self.p64(part),
                int(LOSS_THREADS),
                self.p64(self.layout.loss),
            ],
        )
    }

    fn spmv(&self, m: [usize; 3], x: usize, y: usize, rows: usize) -> Result<(), GpuError> {
        self.launch_n(
            K::Spmv,
            rows,
            &[
                self.p(m[0]),
                self.p(m[1]),
                self.p(m[2]),
                self.p(x),
                self.p(y),
                long(rows),
            ],
        )
    }

    /// A forward operator that is not diagonal: the data term becomes `A·output` against
    /// `target` (the observation), its gradient `Aᵀ` of the observation-side gradient. `a` maps
    /// the network's output samples (its input space is the whole output, padding included)
    /// to the observation's. Needs the room of [`operator_space`] (see [`GpuNet::with_room`]).
    pub fn set_operator(&mut self, a: &SparseRows, target: &[f32]) -> Result<(), GpuError> {
        check_len("operator input", a.n_in, self.output_len())?;
        check_len("observation", target.len(), a.n_out)?;
        let need = operator_space(a);
        if need > self.layout.extra_len {
            return Err(GpuError(format!(
                "the forward operator needs {need} words of device memory, the network was \
                 given room for {}",
                self.layout.extra_len
            )));
        }
        let at = a.transpose();
        let mut bump = self.layout.extra;
        let mut take = |n: usize| {
            let o = bump;
            bump += n.div_ceil(super::plan::ALIGN).max(1) * super::plan::ALIGN;
            o
        };
        let op = OpLayout {
            n_obs: a.n_out,
            ax: take(a.n_out),
            target: take(a.n_out),
            ones: take(a.n_out),
            g_ax: take(a.n_out),
            a: [take(a.n_out + 1), take(a.nnz()), take(a.nnz())],
            at: [take(at.n_out + 1), take(at.nnz()), take(at.nnz())],
        };
        if let Some(have) = self.op.filter(|_| self.lanes > 1)
            && have != op
        {
            return Err(GpuError(format!(
                "lane {}: a forward operator of another shape than the other lanes' ({} \
                 observations, {} weights)",
                self.lane,
                a.n_out,
                a.nnz()
            )));
        }
        let words = |v: &[u32]| v.iter().map(|&u| f32::from_bits(u)).collect::<Vec<f32>>();
        self.upload(op.target, target)?;
        self.fill(op.ones, a.n_out, 1.0)?;
        for (at_, m) in [(op.a, a), (op.at, &at)] {
            self.upload(at_[0], &words(&m.start))?;
            self.upload(at_[1], &words(&m.idx))?;
            self.upload(at_[2], &m.w)?;
        }
        self.op = Some(op);
        Ok(())
    }

    /// Makes `z` the network's fixed input (and its current input).
    pub fn set_fixed_input(&mut self, z: &[f32]) -> Result<(), GpuError> {
        let (off, n) = self.layout.acts[0];
        check_len("input", z.len(), n)?;
        self.upload(self.layout.z, z)?;
        self.upload(off, z)
    }

    /// Queues `input = z + sd·N(0, 1)`, the normals drawn from `key` (see [`noise_key`]).
    pub fn perturb_input(&mut self, key: u64, sd: f32) -> Result<(), GpuError> {
        let (off, n) = self.layout.acts[0];
        self.add_gauss(self.layout.z, off, n, key, sd)
    }

    /// Queues `params[offset..offset + len] += sd·N(0, 1)`, the normals drawn from `key`.
    pub fn perturb_params(
        &mut self,
        offset: usize,
        len: usize,
        key: u64,
        sd: f32,
    ) -> Result<(), GpuError> {
        if offset + len > self.layout.n_params {
            return Err(GpuError(format!(
                "parameters {offset}..{} are outside the {} of the network",
                offset + len,
                self.layout.n_params
            )));
        }
        let at = self.layout.params + offset;
        self.add_gauss(at, at, len, key, sd)
    }

    fn add_gauss(
        &self,
        base: usize,
        dst: usize,
        n: usize,
        key: u64,
        sd: f32,
    ) -> Result<(), GpuError> {
        self.gauss(base, dst, n, key, None, sd as f64, false)
    }

    /// `dst = base + sd·N(0, 1)`: the normals of `key`, or with `stream` those of (the fit's
    /// seed key `key`, its device-side step, `stream`), sd then multiplied by the device-side
    /// step size if `by_lr`.
    #[allow(clippy::too_many_arguments)]
    fn gauss(
        &self,
        base: usize,
        dst: usize,
        n: usize,
        key: u64,
        stream: Option<u64>,
        sd: f64,
        by_lr: bool,
    ) -> Result<(), GpuError> {
        self.launch_n(
            K::AddGauss,
            n,
            &[
                self.p(base),
                self.p(dst),
                long(n),
                A::L(key as i64),
                A::L(stream.unwrap_or(0) as i64),
                match stream {
                    Some(_) => self.p64(self.layout.fit_state),
                    None => A::P(0),
                },
                A::D(sd),
                int(by_lr as usize),
            ],
        )
    }

    /// The network's current input (waits for it).
    pub fn input(&self) -> Result<Tensor<f32>, GpuError> {
        let (off, n) = self.layout.acts[0];
        let data = self.download(off, n)?;
        Ok(self.to_tensor(0, data))
    }

    /// Replaces the moving average.
    pub fn set_ema(&mut self, ema: &[f32]) -> Result<(), GpuError> {
        check_len("moving average", ema.len(), self.output_len())?;
        self.upload(self.layout.ema, ema)
    }

    /// Adam's first and second moments (waits for them).
    pub fn moments(&self) -> Result<(Vec<f32>, Vec<f32>), GpuError> {
        let n = self.layout.n_params;
        Ok((
            self.download(self.layout.adam_m, n)?,
            self.download(self.layout.adam_v, n)?,
        ))
    }

    /// Replaces Adam's moments, and its step count with `t` (the bias corrections are rebuilt
    /// as the device builds them, one product per step, so a restored run continues exactly).
    pub fn set_adam(
        &mut self,
        m: &[f32],
        v: &[f32],
        t: u64,
        beta1: f64,
        beta2: f64,
    ) -> Result<(), GpuError> {
        let n = self.layout.n_params;
        check_len("Adam moment", m.len(), n)?;
        check_len("Adam moment", v.len(), n)?;
        self.upload(self.layout.adam_m, m)?;
        self.upload(self.layout.adam_v, v)?;
        let (mut b1, mut b2) = (1.0f64, 1.0f64);
        for _ in 0..t {
            b1 *= beta1;
            b2 *= beta2;
        }
        self.up64(self.layout.adam_state, &[t as f64, b1, b2])?;
        self.adam_betas = (t > 0).then_some((beta1, beta2));
        Ok(())
    }

    /// Adam's step count (waits for it).
    pub fn adam_t(&self) -> Result<u64, GpuError> {
        Ok(self.down64(self.layout.adam_state, 1)?[0] as u64)
    }

    fn copy(&self, from: usize, to: usize, n: usize) -> Result<(), GpuError> {
        self.launch_n(K::Copy, n, &[self.p(from), self.p(to), long(n), int(0)])
    }

    /// Keeps the parameters and Adam's moments on the device (queued), for
    /// [`GpuNet::restore`]; returns Adam's state, which the caller keeps (waits for it).
    pub fn save(&mut self) -> Result<[f64; 3], GpuError> {
        self.keep()?;
        let s = self.down64(self.layout.adam_state, 3)?;
        Ok([s[0], s[1], s[2]])
    }

    /// [`GpuNet::save`] without reading Adam's state (queued only): for a caller that read it
    /// with [`GpuNet::loss_sums_and_adam`].
    pub fn keep(&mut self) -> Result<(), GpuError> {
        let l = &self.layout;
        let n = l.n_params;
        self.copy(l.params, l.snap_params, n)?;
        self.copy(l.adam_m, l.snap_m, n)?;
        self.copy(l.adam_v, l.snap_v, n)
    }

    /// Keeps the moving average on the device (queued), for [`GpuNet::restore`].
    pub fn save_ema(&mut self) -> Result<(), GpuError> {
        self.copy(self.layout.ema, self.layout.snap_ema, self.output_len())
    }

    /// Goes back to what [`GpuNet::save`] and [`GpuNet::save_ema`] kept, with Adam's state
    /// `adam` (queued).
    pub fn restore(&mut self, adam: [f64; 3]) -> Result<(), GpuError> {
        let l = &self.layout;
        let (n, e) = (l.n_params, self.output_len());
        self.copy(l.snap_params, l.params, n)?;
        self.copy(l.snap_m, l.adam_m, n)?;
        self.copy(l.snap_v, l.adam_v, n)?;
        self.copy(l.snap_ema, l.ema, e)?;
        self.up64(self.layout.adam_state, &adam)
    }

    /// What [`GpuNet::save`] kept: parameters and Adam's two moments (waits for them).
    pub fn saved(&self) -> Result<[Vec<f32>; 3], GpuError> {
        let n = self.layout.n_params;
        Ok([
            self.download(self.layout.snap_params, n)?,
            self.download(self.layout.snap_m, n)?,
            self.download(self.layout.snap_v, n)?,
        ])
    }

    /// Replaces what [`GpuNet::save`] kept (a resumed fit's snapshot).
    pub fn set_saved(&mut self, params: &[f32], m: &[f32], v: &[f32]) -> Result<(), GpuError> {
        let n = self.layout.n_params;
        for (what, x) in [
            ("parameters", params),
            ("Adam moment", m),
            ("Adam moment", v),
        ] {
            check_len(what, x.len(), n)?;
        }
        self.upload(self.layout.snap_params, params)?;
        self.upload(self.layout.snap_m, m)?;
        self.upload(self.layout.snap_v, v)
    }

    /// Queues one Adam step on the parameters with the gradients of the last backward.
    pub fn adam_step(&mut self, cfg: &AdamConfig) -> Result<(), GpuError> {
        self.queue_adam(cfg, false)
    }

    /// Adam with step size `cfg.lr`, or (`fit`) the fit's device-side one.
    fn queue_adam(&mut self, cfg: &AdamConfig, fit: bool) -> Result<(), GpuError> {
        match self.adam_betas {
            None => self.adam_betas = Some((cfg.beta1, cfg.beta2)),
            Some(b) if b != (cfg.beta1, cfg.beta2) => {
                return Err(GpuError(
                    "Adam's betas changed during a fit (reset Adam first)".into(),
                ));
            }
            Some(_) => {}
        }
        let l = &self.layout;
        self.launch(
            K::AdamTick,
            (1, 1, 1),
            (1, 1, 1),
            &[
                self.p64(l.adam_state),
                A::D(cfg.beta1),
                A::D(cfg.beta2),
                if fit { self.p64(l.fit_state) } else { A::P(0) },
            ],
        )?;
        self.launch_n(
            K::Adam,
            l.n_params,
            &[
                self.p(l.params),
                self.p(l.dparams),
                self.p(l.adam_m),
                self.p(l.adam_v),
                long(l.n_params),
                self.p64(l.adam_state),
                A::D(cfg.lr),
                if fit { self.p64(l.fit_state) } else { A::P(0) },
                A::F(cfg.beta1 as f32),
                A::F(cfg.beta2 as f32),
                A::F(cfg.eps as f32),
                A::F(cfg.weight_decay as f32),
                A::F((1.0 - cfg.beta1) as f32),
                A::F((1.0 - cfg.beta2) as f32),
            ],
        )
    }

    /// One training step: forward, squared-error loss against the target (scaled by `scale`),
    /// backward and Adam. Only queues work.
    pub fn step(&mut self, scale: f32, cfg: &AdamConfig) -> Result<(), GpuError> {
        self.collective(|g| {
            g.forward()?;
            g.loss_and_grad(scale)?;
            g.backward()?;
            g.adam_step(cfg)
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn sgemm(
        &self,
        ta: bool,
        tb: bool,
        m: usize,
        n: usize,
        k: usize,
        a: usize,
        lda: usize,
        b: usize,
        ldb: usize,
        beta: f32,
        c: usize,
        ldc: usize,
    ) -> Result<(), GpuError> {
        self.dev.sgemm(
            ta,
            tb,
            m,
            n,
            k,
            self.ptr(a),
            lda,
            self.ptr(b),
            ldb,
            beta,
            self.ptr(c),
            ldc,
            self.batch(),
        )
    }

    /// Fixes what each step of a fit does ([`GpuNet::fit_front`], [`GpuNet::fit_back`]) and,
    /// unless [`GpuNet::set_graphs`] turned graphs off, captures the two halves into CUDA
    /// graphs, so that a step is two launches. The step number and the step size live on the
    /// device ([`GpuNet::set_fit_state`], [`GpuNet::set_lr`]), so replays equal direct launches
    /// bit for bit. A capture the device refuses leaves the fit on direct launches
    /// ([`GpuNet::graph_error`] says why).
    pub fn prepare_fit(&mut self, step: FitStep) -> Result<(), GpuError> {
        self.set_fit_seed(step.seed)?;
        self.fit = Some(step);
        self.fit_captured = false;
        self.graph_error = None;
        if !self.use_graphs {
            return Ok(());
        }
        let captured = self
            .capture(FRONT, Self::queue_front)
            .and_then(|()| self.capture(BACK, Self::queue_back));
        match captured {
            Ok(()) => self.fit_captured = true,
            Err(e) => self.graph_error = Some(e.0),
        }
        Ok(())
    }

    fn capture(
        &mut self,
        slot: usize,
        queue: fn(&mut Self) -> Result<(), GpuError>,
    ) -> Result<(), GpuError> {
        self.dev.begin_capture()?;
        let recorded = self.collective(queue);
        let ended = self.dev.end_capture(slot);
        recorded.and(ended)
    }

    /// Whether the fit's steps run as captured graphs.
    pub fn fit_graphs(&self) -> bool {
        self.fit_captured
    }

    /// Why the fit's steps could not be captured, if they could not.
    pub fn graph_error(&self) -> Option<&str> {
        self.graph_error.as_deref()
    }

    /// Whether [`GpuNet::prepare_fit`] captures graphs (default yes).
    pub fn set_graphs(&mut self, on: bool) {
        self.use_graphs = on;
    }

    /// Sets the fit's device state: `done` steps done, step size `lr`.
    pub fn set_fit_state(&mut self, done: u64, lr: f64) -> Result<(), GpuError> {
        self.up64(self.layout.fit_state, &[done as f64, lr])
    }

    /// Sets the selected lane's seed, from which its fit's noise is drawn (with the step and a
    /// stream; [`GpuNet::prepare_fit`] sets the prepared step's), makes its fit active and
    /// forgets its power vectors: the start of a fit.
    pub fn set_fit_seed(&mut self, seed: u64) -> Result<(), GpuError> {
        self.reset_power_vectors()?;
        let k = seed_key(seed);
        self.up64(
            self.layout.fit_state + 2,
            &[(k >> 32) as f64, (k & 0xffff_ffff) as f64, 1.0],
        )
    }

    /// Whether the selected lane's fit takes the rest of its current step (moving average,
    /// Adam, SGLD's noise): a lane that went back to its last good state skips them while the
    /// other lanes go on.
    pub fn set_active(&mut self, active: bool) -> Result<(), GpuError> {
        self.up64(self.layout.fit_state + 4, &[active as u8 as f64])
    }

    /// Sets the fit's step size (after a rollback).
    pub fn set_lr(&mut self, lr: f64) -> Result<(), GpuError> {
        self.up64(self.layout.fit_state + 1, &[lr])
    }

    /// The first half of a fit's step (queued): the step counter, the perturbed input, the
    /// forward and the data term with its gradient. The loss can then be read.
    pub fn fit_front(&mut self) -> Result<(), GpuError> {
        self.run_part(FRONT, Self::queue_front)
    }

    /// A part of the fit's step: its graph replayed, or its launches queued directly.
    fn run_part(
        &mut self,
        slot: usize,
        queue: fn(&mut Self) -> Result<(), GpuError>,
    ) -> Result<(), GpuError> {
        if self.fit_captured {
            self.dev.replay(slot)
        } else {
            self.collective(queue)
        }
    }

    /// The second half (queued): backward, moving average, Adam, Lipschitz control, SGLD's
    /// weight noise.
    pub fn fit_back(&mut self) -> Result<(), GpuError> {
        self.run_part(BACK, Self::queue_back)
    }

    fn fit_step(&self) -> Result<FitStep, GpuError> {
        self.fit
            .clone()
            .ok_or_else(|| GpuError("no fit was prepared (prepare_fit)".into()))
    }

    fn queue_front(&mut self) -> Result<(), GpuError> {
        let f = self.fit_step()?;
        let st = self.p64(self.layout.fit_state);
        self.launch(K::FitTick, (1, 1, 1), (1, 1, 1), &[st])?;
        if f.reg_noise > 0.0 {
            let (off, n) = self.layout.acts[0];
            self.fit_gauss(self.layout.z, off, n, 0, f.reg_noise, false)?;
        }
        self.forward()?;
        self.weighted_data_term(f.scale, f.l1, f.weighted)
    }

    fn queue_back(&mut self) -> Result<(), GpuError> {
        let f = self.fit_step()?;
        self.queue_backward()?;
        let n = self.output_len();
        let out = self.layout.acts.last().expect("an output").0;
        self.launch_n(
            K::Ema,
            n,
            &[
                self.p(self.layout.ema),
                self.p(out),
                long(n),
                A::F(f.ema),
                self.p64(self.layout.fit_state),
            ],
        )?;
        self.queue_adam(&f.adam, true)?;
        if let Some(lambda) = f.lipschitz {
            self.queue_lipschitz(lambda, true)?;
        }
        if let Some((noise, tensors)) = &f.sgld {
            for (k, &(off, len)) in tensors.iter().enumerate() {
                let at = self.layout.params + off;
                self.fit_gauss(at, at, len, 1 + k as u64, *noise, true)?;
            }
        }
        Ok(())
    }

    /// Lipschitz control on the device (queued, every lane): each weight matrix (a convolution's
    /// `k·k·cin × cout`, a dense layer's `n_in × n_out`) scaled by `1 / max(1, σ_max/λ)`, σ_max
    /// from the CPU engine's power iteration in the same f64 operations, warm-started from the
    /// lane's last vectors ([`GpuNet::reset_power_vectors`]), so the parameters are the CPU's
    /// [`Net::lipschitz_project`] of the same parameters.
    pub fn lipschitz_project(&mut self, lambda: f64) -> Result<(), GpuError> {
        self.collective(|g| g.queue_lipschitz(lambda, false))
    }

    /// The projection's two kernels; in a fit (`fit`), not for a lane that skips its step.
    fn queue_lipschitz(&mut self, lambda: f64, fit: bool) -> Result<(), GpuError> {
        let l = &self.layout;
        let n = l.lip_matrices;
        if n == 0 {
            return Ok(());
        }
        let state = if fit { self.p64(l.fit_state) } else { A::P(0) };
        self.launch(
            K::LipschitzNorm,
            (n.div_ceil(32) as u32, 1, 1),
            (32, 1, 1),
            &[
                self.p(l.params),
                self.p(l.lip_table),
                self.p64(l.lip_vecs),
                self.p(l.lip_factor),
                int(n),
                A::D(lambda),
                state,
            ],
        )?;
        self.launch(
            K::LipschitzScale,
            (64, n as u32, 1),
            (BLOCK, 1, 1),
            &[
                self.p(l.params),
                self.p(l.lip_table),
                self.p(l.lip_factor),
                state,
            ],
        )
    }

    /// Forgets the selected lane's power vectors (a new fit starts them afresh, as the CPU's).
    pub fn reset_power_vectors(&mut self) -> Result<(), GpuError> {
        let (at, n) = (self.layout.lip_vecs, self.layout.lip_vecs_len);
        if n == 0 {
            return Ok(());
        }
        self.up64(at, &vec![0.0; n])
    }

    /// `dst = base + sd·N(0, 1)` with the normals of (the fit's device-side seed key and step,
    /// `stream`), sd multiplied by the device-side step size if `by_lr`.
    #[allow(clippy::too_many_arguments)]
    fn fit_gauss(
        &self,
        base: usize,
        dst: usize,
        n: usize,
        stream: u64,
        sd: f64,
        by_lr: bool,
    ) -> Result<(), GpuError> {
        self.gauss(base, dst, n, 0, Some(stream), sd, by_lr)
    }

    /// Records one [`GpuNet::step`] into a CUDA graph (nothing runs); [`GpuNet::replay_step`]
    /// then runs it with one launch. The step's arguments are fixed, so each replay is a step
    /// (Adam's counter advances on the device).
    pub fn capture_step(&mut self, scale: f32, cfg: &AdamConfig) -> Result<(), GpuError> {
        self.dev.begin_capture()?;
        let recorded = self.step(scale, cfg);
        let ended = self.dev.end_capture(0);
        recorded.and(ended)
    }

    /// Runs the step captured by [`GpuNet::capture_step`] (queued).
    pub fn replay_step(&self) -> Result<(), GpuError> {
        self.dev.replay(0)
    }

    fn act(&self, a: usize) -> usize {
        self.layout.acts[a].0
    }

    /// Runs every node on the current input (queued).
    pub fn forward(&mut self) -> Result<(), GpuError> {
        self.collective(Self::queue_forward)
    }

    fn queue_forward(&mut self) -> Result<(), GpuError> {
        let params = self.layout.params;
        for node in &self.nodes {
            let x = self.act(node.inputs[0]);
            let y = self.act(node.output);
            let ny = self.layout.acts[node.output].1;
            match &node.op {
                &GpuOp::Conv {
                    cin,
                    cout,
                    k,
                    stride,
                    pad,
                    reflect,
                    h,
                    w,
                    ho,
                    wo,
                    weight,
                    bias,
                } => {
                    let m = ho * wo;
                    let kdim = k * k * cin;
                    let a = if k == 1 && stride == 1 {
                        x
                    } else {
                        let col = self.layout.col;
                        self.launch_n(
                            K::Im2col,
                            m * kdim,
                            &[
                                self.p(x),
                                self.p(col),
                                int(h),
                                int(w),
                                int(cin),
                                int(ho),
                                int(wo),
                                int(k),
                                int(stride),
                                int(pad),
                                A::I(reflect as i32),
                            ],
                        )?;
                        col
                    };
                    // Row-major y[m][cout] = a[m][kdim] · W[kdim][cout], i.e. column-major
                    // yᵀ = Wᵀ · aᵀ.
                    self.sgemm(
                        false,
                        false,
                        cout,
                        m,
                        kdim,
                        params + weight,
                        cout,
                        a,
                        kdim,
                        0.0,
                        y,
                        cout,
                    )?;
                    if let Some(b) = bias {
                        self.launch_n(
                            K::AddBias,
                            m * cout,
                            &[self.p(y), self.p(params + b), long(m * cout), int(cout)],
                        )?;
                    }
                }
                &GpuOp::Norm {
                    c,
                    rows,
                    gamma,
                    beta,
                    eps,
                    neg_slope,
                    stats,
                } => {
                    let (per, parts) = reduction_parts(rows);
                    let part = self.layout.part;
                    self.launch(
                        K::BnPartial,
                        (c.div_ceil(32) as u32, parts as u32, 1),
                        (32, RED_Y, 1),
                        &[self.p(x), self.p64(part), int(rows), int(c), int(per)],
                    )?;
                    self.launch(
                        K::BnFinalize,
                        (c.div_ceil(128) as u32, 1, 1),
                        (128, 1, 1),
                        &[
                            self.p64(part),
                            int(parts * RED_Y as usize),
                            int(rows),
                            int(c),
                            self.p(params + gamma),
                            self.p(params + beta),
                            self.p(stats),
                            A::D(eps),
                        ],
                    )?;
                    self.launch_n(
                        K::BnApply,
                        ny,
                        &[
                            self.p(x),
                            self.p(y),
                            self.p(stats),
                            long(ny),
                            int(c),
                            A::F(neg_slope),
                        ],
                    )?;
                }
                &GpuOp::Upsample {
                    h,
                    w,
                    c,
                    factor,
                    mode,
                } => self.launch_n(
                    K::UpsampleFwd,
                    ny,
                    &[
                        self.p(x),
                        self.p(y),
                        int(h),
                        int(w),
                        int(c),
                        int(factor),
                        A::I(mode),
                    ],
                )?,
                GpuOp::Concat { channels } => {
                    let ctot: usize = channels.iter().sum();
                    let pixels = ny / ctot.max(1);
                    let mut off = 0;
                    for (&i, &ci) in node.inputs.iter().zip(channels) {
                        self.launch_n(
                            K::ConcatFwd,
                            pixels * ci,
                            &[
                                self.p(self.act(i)),
                                self.p(y),
                                long(pixels),
                                int(ci),
                                int(ctot),
                                int(off),
                            ],
                        )?;
                        off += ci;
                    }
                }
                GpuOp::Sigmoid => {
                    self.launch_n(K::SigmoidFwd, ny, &[self.p(x), self.p(y), long(ny)])?
                }
                &GpuOp::LeakyRelu { slope } => self.launch_n(
                    K::LreluFwd,
                    ny,
                    &[self.p(x), self.p(y), long(ny), A::F(slope)],
                )?,
                &GpuOp::Learned { offset, len } => self.launch_n(
                    K::Copy,
                    len,
                    &[self.p(params + offset), self.p(y), long(len), A::I(0)],
                )?,
                &GpuOp::Dense {
                    n_in,
                    n_out,
                    weight,
                    bias,
                } => {
                    if let Some(b) = bias {
                        self.copy(params + b, y, n_out)?;
                    }
                    // W[n_in][n_out] row-major is column-major A (n_out × n_in): y = A·x (+ b).
                    self.sgemm(
                        false,
                        false,
                        n_out,
                        1,
                        n_in,
                        params + weight,
                        n_out,
                        x,
                        n_in,
                        bias.is_some() as i32 as f32,
                        y,
                        n_out,
                    )?;
                }
                &GpuOp::Filter {
                    c,
                    out_pixels,
                    forward,
                    ..
                } => self.gather(forward, x, y, out_pixels, c, 0)?,
            }
        }
        Ok(())
    }

    /// `dst[p][ch] (+)= Σ w·src[q][ch]` over the taps of a gather table (`[start, source,
    /// weight]` offsets).
    fn gather(
        &self,
        table: [usize; 3],
        src: usize,
        dst: usize,
        pixels: usize,
        c: usize,
        add: i32,
    ) -> Result<(), GpuError> {
        self.launch_n(
            K::PixGather,
            pixels * c,
            &[
                self.p(table[0]),
                self.p(table[1]),
                self.p(table[2]),
                self.p(src),
                self.p(dst),
                long(pixels),
                int(c),
                A::I(add),
            ],
        )
    }

    /// Backpropagates the output gradient into the parameter gradients (queued).
    pub fn backward(&mut self) -> Result<(), GpuError> {
        self.collective(Self::queue_backward)
    }

    fn queue_backward(&mut self) -> Result<(), GpuError> {
        let l = &self.layout;
        let (params, dparams) = (l.params, l.dparams);
        for node in self.nodes.iter().rev() {
            let x = self.act(node.inputs[0]);
            let y = self.act(node.output);
            let ny = self.layout.acts[node.output].1;
            let nx = self.layout.acts[node.inputs[0]].1;
            let dy = self.layout.grads[node.output]
                .ok_or_else(|| GpuError("a node's output has no gradient buffer".into()))?;
            // The input gradient's buffer and whether to add to it, or None to skip it.
            let dx_of = |j: usize| -> Option<(usize, i32)> {
                match node.grads[j] {
                    GradUse::Skip => None,
                    g => self.layout.grads[node.inputs[j]].map(|o| (o, (g == GradUse::Add) as i32)),
                }
            };
            match &node.op {
                &GpuOp::Conv {
                    cin,
                    cout,
                    k,
                    stride,
                    pad,
                    reflect,
                    h,
                    w,
                    ho,
                    wo,
                    weight,
                    bias,
                } => {
                    let m = ho * wo;
                    let kdim = k * k * cin;
                    let direct = k == 1 && stride == 1;
                    let col = self.layout.col;
                    let a = if direct {
                        x
                    } else {
                        self.launch_n(
                            K::Im2col,
                            m * kdim,
                            &[
                                self.p(x),
                                self.p(col),
                                int(h),
                                int(w),
                                int(cin),
                                int(ho),
                                int(wo),
                                int(k),
                                int(stride),
                                int(pad),
                                A::I(reflect as i32),
                            ],
                        )?;
                        col
                    };
                    // dW[kdim][cout] = aᵀ · dy: column-major dWᵀ = dyᵀ · a.
                    self.sgemm(
                        false,
                        true,
                        cout,
                        kdim,
                        m,
                        dy,
                        cout,
                        a,
                        kdim,
                        0.0,
                        dparams + weight,
                        cout,
                    )?;
                    if let Some(b) = bias {
                        // db[cout] = Σ_m dy[m][cout]: column-major dyᵀ (cout × m) times ones.
                        self.dev.sgemv(
                            cout,
                            m,
                            self.ptr(dy),
                            cout,
                            self.ptr(self.layout.ones),
                            self.ptr(dparams + b),
                            self.batch(),
                        )?;
                    }
                    if let Some((dx, add)) = dx_of(0) {
                        // d(a)[m][kdim] = dy · Wᵀ: column-major d(a)ᵀ = W · dyᵀ.
                        if direct {
                            self.sgemm(
                                true,
                                false,
                                kdim,
                                m,
                                cout,
                                params + weight,
                                cout,
                                dy,
                                cout,
                                add as f32,
                                dx,
                                kdim,
                            )?;
                        } else {
                            self.sgemm(
                                true,
                                false,
                                kdim,
                                m,
                                cout,
                                params + weight,
                                cout,
                                dy,
                                cout,
                                0.0,
                                col,
                                kdim,
                            )?;
                            self.launch_n(
                                K::Col2im,
                                nx,
                                &[
                                    self.p(col),
                                    self.p(dx),
                                    int(h),
                                    int(w),
                                    int(cin),
                                    int(ho),
                                    int(wo),
                                    int(k),
                                    int(stride),
                                    int(pad),
                                    A::I(reflect as i32),
                                    A::I(add),
                                ],
                            )?;
                        }
                    }
                }
                &GpuOp::Norm {
                    c,
                    rows,
                    gamma,
                    beta,
                    neg_slope,
                    stats,
                    ..
                } => {
                    let (per, parts) = reduction_parts(rows);
                    let part = self.layout.part;
                    self.launch(
                        K::BnBwdPartial,
                        (c.div_ceil(32) as u32, parts as u32, 1),
                        (32, RED_Y, 1),
                        &[
                            self.p(x),
                            self.p(y),
                            self.p(dy),
                            self.p(stats),
                            self.p64(part),
                            int(rows),
                            int(c),
                            int(per),
                            A::F(neg_slope),
                        ],
                    )?;
                    self.launch(
                        K::BnBwdFinalize,
                        (c.div_ceil(128) as u32, 1, 1),
                        (128, 1, 1),
                        &[
                            self.p64(part),
                            int(parts * RED_Y as usize),
                            int(rows),
                            int(c),
                            self.p(params + gamma),
                            self.p(stats),
                            self.p(dparams + gamma),
                            self.p(dparams + beta),
                        ],
                    )?;
                    if let Some((dx, add)) = dx_of(0) {
                        self.launch_n(
                            K::BnBwdApply,
                            nx,
                            &[
                                self.p(x),
                                self.p(y),
                                self.p(dy),
                                self.p(stats),
                                self.p(dx),
                                long(nx),
                                int(c),
                                A::F(neg_slope),
                                A::I(add),
                            ],
                        )?;
                    }
                }
                &GpuOp::Upsample {
                    h,
                    w,
                    c,
                    factor,
                    mode,
                } => {
                    if let Some((dx, add)) = dx_of(0) {
                        self.launch_n(
                            K::UpsampleBwd,
                            nx,
                            &[
                                self.p(dy),
                                self.p(dx),
                                int(h),
                                int(w),
                                int(c),
                                int(factor),
                                A::I(mode),
                                A::I(add),
                            ],
                        )?;
                    }
                }
                GpuOp::Concat { channels } => {
                    let ctot: usize = channels.iter().sum();
                    let pixels = ny / ctot.max(1);
                    let mut off = 0;
                    for (j, &ci) in channels.iter().enumerate() {
                        if let Some((dx, add)) = dx_of(j) {
                            self.launch_n(
                                K::ConcatBwd,
                                pixels * ci,
                                &[
                                    self.p(dy),
                                    self.p(dx),
                                    long(pixels),
                                    int(ci),
                                    int(ctot),
                                    int(off),
                                    A::I(add),
                                ],
                            )?;
                        }
                        off += ci;
                    }
                }
                GpuOp::Sigmoid => {
                    if let Some((dx, add)) = dx_of(0) {
                        self.launch_n(
                            K::SigmoidBwd,
                            nx,
                            &[self.p(y), self.p(dy), self.p(dx), long(nx), A::I(add)],
                        )?;
                    }
                }
                &GpuOp::LeakyRelu { slope } => {
                    if let Some((dx, add)) = dx_of(0) {
                        self.launch_n(
                            K::LreluBwd,
                            nx,
                            &[
                                self.p(x),
                                self.p(dy),
                                self.p(dx),
                                long(nx),
                                A::F(slope),
                                A::I(add),
                            ],
                        )?;
                    }
                }
                &GpuOp::Learned { offset, len } => self.launch_n(
                    K::Copy,
                    len,
                    &[self.p(dy), self.p(dparams + offset), long(len), A::I(0)],
                )?,
                &GpuOp::Dense {
                    n_in,
                    n_out,
                    weight,
                    bias,
                } => {
                    if let Some(b) = bias {
                        self.copy(dy, dparams + b, n_out)?;
                    }
                    // dW[i][o] = x[i]·dy[o]: column-major (n_out × n_in) dy · xᵀ.
                    self.sgemm(
                        false,
                        false,
                        n_out,
                        n_in,
                        1,
                        dy,
                        n_out,
                        x,
                        1,
                        0.0,
                        dparams + weight,
                        n_out,
                    )?;
                    if let Some((dx, add)) = dx_of(0) {
                        // dx = Aᵀ·dy.
                        self.sgemm(
                            true,
                            false,
                            n_in,
                            1,
                            n_out,
                            params + weight,
                            n_out,
                            dy,
                            n_out,
                            add as f32,
                            dx,
                            n_in,
                        )?;
                    }
                }
                &GpuOp::Filter {
                    c,
                    in_pixels,
                    adjoint,
                    ..
                } => {
                    if let Some((dx, add)) = dx_of(0) {
                        self.gather(adjoint, dy, dx, in_pixels, c, add)?;
                    }
                }
            }
        }
        Ok(())
    }
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

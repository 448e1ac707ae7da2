//! The CUDA backend: the context, the kernels compiled by NVRTC, cuBLAS, the arenas and CUDA
//! graphs, behind the [`Backend`] trait that the host emulation also implements.

use std::sync::Arc;

use cudarc::cublas::CudaBlas;
use cudarc::cublas::sys as blas;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg,
};

use super::*;
use crate::cuda::GpuError;

/// The CUDA device.
pub(super) struct Cuda {
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
            crate::cuda::KERNELS,
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
    pub(super) fn open(
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
        let funcs = crate::cuda::KERNEL_NAMES
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
        unsafe { b.launch(cfg) }.map(|_| ()).map_err(|e| {
            GpuError(format!(
                "kernel {}: {e}",
                crate::cuda::KERNEL_NAMES[k as usize]
            ))
        })
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

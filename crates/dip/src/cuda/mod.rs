//! The GPU backend (feature `cuda`): the engine's node list run on an NVIDIA GPU.
//!
//! Nothing CUDA is needed to build it. The driver, NVRTC and cuBLAS are loaded when a
//! [`GpuNet`] is made; the kernels (`kernels.cu`) are compiled then by NVRTC for the card found.
//! Matrix work goes to cuBLAS (f32, or TF32 tensor cores with [`Precision::Tf32`]).
//!
//! All device memory is two arenas (f32 and f64) allocated when the network is uploaded; a
//! training step allocates nothing, synchronises with the host nowhere and keeps every argument
//! of every launch fixed (Adam's step counter, and a fit's step number and step size, live on
//! the device), so a step can be captured into a CUDA graph as it is and replayed. Convolutions are im2col + GEMM (1×1 stride-1 convolutions are one
//! GEMM on the activation itself); their adjoints are gathers, so results do not depend on
//! scheduling.

mod emu;
mod exec;
pub mod golden;
pub mod plan;

pub use exec::{DeviceInfo, FitStep, GpuNet, Precision, noise_key, operator_space, probe};

/// The kernel source, compiled at run time.
pub const KERNELS: &str = include_str!("kernels.cu");

/// Every kernel the executor launches, in the order of [`exec::K`].
pub const KERNEL_NAMES: &[&str] = &[
    "im2col",
    "col2im",
    "add_bias",
    "fill",
    "copy",
    "bn_partial",
    "bn_finalize",
    "bn_apply",
    "bn_bwd_partial",
    "bn_bwd_finalize",
    "bn_bwd_apply",
    "upsample_fwd",
    "upsample_bwd",
    "concat_fwd",
    "concat_bwd",
    "sigmoid_fwd",
    "sigmoid_bwd",
    "lrelu_fwd",
    "lrelu_bwd",
    "data_loss",
    "add_gauss",
    "spmv",
    "adam_tick",
    "adam",
    "ema",
    "fit_tick",
    "pix_gather",
    "loss_finalize",
    "lipschitz_norm",
    "lipschitz_scale",
];

/// An error of the GPU backend, as one line for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuError(pub String);

impl std::fmt::Display for GpuError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GpuError {}

impl From<GpuError> for crate::Error {
    fn from(e: GpuError) -> Self {
        crate::Error::invalid(e.0)
    }
}

/// Compiles the kernels to PTX with NVRTC, without a GPU (NVRTC is a plain library). `arch` is
/// e.g. `compute_90`; `None` takes NVRTC's default.
pub fn compile_kernels(arch: Option<&str>) -> Result<String, GpuError> {
    exec::nvrtc_present()?;
    let mut options = vec!["--std=c++17".to_string()];
    if let Some(a) = arch {
        options.push(format!("--gpu-architecture={a}"));
    }
    let opts = cudarc::nvrtc::CompileOptions {
        options,
        ..Default::default()
    };
    let ptx = exec::catch("NVRTC", || {
        cudarc::nvrtc::compile_ptx_with_opts(KERNELS, opts)
            .map_err(|e| GpuError(format!("NVRTC could not compile the kernels: {e}")))
    })??;
    Ok(ptx.to_src())
}

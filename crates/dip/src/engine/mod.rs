//! The engine: tensors, layers with explicit forward and backward, the network graph, and Adam.
//!
//! Tensors are a single image, channel-last (HWC). Every layer is a struct whose `forward` caches
//! what its `backward` needs in buffers allocated once, when the network is built; a training step
//! allocates nothing. Matrix work goes to the `gemm` crate, everything else is split over rayon.

mod activation;
mod adam;
mod batchnorm;
pub mod bf16;
mod concat;
mod conv;
mod dense;
mod filter;
mod float;
mod gemm;
pub mod lipschitz;
pub(crate) mod net;
mod pad;
mod par;
mod sigmoid;
mod tensor;
mod upsample;

pub use activation::LeakyRelu;
pub use adam::{Adam, AdamConfig, first_step_allowance};
pub use batchnorm::{BatchNorm, NormGrad};
pub use concat::Concat;
pub use conv::{Conv2d, ConvScratch};
pub use dense::Dense;
pub use filter::{FilterPad, FixedFilter};
pub use float::Float;
#[doc(hidden)]
pub use gemm::in_gemm;
pub use gemm::{GemmTime, Precision, gemm_times, set_gemm_timing};
pub use net::{ActId, Net, NetBuilder, NodeTime, Op, ParamInfo, ParamKind};
pub use pad::PadMode;
pub use sigmoid::Sigmoid;
pub use tensor::Tensor;
pub use upsample::{Upsample, UpsampleMode};

//! `dip`: the Deep Image Prior, and the tools that show why it works.
//!
//! Data flows `image → operators → nets (engine) → fit (+ observers) → metrics / report`.
//! Images and network tensors are both stored channel-last (HWC), values in \[0, 1\].

#[cfg(feature = "cuda")]
pub mod cuda;
pub mod device;
pub mod engine;
pub mod error;
pub mod fit;
pub mod golden;
pub mod gp;
pub mod image;
pub mod metrics;
pub mod nets;
pub mod noise;
pub mod npy;
pub mod operators;
pub mod recipe;
pub mod report;
pub mod robustness;
pub mod sigma;
pub mod spectral;
pub mod sweep;
pub mod synthetic;
pub mod task;
pub mod trajectory;

pub use error::{Error, Result};

//! The Gaussian-process view of the Deep Image Prior.
//!
//! - [`prior`]: the network's output distribution at initialisation by Monte Carlo: mean,
//!   stationary covariance (the kernel), power spectrum, Gaussianity and stationarity.
//! - [`regression`]: GP regression with a stationary kernel (the DIP kernel or an RBF):
//!   denoising by the Wiener filter, inpainting by conjugate gradients, hyperparameters by
//!   marginal likelihood.
//! - [`rates`]: the kernel's eigenvalue per frequency band by probing the Jacobian, and the
//!   band half-times it predicts.
//!
//! SGLD (a posterior mean and uncertainty from the fit itself) lives in the fit loop:
//! [`crate::fit::SgldConfig`].

pub mod grid;
pub mod kernel;
pub mod prior;
pub mod rates;
pub mod regression;

pub use kernel::{Kernel, TorusKernel};
pub use prior::{PriorConfig, PriorStats, measure_samples, sample_prior};
pub use rates::{RatesConfig, band_eigenvalues, predict_half_times};
pub use regression::{Boundary, CgConfig, CgReport, GpFit, Prior, gp_denoise, gp_inpaint};

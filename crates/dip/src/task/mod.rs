//! The library's one entry point for restoration.
//!
//! A [`Problem`] holds the observation, its operator, what is known of its noise and, for
//! experiments, the clean image; a [`Degradation`] makes one from a clean image. [`restore`]
//! fits a [`Recipe`](crate::recipe::Recipe)'s network to it under a [`RunContext`] (device,
//! cancellation, checkpoints, observers) and returns a [`Restoration`]: the chosen image, the
//! step and the rule that chose it, the metrics against the clean image, and the whole fit's
//! report. The command line, sweeps and the demo all restore through it.

mod problem;
mod restore;

pub use problem::{Degradation, MaskKind, Noise, NoiseModel, Problem, Seeds, TaskKind, cgls};
pub use restore::{OBSERVE_EVERY, Restoration, RunContext, SgldOutcome, check_resumable, restore};

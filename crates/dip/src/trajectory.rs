//! The index of a recorded trajectory: what [`crate::fit::TrajectoryRecorder`] writes and
//! [`crate::spectral::study`] reads. It sits below both, so neither imports the other for it.

use serde::{Deserialize, Serialize};

/// The index of a recorded trajectory (`trajectory.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrajectoryIndex {
    pub steps: Vec<usize>,
    pub loss: Vec<f64>,
    pub psnr_raw: Vec<Option<f64>>,
    pub psnr_ema: Vec<Option<f64>>,
    /// Frame files, relative to the trajectory folder.
    pub frames: Vec<String>,
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub seed: u64,
    /// The run's settings, as the caller describes them.
    pub config: serde_json::Value,
}

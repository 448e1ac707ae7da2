//! Observers: code that watches the fit every few steps.

use crate::image::Image;

/// What an observer sees at a check.
pub struct StepInfo<'a> {
    /// 1-based step number just completed.
    pub iter: usize,
    /// Loss of this step: the data term (mean squared or absolute error to the observation).
    pub loss: f64,
    /// Raw network output of this step, cropped to the image size.
    pub output: &'a Image,
    /// Exponential moving average of the outputs.
    pub ema: &'a Image,
    /// PSNR of the raw output and of the EMA against the clean image, when one is known.
    pub psnr_raw: Option<f64>,
    pub psnr_ema: Option<f64>,
}

/// What an observer asks of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Continue,
    Stop,
}

/// Watches a fit. Called every `FitConfig::observe_every` steps and at the last step.
/// Observers are `Send` because the loop runs on a worker thread of the rayon pool.
pub trait Observer: Send {
    fn observe(&mut self, info: &StepInfo<'_>) -> Control;

    /// What a checkpoint must hold for this observer to continue exactly: `None` for an
    /// observer with no state worth keeping (a progress bar).
    fn save_state(&self) -> Option<serde_json::Value> {
        None
    }

    /// Restores what [`Observer::save_state`] returned.
    fn load_state(&mut self, _state: &serde_json::Value) -> crate::Result<()> {
        Ok(())
    }
}

impl<F: FnMut(&StepInfo<'_>) -> Control + Send> Observer for F {
    fn observe(&mut self, info: &StepInfo<'_>) -> Control {
        self(info)
    }
}

//! An observer that measures, at every observed step, how much of each radial frequency band of
//! the observation the raw output has fitted, and gives each band's half-time at the end.

use std::sync::Arc;

use super::observer::{Control, Observer, StepInfo};
use crate::image::Image;
use crate::spectral::analysis::{BandTracker, band_half_times};
use crate::spectral::bands::Bands;
use crate::{Error, Result};

/// Records the band fits of the raw output; a measuring error stops the fit and is returned by
/// [`BandRecorder::half_times`].
pub struct BandRecorder {
    tracker: BandTracker,
    records: Vec<(usize, Vec<f64>)>,
    error: Option<Error>,
}

impl BandRecorder {
    /// Bands over the observation's size (the output must have that size); `clean`, when
    /// given, is measured against too.
    pub fn new(bands: Arc<Bands>, observation: &Image, clean: Option<&Image>) -> Result<Self> {
        Ok(BandRecorder {
            tracker: BandTracker::new(bands, observation, clean)?,
            records: Vec::new(),
            error: None,
        })
    }

    /// (step, fit of each band) at every observed step.
    pub fn records(&self) -> &[(usize, Vec<f64>)] {
        &self.records
    }

    /// Each band's half-time, the step where its fit first reaches one half (`None`: never).
    pub fn half_times(self) -> Result<Vec<Option<f64>>> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(band_half_times(&self.records)),
        }
    }
}

impl Observer for BandRecorder {
    fn observe(&mut self, info: &StepInfo<'_>) -> Control {
        match self.tracker.observe(info.output) {
            Ok(f) => {
                self.records.push((info.iter, f.fit));
                Control::Continue
            }
            Err(e) => {
                self.error = Some(e);
                Control::Stop
            }
        }
    }
}

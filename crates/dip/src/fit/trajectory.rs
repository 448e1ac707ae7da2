//! The trajectory recorder: an observer that streams the outputs of a fit to disk.
//!
//! Every `every` steps it writes the raw output as one NPY file (`frames/step_NNNNNN.npy`,
//! shape `[height, width, channels]`, f32, readable by `numpy.load`) and rewrites the index
//! `trajectory.json` (steps, loss, PSNR, frame names, seed, config). Memory stays bounded
//! whatever the run length, and both files are replaced by rename, so a run that is stopped at
//! any moment leaves a consistent trajectory behind.

use std::path::{Path, PathBuf};

use super::observer::{Control, Observer, StepInfo};
use crate::image::write_atomic;
pub use crate::trajectory::TrajectoryIndex;
use crate::{Error, Result};
use ndarray::ArrayView3;
use ndarray_npy::WriteNpyExt;

/// Records every `every`-th observed step of a fit into a folder.
pub struct TrajectoryRecorder {
    dir: PathBuf,
    every: usize,
    index: TrajectoryIndex,
    error: Option<Error>,
}

impl TrajectoryRecorder {
    /// Records into `dir` (created if needed, with a `frames/` folder). `every` should be a
    /// multiple of the fit's `observe_every`, since the recorder only sees observed steps.
    pub fn new(dir: &Path, every: usize, seed: u64, config: serde_json::Value) -> Result<Self> {
        if every == 0 {
            return Err(Error::invalid("the trajectory interval must be at least 1"));
        }
        std::fs::create_dir_all(dir.join("frames"))
            .map_err(|e| Error::file(dir, format!("cannot create the trajectory folder: {e}")))?;
        let index = TrajectoryIndex {
            seed,
            config,
            ..TrajectoryIndex::default()
        };
        Ok(TrajectoryRecorder {
            dir: dir.to_path_buf(),
            every,
            index,
            error: None,
        })
    }

    pub fn index(&self) -> &TrajectoryIndex {
        &self.index
    }

    /// The first write error, if recording failed (the fit was then asked to stop).
    pub fn take_error(&mut self) -> Option<Error> {
        self.error.take()
    }

    fn record(&mut self, info: &StepInfo<'_>) -> Result<()> {
        let img = info.output;
        let name = format!("frames/step_{:06}.npy", info.iter);
        let view = ArrayView3::from_shape((img.height, img.width, img.channels), &img.data)
            .map_err(|e| Error::invalid(format!("internal: frame shape: {e}")))?;
        let mut bytes = Vec::with_capacity(img.data.len() * 4 + 128);
        view.write_npy(&mut bytes)
            .map_err(|e| Error::invalid(format!("internal: cannot encode a frame: {e}")))?;
        write_atomic(&self.dir.join(&name), &bytes)?;
        let ix = &mut self.index;
        (ix.width, ix.height, ix.channels) = (img.width, img.height, img.channels);
        ix.steps.push(info.iter);
        ix.loss.push(info.loss);
        ix.psnr_raw.push(info.psnr_raw);
        ix.psnr_ema.push(info.psnr_ema);
        ix.frames.push(name);
        let json =
            serde_json::to_vec_pretty(ix).map_err(|e| Error::invalid(format!("internal: {e}")))?;
        write_atomic(&self.dir.join("trajectory.json"), &json)
    }
}

impl Observer for TrajectoryRecorder {
    fn observe(&mut self, info: &StepInfo<'_>) -> Control {
        if !info.iter.is_multiple_of(self.every) || self.error.is_some() {
            return Control::Continue;
        }
        match self.record(info) {
            Ok(()) => Control::Continue,
            Err(e) => {
                self.error = Some(e);
                Control::Stop
            }
        }
    }
}

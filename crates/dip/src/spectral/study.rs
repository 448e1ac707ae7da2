//! The spectral-bias study of recorded fits: from trajectories on disk to `analysis.json`.
//!
//! A fit recorded by [`TrajectoryRecorder`](crate::fit::TrajectoryRecorder) leaves a folder
//! with `trajectory.json` and one NPY frame per recorded step. [`RecordedRun`] opens such a
//! folder and loads frames one at a time; [`analyze`] walks one or more runs of the same
//! observation and measures, per recorded step:
//!
//! - the per-band fit `r_b(t)` against the observation (and the clean image, when known) and
//!   Shi et al.'s correspondence, with each band's half-time `t½` ([`BandTracker`],
//!   [`band_half_times`]);
//! - the Gaussian low-pass of the observation that best explains the output of run 0, and the
//!   best PSNR any Gaussian low-pass of the observation reaches ([`LowpassFitter`]);
//! - the distance between runs 0 and 1 at their common steps, in total and per band
//!   ([`PairAnalyzer`]), with the turning points of that curve;
//! - radially averaged power spectra of the observation, the clean image and two outputs.
//!
//! Memory stays bounded whatever the run length: at most one frame of each of two runs is held
//! at a time. The result, [`Analysis`], is plain data (serde), written by [`Analysis::write`] as
//! `analysis.json` plus CSV tables, and read back by [`Analysis::read`].
//!
//! Conventions: steps are the fit's 1-based step numbers as recorded; frequencies are in
//! cycles per pixel (Nyquist 0.5); band energies are Parseval-normalised sums over pixels and
//! channels (`Σ_b E_b(x) = Σ x²`); two-run distances are *mean* squared differences per sample
//! (`‖x − x'‖² / (width · height · channels)`), so their per-band parts add up to the total.
//! Numbers that are not finite (a band the reference has no energy in, an infinite PSNR) are
//! written to JSON as `null` and read back as NaN.

use std::fs::File;
use std::io::BufReader;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use ndarray::Array3;
use ndarray_npy::ReadNpyExt;
use serde::{Deserialize, Serialize};

use super::analysis::{BandTracker, PairAnalyzer, band_half_times};
use super::bands::{BandSpacing, Bands};
use super::fft::Fft2d;
use super::lowpass::{LowpassFitter, apply_lowpass};
use crate::error::{Error, Result};
use crate::image::{Image, write_atomic};
use crate::metrics::psnr;
use crate::trajectory::TrajectoryIndex;

/// Name of the index file in a recorded run's folder.
pub const TRAJECTORY_FILE: &str = "trajectory.json";
/// Name of the analysis written by [`Analysis::write`].
pub const ANALYSIS_FILE: &str = "analysis.json";
/// Version of the `analysis.json` layout, stored in [`Analysis::format_version`].
pub const FORMAT_VERSION: u32 = 1;
/// Default minimum prominence of a turning point, as a fraction of the smoothed curve's range
/// (see [`turning_points`]).
pub const TURNING_PROMINENCE: f64 = 0.1;

// ---------------------------------------------------------------------------------------------
// Recorded runs
// ---------------------------------------------------------------------------------------------

/// A recorded fit on disk: its index in memory, its frames loaded on demand.
#[derive(Clone, Debug)]
pub struct RecordedRun {
    dir: PathBuf,
    index_path: PathBuf,
    index: TrajectoryIndex,
}

impl RecordedRun {
    /// Opens a run folder (or its `trajectory.json` directly) and checks the index: equal
    /// lengths of all series, strictly increasing steps, a 1- or 3-channel non-empty size, at
    /// least one frame, and frame names inside the folder. Frames are not read here.
    ///
    /// Errors name the index file: missing, unreadable, not JSON of the expected shape, or
    /// inconsistent.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let (dir, index_path) = if path.is_file() {
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            (dir.to_path_buf(), path.to_path_buf())
        } else {
            (path.to_path_buf(), path.join(TRAJECTORY_FILE))
        };
        let bytes = std::fs::read(&index_path).map_err(|e| {
            let msg = match e.kind() {
                std::io::ErrorKind::NotFound => {
                    "no such file: the folder is not a recorded trajectory".to_string()
                }
                _ => format!("cannot read: {e}"),
            };
            Error::file(&index_path, msg)
        })?;
        let index: TrajectoryIndex = serde_json::from_slice(&bytes)
            .map_err(|e| Error::file(&index_path, format!("not a valid trajectory index: {e}")))?;
        check_index(&index).map_err(|msg| Error::file(&index_path, msg))?;
        Ok(RecordedRun {
            dir,
            index_path,
            index,
        })
    }

    /// The run's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of the index file.
    pub fn index_path(&self) -> &Path {
        &self.index_path
    }

    /// A short name for labels: the folder's last component.
    pub fn name(&self) -> String {
        self.dir
            .canonicalize()
            .ok()
            .as_deref()
            .unwrap_or(&self.dir)
            .file_name()
            .map_or_else(|| "run".to_string(), |n| n.to_string_lossy().into_owned())
    }

    /// The parsed index.
    pub fn index(&self) -> &TrajectoryIndex {
        &self.index
    }

    /// Recorded steps, strictly increasing.
    pub fn steps(&self) -> &[usize] {
        &self.index.steps
    }

    /// Number of recorded frames (at least 1).
    pub fn len(&self) -> usize {
        self.index.steps.len()
    }

    /// Always false: [`RecordedRun::open`] refuses a run without frames.
    pub fn is_empty(&self) -> bool {
        self.index.steps.is_empty()
    }

    /// Frame width.
    pub fn width(&self) -> usize {
        self.index.width
    }

    /// Frame height.
    pub fn height(&self) -> usize {
        self.index.height
    }

    /// Frame channels (1 or 3).
    pub fn channels(&self) -> usize {
        self.index.channels
    }

    /// The seed the run was made with.
    pub fn seed(&self) -> u64 {
        self.index.seed
    }

    /// The position of `step` among the recorded steps, if it was recorded.
    pub fn position(&self, step: usize) -> Option<usize> {
        self.index.steps.binary_search(&step).ok()
    }

    /// Path of frame `i`.
    pub fn frame_path(&self, i: usize) -> Result<PathBuf> {
        let name = self.index.frames.get(i).ok_or_else(|| {
            Error::invalid(format!(
                "frame {i} requested, but {} has {} frame(s)",
                self.index_path.display(),
                self.len()
            ))
        })?;
        Ok(self.dir.join(name))
    }

    /// Loads frame `i` (the raw output at `steps()[i]`) as an image.
    ///
    /// Errors name the frame file: missing, not an `f32` NPY array, or of a shape other than
    /// the `[height, width, channels]` the index declares.
    pub fn frame(&self, i: usize) -> Result<Image> {
        let path = self.frame_path(i)?;
        let file = File::open(&path).map_err(|e| {
            let msg = match e.kind() {
                std::io::ErrorKind::NotFound => format!(
                    "missing frame (step {} of {})",
                    self.index.steps[i],
                    self.index_path.display()
                ),
                _ => format!("cannot read the frame: {e}"),
            };
            Error::file(&path, msg)
        })?;
        let arr = Array3::<f32>::read_npy(BufReader::new(file)).map_err(|e| {
            Error::file(
                &path,
                format!("not a 3-D f32 NPY frame ([height, width, channels]): {e}"),
            )
        })?;
        let (h, w, c) = (self.height(), self.width(), self.channels());
        if arr.shape() != [h, w, c] {
            return Err(Error::file(
                &path,
                format!(
                    "frame has shape {:?}, but the trajectory is [{h}, {w}, {c}] \
                     ([height, width, channels])",
                    arr.shape()
                ),
            ));
        }
        let data = if arr.is_standard_layout() {
            arr.into_raw_vec_and_offset().0
        } else {
            arr.iter().copied().collect()
        };
        Image::try_new(w, h, c, data).map_err(|e| Error::file(&path, e.to_string()))
    }

    /// Loads the frame recorded at `step`; an error if that step was not recorded.
    pub fn frame_at_step(&self, step: usize) -> Result<Image> {
        let i = self.position(step).ok_or_else(|| {
            Error::file(
                &self.index_path,
                format!("step {step} was not recorded in this trajectory"),
            )
        })?;
        self.frame(i)
    }

    /// All frames in step order, loaded lazily one at a time: `(step, image)`.
    pub fn frames(&self) -> impl Iterator<Item = Result<(usize, Image)>> + '_ {
        (0..self.len()).map(move |i| self.frame(i).map(|img| (self.index.steps[i], img)))
    }
}

/// Consistency of an index; the message is completed with the file name by the caller.
fn check_index(ix: &TrajectoryIndex) -> std::result::Result<(), String> {
    let n = ix.steps.len();
    if n == 0 {
        return Err("the trajectory has no recorded step".into());
    }
    let lens = [
        ("loss", ix.loss.len()),
        ("psnr_raw", ix.psnr_raw.len()),
        ("psnr_ema", ix.psnr_ema.len()),
        ("frames", ix.frames.len()),
    ];
    for (name, len) in lens {
        if len != n {
            return Err(format!(
                "corrupt index: {n} steps but {len} entries in `{name}`"
            ));
        }
    }
    if let Some(w) = ix.steps.windows(2).find(|w| w[1] <= w[0]) {
        return Err(format!(
            "corrupt index: steps are not increasing ({} then {})",
            w[0], w[1]
        ));
    }
    if ix.width == 0 || ix.height == 0 {
        return Err(format!(
            "corrupt index: frame size {}x{}",
            ix.width, ix.height
        ));
    }
    if ix.channels != 1 && ix.channels != 3 {
        return Err(format!(
            "corrupt index: frames have {} channel(s), expected 1 or 3",
            ix.channels
        ));
    }
    for name in &ix.frames {
        let p = Path::new(name);
        let inside = !name.is_empty()
            && p.components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !inside {
            return Err(format!(
                "corrupt index: frame name {name:?} is not a path inside the trajectory folder"
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Serde helpers: non-finite numbers as null
// ---------------------------------------------------------------------------------------------

/// `f64` that JSON can hold: non-finite values are written as `null`, `null` reads as NaN.
mod nan_null {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(transparent)]
    struct F(#[serde(with = "scalar")] f64);

    pub mod scalar {
        use super::*;
        pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
            if v.is_finite() {
                s.serialize_f64(*v)
            } else {
                s.serialize_none()
            }
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
            Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
        }
    }

    pub mod vec {
        use super::*;
        pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(v.iter().map(|&x| F(x)))
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
            Ok(Vec::<F>::deserialize(d)?.into_iter().map(|f| f.0).collect())
        }
    }

    pub mod matrix {
        use super::*;
        pub fn serialize<S: Serializer>(v: &[Vec<f64>], s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(
                v.iter()
                    .map(|row| row.iter().map(|&x| F(x)).collect::<Vec<_>>()),
            )
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<f64>>, D::Error> {
            Ok(Vec::<Vec<F>>::deserialize(d)?
                .into_iter()
                .map(|row| row.into_iter().map(|f| f.0).collect())
                .collect())
        }
    }

    pub mod opt_vec {
        use super::*;
        pub fn serialize<S: Serializer>(v: &Option<Vec<f64>>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(v) => super::vec::serialize(v, s),
                None => s.serialize_none(),
            }
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<f64>>, D::Error> {
            Ok(Option::<Vec<F>>::deserialize(d)?.map(|v| v.into_iter().map(|f| f.0).collect()))
        }
    }

    pub mod opt_matrix {
        use super::*;
        pub fn serialize<S: Serializer>(
            v: &Option<Vec<Vec<f64>>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match v {
                Some(v) => super::matrix::serialize(v, s),
                None => s.serialize_none(),
            }
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<Vec<Vec<f64>>>, D::Error> {
            Ok(Option::<Vec<Vec<F>>>::deserialize(d)?.map(|m| {
                m.into_iter()
                    .map(|row| row.into_iter().map(|f| f.0).collect())
                    .collect()
            }))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The analysis
// ---------------------------------------------------------------------------------------------

/// Settings of [`analyze`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StudyOptions {
    /// Number of radial bands (default 8).
    pub bands: usize,
    /// How band edges are placed (default linear).
    pub spacing: BandSpacing,
}

impl Default for StudyOptions {
    fn default() -> Self {
        StudyOptions {
            bands: 8,
            spacing: BandSpacing::Linear,
        }
    }
}

/// One radial band and how fast the fit reached it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BandSummary {
    /// Lower edge, cycles/pixel.
    pub lo: f64,
    /// Upper edge, cycles/pixel (the last band also holds the corners beyond 0.5).
    pub hi: f64,
    /// Frequency bins per channel in the band.
    pub bins: usize,
    /// Interpolated first step at which run 0's `r_b` against the observation reaches 0.5;
    /// `None` if it never does.
    pub t_half: Option<f64>,
    /// The same against the clean image (`None` without one, or if never reached).
    pub t_half_clean: Option<f64>,
    /// `t_half` of every run, in run order.
    pub t_half_runs: Vec<Option<f64>>,
    /// `E_b(y)` of the observation (Parseval-normalised, summed over channels).
    pub energy_observation: f64,
    /// `E_b` of the clean image, when given.
    pub energy_clean: Option<f64>,
    /// `E_b(y − clean)`, the noise in the band, when the clean image is given.
    pub energy_noise: Option<f64>,
}

/// The measured series of one run, one entry per recorded step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSeries {
    /// Short label (the run folder's name).
    pub name: String,
    /// The run's seed.
    pub seed: u64,
    /// Recorded steps.
    pub steps: Vec<usize>,
    /// The fit's loss at each step (its data term, as recorded).
    #[serde(with = "nan_null::vec")]
    pub loss: Vec<f64>,
    /// PSNR of the raw output as recorded by the fit (if it knew the clean image).
    pub psnr_raw: Vec<Option<f64>>,
    /// PSNR of the output's moving average as recorded by the fit.
    pub psnr_ema: Vec<Option<f64>>,
    /// PSNR of each recorded frame against the clean image given to [`analyze`].
    #[serde(with = "nan_null::opt_vec")]
    pub psnr_clean: Option<Vec<f64>>,
    /// `band_fit[i][b]` = `r_b` at `steps[i]` against the observation.
    #[serde(with = "nan_null::matrix")]
    pub band_fit: Vec<Vec<f64>>,
    /// `r_b` against the clean image, steps × bands, when one was given.
    #[serde(with = "nan_null::opt_matrix")]
    pub band_fit_clean: Option<Vec<Vec<f64>>>,
    /// Shi et al.'s correspondence, steps × bands.
    #[serde(with = "nan_null::matrix")]
    pub correspondence: Vec<Vec<f64>>,
}

/// Early stopping as a low-pass filter, for run 0.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LowpassSeries {
    /// Recorded steps of run 0.
    pub steps: Vec<usize>,
    /// Cutoff `c(t)` (cycles/pixel) of the Gaussian low-pass of the observation closest to the
    /// output at each step.
    #[serde(with = "nan_null::vec")]
    pub cutoff: Vec<f64>,
    /// `‖LPF_c(y) − x_t‖ / ‖x_t‖` at that cutoff.
    #[serde(with = "nan_null::vec")]
    pub residual: Vec<f64>,
    /// The cutoff sits at the end of the searched range (a bound, not a fit).
    pub at_bound: Vec<bool>,
    /// The best PSNR against the clean image that any Gaussian low-pass of the observation
    /// reaches (`None` without a clean image).
    pub best_lowpass_psnr: Option<f64>,
    /// The cutoff that reaches it.
    pub best_lowpass_cutoff: Option<f64>,
    /// For comparison: the best PSNR of run 0's recorded outputs (equal to
    /// [`Analysis::best_psnr`]).
    pub dip_best_psnr: Option<f64>,
}

/// Whether a turning point is a minimum or a maximum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TurningKind {
    /// A local minimum.
    Min,
    /// A local maximum.
    Max,
}

/// A turning point of the two-run distance curve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TurningPoint {
    /// The step where it is.
    pub step: usize,
    /// Minimum or maximum.
    pub kind: TurningKind,
    /// The (unsmoothed) distance at that step.
    #[serde(with = "nan_null::scalar")]
    pub value: f64,
    /// `step − best_step`, in steps (negative: before the best step); `None` without a best step.
    pub steps_from_best: Option<i64>,
}

/// How two runs of different seeds drift apart (or together) over the fit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TwoRun {
    /// Indices of the two runs compared (always 0 and 1).
    pub runs: [usize; 2],
    /// Steps recorded in both runs.
    pub steps: Vec<usize>,
    /// Mean squared difference per sample, `‖x_t − x'_t‖² / (width · height · channels)`.
    #[serde(with = "nan_null::vec")]
    pub distance: Vec<f64>,
    /// Its part in each band, steps × bands (rows add up to `distance`).
    #[serde(with = "nan_null::matrix")]
    pub per_band: Vec<Vec<f64>>,
    /// Local minima and maxima of `distance` after a 3-point moving average, with a minimum
    /// prominence of [`TURNING_PROMINENCE`] of the curve's range (see [`turning_points`]).
    pub turning_points: Vec<TurningPoint>,
}

/// Radially averaged power spectra (see [`radial_power_spectrum`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RadialSpectra {
    /// Ring centre frequencies, cycles/pixel, from 0 to 0.5.
    pub frequency: Vec<f64>,
    /// The observation.
    #[serde(with = "nan_null::vec")]
    pub observation: Vec<f64>,
    /// The clean image, when given.
    #[serde(with = "nan_null::opt_vec")]
    pub clean: Option<Vec<f64>>,
    /// Run 0's output at [`Analysis::best_step`], when there is one.
    #[serde(with = "nan_null::opt_vec")]
    pub best: Option<Vec<f64>>,
    /// Run 0's last recorded output.
    #[serde(with = "nan_null::vec")]
    pub final_output: Vec<f64>,
    /// The step of `final_output`.
    pub final_step: usize,
}

/// Short machine-readable verdicts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Bands whose `t½` (run 0, against the observation) exists.
    pub bands_reaching_half: usize,
    /// Among the bands that reach 0.5, taken in frequency order, the fraction of consecutive
    /// pairs with `t½(next) ≥ t½(previous)`: 1 when higher bands are never fitted earlier.
    /// `None` with fewer than two such bands.
    pub t_half_monotone: Option<f64>,
    /// Spearman rank correlation between band index and `t½` over the same bands (ties get
    /// average ranks); `None` when undefined (fewer than two bands, or all `t½` equal).
    pub t_half_spearman: Option<f64>,
    /// Spearman rank correlation between step and low-pass cutoff `c(t)` of run 0 (positive:
    /// the output looks like an ever wider low-pass); `None` when undefined.
    pub cutoff_spearman: Option<f64>,
    /// `dip_best_psnr − best_lowpass_psnr` in dB: how much better than the best Gaussian
    /// low-pass the DIP's best output is.
    pub dip_minus_lowpass_db: Option<f64>,
    /// PSNR of run 0's last recorded output against the clean image.
    pub final_psnr: Option<f64>,
}

/// Everything measured on a set of recorded runs; written as `analysis.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    /// Layout version, [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Image columns.
    pub width: usize,
    /// Image rows.
    pub height: usize,
    /// Image channels.
    pub channels: usize,
    /// Number of runs analysed.
    pub num_runs: usize,
    /// Seed of each run.
    pub seeds: Vec<u64>,
    /// Band placement.
    pub spacing: BandSpacing,
    /// Whether a clean image was given.
    pub has_clean: bool,
    /// The bands, low to high.
    pub bands: Vec<BandSummary>,
    /// The recorded step of run 0 whose output has the highest PSNR against the clean image.
    pub best_step: Option<usize>,
    /// That PSNR.
    pub best_psnr: Option<f64>,
    /// Low-pass analysis of run 0.
    pub lowpass: LowpassSeries,
    /// Runs 0 and 1 compared; `None` with a single run.
    pub two_run: Option<TwoRun>,
    /// The series of every run.
    pub runs: Vec<RunSeries>,
    /// Radially averaged power spectra.
    pub spectra: RadialSpectra,
    /// Verdicts.
    pub summary: Summary,
}

/// Progress of [`analyze_with_progress`]: frames processed so far, and in all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Frames read so far.
    pub done: usize,
    /// Frames to read in all.
    pub total: usize,
}

/// Analyses recorded runs of one observation (see the module documentation).
///
/// All runs must have the observation's size and channels; `clean`, when given, too. Run 0 is
/// the reference for `t_half`, the low-pass series and the best step; run 1, when present, is
/// compared with it.
pub fn analyze(
    runs: &[RecordedRun],
    observation: &Image,
    clean: Option<&Image>,
    opts: &StudyOptions,
) -> Result<Analysis> {
    analyze_with_progress(runs, observation, clean, opts, &mut |_| {})
}

/// [`analyze`], calling `progress` after every frame read.
pub fn analyze_with_progress(
    runs: &[RecordedRun],
    observation: &Image,
    clean: Option<&Image>,
    opts: &StudyOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Analysis> {
    let first = runs
        .first()
        .ok_or_else(|| Error::invalid("nothing to analyse: no recorded run given"))?;
    let (w, h, c) = (observation.width, observation.height, observation.channels);
    if observation.data.len() != w * h * c || w == 0 || h == 0 {
        return Err(Error::invalid("the observation is empty or malformed"));
    }
    for run in runs {
        if (run.width(), run.height(), run.channels()) != (w, h, c) {
            return Err(Error::file(
                run.index_path(),
                format!(
                    "frames are {}x{} with {} channel(s), but the observation is {w}x{h} with \
                     {c}",
                    run.width(),
                    run.height(),
                    run.channels()
                ),
            ));
        }
    }
    if let Some(cl) = clean
        && (cl.width, cl.height, cl.channels) != (w, h, c)
    {
        return Err(Error::invalid(format!(
            "the clean image is {}x{} with {} channel(s), the observation {w}x{h} with {c}",
            cl.width, cl.height, cl.channels
        )));
    }
    let bands = Bands::cached(w, h, opts.bands, opts.spacing)?;
    let n_samples = (w * h * c) as f64;

    // Steps of run 0 that run 1 also recorded, as (index in run 0, index in run 1).
    let common: Vec<(usize, usize)> = match runs.get(1) {
        Some(second) => first
            .steps()
            .iter()
            .enumerate()
            .filter_map(|(i, &s)| second.position(s).map(|j| (i, j)))
            .collect(),
        None => Vec::new(),
    };
    let total = runs.iter().map(RecordedRun::len).sum::<usize>() + common.len() + 1;
    let mut done = 0;
    let mut tick = |progress: &mut dyn FnMut(Progress)| {
        done += 1;
        progress(Progress {
            done: done.min(total),
            total,
        });
    };

    let mut fft = Fft2d::new(w, h)?;
    let mut lowpass = LowpassFitter::new(observation)?;
    let mut pair = PairAnalyzer::new(Arc::clone(&bands))?;
    let mut lp = LowpassSeries {
        steps: first.steps().to_vec(),
        cutoff: Vec::with_capacity(first.len()),
        residual: Vec::with_capacity(first.len()),
        at_bound: Vec::with_capacity(first.len()),
        best_lowpass_psnr: None,
        best_lowpass_cutoff: None,
        dip_best_psnr: None,
    };
    let mut two = TwoRun {
        runs: [0, 1],
        steps: Vec::with_capacity(common.len()),
        distance: Vec::with_capacity(common.len()),
        per_band: Vec::with_capacity(common.len()),
        turning_points: Vec::new(),
    };
    let mut final_spectrum = Vec::new();
    let mut series = Vec::with_capacity(runs.len());
    let mut tracker_energies = None;

    for (r, run) in runs.iter().enumerate() {
        let mut tracker = BandTracker::new(Arc::clone(&bands), observation, clean)?;
        if r == 0 {
            tracker_energies = Some((
                tracker.observation_energy().to_vec(),
                tracker.clean_energy().map(<[f64]>::to_vec),
                tracker.noise_energy().map(<[f64]>::to_vec),
            ));
        }
        let n = run.len();
        let mut band_fit = Vec::with_capacity(n);
        let mut band_fit_clean = clean.map(|_| Vec::with_capacity(n));
        let mut correspondence = Vec::with_capacity(n);
        let mut psnr_clean = clean.map(|_| Vec::with_capacity(n));
        let mut next_common = common.iter().peekable();
        for i in 0..n {
            let x = run.frame(i)?;
            tick(progress);
            let fit = tracker.observe(&x)?;
            band_fit.push(fit.fit);
            if let (Some(v), Some(fc)) = (band_fit_clean.as_mut(), fit.fit_clean) {
                v.push(fc);
            }
            correspondence.push(fit.correspondence);
            if let (Some(v), Some(cl)) = (psnr_clean.as_mut(), clean) {
                v.push(psnr(&x.data, &cl.data));
            }
            if r != 0 {
                continue;
            }
            let f = lowpass.fit(&x)?;
            lp.cutoff.push(f.cutoff);
            lp.residual.push(f.residual);
            lp.at_bound.push(f.at_bound);
            if let Some(&(_, j)) = next_common.next_if(|&&(ci, _)| ci == i) {
                let other = runs[1].frame(j)?;
                tick(progress);
                let d = pair.distance(&x, &other)?;
                two.steps.push(run.steps()[i]);
                two.distance.push(d.total / n_samples);
                two.per_band
                    .push(d.per_band.iter().map(|v| v / n_samples).collect());
            }
            if i + 1 == n {
                final_spectrum = radial_power_spectrum(&mut fft, &x)?;
            }
        }
        series.push(RunSeries {
            name: run.name(),
            seed: run.seed(),
            steps: run.steps().to_vec(),
            loss: run.index().loss.clone(),
            psnr_raw: run.index().psnr_raw.clone(),
            psnr_ema: run.index().psnr_ema.clone(),
            psnr_clean,
            band_fit,
            band_fit_clean,
            correspondence,
        });
    }

    // Best step of run 0, its spectrum, and the best low-pass.
    let run0 = &series[0];
    let best = run0.psnr_clean.as_ref().and_then(|p| {
        p.iter().enumerate().filter(|(_, v)| !v.is_nan()).fold(
            None,
            |acc: Option<(usize, f64)>, (i, &v)| match acc {
                Some((_, b)) if b >= v => acc,
                _ => Some((i, v)),
            },
        )
    });
    let best_step = best.map(|(i, _)| run0.steps[i]);
    let best_psnr = best.map(|(_, v)| v);
    let best_spectrum = match best {
        Some((i, _)) => {
            let x = first.frame(i)?;
            Some(radial_power_spectrum(&mut fft, &x)?)
        }
        None => None,
    };
    tick(progress);
    if let Some(cl) = clean {
        let f = lowpass.fit(cl)?;
        let filtered = apply_lowpass(&mut fft, observation, f.cutoff)?;
        lp.best_lowpass_psnr = Some(psnr(&filtered.data, &cl.data));
        lp.best_lowpass_cutoff = Some(f.cutoff);
    }
    lp.dip_best_psnr = best_psnr;

    // Half-times.
    let half_times = |steps: &[usize], fits: &[Vec<f64>]| {
        let records: Vec<(usize, Vec<f64>)> =
            steps.iter().copied().zip(fits.iter().cloned()).collect();
        band_half_times(&records)
    };
    let t_half_runs: Vec<Vec<Option<f64>>> = series
        .iter()
        .map(|s| half_times(&s.steps, &s.band_fit))
        .collect();
    let t_half_clean = run0
        .band_fit_clean
        .as_ref()
        .map(|f| half_times(&run0.steps, f));
    let (e_obs, e_clean, e_noise) = tracker_energies.unwrap_or_default();
    let band_list: Vec<BandSummary> = (0..bands.len())
        .map(|b| BandSummary {
            lo: bands.edges[b],
            hi: bands.edges[b + 1],
            bins: bands.counts[b],
            t_half: t_half_runs[0][b],
            t_half_clean: t_half_clean.as_ref().and_then(|t| t[b]),
            t_half_runs: t_half_runs.iter().map(|t| t[b]).collect(),
            energy_observation: e_obs[b],
            energy_clean: e_clean.as_ref().map(|e| e[b]),
            energy_noise: e_noise.as_ref().map(|e| e[b]),
        })
        .collect();

    // Two runs.
    let two_run = if runs.len() >= 2 {
        two.turning_points = turning_points(&two.distance, TURNING_PROMINENCE)
            .into_iter()
            .map(|(i, kind)| TurningPoint {
                step: two.steps[i],
                kind,
                value: two.distance[i],
                steps_from_best: best_step.map(|b| two.steps[i] as i64 - b as i64),
            })
            .collect();
        Some(two)
    } else {
        None
    };

    let spectra = RadialSpectra {
        frequency: radial_spectrum_frequencies(w, h),
        observation: radial_power_spectrum(&mut fft, observation)?,
        clean: clean
            .map(|cl| radial_power_spectrum(&mut fft, cl))
            .transpose()?,
        best: best_spectrum,
        final_output: final_spectrum,
        final_step: *first.steps().last().unwrap_or(&0),
    };

    let t_half: Vec<Option<f64>> = band_list.iter().map(|b| b.t_half).collect();
    let summary = Summary {
        bands_reaching_half: t_half.iter().flatten().count(),
        t_half_monotone: monotone_fraction(&t_half),
        t_half_spearman: {
            let (idx, t): (Vec<f64>, Vec<f64>) = t_half
                .iter()
                .enumerate()
                .filter_map(|(b, t)| t.map(|t| (b as f64, t)))
                .unzip();
            spearman(&idx, &t)
        },
        cutoff_spearman: {
            let steps: Vec<f64> = lp.steps.iter().map(|&s| s as f64).collect();
            spearman(&steps, &lp.cutoff)
        },
        dip_minus_lowpass_db: match (lp.dip_best_psnr, lp.best_lowpass_psnr) {
            (Some(d), Some(l)) if (d - l).is_finite() => Some(d - l),
            _ => None,
        },
        final_psnr: run0
            .psnr_clean
            .as_ref()
            .and_then(|p| p.last().copied())
            .filter(|v| !v.is_nan()),
    };

    Ok(Analysis {
        format_version: FORMAT_VERSION,
        width: w,
        height: h,
        channels: c,
        num_runs: runs.len(),
        seeds: runs.iter().map(RecordedRun::seed).collect(),
        spacing: opts.spacing,
        has_clean: clean.is_some(),
        bands: band_list,
        best_step,
        best_psnr,
        lowpass: lp,
        two_run,
        runs: series,
        spectra,
        summary,
    })
}

// ---------------------------------------------------------------------------------------------
// Small numerical helpers (public: the CLI and tests use them on their own data)
// ---------------------------------------------------------------------------------------------

/// Among the present values, in order, the fraction of consecutive pairs that do not
/// decrease; `None` with fewer than two values present.
pub fn monotone_fraction(values: &[Option<f64>]) -> Option<f64> {
    let present: Vec<f64> = values.iter().flatten().copied().collect();
    if present.len() < 2 {
        return None;
    }
    let up = present.windows(2).filter(|w| w[1] >= w[0]).count();
    Some(up as f64 / (present.len() - 1) as f64)
}

/// Ranks from 1, ties sharing their average rank.
fn average_ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut ranks = vec![0.0; v.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = rank;
        }
        i = j + 1;
    }
    ranks
}

/// Spearman's rank correlation of paired samples (Pearson correlation of average ranks).
/// Pairs where either value is not finite are dropped; `None` with fewer than two pairs left
/// or when either side is constant.
pub fn spearman(a: &[f64], b: &[f64]) -> Option<f64> {
    let (x, y): (Vec<f64>, Vec<f64>) = a
        .iter()
        .zip(b)
        .filter(|(p, q)| p.is_finite() && q.is_finite())
        .map(|(&p, &q)| (p, q))
        .unzip();
    if x.len() < 2 {
        return None;
    }
    let (rx, ry) = (average_ranks(&x), average_ranks(&y));
    let n = rx.len() as f64;
    let (mx, my) = (rx.iter().sum::<f64>() / n, ry.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (p, q) in rx.iter().zip(&ry) {
        sxy += (p - mx) * (q - my);
        sxx += (p - mx).powi(2);
        syy += (q - my).powi(2);
    }
    if sxx == 0.0 || syy == 0.0 {
        return None;
    }
    Some((sxy / (sxx * syy).sqrt()).clamp(-1.0, 1.0))
}

/// Centred 3-point moving average; the end points average the two values they have.
pub fn moving_average3(values: &[f64]) -> Vec<f64> {
    let n = values.len();
    (0..n)
        .map(|i| {
            let lo = i.saturating_sub(1);
            let hi = (i + 1).min(n - 1);
            let s = &values[lo..=hi];
            s.iter().sum::<f64>() / s.len() as f64
        })
        .collect()
}

/// Local minima and maxima of a curve, robust to noise: indices into `values` with their kind,
/// in order.
///
/// The curve is smoothed by [`moving_average3`] (non-finite values are skipped), then walked
/// with hysteresis: an extremum counts only once the smoothed curve has moved away from it by
/// more than `min_prominence` times its range, on both sides. The end points are never turning
/// points. A monotone curve, or one whose wiggles are all below the threshold, has none.
pub fn turning_points(values: &[f64], min_prominence: f64) -> Vec<(usize, TurningKind)> {
    let idx: Vec<usize> = (0..values.len())
        .filter(|&i| values[i].is_finite())
        .collect();
    if idx.len() < 3 {
        return Vec::new();
    }
    let raw: Vec<f64> = idx.iter().map(|&i| values[i]).collect();
    let s = moving_average3(&raw);
    let (min, max) = s
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let range = max - min;
    // Finite samples only, so the range is finite: zero means a constant curve.
    if range <= 0.0 {
        return Vec::new();
    }
    let thr = min_prominence.max(0.0) * range;
    let mut out = Vec::new();
    // 0: direction not yet known; 1: rising (candidate maximum); −1: falling (candidate minimum).
    let mut dir = 0i8;
    let (mut hi, mut lo, mut cand) = (0usize, 0usize, 0usize);
    for i in 1..s.len() {
        match dir {
            0 => {
                if s[i] > s[hi] {
                    hi = i;
                }
                if s[i] < s[lo] {
                    lo = i;
                }
                if s[hi] - s[lo] > thr {
                    (dir, cand) = if hi > lo { (1, hi) } else { (-1, lo) };
                }
            }
            1 => {
                if s[i] >= s[cand] {
                    cand = i;
                } else if s[cand] - s[i] > thr {
                    out.push((idx[cand], TurningKind::Max));
                    (dir, cand) = (-1, i);
                }
            }
            _ => {
                if s[i] <= s[cand] {
                    cand = i;
                } else if s[i] - s[cand] > thr {
                    out.push((idx[cand], TurningKind::Min));
                    (dir, cand) = (1, i);
                }
            }
        }
    }
    // A candidate confirmed against the last sample might be the end point; drop such.
    out.retain(|&(i, _)| i != idx[0] && i != idx[idx.len() - 1]);
    out
}

/// Ring centre frequencies of [`radial_power_spectrum`] for a `width × height` image:
/// `k / max(width, height)` for `k = 0 ..= max(width, height) / 2`.
pub fn radial_spectrum_frequencies(width: usize, height: usize) -> Vec<f64> {
    let l = width.max(height);
    (0..=l / 2).map(|k| k as f64 / l as f64).collect()
}

/// Radially averaged power spectrum of an image with a caller's plan: the mean over the bins
/// of each ring of `Σ_c |F_c|² / (N · channels)` (so a white-noise image of variance `σ²` has a
/// flat spectrum at `σ²`). Ring `k` holds the bins whose radial frequency rounds to
/// `k / max(width, height)`, up to Nyquist; the corners beyond 0.5 are left out.
pub fn radial_power_spectrum(fft: &mut Fft2d, img: &Image) -> Result<Vec<f64>> {
    let spec = fft.forward(img)?;
    let l = img.width.max(img.height);
    let rings = l / 2 + 1;
    let mut sum = vec![0.0; rings];
    let mut count = vec![0usize; rings];
    let power = spec.total_power();
    for (&r, p) in fft.radial().iter().zip(power) {
        let k = (r * l as f64).round() as usize;
        if k < rings {
            sum[k] += p;
            count[k] += 1;
        }
    }
    let scale = 1.0 / (spec.bins() * img.channels) as f64;
    Ok(sum
        .iter()
        .zip(&count)
        .map(|(&s, &n)| {
            if n > 0 {
                s * scale / n as f64
            } else {
                f64::NAN
            }
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

/// A number for a CSV cell: shortest round-trip form, empty when not finite.
fn cell(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        String::new()
    }
}

fn cell_opt(v: Option<f64>) -> String {
    v.map_or_else(String::new, cell)
}

/// A CSV table being built: a header, then rows of cells.
struct Csv(String);

impl Csv {
    fn new(header: &[String]) -> Self {
        let mut s = header.join(",");
        s.push('\n');
        Csv(s)
    }
    fn row(&mut self, cells: &[String]) {
        self.0.push_str(&cells.join(","));
        self.0.push('\n');
    }
}

impl Analysis {
    /// Number of bands.
    pub fn band_count(&self) -> usize {
        self.bands.len()
    }

    /// `t½` of every band (run 0, against the observation).
    pub fn t_half(&self) -> Vec<Option<f64>> {
        self.bands.iter().map(|b| b.t_half).collect()
    }

    /// PSNR of run `run`'s output at `step` against the clean image, if both are known: the
    /// value measured by [`analyze`], else the one the fit recorded.
    pub fn psnr_at(&self, run: usize, step: usize) -> Option<f64> {
        let s = self.runs.get(run)?;
        let i = s.steps.binary_search(&step).ok()?;
        s.psnr_clean
            .as_ref()
            .map(|p| p[i])
            .filter(|v| !v.is_nan())
            .or(s.psnr_raw[i])
    }

    /// The analysis as pretty-printed JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self)
            .map_err(|e| Error::invalid(format!("internal: cannot encode the analysis: {e}")))
    }

    /// Writes `analysis.json` and the CSV tables into `dir` (created if needed), each file
    /// atomically. Returns the paths written:
    ///
    /// - `analysis.json`: this value;
    /// - `bands.csv`: one row per band (edges, bins, half-times, energies);
    /// - `band_fit.csv`: one row per run and step: `fit_b*` (against the observation),
    ///   `fit_clean_b*` (against the clean image; empty without one), `corr_b*`;
    /// - `lowpass.csv`: step, cutoff, residual, at_bound of run 0;
    /// - `two_run.csv`: step, distance, `band_*` (only the header with a single run);
    /// - `history.csv`: run, seed, step, loss, psnr_raw, psnr_ema, psnr_clean.
    ///
    /// Empty cells stand for missing or non-finite values.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::file(dir, format!("cannot create the folder: {e}")))?;
        let files = [
            (ANALYSIS_FILE, self.to_json()?),
            ("bands.csv", self.bands_csv()),
            ("band_fit.csv", self.band_fit_csv()),
            ("lowpass.csv", self.lowpass_csv()),
            ("two_run.csv", self.two_run_csv()),
            ("history.csv", self.history_csv()),
        ];
        let mut written = Vec::with_capacity(files.len());
        for (name, text) in files {
            let path = dir.join(name);
            write_atomic(&path, text.as_bytes())?;
            written.push(path);
        }
        Ok(written)
    }

    /// Reads an analysis written by [`Analysis::write`]: `path` is the JSON file, or the folder
    /// holding `analysis.json`. Errors name the file.
    pub fn read(path: &Path) -> Result<Analysis> {
        let file = if path.is_dir() {
            path.join(ANALYSIS_FILE)
        } else {
            path.to_path_buf()
        };
        let bytes = std::fs::read(&file).map_err(|e| {
            let msg = match e.kind() {
                std::io::ErrorKind::NotFound => "no such file".to_string(),
                _ => format!("cannot read: {e}"),
            };
            Error::file(&file, msg)
        })?;
        let a: Analysis = serde_json::from_slice(&bytes)
            .map_err(|e| Error::file(&file, format!("not a valid analysis: {e}")))?;
        if a.format_version > FORMAT_VERSION {
            return Err(Error::file(
                &file,
                format!(
                    "analysis format {} is newer than this program reads ({FORMAT_VERSION})",
                    a.format_version
                ),
            ));
        }
        Ok(a)
    }

    fn bands_csv(&self) -> String {
        let mut header: Vec<String> = ["band", "lo", "hi", "bins", "t_half", "t_half_clean"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        header.extend((0..self.num_runs).map(|r| format!("t_half_run{r}")));
        header.extend(
            ["energy_observation", "energy_clean", "energy_noise"]
                .iter()
                .map(|s| s.to_string()),
        );
        let mut csv = Csv::new(&header);
        for (b, band) in self.bands.iter().enumerate() {
            let mut row = vec![
                b.to_string(),
                cell(band.lo),
                cell(band.hi),
                band.bins.to_string(),
                cell_opt(band.t_half),
                cell_opt(band.t_half_clean),
            ];
            row.extend(band.t_half_runs.iter().map(|&t| cell_opt(t)));
            row.extend([
                cell(band.energy_observation),
                cell_opt(band.energy_clean),
                cell_opt(band.energy_noise),
            ]);
            csv.row(&row);
        }
        csv.0
    }

    fn band_fit_csv(&self) -> String {
        let nb = self.band_count();
        let mut header = vec!["run".to_string(), "step".to_string()];
        for prefix in ["fit_b", "fit_clean_b", "corr_b"] {
            header.extend((0..nb).map(|b| format!("{prefix}{b}")));
        }
        let mut csv = Csv::new(&header);
        for (r, run) in self.runs.iter().enumerate() {
            for (i, &step) in run.steps.iter().enumerate() {
                let mut row = vec![r.to_string(), step.to_string()];
                row.extend(run.band_fit[i].iter().map(|&v| cell(v)));
                match &run.band_fit_clean {
                    Some(fc) => row.extend(fc[i].iter().map(|&v| cell(v))),
                    None => row.extend(std::iter::repeat_n(String::new(), nb)),
                }
                row.extend(run.correspondence[i].iter().map(|&v| cell(v)));
                csv.row(&row);
            }
        }
        csv.0
    }

    fn lowpass_csv(&self) -> String {
        let header: Vec<String> = ["step", "cutoff", "residual", "at_bound"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut csv = Csv::new(&header);
        let lp = &self.lowpass;
        for (i, &step) in lp.steps.iter().enumerate() {
            csv.row(&[
                step.to_string(),
                cell(lp.cutoff[i]),
                cell(lp.residual[i]),
                lp.at_bound[i].to_string(),
            ]);
        }
        csv.0
    }

    fn two_run_csv(&self) -> String {
        let mut header = vec!["step".to_string(), "distance".to_string()];
        header.extend((0..self.band_count()).map(|b| format!("band_{b}")));
        let mut csv = Csv::new(&header);
        if let Some(t) = &self.two_run {
            for (i, &step) in t.steps.iter().enumerate() {
                let mut row = vec![step.to_string(), cell(t.distance[i])];
                row.extend(t.per_band[i].iter().map(|&v| cell(v)));
                csv.row(&row);
            }
        }
        csv.0
    }

    fn history_csv(&self) -> String {
        let header: Vec<String> = [
            "run",
            "seed",
            "step",
            "loss",
            "psnr_raw",
            "psnr_ema",
            "psnr_clean",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut csv = Csv::new(&header);
        for (r, run) in self.runs.iter().enumerate() {
            for (i, &step) in run.steps.iter().enumerate() {
                csv.row(&[
                    r.to_string(),
                    run.seed.to_string(),
                    step.to_string(),
                    cell(run.loss[i]),
                    cell_opt(run.psnr_raw[i]),
                    cell_opt(run.psnr_ema[i]),
                    cell_opt(run.psnr_clean.as_ref().map(|p| p[i])),
                ]);
            }
        }
        csv.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_average_ties() {
        assert_eq!(
            average_ranks(&[3.0, 1.0, 3.0, 2.0]),
            vec![3.5, 1.0, 3.5, 2.0]
        );
    }

    #[test]
    fn spearman_of_monotone_and_reversed() {
        let a = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(spearman(&a, &[10.0, 20.0, 25.0, 100.0]), Some(1.0));
        assert_eq!(spearman(&a, &[4.0, 3.0, 2.0, 1.0]), Some(-1.0));
        assert_eq!(spearman(&a, &[1.0, 1.0, 1.0, 1.0]), None);
        assert_eq!(spearman(&a[..1], &a[..1]), None);
    }

    #[test]
    fn monotone_fraction_skips_missing() {
        assert_eq!(monotone_fraction(&[Some(1.0), None, Some(3.0)]), Some(1.0));
        assert_eq!(
            monotone_fraction(&[Some(1.0), Some(3.0), Some(2.0)]),
            Some(0.5)
        );
        assert_eq!(monotone_fraction(&[Some(1.0), None]), None);
    }

    #[test]
    fn nan_round_trips_as_null() {
        #[derive(Serialize, Deserialize)]
        struct T {
            #[serde(with = "nan_null::vec")]
            v: Vec<f64>,
        }
        let s = serde_json::to_string(&T {
            v: vec![1.0, f64::NAN, f64::INFINITY],
        })
        .unwrap();
        assert_eq!(s, r#"{"v":[1.0,null,null]}"#);
        let t: T = serde_json::from_str(&s).unwrap();
        assert_eq!(t.v[0], 1.0);
        assert!(t.v[1].is_nan() && t.v[2].is_nan());
    }
}

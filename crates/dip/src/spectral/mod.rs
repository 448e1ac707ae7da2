//! Spectral analysis of DIP trajectories: the measurements behind "The Spectral Bias of the
//! Deep Image Prior".
//!
//! The claim under test is that a DIP fit learns low frequencies of the observation first, so
//! early stopping acts like a low-pass filter. Everything here follows "plan once, run many":
//! FFT plans, band masks and the observation's spectrum are built once per image size (or per
//! fit), and each output frame then costs one FFT.
//!
//! - [`fft`]: 2-D DFT of HWC images ([`Fft2d`], [`Spectrum`]), radial frequencies.
//! - [`bands`]: radial band partitions ([`Bands`], [`BandSpacing`]).
//! - [`analysis`]: band energy, per-band fit and Shi et al.'s correspondence ([`BandTracker`]),
//!   half-times, and the distance between two runs ([`PairAnalyzer`]).
//! - [`lowpass`](mod@lowpass): the Gaussian low-pass that best explains an output ([`LowpassFitter`]).
//! - [`study`]: recorded runs on disk ([`RecordedRun`]) analysed into an [`Analysis`]
//!   (`analysis.json` and CSV tables).

pub mod analysis;
pub mod bands;
pub mod fft;
pub mod lowpass;
pub mod study;

pub use analysis::{
    BandEnergy, BandFit, BandTracker, PairAnalyzer, PairDistance, band_energy, band_half_times,
    crossing_step, half_time, trajectory_distances,
};
pub use bands::{BandSpacing, Bands};
pub use fft::{Complex64, Fft2d, Spectrum, axis_frequency, radial_frequencies};
pub use lowpass::{
    LowpassFit, LowpassFitter, MAX_CUTOFF, MIN_CUTOFF, apply_lowpass, gaussian_transfer, lowpass,
};
pub use study::{
    Analysis, BandSummary, LowpassSeries, Progress, RadialSpectra, RecordedRun, RunSeries,
    StudyOptions, Summary, TurningKind, TurningPoint, TwoRun, analyze, analyze_with_progress,
};

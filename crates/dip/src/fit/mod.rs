//! The DIP fitting loop: Adam on the network parameters so that the output matches the observation.
//!
//! Observers see the run every `observe_every` steps; they are how trajectory recorders, spectral
//! metrics and stopping rules plug in without touching the loop.

mod bands;
mod checkpoint;
mod cpu;
mod driver;
mod entry;
#[cfg(feature = "cuda")]
mod gpu;
#[cfg(feature = "cuda")]
mod lanes;
mod observer;
mod run;
#[cfg(feature = "cuda")]
pub mod selftest;
mod stop;
mod trajectory;

pub use bands::BandRecorder;
pub use checkpoint::{FitState, SnapshotState};
pub use entry::{fit, fit_denoise};
#[cfg(feature = "cuda")]
pub use gpu::{FitDevice, OpenGpu, fit_on_gpu};
#[cfg(feature = "cuda")]
pub use lanes::{LanePool, OpenLanes};
pub use observer::{Control, Observer, ObserverState, StepInfo};
pub use run::{
    CheckpointSink, FitConfig, FitReport, HistoryRow, InputKind, Loss, SgldConfig, SgldResult,
    check_resume, network_input, network_padding,
};
pub use stop::{
    AUTO_DELAY, AUTO_DELAY_WMV, Chosen, ESTIMATES_DISAGREE, NOISE_FREE_SIGMA, PLATEAU_DROP,
    PLATEAU_MIN_STEPS, StopConfig, StopKind, StopRule, estimate_sigma, make_rule,
};
pub use trajectory::{TrajectoryIndex, TrajectoryRecorder};

//! The progress bar of a fit: an observer that shows step, loss, PSNR and the time left.

use dip::fit::{Control, Observer, StepInfo};
use indicatif::{ProgressBar, ProgressStyle};

/// How often (in steps) the fit reports to the bar; also the cadence of the run's history.
pub const OBSERVE_EVERY: usize = 10;

/// Drives an indicatif bar from the fit's observations. Hidden with `--quiet`; indicatif also
/// draws nothing when stderr is not a terminal, so logs and tests see no bar.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub fn new(iters: usize, quiet: bool) -> Self {
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(iters as u64)
        };
        let style = ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} {msg}  ETA {eta}",
        )
        .expect("the progress template is valid")
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message("starting");
        Progress { bar }
    }

    /// Removes the bar, so that what is printed next starts on a clean line.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Observer for Progress {
    fn observe(&mut self, info: &StepInfo<'_>) -> Control {
        self.bar.set_position(info.iter as u64);
        let mut msg = format!("loss {:.3e}", info.loss);
        if let (Some(raw), Some(ema)) = (info.psnr_raw, info.psnr_ema) {
            msg.push_str(&format!("  PSNR {raw:.2} dB, EMA {ema:.2} dB"));
        }
        self.bar.set_message(msg);
        Control::Continue
    }
}

impl Drop for Progress {
    /// An error in the middle of a fit must not leave a half-drawn bar before its message.
    fn drop(&mut self) {
        if !self.bar.is_finished() {
            self.bar.finish_and_clear();
        }
    }
}

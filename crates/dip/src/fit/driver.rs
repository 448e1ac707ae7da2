//! The fit loop, written once: step, divergence check and rollback, moving average and SGLD
//! samples, observation, checkpoints, cancellation. Where the network lives (the CPU pool,
//! [`super::cpu`], or a GPU, [`super::gpu`]) is a [`Backend`]; the loop decides what happens
//! at each step, the backend does it.

use std::time::Instant;

use super::checkpoint::{FitState, SnapshotState};
use super::observer::Observer;
use super::run::{
    FitConfig, FitReport, Grid, Parts, Progress, check_psnr, check_resume_state, checkpoint_due,
    crop_into, crop_slice, dropped,
};
use crate::Result;
use crate::image::Image;
use crate::nets::Arch;
use crate::operators::Operator;

/// The last good state's step size and PSNR against the observation; the backend keeps the
/// parameters and Adam's moments.
#[derive(Debug, Clone, Copy)]
pub(super) struct Kept {
    pub lr: f64,
    pub psnr_obs: f64,
}

/// The network-side parts of a checkpoint, as a backend gathers them.
pub(super) struct NetParts {
    pub params: Vec<f32>,
    pub adam_m: Vec<f32>,
    pub adam_v: Vec<f32>,
    pub adam_t: u64,
    pub ema: Vec<f32>,
    /// The kept state, when there is one.
    pub kept: Option<KeptParts>,
}

/// The kept state's parameters, Adam moments and Adam step.
pub(super) struct KeptParts {
    pub params: Vec<f32>,
    pub adam_m: Vec<f32>,
    pub adam_v: Vec<f32>,
    pub adam_t: u64,
}

/// What the loop asks of the device that holds the network. A step is [`Backend::front`]
/// (up to the loss), then [`Backend::back`] (backward and update), or [`Backend::rollback`] in
/// its place.
pub(super) trait Backend {
    /// Whether the loss of every step is known, so that a non-finite one rolls back at once. A
    /// GPU reads it only where the loop asks ([`Backend::front`]'s `read`), and a non-finite
    /// loss is caught at the next divergence check.
    const LOSS_EVERY_STEP: bool;

    fn num_params(&self) -> usize;

    /// Takes over a checkpoint's network-side state: parameters, Adam, the moving average and
    /// the kept state.
    fn resume(&mut self, st: &FitState) -> Result<()>;

    /// Called once before the first step `first`, with the step size.
    fn start(&mut self, first: usize, lr: f64) -> Result<()>;

    /// Step `it` up to the data term: the input perturbation, the forward pass, `A(x)` and the
    /// loss. Returns the loss and the mean squared error against the observation when `read`
    /// (or always, with [`Backend::LOSS_EVERY_STEP`]).
    fn front(&mut self, it: usize, read: bool) -> Result<Option<(f64, f64)>>;

    /// Keeps the state before this step's update as the last good one.
    fn keep(&mut self) -> Result<()>;

    /// Returns to the kept state with step size `lr`; the rest of the step is skipped.
    fn rollback(&mut self, lr: f64) -> Result<()>;

    /// The rest of step `it`: backward, the moving average, Adam, Lipschitz control and SGLD's
    /// weight noise. `checked`: the step passed a divergence check (and was kept). The output
    /// stays the forward's.
    fn back(&mut self, it: usize, checked: bool) -> Result<()>;

    /// Calls `f` with the output of the last forward pass, on the padded grid.
    fn with_output(&self, f: &mut dyn FnMut(&[f32])) -> Result<()>;

    /// Calls `f` with the moving average of the outputs, on the padded grid.
    fn with_ema(&self, f: &mut dyn FnMut(&[f32])) -> Result<()>;

    /// The network side of a checkpoint after the current step.
    fn parts(&self) -> Result<NetParts>;
}

/// The inputs of a fit that the loop reads.
pub(super) struct Inputs<'a> {
    pub observation: &'a Image,
    pub operator: &'a dyn Operator,
    pub clean: Option<&'a Image>,
    pub spec: &'a Arch,
    pub cfg: &'a FitConfig,
}

/// Runs the fit on `b`, from step 1 or from the checkpoint `cfg.resume`.
pub(super) fn drive<B: Backend>(
    b: &mut B,
    inputs: Inputs<'_>,
    grid: Grid,
    started: Instant,
    observers: &mut [&mut dyn Observer],
) -> Result<FitReport> {
    let Inputs {
        observation,
        operator,
        clean,
        spec,
        cfg,
    } = inputs;
    let Grid {
        xw,
        xh,
        xc,
        pad,
        h,
        w,
        c,
    } = grid;
    let n_params = b.num_params();
    let mut pr = Progress::new(xw, xh, xc, cfg);
    let mut kept: Option<Kept> = None;
    let mut lr = cfg.lr;
    let mut interrupted = false;
    // Whether the network holds the output of the last accepted step (not of a rolled-back one).
    let mut raw_is_current = false;
    let mut first = 1;
    let mut seconds_before = 0.0;
    let mut x_buf = vec![0.0f32; xw * xh * xc];
    if let Some(st) = &cfg.resume {
        check_resume_state(st, operator, spec, cfg, n_params, h * w * c, observers)?;
        b.resume(st)?;
        lr = st.lr;
        kept = st.snapshot.as_ref().map(|s| Kept {
            lr: s.adam_lr,
            psnr_obs: s.psnr_obs,
        });
        pr.resume(st, observers)?;
        // The raw output of step k is not in the checkpoint: the network recomputes it at the
        // next forward, and an interrupted resumed run reports the moving average as before.
        first = st.step + 1;
        seconds_before = st.seconds;
    }
    b.start(first, lr)?;
    let mut last_checkpoint = Instant::now();

    for it in first..=cfg.iters {
        let cancel = cfg.cancelled() && it < cfg.iters;
        // Observed steps (and, with a cancel, the last one) are regular; a checkpoint holds the
        // state after step `it` as an uninterrupted run has it, so the extra observation a
        // cancelled run makes is not part of it.
        let regular = it % cfg.observe_every == 0 || it == cfg.iters;
        let check = it % cfg.check_every == 0 || it == 1;
        let (loss, mse) = b
            .front(it, check || regular || cancel)?
            .unwrap_or((0.0, 0.0));
        pr.iterations_run = it;

        // Divergence: a non-finite loss, or (at checks) a PSNR drop of more than 5 dB against the
        // observation, restores the last good parameters and Adam state. Going back to the same
        // state with the same step size would replay the same steps (exactly so without input
        // noise): the step size is halved from there on.
        let psnr_obs = check_psnr(check, loss, mse);
        let bad = (B::LOSS_EVERY_STEP || check) && !loss.is_finite();
        if bad || dropped(psnr_obs, kept.map(|k| k.psnr_obs)) {
            pr.rollback(it, loss, kept.is_some())?;
            lr *= 0.5;
            b.rollback(lr)?;
            raw_is_current = false;
            continue;
        }
        if let Some(p) = psnr_obs {
            pr.failures_in_a_row = 0;
            b.keep()?;
            kept = Some(Kept { lr, psnr_obs: p });
        }

        b.back(it, psnr_obs.is_some())?;
        if pr.sample_due(cfg, it) {
            // This step's output (before its update), as the authors' code samples it.
            b.with_output(&mut |out| crop_slice(out, w, c, &pad, xw, &mut x_buf))?;
            pr.sample(&x_buf);
        }
        // The output of this accepted step stays in the network until the next forward.
        raw_is_current = true;

        let checkpoint_due = checkpoint_due(cfg, it, cancel, last_checkpoint);
        let save_checkpoint = |pr: &Progress, observers: &[&mut dyn Observer]| -> Result<()> {
            let Some(ck) = &cfg.checkpoint else {
                return Ok(());
            };
            let p = b.parts()?;
            let snapshot = match (kept, p.kept) {
                (Some(k), Some(s)) => Some(SnapshotState {
                    params: s.params,
                    adam_m: s.adam_m,
                    adam_v: s.adam_v,
                    adam_t: s.adam_t,
                    adam_lr: k.lr,
                    psnr_obs: k.psnr_obs,
                }),
                _ => None,
            };
            let parts = Parts {
                params: p.params,
                adam_m: p.adam_m,
                adam_v: p.adam_v,
                adam_t: p.adam_t,
                lr,
                ema: p.ema,
                snapshot,
                raw_is_current,
                seconds: seconds_before + started.elapsed().as_secs_f64(),
            };
            (ck.write)(&pr.state(ck, it, parts, observers));
            Ok(())
        };
        if checkpoint_due && !regular {
            save_checkpoint(&pr, observers)?;
            last_checkpoint = Instant::now();
        }
        if regular || cancel {
            b.with_output(&mut |out| crop_into(out, w, c, &pad, &mut pr.out_img))?;
            b.with_ema(&mut |ema| crop_into(ema, w, c, &pad, &mut pr.ema_img))?;
            if pr.observe(it, loss, clean, observers) {
                break;
            }
        }
        if checkpoint_due && regular {
            save_checkpoint(&pr, observers)?;
            last_checkpoint = Instant::now();
        }
        if cancel {
            interrupted = true;
            break;
        }
    }
    if raw_is_current {
        b.with_output(&mut |out| crop_into(out, w, c, &pad, &mut pr.out_img))?;
    }
    b.with_ema(&mut |ema| crop_into(ema, w, c, &pad, &mut pr.ema_img))?;
    Ok(pr.report(
        observation,
        clean,
        cfg,
        n_params,
        lr,
        interrupted,
        seconds_before + started.elapsed().as_secs_f64(),
    ))
}

//! A network on the GPU: GEMMs, the fit step (captured as CUDA graphs when it can be), and the
//! Lipschitz projection.

use super::*;
use crate::cuda::GpuError;
use crate::cuda::plan::BLOCK;
use crate::engine::AdamConfig;

impl GpuNet {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn sgemm(
        &self,
        ta: bool,
        tb: bool,
        m: usize,
        n: usize,
        k: usize,
        a: usize,
        lda: usize,
        b: usize,
        ldb: usize,
        beta: f32,
        c: usize,
        ldc: usize,
    ) -> Result<(), GpuError> {
        self.dev.sgemm(
            ta,
            tb,
            m,
            n,
            k,
            self.ptr(a),
            lda,
            self.ptr(b),
            ldb,
            beta,
            self.ptr(c),
            ldc,
            self.batch(),
        )
    }

    /// Fixes what each step of a fit does ([`GpuNet::fit_front`], [`GpuNet::fit_back`]) and,
    /// unless [`GpuNet::set_graphs`] turned graphs off, captures the two halves into CUDA
    /// graphs, so that a step is two launches. The step number and the step size live on the
    /// device ([`GpuNet::set_fit_state`], [`GpuNet::set_lr`]), so replays equal direct launches
    /// bit for bit. A capture the device refuses leaves the fit on direct launches
    /// ([`GpuNet::graph_error`] says why).
    pub fn prepare_fit(&mut self, step: FitStep) -> Result<(), GpuError> {
        self.set_fit_seed(step.seed)?;
        self.fit = Some(step);
        self.fit_captured = false;
        self.graph_error = None;
        if !self.use_graphs {
            return Ok(());
        }
        let captured = self
            .capture(FRONT, Self::queue_front)
            .and_then(|()| self.capture(BACK, Self::queue_back));
        match captured {
            Ok(()) => self.fit_captured = true,
            Err(e) => self.graph_error = Some(e.0),
        }
        Ok(())
    }

    pub(super) fn capture(
        &mut self,
        slot: usize,
        queue: fn(&mut Self) -> Result<(), GpuError>,
    ) -> Result<(), GpuError> {
        self.dev.begin_capture()?;
        let recorded = self.collective(queue);
        let ended = self.dev.end_capture(slot);
        recorded.and(ended)
    }

    /// Whether the fit's steps run as captured graphs.
    pub fn fit_graphs(&self) -> bool {
        self.fit_captured
    }

    /// Why the fit's steps could not be captured, if they could not.
    pub fn graph_error(&self) -> Option<&str> {
        self.graph_error.as_deref()
    }

    /// Whether [`GpuNet::prepare_fit`] captures graphs (default yes).
    pub fn set_graphs(&mut self, on: bool) {
        self.use_graphs = on;
    }

    /// Sets the fit's device state: `done` steps done, step size `lr`.
    pub fn set_fit_state(&mut self, done: u64, lr: f64) -> Result<(), GpuError> {
        self.up64(self.layout.fit_state, &[done as f64, lr])
    }

    /// Sets the selected lane's seed, from which its fit's noise is drawn (with the step and a
    /// stream; [`GpuNet::prepare_fit`] sets the prepared step's), makes its fit active and
    /// forgets its power vectors: the start of a fit.
    pub fn set_fit_seed(&mut self, seed: u64) -> Result<(), GpuError> {
        self.reset_power_vectors()?;
        let k = seed_key(seed);
        self.up64(
            self.layout.fit_state + 2,
            &[(k >> 32) as f64, (k & 0xffff_ffff) as f64, 1.0],
        )
    }

    /// Whether the selected lane's fit takes the rest of its current step (moving average,
    /// Adam, SGLD's noise): a lane that went back to its last good state skips them while the
    /// other lanes go on.
    pub fn set_active(&mut self, active: bool) -> Result<(), GpuError> {
        self.up64(self.layout.fit_state + 4, &[active as u8 as f64])
    }

    /// Sets the fit's step size (after a rollback).
    pub fn set_lr(&mut self, lr: f64) -> Result<(), GpuError> {
        self.up64(self.layout.fit_state + 1, &[lr])
    }

    /// The first half of a fit's step (queued): the step counter, the perturbed input, the
    /// forward and the data term with its gradient. The loss can then be read.
    pub fn fit_front(&mut self) -> Result<(), GpuError> {
        self.run_part(FRONT, Self::queue_front)
    }

    /// A part of the fit's step: its graph replayed, or its launches queued directly.
    pub(super) fn run_part(
        &mut self,
        slot: usize,
        queue: fn(&mut Self) -> Result<(), GpuError>,
    ) -> Result<(), GpuError> {
        if self.fit_captured {
            self.dev.replay(slot)
        } else {
            self.collective(queue)
        }
    }

    /// The second half (queued): backward, moving average, Adam, Lipschitz control, SGLD's
    /// weight noise.
    pub fn fit_back(&mut self) -> Result<(), GpuError> {
        self.run_part(BACK, Self::queue_back)
    }

    pub(super) fn fit_step(&self) -> Result<FitStep, GpuError> {
        self.fit
            .clone()
            .ok_or_else(|| GpuError("no fit was prepared (prepare_fit)".into()))
    }

    pub(super) fn queue_front(&mut self) -> Result<(), GpuError> {
        let f = self.fit_step()?;
        let st = self.p64(self.layout.fit_state);
        self.launch(K::FitTick, (1, 1, 1), (1, 1, 1), &[st])?;
        if f.reg_noise > 0.0 {
            let (off, n) = self.layout.acts[0];
            self.fit_gauss(self.layout.z, off, n, 0, f.reg_noise, false)?;
        }
        self.forward()?;
        self.weighted_data_term(f.scale, f.l1, f.weighted)
    }

    pub(super) fn queue_back(&mut self) -> Result<(), GpuError> {
        let f = self.fit_step()?;
        self.queue_backward()?;
        let n = self.output_len();
        let out = self.layout.acts.last().expect("an output").0;
        self.launch_n(
            K::Ema,
            n,
            &[
                self.p(self.layout.ema),
                self.p(out),
                long(n),
                A::F(f.ema),
                self.p64(self.layout.fit_state),
            ],
        )?;
        self.queue_adam(&f.adam, true)?;
        if let Some(lambda) = f.lipschitz {
            self.queue_lipschitz(lambda, true)?;
        }
        if let Some((noise, tensors)) = &f.sgld {
            for (k, &(off, len)) in tensors.iter().enumerate() {
                let at = self.layout.params + off;
                self.fit_gauss(at, at, len, 1 + k as u64, *noise, true)?;
            }
        }
        Ok(())
    }

    /// Lipschitz control on the device (queued, every lane): each weight matrix (a convolution's
    /// `k·k·cin × cout`, a dense layer's `n_in × n_out`) scaled by `1 / max(1, σ_max/λ)`, σ_max
    /// from the CPU engine's power iteration in the same f64 operations, warm-started from the
    /// lane's last vectors ([`GpuNet::reset_power_vectors`]), so the parameters are the CPU's
    /// [`Net::lipschitz_project`] of the same parameters.
    pub fn lipschitz_project(&mut self, lambda: f64) -> Result<(), GpuError> {
        self.collective(|g| g.queue_lipschitz(lambda, false))
    }

    /// The projection's two kernels; in a fit (`fit`), not for a lane that skips its step.
    pub(super) fn queue_lipschitz(&mut self, lambda: f64, fit: bool) -> Result<(), GpuError> {
        let l = &self.layout;
        let n = l.lip_matrices;
        if n == 0 {
            return Ok(());
        }
        let state = if fit { self.p64(l.fit_state) } else { A::P(0) };
        self.launch(
            K::LipschitzNorm,
            (n.div_ceil(32) as u32, 1, 1),
            (32, 1, 1),
            &[
                self.p(l.params),
                self.p(l.lip_table),
                self.p64(l.lip_vecs),
                self.p(l.lip_factor),
                int(n),
                A::D(lambda),
                state,
            ],
        )?;
        self.launch(
            K::LipschitzScale,
            (64, n as u32, 1),
            (BLOCK, 1, 1),
            &[
                self.p(l.params),
                self.p(l.lip_table),
                self.p(l.lip_factor),
                state,
            ],
        )
    }

    /// Forgets the selected lane's power vectors (a new fit starts them afresh, as the CPU's).
    pub fn reset_power_vectors(&mut self) -> Result<(), GpuError> {
        let (at, n) = (self.layout.lip_vecs, self.layout.lip_vecs_len);
        if n == 0 {
            return Ok(());
        }
        self.up64(at, &vec![0.0; n])
    }

    /// `dst = base + sd·N(0, 1)` with the normals of (the fit's device-side seed key and step,
    /// `stream`), sd multiplied by the device-side step size if `by_lr`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn fit_gauss(
        &self,
        base: usize,
        dst: usize,
        n: usize,
        stream: u64,
        sd: f64,
        by_lr: bool,
    ) -> Result<(), GpuError> {
        self.gauss(base, dst, n, 0, Some(stream), sd, by_lr)
    }

    /// Records one [`GpuNet::step`] into a CUDA graph (nothing runs); [`GpuNet::replay_step`]
    /// then runs it with one launch. The step's arguments are fixed, so each replay is a step
    /// (Adam's counter advances on the device).
    pub fn capture_step(&mut self, scale: f32, cfg: &AdamConfig) -> Result<(), GpuError> {
        self.dev.begin_capture()?;
        let recorded = self.step(scale, cfg);
        let ended = self.dev.end_capture(0);
        recorded.and(ended)
    }

    /// Runs the step captured by [`GpuNet::capture_step`] (queued).
    pub fn replay_step(&self) -> Result<(), GpuError> {
        self.dev.replay(0)
    }

    pub(super) fn act(&self, a: usize) -> usize {
        self.layout.acts[a].0
    }

    /// Runs every node on the current input (queued).
    pub fn forward(&mut self) -> Result<(), GpuError> {
        self.collective(Self::queue_forward)
    }
}

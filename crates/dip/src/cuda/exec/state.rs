//! A network on the GPU: the loss kernels, sparse operators, noise, the moving average and
//! Adam's state, and the snapshots the fit rolls back to.

use super::*;
use crate::cuda::GpuError;
use crate::cuda::plan::{BLOCK, LOSS_THREADS};
use crate::engine::{AdamConfig, Tensor};
use crate::operators::SparseRows;

impl GpuNet {
    /// The data term's two kernels over `[out, target, factor, gradient]` (and weights): partial
    /// sums per thread, then their fixed-order total in the loss slot.
    pub(super) fn loss_kernels(
        &self,
        b: [usize; 4],
        w: Option<usize>,
        n: usize,
        scale: f32,
        l1: bool,
    ) -> Result<(), GpuError> {
        let part = self.layout.part;
        self.launch(
            K::DataLoss,
            ((LOSS_THREADS / BLOCK as usize) as u32, 1, 1),
            (BLOCK, 1, 1),
            &[
                self.p(b[0]),
                self.p(b[1]),
                self.p(b[2]),
                w.map_or(A::P(0), |w| self.p(w)),
                self.p(b[3]),
                self.p64(part),
                long(n),
                A::F(scale),
                int(l1 as usize),
            ],
        )?;
        self.launch(
            K::LossFinalize,
            (1, 1, 1),
            (1, 1, 1),
            &[
                self.p64(part),
                int(LOSS_THREADS),
                self.p64(self.layout.loss),
            ],
        )
    }

    pub(super) fn spmv(
        &self,
        m: [usize; 3],
        x: usize,
        y: usize,
        rows: usize,
    ) -> Result<(), GpuError> {
        self.launch_n(
            K::Spmv,
            rows,
            &[
                self.p(m[0]),
                self.p(m[1]),
                self.p(m[2]),
                self.p(x),
                self.p(y),
                long(rows),
            ],
        )
    }

    /// A forward operator that is not diagonal: the data term becomes `A·output` against
    /// `target` (the observation), its gradient `Aᵀ` of the observation-side gradient. `a` maps
    /// the network's output samples (its input space is the whole output, padding included)
    /// to the observation's. Needs the room of [`operator_space`] (see [`GpuNet::with_room`]).
    pub fn set_operator(&mut self, a: &SparseRows, target: &[f32]) -> Result<(), GpuError> {
        check_len("operator input", a.n_in, self.output_len())?;
        check_len("observation", target.len(), a.n_out)?;
        let need = operator_space(a);
        if need > self.layout.extra_len {
            return Err(GpuError(format!(
                "the forward operator needs {need} words of device memory, the network was \
                 given room for {}",
                self.layout.extra_len
            )));
        }
        let at = a.transpose();
        let mut bump = self.layout.extra;
        let mut take = |n: usize| {
            let o = bump;
            bump += n.div_ceil(crate::cuda::plan::ALIGN).max(1) * crate::cuda::plan::ALIGN;
            o
        };
        let op = OpLayout {
            n_obs: a.n_out,
            ax: take(a.n_out),
            target: take(a.n_out),
            ones: take(a.n_out),
            g_ax: take(a.n_out),
            a: [take(a.n_out + 1), take(a.nnz()), take(a.nnz())],
            at: [take(at.n_out + 1), take(at.nnz()), take(at.nnz())],
        };
        if let Some(have) = self.op.filter(|_| self.lanes > 1)
            && have != op
        {
            return Err(GpuError(format!(
                "lane {}: a forward operator of another shape than the other lanes' ({} \
                 observations, {} weights)",
                self.lane,
                a.n_out,
                a.nnz()
            )));
        }
        let words = |v: &[u32]| v.iter().map(|&u| f32::from_bits(u)).collect::<Vec<f32>>();
        self.upload(op.target, target)?;
        self.fill(op.ones, a.n_out, 1.0)?;
        for (at_, m) in [(op.a, a), (op.at, &at)] {
            self.upload(at_[0], &words(&m.start))?;
            self.upload(at_[1], &words(&m.idx))?;
            self.upload(at_[2], &m.w)?;
        }
        self.op = Some(op);
        Ok(())
    }

    /// Makes `z` the network's fixed input (and its current input).
    pub fn set_fixed_input(&mut self, z: &[f32]) -> Result<(), GpuError> {
        let (off, n) = self.layout.acts[0];
        check_len("input", z.len(), n)?;
        self.upload(self.layout.z, z)?;
        self.upload(off, z)
    }

    /// Queues `input = z + sd·N(0, 1)`, the normals drawn from `key` (see [`noise_key`]).
    pub fn perturb_input(&mut self, key: u64, sd: f32) -> Result<(), GpuError> {
        let (off, n) = self.layout.acts[0];
        self.add_gauss(self.layout.z, off, n, key, sd)
    }

    /// Queues `params[offset..offset + len] += sd·N(0, 1)`, the normals drawn from `key`.
    pub fn perturb_params(
        &mut self,
        offset: usize,
        len: usize,
        key: u64,
        sd: f32,
    ) -> Result<(), GpuError> {
        if offset + len > self.layout.n_params {
            return Err(GpuError(format!(
                "parameters {offset}..{} are outside the {} of the network",
                offset + len,
                self.layout.n_params
            )));
        }
        let at = self.layout.params + offset;
        self.add_gauss(at, at, len, key, sd)
    }

    pub(super) fn add_gauss(
        &self,
        base: usize,
        dst: usize,
        n: usize,
        key: u64,
        sd: f32,
    ) -> Result<(), GpuError> {
        self.gauss(base, dst, n, key, None, sd as f64, false)
    }

    /// `dst = base + sd·N(0, 1)`: the normals of `key`, or with `stream` those of (the fit's
    /// seed key `key`, its device-side step, `stream`), sd then multiplied by the device-side
    /// step size if `by_lr`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn gauss(
        &self,
        base: usize,
        dst: usize,
        n: usize,
        key: u64,
        stream: Option<u64>,
        sd: f64,
        by_lr: bool,
    ) -> Result<(), GpuError> {
        self.launch_n(
            K::AddGauss,
            n,
            &[
                self.p(base),
                self.p(dst),
                long(n),
                A::L(key as i64),
                A::L(stream.unwrap_or(0) as i64),
                match stream {
                    Some(_) => self.p64(self.layout.fit_state),
                    None => A::P(0),
                },
                A::D(sd),
                int(by_lr as usize),
            ],
        )
    }

    /// The network's current input (waits for it).
    pub fn input(&self) -> Result<Tensor<f32>, GpuError> {
        let (off, n) = self.layout.acts[0];
        let data = self.download(off, n)?;
        Ok(self.to_tensor(0, data))
    }

    /// Replaces the moving average.
    pub fn set_ema(&mut self, ema: &[f32]) -> Result<(), GpuError> {
        check_len("moving average", ema.len(), self.output_len())?;
        self.upload(self.layout.ema, ema)
    }

    /// Adam's first and second moments (waits for them).
    pub fn moments(&self) -> Result<(Vec<f32>, Vec<f32>), GpuError> {
        let n = self.layout.n_params;
        Ok((
            self.download(self.layout.adam_m, n)?,
            self.download(self.layout.adam_v, n)?,
        ))
    }

    /// Replaces Adam's moments, and its step count with `t` (the bias corrections are rebuilt
    /// as the device builds them, one product per step, so a restored run continues exactly).
    pub fn set_adam(
        &mut self,
        m: &[f32],
        v: &[f32],
        t: u64,
        beta1: f64,
        beta2: f64,
    ) -> Result<(), GpuError> {
        let n = self.layout.n_params;
        check_len("Adam moment", m.len(), n)?;
        check_len("Adam moment", v.len(), n)?;
        self.upload(self.layout.adam_m, m)?;
        self.upload(self.layout.adam_v, v)?;
        let (mut b1, mut b2) = (1.0f64, 1.0f64);
        for _ in 0..t {
            b1 *= beta1;
            b2 *= beta2;
        }
        self.up64(self.layout.adam_state, &[t as f64, b1, b2])?;
        self.adam_betas = (t > 0).then_some((beta1, beta2));
        Ok(())
    }

    /// Adam's step count (waits for it).
    pub fn adam_t(&self) -> Result<u64, GpuError> {
        Ok(self.down64(self.layout.adam_state, 1)?[0] as u64)
    }

    pub(super) fn copy(&self, from: usize, to: usize, n: usize) -> Result<(), GpuError> {
        self.launch_n(K::Copy, n, &[self.p(from), self.p(to), long(n), int(0)])
    }

    /// Keeps the parameters and Adam's moments on the device (queued), for
    /// [`GpuNet::restore`]; returns Adam's state, which the caller keeps (waits for it).
    pub fn save(&mut self) -> Result<[f64; 3], GpuError> {
        self.keep()?;
        let s = self.down64(self.layout.adam_state, 3)?;
        Ok([s[0], s[1], s[2]])
    }

    /// [`GpuNet::save`] without reading Adam's state (queued only): for a caller that read it
    /// with [`GpuNet::loss_sums_and_adam`].
    pub fn keep(&mut self) -> Result<(), GpuError> {
        let l = &self.layout;
        let n = l.n_params;
        self.copy(l.params, l.snap_params, n)?;
        self.copy(l.adam_m, l.snap_m, n)?;
        self.copy(l.adam_v, l.snap_v, n)
    }

    /// Keeps the moving average on the device (queued), for [`GpuNet::restore`].
    pub fn save_ema(&mut self) -> Result<(), GpuError> {
        self.copy(self.layout.ema, self.layout.snap_ema, self.output_len())
    }

    /// Goes back to what [`GpuNet::save`] and [`GpuNet::save_ema`] kept, with Adam's state
    /// `adam` (queued).
    pub fn restore(&mut self, adam: [f64; 3]) -> Result<(), GpuError> {
        let l = &self.layout;
        let (n, e) = (l.n_params, self.output_len());
        self.copy(l.snap_params, l.params, n)?;
        self.copy(l.snap_m, l.adam_m, n)?;
        self.copy(l.snap_v, l.adam_v, n)?;
        self.copy(l.snap_ema, l.ema, e)?;
        self.up64(self.layout.adam_state, &adam)
    }

    /// What [`GpuNet::save`] kept: parameters and Adam's two moments (waits for them).
    pub fn saved(&self) -> Result<[Vec<f32>; 3], GpuError> {
        let n = self.layout.n_params;
        Ok([
            self.download(self.layout.snap_params, n)?,
            self.download(self.layout.snap_m, n)?,
            self.download(self.layout.snap_v, n)?,
        ])
    }

    /// Replaces what [`GpuNet::save`] kept (a resumed fit's snapshot).
    pub fn set_saved(&mut self, params: &[f32], m: &[f32], v: &[f32]) -> Result<(), GpuError> {
        let n = self.layout.n_params;
        for (what, x) in [
            ("parameters", params),
            ("Adam moment", m),
            ("Adam moment", v),
        ] {
            check_len(what, x.len(), n)?;
        }
        self.upload(self.layout.snap_params, params)?;
        self.upload(self.layout.snap_m, m)?;
        self.upload(self.layout.snap_v, v)
    }

    /// Queues one Adam step on the parameters with the gradients of the last backward.
    pub fn adam_step(&mut self, cfg: &AdamConfig) -> Result<(), GpuError> {
        self.queue_adam(cfg, false)
    }

    /// Adam with step size `cfg.lr`, or (`fit`) the fit's device-side one.
    pub(super) fn queue_adam(&mut self, cfg: &AdamConfig, fit: bool) -> Result<(), GpuError> {
        match self.adam_betas {
            None => self.adam_betas = Some((cfg.beta1, cfg.beta2)),
            Some(b) if b != (cfg.beta1, cfg.beta2) => {
                return Err(GpuError(
                    "Adam's betas changed during a fit (reset Adam first)".into(),
                ));
            }
            Some(_) => {}
        }
        let l = &self.layout;
        self.launch(
            K::AdamTick,
            (1, 1, 1),
            (1, 1, 1),
            &[
                self.p64(l.adam_state),
                A::D(cfg.beta1),
                A::D(cfg.beta2),
                if fit { self.p64(l.fit_state) } else { A::P(0) },
            ],
        )?;
        self.launch_n(
            K::Adam,
            l.n_params,
            &[
                self.p(l.params),
                self.p(l.dparams),
                self.p(l.adam_m),
                self.p(l.adam_v),
                long(l.n_params),
                self.p64(l.adam_state),
                A::D(cfg.lr),
                if fit { self.p64(l.fit_state) } else { A::P(0) },
                A::F(cfg.beta1 as f32),
                A::F(cfg.beta2 as f32),
                A::F(cfg.eps as f32),
                A::F(cfg.weight_decay as f32),
                A::F((1.0 - cfg.beta1) as f32),
                A::F((1.0 - cfg.beta2) as f32),
            ],
        )
    }

    /// One training step: forward, squared-error loss against the target (scaled by `scale`),
    /// backward and Adam. Only queues work.
    pub fn step(&mut self, scale: f32, cfg: &AdamConfig) -> Result<(), GpuError> {
        self.collective(|g| {
            g.forward()?;
            g.loss_and_grad(scale)?;
            g.backward()?;
            g.adam_step(cfg)
        })
    }
}

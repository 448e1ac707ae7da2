//! A network on the GPU: building it on a backend, lanes, the arenas, uploads and downloads,
//! parameters, targets and the loss.

use super::*;
use crate::cuda::GpuError;
use crate::cuda::plan::{BLOCK, GpuNode, Layout, grid_1d, lower_with_extra};
use crate::engine::{Net, Tensor};

impl GpuNet {
    /// Uploads `net` (its parameters as they are) to CUDA device `ordinal`.
    pub fn new(net: &Net<f32>, ordinal: usize, precision: Precision) -> Result<Self, GpuError> {
        Self::with_room(net, ordinal, precision, 0)
    }

    /// [`GpuNet::new`] with `extra` f32 words of room for a forward operator
    /// ([`operator_space`]).
    pub fn with_room(
        net: &Net<f32>,
        ordinal: usize,
        precision: Precision,
        extra: usize,
    ) -> Result<Self, GpuError> {
        Self::with_lanes(net, ordinal, precision, extra, 1)
    }

    /// [`GpuNet::with_room`] for `lanes` networks of `net`'s layout, each starting from `net`'s
    /// parameters and input: a batch of independent fits that run in one launch sequence
    /// ([`GpuNet::select`] chooses the lane that per-lane calls address).
    pub fn with_lanes(
        net: &Net<f32>,
        ordinal: usize,
        precision: Precision,
        extra: usize,
        lanes: usize,
    ) -> Result<Self, GpuError> {
        let (nodes, layout) = lower_with_extra(net, extra)?;
        let info = probe(ordinal)?;
        let (len, len64) = lane_lengths(&layout, lanes)?;
        let dev = Cuda::open(&info, precision, len, len64)?;
        Self::with_backend(net, info, Box::new(dev), nodes, layout, lanes)
    }

    /// `net` on the host emulation of the GPU, its kernels compiled in `dir` (tests).
    #[doc(hidden)]
    pub fn emulated(net: &Net<f32>, dir: &std::path::Path) -> Result<Self, GpuError> {
        Self::emulated_with_room(net, dir, 0)
    }

    /// [`GpuNet::emulated`] with room for a forward operator (see [`GpuNet::with_room`]).
    #[doc(hidden)]
    pub fn emulated_with_room(
        net: &Net<f32>,
        dir: &std::path::Path,
        extra: usize,
    ) -> Result<Self, GpuError> {
        Self::emulated_with(net, dir, Precision::F32, extra)
    }

    /// [`GpuNet::emulated_with_room`] whose GEMMs round their operands as the tensor cores of
    /// `precision` do (TF32: to nearest, ties away; bf16: to nearest even) and sum in f64.
    #[doc(hidden)]
    pub fn emulated_with(
        net: &Net<f32>,
        dir: &std::path::Path,
        precision: Precision,
        extra: usize,
    ) -> Result<Self, GpuError> {
        Self::emulated_lanes(net, dir, precision, extra, 1)
    }

    /// [`GpuNet::with_lanes`] on the host emulation.
    #[doc(hidden)]
    pub fn emulated_lanes(
        net: &Net<f32>,
        dir: &std::path::Path,
        precision: Precision,
        extra: usize,
        lanes: usize,
    ) -> Result<Self, GpuError> {
        let (nodes, layout) = lower_with_extra(net, extra)?;
        let (len, len64) = lane_lengths(&layout, lanes)?;
        let dev = crate::cuda::emu::Emulator::new(dir, len, len64, precision)?;
        let info = DeviceInfo {
            ordinal: 0,
            name: "host emulation".into(),
            compute_capability: (0, 0),
            memory_bytes: 0,
        };
        Self::with_backend(net, info, Box::new(dev), nodes, layout, lanes)
    }

    pub(super) fn with_backend(
        net: &Net<f32>,
        info: DeviceInfo,
        dev: Box<dyn Backend + Send>,
        nodes: Vec<GpuNode>,
        mut layout: Layout,
        lanes: usize,
    ) -> Result<Self, GpuError> {
        let (base, base64) = dev.base();
        let (shapes, _) = net.buffer_plan();
        let constants = std::mem::take(&mut layout.constants);
        let (stride, stride64) = (align_up(layout.len), align_up(layout.len64));
        let mut g = GpuNet {
            info,
            dev,
            base,
            base64,
            nodes,
            layout,
            shapes,
            adam_betas: None,
            fit: None,
            fit_captured: false,
            graph_error: None,
            use_graphs: true,
            op: None,
            lanes,
            lane: 0,
            all: false,
            stride,
            stride64,
        };
        for lane in 0..lanes {
            g.select(lane)?;
            g.upload(g.layout.params, net.params())?;
            for (at, words) in &constants {
                g.upload(*at, words)?;
            }
            g.upload(g.layout.acts[0].0, &net.input().data)?;
            let (ones, ones_len, mask, out_len) = (
                g.layout.ones,
                g.layout.ones_len,
                g.layout.mask,
                g.output_len(),
            );
            g.fill(ones, ones_len, 1.0)?;
            g.fill(mask, out_len, 1.0)?;
            g.reset_adam()?;
        }
        g.select(0)?;
        g.sync()?;
        Ok(g)
    }

    /// How many networks run side by side ([`GpuNet::with_lanes`]).
    pub fn lanes(&self) -> usize {
        self.lanes
    }

    /// Makes `lane` the one that per-lane calls (parameters, targets, downloads, a fit's
    /// state, snapshots) address.
    pub fn select(&mut self, lane: usize) -> Result<(), GpuError> {
        if lane >= self.lanes {
            return Err(GpuError(format!(
                "lane {lane} of a network with {} lanes",
                self.lanes
            )));
        }
        self.lane = lane;
        Ok(())
    }

    /// The selected lane's first f32 word (0 while the network's work for all lanes is
    /// queued).
    pub(super) fn lane_at(&self) -> usize {
        if self.all { 0 } else { self.lane * self.stride }
    }

    pub(super) fn lane_at64(&self) -> usize {
        if self.all {
            0
        } else {
            self.lane * self.stride64
        }
    }

    /// Queues `f`'s work for every lane.
    pub(super) fn collective<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let was = std::mem::replace(&mut self.all, true);
        let r = f(self);
        self.all = was;
        r
    }

    pub(super) fn up64(&mut self, off: usize, src: &[f64]) -> Result<(), GpuError> {
        let at = off + self.lane_at64();
        self.dev.upload64(at, src)
    }

    pub(super) fn down64(&self, off: usize, n: usize) -> Result<Vec<f64>, GpuError> {
        self.dev.download64(off + self.lane_at64(), n)
    }

    /// The BLAS calls' lanes: all of them while the network's work is queued.
    pub(super) fn batch(&self) -> Batch {
        Batch {
            count: if self.all { self.lanes } else { 1 },
            stride: self.stride,
        }
    }

    pub fn device(&self) -> &DeviceInfo {
        &self.info
    }

    /// Bytes of device memory the network holds.
    pub fn memory_bytes(&self) -> usize {
        self.lanes * (self.stride * 4 + self.stride64 * 8)
    }

    pub(super) fn p(&self, off: usize) -> A {
        A::P(self.ptr(off))
    }

    pub(super) fn ptr(&self, off: usize) -> u64 {
        self.base + 4 * (off + self.lane_at()) as u64
    }

    pub(super) fn p64(&self, off: usize) -> A {
        A::P(self.base64 + 8 * (off + self.lane_at64()) as u64)
    }

    pub(super) fn output_len(&self) -> usize {
        self.layout.acts.last().map_or(0, |a| a.1)
    }

    pub(super) fn launch(
        &self,
        k: K,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        args: &[A],
    ) -> Result<(), GpuError> {
        let lanes = if self.all { self.lanes } else { 1 };
        // The kernel's arguments and the lane strides, without an allocation per launch.
        let mut all = [A::I(0); MAX_ARGS + 2];
        let n = args.len();
        if n > MAX_ARGS {
            return Err(GpuError(format!(
                "{n} kernel arguments, at most {MAX_ARGS}"
            )));
        }
        all[..n].copy_from_slice(args);
        all[n] = long(4 * self.stride);
        all[n + 1] = long(8 * self.stride64);
        self.dev
            .launch(k, (grid.0, grid.1, lanes as u32), block, &all[..n + 2])
    }

    /// An elementwise launch over `n` elements.
    pub(super) fn launch_n(&self, k: K, n: usize, args: &[A]) -> Result<(), GpuError> {
        self.launch(k, (grid_1d(n), 1, 1), (BLOCK, 1, 1), args)
    }

    pub(super) fn fill(&self, off: usize, n: usize, v: f32) -> Result<(), GpuError> {
        self.launch_n(K::Fill, n, &[self.p(off), long(n), A::F(v)])
    }

    pub(super) fn upload(&mut self, off: usize, src: &[f32]) -> Result<(), GpuError> {
        self.dev.upload(off + self.lane_at(), src)
    }

    pub(super) fn download(&self, off: usize, n: usize) -> Result<Vec<f32>, GpuError> {
        self.dev.download(off + self.lane_at(), n)
    }

    /// Waits for all queued work; reports an error a kernel raised.
    pub fn sync(&self) -> Result<(), GpuError> {
        self.dev.sync()
    }

    /// Zeroes Adam's moments and step counter.
    pub fn reset_adam(&mut self) -> Result<(), GpuError> {
        let n = self.layout.n_params;
        self.fill(self.layout.adam_m, n, 0.0)?;
        self.fill(self.layout.adam_v, n, 0.0)?;
        self.up64(self.layout.adam_state, &[0.0, 1.0, 1.0])?;
        self.adam_betas = None;
        Ok(())
    }

    pub fn set_params(&mut self, params: &[f32]) -> Result<(), GpuError> {
        check_len("parameters", params.len(), self.layout.n_params)?;
        self.upload(self.layout.params, params)
    }

    pub fn params(&self) -> Result<Vec<f32>, GpuError> {
        self.download(self.layout.params, self.layout.n_params)
    }

    /// Gradients of the last backward, in the layout of [`Net::params`].
    pub fn grads(&self) -> Result<Vec<f32>, GpuError> {
        self.download(self.layout.dparams, self.layout.n_params)
    }

    pub fn set_input(&mut self, x: &Tensor<f32>) -> Result<(), GpuError> {
        let (off, n) = self.layout.acts[0];
        check_len("input", x.data.len(), n)?;
        self.upload(off, &x.data)
    }

    /// The loss target, and optionally the diagonal of the forward operator `a` (the data term
    /// compares `a·output` with the target; default all ones: denoising).
    pub fn set_target(&mut self, y: &Tensor<f32>, mask: Option<&[f32]>) -> Result<(), GpuError> {
        let n = self.output_len();
        check_len("target", y.data.len(), n)?;
        self.upload(self.layout.target, &y.data)?;
        match mask {
            Some(m) => {
                check_len("mask", m.len(), n)?;
                self.upload(self.layout.mask, m)
            }
            None => self.fill(self.layout.mask, n, 1.0),
        }
    }

    pub(super) fn to_tensor(&self, act: usize, data: Vec<f32>) -> Tensor<f32> {
        let (h, w, c) = self.shapes[act];
        Tensor { h, w, c, data }
    }

    /// The output of the last forward (waits for it).
    pub fn output(&self) -> Result<Tensor<f32>, GpuError> {
        let (off, n) = *self.layout.acts.last().expect("an output");
        let data = self.download(off, n)?;
        Ok(self.to_tensor(self.layout.acts.len() - 1, data))
    }

    /// The moving average kept by [`GpuNet::ema_update`].
    pub fn ema(&self) -> Result<Tensor<f32>, GpuError> {
        let data = self.download(self.layout.ema, self.output_len())?;
        Ok(self.to_tensor(self.layout.acts.len() - 1, data))
    }

    /// `ema = β·ema + (1 − β)·output` on the device (β = 0 copies the output).
    pub fn ema_update(&mut self, beta: f32) -> Result<(), GpuError> {
        let n = self.output_len();
        let out = self.layout.acts.last().expect("an output").0;
        if beta == 0.0 {
            // A copy, not 0·ema + output: the average may not hold numbers yet.
            return self.copy(out, self.layout.ema, n);
        }
        self.launch_n(
            K::Ema,
            n,
            &[
                self.p(self.layout.ema),
                self.p(out),
                long(n),
                A::F(beta),
                A::P(0),
            ],
        )
    }

    /// Σ d² of the last [`GpuNet::loss_and_grad`] or [`GpuNet::data_term`], d = a·output −
    /// target (waits for it).
    pub fn loss_sum(&self) -> Result<f64, GpuError> {
        Ok(self.loss_sums()?.0)
    }

    /// `(Σ d², Σ |d|)` of the last data term (waits for it).
    pub fn loss_sums(&self) -> Result<(f64, f64), GpuError> {
        let l = self.down64(self.layout.loss, 2)?;
        Ok((l[0], l[1]))
    }

    /// The data term's sums `[Σ d², Σ |d|, Σ w·d², Σ w·|d|]` and Adam's state
    /// `[t, β1^t, β2^t]` in one copy (they are neighbours in the arena): one wait at a fit's
    /// divergence check.
    pub fn loss_sums_and_adam(&self) -> Result<([f64; 4], [f64; 3]), GpuError> {
        let l = self.down64(self.layout.loss, 7)?;
        Ok(([l[0], l[1], l[2], l[3]], [l[4], l[5], l[6]]))
    }

    /// Queues the squared-error loss and writes its gradient, `scale·a·(a·output − target)`, as
    /// the output gradient (`scale` = 2/n gives the mean squared error's; `a` is the diagonal
    /// operator of [`GpuNet::set_target`]).
    pub fn loss_and_grad(&mut self, scale: f32) -> Result<(), GpuError> {
        self.data_term(scale, false)
    }

    /// Queues the data term of the diagonal operator `a` and target of [`GpuNet::set_target`],
    /// d = a·output − target: its sums `[Σ d², Σ |d|]` and, as the output gradient,
    /// `scale·a·d` (squared error) or `scale·a·sign(d)` (`l1`, absolute error).
    pub fn data_term(&mut self, scale: f32, l1: bool) -> Result<(), GpuError> {
        self.weighted_data_term(scale, l1, false)
    }

    /// [`GpuNet::data_term`] with each sample's gradient also multiplied by its weight of
    /// [`GpuNet::set_weights`] (when `weighted`), whose weighted sums `[Σ w·d², Σ w·|d|]` are
    /// kept too ([`GpuNet::loss_sums_and_adam`]).
    pub fn weighted_data_term(
        &mut self,
        scale: f32,
        l1: bool,
        weighted: bool,
    ) -> Result<(), GpuError> {
        let last = self.layout.acts.len() - 1;
        let (out, n) = self.layout.acts[last];
        let dout = self.layout.grads[last].ok_or_else(|| GpuError("no output gradient".into()))?;
        let w = weighted.then_some(self.layout.weights);
        if let Some(op) = self.op {
            self.spmv(op.a, out, op.ax, op.n_obs)?;
            self.loss_kernels([op.ax, op.target, op.ones, op.g_ax], w, op.n_obs, scale, l1)?;
            return self.spmv(op.at, op.g_ax, dout, n);
        }
        let l = &self.layout;
        self.loss_kernels([out, l.target, l.mask, dout], w, n, scale, l1)
    }

    /// Replaces the data term's per-sample weights (over the observation: the output, or the
    /// sparse operator's rows).
    pub fn set_weights(&mut self, w: &[f32]) -> Result<(), GpuError> {
        let n = self.op.map_or(self.output_len(), |op| op.n_obs);
        check_len("sample weights", w.len(), n)?;
        self.upload(self.layout.weights, w)
    }
}

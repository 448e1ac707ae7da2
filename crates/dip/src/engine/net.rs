//! The network: a static list of nodes over numbered activations.
//!
//! Forward walks the list; backward walks it in reverse. Every activation, gradient and cache is
//! allocated when the network is built for one image size, so a training step allocates nothing.
//! Where an activation feeds several nodes, the first gradient to arrive in backward order is
//! written and the others are added, which spares a zeroing pass.

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;

use rand_distr::{Distribution, Normal};

use super::conv::{Conv2d, ConvScratch};
use super::gemm::Precision;
use super::{
    BatchNorm, Concat, Dense, FilterPad, FixedFilter, Float, LeakyRelu, PadMode, Sigmoid, Tensor,
    Upsample, UpsampleMode,
};

/// Index of an activation. 0 is the network input.
pub type ActId = usize;

const NO_SLOT: usize = usize::MAX;

/// One operation of the graph. Few and long-lived: their size does not matter.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Op<T> {
    Conv(Conv2d<T>),
    Norm(BatchNorm<T>),
    Upsample(Upsample<T>),
    Concat(Concat),
    Sigmoid(Sigmoid),
    Dense(Dense),
    LeakyRelu(LeakyRelu<T>),
    /// A parameter tensor used as an activation: its output is parameters `offset..offset+len`.
    Learned {
        offset: usize,
        len: usize,
    },
    Filter(FixedFilter<T>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GradMode {
    Skip,
    Write,
    Add,
}

#[derive(Debug)]
struct Node<T> {
    op: Op<T>,
    inputs: Vec<ActId>,
    output: ActId,
    grad_modes: Vec<GradMode>,
}

/// How a parameter tensor is laid out in the flat buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// Convolution weight, stored `[ky][kx][cin][cout]`; PyTorch's layout is `[cout][cin][ky][kx]`.
    ConvWeight { cout: usize, cin: usize, k: usize },
    /// A plain vector (bias, gamma, beta).
    Vector,
    /// Fully connected weight, stored `[in][out]`; PyTorch's layout is `[out][in]`.
    Dense { n_out: usize, n_in: usize },
    /// A learned `h × w × c` tensor, stored HWC; reported as PyTorch's `[c][h][w]`.
    Tensor { h: usize, w: usize, c: usize },
}

/// A named parameter tensor in the flat buffer.
#[derive(Debug, Clone)]
pub struct ParamInfo {
    pub name: String,
    pub kind: ParamKind,
    pub offset: usize,
    pub len: usize,
    /// Initialisation: uniform in ±bound, or a constant.
    init: Init,
}

#[derive(Debug, Clone, Copy)]
enum Init {
    Uniform(f64),
    Const(f64),
    Normal(f64),
}

impl ParamInfo {
    /// Shape in PyTorch's convention.
    pub fn reference_shape(&self) -> Vec<usize> {
        match self.kind {
            ParamKind::ConvWeight { cout, cin, k } => vec![cout, cin, k, k],
            ParamKind::Vector => vec![self.len],
            ParamKind::Dense { n_out, n_in } => vec![n_out, n_in],
            ParamKind::Tensor { h, w, c } => vec![c, h, w],
        }
    }

    /// Position in the flat buffer of the element at PyTorch's row-major index `i`.
    pub fn flat_index(&self, i: usize) -> usize {
        match self.kind {
            ParamKind::ConvWeight { cout, cin, k } => {
                let (kx, rest) = (i % k, i / k);
                let (ky, rest) = (rest % k, rest / k);
                let (ci, co) = (rest % cin, rest / cin);
                debug_assert!(co < cout);
                self.offset + ((ky * k + kx) * cin + ci) * cout + co
            }
            ParamKind::Vector => self.offset + i,
            ParamKind::Dense { n_out, n_in } => {
                let (ii, o) = (i % n_in, i / n_in);
                debug_assert!(o < n_out);
                self.offset + ii * n_out + o
            }
            ParamKind::Tensor { h, w, c } => {
                let (x, rest) = (i % w, i / w);
                let (y, ch) = (rest % h, rest / h);
                self.offset + (y * w + x) * c + ch
            }
        }
    }
}

/// Builds a [`Net`] for one input size.
pub struct NetBuilder<T> {
    shapes: Vec<(usize, usize, usize)>,
    nodes: Vec<Node<T>>,
    params: Vec<ParamInfo>,
    n_params: usize,
}

impl<T: Float> NetBuilder<T> {
    /// A builder whose input (activation 0) is `h × w × c`.
    pub fn new(h: usize, w: usize, c: usize) -> Self {
        NetBuilder {
            shapes: vec![(h, w, c)],
            nodes: Vec::new(),
            params: Vec::new(),
            n_params: 0,
        }
    }

    /// How many parameters the network built so far has.
    pub fn num_params(&self) -> usize {
        self.n_params
    }

    /// The network input.
    pub fn input(&self) -> ActId {
        0
    }

    /// `(h, w, c)` of an activation.
    pub fn shape(&self, a: ActId) -> (usize, usize, usize) {
        self.shapes[a]
    }

    fn param(&mut self, name: String, kind: ParamKind, len: usize, init: Init) -> usize {
        let offset = self.n_params;
        self.params.push(ParamInfo {
            name,
            kind,
            offset,
            len,
            init,
        });
        self.n_params += len;
        offset
    }

    fn push(&mut self, op: Op<T>, inputs: Vec<ActId>, shape: (usize, usize, usize)) -> ActId {
        self.shapes.push(shape);
        let output = self.shapes.len() - 1;
        let grad_modes = vec![GradMode::Skip; inputs.len()];
        self.nodes.push(Node {
            op,
            inputs,
            output,
            grad_modes,
        });
        output
    }

    /// A k×k convolution with PyTorch's default initialisation (uniform ±1/sqrt(fan_in) for the
    /// weight and the bias).
    #[allow(clippy::too_many_arguments)]
    pub fn conv(
        &mut self,
        x: ActId,
        cout: usize,
        k: usize,
        stride: usize,
        pad: PadMode,
        bias: bool,
        name: &str,
    ) -> ActId {
        let (h, w, cin) = self.shapes[x];
        let bound = 1.0 / ((cin * k * k) as f64).sqrt();
        let wo = self.param(
            format!("{name}.weight"),
            ParamKind::ConvWeight { cout, cin, k },
            k * k * cin * cout,
            Init::Uniform(bound),
        );
        let bo = bias.then(|| {
            self.param(
                format!("{name}.bias"),
                ParamKind::Vector,
                cout,
                Init::Uniform(bound),
            )
        });
        let layer = Conv2d::new(h, w, cin, cout, k, stride, pad, wo, bo);
        let shape = (layer.ho, layer.wo, cout);
        self.push(Op::Conv(layer), vec![x], shape)
    }

    /// Batch norm with gamma 1 and beta 0, followed by LeakyReLU(`slope`) if given.
    pub fn batchnorm(&mut self, x: ActId, slope: Option<f64>, name: &str) -> ActId {
        let (h, w, c) = self.shapes[x];
        let g = self.param(
            format!("{name}.weight"),
            ParamKind::Vector,
            c,
            Init::Const(1.0),
        );
        let b = self.param(
            format!("{name}.bias"),
            ParamKind::Vector,
            c,
            Init::Const(0.0),
        );
        self.push(
            Op::Norm(BatchNorm::new(h * w, c, g, b, slope)),
            vec![x],
            (h, w, c),
        )
    }

    pub fn upsample(&mut self, x: ActId, factor: usize, mode: UpsampleMode) -> ActId {
        let (h, w, c) = self.shapes[x];
        self.push(
            Op::Upsample(Upsample::new(h, w, c, factor, mode)),
            vec![x],
            (h * factor, w * factor, c),
        )
    }

    /// Concatenates along channels. Panics if the spatial sizes differ (a builder bug).
    pub fn concat(&mut self, xs: &[ActId]) -> ActId {
        let (h, w, _) = self.shapes[xs[0]];
        let channels: Vec<usize> = xs
            .iter()
            .map(|&x| {
                let (hx, wx, cx) = self.shapes[x];
                assert_eq!((hx, wx), (h, w), "concat of different spatial sizes");
                cx
            })
            .collect();
        let c = channels.iter().sum();
        self.push(Op::Concat(Concat::new(channels)), xs.to_vec(), (h, w, c))
    }

    pub fn sigmoid(&mut self, x: ActId) -> ActId {
        let s = self.shapes[x];
        self.push(Op::Sigmoid(Sigmoid), vec![x], s)
    }

    /// A fully connected layer over the whole flattened `x` to `out_shape` (`nn.Linear`,
    /// weight and bias uniform in ±1/√n_in).
    pub fn dense(
        &mut self,
        x: ActId,
        out_shape: (usize, usize, usize),
        bias: bool,
        name: &str,
    ) -> ActId {
        let (h, w, c) = self.shapes[x];
        let n_in = h * w * c;
        let n_out = out_shape.0 * out_shape.1 * out_shape.2;
        let bound = 1.0 / (n_in as f64).sqrt();
        let wo = self.param(
            format!("{name}.weight"),
            ParamKind::Dense { n_out, n_in },
            n_in * n_out,
            Init::Uniform(bound),
        );
        let bo = bias.then(|| {
            self.param(
                format!("{name}.bias"),
                ParamKind::Vector,
                n_out,
                Init::Uniform(bound),
            )
        });
        self.push(
            Op::Dense(Dense::new(n_in, n_out, wo, bo)),
            vec![x],
            out_shape,
        )
    }

    /// LeakyReLU with `slope` (0: ReLU).
    pub fn leaky_relu(&mut self, x: ActId, slope: f64) -> ActId {
        let s = self.shapes[x];
        self.push(
            Op::LeakyRelu(LeakyRelu {
                slope: T::from_f64(slope),
            }),
            vec![x],
            s,
        )
    }

    /// A learned `shape` tensor (initialised N(0, std²)) used as an activation; it does not
    /// read the network input.
    pub fn learned_tensor(&mut self, shape: (usize, usize, usize), std: f64, name: &str) -> ActId {
        let (h, w, c) = shape;
        let len = h * w * c;
        let offset = self.param(
            name.to_string(),
            ParamKind::Tensor { h, w, c },
            len,
            Init::Normal(std),
        );
        self.push(Op::Learned { offset, len }, vec![0], shape)
    }

    /// A fixed depthwise `ksize × ksize` filter after ×`upsample` zero insertion (see
    /// [`FixedFilter`]).
    pub fn fixed_filter(
        &mut self,
        x: ActId,
        kernel: &[f64],
        ksize: usize,
        upsample: usize,
        pad: FilterPad,
    ) -> ActId {
        let (h, w, c) = self.shapes[x];
        let f = FixedFilter::new(h, w, c, kernel, ksize, upsample, pad);
        let shape = f.output_shape();
        self.push(Op::Filter(f), vec![x], shape)
    }

    /// Gradient modes and buffer slots as [`NetBuilder::build`] plans them.
    fn plan(
        &mut self,
        output: ActId,
        input_grad: bool,
    ) -> (Vec<usize>, Vec<(usize, usize, usize)>) {
        let mut seen = vec![false; self.shapes.len()];
        for node in self.nodes.iter_mut().rev() {
            for (mode, &i) in node.grad_modes.iter_mut().zip(&node.inputs) {
                *mode = if i == 0 && !input_grad {
                    GradMode::Skip
                } else if seen[i] {
                    GradMode::Add
                } else {
                    seen[i] = true;
                    GradMode::Write
                };
            }
        }
        // Gradient buffers are shared by activations whose gradients are never alive at the
        // same time: one is born at its first contribution and dies after its producer's
        // backward.
        let mut grad_slot = vec![NO_SLOT; self.shapes.len()];
        let mut slot_shape: Vec<(usize, usize, usize)> = Vec::new();
        let mut free: Vec<usize> = Vec::new();
        let alloc = |shape, free: &mut Vec<usize>, slot_shape: &mut Vec<_>| -> usize {
            if let Some(pos) = free.iter().position(|&s| slot_shape[s] == shape) {
                return free.swap_remove(pos);
            }
            slot_shape.push(shape);
            slot_shape.len() - 1
        };
        grad_slot[output] = alloc(self.shapes[output], &mut free, &mut slot_shape);
        for node in self.nodes.iter().rev() {
            for (&i, &m) in node.inputs.iter().zip(&node.grad_modes) {
                if m == GradMode::Write {
                    grad_slot[i] = alloc(self.shapes[i], &mut free, &mut slot_shape);
                }
            }
            free.push(grad_slot[node.output]);
        }
        (grad_slot, slot_shape)
    }

    /// Bytes [`NetBuilder::build`] would allocate for the network (activations, gradients,
    /// caches, scratch, parameters with their gradients and Adam's two moments), computed
    /// without allocating; `output` is the output activation.
    pub fn estimate_bytes(&mut self, output: ActId) -> usize {
        let (_, slots) = self.plan(output, false);
        let numel = |&(h, w, c): &(usize, usize, usize)| h * w * c;
        let acts: usize = self.shapes.iter().map(numel).sum();
        let grads: usize = slots.iter().map(numel).sum();
        let mut scratch = [0usize; 4];
        let mut caches = 0;
        let mut tables = 0;
        for n in &self.nodes {
            match &n.op {
                Op::Conv(c) => {
                    caches += c.cache_len();
                    for (s, v) in scratch.iter_mut().zip(c.scratch_sizes()) {
                        *s = (*s).max(v);
                    }
                }
                Op::Filter(f) => tables += f.table_len(),
                _ => {}
            }
        }
        let t = std::mem::size_of::<T>();
        (acts + grads + caches + scratch.iter().sum::<usize>() + 4 * self.n_params) * t
            + tables * (4 + t)
            + self.shapes.len() * 64
    }

    /// Finishes the network with `output` as its output, parameters drawn from `seed`.
    /// `input_grad` keeps the gradient with respect to the input (not needed to fit weights).
    pub fn build(mut self, output: ActId, seed: u64, input_grad: bool) -> Net<T> {
        assert_eq!(
            output,
            self.shapes.len() - 1,
            "the output must be the last activation"
        );
        let (grad_slot, slot_shape) = self.plan(output, input_grad);
        let acts: Vec<Tensor<T>> = self
            .shapes
            .iter()
            .map(|&(h, w, c)| Tensor::zeros(h, w, c))
            .collect();
        let grads = slot_shape
            .iter()
            .map(|&(h, w, c)| Tensor::zeros(h, w, c))
            .collect();
        let mut scratch = ConvScratch::default();
        for node in &self.nodes {
            if let Op::Conv(c) = &node.op {
                scratch.reserve(c.scratch_sizes());
            }
        }
        let mut net = Net {
            nodes: self.nodes,
            acts,
            grads,
            grad_slot,
            params: vec![T::ZERO; self.n_params],
            dparams: vec![T::ZERO; self.n_params],
            info: self.params,
            scratch,
            profile: None,
            power_vectors: Vec::new(),
        };
        net.init_params(seed);
        net
    }
}

/// A network built for one input size, with all its buffers.
pub struct Net<T> {
    nodes: Vec<Node<T>>,
    acts: Vec<Tensor<T>>,
    /// Gradient buffers, indexed through `grad_slot`.
    grads: Vec<Tensor<T>>,
    grad_slot: Vec<usize>,
    params: Vec<T>,
    dparams: Vec<T>,
    info: Vec<ParamInfo>,
    scratch: ConvScratch<T>,
    /// Seconds spent in each node's forward and backward, when profiling is on.
    profile: Option<Vec<[f64; 2]>>,
    /// Warm starts of the power iterations of [`Net::lipschitz_project`], per parameter tensor.
    power_vectors: Vec<Vec<f64>>,
}

/// Time spent in one node, from [`Net::profile`].
#[derive(Debug, Clone)]
pub struct NodeTime {
    pub label: String,
    pub forward: f64,
    pub backward: f64,
}

impl<T: Float> Net<T> {
    /// Sets the number format of every convolution's GEMM inputs and returns the one in effect:
    /// `Bf16` falls back to `F32` on a CPU without AVX-512-BF16 (see [`Precision::effective`]).
    pub fn set_precision(&mut self, precision: Precision) -> Precision {
        let p = precision.effective();
        for node in &mut self.nodes {
            if let Op::Conv(l) = &mut node.op {
                l.precision = p;
            }
        }
        p
    }

    /// The number format of the convolution GEMM inputs.
    pub fn precision(&self) -> Precision {
        self.nodes
            .iter()
            .find_map(|n| match &n.op {
                Op::Conv(l) => Some(l.precision),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// Turns per-node timing on (and resets it) or off.
    pub fn set_profiling(&mut self, on: bool) {
        self.profile = on.then(|| vec![[0.0; 2]; self.nodes.len()]);
    }

    /// Accumulated per-node times since profiling was turned on.
    pub fn profile(&self) -> Vec<NodeTime> {
        let Some(p) = &self.profile else {
            return Vec::new();
        };
        self.nodes
            .iter()
            .zip(p)
            .map(|(n, t)| {
                let (h, w, c) = (
                    self.acts[n.output].h,
                    self.acts[n.output].w,
                    self.acts[n.output].c,
                );
                let label = match &n.op {
                    Op::Conv(l) => {
                        format!("conv{}x{}/s{} {}->{}", l.k, l.k, l.stride, l.cin, l.cout)
                    }
                    Op::Norm(l) => {
                        if l.slope.is_some() {
                            format!("bn+lrelu {}", l.c)
                        } else {
                            format!("bn {}", l.c)
                        }
                    }
                    Op::Upsample(l) => format!("upsample {:?}", l.mode).to_lowercase(),
                    Op::Concat(_) => "concat".to_string(),
                    Op::Sigmoid(_) => "sigmoid".to_string(),
                    Op::Dense(l) => format!("dense {}->{}", l.n_in, l.n_out),
                    Op::LeakyRelu(l) if l.slope == T::ZERO => "relu".to_string(),
                    Op::LeakyRelu(_) => "lrelu".to_string(),
                    Op::Learned { .. } => "learned tensor".to_string(),
                    Op::Filter(f) => {
                        format!("fixed filter {}x{} up{}", f.ksize, f.ksize, f.upsample)
                    }
                };
                NodeTime {
                    label: format!("{label} @{h}x{w}x{c}"),
                    forward: t[0],
                    backward: t[1],
                }
            })
            .collect()
    }

    /// Draws fresh parameters: PyTorch's default initialisation, from our own generator.
    pub fn init_params(&mut self, seed: u64) {
        let mut rng = Pcg64Mcg::seed_from_u64(seed);
        for p in &self.info {
            let dst = &mut self.params[p.offset..p.offset + p.len];
            match p.init {
                Init::Const(v) => dst.fill(T::from_f64(v)),
                Init::Uniform(b) => dst
                    .iter_mut()
                    .for_each(|v| *v = T::from_f64(rng.random_range(-b..b))),
                Init::Normal(sd) => {
                    let n = Normal::new(0.0, sd).expect("a valid std");
                    dst.iter_mut()
                        .for_each(|v| *v = T::from_f64(n.sample(&mut rng)));
                }
            }
        }
    }

    pub fn num_params(&self) -> usize {
        self.params.len()
    }

    pub fn params(&self) -> &[T] {
        &self.params
    }

    pub fn params_mut(&mut self) -> &mut [T] {
        &mut self.params
    }

    /// Gradients of the last backward, in the layout of [`Net::params`].
    pub fn grads(&self) -> &[T] {
        &self.dparams
    }

    /// Parameters and their gradients at once (for the optimiser).
    pub fn params_and_grads(&mut self) -> (&mut [T], &[T]) {
        (&mut self.params, &self.dparams)
    }

    /// The parameter tensors, in creation order (which is the reference's registration order).
    pub fn param_info(&self) -> &[ParamInfo] {
        &self.info
    }

    /// Copies parameter tensor `index` from PyTorch's layout.
    pub fn set_param_reference(&mut self, index: usize, values: &[f64]) {
        let p = &self.info[index];
        assert_eq!(
            values.len(),
            p.len,
            "parameter {} has {} values, got {}",
            p.name,
            p.len,
            values.len()
        );
        for (i, &v) in values.iter().enumerate() {
            self.params[p.flat_index(i)] = T::from_f64(v);
        }
    }

    /// Parameter tensor `index` (or its gradient) in PyTorch's layout.
    pub fn param_reference(&self, index: usize, grad: bool) -> Vec<f64> {
        let p = &self.info[index];
        let src = if grad { &self.dparams } else { &self.params };
        (0..p.len).map(|i| src[p.flat_index(i)].to_f64()).collect()
    }

    /// The input tensor; write the network input here before [`Net::forward`].
    pub fn input_mut(&mut self) -> &mut Tensor<T> {
        &mut self.acts[0]
    }

    pub fn input(&self) -> &Tensor<T> {
        &self.acts[0]
    }

    pub fn output(&self) -> &Tensor<T> {
        self.acts.last().expect("a network has an output")
    }

    /// The gradient of the loss with respect to the output; write it here before
    /// [`Net::backward`].
    pub fn output_grad_mut(&mut self) -> &mut Tensor<T> {
        let s = self.grad_slot[self.acts.len() - 1];
        &mut self.grads[s]
    }

    /// Output and output gradient at once (for the loss).
    pub fn output_and_grad(&mut self) -> (&Tensor<T>, &mut Tensor<T>) {
        let s = self.grad_slot[self.acts.len() - 1];
        (self.acts.last().expect("output"), &mut self.grads[s])
    }

    /// Gradient with respect to the input, if the network was built to keep it.
    ///
    /// # Panics
    /// If it was built without (`input_grad` false in [`NetBuilder::build`]).
    pub fn input_grad(&self) -> &Tensor<T> {
        let s = self.grad_slot[0];
        assert!(
            s != NO_SLOT,
            "this network was built without the input gradient"
        );
        &self.grads[s]
    }

    /// Runs every node on the current input.
    pub fn forward(&mut self) -> &Tensor<T> {
        let Net {
            nodes,
            acts,
            params,
            scratch,
            profile,
            ..
        } = self;
        for (ni, node) in nodes.iter_mut().enumerate() {
            let t0 = profile.as_ref().map(|_| std::time::Instant::now());
            let (before, after) = acts.split_at_mut(node.output);
            let y = &mut after[0];
            let x = &before[node.inputs[0]];
            match &mut node.op {
                Op::Conv(l) => l.forward(params, x, y, scratch),
                Op::Norm(l) => l.forward(params, x, y),
                Op::Upsample(l) => l.forward(x, y),
                Op::Sigmoid(l) => l.forward(x, y),
                Op::Dense(l) => l.forward(params, x, y),
                Op::LeakyRelu(l) => l.forward(x, y),
                Op::Learned { offset, len } => {
                    y.data.copy_from_slice(&params[*offset..*offset + *len]);
                }
                Op::Filter(l) => l.forward(x, y),
                Op::Concat(l) => {
                    for (which, &i) in node.inputs.iter().enumerate() {
                        l.forward_input(which, &before[i], y);
                    }
                }
            }
            if let (Some(p), Some(t0)) = (profile.as_mut(), t0) {
                p[ni][0] += t0.elapsed().as_secs_f64();
            }
        }
        self.output()
    }

    /// Backpropagates the output gradient: parameter gradients are written, and so is the input
    /// gradient if kept.
    pub fn backward(&mut self) {
        let Net {
            nodes,
            acts,
            grads,
            grad_slot,
            params,
            dparams,
            scratch,
            profile,
            ..
        } = self;
        for (ni, node) in nodes.iter_mut().enumerate().rev() {
            let t0 = profile.as_ref().map(|_| std::time::Instant::now());
            let so = grad_slot[node.output];
            let y = &acts[node.output];
            let x = &acts[node.inputs[0]];
            let mode = node.grad_modes[0];
            let add = mode == GradMode::Add;
            // The output gradient and an input gradient live in distinct slots.
            fn pair<T>(
                grads: &mut [Tensor<T>],
                i: usize,
                so: usize,
            ) -> (&Tensor<T>, Option<&mut Tensor<T>>) {
                if i == NO_SLOT {
                    return (&grads[so], None);
                }
                let [dx, dy] = grads
                    .get_disjoint_mut([i, so])
                    .expect("gradient slots of a node are distinct");
                (dy, Some(dx))
            }
            let slot_of = |j: usize| {
                if node.grad_modes[j] == GradMode::Skip {
                    NO_SLOT
                } else {
                    grad_slot[node.inputs[j]]
                }
            };
            match &mut node.op {
                Op::Conv(l) => {
                    let (dy, dx) = pair(grads, slot_of(0), so);
                    l.backward(params, x, dy, dx, add, dparams, scratch);
                }
                Op::Norm(l) => {
                    let (dy, dx) = pair(grads, slot_of(0), so);
                    l.backward(params, x, y, dy, dx, add, dparams);
                }
                Op::Upsample(l) => {
                    if let (dy, Some(dx)) = pair(grads, slot_of(0), so) {
                        l.backward(dy, dx, add);
                    }
                }
                Op::Sigmoid(l) => {
                    if let (dy, Some(dx)) = pair(grads, slot_of(0), so) {
                        l.backward(y, dy, dx, add);
                    }
                }
                Op::Dense(l) => {
                    let (dy, dx) = pair(grads, slot_of(0), so);
                    l.backward(params, x, dy, dx, add, dparams);
                }
                Op::LeakyRelu(l) => {
                    if let (dy, Some(dx)) = pair(grads, slot_of(0), so) {
                        l.backward(x, dy, dx, add);
                    }
                }
                Op::Learned { offset, len } => {
                    let dy = &grads[so];
                    dparams[*offset..*offset + *len].copy_from_slice(&dy.data);
                }
                Op::Filter(l) => {
                    if let (dy, Some(dx)) = pair(grads, slot_of(0), so) {
                        l.backward(dy, dx, add);
                    }
                }
                Op::Concat(l) => {
                    for which in 0..node.inputs.len() {
                        if let (dy, Some(dx)) = pair(grads, slot_of(which), so) {
                            l.backward_input(
                                which,
                                dy,
                                dx,
                                node.grad_modes[which] == GradMode::Add,
                            );
                        }
                    }
                }
            }
            if let (Some(p), Some(t0)) = (profile.as_mut(), t0) {
                p[ni][1] += t0.elapsed().as_secs_f64();
            }
        }
    }

    /// Bytes held by activations, gradients, caches and parameters: the bulk of a fit's memory.
    pub fn memory_bytes(&self) -> usize {
        self.memory_breakdown().iter().map(|p| p.1).sum()
    }

    /// [`Net::memory_bytes`] by what holds it: the activations grouped by the kind of node that
    /// writes them, the gradient buffers, the convolutions' caches and scratch, the parameters
    /// (with their gradients and the projection tables). `memory_bytes` is their sum.
    pub fn memory_breakdown(&self) -> Vec<(&'static str, usize)> {
        let t = std::mem::size_of::<T>();
        let mut acts = [0usize; 6];
        acts[0] = self.acts[0].data.len();
        for n in &self.nodes {
            let k = match &n.op {
                Op::Conv(_) => 1,
                Op::Norm(_) => 2,
                Op::Upsample(_) => 3,
                Op::Concat(_) => 4,
                _ => 5,
            };
            acts[k] += self.acts[n.output].data.len();
        }
        let grads: usize = self.grads.iter().map(|g| g.data.len()).sum();
        let caches: usize = self
            .nodes
            .iter()
            .map(|n| match &n.op {
                Op::Conv(c) => c.cache_len(),
                _ => 0,
            })
            .sum();
        let tables: usize = self
            .nodes
            .iter()
            .map(|n| match &n.op {
                Op::Filter(f) => f.table_len(),
                _ => 0,
            })
            .sum();
        let s = &self.scratch;
        let scratch = s.a.len() + s.b.len() + s.c.len() + s.partial.len();
        vec![
            ("network input", acts[0] * t),
            ("conv outputs", acts[1] * t),
            ("batch-norm (+LeakyReLU) outputs", acts[2] * t),
            ("upsample outputs", acts[3] * t),
            ("concat outputs", acts[4] * t),
            ("other activations", acts[5] * t),
            ("activation gradients", grads * t),
            ("conv caches", caches * t),
            ("conv scratch", scratch * t),
            (
                "parameters, gradients, tables",
                4 * self.params.len() * t + tables * (4 + t),
            ),
        ]
    }

    /// The weight matrices: parameter index, name, rows and columns as stored (σ_max is the
    /// same for the matrix and its transpose).
    fn weight_matrices(&self) -> Vec<(usize, usize, usize)> {
        self.info
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match p.kind {
                ParamKind::ConvWeight { cout, cin, k } => Some((i, k * k * cin, cout)),
                ParamKind::Dense { n_out, n_in } => Some((i, n_in, n_out)),
                _ => None,
            })
            .collect()
    }

    /// Shi et al.'s Lipschitz control: every convolution weight (as a `cout × cin·k·k` matrix)
    /// and dense weight is scaled by `1 / max(1, σ_max/λ)`, so that its largest singular value
    /// is at most `lambda`.
    pub fn lipschitz_project(&mut self, lambda: f64) {
        let mats = self.weight_matrices();
        if self.power_vectors.len() != self.info.len() {
            self.power_vectors = vec![Vec::new(); self.info.len()];
        }
        for (i, rows, cols) in mats {
            let p = &self.info[i];
            let w = &mut self.params[p.offset..p.offset + p.len];
            let sigma = super::lipschitz::spectral_norm(w, rows, cols, &mut self.power_vectors[i]);
            if sigma > lambda {
                let s = T::from_f64(lambda / sigma);
                w.iter_mut().for_each(|v| *v *= s);
            }
        }
    }

    /// The largest singular value of every weight matrix, by name.
    pub fn weight_spectral_norms(&self) -> Vec<(String, f64)> {
        self.weight_matrices()
            .into_iter()
            .map(|(i, rows, cols)| {
                let p = &self.info[i];
                let mut v = Vec::new();
                let w = &self.params[p.offset..p.offset + p.len];
                (
                    p.name.clone(),
                    super::lipschitz::spectral_norm(w, rows, cols, &mut v),
                )
            })
            .collect()
    }
}

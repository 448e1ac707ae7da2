//! The network: a static list of nodes over numbered activations.
//!
//! Forward walks the list; backward walks it in reverse. Every activation, gradient and cache is
//! allocated when the network is built for one image size, so a training step allocates nothing.
//! Where an activation feeds several nodes, the first gradient to arrive in backward order is
//! written and the others are added, which spares a zeroing pass.
//!
//! A batch norm whose input only it reads, and whose activation is invertible, runs in place: the
//! node before it writes straight into the norm's output buffer, and the norm's backward recovers
//! what it needs from its output (see [`BatchNorm::backward`]). The input keeps its shape but no
//! storage of its own. In the skip network that spares every convolution output and every
//! concatenation. Likewise an upsampling read only by a concatenation writes straight into the
//! concatenation's channels, and its backward reads its gradient from there.

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;

use rand_distr::{Distribution, Normal};

use super::conv::{Conv2d, ConvScratch};
use super::gemm::Precision;
use super::{
    BatchNorm, Concat, Dense, FilterPad, FixedFilter, Float, LeakyRelu, NormGrad, PadMode, Sigmoid,
    Tensor, Upsample, UpsampleMode,
};

/// Index of an activation. 0 is the network input.
pub type ActId = usize;

/// `(h, w, c)` of an activation.
pub(crate) type Shape = (usize, usize, usize);

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
pub(crate) enum GradMode {
    Skip,
    Write,
    Add,
}

#[derive(Debug)]
pub(crate) struct Node<T> {
    pub(crate) op: Op<T>,
    pub(crate) inputs: Vec<ActId>,
    pub(crate) output: ActId,
    pub(crate) grad_modes: Vec<GradMode>,
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

    /// How many node inputs read each activation.
    fn readers(&self) -> Vec<usize> {
        let mut readers = vec![0usize; self.shapes.len()];
        for node in &self.nodes {
            for &i in &node.inputs {
                readers[i] += 1;
            }
        }
        readers
    }

    /// Where each activation is stored: itself, or (for the input of an in-place batch norm) the
    /// norm's output.
    fn storage(&self, output: ActId) -> Vec<ActId> {
        let readers = self.readers();
        let mut owner: Vec<ActId> = (0..self.shapes.len()).collect();
        for node in &self.nodes {
            let Op::Norm(bn) = &node.op else { continue };
            let x = node.inputs[0];
            if x == 0 || x == output || readers[x] != 1 || !bn.invertible() {
                continue;
            }
            // The producer's backward must not read its own output, which the norm overwrites.
            let handover = matches!(
                self.nodes[x - 1].op,
                Op::Conv(_)
                    | Op::Concat(_)
                    | Op::Upsample(_)
                    | Op::LeakyRelu(_)
                    | Op::Filter(_)
                    | Op::Dense(_)
            );
            if handover {
                owner[x] = node.output;
            }
        }
        owner
    }

    /// Upsamplings whose only reader is a concatenation: `(concatenation output, channel
    /// offset)` for each such upsampling's output (at most one per concatenation).
    fn fused_upsamples(&self, output: ActId) -> Vec<Option<(ActId, usize)>> {
        let readers = self.readers();
        let mut fused = vec![None; self.shapes.len()];
        for node in &self.nodes {
            let Op::Concat(cat) = &node.op else { continue };
            let pick = node.inputs.iter().enumerate().find(|&(_, &i)| {
                i != 0
                    && i != output
                    && readers[i] == 1
                    && matches!(self.nodes[i - 1].op, Op::Upsample(_))
            });
            if let Some((which, &i)) = pick {
                fused[i] = Some((node.output, cat.offset(which)));
            }
        }
        fused
    }

    /// Whether `node` is a batch norm running in place, whose backward then also works in place.
    fn grad_in_place(node: &Node<T>, owner: &[ActId]) -> bool {
        matches!(node.op, Op::Norm(_))
            && owner[node.inputs[0]] == node.output
            && node.grad_modes[0] == GradMode::Write
    }

    /// Gradient modes and buffer slots as [`NetBuilder::build`] plans them.
    fn plan(&mut self, output: ActId, input_grad: bool) -> (Vec<usize>, Vec<usize>) {
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
        // backward. A buffer takes any shape that fits its capacity: the free buffer that fits
        // best, else the largest free one, grown.
        let mut grad_slot = vec![NO_SLOT; self.shapes.len()];
        let mut slot_cap: Vec<usize> = Vec::new();
        let mut free: Vec<usize> = Vec::new();
        let alloc =
            |(h, w, c): (usize, usize, usize), free: &mut Vec<usize>, cap: &mut Vec<usize>| {
                let n = h * w * c;
                let best = free
                    .iter()
                    .enumerate()
                    .filter(|&(_, &s)| cap[s] >= n)
                    .min_by_key(|&(_, &s)| cap[s])
                    .or_else(|| free.iter().enumerate().max_by_key(|&(_, &s)| cap[s]))
                    .map(|(pos, _)| pos);
                match best {
                    Some(pos) => {
                        let s = free.swap_remove(pos);
                        cap[s] = cap[s].max(n);
                        s
                    }
                    None => {
                        cap.push(n);
                        cap.len() - 1
                    }
                }
            };
        grad_slot[output] = alloc(self.shapes[output], &mut free, &mut slot_cap);
        let owner = self.storage(output);
        let fused = self.fused_upsamples(output);
        for node in self.nodes.iter().rev() {
            // An in-place batch norm also turns its output gradient into its input gradient in
            // place: the input's gradient takes over the output's buffer.
            if Self::grad_in_place(node, &owner) {
                grad_slot[node.inputs[0]] = grad_slot[node.output];
                continue;
            }
            // A fused upsampling has no gradient buffer: it reads the concatenation's, which
            // therefore lives on until the upsampling's backward (the next node back).
            for (&i, &m) in node.inputs.iter().zip(&node.grad_modes) {
                if m == GradMode::Write && fused[i].is_none() {
                    grad_slot[i] = alloc(self.shapes[i], &mut free, &mut slot_cap);
                }
            }
            let feeds_fused = node.inputs.iter().any(|&i| fused[i].is_some());
            match fused[node.output] {
                Some((cat, _)) => free.push(grad_slot[cat]),
                None if !feeds_fused => free.push(grad_slot[node.output]),
                None => {}
            }
        }
        (grad_slot, slot_cap)
    }

    /// Bytes [`NetBuilder::build`] would allocate for the network (activations, gradients,
    /// caches, scratch, parameters with their gradients and Adam's two moments), computed
    /// without allocating; `output` is the output activation.
    pub fn estimate_bytes(&mut self, output: ActId) -> usize {
        let (_, slots) = self.plan(output, false);
        let owner = self.storage(output);
        let fused = self.fused_upsamples(output);
        let numel = |&(h, w, c): &(usize, usize, usize)| h * w * c;
        let acts: usize = (0..self.shapes.len())
            .filter(|&a| owner[a] == a && fused[a].is_none())
            .map(|a| numel(&self.shapes[a]))
            .sum();
        let grads: usize = slots.iter().sum();
        let mut scratch = [0usize; 5];
        let mut tables = 0;
        for n in &self.nodes {
            match &n.op {
                Op::Conv(c) => {
                    for (s, v) in scratch.iter_mut().zip(c.scratch_sizes()) {
                        *s = (*s).max(v);
                    }
                }
                Op::Filter(f) => tables += f.table_len(),
                _ => {}
            }
        }
        let t = std::mem::size_of::<T>();
        (acts + grads + scratch.iter().sum::<usize>() + 4 * self.n_params) * t
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
        let (grad_slot, slot_cap) = self.plan(output, input_grad);
        let owner = self.storage(output);
        let fused = self.fused_upsamples(output);
        let acts: Vec<Tensor<T>> = self
            .shapes
            .iter()
            .enumerate()
            .map(|(a, &(h, w, c))| {
                if owner[a] == a && fused[a].is_none() {
                    Tensor::zeros(h, w, c)
                } else {
                    // Shape only: the data lives in the buffer of `owner[a]`, or in the channels
                    // of the concatenation it is fused into.
                    Tensor {
                        h,
                        w,
                        c,
                        data: Vec::new(),
                    }
                }
            })
            .collect();
        // Shaped before each use (see `shape_grad`).
        let grads = slot_cap.iter().map(|&n| Tensor::zeros(n, 1, 1)).collect();
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
            owner,
            fused,
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

/// Gives a gradient buffer the shape `(h, w, c)`, within the capacity it was planned with (so
/// without allocating).
fn shape_grad<T: Float>(g: &mut Tensor<T>, (h, w, c): (usize, usize, usize)) {
    let n = h * w * c;
    debug_assert!(n <= g.data.capacity(), "gradient buffer planned too small");
    g.data.resize(n, T::ZERO);
    (g.h, g.w, g.c) = (h, w, c);
}

/// A network built for one input size, with all its buffers.
pub struct Net<T> {
    nodes: Vec<Node<T>>,
    acts: Vec<Tensor<T>>,
    /// Gradient buffers, indexed through `grad_slot`.
    grads: Vec<Tensor<T>>,
    grad_slot: Vec<usize>,
    /// The activation whose buffer holds each activation's values (itself, or the output of the
    /// in-place batch norm that reads it).
    owner: Vec<ActId>,
    /// For an upsampling written straight into a concatenation: that concatenation's output and
    /// the channel offset.
    fused: Vec<Option<(ActId, usize)>>,
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
    /// The node list, for executors other than [`Net::forward`]/[`Net::backward`] (the GPU).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn nodes(&self) -> &[Node<T>] {
        &self.nodes
    }

    /// `(h, w, c)` of every activation, and whether backward computes its gradient (the output,
    /// and every activation some node propagates a gradient to). The CPU shares and aliases its
    /// gradient buffers (see the module notes); another executor plans its own.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn buffer_plan(&self) -> (Vec<Shape>, Vec<bool>) {
        let shapes = self.acts.iter().map(|a| (a.h, a.w, a.c)).collect();
        let mut needs_grad = vec![false; self.acts.len()];
        needs_grad[self.acts.len() - 1] = true;
        for node in &self.nodes {
            for (&i, &m) in node.inputs.iter().zip(&node.grad_modes) {
                needs_grad[i] |= m != GradMode::Skip;
            }
        }
        (shapes, needs_grad)
    }

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
        self.output_and_grad().1
    }

    /// Output and output gradient at once (for the loss).
    pub fn output_and_grad(&mut self) -> (&Tensor<T>, &mut Tensor<T>) {
        let s = self.grad_slot[self.acts.len() - 1];
        let y = self.acts.last().expect("output");
        let g = &mut self.grads[s];
        shape_grad(g, y.shape());
        (y, g)
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
            owner,
            fused,
            params,
            scratch,
            profile,
            ..
        } = self;
        for (ni, node) in nodes.iter_mut().enumerate() {
            let t0 = profile.as_ref().map(|_| std::time::Instant::now());
            // Inputs come before the output, and the output's storage is the output itself or a
            // later activation.
            let store = match fused[node.output] {
                Some((cat, _)) => owner[cat],
                None => owner[node.output],
            };
            let (before, after) = acts.split_at_mut(node.output);
            let y = &mut after[store - node.output];
            let x = &before[node.inputs[0]];
            match &mut node.op {
                Op::Conv(l) => l.forward(params, x, y, scratch),
                Op::Norm(l) => {
                    let in_place = owner[node.inputs[0]] == node.output;
                    l.forward(params, (!in_place).then_some(x), y)
                }
                Op::Upsample(l) => match fused[node.output] {
                    Some((_, offset)) => l.forward_into(x, &mut y.data, y.c, offset),
                    None => l.forward(x, y),
                },
                Op::Sigmoid(l) => l.forward(x, y),
                Op::Dense(l) => l.forward(params, x, y),
                Op::LeakyRelu(l) => l.forward(x, y),
                Op::Learned { offset, len } => {
                    y.data.copy_from_slice(&params[*offset..*offset + *len]);
                }
                Op::Filter(l) => l.forward(x, y),
                Op::Concat(l) => {
                    for (which, &i) in node.inputs.iter().enumerate() {
                        if fused[i].is_none() {
                            l.forward_input(which, &before[i], y);
                        }
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
            owner,
            fused,
            params,
            dparams,
            scratch,
            profile,
            ..
        } = self;
        for (ni, node) in nodes.iter_mut().enumerate().rev() {
            let t0 = profile.as_ref().map(|_| std::time::Instant::now());
            let fused_into = fused[node.output];
            let so = match fused_into {
                Some((cat, _)) => grad_slot[cat],
                None => grad_slot[node.output],
            };
            let y = &acts[node.output];
            let x = &acts[node.inputs[0]];
            // A gradient buffer takes the shape of the activation whose gradient is written first.
            for (&i, &m) in node.inputs.iter().zip(&node.grad_modes) {
                let s = grad_slot[i];
                if m == GradMode::Write && s != NO_SLOT && s != so {
                    shape_grad(&mut grads[s], acts[i].shape());
                }
            }
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
                    let in_place = owner[node.inputs[0]] == node.output;
                    let x = (!in_place).then_some(x);
                    if slot_of(0) == so {
                        l.backward(params, x, y, NormGrad::InPlace(&mut grads[so]), dparams);
                    } else {
                        let (dy, dx) = pair(grads, slot_of(0), so);
                        let grad = NormGrad::Separate {
                            dy,
                            dx,
                            accumulate: add,
                        };
                        l.backward(params, x, y, grad, dparams);
                    }
                }
                Op::Upsample(l) => {
                    if let (dy, Some(dx)) = pair(grads, slot_of(0), so) {
                        match fused_into {
                            Some((_, offset)) => l.backward_from(&dy.data, dy.c, offset, dx, add),
                            None => l.backward(dy, dx, add),
                        }
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
        let grads: usize = self.grads.iter().map(|g| g.data.capacity()).sum();
        let tables: usize = self
            .nodes
            .iter()
            .map(|n| match &n.op {
                Op::Filter(f) => f.table_len(),
                _ => 0,
            })
            .sum();
        let s = &self.scratch;
        let scratch = s.a.len() + s.b.len() + s.c.len() + s.partial.len() + s.wt.len();
        vec![
            ("network input", acts[0] * t),
            ("conv outputs", acts[1] * t),
            ("batch-norm (+LeakyReLU) outputs", acts[2] * t),
            ("upsample outputs", acts[3] * t),
            ("concat outputs", acts[4] * t),
            ("other activations", acts[5] * t),
            ("activation gradients", grads * t),
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

    /// The matrices Lipschitz control projects ([`Net::lipschitz_project`]), in its order:
    /// offset in the parameters, rows and columns as stored (row-major).
    pub fn lipschitz_matrices(&self) -> Vec<(usize, usize, usize)> {
        self.weight_matrices()
            .into_iter()
            .map(|(i, rows, cols)| (self.info[i].offset, rows, cols))
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

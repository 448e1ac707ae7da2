//! Host side of the GPU executor: the network's node list lowered to what the kernels need, and
//! the layout of every buffer in two device arenas (f32 and f64). Nothing here touches a GPU, so
//! it is tested on any machine.

use crate::engine::net::GradMode;
use crate::engine::{Net, Op, PadMode, UpsampleMode};

use super::GpuError;

/// Elements are aligned to 64 (256 bytes) within an arena.
/// Alignment of every buffer, in elements.
pub const ALIGN: usize = 64;

/// Threads per block of the elementwise kernels.
pub const BLOCK: u32 = 256;
/// Most blocks an elementwise launch uses (the kernels loop over the rest).
pub const MAX_BLOCKS: usize = 1 << 16;
/// Threads along y in the per-channel reduction blocks (`RED_Y` in the kernels).
pub const RED_Y: u32 = 8;
/// Most row blocks a per-channel reduction is split into.
pub const MAX_PARTS: usize = 256;
/// Threads of the data term's reduction (each writes one pair of partial sums).
pub const LOSS_THREADS: usize = 1024;

/// Blocks for an elementwise kernel over `n` elements.
pub fn grid_1d(n: usize) -> u32 {
    n.div_ceil(BLOCK as usize).clamp(1, MAX_BLOCKS) as u32
}

/// Rows per block and number of blocks of a per-channel reduction over `rows` rows.
pub fn reduction_parts(rows: usize) -> (usize, usize) {
    let per = rows.div_ceil(MAX_PARTS).max(64);
    (per, rows.div_ceil(per).max(1))
}

/// One layer, with the offsets its kernels need (parameter offsets are relative to the
/// parameter block).
#[derive(Debug, Clone, PartialEq)]
pub enum GpuOp {
    Conv {
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
        reflect: bool,
        h: usize,
        w: usize,
        ho: usize,
        wo: usize,
        weight: usize,
        bias: Option<usize>,
    },
    Norm {
        c: usize,
        rows: usize,
        gamma: usize,
        beta: usize,
        eps: f64,
        neg_slope: f32,
        /// Offset of this layer's `[mean][rstd][k1][k2][k3]` (5·c) in the f32 arena.
        stats: usize,
    },
    Upsample {
        h: usize,
        w: usize,
        c: usize,
        factor: usize,
        /// 0 nearest, 1 bilinear, 2 zero insertion (as the kernels).
        mode: i32,
    },
    Concat {
        channels: Vec<usize>,
    },
    Sigmoid,
    LeakyRelu {
        slope: f32,
    },
    Learned {
        offset: usize,
        len: usize,
    },
    /// A fully connected layer: `y = Wᵀ x + b` over the flattened tensors, `W` stored
    /// `[n_in][n_out]`.
    Dense {
        n_in: usize,
        n_out: usize,
        weight: usize,
        bias: Option<usize>,
    },
    /// A fixed depthwise filter as two gather tables over pixels (`[start, source, weight]`
    /// offsets in the f32 arena; see [`Layout::constants`]).
    Filter {
        c: usize,
        out_pixels: usize,
        in_pixels: usize,
        forward: [usize; 3],
        adjoint: [usize; 3],
    },
}

/// How a node's backward treats the gradient of one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GradUse {
    Skip,
    Write,
    Add,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GpuNode {
    pub op: GpuOp,
    pub inputs: Vec<usize>,
    pub output: usize,
    pub grads: Vec<GradUse>,
}

/// Offsets (in elements) of every buffer in the f32 and f64 arenas.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub n_params: usize,
    pub params: usize,
    pub dparams: usize,
    pub adam_m: usize,
    pub adam_v: usize,
    /// Offset and length of each activation.
    pub acts: Vec<(usize, usize)>,
    /// Offset of each activation's gradient buffer (shared slots, as the CPU plans them), or
    /// `None`.
    pub grads: Vec<Option<usize>>,
    /// im2col / column-gradient scratch, shared by all convolutions.
    pub col: usize,
    pub col_len: usize,
    /// A vector of ones (bias gradients as one matrix-vector product).
    pub ones: usize,
    pub ones_len: usize,
    /// Loss target, the diagonal forward operator (all ones unless set) and the output's moving
    /// average.
    pub target: usize,
    pub mask: usize,
    pub ema: usize,
    /// Per-sample weights of the data term (a fit's batch of pixels), over the observation.
    pub weights: usize,
    /// The network's fixed input, from which each step's perturbed input is made.
    pub z: usize,
    /// A fit's last good state (parameters, Adam's moments, the moving average), kept on the
    /// device for a divergence rollback.
    pub snap_params: usize,
    pub snap_m: usize,
    pub snap_v: usize,
    pub snap_ema: usize,
    /// Room for a forward operator's tables (see `GpuNet::set_operator`).
    pub extra: usize,
    pub extra_len: usize,
    pub len: usize,
    /// f64 arena: per-channel partial sums, the loss sums `[Σ d², Σ |d|, Σ w·d², Σ w·|d|]`,
    /// Adam's `[t, β1^t, β2^t]`, a fit's `[step, lr]`.
    pub part: usize,
    pub part_len: usize,
    pub loss: usize,
    pub adam_state: usize,
    /// A fit's `[step, lr]`, read by the fit's kernels so that its captured step replays.
    pub fit_state: usize,
    /// Lipschitz control's matrix table and factors (f32 arena), and power vectors (f64 arena).
    pub lip_table: usize,
    pub lip_factor: usize,
    pub lip_matrices: usize,
    pub lip_vecs: usize,
    pub lip_vecs_len: usize,
    pub len64: usize,
    /// Fixed f32 words uploaded with the network, at their offsets: fixed filters' gather
    /// tables (indices stored as the bits of f32 words).
    pub constants: Vec<(usize, Vec<f32>)>,
}

struct Bump(usize);

impl Bump {
    fn take(&mut self, n: usize) -> usize {
        let at = self.0;
        self.0 += n.div_ceil(ALIGN).max(1) * ALIGN;
        at
    }
}

/// Lowers `net` for the GPU: the node list and the buffer layout.
pub fn lower(net: &Net<f32>) -> Result<(Vec<GpuNode>, Layout), GpuError> {
    lower_with_extra(net, 0)
}

/// [`lower`], with `extra` more f32 words at the end of the arena.
pub fn lower_with_extra(net: &Net<f32>, extra: usize) -> Result<(Vec<GpuNode>, Layout), GpuError> {
    let (shapes, needs_grad) = net.buffer_plan();
    let n_params = net.num_params();
    let mut f32s = Bump(0);
    let params = f32s.take(n_params);
    let dparams = f32s.take(n_params);
    let adam_m = f32s.take(n_params);
    let adam_v = f32s.take(n_params);
    let acts: Vec<(usize, usize)> = shapes
        .iter()
        .map(|&(h, w, c)| (f32s.take(h * w * c), h * w * c))
        .collect();
    // One gradient buffer per activation that has a gradient: device memory is not what the
    // GPU is short of, and no buffer is then shared or aliased.
    let grads = shapes
        .iter()
        .zip(&needs_grad)
        .map(|(&(h, w, c), &needed)| needed.then(|| f32s.take(h * w * c)))
        .collect();

    let mut nodes = Vec::with_capacity(net.nodes().len());
    let mut constants = Vec::new();
    let (mut col_len, mut ones_len, mut part_len) = (0usize, 1usize, 0usize);
    for node in net.nodes() {
        let op = match &node.op {
            Op::Conv(l) => {
                let m = l.ho * l.wo;
                if !(l.k == 1 && l.stride == 1) {
                    col_len = col_len.max(m * l.k * l.k * l.cin);
                }
                ones_len = ones_len.max(m);
                GpuOp::Conv {
                    cin: l.cin,
                    cout: l.cout,
                    k: l.k,
                    stride: l.stride,
                    pad: (l.k - 1) / 2,
                    reflect: l.pad_mode == PadMode::Reflection,
                    h: l.h,
                    w: l.w,
                    ho: l.ho,
                    wo: l.wo,
                    weight: l.weight,
                    bias: l.bias,
                }
            }
            Op::Norm(l) => {
                let (_, parts) = reduction_parts(l.pixels);
                part_len = part_len.max(2 * parts * RED_Y as usize * l.c);
                GpuOp::Norm {
                    c: l.c,
                    rows: l.pixels,
                    gamma: l.gamma,
                    beta: l.beta,
                    eps: l.eps,
                    neg_slope: l.slope.unwrap_or(1.0) as f32,
                    stats: f32s.take(5 * l.c),
                }
            }
            Op::Upsample(l) => GpuOp::Upsample {
                h: l.h,
                w: l.w,
                c: l.c,
                factor: l.factor,
                mode: match l.mode {
                    UpsampleMode::Nearest => 0,
                    UpsampleMode::Bilinear => 1,
                    UpsampleMode::Zeros => 2,
                },
            },
            Op::Concat(l) => GpuOp::Concat {
                channels: l.channels.clone(),
            },
            Op::Sigmoid(_) => GpuOp::Sigmoid,
            Op::LeakyRelu(l) => GpuOp::LeakyRelu { slope: l.slope },
            Op::Learned { offset, len } => GpuOp::Learned {
                offset: *offset,
                len: *len,
            },
            Op::Dense(l) => GpuOp::Dense {
                n_in: l.n_in,
                n_out: l.n_out,
                weight: l.weight,
                bias: l.bias,
            },
            Op::Filter(f) => {
                let [fwd, adj] = f.tables();
                let mut place = |(start, src, w): (Vec<u32>, Vec<u32>, Vec<f32>)| {
                    let bits = |v: Vec<u32>| v.into_iter().map(f32::from_bits).collect::<Vec<_>>();
                    let at = [
                        f32s.take(start.len()),
                        f32s.take(src.len()),
                        f32s.take(w.len()),
                    ];
                    constants.push((at[0], bits(start)));
                    constants.push((at[1], bits(src)));
                    constants.push((at[2], w));
                    at
                };
                let (ho, wo, c) = f.output_shape();
                GpuOp::Filter {
                    c,
                    out_pixels: ho * wo,
                    in_pixels: f.h * f.w,
                    forward: place(fwd),
                    adjoint: place(adj),
                }
            }
        };
        let grads = node
            .grad_modes
            .iter()
            .map(|m| match m {
                GradMode::Skip => GradUse::Skip,
                GradMode::Write => GradUse::Write,
                GradMode::Add => GradUse::Add,
            })
            .collect();
        nodes.push(GpuNode {
            op,
            inputs: node.inputs.clone(),
            output: node.output,
            grads,
        });
    }
    let col = f32s.take(col_len);
    let ones = f32s.take(ones_len);
    let out_len = acts.last().map_or(0, |a| a.1);
    let target = f32s.take(out_len);
    let mask = f32s.take(out_len);
    let ema = f32s.take(out_len);
    let weights = f32s.take(out_len);
    let z = f32s.take(acts.first().map_or(0, |a| a.1));
    let snap_params = f32s.take(n_params);
    let snap_m = f32s.take(n_params);
    let snap_v = f32s.take(n_params);
    let snap_ema = f32s.take(out_len);
    let extra_at = f32s.take(extra);
    // Lipschitz control on the device: a table of the weight matrices, `[offset in the
    // parameters, rows, cols, v, u, w]` each (the last three offsets into the power vectors in
    // the f64 arena), and each matrix's scale factor.
    let mats = net.lipschitz_matrices();
    let lip_table = f32s.take(6 * mats.len());
    let lip_factor = f32s.take(mats.len());
    let mut vec_len = 0usize;
    let mut table = Vec::with_capacity(6 * mats.len());
    for &(offset, rows, cols) in &mats {
        let (v, u, w) = (vec_len, vec_len + cols, vec_len + cols + rows);
        vec_len += 2 * cols + rows;
        for x in [offset, rows, cols, v, u, w] {
            let x = u32::try_from(x).map_err(|_| {
                GpuError("a weight matrix is too large for the GPU's 32-bit tables".into())
            })?;
            table.push(f32::from_bits(x));
        }
    }
    if !mats.is_empty() {
        constants.push((lip_table, table));
    }
    let mut f64s = Bump(0);
    let lip_vecs = f64s.take(vec_len);
    let part_len = part_len.max(4 * LOSS_THREADS);
    let part = f64s.take(part_len);
    // Neighbours: a fit's check reads both with one copy.
    let loss = f64s.take(4 + 3);
    let adam_state = loss + 4;
    // [step, lr, seed key high, seed key low, active] (see the kernels).
    let fit_state = f64s.take(5);
    Ok((
        nodes,
        Layout {
            n_params,
            params,
            dparams,
            adam_m,
            adam_v,
            acts,
            grads,
            col,
            col_len,
            ones,
            ones_len,
            target,
            mask,
            ema,
            weights,
            z,
            snap_params,
            snap_m,
            snap_v,
            snap_ema,
            extra: extra_at,
            extra_len: extra,
            len: f32s.0,
            part,
            part_len,
            loss,
            adam_state,
            fit_state,
            lip_table,
            lip_factor,
            lip_matrices: mats.len(),
            lip_vecs,
            lip_vecs_len: vec_len,
            len64: f64s.0,
            constants,
        },
    ))
}

//! A network on the GPU: the forward pass over the lowered node list.

use super::*;
use crate::cuda::GpuError;
use crate::cuda::plan::{GpuOp, RED_Y, reduction_parts};

impl GpuNet {
    pub(super) fn queue_forward(&mut self) -> Result<(), GpuError> {
        let params = self.layout.params;
        for node in &self.nodes {
            let x = self.act(node.inputs[0]);
            let y = self.act(node.output);
            let ny = self.layout.acts[node.output].1;
            match &node.op {
                &GpuOp::Conv {
                    cin,
                    cout,
                    k,
                    stride,
                    pad,
                    reflect,
                    h,
                    w,
                    ho,
                    wo,
                    weight,
                    bias,
                } => {
                    let m = ho * wo;
                    let kdim = k * k * cin;
                    let a = if k == 1 && stride == 1 {
                        x
                    } else {
                        let col = self.layout.col;
                        self.launch_n(
                            K::Im2col,
                            m * kdim,
                            &[
                                self.p(x),
                                self.p(col),
                                int(h),
                                int(w),
                                int(cin),
                                int(ho),
                                int(wo),
                                int(k),
                                int(stride),
                                int(pad),
                                A::I(reflect as i32),
                            ],
                        )?;
                        col
                    };
                    // Row-major y[m][cout] = a[m][kdim] · W[kdim][cout], i.e. column-major
                    // yᵀ = Wᵀ · aᵀ.
                    self.sgemm(
                        false,
                        false,
                        cout,
                        m,
                        kdim,
                        params + weight,
                        cout,
                        a,
                        kdim,
                        0.0,
                        y,
                        cout,
                    )?;
                    if let Some(b) = bias {
                        self.launch_n(
                            K::AddBias,
                            m * cout,
                            &[self.p(y), self.p(params + b), long(m * cout), int(cout)],
                        )?;
                    }
                }
                &GpuOp::Norm {
                    c,
                    rows,
                    gamma,
                    beta,
                    eps,
                    neg_slope,
                    stats,
                } => {
                    let (per, parts) = reduction_parts(rows);
                    let part = self.layout.part;
                    self.launch(
                        K::BnPartial,
                        (c.div_ceil(32) as u32, parts as u32, 1),
                        (32, RED_Y, 1),
                        &[self.p(x), self.p64(part), int(rows), int(c), int(per)],
                    )?;
                    self.launch(
                        K::BnFinalize,
                        (c.div_ceil(128) as u32, 1, 1),
                        (128, 1, 1),
                        &[
                            self.p64(part),
                            int(parts * RED_Y as usize),
                            int(rows),
                            int(c),
                            self.p(params + gamma),
                            self.p(params + beta),
                            self.p(stats),
                            A::D(eps),
                        ],
                    )?;
                    self.launch_n(
                        K::BnApply,
                        ny,
                        &[
                            self.p(x),
                            self.p(y),
                            self.p(stats),
                            long(ny),
                            int(c),
                            A::F(neg_slope),
                        ],
                    )?;
                }
                &GpuOp::Upsample {
                    h,
                    w,
                    c,
                    factor,
                    mode,
                } => self.launch_n(
                    K::UpsampleFwd,
                    ny,
                    &[
                        self.p(x),
                        self.p(y),
                        int(h),
                        int(w),
                        int(c),
                        int(factor),
                        A::I(mode),
                    ],
                )?,
                GpuOp::Concat { channels } => {
                    let ctot: usize = channels.iter().sum();
                    let pixels = ny / ctot.max(1);
                    let mut off = 0;
                    for (&i, &ci) in node.inputs.iter().zip(channels) {
                        self.launch_n(
                            K::ConcatFwd,
                            pixels * ci,
                            &[
                                self.p(self.act(i)),
                                self.p(y),
                                long(pixels),
                                int(ci),
                                int(ctot),
                                int(off),
                            ],
                        )?;
                        off += ci;
                    }
                }
                GpuOp::Sigmoid => {
                    self.launch_n(K::SigmoidFwd, ny, &[self.p(x), self.p(y), long(ny)])?
                }
                &GpuOp::LeakyRelu { slope } => self.launch_n(
                    K::LreluFwd,
                    ny,
                    &[self.p(x), self.p(y), long(ny), A::F(slope)],
                )?,
                &GpuOp::Learned { offset, len } => self.launch_n(
                    K::Copy,
                    len,
                    &[self.p(params + offset), self.p(y), long(len), A::I(0)],
                )?,
                &GpuOp::Dense {
                    n_in,
                    n_out,
                    weight,
                    bias,
                } => {
                    if let Some(b) = bias {
                        self.copy(params + b, y, n_out)?;
                    }
                    // W[n_in][n_out] row-major is column-major A (n_out × n_in): y = A·x (+ b).
                    self.sgemm(
                        false,
                        false,
                        n_out,
                        1,
                        n_in,
                        params + weight,
                        n_out,
                        x,
                        n_in,
                        bias.is_some() as i32 as f32,
                        y,
                        n_out,
                    )?;
                }
                &GpuOp::Filter {
                    c,
                    out_pixels,
                    forward,
                    ..
                } => self.gather(forward, x, y, out_pixels, c, 0)?,
            }
        }
        Ok(())
    }

    /// `dst[p][ch] (+)= Σ w·src[q][ch]` over the taps of a gather table (`[start, source,
    /// weight]` offsets).
    pub(super) fn gather(
        &self,
        table: [usize; 3],
        src: usize,
        dst: usize,
        pixels: usize,
        c: usize,
        add: i32,
    ) -> Result<(), GpuError> {
        self.launch_n(
            K::PixGather,
            pixels * c,
            &[
                self.p(table[0]),
                self.p(table[1]),
                self.p(table[2]),
                self.p(src),
                self.p(dst),
                long(pixels),
                int(c),
                A::I(add),
            ],
        )
    }
}

//! A network on the GPU: the backward pass over the lowered node list.

use super::*;
use crate::cuda::GpuError;
use crate::cuda::plan::{GpuOp, GradUse, RED_Y, reduction_parts};

impl GpuNet {
    /// Backpropagates the output gradient into the parameter gradients (queued).
    pub fn backward(&mut self) -> Result<(), GpuError> {
        self.collective(Self::queue_backward)
    }

    pub(super) fn queue_backward(&mut self) -> Result<(), GpuError> {
        let l = &self.layout;
        let (params, dparams) = (l.params, l.dparams);
        for node in self.nodes.iter().rev() {
            let x = self.act(node.inputs[0]);
            let y = self.act(node.output);
            let ny = self.layout.acts[node.output].1;
            let nx = self.layout.acts[node.inputs[0]].1;
            let dy = self.layout.grads[node.output]
                .ok_or_else(|| GpuError("a node's output has no gradient buffer".into()))?;
            // The input gradient's buffer and whether to add to it, or None to skip it.
            let dx_of = |j: usize| -> Option<(usize, i32)> {
                match node.grads[j] {
                    GradUse::Skip => None,
                    g => self.layout.grads[node.inputs[j]].map(|o| (o, (g == GradUse::Add) as i32)),
                }
            };
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
                    let direct = k == 1 && stride == 1;
                    let col = self.layout.col;
                    let a = if direct {
                        x
                    } else {
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
                    // dW[kdim][cout] = aᵀ · dy: column-major dWᵀ = dyᵀ · a.
                    self.sgemm(
                        false,
                        true,
                        cout,
                        kdim,
                        m,
                        dy,
                        cout,
                        a,
                        kdim,
                        0.0,
                        dparams + weight,
                        cout,
                    )?;
                    if let Some(b) = bias {
                        // db[cout] = Σ_m dy[m][cout]: column-major dyᵀ (cout × m) times ones.
                        self.dev.sgemv(
                            cout,
                            m,
                            self.ptr(dy),
                            cout,
                            self.ptr(self.layout.ones),
                            self.ptr(dparams + b),
                            self.batch(),
                        )?;
                    }
                    if let Some((dx, add)) = dx_of(0) {
                        // d(a)[m][kdim] = dy · Wᵀ: column-major d(a)ᵀ = W · dyᵀ.
                        if direct {
                            self.sgemm(
                                true,
                                false,
                                kdim,
                                m,
                                cout,
                                params + weight,
                                cout,
                                dy,
                                cout,
                                add as f32,
                                dx,
                                kdim,
                            )?;
                        } else {
                            self.sgemm(
                                true,
                                false,
                                kdim,
                                m,
                                cout,
                                params + weight,
                                cout,
                                dy,
                                cout,
                                0.0,
                                col,
                                kdim,
                            )?;
                            self.launch_n(
                                K::Col2im,
                                nx,
                                &[
                                    self.p(col),
                                    self.p(dx),
                                    int(h),
                                    int(w),
                                    int(cin),
                                    int(ho),
                                    int(wo),
                                    int(k),
                                    int(stride),
                                    int(pad),
                                    A::I(reflect as i32),
                                    A::I(add),
                                ],
                            )?;
                        }
                    }
                }
                &GpuOp::Norm {
                    c,
                    rows,
                    gamma,
                    beta,
                    neg_slope,
                    stats,
                    ..
                } => {
                    let (per, parts) = reduction_parts(rows);
                    let part = self.layout.part;
                    self.launch(
                        K::BnBwdPartial,
                        (c.div_ceil(32) as u32, parts as u32, 1),
                        (32, RED_Y, 1),
                        &[
                            self.p(x),
                            self.p(y),
                            self.p(dy),
                            self.p(stats),
                            self.p64(part),
                            int(rows),
                            int(c),
                            int(per),
                            A::F(neg_slope),
                        ],
                    )?;
                    self.launch(
                        K::BnBwdFinalize,
                        (c.div_ceil(128) as u32, 1, 1),
                        (128, 1, 1),
                        &[
                            self.p64(part),
                            int(parts * RED_Y as usize),
                            int(rows),
                            int(c),
                            self.p(params + gamma),
                            self.p(stats),
                            self.p(dparams + gamma),
                            self.p(dparams + beta),
                        ],
                    )?;
                    if let Some((dx, add)) = dx_of(0) {
                        self.launch_n(
                            K::BnBwdApply,
                            nx,
                            &[
                                self.p(x),
                                self.p(y),
                                self.p(dy),
                                self.p(stats),
                                self.p(dx),
                                long(nx),
                                int(c),
                                A::F(neg_slope),
                                A::I(add),
                            ],
                        )?;
                    }
                }
                &GpuOp::Upsample {
                    h,
                    w,
                    c,
                    factor,
                    mode,
                } => {
                    if let Some((dx, add)) = dx_of(0) {
                        self.launch_n(
                            K::UpsampleBwd,
                            nx,
                            &[
                                self.p(dy),
                                self.p(dx),
                                int(h),
                                int(w),
                                int(c),
                                int(factor),
                                A::I(mode),
                                A::I(add),
                            ],
                        )?;
                    }
                }
                GpuOp::Concat { channels } => {
                    let ctot: usize = channels.iter().sum();
                    let pixels = ny / ctot.max(1);
                    let mut off = 0;
                    for (j, &ci) in channels.iter().enumerate() {
                        if let Some((dx, add)) = dx_of(j) {
                            self.launch_n(
                                K::ConcatBwd,
                                pixels * ci,
                                &[
                                    self.p(dy),
                                    self.p(dx),
                                    long(pixels),
                                    int(ci),
                                    int(ctot),
                                    int(off),
                                    A::I(add),
                                ],
                            )?;
                        }
                        off += ci;
                    }
                }
                GpuOp::Sigmoid => {
                    if let Some((dx, add)) = dx_of(0) {
                        self.launch_n(
                            K::SigmoidBwd,
                            nx,
                            &[self.p(y), self.p(dy), self.p(dx), long(nx), A::I(add)],
                        )?;
                    }
                }
                &GpuOp::LeakyRelu { slope } => {
                    if let Some((dx, add)) = dx_of(0) {
                        self.launch_n(
                            K::LreluBwd,
                            nx,
                            &[
                                self.p(x),
                                self.p(dy),
                                self.p(dx),
                                long(nx),
                                A::F(slope),
                                A::I(add),
                            ],
                        )?;
                    }
                }
                &GpuOp::Learned { offset, len } => self.launch_n(
                    K::Copy,
                    len,
                    &[self.p(dy), self.p(dparams + offset), long(len), A::I(0)],
                )?,
                &GpuOp::Dense {
                    n_in,
                    n_out,
                    weight,
                    bias,
                } => {
                    if let Some(b) = bias {
                        self.copy(dy, dparams + b, n_out)?;
                    }
                    // dW[i][o] = x[i]·dy[o]: column-major (n_out × n_in) dy · xᵀ.
                    self.sgemm(
                        false,
                        false,
                        n_out,
                        n_in,
                        1,
                        dy,
                        n_out,
                        x,
                        1,
                        0.0,
                        dparams + weight,
                        n_out,
                    )?;
                    if let Some((dx, add)) = dx_of(0) {
                        // dx = Aᵀ·dy.
                        self.sgemm(
                            true,
                            false,
                            n_in,
                            1,
                            n_out,
                            params + weight,
                            n_out,
                            dy,
                            n_out,
                            add as f32,
                            dx,
                            n_in,
                        )?;
                    }
                }
                &GpuOp::Filter {
                    c,
                    in_pixels,
                    adjoint,
                    ..
                } => {
                    if let Some((dx, add)) = dx_of(0) {
                        self.gather(adjoint, dy, dx, in_pixels, c, add)?;
                    }
                }
            }
        }
        Ok(())
    }
}

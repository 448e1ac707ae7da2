//! BatchNorm2d with batch statistics (training mode), optionally fused with LeakyReLU.
//!
//! Batch statistics over one image are statistics over its pixels: biased variance, eps 1e-5,
//! affine gamma/beta, as PyTorch in training mode. The fused activation saves a pass over the
//! tensor each way; its backward reads the sign from the output, which equals the sign of the
//! pre-activation because the slope is positive.

use rayon::prelude::*;

use super::par::{channel_reduce, for_each_chunk, reduce_chunks, rows_per_task};
use super::{Float, Tensor};

/// Where the output gradient of [`BatchNorm::backward`] comes from and its input gradient goes.
pub enum NormGrad<'a, T> {
    /// `dy` is read; `dx`, when given, is written (or added to, with `accumulate`).
    Separate {
        dy: &'a Tensor<T>,
        dx: Option<&'a mut Tensor<T>>,
        accumulate: bool,
    },
    /// The buffer holds `dy` on entry and `dx` on return.
    InPlace(&'a mut Tensor<T>),
}

/// A batch-norm layer (and optional LeakyReLU) over a fixed number of pixels.
#[derive(Debug)]
pub struct BatchNorm<T> {
    pub c: usize,
    pub pixels: usize,
    /// Offsets of gamma and beta in the flat parameter buffer.
    pub gamma: usize,
    pub beta: usize,
    pub eps: f64,
    /// Negative slope of a fused LeakyReLU, if any.
    pub slope: Option<f64>,
    mean: Vec<T>,
    rstd: Vec<T>,
    /// Per-channel coefficients of the elementwise passes (forward: scale, shift; backward:
    /// the three terms of dx).
    k1: Vec<T>,
    k2: Vec<T>,
    k3: Vec<T>,
    sums: Vec<T>,
    partial: Vec<T>,
}

/// Splits `n` elements of whole pixels into parallel tasks: (elements per task).
fn task_len(pixels: usize, c: usize) -> usize {
    rows_per_task(pixels, c) * c
}

impl<T: Float> BatchNorm<T> {
    pub fn new(pixels: usize, c: usize, gamma: usize, beta: usize, slope: Option<f64>) -> Self {
        BatchNorm {
            c,
            pixels,
            gamma,
            beta,
            eps: 1e-5,
            slope,
            mean: vec![T::ZERO; c],
            rstd: vec![T::ZERO; c],
            k1: vec![T::ZERO; c],
            k2: vec![T::ZERO; c],
            k3: vec![T::ZERO; c],
            sums: vec![T::ZERO; 2 * c],
            partial: vec![T::ZERO; reduce_chunks(pixels) * 2 * c],
        }
    }

    /// Per-channel mean and reciprocal standard deviation of the last forward.
    pub fn stats(&self) -> (&[T], &[T]) {
        (&self.mean, &self.rstd)
    }

    /// Slope of the activation for negative inputs (1: none).
    fn neg_slope(&self) -> T {
        T::from_f64(self.slope.unwrap_or(1.0))
    }

    /// `y = act(batchnorm(x))`; `x` is `None` when the input already sits in `y` (in place).
    pub fn forward(&mut self, params: &[T], x: Option<&Tensor<T>>, y: &mut Tensor<T>) {
        let c = self.c;
        let n = T::from_usize(self.pixels);
        {
            let xd: &[T] = x.map_or(&y.data, |x| &x.data);
            channel_reduce(
                self.pixels,
                c,
                &mut self.partial,
                &mut self.mean,
                |r, acc| {
                    for px in xd[r.start * c..r.end * c].chunks_exact(c) {
                        for (a, &v) in acc.iter_mut().zip(px) {
                            *a += v;
                        }
                    }
                },
            );
            self.mean.iter_mut().for_each(|m| *m = *m / n);
            let mean = &self.mean;
            channel_reduce(
                self.pixels,
                c,
                &mut self.partial,
                &mut self.rstd,
                |r, acc| {
                    for px in xd[r.start * c..r.end * c].chunks_exact(c) {
                        for ((a, &v), &m) in acc.iter_mut().zip(px).zip(mean) {
                            let d = v - m;
                            *a += d * d;
                        }
                    }
                },
            );
        }
        let eps = T::from_f64(self.eps);
        self.rstd
            .iter_mut()
            .for_each(|v| *v = T::ONE / (*v / n + eps).sqrt());

        // y = act((x - mean) * rstd * gamma + beta) = act(x * k1 + k2).
        let gamma = &params[self.gamma..self.gamma + c];
        let beta = &params[self.beta..self.beta + c];
        for ch in 0..c {
            self.k1[ch] = self.rstd[ch] * gamma[ch];
            self.k2[ch] = beta[ch] - self.mean[ch] * self.k1[ch];
        }
        let (k1, k2, s) = (&self.k1, &self.k2, self.neg_slope());
        let act = |xv: T, a: T, b: T| {
            let v = xv * a + b;
            if v < T::ZERO { v * s } else { v }
        };
        let per = task_len(self.pixels, c);
        match x {
            Some(x) => {
                let body = |(yc, xc): (&mut [T], &[T])| {
                    for (ypx, xpx) in yc.chunks_exact_mut(c).zip(xc.chunks_exact(c)) {
                        for (((yv, &xv), &a), &b) in ypx.iter_mut().zip(xpx).zip(k1).zip(k2) {
                            *yv = act(xv, a, b);
                        }
                    }
                };
                if per >= x.data.len() {
                    body((&mut y.data, &x.data));
                } else {
                    y.data
                        .par_chunks_mut(per)
                        .zip(x.data.par_chunks(per))
                        .for_each(body);
                }
            }
            None => for_each_chunk(&mut y.data, per, |(_, yc)| {
                for ypx in yc.chunks_exact_mut(c) {
                    for ((yv, &a), &b) in ypx.iter_mut().zip(k1).zip(k2) {
                        *yv = act(*yv, a, b);
                    }
                }
            }),
        }
    }

    /// Whether [`BatchNorm::backward`] can work from the output alone (without the input): the
    /// activation must be invertible, i.e. no activation or a non-zero slope.
    pub fn invertible(&self) -> bool {
        self.slope.is_none_or(|s| s != 0.0)
    }

    /// Writes the gamma/beta gradients and the input gradient (see [`NormGrad`]).
    ///
    /// With `x`, the normalised input is `(x − mean)·rstd`. Without (the input's buffer was
    /// handed to the output, see [`BatchNorm::invertible`]), it is recovered from the output by
    /// inverting the activation and the affine map: `x̂ = (act⁻¹(y) − beta) / gamma`, as in-place
    /// activated batch norm does. The two agree to rounding while gamma is not tiny; a gamma of
    /// exactly zero makes that channel's `x̂`, and so its gamma gradient, read as zero.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &mut self,
        params: &[T],
        x: Option<&Tensor<T>>,
        y: &Tensor<T>,
        grad: NormGrad<'_, T>,
        dparams: &mut [T],
    ) {
        match x {
            Some(x) => self.backward_from::<false>(params, &x.data, y, grad, dparams),
            None => {
                assert!(
                    self.invertible(),
                    "a batch norm with ReLU needs its input for backward"
                );
                self.backward_from::<true>(params, &y.data, y, grad, dparams)
            }
        }
    }

    /// `FROM_Y`: `src` is the output and x̂ comes from inverting it; else `src` is the input.
    fn backward_from<const FROM_Y: bool>(
        &mut self,
        params: &[T],
        src: &[T],
        y: &Tensor<T>,
        grad: NormGrad<'_, T>,
        dparams: &mut [T],
    ) {
        let c = self.c;
        let s = self.neg_slope();
        let inv_s = T::ONE / s;
        let gamma = &params[self.gamma..self.gamma + c];
        let beta = &params[self.beta..self.beta + c];
        // x̂ = src·p + q per channel (p, q kept in k2, k3 for the reduction).
        for ch in 0..c {
            if FROM_Y {
                let g = gamma[ch];
                let inv_g = if g == T::ZERO { T::ZERO } else { T::ONE / g };
                self.k2[ch] = inv_g;
                self.k3[ch] = -beta[ch] * inv_g;
            } else {
                self.k2[ch] = self.rstd[ch];
                self.k3[ch] = -self.mean[ch] * self.rstd[ch];
            }
        }
        let xhat = |v: T, p: T, q: T| {
            let u = if FROM_Y && v <= T::ZERO { v * inv_s } else { v };
            u * p + q
        };
        let yd = &y.data;
        let (dyd, dx, accumulate, in_place): (&[T], _, _, _) = match grad {
            NormGrad::Separate { dy, dx, accumulate } => (&dy.data, dx, accumulate, false),
            NormGrad::InPlace(g) => (&[], Some(g), false, true),
        };
        // dz, the gradient through the activation, takes its sign from the output.
        {
            // In place, the reductions read the output gradient from the buffer itself.
            let dyd: &[T] = match (&dx, in_place) {
                (Some(g), true) => &g.data,
                _ => dyd,
            };
            let (p, q) = (&self.k2, &self.k3);
            channel_reduce(
                self.pixels,
                2 * c,
                &mut self.partial,
                &mut self.sums,
                |r, acc| {
                    let (sum_dz, sum_dz_xhat) = acc.split_at_mut(c);
                    let range = r.start * c..r.end * c;
                    for ((xp, yp), gp) in src[range.clone()]
                        .chunks_exact(c)
                        .zip(yd[range.clone()].chunks_exact(c))
                        .zip(dyd[range].chunks_exact(c))
                    {
                        for ((((((a, b), &xv), &yv), &g), &pp), &qq) in sum_dz
                            .iter_mut()
                            .zip(sum_dz_xhat.iter_mut())
                            .zip(xp)
                            .zip(yp)
                            .zip(gp)
                            .zip(p)
                            .zip(q)
                        {
                            let dz = if yv > T::ZERO { g } else { g * s };
                            *a += dz;
                            *b += dz * xhat(xv, pp, qq);
                        }
                    }
                },
            );
        }
        // dbeta = Σ dz, dgamma = Σ dz·x̂.
        for ch in 0..c {
            dparams[self.beta + ch] = self.sums[ch];
            dparams[self.gamma + ch] = self.sums[c + ch];
        }
        let Some(dx) = dx else { return };

        // dx = gamma·rstd·(dz − dbeta/N − x̂·dgamma/N) = k1·dz + m1·x̂ + m0.
        let inv_n = T::ONE / T::from_usize(self.pixels);
        // Six per-channel arrays move together: indexing reads more plainly than a zip of six.
        #[allow(clippy::needless_range_loop)]
        for ch in 0..c {
            let a = gamma[ch] * self.rstd[ch];
            self.k1[ch] = a;
            // Fold x̂ = src·p + q into the coefficients: dx = k1·dz + (m1·p)·src + (m1·q + m0).
            let m1 = -a * self.sums[c + ch] * inv_n;
            let m0 = -a * self.sums[ch] * inv_n;
            let (p, q) = (self.k2[ch], self.k3[ch]);
            self.k2[ch] = m1 * p;
            self.k3[ch] = m1 * q + m0;
        }
        let (k1, k2, k3) = (&self.k1, &self.k2, &self.k3);
        let per = task_len(self.pixels, c);
        // In place, the output gradient is read from the element about to be overwritten; `gsrc`
        // is then only a stand-in of the right length.
        let gsrc = if in_place { yd } else { dyd };
        let body = |(ti, dxc): (usize, &mut [T])| {
            let base = ti * per;
            let range = base..base + dxc.len();
            for (((dp, xp), yp), gp) in dxc
                .chunks_exact_mut(c)
                .zip(src[range.clone()].chunks_exact(c))
                .zip(yd[range.clone()].chunks_exact(c))
                .zip(gsrc[range].chunks_exact(c))
            {
                for ((((((d, &xv), &yv), &g), &a), &b), &e) in dp
                    .iter_mut()
                    .zip(xp)
                    .zip(yp)
                    .zip(gp)
                    .zip(k1)
                    .zip(k2)
                    .zip(k3)
                {
                    let g = if in_place { *d } else { g };
                    let dz = if yv > T::ZERO { g } else { g * s };
                    let u = if FROM_Y && xv <= T::ZERO {
                        xv * inv_s
                    } else {
                        xv
                    };
                    let v = a * dz + b * u + e;
                    *d = if accumulate { *d + v } else { v };
                }
            }
        };
        if per >= dx.data.len() {
            body((0, &mut dx.data));
        } else {
            dx.data.par_chunks_mut(per).enumerate().for_each(body);
        }
    }
}

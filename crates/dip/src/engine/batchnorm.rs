//! BatchNorm2d with batch statistics (training mode), optionally fused with LeakyReLU.
//!
//! Batch statistics over one image are statistics over its pixels: biased variance, eps 1e-5,
//! affine gamma/beta, as PyTorch in training mode. The fused activation saves a pass over the
//! tensor each way; its backward reads the sign from the output, which equals the sign of the
//! pre-activation because the slope is positive.

use rayon::prelude::*;

use super::par::{channel_reduce, reduce_chunks, rows_per_task};
use super::{Float, Tensor};

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

    pub fn forward(&mut self, params: &[T], x: &Tensor<T>, y: &mut Tensor<T>) {
        let c = self.c;
        let n = T::from_usize(self.pixels);
        let xd = &x.data;
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
        let body = |(yc, xc): (&mut [T], &[T])| {
            for (ypx, xpx) in yc.chunks_exact_mut(c).zip(xc.chunks_exact(c)) {
                for (((yv, &xv), &a), &b) in ypx.iter_mut().zip(xpx).zip(k1).zip(k2) {
                    let v = xv * a + b;
                    *yv = if v < T::ZERO { v * s } else { v };
                }
            }
        };
        let per = task_len(self.pixels, c);
        if per >= xd.len() {
            body((&mut y.data, xd));
        } else {
            y.data
                .par_chunks_mut(per)
                .zip(xd.par_chunks(per))
                .for_each(body);
        }
    }

    /// Writes the gamma/beta gradients and writes (or adds to) `dx`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &mut self,
        params: &[T],
        x: &Tensor<T>,
        y: &Tensor<T>,
        dy: &Tensor<T>,
        dx: Option<&mut Tensor<T>>,
        accumulate: bool,
        dparams: &mut [T],
    ) {
        let c = self.c;
        let s = self.neg_slope();
        let (xd, yd, dyd) = (&x.data, &y.data, &dy.data);
        // dz, the gradient through the activation, takes its sign from the output.
        let mean = &self.mean;
        channel_reduce(
            self.pixels,
            2 * c,
            &mut self.partial,
            &mut self.sums,
            |r, acc| {
                let (sum_dz, sum_dz_xc) = acc.split_at_mut(c);
                let range = r.start * c..r.end * c;
                for ((xp, yp), gp) in xd[range.clone()]
                    .chunks_exact(c)
                    .zip(yd[range.clone()].chunks_exact(c))
                    .zip(dyd[range].chunks_exact(c))
                {
                    for (((((a, b), &xv), &yv), &g), &m) in sum_dz
                        .iter_mut()
                        .zip(sum_dz_xc.iter_mut())
                        .zip(xp)
                        .zip(yp)
                        .zip(gp)
                        .zip(mean)
                    {
                        let dz = if yv > T::ZERO { g } else { g * s };
                        *a += dz;
                        *b += dz * (xv - m);
                    }
                }
            },
        );
        // dbeta = Σ dz, dgamma = Σ dz·xhat = rstd · Σ dz·(x - mean).
        for ch in 0..c {
            let dgamma = self.sums[c + ch] * self.rstd[ch];
            dparams[self.beta + ch] = self.sums[ch];
            dparams[self.gamma + ch] = dgamma;
        }
        let Some(dx) = dx else { return };

        // dx = gamma·rstd·(dz − dbeta/N − xhat·dgamma/N) = k1·dz + k2·(x − mean) + k3.
        let gamma = &params[self.gamma..self.gamma + c];
        let inv_n = T::ONE / T::from_usize(self.pixels);
        for ch in 0..c {
            let a = gamma[ch] * self.rstd[ch];
            self.k1[ch] = a;
            self.k2[ch] = -a * self.rstd[ch] * dparams[self.gamma + ch] * inv_n;
            self.k3[ch] = -a * self.sums[ch] * inv_n;
        }
        let (k1, k2, k3) = (&self.k1, &self.k2, &self.k3);
        let per = task_len(self.pixels, c);
        let body = |(ti, dxc): (usize, &mut [T])| {
            let base = ti * per;
            let range = base..base + dxc.len();
            for (((dp, xp), yp), gp) in dxc
                .chunks_exact_mut(c)
                .zip(xd[range.clone()].chunks_exact(c))
                .zip(yd[range.clone()].chunks_exact(c))
                .zip(dyd[range].chunks_exact(c))
            {
                for (((((((d, &xv), &yv), &g), &m), &a), &b), &e) in dp
                    .iter_mut()
                    .zip(xp)
                    .zip(yp)
                    .zip(gp)
                    .zip(mean)
                    .zip(k1)
                    .zip(k2)
                    .zip(k3)
                {
                    let dz = if yv > T::ZERO { g } else { g * s };
                    let v = a * dz + b * (xv - m) + e;
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

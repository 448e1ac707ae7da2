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
    sums: Vec<T>,
    partial: Vec<T>,
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
            sums: vec![T::ZERO; 2 * c],
            partial: vec![T::ZERO; reduce_chunks(pixels) * 2 * c],
        }
    }

    /// Per-channel mean and reciprocal standard deviation of the last forward.
    pub fn stats(&self) -> (&[T], &[T]) {
        (&self.mean, &self.rstd)
    }

    pub fn forward(&mut self, params: &[T], x: &Tensor<T>, y: &mut Tensor<T>) {
        let c = self.c;
        let n = T::from_usize(self.pixels);
        let xd = &x.data;
        channel_reduce(self.pixels, c, &mut self.partial, &mut self.mean, |r, acc| {
            for px in xd[r.start * c..r.end * c].chunks_exact(c) {
                for (a, &v) in acc.iter_mut().zip(px) {
                    *a += v;
                }
            }
        });
        self.mean.iter_mut().for_each(|m| *m = *m / n);
        let mean = &self.mean;
        channel_reduce(self.pixels, c, &mut self.partial, &mut self.rstd, |r, acc| {
            for px in xd[r.start * c..r.end * c].chunks_exact(c) {
                for ((a, &v), &m) in acc.iter_mut().zip(px).zip(mean) {
                    let d = v - m;
                    *a += d * d;
                }
            }
        });
        let eps = T::from_f64(self.eps);
        self.rstd.iter_mut().for_each(|v| *v = T::ONE / (*v / n + eps).sqrt());

        // y = (x - mean) * (rstd * gamma) + beta, then the activation.
        let gamma = &params[self.gamma..self.gamma + c];
        let beta = &params[self.beta..self.beta + c];
        let (mean, rstd) = (&self.mean, &self.rstd);
        let slope = self.slope.map(T::from_f64);
        let body = |(yc, xc): (&mut [T], &[T])| {
            for (ypx, xpx) in yc.chunks_exact_mut(c).zip(xc.chunks_exact(c)) {
                for ch in 0..c {
                    let v = (xpx[ch] - mean[ch]) * rstd[ch] * gamma[ch] + beta[ch];
                    ypx[ch] = match slope {
                        Some(s) if v < T::ZERO => v * s,
                        _ => v,
                    };
                }
            }
        };
        let per = rows_per_task(self.pixels, c) * c;
        if per >= xd.len() {
            body((&mut y.data, xd));
        } else {
            y.data.par_chunks_mut(per).zip(xd.par_chunks(per)).for_each(body);
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
        let slope = self.slope.map(T::from_f64);
        let (mean, rstd) = (&self.mean, &self.rstd);
        let (xd, yd, dyd) = (&x.data, &y.data, &dy.data);
        // The gradient through the activation, from the sign of the output.
        let dz = move |i: usize| -> T {
            match slope {
                Some(s) if yd[i] <= T::ZERO => dyd[i] * s,
                _ => dyd[i],
            }
        };
        channel_reduce(self.pixels, 2 * c, &mut self.partial, &mut self.sums, |r, acc| {
            for p in r {
                for ch in 0..c {
                    let i = p * c + ch;
                    let g = dz(i);
                    acc[ch] += g;
                    acc[c + ch] += g * (xd[i] - mean[ch]) * rstd[ch];
                }
            }
        });
        let (dbeta, dgamma) = self.sums.split_at(c);
        dparams[self.beta..self.beta + c].copy_from_slice(dbeta);
        dparams[self.gamma..self.gamma + c].copy_from_slice(dgamma);
        let Some(dx) = dx else { return };

        // dx = gamma * rstd * (dz - mean(dz) - xhat * mean(dz * xhat))
        let gamma = &params[self.gamma..self.gamma + c];
        let inv_n = T::ONE / T::from_usize(self.pixels);
        let per = rows_per_task(self.pixels, c) * c;
        let body = |(ti, dxc): (usize, &mut [T])| {
            let base = ti * per;
            for (pi, dpx) in dxc.chunks_exact_mut(c).enumerate() {
                for ch in 0..c {
                    let i = base + pi * c + ch;
                    let xhat = (xd[i] - mean[ch]) * rstd[ch];
                    let v = gamma[ch] * rstd[ch] * (dz(i) - dbeta[ch] * inv_n - xhat * dgamma[ch] * inv_n);
                    if accumulate {
                        dpx[ch] += v;
                    } else {
                        dpx[ch] = v;
                    }
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

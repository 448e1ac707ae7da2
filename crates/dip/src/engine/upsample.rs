//! ×2 upsampling, nearest or bilinear, identical to PyTorch `nn.Upsample(scale_factor=2)` with
//! `align_corners=False`.
//!
//! Both modes are separable maps with at most two taps per output index; each axis is a table of
//! taps, and the backward uses the transposed table so that it gathers (and parallelises) too.

use serde::{Deserialize, Serialize};

use super::par::{for_each_chunk, rows_per_task};
use super::{Float, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpsampleMode {
    Nearest,
    Bilinear,
    /// Zero insertion: input pixel (i, j) goes to (f·i, f·j), every other pixel is 0. Followed
    /// by a convolution, it makes a transposed convolution.
    Zeros,
}

#[derive(Debug, Clone)]
struct AxisTaps<T> {
    /// Two (source index, weight) taps per output index.
    taps: Vec<[(usize, T); 2]>,
    /// For each source index, the (output index, weight) pairs that read it.
    adj_start: Vec<usize>,
    adj: Vec<(usize, T)>,
}

impl<T: Float> AxisTaps<T> {
    fn new(mode: UpsampleMode, n: usize, factor: usize) -> Self {
        let out = n * factor;
        let taps: Vec<[(usize, T); 2]> = (0..out)
            .map(|o| match mode {
                UpsampleMode::Nearest => [(o / factor, T::ONE), (o / factor, T::ZERO)],
                UpsampleMode::Zeros => {
                    let w = if o % factor == 0 { T::ONE } else { T::ZERO };
                    [(o / factor, w), (o / factor, T::ZERO)]
                }
                UpsampleMode::Bilinear => {
                    // PyTorch: src = max(0, (dst + 0.5) / scale - 0.5), second tap clamped.
                    let src = ((o as f64 + 0.5) / factor as f64 - 0.5).max(0.0);
                    let i0 = src.floor() as usize;
                    let i1 = if i0 + 1 < n { i0 + 1 } else { i0 };
                    let l1 = src - i0 as f64;
                    [(i0, T::from_f64(1.0 - l1)), (i1, T::from_f64(l1))]
                }
            })
            .collect();
        let mut lists: Vec<Vec<(usize, T)>> = vec![Vec::new(); n];
        for (o, t) in taps.iter().enumerate() {
            for &(s, wgt) in t {
                if wgt != T::ZERO {
                    lists[s].push((o, wgt));
                }
            }
        }
        let mut adj_start = vec![0];
        let mut adj = Vec::new();
        for l in lists {
            adj.extend(l);
            adj_start.push(adj.len());
        }
        AxisTaps {
            taps,
            adj_start,
            adj,
        }
    }

    fn readers(&self, s: usize) -> &[(usize, T)] {
        &self.adj[self.adj_start[s]..self.adj_start[s + 1]]
    }
}

/// ×`factor` upsampling of an `h × w × c` tensor.
#[derive(Debug)]
pub struct Upsample<T> {
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub factor: usize,
    pub mode: UpsampleMode,
    rows: AxisTaps<T>,
    cols: AxisTaps<T>,
}

impl<T: Float> Upsample<T> {
    pub fn new(h: usize, w: usize, c: usize, factor: usize, mode: UpsampleMode) -> Self {
        Upsample {
            h,
            w,
            c,
            factor,
            mode,
            rows: AxisTaps::new(mode, h, factor),
            cols: AxisTaps::new(mode, w, factor),
        }
    }

    pub fn forward(&self, x: &Tensor<T>, y: &mut Tensor<T>) {
        self.forward_into(x, &mut y.data, self.c, 0);
    }

    /// Writes the output into channels `offset..offset + c` of `dst`, a tensor of the output's
    /// size with `channels` channels (the output of a concatenation, say).
    pub fn forward_into(&self, x: &Tensor<T>, dst: &mut [T], channels: usize, offset: usize) {
        let (c, w, wo) = (self.c, self.w, self.w * self.factor);
        assert!(offset + c <= channels);
        let row_len = wo * channels;
        let ho = self.h * self.factor;
        let per = rows_per_task(ho, row_len);
        let xd = &x.data;
        let body = |(ti, chunk): (usize, &mut [T])| {
            for (ri, yrow) in chunk.chunks_mut(row_len).enumerate() {
                let [(r0, a0), (r1, a1)] = self.rows.taps[ti * per + ri];
                let (x0, x1) = (
                    &xd[r0 * w * c..(r0 + 1) * w * c],
                    &xd[r1 * w * c..(r1 + 1) * w * c],
                );
                for (ox, ypx) in yrow.chunks_exact_mut(channels).enumerate() {
                    let ypx = &mut ypx[offset..offset + c];
                    let [(c0, b0), (c1, b1)] = self.cols.taps[ox];
                    let (p00, p01) = (&x0[c0 * c..c0 * c + c], &x0[c1 * c..c1 * c + c]);
                    let (p10, p11) = (&x1[c0 * c..c0 * c + c], &x1[c1 * c..c1 * c + c]);
                    for ch in 0..c {
                        ypx[ch] =
                            a0 * (b0 * p00[ch] + b1 * p01[ch]) + a1 * (b0 * p10[ch] + b1 * p11[ch]);
                    }
                }
            }
        };
        for_each_chunk(dst, per * row_len, body);
    }

    /// Writes (or adds to) `dx`.
    pub fn backward(&self, dy: &Tensor<T>, dx: &mut Tensor<T>, accumulate: bool) {
        self.backward_from(&dy.data, self.c, 0, dx, accumulate);
    }

    /// [`Upsample::backward`] with the output gradient in channels `offset..offset + c` of `dy`,
    /// a tensor with `channels` channels.
    pub fn backward_from(
        &self,
        dy: &[T],
        channels: usize,
        offset: usize,
        dx: &mut Tensor<T>,
        accumulate: bool,
    ) {
        let (c, w, wo) = (self.c, self.w, self.w * self.factor);
        assert!(offset + c <= channels);
        let row_len = w * c;
        let per = rows_per_task(self.h, row_len);
        let dyd = dy;
        let yrow_len = wo * channels;
        let body = |(ti, chunk): (usize, &mut [T])| {
            for (ri, drow) in chunk.chunks_mut(row_len).enumerate() {
                let iy = ti * per + ri;
                if !accumulate {
                    drow.fill(T::ZERO);
                }
                for &(oy, a) in self.rows.readers(iy) {
                    let yrow = &dyd[oy * yrow_len..(oy + 1) * yrow_len];
                    for (ix, dpx) in drow.chunks_exact_mut(c).enumerate() {
                        for &(ox, b) in self.cols.readers(ix) {
                            let wgt = a * b;
                            let g = &yrow[ox * channels + offset..ox * channels + offset + c];
                            for (d, &g) in dpx.iter_mut().zip(g) {
                                *d += wgt * g;
                            }
                        }
                    }
                }
            }
        };
        for_each_chunk(&mut dx.data, per * row_len, body);
    }
}

//! A fixed depthwise filter: the same `k × k` kernel on every channel, after an optional
//! zero-insertion upsampling by `f` (then it is a stride-`f` transposed convolution with a fixed
//! kernel, as Shi et al.'s Gaussian upsampling). Nothing is learned.
//!
//! The map is linear and sparse: each output pixel reads a few input pixels. Both directions
//! are precomputed as gather tables (the backward uses the transposed table), so forward and
//! backward parallelise over pixels and vectorise over the contiguous channels.

use serde::{Deserialize, Serialize};

use super::par::{for_each_chunk, rows_per_task};
use super::{Float, Tensor};

/// How a fixed filter extends the (upsampled) image beyond its border.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilterPad {
    Zero,
    /// Periodic: the image wraps around (circular convolution).
    Circular,
    /// Mirror without repeating the edge.
    Reflection,
}

/// A sparse linear map between pixel grids, as compressed rows of (source pixel, weight).
#[derive(Debug)]
struct Table<T> {
    start: Vec<usize>,
    taps: Vec<(u32, T)>,
}

impl<T: Float> Table<T> {
    fn from_lists(lists: Vec<Vec<(u32, T)>>) -> Self {
        let mut start = Vec::with_capacity(lists.len() + 1);
        start.push(0);
        let mut taps = Vec::new();
        for l in lists {
            taps.extend(l);
            start.push(taps.len());
        }
        Table { start, taps }
    }

    fn row(&self, i: usize) -> &[(u32, T)] {
        &self.taps[self.start[i]..self.start[i + 1]]
    }

    /// `dst[p] = (acc ? dst[p] : 0) + Σ w · src[q]` over the taps of row `p`, per channel.
    fn apply(&self, src: &[T], dst: &mut [T], c: usize, width: usize, accumulate: bool) {
        let rows = dst.len() / (c * width).max(1);
        let per = rows_per_task(rows, width * c);
        for_each_chunk(dst, per * width * c, |(ti, chunk)| {
            for (pi, px) in chunk.chunks_exact_mut(c).enumerate() {
                let p = ti * per * width + pi;
                if !accumulate {
                    px.fill(T::ZERO);
                }
                for &(q, w) in self.row(p) {
                    let s = &src[q as usize * c..q as usize * c + c];
                    for (d, &v) in px.iter_mut().zip(s) {
                        *d += w * v;
                    }
                }
            }
        });
    }

    fn len(&self) -> usize {
        self.taps.len()
    }
}

/// Source index along an axis of length `n` for a position `i` that may lie outside.
fn wrap(i: isize, n: usize, pad: FilterPad) -> Option<usize> {
    let n = n as isize;
    if (0..n).contains(&i) {
        return Some(i as usize);
    }
    match pad {
        FilterPad::Zero => None,
        FilterPad::Circular => Some(i.rem_euclid(n) as usize),
        FilterPad::Reflection => {
            if n == 1 {
                return Some(0);
            }
            let period = 2 * (n - 1);
            let m = i.rem_euclid(period);
            Some(if m < n { m } else { period - m } as usize)
        }
    }
}

/// The fixed depthwise filter for one input size.
#[derive(Debug)]
pub struct FixedFilter<T> {
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub ksize: usize,
    pub upsample: usize,
    pub pad: FilterPad,
    forward: Table<T>,
    adjoint: Table<T>,
}

impl<T: Float> FixedFilter<T> {
    /// `kernel` is `ksize × ksize`, row-major, correlated with the zero-inserted image (output
    /// `h·f × w·f`).
    pub fn new(
        h: usize,
        w: usize,
        c: usize,
        kernel: &[f64],
        ksize: usize,
        upsample: usize,
        pad: FilterPad,
    ) -> Self {
        assert!(ksize % 2 == 1, "fixed filter kernels have an odd size");
        assert_eq!(kernel.len(), ksize * ksize, "kernel size mismatch");
        let f = upsample.max(1);
        let (ho, wo) = (h * f, w * f);
        let r = (ksize / 2) as isize;
        let mut fwd: Vec<Vec<(u32, T)>> = Vec::with_capacity(ho * wo);
        let mut adj: Vec<Vec<(u32, T)>> = vec![Vec::new(); h * w];
        for oy in 0..ho {
            for ox in 0..wo {
                let mut taps: Vec<(u32, f64)> = Vec::new();
                for ky in 0..ksize {
                    let Some(uy) = wrap(oy as isize + ky as isize - r, ho, pad) else {
                        continue;
                    };
                    if uy % f != 0 {
                        continue;
                    }
                    for kx in 0..ksize {
                        let Some(ux) = wrap(ox as isize + kx as isize - r, wo, pad) else {
                            continue;
                        };
                        if ux % f != 0 {
                            continue;
                        }
                        let q = ((uy / f) * w + ux / f) as u32;
                        let wgt = kernel[ky * ksize + kx];
                        // Padding can bring one source in twice: merge.
                        match taps.iter_mut().find(|t| t.0 == q) {
                            Some(t) => t.1 += wgt,
                            None => taps.push((q, wgt)),
                        }
                    }
                }
                let o = (oy * wo + ox) as u32;
                for &(q, wgt) in &taps {
                    adj[q as usize].push((o, T::from_f64(wgt)));
                }
                fwd.push(taps.into_iter().map(|(q, w)| (q, T::from_f64(w))).collect());
            }
        }
        FixedFilter {
            h,
            w,
            c,
            ksize,
            upsample: f,
            pad,
            forward: Table::from_lists(fwd),
            adjoint: Table::from_lists(adj),
        }
    }

    /// Output shape `(h·f, w·f, c)`.
    pub fn output_shape(&self) -> (usize, usize, usize) {
        (self.h * self.upsample, self.w * self.upsample, self.c)
    }

    pub fn forward(&self, x: &Tensor<T>, y: &mut Tensor<T>) {
        self.forward
            .apply(&x.data, &mut y.data, self.c, self.w * self.upsample, false);
    }

    /// Writes (or adds to) `dx` the adjoint applied to `dy`.
    pub fn backward(&self, dy: &Tensor<T>, dx: &mut Tensor<T>, accumulate: bool) {
        self.adjoint
            .apply(&dy.data, &mut dx.data, self.c, self.w, accumulate);
    }

    /// The forward and the adjoint gather tables as compressed rows over pixels: row starts,
    /// source pixels, weights (for backends that apply them themselves).
    pub fn tables(&self) -> [(Vec<u32>, Vec<u32>, Vec<f32>); 2] {
        let export = |t: &Table<T>| {
            (
                t.start.iter().map(|&s| s as u32).collect(),
                t.taps.iter().map(|&(q, _)| q).collect(),
                t.taps.iter().map(|&(_, w)| w.to_f64() as f32).collect(),
            )
        };
        [export(&self.forward), export(&self.adjoint)]
    }

    /// Elements held by the tables (for memory accounting, in units of one tap).
    pub fn table_len(&self) -> usize {
        self.forward.len() + self.adjoint.len()
    }
}

//! One-dimensional linear maps along an image axis, and separable 2-D application of two of them.
//!
//! Every resampling and separable filtering operator in this module is a pair of [`AxisMap`]s:
//! a sparse matrix stored row by row (output index → list of `(input index, weight)`), with the
//! boundary rule already folded into the indices. Forward applies the rows; the adjoint applies
//! exactly the transpose of the same table, so the two agree to rounding by construction.

/// How an index outside `0..n` is brought back inside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Boundary {
    /// Clamp to the nearest edge sample (`aaa|abcd|ddd`), PyTorch's `ReplicationPad`.
    Replicate,
    /// Mirror with the edge sample repeated (`cba|abcd|dcb`), MATLAB `imresize`'s rule.
    Symmetric,
}

impl Boundary {
    pub(crate) fn index(self, i: isize, n: usize) -> usize {
        debug_assert!(n > 0);
        let n_i = n as isize;
        match self {
            Boundary::Replicate => i.clamp(0, n_i - 1) as usize,
            Boundary::Symmetric => {
                let m = i.rem_euclid(2 * n_i);
                if m < n_i {
                    m as usize
                } else {
                    (2 * n_i - 1 - m) as usize
                }
            }
        }
    }
}

/// A sparse `n_out × n_in` matrix, stored by output index.
#[derive(Clone, Debug)]
pub(crate) struct AxisMap {
    pub(crate) n_in: usize,
    pub(crate) n_out: usize,
    /// Entries of output `o` are `start[o]..start[o + 1]`.
    start: Vec<usize>,
    idx: Vec<usize>,
    w: Vec<f32>,
}

impl AxisMap {
    /// Builds the map from the taps of each output, given as `(unbounded input index, weight)`.
    ///
    /// Taps are mapped inside by `boundary`, taps landing on the same input are merged, and zero
    /// weights are dropped. If `normalise`, each output's weights are scaled to sum to 1 (in f64).
    pub(crate) fn build(
        n_in: usize,
        n_out: usize,
        boundary: Boundary,
        normalise: bool,
        mut taps: impl FnMut(usize, &mut Vec<(isize, f64)>),
    ) -> Self {
        let mut start = Vec::with_capacity(n_out + 1);
        let mut idx = Vec::new();
        let mut w = Vec::new();
        let mut raw = Vec::new();
        let mut merged: Vec<(usize, f64)> = Vec::new();
        start.push(0);
        for o in 0..n_out {
            raw.clear();
            taps(o, &mut raw);
            merged.clear();
            for &(i, wt) in &raw {
                let j = boundary.index(i, n_in);
                match merged.iter_mut().find(|(k, _)| *k == j) {
                    Some(e) => e.1 += wt,
                    None => merged.push((j, wt)),
                }
            }
            let sum: f64 = merged.iter().map(|e| e.1).sum();
            let scale = if normalise && sum != 0.0 {
                1.0 / sum
            } else {
                1.0
            };
            for &(j, wt) in &merged {
                if wt != 0.0 {
                    idx.push(j);
                    w.push((wt * scale) as f32);
                }
            }
            start.push(idx.len());
        }
        AxisMap {
            n_in,
            n_out,
            start,
            idx,
            w,
        }
    }

    pub(crate) fn entries(&self, o: usize) -> impl Iterator<Item = (usize, f32)> + '_ {
        let r = self.start[o]..self.start[o + 1];
        self.idx[r.clone()]
            .iter()
            .copied()
            .zip(self.w[r].iter().copied())
    }
}

/// `y += a * x`, elementwise.
#[inline]
fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// Separable 2-D application: `h` along rows (x), then `v` along columns (y), on HWC data with
/// `c` channels. `x` is `v.n_in × h.n_in × c`, `tmp` at least `v.n_in × h.n_out × c`, `y` is
/// `v.n_out × h.n_out × c`. Everything written is overwritten; nothing is accumulated.
pub(crate) fn separable_forward(
    h: &AxisMap,
    v: &AxisMap,
    c: usize,
    x: &[f32],
    tmp: &mut [f32],
    y: &mut [f32],
) {
    let row_in = h.n_in * c;
    let row_out = h.n_out * c;
    let tmp = &mut tmp[..v.n_in * row_out];
    for (xrow, trow) in x.chunks_exact(row_in).zip(tmp.chunks_exact_mut(row_out)) {
        for (ox, tpx) in trow.chunks_exact_mut(c).enumerate() {
            tpx.fill(0.0);
            for (i, wt) in h.entries(ox) {
                axpy(wt, &xrow[i * c..(i + 1) * c], tpx);
            }
        }
    }
    for (oy, yrow) in y.chunks_exact_mut(row_out).enumerate() {
        yrow.fill(0.0);
        for (i, wt) in v.entries(oy) {
            axpy(wt, &tmp[i * row_out..(i + 1) * row_out], yrow);
        }
    }
}

/// The exact transpose of [`separable_forward`] with the same maps: `gy` has the forward's output
/// shape, `gx` its input shape, `tmp` the same size as there.
pub(crate) fn separable_adjoint(
    h: &AxisMap,
    v: &AxisMap,
    c: usize,
    gy: &[f32],
    tmp: &mut [f32],
    gx: &mut [f32],
) {
    let row_in = h.n_in * c;
    let row_out = h.n_out * c;
    let tmp = &mut tmp[..v.n_in * row_out];
    tmp.fill(0.0);
    for (oy, gyrow) in gy.chunks_exact(row_out).enumerate() {
        for (i, wt) in v.entries(oy) {
            axpy(wt, gyrow, &mut tmp[i * row_out..(i + 1) * row_out]);
        }
    }
    for (trow, gxrow) in tmp.chunks_exact(row_out).zip(gx.chunks_exact_mut(row_in)) {
        gxrow.fill(0.0);
        for (ox, tpx) in trow.chunks_exact(c).enumerate() {
            for (i, wt) in h.entries(ox) {
                axpy(wt, tpx, &mut gxrow[i * c..(i + 1) * c]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundary_rules() {
        let rep: Vec<usize> = (-3..7).map(|i| Boundary::Replicate.index(i, 4)).collect();
        assert_eq!(rep, [0, 0, 0, 0, 1, 2, 3, 3, 3, 3]);
        let sym: Vec<usize> = (-5..10).map(|i| Boundary::Symmetric.index(i, 4)).collect();
        assert_eq!(sym, [3, 3, 2, 1, 0, 0, 1, 2, 3, 3, 2, 1, 0, 0, 1]);
        assert!((-4..5).all(|i| Boundary::Symmetric.index(i, 1) == 0));
    }

    #[test]
    fn taps_on_one_sample_are_merged() {
        let m = AxisMap::build(3, 1, Boundary::Replicate, true, |_, t| {
            t.extend([(-2, 1.0), (-1, 1.0), (0, 1.0), (1, 1.0)]);
        });
        let e: Vec<(usize, f32)> = m.entries(0).collect();
        assert_eq!(e, [(0, 0.75), (1, 0.25)]);
    }
}

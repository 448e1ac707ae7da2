//! An operator as an explicit sparse matrix over flattened HWC samples, for backends that apply
//! it generically (the GPU): row `o` of `A` lists the inputs and weights of output sample `o`.

use super::axis::AxisMap;

/// A sparse `n_out × n_in` matrix stored by rows (CSR), with 32-bit indices.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseRows {
    pub n_in: usize,
    pub n_out: usize,
    /// Entries of row `o` are `start[o]..start[o + 1]`.
    pub start: Vec<u32>,
    pub idx: Vec<u32>,
    pub w: Vec<f32>,
}

impl SparseRows {
    /// Builds the matrix row by row; `row(o, out)` appends `(input, weight)` pairs of row `o`
    /// (an input may appear more than once: its weights add). `None` if it has 2³² entries or
    /// more, or an index does not fit in 32 bits.
    pub fn build(
        n_in: usize,
        n_out: usize,
        mut row: impl FnMut(usize, &mut Vec<(usize, f32)>),
    ) -> Option<Self> {
        if n_in > u32::MAX as usize {
            return None;
        }
        let mut start = Vec::with_capacity(n_out + 1);
        let (mut idx, mut w) = (Vec::new(), Vec::new());
        let mut buf = Vec::new();
        start.push(0u32);
        for o in 0..n_out {
            buf.clear();
            row(o, &mut buf);
            for &(i, wt) in &buf {
                debug_assert!(i < n_in);
                idx.push(i as u32);
                w.push(wt);
            }
            start.push(u32::try_from(idx.len()).ok()?);
        }
        Some(SparseRows {
            n_in,
            n_out,
            start,
            idx,
            w,
        })
    }

    /// The diagonal matrix of `d`.
    pub fn diagonal(d: &[f32]) -> Option<Self> {
        SparseRows::build(d.len(), d.len(), |o, out| out.push((o, d[o])))
    }

    /// `next · self`: `self` applied first, then `next` (its input space is this output's).
    /// Each row lists every input once, in increasing order, its weights summed in f64. `None`
    /// if the shapes do not chain or the product is too large for 32-bit tables.
    pub fn then(&self, next: &SparseRows) -> Option<Self> {
        if next.n_in != self.n_out {
            return None;
        }
        let mut acc: Vec<(usize, f64)> = Vec::new();
        SparseRows::build(self.n_in, next.n_out, |o, out| {
            acc.clear();
            for k in next.start[o] as usize..next.start[o + 1] as usize {
                let (j, wj) = (next.idx[k] as usize, next.w[k] as f64);
                for m in self.start[j] as usize..self.start[j + 1] as usize {
                    acc.push((self.idx[m] as usize, wj * self.w[m] as f64));
                }
            }
            acc.sort_by_key(|e| e.0);
            let mut e = 0;
            while e < acc.len() {
                let (i, mut sum) = acc[e];
                e += 1;
                while e < acc.len() && acc[e].0 == i {
                    sum += acc[e].1;
                    e += 1;
                }
                out.push((i, sum as f32));
            }
        })
    }

    /// Entries in the matrix.
    pub fn nnz(&self) -> usize {
        self.idx.len()
    }

    /// `y = A x`, each row summed in the order of its entries.
    pub fn apply(&self, x: &[f32], y: &mut [f32]) {
        assert_eq!(x.len(), self.n_in, "sparse operator input");
        assert_eq!(y.len(), self.n_out, "sparse operator output");
        for (o, yo) in y.iter_mut().enumerate() {
            let r = self.start[o] as usize..self.start[o + 1] as usize;
            *yo = self.idx[r.clone()]
                .iter()
                .zip(&self.w[r])
                .map(|(&i, &wt)| wt * x[i as usize])
                .sum();
        }
    }

    /// `Aᵀ`, its rows in increasing order of `A`'s rows.
    pub fn transpose(&self) -> SparseRows {
        let mut count = vec![0u32; self.n_in + 1];
        for &i in &self.idx {
            count[i as usize + 1] += 1;
        }
        for k in 0..self.n_in {
            count[k + 1] += count[k];
        }
        let start = count.clone();
        let mut fill = count;
        let mut idx = vec![0u32; self.nnz()];
        let mut w = vec![0.0f32; self.nnz()];
        for o in 0..self.n_out {
            for k in self.start[o] as usize..self.start[o + 1] as usize {
                let i = self.idx[k] as usize;
                let at = fill[i] as usize;
                idx[at] = o as u32;
                w[at] = self.w[k];
                fill[i] += 1;
            }
        }
        SparseRows {
            n_in: self.n_out,
            n_out: self.n_in,
            start,
            idx,
            w,
        }
    }

    /// The same matrix with input `i` renumbered `map(i)` in an input space of `n_in` samples
    /// (e.g. the image placed inside a padded grid).
    pub fn with_inputs(mut self, n_in: usize, map: impl Fn(usize) -> usize) -> Option<Self> {
        if n_in > u32::MAX as usize {
            return None;
        }
        for i in &mut self.idx {
            let j = map(*i as usize);
            debug_assert!(j < n_in);
            *i = j as u32;
        }
        self.n_in = n_in;
        Some(self)
    }
}

/// The matrix of separable application (`h` along x, then `v` along y) on `c` channels, as
/// [`super::axis::separable_forward`] applies it.
pub(crate) fn separable_rows(h: &AxisMap, v: &AxisMap, c: usize) -> Option<SparseRows> {
    let (w_in, w_out) = (h.n_in, h.n_out);
    SparseRows::build(v.n_in * w_in * c, v.n_out * w_out * c, |o, out| {
        let (ch, px) = (o % c, o / c);
        let (oy, ox) = (px / w_out, px % w_out);
        for (iy, wy) in v.entries(oy) {
            for (ix, wx) in h.entries(ox) {
                out.push(((iy * w_in + ix) * c + ch, wy * wx));
            }
        }
    })
}

//! Spatial padding: index maps for reflection and zero padding, forward and adjoint.

use serde::{Deserialize, Serialize};

use super::Float;
use super::par::{for_each_chunk, rows_per_task};

/// How a convolution pads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PadMode {
    Zero,
    /// Mirror without repeating the edge (PyTorch `ReflectionPad2d`).
    Reflection,
}

/// Source index of padded position `i` (0-based in the padded axis) for an axis of length `n`
/// padded by `p` on each side, or `None` for a zero.
pub(crate) fn source_index(mode: PadMode, i: usize, n: usize, p: usize) -> Option<usize> {
    let t = i as isize - p as isize;
    let n = n as isize;
    match mode {
        PadMode::Zero => (0..n).contains(&t).then_some(t as usize),
        PadMode::Reflection => {
            let s = if t < 0 {
                -t
            } else if t >= n {
                2 * (n - 1) - t
            } else {
                t
            };
            debug_assert!(
                (0..n).contains(&s),
                "reflection padding {p} too large for size {n}"
            );
            Some(s as usize)
        }
    }
}

/// The map from a padded axis back to the source axis, and its adjoint.
#[derive(Debug, Clone, Default)]
pub(crate) struct AxisMap {
    /// For each padded index, its source index (or none: zero padding).
    pub src: Vec<Option<u32>>,
    /// For each source index, the padded indices that read it (CSR).
    pub adj_start: Vec<u32>,
    pub adj: Vec<u32>,
}

impl AxisMap {
    pub fn new(mode: PadMode, n: usize, p: usize) -> Self {
        let src: Vec<Option<u32>> = (0..n + 2 * p)
            .map(|i| source_index(mode, i, n, p).map(|s| s as u32))
            .collect();
        let mut lists = vec![Vec::new(); n];
        for (i, s) in src.iter().enumerate() {
            if let Some(s) = s {
                lists[*s as usize].push(i as u32);
            }
        }
        let mut adj_start = vec![0u32];
        let mut adj = Vec::new();
        for l in lists {
            adj.extend(l);
            adj_start.push(adj.len() as u32);
        }
        AxisMap {
            src,
            adj_start,
            adj,
        }
    }

    pub fn padded_len(&self) -> usize {
        self.src.len()
    }

    fn readers(&self, s: usize) -> &[u32] {
        &self.adj[self.adj_start[s] as usize..self.adj_start[s + 1] as usize]
    }
}

/// Pads `x` (h × w × c, contiguous) into `xp` with row width `wp = w + 2p` and `hp = h + 2p` rows.
pub(crate) fn pad_forward<T: Float>(
    x: &[T],
    c: usize,
    rows: &AxisMap,
    cols: &AxisMap,
    xp: &mut [T],
) {
    let wp = cols.padded_len();
    let hp = rows.padded_len();
    let w = cols.adj_start.len() - 1;
    let row_len = wp * c;
    let per = rows_per_task(hp, row_len);
    let body = |(ti, chunk): (usize, &mut [T])| {
        for (ri, dst) in chunk.chunks_mut(row_len).enumerate() {
            let a = ti * per + ri;
            match rows.src[a] {
                None => dst.fill(T::ZERO),
                Some(sa) => {
                    let srow = &x[sa as usize * w * c..(sa as usize + 1) * w * c];
                    for (b, px) in dst.chunks_mut(c).enumerate() {
                        match cols.src[b] {
                            None => px.fill(T::ZERO),
                            Some(sb) => {
                                px.copy_from_slice(&srow[sb as usize * c..(sb as usize + 1) * c])
                            }
                        }
                    }
                }
            }
        }
    };
    let xp = &mut xp[..hp * row_len];
    for_each_chunk(xp, per * row_len, body);
}

/// Adjoint of [`pad_forward`]: `dx (+)= Σ` of the padded gradient over every padded position that
/// reads each source pixel. `dxp` has `hp` rows of row stride `dxp_rs` elements.
pub(crate) fn pad_backward<T: Float>(
    dxp: &[T],
    dxp_rs: usize,
    c: usize,
    rows: &AxisMap,
    cols: &AxisMap,
    dx: &mut [T],
    accumulate: bool,
) {
    let w = cols.adj_start.len() - 1;
    let h = rows.adj_start.len() - 1;
    let row_len = w * c;
    let per = rows_per_task(h, row_len);
    let body = |(ti, chunk): (usize, &mut [T])| {
        for (ri, drow) in chunk.chunks_mut(row_len).enumerate() {
            let i = ti * per + ri;
            if !accumulate {
                drow.fill(T::ZERO);
            }
            for &a in rows.readers(i) {
                let prow = &dxp[a as usize * dxp_rs..];
                for (j, px) in drow.chunks_mut(c).enumerate() {
                    for &b in cols.readers(j) {
                        let src = &prow[b as usize * c..(b as usize + 1) * c];
                        for (d, &s) in px.iter_mut().zip(src) {
                            *d += s;
                        }
                    }
                }
            }
        }
    };
    let dx = &mut dx[..h * row_len];
    for_each_chunk(dx, per * row_len, body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflection_matches_pytorch_convention() {
        // ReflectionPad2d(2) of [0,1,2,3] is [2,1,0,1,2,3,2,1].
        let got: Vec<usize> = (0..8)
            .map(|i| source_index(PadMode::Reflection, i, 4, 2).unwrap())
            .collect();
        assert_eq!(got, vec![2, 1, 0, 1, 2, 3, 2, 1]);
        assert_eq!(source_index(PadMode::Zero, 0, 4, 1), None);
        assert_eq!(source_index(PadMode::Zero, 1, 4, 1), Some(0));
    }

    #[test]
    fn backward_is_the_adjoint_of_forward() {
        // <P x, g> == <x, P^T g> for random x, g, both modes, odd sizes.
        for mode in [PadMode::Zero, PadMode::Reflection] {
            let (h, w, c, p) = (5, 3, 2, 2);
            let rows = AxisMap::new(mode, h, p);
            let cols = AxisMap::new(mode, w, p);
            let (hp, wp) = (h + 2 * p, w + 2 * p);
            let x: Vec<f64> = (0..h * w * c)
                .map(|i| ((i * 7919) % 23) as f64 - 11.0)
                .collect();
            let g: Vec<f64> = (0..hp * wp * c)
                .map(|i| ((i * 104729) % 19) as f64 - 9.0)
                .collect();
            let mut xp = vec![0.0; hp * wp * c];
            pad_forward(&x, c, &rows, &cols, &mut xp);
            let mut dx = vec![0.0; h * w * c];
            pad_backward(&g, wp * c, c, &rows, &cols, &mut dx, false);
            let lhs: f64 = xp.iter().zip(&g).map(|(a, b)| a * b).sum();
            let rhs: f64 = x.iter().zip(&dx).map(|(a, b)| a * b).sum();
            assert_eq!(lhs, rhs, "{mode:?}");
        }
    }
}

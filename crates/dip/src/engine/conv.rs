//! 2-D convolution (cross-correlation, as PyTorch), k×k, any stride, zero or reflection padding.
//!
//! Three paths, chosen at build time:
//! - **1×1, stride 1**: one GEMM over pixels, `y = x · W`.
//! - **k×k, stride 1** ("shifted views"): the input is padded into `xp` (row width `wp`).
//!   Treating the output as `ho × wp` pixels, of which the last `k-1` columns of each row are
//!   discarded, makes the `k` pixels of kernel row `dy` under output pixel `r` the contiguous run
//!   `xp[(r + dy·wp)·cin ..][.. k·cin]`. So the conv is `k` GEMMs with K = k·cin over overlapping
//!   row views, with no im2col buffer. The input gradient is the same operation on the
//!   zero-padded output gradient with flipped, transposed weights, followed by the adjoint of the
//!   padding.
//! - **stride > 1**: im2col into a column matrix, one GEMM; col2im for the input gradient.
//!
//! Nothing is kept between forward and backward but the input itself (an activation the network
//! holds anyway): backward pads it again (and rebuilds the column matrix) in the shared scratch.
//! That costs one memory-bound copy per convolution and spares a padded copy of every input.
//!
//! Weights live in the flat parameter buffer as `[ky][kx][cin][cout]`, so that each kernel row is
//! a `(k·cin) × cout` row-major matrix.

use std::marker::PhantomData;

use rayon::prelude::*;

use super::gemm::{MatRef, Precision, matmul_in};
use super::pad::{AxisMap, PadMode, pad_backward, pad_forward};
use super::par::{channel_reduce, for_each_chunk, reduce_chunks, rows_per_task};
use super::{Float, Tensor};

/// Pixels per GEMM of a weight gradient's reduction (see the shifted path's backward).
const WGRAD_CHUNK: usize = 1 << 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Direct,
    Shifted,
    Im2col,
}

/// Scratch buffers shared by all convolutions of a network; their contents do not survive a call.
#[derive(Debug, Default)]
pub struct ConvScratch<T> {
    pub a: Vec<T>,
    pub b: Vec<T>,
    pub c: Vec<T>,
    pub partial: Vec<T>,
    /// Flipped, transposed weights (input gradient of the shifted path).
    pub wt: Vec<T>,
}

impl<T: Float> ConvScratch<T> {
    /// Grows the buffers to hold `sizes` (a, b, c, partial sums, flipped weights).
    pub fn reserve(&mut self, sizes: [usize; 5]) {
        for (buf, n) in [
            &mut self.a,
            &mut self.b,
            &mut self.c,
            &mut self.partial,
            &mut self.wt,
        ]
        .into_iter()
        .zip(sizes)
        {
            if buf.len() < n {
                buf.resize(n, T::ZERO);
            }
        }
    }
}

/// A convolution layer for a fixed input size.
#[derive(Debug)]
pub struct Conv2d<T> {
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub pad_mode: PadMode,
    /// Input and output spatial size.
    pub h: usize,
    pub w: usize,
    pub ho: usize,
    pub wo: usize,
    /// Offsets of the weight and the bias in the flat parameter buffer.
    pub weight: usize,
    pub bias: Option<usize>,
    path: Path,
    hp: usize,
    wp: usize,
    rows: AxisMap,
    cols: AxisMap,
    /// Shifted path: zero padding of the output gradient by k-1.
    zrows: AxisMap,
    zcols: AxisMap,
    _float: PhantomData<T>,
    /// Number format of the GEMM inputs.
    pub precision: Precision,
}

impl<T: Float> Conv2d<T> {
    /// A convolution of an `h × w × cin` input. `weight`/`bias` are parameter offsets.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        h: usize,
        w: usize,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad_mode: PadMode,
        weight: usize,
        bias: Option<usize>,
    ) -> Self {
        assert!(k % 2 == 1, "kernel size must be odd, got {k}");
        assert!(stride >= 1);
        let pad = (k - 1) / 2;
        let (hp, wp) = (h + 2 * pad, w + 2 * pad);
        assert!(
            hp >= k && wp >= k,
            "input {h}x{w} too small for a {k}x{k} kernel"
        );
        if pad_mode == PadMode::Reflection {
            assert!(
                pad < h && pad < w,
                "reflection padding {pad} needs an input larger than {h}x{w}"
            );
        }
        let ho = (hp - k) / stride + 1;
        let wo = (wp - k) / stride + 1;
        let path = if stride > 1 {
            Path::Im2col
        } else if k == 1 {
            Path::Direct
        } else {
            Path::Shifted
        };
        let shifted = path == Path::Shifted;
        let (zrows, zcols) = if shifted {
            (
                AxisMap::new(PadMode::Zero, ho, k - 1),
                AxisMap::new(PadMode::Zero, wo, k - 1),
            )
        } else {
            (AxisMap::default(), AxisMap::default())
        };
        Conv2d {
            cin,
            cout,
            k,
            stride,
            pad_mode,
            h,
            w,
            ho,
            wo,
            weight,
            bias,
            path,
            hp,
            wp,
            rows: AxisMap::new(pad_mode, h, pad),
            cols: AxisMap::new(pad_mode, w, pad),
            zrows,
            zcols,
            _float: PhantomData,
            precision: Precision::F32,
        }
    }

    /// Number of weights (without the bias).
    pub fn weight_len(&self) -> usize {
        self.k * self.k * self.cin * self.cout
    }

    /// Scratch sizes this layer needs: buffers a, b, c, the partial sums and the flipped
    /// weights.
    pub fn scratch_sizes(&self) -> [usize; 5] {
        let (k, cin, cout) = (self.k, self.cin, self.cout);
        let partial = reduce_chunks(self.ho * self.wo) * cout;
        match self.path {
            Path::Direct => [0, 0, 0, partial, 0],
            Path::Shifted => {
                let (hz, wz) = (self.ho + 2 * (k - 1), self.wo + 2 * (k - 1));
                [
                    self.ho * self.wp * cout,
                    (hz * wz + k) * cout,
                    ((hz - k + 1) * wz * cin).max(self.padded_len()),
                    partial,
                    k * k * cin * cout,
                ]
            }
            Path::Im2col => [
                self.ho * self.wo * k * k * cin,
                self.hp * self.wp * cin,
                0,
                partial,
                0,
            ],
        }
    }

    /// Shifted path: the padded input plus slack for the overlapping views of the last row.
    fn padded_len(&self) -> usize {
        (self.hp * self.wp + self.k) * self.cin
    }

    /// Shifted path: pads `x` into `xp`, zeroing the slack after it (read only by discarded
    /// columns, which must stay finite: the weight gradient multiplies them by zero).
    fn pad_input<'a>(&self, x: &Tensor<T>, xp: &'a mut [T]) -> &'a [T] {
        let xp = &mut xp[..self.padded_len()];
        pad_forward(&x.data, self.cin, &self.rows, &self.cols, xp);
        xp[self.hp * self.wp * self.cin..].fill(T::ZERO);
        xp
    }

    /// Im2col path: pads `x` into `xp` and writes the column matrix into `col`.
    fn columns<'a>(&self, x: &Tensor<T>, xp: &mut [T], col: &'a mut [T]) -> &'a [T] {
        let xp = &mut xp[..self.hp * self.wp * self.cin];
        pad_forward(&x.data, self.cin, &self.rows, &self.cols, xp);
        let col = &mut col[..self.ho * self.wo * self.k * self.k * self.cin];
        im2col(
            xp,
            self.wp,
            self.cin,
            self.k,
            self.stride,
            self.ho,
            self.wo,
            col,
        );
        col
    }

    /// `y = conv(x) + b`.
    pub fn forward(
        &mut self,
        params: &[T],
        x: &Tensor<T>,
        y: &mut Tensor<T>,
        s: &mut ConvScratch<T>,
    ) {
        debug_assert_eq!((x.h, x.w, x.c), (self.h, self.w, self.cin));
        debug_assert_eq!((y.h, y.w, y.c), (self.ho, self.wo, self.cout));
        let (k, cin, cout) = (self.k, self.cin, self.cout);
        let prec = self.precision;
        let wmat = &params[self.weight..self.weight + self.weight_len()];
        let bias = self.bias.map(|b| &params[b..b + cout]);
        match self.path {
            Path::Direct => {
                fill_bias(&mut y.data, cout, bias);
                matmul_in(
                    prec,
                    x.pixels(),
                    cout,
                    cin,
                    &mut y.data,
                    cout,
                    true,
                    MatRef::rows(&x.data, cin),
                    MatRef::rows(wmat, cout),
                );
            }
            Path::Shifted => {
                let xp = self.pad_input(x, &mut s.c);
                let m = self.ho * self.wp;
                let wide = &mut s.a[..m * cout];
                for dy in 0..k {
                    let lhs = MatRef::new(xp, dy * self.wp * cin, cin, 1);
                    let rhs =
                        MatRef::rows(&wmat[dy * k * cin * cout..(dy + 1) * k * cin * cout], cout);
                    matmul_in(prec, m, cout, k * cin, wide, cout, dy > 0, lhs, rhs);
                }
                compact_rows(
                    wide,
                    self.wp * cout,
                    self.wo * cout,
                    cout,
                    bias,
                    &mut y.data,
                );
            }
            Path::Im2col => {
                let col = self.columns(x, &mut s.b, &mut s.a);
                fill_bias(&mut y.data, cout, bias);
                let kk = k * k * cin;
                matmul_in(
                    prec,
                    self.ho * self.wo,
                    cout,
                    kk,
                    &mut y.data,
                    cout,
                    true,
                    MatRef::rows(col, kk),
                    MatRef::rows(wmat, cout),
                );
            }
        }
    }

    /// Gradients of the weight and bias (written) and, when `dx` is given, of the input
    /// (written, or added when `accumulate`). `x` is the input of the last forward.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        params: &[T],
        x: &Tensor<T>,
        dy: &Tensor<T>,
        dx: Option<&mut Tensor<T>>,
        accumulate: bool,
        dparams: &mut [T],
        s: &mut ConvScratch<T>,
    ) {
        let (k, cin, cout) = (self.k, self.cin, self.cout);
        let prec = self.precision;
        let wlen = self.weight_len();
        if let Some(b) = self.bias {
            let pixels = dy.pixels();
            let data = &dy.data;
            channel_reduce(
                pixels,
                cout,
                &mut s.partial,
                &mut dparams[b..b + cout],
                |range, acc| {
                    for px in data[range.start * cout..range.end * cout].chunks_exact(cout) {
                        for (a, &g) in acc.iter_mut().zip(px) {
                            *a += g;
                        }
                    }
                },
            );
        }
        let wmat = &params[self.weight..self.weight + wlen];
        let dw = &mut dparams[self.weight..self.weight + wlen];
        match self.path {
            Path::Direct => {
                matmul_in(
                    prec,
                    cin,
                    cout,
                    x.pixels(),
                    dw,
                    cout,
                    false,
                    MatRef::rows_t(&x.data, cin),
                    MatRef::rows(&dy.data, cout),
                );
                if let Some(dx) = dx {
                    matmul_in(
                        prec,
                        x.pixels(),
                        cin,
                        cout,
                        &mut dx.data,
                        cin,
                        accumulate,
                        MatRef::rows(&dy.data, cout),
                        MatRef::rows_t(wmat, cout),
                    );
                }
            }
            Path::Shifted => {
                let (ho, wo, wp) = (self.ho, self.wo, self.wp);
                let m = ho * wp;
                // dY in the wide layout, zero in the discarded columns so they add nothing.
                let dyw = &mut s.a[..m * cout];
                widen_rows(&dy.data, wo * cout, wp * cout, dyw);
                let xp = self.pad_input(x, &mut s.c);
                for dyk in 0..k {
                    let dwk = &mut dw[dyk * k * cin * cout..(dyk + 1) * k * cin * cout];
                    // The reduction runs over every pixel; past a few tens of thousands the
                    // GEMM slows down (by a fifth at 512²), so it is summed in chunks of pixels.
                    for r0 in (0..m).step_by(WGRAD_CHUNK) {
                        let rows = WGRAD_CHUNK.min(m - r0);
                        let lhs = MatRef::new(xp, (dyk * wp + r0) * cin, 1, cin);
                        matmul_in(
                            prec,
                            k * cin,
                            cout,
                            rows,
                            dwk,
                            cout,
                            r0 > 0,
                            lhs,
                            MatRef::new(dyw, r0 * cout, cout, 1),
                        );
                    }
                }
                if let Some(dx) = dx {
                    // Full correlation of dY (zero-padded by k-1) with the flipped kernel gives the
                    // gradient of the padded input; the padding adjoint folds it back.
                    let wt = &mut s.wt[..k * k * cin * cout];
                    flip_transpose(wmat, k, cin, cout, wt);
                    let q = k - 1;
                    let (hz, wz) = (ho + 2 * q, wo + 2 * q);
                    let dyz = &mut s.b[..(hz * wz + k) * cout];
                    pad_forward(&dy.data, cout, &self.zrows, &self.zcols, dyz);
                    dyz[hz * wz * cout..].fill(T::ZERO);
                    let mz = (hz - k + 1) * wz;
                    let dxw = &mut s.c[..mz * cin];
                    for ey in 0..k {
                        let lhs = MatRef::new(dyz, ey * wz * cout, cout, 1);
                        let rhs =
                            MatRef::rows(&wt[ey * k * cout * cin..(ey + 1) * k * cout * cin], cin);
                        matmul_in(prec, mz, cin, k * cout, dxw, cin, ey > 0, lhs, rhs);
                    }
                    pad_backward(
                        dxw,
                        wz * cin,
                        cin,
                        &self.rows,
                        &self.cols,
                        &mut dx.data,
                        accumulate,
                    );
                }
            }
            Path::Im2col => {
                let kk = k * k * cin;
                let m = self.ho * self.wo;
                let col = self.columns(x, &mut s.b, &mut s.a);
                matmul_in(
                    prec,
                    kk,
                    cout,
                    m,
                    dw,
                    cout,
                    false,
                    MatRef::rows_t(col, kk),
                    MatRef::rows(&dy.data, cout),
                );
                if let Some(dx) = dx {
                    let dcol = &mut s.a[..m * kk];
                    matmul_in(
                        prec,
                        m,
                        kk,
                        cout,
                        dcol,
                        kk,
                        false,
                        MatRef::rows(&dy.data, cout),
                        MatRef::rows_t(wmat, cout),
                    );
                    let dxp = &mut s.b[..self.hp * self.wp * cin];
                    col2im(dcol, self.wp, cin, k, self.stride, self.ho, self.wo, dxp);
                    pad_backward(
                        dxp,
                        self.wp * cin,
                        cin,
                        &self.rows,
                        &self.cols,
                        &mut dx.data,
                        accumulate,
                    );
                }
            }
        }
    }
}

fn fill_bias<T: Float>(y: &mut [T], c: usize, bias: Option<&[T]>) {
    let per = rows_per_task(y.len() / c.max(1), c) * c;
    let fill = |chunk: &mut [T]| match bias {
        Some(b) => chunk
            .chunks_exact_mut(c)
            .for_each(|px| px.copy_from_slice(b)),
        None => chunk.fill(T::ZERO),
    };
    if per >= y.len() {
        fill(y);
    } else {
        y.par_chunks_mut(per).for_each(fill);
    }
}

/// Copies the first `keep` elements of each `stride`-long row of `src` into `dst`, adding `bias`.
fn compact_rows<T: Float>(
    src: &[T],
    stride: usize,
    keep: usize,
    c: usize,
    bias: Option<&[T]>,
    dst: &mut [T],
) {
    let rows = dst.len() / keep;
    let per = rows_per_task(rows, keep);
    let body = |(ti, chunk): (usize, &mut [T])| {
        for (ri, drow) in chunk.chunks_mut(keep).enumerate() {
            let r = ti * per + ri;
            let srow = &src[r * stride..r * stride + keep];
            match bias {
                None => drow.copy_from_slice(srow),
                Some(b) => {
                    for (dpx, spx) in drow.chunks_exact_mut(c).zip(srow.chunks_exact(c)) {
                        for ((d, &s), &bb) in dpx.iter_mut().zip(spx).zip(b) {
                            *d = s + bb;
                        }
                    }
                }
            }
        }
    };
    for_each_chunk(dst, per * keep, body);
}

/// Inverse of [`compact_rows`] without bias: rows of `keep` elements into rows of `stride`,
/// zero-filling the rest of each row.
fn widen_rows<T: Float>(src: &[T], keep: usize, stride: usize, dst: &mut [T]) {
    let rows = src.len() / keep;
    let per = rows_per_task(rows, stride);
    let body = |(ti, chunk): (usize, &mut [T])| {
        for (ri, drow) in chunk.chunks_mut(stride).enumerate() {
            let r = ti * per + ri;
            drow[..keep].copy_from_slice(&src[r * keep..(r + 1) * keep]);
            drow[keep..].fill(T::ZERO);
        }
    };
    let dst = &mut dst[..rows * stride];
    for_each_chunk(dst, per * stride, body);
}

/// `wt[ey][ex][co][ci] = w[k-1-ey][k-1-ex][ci][co]`.
fn flip_transpose<T: Float>(w: &[T], k: usize, cin: usize, cout: usize, wt: &mut [T]) {
    for ey in 0..k {
        for ex in 0..k {
            let src = &w[((k - 1 - ey) * k + (k - 1 - ex)) * cin * cout..][..cin * cout];
            let dst = &mut wt[(ey * k + ex) * cout * cin..][..cout * cin];
            for ci in 0..cin {
                for co in 0..cout {
                    dst[co * cin + ci] = src[ci * cout + co];
                }
            }
        }
    }
}

/// Column matrix of a padded input: row `oi·wo + oj`, columns `(dy·k + dx)·cin + ci`.
#[allow(clippy::too_many_arguments)]
fn im2col<T: Float>(
    xp: &[T],
    wp: usize,
    cin: usize,
    k: usize,
    s: usize,
    ho: usize,
    wo: usize,
    col: &mut [T],
) {
    let kk = k * k * cin;
    let row_len = wo * kk;
    let per = rows_per_task(ho, row_len);
    let body = |(ti, chunk): (usize, &mut [T])| {
        for (ri, out_row) in chunk.chunks_mut(row_len).enumerate() {
            let oi = ti * per + ri;
            for (oj, dst) in out_row.chunks_exact_mut(kk).enumerate() {
                for dy in 0..k {
                    let src = ((s * oi + dy) * wp + s * oj) * cin;
                    dst[dy * k * cin..(dy + 1) * k * cin].copy_from_slice(&xp[src..src + k * cin]);
                }
            }
        }
    };
    let col = &mut col[..ho * row_len];
    for_each_chunk(col, per * row_len, body);
}

/// Adjoint of [`im2col`]: scatters the column gradient back into the padded input gradient.
/// Works row by row of the padded input, gathering, so rows can run in parallel.
#[allow(clippy::too_many_arguments)]
fn col2im<T: Float>(
    dcol: &[T],
    wp: usize,
    cin: usize,
    k: usize,
    s: usize,
    ho: usize,
    wo: usize,
    dxp: &mut [T],
) {
    let kk = k * k * cin;
    let row_len = wp * cin;
    let hp = dxp.len() / row_len;
    let per = rows_per_task(hp, row_len);
    let body = |(ti, chunk): (usize, &mut [T])| {
        for (ri, drow) in chunk.chunks_mut(row_len).enumerate() {
            let a = ti * per + ri;
            drow.fill(T::ZERO);
            for dy in 0..k {
                if a < dy || !(a - dy).is_multiple_of(s) || (a - dy) / s >= ho {
                    continue;
                }
                let oi = (a - dy) / s;
                for oj in 0..wo {
                    let src = &dcol[(oi * wo + oj) * kk + dy * k * cin..][..k * cin];
                    let dst = &mut drow[s * oj * cin..s * oj * cin + k * cin];
                    for (d, &g) in dst.iter_mut().zip(src) {
                        *d += g;
                    }
                }
            }
        }
    };
    for_each_chunk(dxp, per * row_len, body);
}

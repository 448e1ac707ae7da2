//! A checked wrapper over the `gemm` crate.

use std::sync::atomic::{AtomicBool, Ordering};

use super::Float;

/// Set while a GEMM runs. The `gemm` crate allocates its packing buffers on every call (on the
/// calling and the worker threads); this lets a test tell those apart from the engine's own.
static IN_GEMM: AtomicBool = AtomicBool::new(false);

/// Whether a GEMM is running right now (for allocation accounting in tests).
#[doc(hidden)]
pub fn in_gemm() -> bool {
    IN_GEMM.load(Ordering::Relaxed)
}

/// A strided matrix view into a slice: element (i, j) is `data[offset + i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a, T> {
    pub data: &'a [T],
    pub offset: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a, T> MatRef<'a, T> {
    pub fn new(data: &'a [T], offset: usize, rs: usize, cs: usize) -> Self {
        MatRef {
            data,
            offset,
            rs,
            cs,
        }
    }
    /// Row-major, contiguous rows of `cols` elements.
    pub fn rows(data: &'a [T], cols: usize) -> Self {
        MatRef {
            data,
            offset: 0,
            rs: cols,
            cs: 1,
        }
    }
    /// The transpose of a row-major matrix of `cols` columns.
    pub fn rows_t(data: &'a [T], cols: usize) -> Self {
        MatRef {
            data,
            offset: 0,
            rs: 1,
            cs: cols,
        }
    }
    fn check(&self, rows: usize, cols: usize) {
        if rows > 0 && cols > 0 {
            let last = self.offset + (rows - 1) * self.rs + (cols - 1) * self.cs;
            assert!(
                last < self.data.len(),
                "matrix view out of bounds: {last} >= {}",
                self.data.len()
            );
        }
    }
}

/// `dst[m×n] (row stride dst_rs) = (accumulate ? dst : 0) + lhs[m×k] · rhs[k×n]`.
///
/// The thread count follows the current rayon pool; small products run on one thread.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul<T: Float>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [T],
    dst_rs: usize,
    accumulate: bool,
    lhs: MatRef<'_, T>,
    rhs: MatRef<'_, T>,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        (m - 1) * dst_rs + n <= dst.len(),
        "gemm destination out of bounds"
    );
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                dst[i * dst_rs..i * dst_rs + n].fill(T::ZERO);
            }
        }
        return;
    }
    lhs.check(m, k);
    rhs.check(k, n);
    let threads = rayon::current_num_threads();
    let par = if threads > 1 && m * n * k >= 1 << 18 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: every index the product touches was bounds-checked above; `dst` is exclusively
    // borrowed and does not alias `lhs` or `rhs` (distinct borrows).
    IN_GEMM.store(true, Ordering::SeqCst);
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr().add(lhs.offset),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr().add(rhs.offset),
            rhs.cs as isize,
            rhs.rs as isize,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            par,
        );
    }
    IN_GEMM.store(false, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_naive_product_with_strides_and_accumulation() {
        let (m, n, k) = (7, 5, 9);
        let a: Vec<f64> = (0..m * k * 2)
            .map(|i| ((i * 37 % 11) as f64) - 5.0)
            .collect();
        let b: Vec<f64> = (0..k * n).map(|i| ((i * 13 % 7) as f64) * 0.5).collect();
        let mut c = vec![1.0f64; m * n];
        // lhs is every other column of a wider matrix, rhs is read transposed.
        matmul(
            m,
            n,
            k,
            &mut c,
            n,
            true,
            MatRef::new(&a, 0, 2 * k, 2),
            MatRef::new(&b, 0, 1, k),
        );
        for i in 0..m {
            for j in 0..n {
                let want: f64 = 1.0
                    + (0..k)
                        .map(|p| a[i * 2 * k + 2 * p] * b[j * k + p])
                        .sum::<f64>();
                assert_eq!(c[i * n + j], want);
            }
        }
    }
}

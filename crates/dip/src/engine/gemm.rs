//! A checked wrapper over the `gemm` crate, and the dispatch to the bf16 kernel.

use std::any::TypeId;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{Float, bf16};

/// When set, every product's shape and time are recorded (see [`set_gemm_timing`]).
static TIMING: AtomicBool = AtomicBool::new(false);
static TIMES: Mutex<Vec<GemmTime>> = Mutex::new(Vec::new());

/// Time spent in the products of one shape since [`set_gemm_timing`] turned timing on.
#[derive(Debug, Clone)]
pub struct GemmTime {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// The kernel that ran: `Bf16` only where the bf16 kernel did.
    pub precision: Precision,
    pub calls: usize,
    pub seconds: f64,
}

impl GemmTime {
    /// Multiply-adds counted twice, per second.
    pub fn gflops(&self) -> f64 {
        2.0 * (self.m * self.n * self.k * self.calls) as f64 / self.seconds / 1e9
    }
}

/// Turns the recording of GEMM shapes and times on (clearing what was recorded before) or off. For
/// benchmarks: recording allocates and serialises on a lock.
pub fn set_gemm_timing(on: bool) {
    if on {
        TIMES.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
    TIMING.store(on, Ordering::SeqCst);
}

/// The recorded products, one entry per shape and kernel, in order of first appearance.
pub fn gemm_times() -> Vec<GemmTime> {
    TIMES.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

fn record(m: usize, n: usize, k: usize, precision: Precision, seconds: f64) {
    let mut times = TIMES.lock().unwrap_or_else(|e| e.into_inner());
    match times
        .iter_mut()
        .find(|t| (t.m, t.n, t.k, t.precision) == (m, n, k, precision))
    {
        Some(t) => {
            t.calls += 1;
            t.seconds += seconds;
        }
        None => times.push(GemmTime {
            m,
            n,
            k,
            precision,
            calls: 1,
            seconds,
        }),
    }
}

/// Number format of the convolution GEMM inputs. Accumulation, weights, activations and every
/// other pass stay in the network's float type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Plain f32 (or f64) products.
    #[default]
    F32,
    /// Both operands rounded to bfloat16, products summed in f32 (AVX-512-BF16). Applies to f32
    /// networks; an f64 network ignores it.
    Bf16,
}

impl Precision {
    /// What this CPU will run: `Bf16` falls back to `F32` without AVX-512-BF16.
    pub fn effective(self) -> Precision {
        match self {
            Precision::Bf16 if !bf16::supported() => Precision::F32,
            p => p,
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        })
    }
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            _ => Err(format!("unknown precision '{s}' (expected f32 or bf16)")),
        }
    }
}

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
    matmul_in(Precision::F32, m, n, k, dst, dst_rs, accumulate, lhs, rhs);
}

/// [`matmul`] with the operands in `precision`: `Bf16` runs the bf16 kernel for f32 data on a CPU
/// that has it, and plain products otherwise.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_in<T: Float>(
    precision: Precision,
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
    if precision == Precision::Bf16 && TypeId::of::<T>() == TypeId::of::<f32>() && bf16::supported()
    {
        // SAFETY: T is f32 (same TypeId), so these are the same slices retyped.
        let (dst, lhs, rhs) = unsafe {
            (
                std::slice::from_raw_parts_mut(dst.as_mut_ptr() as *mut f32, dst.len()),
                retype(lhs),
                retype(rhs),
            )
        };
        IN_GEMM.store(true, Ordering::SeqCst);
        let t0 = TIMING.load(Ordering::Relaxed).then(Instant::now);
        bf16::matmul_bf16(m, n, k, dst, dst_rs, accumulate, lhs, rhs);
        if let Some(t0) = t0 {
            record(m, n, k, Precision::Bf16, t0.elapsed().as_secs_f64());
        }
        IN_GEMM.store(false, Ordering::SeqCst);
        return;
    }
    let threads = rayon::current_num_threads();
    let par = if threads > 1 && m * n * k >= 1 << 18 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: every index the product touches was bounds-checked above; `dst` is exclusively
    // borrowed and does not alias `lhs` or `rhs` (distinct borrows).
    IN_GEMM.store(true, Ordering::SeqCst);
    let t0 = TIMING.load(Ordering::Relaxed).then(Instant::now);
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
    if let Some(t0) = t0 {
        record(m, n, k, Precision::F32, t0.elapsed().as_secs_f64());
    }
    IN_GEMM.store(false, Ordering::SeqCst);
}

/// # Safety
/// `T` is `f32`.
unsafe fn retype<T>(v: MatRef<'_, T>) -> MatRef<'_, f32> {
    MatRef {
        // SAFETY: the caller guarantees T is f32.
        data: unsafe { std::slice::from_raw_parts(v.data.as_ptr() as *const f32, v.data.len()) },
        offset: v.offset,
        rs: v.rs,
        cs: v.cs,
    }
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

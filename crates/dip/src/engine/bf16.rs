//! bf16 GEMM for f32 data: both operands are rounded to bfloat16 while they are packed, the
//! products are summed in f32 (AVX-512-BF16 `vdpbf16ps`: two bf16 products per f32 lane).
//!
//! Layout. `k` is walked in pairs. A packed B panel holds, for each pair `p` and each of its
//! [`NR`] columns `j`, the 32-bit word `bf16(B[2p][j]) | bf16(B[2p+1][j]) << 16`; a packed A
//! panel holds, for each pair and each of its [`MR`] rows `i`, `bf16(A[i][2p]) | bf16(A[i][2p+1])
//! << 16`. The microkernel broadcasts one A word against two B vectors, so `MR × NR` f32
//! accumulators stay in 2·MR zmm registers. An odd `k` is padded with a zero, like the ragged
//! edges of `m` and `n`.
//!
//! Blocking: `k` in blocks of [`KC`] pairs (B block packed once per k block and shared by all
//! threads), `m` in blocks of [`MC`] rows (packed by the thread that uses them), all of `n` per
//! task unless `m` alone gives too few tasks. Each output element is summed in the same order
//! whatever the thread count, so the result does not depend on it.

use std::cell::RefCell;

use rayon::prelude::*;

use super::gemm::MatRef;

/// Rows of the microkernel.
pub(crate) const MR: usize = 12;
/// Columns of the microkernel (two 16-lane vectors).
pub(crate) const NR: usize = 32;
/// k pairs per block.
const KC: usize = 256;
/// Rows per parallel task (a multiple of `MR`).
const MC: usize = 8 * MR;

/// Whether this CPU runs the bf16 kernel (AVX-512F and AVX-512-BF16).
pub fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Rounds to the nearest bfloat16, ties to even (as `vcvtneps2bf16`); NaN stays NaN.
#[inline(always)]
pub fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// The f32 value of a bfloat16.
#[inline(always)]
pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

#[inline(always)]
fn pair(lo: f32, hi: f32) -> u32 {
    to_bf16(lo) as u32 | (to_bf16(hi) as u32) << 16
}

thread_local! {
    static PACK_A: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    static PACK_B: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's buffer `key`, grown to `len` (a fresh buffer if it is in use).
fn with_buf<R>(
    key: &'static std::thread::LocalKey<RefCell<Vec<u32>>>,
    len: usize,
    f: impl FnOnce(&mut [u32]) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0);
            }
            f(&mut buf[..len])
        }
        Err(_) => f(&mut vec![0u32; len]),
    })
}

/// Packs rows `i0..i0+rows` and pairs `p0..p0+pairs` of A (`k` columns in all) into MR-row panels.
fn pack_a(
    a: &MatRef<'_, f32>,
    k: usize,
    i0: usize,
    rows: usize,
    p0: usize,
    pairs: usize,
    out: &mut [u32],
) {
    for (pi, panel) in out
        .chunks_exact_mut(pairs * MR)
        .take(rows.div_ceil(MR))
        .enumerate()
    {
        let r0 = i0 + pi * MR;
        let valid = (i0 + rows - r0).min(MR);
        for r in 0..MR {
            if r >= valid {
                for p in 0..pairs {
                    panel[p * MR + r] = 0;
                }
                continue;
            }
            let base = a.offset + (r0 + r) * a.rs;
            for p in 0..pairs {
                let kk = 2 * (p0 + p);
                let lo = a.data[base + kk * a.cs];
                let hi = if kk + 1 < k {
                    a.data[base + (kk + 1) * a.cs]
                } else {
                    0.0
                };
                panel[p * MR + r] = pair(lo, hi);
            }
        }
    }
}

/// Packs pairs `p0..p0+pairs` of B (`k × n`) into NR-column panels, every panel of `n`.
fn pack_b(b: &MatRef<'_, f32>, k: usize, n: usize, p0: usize, pairs: usize, out: &mut [u32]) {
    let pack_panel = |(pj, panel): (usize, &mut [u32])| {
        let j0 = pj * NR;
        let valid = (n - j0).min(NR);
        for p in 0..pairs {
            let kk = 2 * (p0 + p);
            let row = &mut panel[p * NR..(p + 1) * NR];
            let lo = b.offset + kk * b.rs + j0 * b.cs;
            if kk + 1 < k {
                let hi = lo + b.rs;
                for (j, w) in row[..valid].iter_mut().enumerate() {
                    *w = pair(b.data[lo + j * b.cs], b.data[hi + j * b.cs]);
                }
            } else {
                for (j, w) in row[..valid].iter_mut().enumerate() {
                    *w = pair(b.data[lo + j * b.cs], 0.0);
                }
            }
            row[valid..].fill(0);
        }
    };
    let out = &mut out[..n.div_ceil(NR) * pairs * NR];
    if pairs * n >= 1 << 15 && rayon::current_num_threads() > 1 {
        out.par_chunks_exact_mut(pairs * NR)
            .enumerate()
            .for_each(pack_panel);
    } else {
        out.chunks_exact_mut(pairs * NR)
            .enumerate()
            .for_each(pack_panel);
    }
}

/// A raw destination pointer that tasks writing disjoint tiles may share.
#[derive(Clone, Copy)]
struct DstPtr(*mut f32);
unsafe impl Send for DstPtr {}
unsafe impl Sync for DstPtr {}

impl DstPtr {
    /// # Safety
    /// `i` is within the destination.
    unsafe fn at(self, i: usize) -> *mut f32 {
        // SAFETY: the caller keeps `i` in bounds.
        unsafe { self.0.add(i) }
    }
}

/// `dst[m×n] (row stride dst_rs) = (accumulate ? dst : 0) + bf16(lhs) · bf16(rhs)`, summed in f32.
///
/// The caller checks the bounds of every view (as [`super::gemm::matmul`] does) and that the CPU
/// is [`supported`]; `m`, `n`, `k` are positive.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_bf16(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    lhs: MatRef<'_, f32>,
    rhs: MatRef<'_, f32>,
) {
    assert!(supported(), "bf16 GEMM needs AVX-512-BF16");
    assert!(m > 0 && n > 0 && k > 0);
    assert!((m - 1) * dst_rs + n <= dst.len());
    let kp = k.div_ceil(2);
    let threads = rayon::current_num_threads();
    let parallel = threads > 1 && m * n * k >= 1 << 18;
    let m_blocks = m.div_ceil(MC);
    let n_panels = n.div_ceil(NR);
    // Split n as well when m alone leaves threads idle.
    let n_split = if parallel && m_blocks < 2 * threads {
        (2 * threads).div_ceil(m_blocks).min(n_panels)
    } else {
        1
    };
    let panels_per_task = n_panels.div_ceil(n_split);
    let n_tasks = n_panels.div_ceil(panels_per_task);
    let dst_ptr = DstPtr(dst.as_mut_ptr());
    let bpairs = KC.min(kp);
    with_buf(&PACK_B, bpairs * n_panels * NR, |packed_b| {
        for p0 in (0..kp).step_by(KC) {
            let pairs = KC.min(kp - p0);
            let packed_b = &mut packed_b[..pairs * n_panels * NR];
            pack_b(&rhs, k, n, p0, pairs, packed_b);
            let packed_b = &*packed_b;
            let load = accumulate || p0 > 0;
            let task = |t: usize| {
                let (mb, nt) = (t / n_tasks, t % n_tasks);
                let i0 = mb * MC;
                let rows = MC.min(m - i0);
                let (pj0, pj1) = (
                    nt * panels_per_task,
                    ((nt + 1) * panels_per_task).min(n_panels),
                );
                with_buf(&PACK_A, rows.div_ceil(MR) * pairs * MR, |packed_a| {
                    pack_a(&lhs, k, i0, rows, p0, pairs, packed_a);
                    for pj in pj0..pj1 {
                        let j0 = pj * NR;
                        let cols = (n - j0).min(NR);
                        let bp = &packed_b[pj * pairs * NR..(pj + 1) * pairs * NR];
                        for (pi, ap) in packed_a.chunks_exact(pairs * MR).enumerate() {
                            let r0 = i0 + pi * MR;
                            let rws = (m - r0).min(MR);
                            // SAFETY: rows r0..r0+rws and columns j0..j0+cols lie inside `dst`
                            // (checked above); tasks own disjoint row/column ranges; the kernel
                            // touches only those (masked loads and stores); the CPU was checked.
                            unsafe {
                                kernel(
                                    pairs,
                                    ap.as_ptr(),
                                    bp.as_ptr(),
                                    dst_ptr.at(r0 * dst_rs + j0),
                                    dst_rs,
                                    rws,
                                    cols,
                                    load,
                                );
                            }
                        }
                    }
                });
            };
            let tasks = m_blocks * n_tasks;
            if parallel && tasks > 1 {
                (0..tasks).into_par_iter().for_each(task);
            } else {
                (0..tasks).for_each(task);
            }
        }
    });
}

/// The MR×NR microkernel over `pairs` packed k pairs: `C[..rows][..cols] (+)= A·B`.
///
/// # Safety
/// The CPU has AVX-512F and AVX-512-BF16; `a` holds `pairs·MR` words and `b` `pairs·NR`; `c`
/// points at `rows ≤ MR` rows of `cols ≤ NR` writable floats, `rs` apart.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel(
    pairs: usize,
    a: *const u32,
    b: *const u32,
    c: *mut f32,
    rs: usize,
    rows: usize,
    cols: usize,
    load: bool,
) {
    use std::arch::x86_64::*;
    // SAFETY: the caller's contract covers every pointer below; `__m512i` and `__m512bh` are the
    // same 64 bytes.
    unsafe {
        let mut acc0 = [_mm512_setzero_ps(); MR];
        let mut acc1 = [_mm512_setzero_ps(); MR];
        for p in 0..pairs {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR) as *const _));
            let b1: __m512bh =
                std::mem::transmute(_mm512_loadu_si512(b.add(p * NR + 16) as *const _));
            let ap = a.add(p * MR);
            for i in 0..MR {
                let ai: __m512bh = std::mem::transmute(_mm512_set1_epi32(*ap.add(i) as i32));
                acc0[i] = _mm512_dpbf16_ps(acc0[i], ai, b0);
                acc1[i] = _mm512_dpbf16_ps(acc1[i], ai, b1);
            }
        }
        let m0: __mmask16 = if cols >= 16 {
            0xffff
        } else {
            ((1u32 << cols) - 1) as u16
        };
        let m1: __mmask16 = if cols >= 32 {
            0xffff
        } else if cols <= 16 {
            0
        } else {
            ((1u32 << (cols - 16)) - 1) as u16
        };
        for i in 0..MR {
            if i >= rows {
                break;
            }
            let c0 = c.add(i * rs);
            let c1 = c0.wrapping_add(16);
            let (mut v0, mut v1) = (acc0[i], acc1[i]);
            if load {
                v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, c0));
                v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, c1));
            }
            _mm512_mask_storeu_ps(c0, m0, v0);
            _mm512_mask_storeu_ps(c1, m1, v1);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel(
    _: usize,
    _: *const u32,
    _: *const u32,
    _: *mut f32,
    _: usize,
    _: usize,
    _: usize,
    _: bool,
) {
    unreachable!("bf16 GEMM needs AVX-512-BF16")
}

#[cfg(test)]
mod tests {
    use super::super::gemm::{MatRef, Precision, matmul_in};
    use super::*;

    /// Unit roundoff of bf16 (8 significant bits) and of f32.
    const U_BF16: f64 = 1.0 / 256.0;
    const U_F32: f64 = 1.0 / 16_777_216.0;

    fn skip_without_bf16() -> bool {
        if !supported() {
            eprintln!("SKIPPED: this CPU has no AVX-512-BF16");
            return true;
        }
        false
    }

    /// Deterministic values in [-1, 1), most of them not representable in bf16.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
            })
            .collect()
    }

    fn rounded(x: f32) -> f64 {
        from_bf16(to_bf16(x)) as f64
    }

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    /// One product through the dispatch, checked element by element against f64 references:
    /// with the operands rounded to bf16 (only f32 summation error allowed) and exact (bf16
    /// rounding allowed too). Returns the largest error against the exact product, in units of
    /// the allowed f32 summation error, to show the operands really were rounded.
    #[allow(clippy::too_many_arguments)]
    fn check(
        m: usize,
        n: usize,
        k: usize,
        lhs_t: bool,
        rhs_t: bool,
        lhs_cs: usize,
        accumulate: bool,
        threads: usize,
    ) -> f64 {
        // lhs: m×k, optionally stored transposed, optionally every lhs_cs-th column.
        let a = values(m * k * lhs_cs + 3, (m * 31 + k) as u64);
        let lhs = if lhs_t {
            MatRef::new(&a, 3, 1, m)
        } else {
            MatRef::new(&a, 3, k * lhs_cs, lhs_cs)
        };
        let b = values(k * n, (n * 17 + k) as u64 + 1);
        let rhs = if rhs_t {
            MatRef::rows_t(&b, k)
        } else {
            MatRef::rows(&b, n)
        };
        let dst_rs = n + 5;
        let sentinel = 7.5f32;
        let init = values(m * dst_rs, 99);
        let mut c: Vec<f32> = init
            .iter()
            .enumerate()
            .map(|(i, &v)| if i % dst_rs < n { v } else { sentinel })
            .collect();
        pool(threads).install(|| {
            matmul_in(
                Precision::Bf16,
                m,
                n,
                k,
                &mut c,
                dst_rs,
                accumulate,
                lhs,
                rhs,
            )
        });
        let at = |v: &MatRef<'_, f32>, i: usize, j: usize| v.data[v.offset + i * v.rs + j * v.cs];
        let mut worst_exact = 0.0f64;
        for i in 0..m {
            let gap = &c[dst_rs * i + n..dst_rs * (i + 1)];
            assert!(
                gap.iter().all(|&v| v == sentinel),
                "wrote outside the destination ({m}x{n}x{k})"
            );
            for j in 0..n {
                let c0 = if accumulate {
                    init[i * dst_rs + j] as f64
                } else {
                    0.0
                };
                let (mut exact, mut round, mut mag) = (c0, c0, c0.abs());
                for p in 0..k {
                    let (x, y) = (at(&lhs, i, p), at(&rhs, p, j));
                    exact += x as f64 * y as f64;
                    round += rounded(x) * rounded(y);
                    mag += (x as f64 * y as f64).abs();
                }
                let got = c[i * dst_rs + j] as f64;
                // f32 summation of k exact products and the initial value: γ_(k+2) · Σ|terms|,
                // with Σ|rounded products| ≤ (1 + U_BF16)² Σ|products|.
                let sum_err = (k + 2) as f64 * U_F32 * mag * (1.0 + U_BF16).powi(2);
                assert!(
                    (got - round).abs() <= sum_err,
                    "{m}x{n}x{k} ({i},{j}): {got} vs bf16 reference {round}, allowed {sum_err:e}"
                );
                // Each rounded product is within (2u + u²)|xy| of the exact one.
                let allowed = (2.0 * U_BF16 + U_BF16 * U_BF16) * mag + sum_err;
                assert!(
                    (got - exact).abs() <= allowed,
                    "{m}x{n}x{k} ({i},{j}): {got} vs exact {exact}, allowed {allowed:e}"
                );
                worst_exact = worst_exact.max((got - exact).abs() / sum_err.max(f64::MIN_POSITIVE));
            }
        }
        worst_exact
    }

    #[test]
    fn bf16_matmul_matches_f64_references_over_odd_shapes_and_views() {
        if skip_without_bf16() {
            return;
        }
        // Ragged m, n against MR = 12 and NR = 32, odd k, k across blocks of KC pairs, products
        // large enough to split over m, and small m with large k (split over n).
        let shapes = [
            (1, 1, 1),
            (1, 33, 2),
            (11, 15, 3),
            (12, 16, 4),
            (13, 17, 5),
            (25, 31, 7),
            (MC + 1, 64, 9),
            (37, 65, 2 * KC - 1),
            (5, 40, 2 * KC + 1),
            (200, 70, 600),
            (9, 128, 3001),
            (3, 7, 4 * KC + 3),
        ];
        let mut worst = 0.0f64;
        for (si, &(m, n, k)) in shapes.iter().enumerate() {
            for threads in [1, 2] {
                for accumulate in [false, true] {
                    let (lhs_t, rhs_t, cs) = match si % 3 {
                        0 => (false, false, 1),
                        1 => (true, false, 1),
                        _ => (false, true, 2),
                    };
                    worst = worst.max(check(m, n, k, lhs_t, rhs_t, cs, accumulate, threads));
                    worst = worst.max(check(m, n, k, !lhs_t, !rhs_t, 1, accumulate, threads));
                }
            }
        }
        // The operands really are rounded: plain f32 products would stay within the summation
        // error of the exact product.
        assert!(worst > 10.0, "bf16 results too close to f32 ({worst})");
    }

    #[test]
    fn bf16_matmul_is_deterministic_across_runs_and_thread_counts() {
        if skip_without_bf16() {
            return;
        }
        let (m, n, k) = (300, 96, 777);
        let a = values(m * k, 1);
        let b = values(k * n, 2);
        let run = |threads: usize| {
            let mut c = vec![0.0f32; m * n];
            pool(threads).install(|| {
                matmul_in(
                    Precision::Bf16,
                    m,
                    n,
                    k,
                    &mut c,
                    n,
                    false,
                    MatRef::rows(&a, k),
                    MatRef::rows(&b, n),
                )
            });
            c
        };
        let one = run(1);
        assert_eq!(one, run(1));
        assert_eq!(one, run(2));
        assert_eq!(one, run(3));
    }

    #[test]
    fn bf16_rounding_is_nearest_even_and_matches_the_cpu() {
        let one = 1.0f32.to_bits();
        // Halfway between 1 and the next bf16 (1 + 2^-7): ties to the even 1.0.
        assert_eq!(to_bf16(f32::from_bits(one + 0x8000)), 0x3f80);
        // Halfway above an odd significand rounds up to the even one.
        assert_eq!(to_bf16(f32::from_bits(one + 0x1_8000)), 0x3f82);
        assert_eq!(to_bf16(f32::from_bits(one + 0x8001)), 0x3f81);
        assert_eq!(to_bf16(f32::from_bits(one + 0x7fff)), 0x3f80);
        assert_eq!(to_bf16(-2.0), 0xc000);
        assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
        assert_eq!(from_bf16(to_bf16(f32::MAX)), f32::INFINITY);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        #[cfg(target_arch = "x86_64")]
        if supported() {
            let xs = values(4096, 5);
            // Normal values only: the CPU flushes subnormals to zero.
            let xs: Vec<f32> = xs.iter().map(|x| x * 1e3).collect();
            for chunk in xs.chunks_exact(16) {
                // SAFETY: AVX-512-BF16 was detected.
                let hw = unsafe { cvt_cpu(chunk) };
                for (x, h) in chunk.iter().zip(hw) {
                    assert_eq!(to_bf16(*x), h, "{x}");
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn cvt_cpu(x: &[f32]) -> [u16; 16] {
        use std::arch::x86_64::*;
        // SAFETY: x holds 16 floats; __m256bh and [u16; 16] are the same 32 bytes.
        unsafe { std::mem::transmute(_mm512_cvtneps_pbh(_mm512_loadu_ps(x.as_ptr()))) }
    }
}

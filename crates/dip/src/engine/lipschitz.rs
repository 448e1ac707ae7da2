//! Largest singular values of weight matrices, for Shi et al.'s Lipschitz-controlled layers
//! (`W ← W / max(1, σ_max(W)/λ)`).
//!
//! σ_max comes from a power iteration on `WᵀW` run to convergence at every call, warm-started
//! from the previous call's top right singular vector. Warm starting makes the usual case a few
//! iterations; running to convergence (rather than one step per training step, as spectral
//! normalisation does) keeps the estimate exact to the tolerance instead of drifting behind the
//! weights. Convergence is judged by the eigen-residual `‖WᵀW v − σ² v‖ ≤ 10⁻⁸ σ²`, which
//! bounds the distance of `σ²` to an eigenvalue; when the two largest singular values nearly
//! tie, the iteration may stop at the cap, and the estimate then lies between them (its error
//! is at most their gap).

use super::Float;

/// Relative eigen-residual below which the iteration stops.
const TOLERANCE: f64 = 1e-8;
/// Most iterations per call.
const MAX_ITERATIONS: usize = 1000;

/// σ_max of the row-major `rows × cols` matrix `a`. `v` (length `cols`) is the starting vector
/// and receives the top right singular vector; a zero or wrongly sized `v` is reset.
pub fn spectral_norm<T: Float>(a: &[T], rows: usize, cols: usize, v: &mut Vec<f64>) -> f64 {
    assert_eq!(a.len(), rows * cols, "matrix size mismatch");
    if rows == 0 || cols == 0 {
        return 0.0;
    }
    if v.len() != cols || v.iter().all(|&x| x == 0.0) || !v.iter().all(|x| x.is_finite()) {
        // A fixed, dense start: not orthogonal to the top vector but in degenerate cases.
        *v = (0..cols)
            .map(|i| 1.0 + 0.01 * ((i * 7919) % 97) as f64)
            .collect();
    }
    let mut u = vec![0.0f64; rows];
    let mut w = vec![0.0f64; cols];
    let mut sigma = 0.0f64;
    for _ in 0..MAX_ITERATIONS {
        let nv = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if nv == 0.0 {
            return 0.0;
        }
        v.iter_mut().for_each(|x| *x /= nv);
        // u = A v
        for (r, ur) in u.iter_mut().enumerate() {
            let row = &a[r * cols..(r + 1) * cols];
            *ur = row
                .iter()
                .zip(v.iter())
                .map(|(&w, &x)| w.to_f64() * x)
                .sum();
        }
        let s = u.iter().map(|x| x * x).sum::<f64>().sqrt();
        // w = Aᵀ u = AᵀA v, and the residual of (s², v) as an eigenpair of AᵀA.
        w.iter_mut().for_each(|x| *x = 0.0);
        for (r, &ur) in u.iter().enumerate() {
            let row = &a[r * cols..(r + 1) * cols];
            for (x, &wv) in w.iter_mut().zip(row) {
                *x += wv.to_f64() * ur;
            }
        }
        let s2 = s * s;
        let residual = w
            .iter()
            .zip(v.iter())
            .map(|(a, b)| (a - s2 * b) * (a - s2 * b))
            .sum::<f64>()
            .sqrt();
        sigma = s;
        v.copy_from_slice(&w);
        if residual <= TOLERANCE * s2 || s2 == 0.0 {
            break;
        }
    }
    sigma
}

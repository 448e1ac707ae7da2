//! Adam over one flat parameter buffer, with PyTorch's update order (single-tensor CPU path).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::Float;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// L2 penalty as PyTorch's `Adam(weight_decay=…)`: `g + wd · p` replaces the gradient.
    #[serde(default)]
    pub weight_decay: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// Adam state: first and second moments and the step count.
#[derive(Debug, Clone, PartialEq)]
pub struct Adam<T> {
    pub cfg: AdamConfig,
    pub m: Vec<T>,
    pub v: Vec<T>,
    pub t: u64,
}

const CHUNK: usize = 1 << 14;

impl<T: Float> Adam<T> {
    pub fn new(n: usize, cfg: AdamConfig) -> Self {
        Adam {
            cfg,
            m: vec![T::ZERO; n],
            v: vec![T::ZERO; n],
            t: 0,
        }
    }

    /// One update: `p -= lr/(1-β1^t) · m / (sqrt(v)/sqrt(1-β2^t) + eps)`.
    pub fn step(&mut self, params: &mut [T], grads: &[T]) {
        self.t += 1;
        let c = self.cfg;
        let bc1 = 1.0 - c.beta1.powi(self.t as i32);
        let bc2 = 1.0 - c.beta2.powi(self.t as i32);
        let step_size = T::from_f64(c.lr / bc1);
        let bc2_sqrt = T::from_f64(bc2.sqrt());
        let b2 = T::from_f64(c.beta2);
        let (w1, w2) = (T::from_f64(1.0 - c.beta1), T::from_f64(1.0 - c.beta2));
        let eps = T::from_f64(c.eps);
        let wd = T::from_f64(c.weight_decay);
        let decay = c.weight_decay != 0.0;
        type Chunks<'a, T> = (((&'a mut [T], &'a [T]), &'a mut [T]), &'a mut [T]);
        let body = |(((p, g), m), v): Chunks<'_, T>| {
            for i in 0..p.len() {
                let gi = if decay { g[i] + wd * p[i] } else { g[i] };
                // lerp, as torch: m + (1-β1)(g - m)
                m[i] += w1 * (gi - m[i]);
                v[i] = v[i] * b2 + w2 * gi * gi;
                let denom = v[i].sqrt() / bc2_sqrt + eps;
                p[i] -= step_size * (m[i] / denom);
            }
        };
        params
            .par_chunks_mut(CHUNK)
            .zip(grads.par_chunks(CHUNK))
            .zip(self.m.par_chunks_mut(CHUNK))
            .zip(self.v.par_chunks_mut(CHUNK))
            .for_each(body);
    }
}

/// Per element, how far the first Adam step (zero moments) may land from a reference step when
/// the gradient it used is known only to within `δ = tol · scale_g`, where `scale_g` is the
/// largest |reference gradient|, or `floor_scale` when that is under `unresolved` (gradients that
/// are zero but for rounding). The step is `lr·g/(|g| + eps)`, whose slope is
/// `lr·eps/(|g| + eps)²`, so δ moves it by at most that much at `|g| − δ` (two steps if δ can flip
/// the sign); on top comes `tol` relative to the largest |reference parameter| (at least `lr`).
/// Used by the reference-tensor checks on the CPU and on the GPU.
pub fn first_step_allowance(
    grad: &[f64],
    reference: &[f64],
    tol: f64,
    floor_scale: f64,
    unresolved: f64,
    lr: f64,
    eps: f64,
) -> Vec<f64> {
    let grad_max = grad.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let delta = tol
        * if grad_max < unresolved {
            floor_scale
        } else {
            grad_max
        };
    let scale = reference.iter().fold(lr, |m, v| m.max(v.abs()));
    grad.iter()
        .map(|g| {
            let gmin = (g.abs() - delta).max(0.0);
            let propagated = (lr * delta * eps / (gmin + eps).powi(2)).min(2.0 * lr);
            tol * scale + propagated
        })
        .collect()
}

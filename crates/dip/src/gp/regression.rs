//! Gaussian-process regression on images with a stationary prior: denoising by the Wiener
//! filter, inpainting by conjugate gradients, and hyperparameters by marginal likelihood.
//!
//! The model of each channel is `y = x + n`, `x ~ GP(m, a·k)`, `n ~ N(0, σ²I)`, with `m` the
//! mean of the observed samples, `k` a kernel normalised to unit variance and `a` its variance.
//!
//! - **Denoising** observes every pixel. On a periodic grid the covariance is circulant, so the
//!   posterior mean `m + aK(aK + σ²I)⁻¹(y − m)` is the Wiener filter
//!   `F⁻¹[aλ / (aλ + σ²) · F(y − m)]`: O(N log N). The image is first extended by mirror
//!   symmetry to twice its size, which makes it periodic without jumps at the borders.
//! - **Inpainting** observes the pixels of a mask, `O`. The posterior mean is
//!   `m + aK_{·O} α` with `(aK_{OO} + σ²I) α = y_O − m`, solved by conjugate gradients whose
//!   matrix-vector product is a convolution by the kernel: scatter onto a zero-padded grid
//!   (large enough that no correlation wraps around), FFT, multiply, inverse FFT, gather.
//! - **Hyperparameters** (`a`; and the lengthscale `ℓ` of the RBF kernel) maximise the
//!   marginal likelihood: exactly in the Fourier domain for denoising (Whittle's likelihood,
//!   exact for a circulant covariance), and by Cholesky factorisations on a few blocks of
//!   observed pixels for inpainting.

use rayon::prelude::*;
use serde::Serialize;

use super::grid::Grid;
use super::kernel::{Kernel, TorusKernel};
use crate::image::Image;
use crate::{Error, Result};

/// How the image is made periodic for the Fourier-domain filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boundary {
    /// Taken as is: opposite borders are neighbours.
    Periodic,
    /// Mirrored to twice its size first (no jump at the borders).
    Symmetric,
}

/// Which prior, and what is fitted.
#[derive(Debug, Clone)]
pub enum Prior {
    /// A given kernel shape; its variance `a` is fitted (or given).
    Kernel(Kernel),
    /// The RBF kernel; lengthscale and variance are fitted.
    Rbf,
}

/// The fitted prior.
#[derive(Debug, Clone, Serialize)]
pub struct GpFit {
    pub kernel: String,
    /// The RBF lengthscale in pixels.
    pub lengthscale: Option<f64>,
    /// The prior variance `a`.
    pub variance: f64,
    /// The log marginal likelihood at the fit (summed over channels; for inpainting, over the
    /// blocks it was computed on).
    pub log_likelihood: f64,
    /// The prior mean of each channel.
    pub mean: Vec<f64>,
}

/// The conjugate-gradient settings.
#[derive(Debug, Clone, Copy)]
pub struct CgConfig {
    /// Stop when `‖b − Ax‖ / ‖b‖` falls below this.
    pub tol: f64,
    pub max_iters: usize,
}

impl Default for CgConfig {
    fn default() -> Self {
        CgConfig {
            tol: 1e-6,
            max_iters: 5000,
        }
    }
}

/// How conjugate gradients ended (the worst channel).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CgReport {
    pub iterations: usize,
    /// `‖b − Ax‖ / ‖b‖`, recomputed from the solution.
    pub relative_residual: f64,
    pub converged: bool,
}

/// Lengthscales the RBF search starts from, in pixels.
const RBF_LENGTHSCALES: [f64; 12] = [
    0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0, 5.6, 8.0, 11.3, 16.0,
];

/// Golden-section search for the maximum of `f` on `[lo, hi]`, after a coarse scan of `n`
/// points locates its bracket. Returns `(argmax, max)`.
fn maximise(f: impl Fn(f64) -> f64, lo: f64, hi: f64, n: usize) -> (f64, f64) {
    let xs: Vec<f64> = (0..n)
        .map(|i| lo + (hi - lo) * i as f64 / (n - 1) as f64)
        .collect();
    let vals: Vec<f64> = xs.iter().map(|&x| f(x)).collect();
    let best = (0..n)
        .max_by(|&i, &j| {
            vals[i]
                .partial_cmp(&vals[j])
                .unwrap_or(std::cmp::Ordering::Equal)
        })
        .unwrap_or(0);
    let (mut a, mut b) = (xs[best.saturating_sub(1)], xs[(best + 1).min(n - 1)]);
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let (mut c, mut d) = (b - g * (b - a), a + g * (b - a));
    let (mut fc, mut fd) = (f(c), f(d));
    for _ in 0..40 {
        if fc > fd {
            b = d;
            d = c;
            fd = fc;
            c = b - g * (b - a);
            fc = f(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + g * (b - a);
            fd = f(d);
        }
    }
    let (x, v) = if fc > fd { (c, fc) } else { (d, fd) };
    if v >= vals[best] {
        (x, v)
    } else {
        (xs[best], vals[best])
    }
}

/// Log of the prior variance searched over: `[1e-6, 1]` (images live in `[0, 1]`).
const LOG_VAR_RANGE: (f64, f64) = (-13.8, 0.0);

/// The prior variance: `fixed`, or the maximiser of `loglik` over [`LOG_VAR_RANGE`] after a
/// scan of `scan` points. Returns `(variance, log-likelihood)`.
fn fit_variance(fixed: Option<f64>, scan: usize, loglik: impl Fn(f64) -> f64) -> (f64, f64) {
    match fixed {
        Some(a) => (a, loglik(a)),
        None => {
            let (la, ll) = maximise(
                |la| loglik(la.exp()),
                LOG_VAR_RANGE.0,
                LOG_VAR_RANGE.1,
                scan,
            );
            (la.exp(), ll)
        }
    }
}

/// The fitted prior: the kernel (unit variance), the RBF lengthscale, the variance and the
/// log-likelihood. `fit(kernel)` fits the variance for one kernel shape; for the RBF the
/// lengthscale maximising it is searched over [`RBF_LENGTHSCALES`].
fn fit_prior(
    prior: &Prior,
    max_radius: usize,
    fit: impl Fn(&Kernel) -> (f64, f64),
) -> Result<(Kernel, Option<f64>, f64, f64)> {
    Ok(match prior {
        Prior::Kernel(k) => {
            let k = k.normalised();
            let (a, ll) = fit(&k);
            (k, None, a, ll)
        }
        Prior::Rbf => {
            let eval =
                |ell: f64| -> Result<(f64, f64)> { Ok(fit(&Kernel::rbf(ell, 1.0, max_radius)?)) };
            let (lo, hi) = (RBF_LENGTHSCALES[0].ln(), RBF_LENGTHSCALES[11].ln());
            let (lell, _) = maximise(
                |le| eval(le.exp()).map_or(f64::NEG_INFINITY, |(_, ll)| ll),
                lo,
                hi,
                RBF_LENGTHSCALES.len(),
            );
            let ell = lell.exp();
            let (a, ll) = eval(ell)?;
            (Kernel::rbf(ell, 1.0, max_radius)?, Some(ell), a, ll)
        }
    })
}

fn check_sigma(sigma: f64) -> Result<f64> {
    if !(sigma.is_finite() && sigma > 0.0) {
        return Err(Error::invalid(format!(
            "the noise level must be positive, got {sigma}"
        )));
    }
    Ok(sigma)
}

/// Channel `c` of `img` minus `mean`, extended as `boundary` says: `(field, width, height)`.
fn centred_field(img: &Image, c: usize, mean: f64, boundary: Boundary) -> (Vec<f64>, usize, usize) {
    let (w, h, ch) = (img.width, img.height, img.channels);
    let at = |x: usize, y: usize| img.data[(y * w + x) * ch + c] as f64 - mean;
    match boundary {
        Boundary::Periodic => {
            let f = (0..w * h).map(|i| at(i % w, i / w)).collect();
            (f, w, h)
        }
        Boundary::Symmetric => {
            let (w2, h2) = (2 * w, 2 * h);
            let fold = |i: usize, n: usize| if i < n { i } else { 2 * n - 1 - i };
            let f = (0..w2 * h2)
                .map(|i| at(fold(i % w2, w), fold(i / w2, h)))
                .collect();
            (f, w2, h2)
        }
    }
}

fn channel_means(img: &Image, keep: Option<&[bool]>) -> Vec<f64> {
    let ch = img.channels;
    (0..ch)
        .map(|c| {
            let (mut s, mut n) = (0.0, 0usize);
            for p in 0..img.width * img.height {
                if keep.is_none_or(|k| k[p]) {
                    s += img.data[p * ch + c] as f64;
                    n += 1;
                }
            }
            s / n.max(1) as f64
        })
        .collect()
}

/// Periodograms `|Y_k|² / N` of every channel's centred field.
struct Periodograms {
    width: usize,
    height: usize,
    spectra: Vec<Vec<rustfft::num_complex::Complex64>>,
    power: Vec<Vec<f64>>,
}

fn periodograms(y: &Image, mean: &[f64], boundary: Boundary) -> Periodograms {
    let mut out = Periodograms {
        width: 0,
        height: 0,
        spectra: Vec::new(),
        power: Vec::new(),
    };
    for (c, &m) in mean.iter().enumerate() {
        let (f, w, h) = centred_field(y, c, m, boundary);
        let mut grid = Grid::new(w, h);
        let mut spec = Vec::new();
        grid.forward_real(&f, &mut spec);
        let n = (w * h) as f64;
        out.power
            .push(spec.iter().map(|z| z.norm_sqr() / n).collect());
        out.spectra.push(spec);
        out.width = w;
        out.height = h;
    }
    out
}

/// Whittle's log-likelihood of the periodograms under eigenvalues `a·λ + σ²` (exact for a
/// circulant covariance), summed over channels.
fn whittle(p: &Periodograms, lambda: &[f64], a: f64, s2: f64) -> f64 {
    let n = lambda.len() as f64;
    p.power
        .iter()
        .map(|pw| {
            let mut ll = 0.0;
            for (&q, &l) in pw.iter().zip(lambda) {
                let v = a * l + s2;
                ll += q / v + v.ln();
            }
            -0.5 * (ll + n * (2.0 * std::f64::consts::PI).ln())
        })
        .sum()
}

/// Denoises `y` (white Gaussian noise of std `sigma`, in `[0, 1]` units) with the GP posterior
/// mean, fitting the prior's hyperparameters by marginal likelihood. `variance` fixes the prior
/// variance instead of fitting it.
pub fn gp_denoise(
    y: &Image,
    prior: &Prior,
    sigma: f64,
    variance: Option<f64>,
    boundary: Boundary,
) -> Result<(Image, GpFit)> {
    let s2 = check_sigma(sigma)?.powi(2);
    if y.data.is_empty() {
        return Err(Error::invalid("the image is empty"));
    }
    let mean = channel_means(y, None);
    let p = periodograms(y, &mean, boundary);
    let (w, h) = (p.width, p.height);
    let (kernel, lengthscale, a, ll) = fit_prior(prior, 4 * w.max(h), |k| {
        let lambda = k.torus_spectrum(w, h);
        fit_variance(variance, 29, |a| whittle(&p, &lambda, a, s2))
    })?;
    let lambda = kernel.torus_spectrum(w, h);
    let mut out = Image::zeros(y.width, y.height, y.channels).with_bit_depth(y.bit_depth);
    let mut grid = Grid::new(w, h);
    for (c, spec) in p.spectra.iter().enumerate() {
        let mut s = spec.clone();
        for (z, &l) in s.iter_mut().zip(&lambda) {
            *z *= a * l / (a * l + s2);
        }
        grid.inverse(&mut s);
        for yy in 0..y.height {
            for xx in 0..y.width {
                out.data[(yy * y.width + xx) * y.channels + c] =
                    (s[yy * w + xx].re + mean[c]) as f32;
            }
        }
    }
    Ok((
        out,
        GpFit {
            kernel: kernel.name.clone(),
            lengthscale,
            variance: a,
            log_likelihood: ll,
            mean,
        },
    ))
}

/// Cholesky factorisation in place (lower triangle) of an `n × n` row-major matrix; `None` if
/// it is not positive definite.
fn cholesky(a: &mut [f64], n: usize) -> Option<()> {
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d -= a[j * n + k] * a[j * n + k];
        }
        if d.is_nan() || d <= 0.0 {
            return None;
        }
        let d = d.sqrt();
        a[j * n + j] = d;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = s / d;
        }
    }
    Some(())
}

/// `log N(b; 0, aK + s2·I)` by Cholesky, `-inf` if the matrix is not positive definite.
fn gaussian_loglik(k: &[f64], n: usize, a: f64, s2: f64, b: &[f64]) -> f64 {
    let mut m: Vec<f64> = k.iter().map(|v| a * v).collect();
    for i in 0..n {
        m[i * n + i] += s2;
    }
    if cholesky(&mut m, n).is_none() {
        return f64::NEG_INFINITY;
    }
    // Solve L z = b; then bᵀΣ⁻¹b = |z|².
    let mut z = b.to_vec();
    let mut logdet = 0.0;
    for i in 0..n {
        let mut s = z[i];
        for k in 0..i {
            s -= m[i * n + k] * z[k];
        }
        z[i] = s / m[i * n + i];
        logdet += 2.0 * m[i * n + i].ln();
    }
    let q: f64 = z.iter().map(|v| v * v).sum();
    -0.5 * (q + logdet + n as f64 * (2.0 * std::f64::consts::PI).ln())
}

/// Pixels (x, y) of up to four blocks of observed pixels for the marginal likelihood: the
/// centres of the image's quadrants, `side × side` each, at most `max_points` per block
/// (every k-th observed pixel).
fn likelihood_blocks(
    w: usize,
    h: usize,
    keep: &[bool],
    side: usize,
    max_points: usize,
) -> Vec<Vec<(usize, usize)>> {
    let side = side.min(w).min(h);
    let anchors: Vec<(usize, usize)> = if w < 2 * side || h < 2 * side {
        vec![((w - side) / 2, (h - side) / 2)]
    } else {
        [(1, 1), (3, 1), (1, 3), (3, 3)]
            .iter()
            .map(|&(fx, fy)| {
                (
                    (fx * w / 4).saturating_sub(side / 2).min(w - side),
                    (fy * h / 4).saturating_sub(side / 2).min(h - side),
                )
            })
            .collect()
    };
    anchors
        .into_iter()
        .map(|(x0, y0)| {
            let pts: Vec<(usize, usize)> = (y0..y0 + side)
                .flat_map(|y| (x0..x0 + side).map(move |x| (x, y)))
                .filter(|&(x, y)| keep[y * w + x])
                .collect();
            let step = pts.len().div_ceil(max_points).max(1);
            pts.into_iter().step_by(step).collect()
        })
        .filter(|b: &Vec<_>| !b.is_empty())
        .collect()
}

/// Fills the pixels of `y` where `keep` is false by GP regression on the others (noise of std
/// `sigma` on the observed ones; a small value such as 1/255 for noiseless inpainting).
pub fn gp_inpaint(
    y: &Image,
    keep: &[bool],
    prior: &Prior,
    sigma: f64,
    variance: Option<f64>,
    cg: CgConfig,
) -> Result<(Image, GpFit, CgReport)> {
    let s2 = check_sigma(sigma)?.powi(2);
    let (w, h, ch) = (y.width, y.height, y.channels);
    if keep.len() != w * h {
        return Err(Error::invalid(format!(
            "the mask has {} pixels, the image {}",
            keep.len(),
            w * h
        )));
    }
    if !keep.iter().any(|&k| k) {
        return Err(Error::invalid(
            "the mask keeps no pixel: there is nothing to regress on",
        ));
    }
    let mean = channel_means(y, Some(keep));
    let blocks = likelihood_blocks(w, h, keep, 24, 256);
    // Centred observations of each block and channel.
    let block_obs: Vec<Vec<Vec<f64>>> = blocks
        .iter()
        .map(|b| {
            (0..ch)
                .map(|c| {
                    b.iter()
                        .map(|&(x, yy)| y.data[(yy * w + x) * ch + c] as f64 - mean[c])
                        .collect()
                })
                .collect()
        })
        .collect();
    // The grid: padded so that no two image pixels are linked across the wrap.
    let grid_for = |k: &Kernel| (w + k.radius + 1, h + k.radius + 1);
    let (kernel, lengthscale, a, ll) = fit_prior(prior, 4 * w.max(h), |k| {
        let (gw, gh) = grid_for(k);
        let tk = TorusKernel::new(k, gw, gh);
        // Each block's covariance depends on the kernel only: built once, factorised per trial.
        let mats: Vec<Vec<f64>> = blocks
            .par_iter()
            .map(|b| {
                let n = b.len();
                let mut m = vec![0.0; n * n];
                for (i, &(xi, yi)) in b.iter().enumerate() {
                    for (j, &(xj, yj)) in b.iter().enumerate() {
                        m[i * n + j] = tk.at(yi as isize - yj as isize, xi as isize - xj as isize);
                    }
                }
                m
            })
            .collect();
        fit_variance(variance, 15, |a| {
            mats.par_iter()
                .zip(&blocks)
                .zip(&block_obs)
                .map(|((m, b), obs)| {
                    obs.iter()
                        .map(|o| gaussian_loglik(m, b.len(), a, s2, o))
                        .sum::<f64>()
                })
                .collect::<Vec<f64>>()
                .iter()
                .sum()
        })
    })?;
    let (gw, gh) = grid_for(&kernel);
    let tk = TorusKernel::new(&kernel, gw, gh);
    let spectrum: Vec<f64> = tk.spectrum.iter().map(|l| a * l).collect();
    let observed: Vec<usize> = (0..w * h).filter(|&p| keep[p]).collect();
    let cell = |p: usize| (p / w) * gw + p % w;

    let results: Vec<(Vec<f64>, CgReport)> = (0..ch)
        .into_par_iter()
        .map(|c| {
            let b: Vec<f64> = observed
                .iter()
                .map(|&p| y.data[p * ch + c] as f64 - mean[c])
                .collect();
            let mut grid = Grid::new(gw, gh);
            let mut work = Vec::new();
            let mut field = vec![0.0; gw * gh];
            let mut conv = vec![0.0; gw * gh];
            // v ↦ (aK_OO + σ²I) v.
            let mut apply = |v: &[f64], out: &mut [f64]| {
                field.fill(0.0);
                for (&p, &vi) in observed.iter().zip(v) {
                    field[cell(p)] = vi;
                }
                grid.filter(&field, &spectrum, &mut conv, &mut work);
                for ((o, &p), &vi) in out.iter_mut().zip(&observed).zip(v) {
                    *o = conv[cell(p)] + s2 * vi;
                }
            };
            let n = b.len();
            let bnorm = b.iter().map(|v| v * v).sum::<f64>().sqrt();
            let mut x = vec![0.0; n];
            let mut r = b.clone();
            let mut p = r.clone();
            let mut ap = vec![0.0; n];
            let mut rs: f64 = r.iter().map(|v| v * v).sum();
            let mut iterations = 0;
            while iterations < cg.max_iters && rs.sqrt() > cg.tol * bnorm {
                apply(&p, &mut ap);
                let pap: f64 = p.iter().zip(&ap).map(|(u, v)| u * v).sum();
                if pap <= 0.0 {
                    break;
                }
                let alpha = rs / pap;
                for i in 0..n {
                    x[i] += alpha * p[i];
                    r[i] -= alpha * ap[i];
                }
                let rs_new: f64 = r.iter().map(|v| v * v).sum();
                let beta = rs_new / rs;
                for i in 0..n {
                    p[i] = r[i] + beta * p[i];
                }
                rs = rs_new;
                iterations += 1;
            }
            // The true residual of the solution, not the recurrence's.
            apply(&x, &mut ap);
            let res = ap
                .iter()
                .zip(&b)
                .map(|(u, v)| (v - u) * (v - u))
                .sum::<f64>()
                .sqrt();
            let relative_residual = if bnorm > 0.0 { res / bnorm } else { 0.0 };
            // The posterior mean everywhere: m + aK_{·O} α.
            field.fill(0.0);
            for (&p, &xi) in observed.iter().zip(&x) {
                field[cell(p)] = xi;
            }
            grid.filter(&field, &spectrum, &mut conv, &mut work);
            let img: Vec<f64> = (0..w * h).map(|p| conv[cell(p)] + mean[c]).collect();
            (
                img,
                CgReport {
                    iterations,
                    relative_residual,
                    converged: relative_residual <= cg.tol,
                },
            )
        })
        .collect();
    let mut out = Image::zeros(w, h, ch).with_bit_depth(y.bit_depth);
    let mut report = CgReport {
        iterations: 0,
        relative_residual: 0.0,
        converged: true,
    };
    for (c, (img, rep)) in results.into_iter().enumerate() {
        for (p, v) in img.into_iter().enumerate() {
            out.data[p * ch + c] = v as f32;
        }
        report.iterations = report.iterations.max(rep.iterations);
        report.relative_residual = report.relative_residual.max(rep.relative_residual);
        report.converged &= rep.converged;
    }
    Ok((
        out,
        GpFit {
            kernel: kernel.name.clone(),
            lengthscale,
            variance: a,
            log_likelihood: ll,
            mean,
        },
        report,
    ))
}

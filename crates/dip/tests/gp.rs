//! The Gaussian-process view: Monte Carlo prior convergence, the Wiener filter and CG
//! inpainting against dense closed forms, the marginal likelihood, band probes and SGLD.

use dip::fit::{FitConfig, SgldConfig, fit_denoise};
use dip::gp::rates::band_probe;
use dip::gp::{
    Boundary, CgConfig, Kernel, Prior, PriorConfig, TorusKernel, gp_denoise, gp_inpaint,
    predict_half_times, sample_prior,
};
use dip::image::Image;
use dip::nets::{Arch, SkipSpec};
use dip::spectral::{BandSpacing, Bands};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;

fn tiny_skip() -> Arch {
    let mut s = SkipSpec::uniform(4, 1, 2, 8, 2);
    s.need_1x1_up = false;
    Arch::Skip(s)
}

fn random_image(w: usize, h: usize, seed: u64) -> Image {
    let mut r = Pcg64Mcg::seed_from_u64(seed);
    Image::new(w, h, 1, (0..w * h).map(|_| r.random::<f32>()).collect())
}

/// Dense `n × n` solve by Gaussian elimination with partial pivoting.
fn solve(mut a: Vec<f64>, mut b: Vec<f64>, n: usize) -> Vec<f64> {
    for c in 0..n {
        let p = (c..n)
            .max_by(|&i, &j| a[i * n + c].abs().total_cmp(&a[j * n + c].abs()))
            .unwrap();
        for k in 0..n {
            a.swap(c * n + k, p * n + k);
        }
        b.swap(c, p);
        for r in c + 1..n {
            let f = a[r * n + c] / a[c * n + c];
            for k in c..n {
                a[r * n + k] -= f * a[c * n + k];
            }
            b[r] -= f * b[c];
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        let s: f64 = (r + 1..n).map(|k| a[r * n + k] * x[k]).sum();
        x[r] = (b[r] - s) / a[r * n + r];
    }
    x
}

/// The covariance matrix of pixels `pts` under a torus kernel.
fn cov_matrix(tk: &TorusKernel, pts: &[(usize, usize)]) -> Vec<f64> {
    let n = pts.len();
    let mut k = vec![0.0; n * n];
    for (i, &(xi, yi)) in pts.iter().enumerate() {
        for (j, &(xj, yj)) in pts.iter().enumerate() {
            k[i * n + j] = tk.at(yi as isize - yj as isize, xi as isize - xj as isize);
        }
    }
    k
}

fn kernel_error(a: &Kernel, b: &Kernel, r: isize) -> f64 {
    let mut e = 0.0;
    for dy in -r..=r {
        for dx in -r..=r {
            e += (a.at(dy, dx) - b.at(dy, dx)).powi(2);
        }
    }
    e.sqrt()
}

#[test]
fn monte_carlo_covariance_error_falls_as_one_over_root_n() {
    let arch = tiny_skip();
    let prior = |samples: usize, seed: u64| {
        sample_prior(
            &arch,
            &PriorConfig {
                samples,
                size: 16,
                seed,
                radius: Some(4),
                ..PriorConfig::default()
            },
        )
        .unwrap()
        .kernel
    };
    let reference = prior(2048, 1);
    let ns = [16usize, 64, 256];
    // Average the error over independent draws at each N to steady the slope.
    let errs: Vec<f64> = ns
        .iter()
        .map(|&n| {
            let draws = 1024 / n;
            let e2: f64 = (0..draws as u64)
                .map(|d| kernel_error(&prior(n, 100 + d * 7919 + n as u64), &reference, 4).powi(2))
                .sum::<f64>()
                / draws as f64;
            e2.sqrt()
        })
        .collect();
    // Least-squares slope of log error against log N.
    let xs: Vec<f64> = ns.iter().map(|&n| (n as f64).ln()).collect();
    let ys: Vec<f64> = errs.iter().map(|e| e.ln()).collect();
    let (mx, my) = (xs.iter().sum::<f64>() / 3.0, ys.iter().sum::<f64>() / 3.0);
    let slope = xs
        .iter()
        .zip(&ys)
        .map(|(x, y)| (x - mx) * (y - my))
        .sum::<f64>()
        / xs.iter().map(|x| (x - mx).powi(2)).sum::<f64>();
    assert!(
        (-0.75..=-0.3).contains(&slope),
        "error {errs:?} for N = {ns:?}: slope {slope:.3}, expected about -0.5"
    );
    assert!(errs[2] < errs[0] / 2.5, "{errs:?}");
}

#[test]
fn prior_outputs_are_deterministic_and_the_kernel_is_symmetric() {
    let arch = tiny_skip();
    let cfg = PriorConfig {
        samples: 12,
        size: 16,
        seed: 3,
        ..PriorConfig::default()
    };
    let a = sample_prior(&arch, &cfg).unwrap();
    let b = sample_prior(&arch, &cfg).unwrap();
    assert_eq!(a.kernel, b.kernel);
    assert_eq!(a.kernel.radius, 8);
    for dy in -8..=8isize {
        for dx in -8..=8isize {
            assert_eq!(a.kernel.at(dy, dx), a.kernel.at(-dy, -dx));
        }
    }
    // c(0) is the variance of the outputs about their mean.
    assert!((a.kernel.variance() - a.variance).abs() < 1e-9 * a.variance.max(1e-30) + 1e-12);
    assert_eq!(a.anchors.len(), 9);
    assert!(
        a.anchors
            .iter()
            .all(|x| x.residual.is_finite() && x.mc_floor.is_finite())
    );
}

#[test]
fn torus_spectrum_is_nonnegative_and_its_mean_is_the_variance() {
    // The trace of the circulant matrix is N·c(0): the mean eigenvalue is the variance. An
    // RBF stored out to 4ℓ has only tiny negative eigenvalues from the truncation, so clipping
    // them moves the trace by less than 1e-5 of it; a kernel cut at ℓ would move it far more.
    let k = Kernel::rbf(1.7, 0.3, 64).unwrap();
    let s = k.torus_spectrum(32, 24);
    assert!(s.iter().all(|&v| v >= 0.0));
    let mean = s.iter().sum::<f64>() / s.len() as f64;
    assert!((mean / 0.3 - 1.0).abs() < 1e-5, "mean eigenvalue {mean}");
    let cut = Kernel::rbf(1.7, 0.3, 2).unwrap();
    let s = cut.torus_spectrum(32, 24);
    let mean = s.iter().sum::<f64>() / s.len() as f64;
    assert!(
        mean / 0.3 - 1.0 > 1e-3,
        "clipping a kernel cut at 1.2ℓ: mean {mean}"
    );
}

#[test]
fn wiener_filter_equals_the_dense_posterior_mean_and_likelihood() {
    let (w, h) = (8, 8);
    // A stationary signal: white noise smoothed by the kernel's own square root would do; any
    // observation must give the closed form, so use a random field plus a ramp.
    let mut y = random_image(w, h, 5);
    for (i, v) in y.data.iter_mut().enumerate() {
        *v = 0.3 * *v + 0.05 * (i % w) as f32;
    }
    let kernel = Kernel::rbf(1.2, 1.0, 3).unwrap();
    let (a, sigma) = (0.02, 0.1);
    let (out, fit) = gp_denoise(
        &y,
        &Prior::Kernel(kernel.clone()),
        sigma,
        Some(a),
        Boundary::Periodic,
    )
    .unwrap();
    let tk = TorusKernel::new(&kernel, w, h);
    let pts: Vec<(usize, usize)> = (0..w * h).map(|p| (p % w, p / w)).collect();
    let k = cov_matrix(&tk, &pts);
    let n = w * h;
    let m = y.data.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    let b: Vec<f64> = y.data.iter().map(|&v| v as f64 - m).collect();
    let mut sys: Vec<f64> = k.iter().map(|v| a * v).collect();
    for i in 0..n {
        sys[i * n + i] += sigma * sigma;
    }
    let alpha = solve(sys.clone(), b.clone(), n);
    for i in 0..n {
        let xi = m + (0..n).map(|j| a * k[i * n + j] * alpha[j]).sum::<f64>();
        assert!(
            (xi - out.data[i] as f64).abs() < 2e-6,
            "pixel {i}: dense {xi}, Wiener {}",
            out.data[i]
        );
    }
    // The Whittle likelihood is exact for a circulant covariance.
    let quad: f64 = b.iter().zip(&alpha).map(|(u, v)| u * v).sum();
    // log det by the same elimination: product of pivots.
    let mut lu = sys;
    let mut logdet = 0.0;
    for c in 0..n {
        for r in c + 1..n {
            let f = lu[r * n + c] / lu[c * n + c];
            for kk in c..n {
                lu[r * n + kk] -= f * lu[c * n + kk];
            }
        }
        logdet += lu[c * n + c].ln();
    }
    let ll = -0.5 * (quad + logdet + n as f64 * (2.0 * std::f64::consts::PI).ln());
    assert!(
        (ll - fit.log_likelihood).abs() < 1e-8 * ll.abs(),
        "dense {ll}, Whittle {}",
        fit.log_likelihood
    );
}

#[test]
fn marginal_likelihood_recovers_the_rbf_lengthscale_of_a_sampled_field() {
    // Sample a stationary field from an RBF GP (periodic, by the FFT), add noise, and fit.
    let (w, h, ell, var, sigma) = (64usize, 64usize, 3.0, 0.04, 0.05);
    let k = Kernel::rbf(ell, var, 64).unwrap();
    let spec = k.torus_spectrum(w, h);
    let mut grid = dip::gp::grid::Grid::new(w, h);
    let mut r = Pcg64Mcg::seed_from_u64(11);
    let white: Vec<f64> = (0..w * h)
        .map(|_| r.sample::<f64, _>(rand_distr::StandardNormal))
        .collect();
    let sqrt_spec: Vec<f64> = spec.iter().map(|s| s.sqrt()).collect();
    let mut field = vec![0.0; w * h];
    let mut work = Vec::new();
    grid.filter(&white, &sqrt_spec, &mut field, &mut work);
    let data: Vec<f32> = field
        .iter()
        .map(|v| (0.5 + v + sigma * r.sample::<f64, _>(rand_distr::StandardNormal)) as f32)
        .collect();
    let y = Image::new(w, h, 1, data);
    let (_, fit) = gp_denoise(&y, &Prior::Rbf, sigma, None, Boundary::Periodic).unwrap();
    let l = fit.lengthscale.unwrap();
    assert!(
        (l / ell - 1.0).abs() < 0.15,
        "fitted lengthscale {l}, true {ell}"
    );
    assert!(
        (fit.variance / var - 1.0).abs() < 0.6,
        "fitted variance {}",
        fit.variance
    );
}

#[test]
fn cg_inpainting_reaches_its_tolerance_and_equals_the_dense_posterior() {
    let (w, h) = (12, 10);
    let y = random_image(w, h, 9);
    let mut r = Pcg64Mcg::seed_from_u64(4);
    let keep: Vec<bool> = (0..w * h).map(|_| r.random::<f64>() < 0.5).collect();
    let kernel = Kernel::rbf(1.5, 1.0, 6).unwrap();
    let (a, sigma, tol) = (0.05, 0.02, 1e-9);
    let (out, fit, rep) = gp_inpaint(
        &y,
        &keep,
        &Prior::Kernel(kernel.clone()),
        sigma,
        Some(a),
        CgConfig {
            tol,
            max_iters: 2000,
        },
    )
    .unwrap();
    assert!(rep.converged, "{rep:?}");
    assert!(rep.relative_residual <= tol, "{rep:?}");
    assert!(rep.iterations > 1);
    // Dense posterior mean on the same padded torus.
    let tk = TorusKernel::new(&kernel, w + kernel.radius + 1, h + kernel.radius + 1);
    let obs: Vec<(usize, usize)> = (0..w * h)
        .filter(|&p| keep[p])
        .map(|p| (p % w, p / w))
        .collect();
    let n = obs.len();
    let m = fit.mean[0];
    let mut sys: Vec<f64> = cov_matrix(&tk, &obs).iter().map(|v| a * v).collect();
    for i in 0..n {
        sys[i * n + i] += sigma * sigma;
    }
    let b: Vec<f64> = obs
        .iter()
        .map(|&(x, yy)| y.data[yy * w + x] as f64 - m)
        .collect();
    let alpha = solve(sys, b, n);
    for p in 0..w * h {
        let (x, yy) = (p % w, p / w);
        let v = m + obs
            .iter()
            .zip(&alpha)
            .map(|(&(xj, yj), al)| {
                a * tk.at(yy as isize - yj as isize, x as isize - xj as isize) * al
            })
            .sum::<f64>();
        assert!(
            (v - out.data[p] as f64).abs() < 1e-5,
            "pixel {p}: dense {v}, CG {}",
            out.data[p]
        );
    }
}

#[test]
fn inpainting_refuses_an_empty_mask() {
    let y = random_image(8, 8, 1);
    let err = gp_inpaint(
        &y,
        &[false; 64],
        &Prior::Rbf,
        0.01,
        None,
        CgConfig::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("no pixel"), "{err}");
}

#[test]
fn band_probes_are_unit_and_band_limited() {
    let bands = Bands::new(16, 16, 4, BandSpacing::Linear).unwrap();
    for b in 0..4 {
        let p = band_probe(&bands, b, 1, 7);
        let norm: f64 = p.iter().map(|&v| (v as f64).powi(2)).sum();
        assert!((norm - 1.0).abs() < 1e-5);
        let mut grid = dip::gp::grid::Grid::new(16, 16);
        let mut spec = Vec::new();
        grid.forward_real(&p.iter().map(|&v| v as f64).collect::<Vec<_>>(), &mut spec);
        let (mut inside, mut outside) = (0.0, 0.0);
        for (z, &k) in spec.iter().zip(&bands.band_of) {
            if k as usize == b {
                inside += z.norm_sqr();
            } else {
                outside += z.norm_sqr();
            }
        }
        assert!(
            outside < 1e-9 * inside,
            "band {b}: {outside} outside, {inside} inside"
        );
    }
}

#[test]
fn half_time_prediction_recovers_an_exact_inverse_law() {
    let lambda = [8.0, 4.0, 2.0, 1.0, 0.5];
    let measured: Vec<Option<f64>> = lambda.iter().map(|l| Some(30.0 / l)).collect();
    let p = predict_half_times(&lambda, &measured).unwrap();
    assert!((p.constant - 30.0).abs() < 1e-9);
    assert_eq!(p.spearman, Some(1.0));
    assert!(p.log_rms_error < 1e-12);
    assert!((p.exponent.unwrap() - 1.0).abs() < 1e-12);
    // A power law with exponent 0.5 is recovered as such, with an inverse-law error.
    let half: Vec<Option<f64>> = lambda.iter().map(|l| Some(30.0 / l.sqrt())).collect();
    let p = predict_half_times(&lambda, &half).unwrap();
    assert!((p.exponent.unwrap() - 0.5).abs() < 1e-12);
    assert!(p.log_rms_error > 0.1);
}

/// A 16×16 ramp with some texture: what the SGLD tests fit.
fn tiny_image() -> Image {
    let mut y = random_image(16, 16, 2);
    for (i, v) in y.data.iter_mut().enumerate() {
        *v = 0.5 + 0.3 * ((i % 16) as f32 / 16.0) + 0.1 * (*v - 0.5);
    }
    y
}

fn tiny_fit(sgld: Option<SgldConfig>) -> dip::fit::FitReport {
    let y = tiny_image();
    let cfg = FitConfig {
        iters: 20,
        seed: 4,
        observe_every: 5,
        sgld,
        ..FitConfig::default()
    };
    fit_denoise(&y, Some(&y), tiny_skip(), &cfg, &mut []).unwrap()
}

#[test]
fn sgld_with_zero_noise_and_decay_equals_plain_adam() {
    let plain = tiny_fit(None);
    let zero = tiny_fit(Some(SgldConfig {
        noise: 0.0,
        weight_decay: 0.0,
        burn_in: 5,
        sample_every: 5,
    }));
    assert_eq!(plain.output_raw.data, zero.output_raw.data);
    assert_eq!(plain.output_ema.data, zero.output_ema.data);
    let s = zero.sgld.expect("samples after the burn-in");
    assert_eq!(s.samples, 3);
    // With noise the trajectory differs, and the samples spread.
    let noisy = tiny_fit(Some(SgldConfig {
        noise: 2.0,
        weight_decay: 5e-8,
        burn_in: 5,
        sample_every: 5,
    }));
    assert_ne!(plain.output_raw.data, noisy.output_raw.data);
    assert!(noisy.history.iter().any(|r| r.psnr_sgld.is_some()));
}

/// Keeps the raw output of the steps it is told to.
struct Keep {
    at: Vec<usize>,
    kept: Vec<Vec<f32>>,
}

impl dip::fit::Observer for Keep {
    fn observe(&mut self, info: &dip::fit::StepInfo<'_>) -> dip::fit::Control {
        if self.at.contains(&info.iter) {
            self.kept.push(info.output.data.clone());
        }
        dip::fit::Control::Continue
    }
}

/// The SGLD result is the mean of the outputs sampled after the burn-in (steps 10, 15, 20 here)
/// and its spread their per-pixel standard deviation: recomputed here from the outputs an
/// observer saw at those steps.
#[test]
fn sgld_mean_and_spread_are_those_of_the_sampled_outputs() {
    let y = tiny_image();
    let cfg = FitConfig {
        iters: 20,
        seed: 4,
        observe_every: 5,
        sgld: Some(SgldConfig {
            noise: 2.0,
            weight_decay: 5e-8,
            burn_in: 5,
            sample_every: 5,
        }),
        ..FitConfig::default()
    };
    let mut keep = Keep {
        at: vec![10, 15, 20],
        kept: Vec::new(),
    };
    let r = fit_denoise(&y, Some(&y), tiny_skip(), &cfg, &mut [&mut keep]).unwrap();
    let s = r.sgld.expect("samples");
    assert_eq!((s.samples, keep.kept.len()), (3, 3));
    let mut spread = 0.0f64;
    for i in 0..y.data.len() {
        let v: Vec<f64> = keep.kept.iter().map(|k| f64::from(k[i])).collect();
        let m = v.iter().sum::<f64>() / 3.0;
        let sd = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / 3.0).sqrt();
        assert!((f64::from(s.mean.data[i]) - m).abs() < 1e-6, "mean at {i}");
        assert!((f64::from(s.std.data[i]) - sd).abs() < 1e-5, "std at {i}");
        spread += sd;
    }
    // Weight noise of twice the step size does move the outputs between samples.
    assert!(spread / y.data.len() as f64 > 1e-4, "{spread}");
}

#[test]
fn sgld_refuses_a_burn_in_past_the_end() {
    let cfg = FitConfig {
        iters: 10,
        sgld: Some(SgldConfig {
            burn_in: 10,
            ..SgldConfig::for_iters(10)
        }),
        ..FitConfig::default()
    };
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains("burn-in"), "{err}");
}

/// Samples of a smooth random field on a `s × s` torus: white noise blurred circularly by a
/// Gaussian of std `width` pixels (stationary by construction), then multiplied pixel by pixel
/// by `amplitude(x, y)`.
fn field_samples(
    s: usize,
    n: usize,
    width: f64,
    seed: u64,
    amplitude: impl Fn(usize, usize) -> f64,
) -> Vec<Vec<f32>> {
    let mut rng = Pcg64Mcg::seed_from_u64(seed);
    let r = (3.0 * width).ceil() as isize;
    let taps: Vec<f64> = (-r..=r)
        .map(|d| (-(d * d) as f64 / (2.0 * width * width)).exp())
        .collect();
    let norm = taps.iter().map(|t| t * t).sum::<f64>();
    (0..n)
        .map(|_| {
            let white: Vec<f64> = (0..s * s)
                .map(|_| rng.sample::<f64, _>(rand_distr::StandardNormal))
                .collect();
            let wrap = |i: isize| i.rem_euclid(s as isize) as usize;
            let mut rows = vec![0.0; s * s];
            for y in 0..s {
                for x in 0..s {
                    rows[y * s + x] = (-r..=r)
                        .map(|d| taps[(d + r) as usize] * white[y * s + wrap(x as isize + d)])
                        .sum();
                }
            }
            (0..s * s)
                .map(|p| {
                    let (x, y) = (p % s, p / s);
                    let v: f64 = (-r..=r)
                        .map(|d| taps[(d + r) as usize] * rows[wrap(y as isize + d) * s + x])
                        .sum();
                    (amplitude(x, y) * v / norm) as f32
                })
                .collect()
        })
        .collect()
}

/// The stationarity measure separates a stationary field from one whose amplitude grows across
/// the image: on the first every anchor's covariance matches the stationary estimate to within
/// the Monte Carlo error (residuals 0.02–0.11 here, at most about twice their floor); on the
/// second the left and right edges are off by 0.9–1.5, 6–70 times their floor.
#[test]
fn stationarity_measure_separates_stationary_from_non_stationary_fields() {
    let (s, n) = (24, 400);
    let stationary = field_samples(s, n, 1.5, 11, |_, _| 1.0);
    let st = dip::gp::measure_samples("stationary", &stationary, s, 1, None, 3).unwrap();
    for a in &st.anchors {
        assert!(
            a.residual <= 3.0 * a.mc_floor + 0.02,
            "stationary field, {}: residual {:.3}, MC floor {:.3}",
            a.name,
            a.residual,
            a.mc_floor
        );
    }
    // Amplitude 0.3 at the left edge, 1.7 at the right: the variance differs by 30 times.
    let ramp = field_samples(s, n, 1.5, 11, |x, _| 0.3 + 1.4 * x as f64 / (s - 1) as f64);
    let ns = dip::gp::measure_samples("ramp", &ramp, s, 1, None, 3).unwrap();
    for name in ["edge left", "edge right"] {
        let a = ns.anchors.iter().find(|a| a.name == name).unwrap();
        assert!(
            a.residual > 0.5 && a.residual > 5.0 * a.mc_floor,
            "ramp, {name}: residual {:.3}, MC floor {:.3}",
            a.residual,
            a.mc_floor
        );
    }
}

//! CT: the Radon transform against the dot-product test, against the analytic projections of a
//! disk, against scikit-image's `radon` on a checked-in fixture, and filtered back projection.

use dip::image::Image;
use dip::metrics::psnr;
use dip::operators::{Operator, Radon, even_angles, shepp_logan};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut r = Pcg64Mcg::seed_from_u64(seed);
    (0..n).map(|_| r.random_range(-1.0f32..1.0)).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

#[test]
fn the_back_projection_is_the_adjoint() {
    // Odd and even sides, views not on a grid, and angles beyond 180 degrees.
    for (n, angles) in [
        (37usize, vec![0.0, 13.7, 45.0, 90.0, 133.3, 179.9, 250.0]),
        (32, even_angles(18)),
    ] {
        let a = Radon::new(n, &angles).unwrap();
        let x = random(a.input_len(), 1);
        let y = random(a.output_len(), 2);
        let (mut ax, mut aty) = (vec![0.0; a.output_len()], vec![0.0; a.input_len()]);
        a.forward(&x, &mut ax);
        a.adjoint(&y, &mut aty);
        let (l, r) = (dot(&ax, &y), dot(&x, &aty));
        let scale = (dot(&ax, &ax) * dot(&y, &y)).sqrt();
        assert!((l - r).abs() <= 1e-5 * scale, "n {n}: {l} vs {r}");
        // The explicit matrix (the GPU's) is the same operator.
        let rows = a.rows().unwrap();
        let mut ax2 = vec![0.0; a.output_len()];
        rows.apply(&x, &mut ax2);
        for (p, q) in ax.iter().zip(&ax2) {
            assert!((p - q).abs() <= 1e-5 * (1.0 + p.abs()), "{p} vs {q}");
        }
    }
}

#[test]
fn the_back_projection_does_not_depend_on_the_thread_count() {
    let a = Radon::new(40, &even_angles(30)).unwrap();
    let y = random(a.output_len(), 3);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut x = vec![0.0; a.input_len()];
        pool.install(|| a.adjoint(&y, &mut x));
        x
    };
    assert_eq!(run(1), run(3));
}

/// A disk of radius `r` about the rotation centre, each pixel its covered fraction (16 × 16
/// points per pixel).
fn disk(n: usize, r: f64) -> Image {
    let c = (n / 2) as f64;
    let sub = 16;
    let data = (0..n * n)
        .map(|p| {
            let (row, col) = ((p / n) as f64, (p % n) as f64);
            let mut inside = 0;
            for i in 0..sub {
                for j in 0..sub {
                    let y = row - 0.5 + (i as f64 + 0.5) / sub as f64 - c;
                    let x = col - 0.5 + (j as f64 + 0.5) / sub as f64 - c;
                    if x * x + y * y <= r * r {
                        inside += 1;
                    }
                }
            }
            inside as f32 / (sub * sub) as f32
        })
        .collect();
    Image::new(n, n, 1, data)
}

/// The relative L2 error of the sinogram of a disk of radius `r` (on a `4r × 4r` image, 12
/// views) against its chord lengths `2 √(r² − s²)`, over all bins, and over those with
/// `|s| ≤ r / 2`.
fn disk_error(r: usize) -> (f64, f64) {
    let n = 4 * r;
    let a = Radon::new(n, &even_angles(12)).unwrap();
    let sino = a.sinogram(&disk(n, r as f64)).unwrap();
    let c = (n / 2) as f64;
    let r = r as f64;
    let (mut err, mut norm, mut err_in, mut norm_in) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for j in 0..n {
        let s = j as f64 - c;
        let exact = if s.abs() < r {
            2.0 * (r * r - s * s).sqrt()
        } else {
            0.0
        };
        for k in 0..12 {
            let e = (sino.data[j * 12 + k] as f64 - exact).powi(2);
            err += e;
            norm += exact * exact;
            if s.abs() <= r / 2.0 {
                err_in += e;
                norm_in += exact * exact;
            }
        }
    }
    ((err / norm).sqrt(), (err_in / norm_in).sqrt())
}

#[test]
fn a_disk_projects_to_its_chord_lengths() {
    // The sampler sees the disk through pixel averages and a bilinear footprint about one pixel
    // wide, which rounds the square-root edge of the chord profile: the error lives within a
    // pixel or two of the rim, so it falls as the disk grows (about as 1/r), and away from the
    // rim it is a fraction of a percent.
    let errors: Vec<(f64, f64)> = [10, 20, 40].iter().map(|&r| disk_error(r)).collect();
    eprintln!("disk r = 10, 20, 40: relative L2 error (all bins, |s| <= r/2): {errors:.4?}");
    for w in errors.windows(2) {
        assert!(
            w[1].0 < 0.75 * w[0].0,
            "the error must fall with the radius: {errors:?}"
        );
    }
    assert!(errors[2].0 < 0.02, "{errors:?}");
    for (_, inner) in &errors {
        assert!(*inner < 0.005, "{errors:?}");
    }
}

#[test]
fn filtered_back_projection_recovers_the_phantom() {
    let n = 64;
    let x = shepp_logan(n);
    let clip = |v: &[f32]| v.iter().map(|p| p.clamp(0.0, 1.0)).collect::<Vec<_>>();
    let quality = |views: usize| {
        let a = Radon::new(n, &even_angles(views)).unwrap();
        let sino = a.sinogram(&x).unwrap();
        (
            psnr(&clip(&a.fbp(&sino.data, false)), &x.data),
            psnr(&clip(&a.fbp(&sino.data, true)), &x.data),
        )
    };
    let (dense, sparse) = (quality(180), quality(30));
    eprintln!(
        "FBP of the 64 px phantom (ramp, hann): 180 views {dense:.2?} dB, 30 views {sparse:.2?}"
    );
    // Far above the zero image (12.9 dB; FBP 25.9 dB here), and fewer views cost quality.
    let zero = psnr(&vec![0.0; n * n], &x.data);
    assert!(dense.0 > zero + 10.0, "{dense:?} against {zero}");
    assert!(
        dense.0 > sparse.0 && dense.1 > sparse.1,
        "{dense:?} {sparse:?}"
    );
}

fn fixture<D: ndarray::Dimension>(name: &str) -> ndarray::Array<f64, D>
where
    ndarray::Array<f64, D>: ndarray_npy::ReadNpyExt,
{
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/ct")
        .join(name);
    let f = std::fs::File::open(&path).unwrap();
    <ndarray::Array<f64, D> as ndarray_npy::ReadNpyExt>::read_npy(f).unwrap()
}

#[test]
fn scikit_image_radon_is_reproduced() {
    let x: ndarray::Array2<f32> = {
        let f = std::fs::File::open(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ct/x.npy"),
        )
        .unwrap();
        ndarray_npy::ReadNpyExt::read_npy(f).unwrap()
    };
    let theta: ndarray::Array1<f64> = fixture("theta.npy");
    let sino: ndarray::Array2<f64> = fixture("sino.npy");
    let n = x.shape()[0];
    let a = Radon::new(n, theta.as_slice().unwrap()).unwrap();
    let img = Image::new(n, n, 1, x.iter().copied().collect());
    let ours = a.sinogram(&img).unwrap();
    assert_eq!(
        (ours.width, ours.height),
        (sino.shape()[1], sino.shape()[0])
    );
    let worst = ours
        .data
        .iter()
        .zip(sino.iter())
        .map(|(&p, &q)| (p as f64 - q).abs())
        .fold(0.0, f64::max);
    let peak = sino.iter().copied().fold(0.0, f64::max);
    eprintln!("radon against scikit-image: worst difference {worst:.2e} (peak {peak:.2})");
    assert!(worst < 1e-4 * peak, "{worst}");
    // FBP: the same padding, filter and linear interpolation along the detector.
    for (name, hann) in [("fbp_ramp.npy", false), ("fbp_hann.npy", true)] {
        let theirs: ndarray::Array2<f64> = fixture(name);
        let c = (n / 2) as f64;
        let inside = |p: usize| {
            let (r, q) = ((p / n) as f64 - c, (p % n) as f64 - c);
            r * r + q * q <= c * c
        };
        let sino32: Vec<f32> = sino.iter().map(|&v| v as f32).collect();
        let rec = a.fbp(&sino32, hann);
        let (mut e, mut s) = (0.0, 0.0);
        for (p, (&o, &t)) in rec.iter().zip(theirs.iter()).enumerate() {
            if inside(p) {
                e += (o as f64 - t).powi(2);
                s += t * t;
            }
        }
        let rel = (e / s).sqrt();
        eprintln!("{name}: relative L2 difference to scikit-image's iradon {rel:.4}");
        assert!(rel < 1e-5, "{name}: {rel}");
    }
}

#[test]
fn a_rule_that_stops_before_the_data_are_fitted_says_so() {
    use dip::task::{Problem, RunContext, restore};
    let n = 32;
    let x = shepp_logan(n);
    let a = Radon::new(n, &even_angles(12)).unwrap();
    let problem = Problem::ct(a.sinogram(&x).unwrap(), &even_angles(12))
        .unwrap()
        .with_clean(x.clone())
        .unwrap();
    assert!(problem.baseline_fits_the_data());
    // The residual is ‖A x − y‖ / ‖y‖: zero for the clean image of noiseless data.
    assert!(problem.relative_residual(&x) < 1e-6);
    let overrides = |rule: &str| {
        [
            ("net.scales", toml::Value::Integer(3)),
            ("net.down", toml::Value::Integer(8)),
            ("net.up", toml::Value::Integer(8)),
            ("net.input_channels", toml::Value::Integer(4)),
            ("fit.iters", toml::Value::Integer(30)),
            ("stop.rule", toml::Value::String(rule.into())),
        ]
        .map(|(k, v)| (k.to_string(), v))
        .to_vec()
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let run = |rule: &str| {
        let recipe = dip::recipe::recipe_with("deblur", &overrides(rule)).unwrap();
        pool.install(|| restore(&problem, &recipe, RunContext::default()))
            .unwrap()
    };
    // Thirty steps of a tiny network: far from the data, and below FBP.
    let early = run("auto");
    let (_, fbp) = early.baseline.unwrap();
    assert!(early.psnr.unwrap() < fbp);
    assert!(
        early
            .stop_warnings
            .iter()
            .any(|w| w.contains("explains the measurements less well than FBP")),
        "{:?}",
        early.stop_warnings
    );
    // A fixed budget is the user's choice: no rule to blame.
    assert!(run("fixed").stop_warnings.is_empty());
}

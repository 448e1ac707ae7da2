//! Checks of the spectral-analysis library against first principles: a naive DFT, Parseval,
//! pure cosines, and filters whose answer is known.

use std::f64::consts::PI;
use std::sync::Arc;

use dip::image::Image;
use dip::spectral::{
    BandSpacing, BandTracker, Bands, Complex64, Fft2d, LowpassFitter, PairAnalyzer, band_energy,
    band_half_times, half_time, lowpass, radial_frequencies, trajectory_distances,
};

/// Small deterministic generator (xorshift64*), so the tests need no RNG crate API.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32) / (1u64 << 24) as f32
    }
}

fn random_image(w: usize, h: usize, c: usize, seed: u64) -> Image {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    Image::new(w, h, c, (0..w * h * c).map(|_| rng.next()).collect())
}

fn naive_dft(img: &Image, c: usize) -> Vec<Complex64> {
    let (w, h, ch) = (img.width, img.height, img.channels);
    let mut out = vec![Complex64::new(0.0, 0.0); w * h];
    for ky in 0..h {
        for kx in 0..w {
            let mut acc = Complex64::new(0.0, 0.0);
            for y in 0..h {
                for x in 0..w {
                    let v = f64::from(img.data[(y * w + x) * ch + c]);
                    let ph = -2.0 * PI * ((kx * x) as f64 / w as f64 + (ky * y) as f64 / h as f64);
                    acc += Complex64::from_polar(v, ph);
                }
            }
            out[ky * w + kx] = acc;
        }
    }
    out
}

#[test]
fn fft_matches_naive_dft_and_parseval() {
    // Odd×odd, and even sizes that exercise the Nyquist row/column of the Hermitian fill.
    for &(w, h) in &[(5usize, 7usize), (8, 6), (7, 4), (1, 5), (6, 1)] {
        let img = random_image(w, h, 3, (w * 31 + h) as u64);
        let mut fft = Fft2d::new(w, h).unwrap();
        let spec = fft.forward(&img).unwrap();
        for c in 0..3 {
            let naive = naive_dft(&img, c);
            let power = spec.power(c);
            for (k, (z, p)) in naive.iter().zip(&power).enumerate() {
                let np = z.norm_sqr();
                assert!(
                    (p - np).abs() <= 1e-4 * np.max(1e-6),
                    "{w}x{h} c{c} bin {k}: power {p} vs naive {np}"
                );
                assert!(
                    (spec.channel(c)[k] - z).norm() < 1e-9,
                    "{w}x{h} c{c} bin {k}: coefficient differs"
                );
            }
            let lhs: f64 = power.iter().sum::<f64>() / (w * h) as f64;
            let rhs: f64 = (0..w * h)
                .map(|i| f64::from(img.data[i * 3 + c]).powi(2))
                .sum();
            assert!((lhs - rhs).abs() < 1e-10 * rhs, "Parseval {lhs} vs {rhs}");
        }
    }
}

#[test]
fn fft_plan_reuse_is_stateless() {
    let a = random_image(12, 9, 3, 1);
    let b = random_image(12, 9, 3, 2);
    let mut fft = Fft2d::new(12, 9).unwrap();
    let first = fft.forward(&a).unwrap();
    let _ = fft.forward(&b).unwrap();
    let again = fft.forward(&a).unwrap();
    assert_eq!(first, again);
    let mut clone = fft.clone();
    assert_eq!(clone.forward(&a).unwrap(), first);
    // Size mismatches are errors, not panics.
    assert!(fft.forward(&random_image(9, 12, 1, 3)).is_err());
    assert!(fft.forward_data(&[0.0; 10], 1).is_err());
}

#[test]
fn radial_frequency_layout() {
    let r = radial_frequencies(8, 6);
    assert_eq!(r[0], 0.0);
    assert!((r[1] - 1.0 / 8.0).abs() < 1e-15);
    assert!((r[4] - 0.5).abs() < 1e-15, "x Nyquist");
    assert!((r[7] - 1.0 / 8.0).abs() < 1e-15, "negative frequency −1/8");
    assert!((r[3 * 8] - 0.5).abs() < 1e-15, "y Nyquist");
    assert!((r[3 * 8 + 4] - 0.5f64.sqrt()).abs() < 1e-15, "corner");
    assert!(r.iter().all(|&v| v <= 0.5f64.sqrt() + 1e-15));
}

#[test]
fn bands_partition_every_bin() {
    for &(w, h) in &[(5usize, 7usize), (16, 16), (33, 20), (64, 48)] {
        for spacing in [BandSpacing::Linear, BandSpacing::Log] {
            for n in [1usize, 2, 3, 5] {
                let bands = match Bands::new(w, h, n, spacing) {
                    Ok(b) => b,
                    Err(e) => panic!("{w}x{h} {spacing:?} n={n}: {e}"),
                };
                assert_eq!(bands.len(), n);
                assert_eq!(bands.edges.len(), n + 1);
                let mut hits = vec![0usize; w * h];
                let mut total = 0;
                for b in 0..n {
                    let mask = bands.mask(b);
                    let count = mask.iter().filter(|&&m| m).count();
                    assert_eq!(count, bands.counts[b]);
                    assert!(count > 0);
                    total += count;
                    for (hit, m) in hits.iter_mut().zip(&mask) {
                        *hit += usize::from(*m);
                    }
                }
                assert_eq!(total, w * h);
                assert!(hits.iter().all(|&k| k == 1), "each bin in exactly one band");
                // Masks agree with the edges.
                let r = radial_frequencies(w, h);
                for (i, &b) in bands.band_of.iter().enumerate() {
                    let b = b as usize;
                    assert!(r[i] >= bands.edges[b]);
                    assert!(b == n - 1 || r[i] < bands.edges[b + 1]);
                }
            }
        }
    }
}

#[test]
fn cosine_lands_in_its_band() {
    let (w, h) = (64usize, 48usize);
    for spacing in [BandSpacing::Linear, BandSpacing::Log] {
        let bands = Bands::new(w, h, 6, spacing).unwrap();
        let mut fft = Fft2d::new(w, h).unwrap();
        for &(kx, ky) in &[
            (1usize, 0usize),
            (3, 2),
            (0, 5),
            (9, 7),
            (20, 3),
            (25, 20),
            (32, 24),
        ] {
            let f = ((kx as f64 / w as f64).powi(2) + (ky as f64 / h as f64).powi(2)).sqrt();
            // The band that contains f, straight from the edges (last band open above).
            let expected = (0..6)
                .find(|&b| f >= bands.edges[b] && (b == 5 || f < bands.edges[b + 1]))
                .unwrap();
            assert_eq!(bands.band_of_frequency(f), expected);
            let data: Vec<f32> = (0..h)
                .flat_map(|y| {
                    (0..w).map(move |x| {
                        (0.5 + 0.4
                            * (2.0
                                * PI
                                * (kx as f64 * x as f64 / w as f64
                                    + ky as f64 * y as f64 / h as f64))
                                .cos()) as f32
                    })
                })
                .collect();
            let img = Image::new(w, h, 1, data.clone());
            // Remove the mean so DC does not count.
            let mean = data.iter().map(|&v| f64::from(v)).sum::<f64>() / data.len() as f64;
            let centred: Vec<f32> = data.iter().map(|&v| (f64::from(v) - mean) as f32).collect();
            let spec = fft.forward_data(&centred, 1).unwrap();
            let e = band_energy(&spec, &bands).unwrap().total;
            let sum: f64 = e.iter().sum();
            assert!(
                e[expected] > 0.999 * sum,
                "{spacing:?} ({kx},{ky}) f={f:.4}: energy {e:?}, expected band {expected}"
            );
            assert!(fft.forward(&img).is_ok());
        }
    }
}

/// 3×3 box blur with wrap-around, in the pixel domain (independent of the FFT code).
fn box_blur(img: &Image) -> Image {
    let (w, h, ch) = (img.width, img.height, img.channels);
    let mut out = img.clone();
    for y in 0..h {
        for x in 0..w {
            for c in 0..ch {
                let mut s = 0.0;
                for dy in [h - 1, 0, 1] {
                    for dx in [w - 1, 0, 1] {
                        s += img.data[(((y + dy) % h) * w + (x + dx) % w) * ch + c];
                    }
                }
                out.data[(y * w + x) * ch + c] = s / 9.0;
            }
        }
    }
    out
}

#[test]
fn band_fit_extremes_and_blur() {
    let y = random_image(32, 24, 3, 7);
    let bands = Bands::cached(32, 24, 4, BandSpacing::Linear).unwrap();
    let mut tracker = BandTracker::new(Arc::clone(&bands), &y, Some(&y)).unwrap();

    let same = tracker.observe(&y).unwrap();
    for (b, &r) in same.fit.iter().enumerate() {
        assert!((r - 1.0).abs() < 1e-12, "band {b}: r = {r} for x = y");
    }
    assert_eq!(same.fit_clean.as_ref().unwrap(), &same.fit);

    let zero = tracker.observe(&Image::zeros(32, 24, 3)).unwrap();
    for &r in &zero.fit {
        assert!(r.abs() < 1e-12, "r = {r} for x = 0");
    }

    let blurred = tracker.observe(&box_blur(&y)).unwrap();
    assert!(blurred.fit[0] > 0.9, "{:?}", blurred.fit);
    for w in blurred.fit.windows(2) {
        assert!(w[0] > w[1], "low bands fit better: {:?}", blurred.fit);
    }

    // The result is serialisable.
    let json = serde_json::to_string(&blurred).unwrap();
    assert!(json.contains("correspondence"));
}

#[test]
fn noise_energy_per_band() {
    let clean = box_blur(&random_image(24, 20, 1, 11));
    let noise = random_image(24, 20, 1, 12);
    let y = Image::new(
        24,
        20,
        1,
        clean
            .data
            .iter()
            .zip(&noise.data)
            .map(|(c, n)| c + 0.2 * (n - 0.5))
            .collect(),
    );
    let bands = Bands::cached(24, 20, 3, BandSpacing::Log).unwrap();
    let mut tracker = BandTracker::new(bands, &y, Some(&clean)).unwrap();
    let ne = tracker.noise_energy().unwrap();
    let direct: f64 = y
        .data
        .iter()
        .zip(&clean.data)
        .map(|(a, b)| f64::from(a - b).powi(2))
        .sum();
    assert!((ne.iter().sum::<f64>() - direct).abs() < 1e-9 * direct);
    // Fitting the clean image exactly: perfect against clean, imperfect against y.
    let fit = tracker.observe(&clean).unwrap();
    for (&rc, &ry) in fit.fit_clean.as_ref().unwrap().iter().zip(&fit.fit) {
        assert!((rc - 1.0).abs() < 1e-12);
        assert!(ry < 1.0);
    }
    // Energies of y add up to Σ y².
    let ey: f64 = tracker.observation_energy().iter().sum();
    let sy: f64 = y.data.iter().map(|&v| f64::from(v).powi(2)).sum();
    assert!((ey - sy).abs() < 1e-9 * sy);
}

#[test]
fn shi_correspondence_bounds() {
    let y = random_image(20, 16, 3, 21);
    let bands = Bands::cached(20, 16, 4, BandSpacing::Linear).unwrap();
    let mut tracker = BandTracker::new(bands, &y, None).unwrap();
    let same = tracker.observe(&y).unwrap();
    assert!(same.fit_clean.is_none());
    for &c in &same.correspondence {
        assert!((c - 1.0).abs() < 1e-12, "correspondence {c} for x = y");
    }
    let other = tracker.observe(&random_image(20, 16, 3, 22)).unwrap();
    for &c in &other.correspondence {
        assert!((0.0..=1.0).contains(&c), "correspondence {c}");
    }
    assert!(other.correspondence.iter().any(|&c| c < 0.99));
    let zero = tracker.observe(&Image::zeros(20, 16, 3)).unwrap();
    assert!(zero.correspondence.iter().all(|&c| c == 0.0));
    // Half the amplitude: ratio 0.5 in every bin.
    let half = Image::new(20, 16, 3, y.data.iter().map(|v| v * 0.5).collect());
    for &c in &tracker.observe(&half).unwrap().correspondence {
        assert!((c - 0.5).abs() < 1e-6);
    }
}

#[test]
fn half_time_interpolates() {
    let series = [(0, 0.0), (50, 0.1), (100, 0.3), (150, 0.7), (200, 0.9)];
    // 0.3 → 0.7 over 100..150: 0.5 at 125.
    assert_eq!(half_time(&series), Some(125.0));
    assert_eq!(half_time(&[(0, 0.0), (100, 0.49)]), None);
    assert_eq!(half_time(&[(10, 0.5), (20, 0.9)]), Some(10.0));
    // Exactly 0.5 at a record: that record's step.
    assert_eq!(half_time(&[(0, 0.1), (40, 0.5)]), Some(40.0));
    // A dip after the crossing does not matter: first crossing wins.
    assert_eq!(
        half_time(&[(0, 0.0), (10, 1.0), (20, 0.0), (30, 1.0)]),
        Some(5.0)
    );
    let per_band = band_half_times(&[
        (0, vec![0.0, 0.0]),
        (10, vec![0.6, 0.1]),
        (20, vec![0.9, 0.3]),
    ]);
    assert!((per_band[0].unwrap() - 10.0 * 0.5 / 0.6).abs() < 1e-12);
    assert_eq!(per_band[1], None);
}

#[test]
fn lowpass_search_recovers_cutoff() {
    for &(c0, seed, ch) in &[(0.1f64, 31u64, 3usize), (0.03, 32, 1), (0.25, 33, 3)] {
        let y = random_image(48, 40, ch, seed);
        let x = lowpass(&y, c0).unwrap();
        let mut fitter = LowpassFitter::new(&y).unwrap();
        let fit = fitter.fit(&x).unwrap();
        assert!(!fit.at_bound);
        assert!(
            (fit.cutoff / c0 - 1.0).abs() < 0.01,
            "c0 = {c0}: found {}",
            fit.cutoff
        );
        assert!(fit.residual < 1e-4, "residual {}", fit.residual);
    }
    // A slightly perturbed low-pass still recovers the cutoff, with a visible residual.
    let y = random_image(32, 32, 1, 40);
    let mut x = lowpass(&y, 0.1).unwrap();
    let noise = random_image(32, 32, 1, 41);
    x.data
        .iter_mut()
        .zip(&noise.data)
        .for_each(|(v, n)| *v += 0.01 * (n - 0.5));
    let fit = LowpassFitter::new(&y).unwrap().fit(&x).unwrap();
    assert!((fit.cutoff / 0.1 - 1.0).abs() < 0.05, "{}", fit.cutoff);
    assert!(fit.residual > 1e-4 && fit.residual < 0.1);
    // The observation itself is best explained by "no filter": the top of the range.
    let top = LowpassFitter::new(&y).unwrap().fit(&y).unwrap();
    assert!(top.at_bound && top.residual < 1e-3);
}

#[test]
fn lowpass_filter_behaves() {
    let y = random_image(16, 12, 3, 50);
    // A huge cutoff is the identity (round trip through the inverse FFT).
    let same = lowpass(&y, 1e6).unwrap();
    for (a, b) in same.data.iter().zip(&y.data) {
        assert!((a - b).abs() < 1e-5);
    }
    // The mean is kept, the variance drops.
    let smooth = lowpass(&y, 0.05).unwrap();
    let mean = |v: &[f32]| v.iter().map(|&s| f64::from(s)).sum::<f64>() / v.len() as f64;
    assert!((mean(&smooth.data) - mean(&y.data)).abs() < 1e-6);
    let var = |v: &[f32]| {
        let m = mean(v);
        v.iter().map(|&s| (f64::from(s) - m).powi(2)).sum::<f64>()
    };
    assert!(var(&smooth.data) < 0.2 * var(&y.data));
    assert!(lowpass(&y, 0.0).is_err());
}

#[test]
fn pair_distance_bands_sum_to_total() {
    let bands = Bands::cached(40, 30, 5, BandSpacing::Log).unwrap();
    let a: Vec<Image> = (0..3).map(|i| random_image(40, 30, 3, 60 + i)).collect();
    let mut b: Vec<Image> = (0..3).map(|i| random_image(40, 30, 3, 70 + i)).collect();
    b[1] = a[1].clone();
    let d = trajectory_distances(Arc::clone(&bands), &a, &b).unwrap();
    assert_eq!(d.len(), 3);
    for (i, pd) in d.iter().enumerate() {
        let direct: f64 = a[i]
            .data
            .iter()
            .zip(&b[i].data)
            .map(|(p, q)| f64::from(p - q).powi(2))
            .sum();
        assert!((pd.total - direct).abs() <= 1e-12 * direct.max(1.0));
        let sum: f64 = pd.per_band.iter().sum();
        assert!(
            (sum - pd.total).abs() <= 1e-9 * pd.total.max(1e-300),
            "frame {i}: bands {sum} vs total {}",
            pd.total
        );
    }
    assert_eq!(d[1].total, 0.0);
    assert!(d[1].per_band.iter().all(|&v| v.abs() < 1e-20));
    // Blurring both runs the same way changes nothing at DC: low band distance of a pair that
    // differs only by a constant offset is all in band 0.
    let shifted = Image::new(40, 30, 3, a[0].data.iter().map(|v| v + 0.1).collect());
    let pd = PairAnalyzer::new(bands)
        .unwrap()
        .distance(&a[0], &shifted)
        .unwrap();
    assert!((pd.per_band[0] - pd.total).abs() < 1e-6 * pd.total);
    assert!(
        trajectory_distances(
            Bands::cached(40, 30, 5, BandSpacing::Log).unwrap(),
            &a,
            &b[..2]
        )
        .is_err()
    );
}

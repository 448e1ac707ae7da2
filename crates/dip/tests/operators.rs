//! Forward operators: adjoint identities, shapes, and the behaviour each operator promises.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fs;
use std::path::PathBuf;

use dip::image::{Image, save};
use dip::operators::{
    Blur, Compose, Downsample, Identity, Mask, Operator, Psf, bicubic_downscale, bicubic_resize,
    bicubic_upscale, noise_models,
};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;

// Allocation counting, per thread (tests run in parallel threads of one process).
struct Counting;
thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}
fn bump() {
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_in(f: impl FnOnce()) -> usize {
    let before = ALLOCS.with(|c| c.get());
    f();
    ALLOCS.with(|c| c.get()) - before
}

fn random_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Pcg64Mcg::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum()
}

/// `<A x, y> = <x, Aᵀ y>` to 1e-5 relative, for a few random pairs; also checks that forward and
/// adjoint overwrite garbage in their outputs and allocate nothing (after a warm-up call).
fn check_adjoint(op: &dyn Operator) {
    let (n_in, n_out) = (op.input_len(), op.output_len());
    for seed in 0..3 {
        let x = random_vec(n_in, 100 + seed);
        let y = random_vec(n_out, 200 + seed);
        let mut ax = vec![f32::NAN; n_out];
        let mut aty = vec![f32::NAN; n_in];
        op.forward(&x, &mut ax);
        op.adjoint(&y, &mut aty);
        assert!(
            ax.iter().chain(&aty).all(|v| v.is_finite()),
            "{}",
            op.name()
        );
        let (lhs, rhs) = (dot(&ax, &y), dot(&x, &aty));
        let scale = lhs.abs().max(rhs.abs()).max(1e-3);
        assert!(
            (lhs - rhs).abs() <= 1e-5 * scale,
            "{}: <Ax, y> = {lhs}, <x, A'y> = {rhs}",
            op.name()
        );
    }
    let x = random_vec(n_in, 7);
    let mut ax = vec![0.0; n_out];
    let mut aty = vec![0.0; n_in];
    let n = allocations_in(|| {
        op.forward(&x, &mut ax);
        op.adjoint(&ax, &mut aty);
    });
    assert_eq!(n, 0, "{} allocated {n} times", op.name());
}

fn forward(op: &dyn Operator, x: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0; op.output_len()];
    op.forward(x, &mut y);
    y
}

/// A smooth test image: low-frequency sinusoids in [0.1, 0.9].
fn smooth(w: usize, h: usize, c: usize) -> Image {
    let mut data = Vec::with_capacity(w * h * c);
    for y in 0..h {
        for x in 0..w {
            for ch in 0..c {
                let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
                let s = (std::f32::consts::TAU * (u + 0.3 * ch as f32)).sin()
                    * (std::f32::consts::PI * v).cos();
                data.push(0.5 + 0.4 * s);
            }
        }
    }
    Image::new(w, h, c, data)
}

struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "dip-operators-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn err_text<T: std::fmt::Debug>(r: dip::Result<T>) -> String {
    r.expect_err("expected an error").to_string()
}

#[test]
fn identity_is_identity_and_self_adjoint() {
    let op = Identity::new(17, 9, 3);
    assert_eq!(op.input_shape(), (17, 9, 3));
    assert_eq!(op.output_shape(), (17, 9, 3));
    let x = random_vec(op.input_len(), 1);
    assert_eq!(forward(&op, &x), x);
    check_adjoint(&op);
}

#[test]
fn mask_keeps_known_pixels_and_zeros_exactly_the_rest() {
    let m = Mask::random(23, 19, 0.6, 5).unwrap().with_channels(3);
    assert_eq!(m.input_shape(), (23, 19, 3));
    assert_eq!(m.output_shape(), (23, 19, 3));
    let x: Vec<f32> = random_vec(m.input_len(), 2)
        .iter()
        .map(|v| v.abs() + 0.01)
        .collect();
    let y = forward(&m, &x);
    for (p, &known) in m.known().iter().enumerate() {
        for c in 0..3 {
            let i = p * 3 + c;
            if known {
                assert_eq!(y[i], x[i]);
            } else {
                assert_eq!(y[i], 0.0);
            }
        }
    }
    check_adjoint(&m);
    check_adjoint(&Mask::text(40, 30, 3).unwrap().with_channels(1));
    check_adjoint(&Mask::blocks(40, 30, 4, 7, 3).unwrap());
}

#[test]
fn random_masks_have_the_requested_fraction() {
    for p in [0.1, 0.5, 0.8, 0.95] {
        let m = Mask::random(128, 128, p, 42).unwrap();
        let f = m.known_fraction();
        assert!((f - p).abs() < 0.02, "asked {p}, got {f}");
        assert_eq!(Mask::random(128, 128, p, 42).unwrap(), m);
    }
    assert_eq!(Mask::random(8, 8, 0.0, 1).unwrap().known_fraction(), 0.0);
    assert_eq!(Mask::random(8, 8, 1.0, 1).unwrap().known_fraction(), 1.0);
    assert_ne!(
        Mask::random(64, 64, 0.5, 1).unwrap(),
        Mask::random(64, 64, 0.5, 2).unwrap()
    );
    assert!(Mask::random(8, 8, 1.5, 1).is_err());
    assert!(Mask::random(0, 8, 0.5, 1).is_err());
}

#[test]
fn text_and_block_masks_are_seeded_and_plausible() {
    let t = Mask::text(256, 256, 7).unwrap();
    assert_eq!(t, Mask::text(256, 256, 7).unwrap());
    assert_ne!(t, Mask::text(256, 256, 8).unwrap());
    let f = t.known_fraction();
    assert!((0.6..0.95).contains(&f), "text mask known fraction {f}");
    // Small and non-square sizes work too.
    for (w, h) in [(64, 64), (17, 90), (300, 20), (1, 1)] {
        let m = Mask::text(w, h, 1).unwrap();
        assert_eq!((m.width(), m.height()), (w, h));
    }
    let b = Mask::blocks(64, 64, 1, 10, 3).unwrap();
    assert_eq!(b.known().iter().filter(|&&k| !k).count(), 100);
    assert_eq!(b, Mask::blocks(64, 64, 1, 10, 3).unwrap());
    let many = Mask::blocks(64, 64, 10, 8, 3).unwrap();
    assert!(many.known_fraction() < 1.0 && many.known_fraction() >= 1.0 - 640.0 / 4096.0);
    // A block larger than the image covers all of it.
    assert_eq!(Mask::blocks(5, 4, 1, 10, 0).unwrap().known_fraction(), 0.0);
}

#[test]
fn mask_files() {
    let dir = TempDir::new("mask");
    // Left half white (known), right half black; one gray pixel below half.
    let (w, h) = (8, 6);
    let mut data: Vec<f32> = (0..w * h)
        .map(|i| if i % w < w / 2 { 1.0 } else { 0.0 })
        .collect();
    data[0] = 0.4;
    let p = dir.path("mask.png");
    save(&Image::new(w, h, 1, data), &p).unwrap();
    let m = Mask::from_file(&p, w, h).unwrap();
    assert_eq!(m.known_fraction(), 23.0 / 48.0);
    assert!(!m.known()[0] && m.known()[1] && !m.known()[w - 1]);

    // Size mismatch: the error names the file and both sizes.
    let msg = err_text(Mask::from_file(&p, 9, 6));
    assert!(
        msg.contains("mask.png") && msg.contains("8x6") && msg.contains("9x6"),
        "{msg}"
    );
    let msg = err_text(Mask::from_file(&dir.path("missing.png"), 8, 6));
    assert!(msg.contains("missing.png"), "{msg}");

    // Colour: known only if every channel is above 0.5 (white yes, red no).
    let rgb = Image::new(2, 1, 3, vec![1.0, 1.0, 1.0, 1.0, 0.0, 0.0]);
    let cp = dir.path("colour.png");
    save(&rgb, &cp).unwrap();
    assert_eq!(Mask::from_file(&cp, 2, 1).unwrap().known(), [true, false]);
    // to_image round-trips.
    let t = Mask::text(32, 24, 1).unwrap();
    assert_eq!(Mask::from_image(&t.to_image()).unwrap().known(), t.known());
}

#[test]
fn downsample_shapes_constants_and_adjoint() {
    for f in [2, 4, 8] {
        let op = Downsample::new(64, 48, 3, f).unwrap();
        assert_eq!(op.input_shape(), (64, 48, 3));
        assert_eq!(op.output_shape(), (64 / f, 48 / f, 3));
        assert_eq!(op.factor(), f);
        let y = forward(&op, &vec![0.37; op.input_len()]);
        assert!(y.iter().all(|v| (v - 0.37).abs() < 1e-6), "factor {f}");
        check_adjoint(&op);
    }
    // Not a multiple of the factor: the remainder is dropped, as the reference's strided conv.
    let op = Downsample::new(30, 21, 1, 4).unwrap();
    assert_eq!(op.output_shape(), (7, 5, 1));
    check_adjoint(&op);
    for bad in [0, 1, 3, 5, 18] {
        assert!(Downsample::new(64, 64, 3, bad).is_err(), "factor {bad}");
    }
    assert!(Downsample::new(3, 64, 3, 4).is_err());
}

#[test]
fn downsample_matches_the_reference_on_an_impulse() {
    // An impulse in the middle of a 32x32 image, factor 2: output (7, 7) covers inputs 11..=18
    // with the 8 lanczos2 taps, the impulse at 16 is tap 5, so the response is w[5]·w[5].
    let (n, f) = (32, 2);
    let op = Downsample::new(n, n, 1, f).unwrap();
    let mut x = vec![0.0; n * n];
    x[16 * n + 16] = 1.0;
    let y = forward(&op, &x);
    // The reference's lanczos2 taps for factor 2, computed outside this code (see
    // `lanczos2_weights`'s test): first half, mirrored.
    let half = [
        -8.863_332_075_900_31e-3,
        -4.194_003_395_069_178e-2,
        1.165_000_943_074_772e-1,
        4.343_032_717_191_149e-1,
    ];
    let k: Vec<f64> = half.iter().chain(half.iter().rev()).copied().collect();
    let w = |o: usize| {
        // Tap index of input 16 in the window of output o: 16 − (o·f − 3).
        let j = 16 + 3 - (o * f) as isize as usize;
        if j < k.len() { k[j] } else { 0.0 }
    };
    for oy in 0..n / f {
        for ox in 0..n / f {
            let want = if (6..=9).contains(&oy) && (6..=9).contains(&ox) {
                w(oy) * w(ox)
            } else {
                0.0
            };
            let got = f64::from(y[oy * (n / f) + ox]);
            assert!((got - want).abs() < 1e-7, "({ox}, {oy}): {got} vs {want}");
        }
    }
}

#[test]
fn blur_preserves_constants_and_is_adjoint() {
    for psf in [
        Psf::gaussian(2.0, 13).unwrap(),
        Psf::gaussian(0.8, 5).unwrap(),
        Psf::boxcar(5).unwrap(),
        Psf::boxcar(1).unwrap(),
    ] {
        let sum: f64 = psf.kernel().iter().map(|&v| f64::from(v)).sum();
        assert!(
            (sum - 1.0).abs() < 1e-5,
            "{}: sums to {sum}",
            psf.description()
        );
        assert!(psf.is_separable());
        let op = Blur::new(psf, 31, 20, 3).unwrap();
        assert_eq!(op.input_shape(), (31, 20, 3));
        assert_eq!(op.output_shape(), (31, 20, 3));
        let y = forward(&op, &vec![0.6; op.input_len()]);
        assert!(y.iter().all(|v| (v - 0.6).abs() < 1e-5), "{}", op.name());
        check_adjoint(&op);
    }
    // A PSF larger than the image still works (replication covers it).
    check_adjoint(&Blur::new(Psf::gaussian(3.0, 19).unwrap(), 6, 5, 1).unwrap());
    // box:1 is the identity.
    let op = Blur::new(Psf::boxcar(1).unwrap(), 9, 7, 1).unwrap();
    let x = random_vec(63, 3);
    assert_eq!(forward(&op, &x), x);
}

#[test]
fn gaussian_psf_values() {
    let p = Psf::gaussian(1.0, 3).unwrap();
    let e = (-0.5f64).exp();
    let s = 1.0 + 2.0 * e;
    let k = p.kernel();
    assert!((f64::from(k[4]) - 1.0 / (s * s)).abs() < 1e-7);
    assert!((f64::from(k[0]) - e * e / (s * s)).abs() < 1e-7);
    assert!(Psf::gaussian(1.0, 4).is_err());
    assert!(Psf::gaussian(0.0, 5).is_err());
    assert!(Psf::boxcar(0).is_err());
    assert_eq!(Psf::default_gaussian_size(2.0), 13);
}

#[test]
fn psf_parse_and_files() {
    assert_eq!(Psf::parse("gaussian:2.0").unwrap().size(), 13);
    assert_eq!(
        Psf::parse("gaussian:1.5:7").unwrap(),
        Psf::gaussian(1.5, 7).unwrap()
    );
    assert_eq!(Psf::parse("box:5").unwrap(), Psf::boxcar(5).unwrap());
    for bad in [
        "gaussian:",
        "gaussian:x",
        "gaussian:2:4",
        "gaussian:2:5:1",
        "box:4",
        "box:a",
    ] {
        let msg = err_text(Psf::parse(bad));
        assert!(msg.contains(bad), "{bad}: {msg}");
    }

    let dir = TempDir::new("psf");
    // An asymmetric 5x5 PSF: a short diagonal streak, with different weights.
    let mut k = vec![0.0; 25];
    k[6] = 1.0;
    k[12] = 0.5;
    k[18] = 0.25;
    k[13] = 0.25;
    let p = dir.path("streak.png");
    save(&Image::new(5, 5, 1, k.clone()), &p).unwrap();
    let psf = Psf::parse(p.to_str().unwrap()).unwrap();
    assert_eq!(psf.size(), 5);
    assert!(!psf.is_separable());
    let total: f32 = k.iter().sum();
    for (a, b) in psf.kernel().iter().zip(&k) {
        assert!((a - b / total).abs() < 2e-3, "{a} vs {}", b / total);
    }
    let op = Blur::new(psf, 20, 14, 3).unwrap();
    check_adjoint(&op);
    let y = forward(&op, &vec![0.25; op.input_len()]);
    assert!(y.iter().all(|v| (v - 0.25).abs() < 1e-5));

    // Errors name the file.
    let even = dir.path("even.png");
    save(&Image::new(4, 4, 1, vec![0.5; 16]), &even).unwrap();
    let msg = err_text(Psf::from_image(&even));
    assert!(msg.contains("even.png") && msg.contains("odd"), "{msg}");
    let wide = dir.path("wide.png");
    save(&Image::new(5, 3, 1, vec![0.5; 15]), &wide).unwrap();
    assert!(err_text(Psf::from_image(&wide)).contains("wide.png"));
    let black = dir.path("black.png");
    save(&Image::new(3, 3, 3, vec![0.0; 27]), &black).unwrap();
    let msg = err_text(Psf::from_image(&black));
    assert!(msg.contains("black.png") && msg.contains("zero"), "{msg}");
    assert!(err_text(Psf::parse("no-such-psf.png")).contains("no-such-psf.png"));
}

#[test]
fn compose_shapes_order_and_adjoint() {
    let (w, h) = (64, 48);
    let blur = Blur::new(Psf::gaussian(1.5, 9).unwrap(), w, h, 3).unwrap();
    let down = Downsample::new(w, h, 3, 4).unwrap();
    let op = Compose::new(vec![Box::new(blur), Box::new(down)]).unwrap();
    assert_eq!(op.input_shape(), (64, 48, 3));
    assert_eq!(op.output_shape(), (16, 12, 3));
    assert!(op.name().contains("blur") && op.name().contains("downsample"));
    check_adjoint(&op);

    // Same result as applying the two by hand.
    let x = random_vec(op.input_len(), 11);
    let blur = Blur::new(Psf::gaussian(1.5, 9).unwrap(), w, h, 3).unwrap();
    let down = Downsample::new(w, h, 3, 4).unwrap();
    assert_eq!(forward(&op, &x), forward(&down, &forward(&blur, &x)));

    // Three stages, with a mask at the low resolution, and a single stage.
    let three = Compose::new(vec![
        Box::new(Blur::new(Psf::boxcar(3).unwrap(), w, h, 1).unwrap()),
        Box::new(Downsample::new(w, h, 1, 2).unwrap()),
        Box::new(Mask::random(32, 24, 0.5, 1).unwrap().with_channels(1)),
    ])
    .unwrap();
    assert_eq!(three.output_shape(), (32, 24, 1));
    check_adjoint(&three);
    let four = Compose::new(vec![
        Box::new(Identity::new(w, h, 1)),
        Box::new(Downsample::new(w, h, 1, 2).unwrap()),
        Box::new(Blur::new(Psf::gaussian(1.0, 5).unwrap(), 32, 24, 1).unwrap()),
        Box::new(Downsample::new(32, 24, 1, 2).unwrap()),
    ])
    .unwrap();
    assert_eq!(four.output_shape(), (16, 12, 1));
    check_adjoint(&four);
    let one = Compose::new(vec![Box::new(Identity::new(5, 5, 1))]).unwrap();
    check_adjoint(&one);

    // Shape mismatches and empty lists are errors naming the operators.
    let msg = err_text(Compose::new(vec![
        Box::new(Downsample::new(w, h, 3, 2).unwrap()),
        Box::new(Blur::new(Psf::boxcar(3).unwrap(), w, h, 3).unwrap()),
    ]));
    assert!(
        msg.contains("downsample") && msg.contains("32x24x3") && msg.contains("64x48x3"),
        "{msg}"
    );
    assert!(Compose::new(vec![]).is_err());
}

#[test]
fn apply_checks_the_image_shape() {
    let img = smooth(32, 16, 3);
    let op = Downsample::new(32, 16, 3, 2).unwrap();
    let lr = op.apply(&img).unwrap();
    assert_eq!((lr.width, lr.height, lr.channels), (16, 8, 3));
    assert!(op.apply(&smooth(32, 16, 1)).is_err());
}

#[test]
fn bicubic_constants_and_round_trip() {
    let c = Image::new(16, 12, 3, vec![0.42; 16 * 12 * 3]);
    for f in [2, 3, 4] {
        let up = bicubic_upscale(&c, f).unwrap();
        assert_eq!((up.width, up.height, up.channels), (16 * f, 12 * f, 3));
        assert!(up.data.iter().all(|v| (v - 0.42).abs() < 1e-6));
        let down = bicubic_downscale(&up, f).unwrap();
        assert!(down.data.iter().all(|v| (v - 0.42).abs() < 1e-6));
    }
    // On a smooth image, enlarging then reducing (by bicubic, or by the SR operator) returns
    // close to the original.
    let img = smooth(48, 32, 3);
    for f in [2, 4] {
        let up = bicubic_upscale(&img, f).unwrap();
        let back = bicubic_downscale(&up, f).unwrap();
        let err = img
            .data
            .iter()
            .zip(&back.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(err < 0.01, "bicubic x{f}: max error {err}");
        let op = Downsample::new(up.width, up.height, 3, f).unwrap();
        let back = op.apply(&up).unwrap();
        let err = img
            .data
            .iter()
            .zip(&back.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(err < 0.02, "lanczos x{f}: max error {err}");
    }
    // Values stay in [0, 1] (overshoot at a hard edge is clipped).
    let edge = Image::new(4, 1, 1, vec![0.0, 0.0, 1.0, 1.0]);
    let up = bicubic_resize(&edge, 16, 4).unwrap();
    assert!(up.data.iter().all(|v| (0.0..=1.0).contains(v)));
    assert!(up.data.iter().any(|&v| v > 0.0 && v < 1.0));
    assert!(bicubic_upscale(&edge, 0).is_err());
    assert!(bicubic_downscale(&edge, 2).is_err());
}

#[test]
fn bicubic_upscale_matches_keys_weights() {
    let cubic = |x: f64| {
        let x = x.abs();
        if x <= 1.0 {
            1.5 * x.powi(3) - 2.5 * x * x + 1.0
        } else if x < 2.0 {
            -0.5 * x.powi(3) + 2.5 * x * x - 4.0 * x + 2.0
        } else {
            0.0
        }
    };
    let x = [0.2, 0.1, 0.3, 0.25, 0.6, 0.5];
    let img = Image::new(6, 1, 1, x.iter().map(|&v| v as f32).collect());
    let up = bicubic_resize(&img, 12, 1).unwrap();
    // Output 2 sits at input coordinate 0.75: inputs −1 (mirrored to 0), 0, 1, 2 at distances
    // 1.75, 0.75, 0.25, 1.25.
    let want2 = (cubic(1.75) + cubic(0.75)) * x[0] + cubic(0.25) * x[1] + cubic(1.25) * x[2];
    // Output 0 sits at −0.25: inputs −2 (mirrored to 1), −1 (to 0), 0, 1.
    let want0 = (cubic(1.75) + cubic(1.25)) * x[1] + (cubic(0.75) + cubic(0.25)) * x[0];
    // Output 5 sits at 2.25: inputs 1..=4, no boundary.
    let want5 = cubic(1.25) * x[1] + cubic(0.25) * x[2] + cubic(0.75) * x[3] + cubic(1.75) * x[4];
    for (i, want) in [(0, want0), (2, want2), (5, want5)] {
        let got = f64::from(up.data[i]);
        assert!((got - want).abs() < 1e-6, "output {i}: {got} vs {want}");
    }
}

#[test]
fn noise_models_keep_shape_and_range() {
    let img = smooth(32, 32, 3);
    let p = noise_models::poisson(&img, 10.0, 1).unwrap();
    let s = noise_models::impulse(&img, 0.1, 1).unwrap();
    let g = noise_models::gaussian(&img, 25.0, 1);
    for n in [&p, &s, &g] {
        assert_eq!((n.width, n.height, n.channels), (32, 32, 3));
        assert!(n.data.iter().all(|v| (0.0..=1.0).contains(v)));
        assert_ne!(n.data, img.data);
    }
    assert_eq!(noise_models::poisson(&img, 10.0, 1).unwrap(), p);
    assert_ne!(noise_models::poisson(&img, 10.0, 2).unwrap(), p);
}

/// The explicit sparse matrix of an operator (what the GPU applies) is the operator: `A x` and
/// `Aᵀ g` from the rows equal `forward` and `adjoint` to f32 rounding.
fn check_rows(op: &dyn Operator) {
    let a = op.rows().expect("the operator has a sparse form");
    assert_eq!((a.n_in, a.n_out), (op.input_len(), op.output_len()));
    let x = random_vec(op.input_len(), 3);
    let g = random_vec(op.output_len(), 4);
    let (mut y, mut y_rows) = (vec![0.0; op.output_len()], vec![0.0; op.output_len()]);
    op.forward(&x, &mut y);
    a.apply(&x, &mut y_rows);
    let (mut gx, mut gx_rows) = (vec![0.0; op.input_len()], vec![0.0; op.input_len()]);
    op.adjoint(&g, &mut gx);
    a.transpose().apply(&g, &mut gx_rows);
    for (what, ours, want) in [("A x", &y_rows, &y), ("Aᵀ g", &gx_rows, &gx)] {
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let diff = ours
            .iter()
            .zip(want.iter())
            .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(
            diff <= 1e-5 * scale,
            "{}: {what} off by {diff:e} of {scale:e}",
            op.name()
        );
    }
}

#[test]
fn sparse_forms_equal_the_operators() {
    for (w, h, c, f) in [(16, 12, 3, 2), (32, 24, 1, 4), (24, 16, 3, 8)] {
        check_rows(&Downsample::new(w, h, c, f).unwrap());
    }
    check_rows(&Blur::new(Psf::gaussian(1.5, 7).unwrap(), 13, 9, 3).unwrap());
    // A diagonal streak: not separable, so the blur runs its direct form.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("streak.png");
    let k: Vec<f32> = (0..25)
        .map(|i| if i % 6 == 0 { 1.0 } else { 0.1 })
        .collect();
    save(&Image::new(5, 5, 1, k), &path).unwrap();
    let psf = Psf::from_image(&path).unwrap();
    assert!(!psf.is_separable());
    check_rows(&Blur::new(psf, 11, 7, 3).unwrap());
    assert!(Identity::new(4, 4, 1).rows().is_none());
    assert_eq!(Identity::new(2, 1, 3).diagonal(), Some(vec![1.0; 6]));

    // Compositions: the product of the matrices (a mask's diagonal as a matrix), each input
    // once per row; all-diagonal chains stay diagonal.
    let (w, h) = (28, 20);
    let holes = |w: usize, h: usize| {
        Mask::from_known(w, h, (0..w * h).map(|i| i % 7 != 3).collect()).unwrap()
    };
    let chain = Compose::new(vec![
        Box::new(Blur::new(Psf::gaussian(1.0, 5).unwrap(), w, h, 3).unwrap()),
        Box::new(Downsample::new(w, h, 3, 2).unwrap()),
        Box::new(holes(w / 2, h / 2)),
    ])
    .unwrap();
    check_rows(&chain);
    let a = chain.rows().unwrap();
    for o in 0..a.n_out {
        let row = &a.idx[a.start[o] as usize..a.start[o + 1] as usize];
        assert!(row.windows(2).all(|p| p[0] < p[1]), "row {o}: {row:?}");
    }
    check_rows(
        &Compose::new(vec![
            Box::new(holes(w, h)),
            Box::new(Downsample::new(w, h, 3, 4).unwrap()),
        ])
        .unwrap(),
    );
    let masks = Compose::new(vec![
        Box::new(holes(5, 4)),
        Box::new(Identity::new(5, 4, 3)),
    ])
    .unwrap();
    let (d, want) = (masks.diagonal().unwrap(), holes(5, 4).diagonal().unwrap());
    assert_eq!(d, want);
}

//! Sparse-matrix operators from files: scipy's `.npz` (CSR and CSC) and Matrix Market read back
//! to the same operator that made the checked-in measurements; the adjoint is the transpose;
//! malformed files are clear errors naming the file.

use std::path::{Path, PathBuf};

use dip::operators::{MatrixOperator, Operator};
use dip::task::{Problem, cgls};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/matrix")
        .join(name)
}

fn read<T: ndarray_npy::ReadableElement, D: ndarray::Dimension>(name: &str) -> ndarray::Array<T, D>
where
    ndarray::Array<T, D>: ndarray_npy::ReadNpyExt,
{
    ndarray_npy::ReadNpyExt::read_npy(std::fs::File::open(fixture(name)).unwrap()).unwrap()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

#[test]
fn scipy_and_matrix_market_files_are_the_same_operator() {
    let x: ndarray::Array2<f32> = read("x.npy");
    let y: ndarray::Array1<f64> = read("y.npy");
    let x: Vec<f32> = x.iter().copied().collect();
    for file in ["a_csr.npz", "a_csc.npz", "a.mtx"] {
        let a = MatrixOperator::from_file(&fixture(file), (8, 8, 1)).unwrap();
        assert_eq!(a.output_shape(), (1, 40, 1), "{file}");
        let mut ax = vec![0.0f32; 40];
        a.forward(&x, &mut ax);
        for (p, q) in ax.iter().zip(y.iter()) {
            assert!(
                (*p as f64 - q).abs() <= 1e-5 * (1.0 + q.abs()),
                "{file}: {p} vs {q}"
            );
        }
        // The adjoint is the transpose.
        let g: Vec<f32> = (0..40).map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0).collect();
        let mut atg = vec![0.0f32; 64];
        a.adjoint(&g, &mut atg);
        let (l, r) = (dot(&ax, &g), dot(&x, &atg));
        assert!(
            (l - r).abs() <= 1e-5 * (l.abs() + r.abs()),
            "{file}: {l} vs {r}"
        );
    }
}

#[test]
fn least_squares_solves_a_full_rank_system() {
    // 64 measurements of a 4 x 4 image through a well-conditioned matrix: CGLS recovers it.
    let entries: Vec<(usize, usize, f64)> = (0..64)
        .flat_map(|r| {
            [
                (r, r % 16, 2.0),
                (r, (r * 5 + 3) % 16, 0.5),
                (r, (r * 3 + 1) % 16, -0.25),
            ]
        })
        .collect();
    let a = MatrixOperator::from_triplets(64, 16, entries, (4, 4, 1), "test").unwrap();
    let x: Vec<f32> = (0..16)
        .map(|i| (i as f32 * 0.37).sin() * 0.5 + 0.5)
        .collect();
    let mut y = vec![0.0f32; 64];
    a.forward(&x, &mut y);
    let got = cgls(&a, &y, 50);
    for (p, q) in got.iter().zip(&x) {
        assert!((p - q).abs() < 1e-4, "{p} vs {q}");
    }
    // As a problem's baseline, clipped to [0, 1] and named.
    let obs = dip::image::Image::try_new(1, 64, 1, y).unwrap();
    let p = Problem::new(obs, Box::new(a))
        .unwrap()
        .with_least_squares_baseline(50);
    let (name, img) = p.baseline().unwrap().unwrap();
    assert_eq!(name, "least squares (CGLS)");
    assert_eq!((img.width, img.height), (4, 4));
}

#[test]
fn bad_matrix_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, &str); 6] = [
        ("a.mtx", "hello\n", "not a Matrix Market file"),
        (
            "b.mtx",
            "%%MatrixMarket matrix array real general\n2 2\n1\n2\n3\n4\n",
            "coordinate",
        ),
        (
            "c.mtx",
            "%%MatrixMarket matrix coordinate real general\n2 4 1\n3 1 1.0\n",
            "line 3: entry (3, 1) is outside",
        ),
        (
            "d.mtx",
            "%%MatrixMarket matrix coordinate real general\n2 4 1\n1 1 abc\n",
            "line 3: 'abc' is not a number",
        ),
        (
            "e.mtx",
            "%%MatrixMarket matrix coordinate real general\n2 5 1\n1 1 1.0\n",
            "5 columns but the image is 2x2x1 = 4 samples",
        ),
        ("f.npz", "not a zip", "not an .npz archive"),
    ];
    for (name, text, want) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        let e = MatrixOperator::from_file(&p, (2, 2, 1))
            .unwrap_err()
            .to_string();
        assert!(e.contains(name) && e.contains(want), "{name}: {e}");
    }
    let e = MatrixOperator::from_file(Path::new("m.txt"), (2, 2, 1))
        .unwrap_err()
        .to_string();
    assert!(e.contains(".mtx") && e.contains(".npz"), "{e}");
}

//! Forward operators from Python: the library's own (`Operator`), and a user's pair of Python
//! callables checked by a dot-product test before a fit uses them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use dip::operators::{
    Blur, Downsample, Identity, Mask, MatrixOperator, Operator, Radon, Shape, SparseRows,
    shepp_logan,
};
use numpy::{
    IntoPyArray, PyArray3, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyReadonlyArray3,
    PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use rand::{SeedableRng, distr::Distribution};
use rand_distr::StandardNormal;
use rand_pcg::Pcg64Mcg;

use crate::err;

/// `(H, W, C)` of a `(W, H, C)` shape.
fn hwc(s: Shape) -> (usize, usize, usize) {
    (s.1, s.0, s.2)
}

fn array<'py>(py: Python<'py>, s: Shape, data: Vec<f32>) -> Bound<'py, PyArray3<f32>> {
    numpy::ndarray::Array3::from_shape_vec(hwc(s), data)
        .expect("the operator fills its shape")
        .into_pyarray(py)
}

fn samples(a: &PyReadonlyArray3<'_, f32>, want: Shape, what: &str) -> PyResult<Vec<f32>> {
    let got = a.shape();
    if (got[0], got[1], got[2]) != hwc(want) {
        return Err(err(format!(
            "{what}: expected shape {:?}, got {:?}",
            hwc(want),
            (got[0], got[1], got[2])
        )));
    }
    Ok(a.as_array().iter().copied().collect())
}

/// A forward operator of the library: the same code the command line fits through.
#[pyclass(module = "dip._dip", name = "Operator", frozen)]
pub struct PyOperator {
    pub op: Arc<dyn Operator>,
}

#[pymethods]
impl PyOperator {
    /// What the operator does, e.g. `downsample x4 (lanczos2)`.
    #[getter]
    fn name(&self) -> String {
        self.op.name()
    }

    /// `(H, W, C)` of the image it acts on.
    #[getter]
    fn input_shape(&self) -> (usize, usize, usize) {
        hwc(self.op.input_shape())
    }

    /// `(H, W, C)` of the observation it makes.
    #[getter]
    fn output_shape(&self) -> (usize, usize, usize) {
        hwc(self.op.output_shape())
    }

    /// `A x` of an `input_shape` float32 array.
    fn forward<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArray3<'_, f32>,
    ) -> PyResult<Bound<'py, PyArray3<f32>>> {
        let x = samples(&x, self.op.input_shape(), "x")?;
        let mut y = vec![0.0f32; self.op.output_len()];
        py.detach(|| self.op.forward(&x, &mut y));
        Ok(array(py, self.op.output_shape(), y))
    }

    /// `Aᵀ y` of an `output_shape` float32 array.
    fn adjoint<'py>(
        &self,
        py: Python<'py>,
        y: PyReadonlyArray3<'_, f32>,
    ) -> PyResult<Bound<'py, PyArray3<f32>>> {
        let y = samples(&y, self.op.output_shape(), "y")?;
        let mut x = vec![0.0f32; self.op.input_len()];
        py.detach(|| self.op.adjoint(&y, &mut x));
        Ok(array(py, self.op.input_shape(), x))
    }

    fn __repr__(&self) -> String {
        let (i, o) = (self.input_shape(), self.output_shape());
        format!("Operator('{}', {i:?} -> {o:?})", self.op.name())
    }
}

/// One of the library's operators on images of `shape` = (H, W, C): `identity`, `mask`
/// (`mask`, H×W bool, True = known), `downsample` (`factor`, Lanczos-2) or `blur` (`psf`, a
/// spec string, or `psf_weights`, a square odd array).
#[pyfunction]
#[pyo3(signature = (kind, shape, *, mask=None, factor=None, psf=None, psf_weights=None,
    angles=None, path=None, csr=None))]
#[allow(clippy::too_many_arguments)]
pub fn operator(
    kind: &str,
    shape: (usize, usize, usize),
    mask: Option<PyReadonlyArray2<'_, bool>>,
    factor: Option<usize>,
    psf: Option<String>,
    psf_weights: Option<PyReadonlyArray2<'_, f64>>,
    angles: Option<Vec<f64>>,
    path: Option<std::path::PathBuf>,
    csr: Option<Csr<'_>>,
) -> PyResult<PyOperator> {
    let (h, w, c) = shape;
    if h == 0 || w == 0 || !(c == 1 || c == 3) {
        return Err(err(format!(
            "shape {shape:?}: an image is H x W x C with C = 1 or 3 and a nonzero size"
        )));
    }
    let op: Arc<dyn Operator> = match kind {
        "identity" => Arc::new(Identity::new(w, h, c)),
        "mask" => {
            let m = mask.ok_or_else(|| err("a mask operator needs mask="))?;
            let s = m.shape();
            if (s[0], s[1]) != (h, w) {
                return Err(err(format!(
                    "mask: {}x{} for an image of {h}x{w}",
                    s[0], s[1]
                )));
            }
            let known: Vec<bool> = m.as_array().iter().copied().collect();
            Arc::new(Mask::from_known(w, h, known).map_err(err)?.with_channels(c))
        }
        "downsample" => {
            let f = factor.ok_or_else(|| err("a downsample operator needs factor="))?;
            Arc::new(Downsample::new(w, h, c, f).map_err(err)?)
        }
        "blur" => Arc::new(Blur::new(crate::psf_of(psf, psf_weights)?, w, h, c).map_err(err)?),
        "matrix" => match (path, csr) {
            (Some(p), None) => Arc::new(MatrixOperator::from_file(&p, (w, h, c)).map_err(err)?),
            (None, Some((rows, cols, indptr, indices, data))) => {
                let ints = |a: &PyReadonlyArray1<'_, i64>, what: &str| -> PyResult<Vec<usize>> {
                    a.as_array()
                        .iter()
                        .map(|&v| {
                            usize::try_from(v)
                                .map_err(|_| err(format!("matrix: negative {what} {v}")))
                        })
                        .collect()
                };
                let values: Vec<f64> = data.as_array().iter().copied().collect();
                Arc::new(
                    MatrixOperator::from_csr(
                        rows,
                        cols,
                        &ints(&indptr, "row offset")?,
                        &ints(&indices, "column index")?,
                        &values,
                        (w, h, c),
                        "a scipy matrix",
                    )
                    .map_err(err)?,
                )
            }
            _ => return Err(err("a matrix operator needs a file or CSR arrays")),
        },
        "radon" => {
            if h != w || c != 1 {
                return Err(err(format!(
                    "shape {shape:?}: CT images are square and gray (n, n)"
                )));
            }
            let a = angles.ok_or_else(|| err("a radon operator needs angles="))?;
            Arc::new(Radon::new(w, &a).map_err(err)?)
        }
        other => {
            return Err(err(format!(
                "unknown operator '{other}'; the operators are identity, mask, downsample, blur, \
                 radon, matrix"
            )));
        }
    };
    Ok(PyOperator { op })
}

/// A CSR matrix as Python passes it: rows, columns, row offsets, column indices, values.
pub type Csr<'py> = (
    usize,
    usize,
    PyReadonlyArray1<'py, i64>,
    PyReadonlyArray1<'py, i64>,
    PyReadonlyArray1<'py, f64>,
);

/// A user's operator as Python passes it: forward, adjoint, and the image's (H, W, C).
pub type UserPair = (Py<PyAny>, Py<PyAny>, (usize, usize, usize));

/// The modified Shepp–Logan phantom, `n × n`, values in [0, 1].
#[pyfunction]
pub fn phantom<'py>(py: Python<'py>, n: usize) -> PyResult<Bound<'py, PyArray3<f32>>> {
    if n < 2 {
        return Err(err(format!(
            "the phantom needs a side of at least 2, not {n}"
        )));
    }
    Ok(array(py, (n, n, 1), shepp_logan(n).data))
}

/// A library operator shared with a Python object, as a fit's boxed operator.
pub struct Shared(pub Arc<dyn Operator>);

impl Operator for Shared {
    fn input_shape(&self) -> Shape {
        self.0.input_shape()
    }
    fn output_shape(&self) -> Shape {
        self.0.output_shape()
    }
    fn forward(&self, x: &[f32], y: &mut [f32]) {
        self.0.forward(x, y)
    }
    fn adjoint(&self, gy: &[f32], gx: &mut [f32]) {
        self.0.adjoint(gy, gx)
    }
    fn name(&self) -> String {
        self.0.name()
    }
    fn diagonal(&self) -> Option<Vec<f32>> {
        self.0.diagonal()
    }
    fn rows(&self) -> Option<SparseRows> {
        self.0.rows()
    }
}

/// A user's operator: two Python callables on float32 arrays. Each call takes the GIL. A call
/// that raises or returns the wrong shape cannot fail the step it is in: it writes zeros, keeps
/// the error, and cancels the fit, which ends after that step and raises it.
pub struct Callables {
    pub forward: Py<PyAny>,
    pub adjoint: Py<PyAny>,
    pub input: Shape,
    pub output: Shape,
    pub error: Arc<Mutex<Option<PyErr>>>,
    pub cancel: Arc<AtomicBool>,
}

impl Callables {
    /// `f(x)` as the samples of a `want`-shaped float32 array.
    fn call(
        py: Python<'_>,
        f: &Py<PyAny>,
        x: Vec<f32>,
        from: Shape,
        want: Shape,
        what: &str,
    ) -> PyResult<Vec<f32>> {
        let r = f.call1(py, (array(py, from, x),))?;
        let np = py.import("numpy")?;
        let a = np
            .call_method1("ascontiguousarray", (r, "float32"))?
            .cast_into::<PyArray3<f32>>()
            .map_err(|_| {
                err(format!(
                    "{what} must return an array of shape {:?}",
                    hwc(want)
                ))
            })?;
        let v = samples(&a.readonly(), want, &format!("{what}'s result"))?;
        if v.iter().any(|s| !s.is_finite()) {
            return Err(err(format!("{what} returned NaN or infinite values")));
        }
        Ok(v)
    }

    fn apply(&self, fwd: bool, x: &[f32], y: &mut [f32]) {
        let (f, from, to, what) = if fwd {
            (&self.forward, self.input, self.output, "forward")
        } else {
            (&self.adjoint, self.output, self.input, "adjoint")
        };
        let r = Python::attach(|py| Self::call(py, f, x.to_vec(), from, to, what));
        match r {
            Ok(v) => y.copy_from_slice(&v),
            Err(e) => {
                y.fill(0.0);
                let mut slot = self.error.lock().expect("the operator's error slot");
                if slot.is_none() {
                    *slot = Some(e);
                }
                self.cancel.store(true, Ordering::Relaxed);
            }
        }
    }

    /// The dot-product test: `⟨A x, y⟩ = ⟨x, Aᵀ y⟩` for a random `x` and for `y` both random and
    /// `A x`, to a relative 1e-3. Errors name the two sides.
    pub fn check(&self, py: Python<'_>) -> PyResult<()> {
        let n_in = self.input.0 * self.input.1 * self.input.2;
        let n_out = self.output.0 * self.output.1 * self.output.2;
        let mut r = Pcg64Mcg::seed_from_u64(0xD07_7E57);
        let mut draw = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| <StandardNormal as Distribution<f32>>::sample(&StandardNormal, &mut r))
                .collect()
        };
        let x = draw(n_in);
        let y = draw(n_out);
        let ax = Self::call(
            py,
            &self.forward,
            x.clone(),
            self.input,
            self.output,
            "forward",
        )?;
        let aty = Self::call(
            py,
            &self.adjoint,
            y.clone(),
            self.output,
            self.input,
            "adjoint",
        )?;
        let atax = Self::call(
            py,
            &self.adjoint,
            ax.clone(),
            self.output,
            self.input,
            "adjoint",
        )?;
        let dot = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(&p, &q)| p as f64 * q as f64)
                .sum::<f64>()
        };
        let norm = |a: &[f32]| dot(a, a).sqrt();
        if norm(&ax) == 0.0 {
            return Err(err(
                "forward maps a random image to zeros: the operator observes nothing",
            ));
        }
        // ⟨Ax, Ax⟩ = ⟨x, AᵀAx⟩: sensitive to any wrong adjoint, whatever the size.
        let (a1, b1) = (dot(&ax, &ax), dot(&x, &atax));
        // ⟨Ax, y⟩ = ⟨x, Aᵀy⟩ for a random y, relative to the Cauchy–Schwarz bound.
        let (a2, b2) = (dot(&ax, &y), dot(&x, &aty));
        let scale2 = norm(&ax) * norm(&y) + norm(&x) * norm(&aty);
        let rel1 = (a1 - b1).abs() / a1;
        let rel2 = 2.0 * (a2 - b2).abs() / scale2.max(f64::MIN_POSITIVE);
        if rel1 > 1e-3 || rel2 > 1e-3 {
            return Err(err(format!(
                "adjoint is not the adjoint of forward: for a random x, <Ax, Ax> = {a1:.6e} but \
                 <x, A^T(Ax)> = {b1:.6e} (relative difference {rel1:.1e}); for a random y, \
                 <Ax, y> = {a2:.6e} but <x, A^T y> = {b2:.6e} (relative {rel2:.1e}); the test \
                 allows 1e-3"
            )));
        }
        Ok(())
    }
}

impl Operator for Callables {
    fn input_shape(&self) -> Shape {
        self.input
    }
    fn output_shape(&self) -> Shape {
        self.output
    }
    fn forward(&self, x: &[f32], y: &mut [f32]) {
        self.apply(true, x, y)
    }
    fn adjoint(&self, gy: &[f32], gx: &mut [f32]) {
        self.apply(false, gy, gx)
    }
    fn name(&self) -> String {
        "a Python operator".into()
    }
}

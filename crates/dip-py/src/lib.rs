//! `dip._dip`: the compiled half of the Python package. It is a thin layer over `dip::task`:
//! arrays in (float32, height × width × channels, values in [0, 1]), a `Problem` and a `Recipe`
//! built, `restore` run with the GIL released, a `Restoration` out. Dtype conversion, 2-D
//! arrays and keyword arguments are handled by the Python half (`dip/__init__.py`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dip::fit::{Control, Observer, StepInfo};
use dip::image::{BitDepth, Image};
use dip::operators::{Mask, Psf};
use dip::recipe::parse_value;
use dip::task::{Noise, OBSERVE_EVERY, Problem, RunContext, restore as restore_problem};
use numpy::{
    IntoPyArray, PyArray1, PyArray3, PyArray4, PyReadonlyArray2, PyReadonlyArray3,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyKeyboardInterrupt, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

mod analysis;
mod ops;

fn err(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// The recipe of `preset` with `settings` (dotted key, TOML text) laid over it in order; the
/// key `arch` sets the architecture with the fit settings it brings, as the command line's
/// `--arch`.
fn recipe_from(preset: &str, settings: &[(String, String)]) -> PyResult<dip::recipe::Recipe> {
    let mut arch = None;
    let mut overrides = Vec::with_capacity(settings.len());
    for (k, v) in settings {
        match (k.as_str(), parse_value(v)) {
            ("arch", toml::Value::String(a)) => arch = Some(a),
            ("arch", other) => return Err(err(format!("arch must be a name, got {other}"))),
            (_, value) => overrides.push((k.clone(), value)),
        }
    }
    dip::recipe::recipe_for(preset, arch.as_deref(), &overrides).map_err(err)
}

/// A PSF from a spec string (`gaussian:1.5`) or a square odd array of weights.
fn psf_of(psf: Option<String>, weights: Option<PyReadonlyArray2<'_, f64>>) -> PyResult<Psf> {
    match (psf, weights) {
        (Some(spec), None) => Psf::parse(&spec).map_err(err),
        (None, Some(w)) => {
            let s = w.shape();
            if s[0] != s[1] {
                return Err(err(format!(
                    "psf: a PSF array must be square, this one is {}x{}",
                    s[0], s[1]
                )));
            }
            let v: Vec<f64> = w.as_array().iter().copied().collect();
            Psf::from_weights(s[0], &v).map_err(|e| err(format!("psf: {e}")))
        }
        _ => Err(err("deblur needs one psf: a spec string or an array")),
    }
}

/// An H×W×C float32 array as an image (1 or 3 channels).
fn to_image(a: &PyReadonlyArray3<'_, f32>, bits: u8, what: &str) -> PyResult<Image> {
    let shape = a.shape();
    let (h, w, c) = (shape[0], shape[1], shape[2]);
    let data: Vec<f32> = a.as_array().iter().copied().collect();
    if data.iter().any(|v| !v.is_finite()) {
        return Err(err(format!(
            "{what}: the array holds NaN or infinite values"
        )));
    }
    let img = Image::try_new(w, h, c, data).map_err(|e| err(format!("{what}: {e}")))?;
    Ok(img.with_bit_depth(if bits == 8 {
        BitDepth::Eight
    } else {
        BitDepth::Sixteen
    }))
}

fn to_array<'py>(py: Python<'py>, img: &Image) -> Bound<'py, PyArray3<f32>> {
    numpy::ndarray::Array3::from_shape_vec((img.height, img.width, img.channels), img.data.clone())
        .expect("an image's samples fill its shape")
        .into_pyarray(py)
}

/// Calls the user's callback every `every` steps, with the GIL; stops the fit when it returns
/// False or raises (the exception is kept and raised after the fit).
struct Callback {
    f: Py<PyAny>,
    every: usize,
    with_images: bool,
    error: Arc<std::sync::Mutex<Option<PyErr>>>,
    interrupted: Arc<AtomicBool>,
}

impl Observer for Callback {
    fn observe(&mut self, info: &StepInfo<'_>) -> Control {
        if !info.iter.is_multiple_of(self.every) {
            return Control::Continue;
        }
        Python::attach(|py| {
            let image = if self.with_images {
                to_array(py, info.ema).into_any()
            } else {
                py.None().into_bound(py)
            };
            match self.f.call1(py, (info.iter, info.loss, image)) {
                Ok(r) => match r.extract::<bool>(py) {
                    Ok(false) => Control::Stop,
                    _ => Control::Continue,
                },
                Err(e) if e.is_instance_of::<PyKeyboardInterrupt>(py) => {
                    // Ctrl-C while the callback ran: an interruption, not a failure.
                    self.interrupted.store(true, Ordering::Relaxed);
                    Control::Stop
                }
                Err(e) => {
                    *self.error.lock().expect("the callback's error slot") = Some(e);
                    Control::Stop
                }
            }
        })
    }
}

/// What `restore` returns: the result and how it was chosen.
#[pyclass(module = "dip._dip", name = "Restoration", frozen)]
struct Restored {
    #[pyo3(get)]
    image: Py<PyArray3<f32>>,
    #[pyo3(get)]
    stopped_at: usize,
    #[pyo3(get)]
    steps_run: usize,
    #[pyo3(get)]
    stop_rule: String,
    #[pyo3(get)]
    sigma_estimate: Option<f64>,
    #[pyo3(get)]
    warnings: Vec<String>,
    #[pyo3(get)]
    psnr: Option<f64>,
    #[pyo3(get)]
    ssim: Option<f64>,
    #[pyo3(get)]
    baseline: Option<(String, f64)>,
    #[pyo3(get)]
    interrupted: bool,
    #[pyo3(get)]
    seconds: f64,
    #[pyo3(get)]
    history: Py<PyDict>,
    #[pyo3(get)]
    sgld_std: Option<Py<PyArray3<f32>>>,
    #[pyo3(get)]
    summary: String,
    #[pyo3(get)]
    bands: Option<Py<PyDict>>,
    #[pyo3(get)]
    trajectory: Option<Py<PyArray4<f32>>>,
    #[pyo3(get)]
    trajectory_steps: Option<Py<PyArray1<u64>>>,
}

#[pymethods]
impl Restored {
    fn __repr__(&self) -> String {
        let p = self
            .psnr
            .map_or(String::new(), |p| format!(", psnr={p:.2}"));
        format!(
            "Restoration(stopped_at={}, steps_run={}, stop_rule='{}'{p})",
            self.stopped_at, self.steps_run, self.stop_rule
        )
    }
}

/// Restores `y` (H×W×C float32 in [0, 1]). `kind`: denoise, inpaint (with `mask`, H×W bool),
/// sr (with `factor`), deblur (with `psf`, a spec string, or `psf_weights`, a square odd
/// array). `settings` are (dotted key, value as TOML text) pairs laid over the preset.
#[pyfunction]
#[pyo3(signature = (kind, y, bits, *, mask=None, factor=None, psf=None, psf_weights=None,
    operator=None, callables=None, angles=None, clean=None, sigma=None, preset=None, settings=Vec::new(),
    threads=None, callback=None, callback_every=10, callback_images=false, bands=None,
    record_every=None))]
#[allow(clippy::too_many_arguments)]
fn restore(
    py: Python<'_>,
    kind: &str,
    y: PyReadonlyArray3<'_, f32>,
    bits: u8,
    mask: Option<PyReadonlyArray2<'_, bool>>,
    factor: Option<usize>,
    psf: Option<String>,
    psf_weights: Option<PyReadonlyArray2<'_, f64>>,
    operator: Option<Py<ops::PyOperator>>,
    callables: Option<ops::UserPair>,
    angles: Option<Vec<f64>>,
    clean: Option<PyReadonlyArray3<'_, f32>>,
    sigma: Option<f64>,
    preset: Option<String>,
    settings: Vec<(String, String)>,
    threads: Option<usize>,
    callback: Option<Py<PyAny>>,
    callback_every: usize,
    callback_images: bool,
    bands: Option<usize>,
    record_every: Option<usize>,
) -> PyResult<Restored> {
    let y = to_image(&y, bits, "y")?;
    // Set by Ctrl-C, or by a Python operator that raised (its error is kept here).
    let cancel = Arc::new(AtomicBool::new(false));
    let op_error: Arc<std::sync::Mutex<Option<PyErr>>> = Arc::new(std::sync::Mutex::new(None));
    let (default_preset, problem) = match kind {
        "denoise" => ("denoise", Problem::denoise(y)),
        "inpaint" => {
            let m = mask.ok_or_else(|| err("inpaint needs a mask"))?;
            let shape = m.shape();
            let known: Vec<bool> = m.as_array().iter().copied().collect();
            let mask = Mask::from_known(shape[1], shape[0], known).map_err(err)?;
            ("inpaint-random", Problem::inpaint(y, mask).map_err(err)?)
        }
        "sr" => {
            let f = factor.ok_or_else(|| err("super-resolution needs a factor"))?;
            (
                if f >= 8 { "sr8" } else { "sr4" },
                Problem::super_resolve(y, f).map_err(err)?,
            )
        }
        "deblur" => (
            "deblur",
            Problem::deblur(y, psf_of(psf, psf_weights)?).map_err(err)?,
        ),
        "ct" => {
            let angles = angles.ok_or_else(|| err("ct needs angles"))?;
            ("deblur", Problem::ct(y, &angles).map_err(err)?)
        }
        "custom" => {
            let op: Box<dyn dip::operators::Operator> = match (operator, callables) {
                (Some(op), None) => Box::new(ops::Shared(op.get().op.clone())),
                (None, Some((forward, adjoint, (h, w, c)))) => {
                    let user = ops::Callables {
                        forward,
                        adjoint,
                        input: (w, h, c),
                        output: (y.width, y.height, y.channels),
                        error: op_error.clone(),
                        cancel: cancel.clone(),
                    };
                    // A wrong adjoint fits silently to nonsense: refuse it before the fit.
                    user.check(py)?;
                    Box::new(user)
                }
                _ => {
                    return Err(err(
                        "restore needs an operator or a (forward, adjoint) pair",
                    ));
                }
            };
            // The generic linear-operator settings (those of deblurring).
            ("deblur", Problem::new(y, op).map_err(err)?)
        }
        other => {
            return Err(err(format!(
                "unknown task '{other}'; the tasks are denoise, inpaint, sr, deblur, custom"
            )));
        }
    };
    let mut problem = problem;
    if let Some(c) = clean {
        problem = problem
            .with_clean(to_image(&c, bits, "clean")?)
            .map_err(|e| err(format!("clean: {e}")))?;
    }
    if let Some(s) = sigma {
        problem = problem
            .with_noise_sigma(s)
            .map_err(|e| err(format!("sigma: {e}")))?;
    }
    let recipe = recipe_from(preset.as_deref().unwrap_or(default_preset), &settings)?;
    if callback_every == 0 {
        return Err(err("callback_every must be at least 1"));
    }
    // What the fit records besides its result.
    let result_shape = problem.result_shape();
    let mut recorder = match bands {
        Some(n) => Some(analysis::band_recorder(
            n,
            &problem.observation,
            problem.clean.as_ref(),
            result_shape,
        )?),
        None => None,
    };
    let mut frames = match record_every {
        Some(k) if k == 0 || !k.is_multiple_of(OBSERVE_EVERY) => {
            return Err(err(format!(
                "record_every must be a positive multiple of {OBSERVE_EVERY}, got {k}"
            )));
        }
        Some(k) => Some(analysis::Frames {
            every: k,
            steps: Vec::new(),
            data: Vec::new(),
            shape: (result_shape.1, result_shape.0, result_shape.2),
        }),
        None => None,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.unwrap_or(0))
        .build()
        .map_err(err)?;
    let error = Arc::new(std::sync::Mutex::new(None));
    let interrupted = Arc::new(AtomicBool::new(false));
    let mut cb = callback.map(|f| Callback {
        f,
        every: callback_every,
        with_images: callback_images,
        error: error.clone(),
        interrupted: interrupted.clone(),
    });
    // The fit runs on a worker thread; this (Python's main) thread waits with the GIL
    // released and, between waits, runs Python's signal handlers: Ctrl-C sets the fit's cancel
    // flag, and the fit ends after its current step with what it has.
    let r = std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            pool.install(|| {
                let mut ctx = RunContext {
                    cancel: Some(cancel.clone()),
                    ..RunContext::default()
                };
                if let Some(c) = cb.as_mut() {
                    ctx.observers.push(c);
                }
                if let Some((r, _)) = recorder.as_mut() {
                    ctx.observers.push(r);
                }
                if let Some(f) = frames.as_mut() {
                    ctx.observers.push(f);
                }
                restore_problem(&problem, &recipe, ctx)
            })
        });
        while !worker.is_finished() {
            py.detach(|| std::thread::sleep(std::time::Duration::from_millis(20)));
            if py.check_signals().is_err() {
                interrupted.store(true, Ordering::Relaxed);
                cancel.store(true, Ordering::Relaxed);
            }
        }
        worker.join()
    })
    .map_err(|_| err("internal error: the fit's thread panicked"))?
    .map_err(err)?;
    if let Some(e) = error.lock().expect("the callback's error slot").take() {
        return Err(e);
    }
    if let Some(e) = op_error.lock().expect("the operator's error slot").take() {
        return Err(e);
    }
    // Interrupted (Ctrl-C): the result so far is returned, marked `interrupted`.
    let interrupted = interrupted.load(Ordering::Relaxed) || r.report.interrupted;
    let history = PyDict::new(py);
    let h = &r.report.history;
    let col = |f: &dyn Fn(&dip::fit::HistoryRow) -> f64| -> Vec<f64> { h.iter().map(f).collect() };
    history.set_item("step", col(&|x| x.iter as f64).into_pyarray(py))?;
    history.set_item("loss", col(&|x| x.loss).into_pyarray(py))?;
    if problem.clean.is_some() {
        history.set_item(
            "psnr",
            col(&|x| x.psnr_ema.unwrap_or(f64::NAN)).into_pyarray(py),
        )?;
        history.set_item(
            "psnr_raw",
            col(&|x| x.psnr_raw.unwrap_or(f64::NAN)).into_pyarray(py),
        )?;
    }
    let summary = r.summary(vec![]).map_err(err)?.to_string();
    let bands = match recorder {
        Some((rec, b)) => Some(analysis::bands_dict(py, rec, &b)?.unbind()),
        None => None,
    };
    let (trajectory, trajectory_steps) = match frames {
        Some(f) => {
            let (a, s) = f.arrays(py);
            (Some(a.unbind()), Some(s.unbind()))
        }
        None => (None, None),
    };
    Ok(Restored {
        image: to_array(py, &r.image).unbind(),
        stopped_at: r.stopped_at,
        steps_run: r.report.iterations_run,
        stop_rule: r.stop_rule.clone(),
        sigma_estimate: r.stop_sigma,
        warnings: r.stop_warnings.clone(),
        psnr: r.psnr,
        ssim: r.ssim,
        baseline: r.baseline.map(|(n, p)| (n.to_string(), p)),
        interrupted,
        seconds: r.report.seconds,
        history: history.unbind(),
        sgld_std: r.sgld.as_ref().map(|s| to_array(py, &s.std).unbind()),
        summary,
        bands,
        trajectory,
        trajectory_steps,
    })
}

/// `x` with noise: gaussian (`amount` = σ on the 0–255 scale), poisson (`amount` = photons at
/// white) or impulse (`amount` = fraction of samples), from `seed`.
#[pyfunction]
fn add_noise<'py>(
    py: Python<'py>,
    x: PyReadonlyArray3<'_, f32>,
    kind: &str,
    amount: f64,
    seed: u64,
) -> PyResult<Bound<'py, PyArray3<f32>>> {
    let img = to_image(&x, 16, "x")?;
    let noise = match kind {
        "gaussian" => Noise::Gaussian(amount),
        "poisson" => Noise::Poisson(amount),
        "impulse" => Noise::Impulse(amount),
        other => {
            return Err(err(format!(
                "unknown noise '{other}'; the kinds are gaussian, poisson, impulse"
            )));
        }
    };
    Ok(to_array(py, &noise.apply(&img, seed).map_err(err)?))
}

/// PSNR (dB, peak 1) of `a` against `b`, same shapes.
#[pyfunction]
fn psnr(a: PyReadonlyArray3<'_, f32>, b: PyReadonlyArray3<'_, f32>) -> PyResult<f64> {
    if a.shape() != b.shape() {
        return Err(err(format!(
            "shapes differ: {:?} and {:?}",
            a.shape(),
            b.shape()
        )));
    }
    let (x, y): (Vec<f32>, Vec<f32>) = (
        a.as_array().iter().copied().collect(),
        b.as_array().iter().copied().collect(),
    );
    Ok(dip::metrics::psnr(&x, &y))
}

/// SSIM of `a` against `b` (Gaussian window, the usual constants), same shapes.
#[pyfunction]
fn ssim(a: PyReadonlyArray3<'_, f32>, b: PyReadonlyArray3<'_, f32>) -> PyResult<f64> {
    if a.shape() != b.shape() {
        return Err(err(format!(
            "shapes differ: {:?} and {:?}",
            a.shape(),
            b.shape()
        )));
    }
    Ok(dip::metrics::ssim(
        &to_image(&a, 16, "a")?,
        &to_image(&b, 16, "b")?,
    ))
}

/// The preset names.
#[pyfunction]
fn presets() -> Vec<&'static str> {
    dip::recipe::PRESETS.iter().map(|(n, _)| *n).collect()
}

/// A preset's TOML text.
#[pyfunction]
fn preset_text(name: &str) -> PyResult<&'static str> {
    dip::recipe::preset_text(name).map_err(err)
}

#[pymodule]
fn _dip(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(restore, m)?)?;
    m.add_function(wrap_pyfunction!(add_noise, m)?)?;
    m.add_function(wrap_pyfunction!(psnr, m)?)?;
    m.add_function(wrap_pyfunction!(ssim, m)?)?;
    m.add_function(wrap_pyfunction!(presets, m)?)?;
    m.add_function(wrap_pyfunction!(preset_text, m)?)?;
    m.add_function(wrap_pyfunction!(ops::operator, m)?)?;
    m.add_function(wrap_pyfunction!(ops::phantom, m)?)?;
    m.add_function(wrap_pyfunction!(analysis::band_distance, m)?)?;
    m.add_function(wrap_pyfunction!(analysis::gp_prior, m)?)?;
    m.add_class::<Restored>()?;
    m.add_class::<ops::PyOperator>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;

    Ok(())
}

//! The analysis half of the package: what the fit records besides its result (the band fits and
//! the trajectory), the two-run distance per band, and the Gaussian-process prior of a network.

use std::sync::Arc;

use dip::fit::{BandRecorder, Control, Observer, StepInfo};
use dip::gp::{PriorConfig, sample_prior};
use dip::image::Image;
use dip::spectral::analysis::PairAnalyzer;
use dip::spectral::bands::{BandSpacing, Bands};
use numpy::{IntoPyArray, PyArray1, PyArray4, PyReadonlyArray3, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::{err, to_image};

/// `n` linear radial bands over a `w × h` spectrum, with the error naming the keyword.
pub fn bands(w: usize, h: usize, n: usize) -> PyResult<Arc<Bands>> {
    if n == 0 {
        return Err(err("bands must be at least 1"));
    }
    Bands::new(w, h, n, BandSpacing::Linear)
        .map(Arc::new)
        .map_err(|e| err(format!("bands={n}: {e}")))
}

/// The band recorder of a fit whose result has the observation's size.
pub fn band_recorder(
    n: usize,
    observation: &Image,
    clean: Option<&Image>,
    result: (usize, usize, usize),
) -> PyResult<(BandRecorder, Arc<Bands>)> {
    let obs = (observation.width, observation.height, observation.channels);
    if obs != result {
        return Err(err(
            "bands= measures the output against the observation, so it needs an observation of \
             the image's own size (denoising, inpainting, deblurring)",
        ));
    }
    let b = bands(obs.0, obs.1, n)?;
    let r = BandRecorder::new(b.clone(), observation, clean).map_err(err)?;
    Ok((r, b))
}

/// The band fits as a dict of arrays: `step` (T), `fit` (T × bands: the fraction of each band
/// of the observation the raw output has fitted), `half_time` (bands; NaN where a band never
/// reached one half), `edges` (bands + 1, cycles per pixel).
pub fn bands_dict<'py>(
    py: Python<'py>,
    r: BandRecorder,
    bands: &Bands,
) -> PyResult<Bound<'py, PyDict>> {
    let n = bands.counts.len();
    let records = r.records().to_vec();
    let d = PyDict::new(py);
    let steps: Vec<f64> = records.iter().map(|(s, _)| *s as f64).collect();
    let mut fit = numpy::ndarray::Array2::<f64>::from_elem((records.len(), n), f64::NAN);
    for (t, (_, f)) in records.iter().enumerate() {
        for (b, &v) in f.iter().enumerate().take(n) {
            fit[[t, b]] = v;
        }
    }
    let half: Vec<f64> = r
        .half_times()
        .map_err(err)?
        .into_iter()
        .map(|h| h.unwrap_or(f64::NAN))
        .collect();
    d.set_item("step", steps.into_pyarray(py))?;
    d.set_item("fit", fit.into_pyarray(py))?;
    d.set_item("half_time", half.into_pyarray(py))?;
    d.set_item("edges", bands.edges.clone().into_pyarray(py))?;
    Ok(d)
}

/// Records the raw output every `every` steps (a multiple of the observation interval).
pub struct Frames {
    pub every: usize,
    pub steps: Vec<usize>,
    pub data: Vec<f32>,
    pub shape: (usize, usize, usize),
}

impl Observer for Frames {
    fn observe(&mut self, info: &StepInfo<'_>) -> Control {
        if info.iter.is_multiple_of(self.every) {
            self.steps.push(info.iter);
            self.data.extend_from_slice(&info.output.data);
        }
        Control::Continue
    }
}

impl Frames {
    /// The frames as a T × H × W × C array, and their steps.
    pub fn arrays<'py>(
        self,
        py: Python<'py>,
    ) -> (Bound<'py, PyArray4<f32>>, Bound<'py, PyArray1<u64>>) {
        let (h, w, c) = self.shape;
        let t = self.steps.len();
        let a = numpy::ndarray::Array4::from_shape_vec((t, h, w, c), self.data)
            .expect("every frame has the image's shape");
        let s: Vec<u64> = self.steps.iter().map(|&s| s as u64).collect();
        (a.into_pyarray(py), s.into_pyarray(py))
    }
}

/// The squared distance between two images (H×W×C float32, same shape) in total and per
/// radial band (`bands` linear bands; the bands add up to the total, by Parseval).
#[pyfunction]
#[pyo3(signature = (a, b, bands=8))]
pub fn band_distance<'py>(
    py: Python<'py>,
    a: PyReadonlyArray3<'_, f32>,
    b: PyReadonlyArray3<'_, f32>,
    bands: usize,
) -> PyResult<(f64, Bound<'py, PyArray1<f64>>)> {
    if a.shape() != b.shape() {
        return Err(err(format!(
            "shapes differ: {:?} and {:?}",
            a.shape(),
            b.shape()
        )));
    }
    let (x, y) = (to_image(&a, 16, "a")?, to_image(&b, 16, "b")?);
    let mut p = PairAnalyzer::new(self::bands(x.width, x.height, bands)?).map_err(err)?;
    let d = p.distance(&x, &y).map_err(err)?;
    Ok((d.total, d.per_band.into_pyarray(py)))
}

/// The Monte Carlo prior of a network at initialisation (the GP view): `samples` outputs of
/// `size × size` from independent initialisations. Returns a dict: `kernel` ((2r+1)²
/// covariance by displacement, centre = variance), `frequency` and `power` (the radial power
/// spectrum, cycles per pixel), `mean`, `variance`, `excess_kurtosis`, `arch`.
#[pyfunction]
#[pyo3(signature = (preset="denoise", settings=Vec::new(), channels=1, size=64, samples=256,
    seed=0, threads=None))]
#[allow(clippy::too_many_arguments)]
pub fn gp_prior<'py>(
    py: Python<'py>,
    preset: &str,
    settings: Vec<(String, String)>,
    channels: usize,
    size: usize,
    samples: usize,
    seed: u64,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyDict>> {
    let recipe = crate::recipe_from(preset, &settings)?;
    if channels != 1 && channels != 3 {
        return Err(err(format!("channels must be 1 or 3, got {channels}")));
    }
    if samples < 2 || size < 4 {
        return Err(err("the prior needs samples >= 2 and size >= 4"));
    }
    let arch = recipe.arch(channels).map_err(err)?;
    let cfg = PriorConfig {
        samples,
        size,
        seed,
        ..PriorConfig::default()
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.unwrap_or(0))
        .build()
        .map_err(err)?;
    let stats = py
        .detach(|| pool.install(|| sample_prior(&arch, &cfg)))
        .map_err(err)?;
    let k = &stats.kernel;
    let side = 2 * k.radius + 1;
    let kernel = numpy::ndarray::Array2::from_shape_vec((side, side), k.cov.clone())
        .expect("the kernel is square");
    let d = PyDict::new(py);
    d.set_item("kernel", kernel.into_pyarray(py))?;
    let (f, p): (Vec<f64>, Vec<f64>) = stats.power.iter().copied().unzip();
    d.set_item("frequency", f.into_pyarray(py))?;
    d.set_item("power", p.into_pyarray(py))?;
    d.set_item("mean", stats.mean)?;
    d.set_item("variance", stats.variance)?;
    d.set_item("excess_kurtosis", stats.excess_kurtosis)?;
    d.set_item("arch", stats.arch)?;
    Ok(d)
}

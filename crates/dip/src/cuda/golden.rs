//! The golden tests on the GPU: the reference tensors (float64, from the reference PyTorch code;
//! the format is described with them) against one forward, loss, backward and Adam step run by
//! [`GpuNet`]. The checks and tolerances are those of the CPU engine's golden tests
//! (`tests/golden.rs`): errors relative to the largest magnitude of each reference tensor,
//! gradients that cancel to (nearly) zero checked against the largest gradient, and parameters
//! after the Adam step allowed the error that the gradient tolerance propagates through it.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use ndarray::{ArrayD, IxDyn, OwnedRepr};
use ndarray_npy::NpzReader;
use serde_json::Value;

use super::{GpuError, GpuNet, Precision};
use crate::engine::{AdamConfig, Net, PadMode, Tensor, first_step_allowance};
use crate::nets::{SkipSpec, Upsampler};

/// The outcome of one case: the worst error of each check, relative to its allowance.
#[derive(Debug, Clone)]
pub struct CaseReport {
    pub name: String,
    /// (check, error, allowed): the check passes when error ≤ allowed.
    pub checks: Vec<(String, f64, f64)>,
}

impl CaseReport {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.1 <= c.2)
    }
}

fn bad(case: &str, msg: impl std::fmt::Display) -> GpuError {
    GpuError(format!("golden case {case}: {msg}"))
}

struct Case {
    cfg: Value,
    tensors: HashMap<String, ArrayD<f64>>,
}

fn load(dir: &Path, name: &str) -> Result<Case, GpuError> {
    let d = dir.join(name);
    let f = File::open(d.join("config.json")).map_err(|e| bad(name, e))?;
    let cfg: Value = serde_json::from_reader(f).map_err(|e| bad(name, e))?;
    let mut tensors = HashMap::new();
    let npz = d.join("tensors.npz");
    if npz.exists() {
        let f = File::open(&npz).map_err(|e| bad(name, e))?;
        let mut r = NpzReader::new(f).map_err(|e| bad(name, e))?;
        for n in r.names().map_err(|e| bad(name, e))? {
            let a: ArrayD<f64> = r
                .by_name::<OwnedRepr<f64>, IxDyn>(&n)
                .map_err(|e| bad(name, e))?;
            tensors.insert(n.trim_end_matches(".npy").to_string(), a);
        }
    }
    Ok(Case { cfg, tensors })
}

fn usize_of(v: &Value, case: &str, what: &str) -> Result<usize, GpuError> {
    v.as_u64()
        .map(|x| x as usize)
        .ok_or_else(|| bad(case, format!("{what} is not a count")))
}

fn spec_from(cfg: &Value, case: &str) -> Result<SkipSpec, GpuError> {
    let a = &cfg["architecture"];
    let list = |k: &str| -> Result<Vec<usize>, GpuError> {
        a[k].as_array()
            .ok_or_else(|| bad(case, format!("architecture.{k} missing")))?
            .iter()
            .map(|v| usize_of(v, case, k))
            .collect()
    };
    let down = list("down")?;
    let mut s = SkipSpec::uniform(
        usize_of(&a["in_channels"], case, "in_channels")?,
        usize_of(&a["out_channels"], case, "out_channels")?,
        down.len(),
        1,
        1,
    );
    s.down = down;
    s.up = list("up")?;
    s.skip = list("skip")?;
    s.pad = match a["pad"].as_str() {
        Some("reflection") => PadMode::Reflection,
        Some("zero") => PadMode::Zero,
        p => return Err(bad(case, format!("unknown pad {p:?}"))),
    };
    s.upsample = match a["upsample"].as_str() {
        Some("bilinear") => Upsampler::Bilinear,
        Some("nearest") => Upsampler::Nearest,
        u => return Err(bad(case, format!("unknown upsample {u:?}"))),
    };
    Ok(s)
}

/// NCHW (batch 1) to HWC.
fn to_hwc(a: &ArrayD<f64>, case: &str) -> Result<Tensor<f32>, GpuError> {
    let s = a.shape();
    if s.len() != 4 || s[0] != 1 {
        return Err(bad(
            case,
            format!("expected a [1, C, H, W] tensor, got {s:?}"),
        ));
    }
    let (c, h, w) = (s[1], s[2], s[3]);
    let mut t = Tensor::zeros(h, w, c);
    for (i, &v) in a.iter().enumerate() {
        let (x, rest) = (i % w, i / w);
        let (y, ci) = (rest % h, rest / h);
        t.data[(y * w + x) * c + ci] = v as f32;
    }
    Ok(t)
}

fn rel_err(ours: &[f64], reference: &[f64], floor: f64) -> f64 {
    let scale = reference
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(floor);
    let diff = ours
        .iter()
        .zip(reference)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    if scale == 0.0 { diff } else { diff / scale }
}

/// Parameter tensor `i` of `flat` in the reference's layout.
fn reference_of(net: &Net<f32>, flat: &[f32], i: usize) -> Vec<f64> {
    let p = &net.param_info()[i];
    (0..p.len).map(|j| flat[p.flat_index(j)] as f64).collect()
}

/// The case folders of `dir` that hold tensors, sorted.
pub fn cases(dir: &Path) -> Result<Vec<String>, GpuError> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| GpuError(format!("cannot read golden folder {}: {e}", dir.display())))?;
    let mut v: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("tensors.npz").is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    v.sort();
    if v.is_empty() {
        return Err(GpuError(format!(
            "no golden cases (folders with tensors.npz) in {}",
            dir.display()
        )));
    }
    Ok(v)
}

/// Runs golden case `name` of `dir` on CUDA device `ordinal` at relative tolerance `tol`.
pub fn check_case(
    dir: &Path,
    name: &str,
    ordinal: usize,
    precision: Precision,
    tol: f64,
) -> Result<CaseReport, GpuError> {
    check_with(dir, name, tol, |net| GpuNet::new(net, ordinal, precision))
}

/// Runs golden case `name` on the host emulation of the GPU (kernels compiled in `work`).
#[doc(hidden)]
pub fn check_case_emulated(
    dir: &Path,
    name: &str,
    tol: f64,
    work: &Path,
) -> Result<CaseReport, GpuError> {
    check_with(dir, name, tol, |net| GpuNet::emulated(net, work))
}

fn check_with(
    dir: &Path,
    name: &str,
    tol: f64,
    open: impl FnOnce(&Net<f32>) -> Result<GpuNet, GpuError>,
) -> Result<CaseReport, GpuError> {
    let case = load(dir, name)?;
    let t = &case.tensors;
    let get = |k: &str| {
        t.get(k)
            .ok_or_else(|| bad(name, format!("tensor {k} missing")))
    };
    let cfg = &case.cfg;
    let (h, w) = (
        usize_of(&cfg["height"], name, "height")?,
        usize_of(&cfg["width"], name, "width")?,
    );
    let mut net = spec_from(cfg, name)?
        .build::<f32>(h, w, 0)
        .map_err(|e| bad(name, e))?;
    let order = cfg["parameters_in_forward_order"]
        .as_array()
        .ok_or_else(|| bad(name, "parameters_in_forward_order missing"))?;
    if order.len() != net.param_info().len() {
        return Err(bad(
            name,
            format!(
                "{} parameter tensors, the network has {}",
                order.len(),
                net.param_info().len()
            ),
        ));
    }
    let mut names = Vec::new();
    for (i, p) in order.iter().enumerate() {
        let pname = p["name"]
            .as_str()
            .ok_or_else(|| bad(name, "a parameter without a name"))?
            .to_string();
        let a = get(&format!("param/{pname}"))?;
        if a.len() != net.param_info()[i].len {
            return Err(bad(name, format!("parameter {pname} has the wrong size")));
        }
        net.set_param_reference(i, a.as_slice().ok_or_else(|| bad(name, "layout"))?);
        names.push(pname);
    }
    *net.input_mut() = to_hwc(get("input")?, name)?;
    let target = to_hwc(get("target")?, name)?;

    let mut gpu = open(&net)?;
    let mut checks = Vec::new();
    let flat = |x: &ArrayD<f64>| x.iter().copied().collect::<Vec<f64>>();
    // Reference values in HWC at full precision.
    let hwc_exact = |x: &ArrayD<f64>| -> Vec<f64> {
        let s = x.shape();
        let (c, h, w) = (s[1], s[2], s[3]);
        let mut out = vec![0.0; c * h * w];
        for (i, &v) in x.iter().enumerate() {
            let (xx, rest) = (i % w, i / w);
            let (y, ci) = (rest % h, rest / h);
            out[(y * w + xx) * c + ci] = v;
        }
        out
    };

    gpu.forward()?;
    let out: Vec<f64> = gpu.output()?.data.iter().map(|&v| v as f64).collect();
    checks.push((
        "forward output".to_string(),
        rel_err(&out, &hwc_exact(get("output")?), 0.0),
        tol,
    ));

    gpu.set_target(&target, None)?;
    let n = target.data.len() as f64;
    gpu.loss_and_grad((2.0 / n) as f32)?;
    let loss = gpu.loss_sum()? / n;
    let want_loss = flat(get("loss")?)[0];
    checks.push((
        "loss".to_string(),
        ((loss - want_loss) / want_loss).abs(),
        tol,
    ));

    gpu.backward()?;
    let grads = gpu.grads()?;
    let gmax = names
        .iter()
        .filter_map(|p| t.get(&format!("grad/{p}")))
        .flat_map(|a| a.iter())
        .fold(0.0f64, |m, v| m.max(v.abs()));
    let unresolved = f32::EPSILON as f64 / 2.0 / tol * gmax;
    let mut worst = (0.0f64, String::new());
    for (i, p) in names.iter().enumerate() {
        let want = flat(get(&format!("grad/{p}"))?);
        let want_max = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let floor = if want_max < unresolved { gmax } else { 0.0 };
        let e = rel_err(&reference_of(&net, &grads, i), &want, floor);
        if e >= worst.0 {
            worst = (e, p.clone());
        }
    }
    checks.push((format!("gradients (worst: {})", worst.1), worst.0, tol));

    let opt = &cfg["optimizer"];
    let lr = opt["lr"]
        .as_f64()
        .ok_or_else(|| bad(name, "optimizer.lr missing"))?;
    let eps = opt["eps"]
        .as_f64()
        .ok_or_else(|| bad(name, "optimizer.eps missing"))?;
    gpu.adam_step(&AdamConfig {
        lr,
        eps,
        ..AdamConfig::default()
    })?;
    let stepped = gpu.params()?;
    // Worst ratio of error to allowance over all elements.
    let mut worst = (0.0f64, String::new());
    for (i, p) in names.iter().enumerate() {
        let want = flat(get(&format!("param_after_adam_step/{p}"))?);
        let grad = flat(get(&format!("grad/{p}"))?);
        let ours = reference_of(&net, &stepped, i);
        let allowance = first_step_allowance(&grad, &want, tol, gmax, unresolved, lr, eps);
        for ((a, b), allowed) in ours.iter().zip(&want).zip(allowance) {
            let r = (a - b).abs() / allowed;
            if r >= worst.0 {
                worst = (r, p.clone());
            }
        }
    }
    checks.push((
        format!("parameters after one Adam step (worst: {})", worst.1),
        worst.0 * tol,
        tol,
    ));

    gpu.forward()?;
    let out: Vec<f64> = gpu.output()?.data.iter().map(|&v| v as f64).collect();
    checks.push((
        "output after the Adam step".to_string(),
        rel_err(&out, &hwc_exact(get("output_after_adam_step")?), 0.0),
        tol,
    ));
    Ok(CaseReport {
        name: name.to_string(),
        checks,
    })
}

/// Largest difference, relative to the largest parameter, between three Adam steps run
/// directly and three replays of one captured CUDA graph of the step, on a small skip network
/// from the same start. The kernels' reductions have a fixed order, so it should be 0.
pub fn graph_replay_difference(ordinal: usize, precision: Precision) -> Result<f64, GpuError> {
    let spec = SkipSpec::uniform(4, 3, 3, 8, 2);
    let mut net = spec
        .build::<f32>(32, 32, 7)
        .map_err(|e| GpuError(e.to_string()))?;
    for (i, v) in net.input_mut().data.iter_mut().enumerate() {
        *v = 0.1 * ((i * 7919 % 1000) as f32 / 1000.0);
    }
    let (h, w, c) = (net.output().h, net.output().w, net.output().c);
    let target = Tensor {
        h,
        w,
        c,
        data: (0..h * w * c)
            .map(|i| (i * 104_729 % 997) as f32 / 997.0)
            .collect(),
    };
    let scale = 2.0 / (h * w * c) as f32;
    let cfg = AdamConfig::default();
    let mut direct = GpuNet::new(&net, ordinal, precision)?;
    direct.set_target(&target, None)?;
    let mut graphed = GpuNet::new(&net, ordinal, precision)?;
    graphed.set_target(&target, None)?;
    graphed.sync()?;
    graphed.capture_step(scale, &cfg)?;
    for _ in 0..3 {
        direct.step(scale, &cfg)?;
        graphed.replay_step()?;
    }
    let (a, b) = (direct.params()?, graphed.params()?);
    let scale = a.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-30) as f64;
    let diff = a
        .iter()
        .zip(&b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs() as f64));
    if !diff.is_finite() {
        return Err(GpuError(
            "the graph replay produced non-finite parameters".into(),
        ));
    }
    Ok(diff / scale)
}

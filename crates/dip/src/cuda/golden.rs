//! The golden tests on the GPU: the reference tensors (float64, from the reference PyTorch code;
//! the format is described with them) against one forward, loss, backward and Adam step run by
//! [`GpuNet`]. The checks and tolerances are those of the CPU engine's golden tests
//! (`tests/golden.rs`): errors relative to the largest magnitude of each reference tensor,
//! gradients that cancel to (nearly) zero checked against the largest gradient, and parameters
//! after the Adam step allowed the error that the gradient tolerance propagates through it.

use std::path::Path;

use ndarray::ArrayD;

use super::{GpuError, GpuNet, Precision};
use crate::engine::{AdamConfig, Net, Tensor, first_step_allowance};
use crate::golden::{self, Case, rel_err, to_hwc};
use crate::nets::SkipSpec;

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

fn gpu_err(e: crate::Error) -> GpuError {
    GpuError(e.to_string())
}

/// Parameter tensor `i` of `flat` in the reference's layout.
fn reference_of(net: &Net<f32>, flat: &[f32], i: usize) -> Vec<f64> {
    let p = &net.param_info()[i];
    (0..p.len).map(|j| flat[p.flat_index(j)] as f64).collect()
}

/// The case folders of `dir` that hold tensors, sorted.
pub fn cases(dir: &Path) -> Result<Vec<String>, GpuError> {
    golden::cases(dir).map_err(gpu_err)
}

/// Runs golden case `name` of `dir` on CUDA device `ordinal` at relative tolerance `tol`.
pub fn check_case(
    dir: &Path,
    name: &str,
    ordinal: usize,
    precision: Precision,
    tol: f64,
) -> Result<CaseReport, GpuError> {
    check_with(dir, name, precision, tol, |net| {
        GpuNet::new(net, ordinal, precision)
    })
}

/// Runs golden case `name` on the host emulation of the GPU (kernels compiled in `work`), its
/// GEMMs rounding their operands as `precision`'s tensor cores do.
#[doc(hidden)]
pub fn check_case_emulated(
    dir: &Path,
    name: &str,
    precision: Precision,
    tol: f64,
    work: &Path,
) -> Result<CaseReport, GpuError> {
    check_with(dir, name, precision, tol, |net| {
        GpuNet::emulated_with(net, work, precision, 0)
    })
}

fn check_with(
    dir: &Path,
    name: &str,
    precision: Precision,
    tol: f64,
    open: impl FnOnce(&Net<f32>) -> Result<GpuNet, GpuError>,
) -> Result<CaseReport, GpuError> {
    let case = Case::load(dir, name).map_err(gpu_err)?;
    let t = &case.tensors;
    let get = |k: &str| case.tensor(k).map_err(gpu_err);
    let mut net: Net<f32> = case.net().map_err(gpu_err)?;
    let names = case.param_names().map_err(gpu_err)?;
    // A case without the reference's parameters would leave the seeded ones in place.
    for p in &names {
        get(&format!("param/{p}"))?;
    }
    *net.input_mut() = to_hwc(get("input")?).map_err(gpu_err)?;
    let target: Tensor<f32> = to_hwc(get("target")?).map_err(gpu_err)?;

    let mut gpu = open(&net)?;
    let mut checks = Vec::new();
    let flat = |x: &ArrayD<f64>| x.iter().copied().collect::<Vec<f64>>();
    // Reference values in HWC at full precision.
    let hwc_exact = |x: &ArrayD<f64>| to_hwc::<f64>(x).map(|t| t.data).map_err(gpu_err);
    gpu.forward()?;
    let out: Vec<f64> = gpu.output()?.data.iter().map(|&v| v as f64).collect();
    checks.push((
        "forward output".to_string(),
        rel_err(&out, &hwc_exact(get("output")?)?, 0.0),
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
    // In f32, a gradient that is zero but for rounding (it cancels) is resolved only to the
    // unit roundoff times the largest gradient: below `unresolved` it is checked against that,
    // as the CPU's reference tests do. With tensor cores every GEMM operand carries an error of
    // u·|operand| (u = 2⁻¹¹ or 2⁻⁸), which reaches a gradient through every layer above it, so
    // the gradients are checked normwise: each against the largest gradient of the network.
    let normwise = precision != Precision::F32;
    let unresolved = if normwise {
        f64::INFINITY
    } else {
        f32::EPSILON as f64 / 2.0 / tol * gmax
    };
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

    let lr = case.number(&["optimizer", "lr"]).map_err(gpu_err)?;
    let eps = case.number(&["optimizer", "eps"]).map_err(gpu_err)?;
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
    if normwise {
        // Adam's first step is ±lr wherever the gradient's sign is within the rounding, so the
        // reference's stepped network is not this one: the forward of the GPU's own stepped
        // parameters is checked against the CPU engine's instead.
        net.params_mut().copy_from_slice(&stepped);
        let want: Vec<f64> = net.forward().data.iter().map(|&v| v as f64).collect();
        checks.push((
            "output after the Adam step (its parameters, on the CPU)".to_string(),
            rel_err(&out, &want, 0.0),
            tol,
        ));
    } else {
        checks.push((
            "output after the Adam step".to_string(),
            rel_err(&out, &hwc_exact(get("output_after_adam_step")?)?, 0.0),
            tol,
        ));
    }
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

/// Lipschitz control on the device against the CPU engine's, on a small skip network whose
/// weights are scaled up so that its matrices are projected (twice, the second warm-started
/// after the weights moved): the largest difference between the projected parameters (0
/// expected: the same f64 operations in the same order).
pub fn lipschitz_difference(ordinal: usize, precision: Precision) -> Result<f32, GpuError> {
    let spec = SkipSpec::uniform(3, 3, 3, 16, 4);
    let mut net: Net<f32> = spec.build(16, 16, 3).map_err(|e| GpuError(e.to_string()))?;
    let mut g = GpuNet::new(&net, ordinal, precision)?;
    let mut diff = 0.0f32;
    for round in 0..2 {
        for (i, p) in net.params_mut().iter_mut().enumerate() {
            *p = *p * 2.5 + 0.01 * round as f32 * ((i % 7) as f32 - 3.0);
        }
        g.set_params(net.params())?;
        net.lipschitz_project(0.6);
        g.lipschitz_project(0.6)?;
        for (x, y) in g.params()?.iter().zip(net.params()) {
            diff = diff.max((x - y).abs());
        }
    }
    Ok(diff)
}

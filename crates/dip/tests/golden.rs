//! The engine against the reference: float64 tensors computed by the reference PyTorch DIP code
//! (forward output, loss, every parameter gradient, parameters after one Adam step, output after
//! it). Run with `cargo test golden`.
//!
//! Errors are relative to the largest magnitude of the reference tensor, with one exception.
//! Some gradients are zero, or nearly zero, by cancellation: conv biases followed by batch norm
//! (exactly zero; the reference holds rounding noise of 1e-17), and the gamma of a batch norm +
//! LeakyReLU whose output feeds another batch norm (zero but for that norm's eps, about 1e-5 of
//! the terms summed). A precision with unit roundoff `u` cannot resolve a tensor smaller than
//! `u / tol` times the network's largest gradient to a relative `tol`; such tensors are checked
//! relative to the largest gradient instead. In f64 that covers only the rounding-noise zeros; in
//! f32 the eps-cancelled gammas too.
//!
//! Parameters after one Adam step are checked relative to max(|param|, lr), the scale of one
//! step, plus the error that the gradient tolerance propagates through the step: Adam divides by
//! |g| + eps, so a gradient element known to ±δ moves its step by up to lr·δ·eps/(|g|−δ+eps)².
//! This matters only for elements whose gradient is near zero. The output after the step is
//! checked at the full tolerance.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;

use dip::engine::{Adam, AdamConfig, Float, Net, PadMode, Tensor, first_step_allowance};
use dip::nets::SkipSpec;
use dip::nets::Upsampler;
use ndarray::{ArrayD, IxDyn, OwnedRepr};
use ndarray_npy::NpzReader;
use serde_json::Value;

fn golden_dir() -> PathBuf {
    if let Ok(d) = std::env::var("DIP_GOLDEN_DIR") {
        return PathBuf::from(d);
    }
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/golden");
    assert!(
        d.is_dir(),
        "golden tensors not found at {} (set DIP_GOLDEN_DIR)",
        d.display()
    );
    d
}

struct Case {
    cfg: Value,
    tensors: HashMap<String, ArrayD<f64>>,
}

fn load_case(name: &str) -> Case {
    let dir = golden_dir().join(name);
    let cfg: Value = serde_json::from_reader(File::open(dir.join("config.json")).unwrap()).unwrap();
    let mut tensors = HashMap::new();
    let npz = dir.join("tensors.npz");
    if npz.exists() {
        let mut r = NpzReader::new(File::open(npz).unwrap()).unwrap();
        for n in r.names().unwrap() {
            let a: ArrayD<f64> = r.by_name::<OwnedRepr<f64>, IxDyn>(&n).unwrap();
            tensors.insert(n.trim_end_matches(".npy").to_string(), a);
        }
    }
    Case { cfg, tensors }
}

fn spec_from(cfg: &Value) -> SkipSpec {
    let a = &cfg["architecture"];
    let list = |k: &str| -> Vec<usize> {
        a[k].as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect()
    };
    let n = list("down").len();
    let mut s = SkipSpec::uniform(
        a["in_channels"].as_u64().unwrap() as usize,
        a["out_channels"].as_u64().unwrap() as usize,
        n,
        1,
        1,
    );
    s.down = list("down");
    s.up = list("up");
    s.skip = list("skip");
    s.pad = match a["pad"].as_str().unwrap() {
        "reflection" => PadMode::Reflection,
        "zero" => PadMode::Zero,
        p => panic!("unknown pad {p}"),
    };
    s.upsample = match a["upsample"].as_str().unwrap() {
        "bilinear" => Upsampler::Bilinear,
        "nearest" => Upsampler::Nearest,
        u => panic!("unknown upsample {u}"),
    };
    s
}

/// NCHW (batch 1) to our HWC.
fn to_hwc<T: Float>(a: &ArrayD<f64>) -> Tensor<T> {
    let s = a.shape();
    let (c, h, w) = (s[1], s[2], s[3]);
    let mut t = Tensor::zeros(h, w, c);
    for ((_, ci, y, x), &v) in a
        .view()
        .into_dimensionality::<ndarray::Ix4>()
        .unwrap()
        .indexed_iter()
    {
        t.data[(y * w + x) * c + ci] = T::from_f64(v);
    }
    t
}

fn rel_err<T: Float>(ours: &[T], reference: &[f64], floor: f64) -> f64 {
    assert_eq!(ours.len(), reference.len());
    let scale = reference
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(floor);
    let diff = ours
        .iter()
        .zip(reference)
        .fold(0.0f64, |m, (a, b)| m.max((a.to_f64() - b).abs()));
    diff / scale
}

fn build_with_reference_params<T: Float>(case: &Case) -> Net<T> {
    let cfg = &case.cfg;
    let (h, w) = (
        cfg["height"].as_u64().unwrap() as usize,
        cfg["width"].as_u64().unwrap() as usize,
    );
    let mut net = spec_from(cfg).build::<T>(h, w, 0).unwrap();
    let order = cfg["parameters_in_forward_order"].as_array().unwrap();
    assert_eq!(
        net.param_info().len(),
        order.len(),
        "number of parameter tensors"
    );
    for (i, p) in order.iter().enumerate() {
        let shape: Vec<usize> = p["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(
            net.param_info()[i].reference_shape(),
            shape,
            "shape of {}",
            p["name"]
        );
        if let Some(a) = case
            .tensors
            .get(&format!("param/{}", p["name"].as_str().unwrap()))
        {
            net.set_param_reference(i, a.as_slice().unwrap());
        }
    }
    assert_eq!(
        net.num_params() as u64,
        cfg["parameter_count"].as_u64().unwrap()
    );
    net
}

fn check_case<T: Float>(name: &str, tol: f64) {
    let case = load_case(name);
    let t = &case.tensors;
    let mut net = build_with_reference_params::<T>(&case);
    let names: Vec<String> = case.cfg["parameters_in_forward_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();

    *net.input_mut() = to_hwc(&t["input"]);
    let target: Tensor<T> = to_hwc(&t["target"]);
    let want_out: Tensor<f64> = to_hwc(&t["output"]);
    net.forward();
    let e = rel_err(&net.output().data, &want_out.data, 0.0);
    assert!(e <= tol, "{name}: forward output rel err {e:e}");

    // Loss and its gradient: mean squared error over all elements.
    let n = target.data.len() as f64;
    let (out, dout) = net.output_and_grad();
    let mut loss = 0.0f64;
    for ((g, &o), &y) in dout.data.iter_mut().zip(&out.data).zip(&target.data) {
        let d = o - y;
        loss += d.to_f64() * d.to_f64();
        *g = d * T::from_f64(2.0 / n);
    }
    loss /= n;
    let want_loss = t["loss"].as_slice().unwrap()[0];
    assert!(
        ((loss - want_loss) / want_loss).abs() <= tol,
        "{name}: loss {loss} vs {want_loss}"
    );
    assert!((want_loss - case.cfg["loss_value"].as_f64().unwrap()).abs() < 1e-12);

    net.backward();
    let gmax = names
        .iter()
        .flat_map(|p| t[&format!("grad/{p}")].iter())
        .fold(0.0f64, |m, v| m.max(v.abs()));
    let unit_roundoff = if std::mem::size_of::<T>() < 8 {
        f32::EPSILON as f64 / 2.0
    } else {
        f64::EPSILON / 2.0
    };
    let unresolved = unit_roundoff / tol * gmax;
    for (i, p) in names.iter().enumerate() {
        let want = &t[&format!("grad/{p}")];
        let ours = net.param_reference(i, true);
        let want_max = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let floor = if want_max < unresolved { gmax } else { 0.0 };
        let e = rel_err(&ours, want.as_slice().unwrap(), floor);
        assert!(
            e <= tol,
            "{name}: gradient of {p} ({}) rel err {e:e}",
            net.param_info()[i].name
        );
    }

    let lr = case.cfg["optimizer"]["lr"].as_f64().unwrap();
    let eps = case.cfg["optimizer"]["eps"].as_f64().unwrap();
    let before: Vec<Vec<f64>> = (0..names.len())
        .map(|i| net.param_reference(i, false))
        .collect();
    let mut adam = Adam::new(
        net.num_params(),
        AdamConfig {
            lr,
            eps,
            ..AdamConfig::default()
        },
    );
    let (params, grads) = net.params_and_grads();
    adam.step(params, grads);
    for (i, p) in names.iter().enumerate() {
        let want = t[&format!("param_after_adam_step/{p}")].as_slice().unwrap();
        let ours = net.param_reference(i, false);
        assert!(
            ours.iter().zip(&before[i]).any(|(a, b)| a != b),
            "{name}: {p} did not move"
        );
        // The gradient check above allows each element an error δ; the first Adam step is
        // lr·g/(|g| + eps), whose slope is lr·eps/(|g| + eps)², so δ moves it by at most that
        // much (two steps if δ can flip the sign).
        let grad = t[&format!("grad/{p}")].as_slice().unwrap();
        let allowance = first_step_allowance(grad, want, tol, gmax, unresolved, lr, eps);
        for (j, ((a, b), allowed)) in ours.iter().zip(want).zip(allowance).enumerate() {
            assert!(
                (a - b).abs() <= allowed,
                "{name}: {p}[{j}] after one Adam step: {a} vs {b}, allowed error {allowed:e}"
            );
        }
    }

    net.forward();
    let want_out: Tensor<f64> = to_hwc(&t["output_after_adam_step"]);
    let e = rel_err(&net.output().data, &want_out.data, 0.0);
    assert!(e <= tol, "{name}: output after the Adam step rel err {e:e}");
}

#[test]
fn golden_f64_bilinear_reflection_rgb() {
    check_case::<f64>("skip_bilinear_reflection_rgb", 1e-9);
}

#[test]
fn golden_f64_nearest_zero_gray_without_a_skip() {
    check_case::<f64>("skip_nearest_zero_gray", 1e-9);
}

#[test]
fn golden_f32_bilinear_reflection_rgb() {
    check_case::<f32>("skip_bilinear_reflection_rgb", 1e-4);
}

#[test]
fn golden_f32_nearest_zero_gray_without_a_skip() {
    check_case::<f32>("skip_nearest_zero_gray", 1e-4);
}

#[test]
fn golden_standard_network_structure() {
    let case = load_case("skip_standard_f16_config_64px");
    let net = build_with_reference_params::<f32>(&case);
    assert_eq!(net.num_params(), 2_217_831);
}

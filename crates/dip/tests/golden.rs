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

use std::path::PathBuf;

use dip::engine::{Adam, AdamConfig, Float, Net, Tensor, first_step_allowance};
use dip::golden::{Case, rel_err, to_hwc};

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

fn load_case(name: &str) -> Case {
    Case::load(&golden_dir(), name).unwrap()
}

fn check_case<T: Float>(name: &str, tol: f64) {
    let case = load_case(name);
    let t = &case.tensors;
    let mut net: Net<T> = case.net().unwrap();
    let names = case.param_names().unwrap();

    *net.input_mut() = to_hwc(&t["input"]).unwrap();
    let target: Tensor<T> = to_hwc(&t["target"]).unwrap();
    let want_out: Tensor<f64> = to_hwc(&t["output"]).unwrap();
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
    let want_out: Tensor<f64> = to_hwc(&t["output_after_adam_step"]).unwrap();
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
    let net: Net<f32> = case.net().unwrap();
    assert_eq!(net.num_params(), 2_217_831);
}

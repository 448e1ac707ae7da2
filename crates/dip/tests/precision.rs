//! bf16 convolution GEMMs against f32 on a whole network: the gradients agree to within what
//! bfloat16 operands allow, and a bf16 step is reproducible.

use dip::engine::{Adam, AdamConfig, Net, ParamKind, Precision, bf16};
use dip::nets::SkipSpec;

const SIDE: usize = 32;

fn net(precision: Precision) -> Net<f32> {
    // Three scales of 32 channels: every convolution path (3×3 shifted views, strided im2col,
    // 1×1) and batch norm between them.
    let mut net = SkipSpec::uniform(8, 3, 3, 32, 4)
        .build::<f32>(SIDE, SIDE, 7)
        .unwrap();
    assert_eq!(net.set_precision(precision), precision.effective());
    net.input_mut()
        .data
        .iter_mut()
        .enumerate()
        .for_each(|(i, v)| *v = ((i * 37 % 101) as f32 / 101.0 - 0.5) * 0.2);
    net
}

fn target() -> Vec<f32> {
    (0..SIDE * SIDE * 3)
        .map(|i| (i * 13 % 29) as f32 / 29.0)
        .collect()
}

/// Forward, MSE gradient, backward; returns the loss.
fn pass(net: &mut Net<f32>, target: &[f32]) -> f64 {
    net.forward();
    let (out, grad) = net.output_and_grad();
    let mut loss = 0.0f64;
    for ((g, &o), &t) in grad.data.iter_mut().zip(&out.data).zip(target) {
        *g = 2.0 * (o - t) / target.len() as f32;
        loss += ((o - t) as f64).powi(2);
    }
    net.backward();
    loss / target.len() as f64
}

/// Relative L2 difference of each convolution weight's gradient, `b` against the reference `a`.
fn conv_weight_errors<A: Copy + Into<f64>, B: Copy + Into<f64>>(
    net: &Net<f32>,
    a: &[A],
    b: &[B],
) -> Vec<(String, f64)> {
    net.param_info()
        .iter()
        .filter(|i| matches!(i.kind, ParamKind::ConvWeight { .. }))
        .map(|i| {
            let r = i.offset..i.offset + i.len;
            let (x, y) = (&a[r.clone()], &b[r]);
            let norm = x.iter().map(|&v| v.into().powi(2)).sum::<f64>().sqrt();
            let diff = x
                .iter()
                .zip(y)
                .map(|(&u, &v)| (u.into() - v.into()).powi(2))
                .sum::<f64>()
                .sqrt();
            (i.name.clone(), diff / norm)
        })
        .collect()
}

#[test]
fn bf16_gradients_agree_with_f32_as_the_network_conditioning_allows() {
    if !bf16::supported() {
        eprintln!("SKIPPED: this CPU has no AVX-512-BF16");
        return;
    }
    let t = target();
    let mut a = net(Precision::F32);
    let mut b = net(Precision::Bf16);
    assert_eq!(a.params(), b.params());
    let (la, lb) = (pass(&mut a, &t), pass(&mut b, &t));
    // The loss sees the forward pass only: bf16 operands are off by at most 2^-8 relative, a
    // product term by 2^-7.
    assert!(
        (la - lb).abs() <= la * 2f64.powi(-7),
        "loss f32 {la} vs bf16 {lb}"
    );
    // How much this network amplifies rounding errors into its gradients, measured the same way
    // one precision step up: the f32 gradients against f64 ones, in units of f32's roundoff
    // 2^-24. (At initialisation, with batch norm, it is about 60: far from 1.)
    let mut d = SkipSpec::uniform(8, 3, 3, 32, 4)
        .build::<f64>(SIDE, SIDE, 7)
        .unwrap();
    for (x, &y) in d.params_mut().iter_mut().zip(a.params()) {
        *x = y as f64;
    }
    for (x, &y) in d.input_mut().data.iter_mut().zip(&a.input().data) {
        *x = y as f64;
    }
    d.forward();
    let (out, grad) = d.output_and_grad();
    for ((g, &o), &y) in grad.data.iter_mut().zip(&out.data).zip(&t) {
        *g = 2.0 * (o - y as f64) / t.len() as f64;
    }
    d.backward();
    let f32_errors = conv_weight_errors(&a, d.grads(), a.grads());
    let amplification = f32_errors.iter().map(|e| e.1).fold(0.0, f64::max) / 2f64.powi(-24);
    // The bound, derived: bf16 keeps 8 significant bits, so rounding an operand to nearest
    // perturbs it by at most u = 2^-8 relative, and a product of two rounded operands by at
    // most (1 + u)² − 1 < 2u + u² ≈ 2^-7. Those products are the only operations bf16 changes
    // (sums and everything outside the convolutions stay f32). The f32-against-f64 errors above
    // measure how much this network amplifies a relative perturbation of its arithmetic: f32
    // perturbs each operation by at most 2^-24, giving `amplification` in those units. So each
    // convolution weight's gradient may be off by at most amplification · (2u + u²). A wrong
    // kernel, packing or dispatch gives errors of order 1.
    let u = 2f64.powi(-8);
    let allowed = amplification * (2.0 * u + u * u);
    let bf16_errors = conv_weight_errors(&a, a.grads(), b.grads());
    let bad: Vec<_> = bf16_errors.iter().filter(|e| e.1 > allowed).collect();
    assert!(
        bad.is_empty(),
        "amplification {amplification:.0}, allowed {allowed:.3}: {bad:?}"
    );
    // The bf16 kernel really ran.
    assert!(bf16_errors.iter().all(|e| e.1 > 0.0), "{bf16_errors:?}");
    eprintln!(
        "amplification {amplification:.0}; worst bf16 gradient error {:.3} (allowed {allowed:.3})",
        bf16_errors.iter().map(|e| e.1).fold(0.0, f64::max)
    );
}

#[test]
fn bf16_training_steps_are_reproducible() {
    let run = || {
        let t = target();
        let mut n = net(Precision::Bf16);
        let mut adam = Adam::new(n.num_params(), AdamConfig::default());
        for _ in 0..3 {
            pass(&mut n, &t);
            let (p, g) = n.params_and_grads();
            adam.step(p, g);
        }
        n.forward();
        n.output().data.clone()
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let first = pool.install(run);
    assert_eq!(first, pool.install(run));
}

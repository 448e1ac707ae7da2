//! Finite-difference checks of every layer's backward, in f64, on odd sizes, both strides and
//! both padding modes. Loss L = Σ r ⊙ y for a fixed random r, so dL/dy = r.

use dip::engine::{
    BatchNorm, Concat, Conv2d, ConvScratch, NormGrad, PadMode, Sigmoid, Tensor, Upsample,
    UpsampleMode,
};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;

const H: f64 = 1e-6;
const TOL: f64 = 1e-6;

fn random(rng: &mut Pcg64Mcg, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Compares an analytic gradient with central differences of `f` at every coordinate.
fn check(what: &str, analytic: &[f64], x: &mut [f64], f: &mut dyn FnMut(&[f64]) -> f64) {
    let scale = analytic.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
    for i in 0..x.len() {
        let v = x[i];
        x[i] = v + H;
        let up = f(x);
        x[i] = v - H;
        let down = f(x);
        x[i] = v;
        let fd = (up - down) / (2.0 * H);
        let err = (fd - analytic[i]).abs() / scale;
        assert!(
            err < TOL,
            "{what}[{i}]: analytic {} vs finite difference {fd} (rel {err:e})",
            analytic[i]
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn conv_case(
    h: usize,
    w: usize,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: PadMode,
    seed: u64,
) {
    let what = format!("conv {h}x{w} {cin}->{cout} k{k} s{stride} {pad:?}");
    let mut rng = Pcg64Mcg::seed_from_u64(seed);
    let nw = k * k * cin * cout;
    let mut conv = Conv2d::<f64>::new(h, w, cin, cout, k, stride, pad, 0, Some(nw));
    let mut s = ConvScratch::default();
    s.reserve(conv.scratch_sizes());
    let mut params = random(&mut rng, nw + cout);
    let mut x = Tensor::from_vec(h, w, cin, random(&mut rng, h * w * cin));
    let mut y = Tensor::zeros(conv.ho, conv.wo, cout);
    let r = Tensor::from_vec(
        conv.ho,
        conv.wo,
        cout,
        random(&mut rng, conv.ho * conv.wo * cout),
    );

    conv.forward(&params, &x, &mut y, &mut s);
    let mut dparams = vec![0.0; params.len()];
    // Accumulate into a non-zero dx to check the `+=` path as well.
    let mut dx = Tensor::from_vec(h, w, cin, vec![0.5; h * w * cin]);
    conv.backward(&params, &x, &r, Some(&mut dx), true, &mut dparams, &mut s);
    let dx: Vec<f64> = dx.data.iter().map(|v| v - 0.5).collect();

    let xt = x.clone();
    check(&format!("{what} dW,db"), &dparams, &mut params, &mut |p| {
        let mut y = Tensor::zeros(conv.ho, conv.wo, cout);
        conv.forward(p, &xt, &mut y, &mut s);
        dot(&y.data, &r.data)
    });
    let p = params.clone();
    let mut xd = x.data.clone();
    check(&format!("{what} dx"), &dx, &mut xd, &mut |xv| {
        x.data.copy_from_slice(xv);
        let mut y = Tensor::zeros(conv.ho, conv.wo, cout);
        conv.forward(&p, &x, &mut y, &mut s);
        dot(&y.data, &r.data)
    });
}

#[test]
fn conv_gradients_match_finite_differences() {
    let mut seed = 0;
    for pad in [PadMode::Zero, PadMode::Reflection] {
        for (k, stride) in [(1, 1), (3, 1), (5, 1), (3, 2), (1, 2), (5, 2)] {
            for (h, w) in [(5, 7), (6, 4), (9, 3)] {
                if pad == PadMode::Reflection && (k - 1) / 2 >= h.min(w) {
                    continue;
                }
                seed += 1;
                conv_case(h, w, 3, 2, k, stride, pad, seed);
            }
        }
    }
}

#[test]
fn conv_matches_a_direct_convolution() {
    // Forward against the textbook sum, for a case with every path's quirks: reflection, stride 2,
    // odd size.
    for (k, stride, pad) in [
        (3, 1, PadMode::Reflection),
        (3, 2, PadMode::Zero),
        (5, 1, PadMode::Zero),
        (3, 2, PadMode::Reflection),
    ] {
        let (h, w, cin, cout) = (7, 5, 2, 3);
        let mut rng = Pcg64Mcg::seed_from_u64(k as u64 * 10 + stride as u64);
        let nw = k * k * cin * cout;
        let params = random(&mut rng, nw + cout);
        let x = Tensor::from_vec(h, w, cin, random(&mut rng, h * w * cin));
        let mut conv = Conv2d::<f64>::new(h, w, cin, cout, k, stride, pad, 0, Some(nw));
        let mut s = ConvScratch::default();
        s.reserve(conv.scratch_sizes());
        let mut y = Tensor::zeros(conv.ho, conv.wo, cout);
        conv.forward(&params, &x, &mut y, &mut s);
        let p = (k - 1) as isize / 2;
        let src = |t: isize, n: usize| -> Option<usize> {
            match pad {
                PadMode::Zero => (0..n as isize).contains(&t).then_some(t as usize),
                PadMode::Reflection => Some(if t < 0 {
                    -t
                } else if t >= n as isize {
                    2 * (n as isize - 1) - t
                } else {
                    t
                } as usize),
            }
        };
        for oi in 0..conv.ho {
            for oj in 0..conv.wo {
                for co in 0..cout {
                    let mut want = params[nw + co];
                    for dy in 0..k {
                        for dx in 0..k {
                            let (Some(a), Some(b)) = (
                                src((oi * stride + dy) as isize - p, h),
                                src((oj * stride + dx) as isize - p, w),
                            ) else {
                                continue;
                            };
                            for ci in 0..cin {
                                want += x.data[(a * w + b) * cin + ci]
                                    * params[((dy * k + dx) * cin + ci) * cout + co];
                            }
                        }
                    }
                    let got = y.data[(oi * conv.wo + oj) * cout + co];
                    assert!(
                        (got - want).abs() < 1e-12,
                        "k{k} s{stride} {pad:?} at ({oi},{oj},{co}): {got} vs {want}"
                    );
                }
            }
        }
    }
}

#[test]
fn batchnorm_gradients_match_finite_differences() {
    // Backward from the input, and from the output alone (the in-place mode, which inverts the
    // activation and the affine map); one gamma is negative, so the inversion's sign matters.
    for slope in [None, Some(0.2)] {
        for from_output in [false, true] {
            let (h, w, c) = (5, 3, 4);
            let mut rng = Pcg64Mcg::seed_from_u64(7);
            let mut bn = BatchNorm::<f64>::new(h * w, c, 0, c, slope);
            let mut params: Vec<f64> = (0..2 * c)
                .map(|i| match i {
                    1 => -0.7,
                    i if i < c => 1.0 + 0.3 * i as f64,
                    i => 0.1 * i as f64 - 0.4,
                })
                .collect();
            let mut x = Tensor::from_vec(h, w, c, random(&mut rng, h * w * c));
            let r = random(&mut rng, h * w * c);
            let mut y = Tensor::zeros(h, w, c);
            bn.forward(&params, Some(&x), &mut y);
            if from_output {
                // The in-place forward gives the same output.
                let mut y2 = x.clone();
                bn.forward(&params, None, &mut y2);
                assert_eq!(y2.data, y.data);
            }
            let dy = Tensor::from_vec(h, w, c, r.clone());
            let mut dparams = vec![0.0; 2 * c];
            let mut dx = Tensor::zeros(h, w, c);
            let xin = (!from_output).then_some(&x);
            if from_output {
                // In-place mode: the gradient buffer holds dy on entry and dx on return.
                dx.data.copy_from_slice(&dy.data);
                bn.backward(&params, xin, &y, NormGrad::InPlace(&mut dx), &mut dparams);
            } else {
                let grad = NormGrad::Separate {
                    dy: &dy,
                    dx: Some(&mut dx),
                    accumulate: false,
                };
                bn.backward(&params, xin, &y, grad, &mut dparams);
            }
            let xt = x.clone();
            let label = format!("bn {slope:?} from output {from_output}");
            check(
                &format!("{label} dgamma,dbeta"),
                &dparams,
                &mut params,
                &mut |p| {
                    let mut y = Tensor::zeros(h, w, c);
                    bn.forward(p, Some(&xt), &mut y);
                    dot(&y.data, &r)
                },
            );
            let p = params.clone();
            let mut xd = x.data.clone();
            check(&format!("{label} dx"), &dx.data, &mut xd, &mut |xv| {
                x.data.copy_from_slice(xv);
                let mut y = Tensor::zeros(h, w, c);
                bn.forward(&p, Some(&x), &mut y);
                dot(&y.data, &r)
            });
        }
    }
}

#[test]
fn batchnorm_normalises_with_biased_variance() {
    let x = Tensor::from_vec(2, 2, 1, vec![1.0, 2.0, 3.0, 6.0]);
    let mut bn = BatchNorm::<f64>::new(4, 1, 0, 1, None);
    let mut y = Tensor::zeros(2, 2, 1);
    bn.forward(&[2.0, 0.5], Some(&x), &mut y);
    let var = (2.0f64.powi(2) + 1.0 + 0.0 + 9.0) / 4.0; // mean 3, biased variance 3.5
    for (o, v) in y.data.iter().zip([1.0, 2.0, 3.0, 6.0]) {
        assert!((o - (2.0 * (v - 3.0) / (var + 1e-5f64).sqrt() + 0.5)).abs() < 1e-12);
    }
}

#[test]
fn upsample_matches_pytorch_and_finite_differences() {
    // torch.nn.Upsample(scale_factor=2, mode='bilinear')(torch.tensor([[[[1.,2.],[3.,4.]]]]))
    let x = Tensor::from_vec(2, 2, 1, vec![1.0, 2.0, 3.0, 4.0]);
    let mut y = Tensor::zeros(4, 4, 1);
    Upsample::<f64>::new(2, 2, 1, 2, UpsampleMode::Bilinear).forward(&x, &mut y);
    let want = [
        1.0, 1.25, 1.75, 2.0, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3.0, 3.25, 3.75, 4.0,
    ];
    assert_eq!(y.data, want);
    Upsample::<f64>::new(2, 2, 1, 2, UpsampleMode::Nearest).forward(&x, &mut y);
    assert_eq!(
        y.data,
        [
            1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 3.0, 3.0, 4.0, 4.0
        ]
    );

    for mode in [UpsampleMode::Nearest, UpsampleMode::Bilinear] {
        let (h, w, c) = (3, 5, 2);
        let mut rng = Pcg64Mcg::seed_from_u64(3);
        let up = Upsample::<f64>::new(h, w, c, 2, mode);
        let mut x = Tensor::from_vec(h, w, c, random(&mut rng, h * w * c));
        let r = random(&mut rng, 4 * h * w * c);
        let mut dx = Tensor::zeros(h, w, c);
        up.backward(
            &Tensor::from_vec(2 * h, 2 * w, c, r.clone()),
            &mut dx,
            false,
        );
        let mut xd = x.data.clone();
        check(
            &format!("upsample {mode:?}"),
            &dx.data,
            &mut xd,
            &mut |xv| {
                x.data.copy_from_slice(xv);
                let mut y = Tensor::zeros(2 * h, 2 * w, c);
                up.forward(&x, &mut y);
                dot(&y.data, &r)
            },
        );
    }
}

#[test]
fn concat_and_sigmoid_gradients() {
    let mut rng = Pcg64Mcg::seed_from_u64(5);
    let (h, w) = (3, 2);
    let a = Tensor::from_vec(h, w, 2, random(&mut rng, h * w * 2));
    let b = Tensor::from_vec(h, w, 3, random(&mut rng, h * w * 3));
    let cat = Concat::new(vec![2, 3]);
    let mut y = Tensor::zeros(h, w, 5);
    cat.forward_input(0, &a, &mut y);
    cat.forward_input(1, &b, &mut y);
    assert_eq!(
        &y.data[..5],
        &[a.data[0], a.data[1], b.data[0], b.data[1], b.data[2]]
    );
    let mut db = Tensor::zeros(h, w, 3);
    cat.backward_input(1, &y, &mut db, false);
    assert_eq!(db, b);

    let mut x = Tensor::from_vec(h, w, 2, random(&mut rng, h * w * 2));
    let r = random(&mut rng, h * w * 2);
    let mut y = Tensor::zeros(h, w, 2);
    Sigmoid.forward(&x, &mut y);
    let mut dx = Tensor::zeros(h, w, 2);
    Sigmoid.backward(&y, &Tensor::from_vec(h, w, 2, r.clone()), &mut dx, false);
    let mut xd = x.data.clone();
    check("sigmoid", &dx.data, &mut xd, &mut |xv| {
        x.data.copy_from_slice(xv);
        let mut y = Tensor::zeros(h, w, 2);
        Sigmoid.forward(&x, &mut y);
        dot(&y.data, &r)
    });
}

#[test]
fn conv_weight_gradient_over_more_pixels_than_one_gemm_chunk() {
    // The weight gradient's reduction over pixels is split into GEMMs of 65536 wide-layout rows;
    // 260×258 gives 260·260 = 67600 rows, so two chunks. Checked against the textbook sum.
    let (h, w, cin, cout, k) = (260, 258, 1, 2, 3);
    let mut rng = Pcg64Mcg::seed_from_u64(11);
    let nw = k * k * cin * cout;
    let params = random(&mut rng, nw + cout);
    let x = Tensor::from_vec(h, w, cin, random(&mut rng, h * w * cin));
    let dy = Tensor::from_vec(h, w, cout, random(&mut rng, h * w * cout));
    let mut conv = Conv2d::<f64>::new(h, w, cin, cout, k, 1, PadMode::Zero, 0, Some(nw));
    let mut s = ConvScratch::default();
    s.reserve(conv.scratch_sizes());
    let mut y = Tensor::zeros(h, w, cout);
    conv.forward(&params, &x, &mut y, &mut s);
    let mut dparams = vec![0.0; nw + cout];
    conv.backward(&params, &x, &dy, None, false, &mut dparams, &mut s);
    for ky in 0..k {
        for kx in 0..k {
            for co in 0..cout {
                let mut want = 0.0;
                for i in 0..h {
                    for j in 0..w {
                        let (si, sj) = (i + ky, j + kx);
                        if si < 1 || sj < 1 || si > h || sj > w {
                            continue;
                        }
                        want += x.data[(si - 1) * w + (sj - 1)] * dy.data[(i * w + j) * cout + co];
                    }
                }
                let got = dparams[(ky * k + kx) * cout + co];
                assert!(
                    (got - want).abs() < 1e-9 * (1.0 + want.abs()),
                    "dW[{ky}][{kx}][{co}]: {got} vs {want}"
                );
            }
        }
    }
}

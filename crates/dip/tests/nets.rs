//! The architectures: parameter counts, shapes, gradients against finite differences through
//! whole small networks, and short fits that must beat their input.

use dip::engine::Net;
use dip::fit::{FitConfig, fit_denoise};
use dip::image::Image;
use dip::nets::{Arch, ConvGen2Spec, DecoderSpec, LinearSpec, ReluNetSpec, SkipSpec, Upsampler};
use dip::noise::add_gaussian_noise;

#[test]
fn deep_decoder_128_has_100224_parameters() {
    let d = Arch::Decoder(DecoderSpec::new(3, 128));
    let net: Net<f32> = d.build(64, 64, 0).unwrap();
    assert_eq!(net.num_params(), 100_224);
    assert_eq!(d.input_shape(64, 64), (2, 2, 128));
    assert_eq!(net.output().shape(), (64, 64, 3));
    // 64 channels: 6·64² + 6·128 + 64·3.
    let net: Net<f32> = Arch::Decoder(DecoderSpec::new(3, 64))
        .build(32, 32, 0)
        .unwrap();
    assert_eq!(net.num_params(), 6 * 64 * 64 + 6 * 128 + 64 * 3);
}

#[test]
fn parameter_counts_follow_the_definitions() {
    // ReLUNet: 2→256, 8 × 256→256, 256→3, with biases.
    let r: Net<f32> = Arch::Relunet(ReluNetSpec::new(3)).build(8, 8, 0).unwrap();
    assert_eq!(
        r.num_params(),
        (2 * 256 + 256) + 8 * (256 * 256 + 256) + (256 * 3 + 3)
    );
    // DIP-Linear at 8×8×1, width 16: first 64→16, 19 hidden 16→16, last 16→64.
    let l: Net<f32> = Arch::Linear(LinearSpec::new(1, 1, 16))
        .build(8, 8, 0)
        .unwrap();
    assert_eq!(
        l.num_params(),
        (64 * 16 + 16) + 19 * (16 * 16 + 16) + (16 * 64 + 64)
    );
    // The two-layer generator: C (h·w·k) and v (k·out).
    let c: Net<f32> = Arch::Convgen2(ConvGen2Spec::new(3, 8))
        .build(16, 16, 0)
        .unwrap();
    assert_eq!(c.num_params(), 16 * 16 * 8 + 8 * 3);
    // The skip network's upsampling variants: transposed adds a 3×3 conv per scale.
    let mut s = SkipSpec::uniform(4, 3, 2, 8, 2);
    let base: Net<f32> = Arch::Skip(s.clone()).build(16, 16, 0).unwrap();
    s.upsample = Upsampler::Gaussian;
    let g: Net<f32> = Arch::Skip(s.clone()).build(16, 16, 0).unwrap();
    assert_eq!(
        g.num_params(),
        base.num_params(),
        "Gaussian upsampling is fixed"
    );
    s.upsample = Upsampler::Transposed;
    let t: Net<f32> = Arch::Skip(s).build(16, 16, 0).unwrap();
    assert_eq!(t.num_params(), base.num_params() + 2 * (9 * 8 * 8 + 8));
}

#[test]
fn names_parse_with_widths_and_errors_name_the_architecture() {
    assert_eq!(
        Arch::named("linear-2048", 32, 3, None).unwrap().label(),
        "linear-2048"
    );
    assert_eq!(
        Arch::named("decoder-64", 32, 1, None).unwrap().label(),
        "decoder-64"
    );
    assert_eq!(
        Arch::named("relunet", 32, 1, Some(64)).unwrap().label(),
        "relunet-64"
    );
    let e = Arch::named("resnet", 32, 3, None).unwrap_err().to_string();
    assert!(e.contains("resnet") && e.contains("decoder"), "{e}");
}

#[test]
fn memory_estimate_refuses_a_network_too_large() {
    let arch = Arch::Linear(LinearSpec::new(1, 1, 2048));
    let need = arch.estimate_bytes(64, 64).unwrap();
    // ~97 M parameters, four copies of them (weights, gradients, Adam's two moments).
    assert!(need > 1_400_000_000 && need < 1_700_000_000, "{need}");
    let clean = Image::new(64, 64, 1, vec![0.5; 64 * 64]);
    let cfg = FitConfig {
        iters: 1,
        max_memory: Some(1 << 30),
        ..FitConfig::default()
    };
    let e = fit_denoise(&clean, None, &arch, &cfg, &mut [])
        .unwrap_err()
        .to_string();
    assert!(e.contains("linear-2048") && e.contains("GiB"), "{e}");
}

/// A smooth test image.
fn smooth(w: usize, h: usize, c: usize) -> Image {
    let mut img = Image::zeros(w, h, c);
    for y in 0..h {
        for x in 0..w {
            for k in 0..c {
                let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
                img.data[(y * w + x) * c + k] =
                    0.5 + 0.3 * (3.0 * u + k as f32).sin() * (2.0 * v + 0.5).cos();
            }
        }
    }
    img
}

/// DIP-Linear fits its target (the loss falls tenfold) but, having no notion of neighbourhood,
/// does not denoise: the paper's control.
#[test]
fn dip_linear_fits_but_does_not_denoise() {
    let clean = smooth(32, 32, 1);
    let noisy = add_gaussian_noise(&clean, 25.0, 1);
    let arch = Arch::Linear(LinearSpec {
        scales: 2,
        ..LinearSpec::new(1, 1, 64)
    });
    let cfg = FitConfig {
        iters: 300,
        lr: 0.001,
        reg_noise: 0.0,
        ema: 0.0,
        observe_every: 10,
        ..FitConfig::default()
    };
    let r = fit_denoise(&noisy, Some(&clean), &arch, &cfg, &mut []).unwrap();
    let (first, last) = (r.history[0].loss, r.history.last().unwrap().loss);
    assert!(last < 0.1 * first, "loss {first} -> {last}");
    let gain = r.psnr_best.unwrap() - r.psnr_noisy.unwrap();
    assert!(gain < 1.0, "DIP-Linear gained {gain:.2} dB");
}

/// The convolutional and coordinate architectures denoise a smooth image better than the noisy
/// input within a short fit.
#[test]
fn every_architecture_denoises_a_smooth_image() {
    let clean = smooth(32, 32, 1);
    let noisy = add_gaussian_noise(&clean, 25.0, 1);
    let archs = [
        (
            Arch::Skip(SkipSpec::uniform(8, 1, 3, 16, 4)),
            0.01,
            0.0,
            None,
            150,
        ),
        (
            Arch::Decoder(DecoderSpec {
                layers: 4,
                ..DecoderSpec::new(1, 32)
            }),
            0.01,
            0.0,
            None,
            150,
        ),
        (
            Arch::Convgen2(ConvGen2Spec::new(1, 16)),
            0.05,
            0.0,
            None,
            150,
        ),
        (
            Arch::Relunet(ReluNetSpec {
                width: 64,
                layers: 5,
                ..ReluNetSpec::new(1)
            }),
            0.003,
            0.0,
            Some(512),
            300,
        ),
    ];
    for (arch, lr, reg, batch, iters) in archs {
        let cfg = FitConfig {
            iters,
            lr,
            reg_noise: reg,
            ema: 0.0,
            pixel_batch: batch,
            observe_every: 10,
            ..FitConfig::default()
        };
        let r = fit_denoise(&noisy, Some(&clean), &arch, &cfg, &mut []).unwrap();
        let (noisy_db, best) = (r.psnr_noisy.unwrap(), r.psnr_best.unwrap());
        eprintln!(
            "{}: noisy {noisy_db:.2} dB, best {best:.2} dB at {:?}",
            arch.label(),
            r.iter_best
        );
        assert!(
            best > noisy_db + 1.0,
            "{}: best {best:.2} dB vs noisy {noisy_db:.2}",
            arch.label()
        );
    }
}

/// The fit is deterministic for every architecture (pixel batches and Fourier features are
/// drawn from the seed).
#[test]
fn fits_are_deterministic() {
    let clean = smooth(16, 16, 3);
    for arch in [
        Arch::Relunet(ReluNetSpec {
            width: 16,
            layers: 3,
            fourier_features: 8,
            ..ReluNetSpec::new(3)
        }),
        Arch::Convgen2(ConvGen2Spec::new(3, 4)),
    ] {
        let cfg = FitConfig {
            iters: 20,
            pixel_batch: Some(64),
            ..FitConfig::default()
        };
        let a = fit_denoise(&clean, None, &arch, &cfg, &mut []).unwrap();
        let b = fit_denoise(&clean, None, &arch, &cfg, &mut []).unwrap();
        assert_eq!(a.output_raw.data, b.output_raw.data, "{}", arch.label());
    }
}

/// Finite differences through a whole small network of each architecture: the gradient of
/// `Σ w·f(z)` with respect to every parameter, on a sample of them.
fn check_net_gradient(arch: &Arch, h: usize, w: usize) {
    let mut net: Net<f64> = arch.build(h, w, 3).unwrap();
    let n_in = net.input().len();
    let z: Vec<f64> = match arch.own_input(h, w, 3) {
        Some(z) => z.iter().map(|&v| v as f64).collect(),
        None => (0..n_in)
            .map(|i| ((i * 37 % 101) as f64) / 1010.0)
            .collect(),
    };
    net.input_mut().data.copy_from_slice(&z);
    let n_out = net.output().len();
    let weights: Vec<f64> = (0..n_out)
        .map(|i| ((i * 13 % 17) as f64 - 8.0) / 17.0)
        .collect();
    let loss = |net: &mut Net<f64>| -> f64 {
        net.forward()
            .data
            .iter()
            .zip(&weights)
            .map(|(a, b)| a * b)
            .sum()
    };
    loss(&mut net);
    net.output_grad_mut().data.copy_from_slice(&weights);
    net.backward();
    let grads = net.grads().to_vec();
    let n = net.num_params();
    let step = (n / 60).max(1);
    let eps = 1e-6;
    for i in (0..n).step_by(step) {
        let p0 = net.params()[i];
        net.params_mut()[i] = p0 + eps;
        let up = loss(&mut net);
        net.params_mut()[i] = p0 - eps;
        let down = loss(&mut net);
        net.params_mut()[i] = p0;
        let fd = (up - down) / (2.0 * eps);
        let err = (fd - grads[i]).abs();
        assert!(
            err <= 1e-6 + 1e-5 * fd.abs().max(grads[i].abs()),
            "{} parameter {i}: analytic {} vs finite difference {fd}",
            arch.label(),
            grads[i]
        );
    }
}

#[test]
fn whole_networks_match_finite_differences() {
    let mut skip_t = SkipSpec::uniform(3, 2, 2, 4, 2);
    skip_t.upsample = Upsampler::Transposed;
    let mut skip_g = SkipSpec::uniform(3, 2, 2, 4, 2);
    skip_g.upsample = Upsampler::Gaussian;
    skip_g.gaussian_sigma = vec![0.8];
    let mut dec_g = DecoderSpec {
        layers: 3,
        ..DecoderSpec::new(2, 4)
    };
    dec_g.upsample = Upsampler::Gaussian;
    for (arch, h, w) in [
        (Arch::Skip(skip_t), 8, 8),
        (Arch::Skip(skip_g), 8, 8),
        (
            Arch::Decoder(DecoderSpec {
                layers: 3,
                ..DecoderSpec::new(2, 4)
            }),
            8,
            4,
        ),
        (Arch::Decoder(dec_g), 8, 8),
        (
            Arch::Relunet(ReluNetSpec {
                width: 6,
                layers: 3,
                ..ReluNetSpec::new(2)
            }),
            5,
            4,
        ),
        (
            Arch::Relunet(ReluNetSpec {
                width: 6,
                layers: 3,
                fourier_features: 3,
                ..ReluNetSpec::new(2)
            }),
            5,
            4,
        ),
        (
            Arch::Linear(LinearSpec {
                scales: 2,
                ..LinearSpec::new(1, 2, 5)
            }),
            3,
            4,
        ),
        (
            Arch::Convgen2(ConvGen2Spec {
                filter: 2,
                ..ConvGen2Spec::new(2, 3)
            }),
            5,
            6,
        ),
    ] {
        check_net_gradient(&arch, h, w);
    }
}

#[test]
fn lipschitz_control_bounds_every_weight() {
    let arch = Arch::Skip(SkipSpec::uniform(4, 1, 2, 8, 2));
    let mut net: Net<f64> = arch.build(16, 16, 0).unwrap();
    // Inflate the weights so that some exceed the bound.
    net.params_mut().iter_mut().for_each(|v| *v *= 3.0);
    let before = net.weight_spectral_norms();
    assert!(before.iter().any(|(_, s)| *s > 1.5), "{before:?}");
    net.lipschitz_project(1.5);
    let after = net.weight_spectral_norms();
    for ((name, b), (_, a)) in before.iter().zip(&after) {
        assert!(*a <= 1.5 * (1.0 + 1e-8), "{name}: {a}");
        if *b <= 1.5 {
            assert!(
                (a - b).abs() < 1e-12,
                "{name} was within the bound: {b} -> {a}"
            );
        } else {
            assert!((a - 1.5).abs() < 1e-8, "{name}: {b} -> {a}");
        }
    }
    // In the fit: a tight bound changes the result, and the run stays deterministic.
    let clean = smooth(16, 16, 1);
    let cfg = FitConfig {
        iters: 20,
        ..FitConfig::default()
    };
    let free = fit_denoise(&clean, None, &arch, &cfg, &mut []).unwrap();
    let cfg = FitConfig {
        lipschitz: Some(0.5),
        ..cfg
    };
    let a = fit_denoise(&clean, None, &arch, &cfg, &mut []).unwrap();
    let b = fit_denoise(&clean, None, &arch, &cfg, &mut []).unwrap();
    assert_eq!(a.output_raw.data, b.output_raw.data);
    assert_ne!(a.output_raw.data, free.output_raw.data);
}

/// A matrix with singular values `sv`: an orthogonal mix (Householder reflections) of a
/// diagonal.
fn known_matrix(rows: usize, cols: usize, sv: &[f64]) -> Vec<f64> {
    let mut a = vec![0.0f64; rows * cols];
    for (i, s) in sv.iter().enumerate() {
        a[i * cols + i] = *s;
    }
    // Left reflection I − 2uuᵀ on rows, right reflection I − 2vvᵀ on columns.
    let u: Vec<f64> = (0..rows)
        .map(|i| ((i * 7 % 11) as f64 - 5.0) / 10.0)
        .collect();
    let nu = u.iter().map(|x| x * x).sum::<f64>().sqrt();
    let u: Vec<f64> = u.iter().map(|x| x / nu).collect();
    let v: Vec<f64> = (0..cols)
        .map(|i| ((i * 5 % 7) as f64 - 3.0) / 4.0)
        .collect();
    let nv = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let v: Vec<f64> = v.iter().map(|x| x / nv).collect();
    for c in 0..cols {
        let d: f64 = (0..rows).map(|r| u[r] * a[r * cols + c]).sum();
        (0..rows).for_each(|r| a[r * cols + c] -= 2.0 * u[r] * d);
    }
    for r in 0..rows {
        let d: f64 = (0..cols).map(|c| v[c] * a[r * cols + c]).sum();
        (0..cols).for_each(|c| a[r * cols + c] -= 2.0 * v[c] * d);
    }
    a
}

#[test]
fn spectral_norm_finds_the_largest_singular_value() {
    use dip::engine::lipschitz::spectral_norm;
    let (rows, cols) = (30, 12);
    let a = known_matrix(rows, cols, &[3.0, 2.5, 1.0, 0.5, 0.25, 0.1]);
    let mut warm = Vec::new();
    let s = spectral_norm(&a, rows, cols, &mut warm);
    assert!((s - 3.0).abs() < 1e-7 * 3.0, "{s}");
    // Warm-started again, it stays exact; so does the transpose.
    let s2 = spectral_norm(&a, rows, cols, &mut warm);
    assert!((s2 - 3.0).abs() < 1e-7 * 3.0, "{s2}");
    let at: Vec<f64> = (0..cols * rows)
        .map(|i| a[(i % rows) * cols + i / rows])
        .collect();
    let s3 = spectral_norm(&at, cols, rows, &mut Vec::new());
    assert!((s3 - 3.0).abs() < 1e-7 * 3.0, "{s3}");
    // A near tie: the estimate lies within the gap, never above σ_max.
    let tie = known_matrix(rows, cols, &[3.0, 2.999, 1.0]);
    let s4 = spectral_norm(&tie, rows, cols, &mut Vec::new());
    assert!((2.999..=3.0 + 1e-12).contains(&s4), "{s4}");
}

/// The fixed filter's backward is its adjoint: <A x, y> = <x, Aᵀ y>, for every padding, with
/// and without zero-insertion upsampling.
#[test]
fn fixed_filter_backward_is_the_adjoint() {
    use dip::engine::{FilterPad, FixedFilter, Tensor};
    let (kernel, k) = dip::nets::gaussian_kernel(0.9, 4.0);
    for pad in [FilterPad::Zero, FilterPad::Circular, FilterPad::Reflection] {
        for up in [1, 2] {
            let (h, w, c) = (5, 4, 2);
            let f = FixedFilter::<f64>::new(h, w, c, &kernel, k, up, pad);
            let (ho, wo, _) = f.output_shape();
            let x = Tensor::from_vec(
                h,
                w,
                c,
                (0..h * w * c)
                    .map(|i| ((i * 31 % 17) as f64) / 7.0 - 1.0)
                    .collect(),
            );
            let y = Tensor::from_vec(
                ho,
                wo,
                c,
                (0..ho * wo * c)
                    .map(|i| ((i * 13 % 19) as f64) / 9.0 - 1.0)
                    .collect(),
            );
            let mut ax = Tensor::zeros(ho, wo, c);
            f.forward(&x, &mut ax);
            let mut aty = Tensor::zeros(h, w, c);
            f.backward(&y, &mut aty, false);
            let lhs: f64 = ax.data.iter().zip(&y.data).map(|(a, b)| a * b).sum();
            let rhs: f64 = x.data.iter().zip(&aty.data).map(|(a, b)| a * b).sum();
            assert!(
                (lhs - rhs).abs() < 1e-10 * lhs.abs().max(1.0),
                "{pad:?} up {up}: {lhs} vs {rhs}"
            );
            // A constant image stays constant on average under the Gaussian upsampling.
            let ones = Tensor::from_vec(h, w, c, vec![1.0; h * w * c]);
            f.forward(&ones, &mut ax);
            if pad == FilterPad::Circular {
                let mean = ax.data.iter().sum::<f64>() / ax.len() as f64;
                assert!((mean - (4 / (up * up)) as f64).abs() < 1e-9, "{mean}");
            }
        }
    }
}

#[test]
fn the_memory_breakdown_adds_up_to_the_memory_plan() {
    // The standard skip network at 64×64: every part is accounted for, and the activation
    // parts match the layer outputs they name.
    let spec = SkipSpec::standard(32, 3);
    let net: Net<f32> = Arch::Skip(spec).build(64, 64, 0).unwrap();
    let parts = net.memory_breakdown();
    let total: usize = parts.iter().map(|p| p.1).sum();
    assert_eq!(total, net.memory_bytes());
    let get = |name: &str| parts.iter().find(|p| p.0 == name).unwrap().1;
    assert_eq!(get("network input"), 64 * 64 * 32 * 4);
    // Every batch norm runs in place, so the convolutions and concatenations that feed one keep
    // no buffer of their own: only the last convolution (3 channels, read by the sigmoid) does.
    // Every upsampling writes straight into the concatenation that reads it.
    assert_eq!(get("conv outputs"), 64 * 64 * 3 * 4);
    assert_eq!(get("concat outputs"), 0);
    assert_eq!(get("upsample outputs"), 0);
    for name in [
        "batch-norm (+LeakyReLU) outputs",
        "activation gradients",
        "conv scratch",
    ] {
        assert!(get(name) > 0, "{name}");
    }
    // The parameters hold at least 4 copies.
    assert!(get("parameters, gradients, tables") >= 4 * 4 * 2_217_831);
}

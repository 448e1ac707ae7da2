//! Host-side checks of the GPU backend (feature `cuda`): they need no GPU. The NVRTC check runs
//! where libnvrtc loads (for example from the `nvidia-cuda-nvrtc` Python wheel on
//! LD_LIBRARY_PATH) and says it was skipped otherwise.
#![cfg(feature = "cuda")]

use dip::cuda::plan::{GpuOp, GradUse, MAX_BLOCKS, MAX_PARTS, grid_1d, lower, reduction_parts};
use dip::cuda::{KERNEL_NAMES, KERNELS, compile_kernels, probe};
use dip::engine::NetBuilder;
use dip::nets::SkipSpec;

#[test]
fn every_kernel_is_in_the_source() {
    for name in KERNEL_NAMES {
        assert!(
            KERNELS.contains(&format!("__global__ void {name}(")),
            "kernel {name} missing from kernels.cu"
        );
    }
    let defined = KERNELS.matches("__global__ void ").count();
    assert_eq!(
        defined,
        KERNEL_NAMES.len(),
        "a kernel is not in KERNEL_NAMES"
    );
}

#[test]
fn launch_geometry_covers_everything() {
    assert_eq!(grid_1d(0), 1);
    assert_eq!(grid_1d(1), 1);
    assert_eq!(grid_1d(257), 2);
    assert_eq!(grid_1d(usize::MAX / 2), MAX_BLOCKS as u32);
    for rows in [1, 63, 64, 65, 1000, 64 * 64, 512 * 512, 1 << 22] {
        let (per, parts) = reduction_parts(rows);
        assert!(parts <= MAX_PARTS, "{rows}");
        assert!(per * parts >= rows, "{rows}");
        assert!(per * (parts - 1) < rows, "{rows}: an empty block");
    }
}

#[test]
fn lowers_the_standard_network_into_disjoint_aligned_buffers() {
    let net = SkipSpec::uniform(32, 3, 5, 128, 4)
        .build::<f32>(64, 64, 0)
        .unwrap();
    let (nodes, l) = lower(&net).unwrap();
    assert!(!nodes.is_empty());
    let out_len = l.acts.last().unwrap().1;
    let mut ranges: Vec<(usize, usize)> = vec![
        (l.params, l.n_params),
        (l.dparams, l.n_params),
        (l.adam_m, l.n_params),
        (l.adam_v, l.n_params),
        (l.col, l.col_len),
        (l.ones, l.ones_len),
        (l.target, out_len),
        (l.mask, out_len),
        (l.ema, out_len),
        (l.z, l.acts[0].1),
        (l.snap_params, l.n_params),
        (l.snap_m, l.n_params),
        (l.snap_v, l.n_params),
        (l.snap_ema, out_len),
    ];
    ranges.extend(l.acts.iter().copied());
    // Gradient slots are shared between activations of one shape: the same range twice.
    for (a, g) in l.grads.iter().enumerate() {
        if let Some(off) = g {
            ranges.push((*off, l.acts[a].1));
        }
    }
    for n in &nodes {
        if let GpuOp::Norm { c, stats, .. } = n.op {
            ranges.push((stats, 5 * c));
        }
    }
    ranges.sort();
    ranges.dedup();
    for pair in ranges.windows(2) {
        assert!(pair[0].0 + pair[0].1 <= pair[1].0, "{pair:?} overlap");
    }
    for &(o, _) in &ranges {
        assert_eq!(o % 64, 0);
    }
    assert!(ranges.last().map(|r| r.0 + r.1).unwrap() <= l.len);
    assert!(l.part + l.part_len <= l.loss && l.loss + 2 <= l.adam_state);
    assert!(l.adam_state + 3 <= l.len64);
    // The input gradient is not kept: the first conv skips it.
    assert_eq!(nodes[0].grads, vec![GradUse::Skip]);
}

#[test]
fn kernels_compile_with_nvrtc() {
    let ptx = match compile_kernels(Some("compute_80")) {
        Ok(p) => p,
        Err(e) if e.0.contains("not found") => {
            eprintln!("SKIPPED: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    for name in KERNEL_NAMES {
        assert!(
            ptx.contains(&format!(".entry {name}(")),
            "kernel {name} missing from the PTX"
        );
    }
    // The other architectures the backend targets compile too.
    for arch in ["compute_90", "compute_100"] {
        compile_kernels(Some(arch)).unwrap_or_else(|e| panic!("{arch}: {e}"));
    }
}

#[test]
fn a_missing_device_is_a_clear_error() {
    match probe(0) {
        Ok(d) => eprintln!("SKIPPED: a GPU is present, {} (cuda:{})", d.name, d.ordinal),
        Err(e) => {
            let m = e.to_string();
            assert!(!m.contains('\n'), "one line: {m}");
            assert!(
                m.contains("driver") || m.contains("device") || m.contains("not found"),
                "{m}"
            );
            eprintln!("no GPU here: {m}");
        }
    }
    match probe(1000) {
        Ok(_) => panic!("a thousandth device"),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// The golden tests on the GPU, where there is one (skipped, saying so, where not).
#[test]
fn golden_cases_on_the_gpu() {
    if let Err(e) = probe(0) {
        // A machine that is meant to have a GPU (DIP_TEST_GPU=1, as scripts/gpu-check.sh sets)
        // fails here rather than passing without running.
        assert!(
            std::env::var_os("DIP_TEST_GPU").is_none(),
            "DIP_TEST_GPU is set but no GPU can be used: {e}"
        );
        eprintln!("SKIPPED golden_cases_on_the_gpu (no usable GPU): {e}");
        return;
    }
    let dir = std::env::var("DIP_GOLDEN_DIR").map_or_else(
        |_| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/golden"),
        std::path::PathBuf::from,
    );
    for case in dip::cuda::golden::cases(&dir).unwrap() {
        let r =
            dip::cuda::golden::check_case(&dir, &case, 0, dip::cuda::Precision::F32, 1e-4).unwrap();
        for (what, err, allowed) in &r.checks {
            eprintln!("{case}: {what}: {err:.2e} (allowed {allowed:.0e})");
        }
        assert!(r.passed(), "{case} failed on the GPU");
    }
}

/// The executor on the host emulation of the GPU (the kernels compiled by the host C++
/// compiler, reference GEMMs for cuBLAS) against the golden tensors: launch arguments, buffer
/// offsets, GEMM shapes and transposes, gradient write/add. Skipped, saying so, without `c++`.
#[test]
fn golden_cases_on_the_host_emulation() {
    let dir = std::env::var("DIP_GOLDEN_DIR").map_or_else(
        |_| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/golden"),
        std::path::PathBuf::from,
    );
    use dip::cuda::Precision;
    let work = tempfile::tempdir().unwrap();
    for case in dip::cuda::golden::cases(&dir).unwrap() {
        // The worst error of each mode; the tensor-core modes within their own tolerance, and
        // further from the reference than f32 (their rounding is emulated, not skipped).
        let mut worst = Vec::new();
        for precision in [Precision::F32, Precision::Tf32, Precision::Bf16] {
            let tol = precision.golden_tolerance();
            let r = match dip::cuda::golden::check_case_emulated(
                &dir,
                &case,
                precision,
                tol,
                work.path(),
            ) {
                Ok(r) => r,
                Err(e) if e.0.contains("no host C++ compiler") => {
                    eprintln!("SKIPPED: {e}");
                    return;
                }
                Err(e) => panic!("{e}"),
            };
            for (what, err, allowed) in &r.checks {
                eprintln!("{case} {precision:?}: {what}: {err:.2e} (allowed {allowed:.0e})");
            }
            assert!(
                r.passed(),
                "{case} failed on the emulation in {precision:?}"
            );
            worst.push(r.checks[0].1);
        }
        assert!(
            worst[0] < worst[1] && worst[1] < worst[2],
            "{case}: forward errors f32, TF32, bf16: {worst:?}"
        );
    }
}

/// Layers and graph shapes the golden networks do not have (LeakyReLU on its own, a learned
/// tensor, zero-insertion and nearest upsampling, an activation read by two nodes, a stride-2
/// zero-padded convolution), on the host emulation against the CPU engine: forward, gradients,
/// and parameters after an Adam step.
#[test]
fn other_layers_on_the_host_emulation_match_the_cpu() {
    matches_the_cpu_on_the_emulation(other_layers());
}

fn other_layers() -> dip::engine::Net<f32> {
    use dip::engine::{PadMode, UpsampleMode};
    let mut b = NetBuilder::<f32>::new(8, 8, 3);
    let x = b.input();
    let a = b.conv(x, 6, 3, 2, PadMode::Zero, true, "down");
    let r = b.leaky_relu(a, 0.1);
    let z = b.upsample(r, 2, UpsampleMode::Zeros);
    let l = b.upsample(r, 2, UpsampleMode::Bilinear);
    let t = b.learned_tensor((8, 8, 2), 0.5, "learned");
    let c = b.concat(&[z, l, t, x]);
    let n = b.batchnorm(c, Some(0.2), "bn");
    let o = b.conv(n, 3, 3, 1, PadMode::Reflection, true, "out");
    let u = b.upsample(o, 2, UpsampleMode::Nearest);
    let y = b.sigmoid(u);
    b.build(y, 11, false)
}

/// A fully connected layer (DIP-Linear) and fixed filters (zero insertion then a Gaussian, with
/// circular and reflection padding; the convgen networks), reading an activation that another
/// node reads too.
#[test]
fn dense_and_fixed_filter_layers_on_the_host_emulation_match_the_cpu() {
    matches_the_cpu_on_the_emulation(dense_and_filters());
}

fn dense_and_filters() -> dip::engine::Net<f32> {
    use dip::engine::{FilterPad, PadMode};
    let mut b = NetBuilder::<f32>::new(6, 5, 3);
    let x = b.input();
    let a = b.conv(x, 4, 3, 1, PadMode::Zero, true, "conv");
    let g: Vec<f64> = [1.0, 2.0, 1.0, 2.0, 4.0, 2.0, 1.0, 2.0, 1.0]
        .iter()
        .map(|v| v / 16.0)
        .collect();
    let up = b.fixed_filter(a, &g, 3, 2, FilterPad::Circular);
    let same = b.fixed_filter(a, &g, 3, 1, FilterPad::Reflection);
    let fc = b.dense(same, (12, 10, 2), true, "fc");
    let c = b.concat(&[up, fc]);
    let r = b.leaky_relu(c, 0.2);
    let out = b.dense(r, (12, 10, 3), false, "out");
    let y = b.sigmoid(out);
    b.build(y, 3, false)
}

/// Lanes: three fits of one network in one launch sequence (each lane its own parameters,
/// input, target and seed; input noise, the moving average, Adam and SGLD's weight noise, from
/// captured graphs) equal three networks fitted one at a time, bit for bit, including a lane
/// that skips the second half of a step (a rollback) while the others go on. A kernel or GEMM
/// that ignored its lane would read lane 0's numbers and fail this.
#[test]
fn lanes_of_a_network_equal_separate_networks() {
    for net in [other_layers(), dense_and_filters()] {
        lanes_equal_separate_networks(net);
    }
}

fn lanes_equal_separate_networks(net: dip::engine::Net<f32>) {
    use dip::cuda::{FitStep, GpuNet, Precision};
    use dip::engine::{AdamConfig, Tensor};
    const LANES: usize = 3;
    let work = tempfile::tempdir().unwrap();
    let mut batch = match GpuNet::emulated_lanes(&net, work.path(), Precision::F32, 0, LANES) {
        Ok(g) => g,
        Err(e) if e.0.contains("no host C++ compiler") => {
            eprintln!("SKIPPED: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    assert_eq!(batch.lanes(), LANES);
    assert!(batch.select(LANES).is_err());
    let (h, w, c) = (net.output().h, net.output().w, net.output().c);
    let n_in = net.input().data.len();
    let adam = AdamConfig {
        lr: 0.02,
        ..AdamConfig::default()
    };
    let step = |seed: u64| FitStep {
        seed,
        reg_noise: 0.05,
        scale: 2.0 / (h * w * c) as f32,
        l1: false,
        weighted: false,
        ema: 0.9,
        adam,
        sgld: Some((0.3, vec![(0, 20), (net.num_params() - 7, 7)])),
        lipschitz: None,
    };
    let mut singles = Vec::new();
    for lane in 0..LANES {
        let params: Vec<f32> = net
            .params()
            .iter()
            .enumerate()
            .map(|(i, p)| p + 0.05 * lane as f32 * ((i * 7 % 13) as f32 / 13.0 - 0.5))
            .collect();
        let z: Vec<f32> = (0..n_in)
            .map(|i| ((i * 37 + lane * 11) % 101) as f32 / 101.0 - 0.3)
            .collect();
        let target = Tensor {
            h,
            w,
            c,
            data: (0..h * w * c)
                .map(|i| ((i * 13 + lane * 5) % 29) as f32 / 29.0)
                .collect(),
        };
        let dir = work.path().join(format!("single{lane}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut single = GpuNet::emulated(&net, &dir).unwrap();
        for g in [&mut single, &mut batch] {
            if g.lanes() > 1 {
                g.select(lane).unwrap();
            }
            g.set_params(&params).unwrap();
            g.set_fixed_input(&z).unwrap();
            g.set_target(&target, None).unwrap();
        }
        single.prepare_fit(step(100 + lane as u64)).unwrap();
        single.set_fit_state(0, adam.lr).unwrap();
        singles.push(single);
    }
    batch.prepare_fit(step(100)).unwrap();
    assert!(batch.fit_graphs());
    for lane in 0..LANES {
        batch.select(lane).unwrap();
        batch.set_fit_seed(100 + lane as u64).unwrap();
        batch.set_fit_state(0, adam.lr).unwrap();
    }
    for it in 1..=4 {
        batch.fit_front().unwrap();
        for s in &mut singles {
            s.fit_front().unwrap();
        }
        let skip = (it == 3).then_some(1);
        if let Some(l) = skip {
            batch.select(l).unwrap();
            batch.set_active(false).unwrap();
        }
        batch.fit_back().unwrap();
        for (lane, s) in singles.iter_mut().enumerate() {
            if skip != Some(lane) {
                s.fit_back().unwrap();
            }
        }
        if let Some(l) = skip {
            batch.select(l).unwrap();
            batch.set_active(true).unwrap();
        }
    }
    for (lane, s) in singles.iter().enumerate() {
        batch.select(lane).unwrap();
        let what = |x: &str| format!("lane {lane}: {x}");
        assert_eq!(
            batch.output().unwrap().data,
            s.output().unwrap().data,
            "{}",
            what("output")
        );
        assert_eq!(
            batch.ema().unwrap().data,
            s.ema().unwrap().data,
            "{}",
            what("average")
        );
        assert_eq!(
            batch.params().unwrap(),
            s.params().unwrap(),
            "{}",
            what("parameters")
        );
        assert_eq!(
            batch.moments().unwrap(),
            s.moments().unwrap(),
            "{}",
            what("moments")
        );
        assert_eq!(
            batch.loss_sums_and_adam().unwrap(),
            s.loss_sums_and_adam().unwrap(),
            "{}",
            what("loss and Adam's state")
        );
        assert_eq!(batch.adam_t().unwrap(), if lane == 1 { 3 } else { 4 });
    }
    // The lanes really differ (each its own parameters, input, target and noise).
    batch.select(0).unwrap();
    let first = batch.params().unwrap();
    batch.select(2).unwrap();
    assert_ne!(first, batch.params().unwrap());
}

/// Forward, gradients and the parameters after one Adam step of `net` on the host emulation
/// against the CPU engine, within 1e-5 of each tensor's largest magnitude.
fn matches_the_cpu_on_the_emulation(mut net: dip::engine::Net<f32>) {
    use dip::engine::{Adam, AdamConfig, Tensor};
    for (i, v) in net.input_mut().data.iter_mut().enumerate() {
        *v = ((i * 37 % 101) as f32 / 101.0) - 0.3;
    }
    let (h, w, ch) = (net.output().h, net.output().w, net.output().c);
    let target = Tensor {
        h,
        w,
        c: ch,
        data: (0..h * w * ch)
            .map(|i| (i * 13 % 29) as f32 / 29.0)
            .collect(),
    };
    let work = tempfile::tempdir().unwrap();
    let mut gpu = match dip::cuda::GpuNet::emulated(&net, work.path()) {
        Ok(g) => g,
        Err(e) if e.0.contains("no host C++ compiler") => {
            eprintln!("SKIPPED: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let close = |what: &str, ours: &[f32], want: &[f32]| {
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let diff = ours
            .iter()
            .zip(want)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff <= 1e-5 * scale.max(1e-6),
            "{what}: {diff:e} of {scale:e}"
        );
    };
    let scale = 2.0 / (h * w * ch) as f32;
    net.forward();
    let (out, grad) = net.output_and_grad();
    for ((g, &o), &t) in grad.data.iter_mut().zip(&out.data).zip(&target.data) {
        *g = scale * (o - t);
    }
    net.backward();
    gpu.set_target(&target, None).unwrap();
    gpu.forward().unwrap();
    close("output", &gpu.output().unwrap().data, &net.output().data);
    gpu.loss_and_grad(scale).unwrap();
    gpu.backward().unwrap();
    close("gradients", &gpu.grads().unwrap(), net.grads());
    let cfg = AdamConfig::default();
    let mut adam = Adam::new(net.num_params(), cfg);
    let (p, g) = net.params_and_grads();
    adam.step(p, g);
    gpu.adam_step(&cfg).unwrap();
    close(
        "parameters after Adam",
        &gpu.params().unwrap(),
        net.params(),
    );
}

/// Tensor-core modes on a card without them are refused, naming the card's capability.
#[test]
fn tensor_core_modes_need_an_ampere_card() {
    use dip::cuda::Precision;
    assert!(Precision::F32.check_card((6, 1)).is_ok());
    for p in [Precision::Tf32, Precision::Bf16] {
        assert!(p.check_card((8, 0)).is_ok() && p.check_card((9, 0)).is_ok());
        let e = p.check_card((7, 5)).unwrap_err();
        assert!(
            e.0.contains("compute capability 8.0") && e.0.contains("7.5"),
            "{e}"
        );
    }
}

/// Lipschitz control on the device gives the CPU engine's parameters bit for bit: the same
/// power iteration in the same f64 operations (warm-started the second time from the first
/// call's vectors, after the weights moved), the same f32 scaling; in every lane.
#[test]
fn lipschitz_control_on_the_device_is_the_cpus() {
    use dip::cuda::{GpuNet, Precision};
    for mut net in [other_layers(), dense_and_filters()] {
        let work = tempfile::tempdir().unwrap();
        let mut gpu = match GpuNet::emulated_lanes(&net, work.path(), Precision::F32, 0, 2) {
            Ok(g) => g,
            Err(e) if e.0.contains("no host C++ compiler") => {
                eprintln!("SKIPPED: {e}");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        assert!(!net.lipschitz_matrices().is_empty());
        let lambda = 0.6;
        for round in 0..2 {
            // Weights large enough that some matrices are projected, moved between calls.
            for (i, p) in net.params_mut().iter_mut().enumerate() {
                *p = *p * 2.5 + 0.01 * round as f32 * ((i % 7) as f32 - 3.0);
            }
            for lane in 0..2 {
                gpu.select(lane).unwrap();
                gpu.set_params(net.params()).unwrap();
            }
            let before = net.params().to_vec();
            net.lipschitz_project(lambda);
            assert_ne!(before, net.params(), "nothing was projected");
            gpu.lipschitz_project(lambda).unwrap();
            for lane in 0..2 {
                gpu.select(lane).unwrap();
                assert_eq!(
                    gpu.params().unwrap(),
                    net.params(),
                    "round {round}, lane {lane}"
                );
            }
        }
    }
}

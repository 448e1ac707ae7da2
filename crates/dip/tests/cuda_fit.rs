//! The fit loop on the GPU backend (feature `cuda`), run on the host emulation of the device:
//! it must give the CPU's fit (same arithmetic, other summation order), resume bit for bit, draw
//! proper noise on the device, and refuse what it cannot run with a clear message. Skipped,
//! saying so, where there is no host C++ compiler.
#![cfg(feature = "cuda")]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use dip::cuda::{FitStep, GpuError, GpuNet, noise_key};
use dip::engine::Net;
use dip::fit::{
    CheckpointSink, Control, FitConfig, FitReport, FitState, Loss, SgldConfig, StepInfo, fit,
    fit_on_gpu,
};
use dip::image::Image;
use dip::nets::{Arch, SkipSpec};
use dip::operators::{Blur, Compose, Downsample, Identity, Mask, Operator, Psf};

fn tiny() -> Arch {
    let mut s = SkipSpec::uniform(4, 3, 2, 8, 2);
    s.need_1x1_up = false;
    Arch::Skip(s)
}

fn images() -> (Image, Image) {
    let (w, h, c) = (14, 12, 3);
    let clean: Vec<f32> = (0..w * h * c)
        .map(|i| {
            let (p, ch) = (i / c, i % c);
            let (x, y) = ((p % w) as f32 / w as f32, (p / w) as f32 / h as f32);
            0.2 + 0.5 * x * y + 0.1 * ch as f32 * (1.0 - x)
        })
        .collect();
    let noisy: Vec<f32> = clean
        .iter()
        .enumerate()
        .map(|(i, v)| v + 0.1 * (((i * 7919) % 97) as f32 / 97.0 - 0.5))
        .collect();
    (Image::new(w, h, c, noisy), Image::new(w, h, c, clean))
}

/// A fresh emulated device per fit (each compiles the kernels in its own folder).
struct Emu {
    dir: tempfile::TempDir,
}

impl Emu {
    fn new() -> Self {
        Emu {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn open(&self) -> impl FnMut(&Net<f32>, usize) -> Result<GpuNet, GpuError> + '_ {
        |net, room| GpuNet::emulated_with_room(net, self.dir.path(), room)
    }
    /// As `open`, the fit's steps launched directly instead of from captured graphs.
    fn open_direct(&self) -> impl FnMut(&Net<f32>, usize) -> Result<GpuNet, GpuError> + '_ {
        |net, room| {
            let mut g = GpuNet::emulated_with_room(net, self.dir.path(), room)?;
            g.set_graphs(false);
            Ok(g)
        }
    }
}

/// `None` (and a note) where the emulation cannot be built.
fn gpu_fit(
    obs: &Image,
    op: &dyn Operator,
    clean: Option<&Image>,
    cfg: &FitConfig,
    observers: &mut [&mut dyn dip::fit::Observer],
) -> Option<dip::Result<FitReport>> {
    let emu = Emu::new();
    match fit_on_gpu(obs, op, clean, &tiny(), cfg, observers, &mut emu.open()) {
        Err(e) if e.to_string().contains("no host C++ compiler") => {
            eprintln!("SKIPPED: {e}");
            None
        }
        r => Some(r),
    }
}

fn config() -> FitConfig {
    FitConfig {
        iters: 12,
        // At the default 0.01 the two backends part by up to 7e-4 within 12 steps: a gradient
        // that is zero but for rounding (a bias before a batch norm) can take either sign, and
        // Adam's first steps move it by ±lr whatever its size. At 0.001 they stay within 2e-6.
        lr: 0.001,
        seed: 5,
        reg_noise: 0.0,
        ema: 0.9,
        observe_every: 4,
        check_every: 5,
        ..FitConfig::default()
    }
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// The GPU fit against the CPU fit with no input noise (the only randomness the two draw
/// differently): outputs within 2e-5 after 12 Adam steps (measured: 2e-6), the same history.
fn matches_the_cpu(op: &dyn Operator, obs: &Image, clean: &Image, cfg: &FitConfig) {
    let Some(gpu) = gpu_fit(obs, op, Some(clean), cfg, &mut []) else {
        return;
    };
    let gpu = gpu.unwrap();
    let cpu = fit(obs, op, Some(clean), tiny(), cfg, &mut []).unwrap();
    assert_eq!(gpu.iterations_run, cpu.iterations_run);
    assert_eq!(gpu.parameters, cpu.parameters);
    let d_raw = max_diff(&gpu.output_raw.data, &cpu.output_raw.data);
    let d_ema = max_diff(&gpu.output_ema.data, &cpu.output_ema.data);
    assert!(d_raw < 2e-5 && d_ema < 2e-5, "raw {d_raw:e}, ema {d_ema:e}");
    assert_eq!(gpu.history.len(), cpu.history.len());
    for (g, c) in gpu.history.iter().zip(&cpu.history) {
        assert_eq!(g.iter, c.iter);
        assert!(
            (g.loss - c.loss).abs() <= 1e-4 * c.loss,
            "step {}: loss {} vs {}",
            g.iter,
            g.loss,
            c.loss
        );
        let (pg, pc) = (g.psnr_ema.unwrap(), c.psnr_ema.unwrap());
        assert!((pg - pc).abs() < 1e-3, "step {}: {pg} vs {pc} dB", g.iter);
    }
    assert_eq!(gpu.rollbacks, cpu.rollbacks);
}

#[test]
fn denoising_on_the_gpu_is_the_cpu_fit() {
    let (noisy, clean) = images();
    let op = Identity::new(noisy.width, noisy.height, noisy.channels);
    matches_the_cpu(&op, &noisy, &clean, &config());
}

#[test]
fn inpainting_with_the_absolute_error_on_the_gpu_is_the_cpu_fit() {
    let (noisy, clean) = images();
    let known: Vec<bool> = (0..noisy.width * noisy.height)
        .map(|p| (p * 31) % 7 > 2)
        .collect();
    let op = Mask::from_known(noisy.width, noisy.height, known)
        .unwrap()
        .with_channels(noisy.channels);
    let obs = op.apply(&noisy).unwrap();
    let cfg = FitConfig {
        loss: Loss::L1,
        ..config()
    };
    matches_the_cpu(&op, &obs, &clean, &cfg);
}

#[test]
fn super_resolution_on_the_gpu_is_the_cpu_fit() {
    let (small, _) = images();
    let (w, h) = (2 * small.width, 2 * small.height);
    let clean = Image::new(
        w,
        h,
        3,
        (0..w * h * 3)
            .map(|i| small.data[((i / 3 / w / 2) * small.width + (i / 3 % w) / 2) * 3 + i % 3])
            .collect(),
    );
    let op = Downsample::new(w, h, 3, 2).unwrap();
    matches_the_cpu(&op, &small, &clean, &config());
}

#[test]
fn deblurring_on_the_gpu_is_the_cpu_fit() {
    let (noisy, clean) = images();
    let op = Blur::new(Psf::gaussian(1.2, 5).unwrap(), noisy.width, noisy.height, 3).unwrap();
    let obs = op.apply(&noisy).unwrap();
    matches_the_cpu(&op, &obs, &clean, &config());
}

/// Fitting on a batch of pixels per step (the coordinate-MLP recipe): the GPU draws the CPU's
/// batches and weighs the samples as it does, for a diagonal operator and a sparse one.
#[test]
fn pixel_batches_on_the_gpu_are_the_cpu_fit() {
    let (noisy, clean) = images();
    let op = Identity::new(noisy.width, noisy.height, noisy.channels);
    let cfg = FitConfig {
        pixel_batch: Some(40),
        ..config()
    };
    matches_the_cpu(&op, &noisy, &clean, &cfg);
    let blur = Blur::new(Psf::gaussian(1.2, 5).unwrap(), noisy.width, noisy.height, 3).unwrap();
    let obs = blur.apply(&noisy).unwrap();
    let l1 = FitConfig {
        loss: Loss::L1,
        ..cfg
    };
    matches_the_cpu(&blur, &obs, &clean, &l1);
}

/// Lipschitz control (Shi et al.) projects the updated weights on the device with the CPU's
/// power iteration: the fit is the CPU's, and the bound binds (the fit differs from the
/// unconstrained one).
#[test]
fn lipschitz_control_on_the_gpu_is_the_cpu_fit() {
    let (noisy, clean) = images();
    let op = Identity::new(noisy.width, noisy.height, noisy.channels);
    let cfg = FitConfig {
        lipschitz: Some(0.5),
        ..config()
    };
    matches_the_cpu(&op, &noisy, &clean, &cfg);
    let free = gpu_fit(&noisy, &op, Some(&clean), &config(), &mut [])
        .unwrap()
        .unwrap();
    let bound = gpu_fit(&noisy, &op, Some(&clean), &cfg, &mut [])
        .unwrap()
        .unwrap();
    let d = max_diff(&free.output_raw.data, &bound.output_raw.data);
    assert!(d > 1e-3, "the bound changes nothing: {d:e}");
}

/// A chain (blur, then holes) runs as the product of its matrices.
#[test]
fn a_composed_operator_on_the_gpu_is_the_cpu_fit() {
    let (noisy, clean) = images();
    let (w, h) = (noisy.width, noisy.height);
    let op = Compose::new(vec![
        Box::new(Blur::new(Psf::gaussian(1.2, 5).unwrap(), w, h, 3).unwrap()),
        Box::new(Mask::from_known(w, h, (0..w * h).map(|i| i % 5 != 2).collect()).unwrap()),
    ])
    .unwrap();
    let obs = op.apply(&noisy).unwrap();
    matches_the_cpu(&op, &obs, &clean, &config());
}

/// Cancels after step `stop_at` (if any) and returns the checkpoint written then.
fn run_gpu(cfg: FitConfig, stop_at: Option<usize>) -> Option<(FitReport, Option<FitState>)> {
    let (noisy, clean) = images();
    let op = Identity::new(noisy.width, noisy.height, noisy.channels);
    let saved: Arc<Mutex<Option<FitState>>> = Arc::new(Mutex::new(None));
    let cancel = Arc::new(AtomicBool::new(false));
    let sink = saved.clone();
    let cfg = FitConfig {
        cancel: Some(cancel.clone()),
        checkpoint: Some(CheckpointSink {
            every_steps: Some(1000),
            every_seconds: 1e9,
            meta: serde_json::json!({"test": true}),
            write: Arc::new(move |s: &FitState| *sink.lock().unwrap() = Some(s.clone())),
        }),
        ..cfg
    };
    let mut stopper = |info: &StepInfo<'_>| {
        if stop_at.is_some_and(|k| info.iter >= k) {
            cancel.store(true, Ordering::SeqCst);
        }
        Control::Continue
    };
    let report = gpu_fit(&noisy, &op, Some(&clean), &cfg, &mut [&mut stopper])?.unwrap();
    let state = saved.lock().unwrap().take();
    Some((report, state))
}

#[test]
fn a_resumed_gpu_fit_with_input_and_weight_noise_equals_an_uninterrupted_one() {
    let cfg = || FitConfig {
        iters: 16,
        reg_noise: 1.0 / 30.0,
        sgld: Some(SgldConfig {
            burn_in: 4,
            sample_every: 2,
            ..SgldConfig::for_iters(16)
        }),
        ..config()
    };
    let Some((full, none)) = run_gpu(cfg(), None) else {
        return;
    };
    assert!(none.is_none());
    // The same run again: the device's noise is deterministic.
    let (again, _) = run_gpu(cfg(), None).unwrap();
    assert_eq!(again.output_ema.data, full.output_ema.data);
    let (cut, state) = run_gpu(cfg(), Some(7)).unwrap();
    assert!(cut.interrupted);
    let state = state.expect("a cancelled fit writes its checkpoint");
    // The observer sees step 8 and asks to stop; the fit ends after the next step.
    assert_eq!(state.step, 9);
    assert!(state.snapshot.is_some(), "a check at step 5 kept a state");
    let (resumed, _) = run_gpu(
        FitConfig {
            resume: Some(Arc::new(state)),
            ..cfg()
        },
        None,
    )
    .unwrap();
    assert_eq!(resumed.iterations_run, full.iterations_run);
    assert_same_fit(&resumed, &full);
    let a = resumed.sgld.unwrap();
    assert_eq!(a.samples, 6);
    assert!(a.std.data.iter().any(|&s| s > 0.0), "the samples differ");
}

/// Two fits that must be the same bit for bit: outputs, moving average, history, SGLD mean.
fn assert_same_fit(a: &FitReport, b: &FitReport) {
    assert_eq!(a.output_raw.data, b.output_raw.data);
    assert_eq!(a.output_ema.data, b.output_ema.data);
    let rows = |r: &FitReport| {
        r.history
            .iter()
            .map(|h| (h.iter, h.loss, h.psnr_ema, h.psnr_sgld))
            .collect::<Vec<_>>()
    };
    assert_eq!(rows(a), rows(b));
    let (sa, sb) = (a.sgld.as_ref().unwrap(), b.sgld.as_ref().unwrap());
    assert!(sa.samples > 0);
    assert_eq!((sa.samples, &sa.mean.data), (sb.samples, &sb.mean.data));
}

#[test]
fn the_device_draws_standard_normals_that_differ_by_key() {
    let net = match tiny().builder::<f32>(64, 64) {
        Ok((b, out)) => b.build(out, 0, false),
        Err(e) => panic!("{e}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let mut g = match GpuNet::emulated(&net, dir.path()) {
        Ok(g) => g,
        Err(e) if e.0.contains("no host C++ compiler") => {
            eprintln!("SKIPPED: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let n = net.input().data.len();
    g.set_fixed_input(&vec![0.5; n]).unwrap();
    // The normals of `key`, from the input 0.5 + 2·N(0, 1).
    let mut draw = |key: u64| -> Vec<f64> {
        g.perturb_input(key, 2.0).unwrap();
        let x = g.input().unwrap().data;
        x.iter().map(|&v| (v as f64 - 0.5) / 2.0).collect()
    };
    let a = draw(noise_key(1, 1, 0));
    let b = draw(noise_key(1, 2, 0));
    let nf = n as f64;
    let mean = a.iter().sum::<f64>() / nf;
    let var = a.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / nf;
    let kurt = a.iter().map(|v| (v - mean).powi(4)).sum::<f64>() / nf / (var * var);
    let corr = a.iter().zip(&b).map(|(x, y)| x * y).sum::<f64>() / nf;
    // n = 16384: the standard errors are 1/√n ≈ 0.008 (mean, correlation), √(2/n) ≈ 0.011
    // (variance) and √(24/n) ≈ 0.04 (kurtosis); the bounds are 5 of them.
    assert!(mean.abs() < 0.04, "mean {mean}");
    assert!((var - 1.0).abs() < 0.055, "variance {var}");
    assert!((kurt - 3.0).abs() < 0.2, "kurtosis {kurt}");
    assert!(corr.abs() < 0.04, "two keys correlate: {corr}");
    // Tails: about 4.55 % beyond 2σ.
    let tail = a.iter().filter(|v| v.abs() > 2.0).count() as f64 / nf;
    assert!((tail - 0.0455).abs() < 0.008, "{tail}");
    assert_ne!(noise_key(1, 2, 0), noise_key(1, 2, 1));
    assert_ne!(noise_key(1, 2, 0), noise_key(2, 2, 0));
}

/// An operator known only by its `forward` and `adjoint`.
struct Opaque(Identity);

impl Operator for Opaque {
    fn input_shape(&self) -> (usize, usize, usize) {
        self.0.input_shape()
    }
    fn output_shape(&self) -> (usize, usize, usize) {
        self.0.output_shape()
    }
    fn forward(&self, x: &[f32], y: &mut [f32]) {
        self.0.forward(x, y)
    }
    fn adjoint(&self, gy: &[f32], gx: &mut [f32]) {
        self.0.adjoint(gy, gx)
    }
    fn name(&self) -> String {
        "opaque".into()
    }
}

#[test]
fn what_the_gpu_cannot_run_is_refused_clearly() {
    let (noisy, _) = images();
    let id = Identity::new(noisy.width, noisy.height, noisy.channels);
    // An operator of the user's own with neither a diagonal nor a sparse form.
    let e = gpu_fit(&noisy, &Opaque(id), None, &config(), &mut [])
        .unwrap()
        .unwrap_err();
    assert!(e.to_string().contains("not on the GPU yet"), "{e}");
    assert!(e.to_string().contains("--device cpu"), "{e}");
}

/// A learning rate far too high: the PSNR against the observation drops at a check, and both
/// backends go back to the last good state and halve the step the same number of times. (The
/// GPU reads the loss only at checks, so the moving average must be restored too: a rollback
/// to the first step once left it unset.)
#[test]
fn divergence_rolls_back_as_on_the_cpu() {
    let (noisy, clean) = images();
    let op = Identity::new(noisy.width, noisy.height, noisy.channels);
    for lr in [1.0, 3.0] {
        let cfg = FitConfig {
            iters: 30,
            lr,
            check_every: 2,
            ..config()
        };
        let Some(gpu) = gpu_fit(&noisy, &op, Some(&clean), &cfg, &mut []) else {
            return;
        };
        let gpu = gpu.unwrap();
        let cpu = fit(&noisy, &op, Some(&clean), tiny(), &cfg, &mut []).unwrap();
        assert!(
            cpu.rollbacks > 0,
            "lr {lr} does not diverge: no check of rollbacks"
        );
        assert_eq!((gpu.rollbacks, gpu.lr_final), (cpu.rollbacks, cpu.lr_final));
        assert!(gpu.output_ema.data.iter().all(|v| v.is_finite()));
        let p = gpu.psnr_final.unwrap();
        assert!(p > gpu.psnr_noisy.unwrap() - 10.0, "lr {lr}: {p} dB");
    }
}

/// A fit's steps replayed from its two captured graphs equal the same steps launched directly,
/// bit for bit: the step number (input noise, SGLD noise, the first step's copy into the
/// moving average) and the step size (halved at rollbacks, scaling SGLD's noise) are read on
/// the device, not fixed into the graphs at capture.
#[test]
fn a_fit_from_captured_graphs_is_the_directly_launched_fit() {
    let (noisy, clean) = images();
    let op = Identity::new(noisy.width, noisy.height, noisy.channels);
    let sgld = Some(SgldConfig {
        burn_in: 4,
        sample_every: 2,
        ..SgldConfig::for_iters(24)
    });
    let diverging = FitConfig {
        iters: 24,
        lr: 1.0,
        check_every: 2,
        reg_noise: 1.0 / 30.0,
        sgld,
        ..config()
    };
    // Lipschitz control in the second half, between Adam and SGLD's noise.
    let projected = FitConfig {
        iters: 24,
        reg_noise: 1.0 / 30.0,
        lipschitz: Some(0.5),
        sgld,
        ..config()
    };
    let emu = Emu::new();
    for (k, cfg) in [diverging, projected].iter().enumerate() {
        let captured = match fit_on_gpu(
            &noisy,
            &op,
            Some(&clean),
            &tiny(),
            cfg,
            &mut [],
            &mut emu.open(),
        ) {
            Err(e) if e.to_string().contains("no host C++ compiler") => {
                eprintln!("SKIPPED: {e}");
                return;
            }
            r => r.unwrap(),
        };
        let direct = fit_on_gpu(
            &noisy,
            &op,
            Some(&clean),
            &tiny(),
            cfg,
            &mut [],
            &mut emu.open_direct(),
        )
        .unwrap();
        if k == 0 {
            assert!(
                captured.rollbacks > 0,
                "no rollback: the step size was not varied"
            );
        }
        assert_eq!(
            (captured.rollbacks, captured.lr_final),
            (direct.rollbacks, direct.lr_final)
        );
        assert_same_fit(&captured, &direct);
    }

    // And the fit above did run from graphs: the emulation captures them.
    let net = match tiny().builder::<f32>(16, 16) {
        Ok((b, out)) => b.build(out, 0, false),
        Err(e) => panic!("{e}"),
    };
    let mut g = GpuNet::emulated(&net, emu.dir.path()).unwrap();
    g.prepare_fit(FitStep {
        seed: 1,
        reg_noise: 0.1,
        scale: 1.0,
        l1: false,
        weighted: false,
        ema: 0.9,
        adam: Default::default(),
        sgld: None,
        lipschitz: None,
    })
    .unwrap();
    assert!(g.fit_graphs(), "{:?}", g.graph_error());
}

/// `precision: bf16` runs the fit's GEMMs on (emulated) bf16 tensor cores: the result departs
/// from the f32 fit by about bf16's forward rounding (the reference tests measure 1.3e-2 of
/// the output's scale), not more, and not by nothing.
#[test]
fn a_bf16_fit_tracks_the_f32_fit() {
    let (noisy, clean) = images();
    let op = Identity::new(noisy.width, noisy.height, noisy.channels);
    let Some(f32_fit) = gpu_fit(&noisy, &op, Some(&clean), &config(), &mut []) else {
        return;
    };
    let f32_fit = f32_fit.unwrap();
    let cfg = FitConfig {
        precision: dip::engine::Precision::Bf16,
        ..config()
    };
    let emu = Emu::new();
    let mut open = |net: &Net<f32>, room: usize| {
        GpuNet::emulated_with(net, emu.dir.path(), dip::cuda::Precision::Bf16, room)
    };
    let bf16 = fit_on_gpu(&noisy, &op, Some(&clean), &tiny(), &cfg, &mut [], &mut open).unwrap();
    let d = max_diff(&bf16.output_raw.data, &f32_fit.output_raw.data);
    eprintln!("bf16 vs f32 output after 12 steps: {d:e}");
    assert!(d > 1e-4 && d < 5e-2, "bf16 vs f32 output: {d:e}");
}

/// The Monte Carlo prior of the GP view on the GPU: each sample's network (initialised on the
/// host from its seed) runs its forward on the device, several samples as lanes of one network,
/// and gives the CPU's output.
#[test]
fn prior_samples_on_the_gpu_are_the_cpu_samples() {
    use dip::gp::prior::{draw_outputs, draw_outputs_gpu};
    let emu = Emu::new();
    // Two lanes: the five samples run forward two, two and one at a time.
    let mut open = |net: &Net<f32>, lanes| {
        GpuNet::emulated_lanes(net, emu.dir.path(), dip::cuda::Precision::F32, 0, lanes)
    };
    let gpu = match draw_outputs_gpu(&tiny(), 16, 5, 7, 2, &mut open) {
        Err(e) if e.to_string().contains("no host C++ compiler") => {
            eprintln!("SKIPPED: {e}");
            return;
        }
        r => r.unwrap(),
    };
    let cpu = draw_outputs(&tiny(), 16, 5, 7).unwrap();
    assert_eq!(gpu.len(), 5);
    for (g, c) in gpu.iter().zip(&cpu) {
        let d = max_diff(g, c);
        assert!(d < 1e-5, "{d:e}");
    }
    assert!(max_diff(&cpu[0], &cpu[1]) > 1e-3, "the samples differ");
}

/// Whether the fits could not run for want of the emulation (and a note saying so).
fn no_emulation(fits: &[dip::Result<FitReport>]) -> bool {
    match fits.first() {
        Some(Err(e)) if e.to_string().contains("no host C++ compiler") => {
            eprintln!("SKIPPED: {e}");
            true
        }
        _ => false,
    }
}

/// A pool of `lanes` lanes on the host emulation, each network it makes compiling the kernels
/// in a folder of its own; and the count of networks made.
fn emulated_pool(
    lanes: usize,
) -> (
    tempfile::TempDir,
    Arc<dip::fit::LanePool>,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().to_path_buf();
    let made = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = made.clone();
    let pool = Arc::new(dip::fit::LanePool::new(
        lanes,
        Box::new(move |net: &Net<f32>, room, lanes, precision| {
            let dir = root.join(format!("net{}", count.fetch_add(1, Ordering::SeqCst)));
            std::fs::create_dir_all(&dir).map_err(|e| GpuError(e.to_string()))?;
            GpuNet::emulated_lanes(net, &dir, precision, room, lanes)
        }),
    ));
    (work, pool, made)
}

/// Fits sharing a batch ([`dip::fit::LanePool`]: one network of three lanes, each step one launch
/// sequence for all) are the fits each would be on a network of its own, bit for bit: five fits
/// on five threads with their own seeds, observations and step sizes, one rolling back (lr 1),
/// one stopping early (its lane then taken by the fourth fit, which waited for one), and one of
/// another image size (another layout: a network of its own).
#[test]
fn fits_in_lanes_are_the_fits_on_networks_of_their_own() {
    use dip::device::Device;
    let (noisy, clean) = images();
    let (_work, pool, made) = emulated_pool(3);
    let base = FitConfig {
        iters: 20,
        check_every: 2,
        reg_noise: 1.0 / 30.0,
        sgld: Some(SgldConfig {
            burn_in: 4,
            sample_every: 2,
            ..SgldConfig::for_iters(20)
        }),
        ..config()
    };
    let shifted = |img: &Image, by: f32| {
        Image::new(
            img.width,
            img.height,
            img.channels,
            img.data.iter().map(|v| v + by).collect(),
        )
    };
    let crop = |img: &Image| {
        let (w, h, c) = (10, 9, img.channels);
        let data = (0..h)
            .flat_map(|y| (0..w * c).map(move |i| (y, i)))
            .map(|(y, i)| img.data[y * img.width * c + i])
            .collect();
        Image::new(w, h, c, data)
    };
    let fits: Vec<(Image, Image, FitConfig)> = vec![
        (
            noisy.clone(),
            clean.clone(),
            FitConfig {
                lr: 1.0,
                seed: 1,
                ..base.clone()
            },
        ),
        (
            shifted(&noisy, 0.02),
            clean.clone(),
            FitConfig {
                seed: 2,
                ..base.clone()
            },
        ),
        (
            shifted(&noisy, -0.03),
            clean.clone(),
            FitConfig {
                seed: 3,
                iters: 7,
                lr: 0.003,
                ..base.clone()
            },
        ),
        (
            shifted(&noisy, 0.01),
            clean.clone(),
            FitConfig {
                seed: 4,
                ..base.clone()
            },
        ),
        (
            crop(&noisy),
            crop(&clean),
            FitConfig {
                seed: 5,
                ..base.clone()
            },
        ),
    ];
    let in_lanes: Vec<dip::Result<FitReport>> = std::thread::scope(|s| {
        let handles: Vec<_> = fits
            .iter()
            .map(|(obs, clean, cfg)| {
                let cfg = FitConfig {
                    device: Device::Cuda(0),
                    lanes: Some(pool.clone()),
                    ..cfg.clone()
                };
                let pool = pool.clone();
                s.spawn(move || {
                    if obs.width != noisy.width {
                        // The other layout comes while the batch's lanes are all held.
                        let t = std::time::Instant::now();
                        while pool.held() < 3 && t.elapsed().as_secs() < 60 {
                            std::thread::sleep(std::time::Duration::from_millis(1));
                        }
                    }
                    let op = Identity::new(obs.width, obs.height, obs.channels);
                    fit(obs, &op, Some(clean), tiny(), &cfg, &mut [])
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    if no_emulation(&in_lanes) {
        return;
    }
    for (k, ((obs, clean, cfg), lanes)) in fits.iter().zip(in_lanes).enumerate() {
        let lanes = lanes.unwrap_or_else(|e| panic!("fit {k}: {e}"));
        let op = Identity::new(obs.width, obs.height, obs.channels);
        let own = gpu_fit(obs, &op, Some(clean), cfg, &mut [])
            .unwrap()
            .unwrap();
        assert_eq!(lanes.iterations_run, cfg.iters, "fit {k}");
        assert_eq!(
            (lanes.rollbacks, lanes.lr_final),
            (own.rollbacks, own.lr_final),
            "fit {k}"
        );
        assert_same_fit(&lanes, &own);
        if k == 0 {
            assert!(lanes.rollbacks > 0, "no rollback in the diverging fit");
        }
    }
    // One batch of three lanes for the four fits of one layout, and a network of its own for
    // the other.
    assert_eq!(made.load(Ordering::SeqCst), 2);
    assert_eq!(pool.fits_in_lanes(), 4);
}

/// Lanes with the per-lane parts of a step the identity does not have: a sparse operator's
/// tables (a blur; each lane its own observation), a batch of pixels drawn per fit and sent as
/// that lane's weights, and Lipschitz control projecting each lane's weights on the device (its
/// power vectors per lane). Two fits in a pool of two equal the same fits on networks of their
/// own, bit for bit.
#[test]
fn lanes_with_a_sparse_operator_pixel_batches_and_lipschitz_control() {
    use dip::device::Device;
    let (noisy, clean) = images();
    let op = Blur::new(Psf::gaussian(1.2, 5).unwrap(), noisy.width, noisy.height, 3).unwrap();
    let (_work, pool, _) = emulated_pool(2);
    let cfg = |seed: u64| FitConfig {
        seed,
        iters: 10,
        pixel_batch: Some(40),
        lipschitz: Some(0.8),
        reg_noise: 1.0 / 30.0,
        ..config()
    };
    let observations: Vec<Image> = (0..2)
        .map(|k| {
            let shifted = Image::new(
                noisy.width,
                noisy.height,
                3,
                noisy.data.iter().map(|v| v + 0.02 * k as f32).collect(),
            );
            op.apply(&shifted).unwrap()
        })
        .collect();
    let in_lanes: Vec<dip::Result<FitReport>> = std::thread::scope(|s| {
        let handles: Vec<_> = observations
            .iter()
            .enumerate()
            .map(|(k, obs)| {
                let cfg = FitConfig {
                    device: Device::Cuda(0),
                    lanes: Some(pool.clone()),
                    ..cfg(10 + k as u64)
                };
                let (op, clean) = (&op, &clean);
                s.spawn(move || fit(obs, op, Some(clean), tiny(), &cfg, &mut []))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    if no_emulation(&in_lanes) {
        return;
    }
    for (k, (obs, lanes)) in observations.iter().zip(in_lanes).enumerate() {
        let lanes = lanes.unwrap_or_else(|e| panic!("fit {k}: {e}"));
        let own = gpu_fit(obs, &op, Some(&clean), &cfg(10 + k as u64), &mut [])
            .unwrap()
            .unwrap();
        assert_eq!(lanes.output_raw.data, own.output_raw.data, "fit {k}");
        assert_eq!(lanes.output_ema.data, own.output_ema.data, "fit {k}");
    }
    assert_eq!(pool.fits_in_lanes(), 2);
}

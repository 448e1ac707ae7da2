//! Checkpoints: a fit stopped at step k and resumed equals an uninterrupted fit, bit for bit;
//! the file round-trips and bad files are refused with a clear message.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use dip::fit::{
    CheckpointSink, Control, FitConfig, FitReport, FitState, SgldConfig, StepInfo, fit_denoise,
};
use dip::image::Image;
use dip::nets::{Arch, SkipSpec};

fn tiny() -> Arch {
    let mut s = SkipSpec::uniform(4, 1, 2, 8, 2);
    s.need_1x1_up = false;
    Arch::Skip(s)
}

fn image() -> (Image, Image) {
    let (w, h) = (16, 16);
    let clean: Vec<f32> = (0..w * h)
        .map(|i| 0.3 + 0.4 * ((i % w) as f32 / w as f32) * ((i / w) as f32 / h as f32))
        .collect();
    let noisy: Vec<f32> = clean
        .iter()
        .enumerate()
        .map(|(i, v)| v + 0.1 * (((i * 7919) % 97) as f32 / 97.0 - 0.5))
        .collect();
    (Image::new(w, h, 1, noisy), Image::new(w, h, 1, clean))
}

fn config(sgld: bool) -> FitConfig {
    FitConfig {
        iters: 60,
        seed: 3,
        observe_every: 5,
        sgld: sgld.then_some(SgldConfig {
            burn_in: 10,
            sample_every: 5,
            ..SgldConfig::for_iters(60)
        }),
        ..FitConfig::default()
    }
}

/// Fits to the end, or (with `stop_at`) cancels after that step and returns the checkpoint.
fn run(cfg: FitConfig, stop_at: Option<usize>) -> (FitReport, Option<FitState>) {
    let (noisy, clean) = image();
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
    let report = fit_denoise(&noisy, Some(&clean), tiny(), &cfg, &mut [&mut stopper]).unwrap();
    let state = saved.lock().unwrap().take();
    (report, state)
}

fn check_resume(sgld: bool) {
    let (full, none) = run(config(sgld), None);
    assert!(
        none.is_none(),
        "no checkpoint is due in an uninterrupted run"
    );
    let (cut, state) = run(config(sgld), Some(25));
    assert!(cut.interrupted);
    let state = state.expect("a cancelled fit writes its checkpoint");
    assert_eq!(
        state.step, 26,
        "cancelled after the step following the request"
    );
    // Through the file format, as `dip resume` reads it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    state.save(&path).unwrap();
    let loaded = FitState::load(&path).unwrap();
    assert_eq!(loaded, state);
    let (resumed, _) = run(
        FitConfig {
            resume: Some(Arc::new(loaded)),
            ..config(sgld)
        },
        None,
    );
    assert!(!resumed.interrupted);
    assert_eq!(resumed.iterations_run, full.iterations_run);
    assert_eq!(resumed.output_raw.data, full.output_raw.data);
    assert_eq!(resumed.output_ema.data, full.output_ema.data);
    assert_eq!(resumed.psnr_best, full.psnr_best);
    assert_eq!(resumed.iter_best, full.iter_best);
    let rows = |r: &FitReport| {
        r.history
            .iter()
            .map(|h| (h.iter, h.loss, h.psnr_ema, h.psnr_sgld))
            .collect::<Vec<_>>()
    };
    assert_eq!(rows(&resumed), rows(&full));
    if sgld {
        let (a, b) = (resumed.sgld.unwrap(), full.sgld.unwrap());
        assert_eq!(a.samples, b.samples);
        assert_eq!(a.mean.data, b.mean.data);
        assert_eq!(a.std.data, b.std.data);
    }
}

#[test]
fn a_resumed_fit_equals_an_uninterrupted_one() {
    check_resume(false);
}

#[test]
fn a_resumed_sgld_fit_equals_an_uninterrupted_one() {
    check_resume(true);
}

#[test]
fn a_checkpoint_of_another_network_is_refused() {
    let (_, state) = run(config(false), Some(10));
    let mut state = state.unwrap();
    state.params.pop();
    state.adam_m.pop();
    state.adam_v.pop();
    if let Some(s) = &mut state.snapshot {
        s.params.pop();
        s.adam_m.pop();
        s.adam_v.pop();
    }
    let (noisy, _) = image();
    let cfg = FitConfig {
        resume: Some(Arc::new(state)),
        ..config(false)
    };
    let err = fit_denoise(&noisy, None, tiny(), &cfg, &mut [])
        .unwrap_err()
        .to_string();
    assert!(err.contains("another network"), "{err}");
}

#[test]
fn damaged_checkpoint_files_are_refused_with_a_reason() {
    let (_, state) = run(config(false), Some(10));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.ckpt");
    state.unwrap().save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (bytes[..bytes.len() - 3].to_vec(), "truncated"),
        (b"PNG\x89garbage-and-more".to_vec(), "not a dip checkpoint"),
        (
            {
                let mut b = bytes.clone();
                b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
                b
            },
            "bad header length",
        ),
        (
            {
                let mut b = bytes.clone();
                b[20] = b'#';
                b
            },
            "header is corrupt",
        ),
        (Vec::new(), "not a dip checkpoint"),
    ];
    for (i, (b, want)) in cases.iter().enumerate() {
        let p = dir.path().join(format!("bad{i}.ckpt"));
        std::fs::write(&p, b).unwrap();
        let err = FitState::load(&p).unwrap_err().to_string();
        assert!(err.contains(want), "case {i}: {err}");
        assert!(
            err.contains(&format!("bad{i}.ckpt")),
            "case {i} names the file: {err}"
        );
    }
    let err = FitState::load(&dir.path().join("missing.ckpt"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing.ckpt") && err.contains("cannot read"),
        "{err}"
    );
}

/// A rule that watches the whole fit without ending it (as the stopping experiment runs them),
/// and saves its state (with whether it has asked to stop) in checkpoints.
struct Watch(Box<dyn dip::fit::StopRule>, bool);

impl dip::fit::Observer for Watch {
    fn observe(&mut self, info: &StepInfo<'_>) -> Control {
        if !self.1 && self.0.observe(info) == Control::Stop {
            self.1 = true;
        }
        Control::Continue
    }
    fn save_state(&self) -> Option<dip::fit::ObserverState> {
        let mut s = self.0.save_state()?;
        s.meta["asked"] = serde_json::json!(self.1);
        Some(s)
    }
    fn load_state(&mut self, s: &dip::fit::ObserverState) -> dip::Result<()> {
        self.1 = s.meta["asked"].as_bool().unwrap_or(false);
        self.0.load_state(s)
    }
}

/// Each rule's choice: its step and image.
type Choices = Vec<Option<(usize, Vec<f32>)>>;

/// Fits with the stopping rules watching, cancelled at `stop_at` or resumed from `resume`;
/// returns each rule's choice and the checkpoint.
fn run_with_rules(stop_at: Option<usize>, resume: Option<FitState>) -> (Choices, Option<FitState>) {
    use dip::fit::{StopConfig, StopKind, make_rule};
    let (noisy, clean) = image();
    let kinds = [
        StopKind::Auto,
        StopKind::Wmv,
        StopKind::Emv,
        StopKind::Fixed,
    ];
    let cfg_stop = StopConfig {
        window: 20,
        patience: 1000,
        sigma: Some(0.05),
        auto_delay: Some(10),
        ..StopConfig::default()
    };
    let mut rules: Vec<_> = kinds
        .iter()
        .map(|&k| make_rule(k, &cfg_stop, &noisy, true).unwrap())
        .collect();
    let saved: Arc<Mutex<Option<FitState>>> = Arc::new(Mutex::new(None));
    let cancel = Arc::new(AtomicBool::new(false));
    let sink = saved.clone();
    let cfg = FitConfig {
        cancel: Some(cancel.clone()),
        resume: resume.map(Arc::new),
        checkpoint: Some(CheckpointSink {
            every_steps: None,
            every_seconds: 1e9,
            meta: serde_json::json!({}),
            write: Arc::new(move |s: &FitState| *sink.lock().unwrap() = Some(s.clone())),
        }),
        ..config(false)
    };
    let mut stopper = |info: &StepInfo<'_>| {
        if stop_at.is_some_and(|k| info.iter >= k) {
            cancel.store(true, Ordering::SeqCst);
        }
        Control::Continue
    };
    let mut watches: Vec<Watch> = rules.drain(..).map(|r| Watch(r, false)).collect();
    let mut observers: Vec<&mut dyn dip::fit::Observer> = vec![&mut stopper];
    for w in watches.iter_mut() {
        observers.push(w);
    }
    fit_denoise(&noisy, Some(&clean), tiny(), &cfg, &mut observers).unwrap();
    drop(observers);
    let chosen = watches
        .iter()
        .map(|w| w.0.chosen().map(|c| (c.step, c.image.data.clone())))
        .collect();
    let state = saved.lock().unwrap().take();
    (chosen, state)
}

#[test]
fn stopping_rules_resume_to_the_same_choice() {
    let (full, _) = run_with_rules(None, None);
    let steps: Vec<Option<usize>> = full.iter().map(|c| c.as_ref().map(|c| c.0)).collect();
    assert!(
        steps[1].is_some() && steps[2].is_some() && steps[3].is_some(),
        "the variance rules and fixed chose a step: {steps:?}"
    );
    let (_, state) = run_with_rules(Some(33), None);
    let state = state.expect("a checkpoint at the cancel");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.ckpt");
    state.save(&path).unwrap();
    let loaded = FitState::load(&path).unwrap();
    assert_eq!(loaded, state);
    assert!(loaded.observers.iter().skip(1).all(|o| o.is_some()));
    let (resumed, _) = run_with_rules(None, Some(loaded));
    for (i, (a, b)) in resumed.iter().zip(&full).enumerate() {
        assert_eq!(a, b, "rule {i} chose differently after the resume");
    }
}

#[test]
fn a_damaged_byte_fails_the_checksum_and_first_format_files_still_load() {
    let (_, state) = run(config(false), Some(10));
    let state = state.unwrap();
    let bytes = state.to_bytes().unwrap();
    assert_eq!(&bytes[..8], b"DIPCKPT2");
    assert_eq!(FitState::from_bytes(&bytes).unwrap(), state);
    let head = u64::from_le_bytes(bytes[8..16].try_into().unwrap()) as usize;
    // One bit of the parameters.
    let mut b = bytes.clone();
    b[16 + head + 5] ^= 0x10;
    let err = FitState::from_bytes(&b).unwrap_err();
    assert!(err.contains("checksum does not match"), "{err}");
    // One digit of the header: still valid JSON, but not what was written.
    let mut b = bytes.clone();
    let at = b.windows(7).position(|w| w == b"\"step\":").unwrap() + 7;
    b[at] = if b[at] == b'1' { b'2' } else { b'1' };
    let err = FitState::from_bytes(&b).unwrap_err();
    assert!(err.contains("checksum does not match"), "{err}");
    // The first format: its own signature and no checksum.
    let mut v1 = bytes[..bytes.len() - 8].to_vec();
    v1[..8].copy_from_slice(b"DIPCKPT1");
    assert_eq!(FitState::from_bytes(&v1).unwrap(), state);
}

#[test]
fn counters_beyond_any_run_are_refused() {
    let (_, state) = run(config(false), Some(10));
    let bytes = state.unwrap().to_bytes().unwrap();
    let head = u64::from_le_bytes(bytes[8..16].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[16..16 + head]).unwrap();
    for (key, value) in [("step", 1u64 << 41), ("adam_t", u64::MAX)] {
        let mut h = header.clone();
        h[key] = serde_json::json!(value);
        let text = serde_json::to_vec(&h).unwrap();
        // The first format (no checksum), so that the edit is read, not caught by the checksum.
        let mut b = b"DIPCKPT1".to_vec();
        b.extend((text.len() as u64).to_le_bytes());
        b.extend(&text);
        b.extend(&bytes[16 + head..bytes.len() - 8]);
        let err = FitState::from_bytes(&b).unwrap_err();
        assert!(err.contains("beyond any run"), "{key}: {err}");
    }
    // The unedited header, re-encoded the same way, loads.
    let text = serde_json::to_vec(&header).unwrap();
    let mut b = b"DIPCKPT1".to_vec();
    b.extend((text.len() as u64).to_le_bytes());
    b.extend(&text);
    b.extend(&bytes[16 + head..bytes.len() - 8]);
    assert!(FitState::from_bytes(&b).is_ok());
}

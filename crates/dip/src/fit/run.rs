//! The loop itself.

use serde::{Deserialize, Serialize};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use rand_pcg::Pcg64Mcg;
use rayon::prelude::*;

use super::observer::{Control, Observer, StepInfo};
use crate::engine::{Adam, AdamConfig, Net};
use crate::image::{self, Image, Padding};
use crate::metrics::psnr;
use crate::nets::SkipSpec;
use crate::{Error, Result};

/// Settings of a fit. Defaults are the reference denoising recipe.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FitConfig {
    pub iters: usize,
    pub lr: f64,
    /// Std of the Gaussian perturbation added to the network input each step.
    pub reg_noise: f64,
    /// Weight of the output exponential moving average.
    pub ema: f64,
    pub seed: u64,
    /// Observers and the history run every this many steps (and at the last step).
    pub observe_every: usize,
    /// Divergence check interval: a PSNR drop of more than 5 dB against the observation since the
    /// previous check restores the parameters and Adam state saved then.
    pub check_every: usize,
    /// Set from elsewhere (a signal handler) to end the run after the current step; the report
    /// then says `interrupted` and holds everything up to that step.
    #[serde(skip)]
    pub cancel: Option<Arc<AtomicBool>>,
}

impl Default for FitConfig {
    fn default() -> Self {
        FitConfig {
            iters: 3000,
            lr: 0.01,
            reg_noise: 1.0 / 30.0,
            ema: 0.99,
            seed: 0,
            observe_every: 50,
            check_every: 10,
            cancel: None,
        }
    }
}

/// One row of the history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryRow {
    pub iter: usize,
    pub loss: f64,
    pub psnr_raw: Option<f64>,
    pub psnr_ema: Option<f64>,
}

/// What a fit returns.
#[derive(Debug, Clone, Serialize)]
pub struct FitReport {
    pub psnr_noisy: Option<f64>,
    pub psnr_final: Option<f64>,
    /// Best PSNR of the EMA output over the observed steps, and where it was.
    pub psnr_best: Option<f64>,
    pub iter_best: Option<usize>,
    /// Best PSNR of the raw output over the observed steps.
    pub psnr_best_raw: Option<f64>,
    pub iterations_run: usize,
    pub seconds: f64,
    pub seed: u64,
    pub parameters: usize,
    pub rollbacks: usize,
    /// The run was cancelled (see [`FitConfig::cancel`]) before its last step.
    pub interrupted: bool,
    pub history: Vec<HistoryRow>,
    /// The EMA image, cropped to the observation size.
    #[serde(skip)]
    pub output_ema: Image,
    /// The last raw output.
    #[serde(skip)]
    pub output_raw: Image,
}

impl FitConfig {
    /// Rejects settings that cannot give a meaningful fit.
    pub fn validate(&self) -> Result<()> {
        if self.iters == 0 {
            return Err(Error::invalid("--iters must be at least 1"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::invalid(format!(
                "--lr must be a positive number, got {}",
                self.lr
            )));
        }
        if !(self.reg_noise.is_finite() && self.reg_noise >= 0.0) {
            return Err(Error::invalid(format!(
                "--reg-noise must be zero or positive, got {}",
                self.reg_noise
            )));
        }
        if !(0.0..1.0).contains(&self.ema) {
            return Err(Error::invalid(format!(
                "--ema must be in [0, 1), got {}",
                self.ema
            )));
        }
        if self.observe_every == 0 || self.check_every == 0 {
            return Err(Error::invalid(
                "observation and check intervals must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Elements per independent stream of the input perturbation: chunks are drawn in parallel from
/// generators seeded by (seed, step, chunk), so the result does not depend on the thread count.
const NOISE_CHUNK: usize = 1 << 16;

/// Pads `img` by reflection to what `spec` accepts: sides a multiple of 2^scales and at least
/// the network's minimum.
fn pad_for_network(img: &Image, spec: &SkipSpec) -> (Image, Padding) {
    let m = spec.size_multiple();
    let side = |n: usize| n.div_ceil(m).max(1) * m;
    let min = spec.min_side();
    image::pad_reflect_to(img, side(img.width).max(min), side(img.height).max(min))
}

/// The state of the loop that a divergence rollback restores.
struct Snapshot {
    params: Vec<f32>,
    adam: Adam<f32>,
    psnr_obs: f64,
}

/// Mean squared error over the observed region (the padding carries no observation), and its
/// gradient with respect to the output written into `grad` (zero outside the region).
fn masked_mse(out: &[f32], target: &[f32], valid: &[bool], grad: &mut [f32], count: usize) -> f64 {
    let scale = 2.0 / count as f32;
    let mut loss = 0.0f64;
    for (((g, &o), &t), &v) in grad.iter_mut().zip(out).zip(target).zip(valid) {
        if v {
            let d = o - t;
            loss += (d as f64) * (d as f64);
            *g = d * scale;
        } else {
            *g = 0.0;
        }
    }
    loss / count as f64
}

/// Denoise `noisy` with the Deep Image Prior.
///
/// `clean`, when given, is used only for reporting PSNR. Images of any size are padded by
/// reflection to the size the network needs; the loss covers only the original pixels, and the
/// returned images are cropped back.
pub fn fit_denoise(
    noisy: &Image,
    clean: Option<&Image>,
    spec: &SkipSpec,
    cfg: &FitConfig,
    observers: &mut [&mut dyn Observer],
) -> Result<FitReport> {
    // The loop runs on a pool thread: parallel work spawned from there goes to the thread's own
    // queue instead of rayon's global one, which is cheaper and allocates nothing.
    rayon::scope(|_| fit_denoise_on_pool(noisy, clean, spec, cfg, observers))
}

fn fit_denoise_on_pool(
    noisy: &Image,
    clean: Option<&Image>,
    spec: &SkipSpec,
    cfg: &FitConfig,
    observers: &mut [&mut dyn Observer],
) -> Result<FitReport> {
    cfg.validate()?;
    if noisy.width == 0 || noisy.height == 0 {
        return Err(Error::invalid("the observation is empty"));
    }
    if spec.out_channels != noisy.channels {
        return Err(Error::invalid(format!(
            "the network outputs {} channels but the observation has {}",
            spec.out_channels, noisy.channels
        )));
    }
    if let Some(c) = clean
        && (c.width, c.height, c.channels) != (noisy.width, noisy.height, noisy.channels)
    {
        return Err(Error::invalid(format!(
            "the clean image is {}x{}x{} but the observation is {}x{}x{}",
            c.width, c.height, c.channels, noisy.width, noisy.height, noisy.channels
        )));
    }
    let started = Instant::now();
    let (obs, pad) = pad_for_network(noisy, spec);
    let (h, w, c) = (obs.height, obs.width, obs.channels);
    let mut net: Net<f32> = spec.build(h, w, cfg.seed)?;

    // Which padded elements carry an observation.
    let mut valid = vec![false; h * w * c];
    for y in pad.top..pad.top + noisy.height {
        valid[(y * w + pad.left) * c..(y * w + pad.left + noisy.width) * c].fill(true);
    }
    let count = noisy.data.len();

    // The fixed input: uniform noise in [0, 0.1), as the reference.
    let mut rng = Pcg64Mcg::seed_from_u64(cfg.seed.wrapping_add(0x9E37_79B9_7F4A_7C15));
    let z: Vec<f32> = (0..net.input().len())
        .map(|_| rng.random::<f32>() * 0.1)
        .collect();
    net.input_mut().data.copy_from_slice(&z);

    let mut adam = Adam::new(
        net.num_params(),
        AdamConfig {
            lr: cfg.lr,
            ..AdamConfig::default()
        },
    );
    let mut ema = vec![0.0f32; h * w * c];
    let mut snapshot: Option<Snapshot> = None;
    let mut out_img = Image::zeros(noisy.width, noisy.height, c);
    let mut ema_img = out_img.clone();
    let mut history = Vec::new();
    let (mut psnr_best, mut iter_best, mut psnr_best_raw) = (None::<f64>, None, None::<f64>);
    let mut rollbacks = 0;
    let mut failures_in_a_row = 0;
    let mut iterations_run = 0;
    let mut interrupted = false;
    // Whether the network holds the output of the last accepted step (not of a rolled-back one).
    let mut raw_is_current = false;
    let cancelled = || {
        cfg.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
    };

    for it in 1..=cfg.iters {
        // Input perturbation: z + N(0, reg_noise²), fresh each step.
        if cfg.reg_noise > 0.0 {
            let sd = cfg.reg_noise as f32;
            let seed = cfg.seed;
            net.input_mut()
                .data
                .par_chunks_mut(NOISE_CHUNK)
                .zip(z.par_chunks(NOISE_CHUNK))
                .enumerate()
                .for_each(|(ci, (dst, src))| {
                    let mut r = Pcg64Mcg::seed_from_u64(
                        seed ^ ((it as u64) << 32)
                            ^ (ci as u64).wrapping_mul(0xD1B5_4A32_D192_ED03),
                    );
                    for (d, &s) in dst.iter_mut().zip(src) {
                        let n: f32 = r.sample(StandardNormal);
                        *d = s + sd * n;
                    }
                });
        }
        net.forward();
        let (out, grad) = net.output_and_grad();
        let loss = masked_mse(&out.data, &obs.data, &valid, &mut grad.data, count);
        iterations_run = it;

        // Divergence: a non-finite loss, or (at checks) a PSNR drop of more than 5 dB against the
        // observation, restores the last good parameters and Adam state.
        let check = it % cfg.check_every == 0 || it == 1;
        let psnr_obs = if check && loss.is_finite() {
            Some(-10.0 * loss.log10())
        } else {
            None
        };
        let diverged = !loss.is_finite()
            || matches!((psnr_obs, &snapshot), (Some(p), Some(s)) if p < s.psnr_obs - 5.0);
        if diverged {
            let Some(s) = &snapshot else {
                return Err(Error::Diverged(format!(
                    "the loss is {loss} at step {it}, before any good state to go back to"
                )));
            };
            failures_in_a_row += 1;
            rollbacks += 1;
            if failures_in_a_row >= 3 {
                return Err(Error::Diverged(format!(
                    "the fit diverged 3 times in a row (last at step {it})"
                )));
            }
            net.params_mut().copy_from_slice(&s.params);
            adam.clone_from(&s.adam);
            raw_is_current = false;
            continue;
        }
        if let Some(p) = psnr_obs {
            failures_in_a_row = 0;
            match &mut snapshot {
                Some(s) => {
                    s.params.copy_from_slice(net.params());
                    s.adam.clone_from(&adam);
                    s.psnr_obs = p;
                }
                None => {
                    snapshot = Some(Snapshot {
                        params: net.params().to_vec(),
                        adam: adam.clone(),
                        psnr_obs: p,
                    })
                }
            }
        }

        net.backward();
        let out = &net.output().data;
        if it == 1 {
            ema.copy_from_slice(out);
        } else {
            let (a, b) = (cfg.ema as f32, 1.0 - cfg.ema as f32);
            ema.iter_mut()
                .zip(out)
                .for_each(|(e, &o)| *e = a * *e + b * o);
        }
        let (params, grads) = net.params_and_grads();
        adam.step(params, grads);
        // The output of this accepted step stays in the network until the next forward.
        raw_is_current = true;

        let cancel = cancelled() && it < cfg.iters;
        if it % cfg.observe_every == 0 || it == cfg.iters || cancel {
            crop_into(&net.output().data, w, c, &pad, &mut out_img);
            crop_into(&ema, w, c, &pad, &mut ema_img);
            let psnr_raw = clean.map(|c| psnr(&out_img.data, &c.data));
            let psnr_ema = clean.map(|c| psnr(&ema_img.data, &c.data));
            if let Some(p) = psnr_ema
                && psnr_best.is_none_or(|b| p > b)
            {
                psnr_best = Some(p);
                iter_best = Some(it);
            }
            if let Some(p) = psnr_raw {
                psnr_best_raw = Some(psnr_best_raw.map_or(p, |b: f64| b.max(p)));
            }
            history.push(HistoryRow {
                iter: it,
                loss,
                psnr_raw,
                psnr_ema,
            });
            let info = StepInfo {
                iter: it,
                loss,
                output: &out_img,
                ema: &ema_img,
                psnr_raw,
                psnr_ema,
            };
            let mut stop = false;
            for o in observers.iter_mut() {
                stop |= o.observe(&info) == Control::Stop;
            }
            if stop {
                break;
            }
        }
        if cancel {
            interrupted = true;
            break;
        }
    }
    if raw_is_current {
        crop_into(&net.output().data, w, c, &pad, &mut out_img);
    }
    crop_into(&ema, w, c, &pad, &mut ema_img);
    let bit_depth = noisy.bit_depth;
    Ok(FitReport {
        psnr_noisy: clean.map(|c| psnr(&noisy.data, &c.data)),
        psnr_final: clean.map(|c| psnr(&ema_img.data, &c.data)),
        psnr_best,
        iter_best,
        psnr_best_raw,
        iterations_run,
        seconds: started.elapsed().as_secs_f64(),
        seed: cfg.seed,
        parameters: net.num_params(),
        rollbacks,
        interrupted,
        history,
        output_ema: ema_img.with_bit_depth(bit_depth),
        output_raw: out_img.with_bit_depth(bit_depth),
    })
}

/// Copies the unpadded region of a padded HWC buffer (row width `w`) into `dst`.
fn crop_into(src: &[f32], w: usize, c: usize, pad: &Padding, dst: &mut Image) {
    let row = dst.width * c;
    for (y, d) in dst.data.chunks_exact_mut(row).enumerate() {
        let s = ((y + pad.top) * w + pad.left) * c;
        d.copy_from_slice(&src[s..s + row]);
    }
}

//! Checkpoints: everything a fit needs to continue exactly where it stopped.
//!
//! The loop's randomness is stateless (the input perturbation, pixel batches and SGLD noise of
//! step `t` are drawn from generators seeded by the seed and `t`), so a checkpoint holds no RNG
//! state: the parameters, Adam's moments and step count, the learning rate, the output EMA, the
//! divergence snapshot, the counters, the history and bests, the SGLD sums, and each observer's
//! own state. A fit resumed from the checkpoint of step `k` then computes steps `k+1…` exactly
//! as an uninterrupted fit would, bit for bit.
//!
//! The file: the 8 bytes `DIPCKPT2`, the length of a JSON header as a little-endian `u64`, the
//! header (metadata, scalars, history, and the name and length of each array), the arrays as
//! little-endian `f32` or `f64`, in the header's order, and last a checksum of everything before
//! it (64-bit FNV-1a, little-endian). It is written to a temporary file and renamed, so a
//! checkpoint on disk is always whole; the checksum catches a file damaged after that. Files of
//! the first format (`DIPCKPT1`, the same without the checksum) are still read.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::observer::ObserverState;
use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"DIPCKPT2";
/// The first format: no checksum.
const MAGIC_V1: &[u8; 8] = b"DIPCKPT1";
/// Header sizes above this are refused before allocating (a real header is kilobytes).
const MAX_HEADER: u64 = 256 << 20;

/// The divergence snapshot: the last good parameters and Adam state.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotState {
    pub params: Vec<f32>,
    pub adam_m: Vec<f32>,
    pub adam_v: Vec<f32>,
    pub adam_t: u64,
    pub adam_lr: f64,
    pub psnr_obs: f64,
}

/// The largest step count a checkpoint may hold: far beyond any fit, far below overflow.
const MAX_COUNTER: u64 = 1 << 40;

/// The state of a fit after `step` accepted steps.
#[derive(Debug, Clone, PartialEq)]
pub struct FitState {
    /// What produced it (command, settings, network); checked and used by the caller.
    pub meta: Value,
    pub step: usize,
    pub params: Vec<f32>,
    pub adam_m: Vec<f32>,
    pub adam_v: Vec<f32>,
    pub adam_t: u64,
    pub lr: f64,
    pub ema: Vec<f32>,
    pub snapshot: Option<SnapshotState>,
    pub rollbacks: usize,
    pub failures_in_a_row: usize,
    /// Whether the network held the output of the last accepted step.
    pub raw_is_current: bool,
    pub history: Vec<HistoryRow>,
    pub psnr_best: Option<f64>,
    pub iter_best: Option<usize>,
    pub psnr_best_raw: Option<f64>,
    pub sgld_sum: Vec<f64>,
    pub sgld_sq: Vec<f64>,
    pub sgld_samples: usize,
    /// Seconds the fit had run.
    pub seconds: f64,
    /// Each observer's state, in the order the fit was given them.
    pub observers: Vec<Option<ObserverState>>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    version: u32,
    meta: Value,
    step: usize,
    adam_t: u64,
    lr: f64,
    snapshot: Option<(u64, f64, f64)>,
    rollbacks: usize,
    failures_in_a_row: usize,
    raw_is_current: bool,
    history: Vec<HistoryRow>,
    psnr_best: Option<f64>,
    iter_best: Option<usize>,
    psnr_best_raw: Option<f64>,
    sgld_samples: usize,
    seconds: f64,
    /// Each observer's JSON state and how many arrays it has (`obs<i>_<k>`).
    observers: Vec<Option<(Value, usize)>>,
    /// `(name, element size in bytes, length)` of each array, in file order.
    arrays: Vec<(String, usize, usize)>,
}

enum Arr<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
}

impl FitState {
    fn arrays(&self) -> Vec<(String, Arr<'_>)> {
        let mut a: Vec<(String, Arr<'_>)> = vec![
            ("params".into(), Arr::F32(&self.params)),
            ("adam_m".into(), Arr::F32(&self.adam_m)),
            ("adam_v".into(), Arr::F32(&self.adam_v)),
            ("ema".into(), Arr::F32(&self.ema)),
            ("sgld_sum".into(), Arr::F64(&self.sgld_sum)),
            ("sgld_sq".into(), Arr::F64(&self.sgld_sq)),
        ];
        if let Some(s) = &self.snapshot {
            a.push(("snap_params".into(), Arr::F32(&s.params)));
            a.push(("snap_m".into(), Arr::F32(&s.adam_m)));
            a.push(("snap_v".into(), Arr::F32(&s.adam_v)));
        }
        for (i, o) in self.observers.iter().enumerate() {
            for (k, arr) in o.iter().flat_map(|o| o.arrays.iter().enumerate()) {
                a.push((format!("obs{i}_{k}"), Arr::F64(arr)));
            }
        }
        a
    }

    /// Writes the checkpoint to `path`, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = self.to_bytes().map_err(|m| Error::file(path, m))?;
        crate::image::write_atomic(path, &bytes)
    }

    /// The checkpoint file's bytes.
    pub fn to_bytes(&self) -> std::result::Result<Vec<u8>, String> {
        let arrays = self.arrays();
        let header = Header {
            version: 1,
            meta: self.meta.clone(),
            step: self.step,
            adam_t: self.adam_t,
            lr: self.lr,
            snapshot: self
                .snapshot
                .as_ref()
                .map(|s| (s.adam_t, s.adam_lr, s.psnr_obs)),
            rollbacks: self.rollbacks,
            failures_in_a_row: self.failures_in_a_row,
            raw_is_current: self.raw_is_current,
            history: self.history.clone(),
            psnr_best: self.psnr_best,
            iter_best: self.iter_best,
            psnr_best_raw: self.psnr_best_raw,
            sgld_samples: self.sgld_samples,
            seconds: self.seconds,
            observers: self
                .observers
                .iter()
                .map(|o| o.as_ref().map(|o| (o.meta.clone(), o.arrays.len())))
                .collect(),
            arrays: arrays
                .iter()
                .map(|(n, a)| match a {
                    Arr::F32(v) => (n.to_string(), 4, v.len()),
                    Arr::F64(v) => (n.to_string(), 8, v.len()),
                })
                .collect(),
        };
        let head = serde_json::to_vec(&header)
            .map_err(|e| format!("cannot encode the checkpoint: {e}"))?;
        let body: usize = header.arrays.iter().map(|(_, s, n)| s * n).sum();
        let mut bytes = Vec::with_capacity(16 + head.len() + body + 8);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&(head.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&head);
        for (_, a) in &arrays {
            match a {
                Arr::F32(v) => v
                    .iter()
                    .for_each(|x| bytes.extend_from_slice(&x.to_le_bytes())),
                Arr::F64(v) => v
                    .iter()
                    .for_each(|x| bytes.extend_from_slice(&x.to_le_bytes())),
            }
        }
        let sum = checksum(&bytes);
        bytes.extend_from_slice(&sum.to_le_bytes());
        Ok(bytes)
    }

    /// Reads a checkpoint written by [`FitState::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .map_err(|e| Error::file(path, format!("cannot read the checkpoint: {e}")))?;
        Self::from_bytes(&bytes).map_err(|m| Error::file(path, m))
    }

    /// Decodes a checkpoint; the error says what is wrong with it.
    pub fn from_bytes(bytes: &[u8]) -> std::result::Result<Self, String> {
        if bytes.len() < 8 || (&bytes[..8] != MAGIC && &bytes[..8] != MAGIC_V1) {
            return Err("not a dip checkpoint (wrong signature)".into());
        }
        // The checksum is compared last, so that a truncated file or a broken header is
        // reported as such rather than as a mere mismatch.
        let (bytes, sum) = if &bytes[..8] == MAGIC {
            if bytes.len() < 24 {
                return Err("the checkpoint is truncated (shorter than its fixed parts)".into());
            }
            let (data, sum) = bytes.split_at(bytes.len() - 8);
            (data, Some(sum))
        } else if bytes.len() < 16 {
            return Err("the checkpoint is truncated (shorter than its fixed parts)".into());
        } else {
            (bytes, None)
        };
        let head_len = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
        if head_len > MAX_HEADER || head_len > (bytes.len() - 16) as u64 {
            return Err("the checkpoint is truncated or corrupt (bad header length)".into());
        }
        let head_end = 16 + head_len as usize;
        let h: Header = serde_json::from_slice(&bytes[16..head_end])
            .map_err(|e| format!("the checkpoint's header is corrupt: {e}"))?;
        if h.version != 1 {
            return Err(format!(
                "checkpoint format version {} is not supported (this dip reads version 1)",
                h.version
            ));
        }
        let mut need: u64 = 0;
        for (name, size, n) in &h.arrays {
            if *size != 4 && *size != 8 {
                return Err(format!("array {name}: bad element size {size}"));
            }
            need = need
                .checked_add((*size as u64).saturating_mul(*n as u64))
                .ok_or("the checkpoint's array sizes overflow")?;
        }
        if need != (bytes.len() - head_end) as u64 {
            return Err(format!(
                "the checkpoint is truncated or corrupt: its arrays need {need} bytes, it has {}",
                bytes.len() - head_end
            ));
        }
        if sum.is_some_and(|sum| checksum(bytes).to_le_bytes() != sum) {
            return Err(
                "the checkpoint is corrupt: its checksum does not match its contents".into(),
            );
        }
        let mut pos = head_end;
        let mut f32s = std::collections::HashMap::new();
        let mut f64s = std::collections::HashMap::new();
        for (name, size, n) in &h.arrays {
            let chunk = &bytes[pos..pos + size * n];
            pos += size * n;
            if *size == 4 {
                let v: Vec<f32> = chunk
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect();
                f32s.insert(name.clone(), v);
            } else {
                let v: Vec<f64> = chunk
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect();
                f64s.insert(name.clone(), v);
            }
        }
        let mut take32 = |k: &str| f32s.remove(k).ok_or(format!("the checkpoint lacks {k}"));
        let params = take32("params")?;
        let adam_m = take32("adam_m")?;
        let adam_v = take32("adam_v")?;
        let ema = take32("ema")?;
        let snapshot = match h.snapshot {
            Some((t, lr, p)) => Some(SnapshotState {
                params: take32("snap_params")?,
                adam_m: take32("snap_m")?,
                adam_v: take32("snap_v")?,
                adam_t: t,
                adam_lr: lr,
                psnr_obs: p,
            }),
            None => None,
        };
        let mut take64 = |k: &str| f64s.remove(k).ok_or(format!("the checkpoint lacks {k}"));
        let sgld_sum = take64("sgld_sum")?;
        let sgld_sq = take64("sgld_sq")?;
        let mut observers = Vec::with_capacity(h.observers.len());
        for (i, o) in h.observers.into_iter().enumerate() {
            observers.push(match o {
                None => None,
                Some((meta, n)) => Some(ObserverState {
                    meta,
                    arrays: (0..n)
                        .map(|k| take64(&format!("obs{i}_{k}")))
                        .collect::<std::result::Result<_, _>>()?,
                }),
            });
        }
        let n = params.len();
        let same = [adam_m.len(), adam_v.len()].into_iter().chain(
            snapshot
                .iter()
                .flat_map(|s| [s.params.len(), s.adam_m.len(), s.adam_v.len()]),
        );
        if same.into_iter().any(|l| l != n) || sgld_sum.len() != sgld_sq.len() {
            return Err("the checkpoint's arrays disagree in length".into());
        }
        if !(h.lr.is_finite() && h.lr > 0.0) {
            return Err(format!(
                "the checkpoint's learning rate {} is not valid",
                h.lr
            ));
        }
        // Counters far beyond any real run (a damaged or hand-edited header) would overflow
        // when the fit goes on counting.
        let counters = [
            ("step", h.step as u64),
            ("Adam step", h.adam_t),
            ("snapshot Adam step", h.snapshot.map_or(0, |s| s.0)),
        ];
        if let Some((what, v)) = counters.iter().find(|(_, v)| *v > MAX_COUNTER) {
            return Err(format!(
                "the checkpoint's {what} count {v} is beyond any run (at most {MAX_COUNTER})"
            ));
        }
        Ok(FitState {
            meta: h.meta,
            step: h.step,
            params,
            adam_m,
            adam_v,
            adam_t: h.adam_t,
            lr: h.lr,
            ema,
            snapshot,
            rollbacks: h.rollbacks,
            failures_in_a_row: h.failures_in_a_row,
            raw_is_current: h.raw_is_current,
            history: h.history,
            psnr_best: h.psnr_best,
            iter_best: h.iter_best,
            psnr_best_raw: h.psnr_best_raw,
            sgld_sum,
            sgld_sq,
            sgld_samples: h.sgld_samples,
            seconds: h.seconds,
            observers,
        })
    }
}

/// 64-bit FNV-1a: not a defence against tampering, but any damaged byte changes it.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// One row of the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryRow {
    pub iter: usize,
    pub loss: f64,
    pub psnr_raw: Option<f64>,
    pub psnr_ema: Option<f64>,
    /// PSNR of the SGLD posterior mean so far (once there are samples).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psnr_sgld: Option<f64>,
}

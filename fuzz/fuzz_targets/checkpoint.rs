//! Checkpoint files: bytes to `FitState::from_bytes`, the path `dip resume` reads them by.
//! Errors are fine; panics are not, and neither is an allocation the size of a length the file
//! declares. A file that loads must encode again and load to the same bytes.
//!
//! The first byte of the input picks how the rest is used:
//! - 0: the rest is the file, as is;
//! - 1: the rest edits a valid checkpoint built here (`(offset, byte)` triples, then a
//!   truncation), its checksum left as it was;
//! - 2: as 1, with the checksum made right again, so the edits reach the header and arrays;
//! - 3: the rest is the JSON header of a file with that header, no arrays and a right checksum.
#![no_main]

use dip::fit::{FitState, HistoryRow, SnapshotState};
use libfuzzer_sys::fuzz_target;

/// The checksum `FitState::to_bytes` appends: 64-bit FNV-1a of everything before it.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn seal(mut bytes: Vec<u8>) -> Vec<u8> {
    let sum = checksum(&bytes);
    bytes.extend_from_slice(&sum.to_le_bytes());
    bytes
}

/// A small but complete checkpoint: every array, a snapshot, history, observer states.
fn seed() -> Vec<u8> {
    let p = |k: f32| (0..6).map(|i| i as f32 * k).collect::<Vec<_>>();
    FitState {
        meta: serde_json::json!({"command": "denoise", "argv": ["dip", "denoise"], "cwd": ""}),
        step: 7,
        params: p(0.5),
        adam_m: p(0.01),
        adam_v: p(0.001),
        adam_t: 7,
        lr: 0.01,
        ema: vec![0.25; 4],
        snapshot: Some(SnapshotState {
            params: p(0.4),
            adam_m: p(0.02),
            adam_v: p(0.002),
            adam_t: 5,
            adam_lr: 0.01,
            psnr_obs: 21.5,
        }),
        rollbacks: 1,
        failures_in_a_row: 0,
        raw_is_current: true,
        history: vec![HistoryRow {
            iter: 5,
            loss: 0.02,
            psnr_raw: Some(20.0),
            psnr_ema: None,
            psnr_sgld: Some(19.0),
        }],
        psnr_best: Some(20.0),
        iter_best: Some(5),
        psnr_best_raw: None,
        sgld_sum: vec![1.0; 4],
        sgld_sq: vec![2.0; 4],
        sgld_samples: 2,
        seconds: 1.5,
        observers: vec![Some(serde_json::json!({"best": 3})), None],
    }
    .to_bytes()
    .expect("the seed encodes")
}

fn check(bytes: &[u8]) {
    let Ok(state) = FitState::from_bytes(bytes) else {
        return;
    };
    let again = state.to_bytes().expect("a loaded checkpoint encodes");
    let back = FitState::from_bytes(&again).expect("an encoded checkpoint loads");
    assert_eq!(back.to_bytes().unwrap(), again, "encoding is stable");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => check(rest),
        m @ (1 | 2) => {
            let mut file = seed();
            // The checksum's own 8 bytes are left alone when it is made right again.
            let body = file.len() - 8;
            let mut edits = rest.chunks_exact(3);
            for e in &mut edits {
                let at = usize::from(u16::from_le_bytes([e[0], e[1]])) % file.len();
                file[at] = e[2];
            }
            if let [a, b] = edits.remainder() {
                file.truncate(usize::from(u16::from_le_bytes([*a, *b])) % (file.len() + 1));
            }
            if m == 2 && file.len() == body + 8 {
                file.truncate(body);
                file = seal(file);
            }
            check(&file);
        }
        _ => {
            let mut file = b"DIPCKPT2".to_vec();
            file.extend_from_slice(&(rest.len() as u64).to_le_bytes());
            file.extend_from_slice(rest);
            check(&seal(file));
        }
    }
});

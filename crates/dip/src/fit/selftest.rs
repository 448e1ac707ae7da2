//! Self-checks of whole fits on the GPU (`dip selftest`): captured graphs against direct
//! launches, and fits batched as lanes against fits on networks of their own. They run fits, so
//! they live in `fit`, above the GPU backend they check.

use crate::cuda::{GpuError, GpuNet, Precision};
use crate::engine::{AdamConfig, Net};
use crate::nets::SkipSpec;

/// A short fit (input noise, SGLD, a learning rate high enough to roll back) on the device with
/// its steps replayed from captured graphs and again launched directly: the largest difference
/// between the two final outputs (0 expected: the graphs read the step number and step size on
/// the device), and whether the graphs were captured (`Err` with the device's reason if not).
pub fn fit_graph_difference(
    ordinal: usize,
    precision: Precision,
) -> Result<(f32, std::result::Result<(), String>), GpuError> {
    use crate::fit::{FitConfig, SgldConfig, fit_on_gpu};
    use crate::image::Image;
    use crate::nets::Arch;
    use crate::operators::Identity;
    let spec = Arch::Skip(SkipSpec::uniform(4, 3, 3, 8, 2));
    let (w, h, c) = (24, 20, 3);
    let noisy = Image::new(
        w,
        h,
        c,
        (0..w * h * c)
            .map(|i| 0.5 + 0.3 * (((i * 7919) % 97) as f32 / 97.0 - 0.5))
            .collect(),
    );
    let op = Identity::new(w, h, c);
    let cfg = FitConfig {
        iters: 40,
        lr: 1.0,
        check_every: 2,
        reg_noise: 1.0 / 30.0,
        sgld: Some(SgldConfig {
            burn_in: 10,
            sample_every: 5,
            ..SgldConfig::for_iters(40)
        }),
        ..FitConfig::default()
    };
    let run = |graphs: bool| {
        let mut open = |net: &Net<f32>, room: usize| {
            let mut g = GpuNet::with_room(net, ordinal, precision, room)?;
            g.set_graphs(graphs);
            Ok(g)
        };
        fit_on_gpu(&noisy, &op, None, &spec, &cfg, &mut [], &mut open)
            .map_err(|e| GpuError(e.to_string()))
    };
    let (a, b) = (run(true)?, run(false)?);
    let diff = a
        .output_raw
        .data
        .iter()
        .zip(&b.output_raw.data)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    // Whether this device captures a fit's steps at all.
    let net = spec
        .builder::<f32>(h, w)
        .map(|(bld, out)| bld.build(out, 0, false))
        .map_err(|e| GpuError(e.to_string()))?;
    let mut g = GpuNet::new(&net, ordinal, precision)?;
    g.prepare_fit(crate::cuda::FitStep {
        seed: 1,
        reg_noise: 0.1,
        scale: 1.0,
        l1: false,
        weighted: false,
        ema: 0.9,
        adam: AdamConfig::default(),
        sgld: None,
        lipschitz: None,
    })?;
    let captured = match g.graph_error() {
        Some(e) => Err(e.to_string()),
        None => Ok(()),
    };
    Ok((diff, captured))
}

/// Three short fits (their own seeds and observations; input noise and SGLD) as lanes of one
/// batch on the device, against each on a network of its own: the largest difference between
/// their final outputs. Only the GEMMs may differ (strided-batched against single calls can
/// sum in another order), so this stays at the level of the CPU-against-GPU difference of the
/// same fits (2e-5 after 12 steps at lr 0.001).
pub fn lanes_difference(ordinal: usize, precision: Precision) -> Result<f32, GpuError> {
    use crate::fit::{FitConfig, LanePool, SgldConfig, fit, fit_on_gpu};
    use crate::image::Image;
    use crate::nets::Arch;
    use crate::operators::Identity;
    use std::sync::Arc;
    let spec = Arch::Skip(SkipSpec::uniform(4, 3, 3, 8, 2));
    let (w, h, c) = (24, 20, 3);
    let image = |k: usize| {
        Image::new(
            w,
            h,
            c,
            (0..w * h * c)
                .map(|i| 0.5 + 0.3 * ((((i + 13 * k) * 7919) % 97) as f32 / 97.0 - 0.5))
                .collect(),
        )
    };
    let op = Identity::new(w, h, c);
    let cfg = |k: usize| FitConfig {
        iters: 12,
        lr: 0.001,
        seed: 7 + k as u64,
        reg_noise: 1.0 / 30.0,
        sgld: Some(SgldConfig {
            burn_in: 4,
            sample_every: 2,
            ..SgldConfig::for_iters(12)
        }),
        precision: match precision {
            Precision::Bf16 => crate::engine::Precision::Bf16,
            _ => crate::engine::Precision::F32,
        },
        ..FitConfig::default()
    };
    let pool = Arc::new(LanePool::new(
        3,
        Box::new(move |net: &Net<f32>, room, lanes, _| {
            GpuNet::with_lanes(net, ordinal, precision, room, lanes)
        }),
    ));
    let batched: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|k| {
                let cfg = FitConfig {
                    device: crate::device::Device::Cuda(ordinal),
                    lanes: Some(pool.clone()),
                    ..cfg(k)
                };
                let (obs, op, spec) = (image(k), &op, &spec);
                s.spawn(move || fit(&obs, op, None, spec, &cfg, &mut []))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a fit's thread does not panic"))
            .collect()
    });
    if pool.fits_in_lanes() != 3 {
        return Err(GpuError(format!(
            "{} of the 3 fits ran in lanes",
            pool.fits_in_lanes()
        )));
    }
    let mut diff = 0.0f32;
    for (k, b) in batched.into_iter().enumerate() {
        let b = b.map_err(|e| GpuError(e.to_string()))?;
        let mut open =
            |net: &Net<f32>, room: usize| GpuNet::with_room(net, ordinal, precision, room);
        let own = fit_on_gpu(&image(k), &op, None, &spec, &cfg(k), &mut [], &mut open)
            .map_err(|e| GpuError(e.to_string()))?;
        for (x, y) in b.output_raw.data.iter().zip(&own.output_raw.data) {
            if !x.is_finite() {
                return Err(GpuError("a fit in a lane gave non-finite outputs".into()));
            }
            diff = diff.max((x - y).abs());
        }
    }
    Ok(diff)
}

//! `--device cuda`: the golden self-test and the step timing on an NVIDIA GPU. In a build without
//! the `cuda` feature every entry point says so and fails.

use std::path::PathBuf;

use anyhow::Result;
#[cfg(not(feature = "cuda"))]
use anyhow::bail;
use clap::Args as ClapArgs;

use crate::Global;

const SELFTEST_EXAMPLES: &str = "\
Examples:
  dip selftest --golden golden/ --device cuda
  dip selftest --golden golden/ --device cuda:1 --tf32
  dip selftest --golden golden/ --device cuda --bf16";

#[derive(ClapArgs, Debug)]
#[command(after_help = SELFTEST_EXAMPLES)]
pub struct SelftestArgs {
    /// Folder of golden cases (each a folder with config.json and tensors.npz).
    #[arg(long, value_name = "DIR")]
    pub golden: PathBuf,

    /// Relative tolerance [default: 1e-4 in f32; with tensor cores, normwise for gradients,
    /// 0.1 with --tf32 and 0.25 with --bf16].
    #[arg(long, value_name = "TOL")]
    pub tol: Option<f64>,

    /// Matrix products on TF32 tensor cores.
    #[arg(long, conflicts_with = "bf16")]
    pub tf32: bool,

    /// Matrix products on bf16 tensor cores (f32 sums).
    #[arg(long)]
    pub bf16: bool,
}

#[cfg(feature = "cuda")]
pub fn selftest(a: SelftestArgs, g: &Global) -> Result<()> {
    use anyhow::{anyhow, bail};
    use dip::cuda::{Precision, golden, probe};
    let dip::device::Device::Cuda(ordinal) = g.device else {
        bail!(
            "dip selftest checks the GPU backend: give --device cuda[:N] (the CPU engine's golden \
             tests are `cargo test golden`)"
        );
    };
    let info = probe(ordinal).map_err(|e| anyhow!("{e}"))?;
    let precision = match (a.tf32, a.bf16) {
        (true, _) => Precision::Tf32,
        (_, true) => Precision::Bf16,
        _ => Precision::F32,
    };
    let tol = a.tol.unwrap_or(precision.golden_tolerance());
    println!(
        "golden tests on {} (cuda:{ordinal}, compute {}.{}), {:?}, tolerance {tol:e}",
        info.name, info.compute_capability.0, info.compute_capability.1, precision
    );
    let mut failed = Vec::new();
    for case in golden::cases(&a.golden).map_err(|e| anyhow!("{e}"))? {
        let r = golden::check_case(&a.golden, &case, ordinal, precision, tol)
            .map_err(|e| anyhow!("{e}"))?;
        for (what, err, allowed) in &r.checks {
            let mark = if err <= allowed { "ok  " } else { "FAIL" };
            println!("{mark} {case}: {what}: {err:.2e}");
        }
        if !r.passed() {
            failed.push(case);
        }
    }
    let d = golden::graph_replay_difference(ordinal, precision).map_err(|e| anyhow!("{e}"))?;
    let ok = d <= 1e-6;
    println!(
        "{} CUDA graph replay of the step vs the direct step (3 steps): {d:.2e}",
        if ok { "ok  " } else { "FAIL" }
    );
    if !ok {
        failed.push("graph replay".to_string());
    }
    let (d, captured) =
        dip::fit::selftest::fit_graph_difference(ordinal, precision).map_err(|e| anyhow!("{e}"))?;
    let ok = d == 0.0 && captured.is_ok();
    match &captured {
        Ok(()) => println!(
            "{} a fit from captured graphs vs launched directly (40 steps, noise, SGLD, \
             rollbacks): {d:.2e}",
            if ok { "ok  " } else { "FAIL" }
        ),
        Err(e) => println!("FAIL a fit's steps could not be captured into graphs: {e}"),
    }
    if !ok {
        failed.push("fit graphs".to_string());
    }
    let d = golden::lipschitz_difference(ordinal, precision).map_err(|e| anyhow!("{e}"))?;
    let ok = d == 0.0;
    println!(
        "{} Lipschitz control on the device vs the CPU engine's (two projections): {d:.2e}",
        if ok { "ok  " } else { "FAIL" }
    );
    if !ok {
        failed.push("Lipschitz control".to_string());
    }
    let d = dip::fit::selftest::lanes_difference(ordinal, precision).map_err(|e| anyhow!("{e}"))?;
    let ok = d <= 2e-5;
    println!(
        "{} three fits as lanes of one batch vs each on a network of its own (12 steps, noise, \
         SGLD): {d:.2e}",
        if ok { "ok  " } else { "FAIL" }
    );
    if !ok {
        failed.push("fits in lanes".to_string());
    }
    if failed.is_empty() {
        println!("all golden cases passed");
        Ok(())
    } else {
        bail!("golden cases failed on the GPU: {}", failed.join(", "))
    }
}

#[cfg(not(feature = "cuda"))]
pub fn selftest(_: SelftestArgs, _: &Global) -> Result<()> {
    bail!("{}", dip::device::NO_CUDA_BUILD)
}

/// How [`time_step`] times: from a captured graph or not, how many lanes, how many steps.
#[cfg(feature = "cuda")]
#[derive(Clone, Copy)]
pub struct StepTiming {
    pub graph: bool,
    pub lanes: usize,
    pub warmup: usize,
    pub iters: usize,
}

/// Seconds per training step of `spec` at `s × s` on the GPU (of all lanes at once): the
/// median over `iters` steps (each waited for), after `warmup` steps. Also the device memory
/// the network holds.
#[cfg(feature = "cuda")]
pub fn time_step(
    spec: &dip::nets::SkipSpec,
    s: usize,
    ordinal: usize,
    precision: dip::cuda::Precision,
    how: &StepTiming,
) -> Result<(f64, f64, f64, usize, String)> {
    let StepTiming {
        graph,
        lanes,
        warmup,
        iters,
    } = *how;
    use anyhow::anyhow;
    use dip::cuda::GpuNet;
    use dip::engine::{AdamConfig, Net, Tensor};
    let mut net: Net<f32> = spec.build(s, s, 0)?;
    let mut state = 0x5EEDu64;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
    };
    net.input_mut()
        .data
        .iter_mut()
        .for_each(|v| *v = 0.1 * next());
    let (h, w, c) = {
        let o = net.output();
        (o.h, o.w, o.c)
    };
    let target = Tensor {
        h,
        w,
        c,
        data: (0..h * w * c).map(|_| next()).collect(),
    };
    let mut gpu =
        GpuNet::with_lanes(&net, ordinal, precision, 0, lanes).map_err(|e| anyhow!("{e}"))?;
    drop(net);
    for lane in 0..lanes {
        gpu.select(lane).map_err(|e| anyhow!("{e}"))?;
        gpu.set_target(&target, None).map_err(|e| anyhow!("{e}"))?;
    }
    let scale = 2.0 / (h * w * c) as f32;
    let cfg = AdamConfig::default();
    if graph {
        gpu.sync().map_err(|e| anyhow!("{e}"))?;
        gpu.capture_step(scale, &cfg).map_err(|e| anyhow!("{e}"))?;
    }
    let mut times = Vec::with_capacity(iters);
    for i in 0..warmup + iters {
        let t0 = std::time::Instant::now();
        if graph {
            gpu.replay_step().map_err(|e| anyhow!("{e}"))?;
        } else {
            gpu.step(scale, &cfg).map_err(|e| anyhow!("{e}"))?;
        }
        gpu.sync().map_err(|e| anyhow!("{e}"))?;
        if i >= warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    let loss = gpu.loss_sum().map_err(|e| anyhow!("{e}"))?;
    if !loss.is_finite() {
        anyhow::bail!("the loss on the GPU is not finite ({loss})");
    }
    let min = times.iter().copied().fold(f64::INFINITY, f64::min);
    let max = times.iter().copied().fold(0.0, f64::max);
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    Ok((
        median,
        min,
        max,
        gpu.memory_bytes(),
        gpu.device().name.clone(),
    ))
}

/// The fits of a `--jobs K` run on a GPU: lanes of one batch (each step of all of them one
/// launch sequence), unless `--no-batch` gives each a network of its own. Empty on the CPU.
#[derive(Clone, Default)]
pub struct Batch {
    #[cfg(feature = "cuda")]
    pool: Option<std::sync::Arc<dip::fit::LanePool>>,
}

impl Batch {
    /// A batch of `jobs` lanes where the fits run on a GPU, `jobs` > 1 and batching is on.
    #[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
    pub fn new(device: dip::device::Device, jobs: usize, on: bool) -> Batch {
        #[cfg(feature = "cuda")]
        if let dip::device::Device::Cuda(ordinal) = device
            && jobs > 1
            && on
        {
            let open = move |net: &dip::engine::Net<f32>, room, lanes, precision| {
                dip::cuda::GpuNet::with_lanes(net, ordinal, precision, room, lanes)
            };
            return Batch {
                pool: Some(std::sync::Arc::new(dip::fit::LanePool::new(
                    jobs,
                    Box::new(open),
                ))),
            };
        }
        Batch::default()
    }

    /// `cfg` running in the batch, if there is one.
    #[cfg_attr(not(feature = "cuda"), allow(clippy::unused_self))]
    pub fn apply(&self, cfg: dip::fit::FitConfig) -> dip::fit::FitConfig {
        #[cfg(feature = "cuda")]
        if let Some(p) = &self.pool {
            return dip::fit::FitConfig {
                lanes: Some(p.clone()),
                ..cfg
            };
        }
        cfg
    }

    /// Makes a fit run under `ctx` a lane of the batch, if there is one.
    #[cfg_attr(not(feature = "cuda"), allow(clippy::unused_self))]
    pub fn join(&self, ctx: &mut dip::task::RunContext<'_>) {
        #[cfg(feature = "cuda")]
        if let Some(p) = &self.pool {
            ctx.lanes = Some(p.clone());
        }
        #[cfg(not(feature = "cuda"))]
        let _ = ctx;
    }

    /// How many fits ran as lanes of the batch.
    pub fn fits_in_lanes(&self) -> usize {
        #[cfg(feature = "cuda")]
        if let Some(p) = &self.pool {
            return p.fits_in_lanes();
        }
        0
    }

    /// The batch's lanes (0 without one).
    pub fn lanes(&self) -> usize {
        #[cfg(feature = "cuda")]
        if let Some(p) = &self.pool {
            return p.lanes();
        }
        0
    }
}

/// Runs `n` fits, `run(k, batch, show)` for k = 0..n: on a GPU (more than one fit) all at once,
/// each on a thread of its own, as lanes of one batch (`show`, the progress bar, for the first
/// only); elsewhere one after another (each shown), ending after the first error or the first
/// result `ends` says ends the series (an interrupted fit). The results in order, as far as
/// they go.
pub fn fits_at_once<R: Send>(
    g: &Global,
    n: usize,
    run: impl Fn(usize, &Batch, bool) -> Result<R> + Sync,
    ends: impl Fn(&R) -> bool,
) -> Vec<Result<R>> {
    let batch = Batch::new(g.device, n, true);
    if batch.lanes() == 0 {
        let mut out = Vec::with_capacity(n);
        for k in 0..n {
            let r = run(k, &batch, true);
            let stop = r.as_ref().map_or(true, &ends);
            out.push(r);
            if stop {
                break;
            }
        }
        return out;
    }
    std::thread::scope(|s| {
        let (run, batch) = (&run, &batch);
        let handles: Vec<_> = (0..n)
            .map(|k| s.spawn(move || run(k, batch, k == 0)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a fit's thread panicked")))
            })
            .collect()
    })
}

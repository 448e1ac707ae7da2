//! `dip bench`: seconds per training step of the standard network, optionally beside PyTorch.
//!
//! A step is what a fit repeats: forward, MSE loss and its gradient, backward, Adam. The data are
//! random; only the time matters.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use dip::engine::{Adam, AdamConfig, GemmTime, Net, Precision};
use dip::nets::SkipSpec;

use crate::Global;

const EXAMPLES: &str = "\
Examples:
  dip bench
  dip bench --sizes 128,256 --iters 10 --profile
  dip --threads 2 bench --sizes 128,256,512 --vs-torch
  dip --device cuda bench --sizes 256,512 --graph     (a build with --features cuda)
  dip --threads 2 bench --sizes 256 --precision f32,bf16 --vs-torch --profile

The PyTorch peer is looked for in ../shared/peer (from the current folder) or in $DIP_PEER_DIR.
Peak memory is the process's peak (VmHWM), so sizes run from the smallest up.";

/// Channels of the benchmarked network: the reference denoising setup, 32 → 3.
const IN_CHANNELS: usize = 32;
const OUT_CHANNELS: usize = 3;

#[derive(clap::Args, Debug)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Image sides to time (square images; multiples of 32, at least 64).
    #[arg(long, value_name = "S,S,...", value_delimiter = ',', default_values_t = [128, 256, 512])]
    sizes: Vec<usize>,

    /// Timed steps per size; the median is reported.
    #[arg(long, value_name = "N", default_value_t = 5)]
    iters: usize,

    /// Untimed steps before timing.
    #[arg(long, value_name = "N", default_value_t = 2)]
    warmup: usize,

    /// Also time the PyTorch peer (same network, same thread count), size by size.
    #[arg(long)]
    vs_torch: bool,

    /// Also show the median time of each part of the step: forward, loss, backward, Adam.
    #[arg(long)]
    profile: bool,

    /// Number formats of the convolution GEMM inputs to time, each its own row: f32, bf16
    /// (needs AVX-512-BF16, else it runs in f32). The PyTorch peer always runs in f32. With
    /// --device cuda: one value, bf16 meaning bf16 tensor cores for every GEMM.
    #[arg(long, value_name = "P,P,...", value_delimiter = ',', default_values_t = [Precision::F32])]
    precision: Vec<Precision>,

    /// Time nothing: print what the planned memory of each size is made of (activations by
    /// layer kind, gradients, convolution caches and scratch, parameters, Adam).
    #[arg(long)]
    memory: bool,

    /// With --device cuda: matrix products on TF32 tensor cores.
    #[arg(long)]
    tf32: bool,

    /// With --device cuda: capture the step into a CUDA graph once and replay it.
    #[arg(long)]
    graph: bool,

    /// With --device cuda: step this many networks at once, as lanes of one batch (the sweep
    /// runner's --jobs); the table then also gives the seconds per fit's step.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    lanes: usize,
}

/// Medians, in seconds, of one size's timed steps.
struct Timing {
    step: f64,
    min: f64,
    max: f64,
    forward: f64,
    loss: f64,
    backward: f64,
    adam: f64,
    /// Per-layer times, slowest first (with `--profile`).
    layers: Vec<dip::engine::NodeTime>,
    /// Per-step GEMM times by shape, slowest first (with `--profile`).
    gemms: Vec<GemmTime>,
    /// The network's buffers (activations, gradients, caches, parameters) and Adam's moments,
    /// as planned: what the step needs besides the program and the GEMM packing buffers.
    planned_bytes: usize,
}

pub fn run(args: Args, g: &Global) -> Result<()> {
    if args.iters == 0 {
        bail!("--iters must be at least 1");
    }
    let spec = SkipSpec::standard(IN_CHANNELS, OUT_CHANNELS);
    let mut sizes = args.sizes.clone();
    sizes.sort_unstable();
    sizes.dedup();
    if sizes.is_empty() {
        bail!("--sizes needs at least one size");
    }
    for &s in &sizes {
        spec.validate(s, s)
            .map_err(|e| anyhow!("--sizes: {s}: {e}"))?;
    }
    if args.memory {
        return print_memory(&spec, &sizes);
    }
    if let dip::device::Device::Cuda(ordinal) = g.device {
        return bench_cuda(&spec, &sizes, ordinal, &args);
    }
    if sizes != args.sizes && !g.quiet {
        eprintln!("note: sizes run in increasing order, since peak memory is the process's peak");
    }

    let torch = if args.vs_torch {
        Some(TorchPeer::setup(g)?)
    } else {
        None
    };

    let mut precisions = args.precision.clone();
    precisions.dedup();
    for &p in &precisions {
        crate::recipe::precision_notice(p);
    }
    println!(
        "standard skip network {IN_CHANNELS} -> {OUT_CHANNELS} channels, {} thread(s), median of {} steps after {} warm-up",
        g.threads, args.iters, args.warmup
    );
    match &torch {
        Some(_) => println!(
            "{:>6}  {:>4}  {:>13}  {:>15}  {:>9}  {:>12}  {:>14}  {:>16}",
            "size",
            "prec",
            "dip s/step",
            "torch s/step",
            "dip/torch",
            "dip planned",
            "dip peak RSS",
            "torch peak RSS"
        ),
        None => println!(
            "{:>6}  {:>4}  {:>10}  {:>8}  {:>8}  {:>12}  {:>14}",
            "size", "prec", "s/step", "min", "max", "planned", "peak RSS"
        ),
    }
    for &s in &sizes {
        let mut torch_time = None;
        for &p in &precisions {
            // On a pool thread, as a fit runs: parallel work then goes to the thread's own queue.
            let t = rayon::scope(|_| time_dip(&spec, s, p, &args))?;
            let rss = peak_rss_mib().map_or_else(|| "n/a".to_string(), |m| format!("{m:.0} MiB"));
            let planned = format!("{:.0} MiB", t.planned_bytes as f64 / (1u64 << 20) as f64);
            match &torch {
                Some(peer) => {
                    if torch_time.is_none() {
                        torch_time = Some(peer.time(s, g.threads, &args)?);
                    }
                    let (ts, trss) = torch_time.unwrap_or_default();
                    let trss = trss.map_or_else(|| "n/a".to_string(), |m| format!("{m:.0} MiB"));
                    println!(
                        "{s:>6}  {p:>4}  {:>13.4}  {ts:>15.4}  {:>9.2}  {planned:>12}  {rss:>14}  {trss:>16}",
                        t.step,
                        t.step / ts
                    );
                }
                None => println!(
                    "{s:>6}  {p:>4}  {:>10.4}  {:>8.4}  {:>8.4}  {planned:>12}  {rss:>14}",
                    t.step, t.min, t.max
                ),
            }
            if args.profile {
                println!(
                    "        forward {:.4}  loss {:.4}  backward {:.4}  adam {:.4}  (s, medians)",
                    t.forward, t.loss, t.backward, t.adam
                );
                println!("        slowest layers (s per step, forward + backward):");
                for n in t.layers.iter().take(12) {
                    println!(
                        "        {:>8.4} = {:.4} + {:.4}  {}",
                        n.forward + n.backward,
                        n.forward,
                        n.backward,
                        n.label
                    );
                }
                let total: f64 = t.gemms.iter().map(|g| g.seconds).sum();
                let flops: f64 = t
                    .gemms
                    .iter()
                    .map(|g| 2.0 * (g.m * g.n * g.k * g.calls) as f64)
                    .sum();
                println!(
                    "        GEMMs: {total:.4} s per step, {:.1} GFLOP/s overall; slowest shapes (m x n x k):",
                    flops / total / 1e9
                );
                for g in t.gemms.iter().take(10) {
                    println!(
                        "        {:>8.4} s  {:>6.1} GFLOP/s  {:>2} x  {} x {} x {}  ({})",
                        g.seconds,
                        g.gflops(),
                        g.calls,
                        g.m,
                        g.n,
                        g.k,
                        g.precision
                    );
                }
            }
        }
    }
    Ok(())
}

/// The GPU table: seconds per step (median, min, max; each step waited for) and the device
/// memory the network holds.
#[cfg(feature = "cuda")]
fn bench_cuda(spec: &SkipSpec, sizes: &[usize], ordinal: usize, args: &Args) -> Result<()> {
    if args.vs_torch || args.profile {
        bail!(
            "--vs-torch and --profile time the CPU; on the GPU, scripts/gpu-check.sh times PyTorch \
             CUDA beside dip"
        );
    }
    use dip::cuda::Precision as Gpu;
    let precision = match (args.tf32, args.precision.as_slice()) {
        (true, [Precision::F32]) => Gpu::Tf32,
        (false, [Precision::F32]) => Gpu::F32,
        (false, [Precision::Bf16]) => Gpu::Bf16,
        _ => bail!(
            "with --device cuda give one of: no precision flag (f32), --tf32, or --precision bf16"
        ),
    };
    let mode = format!(
        "{}{}",
        match precision {
            Gpu::F32 => "f32",
            Gpu::Tf32 => "tf32",
            Gpu::Bf16 => "bf16",
        },
        if args.graph { ", CUDA graph" } else { "" }
    );
    let mode = match args.lanes {
        1 => mode,
        n => format!("{mode}, {n} lanes"),
    };
    let mut header = false;
    for &s in sizes {
        let (step, min, max, bytes, name) = crate::gpu::time_step(
            spec,
            s,
            ordinal,
            precision,
            &crate::gpu::StepTiming {
                graph: args.graph,
                lanes: args.lanes,
                warmup: args.warmup,
                iters: args.iters,
            },
        )?;
        if !header {
            println!("device: {name} (cuda:{ordinal}), {mode}");
            println!(
                "{:>6}  {:>10}  {:>8}  {:>8}  {:>12}  {:>10}",
                "size", "s/step", "min", "max", "device mem", "s/fit-step"
            );
            header = true;
        }
        println!(
            "{s:>6}  {step:>10.5}  {min:>8.5}  {max:>8.5}  {:>8.0} MiB  {:>10.5}",
            bytes as f64 / (1u64 << 20) as f64,
            step / args.lanes as f64
        );
    }
    Ok(())
}

#[cfg(not(feature = "cuda"))]
fn bench_cuda(_: &SkipSpec, _: &[usize], _: usize, _: &Args) -> Result<()> {
    bail!("{}", dip::device::NO_CUDA_BUILD)
}

/// Times `warmup + iters` steps of the network at `s × s` on random data.
fn time_dip(spec: &SkipSpec, s: usize, precision: Precision, args: &Args) -> Result<Timing> {
    let mut net: Net<f32> = spec.build(s, s, 0)?;
    net.set_precision(precision);
    let mut rng = SplitMix64(0x5EED);
    net.input_mut()
        .data
        .iter_mut()
        .for_each(|v| *v = 0.1 * rng.next_f32());
    let target: Vec<f32> = (0..net.output().len()).map(|_| rng.next_f32()).collect();
    let mut adam = Adam::new(net.num_params(), AdamConfig::default());

    let mut samples: [Vec<f64>; 5] = Default::default();
    for i in 0..args.warmup + args.iters {
        let t0 = Instant::now();
        net.forward();
        let t1 = Instant::now();
        let (out, grad) = net.output_and_grad();
        let scale = 2.0 / out.len() as f32;
        for ((g, &y), &t) in grad.data.iter_mut().zip(&out.data).zip(&target) {
            *g = scale * (y - t);
        }
        let t2 = Instant::now();
        net.backward();
        let t3 = Instant::now();
        let (params, grads) = net.params_and_grads();
        adam.step(params, grads);
        let t4 = Instant::now();
        if i >= args.warmup {
            let parts = [t4 - t0, t1 - t0, t2 - t1, t3 - t2, t4 - t3];
            for (v, d) in samples.iter_mut().zip(parts) {
                v.push(d.as_secs_f64());
            }
        }
    }
    let mut layers = Vec::new();
    let mut gemms = Vec::new();
    if args.profile {
        net.set_profiling(true);
        dip::engine::set_gemm_timing(true);
        for _ in 0..args.iters {
            net.forward();
            net.backward();
        }
        dip::engine::set_gemm_timing(false);
        gemms = dip::engine::gemm_times();
        for g in &mut gemms {
            g.seconds /= args.iters as f64;
            g.calls /= args.iters;
        }
        gemms.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        layers = net.profile();
        for n in &mut layers {
            n.forward /= args.iters as f64;
            n.backward /= args.iters as f64;
        }
        layers.sort_by(|a, b| (b.forward + b.backward).total_cmp(&(a.forward + a.backward)));
    }
    let steps = &samples[0];
    let min = steps.iter().copied().fold(f64::INFINITY, f64::min);
    let max = steps.iter().copied().fold(0.0, f64::max);
    let [step, forward, loss, backward, adam] = samples.map(median);
    let planned_bytes = net.memory_bytes() + 2 * net.num_params() * std::mem::size_of::<f32>();
    Ok(Timing {
        planned_bytes,
        step,
        min,
        max,
        forward,
        loss,
        backward,
        adam,
        layers,
        gemms,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// A small generator for the benchmark's random data, so timing needs no extra dependency.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Peak resident memory of this process so far (VmHWM), in MiB; Linux only.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The PyTorch peer: its folder and the python of its virtual environment.
struct TorchPeer {
    dir: PathBuf,
    python: PathBuf,
}

impl TorchPeer {
    /// Finds the peer and runs its `setup-torch`, which prints the python to use.
    fn setup(g: &Global) -> Result<Self> {
        let dir = match std::env::var_os("DIP_PEER_DIR") {
            Some(d) => PathBuf::from(d),
            None => PathBuf::from("../shared/peer"),
        };
        let missing = |what: &Path| {
            anyhow!(
                "the PyTorch peer is missing: {} not found (run from the repository root with shared/ beside it, or set DIP_PEER_DIR)",
                what.display()
            )
        };
        for file in ["setup-torch", "torch_dip.py"] {
            if !dir.join(file).is_file() {
                return Err(missing(&dir.join(file)));
            }
        }
        if !g.quiet {
            eprintln!(
                "setting up the PyTorch peer in {} (the first time takes a while)",
                dir.display()
            );
        }
        let out = Command::new("bash")
            .arg(dir.join("setup-torch"))
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("{}: cannot run", dir.join("setup-torch").display()))?;
        if !out.status.success() {
            bail!(
                "{}: failed ({})",
                dir.join("setup-torch").display(),
                out.status
            );
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let python = stdout
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| {
                anyhow!(
                    "{}: printed no python path",
                    dir.join("setup-torch").display()
                )
            })?;
        Ok(TorchPeer { dir, python })
    }

    /// Median seconds per step of the peer at `s × s`, and its peak RSS in MiB.
    fn time(&self, s: usize, threads: usize, args: &Args) -> Result<(f64, Option<f64>)> {
        let script = self.dir.join("torch_dip.py");
        // Runs the script as its own `__main__`, then prints the process's peak RSS, so the
        // peer's memory is measured the same way as ours without touching the script.
        const WRAP: &str = "import resource, runpy, sys; sys.argv = sys.argv[1:]; \
            runpy.run_path(sys.argv[0], run_name='__main__'); \
            print(f'peak_rss_kb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}')";
        let out = Command::new(&self.python)
            .args(["-c", WRAP])
            .arg(&script)
            .args(["time", &s.to_string()])
            .args(["--threads", &threads.to_string()])
            .args(["--iters", &args.iters.to_string()])
            .args(["--warmup", &args.warmup.to_string()])
            .stdin(Stdio::null())
            .output()
            .with_context(|| {
                format!("{}: cannot run {}", script.display(), self.python.display())
            })?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            bail!(
                "{} time {s}: failed ({}): {last}",
                script.display(),
                out.status
            );
        }
        let field = |key: &str| -> Option<f64> {
            stdout
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|v| v.parse().ok())
        };
        let median = field("median_s=")
            .ok_or_else(|| anyhow!("{} time {s}: no median_s= in its output", script.display()))?;
        Ok((median, field("peak_rss_kb=").map(|k| k / 1024.0)))
    }
}

/// The planned memory of the standard network at each size, part by part.
fn print_memory(spec: &SkipSpec, sizes: &[usize]) -> Result<()> {
    let mib = |b: usize| b as f64 / (1u64 << 20) as f64;
    println!(
        "planned memory of the standard skip network {IN_CHANNELS} -> {OUT_CHANNELS} channels (MiB)"
    );
    let mut rows: Vec<(String, Vec<f64>)> = Vec::new();
    let mut totals = Vec::new();
    for &s in sizes {
        let net: Net<f32> = dip::nets::Arch::Skip(spec.clone()).build(s, s, 0)?;
        let adam = 2 * net.num_params() * std::mem::size_of::<f32>();
        let mut parts = net.memory_breakdown();
        parts.push(("Adam moments", adam));
        for (i, (name, bytes)) in parts.iter().enumerate() {
            if rows.len() <= i {
                rows.push((name.to_string(), Vec::new()));
            }
            rows[i].1.push(mib(*bytes));
        }
        totals.push(mib(net.memory_bytes() + adam));
    }
    let head: Vec<String> = sizes.iter().map(|s| format!("{s}²")).collect();
    println!(
        "{:<34} {}",
        "part",
        head.iter().map(|h| format!("{h:>9}")).collect::<String>()
    );
    for (name, v) in rows
        .iter()
        .chain(std::iter::once(&("total".to_string(), totals)))
    {
        println!(
            "{name:<34} {}",
            v.iter().map(|x| format!("{x:>9.1}")).collect::<String>()
        );
    }
    Ok(())
}

//! `dip`: the command-line tool over the `dip` library.
//!
//! The binary parses arguments, turns them into library configs, calls the library and prints.
//! Every failure reaches `main` as one error and is printed as one line, `error: <message>`, with
//! exit code 2; usage errors found by clap also exit with 2.

mod add_noise;
mod analyze;
mod arch_study;
mod arch_table;
mod bench;
mod degrade;
mod demo;
mod denoise;
mod eval;
mod experiment;
mod gp;
mod gpu;
mod inverse;
mod output;
mod progress;
mod recipe;
mod resume;
mod robustness;
mod stopping;
mod sweep;
mod task;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

const EXAMPLES: &str = "\
Examples:
  dip demo                                   denoise the built-in image, results in dip-demo/
  dip add-noise clean.png -o noisy.png --sigma 25
  dip degrade clean.png --task sr --factor 4 -o lr.png --hr-out hr.png
  dip degrade clean.png --task inpaint --random-mask 0.5 --mask-out mask.png -o obs.png
  dip eval highres.png hr.png --y-channel --crop-border 4
  dip denoise noisy.png -o restored.png --clean clean.png --json run.json
  dip denoise photo16.png -o out16.png --iters 1500 --threads 4
  dip inpaint kate.png --mask kate_mask.png -o kate-restored.png
  dip sr lowres.png --factor 4 -o highres.png --clean hr.png
  dip deblur blurred.png --psf gaussian:2 -o sharp.png
  dip presets                                list the settings presets
  dip bench --sizes 128,256 --vs-torch        time a training step against PyTorch
  dip gp prior --arch skip -o prior/          the DIP kernel at initialisation";

/// Deep Image Prior restoration on the CPU, or on an NVIDIA GPU (`--device cuda`, in a build
/// with `--features cuda`).
#[derive(Parser, Debug)]
#[command(name = "dip", version, after_help = EXAMPLES)]
struct Cli {
    /// Worker threads for the numerics [default: all cores].
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,

    /// Where the numerics run: cpu, or an NVIDIA GPU (cuda, cuda:N; needs a build with
    /// --features cuda). The GPU runs the networks of `denoise`, `inpaint`, `sr`, `deblur`,
    /// `demo`, `analyze`, `experiment`, `gp` and `sweep run`, and `bench` and `selftest`.
    #[arg(long, global = true, value_name = "DEVICE", default_value = "cpu")]
    device: String,

    /// No progress bar and no notes; results and errors are still printed.
    #[arg(long, short, global = true)]
    quiet: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Denoise an image with the Deep Image Prior.
    Denoise(denoise::Args),
    /// Fill in missing pixels given by a mask, or restore an image from a random fraction of
    /// its pixels.
    Inpaint(inverse::InpaintArgs),
    /// Super-resolution: an image FACTOR times larger whose downsampling is the input.
    Sr(inverse::SrArgs),
    /// Deblur an image with a known blur (PSF).
    Deblur(inverse::DeblurArgs),
    /// CT: reconstruct an image from a parallel-beam sinogram (.npy), e.g. few views.
    Ct(inverse::CtArgs),
    /// Any linear model: fit through a sparse matrix (.mtx, scipy .npz) to measurements (.npy).
    Restore(inverse::RestoreArgs),
    /// Write the Shepp-Logan head phantom, a test image for CT.
    Phantom(inverse::PhantomArgs),
    /// List the settings presets, or print one as TOML.
    Presets(recipe::PresetsArgs),
    /// Spectral-bias analysis: fit on several seeds while recording the outputs, then measure
    /// per-band fit, half-times, the two-run distance and the low-pass view; writes
    /// analysis.json, CSVs and report.html.
    Analyze(analyze::Args),
    /// The paper's experiments: the synthetic triangles, and the analysis of a natural image.
    #[command(subcommand)]
    Experiment(experiment::Which),
    /// Add Gaussian, Poisson or salt-and-pepper noise to an image (for experiments with a known
    /// clean image).
    AddNoise(add_noise::Args),
    /// Make a test observation from a clean image: masked, downsampled or blurred (plus noise).
    Degrade(degrade::Args),
    /// PSNR and SSIM of a result against the clean image (optionally on Y, border cropped).
    Eval(eval::Args),
    /// Denoise the built-in example image and write the results to a folder.
    Demo(demo::Args),
    /// Time one training step of the standard network, optionally against PyTorch.
    Bench(bench::Args),
    /// Run the golden tests (reference tensors) on the device given by --device.
    Selftest(gpu::SelftestArgs),
    /// Continue an interrupted fit from its checkpoint (bit-identical with the same threads).
    Resume(resume::Args),
    /// The Gaussian-process view: the prior at initialisation, GP regression with its kernel,
    /// and the band rates it predicts.
    #[command(subcommand)]
    Gp(gp::Which),
    /// Sweeps: many fits from one plan file (images × degradations × settings × seeds),
    /// resumable and shardable (Slurm job arrays), merged into tables.
    #[command(subcommand)]
    Sweep(sweep::Which),
}

/// Settings shared by every command.
pub struct Global {
    pub quiet: bool,
    pub threads: usize,
    /// Where the numerics run (`--device`).
    pub device: dip::device::Device,
    /// Set by the first Ctrl-C or SIGTERM: a fit then ends after its current step and saves.
    pub cancel: Arc<AtomicBool>,
}

impl Global {
    /// Where a fit runs, for notes: `2 thread(s)` or `cuda:0`.
    pub fn where_it_runs(&self) -> String {
        match self.device {
            dip::device::Device::Cpu => format!("{} thread(s)", self.threads),
            d => d.to_string(),
        }
    }
}

/// Exit code of a run that was interrupted and saved what it had (128 + SIGINT, as shells do).
pub const EXIT_INTERRUPTED: u8 = 130;

/// The first Ctrl-C (or SIGTERM) asks the fit to stop after the current step, so that its
/// result and history are written; a second one exits at once, leaving what was already
/// written intact (outputs are written by rename, never half-way).
fn install_interrupt_handler() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let seen = flag.clone();
    ctrlc::set_handler(move || {
        if seen.swap(true, Ordering::SeqCst) {
            std::process::exit(EXIT_INTERRUPTED as i32);
        }
        eprintln!(
            "\ninterrupted: finishing the current step and saving (Ctrl-C again to quit at once)"
        );
    })
    .context("cannot install the Ctrl-C handler")?;
    Ok(flag)
}

fn main() -> ExitCode {
    install_panic_hook();
    let cli = Cli::parse();
    match run(cli) {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Interrupted) => ExitCode::from(EXIT_INTERRUPTED),
        Err(e) => {
            eprintln!("error: {}", one_line(&format!("{e:#}")));
            ExitCode::from(2)
        }
    }
}

/// How a command that did not fail ended.
pub enum Outcome {
    Done,
    /// Stopped early by Ctrl-C or SIGTERM, after saving its result.
    Interrupted,
}

fn run(cli: Cli) -> Result<Outcome> {
    // `dip resume` runs the checkpoint's own command line again, with its state restored.
    let cli = match cli.command {
        Command::Resume(a) => {
            let (path, state, argv) = resume::prepare(&a)?;
            let mut again = Cli::try_parse_from(&argv).map_err(|e| {
                anyhow::anyhow!(
                    "{}: its command line no longer parses: {}",
                    path.display(),
                    one_line(&e.to_string())
                )
            })?;
            again.quiet |= cli.quiet;
            if cli.threads.is_some() {
                again.threads = cli.threads;
            }
            let _ = task::RESUME.set(task::Resume {
                path,
                state: Arc::new(state),
                argv,
            });
            again
        }
        _ => cli,
    };
    let device: dip::device::Device = cli
        .device
        .parse::<dip::device::Device>()
        .and_then(dip::device::Device::check_built)
        .map_err(|e| anyhow::anyhow!("--device: {e}"))?;
    if device != dip::device::Device::Cpu
        && !matches!(
            cli.command,
            Command::Denoise(_)
                | Command::Inpaint(_)
                | Command::Sr(_)
                | Command::Deblur(_)
                | Command::Ct(_)
                | Command::Restore(_)
                | Command::Demo(_)
                | Command::Bench(_)
                | Command::Selftest(_)
                | Command::Sweep(sweep::Which::Run(_))
                | Command::Sweep(sweep::Which::Slurm(_))
                | Command::Analyze(_)
                | Command::Experiment(_)
                | Command::Gp(_)
        )
    {
        bail!(
            "--device {device}: this command runs on the CPU only (the GPU runs dip denoise, \
             inpaint, sr, deblur, ct, restore, demo, analyze, experiment, gp, sweep run, bench and selftest)"
        );
    }
    // A GPU that cannot be used is reported now, before any file is read or written.
    #[cfg(feature = "cuda")]
    if let dip::device::Device::Cuda(ordinal) = device
        // A Slurm script is written on a login node; its tasks probe the GPU where they run.
        && !matches!(
            cli.command,
            Command::Bench(_) | Command::Selftest(_) | Command::Sweep(sweep::Which::Slurm(_))
        )
    {
        dip::cuda::probe(ordinal).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let threads = match cli.threads {
        Some(0) => bail!("--threads must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .context("cannot start the worker threads")?;
    let global = Global {
        quiet: cli.quiet,
        threads,
        device,
        cancel: install_interrupt_handler()?,
    };
    match cli.command {
        Command::Denoise(a) => denoise::run(a, &global),
        Command::Inpaint(a) => inverse::inpaint(a, &global),
        Command::Sr(a) => inverse::sr(a, &global),
        Command::Deblur(a) => inverse::deblur(a, &global),
        Command::Ct(a) => inverse::ct(a, &global),
        Command::Restore(a) => inverse::restore(a, &global),
        Command::Phantom(a) => inverse::phantom(a).map(|()| Outcome::Done),
        Command::Presets(a) => recipe::run_presets(a).map(|()| Outcome::Done),
        Command::Analyze(a) => analyze::run(a, &global),
        Command::Experiment(w) => experiment::run(w, &global),
        Command::AddNoise(a) => add_noise::run(a, &global).map(|()| Outcome::Done),
        Command::Degrade(a) => degrade::run(a, &global).map(|()| Outcome::Done),
        Command::Eval(a) => eval::run(a, &global).map(|()| Outcome::Done),
        Command::Demo(a) => demo::run(a, &global),
        Command::Bench(a) => bench::run(a, &global).map(|()| Outcome::Done),
        Command::Selftest(a) => gpu::selftest(a, &global).map(|()| Outcome::Done),
        Command::Sweep(w) => sweep::run(w, &global),
        Command::Gp(w) => gp::run(w, &global),
        Command::Resume(_) => bail!("internal: a resume resumes a fit, not another resume"),
    }
}

/// A bug must still end as one line on stderr, with its own exit code (101, as Rust's default).
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".to_string());
        let place = info
            .location()
            .map(|l| format!(" (at {}:{})", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("error: internal error: {}{place}", one_line(&msg));
        std::process::exit(101);
    }));
}

/// Messages from decoders and the OS may carry line breaks; an error is one line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

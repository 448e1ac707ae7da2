//! `dip denoise`: the Deep Image Prior on one image.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use dip::fit::{FitConfig, FitReport, Observer, fit_denoise};
use dip::image::{self, Image};
use dip::nets::SkipSpec;
use serde_json::{Value, json};

use crate::output::{check_image_output, check_writable, write_json};
use crate::progress::{OBSERVE_EVERY, Progress};
use crate::{Global, Outcome};

/// Channels of the fixed random input of the network (the reference recipe's 32).
pub const INPUT_CHANNELS: usize = 32;

const EXAMPLES: &str = "\
Examples:
  dip denoise noisy.png -o restored.png
  dip denoise noisy.png -o restored.png --clean clean.png --json run.json
  dip denoise scan16.tif -o scan16-restored.tif --iters 1800 --force";

#[derive(clap::Args, Debug)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The noisy image (PNG, JPEG, BMP or TIFF; gray or RGB; 8 or 16 bits; alpha is dropped).
    noisy: PathBuf,

    /// Where to write the restored image; the format follows the extension, and the bit depth
    /// and channels follow the input.
    #[arg(short, long = "output", value_name = "OUT")]
    output: PathBuf,

    /// The clean image, if known: only used to report PSNR during and after the fit.
    #[arg(long, value_name = "CLEAN")]
    clean: Option<PathBuf>,

    /// Training steps.
    #[arg(long, value_name = "N", default_value_t = FitConfig::default().iters)]
    iters: usize,

    /// Adam learning rate.
    #[arg(long, value_name = "LR", default_value_t = FitConfig::default().lr, allow_negative_numbers = true)]
    lr: f64,

    /// Std of the noise added to the network input at every step [default: 1/30 = 0.0333].
    #[arg(long, value_name = "STD", allow_negative_numbers = true)]
    reg_noise: Option<f64>,

    /// Weight of the exponential moving average of the outputs, in [0, 1); the EMA is the result.
    #[arg(long, value_name = "W", default_value_t = FitConfig::default().ema, allow_negative_numbers = true)]
    ema: f64,

    /// Seed of the network weights, its input and the input noise.
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,

    /// Also write a JSON summary: PSNR (with --clean), timing, settings and the history.
    #[arg(long, value_name = "SUMMARY.json")]
    json: Option<PathBuf>,

    /// Overwrite OUT and SUMMARY.json if they exist.
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args, g: &Global) -> Result<Outcome> {
    let cfg = FitConfig {
        iters: args.iters,
        lr: args.lr,
        reg_noise: args.reg_noise.unwrap_or(FitConfig::default().reg_noise),
        ema: args.ema,
        seed: args.seed,
        observe_every: OBSERVE_EVERY,
        cancel: Some(g.cancel.clone()),
        ..FitConfig::default()
    };
    cfg.validate()?;

    // Every output is checked before the (long) fit, so that it cannot fail at the end.
    let mut inputs: Vec<&Path> = vec![&args.noisy];
    inputs.extend(args.clean.as_deref());
    check_image_output(&args.output, &inputs, args.force)?;
    if let Some(json) = &args.json {
        if json == &args.output {
            bail!("{}: --json and -o name the same file", json.display());
        }
        check_writable(json, &inputs, args.force)?;
    }

    let noisy = load_image(&args.noisy, g)?;
    let clean = args
        .clean
        .as_deref()
        .map(|p| load_image(p, g))
        .transpose()?;

    let spec = SkipSpec::standard(INPUT_CHANNELS, noisy.channels);
    let report = fit_with_progress(&noisy, clean.as_ref(), &spec, &cfg, g)?;
    image::save(&report.output_ema, &args.output)?;

    if let Some(json) = &args.json {
        let summary = summary(
            &report,
            &cfg,
            &spec,
            [
                ("command", json!("denoise")),
                ("input", json!(args.noisy.display().to_string())),
                ("output", json!(args.output.display().to_string())),
                (
                    "clean",
                    json!(args.clean.as_ref().map(|p| p.display().to_string())),
                ),
            ],
        )?;
        write_json(json, &summary)?;
    }

    println!(
        "wrote {}: {} iterations in {:.1} s",
        args.output.display(),
        report.iterations_run,
        report.seconds
    );
    print_psnr(&report);
    Ok(outcome(&report))
}

/// An interrupted fit still saved its result; the exit code says it was cut short.
pub fn outcome(report: &FitReport) -> Outcome {
    if report.interrupted {
        eprintln!(
            "interrupted after step {}: the result and summary so far were written",
            report.iterations_run
        );
        Outcome::Interrupted
    } else {
        Outcome::Done
    }
}

/// Loads an image and says so when its alpha channel was dropped.
pub fn load_image(path: &Path, g: &Global) -> Result<Image> {
    let (img, info) = image::load(path)?;
    if info.dropped_alpha && !g.quiet {
        eprintln!(
            "note: {} has an alpha channel; it was dropped (not composited)",
            path.display()
        );
    }
    Ok(img)
}

/// Runs the fit with a progress bar on stderr.
pub fn fit_with_progress(
    noisy: &Image,
    clean: Option<&Image>,
    spec: &SkipSpec,
    cfg: &FitConfig,
    g: &Global,
) -> Result<FitReport> {
    let mut progress = Progress::new(cfg.iters, g.quiet);
    let mut observers: [&mut dyn Observer; 1] = [&mut progress];
    let report = fit_denoise(noisy, clean, spec, cfg, &mut observers);
    progress.finish();
    let report = report?;
    if report.rollbacks > 0 && !g.quiet {
        eprintln!(
            "note: the fit diverged {} time(s) and went back to its last good state",
            report.rollbacks
        );
    }
    Ok(report)
}

/// The JSON summary: the report's fields, the settings, the network, and `extra` fields.
pub fn summary<const N: usize>(
    report: &FitReport,
    cfg: &FitConfig,
    spec: &SkipSpec,
    extra: [(&str, Value); N],
) -> Result<Value> {
    let mut value = serde_json::to_value(report)?;
    let Value::Object(map) = &mut value else {
        bail!("internal: the fit report does not serialise to a JSON object");
    };
    for (k, v) in extra {
        map.insert(k.to_string(), v);
    }
    map.insert("config".to_string(), serde_json::to_value(cfg)?);
    map.insert("network".to_string(), serde_json::to_value(spec)?);
    map.insert("version".to_string(), json!(env!("CARGO_PKG_VERSION")));
    Ok(value)
}

/// The PSNR lines, when a clean image was given.
pub fn print_psnr(report: &FitReport) {
    if let Some(p) = report.psnr_noisy {
        println!("PSNR noisy:  {p:.2} dB");
    }
    if let Some(p) = report.psnr_final {
        println!(
            "PSNR final:  {p:.2} dB (EMA output, step {})",
            report.iterations_run
        );
    }
    if let (Some(p), Some(it)) = (report.psnr_best, report.iter_best) {
        println!("PSNR best:   {p:.2} dB (EMA output, step {it})");
    }
}

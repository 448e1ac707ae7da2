//! `dip add-noise`: synthetic noise (Gaussian, Poisson or salt-and-pepper), for experiments with
//! a known clean image.

use std::path::PathBuf;

use anyhow::{Result, bail};
use dip::image;
use dip::metrics::psnr;
use dip::task::Noise;

use crate::Global;
use crate::denoise::load_image;
use crate::output::check_image_output;

const EXAMPLES: &str = "\
Examples:
  dip add-noise clean.png -o noisy.png --sigma 25
  dip add-noise clean.png -o noisy50.png --sigma 50 --seed 7
  dip add-noise clean.png -o shot.png --kind poisson --peak 30
  dip add-noise clean.png -o specks.png --kind impulse --amount 0.1";

/// The noise models `dip add-noise` offers.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// White Gaussian noise of standard deviation --sigma (0–255 scale), clipped to [0, 1].
    Gaussian,
    /// Photon-counting noise: each sample becomes Poisson(peak · x) / peak.
    Poisson,
    /// Salt and pepper: a fraction --amount of the samples set to 0 or 1.
    Impulse,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Gaussian => "gaussian",
            Kind::Poisson => "poisson",
            Kind::Impulse => "impulse",
        }
    }
}

/// The Gaussian standard deviation used when --sigma is not given (0–255 scale).
const DEFAULT_SIGMA: f32 = 25.0;

#[derive(clap::Args, Debug)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The clean image.
    clean: PathBuf,

    /// Where to write the noisy image (same bit depth and channels as CLEAN).
    #[arg(short, long = "output", value_name = "NOISY")]
    output: PathBuf,

    /// The noise model.
    #[arg(long, value_enum, default_value_t = Kind::Gaussian)]
    kind: Kind,

    /// Gaussian noise: standard deviation on the 0–255 scale [default: 25].
    #[arg(long, value_name = "SIGMA", allow_negative_numbers = true)]
    sigma: Option<f32>,

    /// Poisson noise: the expected photon count of a white sample (lower is noisier; the noise
    /// standard deviation at value x is sqrt(x / PEAK)). Required with --kind poisson.
    #[arg(long, value_name = "PEAK", allow_negative_numbers = true)]
    peak: Option<f64>,

    /// Impulse noise: the fraction of samples (each channel of each pixel on its own) replaced
    /// by black or white, in [0, 1]. Required with --kind impulse.
    #[arg(long, value_name = "FRACTION", allow_negative_numbers = true)]
    amount: Option<f64>,

    /// Seed of the noise: the same seed gives the same noise on every machine.
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,

    /// Overwrite NOISY if it exists.
    #[arg(long)]
    force: bool,
}

/// The checked setting of the chosen noise model.
enum Model {
    Gaussian(f32),
    Poisson(f64),
    Impulse(f64),
}

/// Checks that only the chosen kind's option is given, and that its value is in range.
fn model(args: &Args) -> Result<Model> {
    let kind = args.kind;
    let given = [
        ("--sigma", args.sigma.is_some(), Kind::Gaussian),
        ("--peak", args.peak.is_some(), Kind::Poisson),
        ("--amount", args.amount.is_some(), Kind::Impulse),
    ];
    for (flag, present, owner) in given {
        if present && owner != kind {
            bail!(
                "{flag} is for --kind {}, not --kind {}",
                owner.name(),
                kind.name()
            );
        }
    }
    Ok(match kind {
        Kind::Gaussian => {
            let sigma = args.sigma.unwrap_or(DEFAULT_SIGMA);
            if !(sigma.is_finite() && sigma >= 0.0) {
                bail!("--sigma must be zero or positive, got {sigma}");
            }
            Model::Gaussian(sigma)
        }
        Kind::Poisson => {
            let Some(peak) = args.peak else {
                bail!("--kind poisson needs --peak PEAK, the photon count at white (e.g. 30)");
            };
            if !(peak.is_finite() && peak > 0.0 && peak <= 1e10) {
                bail!("--peak must be positive (and at most 1e10), got {peak}");
            }
            Model::Poisson(peak)
        }
        Kind::Impulse => {
            let Some(amount) = args.amount else {
                bail!(
                    "--kind impulse needs --amount FRACTION, the fraction of samples hit (e.g. 0.1)"
                );
            };
            if !(0.0..=1.0).contains(&amount) {
                bail!("--amount must be a fraction in [0, 1], got {amount}");
            }
            Model::Impulse(amount)
        }
    })
}

pub fn run(args: Args, g: &Global) -> Result<()> {
    let model = model(&args)?;
    check_image_output(&args.output, &[&args.clean], args.force)?;
    let clean = load_image(&args.clean, g)?;
    let (noise, what) = match model {
        Model::Gaussian(sigma) => (
            Noise::Gaussian(sigma as f64),
            format!("gaussian noise, sigma {sigma} (0-255 scale)"),
        ),
        Model::Poisson(peak) => (
            Noise::Poisson(peak),
            format!("poisson noise, peak {peak} photons"),
        ),
        Model::Impulse(amount) => (
            Noise::Impulse(amount),
            format!("impulse noise, {:.1}% of samples", 100.0 * amount),
        ),
    };
    let noisy = noise.apply(&clean, args.seed)?;
    image::save(&noisy, &args.output)?;
    // PSNR of what the file holds, after rounding to its bit depth.
    let saved = image::quantize(&noisy, noisy.bit_depth);
    println!(
        "wrote {}: {what}, seed {}, PSNR {:.2} dB",
        args.output.display(),
        args.seed,
        psnr(&saved.data, &clean.data)
    );
    Ok(())
}

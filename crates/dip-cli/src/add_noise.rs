//! `dip add-noise`: white Gaussian noise, for experiments with a known clean image.

use std::path::PathBuf;

use anyhow::{Result, bail};
use dip::image;
use dip::metrics::psnr;
use dip::noise::add_gaussian_noise;

use crate::Global;
use crate::denoise::load_image;
use crate::output::check_image_output;

const EXAMPLES: &str = "\
Examples:
  dip add-noise clean.png -o noisy.png --sigma 25
  dip add-noise clean.png -o noisy50.png --sigma 50 --seed 7";

#[derive(clap::Args, Debug)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The clean image.
    clean: PathBuf,

    /// Where to write the noisy image (same bit depth and channels as CLEAN).
    #[arg(short, long = "output", value_name = "NOISY")]
    output: PathBuf,

    /// Noise standard deviation on the 0–255 scale.
    #[arg(
        long,
        value_name = "SIGMA",
        default_value_t = 25.0,
        allow_negative_numbers = true
    )]
    sigma: f32,

    /// Seed of the noise: the same seed gives the same noise on every machine.
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,

    /// Overwrite NOISY if it exists.
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args, g: &Global) -> Result<()> {
    if !(args.sigma.is_finite() && args.sigma >= 0.0) {
        bail!("--sigma must be zero or positive, got {}", args.sigma);
    }
    check_image_output(&args.output, &[&args.clean], args.force)?;
    let clean = load_image(&args.clean, g)?;
    let noisy = add_gaussian_noise(&clean, args.sigma, args.seed);
    image::save(&noisy, &args.output)?;
    // PSNR of what the file holds, after rounding to its bit depth.
    let saved = image::quantize(&noisy, noisy.bit_depth);
    println!(
        "wrote {}: sigma {} (0-255 scale), seed {}, PSNR {:.2} dB",
        args.output.display(),
        args.sigma,
        args.seed,
        psnr(&saved.data, &clean.data)
    );
    Ok(())
}

//! `dip eval`: PSNR and SSIM of a result against the clean image.
//!
//! The plain numbers compare every channel of the whole image. The usual super-resolution
//! protocol is `--y-channel --crop-border N`: luma only (ITU-R BT.601, as MATLAB's `rgb2ycbcr`,
//! see [`dip::metrics::rgb_to_y`]) with `N` pixels taken off every side, commonly `N` = the scale
//! factor.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use dip::image::{self, Image};
use dip::metrics::{mse, psnr, rgb_to_y, ssim};
use serde_json::json;

use crate::Global;
use crate::output::{check_writable, write_json};
use crate::task::load_image;

const EXAMPLES: &str = "\
Examples:
  dip eval restored.png clean.png
  dip eval highres.png hr.png --y-channel --crop-border 4
  dip eval restored.png clean.png --json scores.json";

#[derive(clap::Args, Debug)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The image to score (a restoration, or an observation of the same size).
    result: PathBuf,

    /// The ground truth, of the same size and channels as RESULT.
    clean: PathBuf,

    /// Compare the luma Y (ITU-R BT.601, MATLAB rgb2ycbcr) instead of R, G and B, as
    /// super-resolution papers do. Gray images are compared as they are.
    #[arg(long)]
    y_channel: bool,

    /// Leave N pixels out on every side before comparing (super-resolution papers use the
    /// scale factor).
    #[arg(long, value_name = "N", default_value_t = 0)]
    crop_border: usize,

    /// Also write the scores as JSON. Identical images have infinite PSNR, written as null
    /// (the file also holds the MSE, 0 in that case).
    #[arg(long, value_name = "SCORES.json")]
    json: Option<PathBuf>,

    /// Overwrite SCORES.json if it exists.
    #[arg(long)]
    force: bool,
}

/// What `dip eval` measures.
pub struct Scores {
    pub mse: f64,
    /// `f64::INFINITY` for identical images.
    pub psnr: f64,
    pub ssim: f64,
    /// Size compared, after the border crop.
    pub width: usize,
    pub height: usize,
    /// Channels compared (1 with `--y-channel`).
    pub channels: usize,
}

/// Checks that two images can be compared; the message names both files and their shapes.
pub fn check_same_shape(result: &Image, rp: &Path, clean: &Image, cp: &Path) -> Result<()> {
    if (result.width, result.height) != (clean.width, clean.height) {
        bail!(
            "{} is {}x{} but {} is {}x{}; the images must be the same size",
            rp.display(),
            result.width,
            result.height,
            cp.display(),
            clean.width,
            clean.height
        );
    }
    if result.channels != clean.channels {
        let kind = |c: usize| if c == 1 { "gray" } else { "RGB" };
        bail!(
            "{} is {} but {} is {}; both must be gray or both RGB",
            rp.display(),
            kind(result.channels),
            cp.display(),
            kind(clean.channels)
        );
    }
    Ok(())
}

/// Scores `result` against `clean` (same shape), optionally on Y and with a border removed.
pub fn score(result: &Image, clean: &Image, y_channel: bool, crop_border: usize) -> Result<Scores> {
    let (w, h) = (result.width, result.height);
    if 2 * crop_border >= w.min(h) {
        bail!(
            "--crop-border {crop_border} leaves nothing of a {w}x{h} image; it must be less than \
             half the smaller side ({})",
            w.min(h).div_ceil(2)
        );
    }
    let prepare = |img: &Image| -> Result<Image> {
        let img = if y_channel && img.channels == 3 {
            Image::try_new(img.width, img.height, 1, rgb_to_y(img))?
        } else {
            img.clone()
        };
        let b = crop_border;
        Ok(image::crop_rect(&img, b, b, w - 2 * b, h - 2 * b)?)
    };
    let (a, b) = (prepare(result)?, prepare(clean)?);
    Ok(Scores {
        mse: mse(&a.data, &b.data),
        psnr: psnr(&a.data, &b.data),
        ssim: ssim(&a, &b),
        width: a.width,
        height: a.height,
        channels: a.channels,
    })
}

/// PSNR for people: two decimals, or `inf` for identical images.
pub fn format_psnr(p: f64) -> String {
    if p.is_infinite() {
        "inf".to_string()
    } else {
        format!("{p:.2}")
    }
}

pub fn run(args: Args, g: &Global) -> Result<()> {
    if let Some(j) = &args.json {
        check_writable(j, &[&args.result, &args.clean], args.force)?;
    }
    let result = load_image(&args.result, g)?;
    let clean = load_image(&args.clean, g)?;
    check_same_shape(&result, &args.result, &clean, &args.clean)?;
    let s = score(&result, &clean, args.y_channel, args.crop_border)?;
    let mut how = Vec::new();
    if args.y_channel {
        how.push(if result.channels == 3 {
            "Y channel".to_string()
        } else {
            "gray".to_string()
        });
    }
    if args.crop_border > 0 {
        how.push(format!(
            "border {} cropped, {}x{} compared",
            args.crop_border, s.width, s.height
        ));
    }
    let how = if how.is_empty() {
        String::new()
    } else {
        format!(" ({})", how.join(", "))
    };
    println!("PSNR {} dB  SSIM {:.4}{how}", format_psnr(s.psnr), s.ssim);
    if let Some(j) = &args.json {
        let value = json!({
            "result": args.result.display().to_string(),
            "clean": args.clean.display().to_string(),
            "y_channel": args.y_channel,
            "crop_border": args.crop_border,
            "width": s.width,
            "height": s.height,
            "channels": s.channels,
            "mse": s.mse,
            "psnr": if s.psnr.is_finite() { json!(s.psnr) } else { json!(null) },
            "ssim": s.ssim,
        });
        write_json(j, &value)?;
    }
    Ok(())
}

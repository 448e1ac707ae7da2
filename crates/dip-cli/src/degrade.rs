//! `dip degrade`: test observations for `dip inpaint`, `dip sr` and `dip deblur`, made from a
//! clean image with the same forward operators those commands fit through.
//!
//! `y = A(x) + n`: `A` is a mask, the reference Lanczos-2 downsampler or a blur, and `n` optional
//! white Gaussian noise (`--sigma`, 0–255 scale). Everything is seeded, so the same command gives
//! the same files on every machine.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use dip::image;
use dip::metrics::{psnr, ssim};
use dip::operators::{Mask, Operator, Psf};
use dip::task::{Degradation, MaskKind, Noise, Seeds};

use crate::Global;
use crate::eval::format_psnr;
use crate::output::check_image_output;
use crate::task::load_image;

const EXAMPLES: &str = "\
Examples:
  dip degrade clean.png --task inpaint --random-mask 0.5 --mask-out mask.png -o obs.png
  dip degrade clean.png --task inpaint --text-mask --mask-seed 3 --mask-out mask.png -o obs.png
  dip degrade clean.png --task inpaint --mask holes.png -o obs.png
  dip degrade clean.png --task sr --factor 4 -o lr.png --hr-out hr.png --bicubic-out bic.png
  dip degrade clean.png --task sr --factor 8 --crop-to 32 -o lr.png --hr-out hr.png
  dip degrade clean.png --task deblur --psf gaussian:2 --sigma 2 -o blurred.png
  dip degrade phantom.png --task ct --views 60 -o sino.npy --angles-out angles.npy";

/// The kinds of observation `dip degrade` makes.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskKind {
    /// Pixels removed by a mask (white = known), for `dip inpaint`.
    Inpaint,
    /// Lanczos-2 downsampling by --factor, for `dip sr`.
    Sr,
    /// Convolution with --psf, for `dip deblur`.
    Deblur,
    /// A parallel-beam sinogram over --views or --angles, for `dip ct` (written as .npy).
    Ct,
}

impl TaskKind {
    fn name(self) -> &'static str {
        match self {
            TaskKind::Inpaint => "inpaint",
            TaskKind::Sr => "sr",
            TaskKind::Deblur => "deblur",
            TaskKind::Ct => "ct",
        }
    }
}

/// Missing squares drawn by `--block-mask` when `--blocks` is not given.
const DEFAULT_BLOCKS: usize = 8;

#[derive(clap::Args, Debug)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The clean image (PNG, JPEG, BMP or TIFF; gray or RGB; 8 or 16 bits).
    clean: PathBuf,

    /// Which observation to make.
    #[arg(long, value_enum)]
    task: TaskKind,

    /// Where to write the observation (bit depth and channels of CLEAN).
    #[arg(short, long = "output", value_name = "OBS")]
    output: PathBuf,

    /// Inpaint: a mask file of CLEAN's size; white (above half grey in every channel) = known.
    #[arg(long, value_name = "MASK", help_heading = "Inpainting")]
    mask: Option<PathBuf>,

    /// Inpaint: keep each pixel with probability P (the fraction KNOWN, in (0, 1]).
    #[arg(
        long,
        value_name = "P",
        allow_negative_numbers = true,
        help_heading = "Inpainting"
    )]
    random_mask: Option<f64>,

    /// Inpaint: remove --blocks squares of side --block-size at random places.
    #[arg(long, help_heading = "Inpainting")]
    block_mask: bool,

    /// Number of squares of --block-mask [default: 8].
    #[arg(long, value_name = "N", help_heading = "Inpainting")]
    blocks: Option<usize>,

    /// Side of the squares of --block-mask, in pixels [default: an eighth of the smaller side].
    #[arg(long, value_name = "PX", help_heading = "Inpainting")]
    block_size: Option<usize>,

    /// Inpaint: remove pixels under random scribbled "text" strokes.
    #[arg(long, help_heading = "Inpainting")]
    text_mask: bool,

    /// Seed of a generated mask (the same seed as `dip inpaint --mask-seed` gives the same
    /// random mask) [default: 0].
    #[arg(long, value_name = "S", help_heading = "Inpainting")]
    mask_seed: Option<u64>,

    /// Inpaint: where to write the mask (white = known), to pass to `dip inpaint --mask`.
    /// Required for generated masks.
    #[arg(long, value_name = "MASK.png", help_heading = "Inpainting")]
    mask_out: Option<PathBuf>,

    /// SR: the downsampling factor, 2, 4 or 8 (any even factor up to 16).
    #[arg(long, value_name = "F", help_heading = "Super-resolution")]
    factor: Option<usize>,

    /// SR: centre-crop CLEAN to multiples of N (a multiple of the factor; the reference uses
    /// 32) instead of multiples of the factor.
    #[arg(long, value_name = "N", help_heading = "Super-resolution")]
    crop_to: Option<usize>,

    /// SR: refuse, rather than centre-crop, an image whose sides do not divide by the factor.
    #[arg(long, help_heading = "Super-resolution")]
    no_crop: bool,

    /// SR: also write the (cropped) ground truth, the size `dip sr` restores to, for
    /// `dip eval` and `dip sr --clean`.
    #[arg(long, value_name = "HR.png", help_heading = "Super-resolution")]
    hr_out: Option<PathBuf>,

    /// SR: also write the bicubic upscaling of the observation, the baseline to beat.
    #[arg(long, value_name = "BIC.png", help_heading = "Super-resolution")]
    bicubic_out: Option<PathBuf>,

    /// Deblur: the blur: gaussian:SIGMA, gaussian:SIGMA:SIZE, box:SIZE, or the path of a PSF
    /// image (normalised to sum 1).
    #[arg(long, value_name = "SPEC", help_heading = "Deblurring")]
    psf: Option<String>,

    /// CT: N views evenly spaced over [0, 180) degrees.
    #[arg(long, value_name = "N", help_heading = "CT")]
    views: Option<usize>,

    /// CT: the angles in degrees, a 1-D float .npy array.
    #[arg(long, value_name = "ANGLES.npy", help_heading = "CT")]
    angles: Option<PathBuf>,

    /// CT: also write the angles (degrees) as a .npy array, for `dip ct --angles`.
    #[arg(long, value_name = "ANGLES.npy", help_heading = "CT")]
    angles_out: Option<PathBuf>,

    /// White Gaussian noise added after the operator, standard deviation on the 0–255 scale
    /// (for CT: SIGMA / 255 in the sinogram's units, line integrals of pixels in [0, 1]).
    #[arg(
        long,
        value_name = "SIGMA",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    sigma: f32,

    /// Seed of the noise.
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,

    /// Overwrite existing outputs.
    #[arg(long)]
    force: bool,
}

/// Where an inpainting mask comes from.
enum MaskSource<'a> {
    File(&'a Path),
    Random(f64),
    Blocks { n: usize, size: Option<usize> },
    Text,
}

impl Args {
    /// Errors if an option of another task is given; the message names the option and its task.
    fn check_task_options(&self) -> Result<()> {
        use TaskKind::*;
        let options = [
            ("--mask", self.mask.is_some(), Inpaint),
            ("--random-mask", self.random_mask.is_some(), Inpaint),
            ("--block-mask", self.block_mask, Inpaint),
            ("--blocks", self.blocks.is_some(), Inpaint),
            ("--block-size", self.block_size.is_some(), Inpaint),
            ("--text-mask", self.text_mask, Inpaint),
            ("--mask-seed", self.mask_seed.is_some(), Inpaint),
            ("--mask-out", self.mask_out.is_some(), Inpaint),
            ("--factor", self.factor.is_some(), Sr),
            ("--crop-to", self.crop_to.is_some(), Sr),
            ("--no-crop", self.no_crop, Sr),
            ("--hr-out", self.hr_out.is_some(), Sr),
            ("--bicubic-out", self.bicubic_out.is_some(), Sr),
            ("--psf", self.psf.is_some(), Deblur),
            ("--views", self.views.is_some(), Ct),
            ("--angles", self.angles.is_some(), Ct),
            ("--angles-out", self.angles_out.is_some(), Ct),
        ];
        for (flag, given, task) in options {
            if given && task != self.task {
                bail!(
                    "{flag} is an option of --task {}, not --task {}",
                    task.name(),
                    self.task.name()
                );
            }
        }
        if !(self.sigma.is_finite() && self.sigma >= 0.0) {
            bail!("--sigma must be zero or positive, got {}", self.sigma);
        }
        Ok(())
    }

    /// The one mask source given, checked.
    fn mask_source(&self) -> Result<MaskSource<'_>> {
        let given: Vec<&str> = [
            ("--mask", self.mask.is_some()),
            ("--random-mask", self.random_mask.is_some()),
            ("--block-mask", self.block_mask),
            ("--text-mask", self.text_mask),
        ]
        .iter()
        .filter(|(_, g)| *g)
        .map(|(f, _)| *f)
        .collect();
        match given.len() {
            0 => bail!(
                "--task inpaint needs a mask: --mask MASK, --random-mask P, --block-mask or \
                 --text-mask"
            ),
            1 => {}
            _ => bail!("give only one mask: {} were given", given.join(" and ")),
        }
        if (self.blocks.is_some() || self.block_size.is_some()) && !self.block_mask {
            bail!("--blocks and --block-size go with --block-mask");
        }
        if let Some(path) = &self.mask {
            if self.mask_seed.is_some() {
                bail!(
                    "--mask-seed is for generated masks, not --mask {}",
                    path.display()
                );
            }
            return Ok(MaskSource::File(path));
        }
        if self.mask_out.is_none() {
            bail!(
                "{} makes a new mask: pass --mask-out MASK.png to save it (dip inpaint --mask \
                 needs it)",
                given[0]
            );
        }
        if let Some(p) = self.random_mask {
            if !(p > 0.0 && p <= 1.0) {
                bail!("--random-mask must be a fraction of known pixels in (0, 1], got {p}");
            }
            return Ok(MaskSource::Random(p));
        }
        if self.block_mask {
            let n = self.blocks.unwrap_or(DEFAULT_BLOCKS);
            if n == 0 {
                bail!("--blocks must be at least 1");
            }
            if self.block_size == Some(0) {
                bail!("--block-size must be at least 1 pixel");
            }
            return Ok(MaskSource::Blocks {
                n,
                size: self.block_size,
            });
        }
        Ok(MaskSource::Text)
    }

    /// The PSF file, if `--psf` names one rather than a built-in shape.
    fn psf_file(&self) -> Option<&Path> {
        let spec = self.psf.as_deref()?;
        let builtin = ["gaussian:", "gauss:", "box:"]
            .iter()
            .any(|p| spec.starts_with(p));
        (!builtin).then(|| Path::new(spec))
    }
}

/// A path made absolute (without resolving links), to compare output names.
fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Checks every output: a known image extension, not an input, not existing unless --force,
/// and no two outputs the same file.
fn check_outputs(outputs: &[(&str, &Path)], inputs: &[&Path], force: bool) -> Result<()> {
    for (i, (flag, p)) in outputs.iter().enumerate() {
        for (other, q) in &outputs[..i] {
            if absolute(p) == absolute(q) {
                bail!("{}: {other} and {flag} name the same file", p.display());
            }
        }
        check_image_output(p, inputs, force)?;
    }
    Ok(())
}

/// A note on the noise, for the description line.
fn noise_note(args: &Args) -> String {
    if args.sigma > 0.0 {
        format!(", noise sigma {} (seed {})", args.sigma, args.seed)
    } else {
        String::new()
    }
}

/// The seeds of the noise (--seed) and of a generated mask (--mask-seed).
fn seeds(args: &Args) -> Seeds {
    Seeds {
        noise: args.seed,
        mask: args.mask_seed.unwrap_or(0),
    }
}

pub fn run(args: Args, g: &Global) -> Result<()> {
    args.check_task_options()?;
    match args.task {
        TaskKind::Inpaint => inpaint(&args, g),
        TaskKind::Sr => sr(&args, g),
        TaskKind::Deblur => deblur(&args, g),
        TaskKind::Ct => ct(&args, g),
    }
}

fn ct(args: &Args, g: &Global) -> Result<()> {
    let mut inputs: Vec<&Path> = vec![&args.clean];
    inputs.extend(args.angles.as_deref());
    crate::output::check_array_output(&args.output, &inputs, args.force)?;
    if let Some(p) = &args.angles_out {
        if absolute(p) == absolute(&args.output) {
            bail!("{}: -o and --angles-out name the same file", p.display());
        }
        crate::output::check_array_output(p, &inputs, args.force)?;
    }
    let angles = match (&args.angles, args.views) {
        (Some(_), Some(_)) => bail!("give --views or --angles, not both"),
        (Some(p), None) => dip::npy::load_vector(p)?,
        (None, Some(0)) => bail!("--views must be at least 1"),
        (None, Some(n)) => dip::operators::even_angles(n),
        (None, None) => bail!("--task ct needs --views N or --angles ANGLES.npy"),
    };
    let mut clean = load_image(&args.clean, g)?;
    if clean.channels == 3 {
        clean = image::Image::new(clean.width, clean.height, 1, dip::metrics::rgb_to_y(&clean))
            .with_bit_depth(clean.bit_depth);
    }
    let problem = Degradation::Ct {
        angles: angles.clone(),
        sigma: args.sigma as f64 / 255.0,
    }
    .apply(&clean, seeds(args))
    .with_context(|| args.clean.display().to_string())?;
    dip::npy::save_array(&args.output, &problem.observation)?;
    if let Some(p) = &args.angles_out {
        dip::npy::save_vector(p, &angles)?;
    }
    let (_, fbp) = problem.baseline()?.expect("a CT problem has its baseline");
    println!(
        "wrote {}: ct, {} views, {} bins{}; FBP {} dB",
        args.output.display(),
        angles.len(),
        clean.height,
        noise_note(args),
        format_psnr(psnr(&fbp.data, &clean.data))
    );
    Ok(())
}

fn inpaint(args: &Args, g: &Global) -> Result<()> {
    let source = args.mask_source()?;
    let mut inputs: Vec<&Path> = vec![&args.clean];
    inputs.extend(args.mask.as_deref());
    let mut outputs: Vec<(&str, &Path)> = vec![("-o", &args.output)];
    outputs.extend(args.mask_out.as_deref().map(|p| ("--mask-out", p)));
    check_outputs(&outputs, &inputs, args.force)?;

    let clean = load_image(&args.clean, g)?;
    let (w, h) = (clean.width, clean.height);
    let mask = match source {
        MaskSource::File(p) => MaskKind::Given(Mask::from_file(p, w, h)?),
        MaskSource::Random(p) => MaskKind::Random(p),
        MaskSource::Blocks { n, size } => MaskKind::Blocks { count: n, size },
        MaskSource::Text => MaskKind::Text,
    };
    let problem = Degradation::Inpaint {
        mask,
        noise: Noise::gaussian(args.sigma as f64),
    }
    .apply(&clean, seeds(args))
    .map_err(|e| match &args.mask {
        Some(p) => anyhow::anyhow!("{}: {e}", p.display()),
        None => anyhow::anyhow!("the generated mask: {e}"),
    })?;
    let mask = problem.mask().expect("an inpainting problem has its mask");
    // Missing pixels are black in the file (their values are ignored by `dip inpaint`).
    let observation = &problem.observation;
    image::save(observation, &args.output)?;
    if let Some(m) = &args.mask_out {
        image::save(&mask.to_image(), m)?;
    }

    let mut line = format!(
        "wrote {}: inpaint, {}, {w}x{h}{}",
        args.output.display(),
        mask.name(),
        noise_note(args)
    );
    if args.sigma > 0.0 {
        let saved = observation;
        let c = clean.channels;
        let (mut obs, mut gt) = (Vec::new(), Vec::new());
        for (i, _) in mask.known().iter().enumerate().filter(|(_, k)| **k) {
            obs.extend_from_slice(&saved.data[i * c..(i + 1) * c]);
            gt.extend_from_slice(&clean.data[i * c..(i + 1) * c]);
        }
        line.push_str(&format!(
            ", PSNR on known pixels {} dB",
            format_psnr(psnr(&obs, &gt))
        ));
    }
    if let Some(m) = &args.mask_out {
        line.push_str(&format!("; mask in {}", m.display()));
    }
    println!("{line}");
    Ok(())
}

fn sr(args: &Args, g: &Global) -> Result<()> {
    let Some(f) = args.factor else {
        bail!("--task sr needs --factor 2, 4 or 8");
    };
    if !(2..=16).contains(&f) || !f.is_multiple_of(2) {
        bail!("--factor must be 2, 4 or 8 (any even factor up to 16), not {f}");
    }
    if let Some(n) = args.crop_to {
        if args.no_crop {
            bail!("--crop-to and --no-crop contradict each other; give one");
        }
        if n == 0 || !n.is_multiple_of(f) {
            bail!("--crop-to {n} must be a positive multiple of --factor {f} (e.g. 32)");
        }
    }
    let inputs: Vec<&Path> = vec![&args.clean];
    let mut outputs: Vec<(&str, &Path)> = vec![("-o", &args.output)];
    outputs.extend(args.hr_out.as_deref().map(|p| ("--hr-out", p)));
    outputs.extend(args.bicubic_out.as_deref().map(|p| ("--bicubic-out", p)));
    check_outputs(&outputs, &inputs, args.force)?;

    let clean = load_image(&args.clean, g)?;
    let (w, h) = (clean.width, clean.height);
    let multiple = args.crop_to.unwrap_or(f);
    let (cw, ch) = (w - w % multiple, h - h % multiple);
    let cropped = (cw, ch) != (w, h);
    if cropped && args.no_crop && cw > 0 && ch > 0 {
        bail!(
            "{}: the image is {w}x{h}, which does not divide by --factor {f}; drop --no-crop to \
             centre-crop it to {cw}x{ch}",
            args.clean.display()
        );
    }
    let problem = Degradation::Downsample {
        factor: f,
        crop_to: args.crop_to,
        noise: Noise::gaussian(args.sigma as f64),
    }
    .apply(&clean, seeds(args))
    .with_context(|| args.clean.display().to_string())?;
    let hr = problem
        .clean
        .as_ref()
        .expect("a degraded problem has its clean image");
    let lr = &problem.observation;
    // The baseline is made from what the file holds, as `dip sr` would see it.
    let (_, baseline) = problem
        .baseline()?
        .expect("super-resolution has a baseline");
    image::save(lr, &args.output)?;
    if let Some(p) = &args.hr_out {
        image::save(hr, p)?;
    }
    if let Some(p) = &args.bicubic_out {
        image::save(&baseline, p)?;
    }

    let crop_note = if cropped {
        format!(" (centre-cropped from {w}x{h} to multiples of {multiple})")
    } else {
        String::new()
    };
    let mut line = format!(
        "wrote {}: sr, {}, {cw}x{ch}{crop_note} -> {}x{}{}, bicubic baseline PSNR {} dB SSIM {:.4}",
        args.output.display(),
        problem.operator.name(),
        lr.width,
        lr.height,
        noise_note(args),
        format_psnr(psnr(&baseline.data, &hr.data)),
        ssim(&baseline, hr)
    );
    if let Some(p) = &args.hr_out {
        line.push_str(&format!("; ground truth in {}", p.display()));
    }
    if let Some(p) = &args.bicubic_out {
        line.push_str(&format!("; bicubic in {}", p.display()));
    }
    println!("{line}");
    if cropped && args.hr_out.is_none() && !g.quiet {
        eprintln!(
            "note: the ground truth is the central {cw}x{ch} part of {}; pass --hr-out HR.png to \
             save it for dip eval and dip sr --clean",
            args.clean.display()
        );
    }
    Ok(())
}

fn deblur(args: &Args, g: &Global) -> Result<()> {
    let Some(spec) = &args.psf else {
        bail!("--task deblur needs --psf SPEC (gaussian:SIGMA, box:SIZE or a PSF image)");
    };
    let psf = Psf::parse(spec)?;
    let mut inputs: Vec<&Path> = vec![&args.clean];
    inputs.extend(args.psf_file());
    check_outputs(&[("-o", &args.output)], &inputs, args.force)?;

    let clean = load_image(&args.clean, g)?;
    let problem = Degradation::Blur {
        psf,
        noise: Noise::gaussian(args.sigma as f64),
    }
    .apply(&clean, seeds(args))
    .with_context(|| args.clean.display().to_string())?;
    let saved = &problem.observation;
    image::save(saved, &args.output)?;
    println!(
        "wrote {}: deblur, {}, {}x{}{}, PSNR {} dB SSIM {:.4}",
        args.output.display(),
        problem.operator.name(),
        clean.width,
        clean.height,
        noise_note(args),
        format_psnr(psnr(&saved.data, &clean.data)),
        ssim(saved, &clean)
    );
    Ok(())
}

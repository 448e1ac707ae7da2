//! `dip inpaint`, `dip sr` and `dip deblur`: the Deep Image Prior through a forward operator.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use dip::image::{self, Image};
use dip::metrics::psnr;
use dip::operators::{
    Blur, Downsample, HARMONIC_ROUNDS, Mask, Operator, Psf, bicubic_upscale, harmonic_fill,
};
use serde_json::json;

use crate::output::check_image_output;
use crate::task::{Common, Task, load_image, run_task};
use crate::{Global, Outcome};

/// Errors unless `clean` has the size and channels of the image being restored.
fn check_clean(clean: Option<&Image>, path: Option<&Path>, op: &dyn Operator) -> Result<()> {
    if let (Some(c), Some(p)) = (clean, path) {
        let (w, h, ch) = op.input_shape();
        if (c.width, c.height) != (w, h) {
            bail!(
                "{}: the clean image is {}x{} but the result will be {w}x{h}",
                p.display(),
                c.width,
                c.height
            );
        }
        if c.channels != ch {
            bail!(
                "{}: the clean image has {} channel(s) but the result will have {ch}",
                p.display(),
                c.channels
            );
        }
    }
    Ok(())
}

const INPAINT_EXAMPLES: &str = "\
Examples:
  dip inpaint kate.png --mask kate_mask.png -o kate-restored.png
  dip inpaint vase.png --mask vase_mask.png -o vase-restored.png --preset inpaint-vase
  dip inpaint barbara.png --random-mask 0.5 --mask-out mask.png -o restored.png --json run.json";

#[derive(clap::Args, Debug)]
#[command(after_help = INPAINT_EXAMPLES)]
pub struct InpaintArgs {
    /// The image with missing pixels (their values are ignored). With --random-mask, the full
    /// image, from which only the drawn fraction of pixels is kept.
    image: PathBuf,

    /// Mask file of the same size: white (above half grey in every channel) = known pixel.
    #[arg(
        long,
        value_name = "MASK",
        conflicts_with = "random_mask",
        required_unless_present = "random_mask"
    )]
    mask: Option<PathBuf>,

    /// Keep a random fraction P of the pixels (Bernoulli, from --mask-seed) and restore the rest.
    /// PSNR is then reported against IMAGE itself unless --clean is given.
    #[arg(long, value_name = "P")]
    random_mask: Option<f64>,

    /// Seed of the random mask.
    #[arg(long, value_name = "S", default_value_t = 0)]
    mask_seed: u64,

    /// Also write the mask used (white = known).
    #[arg(long, value_name = "MASK.png")]
    mask_out: Option<PathBuf>,

    #[command(flatten)]
    common: Common,
}

pub fn inpaint(args: InpaintArgs, g: &Global) -> Result<Outcome> {
    let random = args.random_mask.is_some();
    let preset = args
        .common
        .recipe
        .preset_name(if random { "inpaint-random" } else { "inpaint" })
        .to_string();
    let recipe = args.common.recipe.resolve(&preset)?;
    recipe.fit_config()?;
    if let Some(p) = args.random_mask
        && !(p > 0.0 && p <= 1.0)
    {
        bail!("--random-mask must be a fraction of known pixels in (0, 1], got {p}");
    }
    let out = args.common.outputs();
    let mut inputs: Vec<&Path> = vec![&args.image];
    inputs.extend(args.mask.as_deref());
    inputs.extend(args.common.clean.as_deref());
    out.check(&inputs)?;
    if let Some(m) = &args.mask_out {
        if m == &args.common.output {
            bail!("{}: --mask-out and -o name the same file", m.display());
        }
        check_image_output(m, &inputs, args.common.force)?;
    }

    let img = load_image(&args.image, g)?;
    let mask = match (&args.mask, args.random_mask) {
        (Some(path), _) => Mask::from_file(path, img.width, img.height)?,
        (None, Some(p)) => Mask::random(img.width, img.height, p, args.mask_seed)?,
        (None, None) => bail!("give --mask MASK or --random-mask P"),
    };
    if mask.known().iter().all(|k| !k) {
        let what = args
            .mask
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "the random mask".into());
        bail!("{what}: the mask has no known pixel (all black), so there is nothing to fit");
    }
    if mask.known().iter().all(|&k| k) && !g.quiet {
        eprintln!(
            "note: the mask marks every pixel as known; the fit will only reproduce the image"
        );
    }
    let mask = mask.with_channels(img.channels);
    let observation = mask.apply(&img)?;
    if let Some(m) = &args.mask_out {
        image::save(&mask.to_image(), m)?;
    }
    let mut clean = args.common.load_clean(g)?;
    check_clean(clean.as_ref(), args.common.clean.as_deref(), &mask)?;
    if clean.is_none() && random {
        clean = Some(img.clone());
    }
    if !g.quiet && !random {
        eprintln!(
            "inpaint: {:.1}% of the pixels are known",
            100.0 * mask.known_fraction()
        );
    }
    // The classical fill, printed beside the result when the clean image is known.
    let fill = match &clean {
        Some(c) => Some(psnr(
            &harmonic_fill(&observation, &mask, HARMONIC_ROUNDS)?.data,
            &c.data,
        )),
        None => None,
    };
    let task = Task {
        command: "inpaint",
        observation: &observation,
        operator: &mask,
        clean: clean.as_ref(),
        baseline: fill.map(|p| ("harmonic fill", p)),
        max_memory: args.common.recipe.max_memory()?,
        stop: args.common.stop.clone(),
        extra: vec![
            ("input", json!(args.image.display().to_string())),
            (
                "mask",
                json!(args.mask.as_ref().map(|p| p.display().to_string())),
            ),
            ("random_mask", json!(args.random_mask)),
            ("mask_seed", json!(args.mask_seed)),
            ("known_fraction", json!(mask.known_fraction())),
        ],
    };
    run_task(task, &recipe, &preset, &out, g)
}

const SR_EXAMPLES: &str = "\
Examples:
  dip sr lowres.png --factor 4 -o highres.png
  dip sr lowres.png --factor 4 -o highres.png --clean hr.png --json run.json
  dip sr lowres.png --factor 8 -o highres.png --iters 1000";

#[derive(clap::Args, Debug)]
#[command(after_help = SR_EXAMPLES)]
pub struct SrArgs {
    /// The low-resolution image.
    lowres: PathBuf,

    /// Upscaling factor: 2, 4 or 8 (any even factor up to 16). The result is FACTOR times
    /// larger; the model is the reference Lanczos-2 downsampler.
    #[arg(long, value_name = "F")]
    factor: usize,

    #[command(flatten)]
    common: Common,
}

pub fn sr(args: SrArgs, g: &Global) -> Result<Outcome> {
    let f = args.factor;
    let preset = args
        .common
        .recipe
        .preset_name(if f >= 8 { "sr8" } else { "sr4" })
        .to_string();
    let recipe = args.common.recipe.resolve(&preset)?;
    recipe.fit_config()?;
    if !(2..=16).contains(&f) || !f.is_multiple_of(2) {
        bail!("--factor must be 2, 4 or 8 (any even factor up to 16), not {f}");
    }
    let out = args.common.outputs();
    let mut inputs: Vec<&Path> = vec![&args.lowres];
    inputs.extend(args.common.clean.as_deref());
    out.check(&inputs)?;

    let lr = load_image(&args.lowres, g)?;
    let (w, h) = (lr.width * f, lr.height * f);
    let down = Downsample::new(w, h, lr.channels, f)
        .with_context(|| format!("{}", args.lowres.display()))?;
    let clean = args.common.load_clean(g)?;
    if let (Some(c), Some(p)) = (&clean, &args.common.clean)
        && (c.width, c.height) != (w, h)
    {
        let hint = if c.width % f != 0 || c.height % f != 0 {
            format!(
                "; its size does not divide by {f}: crop it to a multiple of {f} (dip degrade --task sr does)"
            )
        } else {
            String::new()
        };
        bail!(
            "{}: the clean image is {}x{} but {} x{f} is {w}x{h}{hint}",
            p.display(),
            c.width,
            c.height,
            args.lowres.display()
        );
    }
    check_clean(clean.as_ref(), args.common.clean.as_deref(), &down)?;
    let bicubic = clean
        .as_ref()
        .map(|c| -> Result<f64> { Ok(psnr(&bicubic_upscale(&lr, f)?.data, &c.data)) })
        .transpose()?;
    let task = Task {
        command: "sr",
        observation: &lr,
        operator: &down,
        clean: clean.as_ref(),
        baseline: bicubic.map(|p| ("bicubic", p)),
        max_memory: args.common.recipe.max_memory()?,
        stop: args.common.stop.clone(),
        extra: vec![
            ("input", json!(args.lowres.display().to_string())),
            ("factor", json!(f)),
        ],
    };
    let outcome = run_task(task, &recipe, &preset, &out, g)?;
    // The super-resolution protocol: Y channel, `factor` pixels of border cropped, on what the
    // files hold.
    if let Some(c) = &clean
        && 2 * f < c.width.min(c.height)
    {
        let (result, _) = image::load(&out.image)?;
        let bic = image::quantize(&bicubic_upscale(&lr, f)?, c.bit_depth);
        let dip_y = crate::eval::score(&result, c, true, f)?;
        let bic_y = crate::eval::score(&bic, c, true, f)?;
        println!(
            "PSNR Y, border {f}: {:.2} dB (bicubic {:.2} dB)",
            dip_y.psnr, bic_y.psnr
        );
    }
    Ok(outcome)
}

const DEBLUR_EXAMPLES: &str = "\
Examples:
  dip deblur blurred.png --psf gaussian:2 -o sharp.png
  dip deblur blurred.png --psf box:5 -o sharp.png --clean clean.png
  dip deblur blurred.png --psf psf.png -o sharp.png";

#[derive(clap::Args, Debug)]
#[command(after_help = DEBLUR_EXAMPLES)]
pub struct DeblurArgs {
    /// The blurred image.
    blurred: PathBuf,

    /// The blur: gaussian:SIGMA, gaussian:SIGMA:SIZE, box:SIZE, or the path of a PSF image
    /// (normalised to sum 1).
    #[arg(long, value_name = "SPEC")]
    psf: String,

    #[command(flatten)]
    common: Common,
}

pub fn deblur(args: DeblurArgs, g: &Global) -> Result<Outcome> {
    let preset = args.common.recipe.preset_name("deblur").to_string();
    let recipe = args.common.recipe.resolve(&preset)?;
    recipe.fit_config()?;
    let psf = Psf::parse(&args.psf)?;
    let out = args.common.outputs();
    let mut inputs: Vec<&Path> = vec![&args.blurred];
    inputs.extend(args.common.clean.as_deref());
    out.check(&inputs)?;

    let blurred = load_image(&args.blurred, g)?;
    let blur = Blur::new(psf, blurred.width, blurred.height, blurred.channels)
        .with_context(|| format!("{}", args.blurred.display()))?;
    let clean = args.common.load_clean(g)?;
    check_clean(clean.as_ref(), args.common.clean.as_deref(), &blur)?;
    let task = Task {
        command: "deblur",
        observation: &blurred,
        operator: &blur,
        clean: clean.as_ref(),
        baseline: None,
        max_memory: args.common.recipe.max_memory()?,
        stop: args.common.stop.clone(),
        extra: vec![
            ("input", json!(args.blurred.display().to_string())),
            ("psf", json!(args.psf)),
        ],
    };
    run_task(task, &recipe, &preset, &out, g)
}

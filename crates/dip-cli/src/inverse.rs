//! `dip inpaint`, `dip sr` and `dip deblur`: the Deep Image Prior through a forward operator.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use dip::image::{self, Image};
use dip::operators::{Mask, Psf, bicubic_upscale};
use dip::task::Problem;
use serde_json::json;

use crate::output::check_image_output;
use crate::task::{Common, Task, load_image, run_task};
use crate::{Global, Outcome};

/// `problem` with the clean image, if one was given (its path names a mismatch).
fn with_clean(problem: Problem, clean: Option<Image>, path: Option<&Path>) -> Result<Problem> {
    match (clean, path) {
        (Some(c), Some(p)) => problem
            .with_clean(c)
            .with_context(|| p.display().to_string()),
        (Some(c), None) => Ok(problem.with_clean(c)?),
        (None, _) => Ok(problem),
    }
}

/// Adds `--clean` and a known noise level (`--stop-sigma`) to `problem`, and restores it as
/// `command` with the summary's `extra` fields: the end of every fitting command here.
fn finish(
    problem: Problem,
    common: &Common,
    command: &'static str,
    extra: Vec<(&'static str, serde_json::Value)>,
    (recipe, preset): (&dip::recipe::Recipe, &str),
    out: &crate::task::Outputs,
    g: &Global,
) -> Result<Outcome> {
    let problem = with_clean(problem, common.load_clean(g)?, common.clean.as_deref())?;
    let task = Task {
        command,
        problem: common.stop.with_sigma(problem)?,
        max_memory: common.recipe.max_memory()?,
        extra,
    };
    run_task(task, recipe, preset, out, g)
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
    let (preset, recipe) =
        args.common
            .resolve(if random { "inpaint-random" } else { "inpaint" })?;
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
    let known_fraction = mask.known_fraction();
    if let Some(m) = &args.mask_out {
        image::save(&mask.clone().with_channels(img.channels).to_image(), m)?;
    }
    let clean = args.common.load_clean(g)?;
    let truth = match (&clean, random) {
        (None, true) => Some(img.clone()),
        _ => None,
    };
    let problem = Problem::inpaint(img, mask)?;
    let mut problem = with_clean(problem, clean, args.common.clean.as_deref())?;
    if let Some(t) = truth {
        problem = problem.with_clean(t)?;
    }
    let problem = args.common.stop.with_sigma(problem)?;
    if !g.quiet && !random {
        eprintln!(
            "inpaint: {:.1}% of the pixels are known",
            100.0 * known_fraction
        );
    }
    let task = Task {
        command: "inpaint",
        problem,
        max_memory: args.common.recipe.max_memory()?,
        extra: vec![
            ("input", json!(args.image.display().to_string())),
            (
                "mask",
                json!(args.mask.as_ref().map(|p| p.display().to_string())),
            ),
            ("random_mask", json!(args.random_mask)),
            ("mask_seed", json!(args.mask_seed)),
            ("known_fraction", json!(known_fraction)),
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
    let (preset, recipe) = args.common.resolve(if f >= 8 { "sr8" } else { "sr4" })?;
    if !(2..=16).contains(&f) || !f.is_multiple_of(2) {
        bail!("--factor must be 2, 4 or 8 (any even factor up to 16), not {f}");
    }
    let out = args.common.outputs();
    let mut inputs: Vec<&Path> = vec![&args.lowres];
    inputs.extend(args.common.clean.as_deref());
    out.check(&inputs)?;

    let lr = load_image(&args.lowres, g)?;
    let (w, h) = (lr.width * f, lr.height * f);
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
    let problem = Problem::super_resolve(lr.clone(), f)
        .with_context(|| format!("{}", args.lowres.display()))?;
    let problem = with_clean(problem, clean.clone(), args.common.clean.as_deref())?;
    let problem = args.common.stop.with_sigma(problem)?;
    let task = Task {
        command: "sr",
        problem,
        max_memory: args.common.recipe.max_memory()?,
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
    let (preset, recipe) = args.common.resolve("deblur")?;
    let psf = Psf::parse(&args.psf)?;
    let out = args.common.outputs();
    let mut inputs: Vec<&Path> = vec![&args.blurred];
    inputs.extend(args.common.clean.as_deref());
    out.check(&inputs)?;

    let blurred = load_image(&args.blurred, g)?;
    let problem =
        Problem::deblur(blurred, psf).with_context(|| format!("{}", args.blurred.display()))?;
    let extra = vec![
        ("input", json!(args.blurred.display().to_string())),
        ("psf", json!(args.psf)),
    ];
    finish(
        problem,
        &args.common,
        "deblur",
        extra,
        (&recipe, &preset),
        &out,
        g,
    )
}

const CT_EXAMPLES: &str = "\
Examples:
  dip phantom --size 128 -o phantom.png
  dip degrade phantom.png --task ct --views 60 -o sino.npy --angles-out angles.npy
  dip ct sino.npy --views 60 -o recon.png --clean phantom.png
  dip ct sino.npy --angles angles.npy -o recon.png --fbp-out fbp.png";

#[derive(clap::Args, Debug)]
#[command(after_help = CT_EXAMPLES)]
pub struct CtArgs {
    /// The sinogram: a float .npy array of n detector bins by one column per angle, the layout
    /// of scikit-image's radon(x, theta, circle=True); the image restored is n x n.
    sinogram: PathBuf,

    /// The angles in degrees, as a 1-D float .npy array.
    #[arg(long, value_name = "ANGLES.npy", conflicts_with = "views")]
    angles: Option<PathBuf>,

    /// N views evenly spaced over [0, 180) degrees: linspace(0, 180, N, endpoint=False).
    #[arg(long, value_name = "N", required_unless_present = "angles")]
    views: Option<usize>,

    /// Also write the filtered back projection (Ram-Lak), the classical baseline.
    #[arg(long, value_name = "FBP.png")]
    fbp_out: Option<PathBuf>,

    #[command(flatten)]
    common: Common,
}

pub fn ct(args: CtArgs, g: &Global) -> Result<Outcome> {
    let (preset, recipe) = args.common.resolve("deblur")?;
    let out = args.common.outputs();
    let mut inputs: Vec<&Path> = vec![&args.sinogram];
    inputs.extend(args.angles.as_deref());
    inputs.extend(args.common.clean.as_deref());
    out.check(&inputs)?;
    if let Some(p) = &args.fbp_out {
        check_image_output(p, &inputs, args.common.force)?;
    }
    let sino = dip::npy::load_array(&args.sinogram)?;
    let angles = match (&args.angles, args.views) {
        (Some(p), _) => dip::npy::load_vector(p)?,
        (None, Some(0)) => bail!("--views must be at least 1"),
        (None, Some(n)) => dip::operators::even_angles(n),
        (None, None) => bail!("give --views N or --angles ANGLES.npy"),
    };
    let problem =
        Problem::ct(sino, &angles).with_context(|| format!("{}", args.sinogram.display()))?;
    if let Some(p) = &args.fbp_out {
        let (_, fbp) = problem.baseline()?.expect("a CT problem has its baseline");
        image::save(&fbp, p)?;
    }
    let extra = vec![
        ("input", json!(args.sinogram.display().to_string())),
        ("views", json!(angles.len())),
    ];
    finish(
        problem,
        &args.common,
        "ct",
        extra,
        (&recipe, &preset),
        &out,
        g,
    )
}

#[derive(clap::Args, Debug)]
pub struct PhantomArgs {
    /// Side of the (square, gray) image.
    #[arg(long, value_name = "N", default_value_t = 128)]
    size: usize,

    /// Where to write it (PNG, 16 bits).
    #[arg(short, long = "output", value_name = "OUT.png")]
    output: PathBuf,

    /// Overwrite an existing file.
    #[arg(long)]
    force: bool,
}

/// `dip phantom`: the modified Shepp-Logan head phantom.
pub fn phantom(args: PhantomArgs) -> Result<()> {
    if args.size < 2 {
        bail!("--size must be at least 2, got {}", args.size);
    }
    check_image_output(&args.output, &[], args.force)?;
    let img = dip::operators::shepp_logan(args.size).with_bit_depth(image::BitDepth::Sixteen);
    image::save(&img, &args.output)?;
    println!("wrote {}", args.output.display());
    Ok(())
}

const RESTORE_EXAMPLES: &str = "\
Examples:
  dip restore y.npy --operator A.mtx --size 64x64 -o x.png
  dip restore y.npy --operator A.npz --size 64x64x3 -o x.png --clean truth.png
  (A.npz from scipy.sparse.save_npz; A maps the image, flattened row by row with the channels
  innermost, to the measurements y)";

#[derive(clap::Args, Debug)]
#[command(after_help = RESTORE_EXAMPLES)]
pub struct RestoreArgs {
    /// The measurements: a float .npy vector (or array, flattened row by row).
    observation: PathBuf,

    /// The forward model: a sparse matrix, Matrix Market (.mtx) or scipy.sparse.save_npz (.npz).
    #[arg(long, value_name = "A.mtx|A.npz")]
    operator: PathBuf,

    /// The image to restore: WxH (gray) or WxHxC (C = 1 or 3); W·H·C must be A's columns.
    #[arg(long, value_name = "WxH[xC]")]
    size: String,

    /// CGLS steps of the least-squares baseline printed beside the result.
    #[arg(long, value_name = "N", default_value_t = 50)]
    lsq_steps: usize,

    #[command(flatten)]
    common: Common,
}

/// `W x H [x C]`.
fn parse_size(s: &str) -> Result<(usize, usize, usize)> {
    let v: Vec<usize> = s
        .split(['x', 'X'])
        .map(|p| p.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("--size {s}: expected WxH or WxHxC, e.g. 64x64"))?;
    match v[..] {
        [w, h] if w > 0 && h > 0 => Ok((w, h, 1)),
        [w, h, c] if w > 0 && h > 0 && (c == 1 || c == 3) => Ok((w, h, c)),
        _ => bail!("--size {s}: expected WxH or WxHxC with C = 1 or 3, all above zero"),
    }
}

pub fn restore(args: RestoreArgs, g: &Global) -> Result<Outcome> {
    let (preset, recipe) = args.common.resolve("deblur")?;
    let size = parse_size(&args.size)?;
    let out = args.common.outputs();
    let mut inputs: Vec<&Path> = vec![&args.observation, &args.operator];
    inputs.extend(args.common.clean.as_deref());
    out.check(&inputs)?;
    let op = dip::operators::MatrixOperator::from_file(&args.operator, size)?;
    let y = dip::npy::load_array(&args.observation)?;
    let m = op.rows_count();
    if y.data.len() != m {
        bail!(
            "{}: {} measurements, but {} has {m} rows",
            args.observation.display(),
            y.data.len(),
            args.operator.display()
        );
    }
    let y = Image::try_new(1, m, 1, y.data)?.with_bit_depth(image::BitDepth::Sixteen);
    let problem = Problem::new(y, Box::new(op))?.with_least_squares_baseline(args.lsq_steps);
    let extra = vec![
        ("input", json!(args.observation.display().to_string())),
        ("operator", json!(args.operator.display().to_string())),
    ];
    finish(
        problem,
        &args.common,
        "restore",
        extra,
        (&recipe, &preset),
        &out,
        g,
    )
}

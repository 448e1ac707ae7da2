//! `dip gp`: the Gaussian-process view of the Deep Image Prior.
//!
//! - `prior`: the network's output distribution at initialisation, by Monte Carlo.
//! - `denoise`, `inpaint`: GP regression with the DIP kernel (or an RBF baseline).
//! - `rates`: the kernel eigenvalue per frequency band, by probing the Jacobian, against the
//!   band half-times a fit measures.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use dip::engine::PadMode;
use dip::fit::{BandRecorder, FitConfig, estimate_sigma, fit_denoise};
use dip::gp::{
    Boundary, CgConfig, Kernel, Prior, PriorConfig, PriorStats, RatesConfig, band_eigenvalues,
    gp_denoise, gp_inpaint, predict_half_times, sample_prior,
};
use dip::image::{self, Image};
use dip::metrics::{psnr, rgb_to_y};
use dip::nets::{Arch, SkipSpec};
use dip::operators::Mask;
use dip::report::page::{Block, Page, Series, line_chart, markdown_table};
use dip::spectral::{BandSpacing, Bands};
use serde_json::json;

use crate::analyze::prepare_folder;
use crate::output::{check_image_output, write_json, write_text};
use crate::recipe::RecipeArgs;
use crate::task::load_image;
use crate::{Global, Outcome};

#[derive(clap::Subcommand, Debug)]
pub enum Which {
    /// The prior at initialisation: draw networks at random and measure their outputs' mean,
    /// covariance (the kernel), power spectrum, Gaussianity and stationarity.
    Prior(PriorArgs),
    /// Denoise with the GP posterior mean (a Wiener filter) under the DIP kernel or an RBF.
    Denoise(DenoiseArgs),
    /// Inpaint with GP regression (conjugate gradients) under the DIP kernel or an RBF.
    Inpaint(InpaintArgs),
    /// Predict each frequency band's half-time from the network's kernel eigenvalue there, and
    /// compare with the half-times a fit measures.
    Rates(RatesArgs),
}

pub fn run(w: Which, g: &Global) -> Result<Outcome> {
    match w {
        Which::Prior(a) => prior(a, g),
        Which::Denoise(a) => denoise(a, g),
        Which::Inpaint(a) => inpaint(a, g),
        Which::Rates(a) => rates(a, g),
    }
    .map(|()| Outcome::Done)
}

const PRIOR_EXAMPLES: &str = "\
Examples:
  dip gp prior --arch skip -o prior/
  dip gp prior --arch skip --widths 16,32,64,128 --samples 512 -o prior-widths/
  dip gp prior --arch skip --pad zero -o prior-zero/
  dip gp prior --arch decoder-64 --size 64 -o prior-decoder/";

/// Which network, for the GP commands.
#[derive(clap::Args, Debug, Clone)]
pub struct NetArgs {
    /// The architecture (skip, linear-W, relunet, decoder-K, convgen2).
    #[arg(long, default_value = "skip", value_name = "NAME")]
    arch: String,

    /// Padding of the skip network's convolutions [default: reflection, as the reference].
    #[arg(long, value_enum)]
    pad: Option<PadArg>,

    /// Output channels: 1 (gray) or 3 (colour).
    #[arg(long, default_value_t = 1, value_name = "C")]
    channels: usize,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
enum PadArg {
    Zero,
    Reflection,
}

impl NetArgs {
    /// The network, with `width` channels (units) where given.
    fn arch(&self, width: Option<usize>) -> Result<Arch> {
        if self.channels != 1 && self.channels != 3 {
            bail!("--channels must be 1 or 3, got {}", self.channels);
        }
        let mut arch = match (self.arch.as_str(), width) {
            ("skip", Some(w)) => Arch::Skip(SkipSpec::uniform(32, self.channels, 5, w, 4)),
            (name, w) => Arch::named(name, 32, self.channels, w)?,
        };
        if let (Some(p), Arch::Skip(s)) = (self.pad, &mut arch) {
            s.pad = match p {
                PadArg::Zero => PadMode::Zero,
                PadArg::Reflection => PadMode::Reflection,
            };
        } else if self.pad.is_some() {
            bail!("--pad applies to the skip network only");
        }
        Ok(arch)
    }
}

#[derive(clap::Args, Debug)]
#[command(after_help = PRIOR_EXAMPLES)]
pub struct PriorArgs {
    #[command(flatten)]
    net: NetArgs,

    /// Independent initialisations (weights and input noise).
    #[arg(long, default_value_t = 256, value_name = "N")]
    samples: usize,

    /// Output side in pixels.
    #[arg(long, default_value_t = 64, value_name = "S")]
    size: usize,

    /// Also measure these widths (channels of the skip network and the deep decoder, units of
    /// DIP-Linear and ReLUNet), comma-separated, e.g. 16,32,64,128.
    #[arg(long, value_delimiter = ',', value_name = "W,…")]
    widths: Vec<usize>,

    /// Largest displacement of the saved kernel [default: size/2].
    #[arg(long, value_name = "R")]
    radius: Option<usize>,

    #[arg(long, default_value_t = 0)]
    seed: u64,

    /// Output folder: prior.json, kernel.json (for `--kernel FILE`), kernel.png, index.html.
    #[arg(short, long = "output", value_name = "DIR")]
    output: PathBuf,

    /// Write into a non-empty folder.
    #[arg(long)]
    force: bool,
}

fn prior(a: PriorArgs, g: &Global) -> Result<()> {
    if a.samples < 2 {
        bail!("--samples must be at least 2, got {}", a.samples);
    }
    let widths: Vec<Option<usize>> = if a.widths.is_empty() {
        vec![None]
    } else {
        a.widths.iter().map(|&w| Some(w)).collect()
    };
    // Check every network before the first long run.
    let arches: Vec<Arch> = widths
        .iter()
        .map(|&w| a.net.arch(w))
        .collect::<Result<_>>()?;
    prepare_folder(&a.output, a.force)?;
    let cfg = PriorConfig {
        samples: a.samples,
        size: a.size,
        seed: a.seed,
        radius: a.radius,
        device: g.device,
        ..PriorConfig::default()
    };
    let mut all: Vec<(String, PriorStats)> = Vec::new();
    for (w, arch) in widths.iter().zip(&arches) {
        let label = match w {
            Some(w) => format!("{} width {w}", arch.label()),
            None => arch.label(),
        };
        if !g.quiet {
            eprintln!(
                "sampling {} initialisations of {label} at {s}x{s}",
                a.samples,
                s = a.size
            );
        }
        let stats = sample_prior(arch, &cfg).map_err(|e| anyhow::anyhow!("{label}: {e}"))?;
        all.push((label, stats));
    }
    let (main_label, main) = all.last().expect("at least one width");
    write_json(
        &a.output.join("kernel.json"),
        &serde_json::to_value(&main.kernel)?,
    )?;
    image::save(&kernel_image(&main.kernel), &a.output.join("kernel.png"))?;
    write_json(
        &a.output.join("prior.json"),
        &json!({
            "version": env!("CARGO_PKG_VERSION"),
            "samples": a.samples,
            "size": a.size,
            "runs": all.iter().map(|(l, s)| json!({"label": l, "stats": s})).collect::<Vec<_>>(),
        }),
    )?;
    // Tables and charts.
    let header: Vec<String> = [
        "network",
        "mean",
        "variance",
        "mean map std",
        "excess kurtosis",
        "corr(1)",
        "corr(4)",
        "worst anchor residual",
        "MC floor",
        "seconds",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|(l, s)| {
            let k = s.kernel.normalised();
            let worst = s
                .anchors
                .iter()
                .max_by(|x, y| x.residual.total_cmp(&y.residual))
                .expect("anchors");
            vec![
                l.clone(),
                format!("{:.4}", s.mean),
                format!("{:.3e}", s.variance),
                format!("{:.3e}", s.mean_map_std),
                format!("{:.3}", s.excess_kurtosis),
                format!("{:.3}", k.at(0, 1)),
                format!("{:.3}", k.at(0, 4.min(k.radius as isize))),
                format!("{:.3} ({})", worst.residual, worst.name),
                format!("{:.3}", worst.mc_floor),
                format!("{:.1}", s.seconds),
            ]
        })
        .collect();
    let anchor_header: Vec<String> = std::iter::once("anchor".to_string())
        .chain(all.iter().map(|(l, _)| format!("{l}: residual / MC floor")))
        .collect();
    let anchor_rows: Vec<Vec<String>> = main
        .anchors
        .iter()
        .enumerate()
        .map(|(i, an)| {
            std::iter::once(an.name.clone())
                .chain(all.iter().map(|(_, s)| {
                    format!(
                        "{:.3} / {:.3}",
                        s.anchors[i].residual, s.anchors[i].mc_floor
                    )
                }))
                .collect()
        })
        .collect();
    let profile: Vec<Series> = all
        .iter()
        .enumerate()
        .map(|(i, (l, s))| Series {
            name: l.clone(),
            points: s.kernel.normalised().radial_profile(),
            color: i,
            dashed: false,
        })
        .collect();
    let power: Vec<Series> = all
        .iter()
        .enumerate()
        .map(|(i, (l, s))| Series {
            name: l.clone(),
            points: s.power.iter().filter(|p| p.0 > 0.0).copied().collect(),
            color: i,
            dashed: false,
        })
        .collect();
    let mut page = Page::new(format!("DIP prior at initialisation: {main_label}"));
    page.push(Block::Text(format!(
        "{} independent initialisations (weights and input noise) at {1}x{1}, forward passes \
         only. The kernel is the covariance of the outputs as a function of displacement, \
         averaged over positions; the anchors compare the covariance around single pixels with \
         it (residual relative to the kernel's norm over a {2}x{2} window; the MC floor is the \
         sampling error on the same scale).",
        a.samples,
        a.size,
        2 * cfg.anchor_radius + 1
    )));
    page.push(Block::Table {
        header: header.clone(),
        rows: rows.clone(),
    });
    page.push(Block::Html(format!(
        "<p>Kernel of {main_label} (normalised, centre = zero displacement):</p>\
         <img src=\"kernel.png\" width=\"256\" style=\"image-rendering: pixelated\">"
    )));
    page.push(Block::Svg(line_chart(
        "Kernel radial profile (correlation)",
        "displacement (pixels)",
        "correlation",
        &profile,
        false,
    )?));
    page.push(Block::Svg(line_chart(
        "Radial power spectrum E|F(f)|²/N",
        "frequency (cycles/pixel)",
        "power",
        &power,
        true,
    )?));
    page.push(Block::Heading("Stationarity per anchor".into()));
    let mut anchor_series: Vec<Series> = Vec::new();
    for (i, (l, s)) in all.iter().enumerate() {
        anchor_series.push(Series {
            name: format!("{l} residual"),
            points: s
                .anchors
                .iter()
                .enumerate()
                .map(|(k, an)| (k as f64, an.residual))
                .collect(),
            color: i,
            dashed: false,
        });
        anchor_series.push(Series {
            name: format!("{l} MC floor"),
            points: s
                .anchors
                .iter()
                .enumerate()
                .map(|(k, an)| (k as f64, an.mc_floor))
                .collect(),
            color: i,
            dashed: true,
        });
    }
    page.push(Block::Text(format!(
        "Anchors 0–8: {}.",
        main.anchors
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )));
    page.push(Block::Svg(line_chart(
        "Covariance around each anchor against the stationary kernel",
        "anchor",
        "relative residual",
        &anchor_series,
        false,
    )?));
    page.push(Block::Table {
        header: anchor_header.clone(),
        rows: anchor_rows.clone(),
    });
    page.write(&a.output.join("index.html"))?;
    let md = format!(
        "{}\n{}",
        markdown_table(&header, &rows),
        markdown_table(&anchor_header, &anchor_rows)
    );
    write_text(&a.output.join("prior.md"), &md)?;
    print!("{md}");
    Ok(())
}

/// The kernel as an 8-bit image: correlation 1 white, 0 mid-grey, −1 black.
fn kernel_image(k: &Kernel) -> Image {
    let side = 2 * k.radius + 1;
    let n = k.normalised();
    let data = n
        .cov
        .iter()
        .map(|&c| (0.5 + 0.5 * c).clamp(0.0, 1.0) as f32)
        .collect();
    Image::new(side, side, 1, data)
}

/// Which kernel a regression uses.
#[derive(clap::Args, Debug)]
pub struct KernelArgs {
    /// `dip` (Monte Carlo prior of --arch, computed now), `rbf` (lengthscale fitted), or a
    /// kernel.json written by `dip gp prior`.
    #[arg(long, default_value = "dip", value_name = "dip|rbf|FILE")]
    kernel: String,

    #[command(flatten)]
    net: NetArgs,

    /// Monte Carlo samples of the DIP kernel.
    #[arg(long, default_value_t = 256, value_name = "N")]
    samples: usize,

    /// Side of the Monte Carlo prior in pixels.
    #[arg(long, default_value_t = 64, value_name = "S")]
    prior_size: usize,

    /// Prior variance (in [0, 1]² units) instead of fitting it by marginal likelihood.
    #[arg(long, value_name = "V")]
    variance: Option<f64>,
}

impl KernelArgs {
    fn prior(&self, channels: usize, g: &Global) -> Result<Prior> {
        Ok(match self.kernel.as_str() {
            "rbf" => Prior::Rbf,
            "dip" => {
                let net = NetArgs {
                    channels,
                    ..self.net.clone()
                };
                let arch = net.arch(None)?;
                if !g.quiet {
                    eprintln!(
                        "estimating the {} kernel from {} initialisations at {2}x{2}",
                        arch.label(),
                        self.samples,
                        self.prior_size
                    );
                }
                let stats = sample_prior(
                    &arch,
                    &PriorConfig {
                        samples: self.samples,
                        size: self.prior_size,
                        device: g.device,
                        ..PriorConfig::default()
                    },
                )?;
                Prior::Kernel(stats.kernel)
            }
            file => {
                let path = Path::new(file);
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("{file}: cannot read the kernel (give dip, rbf or a kernel.json)")
                })?;
                let k: Kernel = serde_json::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("{file}: not a kernel file: {e}"))?;
                let k = Kernel::new(k.name, k.radius, k.cov)
                    .map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
                Prior::Kernel(k)
            }
        })
    }
}

const DENOISE_EXAMPLES: &str = "\
Examples:
  dip gp denoise noisy.png -o gp.png --kernel dip --clean clean.png
  dip gp denoise noisy.png -o gp-rbf.png --kernel rbf --sigma 25
  dip gp denoise noisy.png -o gp.png --kernel prior/kernel.json";

#[derive(clap::Args, Debug)]
#[command(after_help = DENOISE_EXAMPLES)]
pub struct DenoiseArgs {
    /// The noisy image.
    input: PathBuf,

    #[arg(short, long = "output", value_name = "FILE")]
    output: PathBuf,

    #[command(flatten)]
    kernel: KernelArgs,

    /// Noise std on the 0–255 scale [default: estimated from the image].
    #[arg(long, value_name = "S")]
    sigma: Option<f64>,

    /// The clean image, to report PSNR.
    #[arg(long, value_name = "FILE")]
    clean: Option<PathBuf>,

    /// Write a JSON summary here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,

    /// Overwrite existing outputs (never the inputs).
    #[arg(long)]
    force: bool,
}

fn load_clean(path: Option<&Path>, like: &Image, g: &Global) -> Result<Option<Image>> {
    let Some(p) = path else { return Ok(None) };
    let c = load_image(p, g)?;
    if (c.width, c.height, c.channels) != (like.width, like.height, like.channels) {
        bail!(
            "{}: the clean image is {}x{}x{}, the input {}x{}x{}",
            p.display(),
            c.width,
            c.height,
            c.channels,
            like.width,
            like.height,
            like.channels
        );
    }
    Ok(Some(c))
}

fn denoise(a: DenoiseArgs, g: &Global) -> Result<()> {
    let mut inputs = vec![a.input.as_path()];
    inputs.extend(a.clean.as_deref());
    check_image_output(&a.output, &inputs, a.force)?;
    if let Some(j) = &a.json {
        crate::output::check_writable(j, &inputs, a.force)?;
    }
    let y = load_image(&a.input, g)?;
    let clean = load_clean(a.clean.as_deref(), &y, g)?;
    let sigma = match a.sigma {
        Some(s) if s.is_finite() && s > 0.0 => s / 255.0,
        Some(s) => bail!("--sigma must be positive, got {s}"),
        None => estimate_sigma(&y),
    };
    let prior = a.kernel.prior(y.channels, g)?;
    let started = std::time::Instant::now();
    let (out, fit) = gp_denoise(&y, &prior, sigma, a.kernel.variance, Boundary::Symmetric)?;
    let seconds = started.elapsed().as_secs_f64();
    image::save(&out, &a.output)?;
    let p = clean.as_ref().map(|c| psnr(&out.data, &c.data));
    let p_noisy = clean.as_ref().map(|c| psnr(&y.data, &c.data));
    if let (Some(p), Some(n)) = (p, p_noisy) {
        println!("PSNR {p:.2} dB (noisy {n:.2} dB)");
    }
    println!(
        "{}: variance {:.3e}{}, sigma {:.2}, {:.2} s",
        fit.kernel,
        fit.variance,
        fit.lengthscale
            .map(|l| format!(", lengthscale {l:.2} px"))
            .unwrap_or_default(),
        sigma * 255.0,
        seconds
    );
    if let Some(j) = &a.json {
        write_json(
            j,
            &json!({"psnr": p, "psnr_noisy": p_noisy, "sigma": sigma * 255.0, "fit": fit,
                    "seconds": seconds}),
        )?;
    }
    Ok(())
}

const INPAINT_EXAMPLES: &str = "\
Examples:
  dip gp inpaint obs.png --mask mask.png -o gp.png --kernel dip --clean clean.png
  dip gp inpaint clean.png --random-mask 0.5 -o gp.png --kernel rbf --clean clean.png";

#[derive(clap::Args, Debug)]
#[command(after_help = INPAINT_EXAMPLES)]
pub struct InpaintArgs {
    /// The image with missing pixels (their values are ignored).
    input: PathBuf,

    /// The mask: white = known pixel.
    #[arg(long, value_name = "FILE", conflicts_with = "random_mask")]
    mask: Option<PathBuf>,

    /// Keep a random fraction P of the pixels (from --mask-seed).
    #[arg(long, value_name = "P")]
    random_mask: Option<f64>,

    #[arg(long, default_value_t = 0, value_name = "S")]
    mask_seed: u64,

    #[arg(short, long = "output", value_name = "FILE")]
    output: PathBuf,

    #[command(flatten)]
    kernel: KernelArgs,

    /// Noise std of the known pixels on the 0–255 scale (1: about the quantisation).
    #[arg(long, default_value_t = 1.0, value_name = "S")]
    sigma: f64,

    /// Relative residual at which conjugate gradients stop.
    #[arg(long, default_value_t = 1e-6, value_name = "TOL")]
    tol: f64,

    /// The clean image, to report PSNR.
    #[arg(long, value_name = "FILE")]
    clean: Option<PathBuf>,

    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,

    #[arg(long)]
    force: bool,
}

fn inpaint(a: InpaintArgs, g: &Global) -> Result<()> {
    let mut inputs = vec![a.input.as_path()];
    inputs.extend(a.clean.as_deref());
    inputs.extend(a.mask.as_deref());
    check_image_output(&a.output, &inputs, a.force)?;
    if let Some(j) = &a.json {
        crate::output::check_writable(j, &inputs, a.force)?;
    }
    if !(a.sigma.is_finite() && a.sigma > 0.0) {
        bail!("--sigma must be positive, got {}", a.sigma);
    }
    if !(a.tol.is_finite() && a.tol > 0.0) {
        bail!("--tol must be positive, got {}", a.tol);
    }
    let y = load_image(&a.input, g)?;
    let clean = load_clean(a.clean.as_deref(), &y, g)?;
    let mask = match (&a.mask, a.random_mask) {
        (Some(m), _) => Mask::from_file(m, y.width, y.height)?,
        (None, Some(p)) if p > 0.0 && p <= 1.0 => Mask::random(y.width, y.height, p, a.mask_seed)?,
        (None, Some(p)) => bail!("--random-mask must be in (0, 1], got {p}"),
        (None, None) => bail!("give --mask MASK or --random-mask P"),
    };
    let prior = a.kernel.prior(y.channels, g)?;
    let started = std::time::Instant::now();
    let (out, fit, cg) = gp_inpaint(
        &y,
        mask.known(),
        &prior,
        a.sigma / 255.0,
        a.kernel.variance,
        CgConfig {
            tol: a.tol,
            ..CgConfig::default()
        },
    )?;
    let seconds = started.elapsed().as_secs_f64();
    image::save(&out, &a.output)?;
    let p = clean.as_ref().map(|c| psnr(&out.data, &c.data));
    if let Some(p) = p {
        println!("PSNR {p:.2} dB");
    }
    println!(
        "{}: variance {:.3e}{}; conjugate gradients: {} iterations, relative residual {:.2e}{}; \
         {:.2} s",
        fit.kernel,
        fit.variance,
        fit.lengthscale
            .map(|l| format!(", lengthscale {l:.2} px"))
            .unwrap_or_default(),
        cg.iterations,
        cg.relative_residual,
        if cg.converged { "" } else { " (NOT converged)" },
        seconds
    );
    if let Some(j) = &a.json {
        write_json(
            j,
            &json!({"psnr": p, "fit": fit, "cg": cg, "known_fraction": mask.known_fraction(),
                    "seconds": seconds}),
        )?;
    }
    Ok(())
}

const RATES_EXAMPLES: &str = "\
Examples:
  dip gp rates house.png --arch skip,linear-128,decoder-64 -o rates/
  dip gp rates house.png --arch skip --size 64 --iters 2000 --bands 8 -o rates-skip/";

#[derive(clap::Args, Debug)]
#[command(after_help = RATES_EXAMPLES)]
pub struct RatesArgs {
    /// The image whose fit measures the half-times (converted to gray, centre-cropped).
    image: PathBuf,

    /// Architectures, comma-separated; each with its own fit settings (as `--arch` elsewhere).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "skip",
        value_name = "A,…"
    )]
    arch: Vec<String>,

    /// Side of the centre crop, in pixels (after --downsample).
    #[arg(long, default_value_t = 64, value_name = "S")]
    size: usize,

    /// Shrink the image by this factor first (box average).
    #[arg(long, value_name = "F")]
    downsample: Option<usize>,

    /// Keep the colour channels (default: gray).
    #[arg(long)]
    color: bool,

    /// Steps of each fit.
    #[arg(long, default_value_t = 1500, value_name = "N")]
    iters: usize,

    /// Measure the bands every K steps.
    #[arg(long, default_value_t = 10, value_name = "K")]
    every: usize,

    #[arg(long, default_value_t = 8, value_name = "B")]
    bands: usize,

    /// Probes per band.
    #[arg(long, default_value_t = 4, value_name = "P")]
    probes: usize,

    #[arg(long, default_value_t = 0)]
    seed: u64,

    #[arg(short, long = "output", value_name = "DIR")]
    output: PathBuf,

    #[arg(long)]
    force: bool,
}

fn rates(a: RatesArgs, g: &Global) -> Result<()> {
    if a.every == 0 || a.iters == 0 {
        bail!("--iters and --every must be at least 1");
    }
    let mut img = load_image(&a.image, g)?;
    if !a.color && img.channels == 3 {
        img = Image::new(img.width, img.height, 1, rgb_to_y(&img)).with_bit_depth(img.bit_depth);
    }
    if let Some(f) = a.downsample.filter(|&f| f > 1) {
        img = image::downsample_box(&img, f).with_context(|| a.image.display().to_string())?;
    }
    if img.width < a.size || img.height < a.size {
        bail!(
            "{}: the image is {}x{}, smaller than --size {}",
            a.image.display(),
            img.width,
            img.height,
            a.size
        );
    }
    let img = image::center_crop(&img, a.size, a.size);
    // Each architecture's recipe, checked before any long run.
    let setups: Vec<(String, Arch, FitConfig)> = a
        .arch
        .iter()
        .map(|name| -> Result<_> {
            let recipe = RecipeArgs {
                arch: Some(name.clone()),
                iters: Some(a.iters),
                seed: Some(a.seed),
                ema: Some(0.0),
                ..RecipeArgs::default()
            }
            .resolve("denoise")?;
            let arch = recipe.arch(img.channels)?;
            if !a.size.is_multiple_of(arch.size_multiple()) || a.size < arch.min_side() {
                bail!(
                    "--size {} does not suit {}: it needs a multiple of {} of at least {}",
                    a.size,
                    arch.label(),
                    arch.size_multiple(),
                    arch.min_side()
                );
            }
            let cfg = FitConfig {
                observe_every: a.every,
                device: g.device,
                ..recipe.fit_config()?
            };
            Ok((name.clone(), arch, cfg))
        })
        .collect::<Result<_>>()?;
    prepare_folder(&a.output, a.force)?;
    let rcfg = RatesConfig {
        bands: a.bands,
        spacing: BandSpacing::Linear,
        probes: a.probes,
        seed: a.seed,
    };
    let bands = std::sync::Arc::new(Bands::new(a.size, a.size, a.bands, BandSpacing::Linear)?);
    let mut results = Vec::new();
    let mut chart_pts = Vec::new();
    for (i, (name, arch, cfg)) in setups.iter().enumerate() {
        if !g.quiet {
            eprintln!("{name}: probing {} bands × {} probes", a.bands, a.probes);
        }
        let lambda = band_eigenvalues(arch, a.size, a.size, cfg, &rcfg)?;
        if !g.quiet {
            eprintln!("{name}: fitting {} steps", cfg.iters);
        }
        let mut rec = BandRecorder::new(bands.clone(), &img, None)?;
        let report = fit_denoise(&img, None, arch, cfg, &mut [&mut rec])?;
        let measured = rec.half_times()?;
        let pred = predict_half_times(&lambda, &measured);
        let (pred_v, constant, spearman, log_rms, exponent) = match &pred {
            Ok(p) => (
                p.predicted.clone(),
                Some(p.constant),
                p.spearman,
                Some(p.log_rms_error),
                p.exponent,
            ),
            Err(_) => (vec![f64::NAN; lambda.len()], None, None, None, None),
        };
        chart_pts.push(Series {
            name: format!("{name} measured"),
            points: lambda
                .iter()
                .zip(&measured)
                .filter_map(|(l, t)| t.map(|t| (l.log10(), t)))
                .collect(),
            color: i,
            dashed: false,
        });
        chart_pts.push(Series {
            name: format!("{name} predicted"),
            points: lambda
                .iter()
                .zip(&pred_v)
                .map(|(l, t)| (l.log10(), *t))
                .collect(),
            color: i,
            dashed: true,
        });
        results.push(json!({
            "arch": name,
            "network": arch.label(),
            "lambda": lambda,
            "measured_half_time": measured,
            "predicted_half_time": pred_v,
            "constant": constant,
            "spearman": spearman,
            "log_rms_error": log_rms,
            "exponent": exponent,
            "seconds_fit": report.seconds,
        }));
    }
    write_json(
        &a.output.join("rates.json"),
        &json!({"image": a.image.display().to_string(), "size": a.size, "bands": a.bands,
                "probes": a.probes, "iters": a.iters, "results": results}),
    )?;
    let header: Vec<String> = [
        "network",
        "Spearman(t½, 1/λ)",
        "c in t½ = c/λ",
        "RMS log error",
        "β in t½ ∝ λ^-β",
        "λ per band (low → high)",
        "measured t½",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let fmt_opt =
        |v: &serde_json::Value, f: &dyn Fn(f64) -> String| v.as_f64().map_or("–".to_string(), f);
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            vec![
                r["arch"].as_str().unwrap_or("").to_string(),
                fmt_opt(&r["spearman"], &|v| format!("{v:.2}")),
                fmt_opt(&r["constant"], &|v| format!("{v:.3e}")),
                fmt_opt(&r["log_rms_error"], &|v| format!("{v:.2}")),
                fmt_opt(&r["exponent"], &|v| format!("{v:.2}")),
                r["lambda"]
                    .as_array()
                    .map(|l| {
                        l.iter()
                            .map(|v| format!("{:.2e}", v.as_f64().unwrap_or(f64::NAN)))
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default(),
                r["measured_half_time"]
                    .as_array()
                    .map(|l| {
                        l.iter()
                            .map(|v| v.as_f64().map_or("–".into(), |t| format!("{t:.0}")))
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default(),
            ]
        })
        .collect();
    let md = markdown_table(&header, &rows);
    write_text(&a.output.join("rates.md"), &md)?;
    let mut page = Page::new("Predicted against measured band half-times");
    page.push(Block::Text(format!(
        "{}: {}x{} crop. λ_b is the mean of ‖Jᵀp‖² over {} random-phase unit probes p in band b, \
         with J the Jacobian at initialisation; the linearised (NTK) view predicts t½(b) = c/λ_b.",
        a.image.display(),
        a.size,
        a.size,
        a.probes
    )));
    page.push(Block::Table { header, rows });
    page.push(Block::Svg(line_chart(
        "Band half-time against the kernel eigenvalue",
        "log10 λ_b",
        "t½ (steps)",
        &chart_pts,
        true,
    )?));
    page.write(&a.output.join("index.html"))?;
    print!("{md}");
    Ok(())
}

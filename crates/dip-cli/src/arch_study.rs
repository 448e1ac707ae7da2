//! The architecture experiments that are not sweeps:
//!
//! - `structure-vs-noise`: each architecture fits a natural image, the same image with noise,
//!   its pixels shuffled, and pure noise; the loss curves show which targets it fits easily.
//! - `upsampling`: the skip network with each upsampling layer and with Lipschitz control,
//!   analysed for band half-times, the peak PSNR and the fall after it.
//!
//! Both resume: a finished cell (a JSON file, or an analysis folder) is read back, not redone.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use dip::fit::{FitConfig, HistoryRow};
use dip::image::{self, Image};
use dip::noise::add_gaussian_noise;
use dip::operators::Identity;
use dip::report::page::{Block, Page, Series, line_chart, markdown_table};
use dip::spectral::BandSpacing;
use dip::spectral::study::{Analysis, StudyOptions};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_pcg::Pcg64Mcg;
use serde::{Deserialize, Serialize};

use crate::analyze::{Plan, prepare_folder, record_and_analyse};
use crate::recipe::RecipeArgs;
use crate::task::{fit_shown, load_image};
use crate::{Global, Outcome};

/// The demo image, the default subject of the experiments.
const DEFAULT_IMAGE: &[u8] = include_bytes!("../assets/f16_128.png");

/// The image an experiment works on: the given file or the built-in one, centre-cropped to
/// `size`, in grayscale when `gray`.
fn subject(path: Option<&Path>, size: usize, gray: bool, g: &Global) -> Result<Image> {
    let img = match path {
        Some(p) => load_image(p, g)?,
        None => image::load_from_memory(DEFAULT_IMAGE, "built-in image")?.0,
    };
    if img.width < size || img.height < size {
        bail!(
            "the image is {}x{}, smaller than --size {size}",
            img.width,
            img.height
        );
    }
    let img = image::center_crop(&img, size, size);
    Ok(if gray && img.channels == 3 {
        let y = dip::metrics::rgb_to_y(&img);
        Image::new(size, size, 1, y).with_bit_depth(img.bit_depth)
    } else {
        img
    })
}

const SVN_EXAMPLES: &str = "\
Examples:
  dip experiment structure-vs-noise -o svn/
  dip experiment structure-vs-noise photo.png --size 64 --iters 2000 --archs skip,decoder-64 -o svn/";

#[derive(clap::Args, Debug)]
#[command(after_help = SVN_EXAMPLES)]
pub struct StructureArgs {
    /// The natural image [default: the built-in image].
    image: Option<PathBuf>,

    /// Output folder: cells/, results.json, results.md and index.html. Re-running with the
    /// same folder skips the finished cells.
    #[arg(short, long = "output", value_name = "DIR")]
    output: PathBuf,

    /// Side of the centre crop the networks fit.
    #[arg(long, value_name = "N", default_value_t = 64)]
    size: usize,

    /// Architectures, comma-separated (see --arch of the fitting commands).
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "skip,linear-128,relunet,decoder-64,convgen2"
    )]
    archs: Vec<String>,

    /// Noise level of the noisy target (0–255 scale).
    #[arg(long, value_name = "SIGMA", default_value_t = 25.0)]
    sigma: f32,

    /// Fit in grayscale.
    #[arg(long)]
    gray: bool,

    #[command(flatten)]
    recipe: RecipeArgs,
}

/// The four targets.
const TARGETS: [&str; 4] = ["image", "image+noise", "shuffled", "noise"];

/// One finished fit of the structure-vs-noise experiment.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StructureCell {
    arch: String,
    target: String,
    parameters: usize,
    seconds: f64,
    history: Vec<HistoryRow>,
    /// Where the fit ran (`cpu`, `cuda:0`); cells from before this was recorded ran on the CPU.
    #[serde(default = "cpu")]
    device: String,
}

fn cpu() -> String {
    "cpu".into()
}

impl StructureCell {
    fn loss_at(&self, step: usize) -> Option<f64> {
        self.history
            .iter()
            .take_while(|r| r.iter <= step)
            .last()
            .map(|r| r.loss)
    }

    /// First recorded step where the loss is at most `level`.
    fn steps_to(&self, level: f64) -> Option<usize> {
        self.history
            .iter()
            .find(|r| r.loss <= level)
            .map(|r| r.iter)
    }
}

fn targets(img: &Image, sigma: f32, seed: u64) -> Vec<Image> {
    let noisy = add_gaussian_noise(img, sigma, seed);
    let c = img.channels;
    let mut order: Vec<usize> = (0..img.width * img.height).collect();
    order.shuffle(&mut Pcg64Mcg::seed_from_u64(seed ^ 0x5117_FF1E));
    let mut shuffled = img.clone();
    for (dst, &src) in order.iter().enumerate() {
        shuffled.data[dst * c..(dst + 1) * c].copy_from_slice(&img.data[src * c..(src + 1) * c]);
    }
    let mut noise = img.clone();
    let mut rng = Pcg64Mcg::seed_from_u64(seed ^ 0x0015_E000);
    noise
        .data
        .iter_mut()
        .for_each(|v| *v = rand::Rng::random::<f32>(&mut rng));
    vec![img.clone(), noisy, shuffled, noise]
}

pub fn structure_vs_noise(args: StructureArgs, g: &Global) -> Result<Outcome> {
    let dir = &args.output;
    std::fs::create_dir_all(dir.join("cells"))
        .with_context(|| format!("{}: cannot create the folder", dir.display()))?;
    crate::output::check_folder_writable(dir, dir)?;
    let img = subject(args.image.as_deref(), args.size, args.gray, g)?;
    let seed = args.recipe.seed.unwrap_or(0);
    let tgts = targets(&img, args.sigma, seed);
    let mut cells: Vec<StructureCell> = Vec::new();
    let mut outcome = Outcome::Done;
    for arch in &args.archs {
        let mut ra = args.recipe.clone();
        ra.arch = Some(arch.clone());
        let recipe = ra.resolve("denoise")?;
        // The targets' cells found on disk, and those to fit: on a GPU all at once, as lanes of
        // one batch.
        let files: Vec<PathBuf> = TARGETS
            .iter()
            .map(|t| dir.join("cells").join(format!("{arch}_{t}.json")))
            .collect();
        let mut found: Vec<Option<StructureCell>> = files
            .iter()
            .map(|f| {
                let text = std::fs::read_to_string(f).ok()?;
                serde_json::from_str::<StructureCell>(&text).ok()
            })
            .collect();
        let todo: Vec<usize> = (0..TARGETS.len()).filter(|&i| found[i].is_none()).collect();
        let max_memory = ra.max_memory()?;
        let run =
            |j: usize, batch: &crate::gpu::Batch, show: bool| -> Result<(bool, StructureCell)> {
                let (t, target) = (TARGETS[todo[j]], &tgts[todo[j]]);
                if !g.quiet {
                    eprintln!("structure-vs-noise: {arch} on {t}");
                }
                let spec = recipe.arch(target.channels)?;
                let cfg = batch.apply(FitConfig {
                    observe_every: 10,
                    max_memory,
                    cancel: Some(g.cancel.clone()),
                    device: g.device,
                    ..recipe.fit_config()?
                });
                let op = Identity::new(target.width, target.height, target.channels);
                let report = fit_shown(target, &op, None, &spec, &cfg, g, show, &mut [])?;
                Ok((
                    report.interrupted,
                    StructureCell {
                        arch: spec.label(),
                        target: t.to_string(),
                        parameters: report.parameters,
                        seconds: report.seconds,
                        history: report.history,
                        device: g.device.to_string(),
                    },
                ))
            };
        let results = crate::gpu::fits_at_once(g, todo.len(), run, |(stopped, _)| *stopped);
        for (&i, r) in todo.iter().zip(results) {
            let (stopped, cell) = r?;
            if stopped {
                outcome = Outcome::Interrupted;
                continue;
            }
            crate::output::write_json(&files[i], &serde_json::to_value(&cell)?)?;
            found[i] = Some(cell);
        }
        cells.extend(found.into_iter().flatten());
        if matches!(outcome, Outcome::Interrupted) {
            break;
        }
    }
    write_structure_results(dir, &args, &cells)?;
    Ok(outcome)
}

fn write_structure_results(
    dir: &Path,
    args: &StructureArgs,
    cells: &[StructureCell],
) -> Result<()> {
    let last = cells
        .iter()
        .filter_map(|c| c.history.last().map(|r| r.iter))
        .max()
        .unwrap_or(0);
    // Checkpoints at recorded steps (every 10).
    let checkpoints: Vec<usize> = [last / 10, last / 4, last]
        .into_iter()
        .map(|s| (s / 10).max(1) * 10)
        .filter(|&s| s <= last)
        .collect();
    // A target counts as fitted at an MSE of 1e-3 (30 dB against the target).
    const FITTED: f64 = 1e-3;
    let mut header = vec!["architecture".to_string(), "target".into()];
    header.extend(checkpoints.iter().map(|s| format!("MSE @{s}")));
    header.push("steps to MSE 1e-3".into());
    let mut rows = Vec::new();
    for c in cells {
        let mut r = vec![c.arch.clone(), c.target.clone()];
        r.extend(
            checkpoints
                .iter()
                .map(|&s| c.loss_at(s).map_or("–".into(), |l| format!("{l:.2e}"))),
        );
        r.push(
            c.steps_to(FITTED)
                .map_or(format!("> {last}"), |s| s.to_string()),
        );
        rows.push(r);
    }
    // How much faster the natural image is fitted than pure noise: the loss ratio at the first
    // checkpoint (noise / image; above 1: structure first).
    let mut ratio_rows = Vec::new();
    let archs: Vec<&str> = {
        let mut v: Vec<&str> = cells.iter().map(|c| c.arch.as_str()).collect();
        v.dedup();
        v
    };
    for a in &archs {
        let get = |t: &str| cells.iter().find(|c| c.arch == *a && c.target == t);
        let at = checkpoints.first().copied().unwrap_or(last);
        let ratio = |t: &str| match (
            get("image").and_then(|c| c.loss_at(at)),
            get(t).and_then(|c| c.loss_at(at)),
        ) {
            (Some(i), Some(n)) if i > 0.0 => format!("{:.1}", n / i),
            _ => "–".into(),
        };
        ratio_rows.push(vec![
            a.to_string(),
            get("image").map_or("–".into(), |c| c.parameters.to_string()),
            ratio("shuffled"),
            ratio("noise"),
        ]);
    }
    let ratio_header = vec![
        "architecture".to_string(),
        "parameters".into(),
        format!(
            "MSE shuffled / image @{}",
            checkpoints.first().copied().unwrap_or(last)
        ),
        format!(
            "MSE noise / image @{}",
            checkpoints.first().copied().unwrap_or(last)
        ),
    ];
    let md = format!(
        "# Structure against noise\n\nImage side {} px, noise σ = {}. Loss is the MSE to the \
         target.\n\n{}\n{}",
        args.size,
        args.sigma,
        markdown_table(&ratio_header, &ratio_rows),
        markdown_table(&header, &rows)
    );
    crate::output::write_text(&dir.join("results.md"), &md)?;
    crate::output::write_json(&dir.join("results.json"), &serde_json::to_value(cells)?)?;
    let mut page = Page::new("Structure against noise: loss against step");
    page.push(Block::Text(format!(
        "Each architecture fits four targets from the same seed: the {} px image, the image with \
         σ = {} noise, its pixels shuffled, and uniform noise. A convolutional prior fits the \
         structured image much faster than the noise; a network without spatial structure \
         fits them alike.",
        args.size, args.sigma
    )));
    page.push(Block::Table {
        header: ratio_header,
        rows: ratio_rows,
    });
    for a in &archs {
        let series: Vec<Series> = cells
            .iter()
            .filter(|c| c.arch == *a)
            .enumerate()
            .map(|(i, c)| Series {
                name: c.target.clone(),
                points: c.history.iter().map(|r| (r.iter as f64, r.loss)).collect(),
                color: i,
                dashed: false,
            })
            .collect();
        if series.iter().any(|s| !s.points.is_empty()) {
            page.push(Block::Svg(line_chart(
                &format!("{a}: MSE to the target"),
                "step",
                "MSE",
                &series,
                true,
            )?));
        }
    }
    page.push(Block::Table { header, rows });
    page.write(&dir.join("index.html"))?;
    Ok(())
}

const UP_EXAMPLES: &str = "\
Examples:
  dip experiment upsampling -o up/
  dip experiment upsampling photo.png --size 64 --iters 3000 --lipschitz 2 -o up/";

#[derive(clap::Args, Debug)]
#[command(after_help = UP_EXAMPLES)]
pub struct UpsamplingArgs {
    /// The clean image [default: the built-in image].
    image: Option<PathBuf>,

    /// Output folder: one analysis folder per variant, results.json, results.md, index.html.
    /// Re-running with the same folder skips the finished variants.
    #[arg(short, long = "output", value_name = "DIR")]
    output: PathBuf,

    /// Side of the centre crop.
    #[arg(long, value_name = "N", default_value_t = 64)]
    size: usize,

    /// Noise level (0–255 scale).
    #[arg(long, value_name = "SIGMA", default_value_t = 25.0)]
    sigma: f32,

    /// The Lipschitz bound of the controlled variants.
    #[arg(long, value_name = "L", default_value_t = 2.0)]
    lipschitz: f64,

    /// Std of the Gaussian upsampling kernel, in output pixels.
    #[arg(long, value_name = "S", default_value_t = 1.0)]
    gaussian_sigma: f64,

    /// Record the output every K steps.
    #[arg(long, value_name = "K", default_value_t = 10)]
    every: usize,

    /// Number of radial frequency bands.
    #[arg(long, value_name = "B", default_value_t = 8)]
    bands: usize,

    /// Fit in grayscale.
    #[arg(long)]
    gray: bool,

    #[command(flatten)]
    recipe: RecipeArgs,
}

/// The variants: name and the settings they change.
fn variants(args: &UpsamplingArgs) -> Vec<(String, Vec<String>)> {
    let l = args.lipschitz;
    let s = args.gaussian_sigma;
    vec![
        ("nearest".into(), vec!["net.upsample=nearest".into()]),
        ("bilinear".into(), vec!["net.upsample=bilinear".into()]),
        ("transposed".into(), vec!["net.upsample=transposed".into()]),
        (
            format!("gaussian-{s}"),
            vec![
                "net.upsample=gaussian".into(),
                format!("net.gaussian_sigma={s}"),
            ],
        ),
        (
            format!("bilinear+lipschitz-{l}"),
            vec!["net.upsample=bilinear".into(), format!("fit.lipschitz={l}")],
        ),
        (
            format!("gaussian-{s}+lipschitz-{l}"),
            vec![
                "net.upsample=gaussian".into(),
                format!("net.gaussian_sigma={s}"),
                format!("fit.lipschitz={l}"),
            ],
        ),
    ]
}

/// What one variant measured.
#[derive(Debug, Clone, Serialize)]
struct UpsamplingRow {
    variant: String,
    best_psnr: Option<f64>,
    best_step: Option<usize>,
    final_psnr: Option<f64>,
    /// best − final: how much PSNR falls after the peak.
    drop_db: Option<f64>,
    t_half: Vec<Option<f64>>,
    t_half_spearman: Option<f64>,
}

pub fn upsampling(args: UpsamplingArgs, g: &Global) -> Result<Outcome> {
    if args.every == 0 || args.bands == 0 {
        bail!("--every and --bands must be at least 1");
    }
    let dir = &args.output;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("{}: cannot create the folder", dir.display()))?;
    crate::output::check_folder_writable(dir, dir)?;
    let clean = subject(args.image.as_deref(), args.size, args.gray, g)?;
    let seed = args.recipe.seed.unwrap_or(0);
    let noisy = add_gaussian_noise(&clean, args.sigma, seed);
    let mut rows = Vec::new();
    let mut outcome = Outcome::Done;
    for (name, sets) in variants(&args) {
        let sub = dir.join(&name);
        let analysis = match Analysis::read(&sub) {
            Ok(a) => a,
            Err(_) => {
                prepare_folder(&sub, true)?;
                let mut ra = args.recipe.clone();
                ra.set.splice(0..0, sets.iter().cloned());
                let recipe = ra.resolve("denoise")?;
                if !g.quiet {
                    eprintln!("upsampling: {name}");
                }
                let plan = Plan {
                    observation_name: format!("noisy (sigma {})", args.sigma),
                    clean_name: Some("clean".into()),
                    preset: "denoise".into(),
                    every: args.every,
                    seeds: 1,
                    opts: StudyOptions {
                        bands: args.bands,
                        spacing: BandSpacing::Linear,
                    },
                };
                let (o, a) = record_and_analyse(&noisy, Some(&clean), &recipe, &plan, &sub, g)?;
                if !matches!(o, Outcome::Done) {
                    outcome = o;
                    break;
                }
                a
            }
        };
        let final_psnr = analysis.summary.final_psnr;
        rows.push(UpsamplingRow {
            variant: name,
            best_psnr: analysis.best_psnr,
            best_step: analysis.best_step,
            final_psnr,
            drop_db: analysis.best_psnr.zip(final_psnr).map(|(b, f)| b - f),
            t_half: analysis.t_half(),
            t_half_spearman: analysis.summary.t_half_spearman,
        });
    }
    write_upsampling_results(dir, &args, &rows)?;
    Ok(outcome)
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |v| format!("{v:.digits$}"))
}

fn write_upsampling_results(
    dir: &Path,
    args: &UpsamplingArgs,
    rows: &[UpsamplingRow],
) -> Result<()> {
    let bands = rows.iter().map(|r| r.t_half.len()).max().unwrap_or(0);
    let mut header: Vec<String> = [
        "variant",
        "best PSNR",
        "best step",
        "final PSNR",
        "drop (dB)",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    header.extend((0..bands).map(|b| format!("t½ b{b}")));
    header.push("Spearman(band, t½)".into());
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut v = vec![
                r.variant.clone(),
                fmt(r.best_psnr, 2),
                r.best_step.map_or("–".into(), |s| s.to_string()),
                fmt(r.final_psnr, 2),
                fmt(r.drop_db, 2),
            ];
            v.extend((0..bands).map(|b| fmt(r.t_half.get(b).copied().flatten(), 0)));
            v.push(fmt(r.t_half_spearman, 2));
            v
        })
        .collect();
    let md = format!(
        "# Upsampling layers and Lipschitz control\n\nSide {} px, σ = {}, bands {}. `drop` is \
         the best PSNR minus the final PSNR: how much the fit loses after its peak.\n\n{}",
        args.size,
        args.sigma,
        bands,
        markdown_table(&header, &table)
    );
    crate::output::write_text(&dir.join("results.md"), &md)?;
    crate::output::write_json(&dir.join("results.json"), &serde_json::to_value(rows)?)?;
    let mut page = Page::new("Upsampling layers and Lipschitz control");
    page.push(Block::Text(format!(
        "The skip network with each upsampling layer, and with Lipschitz-controlled \
         convolutions (largest singular value at most {}), denoising a {} px crop at σ = {}. \
         Shi et al. claim the controlled layers stop the decline after the peak. Each variant \
         links to its full spectral analysis.",
        args.lipschitz, args.size, args.sigma
    )));
    page.push(Block::Table {
        header,
        rows: table,
    });
    let series: Vec<Series> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| Series {
            name: r.variant.clone(),
            points: r
                .t_half
                .iter()
                .enumerate()
                .filter_map(|(b, t)| t.map(|t| (b as f64, t)))
                .collect(),
            color: i,
            dashed: false,
        })
        .collect();
    if series.iter().any(|s| !s.points.is_empty()) {
        page.push(Block::Svg(line_chart(
            "t½ per band (steps to fit half of the band)",
            "band (low → high)",
            "t½ (steps)",
            &series,
            true,
        )?));
    }
    let links: String = rows
        .iter()
        .map(|r| {
            format!(
                "<li><a href=\"{0}/report.html\">{0}</a></li>",
                dip::report::escape_html(&r.variant)
            )
        })
        .collect();
    page.push(Block::Html(format!("<ul>{links}</ul>")));
    page.write(&dir.join("index.html"))?;
    Ok(())
}

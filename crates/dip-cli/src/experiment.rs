//! `dip experiment`: the experiments of "The Spectral Bias of the Deep Image Prior".
//!
//! - `triangles`: a synthetic family of triangles whose high-frequency content rises level by
//!   level; each is fitted (no noise) with the trajectory recorder and analysed. Images with more
//!   high-frequency content take longer to fit.
//! - `spectral-bias IMG`: the full analysis of a natural image with Gaussian noise added.

use std::path::PathBuf;

use anyhow::{Result, bail};
use dip::image::{self, BitDepth};
use dip::noise::add_gaussian_noise;
use dip::report::triangles::{TriangleRow, write_triangles_report};
use dip::spectral::BandSpacing;
use dip::spectral::crossing_step;
use dip::spectral::study::{StudyOptions, spearman};
use dip::synthetic::{high_frequency_fraction, triangle_family};
use serde_json::json;

use crate::analyze::{Plan, prepare_folder, print_findings, record_and_analyse};
use crate::recipe::RecipeArgs;
use crate::task::load_image;
use crate::{Global, Outcome};

#[derive(clap::Subcommand, Debug)]
pub enum Which {
    /// Fit a family of triangles of rising high-frequency content; show that more high
    /// frequencies take longer to fit.
    Triangles(TrianglesArgs),
    /// The full spectral-bias analysis of a natural image with Gaussian noise added.
    SpectralBias(SpectralBiasArgs),
    /// The paper's Tables 1–2: every architecture denoising shrunk grayscale images, with
    /// best and final PSNR and band half-times; resumable and shardable.
    ArchTable(crate::arch_table::Args),
    /// Each architecture fits an image, the image with noise, its pixels shuffled and pure
    /// noise; compare the loss curves.
    StructureVsNoise(crate::arch_study::StructureArgs),
    /// The skip network with each upsampling layer and with Lipschitz control: band half-times,
    /// the peak and the fall after it.
    Upsampling(crate::arch_study::UpsamplingArgs),
    /// Every stopping rule against the oracle (the best step, known from the clean image) on
    /// CSet9 and Set12 at several noise levels: the gap, the steps used, the time. A sweep plan:
    /// resumable and shardable.
    Stopping(crate::stopping::Args),
    /// Robustness on any folder of images: every noise-level estimator against the noise
    /// added, and `auto` stopping against the oracle, flagging the fits where `auto` keeps
    /// little of the available gain.
    Robustness(crate::robustness::Args),
}

const TRIANGLE_EXAMPLES: &str = "\
Examples:
  dip experiment triangles -o triangles/
  dip experiment triangles -o triangles/ --size 32 --levels 5 --iters 400";

#[derive(clap::Args, Debug)]
#[command(after_help = TRIANGLE_EXAMPLES)]
pub struct TrianglesArgs {
    /// Output folder: one analysis folder per level, experiment.json, triangles.csv and
    /// index.html. It must not exist or be empty (unless --force).
    #[arg(short, long = "output", value_name = "DIR")]
    output: PathBuf,

    /// Side of the images in pixels.
    #[arg(long, value_name = "N", default_value_t = 64)]
    size: usize,

    /// Number of levels, smoothest to most detailed.
    #[arg(long, value_name = "L", default_value_t = 9)]
    levels: usize,

    /// Seed of the triangle's shape and colours.
    #[arg(long, value_name = "S", default_value_t = 0)]
    shape_seed: u64,

    /// A level counts as fitted when the output's PSNR against it first reaches this.
    #[arg(long, value_name = "DB", default_value_t = 30.0)]
    fit_psnr: f64,

    /// Record the output every K steps.
    #[arg(long, value_name = "K", default_value_t = 10)]
    every: usize,

    /// Number of radial frequency bands.
    #[arg(long, value_name = "B", default_value_t = 8)]
    bands: usize,

    #[command(flatten)]
    recipe: RecipeArgs,

    /// Write into a non-empty DIR.
    #[arg(long)]
    force: bool,
}

/// Steps of the triangle fits unless --iters says otherwise: enough for every level to pass
/// 30 dB with the standard network at 64x64.
const TRIANGLE_ITERS: usize = 1000;

pub fn run(which: Which, g: &Global) -> Result<Outcome> {
    match which {
        Which::Triangles(a) => triangles(a, g),
        Which::SpectralBias(a) => spectral_bias(a, g),
        Which::ArchTable(a) => crate::arch_table::run(a, g),
        Which::StructureVsNoise(a) => crate::arch_study::structure_vs_noise(a, g),
        Which::Upsampling(a) => crate::arch_study::upsampling(a, g),
        Which::Stopping(a) => crate::stopping::run(a, g),
        Which::Robustness(a) => crate::robustness::run(a, g),
    }
}

fn triangles(args: TrianglesArgs, g: &Global) -> Result<Outcome> {
    if args.every == 0 || args.bands == 0 || args.levels == 0 {
        bail!("--every, --bands and --levels must be at least 1");
    }
    let preset = args.recipe.preset_name("denoise").to_string();
    let mut recipe = args.recipe.resolve(&preset)?;
    if args.recipe.iters.is_none() && !args.recipe.set.iter().any(|s| s.starts_with("fit.iters")) {
        recipe.fit.iters = TRIANGLE_ITERS;
    }
    recipe.fit_config()?;
    let dir = &args.output;
    prepare_folder(dir, args.force)?;
    let family = triangle_family(args.size, args.levels, args.shape_seed)?;
    let mut rows = Vec::new();
    let mut outcome = Outcome::Done;
    for level in &family {
        let name = format!("level-{}", level.level);
        let sub = dir.join(&name);
        prepare_folder(&sub, args.force)?;
        let img = &level.image;
        if !g.quiet {
            eprintln!(
                "triangles: level {} of {} (edge width {:.2} px, texture {:.2} at {:.3} cycles/px)",
                level.level + 1,
                family.len(),
                level.detail.edge_width,
                level.detail.texture_amplitude,
                level.detail.texture_frequency
            );
        }
        let plan = Plan {
            observation_name: format!("triangle level {}", level.level),
            clean_name: Some(format!("triangle level {}", level.level)),
            preset: preset.clone(),
            every: args.every,
            seeds: 1,
            opts: StudyOptions {
                bands: args.bands,
                spacing: BandSpacing::Linear,
            },
        };
        // The target is fitted as it is (no noise): the question is how long fitting takes.
        let (o, analysis) = record_and_analyse(img, Some(img), &recipe, &plan, &sub, g)?;
        let run = &analysis.runs[0];
        let records: Vec<(usize, f64)> = run
            .steps
            .iter()
            .zip(&run.psnr_raw)
            .filter_map(|(&s, p)| p.map(|p| (s, p)))
            .collect();
        rows.push(TriangleRow {
            level: level.level,
            t: level.t,
            edge_width: level.detail.edge_width,
            texture_amplitude: level.detail.texture_amplitude,
            texture_frequency: level.detail.texture_frequency,
            high_frequency_fraction: high_frequency_fraction(img)?,
            steps_to_fit: crossing_step(&records, args.fit_psnr),
            t_half: analysis.t_half(),
            final_psnr: records.last().map(|r| r.1),
            folder: name,
        });
        if matches!(o, Outcome::Interrupted) {
            outcome = Outcome::Interrupted;
            break;
        }
    }
    // Levels that never reach the threshold rank last (slowest).
    let never = recipe.fit.iters as f64 * 2.0;
    let levels: Vec<f64> = rows.iter().map(|r| r.level as f64).collect();
    let fit_steps: Vec<f64> = rows
        .iter()
        .map(|r| r.steps_to_fit.unwrap_or(never))
        .collect();
    let rank_correlation = spearman(&levels, &fit_steps);
    let value = json!({
        "size": args.size,
        "levels": rows.len(),
        "fit_psnr": args.fit_psnr,
        "iters": recipe.fit.iters,
        "preset": preset,
        "recipe": recipe,
        "rows": rows,
        "spearman_level_vs_steps_to_fit": rank_correlation,
    });
    crate::output::write_json(&dir.join("experiment.json"), &value)?;
    let mut csv = String::from(
        "level,t,edge_width,texture_amplitude,texture_frequency,high_frequency_fraction,steps_to_fit,final_psnr\n",
    );
    for r in &rows {
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{}\n",
            r.level,
            r.t,
            r.edge_width,
            r.texture_amplitude,
            r.texture_frequency,
            r.high_frequency_fraction,
            r.steps_to_fit.map(|v| v.to_string()).unwrap_or_default(),
            r.final_psnr.map(|v| v.to_string()).unwrap_or_default()
        ));
    }
    std::fs::write(dir.join("triangles.csv"), csv).map_err(|e| {
        anyhow::anyhow!("{}: cannot write: {e}", dir.join("triangles.csv").display())
    })?;
    let images: Vec<_> = family
        .iter()
        .take(rows.len())
        .map(|l| l.image.clone())
        .collect();
    write_triangles_report(
        &dir.join("index.html"),
        &rows,
        &images,
        args.fit_psnr,
        rank_correlation,
    )?;

    println!(
        "wrote {}: experiment.json, triangles.csv, index.html and one analysis per level",
        dir.display()
    );
    println!("level  high-freq energy  steps to {:.0} dB", args.fit_psnr);
    for r in &rows {
        println!(
            "{:>5}  {:>16.4}  {}",
            r.level,
            r.high_frequency_fraction,
            r.steps_to_fit.map_or("never".into(), |s| format!("{s:.0}"))
        );
    }
    if let Some(rho) = rank_correlation {
        println!("rank correlation of level and steps to fit: {rho:.2}");
    }
    Ok(outcome)
}

const SPECTRAL_EXAMPLES: &str = "\
Examples:
  dip experiment spectral-bias clean.png -o spectral/ --iters 2000
  dip experiment spectral-bias clean.png -o spectral/ --sigma 50 --preset denoise-sigma50";

#[derive(clap::Args, Debug)]
#[command(after_help = SPECTRAL_EXAMPLES)]
pub struct SpectralBiasArgs {
    /// The clean natural image.
    image: PathBuf,

    /// Output folder (see `dip analyze`).
    #[arg(short, long = "output", value_name = "DIR")]
    output: PathBuf,

    /// Gaussian noise added to the image, on the 0-255 scale.
    #[arg(long, value_name = "SIGMA", default_value_t = 25.0)]
    sigma: f32,

    /// Seed of the noise.
    #[arg(long, value_name = "S", default_value_t = 0)]
    noise_seed: u64,

    /// Record the output every K steps.
    #[arg(long, value_name = "K", default_value_t = 10)]
    every: usize,

    /// Number of radial frequency bands.
    #[arg(long, value_name = "B", default_value_t = 8)]
    bands: usize,

    /// Number of runs from different seeds.
    #[arg(long, value_name = "N", default_value_t = 2)]
    seeds: usize,

    #[command(flatten)]
    recipe: RecipeArgs,

    /// Write into a non-empty DIR.
    #[arg(long)]
    force: bool,
}

fn spectral_bias(args: SpectralBiasArgs, g: &Global) -> Result<Outcome> {
    if args.every == 0 || args.bands == 0 || args.seeds == 0 {
        bail!("--every, --bands and --seeds must be at least 1");
    }
    if !(args.sigma.is_finite() && args.sigma >= 0.0) {
        bail!("--sigma must be zero or positive, got {}", args.sigma);
    }
    let preset = args.recipe.preset_name("denoise").to_string();
    let recipe = args.recipe.resolve(&preset)?;
    recipe.fit_config()?;
    prepare_folder(&args.output, args.force)?;
    let clean = load_image(&args.image, g)?;
    let noisy = image::quantize(
        &add_gaussian_noise(&clean, args.sigma, args.noise_seed),
        BitDepth::Eight,
    );
    let plan = Plan {
        observation_name: format!(
            "{} + Gaussian noise sigma {} (seed {})",
            args.image.display(),
            args.sigma,
            args.noise_seed
        ),
        clean_name: Some(args.image.display().to_string()),
        preset,
        every: args.every,
        seeds: args.seeds,
        opts: StudyOptions {
            bands: args.bands,
            spacing: BandSpacing::Linear,
        },
    };
    let (outcome, analysis) =
        record_and_analyse(&noisy, Some(&clean), &recipe, &plan, &args.output, g)?;
    print_findings(&analysis, &args.output);
    Ok(outcome)
}

//! `dip denoise`: the Deep Image Prior on one noisy image.

use std::path::{Path, PathBuf};

use anyhow::Result;
use dip::operators::Identity;
use serde_json::json;

use crate::recipe::RecipeArgs;
pub use crate::task::load_image;
use crate::task::{Outputs, Task, run_task};
use crate::{Global, Outcome};

/// Channels of the fixed random input of the network (the reference recipe's 32).
pub const INPUT_CHANNELS: usize = 32;

const EXAMPLES: &str = "\
Examples:
  dip denoise noisy.png -o restored.png
  dip denoise noisy.png -o restored.png --clean clean.png --json run.json
  dip denoise noisy50.png -o restored.png --preset denoise-sigma50
  dip denoise salt-pepper.png -o restored.png --loss l1
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

    /// The clean image, if known: only used to report PSNR and SSIM.
    #[arg(long, value_name = "CLEAN")]
    clean: Option<PathBuf>,

    #[command(flatten)]
    recipe: RecipeArgs,

    /// Also write a JSON summary: PSNR (with --clean), timing, settings and the history.
    #[arg(long, value_name = "SUMMARY.json")]
    json: Option<PathBuf>,

    /// Overwrite OUT and SUMMARY.json if they exist.
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args, g: &Global) -> Result<Outcome> {
    let preset = args.recipe.preset_name("denoise").to_string();
    let recipe = args.recipe.resolve(&preset)?;
    recipe.fit_config()?;
    let out = Outputs {
        image: args.output.clone(),
        json: args.json.clone(),
        force: args.force,
    };
    let mut inputs: Vec<&Path> = vec![&args.noisy];
    inputs.extend(args.clean.as_deref());
    out.check(&inputs)?;

    let noisy = load_image(&args.noisy, g)?;
    let clean = args
        .clean
        .as_deref()
        .map(|p| load_image(p, g))
        .transpose()?;
    let identity = Identity::new(noisy.width, noisy.height, noisy.channels);
    let task = Task {
        command: "denoise",
        observation: &noisy,
        operator: &identity,
        clean: clean.as_ref(),
        baseline: None,
        extra: vec![
            ("input", json!(args.noisy.display().to_string())),
            (
                "clean",
                json!(args.clean.as_ref().map(|p| p.display().to_string())),
            ),
        ],
    };
    run_task(task, &recipe, &preset, &out, g)
}

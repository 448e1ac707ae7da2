//! `dip denoise`: the Deep Image Prior on one noisy image.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use dip::task::Problem;
use serde_json::json;

pub use crate::task::load_image;
use crate::task::{Common, Task, run_task};
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

    #[command(flatten)]
    common: Common,
}

pub fn run(args: Args, g: &Global) -> Result<Outcome> {
    let c = &args.common;
    let (preset, recipe) = c.resolve("denoise")?;
    let out = c.outputs();
    let mut inputs: Vec<&Path> = vec![&args.noisy];
    inputs.extend(c.clean.as_deref());
    out.check(&inputs)?;

    let noisy = load_image(&args.noisy, g)?;
    let clean = c.load_clean(g)?;
    let mut problem = c.stop.with_sigma(Problem::denoise(noisy))?;
    if let (Some(clean), Some(path)) = (clean, &c.clean) {
        problem = problem
            .with_clean(clean)
            .with_context(|| path.display().to_string())?;
    }
    let task = Task {
        command: "denoise",
        problem,
        max_memory: c.recipe.max_memory()?,
        extra: vec![
            ("input", json!(args.noisy.display().to_string())),
            (
                "clean",
                json!(c.clean.as_ref().map(|p| p.display().to_string())),
            ),
        ],
    };
    run_task(task, &recipe, &preset, &out, g)
}

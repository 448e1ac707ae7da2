//! `dip resume`: continue an interrupted fit from its checkpoint.
//!
//! A checkpoint stores the command line and working folder of the run that wrote it. Resuming
//! runs that command again from the same folder, with the fit's state restored from the
//! checkpoint, and lets it overwrite what its first part wrote (never its inputs). With the same
//! thread count the result is bit-identical to a run that was never interrupted.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use dip::fit::FitState;

const EXAMPLES: &str = "\
Examples:
  dip resume restored.ckpt
  dip resume results/        (the folder holding one .ckpt file)";

#[derive(clap::Args, Debug)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The checkpoint (`<output stem>.ckpt`), or the folder that holds it.
    pub checkpoint: PathBuf,
}

/// Finds and reads the checkpoint: `(path, state, original command line)`. Changes into the
/// original run's folder, so that its relative paths mean what they meant.
pub fn prepare(a: &Args) -> Result<(PathBuf, FitState, Vec<String>)> {
    let path = find(&a.checkpoint)?;
    let path = std::path::absolute(&path).unwrap_or(path);
    let state = FitState::load(&path)?;
    let argv: Vec<String> = state.meta["argv"]
        .as_array()
        .map(|v| {
            v.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    if argv.len() < 2 {
        bail!(
            "{}: the checkpoint does not record its command line",
            path.display()
        );
    }
    if argv.get(1).is_some_and(|c| c == "resume") {
        bail!(
            "{}: the checkpoint records a resume, not a fit",
            path.display()
        );
    }
    if let Some(cwd) = state.meta["cwd"].as_str().filter(|c| !c.is_empty()) {
        std::env::set_current_dir(cwd).with_context(|| {
            format!(
                "{}: cannot go to the run's folder {cwd} (moved or deleted?)",
                path.display()
            )
        })?;
    }
    Ok((path, state, argv))
}

fn find(p: &Path) -> Result<PathBuf> {
    if p.is_file() {
        return Ok(p.to_path_buf());
    }
    if !p.exists() {
        bail!("{}: no such checkpoint", p.display());
    }
    let found: Vec<PathBuf> = std::fs::read_dir(p)
        .with_context(|| format!("{}: cannot list the folder", p.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|q| q.extension().is_some_and(|e| e == "ckpt") && q.is_file())
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("{}: no checkpoint (.ckpt) in this folder", p.display()),
        many => bail!(
            "{}: {} checkpoints in this folder ({}); name one",
            p.display(),
            many.len(),
            many.iter()
                .filter_map(|q| q.file_name().map(|n| n.to_string_lossy().to_string()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

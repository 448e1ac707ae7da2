//! Checks on output paths, made before any work starts, so that a long fit never ends in
//! "cannot write".

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// The extensions `dip::image::save` writes.
const IMAGE_EXTENSIONS: [&str; 6] = ["png", "jpg", "jpeg", "bmp", "tif", "tiff"];

/// Checks that `out` can be written as an image: a known extension, plus [`check_writable`].
pub fn check_image_output(out: &Path, inputs: &[&Path], force: bool) -> Result<()> {
    let ext = out
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some(e) if IMAGE_EXTENSIONS.contains(&e) => {}
        Some(e) => bail!(
            "{}: unknown image extension '.{e}' (use .png, .jpg, .jpeg, .bmp, .tif or .tiff)",
            out.display()
        ),
        None => bail!(
            "{}: no file extension to choose the image format (use .png, .jpg, .bmp or .tif)",
            out.display()
        ),
    }
    check_writable(out, inputs, force)
}

/// Checks that `out` can be written as a NumPy array: the `.npy` extension, plus
/// [`check_writable`].
pub fn check_array_output(out: &Path, inputs: &[&Path], force: bool) -> Result<()> {
    if out
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        != Some("npy".into())
    {
        bail!(
            "{}: measurements are written as NumPy arrays: use a .npy name",
            out.display()
        );
    }
    check_writable(out, inputs, force)
}

/// Checks that `out` may be written: it is not one of `inputs` (not even with `force`), it does
/// not exist unless `force`, and its folder exists and accepts new files.
pub fn check_writable(out: &Path, inputs: &[&Path], force: bool) -> Result<()> {
    if let Ok(meta) = fs::metadata(out) {
        if meta.is_dir() {
            bail!("{}: is a folder, not a file name", out.display());
        }
        if let Some(input) = inputs.iter().find(|i| same_file(out, i)) {
            bail!(
                "{}: is the input file {}; choose another output name",
                out.display(),
                input.display()
            );
        }
        if !force {
            bail!("{} exists; pass --force to overwrite", out.display());
        }
    }
    check_folder_writable(&parent_dir(out), out)
}

/// Checks that `dir` exists, is a folder, and that a file can be created in it; `what` names the
/// file the check is for in messages.
pub fn check_folder_writable(dir: &Path, what: &Path) -> Result<()> {
    match fs::metadata(dir) {
        Err(_) => bail!(
            "{}: cannot write: the folder {} does not exist",
            what.display(),
            dir.display()
        ),
        Ok(m) if !m.is_dir() => bail!(
            "{}: cannot write: {} is not a folder",
            what.display(),
            dir.display()
        ),
        Ok(_) => {}
    }
    // Permission bits do not tell the whole story (read-only mounts, ACLs, root): try it.
    let probe = dir.join(format!(".dip-write-check-{}", std::process::id()));
    match OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = fs::remove_file(&probe);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => bail!(
            "{}: cannot write: the folder {} is not writable (permission denied)",
            what.display(),
            dir.display()
        ),
        Err(e) => bail!(
            "{}: cannot write in the folder {}: {e}",
            what.display(),
            dir.display()
        ),
    }
}

/// The folder a file lives in (`.` for a bare file name).
pub fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Whether two paths name the same existing file (through links too).
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(ma), Ok(mb)) = (fs::metadata(a), fs::metadata(b)) {
            return ma.dev() == mb.dev() && ma.ino() == mb.ino();
        }
    }
    match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(ca), Ok(cb)) => ca == cb,
        _ => false,
    }
}

/// Writes a JSON value, pretty-printed, atomically (a temporary file renamed over the target),
/// with the file named in any error.
pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write_text(path, &text)
}

/// Writes text atomically, with the file named in any error.
pub fn write_text(path: &Path, text: &str) -> Result<()> {
    Ok(dip::image::write_atomic(path, text.as_bytes())?)
}

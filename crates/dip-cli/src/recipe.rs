//! Presets and overrides: which settings a run uses.
//!
//! A run's settings are a [`Recipe`]. They come from, in order, each overriding the one before:
//! the preset (the command's own, or `--preset NAME`), a TOML file (`--config FILE`), `--set
//! KEY=VALUE` pairs, and the shortcut flags (`--iters`, `--lr`, ...).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use dip::engine::Precision;
use dip::fit::{InputKind, Loss};
use dip::recipe::Recipe;
use toml::{Table, Value};

pub use dip::recipe::PRESETS;

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum LossArg {
    L2,
    L1,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum InputArg {
    Noise,
    Meshgrid,
}

/// The settings options every fitting command takes.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RecipeArgs {
    /// Settings preset (see `dip presets`) [default: the command's own].
    #[arg(long, value_name = "NAME")]
    pub preset: Option<String>,

    /// TOML file of settings overriding the preset; same keys as `dip presets NAME`.
    #[arg(long, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,

    /// Override one setting, e.g. `--set net.skip=0` or `--set fit.lr=0.001` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,

    /// Training steps [default: the preset's].
    #[arg(long, value_name = "N")]
    pub iters: Option<usize>,

    /// Adam learning rate [default: the preset's].
    #[arg(long, value_name = "LR", allow_negative_numbers = true)]
    pub lr: Option<f64>,

    /// Std of the noise added to the network input at every step [default: the preset's].
    #[arg(long, value_name = "STD", allow_negative_numbers = true)]
    pub reg_noise: Option<f64>,

    /// Weight of the exponential moving average of the outputs, in [0, 1); the EMA is the
    /// result, so 0 gives the last raw output [default: the preset's].
    #[arg(long, value_name = "W", allow_negative_numbers = true)]
    pub ema: Option<f64>,

    /// Seed of the network weights, its input and the input noise [default: 0].
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,

    /// Data term: l2 (Gaussian noise) or l1 (impulse noise) [default: the preset's].
    #[arg(long, value_enum)]
    pub loss: Option<LossArg>,

    /// Network input: noise, or meshgrid (needs `--set net.input_channels=2`).
    #[arg(long, value_enum)]
    pub input: Option<InputArg>,

    /// Architecture: skip, linear, relunet, decoder or convgen2; a width may follow
    /// (`linear-2048`, `decoder-64`). Other than skip, it also brings that architecture's own
    /// fit settings (see `dip presets`), which --set and the flags still override.
    #[arg(long, value_name = "NAME")]
    pub arch: Option<String>,

    /// Width of the architecture: units of linear and relunet, channels of decoder and convgen2.
    #[arg(long, value_name = "N")]
    pub width: Option<usize>,

    /// Refuse networks estimated to need more memory than this, in GiB
    /// [default: the memory available now].
    #[arg(long, value_name = "GIB")]
    pub max_memory: Option<f64>,

    /// Number format of the convolution GEMM inputs: f32, or bf16 (operands rounded to bfloat16,
    /// sums and weights in f32; needs AVX-512-BF16, else the fit runs in f32) [default: f32].
    #[arg(long, value_name = "P")]
    pub precision: Option<Precision>,
}

/// The memory available now, from `/proc/meminfo` where there is one.
fn available_memory() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The TOML text of a preset.
pub fn preset_text(name: &str) -> Result<&'static str> {
    Ok(dip::recipe::preset_text(name)?)
}

/// Parses a built-in preset.
pub fn preset(name: &str) -> Result<Recipe> {
    Ok(dip::recipe::preset(name)?)
}

/// Sets `a.b.c = value` in a table, for `--set`.
fn set_path(table: &mut Table, key: &str, value: Value) -> Result<()> {
    dip::recipe::set_path(table, key, value).map_err(|e| anyhow::anyhow!("--set {e}"))
}

fn to_recipe(table: Table) -> Result<Recipe> {
    Ok(dip::recipe::to_recipe(table)?)
}

impl RecipeArgs {
    /// The memory limit of a fit in bytes: `--max-memory`, else the memory available now.
    pub fn max_memory(&self) -> Result<Option<usize>> {
        match self.max_memory {
            Some(g) if g.is_finite() && g > 0.0 => Ok(Some((g * (1u64 << 30) as f64) as usize)),
            Some(g) => bail!("--max-memory must be a positive number of GiB, got {g}"),
            None => Ok(available_memory()),
        }
    }

    /// The preset name this run uses.
    pub fn preset_name<'a>(&'a self, default: &'a str) -> &'a str {
        self.preset.as_deref().unwrap_or(default)
    }

    /// The recipe: preset, then `--config`, then `--set`, then the shortcut flags.
    pub fn resolve(&self, default_preset: &str) -> Result<Recipe> {
        let name = self.preset_name(default_preset);
        let mut table: Table = toml::from_str(preset_text(name)?)
            .with_context(|| format!("internal: preset '{name}' is not valid TOML"))?;
        // The settings as the file leaves them, to blame the file for a bad value it holds.
        let mut from_file = None;
        if let Some(path) = &self.config {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("{}: cannot read the settings file", path.display()))?;
            let over: Table = toml::from_str(&text).map_err(|e| {
                let line = e.span().map_or(String::new(), |s| {
                    let n = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!("line {n}: ")
                });
                anyhow::anyhow!("{}: not valid TOML: {line}{}", path.display(), e.message())
            })?;
            dip::recipe::merge_tables(&mut table, over);
            let recipe = to_recipe(table.clone())
                .map_err(|e| anyhow::anyhow!("{}: bad settings: {e:#}", path.display()))?;
            from_file = Some((path, recipe));
        }
        if let Some(name) = &self.arch {
            dip::recipe::set_arch(&mut table, name).map_err(|e| anyhow::anyhow!("--{e}"))?;
        }
        if let Some(w) = self.width {
            set_path(&mut table, "net.width", Value::Integer(w as i64))?;
        }
        for kv in &self.set {
            let Some((k, v)) = kv.split_once('=') else {
                bail!("--set {kv}: expected KEY=VALUE, e.g. --set fit.iters=500");
            };
            set_path(&mut table, k.trim(), dip::recipe::parse_value(v.trim()))?;
        }
        let mut recipe = to_recipe(table).context("bad settings")?;
        let f = &mut recipe.fit;
        if let Some(v) = self.iters {
            f.iters = v;
        }
        if let Some(v) = self.lr {
            f.lr = v;
        }
        if let Some(v) = self.reg_noise {
            f.reg_noise = v;
        }
        if let Some(v) = self.ema {
            f.ema = v;
        }
        if let Some(v) = self.seed {
            f.seed = v;
        }
        if let Some(v) = self.loss {
            f.loss = match v {
                LossArg::L2 => Loss::L2,
                LossArg::L1 => Loss::L1,
            };
        }
        if let Some(v) = self.input {
            f.input = match v {
                InputArg::Noise => InputKind::Noise,
                InputArg::Meshgrid => InputKind::Meshgrid,
            };
        }
        if let Some(v) = self.precision {
            f.precision = v;
        }
        precision_notice(f.precision);
        // A bad value that comes from the settings file is reported with the file and its key;
        // any other is left to the checks of the run, which name the flags.
        if let Some((path, file_recipe)) = from_file
            && recipe.validate().is_err()
            && let Err(e) = file_recipe.validate()
        {
            bail!("{}: bad settings: {e}", path.display());
        }
        Ok(recipe)
    }
}

/// `dip presets [NAME]`: lists the presets, or prints one as TOML.
#[derive(clap::Args, Debug)]
pub struct PresetsArgs {
    /// Print this preset's TOML (a starting point for `--config`).
    name: Option<String>,
}

pub fn run_presets(args: PresetsArgs) -> Result<()> {
    match args.name {
        Some(name) => print!("{}", preset_text(&name)?),
        None => {
            for (name, _) in PRESETS {
                let r = preset(name)?;
                println!("{name:<16} {}", r.description);
            }
        }
    }
    Ok(())
}

/// One line on stderr when bf16 was asked for on a CPU that cannot run it.
pub fn precision_notice(p: Precision) {
    if p != p.effective() {
        eprintln!("notice: this CPU has no AVX-512-BF16; precision bf16 runs in f32");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses_and_builds_a_network() {
        for (name, _) in PRESETS {
            let r = preset(name).unwrap();
            r.spec(3).unwrap();
            r.fit_config().unwrap();
        }
    }

    #[test]
    fn presets_hold_the_reference_values() {
        let d = preset("denoise").unwrap();
        assert_eq!((d.fit.iters, d.fit.lr, d.fit.ema), (3000, 0.01, 0.99));
        assert!((d.fit.reg_noise - 1.0 / 30.0).abs() < 1e-15);
        assert_eq!(d.spec(3).unwrap(), dip::nets::SkipSpec::standard(32, 3));
        assert_eq!(preset("denoise-sigma50").unwrap().fit.reg_noise, 0.05);
        let s4 = preset("sr4").unwrap();
        assert_eq!((s4.fit.iters, s4.fit.reg_noise), (2000, 0.03));
        let s8 = preset("sr8").unwrap();
        assert_eq!((s8.fit.iters, s8.fit.reg_noise), (4000, 0.05));
        let k = preset("inpaint").unwrap();
        assert_eq!(k.fit.iters, 6000);
        assert_eq!(k.net.upsample, dip::nets::Upsampler::Nearest);
        let v = preset("inpaint-vase").unwrap();
        assert_eq!(v.fit.input, InputKind::Meshgrid);
        let l = preset("inpaint-library").unwrap().spec(3).unwrap();
        assert_eq!(l.scales(), 6);
        assert!(l.skip.iter().all(|&s| s == 0));
        let r = preset("inpaint-random").unwrap();
        assert_eq!((r.fit.lr, r.fit.iters), (0.001, 11000));
    }

    #[test]
    fn overrides_apply_in_order() {
        let args = RecipeArgs {
            set: vec![
                "fit.iters=500".into(),
                "net.upsample=nearest".into(),
                "net.skip=[0, 0, 0, 0, 0]".into(),
            ],
            lr: Some(0.002),
            ..RecipeArgs::default()
        };
        let r = args.resolve("denoise").unwrap();
        assert_eq!(r.fit.iters, 500);
        assert_eq!(r.fit.lr, 0.002);
        assert_eq!(r.net.upsample, dip::nets::Upsampler::Nearest);
        assert_eq!(r.spec(3).unwrap().skip, vec![0; 5]);
        // Flags win over --set.
        let args = RecipeArgs {
            set: vec!["fit.iters=500".into()],
            iters: Some(7),
            ..RecipeArgs::default()
        };
        assert_eq!(args.resolve("denoise").unwrap().fit.iters, 7);
    }

    #[test]
    fn bad_overrides_are_clear_errors() {
        let bad = |set: &str| {
            RecipeArgs {
                set: vec![set.into()],
                ..RecipeArgs::default()
            }
            .resolve("denoise")
            .map(|_| ())
            .unwrap_err()
            .to_string()
        };
        assert!(bad("fit.itres=5").contains("bad settings"));
        assert!(bad("fit.iters").contains("KEY=VALUE"));
        let e = RecipeArgs {
            preset: Some("nope".into()),
            ..RecipeArgs::default()
        }
        .resolve("denoise")
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("unknown preset 'nope'") && e.contains("sr4"),
            "{e}"
        );
        // Lists must match the number of scales.
        let r = RecipeArgs {
            set: vec!["net.down=[8, 8]".into()],
            ..RecipeArgs::default()
        }
        .resolve("denoise")
        .unwrap();
        assert!(
            r.spec(3)
                .unwrap_err()
                .to_string()
                .contains("net.down has 2")
        );
    }
}

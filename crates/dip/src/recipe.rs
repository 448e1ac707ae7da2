//! Recipes: the complete settings of a DIP run (network and fit) as one serde struct.
//!
//! The reference DIP notebooks use different settings per task; the `dip` binary ships them as
//! TOML presets that deserialise into a [`Recipe`]. A recipe is plain data: it is saved beside
//! every result, so a run can be repeated from its summary alone.

use serde::{Deserialize, Serialize};

use crate::engine::{PadMode, Precision};
use crate::fit::{FitConfig, InputKind, Loss, SgldConfig, StopKind};
use crate::nets::{Arch, ConvGen2Spec, DecoderSpec, LinearSpec, ReluNetSpec, SkipSpec, Upsampler};
use crate::{Error, Result};

/// A per-scale setting: one value for every scale, or a list with one value per scale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PerScale {
    All(usize),
    Each(Vec<usize>),
}

impl PerScale {
    fn expand(&self, scales: usize, name: &str) -> Result<Vec<usize>> {
        match self {
            PerScale::All(v) => Ok(vec![*v; scales]),
            PerScale::Each(v) if v.len() == scales => Ok(v.clone()),
            PerScale::Each(v) => Err(Error::invalid(format!(
                "net.{name} has {} entries but net.scales is {scales}",
                v.len()
            ))),
        }
    }
}

/// A per-layer real setting: one value for every layer, or a list with one value per layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PerScaleF {
    All(f64),
    Each(Vec<f64>),
}

impl PerScaleF {
    fn to_vec(&self) -> Vec<f64> {
        match self {
            PerScaleF::All(v) => vec![*v],
            PerScaleF::Each(v) => v.clone(),
        }
    }
}

/// The network part of a recipe: which architecture, and its settings. The skip network's
/// settings (see [`SkipSpec`]) default to the standard denoising network; the other
/// architectures read `width`, `layers` and their own keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetRecipe {
    /// `skip`, `linear`, `relunet`, `decoder` or `convgen2`.
    pub arch: String,
    /// Channels of the fixed input (2 for the meshgrid input).
    pub input_channels: usize,
    /// Number of scales (the network halves the size this many times).
    pub scales: usize,
    pub down: PerScale,
    pub up: PerScale,
    /// Skip channels per scale; 0 turns the skip connection of that scale off.
    pub skip: PerScale,
    pub kernel_down: PerScale,
    pub kernel_up: PerScale,
    pub kernel_skip: usize,
    /// `nearest`, `bilinear`, `transposed` (learned) or `gaussian` (fixed, Shi et al.).
    pub upsample: Upsampler,
    /// Std of the Gaussian upsampling kernel, in output pixels: one value or one per scale.
    pub gaussian_sigma: PerScaleF,
    pub pad: PadMode,
    pub need_1x1_up: bool,
    pub need_sigmoid: bool,
    pub need_bias: bool,
    /// Width of `linear` (units), `relunet` (units), `decoder` and `convgen2` (channels)
    /// [default: 128, 256, 128, 64].
    pub width: Option<usize>,
    /// Layers of `relunet` (10) and `decoder` (6).
    pub layers: Option<usize>,
    /// `relunet` only: random Fourier features of the coordinates (0: raw coordinates).
    pub fourier_features: usize,
    /// `relunet` only: std of the Fourier frequencies, in cycles across the image.
    pub fourier_scale: f64,
    /// `convgen2` only: half-width of its triangle filter, in pixels.
    pub filter: usize,
}

impl Default for NetRecipe {
    fn default() -> Self {
        NetRecipe {
            arch: "skip".into(),
            input_channels: 32,
            scales: 5,
            down: PerScale::All(128),
            up: PerScale::All(128),
            skip: PerScale::All(4),
            kernel_down: PerScale::All(3),
            kernel_up: PerScale::All(3),
            kernel_skip: 1,
            upsample: Upsampler::Bilinear,
            gaussian_sigma: PerScaleF::All(1.0),
            pad: PadMode::Reflection,
            need_1x1_up: true,
            need_sigmoid: true,
            need_bias: true,
            width: None,
            layers: None,
            fourier_features: 0,
            fourier_scale: 10.0,
            filter: 4,
        }
    }
}

/// The fit part of a recipe (see [`FitConfig`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FitRecipe {
    pub iters: usize,
    pub lr: f64,
    pub reg_noise: f64,
    /// EMA weight of the output; 0 makes the result the last raw output, as most reference
    /// notebooks use it.
    pub ema: f64,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub loss: Loss,
    #[serde(default)]
    pub input: InputKind,
    /// Lipschitz control (Shi et al.): after every step, each weight matrix is scaled so that
    /// its largest singular value is at most this.
    #[serde(default)]
    pub lipschitz: Option<f64>,
    /// Fit on this many random pixels per step (drawn with replacement) instead of all of them:
    /// the coordinate-MLP recipe.
    #[serde(default)]
    pub pixel_batch: Option<usize>,
    /// Number format of the convolution GEMM inputs: `f32`, or `bf16` (rounded operands, f32
    /// sums; needs AVX-512-BF16, else the fit runs in f32).
    #[serde(default)]
    pub precision: Precision,
}

/// When to stop, and which step's result to return (docs/STOPPING.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StopRecipe {
    /// `auto`, `fixed` (every step), `wmv`, `emv`, `discrepancy` or `spectral`.
    pub rule: StopKind,
    /// Steps without a better choice before a rule ends the fit.
    pub patience: usize,
}

impl Default for StopRecipe {
    fn default() -> Self {
        StopRecipe {
            rule: StopKind::Auto,
            patience: 200,
        }
    }
}

/// SGLD (Cheng et al.): noise on the weights after every step; the result is the mean of the
/// outputs sampled after the burn-in, and their spread its uncertainty. Runs every step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SgldRecipe {
    /// Steps before the first sample [default: a third of the steps].
    pub burn_in: Option<usize>,
    /// Steps between samples.
    pub every: usize,
    /// Std of the weight noise as a multiple of the learning rate.
    pub noise: f64,
}

impl Default for SgldRecipe {
    fn default() -> Self {
        SgldRecipe {
            burn_in: None,
            every: 50,
            noise: 2.0,
        }
    }
}

/// Everything a run needs besides the images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// What the recipe is for and where its values come from.
    #[serde(default)]
    pub description: String,
    pub fit: FitRecipe,
    pub net: NetRecipe,
    #[serde(default)]
    pub stop: StopRecipe,
    /// SGLD instead of a plain fit, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sgld: Option<SgldRecipe>,
}

impl Recipe {
    /// The network for images of `out_channels` channels.
    pub fn spec(&self, out_channels: usize) -> Result<SkipSpec> {
        let n = &self.net;
        if n.scales == 0 {
            return Err(Error::invalid("net.scales must be at least 1"));
        }
        if n.input_channels == 0 {
            return Err(Error::invalid("net.input_channels must be at least 1"));
        }
        let spec = SkipSpec {
            in_channels: n.input_channels,
            out_channels,
            down: n.down.expand(n.scales, "down")?,
            up: n.up.expand(n.scales, "up")?,
            skip: n.skip.expand(n.scales, "skip")?,
            kernel_down: n.kernel_down.expand(n.scales, "kernel_down")?,
            kernel_up: n.kernel_up.expand(n.scales, "kernel_up")?,
            kernel_skip: n.kernel_skip,
            pad: n.pad,
            upsample: n.upsample,
            gaussian_sigma: n.gaussian_sigma.to_vec(),
            need_1x1_up: n.need_1x1_up,
            need_sigmoid: n.need_sigmoid,
            need_bias: n.need_bias,
        };
        for (name, list) in [
            ("down", &spec.down),
            ("up", &spec.up),
            ("kernel_down", &spec.kernel_down),
            ("kernel_up", &spec.kernel_up),
        ] {
            if list.contains(&0) {
                return Err(Error::invalid(format!("net.{name} must be at least 1")));
            }
        }
        if spec.kernel_skip == 0 {
            return Err(Error::invalid("net.kernel_skip must be at least 1"));
        }
        if self.fit.input == InputKind::Meshgrid && spec.in_channels != 2 {
            return Err(Error::invalid(format!(
                "fit.input = \"meshgrid\" needs net.input_channels = 2, not {}",
                spec.in_channels
            )));
        }
        Ok(spec)
    }

    /// The network of the recipe's architecture for images of `out_channels` channels.
    pub fn arch(&self, out_channels: usize) -> Result<Arch> {
        let n = &self.net;
        let arch = match n.arch.as_str() {
            "skip" => Arch::Skip(self.spec(out_channels)?),
            "linear" => {
                // Input noise with as many channels as the image, as the paper's code (2 for the
                // meshgrid); `input_channels` would multiply the first layer's size.
                let inc = match self.fit.input {
                    InputKind::Meshgrid => 2,
                    InputKind::Noise => out_channels,
                };
                let mut s = LinearSpec::new(inc, out_channels, n.width.unwrap_or(128));
                s.scales = n.scales;
                s.need_sigmoid = n.need_sigmoid;
                Arch::Linear(s)
            }
            "relunet" => {
                let mut s = ReluNetSpec::new(out_channels);
                s.width = n.width.unwrap_or(s.width);
                s.layers = n.layers.unwrap_or(s.layers);
                s.fourier_features = n.fourier_features;
                s.fourier_scale = n.fourier_scale;
                Arch::Relunet(s)
            }
            "decoder" => {
                let mut s = DecoderSpec::new(out_channels, n.width.unwrap_or(128));
                s.layers = n.layers.unwrap_or(s.layers);
                s.upsample = n.upsample;
                // An empty list means the default, as for the skip network.
                s.gaussian_sigma = n.gaussian_sigma.to_vec().first().copied().unwrap_or(1.0);
                Arch::Decoder(s)
            }
            "convgen2" => {
                let mut s = ConvGen2Spec::new(out_channels, n.width.unwrap_or(64));
                s.filter = n.filter;
                Arch::Convgen2(s)
            }
            other => {
                return Err(Error::invalid(format!(
                    "net.arch: unknown architecture '{other}'; the architectures are: {}",
                    crate::nets::ARCH_NAMES.join(", ")
                )));
            }
        };
        if n.width == Some(0) || n.layers == Some(0) {
            return Err(Error::invalid(
                "net.width and net.layers must be at least 1",
            ));
        }
        Ok(arch)
    }

    /// Checks every value, naming the offending key (`fit.lr`, `net.scales`, ...), as a settings
    /// file spells it. [`Recipe::fit_config`] and [`Recipe::arch`] check the same values, but
    /// name the command-line flags.
    pub fn validate(&self) -> Result<()> {
        let f = &self.fit;
        let bad = |msg: String| Err(Error::invalid(msg));
        if f.iters == 0 {
            return bad("fit.iters must be at least 1".into());
        }
        if !(f.lr.is_finite() && f.lr > 0.0) {
            return bad(format!("fit.lr must be a positive number, got {}", f.lr));
        }
        if !(f.reg_noise.is_finite() && f.reg_noise >= 0.0) {
            return bad(format!(
                "fit.reg_noise must be zero or positive, got {}",
                f.reg_noise
            ));
        }
        if !(0.0..1.0).contains(&f.ema) {
            return bad(format!("fit.ema must be in [0, 1), got {}", f.ema));
        }
        if let Some(l) = f.lipschitz
            && !(l.is_finite() && l > 0.0)
        {
            return bad(format!("fit.lipschitz must be a positive number, got {l}"));
        }
        if f.pixel_batch == Some(0) {
            return bad("fit.pixel_batch must be at least 1".into());
        }
        let n = &self.net;
        if let Some(s) = n
            .gaussian_sigma
            .to_vec()
            .into_iter()
            .find(|s| !(s.is_finite() && *s > 0.0))
        {
            return bad(format!("net.gaussian_sigma must be positive, got {s}"));
        }
        if !(n.fourier_scale.is_finite() && n.fourier_scale > 0.0) {
            return bad(format!(
                "net.fourier_scale must be positive, got {}",
                n.fourier_scale
            ));
        }
        if let Some(s) = &self.sgld {
            if s.every == 0 {
                return bad("sgld.every must be at least 1".into());
            }
            if !(s.noise.is_finite() && s.noise >= 0.0) {
                return bad(format!(
                    "sgld.noise must be zero or positive, got {}",
                    s.noise
                ));
            }
        }
        self.arch(1)?;
        self.fit_config()?;
        Ok(())
    }

    /// SGLD's settings for a run of `iters` steps, when the recipe asks for SGLD.
    pub fn sgld_config(&self, iters: usize) -> Option<SgldConfig> {
        self.sgld.as_ref().map(|s| SgldConfig {
            noise: s.noise,
            burn_in: s.burn_in.unwrap_or(iters / 3),
            sample_every: s.every,
            ..SgldConfig::for_iters(iters)
        })
    }

    /// The fit settings (observation and check intervals at their defaults), validated.
    pub fn fit_config(&self) -> Result<FitConfig> {
        let f = &self.fit;
        let cfg = FitConfig {
            iters: f.iters,
            lr: f.lr,
            reg_noise: f.reg_noise,
            ema: f.ema,
            seed: f.seed,
            loss: f.loss,
            input: f.input,
            lipschitz: f.lipschitz,
            pixel_batch: f.pixel_batch,
            precision: f.precision,
            ..FitConfig::default()
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Writes `over` into `base`, recursing into tables: how a settings file or `--config` is
/// layered on a preset (keys of `over` win; tables merge key by key).
pub fn merge_tables(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge_tables(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// The presets: name and TOML text. Each holds the reference settings of a task (see
/// `description` in each).
pub const PRESETS: &[(&str, &str)] = &[
    ("denoise", include_str!("../presets/denoise.toml")),
    (
        "denoise-sigma50",
        include_str!("../presets/denoise-sigma50.toml"),
    ),
    ("sr4", include_str!("../presets/sr4.toml")),
    ("sr8", include_str!("../presets/sr8.toml")),
    ("inpaint", include_str!("../presets/inpaint.toml")),
    ("inpaint-vase", include_str!("../presets/inpaint-vase.toml")),
    (
        "inpaint-library",
        include_str!("../presets/inpaint-library.toml"),
    ),
    (
        "inpaint-random",
        include_str!("../presets/inpaint-random.toml"),
    ),
    ("deblur", include_str!("../presets/deblur.toml")),
];

/// The TOML text of a preset.
pub fn preset_text(name: &str) -> Result<&'static str> {
    match PRESETS.iter().find(|(n, _)| *n == name) {
        Some((_, text)) => Ok(text),
        None => Err(Error::invalid(format!(
            "unknown preset '{name}'; the presets are: {}",
            PRESETS
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// A preset as a TOML table, to be overlaid.
pub fn preset_table(name: &str) -> Result<toml::Table> {
    toml::from_str(preset_text(name)?)
        .map_err(|e| Error::invalid(format!("internal: preset '{name}' is not valid TOML: {e}")))
}

/// Parses a built-in preset.
pub fn preset(name: &str) -> Result<Recipe> {
    to_recipe(preset_table(name)?)
        .map_err(|e| Error::invalid(format!("internal: preset '{name}': {e}")))
}

/// A preset with `overrides` (dotted keys, e.g. `fit.lr` or `stop.rule`) set in order, as
/// `--set` does; validated.
pub fn recipe_with(name: &str, overrides: &[(String, toml::Value)]) -> Result<Recipe> {
    recipe_for(name, None, overrides)
}

/// Fit settings each architecture brings (`--arch`, a plan's `arch`, Python's `arch=`), from
/// the code that introduced it.
pub const ARCH_FIT: &[(&str, &str)] = &[
    ("skip", ""),
    // Chakrabarty & Maji's DIP-Linear: Adam 1e-3, no input noise.
    ("linear", "lr = 0.001\nreg_noise = 0.0"),
    // Their ReLUNet: Adam 1e-3 on random batches of 2048 pixels.
    ("relunet", "lr = 0.001\nreg_noise = 0.0\npixel_batch = 2048"),
    // Heckel & Hand's denoising example: Adam 0.01, no input noise.
    ("decoder", "lr = 0.01\nreg_noise = 0.0"),
    ("convgen2", "lr = 0.01\nreg_noise = 0.0"),
];

/// Splits `linear-2048` into `("linear", Some(2048))`.
pub fn split_arch(name: &str) -> (&str, Option<usize>) {
    match name.rsplit_once('-') {
        Some((b, n)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => {
            (b, n.parse().ok())
        }
        _ => (name, None),
    }
}

/// Sets the architecture `name` (`skip`, `linear-2048`, `decoder-64`, ...) in a recipe table:
/// `net.arch`, `net.width` when the name carries one, and the fit settings the architecture
/// brings ([`ARCH_FIT`]), which later overrides still change.
pub fn set_arch(table: &mut toml::Table, name: &str) -> Result<()> {
    let (base, w) = split_arch(name);
    let Some((_, fit)) = ARCH_FIT.iter().find(|(n, _)| *n == base) else {
        return Err(Error::invalid(format!(
            "arch {name}: unknown architecture; the architectures are: {}",
            ARCH_FIT
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    set_path(table, "net.arch", toml::Value::String(base.to_string()))?;
    if let Some(w) = w {
        set_path(table, "net.width", toml::Value::Integer(w as i64))?;
    }
    let over: toml::Table = toml::from_str(fit)
        .map_err(|e| Error::invalid(format!("internal: architecture settings: {e}")))?;
    for (k, v) in over {
        set_path(table, &format!("fit.{k}"), v)?;
    }
    Ok(())
}

/// A preset, then the architecture `arch` (with the fit settings it brings), then `overrides`
/// in order; validated. The order of the command line and of a sweep plan's cells.
pub fn recipe_for(
    preset: &str,
    arch: Option<&str>,
    overrides: &[(String, toml::Value)],
) -> Result<Recipe> {
    let mut table = preset_table(preset)?;
    if let Some(a) = arch {
        set_arch(&mut table, a)?;
    }
    for (k, v) in overrides {
        set_path(&mut table, k, v.clone())?;
    }
    let recipe = to_recipe(table)?;
    recipe.validate()?;
    Ok(recipe)
}

/// Sets `a.b.c = value` in a table.
pub fn set_path(table: &mut toml::Table, key: &str, value: toml::Value) -> Result<()> {
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(Error::invalid(format!(
            "{key}: bad key (expected e.g. fit.iters or net.skip)"
        )));
    }
    let mut t = table;
    for p in &parts[..parts.len() - 1] {
        let entry = t
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(next) = entry else {
            return Err(Error::invalid(format!(
                "{key}: '{p}' is a value, not a section"
            )));
        };
        t = next;
    }
    t.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

/// A setting's value as text: TOML syntax (numbers, booleans, lists, quoted strings), or a bare
/// word as a string (`net.upsample=nearest`).
pub fn parse_value(text: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {text}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or(toml::Value::String(text.to_string())),
        Err(_) => toml::Value::String(text.to_string()),
    }
}

/// A table as a recipe; a bad value is named by its dotted key.
pub fn to_recipe(table: toml::Table) -> Result<Recipe> {
    let text = toml::to_string(&table)
        .map_err(|e| Error::invalid(format!("cannot re-encode the settings: {e}")))?;
    toml::from_str(&text).map_err(|e| {
        let key = e.span().and_then(|s| key_at(&text, s.start));
        Error::invalid(match key {
            Some(k) => format!("{k}: {}", e.message()),
            None => e.message().to_string(),
        })
    })
}

/// The dotted key at byte `pos` of TOML `text` laid out as `toml::to_string` writes a table
/// (`[section]` headers, one `key = value` per line): the key of that line under the last header
/// above it, or the header itself.
fn key_at(text: &str, pos: usize) -> Option<String> {
    let before = text.get(..pos)?;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?.trim();
    let header = |l: &str| l.trim().trim_matches(['[', ']']).trim().to_string();
    if line.starts_with('[') {
        return Some(header(line));
    }
    let key = line.split_once('=')?.0.trim().trim_matches('"');
    let section = text[..start]
        .lines()
        .rev()
        .find(|l| l.starts_with('['))
        .map(header);
    Some(match section {
        Some(s) => format!("{s}.{key}"),
        None => key.to_string(),
    })
}

//! Recipes: the complete settings of a DIP run (network and fit) as one serde struct.
//!
//! The reference DIP notebooks use different settings per task; the `dip` binary ships them as
//! TOML presets that deserialise into a [`Recipe`]. A recipe is plain data: it is saved beside
//! every result, so a run can be repeated from its summary alone.

use serde::{Deserialize, Serialize};

use crate::engine::{PadMode, UpsampleMode};
use crate::fit::{FitConfig, InputKind, Loss};
use crate::nets::SkipSpec;
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

/// The network part of a recipe: a skip encoder-decoder (see [`SkipSpec`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetRecipe {
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
    pub upsample: UpsampleMode,
    pub pad: PadMode,
    pub need_1x1_up: bool,
    pub need_sigmoid: bool,
    pub need_bias: bool,
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
            ..FitConfig::default()
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

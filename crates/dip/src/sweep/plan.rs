//! The plan file and its cells.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Error, Result};

/// What a sweep can record about each fit: name and meaning. A plan's `metrics` picks the ones
/// its tables show; cell files hold all of them.
pub const METRICS: &[(&str, &str)] = &[
    (
        "psnr_noisy",
        "PSNR (dB) of the observation against the clean image, where both have the same size",
    ),
    (
        "psnr_baseline",
        "PSNR of the classical baseline: bicubic upscaling for sr (none for the other tasks)",
    ),
    (
        "psnr_final",
        "PSNR of the result (the moving average of the outputs; the last output when ema = 0)",
    ),
    (
        "psnr_best",
        "best PSNR of the result over the observed steps (every 10 and the last)",
    ),
    (
        "psnr_best_raw",
        "best PSNR of the raw output over the observed steps",
    ),
    ("iter_best", "the step of psnr_best"),
    (
        "ssim_final",
        "SSIM of the result as an image file holds it against the clean image",
    ),
    (
        "ssim_noisy",
        "SSIM of the observation against the clean image, where both have the same size",
    ),
    ("loss_final", "the data term at the last observed step"),
    ("iterations_run", "steps run"),
    ("parameters", "trainable parameters of the network"),
    (
        "rollbacks",
        "times the fit diverged and went back to its last good state",
    ),
    ("seconds", "wall-clock time of the fit"),
];

/// The metrics a plan's tables show when it names none.
pub const DEFAULT_METRICS: &[&str] = &[
    "psnr_noisy",
    "psnr_final",
    "psnr_best",
    "iter_best",
    "ssim_final",
    "seconds",
];

/// Metrics that measure time: they differ from run to run, unlike all the others.
pub const TIMING_METRICS: &[&str] = &["seconds"];

/// The inverse problem of a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Level: the standard deviation of white Gaussian noise, on the 0–255 scale.
    Denoise,
    /// Level: the fraction of pixels kept by a random mask, in (0, 1].
    Inpaint,
    /// Level: the downsampling factor, 2, 4 or 8 (any even factor up to 16).
    Sr,
    /// Level: the standard deviation in pixels of a Gaussian blur.
    Deblur,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::Denoise => "denoise",
            Task::Inpaint => "inpaint",
            Task::Sr => "sr",
            Task::Deblur => "deblur",
        }
    }

    /// Checks a level; the message says what the level of this task is.
    fn check_level(self, level: f64) -> std::result::Result<(), String> {
        let ok = level.is_finite()
            && match self {
                Task::Denoise => level >= 0.0,
                Task::Inpaint => level > 0.0 && level <= 1.0,
                Task::Sr => {
                    level.fract() == 0.0 && (2.0..=16.0).contains(&level) && level % 2.0 == 0.0
                }
                Task::Deblur => level > 0.0,
            };
        if ok {
            return Ok(());
        }
        let what = match self {
            Task::Denoise => "a noise level (sigma, 0-255 scale) of 0 or more",
            Task::Inpaint => "a fraction of known pixels in (0, 1]",
            Task::Sr => "a downsampling factor of 2, 4 or 8 (any even factor up to 16)",
            Task::Deblur => "a positive blur width (sigma in pixels)",
        };
        Err(format!(
            "a {} level must be {what}, not {level}",
            self.name()
        ))
    }
}

/// The seeds of a plan: a count (`seeds = 3` is 0, 1, 2) or a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    untagged,
    expecting = "a number of seeds or a list of seeds, e.g. seeds = 2 or seeds = [0, 1]"
)]
pub enum Seeds {
    Count(u64),
    List(Vec<u64>),
}

impl Seeds {
    pub fn list(&self) -> Vec<u64> {
        match self {
            Seeds::Count(n) => (0..*n).collect(),
            Seeds::List(v) => v.clone(),
        }
    }
}

/// The shrink factors of a plan: one (`downsample = 4`) or several to cross (`[4, 2]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    untagged,
    expecting = "a shrink factor or a list of them, e.g. downsample = 4 or downsample = [4, 2]"
)]
pub enum Factors {
    One(usize),
    List(Vec<usize>),
}

impl Factors {
    pub fn list(&self) -> Vec<usize> {
        match self {
            Factors::One(f) => vec![*f],
            Factors::List(v) => v.clone(),
        }
    }
}

/// One `[[degradations]]` entry: a task at one or more levels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Degradation {
    pub task: Task,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub levels: Vec<f64>,
    /// Gaussian noise added after the operator (inpaint, sr, deblur), 0–255 scale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigma: Option<f64>,
    /// The settings preset of these cells [default: the plan's, else the task's].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
}

impl Degradation {
    fn levels(&self) -> Vec<f64> {
        match self.level {
            Some(l) => vec![l],
            None => self.levels.clone(),
        }
    }
}

fn default_arch() -> Vec<String> {
    vec!["skip".to_string()]
}

fn yes() -> bool {
    true
}

/// A sweep plan, as written in its TOML file. See `docs/SWEEPS.md` for the format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// The title of the tables [default: the plan file's name].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Image files or glob patterns, relative to the plan file's folder.
    pub images: Vec<String>,
    /// Convert colour images to grayscale (luma) first.
    #[serde(default)]
    pub gray: bool,
    /// Shrink each image by this integer factor first (box averaging); a list crosses several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downsample: Option<Factors>,
    /// Then keep the central `crop` × `crop` pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop: Option<usize>,
    pub degradations: Vec<Degradation>,
    /// The settings preset of every cell [default: the task's].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// Architectures to cross (`--arch` names).
    #[serde(default = "default_arch")]
    pub arch: Vec<String>,
    /// `KEY=VALUE` overrides (as `--set`) applied to every cell.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<String>,
    /// Groups of overrides to cross: each cell takes one group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sets: Vec<Vec<String>>,
    /// Settings to cross, each with its list of values: `"fit.lr" = [0.01, 0.001]`.
    #[serde(default, skip_serializing_if = "toml::Table::is_empty")]
    pub grid: toml::Table,
    pub seeds: Seeds,
    /// Every seed sees the same degraded image (only the fit's seed changes); by default each
    /// seed also draws its own noise and mask.
    #[serde(default)]
    pub fixed_noise: bool,
    /// The metrics the tables show [default: [`DEFAULT_METRICS`]].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<String>,
    /// Also write each result image to `DIR/images/<id>.png`.
    #[serde(default = "yes")]
    pub save_images: bool,
    /// Stopping rules to evaluate on every fit (`wmv`, `emv`, `discrepancy`, `spectral`,
    /// `auto`): each watches the whole run without ending it, and the cell records per rule
    /// `stop_<rule>_step` (its chosen step), `_psnr` (of its result), `_gap` (the run's best
    /// PSNR minus that), `_steps` (where it would have ended the run) and `_seconds` (the wall
    /// time of those steps).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop_rules: Vec<String>,
    /// Measure how fast each of this many radial frequency bands (linear in radius, low to high)
    /// is fitted: the cell records `t_half_b<k>`, the step where band k of the output first
    /// holds half of the observation's energy in that band (absent: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bands: Option<usize>,
}

/// The most bands a plan may ask for.
pub const MAX_BANDS: usize = 64;

/// What a sweep records per stopping rule, as `stop_<rule>_<what>`.
pub const STOP_METRICS: &[&str] = &["step", "psnr", "gap", "steps", "seconds"];

/// Everything that decides the result of one fit. Its canonical JSON, hashed, is the cell id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellSettings {
    /// The image as the plan's patterns matched it, relative to the plan's folder, with `/`.
    pub image: String,
    pub gray: bool,
    pub downsample: Option<usize>,
    pub crop: Option<usize>,
    pub task: Task,
    pub level: f64,
    /// Noise after the operator (0 for denoise, whose level is the noise).
    pub sigma: f64,
    pub fixed_noise: bool,
    /// `None`: the task's own preset.
    pub preset: Option<String>,
    pub arch: String,
    /// The overrides, in the order they apply: the plan's `set`, the cell's group of `sets`,
    /// then its `grid` values.
    pub set: Vec<String>,
    pub seed: u64,
    /// Stopping rules evaluated on the fit (they watch it, none ends it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop_rules: Vec<String>,
    /// Radial bands whose half-times are measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bands: Option<usize>,
}

/// One fit of a sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    pub id: String,
    pub settings: CellSettings,
}

/// FNV-1a, 64 bits: a fixed, documented hash, unlike the standard library's.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// JSON with object keys sorted and no spaces: one text for one value.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                write_canonical(&map[*k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

impl CellSettings {
    /// The settings as JSON.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("cell settings serialise to JSON")
    }

    /// The stable id: 16 hex digits of the FNV-1a hash of the canonical JSON.
    pub fn id(&self) -> String {
        format!(
            "{:016x}",
            fnv1a64(canonical_json(&self.to_json()).as_bytes())
        )
    }

    /// The canonical JSON of every setting but the seed: cells with the same key are one group.
    pub fn group_key(&self) -> String {
        let mut v = self.to_json();
        if let Value::Object(map) = &mut v {
            map.remove("seed");
        }
        canonical_json(&v)
    }

    /// The seed of the degradation (noise, random mask): from the image, its preparation, the
    /// task, level and noise, and the seed unless `fixed_noise`; not from the fit settings, so
    /// that every architecture and override sees the same observation.
    pub fn degradation_seed(&self) -> u64 {
        let v = serde_json::json!({
            "image": self.image,
            "gray": self.gray,
            "downsample": self.downsample,
            "crop": self.crop,
            "task": self.task,
            "level": self.level,
            "sigma": self.sigma,
            "seed": if self.fixed_noise { None } else { Some(self.seed) },
        });
        fnv1a64(format!("degradation:{}", canonical_json(&v)).as_bytes())
    }

    /// A short description for progress lines: `house.png denoise 25 skip seed 0`.
    pub fn label(&self) -> String {
        let mut s = format!(
            "{} {} {} {}",
            self.image,
            self.task.name(),
            format_level(self.level),
            self.arch
        );
        if !self.set.is_empty() {
            s.push_str(&format!(" [{}]", self.set.join(" ")));
        }
        s.push_str(&format!(" seed {}", self.seed));
        s
    }
}

/// A level as people write it: `25`, `0.5`.
pub(crate) fn format_level(level: f64) -> String {
    format!("{level}")
}

/// A TOML value as the right-hand side of a `KEY=VALUE` override: strings bare where that reads
/// back as the same string, TOML otherwise.
fn override_value(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => {
            let bare_is_string = !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c))
                && toml::from_str::<toml::Table>(&format!("v = {s}")).is_err();
            if bare_is_string {
                s.clone()
            } else {
                toml::Value::String(s.clone()).to_string()
            }
        }
        other => other.to_string(),
    }
}

/// The `grid` table as `(key, values)` with dotted keys, in key order: `[grid] fit.lr = [...]`
/// and `"fit.lr" = [...]` are the same.
fn flatten_grid(
    table: &toml::Table,
    prefix: &str,
    out: &mut Vec<(String, Vec<String>)>,
) -> std::result::Result<(), String> {
    let mut keys: Vec<&String> = table.keys().collect();
    keys.sort();
    for k in keys {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match &table[k] {
            toml::Value::Table(t) => flatten_grid(t, &key, out)?,
            toml::Value::Array(values) if !values.is_empty() => {
                out.push((key, values.iter().map(override_value).collect()));
            }
            toml::Value::Array(_) => {
                return Err(format!("grid: {key} has an empty list of values"));
            }
            _ => {
                return Err(format!(
                    "grid: {key} must be a list of values to cross, e.g. {key} = [1, 2]"
                ));
            }
        }
    }
    Ok(())
}

/// The most cells a plan may have: far more fits than any machine runs, far fewer than would
/// exhaust memory just listing them.
pub const MAX_CELLS: u64 = 1_000_000;

fn too_many_cells(n: u64, what: &str) -> String {
    format!(
        "too many cells: {n} {what}, the limit is {MAX_CELLS}; use fewer seeds, levels, \
         architectures or grid values"
    )
}

/// Checks one `KEY=VALUE` override.
fn check_override(kv: &str, place: &str) -> std::result::Result<(), String> {
    match kv.split_once('=') {
        Some((k, _)) if !k.trim().is_empty() => Ok(()),
        _ => Err(format!(
            "{place}: '{kv}' is not KEY=VALUE (e.g. \"fit.iters=500\")"
        )),
    }
}

impl Plan {
    /// Reads and checks a plan file.
    pub fn load(path: &Path) -> Result<Plan> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::file(path, format!("cannot read the plan: {e}")))?;
        Plan::parse(&text, path)
    }

    /// Parses and checks the text of a plan; errors name `path`, the line and the key.
    pub fn parse(text: &str, path: &Path) -> Result<Plan> {
        let plan: Plan = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let msg = e.message().trim().to_string();
            Error::file(
                path,
                match line {
                    Some(l) => format!("line {l}: {msg}"),
                    None => msg,
                },
            )
        })?;
        plan.check().map_err(|m| Error::file(path, m))?;
        Ok(plan)
    }

    fn check(&self) -> std::result::Result<(), String> {
        if self.images.is_empty() {
            return Err("images: the list is empty; name at least one image or pattern".into());
        }
        if self.images.iter().any(|p| p.trim().is_empty()) {
            return Err("images: an entry is empty".into());
        }
        if let Some(f) = &self.downsample {
            let list = f.list();
            if list.is_empty() {
                return Err("downsample: the list is empty".into());
            }
            if list.contains(&0) {
                return Err("downsample must be a factor of 1 or more".into());
            }
            let mut seen = HashSet::new();
            if let Some(f) = list.iter().find(|f| !seen.insert(**f)) {
                return Err(format!("downsample: factor {f} is listed twice"));
            }
        }
        if let Some(b) = self.bands
            && !(1..=MAX_BANDS).contains(&b)
        {
            return Err(format!("bands must be from 1 to {MAX_BANDS}, not {b}"));
        }
        if self.crop == Some(0) {
            return Err("crop must be a size of 1 pixel or more".into());
        }
        if self.degradations.is_empty() {
            return Err(
                "degradations: none given; add e.g. [[degradations]] task = \"denoise\" \
                 levels = [25]"
                    .into(),
            );
        }
        for (i, d) in self.degradations.iter().enumerate() {
            let place = format!("[[degradations]] #{} ({})", i + 1, d.task.name());
            match (d.level, d.levels.is_empty()) {
                (Some(_), false) => {
                    return Err(format!("{place}: give level or levels, not both"));
                }
                (None, true) => {
                    return Err(format!("{place}: give level = L or levels = [L1, L2, ...]"));
                }
                _ => {}
            }
            for l in d.levels() {
                d.task.check_level(l).map_err(|m| format!("{place}: {m}"))?;
            }
            if let Some(s) = d.sigma {
                if d.task == Task::Denoise {
                    return Err(format!(
                        "{place}: sigma is for inpaint, sr and deblur; the level of denoise is \
                         its noise"
                    ));
                }
                if !(s.is_finite() && s >= 0.0) {
                    return Err(format!("{place}: sigma must be 0 or more, not {s}"));
                }
            }
            if d.preset.as_deref().is_some_and(|p| p.trim().is_empty()) {
                return Err(format!("{place}: preset is empty"));
            }
        }
        if self.preset.as_deref().is_some_and(|p| p.trim().is_empty()) {
            return Err("preset is empty".into());
        }
        if self.arch.is_empty() {
            return Err("arch: the list is empty; leave it out for the skip network".into());
        }
        if let Some(a) = self
            .arch
            .iter()
            .find(|a| a.is_empty() || a.chars().any(char::is_whitespace))
        {
            return Err(format!("arch: '{a}' is not an architecture name"));
        }
        for kv in &self.set {
            check_override(kv, "set")?;
        }
        for (i, group) in self.sets.iter().enumerate() {
            for kv in group {
                check_override(kv, &format!("sets[{i}]"))?;
            }
        }
        let per_image = self.cells_per_image()?;
        if per_image > MAX_CELLS {
            return Err(too_many_cells(per_image, "per image"));
        }
        let seeds = self.seeds.list();
        if seeds.is_empty() {
            return Err("seeds: no seeds; give a count (seeds = 2) or a list".into());
        }
        let mut seen = HashSet::new();
        if let Some(s) = seeds.iter().find(|s| !seen.insert(**s)) {
            return Err(format!("seeds: seed {s} is listed twice"));
        }
        const RULES: [&str; 5] = ["wmv", "emv", "discrepancy", "spectral", "auto"];
        if let Some(r) = self
            .stop_rules
            .iter()
            .find(|r| !RULES.contains(&r.as_str()))
        {
            return Err(format!(
                "stop_rules: unknown rule '{r}'; the rules are: {}",
                RULES.join(", ")
            ));
        }
        let rule_metric = |m: &str| {
            self.stop_rules.iter().any(|r| {
                m.strip_prefix("stop_")
                    .and_then(|t| t.strip_prefix(r.as_str()))
                    .and_then(|t| t.strip_prefix('_'))
                    .is_some_and(|w| STOP_METRICS.contains(&w))
            })
        };
        let band_metric = |m: &str| {
            m.strip_prefix("t_half_b")
                .and_then(|k| k.parse::<usize>().ok())
                .is_some_and(|k| self.bands.is_some_and(|b| k < b))
        };
        for m in &self.metrics {
            if !METRICS.iter().any(|(n, _)| n == m) && !rule_metric(m) && !band_metric(m) {
                return Err(format!(
                    "metrics: unknown metric '{m}'; the metrics are: {}",
                    METRICS
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        let mut seen = HashSet::new();
        if let Some(m) = self.metrics.iter().find(|m| !seen.insert(m.as_str())) {
            return Err(format!("metrics: '{m}' is listed twice"));
        }
        Ok(())
    }

    /// How many cells each image has, saturating (checked before any list of them is built).
    fn cells_per_image(&self) -> std::result::Result<u64, String> {
        let mut grid = Vec::new();
        flatten_grid(&self.grid, "", &mut grid)?;
        let seeds = match &self.seeds {
            Seeds::Count(n) => *n,
            Seeds::List(v) => v.len() as u64,
        };
        let levels: u64 = self
            .degradations
            .iter()
            .map(|d| d.levels().len() as u64)
            .fold(0, u64::saturating_add);
        let factors = self
            .downsample
            .as_ref()
            .map_or(1, |f| f.list().len() as u64);
        Ok([
            levels,
            factors,
            self.arch.len() as u64,
            self.sets.len().max(1) as u64,
            seeds,
        ]
        .into_iter()
        .chain(grid.iter().map(|(_, values)| values.len() as u64))
        .fold(1, u64::saturating_mul))
    }

    /// The metrics the tables show.
    pub fn table_metrics(&self) -> Vec<String> {
        if self.metrics.is_empty() {
            DEFAULT_METRICS.iter().map(|s| s.to_string()).collect()
        } else {
            self.metrics.clone()
        }
    }

    /// The image files the patterns match, relative to `plan_dir` where they lie under it,
    /// with `/` separators: each pattern's matches in alphabetical order, patterns in plan
    /// order, each file once. A pattern that matches nothing is an error.
    pub fn resolve_images(&self, plan_dir: &Path) -> std::result::Result<Vec<String>, String> {
        let base = if plan_dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            plan_dir
        };
        let mut out: Vec<String> = Vec::new();
        for pattern in &self.images {
            let full = if Path::new(pattern).is_absolute() {
                pattern.clone()
            } else {
                format!(
                    "{}/{pattern}",
                    glob::Pattern::escape(&base.to_string_lossy())
                )
            };
            let paths = glob::glob(&full)
                .map_err(|e| format!("images: '{pattern}' is not a valid pattern: {}", e.msg))?;
            let mut matched: Vec<PathBuf> = paths
                .filter_map(|p| p.ok())
                .filter(|p| p.is_file())
                .collect();
            matched.sort();
            if matched.is_empty() {
                return Err(format!(
                    "images: '{pattern}' matches no file (patterns are relative to the plan's \
                     folder {})",
                    base.display()
                ));
            }
            for p in matched {
                let rel = p.strip_prefix(base).unwrap_or(&p);
                // Components joined with `/`; the root of an absolute path is the leading `/`
                // (not a component of its own, which would give `//`).
                let parts: Vec<String> = rel
                    .components()
                    .filter(|c| !matches!(c, std::path::Component::RootDir))
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                let root = if rel.has_root() { "/" } else { "" };
                let name = format!("{root}{}", parts.join("/"));
                if !out.contains(&name) {
                    out.push(name);
                }
            }
        }
        Ok(out)
    }

    /// The cells of the plan over the given images, in a fixed order: image, shrink factor,
    /// degradation, level,
    /// architecture, group of `sets`, `grid` values (the last key fastest), then seed.
    pub fn cells(&self, images: &[String]) -> std::result::Result<Vec<Cell>, String> {
        let total = self.cells_per_image()?.saturating_mul(images.len() as u64);
        if total > MAX_CELLS {
            return Err(too_many_cells(total, "in all"));
        }
        let mut grid = Vec::new();
        flatten_grid(&self.grid, "", &mut grid)?;
        let mut combos: Vec<Vec<String>> = vec![Vec::new()];
        for (key, values) in &grid {
            combos = combos
                .iter()
                .flat_map(|c| {
                    values.iter().map(move |v| {
                        let mut c = c.clone();
                        c.push(format!("{key}={v}"));
                        c
                    })
                })
                .collect();
        }
        let groups: Vec<Vec<String>> = if self.sets.is_empty() {
            vec![Vec::new()]
        } else {
            self.sets.clone()
        };
        let seeds = self.seeds.list();
        let factors: Vec<Option<usize>> = match &self.downsample {
            Some(f) => f.list().into_iter().map(Some).collect(),
            None => vec![None],
        };
        let mut cells = Vec::new();
        let mut seen = HashSet::new();
        for image in images {
            for &downsample in &factors {
                for d in &self.degradations {
                    for level in d.levels() {
                        for arch in &self.arch {
                            for group in &groups {
                                for combo in &combos {
                                    let mut set = self.set.clone();
                                    set.extend(group.iter().cloned());
                                    set.extend(combo.iter().cloned());
                                    for &seed in &seeds {
                                        let settings = CellSettings {
                                            image: image.clone(),
                                            gray: self.gray,
                                            downsample,
                                            crop: self.crop,
                                            task: d.task,
                                            level,
                                            sigma: if d.task == Task::Denoise {
                                                0.0
                                            } else {
                                                d.sigma.unwrap_or(0.0)
                                            },
                                            fixed_noise: self.fixed_noise,
                                            preset: d
                                                .preset
                                                .clone()
                                                .or_else(|| self.preset.clone()),
                                            arch: arch.clone(),
                                            set: set.clone(),
                                            seed,
                                            stop_rules: self.stop_rules.clone(),
                                            bands: self.bands,
                                        };
                                        let id = settings.id();
                                        if !seen.insert(id.clone()) {
                                            return Err(format!(
                                                "two cells have the same settings ({}): a level, \
                                             architecture or group of overrides is listed twice",
                                                settings.label()
                                            ));
                                        }
                                        cells.push(Cell { id, settings });
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(cells)
    }

    /// [`Plan::resolve_images`] then [`Plan::cells`], with errors naming the plan file.
    pub fn expand(&self, plan_path: &Path) -> Result<Vec<Cell>> {
        let dir = plan_path.parent().unwrap_or(Path::new(""));
        let images = self
            .resolve_images(dir)
            .map_err(|m| Error::file(plan_path, m))?;
        self.cells(&images).map_err(|m| Error::file(plan_path, m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn override_map(set: &[String]) -> BTreeMap<&str, &str> {
        set.iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect()
    }

    const PLAN: &str = r#"
title = "test"
images = ["a.png", "b.png"]
crop = 32

[[degradations]]
task = "denoise"
levels = [25, 50]

[[degradations]]
task = "inpaint"
level = 0.5
sigma = 5
"#;

    fn parse(text: &str) -> Result<Plan> {
        Plan::parse(text, Path::new("plans/p.toml"))
    }

    fn base() -> &'static str {
        "images = [\"a.png\"]\nseeds = 2\n[[degradations]]\ntask = \"denoise\"\nlevel = 25\n"
    }

    #[test]
    fn a_plan_expands_in_a_fixed_order() {
        // `arch` after [[degradations]] belongs to the table: keys before the first table.
        let text = format!(
            "arch = [\"skip\", \"decoder-64\"]\nsets = [[], [\"net.skip=0\"]]\nseeds = [3, 4]\n{}",
            PLAN
        );
        let plan = parse(&text).unwrap();
        let images = vec!["a.png".to_string(), "b.png".to_string()];
        let cells = plan.cells(&images).unwrap();
        // 2 images × 3 levels × 2 archs × 2 groups × 2 seeds.
        assert_eq!(cells.len(), 48);
        let s = &cells[0].settings;
        assert_eq!(
            (s.image.as_str(), s.task, s.level, s.arch.as_str(), s.seed),
            ("a.png", Task::Denoise, 25.0, "skip", 3)
        );
        assert!(s.set.is_empty());
        assert_eq!(cells[1].settings.seed, 4);
        assert_eq!(cells[2].settings.set, vec!["net.skip=0".to_string()]);
        assert_eq!(cells[4].settings.arch, "decoder-64");
        assert_eq!(cells[8].settings.level, 50.0);
        let inpaint = &cells[16].settings;
        assert_eq!(
            (inpaint.task, inpaint.level, inpaint.sigma),
            (Task::Inpaint, 0.5, 5.0)
        );
        assert_eq!(cells[24].settings.image, "b.png");
        // Same plan, same cells, same ids.
        assert_eq!(plan.cells(&images).unwrap(), cells);
        let ids: HashSet<&str> = cells.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids.len(), cells.len());
    }

    #[test]
    fn grid_keys_cross_in_key_order() {
        let text = format!(
            "{}[grid]\n\"fit.lr\" = [0.01, 0.001]\nnet.upsample = [\"nearest\", \"bilinear\"]\n",
            base()
        );
        let plan = parse(&text).unwrap();
        let cells = plan.cells(&["a.png".into()]).unwrap();
        assert_eq!(cells.len(), 8);
        let sets: Vec<Vec<String>> = cells
            .iter()
            .step_by(2)
            .map(|c| c.settings.set.clone())
            .collect();
        assert_eq!(
            sets[0],
            vec!["fit.lr=0.01".to_string(), "net.upsample=nearest".into()]
        );
        assert_eq!(
            sets[1],
            vec!["fit.lr=0.01".to_string(), "net.upsample=bilinear".into()]
        );
        assert_eq!(sets[2][0], "fit.lr=0.001");
        // Strings that would read back as something else stay quoted.
        assert_eq!(override_value(&toml::Value::String("25".into())), "\"25\"");
        assert_eq!(
            override_value(&toml::Value::String("a b".into())),
            "\"a b\""
        );
        let set = override_map(&sets[3]);
        assert_eq!(set["net.upsample"], "bilinear");
    }

    #[test]
    fn the_id_of_a_cell_is_fixed() {
        // If this fails, every finished cell of every sweep would be run again: change the id
        // only on purpose.
        let s = CellSettings {
            image: "images/house.png".into(),
            gray: false,
            downsample: None,
            crop: Some(64),
            task: Task::Denoise,
            level: 25.0,
            sigma: 0.0,
            fixed_noise: false,
            preset: None,
            arch: "skip".into(),
            set: vec!["fit.iters=500".into()],
            seed: 1,
            stop_rules: vec![],
            bands: None,
        };
        assert_eq!(
            canonical_json(&s.to_json()),
            "{\"arch\":\"skip\",\"crop\":64,\"downsample\":null,\"fixed_noise\":false,\
             \"gray\":false,\"image\":\"images/house.png\",\"level\":25.0,\"preset\":null,\
             \"seed\":1,\"set\":[\"fit.iters=500\"],\"sigma\":0.0,\"task\":\"denoise\"}"
        );
        assert_eq!(s.id(), "8e49aeddd64f615c");
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        // The seed changes the id and the noise, not the group.
        let t = CellSettings {
            seed: 2,
            ..s.clone()
        };
        assert_ne!(t.id(), s.id());
        assert_eq!(t.group_key(), s.group_key());
        assert_ne!(t.degradation_seed(), s.degradation_seed());
        // The fit settings change neither the noise nor the mask ...
        let u = CellSettings {
            arch: "decoder".into(),
            set: vec![],
            ..s.clone()
        };
        assert_eq!(u.degradation_seed(), s.degradation_seed());
        // ... and with fixed noise, neither does the seed.
        let f1 = CellSettings {
            fixed_noise: true,
            ..s.clone()
        };
        let f2 = CellSettings {
            seed: 7,
            ..f1.clone()
        };
        assert_eq!(f1.degradation_seed(), f2.degradation_seed());
    }

    #[test]
    fn shrink_factors_cross_and_band_metrics_follow_bands() {
        let plan = parse(&format!("downsample = [4, 2]\nbands = 3\n{}", base())).unwrap();
        let cells = plan.cells(&["a.png".to_string()]).unwrap();
        // Factor, then seed: 4/0, 4/1, 2/0, 2/1.
        let got: Vec<(Option<usize>, u64, Option<usize>)> = cells
            .iter()
            .map(|c| (c.settings.downsample, c.settings.seed, c.settings.bands))
            .collect();
        assert_eq!(
            got,
            vec![
                (Some(4), 0, Some(3)),
                (Some(4), 1, Some(3)),
                (Some(2), 0, Some(3)),
                (Some(2), 1, Some(3))
            ]
        );
        // One factor as a number is the same cells as a list of one, with the same ids.
        let one = parse(&format!("downsample = 4\n{}", base())).unwrap();
        let list = parse(&format!("downsample = [4]\n{}", base())).unwrap();
        let ids = |p: &Plan| -> Vec<String> {
            p.cells(&["a.png".to_string()])
                .unwrap()
                .into_iter()
                .map(|c| c.id)
                .collect()
        };
        assert_eq!(ids(&one), ids(&list));
        let ok = format!("bands = 3\nmetrics = [\"t_half_b2\"]\n{}", base());
        assert!(parse(&ok).is_ok());
        let err = |text: &str| parse(text).unwrap_err().to_string();
        let e = err(&format!("bands = 3\nmetrics = [\"t_half_b3\"]\n{}", base()));
        assert!(e.contains("unknown metric 't_half_b3'"), "{e}");
        let e = err(&format!("metrics = [\"t_half_b0\"]\n{}", base()));
        assert!(e.contains("unknown metric 't_half_b0'"), "{e}");
        let e = err(&format!("bands = 0\n{}", base()));
        assert!(e.contains("bands must be from 1"), "{e}");
        let e = err(&format!("downsample = [2, 2]\n{}", base()));
        assert!(e.contains("factor 2 is listed twice"), "{e}");
        let e = err(&format!("downsample = []\n{}", base()));
        assert!(e.contains("downsample: the list is empty"), "{e}");
        let e = err(&format!("downsample = [0]\n{}", base()));
        assert!(e.contains("factor of 1 or more"), "{e}");
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let err = |text: &str| parse(text).unwrap_err().to_string();
        let e = err(&format!("imagez = [\"x\"]\n{}", base()));
        assert!(e.starts_with("plans/p.toml: line 1:"), "{e}");
        assert!(e.contains("imagez"), "{e}");
        let e = err(&base().replace("level = 25", "levle = 25"));
        assert!(e.contains("plans/p.toml") && e.contains("levle"), "{e}");
        let e = err(&base().replace("denoise", "denoize"));
        assert!(e.contains("denoize") && e.contains("inpaint"), "{e}");
        let e = err(&base().replace("seeds = 2", "seeds = \"two\""));
        assert!(e.contains("a number of seeds or a list"), "{e}");
        let e = err(&base().replace("seeds = 2\n", ""));
        assert!(e.contains("seeds"), "{e}");
        let e = err(&format!("metrics = [\"psnr\"]\n{}", base()));
        assert!(
            e.contains("unknown metric 'psnr'") && e.contains("psnr_final"),
            "{e}"
        );
        let e = err(&format!("set = [\"fit.iters\"]\n{}", base()));
        assert!(e.contains("set: 'fit.iters' is not KEY=VALUE"), "{e}");
        let e = err(&base().replace("task = \"denoise\"\nlevel = 25", "task = \"sr\"\nlevel = 3"));
        assert!(e.contains("#1 (sr)") && e.contains("factor"), "{e}");
        let e = err(&base().replace("level = 25", "level = 25\nsigma = 3"));
        assert!(e.contains("sigma is for inpaint"), "{e}");
        let e = err(&format!("{}[grid]\n\"fit.lr\" = 0.1\n", base()));
        assert!(e.contains("grid: fit.lr must be a list"), "{e}");
        let e = err(&format!(
            "seeds = [1, 1]\n{}",
            base().replace("seeds = 2\n", "")
        ));
        assert!(e.contains("seed 1 is listed twice"), "{e}");
        let plan = parse(&base().replace("level = 25", "levels = [25, 25]")).unwrap();
        let e = plan.cells(&["a.png".into()]).unwrap_err();
        assert!(e.contains("same settings"), "{e}");
    }

    #[test]
    fn images_are_globbed_relative_to_the_plan() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("img/sub")).unwrap();
        for f in ["img/b.png", "img/a.png", "img/c.jpg", "img/sub/d.png"] {
            std::fs::write(d.join(f), b"x").unwrap();
        }
        let text = base().replace("[\"a.png\"]", "[\"img/*.png\", \"img/**/*.png\"]");
        let plan = parse(&text).unwrap();
        assert_eq!(
            plan.resolve_images(d).unwrap(),
            vec!["img/a.png", "img/b.png", "img/sub/d.png"]
        );
        let plan = parse(&base().replace("a.png", "none/*.png")).unwrap();
        let e = plan.resolve_images(d).unwrap_err();
        assert!(e.contains("'none/*.png' matches no file"), "{e}");
        // Through the plan path, the error names the plan.
        let e = plan.expand(&d.join("p.toml")).unwrap_err().to_string();
        assert!(e.contains("p.toml: images:"), "{e}");
        // An absolute pattern outside the plan's folder keeps its path, with one leading `/`.
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::write(elsewhere.path().join("e.png"), b"x").unwrap();
        let abs = elsewhere
            .path()
            .join("e.png")
            .to_string_lossy()
            .into_owned();
        let plan = parse(&base().replace("a.png", &abs)).unwrap();
        assert_eq!(plan.resolve_images(d).unwrap(), vec![abs.clone()]);
        assert!(!abs.starts_with("//"));
    }
}

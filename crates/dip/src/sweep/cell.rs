//! One cell of a sweep: its image as the plan prepares it, its recipe, its degraded problem, the
//! fit through [`crate::task::restore`] with the plan's stopping rules watching, and the
//! record of what it measured. The command line schedules cells and draws bars; Python or any
//! other front end can run a cell the same way.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::json;

use super::plan::{Cell, CellSettings, Task};
use super::store::CellRecord;
use crate::fit::{
    BandRecorder, Control, Observer, StepInfo, StopConfig, StopKind, StopRule, make_rule,
};
use crate::image::{self, Image};
use crate::metrics::{psnr, rgb_to_y, ssim};
use crate::operators::Psf;
use crate::recipe::{Recipe, parse_value, recipe_for};
use crate::spectral::{BandSpacing, bands::Bands};
use crate::task::{Degradation, MaskKind, Noise, NoiseModel, Problem, RunContext, Seeds, restore};
use crate::{Error, Result};

/// The preset of a cell: the plan's, else the one its task's command uses.
pub fn preset_of(s: &CellSettings) -> String {
    if let Some(p) = &s.preset {
        return p.clone();
    }
    match s.task {
        Task::Denoise => "denoise",
        Task::Inpaint => "inpaint-random",
        Task::Sr if s.level >= 8.0 => "sr8",
        Task::Sr => "sr4",
        Task::Deblur => "deblur",
    }
    .to_string()
}

/// The recipe of a cell: its preset, then the architecture (with the fit settings it brings),
/// then the overrides (`KEY=VALUE`, as `--set`), then its seed.
pub fn recipe_of(s: &CellSettings) -> Result<(String, Recipe)> {
    let preset = preset_of(s);
    let mut overrides = Vec::with_capacity(s.set.len() + 1);
    for kv in &s.set {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(Error::invalid(format!(
                "--set {kv}: expected KEY=VALUE, e.g. --set fit.iters=500"
            )));
        };
        overrides.push((k.trim().to_string(), parse_value(v.trim())));
    }
    overrides.push(("fit.seed".into(), toml::Value::Integer(s.seed as i64)));
    let recipe = recipe_for(&preset, Some(&s.arch), &overrides)?;
    Ok((preset, recipe))
}

/// A cell's clean image as the plan prepares it: loaded from the plan's folder, made gray,
/// shrunk and cropped. Also says whether an alpha channel was dropped.
pub fn prepare_image(plan_dir: &Path, s: &CellSettings) -> Result<(Image, bool)> {
    let path = plan_dir.join(&s.image);
    let (mut img, info) = image::load(&path)?;
    if s.gray && img.channels == 3 {
        img = Image::new(img.width, img.height, 1, rgb_to_y(&img)).with_bit_depth(img.bit_depth);
    }
    if let Some(f) = s.downsample.filter(|&f| f > 1) {
        img = image::downsample_box(&img, f)
            .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
    }
    if let Some(c) = s.crop {
        if img.width < c || img.height < c {
            return Err(Error::invalid(format!(
                "{}: the image is {}x{}{}, smaller than crop = {c}",
                path.display(),
                img.width,
                img.height,
                if s.downsample.is_some_and(|f| f > 1) {
                    " after downsampling"
                } else {
                    ""
                }
            )));
        }
        img = image::center_crop(&img, c, c);
    }
    Ok((img, info.dropped_alpha))
}

/// The degradation of a cell, as `dip degrade` would make it.
pub fn degradation(s: &CellSettings) -> Result<Degradation> {
    Ok(match s.task {
        Task::Denoise => Degradation::Noise(Noise::gaussian(s.level)),
        Task::Inpaint => Degradation::Inpaint {
            mask: MaskKind::Random(s.level),
            noise: Noise::gaussian(s.sigma),
        },
        Task::Sr => Degradation::Downsample {
            factor: s.level as usize,
            crop_to: None,
            noise: Noise::gaussian(s.sigma),
        },
        Task::Deblur => Degradation::Blur {
            psf: Psf::gaussian(s.level, Psf::default_gaussian_size(s.level))?,
            noise: Noise::gaussian(s.sigma),
        },
    })
}

/// The problem of a cell (observation quantised to the image's bit depth, the clean image),
/// from the cell's degradation seed.
pub fn degrade(clean: &Image, s: &CellSettings) -> Result<Problem> {
    degradation(s)?.apply(clean, Seeds::from_one(s.degradation_seed()))
}

/// A stopping rule that watches a fit without ending it: it records where it would have ended
/// the run, and sees nothing after that (its choice is what that run would have returned).
struct Watch {
    name: String,
    rule: Box<dyn StopRule>,
    asked: Option<usize>,
}

impl Observer for Watch {
    fn observe(&mut self, info: &StepInfo<'_>) -> Control {
        if self.asked.is_none() && self.rule.observe(info) == Control::Stop {
            self.asked = Some(info.iter);
        }
        Control::Continue
    }
}

/// A recorder of `n` band fits, linear in radius, over the observation's size; the observation
/// must have the output's size (not super-resolution).
fn band_recorder(observation: &Image, clean: &Image, n: usize) -> Result<BandRecorder> {
    if (observation.width, observation.height) != (clean.width, clean.height) {
        return Err(Error::invalid(format!(
            "bands: band half-times need an observation of the output's size; this task \
             changes the size ({}x{} -> {}x{})",
            clean.width, clean.height, observation.width, observation.height
        )));
    }
    let bands = Arc::new(Bands::new(
        observation.width,
        observation.height,
        n,
        BandSpacing::Linear,
    )?);
    BandRecorder::new(bands, observation, Some(clean))
}

/// A finished cell: its record, and its result image.
pub struct FittedCell {
    pub record: CellRecord,
    pub image: Image,
}

/// Degrades `clean` as the cell says, fits it with the cell's recipe for its whole budget while
/// the plan's stopping rules watch, and measures. `ctx` is the run's wiring (device, Ctrl-C
/// flag, memory share, a GPU batch, the caller's observers, such as a bar). `None`: the fit was
/// interrupted, and the cell is not finished.
pub fn fit_cell(cell: &Cell, clean: &Image, ctx: RunContext<'_>) -> Result<Option<FittedCell>> {
    let s = &cell.settings;
    let (preset, mut recipe) = recipe_of(s)?;
    // The fit runs its whole budget; the plan's rules watch it and record their choices.
    recipe.stop.rule = StopKind::Fixed;
    let p = degrade(clean, s)?;
    let clean = p
        .clean
        .as_ref()
        .expect("a degraded problem holds its clean image");
    let denoising = s.task == Task::Denoise;
    let mut watches: Vec<Watch> = Vec::new();
    for r in &s.stop_rules {
        let kind: StopKind = r.parse()?;
        // The noise-level rules apply to denoising only; elsewhere their metrics stay empty.
        let stop_cfg = StopConfig {
            noise_free: p.noise == NoiseModel::NoiseFree,
            ..StopConfig::default()
        };
        if let Ok(rule) = make_rule(kind, &stop_cfg, &p.observation, denoising) {
            watches.push(Watch {
                name: r.clone(),
                rule,
                asked: None,
            });
        }
    }
    let mut bands = match s.bands {
        Some(n) => Some(band_recorder(&p.observation, clean, n)?),
        None => None,
    };
    let device = ctx.device;
    let mut ctx = ctx;
    let mut observers: Vec<&mut dyn Observer> = std::mem::take(&mut ctx.observers)
        .into_iter()
        .map(|o| o as &mut dyn Observer)
        .collect();
    for w in watches.iter_mut() {
        observers.push(w);
    }
    if let Some(b) = bands.as_mut() {
        observers.push(b);
    }
    let ctx = RunContext {
        observers,
        device: ctx.device,
        cancel: ctx.cancel,
        checkpoint: ctx.checkpoint,
        resume: ctx.resume,
        max_memory: ctx.max_memory,
        observe_every: ctx.observe_every,
        #[cfg(feature = "cuda")]
        lanes: ctx.lanes,
    };
    let restored = restore(&p, &recipe, ctx)?;
    let report = &restored.report;
    if report.interrupted {
        return Ok(None);
    }
    let spec = &restored.network;
    let half_times = match bands {
        Some(b) => Some(b.half_times()?),
        None => None,
    };
    let same_shape = (
        p.observation.width,
        p.observation.height,
        p.observation.channels,
    ) == (clean.width, clean.height, clean.channels);
    let mut m: BTreeMap<String, Option<f64>> = BTreeMap::new();
    let mut put = |k: &str, v: Option<f64>| {
        m.insert(k.to_string(), v);
    };
    put("psnr_noisy", report.psnr_noisy);
    put("psnr_baseline", restored.baseline.map(|(_, b)| b));
    put("psnr_final", report.psnr_final);
    put("psnr_best", report.psnr_best);
    put("psnr_best_raw", report.psnr_best_raw);
    put("iter_best", report.iter_best.map(|i| i as f64));
    put("ssim_final", restored.ssim);
    put(
        "ssim_noisy",
        same_shape.then(|| ssim(&p.observation, clean)),
    );
    put("loss_final", report.history.last().map(|r| r.loss));
    put("iterations_run", Some(report.iterations_run as f64));
    put("parameters", Some(report.parameters as f64));
    put("rollbacks", Some(report.rollbacks as f64));
    put("seconds", Some(report.seconds));
    if denoising {
        // What each noise-level estimator reads on the observation (0–255 scale), so that a
        // stopping rule can be replayed with any of them from the recorded history.
        for est in crate::sigma::SigmaEstimator::ALL {
            put(
                &format!("sigma_est_{est}"),
                Some(est.estimate(&p.observation) * 255.0),
            );
        }
    }
    for (k, t) in half_times.iter().flatten().enumerate() {
        put(&format!("t_half_b{k}"), *t);
    }
    let oracle = match (report.psnr_best, report.psnr_best_raw) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let per_step = report.seconds / report.iterations_run.max(1) as f64;
    for w in &watches {
        // A rule that chose nothing within the budget returns what the fit returns: the last
        // step's result.
        let chosen = w.rule.chosen();
        let p_rule = match chosen {
            Some(c) => Some(psnr(&c.image.data, &clean.data)),
            None => report.psnr_final,
        };
        let steps = w.asked.unwrap_or(report.iterations_run);
        let key = |what: &str| format!("stop_{}_{what}", w.name);
        m.insert(
            key("step"),
            Some(chosen.map_or(report.iterations_run, |c| c.step) as f64),
        );
        m.insert(key("psnr"), p_rule);
        m.insert(key("gap"), oracle.zip(p_rule).map(|(o, q)| o - q));
        m.insert(key("steps"), Some(steps as f64));
        m.insert(key("seconds"), Some(steps as f64 * per_step));
    }
    let info = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "preset": preset,
        "network": spec.label(),
        "operator": p.operator.name(),
        // Where the fit ran: a GPU draws other (equally deterministic) noise than the CPU.
        "device": device.to_string(),
        "size": [clean.width, clean.height, clean.channels],
        "lr_final": report.lr_final,
        // (step, PSNR of the raw output, PSNR of the result, loss) at every observed step.
        "history": report
            .history
            .iter()
            .map(|h| json!([h.iter, h.psnr_raw, h.psnr_ema, h.loss]))
            .collect::<Vec<_>>(),
        "recipe": recipe,
    });
    Ok(Some(FittedCell {
        record: CellRecord::new(cell, m, info),
        image: report.output_ema.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::Plan;

    #[test]
    fn presets_follow_the_task() {
        let plan = Plan::parse(
            "images = [\"a.png\"]\nseeds = 1\n\
             [[degradations]]\ntask = \"sr\"\nlevels = [4, 8]\n\
             [[degradations]]\ntask = \"inpaint\"\nlevel = 0.5\npreset = \"inpaint\"\n",
            Path::new("p.toml"),
        )
        .unwrap();
        let cells = plan.cells(&["a.png".into()]).unwrap();
        let presets: Vec<String> = cells.iter().map(|c| preset_of(&c.settings)).collect();
        assert_eq!(presets, vec!["sr4", "sr8", "inpaint"]);
        let (_, r) = recipe_of(&cells[0].settings).unwrap();
        assert_eq!(r.fit.seed, 0);
    }

    #[test]
    fn degradations_depend_on_the_cell_only() {
        let clean = Image::new(
            16,
            16,
            3,
            (0..16 * 16 * 3).map(|i| (i % 7) as f32 / 7.0).collect(),
        );
        let plan = Plan::parse(
            "images = [\"a.png\"]\nseeds = 2\narch = [\"skip\", \"decoder\"]\n\
             [[degradations]]\ntask = \"denoise\"\nlevel = 25\n\
             [[degradations]]\ntask = \"inpaint\"\nlevel = 0.5\n\
             [[degradations]]\ntask = \"sr\"\nlevel = 4\n\
             [[degradations]]\ntask = \"deblur\"\nlevel = 1\nsigma = 2\n",
            Path::new("p.toml"),
        )
        .unwrap();
        let cells = plan.cells(&["a.png".into()]).unwrap();
        let obs = |i: usize| degrade(&clean, &cells[i].settings).unwrap();
        // Cell order: degradation, arch, seed.
        for d in 0..4 {
            let base = d * 4;
            let (a, b, c) = (obs(base), obs(base + 1), obs(base + 2));
            assert_eq!(a.observation, obs(base).observation, "repeatable");
            assert_eq!(
                a.observation, c.observation,
                "the architecture does not matter"
            );
            if d != 2 {
                assert_ne!(a.observation, b.observation, "the seed draws new noise");
            }
        }
        let sr = obs(8);
        assert_eq!((sr.observation.width, sr.observation.height), (4, 4));
        assert!(sr.baseline().unwrap().is_some());
    }
}

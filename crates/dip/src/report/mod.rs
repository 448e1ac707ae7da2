//! A self-contained HTML report of a spectral-bias [`Analysis`].
//!
//! One file, nothing fetched: the plots are inline SVG drawn with plotters (text as SVG
//! `<text>` in a generic font family, so no font files are needed), the images are PNG data
//! URIs, the styling is an inline `<style>` block, and there is no script. The file can be
//! mailed, archived or opened offline and looks the same.
//!
//! Typical use, after [`analyze`](crate::spectral::analyze):
//!
//! ```no_run
//! # use std::path::Path;
//! # use dip::spectral::{RecordedRun, StudyOptions, analyze};
//! # use dip::report::{ReportImages, write_report};
//! # fn main() -> dip::Result<()> {
//! # let (observation, clean): (dip::image::Image, Option<dip::image::Image>) = todo!();
//! let run = RecordedRun::open("runs/seed0")?;
//! let opts = StudyOptions::default();
//! let analysis = analyze(std::slice::from_ref(&run), &observation, clean.as_ref(), &opts)?;
//! let images = ReportImages::from_run(&run, &analysis, observation, clean, 6)?;
//! write_report(Path::new("out/report.html"), &analysis, &images)?;
//! # Ok(())
//! # }
//! ```

mod plots;

use std::fmt::Write as _;
use std::io::Cursor;
use std::path::Path;

use base64::Engine as _;
use image::{DynamicImage, ImageBuffer, ImageFormat};

use crate::error::{Error, Result};
use crate::image::Image;
use crate::image::write_atomic;
use crate::spectral::study::{Analysis, RecordedRun};

pub mod page;
pub mod triangles;

pub use plots::{Plot, plots};

/// One output image shown in the report's strip.
#[derive(Clone, Debug, PartialEq)]
pub struct StripFrame {
    /// The step it was recorded at.
    pub step: usize,
    /// The output (run 0's raw network output at that step).
    pub image: Image,
}

/// The pictures of a report: what the plots cannot show.
///
/// The best and final outputs' spectra are not needed here:
/// [`analyze`](crate::spectral::analyze) measures them from the frames and keeps them in
/// [`Analysis::spectra`].
#[derive(Clone, Debug, PartialEq)]
pub struct ReportImages {
    /// The observation the runs were fitted to.
    pub observation: Image,
    /// The clean image, when known.
    pub clean: Option<Image>,
    /// Outputs at a few steps, in step order (see [`strip_steps`]); captions give each step
    /// and, when known, its PSNR.
    pub strip: Vec<StripFrame>,
}

impl ReportImages {
    /// Images with an empty strip.
    pub fn new(observation: Image, clean: Option<Image>) -> Self {
        ReportImages {
            observation,
            clean,
            strip: Vec::new(),
        }
    }

    /// Loads the strip from a recorded run (normally run 0 of `analysis`): the frames at
    /// [`strip_steps`]`(run.steps(), analysis.best_step, count)`, i.e. the first, best and
    /// final outputs and a few in between. Only those frames are read.
    pub fn from_run(
        run: &RecordedRun,
        analysis: &Analysis,
        observation: Image,
        clean: Option<Image>,
        count: usize,
    ) -> Result<Self> {
        let strip = strip_steps(run.steps(), analysis.best_step, count)
            .into_iter()
            .map(|step| {
                run.frame_at_step(step)
                    .map(|image| StripFrame { step, image })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ReportImages {
            observation,
            clean,
            strip,
        })
    }
}

/// Chooses the steps to show in the image strip: always the first and last recorded steps and
/// `best` (when it is among `steps`), then, up to `count` in all, steps spaced evenly in
/// `log(step)` between the first and the last (DIP changes fastest early, so log spacing shows
/// more of the early fit). Snapped to recorded steps; sorted, without repeats. `steps` must
/// be sorted; empty gives an empty strip.
pub fn strip_steps(steps: &[usize], best: Option<usize>, count: usize) -> Vec<usize> {
    let (Some(&first), Some(&last)) = (steps.first(), steps.last()) else {
        return Vec::new();
    };
    let mut chosen = vec![first, last];
    if let Some(b) = best.filter(|b| steps.binary_search(b).is_ok()) {
        chosen.push(b);
    }
    chosen.sort_unstable();
    chosen.dedup();
    let slots = count.saturating_sub(chosen.len());
    if slots > 0 {
        let (lo, hi) = ((first.max(1) as f64).ln(), (last.max(1) as f64).ln());
        // More targets than slots, because some snap onto steps already chosen.
        let targets = slots + 2;
        for k in 1..=targets {
            if chosen.len() >= count {
                break;
            }
            let t = (lo + (hi - lo) * k as f64 / (targets + 1) as f64).exp();
            // Nearest recorded step to `t` that is not chosen yet.
            let candidate = steps
                .iter()
                .copied()
                .filter(|s| !chosen.contains(s))
                .min_by(|&a, &b| (a as f64 - t).abs().total_cmp(&(b as f64 - t).abs()));
            if let Some(s) = candidate {
                chosen.push(s);
            }
        }
        chosen.sort_unstable();
        chosen.dedup();
    }
    chosen
}

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The image as an 8-bit PNG data URI (`data:image/png;base64,…`); samples are clamped to
/// \[0, 1\] and rounded, NaN shown as 0.
pub fn png_data_uri(img: &Image) -> Result<String> {
    let expected = img.width * img.height * img.channels;
    if img.width == 0 || img.height == 0 || img.data.len() != expected {
        return Err(Error::invalid(format!(
            "cannot encode a malformed {}x{} image with {} channel(s) and {} samples",
            img.width,
            img.height,
            img.channels,
            img.data.len()
        )));
    }
    let (w, h) = (
        u32::try_from(img.width).map_err(|_| Error::invalid("image too wide to encode"))?,
        u32::try_from(img.height).map_err(|_| Error::invalid("image too tall to encode"))?,
    );
    let raw: Vec<u8> = img
        .data
        .iter()
        .map(|&v| {
            if v.is_nan() {
                0
            } else {
                (v.clamp(0.0, 1.0) * 255.0).round() as u8
            }
        })
        .collect();
    let dynimg = match img.channels {
        1 => ImageBuffer::from_raw(w, h, raw).map(DynamicImage::ImageLuma8),
        3 => ImageBuffer::from_raw(w, h, raw).map(DynamicImage::ImageRgb8),
        c => {
            return Err(Error::invalid(format!(
                "cannot encode an image with {c} channels"
            )));
        }
    }
    .ok_or_else(|| Error::invalid("internal: image buffer size"))?;
    let mut png = Vec::new();
    dynimg
        .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
        .map_err(|e| Error::invalid(format!("cannot encode a PNG: {e}")))?;
    Ok(format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png)
    ))
}

/// A number for a table cell: `digits` decimals, or "–" when missing or not finite.
fn num(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.digits$}"),
        _ => "–".to_string(),
    }
}

/// Scientific notation for energies and distances.
fn sci(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.3e}"),
        _ => "–".to_string(),
    }
}

const STYLE: &str = "\
body{font-family:sans-serif;margin:24px auto;max-width:1000px;color:#222;line-height:1.4}\
h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;margin:8px 0}\
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:0.9em}\
th{background:#f3f3f3}td.l,th.l{text-align:left}\
figure{margin:12px 0}figure.plot svg{max-width:100%;height:auto}\
figcaption{font-size:0.9em;color:#444}\
.strip{display:flex;flex-wrap:wrap;gap:10px}\
.strip figure{margin:0;text-align:center}\
.strip img{width:180px;image-rendering:pixelated;border:1px solid #ccc}\
.note{color:#555;font-style:italic}";

/// Renders the report as one HTML document (see the module documentation).
pub fn render_report(analysis: &Analysis, images: &ReportImages) -> Result<String> {
    let a = analysis;
    let obs = &images.observation;
    if (obs.width, obs.height, obs.channels) != (a.width, a.height, a.channels) {
        return Err(Error::invalid(format!(
            "the observation is {}x{} with {} channel(s), the analysis is of {}x{} with {}",
            obs.width, obs.height, obs.channels, a.width, a.height, a.channels
        )));
    }
    let mut h = String::with_capacity(1 << 20);
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    h.push_str("<title>Spectral bias of the Deep Image Prior: report</title>\n<style>");
    h.push_str(STYLE);
    h.push_str("</style>\n</head>\n<body>\n");
    h.push_str("<h1>Spectral bias of the Deep Image Prior</h1>\n");
    h.push_str(
        "<p>Does the fit learn the observation's low frequencies first? Per radial band \
         <i>b</i>, r<sub>b</sub>(t) = 1 − E<sub>b</sub>(x<sub>t</sub> − y) / \
         E<sub>b</sub>(y) is how much of the band the output has fitted; t½ is the step at \
         which it first reaches 0.5.</p>\n",
    );
    key_table(&mut h, a);
    band_table(&mut h, a);

    // Images.
    h.push_str("<h2>Images</h2>\n<div class=\"strip\">\n");
    image_figure(&mut h, obs, "observation")?;
    if let Some(c) = &images.clean {
        image_figure(&mut h, c, "clean")?;
    }
    h.push_str("</div>\n");
    if !images.strip.is_empty() {
        h.push_str("<h2>Outputs of run 0</h2>\n<div class=\"strip\">\n");
        for f in &images.strip {
            let mut cap = format!("step {}", f.step);
            if let Some(p) = a.psnr_at(0, f.step).filter(|p| p.is_finite()) {
                let _ = write!(cap, " · {p:.2} dB");
            }
            if a.best_step == Some(f.step) {
                cap.push_str(" · best");
            }
            image_figure(&mut h, &f.image, &cap)?;
        }
        h.push_str("</div>\n");
    }

    // Plots, with notes for the ones that cannot be drawn.
    let drawn = plots(a)?;
    let find = |id: &str| drawn.iter().find(|p| p.id == id);
    let sections: [(&str, &[(&str, &str)]); 5] = [
        (
            "Fit",
            &[
                (
                    "psnr",
                    "No PSNR to plot: neither the fit nor the analysis had a clean image.",
                ),
                ("loss", "No positive loss values to plot."),
            ],
        ),
        (
            "Per-band fit",
            &[
                ("band_fit", "No band fit to plot."),
                ("band_heatmap", "No band fit to plot."),
            ],
        ),
        (
            "Two runs",
            &[(
                "two_run",
                "Only one run was analysed, so there is no two-run distance; record a second \
                 run of the same observation with another seed to see it.",
            )],
        ),
        (
            "Early stopping as a low-pass filter",
            &[("lowpass", "No low-pass fit to plot.")],
        ),
        ("Spectra", &[("spectra", "No spectrum to plot.")]),
    ];
    for (title, items) in sections {
        let _ = writeln!(h, "<h2>{}</h2>", escape_html(title));
        for (id, note) in items {
            match find(id) {
                Some(p) => {
                    let _ = write!(
                        h,
                        "<figure class=\"plot\" id=\"plot-{}\">\n{}\n\
                         <figcaption>{}</figcaption>\n</figure>\n",
                        escape_html(p.id),
                        p.svg,
                        escape_html(&p.caption)
                    );
                }
                None => {
                    let _ = writeln!(h, "<p class=\"note\">{}</p>", escape_html(note));
                }
            }
        }
    }
    h.push_str("</body>\n</html>\n");
    Ok(h)
}

/// Renders the report and writes it to `path` atomically (the folder must exist).
pub fn write_report(path: &Path, analysis: &Analysis, images: &ReportImages) -> Result<()> {
    let html = render_report(analysis, images)?;
    write_atomic(path, html.as_bytes())
}

fn image_figure(h: &mut String, img: &Image, caption: &str) -> Result<()> {
    let uri = png_data_uri(img)?;
    let cap = escape_html(caption);
    let _ = writeln!(
        h,
        "<figure><img src=\"{uri}\" alt=\"{cap}\"><figcaption>{cap}</figcaption></figure>"
    );
    Ok(())
}

fn key_table(h: &mut String, a: &Analysis) {
    let steps = a.runs.first().map(|r| r.steps.as_slice()).unwrap_or(&[]);
    let step_text = match (steps.first(), steps.last()) {
        (Some(f), Some(l)) => format!("{} recorded, {f} … {l}", steps.len()),
        _ => "none".to_string(),
    };
    let seeds = a
        .seeds
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let names = a
        .runs
        .iter()
        .map(|r| r.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let t_half = a
        .bands
        .iter()
        .map(|b| num(b.t_half, 0))
        .collect::<Vec<_>>()
        .join(", ");
    let lp = &a.lowpass;
    let rows: Vec<(&str, String)> = vec![
        (
            "image",
            format!("{} × {}, {} channel(s)", a.width, a.height, a.channels),
        ),
        ("runs", format!("{} ({names})", a.num_runs)),
        ("seeds", seeds),
        ("steps (run 0)", step_text),
        (
            "bands",
            format!("{} ({:?} spacing)", a.bands.len(), a.spacing),
        ),
        (
            "best step (run 0)",
            a.best_step.map_or("–".into(), |s| s.to_string()),
        ),
        ("best PSNR (run 0)", format!("{} dB", num(a.best_psnr, 2))),
        (
            "final PSNR (run 0)",
            format!("{} dB", num(a.summary.final_psnr, 2)),
        ),
        (
            "best Gaussian low-pass of y",
            format!(
                "{} dB at cutoff {}",
                num(lp.best_lowpass_psnr, 2),
                num(lp.best_lowpass_cutoff, 4)
            ),
        ),
        (
            "DIP best − low-pass best",
            format!("{} dB", num(a.summary.dip_minus_lowpass_db, 2)),
        ),
        ("t½ per band, low → high", t_half),
        (
            "t½ non-decreasing (fraction of pairs)",
            num(a.summary.t_half_monotone, 2),
        ),
        ("Spearman(band, t½)", num(a.summary.t_half_spearman, 3)),
        ("Spearman(step, cutoff)", num(a.summary.cutoff_spearman, 3)),
    ];
    h.push_str("<h2>Key numbers</h2>\n<table>\n");
    for (k, v) in rows {
        let _ = writeln!(
            h,
            "<tr><th class=\"l\">{}</th><td class=\"l\">{}</td></tr>",
            escape_html(k),
            escape_html(&v)
        );
    }
    h.push_str("</table>\n");
}

fn band_table(h: &mut String, a: &Analysis) {
    h.push_str("<h2>Bands</h2>\n<table>\n<tr><th>band</th><th>from</th><th>to</th><th>bins</th>");
    h.push_str("<th>t½</th><th>t½ (clean)</th>");
    for r in 1..a.num_runs {
        let _ = write!(h, "<th>t½ run {r}</th>");
    }
    h.push_str("<th>E(y)</th><th>E(clean)</th><th>E(noise)</th></tr>\n");
    for (b, band) in a.bands.iter().enumerate() {
        let _ = write!(
            h,
            "<tr><td>{b}</td><td>{:.4}</td><td>{:.4}</td><td>{}</td><td>{}</td><td>{}</td>",
            band.lo,
            band.hi,
            band.bins,
            num(band.t_half, 1),
            num(band.t_half_clean, 1)
        );
        for t in band.t_half_runs.iter().skip(1) {
            let _ = write!(h, "<td>{}</td>", num(*t, 1));
        }
        let _ = writeln!(
            h,
            "<td>{}</td><td>{}</td><td>{}</td></tr>",
            sci(Some(band.energy_observation)),
            sci(band.energy_clean),
            sci(band.energy_noise)
        );
    }
    h.push_str(
        "</table>\n<p class=\"note\">Frequencies in cycles/pixel (Nyquist 0.5; the last band \
         also holds the corners). Energies are Parseval-normalised sums over pixels and \
         channels.</p>\n",
    );
}

//! The report's plots, drawn as SVG strings with plotters.
//!
//! Every plot is built from the [`Analysis`] alone. Ranges come from the data (non-finite
//! values are skipped, values outside a range are clamped to it so nothing is drawn outside
//! its panel), and a plot whose data are missing is left out rather than drawn empty.

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::spectral::study::{Analysis, TurningKind};

/// One plot of the report.
#[derive(Clone, Debug, PartialEq)]
pub struct Plot {
    /// Stable identifier: `psnr`, `loss`, `band_fit`, `band_heatmap`, `two_run`, `lowpass`,
    /// `spectra`.
    pub id: &'static str,
    /// One-sentence description shown under the plot.
    pub caption: String,
    /// The SVG document (`<svg …>…</svg>`).
    pub svg: String,
}

/// All plots that the analysis has data for, in report order. Plots without data (PSNR with
/// no clean image anywhere, the two-run distance with one run) are left out.
pub fn plots(a: &Analysis) -> Result<Vec<Plot>> {
    let mut out = Vec::new();
    let mut add = |id: &'static str, caption: String, svg: Option<String>| {
        if let Some(svg) = svg {
            out.push(Plot { id, caption, svg });
        }
    };
    add(
        "psnr",
        "PSNR against the clean image of every run's raw output (solid) and its moving \
         average (dashed); the vertical line marks run 0's best step."
            .into(),
        psnr_plot(a)?,
    );
    add(
        "loss",
        "The fit's loss (its data term against the observation), log scale.".into(),
        loss_plot(a)?,
    );
    add(
        "band_fit",
        "Per-band fit r_b(t) of run 0 against the observation, bands coloured from low \
         (dark) to high (yellow) frequency; dots mark t½, where r_b first reaches 0.5."
            .into(),
        band_fit_plot(a)?,
    );
    add(
        "band_heatmap",
        "r_b(t) of run 0 as a band × step map (clamped to [0, 1]); white dots mark t½.".into(),
        heatmap_plot(a)?,
    );
    add(
        "two_run",
        "Mean squared difference per sample between runs 0 and 1, in total (top, with turning \
         points: green minima, red maxima; the dashed line is run 0's best step) and per band \
         (bottom, coloured as in the per-band fit)."
            .into(),
        two_run_plot(a)?,
    );
    add(
        "lowpass",
        "Cutoff c(t) of the Gaussian low-pass of the observation closest to run 0's output \
         (top; hollow points: at the end of the searched range) and the relative residual \
         ‖LPF_c(y) − x_t‖ / ‖x_t‖ (bottom)."
            .into(),
        lowpass_plot(a)?,
    );
    add(
        "spectra",
        "Radially averaged power spectra (log scale) of the observation, the clean image, \
         run 0's output at the best step and its final output (DC left out)."
            .into(),
        spectra_plot(a)?,
    );
    Ok(out)
}

const WIDTH: u32 = 900;
const HEIGHT: u32 = 380;
const FONT: &str = "sans-serif";
/// Most columns drawn in the band heat-map.
const HEATMAP_COLUMNS: usize = 400;

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// Turns a plotters error into ours, naming the plot.
trait Ctx<T> {
    fn ctx(self, what: &str) -> Result<T>;
}

impl<T, E: std::fmt::Display> Ctx<T> for std::result::Result<T, E> {
    fn ctx(self, what: &str) -> Result<T> {
        self.map_err(|e| Error::invalid(format!("cannot draw the {what} plot: {e}")))
    }
}

/// Draws into a fresh SVG of `size` and returns the document.
fn svg(size: (u32, u32), what: &str, draw: impl FnOnce(&Area<'_>) -> Result<()>) -> Result<String> {
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, size).into_drawing_area();
        root.fill(&WHITE).ctx(what)?;
        draw(&root)?;
        root.present().ctx(what)?;
    }
    Ok(buf)
}

/// Finite min and max of some values.
fn extent(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((a, b)) => Some((a.min(v), b.max(v))),
        })
}

/// A linear range around `(lo, hi)` with 5 % margins, never empty.
fn pad_linear((lo, hi): (f64, f64)) -> (f64, f64) {
    if hi > lo {
        let m = 0.05 * (hi - lo);
        (lo - m, hi + m)
    } else {
        let m = if lo == 0.0 { 1.0 } else { 0.1 * lo.abs() };
        (lo - m, hi + m)
    }
}

/// A log range around positive `(lo, hi)`, with a little margin, never empty.
fn pad_log((lo, hi): (f64, f64)) -> (f64, f64) {
    if hi > lo {
        (lo / 1.2, hi * 1.2)
    } else {
        (lo / 2.0, hi * 2.0)
    }
}

/// The x range of a set of steps.
fn step_range(steps: impl IntoIterator<Item = usize>) -> Option<(f64, f64)> {
    let (lo, hi) = extent(steps.into_iter().map(|s| s as f64))?;
    Some(if hi > lo {
        (lo, hi)
    } else {
        (lo - 1.0, hi + 1.0)
    })
}

/// Positive finite values only (for log axes), clamped into `range`.
fn log_points(xs: &[usize], ys: &[f64], range: (f64, f64)) -> Vec<(f64, f64)> {
    xs.iter()
        .zip(ys)
        .filter(|(_, y)| y.is_finite() && **y > 0.0)
        .map(|(&x, &y)| (x as f64, y.clamp(range.0, range.1)))
        .collect()
}

/// Finite values only, clamped into `range`.
fn lin_points(
    xs: impl IntoIterator<Item = f64>,
    ys: impl IntoIterator<Item = f64>,
    range: (f64, f64),
) -> Vec<(f64, f64)> {
    xs.into_iter()
        .zip(ys)
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .map(|(x, y)| (x, y.clamp(range.0, range.1)))
        .collect()
}

/// Colour of band `b` of `n`, low (dark) to high (yellow).
fn band_color(b: usize, n: usize) -> RGBColor {
    let t = if n > 1 {
        b as f32 / (n - 1) as f32
    } else {
        0.0
    };
    ViridisRGB.get_color(t)
}

fn run_color(r: usize) -> RGBColor {
    let c = Palette99::pick(r).to_rgba();
    RGBColor(c.0, c.1, c.2)
}

fn sci_label(v: &f64) -> String {
    format!("{v:.1e}")
}

/// Band labels at integer positions only (the heat-map's cell centres).
fn band_label(v: &f64) -> String {
    if (v - v.round()).abs() < 1e-6 {
        format!("{v:.0}")
    } else {
        String::new()
    }
}

fn step_label(v: &f64) -> String {
    format!("{v:.0}")
}

fn psnr_plot(a: &Analysis) -> Result<Option<String>> {
    const WHAT: &str = "PSNR";
    // Per run: raw (recorded, or measured by the analysis) and EMA series.
    // (run, dashed, points) per line.
    type Line = (usize, bool, Vec<(f64, f64)>);
    let mut lines: Vec<Line> = Vec::new();
    for (r, run) in a.runs.iter().enumerate() {
        let raw: Vec<(f64, f64)> = run
            .steps
            .iter()
            .enumerate()
            .filter_map(|(i, &s)| {
                let measured = run.psnr_clean.as_ref().map(|p| p[i]);
                measured
                    .filter(|v| v.is_finite())
                    .or(run.psnr_raw[i])
                    .filter(|v| v.is_finite())
                    .map(|v| (s as f64, v))
            })
            .collect();
        let ema: Vec<(f64, f64)> = run
            .steps
            .iter()
            .zip(&run.psnr_ema)
            .filter_map(|(&s, v)| v.filter(|v| v.is_finite()).map(|v| (s as f64, v)))
            .collect();
        lines.push((r, false, raw));
        lines.push((r, true, ema));
    }
    let Some(yr) = extent(lines.iter().flat_map(|l| l.2.iter().map(|p| p.1))) else {
        return Ok(None);
    };
    let Some(xr) = step_range(a.runs.iter().flat_map(|r| r.steps.iter().copied())) else {
        return Ok(None);
    };
    let yr = pad_linear(yr);
    svg((WIDTH, HEIGHT), WHAT, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("PSNR against the clean image", (FONT, 18))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(xr.0..xr.1, yr.0..yr.1)
            .ctx(WHAT)?;
        chart
            .configure_mesh()
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 15))
            .x_desc("step")
            .x_label_formatter(&step_label)
            .y_desc("PSNR (dB)")
            .light_line_style(TRANSPARENT)
            .draw()
            .ctx(WHAT)?;
        for (r, dashed, pts) in &lines {
            if pts.is_empty() {
                continue;
            }
            let color = run_color(*r);
            let label = format!("run {r}{}", if *dashed { " (moving average)" } else { "" });
            let legend_dashed = *dashed;
            let anno = if *dashed {
                chart
                    .draw_series(DashedLineSeries::new(
                        pts.iter().copied(),
                        6,
                        4,
                        color.stroke_width(2),
                    ))
                    .ctx(WHAT)?
            } else {
                chart
                    .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
                    .ctx(WHAT)?
            };
            anno.label(label).legend(move |(x, y)| {
                let w = if legend_dashed { 8 } else { 20 };
                PathElement::new(vec![(x, y), (x + w, y)], color.stroke_width(2))
            });
        }
        if let Some(b) = a.best_step {
            let b = b as f64;
            chart
                .draw_series(DashedLineSeries::new(
                    [(b, yr.0), (b, yr.1)],
                    4,
                    4,
                    BLACK.mix(0.5).stroke_width(1),
                ))
                .ctx(WHAT)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font((FONT, 13))
            .draw()
            .ctx(WHAT)
    })
    .map(Some)
}

fn loss_plot(a: &Analysis) -> Result<Option<String>> {
    const WHAT: &str = "loss";
    let Some(yr) = extent(
        a.runs
            .iter()
            .flat_map(|r| r.loss.iter().copied().filter(|v| *v > 0.0)),
    ) else {
        return Ok(None);
    };
    let Some(xr) = step_range(a.runs.iter().flat_map(|r| r.steps.iter().copied())) else {
        return Ok(None);
    };
    let yr = pad_log(yr);
    svg((WIDTH, HEIGHT), WHAT, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("Loss", (FONT, 18))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(76)
            .build_cartesian_2d(xr.0..xr.1, (yr.0..yr.1).log_scale())
            .ctx(WHAT)?;
        chart
            .configure_mesh()
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 15))
            .x_desc("step")
            .x_label_formatter(&step_label)
            .y_desc("loss")
            .y_label_formatter(&sci_label)
            .light_line_style(TRANSPARENT)
            .draw()
            .ctx(WHAT)?;
        for (r, run) in a.runs.iter().enumerate() {
            let color = run_color(r);
            chart
                .draw_series(LineSeries::new(
                    log_points(&run.steps, &run.loss, yr),
                    color.stroke_width(2),
                ))
                .ctx(WHAT)?
                .label(format!("run {r} (seed {})", run.seed))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font((FONT, 13))
            .draw()
            .ctx(WHAT)
    })
    .map(Some)
}

fn band_fit_plot(a: &Analysis) -> Result<Option<String>> {
    const WHAT: &str = "band fit";
    let Some(run) = a.runs.first() else {
        return Ok(None);
    };
    let Some(xr) = step_range(run.steps.iter().copied()) else {
        return Ok(None);
    };
    let Some((lo, _)) = extent(run.band_fit.iter().flatten().copied()) else {
        return Ok(None);
    };
    // Very negative early values would squash the interesting part: show down to −1 at most.
    let yr = (lo.clamp(-1.0, 0.0) - 0.05, 1.05);
    let nb = a.bands.len();
    svg((WIDTH, 420), WHAT, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("Per-band fit r_b(t) against the observation", (FONT, 18))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(xr.0..xr.1, yr.0..yr.1)
            .ctx(WHAT)?;
        chart
            .configure_mesh()
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 15))
            .x_desc("step")
            .x_label_formatter(&step_label)
            .y_desc("r_b")
            .light_line_style(TRANSPARENT)
            .draw()
            .ctx(WHAT)?;
        chart
            .draw_series(DashedLineSeries::new(
                [(xr.0, 0.5), (xr.1, 0.5)],
                4,
                4,
                BLACK.mix(0.4).stroke_width(1),
            ))
            .ctx(WHAT)?;
        for (b, band) in a.bands.iter().enumerate() {
            let color = band_color(b, nb);
            let pts = lin_points(
                run.steps.iter().map(|&s| s as f64),
                run.band_fit
                    .iter()
                    .map(|r| r.get(b).copied().unwrap_or(f64::NAN)),
                yr,
            );
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                .ctx(WHAT)?
                .label(format!("band {b}: {:.3}–{:.3}", band.lo, band.hi))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            if let Some(t) = band.t_half.filter(|t| t.is_finite()) {
                chart
                    .draw_series([Circle::new((t.clamp(xr.0, xr.1), 0.5), 5, color.filled())])
                    .ctx(WHAT)?;
                chart
                    .draw_series([Circle::new(
                        (t.clamp(xr.0, xr.1), 0.5),
                        5,
                        BLACK.stroke_width(1),
                    )])
                    .ctx(WHAT)?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font((FONT, 12))
            .draw()
            .ctx(WHAT)
    })
    .map(Some)
}

fn heatmap_plot(a: &Analysis) -> Result<Option<String>> {
    const WHAT: &str = "band heat-map";
    let Some(run) = a.runs.first() else {
        return Ok(None);
    };
    let steps: Vec<f64> = run.steps.iter().map(|&s| s as f64).collect();
    let nb = a.bands.len();
    if steps.is_empty() || nb == 0 {
        return Ok(None);
    }
    // Cell edges halfway between recorded steps; the outer cells as wide as their neighbour's
    // half-gap (or one step for a single record).
    let mut edges = Vec::with_capacity(steps.len() + 1);
    let first_gap = if steps.len() > 1 {
        steps[1] - steps[0]
    } else {
        1.0
    };
    let last_gap = if steps.len() > 1 {
        steps[steps.len() - 1] - steps[steps.len() - 2]
    } else {
        1.0
    };
    edges.push(steps[0] - first_gap / 2.0);
    edges.extend(steps.windows(2).map(|w| 0.5 * (w[0] + w[1])));
    edges.push(steps[steps.len() - 1] + last_gap / 2.0);
    let xr = (edges[0], edges[edges.len() - 1]);
    // Long runs: neighbouring records are averaged into at most HEATMAP_COLUMNS columns, so
    // the SVG stays small (one rectangle per cell).
    let n = steps.len();
    let group = n.div_ceil(HEATMAP_COLUMNS).max(1);
    let columns: Vec<(f64, f64, Vec<f64>)> = (0..n)
        .step_by(group)
        .map(|g| {
            let end = (g + group).min(n);
            let rows = &run.band_fit[g..end.min(run.band_fit.len())];
            let means = (0..nb)
                .map(|b| {
                    let (sum, count) = rows
                        .iter()
                        .filter_map(|r| r.get(b).copied().filter(|v| v.is_finite()))
                        .fold((0.0, 0usize), |(s, c), v| (s + v, c + 1));
                    if count > 0 {
                        sum / count as f64
                    } else {
                        f64::NAN
                    }
                })
                .collect();
            (edges[g], edges[end], means)
        })
        .collect();
    svg((WIDTH, 360), WHAT, |root| {
        let (main, bar) = root.split_horizontally(WIDTH - 110);
        let mut chart = ChartBuilder::on(&main)
            .caption("r_b(t): band × step", (FONT, 18))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(xr.0..xr.1, -0.5..nb as f64 - 0.5)
            .ctx(WHAT)?;
        chart
            .configure_mesh()
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 15))
            .disable_mesh()
            .x_desc("step")
            .x_label_formatter(&step_label)
            .y_desc("band (low → high)")
            .y_labels(nb.min(16))
            .y_label_formatter(&band_label)
            .draw()
            .ctx(WHAT)?;
        let cells = columns.iter().flat_map(|(x0, x1, means)| {
            let (x0, x1) = (*x0, *x1);
            means.iter().enumerate().map(move |(b, &r)| {
                let color = if r.is_finite() {
                    ViridisRGB.get_color(r.clamp(0.0, 1.0) as f32)
                } else {
                    RGBColor(200, 200, 200)
                };
                Rectangle::new([(x0, b as f64 - 0.5), (x1, b as f64 + 0.5)], color.filled())
            })
        });
        chart.draw_series(cells).ctx(WHAT)?;
        let marks = a.bands.iter().enumerate().filter_map(|(b, band)| {
            band.t_half
                .filter(|t| t.is_finite())
                .map(|t| Circle::new((t.clamp(xr.0, xr.1), b as f64), 4, WHITE.filled()))
        });
        chart.draw_series(marks).ctx(WHAT)?;

        // Colour bar.
        let mut cb = ChartBuilder::on(&bar)
            .margin_top(40)
            .margin_bottom(48)
            .margin_right(12)
            .y_label_area_size(40)
            .build_cartesian_2d(0.0..1.0, 0.0..1.0)
            .ctx(WHAT)?;
        cb.configure_mesh()
            .label_style((FONT, 14))
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 15))
            .disable_mesh()
            .disable_x_axis()
            .y_labels(6)
            .y_label_formatter(&|v| format!("{v:.1}"))
            .draw()
            .ctx(WHAT)?;
        let steps_cb = 50;
        cb.draw_series((0..steps_cb).map(|k| {
            let (y0, y1) = (k as f64 / steps_cb as f64, (k + 1) as f64 / steps_cb as f64);
            let color = ViridisRGB.get_color((0.5 * (y0 + y1)) as f32);
            Rectangle::new([(0.0, y0), (1.0, y1)], color.filled())
        }))
        .ctx(WHAT)?;
        Ok(())
    })
    .map(Some)
}

fn two_run_plot(a: &Analysis) -> Result<Option<String>> {
    const WHAT: &str = "two-run distance";
    let Some(t) = &a.two_run else {
        return Ok(None);
    };
    let Some(xr) = step_range(t.steps.iter().copied()) else {
        return Ok(None);
    };
    let Some(yr) = extent(t.distance.iter().copied().filter(|v| *v > 0.0)) else {
        return Ok(None);
    };
    let yr = pad_log(yr);
    let band_yr = extent(t.per_band.iter().flatten().copied().filter(|v| *v > 0.0)).map(pad_log);
    let nb = a.bands.len();
    svg((WIDTH, 640), WHAT, |root| {
        let (top, bottom) = root.split_vertically(320);
        let mut chart = ChartBuilder::on(&top)
            .caption("Distance between runs 0 and 1", (FONT, 18))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(76)
            .build_cartesian_2d(xr.0..xr.1, (yr.0..yr.1).log_scale())
            .ctx(WHAT)?;
        chart
            .configure_mesh()
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 15))
            .x_desc("step")
            .x_label_formatter(&step_label)
            .y_desc("mean squared difference")
            .y_label_formatter(&sci_label)
            .light_line_style(TRANSPARENT)
            .draw()
            .ctx(WHAT)?;
        chart
            .draw_series(LineSeries::new(
                log_points(&t.steps, &t.distance, yr),
                BLUE.stroke_width(2),
            ))
            .ctx(WHAT)?;
        let turns = t
            .turning_points
            .iter()
            .filter(|p| p.value.is_finite() && p.value > 0.0)
            .map(|p| {
                let color = match p.kind {
                    TurningKind::Min => GREEN,
                    TurningKind::Max => RED,
                };
                Circle::new(
                    (p.step as f64, p.value.clamp(yr.0, yr.1)),
                    6,
                    color.filled(),
                )
            });
        chart.draw_series(turns).ctx(WHAT)?;
        if let Some(b) = a.best_step {
            let b = b as f64;
            if b >= xr.0 && b <= xr.1 {
                chart
                    .draw_series(DashedLineSeries::new(
                        [(b, yr.0), (b, yr.1)],
                        4,
                        4,
                        BLACK.mix(0.5).stroke_width(1),
                    ))
                    .ctx(WHAT)?;
            }
        }
        let Some(byr) = band_yr else {
            return Ok(());
        };
        let mut chart = ChartBuilder::on(&bottom)
            .caption("Distance per band", (FONT, 16))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(76)
            .build_cartesian_2d(xr.0..xr.1, (byr.0..byr.1).log_scale())
            .ctx(WHAT)?;
        chart
            .configure_mesh()
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 15))
            .x_desc("step")
            .x_label_formatter(&step_label)
            .y_desc("per band")
            .y_label_formatter(&sci_label)
            .light_line_style(TRANSPARENT)
            .draw()
            .ctx(WHAT)?;
        for b in 0..nb {
            let color = band_color(b, nb);
            let ys: Vec<f64> = t
                .per_band
                .iter()
                .map(|r| r.get(b).copied().unwrap_or(f64::NAN))
                .collect();
            chart
                .draw_series(LineSeries::new(
                    log_points(&t.steps, &ys, byr),
                    color.stroke_width(2),
                ))
                .ctx(WHAT)?;
        }
        Ok(())
    })
    .map(Some)
}

fn lowpass_plot(a: &Analysis) -> Result<Option<String>> {
    const WHAT: &str = "low-pass";
    let lp = &a.lowpass;
    let Some(xr) = step_range(lp.steps.iter().copied()) else {
        return Ok(None);
    };
    let Some(cr) = extent(lp.cutoff.iter().copied().filter(|v| *v > 0.0)) else {
        return Ok(None);
    };
    let cr = pad_log(cr);
    let rr = extent(lp.residual.iter().copied())
        .map(|(lo, hi)| pad_linear((lo.min(0.0), hi)))
        .unwrap_or((0.0, 1.0));
    svg((WIDTH, 600), WHAT, |root| {
        let (top, bottom) = root.split_vertically(300);
        let mut chart = ChartBuilder::on(&top)
            .caption("Best Gaussian low-pass cutoff c(t)", (FONT, 18))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(76)
            .build_cartesian_2d(xr.0..xr.1, (cr.0..cr.1).log_scale())
            .ctx(WHAT)?;
        chart
            .configure_mesh()
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 15))
            .x_desc("step")
            .x_label_formatter(&step_label)
            .y_desc("cutoff (cycles/pixel)")
            .y_label_formatter(&sci_label)
            .light_line_style(TRANSPARENT)
            .draw()
            .ctx(WHAT)?;
        let pts = log_points(&lp.steps, &lp.cutoff, cr);
        chart
            .draw_series(LineSeries::new(pts, BLUE.stroke_width(2)))
            .ctx(WHAT)?;
        let marks = lp
            .steps
            .iter()
            .zip(&lp.cutoff)
            .zip(&lp.at_bound)
            .filter(|((_, c), _)| c.is_finite() && **c > 0.0)
            .map(|((&s, &c), &bound)| {
                let p = (s as f64, c.clamp(cr.0, cr.1));
                if bound {
                    Circle::new(p, 4, BLUE.stroke_width(1))
                } else {
                    Circle::new(p, 3, BLUE.filled())
                }
            });
        chart.draw_series(marks).ctx(WHAT)?;
        let mut chart = ChartBuilder::on(&bottom)
            .caption("Relative residual ‖LPF_c(y) − x_t‖ / ‖x_t‖", (FONT, 16))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(76)
            .build_cartesian_2d(xr.0..xr.1, rr.0..rr.1)
            .ctx(WHAT)?;
        chart
            .configure_mesh()
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 15))
            .x_desc("step")
            .x_label_formatter(&step_label)
            .y_desc("residual")
            .light_line_style(TRANSPARENT)
            .draw()
            .ctx(WHAT)?;
        chart
            .draw_series(LineSeries::new(
                lin_points(
                    lp.steps.iter().map(|&s| s as f64),
                    lp.residual.iter().copied(),
                    rr,
                ),
                RED.stroke_width(2),
            ))
            .ctx(WHAT)?;
        if let Some(b) = a.best_step {
            let b = b as f64;
            if b >= xr.0 && b <= xr.1 {
                chart
                    .draw_series(DashedLineSeries::new(
                        [(b, rr.0), (b, rr.1)],
                        4,
                        4,
                        BLACK.mix(0.5).stroke_width(1),
                    ))
                    .ctx(WHAT)?;
            }
        }
        Ok(())
    })
    .map(Some)
}

fn spectra_plot(a: &Analysis) -> Result<Option<String>> {
    const WHAT: &str = "spectra";
    let s = &a.spectra;
    let mut lines: Vec<(String, RGBColor, &[f64])> = vec![(
        "observation".into(),
        RGBColor(150, 150, 150),
        &s.observation,
    )];
    if let Some(c) = &s.clean {
        lines.push(("clean".into(), BLACK, c));
    }
    if let (Some(b), Some(step)) = (&s.best, a.best_step) {
        lines.push((format!("output at best step {step}"), BLUE, b));
    }
    lines.push((
        format!("final output (step {})", s.final_step),
        RED,
        &s.final_output,
    ));
    // DC (ring 0) is left out: it is the mean brightness, orders of magnitude above the rest.
    let Some(yr) = extent(
        lines
            .iter()
            .flat_map(|l| l.2.iter().skip(1).copied().filter(|v| *v > 0.0)),
    ) else {
        return Ok(None);
    };
    let Some(xr) = extent(s.frequency.iter().skip(1).copied()) else {
        return Ok(None);
    };
    let xr = if xr.1 > xr.0 { xr } else { (xr.0, xr.0 + 0.5) };
    let yr = pad_log(yr);
    svg((WIDTH, 420), WHAT, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("Radially averaged power spectra", (FONT, 18))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(76)
            .build_cartesian_2d(xr.0..xr.1, (yr.0..yr.1).log_scale())
            .ctx(WHAT)?;
        chart
            .configure_mesh()
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 15))
            .x_desc("frequency (cycles/pixel)")
            .y_desc("power")
            .y_label_formatter(&sci_label)
            .light_line_style(TRANSPARENT)
            .draw()
            .ctx(WHAT)?;
        for (label, color, ys) in lines {
            let pts: Vec<(f64, f64)> = s
                .frequency
                .iter()
                .zip(ys)
                .skip(1)
                .filter(|(_, y)| y.is_finite() && **y > 0.0)
                .map(|(&f, &y)| (f, y.clamp(yr.0, yr.1)))
                .collect();
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                .ctx(WHAT)?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font((FONT, 13))
            .draw()
            .ctx(WHAT)
    })
    .map(Some)
}

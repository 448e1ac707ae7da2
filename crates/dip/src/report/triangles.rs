//! The summary page of the triangles experiment: how long each level of the synthetic family
//! takes to fit, against its high-frequency content.

use std::path::Path;

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use super::{escape_html, png_data_uri};
use crate::image::Image;
use crate::{Error, Result};

/// One level of the triangles experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TriangleRow {
    pub level: usize,
    /// The family's level parameter in [0, 1].
    pub t: f64,
    /// Gaussian edge blur (px), grating amplitude and frequency (cycles/px).
    pub edge_width: f64,
    pub texture_amplitude: f64,
    pub texture_frequency: f64,
    /// Fraction of the image's spectral energy above half the Nyquist frequency.
    pub high_frequency_fraction: f64,
    /// Interpolated first step at which the output reaches the fit threshold (PSNR against
    /// the image); `None` if it never does within the run.
    pub steps_to_fit: Option<f64>,
    /// Half-time of each band (low to high).
    pub t_half: Vec<Option<f64>>,
    /// PSNR of the last recorded output.
    pub final_psnr: Option<f64>,
    /// The level's analysis folder, relative to the experiment folder.
    pub folder: String,
}

fn plot_err<E: std::fmt::Display>(e: E) -> Error {
    Error::invalid(format!("cannot draw the triangles plot: {e}"))
}

/// Steps to fit and high-frequency fraction against level, as an SVG document.
pub fn triangles_plot(rows: &[TriangleRow], fit_psnr: f64) -> Result<String> {
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (760, 380)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let max_level = rows.iter().map(|r| r.level).max().unwrap_or(0) as f64;
        let max_steps = rows
            .iter()
            .filter_map(|r| r.steps_to_fit)
            .fold(1.0f64, f64::max)
            * 1.1;
        let max_hf = rows
            .iter()
            .map(|r| r.high_frequency_fraction)
            .fold(1e-6f64, f64::max)
            * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("Steps to reach {fit_psnr:.0} dB, and high-frequency energy, per level"),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .right_y_label_area_size(60)
            .build_cartesian_2d(-0.5..max_level + 0.5, 0.0..max_steps)
            .map_err(plot_err)?
            .set_secondary_coord(-0.5..max_level + 0.5, 0.0..max_hf);
        chart
            .configure_mesh()
            .x_desc("level (more high-frequency detail →)")
            .y_desc(format!("steps to {fit_psnr:.0} dB"))
            .draw()
            .map_err(plot_err)?;
        chart
            .configure_secondary_axes()
            .y_desc("energy fraction above 0.25 cycles/px")
            .draw()
            .map_err(plot_err)?;
        let fitted: Vec<(f64, f64)> = rows
            .iter()
            .filter_map(|r| r.steps_to_fit.map(|s| (r.level as f64, s)))
            .collect();
        chart
            .draw_series(LineSeries::new(fitted.clone(), BLUE.stroke_width(2)))
            .map_err(plot_err)?
            .label("steps to fit")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLUE.stroke_width(2)));
        chart
            .draw_series(fitted.iter().map(|&p| Circle::new(p, 4, BLUE.filled())))
            .map_err(plot_err)?;
        let hf: Vec<(f64, f64)> = rows
            .iter()
            .map(|r| (r.level as f64, r.high_frequency_fraction))
            .collect();
        chart
            .draw_secondary_series(LineSeries::new(hf, RED.stroke_width(2)))
            .map_err(plot_err)?
            .label("high-frequency energy (right axis)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RED.stroke_width(2)));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(buf)
}

/// Writes the experiment's summary page: the plot, a table, and every level's image with a
/// link to its full report.
pub fn write_triangles_report(
    path: &Path,
    rows: &[TriangleRow],
    images: &[Image],
    fit_psnr: f64,
    rank_correlation: Option<f64>,
) -> Result<()> {
    let mut h = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>dip: triangles experiment</title><style>\
         body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}\
         table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}\
         figure{display:inline-block;margin:4px;text-align:center;font-size:12px}\
         img{image-rendering:pixelated;width:96px;height:96px}</style></head><body>\n",
    );
    h.push_str("<h1>Triangles: high frequencies take longer to fit</h1>\n");
    h.push_str(&format!(
        "<p>Each level is fitted as it is (no noise) by the same network from the same seed. \
         A level counts as fitted when the PSNR of the output against it first reaches {fit_psnr:.0} dB. \
         Rank correlation between level and steps to fit: <b>{}</b>.</p>\n",
        rank_correlation.map_or("undefined".into(), |r| format!("{r:.2}"))
    ));
    h.push_str(&triangles_plot(rows, fit_psnr)?);
    h.push_str("\n<div>");
    for (r, img) in rows.iter().zip(images) {
        h.push_str(&format!(
            "<figure><a href=\"{}/report.html\"><img alt=\"level {}\" src=\"{}\"></a>\
             <figcaption>level {}<br>{}</figcaption></figure>",
            escape_html(&r.folder),
            r.level,
            png_data_uri(img)?,
            r.level,
            r.steps_to_fit
                .map_or("not fitted".into(), |s| format!("{s:.0} steps"))
        ));
    }
    h.push_str("</div>\n<table><tr><th>level</th><th>edge width (px)</th><th>texture amplitude</th>\
                <th>texture frequency</th><th>high-freq. energy</th><th>steps to fit</th><th>final PSNR</th></tr>\n");
    for r in rows {
        h.push_str(&format!(
            "<tr><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.3}</td><td>{:.4}</td><td>{}</td><td>{}</td></tr>\n",
            r.level,
            r.edge_width,
            r.texture_amplitude,
            r.texture_frequency,
            r.high_frequency_fraction,
            r.steps_to_fit.map_or("–".into(), |s| format!("{s:.0}")),
            r.final_psnr.map_or("–".into(), |p| format!("{p:.2}")),
        ));
    }
    h.push_str("</table>\n</body></html>\n");
    crate::image::write_atomic(path, h.as_bytes())
}

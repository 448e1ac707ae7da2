//! A plain experiment page: headings, paragraphs, tables and line charts, in one HTML file
//! with nothing external. The experiments that compare settings (architectures, upsampling
//! layers, stopping rules) write their results through it, and the same tables as Markdown.

use std::path::Path;

use plotters::prelude::*;

use super::escape_html;
use crate::error::{Error, Result};

/// One curve of a [`line_chart`].
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Curves with the same colour index share a colour (e.g. one architecture).
    pub color: usize,
    pub dashed: bool,
}

fn plot_err(e: impl std::fmt::Display) -> Error {
    Error::invalid(format!("cannot draw a chart: {e}"))
}

/// A colour from a fixed qualitative palette.
pub fn palette(i: usize) -> RGBColor {
    const P: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(23, 190, 207),
    ];
    P[i % P.len()]
}

/// A line chart of `series` as an SVG document. With `log_y`, non-positive values are left out.
/// Non-finite values are always left out; a chart with no drawable point is an error.
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_y: bool,
) -> Result<String> {
    let keep = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!log_y || y > 0.0);
    let pts: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| s.points.iter().copied().filter(keep).collect())
        .collect();
    let all = pts.iter().flatten();
    let (x0, x1) = all
        .clone()
        .fold(None, |a: Option<(f64, f64)>, &(x, _)| {
            Some(a.map_or((x, x), |(l, h)| (l.min(x), h.max(x))))
        })
        .ok_or_else(|| Error::invalid(format!("the chart '{title}' has no data")))?;
    let (y0, y1) = all
        .fold(None, |a: Option<(f64, f64)>, &(_, y)| {
            Some(a.map_or((y, y), |(l, h)| (l.min(y), h.max(y))))
        })
        .expect("there is a point");
    let (x0, x1) = if x1 > x0 {
        (x0, x1)
    } else {
        (x0 - 1.0, x1 + 1.0)
    };
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (900, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        macro_rules! draw {
            ($chart:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .x_desc(x_label)
                    .y_desc(y_label)
                    .label_style(("sans-serif", 13))
                    .draw()
                    .map_err(plot_err)?;
                for (s, p) in series.iter().zip(&pts) {
                    let c = palette(s.color);
                    if s.dashed {
                        chart
                            .draw_series(DashedLineSeries::new(
                                p.iter().copied(),
                                6,
                                4,
                                c.stroke_width(2).into(),
                            ))
                            .map_err(plot_err)?
                            .label(s.name.clone())
                            .legend(move |(x, y)| {
                                PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                            });
                    } else {
                        chart
                            .draw_series(LineSeries::new(p.iter().copied(), c.stroke_width(2)))
                            .map_err(plot_err)?
                            .label(s.name.clone())
                            .legend(move |(x, y)| {
                                PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                            });
                    }
                }
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .label_font(("sans-serif", 12))
                    .position(SeriesLabelPosition::UpperRight)
                    .draw()
                    .map_err(plot_err)?;
            }};
        }
        let mut builder = ChartBuilder::on(&root);
        builder
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70);
        if log_y {
            let (lo, hi) = if y1 > y0 {
                (y0 / 1.2, y1 * 1.2)
            } else {
                (y0 / 2.0, y1 * 2.0)
            };
            draw!(
                builder
                    .build_cartesian_2d(x0..x1, (lo..hi).log_scale())
                    .map_err(plot_err)?
            );
        } else {
            let m = if y1 > y0 { 0.05 * (y1 - y0) } else { 1.0 };
            draw!(
                builder
                    .build_cartesian_2d(x0..x1, (y0 - m)..(y1 + m))
                    .map_err(plot_err)?
            );
        }
        root.present().map_err(plot_err)?;
    }
    Ok(buf)
}

/// A table as Markdown (cells are written as given; `|` is escaped).
pub fn markdown_table(header: &[String], rows: &[Vec<String>]) -> String {
    let cell = |s: &String| s.replace('|', "\\|");
    let mut out = format!(
        "| {} |\n|{}|\n",
        header.iter().map(cell).collect::<Vec<_>>().join(" | "),
        header.iter().map(|_| "---").collect::<Vec<_>>().join("|")
    );
    for r in rows {
        out.push_str(&format!(
            "| {} |\n",
            r.iter().map(cell).collect::<Vec<_>>().join(" | ")
        ));
    }
    out
}

/// One block of a [`Page`].
#[derive(Debug, Clone)]
pub enum Block {
    Heading(String),
    /// A paragraph of plain text (escaped).
    Text(String),
    Table {
        header: Vec<String>,
        rows: Vec<Vec<String>>,
    },
    /// An SVG document (a chart), embedded as is.
    Svg(String),
    /// HTML written as is (images as data URIs, links).
    Html(String),
}

/// A self-contained HTML page.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub title: String,
    pub blocks: Vec<Block>,
}

impl Page {
    pub fn new(title: impl Into<String>) -> Self {
        Page {
            title: title.into(),
            blocks: Vec::new(),
        }
    }

    pub fn push(&mut self, b: Block) -> &mut Self {
        self.blocks.push(b);
        self
    }

    pub fn render(&self) -> String {
        let mut h = format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
             <style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}\
             table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;\
             padding:3px 8px;text-align:right}}th{{background:#f4f4f4}}\
             figure{{display:inline-block;margin:4px;text-align:center;font-size:12px}}\
             img{{image-rendering:pixelated}}</style></head><body>\n<h1>{}</h1>\n",
            escape_html(&self.title),
            escape_html(&self.title)
        );
        for b in &self.blocks {
            match b {
                Block::Heading(t) => h.push_str(&format!("<h2>{}</h2>\n", escape_html(t))),
                Block::Text(t) => h.push_str(&format!("<p>{}</p>\n", escape_html(t))),
                Block::Table { header, rows } => {
                    h.push_str("<table><tr>");
                    for c in header {
                        h.push_str(&format!("<th>{}</th>", escape_html(c)));
                    }
                    h.push_str("</tr>\n");
                    for r in rows {
                        h.push_str("<tr>");
                        for c in r {
                            h.push_str(&format!("<td>{}</td>", escape_html(c)));
                        }
                        h.push_str("</tr>\n");
                    }
                    h.push_str("</table>\n");
                }
                Block::Svg(s) | Block::Html(s) => {
                    h.push_str(s);
                    h.push('\n');
                }
            }
        }
        h.push_str("</body></html>\n");
        h
    }

    /// Writes the page atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::image::write_atomic(path, self.render().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_and_page_render() {
        let s = vec![
            Series {
                name: "a".into(),
                points: vec![(0.0, 1.0), (1.0, 0.5), (2.0, f64::NAN)],
                color: 0,
                dashed: false,
            },
            Series {
                name: "b".into(),
                points: vec![(0.0, 0.0), (1.0, 0.1)],
                color: 1,
                dashed: true,
            },
        ];
        let svg = line_chart("t", "x", "y", &s, true).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("</svg>"));
        assert!(line_chart("t", "x", "y", &[], false).is_err());
        let mut p = Page::new("x < y");
        p.push(Block::Table {
            header: vec!["h".into()],
            rows: vec![vec!["<b>".into()]],
        });
        let html = p.render();
        assert!(html.contains("x &lt; y") && html.contains("&lt;b&gt;"));
        let md = markdown_table(&["a|b".into()], &[vec!["1".into()]]);
        assert_eq!(md, "| a\\|b |\n|---|\n| 1 |\n");
    }
}

//! Draws the PSNR-over-steps curves of several `dip denoise --json` summaries in one SVG chart.
//!
//! ```text
//! cargo run --release -p dip --example psnr_curves -- OUT.svg "TITLE" A.json=LABEL B.json=LABEL ...
//! ```

use dip::report::page::{Series, line_chart};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        return Err("usage: psnr_curves OUT.svg TITLE FILE.json=LABEL ...".into());
    }
    let mut series = Vec::new();
    for (i, spec) in args[2..].iter().enumerate() {
        let (path, label) = spec.split_once('=').ok_or("expected FILE.json=LABEL")?;
        let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
        let history = summary["history"].as_array().ok_or("no history")?;
        let points = history
            .iter()
            .filter_map(|h| Some((h["iter"].as_f64()?, h["psnr_ema"].as_f64()?)))
            .collect();
        series.push(Series {
            name: label.to_string(),
            points,
            color: i / 2,
            dashed: i % 2 == 1,
        });
    }
    let svg = line_chart(
        &args[1],
        "step",
        "PSNR of the EMA output (dB)",
        &series,
        false,
    )?;
    std::fs::write(&args[0], svg)?;
    Ok(())
}

//! The noise-estimator study: every estimator of [`crate::sigma`] over a set of images, noise
//! levels and crop sizes, against the noise that was added.
//!
//! Each image is taken in colour (when it has colour) and as gray (BT.601 luma), cropped at its
//! centre to each size (or kept whole), given white Gaussian noise of each σ (clipped to
//! [0, 1] and rounded to 8 bits, as a saved noisy image is), and read by each estimator.

use rayon::prelude::*;
use serde::Serialize;

use crate::image::{self, BitDepth, Image};
use crate::noise::add_gaussian_noise;
use crate::sigma::{SigmaEstimator, to_gray};

/// One estimate.
#[derive(Debug, Clone, Serialize)]
pub struct EstimateCase {
    pub image: String,
    pub colour: bool,
    /// Side of the central crop; 0 for the whole image.
    pub crop: usize,
    /// The noise added, 0–255 scale.
    pub sigma: f64,
    /// The standard deviation of what was added after clipping and rounding (0–255 scale):
    /// below `sigma` where clipping bites (σ ≥ 50 on bright or dark images). The data residual
    /// that the discrepancy principle compares with σ² has this level.
    pub effective: f64,
    pub estimator: SigmaEstimator,
    /// The estimate, 0–255 scale.
    pub estimate: f64,
}

/// Runs the study. `images` are (name, image) pairs; colour images are also read as gray.
pub fn estimator_study(
    images: &[(String, Image)],
    sigmas: &[f64],
    crops: &[usize],
    seed: u64,
) -> Vec<EstimateCase> {
    let mut jobs: Vec<(String, bool, usize, Image)> = Vec::new();
    for (name, img) in images {
        let mut variants = vec![(false, to_gray(img))];
        if img.channels >= 3 {
            variants.push((true, img.clone()));
        }
        for (colour, v) in variants {
            for &crop in crops {
                if crop > v.width.min(v.height) {
                    continue;
                }
                let c = if crop == 0 {
                    v.clone()
                } else {
                    image::center_crop(&v, crop, crop)
                };
                jobs.push((name.clone(), colour, crop, c));
            }
        }
    }
    jobs.par_iter()
        .enumerate()
        .flat_map_iter(|(j, (name, colour, crop, img))| {
            sigmas.iter().enumerate().flat_map(move |(k, &s)| {
                let noise_seed = seed ^ ((j as u64) << 20) ^ k as u64;
                let noisy = image::quantize(
                    &add_gaussian_noise(img, s as f32, noise_seed),
                    BitDepth::Eight,
                );
                let n = noisy.data.len().max(1) as f64;
                let diffs: Vec<f64> = noisy
                    .data
                    .iter()
                    .zip(&img.data)
                    .map(|(a, b)| f64::from(a - b))
                    .collect();
                let m = diffs.iter().sum::<f64>() / n;
                let effective =
                    (diffs.iter().map(|d| (d - m).powi(2)).sum::<f64>() / n).sqrt() * 255.0;
                SigmaEstimator::ALL.map(|est| EstimateCase {
                    image: name.clone(),
                    colour: *colour,
                    crop: *crop,
                    sigma: s,
                    effective,
                    estimator: est,
                    estimate: est.estimate(&noisy) * 255.0,
                })
            })
        })
        .collect()
}

/// The `q`-quantile (0–1) of `v` by the nearest-rank rule; NaN for an empty list.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

/// One row of the summary: an estimator at one crop size.
#[derive(Debug, Clone, Serialize)]
pub struct EstimatorRow {
    pub estimator: SigmaEstimator,
    pub crop: usize,
    /// |σ̂/σ − 1| over the cases with σ ≥ 10: median and 95th percentile.
    pub median_rel_err: f64,
    pub p95_rel_err: f64,
    /// The same against the effective level of the noise actually added (after clipping).
    pub median_rel_err_effective: f64,
    pub p95_rel_err_effective: f64,
    pub cases: usize,
    /// The largest and the 95th-percentile estimate at σ = 0 (0–255 scale).
    pub max_at_zero: f64,
    pub p95_at_zero: f64,
}

/// Summarises the cases per estimator and crop size.
pub fn summarise(cases: &[EstimateCase]) -> Vec<EstimatorRow> {
    let mut crops: Vec<usize> = cases.iter().map(|c| c.crop).collect();
    crops.sort_unstable_by_key(|&c| if c == 0 { usize::MAX } else { c });
    crops.dedup();
    let mut rows = Vec::new();
    for est in SigmaEstimator::ALL {
        for &crop in &crops {
            let sel = || {
                cases
                    .iter()
                    .filter(move |c| c.estimator == est && c.crop == crop)
            };
            let rel: Vec<f64> = sel()
                .filter(|c| c.sigma >= 10.0)
                .map(|c| (c.estimate / c.sigma - 1.0).abs())
                .collect();
            let rel_eff: Vec<f64> = sel()
                .filter(|c| c.sigma >= 10.0)
                .map(|c| (c.estimate / c.effective - 1.0).abs())
                .collect();
            let zero: Vec<f64> = sel()
                .filter(|c| c.sigma == 0.0)
                .map(|c| c.estimate)
                .collect();
            rows.push(EstimatorRow {
                estimator: est,
                crop,
                median_rel_err: quantile(&rel, 0.5),
                p95_rel_err: quantile(&rel, 0.95),
                median_rel_err_effective: quantile(&rel_eff, 0.5),
                p95_rel_err_effective: quantile(&rel_eff, 0.95),
                cases: rel.len(),
                max_at_zero: zero.iter().copied().fold(f64::NAN, f64::max),
                p95_at_zero: quantile(&zero, 0.95),
            });
        }
    }
    rows
}

/// The summary as a Markdown table.
pub fn to_markdown(rows: &[EstimatorRow]) -> String {
    let mut s = String::from(
        "| estimator | crop | cases (σ ≥ 10) | median \\|σ̂/σ − 1\\| | 95th pct | against the clipped noise: median | 95th pct | σ̂ at σ = 0: 95th pct | max |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let crop = if r.crop == 0 {
            "full".to_string()
        } else {
            r.crop.to_string()
        };
        s.push_str(&format!(
            "| {} | {crop} | {} | {:.1} % | {:.1} % | {:.1} % | {:.1} % | {:.2} | {:.2} |\n",
            r.estimator,
            r.cases,
            100.0 * r.median_rel_err,
            100.0 * r.p95_rel_err,
            100.0 * r.median_rel_err_effective,
            100.0 * r.p95_rel_err_effective,
            r.p95_at_zero,
            r.max_at_zero
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_by_nearest_rank() {
        let v = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(quantile(&v, 0.5), 3.0);
        assert_eq!(quantile(&v, 0.95), 5.0);
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn study_reads_added_noise_on_a_flat_image() {
        let img = Image::new(64, 64, 3, vec![0.5; 64 * 64 * 3]);
        let cases = estimator_study(&[("flat".into(), img)], &[0.0, 20.0], &[48, 0], 1);
        // gray + colour, two crops, two levels, every estimator.
        assert_eq!(cases.len(), 2 * 2 * 2 * SigmaEstimator::ALL.len());
        for c in &cases {
            if c.sigma == 0.0 {
                assert!(c.estimate < 0.5, "{c:?}");
            } else {
                assert!((c.estimate / 20.0 - 1.0).abs() < 0.15, "{c:?}");
            }
        }
        let rows = summarise(&cases);
        assert_eq!(rows.len(), SigmaEstimator::ALL.len() * 2);
        assert!(to_markdown(&rows).contains("| pca | full |"));
    }
}

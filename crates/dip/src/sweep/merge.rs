//! The tables of a sweep: cells grouped by every setting but the seed, mean ± standard
//! deviation over the seeds of each group, and the cells still missing.
//!
//! The tables depend on the cell files and the manifest only: rows follow the plan's order
//! (without a manifest, the order of the settings' canonical JSON), seeds are summed in seed
//! order, and nothing about the machine, the time or the folder's listing order enters them.

use std::collections::{HashMap, HashSet};

use super::plan::{Cell, CellSettings, DEFAULT_METRICS, format_level};
use super::store::{CELLS_DIR, CellRecord, Manifest, Scan};
use crate::report::page::markdown_table;

/// Mean and sample standard deviation (n − 1) of `values`; the deviation needs two values.
pub fn mean_std(values: &[f64]) -> (Option<f64>, Option<f64>) {
    let n = values.len();
    if n == 0 {
        return (None, None);
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return (Some(mean), None);
    }
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1) as f64;
    (Some(mean), Some(var.sqrt()))
}

/// One metric over the seeds of a group.
#[derive(Debug, Clone, PartialEq)]
pub struct Stat {
    pub mean: Option<f64>,
    pub std: Option<f64>,
    /// Values that went in (finished cells where the metric was measured).
    pub n: usize,
}

/// One row: a group of cells that differ only in their seed.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupRow {
    /// The settings of the group (the seed is that of its first cell, and means nothing).
    pub settings: CellSettings,
    /// The values of the table's setting columns.
    pub values: Vec<String>,
    /// One per metric of the table.
    pub stats: Vec<Stat>,
    /// Finished cells.
    pub n_seeds: usize,
    /// Cells of the plan not finished.
    pub missing: usize,
}

/// The merged tables of a sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    pub title: String,
    /// The setting columns: image, task, level and arch always; the other settings where they
    /// differ between groups (`set` then shows only the overrides that differ).
    pub columns: Vec<String>,
    pub metrics: Vec<String>,
    pub groups: Vec<GroupRow>,
    /// Cells of the plan (without a manifest: cell files found).
    pub expected: usize,
    pub finished: usize,
    pub missing: usize,
    /// Readable cell files that are not cells of the plan (an earlier plan's): left out.
    pub outside_plan: usize,
    /// Cell files that could not be read: name and why.
    pub unreadable: Vec<(String, String)>,
}

/// The value of a setting column for a group.
fn setting_value(s: &CellSettings, column: &str, common: &HashSet<&str>) -> String {
    match column {
        "image" => s.image.clone(),
        "task" => s.task.name().to_string(),
        "level" => format_level(s.level),
        "sigma" => format_level(s.sigma),
        "gray" => s.gray.to_string(),
        "downsample" => s.downsample.map_or("-".into(), |v| v.to_string()),
        "crop" => s.crop.map_or("-".into(), |v| v.to_string()),
        "fixed_noise" => s.fixed_noise.to_string(),
        "preset" => s.preset.clone().unwrap_or_else(|| "default".into()),
        "arch" => s.arch.clone(),
        "set" => s
            .set
            .iter()
            .filter(|kv| !common.contains(kv.as_str()))
            .cloned()
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

const ALWAYS: &[&str] = &["image", "task", "level", "arch"];
const COLUMNS: &[&str] = &[
    "image",
    "task",
    "level",
    "sigma",
    "gray",
    "downsample",
    "crop",
    "fixed_noise",
    "preset",
    "arch",
    "set",
];

/// Groups the finished cells of `scan` by the cells of `manifest` (without one, by the cells
/// found) and computes the table.
pub fn merge(manifest: Option<&Manifest>, scan: &Scan, default_title: &str) -> Merged {
    let (expected, title, metrics): (Vec<Cell>, String, Vec<String>) = match manifest {
        Some(m) => (m.cells.clone(), m.title.clone(), m.metrics.clone()),
        None => {
            let mut cells: Vec<Cell> = scan
                .records
                .iter()
                .map(|r| Cell {
                    id: r.id.clone(),
                    settings: r.settings.clone(),
                })
                .collect();
            cells.sort_by_cached_key(|c| (c.settings.group_key(), c.settings.seed, c.id.clone()));
            (
                cells,
                default_title.to_string(),
                DEFAULT_METRICS.iter().map(|s| s.to_string()).collect(),
            )
        }
    };
    let by_id: HashMap<&str, &CellRecord> =
        scan.records.iter().map(|r| (r.id.as_str(), r)).collect();
    let expected_ids: HashSet<&str> = expected.iter().map(|c| c.id.as_str()).collect();
    let outside_plan = scan
        .records
        .iter()
        .filter(|r| !expected_ids.contains(r.id.as_str()))
        .count();

    // Groups in the order of their first cell.
    let mut order: Vec<Vec<&Cell>> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for c in &expected {
        let key = c.settings.group_key();
        let i = *index.entry(key).or_insert_with(|| {
            order.push(Vec::new());
            order.len() - 1
        });
        order[i].push(c);
    }

    // Overrides every group shares are not worth a column.
    let firsts: Vec<&CellSettings> = order.iter().map(|g| &g[0].settings).collect();
    let common: HashSet<&str> = match firsts.first() {
        Some(f) => f
            .set
            .iter()
            .map(String::as_str)
            .filter(|kv| firsts.iter().all(|s| s.set.iter().any(|x| x == kv)))
            .collect(),
        None => HashSet::new(),
    };
    let columns: Vec<String> = COLUMNS
        .iter()
        .filter(|col| {
            if ALWAYS.contains(col) {
                return true;
            }
            let values: HashSet<String> = firsts
                .iter()
                .map(|s| setting_value(s, col, &common))
                .collect();
            if **col == "set" {
                values.iter().any(|v| !v.is_empty())
            } else {
                values.len() > 1
            }
        })
        .map(|c| c.to_string())
        .collect();

    let mut finished = 0;
    let groups: Vec<GroupRow> = order
        .iter()
        .map(|cells| {
            let mut done: Vec<&CellRecord> = cells
                .iter()
                .filter_map(|c| by_id.get(c.id.as_str()).copied())
                .collect();
            done.sort_by(|a, b| (a.settings.seed, &a.id).cmp(&(b.settings.seed, &b.id)));
            finished += done.len();
            let stats = metrics
                .iter()
                .map(|m| {
                    let values: Vec<f64> = done.iter().filter_map(|r| r.metric(m)).collect();
                    let (mean, std) = mean_std(&values);
                    Stat {
                        mean,
                        std,
                        n: values.len(),
                    }
                })
                .collect();
            let settings = cells[0].settings.clone();
            GroupRow {
                values: columns
                    .iter()
                    .map(|c| setting_value(&settings, c, &common))
                    .collect(),
                settings,
                stats,
                n_seeds: done.len(),
                missing: cells.len() - done.len(),
            }
        })
        .collect();
    Merged {
        title,
        columns,
        metrics,
        groups,
        expected: expected.len(),
        finished,
        missing: expected.len() - finished,
        outside_plan,
        unreadable: scan.unreadable.clone(),
    }
}

/// A metric for people: PSNR in dB with 2 decimals, SSIM with 4, steps and counts whole,
/// seconds with 1, losses in scientific notation.
pub fn format_metric(name: &str, v: f64) -> String {
    if name.starts_with("psnr") {
        format!("{v:.2}")
    } else if name.starts_with("ssim") {
        format!("{v:.4}")
    } else if name.starts_with("loss") {
        format!("{v:.3e}")
    } else if name == "seconds" {
        format!("{v:.1}")
    } else if ["iter_best", "iterations_run", "parameters", "rollbacks"].contains(&name) {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
    }
}

/// A CSV field, quoted where it has to be.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn number(v: Option<f64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

impl Merged {
    /// `results.csv`: one row per group; the setting columns, then `<metric>_mean` and
    /// `<metric>_std` for each metric (full precision; empty where there is no value), then
    /// `n_seeds` and `missing`.
    pub fn to_csv(&self) -> String {
        let mut header: Vec<String> = self.columns.clone();
        for m in &self.metrics {
            header.push(format!("{m}_mean"));
            header.push(format!("{m}_std"));
        }
        header.push("n_seeds".into());
        header.push("missing".into());
        let mut out = header
            .iter()
            .map(|h| csv_field(h))
            .collect::<Vec<_>>()
            .join(",");
        out.push('\n');
        for g in &self.groups {
            let mut row: Vec<String> = g.values.iter().map(|v| csv_field(v)).collect();
            for s in &g.stats {
                row.push(number(s.mean));
                row.push(number(s.std));
            }
            row.push(g.n_seeds.to_string());
            row.push(g.missing.to_string());
            out.push_str(&row.join(","));
            out.push('\n');
        }
        out
    }

    /// `results.md`: a title, a line of counts, the table (mean ± std, "—" for the deviation
    /// of one seed), and the cell files left out, if any.
    pub fn to_markdown(&self) -> String {
        let mut header: Vec<String> = self.columns.clone();
        header.extend(self.metrics.iter().cloned());
        header.push("seeds".into());
        header.push("missing".into());
        let rows: Vec<Vec<String>> = self
            .groups
            .iter()
            .map(|g| {
                let mut row = g.values.clone();
                for (m, s) in self.metrics.iter().zip(&g.stats) {
                    row.push(match (s.mean, s.std) {
                        (None, _) => String::new(),
                        (Some(mean), None) => format!("{} ± —", format_metric(m, mean)),
                        (Some(mean), Some(std)) => {
                            format!("{} ± {}", format_metric(m, mean), format_metric(m, std))
                        }
                    });
                }
                row.push(g.n_seeds.to_string());
                row.push(g.missing.to_string());
                row
            })
            .collect();
        let mut out = format!(
            "# {}\n\n{} of {} cells finished, {} missing. Each value is the mean ± the sample \
             standard deviation over the seeds of a group (— where there is one seed); seeds \
             counts the finished cells of the group, missing the cells not finished yet.\n\n",
            self.title, self.finished, self.expected, self.missing
        );
        out.push_str(&markdown_table(&header, &rows));
        if self.outside_plan > 0 {
            out.push_str(&format!(
                "\n{} cell file(s) in {CELLS_DIR}/ are not cells of the plan (an earlier plan's) \
                 and were left out.\n",
                self.outside_plan
            ));
        }
        if !self.unreadable.is_empty() {
            out.push_str(&format!(
                "\n{} cell file(s) could not be read and count as missing (running the sweep \
                 again redoes them):\n\n",
                self.unreadable.len()
            ));
            for (name, why) in &self.unreadable {
                out.push_str(&format!("- `{CELLS_DIR}/{name}`: {why}\n"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::plan::{Plan, Task};
    use super::*;

    fn cell(level: f64, seed: u64, set: &[&str]) -> Cell {
        let settings = CellSettings {
            image: "a.png".into(),
            gray: false,
            downsample: None,
            crop: None,
            task: Task::Denoise,
            level,
            sigma: 0.0,
            fixed_noise: false,
            preset: None,
            arch: "skip".into(),
            set: set.iter().map(|s| s.to_string()).collect(),
            seed,
            stop_rules: vec![],
            bands: None,
        };
        Cell {
            id: settings.id(),
            settings,
        }
    }

    fn record(c: &Cell, psnr: f64, secs: f64) -> CellRecord {
        let mut m = BTreeMap::new();
        m.insert("psnr_final".to_string(), Some(psnr));
        m.insert("seconds".to_string(), Some(secs));
        CellRecord::new(c, m, serde_json::Value::Null)
    }

    #[test]
    fn mean_and_sample_deviation() {
        assert_eq!(mean_std(&[]), (None, None));
        assert_eq!(mean_std(&[3.0]), (Some(3.0), None));
        let (m, s) = mean_std(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(m, Some(2.5));
        assert!((s.unwrap() - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn groups_count_seeds_and_missing_cells_in_plan_order() {
        let common = "fit.iters=20";
        let cells = vec![
            cell(50.0, 0, &[common, "net.skip=0"]),
            cell(50.0, 1, &[common, "net.skip=0"]),
            cell(50.0, 2, &[common, "net.skip=0"]),
            cell(25.0, 0, &[common, "net.skip=4"]),
            cell(25.0, 1, &[common, "net.skip=4"]),
            cell(25.0, 2, &[common, "net.skip=4"]),
        ];
        let plan: Plan = toml::from_str(
            "images = [\"a.png\"]\nseeds = 3\n[[degradations]]\ntask = \"denoise\"\nlevel = 25\n",
        )
        .unwrap();
        let manifest = Manifest {
            title: "T".into(),
            metrics: vec!["psnr_final".into(), "seconds".into()],
            plan,
            cells: cells.clone(),
        };
        let mut scan = Scan {
            records: vec![
                record(&cells[2], 30.0, 1.0),
                record(&cells[0], 28.0, 2.0),
                record(&cells[1], 29.0, 3.0),
                record(&cells[4], 20.0, 4.0),
                record(&cell(75.0, 0, &[]), 1.0, 1.0),
            ],
            unreadable: vec![("zz.json".into(), "not a whole cell file".into())],
        };
        let m = merge(Some(&manifest), &scan, "x");
        assert_eq!(m.columns, vec!["image", "task", "level", "arch", "set"]);
        assert_eq!(
            (m.expected, m.finished, m.missing, m.outside_plan),
            (6, 4, 2, 1)
        );
        assert_eq!(m.groups.len(), 2);
        let g = &m.groups[0];
        assert_eq!(
            g.values,
            vec!["a.png", "denoise", "50", "skip", "net.skip=0"]
        );
        assert_eq!((g.n_seeds, g.missing), (3, 0));
        assert_eq!(g.stats[0].mean, Some(29.0));
        assert_eq!(g.stats[0].std, Some(1.0));
        let g = &m.groups[1];
        assert_eq!((g.n_seeds, g.missing), (1, 2));
        assert_eq!((g.stats[0].mean, g.stats[0].std), (Some(20.0), None));
        let csv = m.to_csv();
        assert_eq!(
            csv,
            "image,task,level,arch,set,psnr_final_mean,psnr_final_std,seconds_mean,seconds_std,\
             n_seeds,missing\n\
             a.png,denoise,50,skip,net.skip=0,29,1,2,1,3,0\n\
             a.png,denoise,25,skip,net.skip=4,20,,4,,1,2\n"
        );
        let md = m.to_markdown();
        assert!(
            md.starts_with("# T\n\n4 of 6 cells finished, 2 missing."),
            "{md}"
        );
        assert!(
            md.contains(
                "| a.png | denoise | 50 | skip | net.skip=0 | 29.00 ± 1.00 | 2.0 ± 1.0 | 3 | 0 |"
            ),
            "{md}"
        );
        assert!(md.contains("| 20.00 ± — | 4.0 ± — | 1 | 2 |"), "{md}");
        assert!(
            md.contains("1 cell file(s) in cells/ are not cells of the plan"),
            "{md}"
        );
        assert!(
            md.contains("- `cells/zz.json`: not a whole cell file"),
            "{md}"
        );
        // The order of the files does not matter.
        scan.records.reverse();
        let again = merge(Some(&manifest), &scan, "x");
        assert_eq!(again.to_csv(), csv);
        assert_eq!(again.to_markdown(), md);
        // Without a manifest: the cells found, in the order of their settings.
        let m = merge(None, &scan, "found");
        assert_eq!((m.expected, m.finished, m.missing), (5, 5, 0));
        assert_eq!(m.title, "found");
        let levels: Vec<&str> = m.groups.iter().map(|g| g.values[2].as_str()).collect();
        assert_eq!(levels, vec!["25", "50", "75"]);
    }

    #[test]
    fn csv_fields_are_quoted_and_metrics_formatted() {
        assert_eq!(csv_field("net.skip=[0, 0]"), "\"net.skip=[0, 0]\"");
        assert_eq!(csv_field("a\"b"), "\"a\"\"b\"");
        assert_eq!(format_metric("psnr_best", 27.3456), "27.35");
        assert_eq!(format_metric("ssim_final", 0.81234), "0.8123");
        assert_eq!(format_metric("iter_best", 1234.6), "1235");
        assert_eq!(format_metric("loss_final", 0.0012345), "1.234e-3");
    }
}

//! The output folder of a sweep: one JSON file per finished cell, and the manifest.
//!
//! ```text
//! DIR/sweep.json          the manifest: the plan and its cells (what merge expects)
//! DIR/cells/<id>.json     one finished cell: its settings and metrics
//! ```
//!
//! A cell file is written whole or not at all (a temporary file renamed over the name), so a run
//! killed at any moment leaves only finished cells behind; a file that cannot be read back, or
//! that does not belong to its name, counts as not finished.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::plan::{Cell, CellSettings, Plan};
use crate::image::write_atomic;
use crate::{Error, Result};

/// The folder of the cell files, inside the output folder.
pub const CELLS_DIR: &str = "cells";
/// The manifest's file name, inside the output folder.
pub const MANIFEST: &str = "sweep.json";

/// A finished cell, as its file holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellRecord {
    pub id: String,
    pub settings: CellSettings,
    /// Every metric the runner measured; `null` where it does not apply or is not finite.
    pub metrics: BTreeMap<String, Option<f64>>,
    /// What else the runner wants to keep (the full recipe, the network): not merged.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub info: Value,
}

impl CellRecord {
    /// A record of `cell`; metrics that are not finite are kept as `None`.
    pub fn new(cell: &Cell, metrics: BTreeMap<String, Option<f64>>, info: Value) -> CellRecord {
        CellRecord {
            id: cell.id.clone(),
            settings: cell.settings.clone(),
            metrics: metrics
                .into_iter()
                .map(|(k, v)| (k, v.filter(|x| x.is_finite())))
                .collect(),
            info,
        }
    }

    /// One metric, if measured.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics.get(name).copied().flatten()
    }
}

/// What the output folder says about one cell.
#[derive(Debug, Clone, PartialEq)]
pub enum CellState {
    /// No file: not run yet (or killed while running).
    Missing,
    Done(Box<CellRecord>),
    /// A file that cannot be used, and why; the cell is run again.
    Corrupt(String),
}

/// What a sweep expects: written by `run`, read by `merge`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub title: String,
    /// The metrics the tables show.
    pub metrics: Vec<String>,
    pub plan: Plan,
    /// Every cell of the plan, in the plan's order.
    pub cells: Vec<Cell>,
}

/// Every cell file of a folder, read.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// Readable, consistent cell files, by id.
    pub records: Vec<CellRecord>,
    /// Files of `cells/` that could not be used: file name and why, by name.
    pub unreadable: Vec<(String, String)>,
}

/// A sweep's output folder.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store in `dir`; nothing is read or created yet.
    pub fn new(dir: impl Into<PathBuf>) -> Store {
        Store { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn cells_dir(&self) -> PathBuf {
        self.dir.join(CELLS_DIR)
    }

    pub fn cell_path(&self, id: &str) -> PathBuf {
        self.cells_dir().join(format!("{id}.json"))
    }

    /// Creates the folder and its `cells/`.
    pub fn create(&self) -> Result<()> {
        std::fs::create_dir_all(self.cells_dir())
            .map_err(|e| Error::file(&self.dir, format!("cannot create the folder: {e}")))
    }

    /// The state of one cell.
    pub fn read(&self, cell: &Cell) -> CellState {
        let path = self.cell_path(&cell.id);
        if !path.exists() {
            return CellState::Missing;
        }
        match read_record(&path) {
            Ok(r) if r.settings == cell.settings => CellState::Done(Box::new(r)),
            Ok(_) => CellState::Corrupt("its settings are not the cell's".into()),
            Err(why) => CellState::Corrupt(why),
        }
    }

    /// Writes a finished cell, atomically.
    pub fn write(&self, record: &CellRecord) -> Result<()> {
        let mut text = serde_json::to_string_pretty(record)
            .map_err(|e| Error::invalid(format!("cannot encode cell {}: {e}", record.id)))?;
        text.push('\n');
        write_atomic(&self.cell_path(&record.id), text.as_bytes())
    }

    pub fn manifest_path(&self) -> PathBuf {
        self.dir.join(MANIFEST)
    }

    /// The manifest, if the folder has one.
    pub fn read_manifest(&self) -> Result<Option<Manifest>> {
        let path = self.manifest_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::file(&path, format!("cannot read: {e}"))),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::file(&path, format!("not a sweep manifest: {e}")))
    }

    /// Writes the manifest unless the folder already holds the same one. Returns the one it
    /// replaced, if there was a different one (the plan changed since the last run).
    pub fn write_manifest(&self, manifest: &Manifest) -> Result<Option<Manifest>> {
        let mut text = serde_json::to_string_pretty(manifest)
            .map_err(|e| Error::invalid(format!("cannot encode the manifest: {e}")))?;
        text.push('\n');
        let path = self.manifest_path();
        if std::fs::read_to_string(&path).is_ok_and(|t| t == text) {
            return Ok(None);
        }
        // An unreadable old manifest is simply replaced.
        let before = self.read_manifest().ok().flatten();
        write_atomic(&path, text.as_bytes())?;
        Ok(before)
    }

    /// Reads every cell file. Temporary files of writes in progress (names starting with a
    /// dot) are not cell files and are skipped.
    pub fn scan(&self) -> Result<Scan> {
        let dir = self.cells_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Scan::default()),
            Err(e) => return Err(Error::file(&dir, format!("cannot read the folder: {e}"))),
        };
        let mut scan = Scan::default();
        for entry in entries {
            let entry = entry.map_err(|e| Error::file(&dir, format!("cannot read: {e}")))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            match read_record(&entry.path()) {
                Ok(r) => scan.records.push(r),
                Err(why) => scan.unreadable.push((name, why)),
            }
        }
        scan.records.sort_by(|a, b| a.id.cmp(&b.id));
        scan.unreadable.sort();
        Ok(scan)
    }
}

/// Reads one cell file and checks that it is whole and belongs to its name.
fn read_record(path: &Path) -> std::result::Result<CellRecord, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let record: CellRecord =
        serde_json::from_str(&text).map_err(|e| format!("not a whole cell file: {e}"))?;
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    if stem.as_deref() != Some(record.id.as_str()) {
        return Err(format!(
            "it holds cell {}, not the one of its name",
            record.id
        ));
    }
    if record.settings.id() != record.id {
        return Err("its settings do not give its id (was it edited?)".into());
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::super::plan::Task;
    use super::*;

    fn cell(seed: u64) -> Cell {
        let settings = CellSettings {
            image: "a.png".into(),
            gray: false,
            downsample: None,
            crop: None,
            task: Task::Denoise,
            level: 25.0,
            sigma: 0.0,
            fixed_noise: false,
            preset: None,
            arch: "skip".into(),
            set: vec![],
            seed,
            stop_rules: vec![],
            bands: None,
        };
        Cell {
            id: settings.id(),
            settings,
        }
    }

    #[test]
    fn cells_round_trip_and_bad_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("out"));
        assert_eq!(store.scan().unwrap().records.len(), 0);
        store.create().unwrap();
        let (a, b, c) = (cell(0), cell(1), cell(2));
        assert_eq!(store.read(&a), CellState::Missing);
        let mut m = BTreeMap::new();
        m.insert("psnr_final".to_string(), Some(30.0));
        m.insert("psnr_noisy".to_string(), Some(f64::INFINITY));
        let rec = CellRecord::new(&a, m, Value::Null);
        assert_eq!(rec.metric("psnr_noisy"), None);
        store.write(&rec).unwrap();
        assert_eq!(store.read(&a), CellState::Done(Box::new(rec.clone())));
        // A file cut short, as by a crash in a writer that is not atomic.
        std::fs::write(store.cell_path(&b.id), "{\"id\": \"").unwrap();
        assert!(matches!(store.read(&b), CellState::Corrupt(w) if w.contains("not a whole")));
        // A file under another cell's name.
        std::fs::copy(store.cell_path(&a.id), store.cell_path(&c.id)).unwrap();
        assert!(matches!(store.read(&c), CellState::Corrupt(w) if w.contains("holds cell")));
        // A temporary file of a write in progress is not a cell file.
        std::fs::write(store.cells_dir().join(".x.json.1.0.tmp"), "").unwrap();
        let scan = store.scan().unwrap();
        assert_eq!(scan.records, vec![rec]);
        let names: Vec<&str> = scan.unreadable.iter().map(|(n, _)| n.as_str()).collect();
        let mut want = vec![format!("{}.json", b.id), format!("{}.json", c.id)];
        want.sort();
        assert_eq!(names, want);
    }

    #[test]
    fn the_manifest_is_written_once_per_plan() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        assert_eq!(store.read_manifest().unwrap(), None);
        let plan: Plan = toml::from_str(
            "images = [\"a.png\"]\nseeds = 2\n[[degradations]]\ntask = \"denoise\"\nlevel = 25\n",
        )
        .unwrap();
        let m = Manifest {
            title: "t".into(),
            metrics: vec!["psnr_final".into()],
            plan,
            cells: vec![cell(0), cell(1)],
        };
        assert_eq!(store.write_manifest(&m).unwrap(), None);
        assert_eq!(store.write_manifest(&m).unwrap(), None);
        assert_eq!(store.read_manifest().unwrap(), Some(m.clone()));
        let mut m2 = m.clone();
        m2.cells.push(cell(2));
        assert_eq!(store.write_manifest(&m2).unwrap(), Some(m));
        assert_eq!(store.read_manifest().unwrap(), Some(m2));
    }
}

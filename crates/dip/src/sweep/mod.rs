//! Sweeps: many independent fits (images × degradations × settings × seeds) described by one
//! plan file, run in any number of processes that share an output folder, and merged into
//! tables.
//!
//! This module holds the parts that do not depend on how a cell is fitted:
//!
//! - [`Plan`]: the TOML plan (serde, unknown keys refused with the file and the key named), and
//!   its expansion into [`Cell`]s in a fixed order;
//! - the cell id: a hash (FNV-1a, 64 bits) of the canonical JSON of the cell's settings, so that
//!   it is the same on every machine, process and Rust version ([`CellSettings::id`]);
//! - [`Shard`]: which cells one process takes (`--shard I/N`, or Slurm's array variables);
//! - [`Store`]: one JSON file per finished cell, written atomically, read back with a check that
//!   it is whole and belongs to its cell;
//! - [`merge`]: mean ± standard deviation over seeds per group of cells, with the missing cells
//!   counted, as CSV and Markdown that depend on the cell files only.
//!
//! - [`fit_cell`]: one cell, from its clean image to its record: the recipe, the degraded
//!   problem, the fit through [`crate::task::restore`] with the plan's stopping rules watching,
//!   and what it measured.
//!
//! Scheduling cells over processes, jobs and GPU lanes, and the bars, are the front end's.

mod cell;
mod merge;
mod plan;
mod shard;
mod store;

pub use cell::{FittedCell, degradation, degrade, fit_cell, prepare_image, preset_of, recipe_of};
pub use merge::{GroupRow, Merged, Stat, format_metric, mean_std, merge};
pub use plan::{
    Cell, CellSettings, DEFAULT_METRICS, Degradation, METRICS, Plan, Seeds, TIMING_METRICS, Task,
    canonical_json, fnv1a64,
};
pub use shard::Shard;
pub use store::{CELLS_DIR, CellRecord, CellState, MANIFEST, Manifest, Scan, Store};

//! Sweep plan files: parsing, checking, and crossing into cells. Errors are fine; panics are
//! not, and neither is an allocation the size of the plan's claims.
#![no_main]

use std::path::Path;

use dip::sweep::{Plan, Seeds};
use libfuzzer_sys::fuzz_target;

/// Plans of more cells than this are parsed and checked but not crossed: listing 10^5 cells
/// takes seconds (and more under the sanitizer), which is slow, not wrong. `Plan::parse`
/// refuses plans above 1 000 000 cells before listing anything.
const FUZZ_MAX_CELLS: u64 = 10_000;

/// The values of every list in a `[grid]` table, nested tables included.
fn grid_sizes(t: &toml::Table, out: &mut Vec<u64>) {
    for v in t.values() {
        match v {
            toml::Value::Table(t) => grid_sizes(t, out),
            toml::Value::Array(a) => out.push(a.len() as u64),
            _ => {}
        }
    }
}

/// Cells per image, saturating.
fn cells_per_image(plan: &Plan) -> u64 {
    let levels = plan
        .degradations
        .iter()
        .map(|d| d.levels.len().max(usize::from(d.level.is_some())) as u64)
        .fold(0, u64::saturating_add);
    let seeds = match &plan.seeds {
        Seeds::Count(n) => *n,
        Seeds::List(v) => v.len() as u64,
    };
    let mut sizes = vec![
        levels,
        plan.arch.len() as u64,
        plan.sets.len().max(1) as u64,
        seeds,
    ];
    grid_sizes(&plan.grid, &mut sizes);
    sizes.into_iter().fold(1, u64::saturating_mul)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(plan) = Plan::parse(text, Path::new("plan.toml")) else {
        return;
    };
    let _ = plan.table_metrics();
    if cells_per_image(&plan).saturating_mul(2) > FUZZ_MAX_CELLS {
        return;
    }
    let images = vec!["a.png".to_string(), "b/c.png".to_string()];
    if let Ok(cells) = plan.cells(&images) {
        for cell in cells.iter().take(50) {
            assert_eq!(cell.id, cell.settings.id());
            let _ = cell.settings.label();
            let _ = cell.settings.degradation_seed();
        }
    }
});

//! Sweep plan files: parsing, checking, and crossing into cells. Errors are fine; panics are
//! not, and neither is an allocation the size of the plan's claims.
#![no_main]

use std::path::Path;

use dip::sweep::Plan;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(plan) = Plan::parse(text, Path::new("plan.toml")) else {
        return;
    };
    let _ = plan.table_metrics();
    let images = vec!["a.png".to_string(), "b/c.png".to_string()];
    if let Ok(cells) = plan.cells(&images) {
        for cell in cells.iter().take(50) {
            assert_eq!(cell.id, cell.settings.id());
            let _ = cell.settings.label();
            let _ = cell.settings.degradation_seed();
        }
    }
});

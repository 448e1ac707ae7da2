//! Settings files: TOML text as a whole recipe, and as `--config` overrides on a preset, then
//! the recipe's validation and the network size estimate. Errors are fine; panics are not.
#![no_main]

use dip::recipe::Recipe;
use libfuzzer_sys::fuzz_target;
use toml::{Table, Value};

const PRESET: &str = include_str!("../../crates/dip-cli/presets/denoise.toml");

/// Writes `over` into `base`, recursing into tables, as the command line merges `--config`.
fn merge(base: &mut Table, over: Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn check(recipe: &Recipe) {
    let _ = recipe.fit_config();
    for channels in [1, 3] {
        if let Ok(arch) = recipe.arch(channels) {
            let _ = arch.min_side();
            let _ = arch.size_multiple();
            let _ = arch.estimate_bytes(64, 48);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(recipe) = toml::from_str::<Recipe>(text) {
        check(&recipe);
    }
    let Ok(over) = toml::from_str::<Table>(text) else {
        return;
    };
    let mut table: Table = toml::from_str(PRESET).expect("the preset parses");
    merge(&mut table, over);
    let Ok(encoded) = toml::to_string(&table) else {
        return;
    };
    if let Ok(recipe) = toml::from_str::<Recipe>(&encoded) {
        check(&recipe);
    }
});

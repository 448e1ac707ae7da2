//! Settings files: TOML text as a whole recipe, and as `--config` overrides on a preset, then
//! the recipe's validation and the network size estimate. Errors are fine; panics are not.
#![no_main]

use dip::recipe::{Recipe, merge_tables};
use libfuzzer_sys::fuzz_target;
use toml::Table;

const PRESET: &str = include_str!("../../crates/dip-cli/presets/denoise.toml");

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
    merge_tables(&mut table, over);
    let Ok(encoded) = toml::to_string(&table) else {
        return;
    };
    if let Ok(recipe) = toml::from_str::<Recipe>(&encoded) {
        check(&recipe);
    }
});

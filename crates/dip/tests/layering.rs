//! The library's modules import one way: no new cycle between top-level modules (`crate::X`)
//! nor between the files of one module (`super::X`). The cycles that exist today are listed
//! below as debts; a new one fails this test, and so does a listed one that is gone (so the
//! list only shrinks).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Cycles that exist and are to be removed (each as its two ends, sorted).
const KNOWN: &[(&str, &str)] = &[
    // The host emulation and the executor of the GPU backend call each other.
    ("cuda/emu", "cuda/exec"),
    // The bf16 kernels and the GEMM dispatch call each other.
    ("engine/bf16", "engine/gemm"),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Identifiers that follow `prefix` in `src` (`crate::fit::…` gives `fit`; a group
/// `super::{a, b::c}` gives `a` and `b`).
fn names_after<'a>(src: &'a str, prefix: &str) -> Vec<&'a str> {
    let ident = |rest: &'a str| -> &'a str {
        let rest = rest.trim_start();
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        &rest[..end]
    };
    src.match_indices(prefix)
        .flat_map(|(i, _)| {
            let rest = &src[i + prefix.len()..];
            match rest.strip_prefix('{') {
                Some(group) => {
                    let body = &group[..group.find('}').unwrap_or(group.len())];
                    body.split(',').map(ident).collect::<Vec<_>>()
                }
                None => vec![ident(rest)],
            }
        })
        .filter(|n| !n.is_empty())
        .collect()
}

/// Edges between top-level modules (`a` → `b`) and between files of one module
/// (`m/a` → `m/b`), from `crate::` and `super::` paths in the source.
fn edges(src_dir: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src_dir, &mut files);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(src_dir).unwrap().with_extension("");
        let parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main") {
            continue;
        }
        // Comments (doc links included) are not imports.
        let src: String = std::fs::read_to_string(&f)
            .unwrap()
            .lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        let top = parts[0].clone();
        for n in names_after(&src, "crate::") {
            if n != top && (src_dir.join(format!("{n}.rs")).exists() || src_dir.join(n).is_dir()) {
                g.entry(top.clone()).or_default().insert(n.to_string());
            }
        }
        // Files inside a module folder: `super::x` and `crate::<module>::x` name a sibling. A
        // file of a sub-folder (`cuda/exec/forward.rs`) counts as that folder's unit
        // (`cuda/exec`); its `super::` is its own unit, except in the unit's `mod.rs`.
        if parts.len() >= 2 && !(parts.len() == 2 && parts[1] == "mod") {
            let unit = &parts[1];
            let me = format!("{}/{unit}", parts[0]);
            let own = format!("crate::{}::", parts[0]);
            let super_is_sibling = parts.len() == 2 || (parts.len() == 3 && parts[2] == "mod");
            let mut siblings = names_after(&src, &own);
            if super_is_sibling {
                siblings.extend(names_after(&src, "super::"));
            }
            for n in siblings {
                let dir = src_dir.join(&parts[0]);
                let exists =
                    dir.join(format!("{n}.rs")).exists() || dir.join(n).join("mod.rs").exists();
                if exists && n != unit {
                    g.entry(me.clone())
                        .or_default()
                        .insert(format!("{}/{n}", parts[0]));
                }
            }
        }
    }
    g
}

fn reaches(g: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> bool {
    let mut stack = vec![from.to_string()];
    let mut seen = BTreeSet::new();
    while let Some(n) = stack.pop() {
        if n == to {
            return true;
        }
        if seen.insert(n.clone()) {
            stack.extend(g.get(&n).into_iter().flatten().cloned());
        }
    }
    false
}

/// Every pair of modules that reach each other, as sorted pairs of direct neighbours.
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (a, bs) in g {
        for b in bs {
            if reaches(g, b, a) {
                let (x, y) = if a < b { (a, b) } else { (b, a) };
                out.insert((x.clone(), y.clone()));
            }
        }
    }
    out
}

#[test]
fn no_new_import_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = cycles(&edges(&src));
    let known: BTreeSet<(String, String)> = KNOWN
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let new: Vec<_> = found.difference(&known).collect();
    assert!(
        new.is_empty(),
        "new import cycles (a imports b and b reaches a): {new:?}"
    );
    let gone: Vec<_> = known.difference(&found).collect();
    assert!(
        gone.is_empty(),
        "these cycles are gone: remove them from KNOWN: {gone:?}"
    );
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    assert!(cycles(&g).is_empty());
    g.entry("c".into()).or_default().insert("a".into());
    let c = cycles(&g);
    assert!(c.contains(&("a".to_string(), "b".to_string())), "{c:?}");
    assert_eq!(
        names_after("use crate::fit::X; crate::sigma", "crate::"),
        ["fit", "sigma"]
    );
    assert_eq!(
        names_after("use super::{Float, bf16::X};", "super::"),
        ["Float", "bf16"]
    );
}

//! The module map's one rule, checked: dependencies among `proxy/src`'s modules point one way.
//! Every `crate::a::b` a file names is an edge from its module to the module that path resolves
//! to; the test fails on any cycle, and on a module below the pipeline reaching up into it (see
//! the README's "Layout").

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Modules, by path (`trail::record`), with the text of their file (tests left out).
fn modules() -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&root).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                parts.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                parts.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let text = match text.find("#[cfg(test)]\nmod tests") {
                Some(i) => text[..i].to_string(),
                None => text,
            };
            out.insert(parts.join("::"), text);
        }
    }
    out
}

/// The longest module path that `path` starts with.
fn resolve<'a>(mods: &'a BTreeMap<String, String>, path: &str) -> Option<&'a str> {
    let mut parts: Vec<&str> = path.split("::").collect();
    while !parts.is_empty() {
        if let Some((name, _)) = mods.get_key_value(&parts.join("::")) {
            return Some(name);
        }
        parts.pop();
    }
    None
}

fn related(a: &str, b: &str) -> bool {
    a == b || a.starts_with(&format!("{b}::")) || b.starts_with(&format!("{a}::"))
}

/// `crate::` paths in a file, `use crate::{a, b::c}` lists unfolded.
fn paths(text: &str) -> Vec<String> {
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(list) = rest.strip_prefix('{') {
            let end = list.find('}').unwrap_or(list.len());
            out.extend(list[..end].split(',').map(|s| s.trim().to_string()));
            continue;
        }
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        out.push(rest[..end].trim_end_matches(':').to_string());
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, text) in &mods {
        let targets = edges.entry(module.clone()).or_default();
        for path in paths(text) {
            if let Some(target) = resolve(&mods, &path) {
                if !target.is_empty() && !related(module, target) {
                    targets.insert(target.to_string());
                }
            }
        }
    }
    edges
}

/// Modules reachable from `from`.
fn reach(edges: &BTreeMap<String, BTreeSet<String>>, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![from.to_string()];
    while let Some(m) = todo.pop() {
        for next in edges.get(&m).into_iter().flatten() {
            if seen.insert(next.clone()) {
                todo.push(next.clone());
            }
        }
    }
    seen
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let edges = graph();
    assert!(edges.len() > 40, "the source tree was not found");
    let cycles: Vec<String> = edges
        .keys()
        .filter(|m| reach(&edges, m).contains(*m))
        .map(|m| {
            let back: Vec<&String> = edges[m]
                .iter()
                .filter(|t| reach(&edges, t).contains(m))
                .collect();
            format!("{m} -> {back:?}")
        })
        .collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn nothing_below_the_pipeline_reaches_up_into_it() {
    let edges = graph();
    // The edge (connections, the server, the CLI) and the pipeline itself may; nothing else.
    let above = [
        "pipeline", "edge", "cli", "admin", "gateway", "reload", "detect",
    ];
    for module in edges.keys() {
        if above.iter().any(|a| related(module, a)) || module.is_empty() {
            continue;
        }
        let up: Vec<String> = reach(&edges, module)
            .into_iter()
            .filter(|t| above.iter().any(|a| related(t, a)))
            .collect();
        assert!(up.is_empty(), "{module} reaches up into {up:?}");
    }
}

#[test]
fn the_checker_sees_an_edge_it_is_shown() {
    // A checker that finds nothing would pass the tests above: it must at least see these.
    let edges = graph();
    assert!(edges["pipeline"].contains("trail::record"));
    assert!(edges["body::response"].contains("upstream"));
    assert!(edges["identity::cache"].contains("state::account"));
}

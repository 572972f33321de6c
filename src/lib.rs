//! run-pipeline: batch pipelines for real-world image restoration with Noise-DA
//! ("Denoising as Adaptation", Liao et al., ICLR 2025).
//!
//! Layout (one module per concept): [`pipeline`] (spec / plan / run), [`datasets`],
//! [`degradations`], [`networks`], [`training`], [`metrics`] and [`protocols`], [`reports`].
//!
//! Layers, lowest first; a module uses only modules of lower layers (tested below; test code
//! may reach further, e.g. degradations' tests draw images from `datasets::dead_leaves`):
//!
//! 0. [`util`], [`error`], [`rng`], [`task`] — helpers, failures, seeded streams, the task kind
//! 1. [`image`], [`lock`], [`integrity`], [`output`] — the image type; run locks; content hashes of what we read back; where a command may write
//! 2. [`metrics`] — PSNR / SSIM
//! 3. [`protocols`] — the field's scoring protocols
//! 4. [`degradations`] — synthetic degradations
//! 5. [`datasets`], [`networks`], [`backend`] — data, the networks (and their kernels), devices
//! 6. [`training`] — source-only / Noise-DA training, owning its config (`training::config`)
//! 7. [`reports`] — tables, summaries, comparisons, figures
//! 8. [`pipeline`] — the YAML specification composing every layer's config, plans and runs
//! 9. [`commands`] — the sub-commands that are not a run (`score`, `datasets list/check/export`)

pub mod backend;
pub mod commands;
pub mod datasets;
pub mod degradations;
pub mod error;
pub mod image;
pub mod integrity;
pub mod lock;
pub mod metrics;
pub mod networks;
pub mod output;
pub mod pipeline;
pub mod protocols;
pub mod reports;
pub mod rng;
pub mod task;
pub mod training;
pub mod util;

#[cfg(test)]
mod tests {
    /// The layer of each top-level module (see the crate documentation).
    const LAYERS: &[(&str, usize)] = &[
        ("util", 0),
        ("error", 0),
        ("rng", 0),
        ("task", 0),
        ("image", 1),
        ("lock", 1),
        ("integrity", 1),
        ("output", 1),
        ("metrics", 2),
        ("protocols", 3),
        ("degradations", 4),
        ("datasets", 5),
        ("networks", 5),
        ("backend", 5),
        ("training", 6),
        ("reports", 7),
        ("pipeline", 8),
        ("commands", 9),
    ];

    fn layer(module: &str) -> Option<usize> {
        LAYERS.iter().find(|(m, _)| *m == module).map(|&(_, l)| l)
    }

    /// No module's non-test code names a module of its own or a higher layer (`crate::x` paths,
    /// in `use` lines or inline), so the import graph has no loop and no upward edge. Every
    /// module under `src/` must have a layer.
    #[test]
    fn no_module_imports_its_own_or_a_higher_layer() {
        let mut violations = Vec::new();
        let mut checked = 0;
        for (rel, code) in source_files() {
            let top =
                rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
            if top == "lib" || top == "main" {
                continue;
            }
            let own =
                layer(&top).unwrap_or_else(|| panic!("src/{}: module `{top}` has no layer in LAYERS", rel.display()));
            for (n, line) in code.lines().enumerate() {
                let line = line.split("//").next().unwrap();
                for (i, _) in line.match_indices("crate::") {
                    let rest = &line[i + 7..];
                    let ident = |s: &str| -> String {
                        s.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
                    };
                    // `crate::x::…`, or a group `crate::{x::…, y}` (on one line).
                    let names: Vec<String> = match rest.strip_prefix('{') {
                        Some(group) => group.split(',').map(ident).collect(),
                        None => vec![ident(rest)],
                    };
                    for name in names {
                        let Some(l) = layer(&name) else { continue };
                        checked += 1;
                        if name != top && l >= own {
                            violations.push(format!(
                                "src/{}:{}: `{top}` (layer {own}) uses `{name}` (layer {l})",
                                rel.display(),
                                n + 1
                            ));
                        }
                    }
                }
            }
        }
        assert!(checked > 100, "the scan found only {checked} crate paths");
        assert!(violations.is_empty(), "upward or same-layer imports:\n{}", violations.join("\n"));
    }

    /// Every `.rs` file under `src/` as (path relative to it, its code without its test
    /// module: test modules may reach anywhere, e.g. fixtures from other layers).
    fn source_files() -> Vec<(std::path::PathBuf, String)> {
        let src = crate::util::repo_root().join("src");
        let mut out = Vec::new();
        let mut stack = vec![src.clone()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    let text = std::fs::read_to_string(&p).unwrap();
                    // `#[cfg(test)]` then `mod tests`, whatever its visibility.
                    let code = text
                        .match_indices("#[cfg(test)]\n")
                        .find(|(at, m)| {
                            let next = text[at + m.len()..].lines().next().unwrap_or("");
                            next.split('{').next().unwrap_or("").trim_end().ends_with("mod tests")
                        })
                        .map_or(text.as_str(), |(at, _)| &text[..at])
                        .to_string();
                    out.push((p.strip_prefix(&src).unwrap().to_path_buf(), code));
                }
            }
        }
        out
    }

    /// Every file under `src/` as (module path, non-test code).
    fn source_modules() -> Vec<(Vec<String>, String)> {
        source_files()
            .into_iter()
            .map(|(rel, code)| {
                let mut m: Vec<String> =
                    rel.with_extension("").iter().map(|c| c.to_string_lossy().into_owned()).collect();
                if m.last().is_some_and(|l| l == "mod" || l == "lib" || l == "main") {
                    m.pop();
                }
                (m, code)
            })
            .collect()
    }

    /// No import circle between files: no file reaches itself through the module paths its
    /// non-test code names (`crate::…`, `super::…`, grouped `use` lists), apart from a file
    /// naming a module that encloses it (a child using its parent's items is how a module tree
    /// shares its types). Circles between siblings (once `datasets/disk.rs` ↔ `sidd.rs`) or
    /// through other folders (once `pipeline/report.rs` → `run/` → `run/outputs.rs` → `report.rs`)
    /// fail it.
    #[test]
    fn no_import_circle_between_files() {
        let modules = source_modules();
        let known: std::collections::BTreeSet<Vec<String>> = modules.iter().map(|(m, _)| m.clone()).collect();
        let is_file = |m: &[String]| known.contains(m);
        // Each `crate::…` / `super::…` path a file names, resolved from the crate root, grouped
        // `use` lists (one level of braces) expanded.
        let paths = |own: &[String], code: &str| -> Vec<Vec<String>> {
            let code: String = code.lines().map(|l| l.split("//").next().unwrap()).collect::<Vec<_>>().join("\n");
            let bytes = code.as_bytes();
            let ident = |s: &str| -> Vec<String> {
                s.split("::")
                    .map(|p| {
                        p.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>()
                    })
                    .take_while(|p| !p.is_empty())
                    .collect()
            };
            let mut found = Vec::new();
            for (i, _) in code.match_indices("crate::").chain(code.match_indices("super::")) {
                if i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_' || bytes[i - 1] == b':') {
                    continue;
                }
                let (mut base, mut rest) = match code[i..].strip_prefix("crate::") {
                    Some(r) => (vec![], r),
                    None => (own.to_vec(), &code[i..]),
                };
                // `super` is the enclosing module, for `x.rs` and `x/mod.rs` alike.
                while let Some(r) = rest.strip_prefix("super::") {
                    base.pop();
                    rest = r;
                }
                let stop = rest
                    .find(|c: char| matches!(c, ';' | '\n' | '(' | ')' | ',' | ' ' | '<' | '>'))
                    .unwrap_or(rest.len());
                let (head, group) = match rest.find('{') {
                    Some(b) if b < stop => {
                        let end = rest[b..].find('}').map_or(rest.len(), |e| b + e);
                        (&rest[..b], &rest[b + 1..end])
                    }
                    _ => (&rest[..stop], ""),
                };
                let mut head_path = base;
                head_path.extend(ident(head));
                if group.is_empty() {
                    found.push(head_path);
                } else {
                    for g in group.split(',') {
                        let mut p = head_path.clone();
                        p.extend(ident(g));
                        found.push(p);
                    }
                }
            }
            found
        };
        let mut edges: std::collections::BTreeMap<Vec<String>, std::collections::BTreeSet<Vec<String>>> =
            Default::default();
        for (m, code) in &modules {
            for p in paths(m, code) {
                // The longest prefix that is a file of its own.
                let target = (1..=p.len()).rev().map(|n| p[..n].to_vec()).find(|q| is_file(q));
                if let Some(t) = target
                    && t != *m
                    && !m.starts_with(&t)
                {
                    edges.entry(m.clone()).or_default().insert(t);
                }
            }
        }
        assert!(edges.values().map(|v| v.len()).sum::<usize>() > 100, "the scan found too few edges: {edges:?}");
        // Depth-first search for a cycle.
        fn visit(
            n: &Vec<String>,
            edges: &std::collections::BTreeMap<Vec<String>, std::collections::BTreeSet<Vec<String>>>,
            state: &mut std::collections::BTreeMap<Vec<String>, u8>,
            stack: &mut Vec<Vec<String>>,
        ) -> Option<Vec<Vec<String>>> {
            match state.get(n) {
                Some(1) => {
                    let at = stack.iter().position(|x| x == n).unwrap();
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(n.clone());
                    return Some(cycle);
                }
                Some(2) => return None,
                _ => {}
            }
            state.insert(n.clone(), 1);
            stack.push(n.clone());
            for t in edges.get(n).into_iter().flatten() {
                if let Some(c) = visit(t, edges, state, stack) {
                    return Some(c);
                }
            }
            stack.pop();
            state.insert(n.clone(), 2);
            None
        }
        let mut state = Default::default();
        for n in edges.keys() {
            if let Some(c) = visit(n, &edges, &mut state, &mut vec![]) {
                let names: Vec<String> = c.iter().map(|m| m.join("::")).collect();
                panic!("import circle between files: {}", names.join(" → "));
            }
        }
    }
}

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
//! 1. [`image`], [`lock`], [`integrity`] — the image type; run locks; content hashes of what we read back
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
        let src = crate::util::repo_root().join("src");
        let mut files = Vec::new();
        let mut stack = vec![src.clone()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    files.push(p);
                }
            }
        }
        let mut violations = Vec::new();
        let mut checked = 0;
        for f in files {
            let rel = f.strip_prefix(&src).unwrap();
            let top =
                rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
            if top == "lib" || top == "main" {
                continue;
            }
            let own =
                layer(&top).unwrap_or_else(|| panic!("src/{}: module `{top}` has no layer in LAYERS", rel.display()));
            let text = std::fs::read_to_string(&f).unwrap();
            // Test modules may reach anywhere (fixtures from other layers).
            let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
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
}

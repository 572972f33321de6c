//! Sub-commands that are not a pipeline run: what each prints and its exit status, over the
//! layers below; `main.rs` only parses the command line and dispatches here.

pub mod datasets;
pub mod describe;
pub mod restore;
pub mod score;

use std::path::{Path, PathBuf};

/// The registry a command reads: `--registry`, else `./datasets.toml`, else the one beside the
/// pipeline's `pipelines/` folder (the repository layout).
pub fn registry_path(explicit: Option<&Path>, pipeline: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    let here = PathBuf::from("datasets.toml");
    if here.exists() {
        return here;
    }
    // pipelines/x.yaml → ../datasets.toml (the repository layout).
    pipeline
        .and_then(|p| p.parent())
        .and_then(|d| d.parent())
        .map(|root| root.join("datasets.toml"))
        .filter(|p| p.exists())
        .unwrap_or(here)
}

/// `run-pipeline report RUN...`: re-summarise runs and print the benchmark across them.
pub fn report(runs: &[PathBuf], out: Option<&Path>, baseline: Option<&str>, force: bool) -> crate::error::Result<()> {
    let r = crate::pipeline::report::report(runs, out, baseline, force)?;
    for (dir, md) in &r.runs {
        println!("{}\n\n{md}", dir.display());
    }
    println!(
        "benchmark across {} run(s):\n\n{}\nbenchmark: {}\npage:      {}",
        r.runs.len(),
        r.benchmark_markdown,
        r.benchmark_file.display(),
        r.benchmark_file.with_extension("html").display()
    );
    Ok(())
}

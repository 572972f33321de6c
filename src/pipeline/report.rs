//! `run-pipeline report`: re-summarise finished runs with this version's report code and write
//! the benchmark table across them (optionally paired against one baseline across runs).

use std::path::{Path, PathBuf};

use super::PipelineSpec;
use crate::error::{Failure, Result};
use crate::reports::{self, benchmark};

/// What `report` wrote: each run's summary (Markdown) and the cross-run benchmark.
pub struct ReportOutcome {
    pub runs: Vec<(PathBuf, String)>,
    pub benchmark_markdown: String,
    pub benchmark_file: PathBuf,
}

/// Re-summarise each run directory and write `benchmark.{md,csv,parquet}` (and, with a
/// baseline `RUN_ID/METHOD` or `METHOD` of the first run, `comparisons.*`) under `out`
/// (default: `benchmark/` beside the first run's pipeline folder).
pub fn report(runs: &[PathBuf], out: Option<&Path>, baseline: Option<&str>, force: bool) -> Result<ReportOutcome> {
    // Where the benchmark goes, checked before anything is written: files this tool wrote
    // there are replaced, anything else only with --force.
    let Some(first) = runs.first() else { return Err(Failure::config("name at least one run directory")) };
    let default_out = first.parent().and_then(Path::parent).unwrap_or(Path::new(".")).join("benchmark");
    let out = out.unwrap_or(&default_out);
    let mut outdir = crate::output::OutputDir::open(out, force)?;
    let mut files =
        vec!["benchmark.csv", "benchmark.parquet", "benchmark.parquet.sha256", "benchmark.md", "benchmark.html"];
    if baseline.is_some() {
        files.extend(["comparisons.csv", "comparisons.parquet", "comparisons.parquet.sha256"]);
    }
    for f in &files {
        outdir.check(Path::new(f))?;
    }
    let mut printed = Vec::new();
    let mut summaries = Vec::new();
    let mut across = reports::Table::default();
    let mut labels: Vec<String> = Vec::new();
    let mut deltas = Vec::new();
    for dir in runs {
        let path = dir.join("resolved.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Failure::config(format!("{}: not a run directory ({e})", dir.display())))?;
        let mut json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Failure::config(format!("{}: unreadable resolved pipeline: {e}", path.display())))?;
        // Runs written before variants carried their own networks: give them the pipeline's.
        let networks = json.get("networks").cloned();
        if let (Some(vs), Some(n)) = (json.get_mut("variants").and_then(|v| v.as_object_mut()), networks) {
            for v in vs.values_mut() {
                if let Some(obj) = v.as_object_mut() {
                    obj.entry("networks").or_insert_with(|| n.clone());
                }
            }
        }
        let spec: PipelineSpec = serde_json::from_value(json)
            .map_err(|e| Failure::config(format!("{}: unreadable resolved pipeline: {e}", path.display())))?;
        if !dir.join("per_image.parquet").is_file() {
            return Err(Failure::data(format!("{}: no per_image.parquet (an unfinished run?)", dir.display())));
        }
        let written = super::run::write_summaries(dir, &spec)?;
        super::run::write_report_html(dir, &spec, &written)?;
        let run_id = dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        if let Some(c) = &written.comparisons {
            deltas.push((format!("{} · {run_id}", spec.name), c.clone()));
        }
        printed.push((dir.clone(), written.markdown.clone()));
        let summary = written.summary;
        if baseline.is_some() {
            let t = reports::compare::relabelled(&written.per_image, &run_id);
            for m in reports::compare::methods(&t) {
                if !labels.contains(&m) {
                    labels.push(m);
                }
            }
            across.append_rows(t);
        }
        let target_tests =
            spec.tests.iter().filter(|t| t.dataset == spec.target.dataset).map(|t| t.name.clone()).collect();
        summaries.push(benchmark::RunSummary {
            run_id,
            pipeline: spec.name.clone(),
            task: spec.task,
            target_tests,
            summary,
            recipes: spec.benchmark_recipes(),
        });
    }
    let table = benchmark::benchmark_table(&summaries);
    let layout = benchmark::benchmark_markdown(&table);
    let mut md = layout.clone();
    let mut across_md = None;
    // The cross-run comparison is checked before anything is written.
    let comparisons = match baseline {
        Some(b) => {
            let first = runs[0].file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            let b = if b.contains('/') { b.to_string() } else { format!("{first}/{b}") };
            if !labels.contains(&b) {
                return Err(Failure::config(format!(
                    "--baseline {b}: not among the runs' methods ({})",
                    labels.join(", ")
                )));
            }
            let order: Vec<&str> = labels.iter().map(String::as_str).collect();
            let comparisons = reports::compare::compare(&across, &b, &order);
            let c = format!(
                "Paired differences against {b} on the same images, across runs:\n\n{}",
                reports::compare::comparisons_markdown(&comparisons)
            );
            md.push('\n');
            md.push_str(&c);
            across_md = Some(c);
            Some(comparisons)
        }
        None => None,
    };
    std::fs::create_dir_all(out).map_err(|e| Failure::internal(format!("{}: {e}", out.display())))?;
    table.write(&out.join("benchmark"))?;
    if let Some(c) = &comparisons {
        reports::compare::comparisons_table(c).write(&out.join("comparisons"))?;
    }
    outdir.write(Path::new("benchmark.md"), md.as_bytes())?;
    let html = reports::html::benchmark_page(&layout, &deltas, across_md.as_deref());
    outdir.write(Path::new("benchmark.html"), html.as_bytes())?;
    for f in files.iter().filter(|f| !f.ends_with(".md") && !f.ends_with(".html")) {
        outdir.record(Path::new(f))?;
    }
    Ok(ReportOutcome { runs: printed, benchmark_markdown: md, benchmark_file: out.join("benchmark.md") })
}

//! The closing stages: diagnostics (D probes, the premise check), the run's tables, figures
//! and summaries, its provenance, and the quality gates that decide its exit code.

use std::path::Path;
use std::time::SystemTime;

use serde_json::json;
use tracing::info;

use super::data::{Data, TestSet};
use super::evaluate::{EXAMPLES, Examples, Scores};
use super::train::Trained;
use super::{Resolved, Run, RunOptions, RunOutcome};
use crate::error::{ExitCode, Failure, Result};
use crate::image::Image;
use crate::pipeline::diagnostics;
use crate::pipeline::plan::Stage;
use crate::pipeline::spec::PipelineSpec;
use crate::reports::{self, INPUT, Table};
use crate::util::{sha256_hex, utc_stamp, write_atomic};

impl Run<'_> {
    /// The D probes of the Noise-DA stages and the premise check, when the pipeline asks.
    pub(super) fn diagnostics(&mut self, data: &Data, trained: &Trained) -> Result<()> {
        let first = &data.tests[0];
        let premise = diagnostics::premise_stage(
            self.spec,
            &data.source,
            (&first.name, &first.set),
            &self.stage_cache.root,
            self.device(),
        )?;
        let d_probe: Vec<diagnostics::ProbeRow> =
            trained.facts.iter().filter_map(|f| serde_json::from_value(f["d_probe"].clone()).ok()).collect();
        if premise.is_some() || !d_probe.is_empty() {
            diagnostics::write(&self.open.run_dir, &diagnostics::Diagnostics { d_probe, premise })?;
            self.timings.finish("diagnostics");
        }
        Ok(())
    }

    /// The `report` stage: per-image and curve tables, figures, summaries and gate results.
    pub(super) fn write_reports(&mut self, data: &Data, scores: Scores, trained: &Trained) -> Result<Summaries> {
        let run_dir = &self.open.run_dir;
        scores.finish()?;
        let mut all_curves = Table::default();
        for c in &trained.curves {
            all_curves.append_rows(c.clone());
        }
        all_curves.write(&run_dir.join("curves"))?;
        write_figures(run_dir, self.spec, &data.tests, &all_curves, &trained.examples)?;
        let summaries = write_summaries(run_dir, self.spec)?;
        self.timings.finish(Stage::Report);
        Ok(summaries)
    }

    /// `provenance.json`, written last: its presence marks the run finished.
    pub(super) fn write_provenance(&mut self, data: &Data, trained: Trained) -> Result<()> {
        let record = Record {
            res: self.res,
            opts: self.opts,
            run_id: &self.open.run_id,
            started: self.started,
            resumed: self.open.resumed,
            wall_s: self.t0.elapsed().as_secs_f64(),
            stage_seconds: std::mem::take(&mut self.timings.seconds),
            device: &self.backend_name,
            datasets: data.fingerprints(),
            training: trained.facts,
            resolved_json: &self.resolved_json,
        };
        write_atomic(
            &self.open.run_dir.join("provenance.json"),
            serde_json::to_string_pretty(&provenance(&record)).expect("json").as_bytes(),
        )?;
        info!(run = %self.open.run_id, wall_s = format!("{:.1}", self.t0.elapsed().as_secs_f64()), "run finished");
        Ok(())
    }

    /// The gates: exit [`ExitCode::GateFailed`] naming each failed one (the summary is printed
    /// first when the pipeline asks for it), else the run's outcome.
    pub(super) fn check_gates(self, summaries: Summaries) -> Result<RunOutcome> {
        let Summaries { markdown: md, gates, .. } = summaries;
        let run_dir = self.open.run_dir.clone();
        let failed: Vec<String> =
            gates.iter().filter(|r| !r.passed).map(|r| format!("{}: {}", r.gate, r.detail)).collect();
        if !failed.is_empty() {
            if self.spec.report.print_summary {
                println!("\n{md}");
            }
            return Err(Failure::new(
                ExitCode::GateFailed,
                format!("quality gate failed: {} (report: {})", failed.join("; "), run_dir.display()),
            ));
        }
        Ok(RunOutcome { run_dir, summary: md })
    }
}

/// Figures: training curves, and example crops per test set (input / recipes / ground truth).
fn write_figures(
    run_dir: &Path,
    spec: &PipelineSpec,
    tests: &[TestSet],
    all_curves: &Table,
    examples: &Examples,
) -> Result<()> {
    let figures = run_dir.join("figures");
    std::fs::create_dir_all(&figures)?;
    reports::figures::curves_svg(all_curves, &figures.join("curves.svg"))?;
    for t in tests {
        let recipes: Vec<String> =
            spec.methods.iter().filter(|m| examples.contains_key(&(t.name.clone(), (*m).clone()))).cloned().collect();
        let mut labels = vec![INPUT.to_string()];
        labels.extend(recipes.iter().cloned());
        labels.push("ground truth".into());
        let rows: Vec<Vec<Image>> = (0..t.set.items.len().min(EXAMPLES))
            .map(|i| {
                let mut row = vec![t.set.items[i].degraded.clone()];
                row.extend(recipes.iter().map(|m| examples[&(t.name.clone(), m.clone())][i].clone()));
                row.push(t.set.items[i].clean.clone());
                row
            })
            .collect();
        reports::figures::crops_png(&rows, &labels, 64, 2, &figures.join(format!("{}-crops.png", t.name)))?;
        let ids: Vec<(String, Vec<Image>)> =
            rows.into_iter().enumerate().map(|(i, r)| (t.set.items[i].id.clone(), r)).collect();
        reports::figures::crop_cells(&ids, &labels, 64, &figures.join("crops").join(&t.name))?;
    }
    Ok(())
}

fn git(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// What a run's `provenance.json` records.
struct Record<'a> {
    res: &'a Resolved,
    opts: &'a RunOptions,
    run_id: &'a str,
    started: SystemTime,
    resumed: bool,
    wall_s: f64,
    stage_seconds: serde_json::Map<String, serde_json::Value>,
    device: &'a str,
    datasets: serde_json::Map<String, serde_json::Value>,
    training: Vec<serde_json::Value>,
    resolved_json: &'a str,
}

/// The provenance of a run: what ran (pipeline, profile, overrides, command line, code
/// version and uncommitted changes), on what (back-end, device, threads, data fingerprints),
/// how long each stage took, and each training stage's facts.
fn provenance(r: &Record) -> serde_json::Value {
    let spec = &r.res.spec;
    json!({
        "run_id": r.run_id,
        "pipeline": spec.name,
        "pipeline_file": r.res.path.display().to_string(),
        "profile": r.res.profile,
        "overrides": r.res.overrides,
        "command_line": r.opts.command_line,
        "started_utc": utc_stamp(r.started),
        "resumed": r.resumed,
        "wall_s": r.wall_s,
        "stage_seconds": r.stage_seconds,
        "version": env!("CARGO_PKG_VERSION"),
        "git_commit": git(&["rev-parse", "HEAD"]),
        "git_dirty": git(&["status", "--porcelain"]).map(|s| !s.is_empty()),
        // What the uncommitted changes were, as a hash (the diff itself stays in the working tree).
        "git_diff_sha256": git(&["diff", "HEAD"]).filter(|d| !d.is_empty()).map(|d| sha256_hex(d.as_bytes())),
        "code_hash": crate::pipeline::stages::code_version(),
        "backend": format!("{:?}", spec.backend).to_lowercase(),
        "device": r.device,
        "threads": rayon::current_num_threads(),
        "seeds": spec.seeds,
        "datasets": r.datasets,
        "training": r.training,
        "scored_weights": "raw",
        "ema_decay": spec.train.ema,
        "resolved_sha256": sha256_hex(r.resolved_json.as_bytes()),
    })
}

/// What [`write_summaries`] wrote, for callers that go on with it (cross-run reports).
pub struct Summaries {
    pub markdown: String,
    pub gates: Vec<crate::pipeline::gates::GateResult>,
    /// The `summary` table as written.
    pub summary: Table,
    /// The run's per-image scores as read.
    pub per_image: Table,
    /// The paper's layout of this run (Markdown), when it has target test sets.
    pub paper_layout: Option<String>,
    /// The `comparisons` table as written, when the run has a baseline.
    pub comparisons: Option<Table>,
}

/// Summaries of a run from its per-image scores: `summary` (means, std, bootstrap intervals),
/// `recipes`, `comparisons` against the baseline, and `summary.md`. Used at the end of a run and
/// by `run-pipeline report` to re-summarise finished runs with this version's report code.
/// The pipeline's quality gates are checked here too (results in gates.json and summary.md).
pub(crate) fn write_summaries(run_dir: &Path, spec: &PipelineSpec) -> Result<Summaries> {
    let per_image_table = reports::Table::read_checked(&run_dir.join("per_image.parquet"))?;
    let order: Vec<&str> = spec.methods.iter().map(String::as_str).collect();
    let mut summary = reports::summarise(&per_image_table, &order)?;
    reports::add_intervals(&mut summary, &reports::compare::mean_intervals(&per_image_table));
    summary.write(&run_dir.join("summary"))?;
    let recipes: Vec<reports::RecipeRow> = spec
        .recipes()
        .iter()
        .map(|r| reports::RecipeRow {
            name: r.name.to_string(),
            method: r.method.name().to_string(),
            changes: crate::pipeline::plan::recipe_changes(spec, r),
            paper: r.paper.map(|p| (p.psnr, p.ssim, p.source.clone())),
        })
        .collect();
    reports::recipes_table(&recipes).write(&run_dir.join("recipes"))?;
    let mut md = reports::summary_markdown(&summary);
    let mut comparisons_table = None;
    if let Some(baseline) = spec.baseline() {
        let comparisons = reports::compare::compare(&per_image_table, baseline, &order);
        let table = reports::compare::comparisons_table(&comparisons);
        table.write(&run_dir.join("comparisons"))?;
        comparisons_table = Some(table);
        if !comparisons.is_empty() {
            md.push_str(&format!(
                "\nPaired differences against {baseline} on the same images (two-level bootstrap over seeds and images, {} resamples):\n\n",
                reports::compare::RESAMPLES
            ));
            md.push_str(&reports::compare::comparisons_markdown(&comparisons));
        }
    }
    let bound = spec.recipes().into_iter().find(|r| r.method == crate::pipeline::spec::Method::TargetSupervised);
    if let (Some(baseline), Some(bound)) = (spec.baseline(), bound)
        && let Some(h) = reports::headroom_markdown(&summary, &spec.tests[0].name, baseline, bound.name, &order)
    {
        md.push_str(&h);
    }
    if spec.methods.iter().any(|m| spec.variants.contains_key(m)) {
        // The ablation layout: one row per recipe, its changes, our scores, the paper's.
        md.push_str("\nRecipes (changes relative to `train`; the paper's numbers are on its own data):\n\n");
        md.push_str(&reports::recipes_markdown(&summary, &recipes));
    }
    // The paper's layout for this run: one column per target test set, the paper's number for
    // each recipe's algorithm beside it.
    let mut paper_layout = None;
    let target_tests: Vec<String> =
        spec.tests.iter().filter(|t| t.dataset == spec.target.dataset).map(|t| t.name.clone()).collect();
    if !target_tests.is_empty() {
        let this = reports::benchmark::RunSummary {
            run_id: run_dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default(),
            pipeline: spec.name.clone(),
            task: spec.task,
            target_tests,
            summary: summary.clone(),
            recipes: spec.benchmark_recipes(),
        };
        let layout = reports::benchmark::benchmark_markdown(&reports::benchmark::benchmark_table(&[this]));
        md.push_str("\nIn the paper's layout:\n\n");
        md.push_str(&layout);
        paper_layout = Some(layout);
    }
    if let Some(d) = diagnostics::read(run_dir)? {
        md.push_str(&diagnostics::markdown(&d));
    }
    let gate_results = crate::pipeline::gates::check(&spec.gates, &summary, &spec.tests[0].name);
    if !gate_results.is_empty() {
        md.push_str(&crate::pipeline::gates::markdown(&gate_results));
        write_atomic(
            &run_dir.join("gates.json"),
            serde_json::to_string_pretty(&gate_results).expect("json").as_bytes(),
        )?;
    }
    write_atomic(&run_dir.join("summary.md"), md.as_bytes())?;
    Ok(Summaries {
        markdown: md,
        gates: gate_results,
        summary,
        per_image: per_image_table,
        paper_layout,
        comparisons: comparisons_table,
    })
}

/// `report.html`: the run on one self-contained page, from what the run directory holds
/// (summaries as just written, curves, crops, provenance), each file checked as it is read.
pub(crate) fn write_report_html(run_dir: &Path, spec: &PipelineSpec, s: &Summaries) -> Result<()> {
    let prov: Option<serde_json::Value> =
        std::fs::read(run_dir.join("provenance.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let fact = |k: &str| {
        prov.as_ref().and_then(|p| p.get(k)).map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        })
    };
    let run_id = run_dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let failed = s.gates.iter().filter(|g| !g.passed).count();
    let status = match (prov.is_some(), failed) {
        (false, _) => "unfinished (no provenance.json)".to_string(),
        (true, 0) => format!("finished, exit 0{}", if s.gates.is_empty() { "" } else { "; every gate passed" }),
        (true, n) => format!("finished, exit {} ({n} gate(s) failed)", ExitCode::GateFailed as i32),
    };
    let mut header: Vec<(String, String)> =
        vec![("pipeline".into(), spec.name.clone()), ("run".into(), run_id.clone()), ("status".into(), status)];
    let commit = fact("git_commit").map(|c| {
        let dirty = prov.as_ref().and_then(|p| p.get("git_dirty")).and_then(|d| d.as_bool()) == Some(true);
        if dirty { format!("{c} (uncommitted changes)") } else { c }
    });
    for (label, value) in [
        ("profile", fact("profile")),
        ("task", Some(format!("{:?}", spec.task).to_lowercase())),
        ("started (UTC)", fact("started_utc")),
        ("wall time", fact("wall_s").and_then(|w| w.parse::<f64>().ok()).map(|w| format!("{w:.1} s"))),
        ("commit", commit),
        ("back-end", fact("backend")),
        ("device", fact("device")),
        ("threads", fact("threads")),
        ("resumed", fact("resumed")),
        ("version", fact("version")),
    ] {
        if let Some(v) = value.filter(|v| !v.is_empty() && v != "null") {
            header.push((label.into(), v));
        }
    }
    let read_table = |name: &str| Table::read_checked(&run_dir.join(format!("{name}.parquet"))).ok();
    let curves = read_table("curves");
    let figures = run_dir.join("figures");
    let (mut crops, mut crop_pngs) = (Vec::new(), Vec::new());
    for t in &spec.tests {
        match reports::figures::read_crop_cells(&figures.join("crops").join(&t.name), &t.name) {
            Some(grid) => crops.push(grid),
            None => {
                // An older run: its grid PNG, if it decodes.
                let png = figures.join(format!("{}-crops.png", t.name));
                if Image::load(&png).is_ok()
                    && let Ok(bytes) = std::fs::read(&png)
                {
                    crop_pngs.push((t.name.clone(), bytes));
                }
            }
        }
    }
    let mut translations = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&figures) {
        let mut files: Vec<std::path::PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for f in files {
            let name = f.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            if let Some(label) = name.strip_prefix("translations-").and_then(|n| n.strip_suffix(".png"))
                && Image::load(&f).is_ok()
                && let Ok(bytes) = std::fs::read(&f)
            {
                translations.push((label.to_string(), bytes));
            }
        }
    }
    let page = reports::html::RunPage {
        title: format!("{} · {run_id}", spec.name),
        header,
        gates: s.gates.iter().map(|g| (g.gate.clone(), g.passed, g.detail.clone())).collect(),
        summary: &s.summary,
        comparisons: s.comparisons.as_ref(),
        baseline: spec.baseline().map(str::to_string),
        paper_layout: s.paper_layout.clone(),
        curves: curves.as_ref(),
        per_image: &s.per_image,
        crops,
        crop_pngs,
        translations,
        provenance: prov.as_ref().map(|p| serde_json::to_string_pretty(p).expect("json")),
    };
    write_atomic(&run_dir.join("report.html"), reports::html::run_page(&page).as_bytes())?;
    Ok(())
}

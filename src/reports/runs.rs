//! `run-pipeline runs`: the run directories under a reports folder, newest last, with their
//! status and headline scores.

use std::path::{Path, PathBuf};

use super::{Column, Table};
use crate::lock;

/// What a run directory says about itself.
#[derive(Clone, Debug, PartialEq)]
pub struct RunInfo {
    pub dir: PathBuf,
    pub id: String,
    pub pipeline: String,
    pub profile: String,
    /// `finished`, `gate failed`, `running` (a live lock holder) or `unfinished`.
    pub status: String,
    /// "test set: method PSNR, ..." for the first test set.
    pub headline: String,
}

/// Every run directory (one holding `resolved.json`) under `root/<pipeline>/`.
pub fn list(root: &Path) -> Vec<RunInfo> {
    let mut out = Vec::new();
    let Ok(pipelines) = std::fs::read_dir(root) else { return out };
    for p in pipelines.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()) {
        let Ok(runs) = std::fs::read_dir(&p) else { continue };
        for dir in runs.filter_map(|e| e.ok()).map(|e| e.path()) {
            if dir.join("resolved.json").is_file() {
                out.push(info(&dir));
            }
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id).then(a.pipeline.cmp(&b.pipeline)));
    out
}

fn info(dir: &Path) -> RunInfo {
    let id = dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let resolved: serde_json::Value = std::fs::read_to_string(dir.join("resolved.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let provenance: Option<serde_json::Value> =
        std::fs::read_to_string(dir.join("provenance.json")).ok().and_then(|t| serde_json::from_str(&t).ok());
    let pipeline = resolved["name"].as_str().unwrap_or("?").to_string();
    // Ids are <utc>-<profile>-<hash>; provenance has it too once finished.
    let profile = provenance
        .as_ref()
        .and_then(|p| p["profile"].as_str().map(str::to_string))
        .or_else(|| {
            let parts: Vec<&str> = id.splitn(2, '-').collect();
            parts.get(1).and_then(|rest| rest.rsplit_once('-')).map(|(p, _)| p.to_string())
        })
        .unwrap_or_default();
    let gates_failed = std::fs::read_to_string(dir.join("gates.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.as_array().map(|a| a.iter().any(|g| g["passed"] == false)))
        .unwrap_or(false);
    let status = if lock::holder(dir).is_some_and(|h| h.alive()) {
        "running"
    } else if provenance.is_none() {
        "unfinished"
    } else if gates_failed {
        "gate failed"
    } else {
        "finished"
    };
    let first_test = resolved["tests"][0]["name"].as_str().unwrap_or_default();
    RunInfo {
        dir: dir.to_path_buf(),
        id,
        pipeline,
        profile,
        status: status.into(),
        headline: headline(dir, first_test),
    }
}

/// Mean PSNR per method on test set `first` (the pipeline's first, its target domain's).
fn headline(dir: &Path, first: &str) -> String {
    let Ok(t) = Table::read_checked(&dir.join("summary.parquet")) else {
        return String::new();
    };
    let (Some(Column::Str(test)), Some(Column::Str(method)), Some(Column::F64(psnr))) =
        (t.get("test_set"), t.get("method"), t.get("psnr_mean"))
    else {
        return String::new();
    };
    let cells: Vec<String> = (0..t.rows())
        .filter(|&i| test[i].as_deref() == Some(first))
        .map(|i| format!("{} {:.2}", method[i].clone().unwrap_or_default(), psnr[i].unwrap_or(f64::NAN)))
        .collect();
    if cells.is_empty() { String::new() } else { format!("{first}: {}", cells.join(", ")) }
}

/// The listing as aligned text.
pub fn render(runs: &[RunInfo]) -> String {
    let header = ["run", "pipeline", "profile", "status", "PSNR (first test set)"].map(String::from);
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| vec![r.id.clone(), r.pipeline.clone(), r.profile.clone(), r.status.clone(), r.headline.clone()])
        .collect();
    super::markdown_table(&header, &rows)
}

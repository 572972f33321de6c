//! The `prepare` stage: which run directory this invocation writes (a new one, or the
//! unfinished run of the same configuration), its lock, and which stages `--force`/`--from`
//! re-run.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tracing::info;

use super::{Resolved, Resume, RunOptions};
use crate::error::{Failure, Result};
use crate::pipeline::plan::Stage;
use crate::pipeline::spec::PipelineSpec;
use crate::util::{sha256_hex, utc_stamp};

/// Whether stage `name` (of recipe `recipe`) matches a `--force`/`--from` pattern.
fn matches_stage(pattern: &str, name: &str, recipe: &str) -> bool {
    pattern == name || pattern == recipe || name.starts_with(&format!("{pattern}:"))
}

/// The training stages `--force`/`--from` re-run, in plan order.
pub(crate) fn forced_stages(spec: &PipelineSpec, force: &[String], from: Option<&str>) -> Result<Vec<String>> {
    let stages = crate::pipeline::plan::plan(spec);
    let name_of = |st: &Stage| match st {
        Stage::Train { recipe, .. } | Stage::Evaluate { recipe, .. } => recipe.clone(),
        _ => String::new(),
    };
    for p in force.iter().map(String::as_str).chain(from) {
        if !stages.iter().any(|st| matches_stage(p, &st.to_string(), &name_of(st))) {
            let names: Vec<String> = stages.iter().map(|s| s.to_string()).collect();
            return Err(Failure::config(format!("--force/--from {p}: no such stage (stages: {})", names.join(", "))));
        }
    }
    let start = from.and_then(|p| stages.iter().position(|st| matches_stage(p, &st.to_string(), &name_of(st))));
    Ok(stages
        .iter()
        .enumerate()
        .filter(|(i, st)| {
            matches!(st, Stage::Train { .. })
                && (start.is_some_and(|s0| *i >= s0)
                    || force.iter().any(|p| matches_stage(p, &st.to_string(), &name_of(st))))
        })
        .map(|(_, st)| st.to_string())
        .collect())
}

/// A run directory of this pipeline and configuration, created or found, and locked.
pub(super) struct OpenRun {
    pub(super) run_id: String,
    pub(super) run_dir: PathBuf,
    /// An unfinished run is being continued.
    pub(super) resumed: bool,
    /// Held until the run returns, however it returns: one writer per run directory.
    _lock: crate::lock::RunLock,
}

impl OpenRun {
    /// A cluster job's working folder (see `run::job`), locked like a run directory.
    pub(super) fn job(run_id: String, run_dir: PathBuf) -> Result<OpenRun> {
        std::fs::create_dir_all(run_dir.join("checkpoints"))
            .map_err(|e| Failure::internal(format!("{}: cannot create the job folder: {e}", run_dir.display())))?;
        let resumed = run_dir.join("checkpoints").read_dir().is_ok_and(|mut d| d.next().is_some());
        let lock = crate::lock::RunLock::acquire(&run_dir)?;
        Ok(OpenRun { run_id, run_dir, resumed, _lock: lock })
    }
}

/// The `prepare` stage: continue the unfinished run of this configuration (unless `--fresh`;
/// `--resume` requires one) or name a new one, create its directory and take its lock.
pub(super) fn open_run(res: &Resolved, opts: &RunOptions, resolved_json: &str, started: SystemTime) -> Result<OpenRun> {
    let spec = &res.spec;
    let pipeline_dir = PathBuf::from(&spec.report.dir).join(&spec.name);
    let unfinished = match opts.resume {
        Resume::Fresh => None,
        _ => find_unfinished(&pipeline_dir, resolved_json)?,
    };
    if opts.resume == Resume::Require && unfinished.is_none() {
        return Err(Failure::config(format!(
            "--resume: no unfinished run of this pipeline and configuration under {}",
            pipeline_dir.display()
        )));
    }
    let resumed = unfinished.is_some();
    let (run_id, run_dir) = match unfinished {
        Some(dir) => {
            let id = dir.file_name().expect("run dir name").to_string_lossy().to_string();
            info!(run = %id, "continuing the unfinished run (checkpoints kept; --fresh starts over)");
            (id, dir)
        }
        None => new_run_dir(&pipeline_dir, utc_stamp(started), &res.profile, resolved_json)?,
    };
    std::fs::create_dir_all(run_dir.join("checkpoints"))
        .map_err(|e| Failure::internal(format!("{}: cannot create run directory: {e}", run_dir.display())))?;
    let lock = crate::lock::RunLock::acquire(&run_dir)?;
    Ok(OpenRun { run_id, run_dir, resumed, _lock: lock })
}

/// Create the directory of a new run, `<utc>-<profile>-<config hash>`. Creation is exclusive:
/// a second run of the same configuration started within the same second (a fast, fully
/// cached rerun; a concurrent invocation) gets `<utc>.2-…` instead of writing into the first
/// run's directory. The suffix sorts after the plain stamp, so "newest last" still holds.
fn new_run_dir(pipeline_dir: &Path, stamp: String, profile: &str, resolved_json: &str) -> Result<(String, PathBuf)> {
    let hash = &sha256_hex(resolved_json.as_bytes())[..6];
    std::fs::create_dir_all(pipeline_dir)
        .map_err(|e| Failure::internal(format!("{}: cannot create directory: {e}", pipeline_dir.display())))?;
    for n in 1..=999 {
        let id = match n {
            1 => format!("{stamp}-{profile}-{hash}"),
            _ => format!("{stamp}.{n}-{profile}-{hash}"),
        };
        let dir = pipeline_dir.join(&id);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok((id, dir)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Failure::internal(format!("{}: cannot create run directory: {e}", dir.display()))),
        }
    }
    Err(Failure::internal(format!("{}: 999 runs started in one second", pipeline_dir.display())))
}

/// The newest run directory of this pipeline whose resolved configuration is `resolved_json`
/// and that has not finished (no `provenance.json`, which is written last).
fn find_unfinished(pipeline_dir: &Path, resolved_json: &str) -> Result<Option<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(pipeline_dir) else { return Ok(None) };
    let mut dirs: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    for dir in dirs.into_iter().rev() {
        if dir.join("provenance.json").exists() {
            continue;
        }
        match std::fs::read_to_string(dir.join("resolved.json")) {
            Ok(text) if text == resolved_json => return Ok(Some(dir)),
            _ => continue,
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_started_in_the_same_second_get_their_own_directories() {
        let root = std::env::temp_dir().join(format!("rp-open-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let stamp = || "20261202T061140Z".to_string();
        let (a, da) = new_run_dir(&root, stamp(), "smoke", "{}").unwrap();
        let (b, db) = new_run_dir(&root, stamp(), "smoke", "{}").unwrap();
        let (c, _) = new_run_dir(&root, stamp(), "smoke", "{}").unwrap();
        assert_ne!(da, db);
        assert!(da.is_dir() && db.is_dir());
        assert!(a.starts_with("20261202T061140Z-smoke-") && b.starts_with("20261202T061140Z.2-smoke-"), "{a} {b}");
        // Newest last when sorted, as `find_unfinished` and `runs` read them; the hash stays last.
        let mut ids = vec![c.clone(), a.clone(), b.clone()];
        ids.sort();
        assert_eq!(ids, vec![a.clone(), b, c]);
        assert_eq!(a.rsplit_once('-').unwrap().1, &sha256_hex(b"{}")[..6]);
        std::fs::remove_dir_all(&root).unwrap();
    }
}

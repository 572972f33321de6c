//! `run-pipeline cache verify` and `cache gc`: check and prune what runs keep under a reports
//! folder — cached training stages and scores (`.cache/stages/`), data shards
//! (`.cache/shards/`), patch stores (`.cache/patches/`), and each run's weights and
//! checkpoints — against their content hashes.
//! Run directories themselves are never removed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Failure, Result};

/// One thing a reports folder keeps, and what is wrong with it.
#[derive(Debug)]
pub struct Entry {
    pub path: PathBuf,
    /// `stage`, `scores`, `premise`, `shard`, `patches`, `weights` or `checkpoint`.
    pub kind: &'static str,
    pub bytes: u64,
    pub age: Duration,
    /// `None`: verifies. Else why not.
    pub problem: Option<String>,
    /// Part of the shared cache (rebuilt on demand), not of a run.
    pub cache: bool,
}

fn size_of(path: &Path) -> u64 {
    if path.is_file() {
        return std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    }
    walkdir::WalkDir::new(path)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok().map(|m| m.len()))
        .sum()
}

/// Time since last use: a sealed directory's manifest is touched when it is reused.
fn age_of(path: &Path) -> Duration {
    // A patch store's index is touched when the store is used.
    let (manifest, index) = (path.join(crate::integrity::MANIFEST), path.join("index.json"));
    let path = if manifest.is_file() {
        manifest.as_path()
    } else if index.is_file() {
        index.as_path()
    } else {
        path
    };
    std::fs::metadata(path).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).unwrap_or_default()
}

fn children(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
        Err(_) => vec![],
    };
    v.sort();
    v
}

fn hidden(p: &Path) -> bool {
    p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

/// Every cache entry, run weight file and checkpoint under `reports`, verified.
pub fn scan(reports: &Path) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut push = |path: PathBuf, kind: &'static str, cache: bool, problem: Option<String>| {
        out.push(Entry { bytes: size_of(&path), age: age_of(&path), path, kind, problem, cache });
    };
    let cache = reports.join(".cache");
    for p in children(&cache.join("stages")).into_iter().filter(|p| p.is_dir() && !hidden(p)) {
        let kind =
            if p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("eval-")) { "scores" } else { "stage" };
        let problem = crate::integrity::verify_dir(&p).err();
        push(p, kind, true, problem);
    }
    for p in children(&cache.join("stages")).into_iter().filter(|p| p.extension().is_some_and(|e| e == "json")) {
        let problem = crate::integrity::verify_file(&p).err();
        push(p, "premise", true, problem);
    }
    for p in children(&cache.join("shards")).into_iter().filter(|p| p.extension().is_some_and(|e| e == "shard")) {
        let problem = crate::datasets::shard::verify_shard(&p).err();
        push(p, "shard", true, problem);
    }
    for p in children(&cache.join("patches")).into_iter().filter(|p| p.is_dir() && !hidden(p)) {
        let problem = crate::datasets::patches::verify_store(&p).err();
        push(p, "patches", true, problem);
    }
    for pipeline in children(reports).into_iter().filter(|p| p.is_dir() && !hidden(p)) {
        for run in children(&pipeline).into_iter().filter(|p| p.join("resolved.json").is_file()) {
            let ckpts = run.join("checkpoints");
            for p in children(&ckpts) {
                if p.extension().is_some_and(|e| e == "bpk") {
                    let problem = crate::integrity::verify_file(&p).err();
                    push(p, "weights", false, problem);
                } else if p.is_dir() && !hidden(&p) {
                    for c in children(&p).into_iter().filter(|c| c.is_dir() && !hidden(c)) {
                        let problem = crate::integrity::verify_dir(&c).err();
                        push(c, "checkpoint", false, problem);
                    }
                }
            }
        }
    }
    out
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

/// Remove an entry (and a sealed file's `.sha256` sidecar).
fn remove(p: &Path) -> std::io::Result<()> {
    if p.is_dir() {
        return std::fs::remove_dir_all(p);
    }
    let side = p.with_file_name(format!("{}.sha256", p.file_name().unwrap_or_default().to_string_lossy()));
    let _ = std::fs::remove_file(side);
    std::fs::remove_file(p)
}

/// `reports` must be a folder: a mistyped `--dir` is an error, not an empty success.
fn reports_folder(reports: &Path) -> Result<()> {
    if reports.is_dir() {
        Ok(())
    } else {
        Err(Failure::config(format!("--dir {}: no such reports folder", reports.display())))
    }
}

/// `cache verify`: every entry checked; the bad ones listed (and removed with `fix`, to be
/// recomputed by the next run). Exit 3 when bad entries remain.
pub fn verify(reports: &Path, fix: bool) -> Result<String> {
    reports_folder(reports)?;
    let entries = scan(reports);
    let bad: Vec<&Entry> = entries.iter().filter(|e| e.problem.is_some()).collect();
    let mut out = format!(
        "{}: {} entries ({}), {} failed verification\n",
        reports.display(),
        entries.len(),
        mib(entries.iter().map(|e| e.bytes).sum()),
        bad.len()
    );
    for e in &bad {
        out.push_str(&format!("  {}: {}\n", e.kind, e.problem.as_deref().unwrap_or("")));
    }
    let mut left = Vec::new();
    for e in bad {
        if fix && e.cache {
            remove(&e.path).map_err(|err| Failure::internal(format!("{}: cannot remove: {err}", e.path.display())))?;
            out.push_str(&format!("  removed {} (the next run recomputes it)\n", e.path.display()));
        } else {
            left.push(e);
        }
    }
    if left.is_empty() {
        return Ok(out);
    }
    print!("{out}");
    let runs = left.iter().filter(|e| !e.cache).count();
    Err(Failure::data(format!(
        "{} entr{} failed verification under {}{}{}",
        left.len(),
        if left.len() == 1 { "y" } else { "ies" },
        reports.display(),
        if left.len() > runs {
            "; `run-pipeline cache verify --fix` removes the cache entries (recomputed by the next run)"
        } else {
            ""
        },
        if runs > 0 {
            "; a run's own weights and checkpoints are never removed: re-run it (--force RECIPE) to rewrite them"
        } else {
            ""
        }
    )))
}

/// `cache gc`: remove abandoned temporary files, cache entries that fail verification and, with
/// `older_than`, cache entries not written for that long. Runs and their weights stay.
pub fn gc(reports: &Path, older_than: Option<Duration>, dry_run: bool) -> Result<String> {
    reports_folder(reports)?;
    let mut out = String::new();
    let mut freed = 0u64;
    let mut dirs = vec![reports.to_path_buf(), reports.join(".cache/stages"), reports.join(".cache/shards")];
    dirs.extend(children(&reports.join(".cache/patches")).into_iter().filter(|p| p.is_dir()));
    for pipeline in children(reports).into_iter().filter(|p| p.is_dir() && !hidden(p)) {
        dirs.push(pipeline.clone());
        for run in children(&pipeline).into_iter().filter(|p| p.is_dir() && !hidden(p)) {
            dirs.extend(super::run::temp_folders(reports, &run));
        }
    }
    dirs.sort();
    dirs.dedup();
    // What cannot be removed (a read-only tree) is listed, and the command fails (exit 1).
    let mut failed = Vec::new();
    for d in &dirs {
        for p in crate::util::abandoned_temp(d) {
            if dry_run {
                out.push_str(&format!("  would remove temporary {}\n", p.display()));
            } else {
                match crate::util::remove_path(&p) {
                    Ok(()) => out.push_str(&format!("  removed temporary {}\n", p.display())),
                    Err(err) => failed.push(format!("{}: {err}", p.display())),
                }
            }
        }
    }
    for e in scan(reports).into_iter().filter(|e| e.cache) {
        let why = match (&e.problem, older_than) {
            (Some(p), _) => format!("fails verification: {p}"),
            (None, Some(limit)) if e.age > limit => format!("unused for {:.1} days", e.age.as_secs_f64() / 86_400.0),
            _ => continue,
        };
        if !dry_run && let Err(err) = remove(&e.path) {
            failed.push(format!("{}: {err}", e.path.display()));
            continue;
        }
        freed += e.bytes;
        out.push_str(&format!(
            "  {} {} {} ({}): {why}\n",
            if dry_run { "would remove" } else { "removed" },
            e.kind,
            e.path.display(),
            mib(e.bytes)
        ));
    }
    out.push_str(&format!("{} {}\n", if dry_run { "would free" } else { "freed" }, mib(freed)));
    if !failed.is_empty() {
        print!("{out}");
        return Err(Failure::internal(format!(
            "{} item(s) could not be removed (read-only?):\n  {}",
            failed.len(),
            failed.join("\n  ")
        )));
    }
    Ok(out)
}

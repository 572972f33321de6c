//! Where a command may write: the rule that nothing a command writes replaces a file it did not
//! create. A folder a command writes into keeps a list of the files it wrote there, with their
//! hashes (`.run-pipeline-written.json`); a later command may replace those (unchanged since)
//! but no other file unless the user passes `--force`. Never written to: anything that is not a
//! regular file or a new path (devices, FIFOs, folders, links), a run's checkpoints, the cache.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Failure, Result};

/// The list of files a folder's writers created.
pub const WRITTEN: &str = ".run-pipeline-written.json";

/// `path` made absolute with links resolved, whether or not it exists yet: its nearest existing
/// ancestor canonicalised, the rest appended.
pub fn resolve(path: &Path) -> PathBuf {
    let mut base = path.to_path_buf();
    let mut rest = Vec::new();
    while !base.exists() {
        match (base.file_name().map(|n| n.to_os_string()), base.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                base = if parent.as_os_str().is_empty() { PathBuf::from(".") } else { parent.to_path_buf() };
            }
            _ => break,
        }
    }
    let mut full = base.canonicalize().unwrap_or(base);
    for n in rest.into_iter().rev() {
        full.push(n);
    }
    full
}

/// Why `path` may not be written at all (whatever `--force` says), if it may not: a location
/// that belongs to a run or the cache.
fn protected(path: &Path) -> Option<String> {
    let full = resolve(path);
    for dir in full.ancestors().skip(1) {
        let name = dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let parent = dir.parent();
        if name == "checkpoints" && parent.is_some_and(|p| p.join("resolved.json").is_file()) {
            return Some(format!("{} is inside a run's checkpoints ({})", path.display(), dir.display()));
        }
        if name == ".cache" && ["stages", "shards", "patches", "scores"].iter().any(|s| dir.join(s).is_dir()) {
            return Some(format!("{} is inside the cache ({})", path.display(), dir.display()));
        }
    }
    None
}

/// What kind of thing exists at `path` (`None`: nothing), for messages.
fn existing_kind(path: &Path) -> Option<&'static str> {
    let m = std::fs::symlink_metadata(path).ok()?;
    let t = m.file_type();
    Some(if t.is_file() {
        "file"
    } else if t.is_dir() {
        "folder"
    } else if t.is_symlink() {
        "symbolic link"
    } else {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            "FIFO"
        } else if t.is_char_device() || t.is_block_device() {
            "device"
        } else if t.is_socket() {
            "socket"
        } else {
            "special file"
        }
    })
}

/// `path` may be written as a new file: nothing there, or (with `force`) a regular file; never
/// a protected location. The error (exit 2) names the path and what is there.
pub fn check_new_file(path: &Path, force: bool) -> Result<()> {
    if let Some(why) = protected(path) {
        return Err(Failure::config(format!("{why}; write somewhere else (nothing there is replaced)")));
    }
    match existing_kind(path) {
        None => Ok(()),
        Some("file") if force => Ok(()),
        Some("file") => Err(Failure::config(format!(
            "{}: a file is already there; choose a new path or pass --force to replace it",
            path.display()
        ))),
        Some(kind) => {
            Err(Failure::config(format!("{}: a {kind} is there, not a file; choose a new file path", path.display())))
        }
    }
}

/// A folder a command writes files into.
#[derive(Debug)]
pub struct OutputDir {
    dir: PathBuf,
    force: bool,
    /// What the folder's writers created there (relative path → SHA-256), as read at open.
    written: BTreeMap<String, String>,
    /// Files written since the list was last saved (it is saved every 64 and at the end).
    unsaved: usize,
}

impl OutputDir {
    /// `dir` as an output folder: a folder or a new path, never a protected location. Not
    /// created until the first write.
    pub fn open(dir: &Path, force: bool) -> Result<OutputDir> {
        if let Some(why) = protected(&dir.join("x")) {
            return Err(Failure::config(format!("{why}; write somewhere else (nothing there is replaced)")));
        }
        match existing_kind(dir) {
            None | Some("folder") => {}
            Some("symbolic link") if dir.is_dir() => {}
            Some(kind) => {
                return Err(Failure::config(format!(
                    "{}: a {kind} is there; the output must be a folder (or a new path)",
                    dir.display()
                )));
            }
        }
        let written = std::fs::read(dir.join(WRITTEN))
            .ok()
            .and_then(|b| serde_json::from_slice::<BTreeMap<String, String>>(&b).ok())
            .unwrap_or_default();
        Ok(OutputDir { dir: dir.to_path_buf(), force, written, unsaved: 0 })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// `rel` may be written: a new file, one this folder's writers created and nobody changed
    /// since, or (with `--force`) any regular file. The error names the file (exit 2).
    pub fn check(&self, rel: &Path) -> Result<()> {
        let path = self.dir.join(rel);
        match existing_kind(&path) {
            None => Ok(()),
            Some("file") => {
                let key = rel.to_string_lossy().to_string();
                let ours = self
                    .written
                    .get(&key)
                    .is_some_and(|h| std::fs::read(&path).is_ok_and(|b| crate::util::sha256_hex(&b) == *h));
                if ours || self.force {
                    Ok(())
                } else {
                    Err(Failure::config(format!(
                        "{}: a file this tool did not write (or that changed since) is already there; \
                         choose another output folder or pass --force to replace it",
                        path.display()
                    )))
                }
            }
            Some(kind) => Err(Failure::config(format!(
                "{}: a {kind} is there, not a file; choose another output folder",
                path.display()
            ))),
        }
    }

    /// Write `bytes` to `rel` (checked first; atomically: a temporary file renamed into place).
    pub fn write(&mut self, rel: &Path, bytes: &[u8]) -> Result<()> {
        self.check(rel)?;
        let path = self.dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Failure::internal(format!("{}: {e}", parent.display())))?;
        }
        crate::util::write_atomic(&path, bytes).map_err(|e| Failure::internal(format!("{e:#}")))?;
        self.written.insert(rel.to_string_lossy().to_string(), crate::util::sha256_hex(bytes));
        self.saved_now_and_then()
    }

    /// Record a file written by another writer (e.g. a table) as this folder's.
    pub fn record(&mut self, rel: &Path) -> Result<()> {
        let path = self.dir.join(rel);
        let bytes = std::fs::read(&path).map_err(|e| Failure::internal(format!("{}: {e}", path.display())))?;
        self.written.insert(rel.to_string_lossy().to_string(), crate::util::sha256_hex(&bytes));
        self.saved_now_and_then()
    }

    /// Save the list of written files (also done on drop, best effort).
    pub fn finish(mut self) -> Result<()> {
        self.unsaved = 0;
        self.save()
    }

    fn saved_now_and_then(&mut self) -> Result<()> {
        self.unsaved += 1;
        if self.unsaved >= 64 {
            self.unsaved = 0;
            self.save()?;
        }
        Ok(())
    }

    fn save(&self) -> Result<()> {
        let path = self.dir.join(WRITTEN);
        let json = serde_json::to_vec_pretty(&self.written).expect("a map of strings serialises");
        crate::util::write_atomic(&path, &json).map_err(|e| Failure::internal(format!("{e:#}")))
    }
}

impl Drop for OutputDir {
    fn drop(&mut self) {
        if self.unsaved > 0 {
            let _ = self.save();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rp-output-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_file_it_did_not_write_is_never_replaced_without_force() {
        let d = tmp("replace");
        let mut out = OutputDir::open(&d, false).unwrap();
        out.write(Path::new("a.png"), b"ours").unwrap();
        out.finish().unwrap();
        // Ours, unchanged: a later command replaces it (the list is also saved on drop).
        let mut again = OutputDir::open(&d, false).unwrap();
        again.write(Path::new("a.png"), b"ours, again").unwrap();
        drop(again);
        // Someone else's, or ours changed since: refused, named, kept.
        std::fs::write(d.join("b.png"), b"theirs").unwrap();
        std::fs::write(d.join("a.png"), b"edited").unwrap();
        let mut later = OutputDir::open(&d, false).unwrap();
        for name in ["a.png", "b.png"] {
            let e = later.write(Path::new(name), b"x").unwrap_err();
            assert_eq!(e.code, crate::error::ExitCode::Config);
            assert!(e.message.contains(name) && e.message.contains("--force"), "{}", e.message);
        }
        assert_eq!(std::fs::read(d.join("b.png")).unwrap(), b"theirs");
        assert_eq!(std::fs::read(d.join("a.png")).unwrap(), b"edited");
        OutputDir::open(&d, true).unwrap().write(Path::new("b.png"), b"forced").unwrap();
        assert_eq!(std::fs::read(d.join("b.png")).unwrap(), b"forced");
        // Not a file: refused even with --force.
        std::fs::create_dir_all(d.join("c.png")).unwrap();
        assert!(OutputDir::open(&d, true).unwrap().write(Path::new("c.png"), b"x").is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn devices_folders_checkpoints_and_the_cache_are_refused() {
        let d = tmp("refuse");
        assert!(check_new_file(&d.join("new.safetensors"), false).is_ok());
        std::fs::write(d.join("old.safetensors"), b"x").unwrap();
        assert!(check_new_file(&d.join("old.safetensors"), false).unwrap_err().message.contains("--force"));
        assert!(check_new_file(&d.join("old.safetensors"), true).is_ok());
        assert!(check_new_file(&d, true).unwrap_err().message.contains("folder"));
        assert!(check_new_file(Path::new("/dev/null"), true).unwrap_err().message.contains("device"));
        // A run's checkpoints and the cache, existing files or new paths alike.
        let run = d.join("reports/denoise/RUN");
        std::fs::create_dir_all(run.join("checkpoints/noise_da-seed0")).unwrap();
        std::fs::write(run.join("resolved.json"), b"{}").unwrap();
        std::fs::create_dir_all(d.join("reports/.cache/stages")).unwrap();
        for p in [run.join("checkpoints/noise_da-seed0.bpk"), run.join("checkpoints/noise_da-seed0/new/model.bpk")] {
            let e = check_new_file(&p, true).unwrap_err();
            assert!(e.message.contains("checkpoints"), "{}", e.message);
        }
        assert!(check_new_file(&d.join("reports/.cache/stages/x.bpk"), true).unwrap_err().message.contains("cache"));
        assert!(OutputDir::open(&run.join("checkpoints"), true).is_err());
        std::fs::write(d.join("file"), b"x").unwrap();
        assert!(OutputDir::open(&d.join("file"), true).unwrap_err().message.contains("must be a folder"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}

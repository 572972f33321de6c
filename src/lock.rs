//! The lock of a run directory: one process writes a run at a time.
//!
//! `run.lock` holds the holder's pid, host, start time and a heartbeat refreshed every few
//! seconds. A second invocation that would write the same run (re-running the same command
//! while the first is still going) exits 75 naming the holder. A lock whose holder is gone (no
//! heartbeat for [`STALE_AFTER_S`], whatever its pid says; or a dead pid on this host) is taken
//! over with a warning, so a crashed or killed run never blocks its own continuation.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::error::{ExitCode, Failure, Result};
use crate::util::write_atomic;

pub const LOCK_FILE: &str = "run.lock";
/// Seconds between heartbeats.
const HEARTBEAT_S: u64 = 5;
/// A lock from another host without a heartbeat for this long is stale.
pub const STALE_AFTER_S: u64 = 60;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    pub started_unix: u64,
    pub heartbeat_unix: u64,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// This machine's name, as lock holders record it.
pub fn hostname() -> String {
    crate::util::hostname().to_string()
}

impl Holder {
    /// Whether the holder still runs. The heartbeat is the truth: none for [`STALE_AFTER_S`]
    /// means gone, whatever the pid says (after a container restart the pid is reused by an
    /// unrelated process). A fresh heartbeat from this host is double-checked against /proc,
    /// which tells a killed holder at once.
    pub(crate) fn alive(&self) -> bool {
        if now().saturating_sub(self.heartbeat_unix) >= STALE_AFTER_S {
            return false;
        }
        // A heartbeat more than a minute in the future is not believed (a clock that far off,
        // or a forged file): without this rule it would hold the lock until the clock caught up.
        if self.heartbeat_unix.saturating_sub(now()) >= STALE_AFTER_S {
            return false;
        }
        if self.host == hostname() && Path::new("/proc/self").exists() {
            return Path::new(&format!("/proc/{}", self.pid)).exists();
        }
        true
    }
}

/// The holder of `dir`'s lock, if there is a readable one.
pub fn holder(dir: &Path) -> Option<Holder> {
    let text = std::fs::read_to_string(dir.join(LOCK_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// A held lock; released (file removed) on drop, including when the run fails or is
/// interrupted.
pub struct RunLock {
    path: PathBuf,
    me: Holder,
    stop: Arc<AtomicBool>,
    beat: Option<std::thread::JoinHandle<()>>,
}

impl RunLock {
    /// Take `dir`'s lock, taking over a stale one; a live holder is exit 75.
    pub(crate) fn acquire(dir: &Path) -> Result<RunLock> {
        let path = dir.join(LOCK_FILE);
        let t = now();
        let me = Holder { pid: std::process::id(), host: hostname(), started_unix: t, heartbeat_unix: t };
        if let Ok(m) = std::fs::symlink_metadata(&path)
            && !m.file_type().is_file()
        {
            return Err(Failure::config(format!(
                "{}: not a lock file (a folder or another kind of file is there, not written by this tool); \
                 remove it to run here",
                path.display()
            )));
        }
        for _ in 0..3 {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    use std::io::Write;
                    f.write_all(serde_json::to_string(&me).expect("json").as_bytes())?;
                    f.sync_all()?;
                    return Ok(RunLock::start(path, me));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    // A lock being written right now may be empty for an instant.
                    let found = holder(dir).or_else(|| {
                        std::thread::sleep(Duration::from_millis(200));
                        holder(dir)
                    });
                    match found {
                        Some(h) if h.alive() => {
                            return Err(Failure::new(
                                ExitCode::Locked,
                                format!(
                                    "{}: locked by another run (pid {} on {}, started {} s ago, heartbeat {} s ago); \
                                     wait for it to finish, stop it, or start a separate run with --fresh",
                                    dir.display(),
                                    h.pid,
                                    h.host,
                                    now().saturating_sub(h.started_unix),
                                    now().saturating_sub(h.heartbeat_unix)
                                ),
                            ));
                        }
                        Some(h) => warn!(
                            dir = %dir.display(), pid = h.pid, host = %h.host,
                            "taking over a stale lock: its holder is gone"
                        ),
                        None => warn!(dir = %dir.display(), "taking over an unreadable lock"),
                    }
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) => return Err(Failure::internal(format!("{}: cannot create the lock: {e}", path.display()))),
            }
        }
        Err(Failure::new(ExitCode::Locked, format!("{}: could not take the lock (contended)", path.display())))
    }

    fn start(path: PathBuf, me: Holder) -> RunLock {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, p, mut beat_holder) = (stop.clone(), path.clone(), me.clone());
        let beat = std::thread::spawn(move || {
            let mut last = std::time::Instant::now();
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                if last.elapsed() >= Duration::from_secs(HEARTBEAT_S) {
                    last = std::time::Instant::now();
                    beat_holder.heartbeat_unix = now();
                    // Only while it is still ours (a takeover would have replaced it).
                    if holder(p.parent().expect("lock dir")).is_some_and(|h| h.pid == beat_holder.pid) {
                        let _ = write_atomic(&p, serde_json::to_string(&beat_holder).expect("json").as_bytes());
                    }
                }
            }
        });
        RunLock { path, me, stop, beat: Some(beat) }
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(b) = self.beat.take() {
            let _ = b.join();
        }
        if holder(self.path.parent().expect("lock dir")).is_some_and(|h| h.pid == self.me.pid && h.host == self.me.host)
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rp-lock-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_live_holder_blocks_and_release_removes_the_file() {
        let d = dir("live");
        let lock = RunLock::acquire(&d).unwrap();
        let h = holder(&d).unwrap();
        assert_eq!((h.pid, h.host.clone()), (std::process::id(), hostname()));
        assert!(h.alive());
        let err = RunLock::acquire(&d).err().expect("second acquire must fail");
        assert_eq!(err.code, ExitCode::Locked);
        assert!(err.message.contains(&format!("pid {}", std::process::id())), "{}", err.message);
        drop(lock);
        assert!(!d.join(LOCK_FILE).exists());
        let _again = RunLock::acquire(&d).unwrap();
    }

    #[test]
    fn stale_locks_are_taken_over() {
        let d = dir("stale");
        // A dead pid on this host (pids are below 2^22 on Linux).
        let dead = Holder { pid: 4_194_304 + 17, host: hostname(), started_unix: 1, heartbeat_unix: 1 };
        assert!(!dead.alive());
        std::fs::write(d.join(LOCK_FILE), serde_json::to_string(&dead).unwrap()).unwrap();
        let _l = RunLock::acquire(&d).unwrap();
        assert_eq!(holder(&d).unwrap().pid, std::process::id());
        // Another host: judged by its heartbeat.
        let far = Holder { pid: 1, host: "elsewhere".into(), started_unix: now(), heartbeat_unix: now() };
        assert!(far.alive());
        assert!(!Holder { heartbeat_unix: now() - STALE_AFTER_S - 1, ..far }.alive());
        drop(_l);
        // A live pid on this host (pid 1, or this very process) whose heartbeat is days old:
        // the pid was reused (a container restart); the lock is stale and taken over.
        let reused = Holder { pid: 1, host: hostname(), started_unix: 1, heartbeat_unix: now() - 3 * 86_400 };
        assert!(!reused.alive());
        let mine = Holder { pid: std::process::id(), heartbeat_unix: now() - 3 * 86_400, ..reused.clone() };
        assert!(!mine.alive());
        std::fs::write(d.join(LOCK_FILE), serde_json::to_string(&reused).unwrap()).unwrap();
        let _l = RunLock::acquire(&d).expect("a days-old heartbeat does not hold the lock");
        // While a fresh heartbeat from a live pid does; one far in the future does not.
        assert!(Holder { heartbeat_unix: now(), ..reused.clone() }.alive());
        assert!(!Holder { heartbeat_unix: now() + 3600, ..reused }.alive());
        // A folder where the lock goes: a clear error (exit 2), not "locked" on every retry.
        let f = dir("folder");
        std::fs::create_dir_all(f.join(LOCK_FILE)).unwrap();
        let e = RunLock::acquire(&f).err().expect("a folder is no lock");
        assert_eq!(e.code, ExitCode::Config);
        assert!(e.message.contains("not a lock file"), "{}", e.message);
    }
}

//! Small shared helpers: atomic file writes, content hashes, timestamps.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// Write `bytes` to `path` atomically: a temporary file in the same folder, fsync, rename.
/// A reader never sees a half-written file and a crash leaves the old file intact.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    let written = (|| {
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
        f.write_all(bytes).with_context(|| format!("{}: write failed", tmp.display()))?;
        f.sync_all().ok();
        drop(f);
        std::fs::rename(&tmp, path).with_context(|| format!("{}: cannot move into place", path.display()))
    })();
    if written.is_err() {
        // A full disk (or any failure) leaves no partial temporary file behind.
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// This machine's name (cached): the lock's holder and temporary files name it, since on a
/// shared file system a pid means nothing on another host.
pub(crate) fn hostname() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown".into())
    })
}

/// [`hostname`] as it appears in temporary file names (letters, digits, `-`, `.`).
fn host() -> String {
    hostname().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.').collect()
}

/// Sibling temporary path used by every atomic writer: `.name.tmp-<pid>@<host>`, so a later run
/// can tell its own leftovers from a live writer's ([`sweep_temp`]).
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}@{}", std::process::id(), host()))
}

/// Whether a temporary file name's writer is certainly gone: written on this host by a pid
/// that is no longer running, or (other hosts, or the older `.tmp-<pid>` form) older than a day.
fn abandoned(name: &str, age: std::time::Duration) -> bool {
    let Some(tag) = name.rsplit_once(".tmp-").map(|(_, t)| t) else { return false };
    let (pid, h) = match tag.split_once('@') {
        Some((p, h)) => (p, Some(h)),
        None => (tag, None),
    };
    let Ok(pid) = pid.parse::<u32>() else { return false };
    if pid == std::process::id() {
        return false;
    }
    // A day is far longer than any write takes; on this host a dead writer is known at once
    // (a live pid may also be a later process that reused the number).
    let day = age > std::time::Duration::from_secs(24 * 3600);
    match h {
        Some(h) if h == host() => day || !Path::new(&format!("/proc/{pid}")).exists(),
        _ => day,
    }
}

/// Abandoned temporary files and directories directly in `dir` (see [`temp_path`]).
pub(crate) fn abandoned_temp(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut found: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let age = e.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).unwrap_or_default();
            name.starts_with('.') && name.contains(".tmp-") && abandoned(&name, age)
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

/// Remove `path`, a file or a folder (not following a link).
pub(crate) fn remove_path(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path)?.file_type() {
        t if t.is_dir() => std::fs::remove_dir_all(path),
        _ => std::fs::remove_file(path),
    }
}

/// Remove abandoned temporary files and directories directly in `dir` (see [`temp_path`]);
/// returns what was removed. Nothing else is touched.
pub(crate) fn sweep_temp(dir: &Path) -> Vec<PathBuf> {
    abandoned_temp(dir).into_iter().filter(|p| remove_path(p).is_ok()).collect()
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// UTC time as `YYYYMMDDTHHMMSSZ` (run ids sort chronologically).
pub(crate) fn utc_stamp(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m, d)
}

/// Every configuration check's verdict (one convention for every layer): `Err((key,
/// message))`, the key relative to the checked section (empty: the section itself); the
/// pipeline turns it into `file:line:col: section.key: message`.
pub type Check = Result<(), (String, String)>;

/// Prefix a failed check's key with its section.
pub(crate) fn within(section: &str, c: Check) -> Check {
    c.map_err(|(k, m)| (if k.is_empty() { section.to_string() } else { format!("{section}.{k}") }, m))
}

/// A failed check at `key`.
pub(crate) fn fail_at(key: &str, message: impl Into<String>) -> Check {
    Err((key.to_string(), message.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_become_paths() {
        for ok in ["denoise", "noise_da-v2", "camera-sim.test", "A1"] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "..", "../../x", "/abs", "a/b", ".hidden", "x y", "a\\b", "é", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn only_abandoned_temp_files_are_swept() {
        let d = std::env::temp_dir().join(format!("rp-sweep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        // A pid that cannot be running (beyond pid_max), on this host.
        let dead = d.join(format!(".per_image.csv.tmp-4194305@{}", host()));
        let mine = temp_path(&d.join("summary.csv"));
        let other_host_fresh = d.join(".x.tmp-12@elsewhere");
        let plain = d.join("per_image.csv");
        let dead_dir = d.join(format!(".best.tmp-4194305@{}", host()));
        for f in [&dead, &mine, &other_host_fresh, &plain] {
            std::fs::write(f, b"x").unwrap();
        }
        std::fs::create_dir_all(dead_dir.join("inner")).unwrap();
        let mut removed = sweep_temp(&d);
        removed.sort();
        let mut want = vec![dead.clone(), dead_dir.clone()];
        want.sort();
        assert_eq!(removed, want);
        assert!(mine.exists() && other_host_fresh.exists() && plain.exists());
        assert!(abandoned(".x.tmp-12@elsewhere", std::time::Duration::from_secs(2 * 24 * 3600)));
        assert!(abandoned(".x.tmp-12", std::time::Duration::from_secs(2 * 24 * 3600)));
        assert!(!abandoned(".x.tmp-12", std::time::Duration::from_secs(60)));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn stamp_of_known_instant() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_651_200 + 3661);
        assert_eq!(utc_stamp(t), "20261126T010101Z");
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = std::env::temp_dir().join(format!("rp-util-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.txt");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// The repository root for tests. Read at run time (cargo sets `CARGO_MANIFEST_DIR` when it
/// runs tests), so a test binary reused from a shared `CARGO_TARGET_DIR` built in another clone
/// still reads this clone's files; the compile-time value is only the fallback.
#[cfg(test)]
pub(crate) fn repo_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// burn's random generator (weight initialisation) is process-wide: tests that seed it and
/// then build a network, or that build networks at all, hold this so concurrently running
/// tests do not draw from each other's stream.
#[cfg(test)]
pub(crate) static RNG_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Hold [`RNG_LOCK`] (poisoning ignored: a failed test must not fail the others).
#[cfg(test)]
pub(crate) fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Largest configuration file (pipeline, registry) read: far above any real one (the shipped
/// pipelines are < 20 kB), small enough that a wrong path (`/dev/zero`, a dataset archive)
/// fails at once instead of filling memory.
pub(crate) const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// Read a configuration file as UTF-8 text, refusing what is not a regular file or is larger
/// than [`MAX_CONFIG_BYTES`]. The error says which.
pub(crate) fn read_config(path: &Path) -> std::result::Result<String, String> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(format!("larger than {} MiB; is this the right file?", MAX_CONFIG_BYTES >> 20));
    }
    String::from_utf8(bytes).map_err(|e| format!("not UTF-8 text ({e})"))
}

/// A name from a configuration that becomes part of a path (pipeline, recipe, test set): only
/// `[A-Za-z0-9._-]`, 1–64 characters, not starting with `.` (so never `..`, a hidden file or a
/// path). The error says what is wrong.
pub(crate) fn check_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("\"{name}\" must be 1 to 64 characters long"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!(
            "\"{name}\" may hold only letters, digits, '.', '_' and '-' (found {c:?}); it names files"
        ));
    }
    if name.starts_with('.') {
        return Err(format!("\"{name}\" must not start with '.'; it names files"));
    }
    Ok(())
}

/// Suggests the candidate closest to `word`, if any is close enough.
pub(crate) fn did_you_mean<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    candidates
        .iter()
        .map(|&c| (c, strsim::normalized_damerau_levenshtein(word, c), strsim::jaro_winkler(word, c)))
        .filter(|&(_, dl, jw)| dl >= 0.7 || jw >= 0.85)
        .max_by(|a, b| a.1.total_cmp(&b.1).then(a.2.total_cmp(&b.2)))
        .map(|(c, _, _)| c)
}

/// Memory this process may still use, bytes: the least of what the machine has available
/// (`MemAvailable`), what the address-space limit (`ulimit -v`, RLIMIT_AS) leaves beside what is
/// already mapped, and what the cgroup's `memory.max` leaves beside its usage. `None` when none
/// can be read (not Linux).
pub fn memory_budget() -> Option<u64> {
    let kib = |text: &str, field: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(field))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|k| k * 1024)
    };
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let mut budget = meminfo.as_deref().and_then(|m| kib(m, "MemAvailable:"));
    let mut tighter = |v: Option<u64>| {
        if let Some(v) = v {
            budget = Some(budget.map_or(v, |b| b.min(v)));
        }
    };
    // "Max address space   <soft>   <hard>   bytes".
    let limits = std::fs::read_to_string("/proc/self/limits").ok();
    let soft_as = limits.as_deref().and_then(|l| {
        let line = l.lines().find(|x| x.starts_with("Max address space"))?;
        line["Max address space".len()..].split_whitespace().next()?.parse::<u64>().ok()
    });
    if let Some(limit) = soft_as {
        let status = std::fs::read_to_string("/proc/self/status").ok();
        let mapped = status.as_deref().and_then(|s| kib(s, "VmSize:")).unwrap_or(0);
        tighter(Some(limit.saturating_sub(mapped)));
    }
    let cg = |f: &str| std::fs::read_to_string(format!("/sys/fs/cgroup/{f}")).ok();
    if let (Some(max), Some(cur)) = (cg("memory.max"), cg("memory.current"))
        && let (Ok(max), Ok(cur)) = (max.trim().parse::<u64>(), cur.trim().parse::<u64>())
    {
        tighter(Some(max.saturating_sub(cur)));
    }
    budget
}

/// `n` bytes for people.
pub fn human_bytes(n: u128) -> String {
    let gib = n as f64 / (1u64 << 30) as f64;
    if gib >= 1.0 { format!("{gib:.1} GiB") } else { format!("{:.0} MiB", n as f64 / (1u64 << 20) as f64) }
}

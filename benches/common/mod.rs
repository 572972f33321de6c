//! Helpers the memory benches share: this process's memory from `/proc/self/status` (Linux).

#![allow(dead_code)]

use std::time::Instant;

/// A `/proc/self/status` field in KiB (`VmRSS:`, `VmHWM:`), if readable.
pub fn status_kib(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Run `f`; its seconds and the growth of peak resident memory it caused, bytes: the
/// high-water mark (`VmHWM`) is reset first (`/proc/self/clear_refs`), the resident size
/// before `f` subtracted.
pub fn measure(f: impl FnOnce()) -> (f64, u64) {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = status_kib("VmRSS:").unwrap_or(0);
    let t = Instant::now();
    f();
    (t.elapsed().as_secs_f64(), status_kib("VmHWM:").unwrap_or(0).saturating_sub(before) * 1024)
}

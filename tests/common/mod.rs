//! Helpers shared by the integration tests.

use std::path::PathBuf;

/// The repository root. Read at run time (cargo sets `CARGO_MANIFEST_DIR` when it runs tests),
/// so a test binary reused from a shared `CARGO_TARGET_DIR` built in another clone still reads
/// this clone's files; the compile-time value is only the fallback.
pub fn repo_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

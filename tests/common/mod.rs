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

// The binary, driven the way a user or a scheduler does. Not every test file uses every helper.

/// A fresh temporary folder `rp-<prefix>-<name>-<pid>`.
#[allow(dead_code)]
pub fn tmpdir(prefix: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rp-{prefix}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `run-pipeline ARGS` in the repository root, without a terminal (`CI` set).
#[allow(dead_code)]
pub fn run(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_run-pipeline"))
        .args(args)
        .current_dir(repo_root())
        .env("CI", "true")
        .output()
        .expect("binary runs")
}

/// `run-pipeline pipelines/denoise.yaml --profile smoke`, reports under `reports`, then `extra`.
#[allow(dead_code)]
pub fn smoke(reports: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let dir_arg = format!("report.dir={}", reports.display());
    let mut args = vec!["pipelines/denoise.yaml", "--profile", "smoke", "--set", &dir_arg];
    args.extend_from_slice(extra);
    run(&args)
}

#[allow(dead_code)]
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

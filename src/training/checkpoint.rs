//! Training checkpoints: one directory per saved step holding everything a run needs to continue
//! bit-identically — both networks, the optimiser state, the EMA of G, and `state.json` (step,
//! curve so far, best validation score). The data order and every random draw of a step derive
//! from (seed, step), so the step is the whole RNG state.
//!
//! Each checkpoint is written into a temporary directory, sealed with a manifest of content
//! hashes (`integrity`) and renamed into place, so a directory named `step-…` or `best` is
//! complete; resuming uses the newest one that still verifies. Older step checkpoints are
//! pruned to the last `keep`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::CurvePoint;
use crate::error::{Failure, Result};

/// Saved training progress besides the tensors.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct State {
    /// Steps completed.
    pub step: usize,
    /// The algorithm that wrote it (`source_only` / `noise_da`).
    pub method: String,
    /// Hash of everything that defines the training (recipe, networks, data, seed): a
    /// checkpoint is only continued by the same training.
    pub fingerprint: String,
    /// Training seconds spent before this checkpoint (all sessions).
    pub elapsed_s: f64,
    pub curve: Vec<CurvePoint>,
    /// Steps since the last curve row, still to be averaged.
    pub window: Vec<CurvePoint>,
    /// Best PSNR of the first validation set so far (NaN: none yet).
    #[serde(with = "exact_f64")]
    pub best_val_psnr: f64,
}

pub const MODEL: &str = "model.bpk";
pub const OPTIM: &str = "optim.bpk";
pub const EMA: &str = "ema.bpk";
pub const STATE: &str = "state.json";

fn io(path: &Path, what: &str, e: impl std::fmt::Display) -> Failure {
    Failure::internal(format!("{}: {what}: {e}", path.display()))
}

pub(crate) fn step_name(step: usize) -> String {
    format!("step-{step:08}")
}

/// The step checkpoints in `dir` as (step, path), oldest first (temporary directories, whose
/// names do not parse as a step, are not among them).
fn step_dirs(dir: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let mut steps = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| io(dir, "cannot list checkpoints", e))? {
        let e = e.map_err(|e| io(dir, "cannot list checkpoints", e))?;
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(n) = name.strip_prefix("step-").and_then(|n| n.parse::<usize>().ok()) {
            steps.push((n, e.path()));
        }
    }
    steps.sort();
    Ok(steps)
}

/// The newest step checkpoint in `dir` that verifies against its manifest, if any. A newer one
/// that does not (bit rot, a file cut short, an older version's unsealed checkpoint) is
/// skipped with a warning naming it and the one used instead: training then continues from
/// there, with the same results, as every step is a function of (seed, step).
pub(crate) fn latest(dir: &Path) -> Result<Option<PathBuf>> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let mut skipped = Vec::new();
    for (_, p) in step_dirs(dir)?.into_iter().rev() {
        match crate::integrity::verify_dir(&p) {
            Ok(()) if p.join(STATE).is_file() => {
                if !skipped.is_empty() {
                    tracing::warn!(using = %p.display(), skipped = %skipped.join("; "),
                        "newer checkpoints failed verification; continuing from the last good one");
                }
                return Ok(Some(p));
            }
            Ok(()) => skipped.push(format!("{}: no {STATE}", p.display())),
            Err(e) => skipped.push(e),
        }
    }
    if !skipped.is_empty() {
        tracing::warn!(skipped = %skipped.join("; "), "no checkpoint verifies; training starts over");
    }
    Ok(None)
}

pub(crate) fn read_state(ckpt: &Path) -> Result<State> {
    let path = ckpt.join(STATE);
    let text = std::fs::read_to_string(&path).map_err(|e| io(&path, "cannot read checkpoint state", e))?;
    serde_json::from_str(&text).map_err(|e| io(&path, "unreadable checkpoint state", e))
}

/// Write checkpoint `name` in `dir`: `fill` saves the tensors into a fresh temporary directory,
/// then the state is written and the directory renamed into place (replacing an older one of
/// the same name, as `best` is).
pub fn write(dir: &Path, name: &str, state: &State, fill: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, "cannot create checkpoint folder", e))?;
    let target = dir.join(name);
    let tmp = crate::integrity::build_sealed(
        &target,
        |tmp| {
            fill(tmp)?;
            let json = serde_json::to_string(state).expect("state serialises");
            std::fs::write(tmp.join(STATE), json).map_err(|e| io(tmp, "cannot write checkpoint state", e))
        },
        |p, e| io(p, "cannot write the checkpoint", e),
    )?;
    if target.exists() {
        let old = crate::util::temp_path(&dir.join(format!("{name}.old")));
        std::fs::rename(&target, &old).map_err(|e| io(&target, "cannot replace", e))?;
        std::fs::rename(&tmp, &target).map_err(|e| io(&target, "cannot move into place", e))?;
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(&tmp, &target).map_err(|e| io(&target, "cannot move into place", e))?;
    }
    Ok(target)
}

/// Remove all but the newest `keep` step checkpoints (at least one is always kept).
pub(crate) fn prune(dir: &Path, keep: usize) -> Result<()> {
    let steps = step_dirs(dir)?;
    let remove = steps.len().saturating_sub(keep.max(1));
    for (_, p) in steps.into_iter().take(remove) {
        std::fs::remove_dir_all(&p).map_err(|e| io(&p, "cannot remove old checkpoint", e))?;
    }
    Ok(())
}

/// f64 fields stored exactly (serde_json's float parsing may be off by one ulp, and a resumed
/// run must continue with the very same numbers): finite values as Rust's shortest round-trip
/// decimal string, NaN (no value) as `null`.
pub mod exact_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() { s.serialize_str(&format!("{v:?}")) } else { s.serialize_none() }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(text) => text.parse().map_err(serde::de::Error::custom),
            None => Ok(f64::NAN),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(step: usize) -> State {
        State {
            step,
            method: "source_only".into(),
            fingerprint: "f".into(),
            elapsed_s: 0.0,
            curve: vec![],
            window: vec![],
            best_val_psnr: f64::NAN,
        }
    }

    #[test]
    fn resuming_skips_a_corrupted_or_truncated_newest_checkpoint() {
        let dir = std::env::temp_dir().join(format!("rp-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for step in [10, 20, 30] {
            write(&dir, &step_name(step), &state(step), |tmp| {
                std::fs::write(tmp.join(MODEL), vec![step as u8; 4096]).map_err(|e| io(tmp, "w", e))
            })
            .unwrap();
        }
        assert_eq!(latest(&dir).unwrap(), Some(dir.join(step_name(30))));
        // Same size, one bit flipped: not used.
        let model = dir.join(step_name(30)).join(MODEL);
        let mut bytes = std::fs::read(&model).unwrap();
        bytes[100] ^= 1;
        std::fs::write(&model, &bytes).unwrap();
        assert_eq!(latest(&dir).unwrap(), Some(dir.join(step_name(20))));
        // Truncated: not used either.
        let model = dir.join(step_name(20)).join(MODEL);
        std::fs::write(&model, &std::fs::read(&model).unwrap()[..100]).unwrap();
        assert_eq!(latest(&dir).unwrap(), Some(dir.join(step_name(10))));
        // An unreadable state.
        std::fs::write(dir.join(step_name(10)).join(STATE), b"{").unwrap();
        assert_eq!(latest(&dir).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

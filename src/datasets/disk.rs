//! Loading datasets from disk: dispatch a registry entry to its layout, decode the images in
//! parallel, check pairs, and apply the problem policy (fail, or skip and report).

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::Split;
use super::layouts::{self, FileItem, Problem, Scan};
use super::registry::{DatasetEntry, DatasetKind, Registry};
use crate::error::{Failure, Result};
use crate::image::Image;

/// What to do when a dataset has problems (missing partners, unreadable files, ...).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnProblem {
    /// Stop with exit code 3 listing the problems (the default: a test set must be complete).
    #[default]
    Fail,
    /// Leave the bad items out, count and list them in the run's report.
    Skip,
}

impl OnProblem {
    /// For `skip_serializing_if`: the default is left out of resolved configurations.
    pub(crate) fn is_fail(&self) -> bool {
        *self == OnProblem::Fail
    }
}

/// Scan a registered on-disk dataset split into file pairs.
pub fn scan(registry: &Registry, name: &str, split: Split) -> Result<Scan> {
    let split = split.on_disk();
    let entry = registry.get(name)?;
    let root = registry.root(name)?;
    let layout = entry.layout.as_deref().unwrap_or("");
    let s = split.as_str();
    let unsupported = || {
        Failure::config(format!(
            "{}: dataset \"{name}\" ({:?}, layout \"{layout}\") has no {s} split here",
            registry.path.display(),
            entry.kind
        ))
    };
    let scan = match entry.kind {
        DatasetKind::Sidd if matches!(layout, "medium" | "small" | "") => super::sidd::layout(&root),
        DatasetKind::SpaData => match split {
            Split::Train => layouts::pair_list(&root, &root.join("real_world.txt"), false),
            Split::Test | Split::Val => layouts::spa_test(&root),
        },
        DatasetKind::Realblur => match layout {
            "repack-j" | "repack-r" => {
                let v = if layout == "repack-r" { "R" } else { "J" };
                layouts::input_target(&root.join(s).join(format!("RealBlur_{v}")), true)
            }
            _ => {
                let v = realblur_letter(entry);
                layouts::pair_list(&root, &root.join(format!("RealBlur_{v}_{s}_list.txt")), true)
            }
        },
        DatasetKind::Gopro => {
            if root.join(s).join("input").is_dir() {
                layouts::input_target(&root.join(s), false)
            } else {
                layouts::gopro(&root, s)
            }
        }
        DatasetKind::Rain13k => layouts::input_target(&root, false),
        DatasetKind::CleanFolder => layouts::clean_folder(&root, entry.follow_links),
        // SIDD's MATLAB-block layouts (validation, benchmark) are read as arrays, not files.
        DatasetKind::Sidd => return Err(unsupported()),
        // Generated in memory: nothing on disk to scan. Every kind is named here, so a new one
        // is a compile error until it says how it is scanned.
        DatasetKind::DeadLeaves
        | DatasetKind::CameraSim
        | DatasetKind::RainSim
        | DatasetKind::BlurSim
        | DatasetKind::SimClean => return Err(unsupported()),
    };
    Ok(if entry.follow_links { scan } else { within_root(scan, &root) })
}

/// Items whose files resolve (through symbolic links) to somewhere outside `root` become
/// problems: a dataset reads only what is under its root unless `follow_links = true`.
fn within_root(mut scan: layouts::Scan, root: &Path) -> layouts::Scan {
    let Ok(real_root) = root.canonicalize() else { return scan };
    let mut kept = Vec::with_capacity(scan.items.len());
    for it in std::mem::take(&mut scan.items) {
        let outside = std::iter::once(&it.degraded).chain(it.clean.as_ref()).find_map(|p| match p.canonicalize() {
            Ok(real) if !real.starts_with(&real_root) => Some((p.clone(), real)),
            _ => None,
        });
        match outside {
            Some((p, real)) => scan.problems.push(Problem {
                path: p,
                message: format!(
                    "a symbolic link to {}, outside the dataset root; not followed (set follow_links = true in the registry to allow)",
                    real.display()
                ),
            }),
            None => kept.push(it),
        }
    }
    scan.items = kept;
    scan
}

fn realblur_letter(entry: &DatasetEntry) -> &'static str {
    match entry.layout.as_deref().unwrap_or("j") {
        "r" | "R" => "R",
        _ => "J",
    }
}

/// Decoded items of a scan. `clean` is decoded only when `with_clean` (target training data
/// never decodes, nor keeps, its ground truth).
pub struct Decoded {
    pub items: Vec<(FileItem, Image, Option<Image>)>,
    pub problems: Vec<Problem>,
}

fn load(path: &Path) -> std::result::Result<Image, String> {
    Image::load(path).map_err(|e| format!("unreadable image: {:#}", e.root_cause()))
}

/// Decode up to `count` items in parallel, checking that pairs have equal sizes.
pub fn decode(mut scan: Scan, count: usize, with_clean: bool) -> Decoded {
    scan.items.truncate(count);
    let mut problems = scan.problems;
    let results: Vec<std::result::Result<(FileItem, Image, Option<Image>), Problem>> = scan
        .items
        .into_par_iter()
        .map(|it| {
            let fail = |p: &PathBuf, message: String| Problem { path: p.clone(), message };
            let d = load(&it.degraded).map_err(|m| fail(&it.degraded, m))?;
            let c = match (&it.clean, with_clean) {
                (Some(p), true) => {
                    let c = load(p).map_err(|m| fail(p, m))?;
                    if !c.same_size(&d) {
                        return Err(fail(
                            &it.degraded,
                            format!(
                                "size {}×{} differs from its ground truth's {}×{}",
                                d.width, d.height, c.width, c.height
                            ),
                        ));
                    }
                    Some(c)
                }
                _ => None,
            };
            Ok((it, d, c))
        })
        .collect();
    let mut items = Vec::new();
    for r in results {
        match r {
            Ok(x) => items.push(x),
            Err(p) => problems.push(p),
        }
    }
    Decoded { items, problems }
}

/// Apply the policy: with `Fail`, any problem is an error listing them (exit code 3).
pub fn check(name: &str, problems: &[Problem], policy: OnProblem) -> Result<()> {
    if problems.is_empty() || policy == OnProblem::Skip {
        for p in problems {
            tracing::warn!(dataset = name, "skipped: {p}");
        }
        return Ok(());
    }
    let shown: Vec<String> = problems.iter().take(10).map(|p| format!("  {p}")).collect();
    let more = if problems.len() > 10 { format!("\n  ... and {} more", problems.len() - 10) } else { String::new() };
    Err(Failure::data(format!(
        "dataset \"{name}\": {} problem(s) (set on_problem: skip to leave them out):\n{}{more}",
        problems.len(),
        shown.join("\n")
    )))
}

/// Fingerprint of a scanned dataset: its file list with sizes and modification times.
pub fn fingerprint(scan: &Scan) -> String {
    layouts::files_fingerprint(
        scan.items.iter().flat_map(|it| std::iter::once(it.degraded.as_path()).chain(it.clean.as_deref())),
    )
}

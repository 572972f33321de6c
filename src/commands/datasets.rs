//! `run-pipeline datasets list | check | export`: the registry's datasets, whether they are
//! present and sound, and a test set written out as PNG pairs.

use std::path::Path;

use crate::datasets::layouts::{Problem, Scan};
use crate::datasets::{Loader, OnProblem, Registry, Split, Take, disk};
use crate::error::{Failure, Result};

/// Images decoded at once by `check`: what it holds, whatever the dataset's size.
const CHECK_CHUNK: usize = 4;

/// `datasets list`: every registered dataset, embedded / present / missing.
pub fn list(registry: &Path) -> Result<String> {
    let reg = Registry::load(registry)?;
    let mut out = format!("{:<18} {:<12} {:<9} {}\n", "name", "kind", "status", "root / notes");
    for (name, e) in &reg.datasets {
        let (status, where_) = if e.kind.is_embedded() {
            ("embedded", e.notes.clone().unwrap_or_default())
        } else {
            match reg.root(name) {
                Ok(root) => ("present", root.display().to_string()),
                Err(_) => ("missing", e.root.clone().unwrap_or_default()),
            }
        };
        out.push_str(&format!("{name:<18} {:<12} {status:<9} {where_}\n", format!("{:?}", e.kind).to_lowercase()));
    }
    Ok(out)
}

/// `datasets check`: scan and decode every item of each split (a few at a time, so a dataset
/// of any size is checked in bounded memory), listing every problem a run would meet — and
/// images smaller than `min_size`. Prints as it goes; exit 3 when there are problems.
pub fn check(registry: &Path, name: &str, min_size: usize) -> Result<()> {
    let reg = Registry::load(registry)?;
    let entry = reg.get(name)?;
    if entry.kind.is_embedded() {
        println!("{name}: embedded ({:?}), generated on demand; nothing to check on disk", entry.kind);
        return Ok(());
    }
    println!("{name}: {:?} at {}", entry.kind, reg.root(name)?.display());
    let mut total_problems = 0;
    for split in [Split::Train, Split::Test] {
        if !entry.splits.iter().any(|s| s == split.as_str()) {
            continue;
        }
        let scan = disk::scan(&reg, name, split)?;
        let fingerprint = disk::fingerprint(&scan);
        let mut problems = scan.problems;
        let (mut items, mut pairs) = (0, 0);
        for chunk in scan.items.chunks(CHECK_CHUNK) {
            let dec = disk::decode(Scan { items: chunk.to_vec(), problems: vec![] }, usize::MAX, true);
            problems.extend(dec.problems);
            for (it, d, c) in &dec.items {
                // The same problems a run would meet: images smaller than its crops.
                if d.width < min_size || d.height < min_size {
                    problems.push(Problem {
                        path: it.degraded.clone(),
                        message: format!("{}×{} is smaller than --min-size {min_size}", d.width, d.height),
                    });
                }
                pairs += c.is_some() as usize;
            }
            items += dec.items.len();
        }
        if items == 0 {
            problems.push(Problem { path: reg.root(name)?, message: format!("no usable {} images", split.as_str()) });
        }
        println!(
            "  {:<5} {items} items ({pairs} with ground truth), {} problem(s), fingerprint {fingerprint}",
            split.as_str(),
            problems.len()
        );
        for p in &problems {
            println!("    {p}");
        }
        total_problems += problems.len();
    }
    if total_problems > 0 {
        return Err(Failure::data(format!("dataset \"{name}\": {total_problems} problem(s) found")));
    }
    Ok(())
}

/// `datasets export`: a test set (the first `count` pairs) as `dir/{input,target}/<id>.png`,
/// read and written a few pairs at a time.
pub fn export(registry: &Path, name: &str, dir: &Path, count: Option<usize>, force: bool) -> Result<String> {
    let mut out = crate::output::OutputDir::open(dir, force)?;
    let reg = Registry::load(registry)?;
    let cache = std::env::temp_dir().join(format!("run-pipeline-export-{}", std::process::id()));
    let loader = Loader { registry: &reg, cache_dir: &cache, seed: 0, plan_only: false, stop: None };
    // Simulated sets are generated at 256² (their `size`); data on disk keeps its own sizes.
    let set =
        loader.eval_pairs(name, Split::Test, Take { count: count.unwrap_or(Take::ALL), size: 256 }, OnProblem::Fail);
    let _ = std::fs::remove_dir_all(&cache);
    let set = set?;
    // Ids may hold folders (`0052_.../001`): one flat file name per pair; every destination
    // checked before the first is written.
    let file = |id: &str| format!("{}.png", id.replace(['/', '\\', '@', ','], "_"));
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..set.len() {
        let f = file(&crate::datasets::CropPool::id(&set, i));
        if !seen.insert(f.clone()) {
            return Err(Failure::data(format!("dataset \"{name}\": two pairs would both be written as {f}")));
        }
        for sub in ["input", "target"] {
            out.check(&Path::new(sub).join(&f))?;
        }
    }
    for chunk in set.chunks(crate::datasets::EVAL_CHUNK) {
        for item in chunk?.iter() {
            out.write(&Path::new("input").join(file(&item.id)), &item.degraded.png_bytes()?)?;
            out.write(&Path::new("target").join(file(&item.id)), &item.clean.png_bytes()?)?;
        }
    }
    out.finish()?;
    Ok(format!("wrote {} pairs of {name} to {}/{{input,target}}", set.len(), dir.display()))
}

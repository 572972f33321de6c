//! `--dry-run` / `run-pipeline plan`: what each stage of a run would do, without running it.

use super::data::{load_data, meta_keys, preflight};
use super::evaluate::eval_cache;
use super::open::forced_stages;
use super::train::stage_keys;
use super::{Resolved, RunOptions};
use crate::datasets::patches::Planes;
use crate::datasets::{Loader, Registry, Take};
use crate::error::Result;
use crate::pipeline::plan::Stage;
use crate::pipeline::spec::PipelineSpec;
use crate::pipeline::stages::{self, Decision, StageCache};
use std::path::PathBuf;

/// `--dry-run` / `run-pipeline plan`: every stage with what would happen and why, and a rough
/// cost from the stage cache's timings. Loads the data (materialising generated data in the
/// shard cache, as a run would) to fingerprint it; creates no run directory and trains nothing.
pub fn dry_run(res: &Resolved, opts: &RunOptions) -> Result<String> {
    let spec: &PipelineSpec = &res.spec;
    let registry = Registry::load(&opts.registry)?;
    preflight(res, &registry)?;
    let report_root = PathBuf::from(&spec.report.dir);
    let cache_dir = report_root.join(".cache");
    let loader =
        Loader { registry: &registry, cache_dir: &cache_dir, seed: spec.seeds.data, plan_only: true, stop: None };
    let forced = forced_stages(spec, &opts.force, opts.from.as_deref())?;
    // The run's own memory check, before any data is generated or read.
    super::check_memory(spec, &registry, opts.skip_memory_check)?;
    let data = load_data(spec, &loader)?;
    let stage_cache = StageCache::new(&report_root);
    let meta_keys = meta_keys(&data.tests);
    let mut out = format!("plan for {} (profile {}):\n", res.path.display(), res.profile);
    let have = crate::pipeline::plan::available_memory()
        .map(|b| format!(" of {} available", crate::util::human_bytes(b)))
        .unwrap_or_default();
    let mem = crate::pipeline::plan::data_memory(spec, &registry);
    let nets = crate::pipeline::plan::network_memory(spec);
    let human = crate::util::human_bytes;
    out.push_str(&format!(
        "  memory: ≈ {}{have}: data {} ({} held whole, {} of batches streamed from patch stores), networks' \
         weights, gradients and Adam moments {}, a training step's activations {}\n",
        human(mem.total() + nets.total()),
        human(mem.total()),
        human(mem.held),
        human(mem.streamed),
        human(nets.state),
        human(nets.activations)
    ));
    // Training data on disk: the patch stores it is read from, and what preparing them takes.
    for (take, planes) in store_sets(spec) {
        let (name, take) = take;
        if let Some(p) = loader.store_plan(name, take, planes)? {
            let what =
                if p.ready { "reuse (verified before use)" } else { "run (then cached; an interrupted one continues)" };
            out.push_str(&format!(
                "  prepare:{name}: {what}: {} images → {} patches of {}² (overlap {}), {:?}, ≈ {} on disk at {}\n",
                p.images,
                p.patches,
                p.tiling.side,
                p.tiling.overlap,
                planes,
                human(p.bytes as u128),
                p.dir.display()
            ));
        }
    }
    let cached = |dataset: &str, c: bool| {
        if crate::pipeline::plan::streamed(&registry, dataset) {
            "streamed from its patch store"
        } else if c {
            "reuse cached shards"
        } else {
            "generate (then cached)"
        }
    };
    out.push_str(&format!(
        "  data: source {}; target {}\n",
        cached(&data.source.dataset, data.source.cached),
        data.target.as_ref().map_or("unused", |t| cached(&t.dataset, t.cached))
    ));
    out.push_str("  score:input: run (cheap)\n");
    let (mut to_run, mut reused, mut est_s) = (0, 0, 0.0);
    let mut unknown_cost = false;
    for (recipe, seed, key) in stage_keys(spec, &data) {
        let stage = Stage::Train { recipe: recipe.name.to_string(), seed };
        let decision = stage_cache.decide(&key, forced.contains(&stage.to_string()));
        let cost = match &decision {
            Decision::Reuse(_) => {
                reused += 1;
                String::new()
            }
            Decision::Run(_) => {
                to_run += 1;
                // Speed of the same training measured before (any code, any data), if any.
                match stage_cache.steps_per_s(&stages::cost_key(recipe.method.name(), recipe.train, recipe.networks)) {
                    Some(rate) => {
                        let s = recipe.train.steps as f64 / rate;
                        est_s += s;
                        format!(", ~{:.0} s ({} steps at {rate:.2}/s measured before)", s, recipe.train.steps)
                    }
                    None => {
                        unknown_cost = true;
                        format!(", {} steps (no timing yet)", recipe.train.steps)
                    }
                }
            }
        };
        out.push_str(&format!("  {stage}: {}{cost}\n", decision.describe()));
        let scores_cached = matches!(decision, Decision::Reuse(_))
            && data
                .tests
                .iter()
                .all(|t| eval_cache(&stage_cache, &key, t, &meta_keys).join("per_image.parquet").is_file());
        let eval = if scores_cached { "reuse cached scores" } else { "run" };
        out.push_str(&format!("  {}: {eval}\n", Stage::Evaluate { recipe: recipe.name.to_string(), seed }));
    }
    if let Some(file) =
        crate::pipeline::diagnostics::premise_file(spec, &data.source, &data.tests[0].set, &stage_cache.root)
    {
        let what = if file.is_file() { "reuse the cached result".to_string() } else { "run (D trained alone)".into() };
        out.push_str(&format!("  diagnostics:premise: {what}\n"));
    }
    out.push_str("  report: run\n");
    out.push_str(&format!(
        "{to_run} training stage(s) to run, {reused} reused; estimated training time {}{:.0} s\n",
        if unknown_cost { "at least " } else { "" },
        est_s
    ));
    Ok(out)
}

/// The training sets a run reads from patch stores when on disk, with their planes.
fn store_sets(spec: &PipelineSpec) -> Vec<((&str, Take), Planes)> {
    let take = |count: Option<usize>, size| Take { count: count.unwrap_or(Take::ALL), size };
    let mut out = vec![(
        (spec.source.dataset.as_str(), take(spec.source.count, spec.source.size)),
        if spec.source.degradation.is_some() { Planes::Degraded } else { Planes::Pair },
    )];
    let t = (spec.target.dataset.as_str(), take(spec.target.count, spec.target.size));
    if spec.uses_target() {
        out.push((t, Planes::Degraded));
    }
    if spec.uses_target_pairs() {
        out.push((t, Planes::Pair));
    }
    out
}

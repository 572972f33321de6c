//! One training stage as a cluster job (`run-pipeline __stage`): the same data, keys, training
//! code and stage cache as a local run, so a stage trained on a node is the stage a local run
//! would train — and the final report job (a local run of the whole pipeline) reuses it.
//!
//! A job works in `<report.dir>/.cache/jobs/<stage key>/` (locked; its checkpoints survive a
//! time limit or pre-emption, so resubmitting the same stage continues it).

use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use burn::module::Module;
use tracing::info;

use super::data::{Data, load_data, preflight};
use super::open::OpenRun;
use super::train::{Trained, stage_keys};
use super::{Run, RunOptions, Timings, check_memory};
use crate::datasets::{Loader, Registry};
use crate::error::{Failure, Result};
use crate::pipeline::Resolved;
use crate::pipeline::plan::Stage;
use crate::pipeline::stages::{self, Decision, StageCache, StageKey};

/// A training stage of the plan with its key, for submitters and jobs.
#[derive(Clone, Debug)]
pub struct PlannedStage {
    /// `train:<recipe>:seed<s>`.
    pub name: String,
    pub recipe: String,
    pub seed: u64,
    pub key: StageKey,
    /// The stage it warm-starts from, if any.
    pub init_from: Option<String>,
    /// A finished stage with this key is in the cache.
    pub cached: bool,
    /// Its evaluation (`evaluate:<recipe>:seed<s>`) is in the score cache for every test set.
    pub eval_cached: bool,
}

impl PlannedStage {
    /// `evaluate:<recipe>:seed<s>`.
    pub fn eval_name(&self) -> String {
        Stage::Evaluate { recipe: self.recipe.clone(), seed: self.seed }.to_string()
    }
}

/// Every training stage in plan order with its key and whether the cache holds it. Loads (and
/// caches) the data to fingerprint it, as a run does.
pub fn planned_stages(res: &Resolved, opts: &RunOptions) -> Result<Vec<PlannedStage>> {
    Ok(plan_stages(res, opts)?.0)
}

fn plan_stages(res: &Resolved, opts: &RunOptions) -> Result<(Vec<PlannedStage>, Data)> {
    let spec = &res.spec;
    let registry = Registry::load(&opts.registry)?;
    preflight(res, &registry)?;
    check_memory(spec, &registry, opts.skip_memory_check)?;
    let report_root = PathBuf::from(&spec.report.dir);
    let cache_dir = report_root.join(".cache");
    let loader =
        Loader { registry: &registry, cache_dir: &cache_dir, seed: spec.seeds.data, plan_only: false, stop: None };
    let data = load_data(spec, &loader)?;
    let cache = StageCache::new(&report_root);
    let out = stage_keys(spec, &data)
        .into_iter()
        .map(|(recipe, seed, key)| PlannedStage {
            name: Stage::Train { recipe: recipe.name.to_string(), seed }.to_string(),
            recipe: recipe.name.to_string(),
            seed,
            cached: matches!(cache.decide(&key, false), Decision::Reuse(_)),
            eval_cached: super::evaluate::Scores::all_cached(&cache, &key, &data.tests),
            key,
            init_from: recipe.train.init_from.as_ref().map(|f| Stage::Train { recipe: f.clone(), seed }.to_string()),
        })
        .collect();
    Ok((out, data))
}

/// Run exactly the training stage `stage` of the resolved pipeline into the stage cache
/// (nothing if it is cached already). Exit codes as a run's (130 when stopped: resubmitting
/// continues from the job's checkpoint).
pub fn run_stage(res: &Resolved, opts: &RunOptions, stage: &str) -> Result<()> {
    let spec = &res.spec;
    let (planned, data) = plan_stages(res, opts)?;
    let mut names: Vec<String> = planned.iter().map(|p| p.name.clone()).collect();
    names.extend(planned.iter().map(|p| p.eval_name()));
    let evaluation = planned.iter().find(|p| p.eval_name() == stage);
    let target =
        planned.iter().find(|p| p.name == stage).or(evaluation).ok_or_else(|| {
            Failure::config(format!("no stage {stage} in this pipeline (stages: {})", names.join(", ")))
        })?;
    if evaluation.is_some() {
        return evaluate_stage(res, opts, target, &data);
    }
    if target.cached {
        info!(stage, "already in the stage cache; nothing to do");
        return Ok(());
    }
    let report_root = PathBuf::from(&spec.report.dir);
    let stage_cache = StageCache::new(&report_root);
    let recipe = spec.recipe(&target.recipe).expect("planned from the spec");
    if let Some(from) = &target.init_from {
        let init = planned.iter().find(|p| &p.name == from).expect("planned before");
        if !init.cached {
            return Err(Failure::data(format!(
                "{stage} starts from {from}, which is not in the stage cache yet (its job must finish first)"
            )));
        }
    }
    let job_dir = report_root.join(".cache").join("jobs").join(target.key.id());
    let open = OpenRun::job(format!("job-{}", target.key.id()), job_dir.clone())?;
    if let Some(from) = &target.init_from {
        // The warm start reads the earlier recipe's final weights from this folder, as a run
        // reads them from its own checkpoints.
        let init = planned.iter().find(|p| &p.name == from).expect("planned before");
        let src = stage_cache.root.join(init.key.id()).join(stages::MODEL);
        let dst = job_dir.join("checkpoints").join(format!("{}-seed{}.bpk", init.recipe, init.seed));
        std::fs::copy(&src, &dst).map_err(|e| Failure::internal(format!("{}: {e}", dst.display())))?;
        crate::integrity::seal_file(&dst).map_err(|e| Failure::internal(format!("{}: {e}", dst.display())))?;
    }
    let run = job_run(res, opts, open, recipe.train.devices)?;
    info!(stage, backend = %run.backend_name, dir = %job_dir.display(), "stage job");
    let st = Stage::Train { recipe: target.recipe.clone(), seed: target.seed };
    match run.train(&recipe, target.seed, &st, &target.key, &data, &mut Trained::default()) {
        Err(e) if e.code == crate::error::ExitCode::Interrupted => {
            // SIGTERM before a time limit or pre-emption (the job is still RUNNING): back in
            // the queue, to continue from the checkpoint just written. A cancelled job is no
            // longer running, and the requeue is refused: it stays cancelled.
            if let Ok(id) = std::env::var("SLURM_JOB_ID") {
                // `scancel` marks the job CANCELLED before it signals it; a time limit or a
                // pre-emption leaves it RUNNING. Only the latter goes back into the queue.
                let state = std::process::Command::new("scontrol")
                    .args(["-o", "show", "job", &id])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                if state.split_whitespace().any(|w| w == "JobState=RUNNING") {
                    let requeued = std::process::Command::new("scontrol").args(["requeue", &id]).status();
                    if requeued.is_ok_and(|s| s.success()) {
                        info!(stage, job = %id, "stopped at a checkpoint and requeued: the job continues from it");
                    }
                }
            }
            Err(e)
        }
        other => {
            other?;
            info!(stage, "stage stored in the cache");
            Ok(())
        }
    }
}

/// The `Run` a job works in: its folder instead of a run directory.
fn job_run<'a>(res: &'a Resolved, opts: &'a RunOptions, open: OpenRun, devices: usize) -> Result<Run<'a>> {
    let spec = &res.spec;
    let report_root = PathBuf::from(&spec.report.dir);
    let (devices, backend_name) = crate::backend::devices(spec.backend, devices)?;
    Ok(Run {
        res,
        opts,
        spec,
        registry: Registry::load(&opts.registry)?,
        forced: vec![],
        devices,
        backend_name,
        resolved_json: serde_json::to_string_pretty(spec).expect("spec serialises"),
        stage_cache: StageCache::new(&report_root),
        report_root,
        open,
        started: SystemTime::now(),
        t0: Instant::now(),
        timings: Timings::new(),
    })
}

/// An evaluation job: the trained stage's weights from the cache, every test set restored and
/// scored into the score cache (where the report job finds them).
fn evaluate_stage(res: &Resolved, opts: &RunOptions, target: &PlannedStage, data: &Data) -> Result<()> {
    let name = target.eval_name();
    if target.eval_cached {
        info!(stage = %name, "already in the score cache; nothing to do");
        return Ok(());
    }
    if !target.cached {
        return Err(Failure::data(format!(
            "{name}: {} is not in the stage cache yet (its job must finish first)",
            target.name
        )));
    }
    let recipe = res.spec.recipe(&target.recipe).expect("planned from the spec");
    let job_dir =
        PathBuf::from(&res.spec.report.dir).join(".cache").join("jobs").join(format!("eval-{}", target.key.id()));
    let run = job_run(res, opts, OpenRun::job(format!("job-eval-{}", target.key.id()), job_dir.clone())?, 1)?;
    let model = run.stage_cache.root.join(target.key.id()).join(stages::MODEL);
    let g = recipe
        .networks
        .restorer
        .init(run.device())
        .try_load_file(&model)
        .map_err(|e| Failure::internal(format!("{}: cannot load the cached stage: {e}", model.display())))?;
    let mut scores = super::evaluate::Scores::new(job_dir.join("per_image"), &data.tests);
    run.evaluate(
        &g,
        &recipe.networks.restorer,
        &target.recipe,
        target.seed,
        &target.key,
        false,
        data,
        &mut scores,
        &mut Default::default(),
    )?;
    scores.finish()?;
    info!(stage = %name, "scores stored in the cache");
    Ok(())
}

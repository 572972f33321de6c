//! Running a resolved pipeline: data → input scores → train/evaluate per method and seed →
//! reports, all inside `reports/<pipeline>/<run-id>/`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Instant, SystemTime};

use anyhow::Context;
use burn::module::Module;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde_json::json;
use tracing::info;

use super::Resolved;
use super::plan::{Stage, describe};
use super::spec::{Method, PipelineSpec, Protocol};
use super::stages::Decision;
use crate::datasets::{Loader, PairedItem, PairedSet, Registry, Split, Take};
use crate::error::{ExitCode, Failure, Result};
use crate::image::Image;
use crate::reports::{self, INPUT, ImageScore, Table, TableWriter};
use crate::training::{self, StepInfo, TrainInputs};
use crate::util::{sha256_hex, utc_stamp, write_atomic};

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogMode {
    /// indicatif bars (interactive terminal).
    Bars,
    /// Plain log lines (no terminal, CI, or `--log-format json`).
    Lines,
}

/// What to do with an unfinished run of the same resolved pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    /// Continue it if there is one (the default: re-running an interrupted job continues it).
    Auto,
    /// Continue it; fail if there is none (`--resume`).
    Require,
    /// Start a new run regardless (`--fresh`).
    Fresh,
}

pub struct RunOptions {
    pub registry: PathBuf,
    pub resume: Resume,
    pub log: LogMode,
    pub stop: Arc<AtomicBool>,
    pub command_line: Vec<String>,
    /// Stages to run even when a finished one with the same key is cached (`--force`): a stage
    /// name (`train:noise_da:seed0`), a prefix of one (`train:noise_da`) or a recipe name.
    pub force: Vec<String>,
    /// Run this stage and every later one in plan order regardless of the cache (`--from`).
    pub from: Option<String>,
}

/// Whether stage `name` (of recipe `recipe`) matches a `--force`/`--from` pattern.
fn matches_stage(pattern: &str, name: &str, recipe: &str) -> bool {
    pattern == name || pattern == recipe || name.starts_with(&format!("{pattern}:"))
}

/// The training stages `--force`/`--from` re-run, in plan order.
pub fn forced_stages(spec: &PipelineSpec, force: &[String], from: Option<&str>) -> Result<Vec<String>> {
    let stages = super::plan::plan(spec);
    let name_of = |st: &Stage| match st {
        Stage::Train { recipe, .. } | Stage::Evaluate { recipe, .. } => recipe.clone(),
        _ => String::new(),
    };
    for p in force.iter().map(String::as_str).chain(from) {
        if !stages.iter().any(|st| matches_stage(p, &st.to_string(), &name_of(st))) {
            let names: Vec<String> = stages.iter().map(|s| s.to_string()).collect();
            return Err(Failure::config(format!("--force/--from {p}: no such stage (stages: {})", names.join(", "))));
        }
    }
    let start = from.and_then(|p| stages.iter().position(|st| matches_stage(p, &st.to_string(), &name_of(st))));
    Ok(stages
        .iter()
        .enumerate()
        .filter(|(i, st)| {
            matches!(st, Stage::Train { .. })
                && (start.is_some_and(|s0| *i >= s0)
                    || force.iter().any(|p| matches_stage(p, &st.to_string(), &name_of(st))))
        })
        .map(|(_, st)| st.to_string())
        .collect())
}

/// The metadata columns (`meta_*`) of the run's per-image table: every key the test sets carry.
fn meta_keys(tests: &[TestSet]) -> Vec<String> {
    let mut keys = std::collections::BTreeSet::new();
    for t in tests {
        for item in &t.set.items {
            keys.extend(item.params.meta.iter().map(|(k, _)| k.clone()));
        }
    }
    keys.into_iter().collect()
}

/// Where the scores of one evaluation are cached: keyed by the weights (the training stage's
/// key), the test set's fingerprint, its protocol, the report's columns and the code.
fn eval_cache(
    cache: &super::stages::StageCache,
    train_key: &super::stages::StageKey,
    t: &TestSet,
    meta_keys: &[String],
) -> PathBuf {
    let key = sha256_hex(
        json!({"train": train_key.id(), "test": t.set.fingerprint, "protocol": t.protocol.name(),
            "meta": meta_keys, "code": train_key.code})
        .to_string()
        .as_bytes(),
    );
    cache.root.join(format!("eval-{}", &key[..20]))
}

/// The key of one training stage (see [`super::stages`]).
#[allow(clippy::too_many_arguments)]
fn train_key(
    spec: &PipelineSpec,
    recipe: &super::spec::Recipe,
    seed: u64,
    data: (&PairedSet, Option<&crate::datasets::TargetTrainSet>, Option<&PairedSet>),
    val_sets: &[TestSet],
    init: Option<&super::stages::StageKey>,
) -> super::stages::StageKey {
    let (source, target, target_pairs) = data;
    let validation: Vec<(&str, &str)> =
        val_sets.iter().map(|t| (t.name.as_str(), t.set.fingerprint.as_str())).collect();
    super::stages::StageKey::new(
        &super::stages::train_config(recipe.method, recipe.train, recipe.networks, &spec.task, seed),
        &json!({"source": source.fingerprint, "target": target.map(|t| &t.fingerprint),
            "target_pairs": target_pairs.map(|t| &t.fingerprint), "validation": validation,
            "validate_every": spec.validation.as_ref().map(|v| v.every), "init": init.map(|k| k.id())}),
    )
}

pub struct RunOutcome {
    pub run_dir: PathBuf,
    pub summary: String,
}

/// Test images restored and scored per batch.
const EVAL_CHUNK: usize = 32;
/// Test images per set shown in the example-crops figure.
const EXAMPLES: usize = 4;

struct TestSet {
    name: String,
    protocol: Protocol,
    set: PairedSet,
    /// The restorers get the references themselves (`input: reference`): nothing to score
    /// for the unrestored input, which equals its reference.
    reference_input: bool,
}

/// Score `outputs` (or, when `None`, the unrestored inputs) against the ground truth of
/// `items`, a slice of test set `t`.
fn score_set(
    run_id: &str,
    method: &str,
    seed: Option<u64>,
    t: &TestSet,
    items: &[PairedItem],
    outputs: Option<&[Image]>,
) -> Result<Vec<ImageScore>> {
    items
        .par_iter()
        .enumerate()
        .map(|(k, item)| {
            let out = outputs.map_or(&item.degraded, |o| &o[k]);
            let s = crate::protocols::score(t.protocol, out, &item.clean)
                .with_context(|| format!("scoring {}", item.id))?;
            Ok(ImageScore {
                run_id: run_id.into(),
                method: method.into(),
                seed,
                test_set: t.name.clone(),
                dataset: t.set.dataset.clone(),
                split: t.set.split.as_str().into(),
                image_id: item.id.clone(),
                protocol: t.protocol.name().into(),
                params: item.params.clone(),
                psnr: s.psnr,
                ssim: s.ssim,
                ssim_per_channel: s.extra("ssim_per_channel"),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()
        .map_err(Failure::from)
}

fn git(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A run directory of this pipeline and configuration, created or found, and locked.
struct OpenRun {
    run_id: String,
    run_dir: PathBuf,
    /// An unfinished run is being continued.
    resumed: bool,
    /// Held until the run returns, however it returns: one writer per run directory.
    lock: crate::lock::RunLock,
}

/// The `prepare` stage: continue the unfinished run of this configuration (unless `--fresh`;
/// `--resume` requires one) or name a new one, create its directory and take its lock.
fn open_run(res: &Resolved, opts: &RunOptions, resolved_json: &str, started: SystemTime) -> Result<OpenRun> {
    let spec = &res.spec;
    let pipeline_dir = PathBuf::from(&spec.report.dir).join(&spec.name);
    let unfinished = match opts.resume {
        Resume::Fresh => None,
        _ => find_unfinished(&pipeline_dir, resolved_json)?,
    };
    if opts.resume == Resume::Require && unfinished.is_none() {
        return Err(Failure::config(format!(
            "--resume: no unfinished run of this pipeline and configuration under {}",
            pipeline_dir.display()
        )));
    }
    let resumed = unfinished.is_some();
    let (run_id, run_dir) = match unfinished {
        Some(dir) => {
            let id = dir.file_name().expect("run dir name").to_string_lossy().to_string();
            info!(run = %id, "continuing the unfinished run (checkpoints kept; --fresh starts over)");
            (id, dir)
        }
        None => {
            let id = format!("{}-{}-{}", utc_stamp(started), res.profile, &sha256_hex(resolved_json.as_bytes())[..6]);
            // The same id can only be another invocation of this configuration started in the
            // same second: the lock below sorts that out.
            let dir = pipeline_dir.join(&id);
            (id, dir)
        }
    };
    std::fs::create_dir_all(run_dir.join("checkpoints"))
        .map_err(|e| Failure::internal(format!("{}: cannot create run directory: {e}", run_dir.display())))?;
    let lock = crate::lock::RunLock::acquire(&run_dir)?;
    Ok(OpenRun { run_id, run_dir, resumed, lock })
}

pub fn run(res: &Resolved, opts: &RunOptions) -> Result<RunOutcome> {
    let spec: &PipelineSpec = &res.spec;
    let started = SystemTime::now();
    let t0 = Instant::now();
    let registry = Registry::load(&opts.registry)?;
    preflight(spec, &registry)?;
    let forced = forced_stages(spec, &opts.force, opts.from.as_deref())?;
    let max_devices = spec.recipes().iter().map(|r| r.train.devices).max().unwrap_or(1);
    let (all_devices, backend_name) = crate::backend::devices(spec.backend, max_devices)?;
    let device = all_devices[0].clone();
    info!(backend = %backend_name, "compute back-end");

    // --- prepare: the run directory (new or the unfinished one), locked for this process
    let resolved_json = serde_json::to_string_pretty(spec).expect("spec serialises");
    let report_root = PathBuf::from(&spec.report.dir);
    let OpenRun { run_id, run_dir, resumed, lock: _lock } = open_run(res, opts, &resolved_json, started)?;
    let cache_dir = report_root.join(".cache");
    write_atomic(&run_dir.join("resolved.json"), resolved_json.as_bytes())?;
    info!(run = %run_id, dir = %run_dir.display(), profile = %res.profile, "run started");
    eprintln!("plan for {} (profile {}):\n{}", res.path.display(), res.profile, describe(spec));
    let (params_g, params_d) = crate::networks::param_counts(&spec.networks.restorer, &spec.networks.diffusion);
    info!(restorer_params = params_g, diffusion_params = params_d, "networks");

    let mut timings = serde_json::Map::new();
    let mut stage_t = Instant::now();
    let mut finish_stage = |name: String, timings: &mut serde_json::Map<String, serde_json::Value>| {
        let s = stage_t.elapsed().as_secs_f64();
        info!(stage = %name, seconds = format!("{s:.1}"), "stage finished");
        timings.insert(name, json!(s));
        stage_t = Instant::now();
    };

    // --- data
    let loader = Loader { registry: &registry, cache_dir: &cache_dir, seed: spec.seeds.data };
    let Data { source, target, target_pairs, tests, val_sets } = load_data(spec, &loader)?;
    let validation: Vec<training::ValidationSet> = val_sets
        .iter()
        .map(|t| training::ValidationSet { name: &t.name, protocol: t.protocol, items: &t.set.items })
        .collect();
    let val_names: Vec<String> = val_sets.iter().map(|t| t.name.clone()).collect();
    let fingerprints = dataset_fingerprints(&source, target.as_ref(), target_pairs.as_ref(), &tests, &val_sets);
    info!(
        source = source.items.len(),
        target = target.as_ref().map(|t| t.items.len()).unwrap_or(0),
        cached = source.cached,
        "data ready"
    );
    finish_stage(Stage::Data.to_string(), &mut timings);

    let meta_keys = meta_keys(&tests);

    // --- scores of the unrestored inputs
    let mut per_image: Option<TableWriter> = None;
    let write_rows = |rows: &[ImageScore], per_image: &mut Option<TableWriter>| -> Result<()> {
        let table = reports::scores_table(rows, &meta_keys);
        if per_image.is_none() {
            *per_image = Some(TableWriter::create(&run_dir.join("per_image"), &table)?);
        }
        per_image.as_mut().expect("writer").append(&table)?;
        Ok(())
    };
    for t in tests.iter().filter(|t| !t.reference_input) {
        let rows = score_set(&run_id, INPUT, None, t, &t.set.items, None)?;
        write_rows(&rows, &mut per_image)?;
    }
    finish_stage(Stage::ScoreInput.to_string(), &mut timings);

    // --- train + evaluate
    let mut curves: Vec<Table> = Vec::new();
    let mut training_facts = Vec::new();
    let stage_cache = super::stages::StageCache::new(&report_root);
    let mut keys: std::collections::HashMap<(String, u64), super::stages::StageKey> = Default::default();
    // The first few restored test images of each recipe (first seed), for the crops figure.
    let mut examples: std::collections::BTreeMap<(String, String), Vec<Image>> = Default::default();
    let first_seed = spec.seeds.train.first().copied();
    // Evaluation is a stage too: its per-image rows are cached under the training stage's key,
    // the test set's fingerprint, protocol and the report's columns (same code: same rows).
    let evaluate = |g: &crate::networks::Restorer,
                    name: &str,
                    seed: u64,
                    stride: usize,
                    train_key: &super::stages::StageKey,
                    forced: bool,
                    per_image: &mut Option<TableWriter>,
                    examples: &mut std::collections::BTreeMap<(String, String), Vec<Image>>|
     -> Result<()> {
        for t in &tests {
            let cached = eval_cache(&stage_cache, train_key, t, &meta_keys);
            let file = cached.join("per_image.parquet");
            let example_key = (t.name.clone(), name.to_string());
            if !forced && file.is_file() {
                if Some(seed) == first_seed {
                    // Scores come from the cache; only the figure's few images are restored.
                    let first: Vec<Image> = t.set.items[..t.set.items.len().min(EXAMPLES)]
                        .iter()
                        .map(|item| training::restore_image(g, &item.degraded, stride, &device))
                        .collect();
                    examples.insert(example_key, first);
                }
                let mut table = reports::Table::read_parquet(&file)?;
                // The rows belong to this run now.
                let rows = table.rows();
                for (n, c) in table.columns.iter_mut() {
                    if n == "run_id" {
                        *c = reports::Column::Str(vec![Some(run_id.clone()); rows]);
                    }
                }
                info!(stage = %Stage::Evaluate { recipe: name.to_string(), seed }, test = %t.name,
                      "reusing the cached scores (same weights, test set, protocol and code)");
                per_image.as_mut().expect("input scores come first").append(&table)?;
                continue;
            }
            // Chunks keep memory bounded on large test sets (980 RealBlur frames); rows
            // stream to the table as they are scored.
            let mut all = Table::default();
            for (k, chunk) in t.set.items.chunks(EVAL_CHUNK).enumerate() {
                let outputs: Vec<Image> =
                    chunk.iter().map(|item| training::restore_image(g, &item.degraded, stride, &device)).collect();
                if k == 0 && Some(seed) == first_seed {
                    examples.insert(example_key.clone(), outputs.iter().take(EXAMPLES).cloned().collect());
                }
                let rows = score_set(&run_id, name, Some(seed), t, chunk, Some(&outputs))?;
                all.append_rows(reports::scores_table(&rows, &meta_keys));
                write_rows(&rows, per_image)?;
            }
            let tmp = crate::util::temp_path(&cached);
            std::fs::create_dir_all(&tmp)?;
            all.write(&tmp.join("per_image"))?;
            if std::fs::rename(&tmp, &cached).is_err() {
                // Stored meanwhile by another run: keep theirs.
                let _ = std::fs::remove_dir_all(&tmp);
            }
        }
        Ok(())
    };
    // The D probe reads the target's references from this test set.
    let probe_set = spec
        .diagnostics
        .probe_set(&spec.tests)
        .and_then(|n| tests.iter().find(|t| t.name == n))
        .map(|t| (t.name.as_str(), t.set.items.as_slice()));
    for &seed in &spec.seeds.train {
        for recipe in spec.recipes() {
            let method = recipe.method;
            let name = recipe.name;
            let stage = Stage::Train { recipe: name.to_string(), seed };
            let ckpt_dir = run_dir.join("checkpoints").join(format!("{name}-seed{seed}"));
            // Warm start: the earlier recipe's final raw weights for this seed.
            let init_from = recipe
                .train
                .init_from
                .as_ref()
                .map(|from| run_dir.join("checkpoints").join(format!("{from}-seed{seed}.bpk")));
            let fingerprint = sha256_hex(
                json!({"method": method.name(), "train": recipe.train, "networks": recipe.networks, "task": spec.task,
                    "seed": seed, "source": source.fingerprint, "target": target.as_ref().map(|t| &t.fingerprint),
                    "target_pairs": target_pairs.as_ref().map(|t| &t.fingerprint)})
                .to_string()
                .as_bytes(),
            );
            let init_key = recipe.train.init_from.as_ref().and_then(|f| keys.get(&(f.clone(), seed)));
            let key =
                train_key(spec, &recipe, seed, (&source, target.as_ref(), target_pairs.as_ref()), &val_sets, init_key);
            keys.insert((name.to_string(), seed), key.clone());
            let ckpt_file = run_dir.join("checkpoints").join(format!("{name}-seed{seed}.bpk"));
            let ema_file = run_dir.join("checkpoints").join(format!("{name}-seed{seed}-ema.bpk"));
            let decision = stage_cache.decide(&key, forced.contains(&stage.to_string()));
            if let Decision::Reuse(dir) = &decision {
                let cached = stage_cache.load(dir)?;
                info!(stage = %stage, from = %dir.display(), "reusing the finished stage (same config, data and code)");
                let load = |file: &Path| {
                    recipe.networks.restorer.init(&device).try_load_file(file).map_err(|e| {
                        Failure::internal(format!("{}: cannot load the cached stage: {e}", file.display()))
                    })
                };
                let restorer = load(&dir.join(super::stages::MODEL))?;
                save_checkpoint(&restorer, &ckpt_file)?;
                if dir.join(super::stages::EMA).is_file() {
                    save_checkpoint(&load(&dir.join(super::stages::EMA))?, &ema_file)?;
                }
                let mut facts = cached.facts.clone();
                facts["reused_stage"] = json!(dir.display().to_string());
                training_facts.push(facts);
                curves.push(reports::curve_table(name, seed, &cached.curve, &val_names));
                finish_stage(stage.to_string(), &mut timings);
                evaluate(
                    &restorer,
                    name,
                    seed,
                    recipe.networks.restorer.stride(),
                    &key,
                    false,
                    &mut per_image,
                    &mut examples,
                )?;
                finish_stage(Stage::Evaluate { recipe: name.to_string(), seed }.to_string(), &mut timings);
                continue;
            }
            info!(stage = %stage, why = %decision.describe(), "stage runs");
            let inputs = TrainInputs {
                checkpoints: Some(&ckpt_dir),
                fingerprint,
                validation: &validation,
                validate_every: spec.validation.as_ref().map_or(0, |v| v.every),
                data_parallel: all_devices[1..recipe.train.devices].to_vec(),
                task: spec.task,
                spec: recipe.train,
                nets: recipe.networks,
                init_restorer: init_from.as_deref(),
                // The upper bound learns from the target's pairs instead of the synthetic ones.
                source: match (method, &target_pairs) {
                    (Method::TargetSupervised, Some(pairs)) => pairs,
                    _ => &source,
                },
                target: target.as_ref(),
                seed,
                device: device.clone(),
                stop: &opts.stop,
            };
            let progress = Progress::new(opts.log, &stage.to_string(), spec.train.steps, spec.train.log_every);
            let trained = training::train(method, &inputs, &mut |s| progress.step(s))?;
            progress.finish();
            if trained.steps_done < recipe.train.steps {
                let at = trained.last_checkpoint.as_ref().map(|p| format!(" (checkpoint {})", p.display()));
                return Err(Failure::new(
                    ExitCode::Interrupted,
                    format!(
                        "interrupted during {stage} at step {}{}; run the same command again to continue",
                        trained.steps_done,
                        at.unwrap_or_default()
                    ),
                ));
            }
            info!(stage = %stage, steps_per_s = format!("{:.2}", trained.steps_per_s), params_g = trained.params_g,
                  params_d = trained.params_d.unwrap_or(0), "training finished");
            let probe = super::diagnostics::probes(&recipe)
                .then(|| super::diagnostics::probe_stage(spec, &recipe, seed, &trained, &source, probe_set, &device))
                .flatten();
            let facts = json!({
                "d_probe": probe,
                "method": name, "algorithm": method.name(), "seed": seed, "steps": trained.steps_done,
                "wall_s": trained.wall_s, "steps_per_s": trained.steps_per_s, "shards": trained.shards, "resumed_from_step": trained.resumed_from,
                "last_checkpoint": trained.last_checkpoint.as_ref().map(|p| p.display().to_string()),
                "best_checkpoint": trained.best_checkpoint.as_ref().map(|(p, v)| json!({"path": p.display().to_string(),
                    "val_psnr": v, "set": val_names.first()})),
                "params_restorer": trained.params_g, "params_diffusion": trained.params_d,
            });
            curves.push(reports::curve_table(name, seed, &trained.curve, &val_names));
            save_checkpoint(&trained.restorer, &ckpt_file)?;
            if let Some(ema) = &trained.restorer_ema {
                save_checkpoint(ema, &ema_file)?;
            }
            let cached = super::stages::Cached {
                key: key.clone(),
                stage: stage.to_string(),
                curve: trained.curve.clone(),
                facts: facts.clone(),
                cost: super::stages::cost_key(method.name(), recipe.train, recipe.networks),
            };
            stage_cache.store(&cached, &ckpt_file, trained.restorer_ema.as_ref().map(|_| ema_file.as_path()))?;
            training_facts.push(facts);
            finish_stage(stage.to_string(), &mut timings);
            evaluate(
                &trained.restorer,
                name,
                seed,
                recipe.networks.restorer.stride(),
                &key,
                true,
                &mut per_image,
                &mut examples,
            )?;
            finish_stage(Stage::Evaluate { recipe: name.to_string(), seed }.to_string(), &mut timings);
        }
    }

    // --- diagnostics: the probes of the Noise-DA stages, the premise check
    let premise =
        super::diagnostics::premise_stage(spec, &source, (&tests[0].name, &tests[0].set), &stage_cache.root, &device)?;
    let d_probe: Vec<super::diagnostics::ProbeRow> =
        training_facts.iter().filter_map(|f| serde_json::from_value(f["d_probe"].clone()).ok()).collect();
    if premise.is_some() || !d_probe.is_empty() {
        super::diagnostics::write(&run_dir, &super::diagnostics::Diagnostics { d_probe, premise })?;
        finish_stage("diagnostics".into(), &mut timings);
    }

    // --- reports
    per_image.expect("input scores were written").finish()?;
    let mut all_curves = Table::default();
    for c in curves {
        all_curves.append_rows(c);
    }
    all_curves.write(&run_dir.join("curves"))?;
    write_figures(&run_dir, spec, &tests, &all_curves, &examples)?;
    let Summaries { markdown: md, gates: gate_results, .. } = write_summaries(&run_dir, spec)?;
    finish_stage(Stage::Report.to_string(), &mut timings);

    let provenance = provenance(&Record {
        res,
        opts,
        run_id: &run_id,
        started,
        resumed,
        wall_s: t0.elapsed().as_secs_f64(),
        stage_seconds: timings,
        device: &backend_name,
        datasets: fingerprints,
        training: training_facts,
        resolved_json: &resolved_json,
    });
    write_atomic(
        &run_dir.join("provenance.json"),
        serde_json::to_string_pretty(&provenance).expect("json").as_bytes(),
    )?;
    info!(run = %run_id, wall_s = format!("{:.1}", t0.elapsed().as_secs_f64()), "run finished");
    let failed: Vec<String> =
        gate_results.iter().filter(|r| !r.passed).map(|r| format!("{}: {}", r.gate, r.detail)).collect();
    if !failed.is_empty() {
        if spec.report.print_summary {
            println!("\n{md}");
        }
        return Err(Failure::new(
            ExitCode::GateFailed,
            format!("quality gate failed: {} (report: {})", failed.join("; "), run_dir.display()),
        ));
    }
    Ok(RunOutcome { run_dir, summary: md })
}

/// `--dry-run` / `run-pipeline plan`: every stage with what would happen and why, and a rough
/// cost from the stage cache's timings. Loads the data (materialising generated data in the
/// shard cache, as a run would) to fingerprint it; creates no run directory and trains nothing.
pub fn dry_run(res: &Resolved, opts: &RunOptions) -> Result<String> {
    let spec: &PipelineSpec = &res.spec;
    let registry = Registry::load(&opts.registry)?;
    preflight(spec, &registry)?;
    let report_root = PathBuf::from(&spec.report.dir);
    let cache_dir = report_root.join(".cache");
    let loader = Loader { registry: &registry, cache_dir: &cache_dir, seed: spec.seeds.data };
    let forced = forced_stages(spec, &opts.force, opts.from.as_deref())?;
    let data = load_data(spec, &loader)?;
    let stage_cache = super::stages::StageCache::new(&report_root);
    let meta_keys = meta_keys(&data.tests);
    let mut keys: std::collections::HashMap<(String, u64), super::stages::StageKey> = Default::default();
    let mut out = format!("plan for {} (profile {}):\n", res.path.display(), res.profile);
    let cached = |c: bool| if c { "reuse cached shards" } else { "generate (then cached)" };
    out.push_str(&format!(
        "  data: source {}; target {}\n",
        cached(data.source.cached),
        data.target.as_ref().map_or("unused", |t| cached(t.cached))
    ));
    out.push_str("  score:input: run (cheap)\n");
    let (mut to_run, mut reused, mut est_s) = (0, 0, 0.0);
    let mut unknown_cost = false;
    for &seed in &spec.seeds.train {
        for recipe in spec.recipes() {
            let stage = Stage::Train { recipe: recipe.name.to_string(), seed };
            let init = recipe.train.init_from.as_ref().and_then(|f| keys.get(&(f.clone(), seed)));
            let key = train_key(
                spec,
                &recipe,
                seed,
                (&data.source, data.target.as_ref(), data.target_pairs.as_ref()),
                &data.val_sets,
                init,
            );
            keys.insert((recipe.name.to_string(), seed), key.clone());
            let decision = stage_cache.decide(&key, forced.contains(&stage.to_string()));
            let cost = match &decision {
                Decision::Reuse(_) => {
                    reused += 1;
                    String::new()
                }
                Decision::Run(_) => {
                    to_run += 1;
                    // Speed of the same training measured before (any code, any data), if any.
                    match stage_cache.steps_per_s(&super::stages::cost_key(
                        recipe.method.name(),
                        recipe.train,
                        recipe.networks,
                    )) {
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
    }
    if let Some(file) = super::diagnostics::premise_file(spec, &data.source, &data.tests[0].set, &stage_cache.root) {
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

/// What each data set of the run was (dataset, shard fingerprint, cache hit, item and skipped
/// counts), for the provenance.
fn dataset_fingerprints(
    source: &PairedSet,
    target: Option<&crate::datasets::TargetTrainSet>,
    target_pairs: Option<&PairedSet>,
    tests: &[TestSet],
    val_sets: &[TestSet],
) -> serde_json::Map<String, serde_json::Value> {
    let mut fingerprints = serde_json::Map::new();
    fingerprints.insert(
        "source".into(),
        json!({"dataset": source.dataset, "shard": source.fingerprint, "cached": source.cached,
        "items": source.items.len(), "skipped": source.problems}),
    );
    if let Some(t) = target_pairs {
        fingerprints.insert(
            "target_pairs (upper bound only)".into(),
            json!({"dataset": t.dataset, "shard": t.fingerprint, "cached": t.cached, "items": t.items.len()}),
        );
    }
    if let Some(t) = target {
        fingerprints.insert(
            "target".into(),
            json!({"dataset": t.dataset, "shard": t.fingerprint, "cached": t.cached,
            "items": t.items.len(), "skipped": t.problems}),
        );
    }
    for (role, t) in tests.iter().map(|t| ("test", t)).chain(val_sets.iter().map(|t| ("validation", t))) {
        fingerprints.insert(
            format!("{role}:{}", t.name),
            json!({"dataset": t.set.dataset, "shard": t.set.fingerprint, "cached": t.set.cached,
            "items": t.set.items.len(), "skipped": t.set.problems}),
        );
    }
    fingerprints
}

/// Figures: training curves, and example crops per test set (input / recipes / ground truth).
fn write_figures(
    run_dir: &Path,
    spec: &PipelineSpec,
    tests: &[TestSet],
    all_curves: &Table,
    examples: &std::collections::BTreeMap<(String, String), Vec<Image>>,
) -> Result<()> {
    let figures = run_dir.join("figures");
    std::fs::create_dir_all(&figures)?;
    reports::figures::curves_png(all_curves, &figures.join("curves.png"))?;
    for t in tests {
        let recipes: Vec<String> =
            spec.methods.iter().filter(|m| examples.contains_key(&(t.name.clone(), (*m).clone()))).cloned().collect();
        let mut labels = vec![INPUT.to_string()];
        labels.extend(recipes.iter().cloned());
        labels.push("ground truth".into());
        let rows: Vec<Vec<Image>> = (0..t.set.items.len().min(EXAMPLES))
            .map(|i| {
                let mut row = vec![t.set.items[i].degraded.clone()];
                row.extend(recipes.iter().map(|m| examples[&(t.name.clone(), m.clone())][i].clone()));
                row.push(t.set.items[i].clean.clone());
                row
            })
            .collect();
        reports::figures::crops_png(&rows, &labels, 64, 2, &figures.join(format!("{}-crops.png", t.name)))?;
    }
    Ok(())
}

/// A training stage's progress: an indicatif bar on a terminal, else a plain log line every
/// `log_every` steps (and at the last) with the loss terms and an ETA.
struct Progress {
    bar: Option<ProgressBar>,
    stage: String,
    log_every: usize,
}

impl Progress {
    fn new(mode: LogMode, stage: &str, steps: usize, log_every: usize) -> Progress {
        let bar = (mode == LogMode::Bars).then(|| {
            let b = ProgressBar::new(steps as u64);
            b.set_style(
                ProgressStyle::with_template("{prefix:>24} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}")
                    .expect("template")
                    .progress_chars("=> "),
            );
            b.set_prefix(stage.to_string());
            b
        });
        Progress { bar, stage: stage.to_string(), log_every: log_every.max(1) }
    }

    fn step(&self, s: StepInfo) {
        let p = s.latest;
        let msg = if p.mse_pos.is_finite() {
            format!(
                "loss {:.4} char {:.4} mse+ {:.4} mse- {:.4} α {:.3}",
                p.loss, p.charbonnier, p.mse_pos, p.mse_neg, p.alpha
            )
        } else {
            format!("loss {:.4}", p.loss)
        };
        match &self.bar {
            Some(b) => {
                b.set_position(s.step as u64);
                b.set_message(msg);
            }
            None if s.step % self.log_every == 0 || s.step == s.steps => {
                let rate = s.step as f64 / p.elapsed_s.max(1e-9);
                let eta = (s.steps - s.step) as f64 / rate.max(1e-9);
                info!(stage = %self.stage, step = s.step, steps = s.steps, eta_s = format!("{eta:.0}"), "{msg}");
            }
            None => {}
        }
    }

    fn finish(self) {
        if let Some(b) = self.bar {
            b.finish();
        }
    }
}

/// What a run's `provenance.json` records.
struct Record<'a> {
    res: &'a Resolved,
    opts: &'a RunOptions,
    run_id: &'a str,
    started: SystemTime,
    resumed: bool,
    wall_s: f64,
    stage_seconds: serde_json::Map<String, serde_json::Value>,
    device: &'a str,
    datasets: serde_json::Map<String, serde_json::Value>,
    training: Vec<serde_json::Value>,
    resolved_json: &'a str,
}

/// The provenance of a run: what ran (pipeline, profile, overrides, command line, code
/// version and uncommitted changes), on what (back-end, device, threads, data fingerprints),
/// how long each stage took, and each training stage's facts.
fn provenance(r: &Record) -> serde_json::Value {
    let spec = &r.res.spec;
    json!({
        "run_id": r.run_id,
        "pipeline": spec.name,
        "pipeline_file": r.res.path.display().to_string(),
        "profile": r.res.profile,
        "overrides": r.res.overrides,
        "command_line": r.opts.command_line,
        "started_utc": utc_stamp(r.started),
        "resumed": r.resumed,
        "wall_s": r.wall_s,
        "stage_seconds": r.stage_seconds,
        "version": env!("CARGO_PKG_VERSION"),
        "git_commit": git(&["rev-parse", "HEAD"]),
        "git_dirty": git(&["status", "--porcelain"]).map(|s| !s.is_empty()),
        // What the uncommitted changes were, as a hash (the diff itself stays in the working tree).
        "git_diff_sha256": git(&["diff", "HEAD"]).filter(|d| !d.is_empty()).map(|d| sha256_hex(d.as_bytes())),
        "code_hash": super::stages::code_version(),
        "backend": format!("{:?}", spec.backend).to_lowercase(),
        "device": r.device,
        "threads": rayon::current_num_threads(),
        "seeds": spec.seeds,
        "datasets": r.datasets,
        "training": r.training,
        "scored_weights": "raw",
        "ema_decay": spec.train.ema,
        "resolved_sha256": sha256_hex(r.resolved_json.as_bytes()),
    })
}

/// Everything a run reads: the source pairs, the target inputs (and pairs for the upper
/// bound), test and validation sets. Generated data is materialised in the shard cache.
struct Data {
    source: PairedSet,
    target: Option<crate::datasets::TargetTrainSet>,
    target_pairs: Option<PairedSet>,
    tests: Vec<TestSet>,
    val_sets: Vec<TestSet>,
}

fn load_data(spec: &PipelineSpec, loader: &Loader) -> Result<Data> {
    let source = loader.source_pairs(
        &spec.source.dataset,
        Take { count: spec.source.count, size: spec.source.size },
        spec.source.degradation.as_ref(),
        spec.source.on_problem,
    )?;
    let source = match spec.source.redraw() {
        Some(deg) => source.redrawn(deg.clone()),
        None => source,
    };
    let (t, target_take) = (&spec.target, Take { count: spec.target.count, size: spec.target.size });
    let target = spec.uses_target().then(|| loader.target_train(&t.dataset, target_take, t.on_problem)).transpose()?;
    let target_pairs = spec
        .uses_target_pairs()
        .then(|| loader.target_train_pairs(&t.dataset, target_take, t.on_problem))
        .transpose()?;
    let load_eval = |t: &super::spec::TestSpec, split: Split| -> Result<TestSet> {
        let take = Take { count: t.count, size: t.size };
        let mut set = match &t.degradation {
            Some(deg) => loader.synthetic_pairs(&t.dataset, split, take, deg)?,
            None => loader.eval_pairs(&t.dataset, split, take, t.on_problem)?,
        };
        let reference_input = t.input == super::spec::TestInput::Reference;
        if reference_input {
            set.items.iter_mut().for_each(|it| it.degraded = it.clean.clone());
            set.fingerprint = format!("{}+reference-input", set.fingerprint);
        }
        Ok(TestSet { name: t.name.clone(), protocol: t.protocol, set, reference_input })
    };
    let tests = spec.tests.iter().map(|t| load_eval(t, Split::Test)).collect::<Result<Vec<_>>>()?;
    let val_sets = match &spec.validation {
        Some(v) => v.sets.iter().map(|t| load_eval(t, Split::Val)).collect::<Result<Vec<_>>>()?,
        None => vec![],
    };
    Ok(Data { source, target, target_pairs, tests, val_sets })
}

/// Every dataset the pipeline names must be registered and, unless embedded, present:
/// checked before the run directory exists so a missing download costs nothing.
fn preflight(spec: &PipelineSpec, registry: &Registry) -> Result<()> {
    let mut names = vec![spec.source.dataset.as_str()];
    if spec.uses_target() || spec.uses_target_pairs() {
        names.push(&spec.target.dataset);
    }
    names.extend(spec.tests.iter().map(|t| t.dataset.as_str()));
    for name in names {
        if !registry.get(name)?.kind.is_embedded() {
            registry.root(name)?;
        }
    }
    Ok(())
}

/// Save restorer weights atomically (burnpack format).
fn save_checkpoint(g: &crate::networks::Restorer, path: &Path) -> Result<()> {
    let tmp = crate::util::temp_path(path);
    g.clone()
        .save_file(&tmp)
        .map_err(|e| Failure::internal(format!("{}: cannot save checkpoint: {e:?}", path.display())))?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The newest run directory of this pipeline whose resolved configuration is `resolved_json`
/// and that has not finished (no `provenance.json`, which is written last).
fn find_unfinished(pipeline_dir: &Path, resolved_json: &str) -> Result<Option<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(pipeline_dir) else { return Ok(None) };
    let mut dirs: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    for dir in dirs.into_iter().rev() {
        if dir.join("provenance.json").exists() {
            continue;
        }
        match std::fs::read_to_string(dir.join("resolved.json")) {
            Ok(text) if text == resolved_json => return Ok(Some(dir)),
            _ => continue,
        }
    }
    Ok(None)
}

/// What [`write_summaries`] wrote, for callers that go on with it (cross-run reports).
pub struct Summaries {
    pub markdown: String,
    pub gates: Vec<super::gates::GateResult>,
    /// The `summary` table as written.
    pub summary: Table,
    /// The run's per-image scores as read.
    pub per_image: Table,
}

/// Summaries of a run from its per-image scores: `summary` (means, std, bootstrap intervals),
/// `recipes`, `comparisons` against the baseline, and `summary.md`. Used at the end of a run and
/// by `run-pipeline report` to re-summarise finished runs with this version's report code.
/// The pipeline's quality gates are checked here too (results in gates.json and summary.md).
pub fn write_summaries(run_dir: &Path, spec: &PipelineSpec) -> Result<Summaries> {
    let per_image_table = reports::Table::read_parquet(&run_dir.join("per_image.parquet"))?;
    let order: Vec<&str> = spec.methods.iter().map(String::as_str).collect();
    let mut summary = reports::summarise(&per_image_table, &order)?;
    reports::add_intervals(&mut summary, &reports::compare::mean_intervals(&per_image_table));
    summary.write(&run_dir.join("summary"))?;
    let recipes: Vec<reports::RecipeRow> = spec
        .recipes()
        .iter()
        .map(|r| reports::RecipeRow {
            name: r.name.to_string(),
            method: r.method.name().to_string(),
            changes: super::plan::recipe_changes(spec, r),
            paper: r.paper.map(|p| (p.psnr, p.ssim, p.source.clone())),
        })
        .collect();
    reports::recipes_table(&recipes).write(&run_dir.join("recipes"))?;
    let mut md = reports::summary_markdown(&summary);
    if let Some(baseline) = spec.baseline() {
        let comparisons = reports::compare::compare(&per_image_table, baseline, &order);
        reports::compare::comparisons_table(&comparisons).write(&run_dir.join("comparisons"))?;
        if !comparisons.is_empty() {
            md.push_str(&format!(
                "\nPaired differences against {baseline} on the same images (two-level bootstrap over seeds and images, {} resamples):\n\n",
                reports::compare::RESAMPLES
            ));
            md.push_str(&reports::compare::comparisons_markdown(&comparisons));
        }
    }
    let bound = spec.recipes().into_iter().find(|r| r.method == super::spec::Method::TargetSupervised);
    if let (Some(baseline), Some(bound)) = (spec.baseline(), bound)
        && let Some(h) = reports::headroom_markdown(&summary, &spec.tests[0].name, baseline, bound.name, &order)
    {
        md.push_str(&h);
    }
    if spec.methods.iter().any(|m| spec.variants.contains_key(m)) {
        // The ablation layout: one row per recipe, its changes, our scores, the paper's.
        md.push_str("\nRecipes (changes relative to `train`; the paper's numbers are on its own data):\n\n");
        md.push_str(&reports::recipes_markdown(&summary, &recipes));
    }
    if let Some(d) = super::diagnostics::read(run_dir)? {
        md.push_str(&super::diagnostics::markdown(&d));
    }
    let gate_results = super::gates::check(&spec.gates, &summary, &spec.tests[0].name);
    if !gate_results.is_empty() {
        md.push_str(&super::gates::markdown(&gate_results));
        write_atomic(
            &run_dir.join("gates.json"),
            serde_json::to_string_pretty(&gate_results).expect("json").as_bytes(),
        )?;
    }
    write_atomic(&run_dir.join("summary.md"), md.as_bytes())?;
    Ok(Summaries { markdown: md, gates: gate_results, summary, per_image: per_image_table })
}

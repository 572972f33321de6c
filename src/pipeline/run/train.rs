//! The `train` stages: one per recipe × seed, each followed by its `evaluate` stage. A stage
//! whose key (configuration, data fingerprints, code) is in the stage cache is reused — its
//! weights, curve and facts — instead of trained again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::module::Module;
use serde_json::json;
use tracing::info;

use super::Run;
use super::data::{Data, TestSet};
use super::evaluate::{Examples, Scores};
use super::progress::Progress;
use crate::datasets::PairedSet;
use crate::error::{ExitCode, Failure, Result};
use crate::image::Image;
use crate::networks::Restorer;
use crate::pipeline::diagnostics;
use crate::pipeline::plan::Stage;
use crate::pipeline::spec::{Method, PipelineSpec, Recipe};
use crate::pipeline::stages::{self, Cached, Decision, StageKey};
use crate::reports::{self, Table};
use crate::training::{self, TrainInputs};
use crate::util::sha256_hex;

/// What the training stages produced, for the reports and the provenance.
#[derive(Default)]
pub(super) struct Trained {
    /// One curve table per recipe × seed.
    pub(super) curves: Vec<Table>,
    /// Each training stage's facts (speed, checkpoints, parameters, D probe).
    pub(super) facts: Vec<serde_json::Value>,
    pub(super) examples: Examples,
}

impl Run<'_> {
    /// Every recipe × seed in plan order: train (or reuse), then evaluate.
    pub(super) fn train_and_evaluate(&mut self, data: &Data, scores: &mut Scores) -> Result<Trained> {
        let spec = self.spec;
        let mut out = Trained::default();
        for (recipe, seed, key) in stage_keys(spec, data) {
            let name = recipe.name;
            let stage = Stage::Train { recipe: name.to_string(), seed };
            let (restorer, fresh) = match self.stage_cache.decide(&key, self.forced.contains(&stage.to_string())) {
                Decision::Reuse(dir) => (self.reuse_training(&recipe, seed, &stage, &dir, data, &mut out)?, false),
                decision => {
                    info!(stage = %stage, why = %decision.describe(), "stage runs");
                    (self.train(&recipe, seed, &stage, &key, data, &mut out)?, true)
                }
            };
            self.timings.finish(&stage);
            self.evaluate(
                &restorer,
                &recipe.networks.restorer,
                name,
                seed,
                &key,
                fresh,
                data,
                scores,
                &mut out.examples,
            )?;
            self.timings.finish(Stage::Evaluate { recipe: name.to_string(), seed });
        }
        Ok(out)
    }

    /// Where this run keeps the raw (and EMA) weights of recipe `name` × `seed`.
    fn checkpoint_files(&self, name: &str, seed: u64) -> (PathBuf, PathBuf) {
        let dir = self.open.run_dir.join("checkpoints");
        (dir.join(format!("{name}-seed{seed}.bpk")), dir.join(format!("{name}-seed{seed}-ema.bpk")))
    }

    /// Where this run shows what PixelDA's translator of recipe `name` × `seed` does.
    fn translations_file(&self, name: &str, seed: u64) -> PathBuf {
        self.open.run_dir.join("figures").join(format!("translations-{name}-seed{seed}.png"))
    }

    /// PixelDA's translator on the first synthetic training inputs (64² centre crops), beside
    /// the change it makes (×4, grey = none) and target inputs for comparison: does it learn
    /// the target's degradation, or rewrite the scene?
    fn write_translations(
        &self,
        t: &crate::networks::pixel_da::Translator,
        name: &str,
        seed: u64,
        data: &Data,
    ) -> Result<PathBuf> {
        let side = 64;
        let crop = |im: &Image| {
            let s = side.min(im.width).min(im.height);
            im.crop((im.width - s) / 2, (im.height - s) / 2, s, s)
        };
        let targets: Vec<&Image> = data.target.iter().flat_map(|t| t.items.iter().map(|i| &i.degraded)).collect();
        let rows: Vec<Vec<Image>> = (0..data.source.items.len().min(4))
            .map(|i| {
                let x = crop(&data.source.items[i].degraded);
                let y = training::translate_image(
                    t,
                    &x,
                    crate::rng::derive_seed(seed, "translations", &[i as u64]),
                    self.device(),
                );
                let mut change = y.clone();
                for (c, (a, b)) in change.data.iter_mut().zip(y.data.iter().zip(&x.data)) {
                    *c = 0.5 + 4.0 * (a - b);
                }
                let mut row = vec![x, y, change];
                if let Some(target) = targets.get(i) {
                    row.push(crop(target));
                }
                row
            })
            .collect();
        let mut labels: Vec<String> = ["synthetic input", "translated", "change x4"].map(String::from).to_vec();
        if !targets.is_empty() {
            labels.push("target input".into());
        }
        let path = self.translations_file(name, seed);
        std::fs::create_dir_all(path.parent().expect("figures"))?;
        reports::figures::crops_png(&rows, &labels, side, 2, &path)
            .map_err(|e| Failure::internal(format!("{}: {e}", path.display())))?;
        Ok(path)
    }

    /// A cached training stage: its weights become this run's checkpoints, its curve and facts
    /// this run's.
    fn reuse_training(
        &self,
        recipe: &Recipe,
        seed: u64,
        stage: &Stage,
        dir: &Path,
        data: &Data,
        out: &mut Trained,
    ) -> Result<Restorer> {
        let cached = self.stage_cache.load(dir)?;
        info!(stage = %stage, from = %dir.display(), "reusing the finished stage (same config, data and code)");
        let load = |file: &Path| {
            recipe
                .networks
                .restorer
                .init(self.device())
                .try_load_file(file)
                .map_err(|e| Failure::internal(format!("{}: cannot load the cached stage: {e}", file.display())))
        };
        let restorer = load(&dir.join(stages::MODEL))?;
        let (ckpt_file, ema_file) = self.checkpoint_files(recipe.name, seed);
        save_checkpoint(&restorer, &ckpt_file)?;
        if dir.join(stages::EMA).is_file() {
            save_checkpoint(&load(&dir.join(stages::EMA))?, &ema_file)?;
        }
        // PixelDA's translation examples (the entry is verified as a whole before reuse).
        let translations = dir.join(stages::TRANSLATIONS);
        if translations.is_file() {
            let to = self.translations_file(recipe.name, seed);
            std::fs::create_dir_all(to.parent().expect("figures"))?;
            crate::util::write_atomic(&to, &std::fs::read(&translations)?)?;
        }
        let mut facts = cached.facts.clone();
        facts["reused_stage"] = json!(dir.display().to_string());
        out.facts.push(facts);
        out.curves.push(reports::curve_table(recipe.name, seed, &cached.curve, &data.val_names()));
        Ok(restorer)
    }

    /// Train recipe × seed (continuing from its checkpoints when the run is resumed), save
    /// its weights as this run's checkpoints and store the finished stage in the cache.
    pub(super) fn train(
        &self,
        recipe: &Recipe,
        seed: u64,
        stage: &Stage,
        key: &StageKey,
        data: &Data,
        out: &mut Trained,
    ) -> Result<Restorer> {
        let spec = self.spec;
        let (method, name) = (recipe.method, recipe.name);
        let checkpoints = self.open.run_dir.join("checkpoints");
        let ckpt_dir = checkpoints.join(format!("{name}-seed{seed}"));
        // Warm start: the earlier recipe's final raw weights for this seed.
        let init_from = recipe.train.init_from.as_ref().map(|from| checkpoints.join(format!("{from}-seed{seed}.bpk")));
        if let Some(path) = &init_from {
            // Written by this run's earlier stage; never started from unverified.
            crate::integrity::verify_file(path).map_err(|e| {
                let from = recipe.train.init_from.as_deref().unwrap_or_default();
                Failure::internal(format!("warm start of {stage}: {e}; run again with --force {from}"))
            })?;
        }
        let (source, target, target_pairs) = (&data.source, data.target.as_ref(), data.target_pairs.as_ref());
        // How batches are read ahead changes nothing: a run may continue with other loader settings.
        let mut train_json = json!(recipe.train);
        if let Some(t) = train_json.as_object_mut() {
            t.remove("loader");
        }
        let fingerprint = sha256_hex(
            json!({"method": method.name(), "train": train_json, "networks": recipe.networks, "task": spec.task,
                "seed": seed, "source": source.fingerprint, "target": target.map(|t| &t.fingerprint),
                "target_pairs": target_pairs.map(|t| &t.fingerprint)})
            .to_string()
            .as_bytes(),
        );
        let validation: Vec<training::ValidationSet> = data
            .val_sets
            .iter()
            .map(|t| training::ValidationSet { name: &t.name, protocol: t.protocol, set: &t.set })
            .collect();
        let inputs = TrainInputs {
            checkpoints: Some(&ckpt_dir),
            fingerprint,
            validation: &validation,
            validate_every: spec.validation.as_ref().map_or(0, |v| v.every),
            data_parallel: self.devices[1..recipe.train.devices].to_vec(),
            task: spec.task,
            spec: recipe.train,
            nets: recipe.networks,
            init_restorer: init_from.as_deref(),
            // The upper bound learns from the target's pairs instead of the synthetic ones.
            source: match (method, target_pairs) {
                (Method::TargetSupervised, Some(pairs)) => pairs,
                _ => source,
            },
            target,
            seed,
            device: self.device().clone(),
            stop: &self.opts.stop,
        };
        let progress = Progress::new(self.opts.log, &stage.to_string(), spec.train.steps, spec.train.log_every);
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
        // The D probe reads the target's references from this test set.
        let probe_set = spec
            .diagnostics
            .probe_set(&spec.tests)
            .and_then(|n| data.tests.iter().find(|t| t.name == n))
            .map(|t| (t.name.as_str(), t.set.items.as_slice()));
        let probe = diagnostics::probes(recipe)
            .then(|| diagnostics::probe_stage(spec, recipe, seed, &trained, source, probe_set, self.device()))
            .flatten();
        let val_names = data.val_names();
        let mut facts = json!({
            "d_probe": probe,
            "method": name, "algorithm": method.name(), "seed": seed, "steps": trained.steps_done,
            "wall_s": trained.wall_s, "steps_per_s": trained.steps_per_s, "shards": trained.shards, "resumed_from_step": trained.resumed_from,
            "last_checkpoint": trained.last_checkpoint.as_ref().map(|p| p.display().to_string()),
            "best_checkpoint": trained.best_checkpoint.as_ref().map(|(p, v)| json!({"path": p.display().to_string(),
                "val_psnr": v, "set": val_names.first()})),
            "params_restorer": trained.params_g,
        });
        // The networks trained beside G: params_diffusion, params_classifier, params_translator…
        for (net, n) in &trained.params_extra {
            facts[format!("params_{net}")] = json!(n);
        }
        out.curves.push(reports::curve_table(name, seed, &trained.curve, &val_names));
        let (ckpt_file, ema_file) = self.checkpoint_files(name, seed);
        save_checkpoint(&trained.restorer, &ckpt_file)?;
        if let Some(ema) = &trained.restorer_ema {
            save_checkpoint(ema, &ema_file)?;
        }
        let cached = Cached {
            key: key.clone(),
            stage: stage.to_string(),
            curve: trained.curve.clone(),
            facts: facts.clone(),
            cost: stages::cost_key(method.name(), recipe.train, recipe.networks),
        };
        let translations = match &trained.translator {
            Some(t) => Some(self.write_translations(t, name, seed, data)?),
            None => None,
        };
        let extras: Vec<(&str, &Path)> = translations.iter().map(|p| (stages::TRANSLATIONS, p.as_path())).collect();
        self.stage_cache.store(
            &cached,
            &ckpt_file,
            trained.restorer_ema.as_ref().map(|_| ema_file.as_path()),
            &extras,
        )?;
        out.facts.push(facts);
        Ok(trained.restorer)
    }
}

/// Every training stage of the plan — seeds outermost, recipes in `methods` order — with its
/// key; a warm-started stage's key includes the key of the stage it starts from.
pub(super) fn stage_keys<'s>(spec: &'s PipelineSpec, data: &Data) -> Vec<(Recipe<'s>, u64, StageKey)> {
    let mut keys: HashMap<(String, u64), StageKey> = HashMap::new();
    let mut out = Vec::new();
    for &seed in &spec.seeds.train {
        for recipe in spec.recipes() {
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
            out.push((recipe, seed, key));
        }
    }
    out
}

/// The key of one training stage (see [`crate::pipeline::stages`]).
#[allow(clippy::too_many_arguments)]
fn train_key(
    spec: &PipelineSpec,
    recipe: &Recipe,
    seed: u64,
    data: (&PairedSet, Option<&crate::datasets::TargetTrainSet>, Option<&PairedSet>),
    val_sets: &[TestSet],
    init: Option<&StageKey>,
) -> StageKey {
    let (source, target, target_pairs) = data;
    let validation: Vec<(&str, &str)> =
        val_sets.iter().map(|t| (t.name.as_str(), t.set.fingerprint.as_str())).collect();
    StageKey::new(
        &stages::train_config(recipe.method, recipe.train, recipe.networks, &spec.task, seed),
        &json!({"source": source.fingerprint, "target": target.map(|t| &t.fingerprint),
            "target_pairs": target_pairs.map(|t| &t.fingerprint), "validation": validation,
            "validate_every": spec.validation.as_ref().map(|v| v.every), "init": init.map(|k| k.id())}),
    )
}

/// Save restorer weights atomically (burnpack format), with their content hash beside them.
fn save_checkpoint(g: &Restorer, path: &Path) -> Result<()> {
    let tmp = crate::util::temp_path(path);
    if let Err(e) = g.clone().save_file(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Failure::internal(format!("{}: cannot save checkpoint: {e:?}", path.display())));
    }
    std::fs::rename(&tmp, path)?;
    crate::integrity::seal_file(path)
        .map_err(|e| Failure::internal(format!("{}: cannot write its hash: {e}", path.display())))?;
    Ok(())
}

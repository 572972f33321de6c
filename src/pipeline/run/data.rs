//! The `data` stage: the source pairs, the target inputs (and pairs, for the upper bound), the
//! test and validation sets, loaded or generated into the shard cache, and what each was (its
//! fingerprint) for the stage keys and the provenance.

use serde_json::json;
use tracing::info;

use super::Run;
use crate::datasets::{CropPool, Loader, PairedSet, Registry, Split, Take, TargetTrainSet};
use crate::error::Result;
use crate::pipeline::plan::Stage;
use crate::pipeline::spec::{PipelineSpec, Protocol, TestInput, TestSpec};

impl Run<'_> {
    /// Load (or generate) every data set the pipeline reads.
    pub(super) fn load_data(&mut self) -> Result<Data> {
        let cache_dir = self.report_root.join(".cache");
        let loader = Loader {
            registry: &self.registry,
            cache_dir: &cache_dir,
            seed: self.spec.seeds.data,
            plan_only: false,
            stop: Some(self.opts.stop.clone()),
        };
        let data = load_data(self.spec, &loader)?;
        info!(
            source = data.source.count(),
            target = data.target.as_ref().map(|t| t.count()).unwrap_or(0),
            cached = data.source.cached,
            "data ready"
        );
        self.timings.finish(Stage::Data);
        Ok(data)
    }
}

/// A test or validation set: its name and protocol in the pipeline, and its pairs.
pub(super) struct TestSet {
    pub(super) name: String,
    pub(super) protocol: Protocol,
    pub(super) set: PairedSet,
    /// The restorers get the references themselves (`input: reference`): nothing to score
    /// for the unrestored input, which equals its reference.
    pub(super) reference_input: bool,
}

/// Everything a run reads: the source pairs, the target inputs (and pairs for the upper
/// bound), test and validation sets. Generated data is materialised in the shard cache.
pub(super) struct Data {
    pub(super) source: PairedSet,
    pub(super) target: Option<TargetTrainSet>,
    pub(super) target_pairs: Option<PairedSet>,
    pub(super) tests: Vec<TestSet>,
    pub(super) val_sets: Vec<TestSet>,
}

impl Data {
    /// What each data set of the run was (dataset, shard fingerprint, cache hit, item and skipped
    /// counts), for the provenance.
    pub(super) fn fingerprints(&self) -> serde_json::Map<String, serde_json::Value> {
        let Data { source, target, target_pairs, tests, val_sets } = self;
        let mut fingerprints = serde_json::Map::new();
        fingerprints.insert(
            "source".into(),
            json!({"dataset": source.dataset, "shard": source.fingerprint, "cached": source.cached,
            "items": source.count(), "streamed": source.store.is_some(), "skipped": source.problems}),
        );
        if let Some(t) = target_pairs {
            fingerprints.insert(
                "target_pairs (upper bound only)".into(),
                json!({"dataset": t.dataset, "shard": t.fingerprint, "cached": t.cached, "items": t.count(),
                    "streamed": t.store.is_some()}),
            );
        }
        if let Some(t) = target {
            fingerprints.insert(
                "target".into(),
                json!({"dataset": t.dataset, "shard": t.fingerprint, "cached": t.cached,
                "items": t.count(), "streamed": t.store.is_some(), "skipped": t.problems}),
            );
        }
        for (role, t) in tests.iter().map(|t| ("test", t)).chain(val_sets.iter().map(|t| ("validation", t))) {
            fingerprints.insert(
                format!("{role}:{}", t.name),
                json!({"dataset": t.set.dataset, "shard": t.set.fingerprint, "cached": t.set.cached,
                "items": t.set.len(), "streamed": t.set.files.is_some(), "skipped": t.set.problems}),
            );
        }
        fingerprints
    }

    /// The validation sets' names, in order (the curve tables' validation columns).
    pub(super) fn val_names(&self) -> Vec<String> {
        self.val_sets.iter().map(|t| t.name.clone()).collect()
    }
}

pub(super) fn load_data(spec: &PipelineSpec, loader: &Loader) -> Result<Data> {
    let source = loader.source_pairs(
        &spec.source.dataset,
        Take { count: spec.source.count.unwrap_or(Take::ALL), size: spec.source.size },
        spec.source.degradation.as_ref(),
        spec.source.on_problem,
    )?;
    // (A source streamed from a store of clean photos is redrawn already.)
    let source = match spec.source.redraw() {
        Some(deg) if source.redraw.is_none() => source.redrawn(deg.clone()),
        _ => source,
    };
    let (t, target_take) =
        (&spec.target, Take { count: spec.target.count.unwrap_or(Take::ALL), size: spec.target.size });
    let target = spec.uses_target().then(|| loader.target_train(&t.dataset, target_take, t.on_problem)).transpose()?;
    let target_pairs = spec
        .uses_target_pairs()
        .then(|| loader.target_train_pairs(&t.dataset, target_take, t.on_problem))
        .transpose()?;
    let load_eval = |t: &TestSpec, split: Split| -> Result<TestSet> {
        let take = Take { count: t.count, size: t.size };
        let mut set = match &t.degradation {
            Some(deg) => loader.synthetic_pairs(&t.dataset, split, take, deg, t.on_problem)?,
            None => loader.eval_pairs(&t.dataset, split, take, t.on_problem)?,
        };
        let reference_input = t.input == TestInput::Reference;
        if reference_input {
            set.items.iter_mut().for_each(|it| it.degraded = it.clean.clone());
            if let Some(files) = &mut set.files {
                std::sync::Arc::make_mut(files).reference_input = true;
            }
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
pub(super) fn preflight(res: &crate::pipeline::Resolved, registry: &Registry) -> Result<()> {
    let spec = &res.spec;
    let mut names = vec![("source.dataset".to_string(), spec.source.dataset.as_str())];
    if spec.uses_target() || spec.uses_target_pairs() {
        names.push(("target.dataset".into(), &spec.target.dataset));
    }
    names.extend(spec.tests.iter().enumerate().map(|(i, t)| (format!("tests[{i}].dataset"), t.dataset.as_str())));
    for (key, name) in names {
        // An unknown name is the pipeline's mistake: reported where the pipeline writes it.
        let entry = registry
            .get(name)
            .map_err(|e| crate::error::Failure::new(e.code, format!("{}: {key}: {}", res.location(&key), e.message)))?;
        if !entry.kind.is_embedded() {
            registry.root(name)?;
        }
    }
    Ok(())
}

/// The metadata columns (`meta_*`) of the run's per-image table: every key the test sets carry.
pub(super) fn meta_keys(tests: &[TestSet]) -> Vec<String> {
    let mut keys = std::collections::BTreeSet::new();
    for t in tests {
        keys.extend(t.set.meta_keys());
    }
    keys.into_iter().collect()
}

//! The plan: the ordered stages a resolved pipeline will run, shown before any work starts.

use std::fmt;

use super::spec::{PipelineSpec, TrainSpec};

#[derive(Clone, Debug, PartialEq)]
pub enum Stage {
    /// Generate or load the source pairs, target inputs and test sets.
    Data,
    /// Score the unrestored inputs of every test set.
    ScoreInput,
    /// Train one recipe (`source_only`, `noise_da` or a variant) with one seed.
    Train {
        recipe: String,
        seed: u64,
    },
    Evaluate {
        recipe: String,
        seed: u64,
    },
    /// Summaries, tables and provenance.
    Report,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stage::Data => write!(f, "data"),
            Stage::ScoreInput => write!(f, "score:input"),
            Stage::Train { recipe, seed } => write!(f, "train:{recipe}:seed{seed}"),
            Stage::Evaluate { recipe, seed } => write!(f, "evaluate:{recipe}:seed{seed}"),
            Stage::Report => write!(f, "report"),
        }
    }
}

pub fn plan(spec: &PipelineSpec) -> Vec<Stage> {
    let mut stages = vec![Stage::Data, Stage::ScoreInput];
    for &seed in &spec.seeds.train {
        for recipe in &spec.methods {
            stages.push(Stage::Train { recipe: recipe.clone(), seed });
            stages.push(Stage::Evaluate { recipe: recipe.clone(), seed });
        }
    }
    stages.push(Stage::Report);
    stages
}

/// One line per stage with what it will do, for the start of a run and `plan`.
pub fn describe(spec: &PipelineSpec) -> String {
    plan(spec)
        .iter()
        .map(|s| {
            let detail = match s {
                Stage::Data => format!(
                    "source {}×{}² ({}), target {}×{}² from {}, {} test set(s)",
                    count(spec.source.count),
                    spec.source.size,
                    spec.source
                        .degradation
                        .as_ref()
                        .map_or_else(|| format!("pairs of {}", spec.source.dataset), |d| d.to_string()),
                    count(spec.target.count),
                    spec.target.size,
                    spec.target.dataset,
                    spec.tests.len()
                ),
                Stage::ScoreInput => "PSNR/SSIM of the degraded inputs".into(),
                Stage::Train { recipe, .. } => {
                    let r = spec.recipe(recipe).expect("validated recipe");
                    let t = r.train;
                    let mut d = format!("{} steps, batch {}, {}² crops, lr {}", t.steps, t.batch, t.patch, t.lr);
                    if r.name != r.method.name() {
                        d.push_str(&format!("; {}", r.method.name()));
                        let changes = recipe_changes(spec, &r);
                        if !changes.is_empty() {
                            d.push_str(&format!(" with {}", changes.join(", ")));
                        }
                    }
                    d
                }
                Stage::Evaluate { .. } => spec
                    .tests
                    .iter()
                    .map(|t| format!("{} ({})", t.name, t.protocol.name()))
                    .collect::<Vec<_>>()
                    .join(", "),
                Stage::Report => "per-image + summary (Parquet, CSV), curves, provenance".into(),
            };
            format!("  {:<30} {detail}", s.to_string())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A count for people: a number, or `all` (every patch of a dataset on disk).
pub(crate) fn count(c: Option<usize>) -> String {
    c.map_or_else(|| "all".into(), |n| n.to_string())
}

/// What a recipe changes relative to the pipeline's `train` and `networks`, as `key=value`.
pub(crate) fn recipe_changes(spec: &PipelineSpec, r: &super::spec::Recipe) -> Vec<String> {
    let mut out = train_changes(&spec.train, r.train);
    out.extend(diff_json(&spec.networks, r.networks).into_iter().map(|c| format!("networks.{c}")));
    out
}

/// The `train` keys where `variant` differs from `base`, as `key=value` (for plans and reports).
pub(crate) fn train_changes(base: &TrainSpec, variant: &TrainSpec) -> Vec<String> {
    diff_json(base, variant)
}

fn diff_json<T: serde::Serialize>(base: &T, variant: &T) -> Vec<String> {
    fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    flatten(&key, v, out);
                }
            }
            _ => out.push((prefix.to_string(), v.clone())),
        }
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    flatten("", &serde_json::to_value(base).expect("json"), &mut a);
    flatten("", &serde_json::to_value(variant).expect("json"), &mut b);
    b.into_iter()
        .filter(|(k, v)| a.iter().find(|(ka, _)| ka == k).map(|(_, va)| va) != Some(v))
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

/// Pairs of a test set on disk in memory at once when scored: a chunk and the first few
/// kept for figures.
const EVAL_CHUNK_PAIRS: usize = crate::datasets::EVAL_CHUNK + crate::datasets::SAMPLE;

/// Whether a training set of `dataset` streams from a patch store (datasets on disk read
/// through their layouts) rather than being held in memory (generated data, SIDD's blocks).
pub fn streamed(registry: &crate::datasets::Registry, dataset: &str) -> bool {
    registry.get(dataset).is_ok_and(|e| e.streams_training())
}

/// Memory a run's data needs, before anything is read: sets held in memory (generated
/// training data, test and validation sets) as f32 RGB pairs, and, for training data streamed
/// from a patch store, the batches in flight (`train.loader`: prefetched + being made + being
/// trained on) — which does not grow with the dataset. A lower bound for test sets on disk
/// whose images are larger than `size`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DataMemory {
    pub held: u128,
    pub streamed: u128,
}

impl DataMemory {
    pub fn total(&self) -> u128 {
        self.held + self.streamed
    }
}

pub fn data_memory(spec: &PipelineSpec, registry: &crate::datasets::Registry) -> DataMemory {
    let pairs = |count: usize, size: usize| 2 * count as u128 * (size as u128).pow(2) * 3 * 4;
    let mut m = DataMemory::default();
    // The largest batch any recipe draws: (synthetic + target) crops, each a pair at most.
    let in_flight = spec
        .recipes()
        .iter()
        .map(|r| {
            let t = r.train;
            let crops = (t.batch + t.noise_da.target_count(t.batch)) as u128;
            let batches = (t.loader.prefetch + t.loader.workers + 1) as u128;
            batches * crops * pairs(1, t.patch)
        })
        .max()
        .unwrap_or(0);
    let mut training = vec![(&spec.source.dataset, spec.source.count, spec.source.size, 1.0)];
    if spec.uses_target() {
        training.push((&spec.target.dataset, spec.target.count, spec.target.size, 0.5));
    }
    if spec.uses_target_pairs() {
        training.push((&spec.target.dataset, spec.target.count, spec.target.size, 1.0));
    }
    let mut any_streamed = false;
    for (dataset, count, size, share) in training {
        if streamed(registry, dataset) {
            any_streamed = true;
            // A few whole patches kept for figures and diagnostics.
            m.streamed += pairs(4, size);
        } else {
            m.held += (pairs(count.unwrap_or(0), size) as f64 * share) as u128;
        }
    }
    if any_streamed {
        m.streamed += in_flight;
    }
    // Test sets on disk are read a chunk at a time when scored (with their outputs), and
    // their first few pairs kept for the figures (SIDD's blocks: from their 8-bit arrays,
    // held); generated ones are held whole.
    let sets = spec.tests.iter().chain(spec.validation.iter().flat_map(|v| v.sets.iter()));
    for t in sets {
        let on_disk = t.degradation.is_none() && registry.get(&t.dataset).is_ok_and(|e| !e.kind.is_embedded());
        if on_disk {
            m.streamed += pairs(t.count.min(EVAL_CHUNK_PAIRS), t.size) * 3 / 2;
        }
        if on_disk && !streamed(registry, &t.dataset) {
            // SIDD's blocks: both arrays held as stored, 8-bit.
            m.held += pairs(t.count, t.size) / 4;
        } else if !on_disk {
            m.held += pairs(t.count, t.size);
        }
    }
    m
}

/// Memory this process may use now (see [`crate::util::memory_budget`]: `MemAvailable`, the
/// address-space limit, the cgroup's), if it can tell.
pub fn available_memory() -> Option<u128> {
    crate::util::memory_budget().map(u128::from)
}

/// What the networks of the largest recipe hold while training, bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NetworkMemory {
    /// Weights, gradients and Adam's two moments (4 × 4 bytes per parameter).
    pub state: u128,
    /// One step's activations kept for the backward: G over the batch (and the target images
    /// of a method that reads them), D over its inputs (twice the batch: the positive and the
    /// negative samples) at the training patch. 0 when they live on a GPU
    /// ([`crate::backend::Backend::activations_on_host`]).
    pub activations: u128,
}

impl NetworkMemory {
    pub fn total(&self) -> u128 {
        self.state + self.activations
    }
}

/// The networks' training memory of the largest recipe: G and, for recipes that read the
/// target, D and the other networks beside G (counted as D, the largest) — their parameters'
/// state and one step's activations (see [`NetworkMemory`]).
pub fn network_memory(spec: &PipelineSpec) -> NetworkMemory {
    spec.recipes()
        .iter()
        .map(|r| {
            let (g, d) = crate::networks::param_counts(&r.networks.restorer, &r.networks.diffusion);
            let t = r.train;
            let target = r.method.reads_target(t);
            let p = t.patch;
            let g_images = t.batch + if target { t.noise_da.target_count(t.batch) } else { 0 };
            let mut activations = r.networks.restorer.training_bytes(g_images, p, p) as u128;
            let mut params = g as u128;
            if target {
                params += d as u128;
                activations += r.networks.diffusion.training_bytes(2 * t.batch, p, p) as u128;
            }
            if !spec.backend.activations_on_host() {
                activations = 0;
            }
            NetworkMemory { state: 16 * params, activations }
        })
        .max_by_key(|m| m.total())
        .unwrap_or_default()
}

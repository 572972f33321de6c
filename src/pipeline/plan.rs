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
                    spec.source.count,
                    spec.source.size,
                    spec.source
                        .degradation
                        .as_ref()
                        .map_or_else(|| format!("pairs of {}", spec.source.dataset), |d| d.to_string()),
                    spec.target.count,
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

/// Bytes of image data a run holds in memory, from the configured counts and sizes: source
/// pairs, target images (and pairs for the upper bound), test and validation pairs, as f32
/// RGB. A lower bound for on-disk data whose images are larger than `size`; enough to catch a
/// mistyped count before a run aborts half-way for want of memory.
pub fn data_bytes(spec: &PipelineSpec) -> u128 {
    let pairs = |count: usize, size: usize| 2 * count as u128 * (size as u128).pow(2) * 3 * 4;
    let mut total = pairs(spec.source.count, spec.source.size);
    if spec.uses_target() {
        total += pairs(spec.target.count, spec.target.size) / 2;
    }
    if spec.uses_target_pairs() {
        total += pairs(spec.target.count, spec.target.size);
    }
    let sets = spec.tests.iter().chain(spec.validation.iter().flat_map(|v| v.sets.iter()));
    total + sets.map(|t| pairs(t.count, t.size)).sum::<u128>()
}

/// Memory this machine has available now (Linux `MemAvailable`), if it can tell.
pub fn available_memory() -> Option<u128> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u128 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `n` bytes for people.
pub fn human_bytes(n: u128) -> String {
    let gib = n as f64 / (1u64 << 30) as f64;
    if gib >= 1.0 { format!("{gib:.1} GiB") } else { format!("{:.0} MiB", n as f64 / (1u64 << 20) as f64) }
}

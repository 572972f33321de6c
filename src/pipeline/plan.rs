//! The plan: the ordered stages a resolved pipeline will run, shown before any work starts.

use std::fmt;

use super::spec::{Method, PipelineSpec};

#[derive(Clone, Debug, PartialEq)]
pub enum Stage {
    /// Generate or load the source pairs, target inputs and test sets.
    Data,
    /// Score the unrestored inputs of every test set.
    ScoreInput,
    Train {
        method: Method,
        seed: u64,
    },
    Evaluate {
        method: Method,
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
            Stage::Train { method, seed } => write!(f, "train:{}:seed{seed}", method.name()),
            Stage::Evaluate { method, seed } => write!(f, "evaluate:{}:seed{seed}", method.name()),
            Stage::Report => write!(f, "report"),
        }
    }
}

pub fn plan(spec: &PipelineSpec) -> Vec<Stage> {
    let mut stages = vec![Stage::Data, Stage::ScoreInput];
    for &seed in &spec.seeds.train {
        for &method in &spec.methods {
            stages.push(Stage::Train { method, seed });
            stages.push(Stage::Evaluate { method, seed });
        }
    }
    stages.push(Stage::Report);
    stages
}

/// One line per stage with what it will do, for the start of a run and `plan`.
pub fn describe(spec: &PipelineSpec) -> String {
    let t = &spec.train;
    plan(spec)
        .iter()
        .map(|s| {
            let detail = match s {
                Stage::Data => format!(
                    "source {}×{}² ({}), target {}×{}² from {}, {} test set(s)",
                    spec.source.count,
                    spec.source.size,
                    spec.source.degradation,
                    spec.target.count,
                    spec.target.size,
                    spec.target.dataset,
                    spec.tests.len()
                ),
                Stage::ScoreInput => "PSNR/SSIM of the degraded inputs".into(),
                Stage::Train { .. } => format!("{} steps, batch {}, {}² crops, lr {}", t.steps, t.batch, t.patch, t.lr),
                Stage::Evaluate { .. } => spec
                    .tests
                    .iter()
                    .map(|t| format!("{} ({})", t.name, t.protocol.name()))
                    .collect::<Vec<_>>()
                    .join(", "),
                Stage::Report => "per-image + summary (Parquet, CSV), curves, provenance".into(),
            };
            format!("  {:<28} {detail}", s.to_string())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

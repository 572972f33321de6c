//! The typed pipeline specification: what a `pipelines/*.yaml` file declares once its profile
//! and `--set` overrides are applied. Every struct rejects unknown keys.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::datasets::OnProblem;
use crate::degradations::DegradationSpec;
pub use crate::networks::NetworksSpec;
pub use crate::task::Task;
pub use crate::training::config::{
    CheckpointSpec, Conditions, Method, NoiseDaSpec, Precision, Shards, TrainContext, TrainSpec,
};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Name of the pipeline; reports go to `<report.dir>/<name>/<run-id>/`.
    pub name: String,
    pub task: Task,
    /// Synthetic training pairs: clean images plus a degradation.
    pub source: SourceSpec,
    /// Real (or real-like) degraded images, used without ground truth for training.
    pub target: TargetSpec,
    /// Test sets, each scored with its protocol.
    pub tests: Vec<TestSpec>,
    pub networks: NetworksSpec,
    /// Training recipes to run and compare: `source_only`, `noise_da` or a name from `variants`.
    pub methods: Vec<String>,
    pub train: TrainSpec,
    /// Named recipes: a method plus the `train` keys it changes (ablations, regimes).
    #[serde(default)]
    pub variants: BTreeMap<String, VariantSpec>,
    pub seeds: SeedsSpec,
    pub report: ReportSpec,
    /// Held-out sets scored during training: curves over time and the best checkpoint.
    #[serde(default)]
    pub validation: Option<ValidationSpec>,
    /// Compute back-end: `flex` (CPU, default), `wgpu`, `cuda`, `tch` or `auto`.
    #[serde(default)]
    pub backend: Backend,
    /// Quality gates checked after the report is written; a failed one exits with code 5.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<super::gates::Gate>,
    /// Measurements that explain the adaptation (the D probe, the premise check).
    #[serde(default, skip_serializing_if = "DiagnosticsSpec::is_default")]
    pub diagnostics: DiagnosticsSpec,
    /// Where stages run: `local` (this process) or `slurm` (one job per training stage), with
    /// the cluster's resources. `--executor` on the command line chooses too.
    #[serde(default, skip_serializing_if = "ExecutorSpec::is_default")]
    pub executor: ExecutorSpec,
}

/// What [`crate::training::diagnostics`] measures in a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiagnosticsSpec {
    /// Test set whose degraded images and references the D probe uses after every Noise-DA
    /// training (default: the first test set, the target domain's in every shipped pipeline;
    /// `none`: no probe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<String>,
    /// The premise check of the paper's Fig. 1a; off unless given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub premise: Option<PremiseSpec>,
}

impl DiagnosticsSpec {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The test set the probe reads (`None`: no probe).
    pub(crate) fn probe_set<'a>(&'a self, tests: &'a [TestSpec]) -> Option<&'a str> {
        match self.probe.as_deref() {
            Some("none") => None,
            Some(name) => Some(name),
            None => tests.first().map(|t| t.name.as_str()),
        }
    }
}

/// A diffusion network trained alone, conditioned on reference + AWGN(σ) (σ uniform up to the
/// largest of `sigmas`), then scored per σ on the first test set's references.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PremiseSpec {
    pub steps: usize,
    /// AWGN levels scored, 8-bit units.
    #[serde(default = "default_premise_sigmas")]
    pub sigmas: Vec<f64>,
}

fn default_premise_sigmas() -> Vec<f64> {
    vec![0.0, 5.0, 10.0, 15.0, 25.0, 50.0]
}

pub use crate::backend::Backend;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// Registry name of the clean dataset.
    pub dataset: String,
    /// Images to generate (embedded datasets; required), or a cap on the training patches of
    /// a dataset on disk (default: all of them, as the release trains).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
    /// Side of generated images (embedded datasets), or of the patches a dataset on disk is
    /// tiled into for training (the release: 512, overlap a quarter of it).
    pub size: usize,
    /// How clean images become training pairs. Without it the dataset must hold pairs
    /// already (Rain13K, GoPro: the paper's derain and deblur sources), which are cropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degradation: Option<DegradationSpec>,
    /// Problems in a paired dataset on disk: `fail` (default) or `skip` and report.
    #[serde(default, skip_serializing_if = "OnProblem::is_fail")]
    pub on_problem: OnProblem,
    /// Draw the degradation afresh for every training crop at every step, from (seed, step,
    /// crop), as the release draws its AWGN; `false`: once per image, stored with the pairs.
    /// Default: afresh where that is cheap (awgn, rain); blur is drawn once per image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fresh: Option<bool>,
}

impl SourceSpec {
    /// The degradation to redraw per crop and step, if any (see [`Self::fresh`]).
    pub fn redraw(&self) -> Option<&DegradationSpec> {
        self.degradation.as_ref().filter(|d| self.fresh.unwrap_or_else(|| d.redrawable()))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    pub dataset: String,
    /// Images (embedded data; required), or a cap on the training patches (data on disk;
    /// default: all of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
    /// Image side (embedded data), or patch side (data on disk, tiled like the source).
    pub size: usize,
    /// Missing partners, unreadable files...: `fail` (default) or `skip` and report.
    #[serde(default)]
    pub on_problem: OnProblem,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestSpec {
    /// Name used in reports.
    pub name: String,
    pub dataset: String,
    pub count: usize,
    pub size: usize,
    /// For a synthetic test set: the degradation applied to the dataset's clean test images.
    #[serde(default)]
    pub degradation: Option<DegradationSpec>,
    pub protocol: Protocol,
    /// `fail` (default: a test set must be complete) or `skip` and report.
    #[serde(default)]
    pub on_problem: OnProblem,
    /// What the restorers get: the `degraded` images (default), or the `reference` itself — how
    /// much a restorer changes an already clean image of this domain (its look).
    #[serde(default, skip_serializing_if = "TestInput::is_degraded")]
    pub input: TestInput,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestInput {
    #[default]
    Degraded,
    Reference,
}

impl TestInput {
    fn is_degraded(&self) -> bool {
        *self == TestInput::Degraded
    }
}

/// Scoring protocol, recorded in every report row (see [`crate::protocols`]).
pub use crate::protocols::ProtocolKind as Protocol;

/// A named training recipe. Its `train` is the pipeline's `train` with the variant's keys merged
/// over it (done by the loader, so the resolved spec holds complete settings).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantSpec {
    pub method: Method,
    /// One line for reports.
    #[serde(default)]
    pub about: Option<String>,
    pub train: TrainSpec,
    /// The pipeline's `networks` with the variant's own keys merged over them (e.g. a wider D).
    pub networks: NetworksSpec,
    /// The paper's number for this configuration, printed beside ours (its data, not ours).
    #[serde(default)]
    pub paper: Option<PaperRef>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaperRef {
    pub psnr: f64,
    #[serde(default)]
    pub ssim: Option<f64>,
    /// Where the number comes from, e.g. "Table 4, SIDD".
    pub source: String,
}

/// What one training run executes: a method with its complete settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Recipe<'a> {
    /// `source_only`, `noise_da` or a variant name; names the run's rows in every report.
    pub name: &'a str,
    pub method: Method,
    pub train: &'a TrainSpec,
    pub networks: &'a NetworksSpec,
    pub paper: Option<&'a PaperRef>,
}

impl PipelineSpec {
    /// The recipes as the paper's layout needs them (name, algorithm, the paper's number).
    pub(crate) fn benchmark_recipes(&self) -> Vec<crate::reports::benchmark::RecipeInfo> {
        self.recipes()
            .iter()
            .map(|r| crate::reports::benchmark::RecipeInfo {
                name: r.name.to_string(),
                algorithm: r.method.name().to_string(),
                paper: r.paper.as_ref().map(|p| (p.psnr, p.ssim, p.source.clone())),
            })
            .collect()
    }

    /// The recipes `methods` names, in order (names are checked when the pipeline loads).
    pub fn recipes(&self) -> Vec<Recipe<'_>> {
        self.methods.iter().map(|n| self.recipe(n).expect("validated method name")).collect()
    }

    pub fn recipe<'a>(&'a self, name: &'a str) -> Option<Recipe<'a>> {
        if let Some(v) = self.variants.get(name) {
            return Some(Recipe {
                name,
                method: v.method,
                train: &v.train,
                networks: &v.networks,
                paper: v.paper.as_ref(),
            });
        }
        Method::from_name(name).map(|method| Recipe {
            name,
            method,
            train: &self.train,
            networks: &self.networks,
            paper: None,
        })
    }

    /// The comparison baseline: `report.baseline`, else the first source-only recipe.
    pub fn baseline(&self) -> Option<&str> {
        self.report
            .baseline
            .as_deref()
            .or_else(|| self.recipes().into_iter().find(|r| r.method == Method::SourceOnly).map(|r| r.name))
    }

    /// Whether any recipe trains with the target images (so they must be loaded).
    pub(crate) fn uses_target(&self) -> bool {
        self.recipes().iter().any(|r| r.method.reads_target(&r.train))
    }

    /// Whether a recipe needs the target's training pairs (the upper bound).
    pub(crate) fn uses_target_pairs(&self) -> bool {
        self.recipes().iter().any(|r| r.method == Method::TargetSupervised)
    }
}

/// Validation during training. The first set picks the best checkpoint (by PSNR). A set on a
/// target domain uses its ground truth, which the method itself never sees: treat it as an
/// oracle for monitoring, not as model selection the paper did (it scored the final weights,
/// and so do our reports).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationSpec {
    /// Score every this many steps (and at the last step).
    pub every: usize,
    /// Embedded datasets give images of a separate `val` split; datasets on disk give their
    /// test listing, so register a separate dataset for validation there.
    pub sets: Vec<TestSpec>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedsSpec {
    /// Seed of all data generation.
    pub data: u64,
    /// One training run per seed and method.
    pub train: Vec<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportSpec {
    /// Root folder of reports (`<dir>/<pipeline>/<run-id>/`).
    pub dir: String,
    /// Print the summary table at the end.
    #[serde(default = "yes")]
    pub print_summary: bool,
    /// Method the others are compared with, image by image (ΔPSNR/ΔSSIM with bootstrap
    /// intervals); default: the first source-only recipe.
    #[serde(default)]
    pub baseline: Option<String>,
}

fn yes() -> bool {
    true
}

/// Where a pipeline's stages run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ExecutorKind {
    #[default]
    Local,
    Slurm,
}

/// `executor:` — the kind, and what Slurm jobs ask for. Training stages take `train`'s
/// resources; the final report job (evaluation, reports, gates) takes `report`'s.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorSpec {
    #[serde(default)]
    pub kind: ExecutorKind,
    #[serde(default)]
    pub train: SlurmResources,
    #[serde(default)]
    pub report: SlurmResources,
    /// Seconds between polls of the queue with `--wait` (one `squeue` and one `scontrol` call
    /// for all jobs each time).
    #[serde(default = "default_poll_s")]
    pub poll_s: u64,
}

fn default_poll_s() -> u64 {
    5
}

impl ExecutorSpec {
    fn is_default(&self) -> bool {
        *self == ExecutorSpec { poll_s: default_poll_s(), ..Default::default() }
    }
}

/// One job's `sbatch` resources; unset keys are left to the cluster's defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmResources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// `--time`, e.g. `2-00:00:00`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// `--mem`, e.g. `32G`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<usize>,
    /// `--gres=gpu:N`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<usize>,
    /// Further `sbatch` flags, verbatim (e.g. `--qos=long`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<String>,
}

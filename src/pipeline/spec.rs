//! The typed pipeline specification: what a `pipelines/*.yaml` file declares once its profile
//! and `--set` overrides are applied. Every struct rejects unknown keys.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::datasets::OnProblem;
use crate::degradations::DegradationSpec;
use crate::networks::{DiffusionConfig, RestorerConfig};

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
    pub fn probe_set<'a>(&'a self, tests: &'a [TestSpec]) -> Option<&'a str> {
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    Denoise,
    Derain,
    Deblur,
}

impl Task {
    /// Range of the images fed to the diffusion network (METHOD.md): [0,1] for denoising,
    /// [−1,1] for deraining and deblurring.
    pub fn diffusion_signed(self) -> bool {
        !matches!(self, Task::Denoise)
    }
}

pub use crate::backend::Backend;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// Registry name of the clean dataset.
    pub dataset: String,
    pub count: usize,
    /// Side of generated images (embedded datasets), or of the crops taken from a paired
    /// dataset on disk.
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
    /// Number of training crops (real data) or images (embedded data).
    pub count: usize,
    /// Crop side (real data) or image side (embedded data).
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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworksSpec {
    pub restorer: RestorerConfig,
    pub diffusion: DiffusionConfig,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Charbonnier on synthetic pairs only ("vanilla").
    SourceOnly,
    /// Noise-space domain adaptation (METHOD.md steps 1–8).
    NoiseDa,
    /// Upper bound, not a method: the same restorer trained (Charbonnier) on the target's own
    /// training pairs, ground truth the adaptation never sees. Shows the headroom.
    TargetSupervised,
}

impl Method {
    pub const ALL: [Method; 3] = [Method::SourceOnly, Method::NoiseDa, Method::TargetSupervised];

    pub fn name(self) -> &'static str {
        match self {
            Method::SourceOnly => "source_only",
            Method::NoiseDa => "noise_da",
            Method::TargetSupervised => "target_supervised",
        }
    }

    pub fn from_name(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.name() == name)
    }
}

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
    pub fn uses_target(&self) -> bool {
        self.recipes().iter().any(|r| r.method == Method::NoiseDa && r.train.noise_da.diffusion_loss)
    }

    /// Whether a recipe needs the target's training pairs (the upper bound).
    pub fn uses_target_pairs(&self) -> bool {
        self.recipes().iter().any(|r| r.method == Method::TargetSupervised)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    pub steps: usize,
    /// Synthetic pairs per step (Noise-DA adds as many target images).
    pub batch: usize,
    /// Square training crop side.
    pub patch: usize,
    pub lr: f64,
    #[serde(default = "default_eps")]
    pub charbonnier_eps: f64,
    /// Log a curve row every this many steps.
    #[serde(default = "default_log_every")]
    pub log_every: usize,
    /// Decay of the exponential moving average of the restorer's weights, saved beside the
    /// raw weights (the release: 0.9999; `null` turns it off). Scores use the raw weights.
    #[serde(default = "default_ema")]
    pub ema: Option<f64>,
    /// Arithmetic precision of the training step: `f32` (default, the release), or mixed
    /// `bf16` / `f16` (weights, optimiser and EMA stay f32; see [`Precision`]).
    #[serde(default)]
    pub precision: Precision,
    /// Devices for data-parallel training on one machine: `batch` is split into this many
    /// equal shards, one per device of the back-end (GPU 0..n), their gradients summed into
    /// one update. The release trained 8 GPUs × 24 = batch 192.
    #[serde(default = "one")]
    pub devices: usize,
    /// Shards per device of each step's batch, computed concurrently (each with its own
    /// autodiff graph, gradients summed). `auto`: 2 on the CPU back-end with ≥ 2 threads —
    /// burn's remaining single-threaded ops (concatenation, losses, the optimiser) leave a core
    /// idle — except for DnCNN (BatchNorm would see per-shard statistics), else 1. Every draw
    /// of a step is made per sample before the split, so the result does not depend on it (up
    /// to float summation order).
    #[serde(default)]
    pub shards: Shards,
    /// Start G from the final raw weights of this earlier recipe (same seed) instead of from
    /// scratch: warm-started adaptation; `steps` then counts the extra steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<String>,
    /// When to write the full training state (see [`CheckpointSpec`]).
    #[serde(default)]
    pub checkpoint: CheckpointSpec,
    pub noise_da: NoiseDaSpec,
}

/// `train.shards`: `auto` or a count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Shards {
    #[default]
    Auto,
    Count(usize),
}

impl Serialize for Shards {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Shards::Auto => s.serialize_str("auto"),
            Shards::Count(n) => s.serialize_u64(*n as u64),
        }
    }
}

impl<'de> Deserialize<'de> for Shards {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Shards;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`auto` or a positive number of shards")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Shards, E> {
                match v {
                    "auto" => Ok(Shards::Auto),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Shards, E> {
                if v == 0 {
                    return Err(E::invalid_value(serde::de::Unexpected::Unsigned(v), &self));
                }
                Ok(Shards::Count(v as usize))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Shards, E> {
                if v <= 0 {
                    return Err(E::invalid_value(serde::de::Unexpected::Signed(v), &self));
                }
                Ok(Shards::Count(v as usize))
            }
        }
        d.deserialize_any(V)
    }
}

/// Mixed precision: each step runs forward and backward on a low-precision copy of the
/// networks (a differentiable cast of the f32 weights, so gradients land on the f32 weights),
/// with the loss and optimiser in f32. `f16` multiplies the loss by a fixed scale of 1024 so
/// small gradients do not underflow; Adam's update is invariant to that scale (up to ε).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
    F16,
}

impl Precision {
    /// The compute dtype of a mixed-precision step (`None`: plain f32).
    pub fn compute_dtype(self) -> Option<burn::tensor::DType> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(burn::tensor::DType::BF16),
            Precision::F16 => Some(burn::tensor::DType::F16),
        }
    }

    /// Static loss scale of the backward pass.
    pub fn loss_scale(self) -> f64 {
        if self == Precision::F16 { 1024.0 } else { 1.0 }
    }
}

/// Checkpoints hold both networks, the optimiser state, the EMA, the step (data order and every
/// random draw derive from it) and the curve so far, so a resumed run continues bit-identically.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSpec {
    /// Every this many steps (0: only at the end and when interrupted).
    #[serde(default = "default_ckpt_every")]
    pub every: usize,
    /// How many of the latest step checkpoints to keep (the best one is kept apart).
    #[serde(default = "default_ckpt_keep")]
    pub keep: usize,
}

impl Default for CheckpointSpec {
    fn default() -> Self {
        CheckpointSpec { every: default_ckpt_every(), keep: default_ckpt_keep() }
    }
}

fn one() -> usize {
    1
}

fn default_ckpt_every() -> usize {
    500
}
fn default_ckpt_keep() -> usize {
    2
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

fn default_eps() -> f64 {
    1e-3
}
fn default_log_every() -> usize {
    10
}
fn default_ema() -> Option<f64> {
    Some(0.9999)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoiseDaSpec {
    /// Final weight w of the diffusion loss (α ramps to ≈ 0.987·w).
    pub w: f64,
    /// Steps over which α ramps up (the release: 300 epochs).
    pub ramp_steps: usize,
    /// Margin δ of the residual-swapping hinge.
    pub delta: f64,
    /// Range of diffusion steps t sampled (inclusive; clamped to 1..T−1).
    pub t_range: [usize; 2],
    /// Swap the two condition slots per sample with probability 0.5.
    pub channel_shuffle: bool,
    /// Add the residual-swapping contrastive hinge.
    pub residual_swap: bool,
    /// Train D and add its loss (off: the supervised step only, exactly source-only training;
    /// the "no diffusion" row of the paper's ablation).
    #[serde(default = "yes")]
    pub diffusion_loss: bool,
    /// Which restored images condition D: `both` (the method), or only the `synthetic` or only
    /// the `real` one (ablation; D then takes 6 input channels and slots are not shuffled).
    #[serde(default)]
    pub conditions: Conditions,
    /// Target (real) images per step, the batch composition: `null` = as many as synthetic
    /// pairs (the release). D sees max(batch, target_batch) (ỹ, Ĝ_s, Ĝ_r) triplets, the smaller
    /// side's images reused in order, so every image of both sides reaches D.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_batch: Option<usize>,
    /// D's warm-up: for the first this many steps D trains on G's restored outputs (the step's
    /// usual conditions) while G gets no diffusion gradient, so D is mature before G feels it
    /// (the release reaches the same through its long ramp); α's ramp starts after it. With a
    /// warm-up, D's loss has weight 1 throughout and α scales only the gradient G receives
    /// from it (Adam trains D at its own pace, with no jump when the ramp starts). 0: off.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub d_warmup: usize,
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

impl NoiseDaSpec {
    /// Target images drawn per step for a synthetic batch of `batch`.
    pub fn target_count(&self, batch: usize) -> usize {
        self.target_batch.unwrap_or(batch)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Conditions {
    #[default]
    Both,
    Synthetic,
    Real,
}

impl Conditions {
    /// Number of 3-channel condition images D receives.
    pub fn count(self) -> usize {
        if self == Conditions::Both { 2 } else { 1 }
    }
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

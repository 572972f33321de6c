//! The typed pipeline specification: what a `pipelines/*.yaml` file declares once its profile
//! and `--set` overrides are applied. Every struct rejects unknown keys.

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
    /// Training methods to run and compare.
    pub methods: Vec<Method>,
    pub train: TrainSpec,
    pub seeds: SeedsSpec,
    pub report: ReportSpec,
    /// Compute back-end: `flex` (CPU, default), `wgpu` or `auto`.
    #[serde(default)]
    pub backend: Backend,
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
    /// Side of generated images (embedded datasets).
    pub size: usize,
    pub degradation: DegradationSpec,
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
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::SourceOnly => "source_only",
            Method::NoiseDa => "noise_da",
        }
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
    pub noise_da: NoiseDaSpec,
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
}

fn yes() -> bool {
    true
}

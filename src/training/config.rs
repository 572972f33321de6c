//! Training's own configuration: the `train:` block of a pipeline (steps, batch, optimiser,
//! precision, shards, checkpoints, the Noise-DA terms) and the methods. The pipeline layer
//! composes these into its specification (`pipeline::spec` re-exports them); nothing here
//! knows about pipelines.

use serde::{Deserialize, Serialize};

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
    /// Feature-space adaptation (DANN, Ganin & Lempitsky 2015): a domain classifier on G's
    /// bottleneck features, through a gradient reversal layer, learns to tell synthetic from
    /// target inputs while G learns to make them indistinguishable (`train.dann`).
    Dann,
    /// Self-supervised denoising on the target's noisy images alone (Neighbor2Neighbor, Huang
    /// et al. 2021): no synthetic data; `train.ne2ne`. Denoising only.
    Neighbor2Neighbor,
    /// Pixel-space adaptation (PixelDA, Bousmalis et al. 2017; CyCADA's pixel half): a
    /// translator learns, against a patch discriminator on target inputs, to make synthetic
    /// degraded inputs look like the target's; G trains on (translated input, clean) pairs
    /// (`train.pixel_da`).
    PixelDa,
}

impl Method {
    pub const ALL: [Method; 6] = [
        Method::SourceOnly,
        Method::NoiseDa,
        Method::TargetSupervised,
        Method::Dann,
        Method::Neighbor2Neighbor,
        Method::PixelDa,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Method::SourceOnly => "source_only",
            Method::NoiseDa => "noise_da",
            Method::TargetSupervised => "target_supervised",
            Method::Dann => "dann",
            Method::Neighbor2Neighbor => "neighbor2neighbor",
            Method::PixelDa => "pixel_da",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.name() == name)
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
    /// The `dann` method's settings.
    #[serde(default, skip_serializing_if = "DannSpec::is_default")]
    pub dann: DannSpec,
    /// The `neighbor2neighbor` method's settings.
    #[serde(default, skip_serializing_if = "Ne2NeSpec::is_default")]
    pub ne2ne: Ne2NeSpec,
    /// The `pixel_da` method's settings.
    #[serde(default, skip_serializing_if = "PixelDaSpec::is_default")]
    pub pixel_da: PixelDaSpec,
    /// How batches are read ahead of the step (changes no result: every batch is a function
    /// of its step alone).
    #[serde(default, skip_serializing_if = "LoaderSpec::is_default")]
    pub loader: LoaderSpec,
}

/// `train.loader`: batches are made on `workers` threads (0: on the training thread, when
/// the step needs them), at most `prefetch` steps ahead of the step being trained — memory
/// for `prefetch` batches, whatever the dataset's size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoaderSpec {
    pub workers: usize,
    pub prefetch: usize,
}

impl Default for LoaderSpec {
    fn default() -> Self {
        LoaderSpec { workers: 2, prefetch: 4 }
    }
}

impl LoaderSpec {
    fn is_default(&self) -> bool {
        *self == LoaderSpec::default()
    }

    fn check(&self) -> Check {
        if self.prefetch == 0 || self.prefetch > 1024 {
            return Err(("prefetch".into(), format!("must be 1 to 1024 batches, got {}", self.prefetch)));
        }
        if self.workers > 256 {
            return Err(("workers".into(), format!("must be 0 to 256 threads, got {}", self.workers)));
        }
        Ok(())
    }
}

pub use crate::util::Check;
use crate::util::within;

/// A weight of a loss term: finite and not negative.
fn weight(key: &str, v: f64) -> Check {
    if v >= 0.0 && v.is_finite() {
        Ok(())
    } else {
        Err((key.into(), format!("must be a non-negative number, got {v}")))
    }
}

/// A count or width of at least one.
fn at_least_one(key: &str, v: usize) -> Check {
    if v >= 1 { Ok(()) } else { Err((key.into(), "must be at least 1".into())) }
}

/// What the checks of a `train` section need from the networks it trains.
#[derive(Clone, Copy, Debug)]
pub struct TrainContext {
    /// The networks' down-sampling stride: crops must be multiples of it.
    pub stride: usize,
    /// The restorer has BatchNorm (its running statistics stay f32).
    pub batch_norm: bool,
}

impl TrainSpec {
    /// Every key of this `train` section on its own (cross-section rules — crops against the
    /// data's sizes, warm starts against the recipe order — are the pipeline's).
    pub fn check(&self, ctx: TrainContext) -> Check {
        at_least_one("steps", self.steps)?;
        at_least_one("batch", self.batch)?;
        // Hard limits no real run reaches (the release: 90k steps, batch 192, 128² crops),
        // refused before anything is allocated.
        for (key, v, max) in
            [("steps", self.steps, 1usize << 32), ("batch", self.batch, 1 << 16), ("patch", self.patch, 1 << 13)]
        {
            if v > max {
                return Err((key.into(), format!("{v} is beyond what any run needs (at most {max})")));
            }
        }
        if self.devices == 0 || self.batch % self.devices != 0 {
            return Err((
                "devices".into(),
                format!("the batch ({}) must split into {} equal shards, one per device", self.batch, self.devices),
            ));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(("lr".into(), format!("must be a positive number, got {}", self.lr)));
        }
        if self.patch == 0 || self.patch % ctx.stride != 0 {
            return Err((
                "patch".into(),
                format!(
                    "must be a positive multiple of {} (the networks' down-sampling stride), got {}",
                    ctx.stride, self.patch
                ),
            ));
        }
        within("loader", self.loader.check())?;
        if self.precision != Precision::F32 && ctx.batch_norm {
            return Err((
                "precision".into(),
                "mixed precision is not available for DnCNN (its BatchNorm running statistics stay f32)".into(),
            ));
        }
        within("noise_da", self.noise_da.check(self.devices))?;
        within("dann", self.dann.check())?;
        within("pixel_da", self.pixel_da.check(self.patch))?;
        within("ne2ne", self.ne2ne.check())
    }
}

/// `train.pixel_da`: the translator's losses and the two networks' widths. Per step, with
/// T(x, z) the translated synthetic input and D the patch discriminator (real target = 1):
/// D learns BCE(D(T), 0) + BCE(D(target), 1) (halved); T learns `adversarial` · BCE(D(T), 1)
/// (non-saturating, through a frozen copy of D) + `content` · ‖pool(T) − pool(x)‖₁ (the
/// translated image keeps the input's content at the scale of `content_pool`-pixel blocks, so
/// T changes the degradation, not the scene); G learns Charbonnier(G(T), clean) with T fixed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PixelDaSpec {
    pub adversarial: f64,
    /// 50: chosen on the denoising demo's validation set (camera-sim-val PSNR after 600 steps:
    /// content 1 → 24.65, 10 → 26.05, 25 → 26.47, 50 → 26.56, 100 → 26.29, 200 → 26.32 dB;
    /// source-only 26.35), the same for every task.
    pub content: f64,
    pub content_pool: usize,
    /// Width of the translator's convolutions (the discriminator's first; its second is 2×).
    pub width: usize,
}

impl Default for PixelDaSpec {
    fn default() -> Self {
        PixelDaSpec { adversarial: 1.0, content: 50.0, content_pool: 4, width: 32 }
    }
}

impl PixelDaSpec {
    fn check(&self, patch: usize) -> Check {
        weight("adversarial", self.adversarial)?;
        weight("content", self.content)?;
        at_least_one("width", self.width)?;
        if self.content_pool == 0 || self.content_pool > patch {
            return Err((
                "content_pool".into(),
                format!("must be between 1 and train.patch ({patch}), got {}", self.content_pool),
            ));
        }
        Ok(())
    }

    fn is_default(&self) -> bool {
        *self == PixelDaSpec::default()
    }
}

/// `train.ne2ne`: Neighbor2Neighbor's regulariser weight.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Ne2NeSpec {
    /// Final γ of the regulariser, reached linearly over the training (as Huang et al. ramp it).
    pub gamma: f64,
}

impl Default for Ne2NeSpec {
    fn default() -> Self {
        Ne2NeSpec { gamma: 2.0 }
    }
}

impl Ne2NeSpec {
    fn check(&self) -> Check {
        weight("gamma", self.gamma)
    }

    fn is_default(&self) -> bool {
        *self == Ne2NeSpec::default()
    }

    /// γ at `step` of `steps`.
    pub fn gamma_at(&self, step: usize, steps: usize) -> f64 {
        self.gamma * step as f64 / steps.max(1) as f64
    }
}

/// `train.dann`: DANN's domain-adversarial term.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DannSpec {
    /// Final weight λ of the reversed classifier gradient into G.
    pub lambda: f64,
    /// Steps over which λ ramps DANN-style, λ·(2/(1+e^(−10p)) − 1) (default: all of them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ramp_steps: Option<usize>,
    /// Hidden width of the domain classifier (global average pool → linear → LeakyReLU →
    /// linear → one logit).
    pub hidden: usize,
}

impl Default for DannSpec {
    fn default() -> Self {
        DannSpec { lambda: 1.0, ramp_steps: None, hidden: 64 }
    }
}

impl DannSpec {
    fn check(&self) -> Check {
        weight("lambda", self.lambda)?;
        at_least_one("hidden", self.hidden)
    }

    fn is_default(&self) -> bool {
        *self == DannSpec::default()
    }

    /// λ at `step` of `steps`.
    pub fn lambda_at(&self, step: usize, steps: usize) -> f64 {
        let ramp = self.ramp_steps.unwrap_or(steps).max(1) as f64;
        let p = (step as f64 / ramp).min(1.0);
        self.lambda * (2.0 / (1.0 + (-10.0 * p).exp()) - 1.0)
    }
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
    pub(crate) fn compute_dtype(self) -> Option<burn::tensor::DType> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(burn::tensor::DType::BF16),
            Precision::F16 => Some(burn::tensor::DType::F16),
        }
    }

    /// Static loss scale of the backward pass.
    pub(crate) fn loss_scale(self) -> f64 {
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
    fn check(&self, devices: usize) -> Check {
        if let Some(tb) = self.target_batch
            && (tb == 0 || tb % devices != 0)
        {
            return Err((
                "target_batch".into(),
                format!("must be a positive multiple of the devices ({devices}), got {tb}"),
            ));
        }
        let [lo, hi] = self.t_range;
        if !(1 <= lo && lo <= hi && hi <= 1000) {
            return Err(("t_range".into(), format!("needs 1 <= lo <= hi <= 1000, got {:?}", self.t_range)));
        }
        Ok(())
    }

    /// Target images drawn per step for a synthetic batch of `batch`.
    pub(crate) fn target_count(&self, batch: usize) -> usize {
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

fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `train` section checks its own keys, each failure naming its key within the section
    /// (the pipeline adds the section and the file position).
    #[test]
    fn train_sections_check_their_own_keys() {
        let base: TrainSpec = serde_json::from_value(serde_json::json!({
            "steps": 10, "batch": 4, "patch": 32, "lr": 1e-3,
            "noise_da": {"w": 0.2, "ramp_steps": 10, "delta": 0.1, "t_range": [1, 1000],
                         "channel_shuffle": true, "residual_swap": true}
        }))
        .unwrap();
        let ctx = TrainContext { stride: 4, batch_norm: false };
        assert_eq!(base.check(ctx), Ok(()));
        let key = |t: TrainSpec, ctx: TrainContext| t.check(ctx).unwrap_err().0;
        assert_eq!(key(TrainSpec { steps: 0, ..base.clone() }, ctx), "steps");
        assert_eq!(key(TrainSpec { devices: 3, ..base.clone() }, ctx), "devices");
        assert_eq!(key(TrainSpec { lr: f64::NAN, ..base.clone() }, ctx), "lr");
        assert_eq!(key(TrainSpec { patch: 30, ..base.clone() }, ctx), "patch");
        assert_eq!(key(base.clone(), TrainContext { stride: 64, batch_norm: false }), "patch");
        assert_eq!(
            key(TrainSpec { precision: Precision::Bf16, ..base.clone() }, TrainContext { batch_norm: true, ..ctx }),
            "precision"
        );
        assert_eq!(
            key(TrainSpec { loader: LoaderSpec { workers: 2, prefetch: 0 }, ..base.clone() }, ctx),
            "loader.prefetch"
        );
        let nd = |f: fn(&mut NoiseDaSpec)| {
            let mut t = base.clone();
            f(&mut t.noise_da);
            t
        };
        assert_eq!(key(nd(|n| n.t_range = [5, 2]), ctx), "noise_da.t_range");
        assert_eq!(key(nd(|n| n.target_batch = Some(0)), ctx), "noise_da.target_batch");
        assert_eq!(
            key(TrainSpec { dann: DannSpec { lambda: -1.0, ..Default::default() }, ..base.clone() }, ctx),
            "dann.lambda"
        );
        assert_eq!(
            key(TrainSpec { dann: DannSpec { hidden: 0, ..Default::default() }, ..base.clone() }, ctx),
            "dann.hidden"
        );
        let pool = PixelDaSpec { content_pool: 64, ..Default::default() };
        assert_eq!(key(TrainSpec { pixel_da: pool, ..base.clone() }, ctx), "pixel_da.content_pool");
        assert_eq!(
            key(TrainSpec { ne2ne: Ne2NeSpec { gamma: f64::INFINITY, ..Default::default() }, ..base }, ctx),
            "ne2ne.gamma"
        );
    }
}

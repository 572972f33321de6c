//! Training: the source-only baseline and Noise-DA on burn, plus restoring images with G.
//!
//! Noise-DA follows METHOD.md steps 1–8: G and the diffusion network D live in one module and
//! are updated by one Adam optimiser in the same step; the diffusion loss reaches G through
//! both condition slots; slots are shuffled per sample; a residual-swapped negative pair adds a
//! hinge; α ramps DANN-style.

pub(crate) mod batch;
pub(crate) mod checkpoint;
pub mod config;
pub mod diagnostics;
pub(crate) mod ema;
mod inference;
pub(crate) mod losses;
mod noise_da;
mod prefetch;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{DType, Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::datasets::{CropPool, PairedSet, TargetTrainSet};
use crate::error::{ExitCode, Failure, Result};
use crate::image::Image;
use crate::networks::NetworksSpec;
use crate::networks::{DiffusionUNet, NoiseSchedule, Restorer, like};
use crate::protocols::ProtocolKind;
use crate::rng::Rng;
use crate::task::Task;
use batch::{from_tensor, sample_batch, to_tensor};
pub use config::{Conditions, Method, TrainSpec};
pub use inference::{restore_image, translate_image};
use losses::{alpha_ramp, charbonnier, hinge, slot_swap};
pub use noise_da::*;

/// G and D as one module, so one optimiser updates both (the paper's joint training).
#[derive(Module, Debug)]
pub struct NoiseDaModel {
    pub g: Restorer,
    pub d: DiffusionUNet,
}

/// G and DANN's domain classifier as one module (one optimiser; the reversal layer between
/// them makes G's update adversarial).
#[derive(Module, Debug)]
pub struct DannModel {
    pub g: Restorer,
    pub c: crate::networks::domain::DomainClassifier,
}

/// G, PixelDA's translator T and its patch discriminator D as one module (one optimiser; each
/// term reaches only the network it trains — see [`config::PixelDaSpec`]).
#[derive(Module, Debug)]
pub struct PixelDaModel {
    pub g: Restorer,
    pub t: crate::networks::pixel_da::Translator,
    pub d: crate::networks::pixel_da::PatchDiscriminator,
}

/// One row of the training-curve table (means over the logging window).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CurvePoint {
    pub step: usize,
    #[serde(with = "checkpoint::exact_f64")]
    pub loss: f64,
    #[serde(with = "checkpoint::exact_f64")]
    pub charbonnier: f64,
    /// Diffusion MSE with the true (positive) conditions; NaN for source-only.
    #[serde(with = "checkpoint::exact_f64")]
    pub mse_pos: f64,
    /// Diffusion MSE with residual-swapped (negative) conditions.
    #[serde(with = "checkpoint::exact_f64")]
    pub mse_neg: f64,
    #[serde(with = "checkpoint::exact_f64")]
    pub hinge: f64,
    /// Fraction of steps in the window whose hinge was active.
    #[serde(with = "checkpoint::exact_f64")]
    pub hinge_active: f64,
    /// Noise-DA's α, or DANN's λ.
    #[serde(with = "checkpoint::exact_f64")]
    pub alpha: f64,
    /// DANN's domain-classifier loss (binary cross-entropy; ln 2 ≈ 0.693 = chance).
    #[serde(with = "checkpoint::exact_f64", default = "nan")]
    pub domain: f64,
    /// Neighbor2Neighbor's reconstruction term ‖G(g1(y)) − g2(y)‖² and regulariser.
    #[serde(with = "checkpoint::exact_f64", default = "nan")]
    pub rec: f64,
    #[serde(with = "checkpoint::exact_f64", default = "nan")]
    pub reg: f64,
    /// PixelDA's discriminator loss (ln 2 ≈ 0.693 = chance), the translator's adversarial
    /// term and its content term.
    #[serde(with = "checkpoint::exact_f64", default = "nan")]
    pub disc: f64,
    #[serde(with = "checkpoint::exact_f64", default = "nan")]
    pub adv: f64,
    #[serde(with = "checkpoint::exact_f64", default = "nan")]
    pub content: f64,
    /// Training seconds so far (all sessions of a resumed run).
    #[serde(with = "checkpoint::exact_f64")]
    pub elapsed_s: f64,
    /// Norm of the diffusion loss's gradient on G's synthetic / real residuals (Noise-DA, at
    /// logged steps): how much of the adaptation signal reaches G through each domain.
    #[serde(with = "checkpoint::exact_f64", default = "nan")]
    pub grad_syn: f64,
    #[serde(with = "checkpoint::exact_f64", default = "nan")]
    pub grad_real: f64,
    /// Mean PSNR of each validation set, when scored at this step (in the sets' order).
    #[serde(default)]
    pub val_psnr: Vec<f64>,
}

fn nan() -> f64 {
    f64::NAN
}

/// Live progress of one step, for progress bars and logs.
pub struct StepInfo<'a> {
    pub step: usize,
    pub steps: usize,
    pub latest: &'a CurvePoint,
}

pub struct Trained {
    pub restorer: Restorer,
    /// Noise-DA's diffusion network at the end (inference weights), for diagnostics.
    pub diffusion: Option<DiffusionUNet>,
    /// The moving average of the restorer's weights, when `train.ema` is set.
    pub restorer_ema: Option<Restorer>,
    /// PixelDA's translator at the end (inference weights): what it makes of synthetic inputs.
    pub translator: Option<crate::networks::pixel_da::Translator>,
    pub curve: Vec<CurvePoint>,
    pub steps_done: usize,
    /// Step this session started from (0 unless continued from a checkpoint).
    pub resumed_from: usize,
    /// Seconds and steps per second of this session.
    pub wall_s: f64,
    pub steps_per_s: f64,
    pub params_g: usize,
    /// Parameters of the networks trained beside G, in all (`params_d`) and by name
    /// (diffusion; classifier; translator and discriminator).
    pub params_d: Option<usize>,
    pub params_extra: Vec<(&'static str, usize)>,
    /// Shards each step was split into (all devices).
    pub shards: usize,
    /// The newest step checkpoint and the best-on-validation one, when checkpointing.
    pub last_checkpoint: Option<PathBuf>,
    pub best_checkpoint: Option<(PathBuf, f64)>,
}

/// A held-out set scored during training.
pub struct ValidationSet<'a> {
    pub name: &'a str,
    pub protocol: ProtocolKind,
    pub set: &'a PairedSet,
}

pub struct TrainInputs<'a> {
    pub task: Task,
    pub spec: &'a TrainSpec,
    pub nets: &'a NetworksSpec,
    /// Start G from these weights (a restorer file saved by an earlier training).
    pub init_restorer: Option<&'a Path>,
    pub source: &'a PairedSet,
    /// Target inputs; `None` for source-only training.
    pub target: Option<&'a TargetTrainSet>,
    pub seed: u64,
    pub device: Device,
    pub stop: &'a AtomicBool,
    /// Folder of this training's checkpoints; when it holds one, training continues from the
    /// newest. `None`: no checkpoints (benchmarks, unit tests).
    pub checkpoints: Option<&'a Path>,
    /// Identifies the training (see `checkpoint::State::fingerprint`).
    pub fingerprint: String,
    pub validation: &'a [ValidationSet<'a>],
    /// Score the validation sets every this many steps and at the end (0: never).
    pub validate_every: usize,
    /// Further devices for data-parallel training (`train.devices` > 1); empty: `device` only.
    pub data_parallel: Vec<Device>,
}

fn scalar(t: Tensor<1>) -> f64 {
    crate::networks::like(t, DType::F32).into_data().try_to_vec::<f32>().expect("f32")[0] as f64
}

/// A differentiable low-precision view of a module: every float parameter cast to `dtype`
/// (same parameter ids; gradients flow back through the casts to the f32 weights).
struct CastParams(DType);

impl burn::module::ModuleMapper for CastParams {
    fn map_float<const D: usize>(&mut self, param: burn::module::Param<Tensor<D>>) -> burn::module::Param<Tensor<D>> {
        let dtype = self.0;
        param.map(|t| t.cast(dtype))
    }
}

fn lowered<M: Module>(m: &M, dtype: Option<DType>) -> M {
    match dtype {
        Some(d) => m.clone().map(&mut CastParams(d)),
        None => m.clone(),
    }
}

/// The trained module(s) between steps.
enum Held {
    G(Restorer),
    Joint(NoiseDaModel),
    Dann(DannModel),
    PixelDa(PixelDaModel),
}

impl Held {
    fn g(&self) -> &Restorer {
        match self {
            Held::G(g) => g,
            Held::Joint(m) => &m.g,
            Held::Dann(m) => &m.g,
            Held::PixelDa(m) => &m.g,
        }
    }

    fn save(&self, path: &Path) -> Result<()> {
        let r = match self {
            Held::G(g) => g.clone().save_file(path),
            Held::Joint(m) => m.clone().save_file(path),
            Held::Dann(m) => m.clone().save_file(path),
            Held::PixelDa(m) => m.clone().save_file(path),
        };
        r.map_err(|e| Failure::internal(format!("{}: cannot save weights: {e}", path.display())))
    }

    /// A replica on another device (same parameter ids, for data parallelism).
    fn fork(&self, device: &Device) -> Held {
        match self {
            Held::G(g) => Held::G(g.clone().fork(device)),
            Held::Joint(m) => Held::Joint(m.clone().fork(device)),
            Held::Dann(m) => Held::Dann(m.clone().fork(device)),
            Held::PixelDa(m) => Held::PixelDa(m.clone().fork(device)),
        }
    }

    fn step(self, optim: &mut burn::optim::ModuleOptimizer, lr: f64, grads: GradientsParams) -> Held {
        match self {
            Held::G(g) => Held::G(optim.step(lr, g, grads)),
            Held::Joint(m) => Held::Joint(optim.step(lr, m, grads)),
            Held::Dann(m) => Held::Dann(optim.step(lr, m, grads)),
            Held::PixelDa(m) => Held::PixelDa(optim.step(lr, m, grads)),
        }
    }

    fn step_multi(
        self,
        optim: &mut burn::optim::ModuleOptimizer,
        lr: f64,
        grads: burn::optim::MultiGradientsParams,
    ) -> Held {
        match self {
            Held::G(g) => Held::G(optim.step_multi(lr, g, grads)),
            Held::Joint(m) => Held::Joint(optim.step_multi(lr, m, grads)),
            Held::Dann(m) => Held::Dann(optim.step_multi(lr, m, grads)),
            Held::PixelDa(m) => Held::PixelDa(optim.step_multi(lr, m, grads)),
        }
    }

    fn load(self, path: &Path) -> Result<Held> {
        let err = |e: burn::store::RecordError| {
            Failure::internal(format!("{}: cannot load weights (not this training's checkpoint?): {e}", path.display()))
        };
        Ok(match self {
            Held::G(g) => Held::G(g.try_load_file(path).map_err(err)?),
            Held::Joint(m) => Held::Joint(m.try_load_file(path).map_err(err)?),
            Held::Dann(m) => Held::Dann(m.try_load_file(path).map_err(err)?),
            Held::PixelDa(m) => Held::PixelDa(m.try_load_file(path).map_err(err)?),
        })
    }
}

/// Settings shared by the shards of one step.
struct StepCtx<'a> {
    spec: &'a TrainSpec,
    schedule: &'a NoiseSchedule,
    signed: bool,
    alpha: f64,
    /// Multiplies the loss before backward (mixed-precision scale ÷ shards).
    scale: f64,
    /// Also measure the per-domain gradient norms (logged steps).
    diagnose: bool,
    /// D warm-up step: D learns, G gets no diffusion gradient.
    warmup: bool,
    /// Neighbor2Neighbor: (γ of this step, the step's seed for the sub-sampler's draws).
    ne2ne: Option<(f64, u64)>,
    /// PixelDA: the step's seed for the translator's noise (drawn per pair).
    pixel_da: Option<u64>,
}

impl StepCtx<'_> {
    fn noise_da(&self) -> NoiseDaStep<'_> {
        NoiseDaStep {
            spec: self.spec,
            schedule: self.schedule,
            signed: self.signed,
            alpha: self.alpha,
            warmup: self.warmup,
        }
    }
}

/// One shard of a step: the module replica that computes it, its device, its part of the
/// batch and the pairs it holds (indices into the step's [`StepDraws`]).
struct Shard<'a> {
    held: &'a Held,
    device: &'a Device,
    batch: batch::Batch,
    pairs: std::ops::Range<usize>,
}

/// A shard after its forward pass: source-only is done (its gradients), Noise-DA waits for the
/// whole batch's hinge state before its backward.
enum Forwarded {
    G { charbonnier: f64, grads: GradientsParams },
    Joint(JointForward),
    Dann { charbonnier: f64, domain: f64, grads: GradientsParams },
    Ne2Ne { rec: f64, reg: f64, gamma: f64, grads: GradientsParams },
    PixelDa { charbonnier: f64, disc: f64, adv: f64, content: f64, grads: GradientsParams },
}

/// A Noise-DA shard after its forward: its inputs (for the diagnostic's own forward), its
/// differentiable terms, and their values read back.
struct JointForward {
    inputs: [Tensor<4>; 3],
    terms: NoiseDaForward,
    charbonnier: f64,
    mse_pos: f64,
    mse_neg: Option<f64>,
}

/// `f` over `items`, concurrently on rayon's threads when there are several (each shard has its
/// own autodiff graph, so forward and backward passes overlap); inline for one.
fn par_map<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync + Send) -> Vec<R> {
    use rayon::prelude::*;
    if items.len() == 1 {
        return items.into_iter().map(f).collect();
    }
    items.into_par_iter().map(f).collect()
}

/// Forward and backward of one step over its shards: the step's loss terms (whole-batch means)
/// and each shard's gradients. With Noise-DA the hinge is a function of the whole batch's mean
/// MSEs, so each shard's forward reports its MSEs first, and every shard then backpropagates a
/// loss with the whole batch's hinge gradient (see [`NoiseDaForward::total`]).
fn run_step(shards: &[Shard], ctx: &StepCtx, draws: Option<&StepDraws>) -> (CurvePoint, Vec<GradientsParams>) {
    let spec = ctx.spec;
    let low = spec.precision.compute_dtype();
    let nda = ctx.noise_da();
    let forwarded = par_map(shards.iter().collect(), |sh: &Shard| {
        let input = |imgs: &[Image]| {
            let t = to_tensor(imgs, sh.device);
            low.map_or(t.clone(), |d| t.cast(d))
        };
        let x_s = input(&sh.batch.source_degraded);
        let y_s = input(&sh.batch.source_clean);
        match sh.held {
            Held::G(g) if ctx.ne2ne.is_some() => {
                let (gamma, seed) = ctx.ne2ne.expect("checked");
                // Target noisy images only: g1(y) → G → compared with g2(y), and the
                // regulariser with the same sub-sampling of G(y) (no gradient through it).
                let y = &sh.batch.target;
                let m = lowered(g, low);
                let full = from_tensor(m.restore(input(y)).detach());
                let (mut g1, mut g2, mut f1, mut f2) = (vec![], vec![], vec![], vec![]);
                for (j, (img, out)) in y.iter().zip(&full).enumerate() {
                    let mut rng = Rng::derive(seed, "pairs", &[(sh.pairs.start + j) as u64]);
                    let ch = batch::neighbour_choices(img.width, img.height, &mut rng);
                    let (a, b) = batch::neighbour_subsample(img, &ch);
                    let (fa, fb) = batch::neighbour_subsample(out, &ch);
                    g1.push(a);
                    g2.push(b);
                    f1.push(fa);
                    f2.push(fb);
                }
                let pred = m.restore(input(&g1));
                let diff = pred - input(&g2);
                let rec = like(diff.clone().powf_scalar(2.0).mean(), DType::F32);
                let reg = like((diff - (input(&f1) - input(&f2))).powf_scalar(2.0).mean(), DType::F32);
                let (rec_v, reg_v) = (scalar(rec.clone()), scalar(reg.clone()));
                let grads = GradientsParams::from_grads(((rec + reg * gamma) * ctx.scale).backward(), g);
                Forwarded::Ne2Ne { rec: rec_v, reg: reg_v, gamma, grads }
            }
            Held::G(g) => {
                let loss = charbonnier(lowered(g, low).restore(x_s), y_s, spec.charbonnier_eps);
                let loss = like(loss, DType::F32);
                let charbonnier = scalar(loss.clone());
                Forwarded::G { charbonnier, grads: GradientsParams::from_grads((loss * ctx.scale).backward(), g) }
            }
            Held::Dann(model) => {
                let m = lowered(model, low);
                let x_r = input(&sh.batch.target);
                let (ns, nr) = (x_s.dims()[0], x_r.dims()[0]);
                let (res_s, f_s) = m.g.residual_and_features(x_s.clone());
                let (_, f_r) = m.g.residual_and_features(x_r);
                let charb = like(charbonnier(res_s + x_s, y_s, spec.charbonnier_eps), DType::F32);
                // Synthetic 0, target 1; the classifier learns them, G (through the reversal) unlearns.
                let feats = crate::networks::domain::reverse_gradient(Tensor::cat(vec![f_s, f_r], 0), ctx.alpha);
                let logits = like(m.c.forward(feats), DType::F32);
                let mut labels = vec![0f32; ns];
                labels.extend(std::iter::repeat_n(1f32, nr));
                let labels = Tensor::<2>::from_data(TensorData::new(labels, [ns + nr, 1]), sh.device);
                let domain = crate::networks::domain::bce_with_logits(logits, labels);
                let (c_val, d_val) = (scalar(charb.clone()), scalar(domain.clone()));
                let grads = GradientsParams::from_grads(((charb + domain) * ctx.scale).backward(), model);
                Forwarded::Dann { charbonnier: c_val, domain: d_val, grads }
            }
            Held::PixelDa(model) => {
                let m = lowered(model, low);
                let p = &spec.pixel_da;
                let x_r = input(&sh.batch.target);
                let [n, _, h, w] = x_s.dims();
                let seed = ctx.pixel_da.expect("PixelDA's seed");
                let mut z = Vec::with_capacity(n * h * w);
                for j in 0..n {
                    let mut rng = Rng::derive(seed, "z", &[(sh.pairs.start + j) as u64]);
                    z.extend((0..h * w).map(|_| rng.normal() as f32));
                }
                let z = like(Tensor::<4>::from_data(TensorData::new(z, [n, 1, h, w]), sh.device), x_s.dtype());
                let fake = m.t.forward(x_s.clone(), z);
                let bce = |logits: Tensor<2>, label: f32| {
                    let logits = like(logits, DType::F32);
                    let labels = Tensor::<2>::full(logits.dims(), label, sh.device);
                    crate::networks::domain::bce_with_logits(logits, labels)
                };
                // D: translated 0, target 1 (T fixed).
                let disc = (bce(m.d.forward(fake.clone().detach()), 0.0) + bce(m.d.forward(x_r), 1.0)) * 0.5;
                // T: fool D (non-saturating; a frozen copy, so this term does not train D) and
                // keep the input's content at the scale of the pooling blocks.
                let adv = bce(m.d.clone().no_grad().forward(fake.clone()), 1.0);
                let pool = |x: Tensor<4>| {
                    let k = p.content_pool.max(1);
                    burn::tensor::module::avg_pool2d(
                        x,
                        burn::tensor::ops::AvgPoolOptions::new([k, k]).with_stride([k, k]),
                    )
                };
                let content = like((pool(fake.clone()) - pool(x_s)).abs().mean(), DType::F32);
                // G: the translated input, T fixed (G does not steer the translation).
                let charb = like(charbonnier(m.g.restore(fake.detach()), y_s, spec.charbonnier_eps), DType::F32);
                let vals = [&charb, &disc, &adv, &content].map(|t| scalar((*t).clone()));
                let total = charb + disc + adv * p.adversarial + content * p.content;
                let grads = GradientsParams::from_grads((total * ctx.scale).backward(), model);
                Forwarded::PixelDa { charbonnier: vals[0], disc: vals[1], adv: vals[2], content: vals[3], grads }
            }
            Held::Joint(model) => {
                let x_r = input(&sh.batch.target);
                let draws = draws.expect("Noise-DA draws").shard(sh.pairs.clone());
                let terms = noise_da_forward(&lowered(model, low), x_s.clone(), y_s.clone(), x_r.clone(), &nda, &draws);
                Forwarded::Joint(JointForward {
                    charbonnier: scalar(like(terms.charbonnier.clone(), DType::F32)),
                    mse_pos: scalar(like(terms.mse_pos.clone(), DType::F32)),
                    mse_neg: terms.mse_neg.clone().map(|t| scalar(like(t, DType::F32))),
                    inputs: [x_s, y_s, x_r],
                    terms,
                })
            }
        }
    });
    let s = shards.len() as f64;
    let mut point = CurvePoint {
        mse_pos: f64::NAN,
        mse_neg: f64::NAN,
        hinge: f64::NAN,
        hinge_active: f64::NAN,
        alpha: f64::NAN,
        domain: f64::NAN,
        rec: f64::NAN,
        reg: f64::NAN,
        disc: f64::NAN,
        adv: f64::NAN,
        content: f64::NAN,
        grad_syn: f64::NAN,
        grad_real: f64::NAN,
        ..Default::default()
    };
    if matches!(forwarded[0], Forwarded::G { .. }) {
        let mut grads = Vec::with_capacity(forwarded.len());
        let mut sum = 0.0;
        for f in forwarded {
            let Forwarded::G { charbonnier, grads: g } = f else { unreachable!("one method per step") };
            sum += charbonnier;
            grads.push(g);
        }
        point.charbonnier = sum / s;
        point.loss = point.charbonnier;
        return (point, grads);
    }
    if matches!(forwarded[0], Forwarded::Ne2Ne { .. }) {
        let mut grads = Vec::with_capacity(forwarded.len());
        let (mut a, mut b, mut gm) = (0.0, 0.0, 0.0);
        for f in forwarded {
            let Forwarded::Ne2Ne { rec, reg, gamma, grads: g } = f else { unreachable!("one method per step") };
            a += rec;
            b += reg;
            gm = gamma;
            grads.push(g);
        }
        point.charbonnier = f64::NAN;
        point.rec = a / s;
        point.reg = b / s;
        point.alpha = gm;
        point.loss = point.rec + gm * point.reg;
        return (point, grads);
    }
    if matches!(forwarded[0], Forwarded::Dann { .. }) {
        let mut grads = Vec::with_capacity(forwarded.len());
        let (mut c, mut d) = (0.0, 0.0);
        for f in forwarded {
            let Forwarded::Dann { charbonnier, domain, grads: g } = f else { unreachable!("one method per step") };
            c += charbonnier;
            d += domain;
            grads.push(g);
        }
        point.charbonnier = c / s;
        point.domain = d / s;
        point.alpha = ctx.alpha;
        point.loss = point.charbonnier + point.domain;
        return (point, grads);
    }
    if matches!(forwarded[0], Forwarded::PixelDa { .. }) {
        let mut grads = Vec::with_capacity(forwarded.len());
        let mut sums = [0.0; 4];
        for f in forwarded {
            let Forwarded::PixelDa { charbonnier, disc, adv, content, grads: g } = f else {
                unreachable!("one method per step")
            };
            for (a, v) in sums.iter_mut().zip([charbonnier, disc, adv, content]) {
                *a += v;
            }
            grads.push(g);
        }
        [point.charbonnier, point.disc, point.adv, point.content] = sums.map(|v| v / s);
        let p = &spec.pixel_da;
        point.loss = point.charbonnier + point.disc + p.adversarial * point.adv + p.content * point.content;
        return (point, grads);
    }
    // Noise-DA: the whole batch's MSEs and hinge state, then every shard's backward.
    let joint: Vec<JointForward> = forwarded
        .into_iter()
        .map(|f| match f {
            Forwarded::Joint(j) => j,
            Forwarded::G { .. } | Forwarded::Dann { .. } | Forwarded::Ne2Ne { .. } | Forwarded::PixelDa { .. } => {
                unreachable!("one method per step")
            }
        })
        .collect();
    let mean = |f: fn(&JointForward) -> f64| joint.iter().map(f).sum::<f64>() / s;
    point.charbonnier = mean(|j| j.charbonnier);
    let pos = mean(|j| j.mse_pos);
    let neg = mean(|j| j.mse_neg.unwrap_or(f64::NAN));
    let weight = joint[0].terms.weight;
    let residual_swap = spec.noise_da.residual_swap;
    let hinge_value = (pos - neg + spec.noise_da.delta).max(0.0);
    let active = residual_swap && hinge_value > 0.0;
    point.alpha = ctx.alpha;
    point.mse_pos = pos;
    let l_noise = if residual_swap {
        point.mse_neg = neg;
        point.hinge = hinge_value;
        point.hinge_active = if active { 1.0 } else { 0.0 };
        0.5 * (pos + hinge_value)
    } else {
        pos
    };
    point.loss = point.charbonnier + weight * l_noise;
    let done = par_map(joint.into_iter().zip(shards).collect(), |(j, sh): (JointForward, &Shard)| {
        let JointForward { inputs: [x_s, y_s, x_r], terms, .. } = j;
        let Held::Joint(model) = sh.held else { unreachable!() };
        let loss = like(terms.total(active), DType::F32);
        let grads = GradientsParams::from_grads((loss * ctx.scale).backward(), model);
        // Its own forward (a graph is consumed by its backward), the step's draws.
        let sq = ctx.diagnose.then(|| {
            let draws = draws.expect("Noise-DA draws").shard(sh.pairs.clone());
            condition_gradient_sq_norms(&lowered(model, low), x_s, y_s, x_r, &nda, &draws, active)
        });
        (grads, sq)
    });
    if ctx.diagnose {
        // The whole batch's loss is the mean of the shards': its gradient on a shard's rows is
        // 1/s of the shard's own.
        let (a, b) = done.iter().filter_map(|d| d.1).fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
        (point.grad_syn, point.grad_real) = (a.sqrt() / s, b.sqrt() / s);
    }
    (point, done.into_iter().map(|d| d.0).collect())
}

/// Mean PSNR of each validation set restored by `g` (inference weights, no randomness).
fn validate(g: &Restorer, sets: &[ValidationSet], stride: usize, device: &Device) -> Vec<f64> {
    let g = g.clone().valid();
    sets.iter()
        .map(|v| {
            // A set on disk is read a chunk at a time; one that cannot be read scores NaN.
            let mut sum = 0.0;
            for chunk in v.set.chunks(crate::datasets::EVAL_CHUNK) {
                let Ok(chunk) = chunk else { return f64::NAN };
                sum += chunk
                    .iter()
                    .map(|item| {
                        let out = restore_image(&g, &item.degraded, stride, device);
                        crate::protocols::score(v.protocol, &out, &item.clean).map(|s| s.psnr).unwrap_or(f64::NAN)
                    })
                    .sum::<f64>();
            }
            sum / v.set.len().max(1) as f64
        })
        .collect()
}

/// Shards per device for `method` (see [`TrainSpec::shards`]); `cpu`: the device is flex.
/// `auto` shards on the CPU (measured on 2 cores with our kernels, 2 shards against 1: demo
/// shapes source-only 56 → 71 and Noise-DA 5.3 → 7.8 steps/s, paper128 source-only 1.12 →
/// 1.22; with burn's own ops source-only had lost, 14.1 → 9.9), only when the batch splits
/// evenly, and never a restorer with BatchNorm (DnCNN), whose batch statistics would become
/// per-shard.
fn shards_per_device(
    method: Method,
    spec: &TrainSpec,
    nets: &NetworksSpec,
    cpu: bool,
    devices: usize,
) -> Result<usize> {
    let target = spec.noise_da.target_count(spec.batch);
    let splits = |n: usize| spec.batch % (devices * n) == 0 && (method != Method::NoiseDa || (target == spec.batch));
    match spec.shards {
        config::Shards::Count(n) if n <= 1 => Ok(1),
        config::Shards::Count(n) => {
            if !splits(n) {
                return Err(Failure::config(format!(
                    "train.shards: {n} shards × {devices} device(s) need a batch ({}) that divides into them{}",
                    spec.batch,
                    if method == Method::NoiseDa { " and noise_da.target_batch equal to batch" } else { "" }
                )));
            }
            Ok(n)
        }
        config::Shards::Auto => {
            let batch_norm = nets.restorer.batch_norm();
            let two = cpu && !batch_norm && rayon::current_num_threads() >= 2 && splits(2);
            Ok(if two { 2 } else { 1 })
        }
    }
}

/// Train `method`; `on_step` is called after every step. With a checkpoint folder, the state is
/// saved every `train.checkpoint.every` steps, at the end and when stopped, and training
/// continues from the newest checkpoint found there.
/// Every training crop must fit its image, and there must be something to crop: checked up
/// front, naming the dataset and image, instead of failing inside a step.
fn check_inputs(method: Method, inp: &TrainInputs) -> Result<()> {
    let patch = inp.spec.patch;
    let fits = |(w, h): (usize, usize)| w >= patch && h >= patch;
    let src = inp.source;
    if src.count() == 0 {
        return Err(Failure::data(format!("dataset \"{}\": no training pairs to learn from", src.dataset)));
    }
    if let Some(i) = (0..src.count()).find(|&i| !fits(src.dims(i))) {
        let ((w, h), id) = (src.dims(i), src.id(i));
        return Err(Failure::data(format!(
            "dataset \"{}\": image {id} is {w}×{h}, smaller than the {patch}×{patch} training patch (train.patch); \
             use larger images or source.size ≥ {patch}",
            src.dataset
        )));
    }
    if method == Method::NoiseDa
        && let Some(t) = inp.target
    {
        if t.count() == 0 {
            return Err(Failure::data(format!("dataset \"{}\": no target images to adapt to", t.dataset)));
        }
        if let Some(i) = (0..t.count()).find(|&i| !fits(t.dims(i))) {
            let ((w, h), id) = (t.dims(i), t.id(i));
            return Err(Failure::data(format!(
                "dataset \"{}\": image {id} is {w}×{h}, smaller than the {patch}×{patch} training patch (train.patch); \
                 use target.size ≥ {patch}",
                t.dataset
            )));
        }
    }
    Ok(())
}

/// The batches training reads at `steps` (as `spec.loader` makes them: read ahead on its
/// workers), handed to `f` in step order as (step, synthetic degraded, synthetic clean, target
/// inputs) — for benchmarks of the data path and for inspection. `target_batch` target crops
/// a step (0: none).
pub fn for_each_batch(
    source: &PairedSet,
    target: Option<&TargetTrainSet>,
    spec: &TrainSpec,
    target_batch: usize,
    seed: u64,
    steps: std::ops::Range<u64>,
    mut f: impl FnMut(u64, &[Image], &[Image], &[Image]),
) -> Result<()> {
    let make = |step: u64| {
        sample_batch(source, target, spec.batch, target_batch, spec.patch, seed, step).map_err(|e| e.to_string())
    };
    let first = steps.start;
    prefetch::with_prefetch(steps, spec.loader.workers, spec.loader.prefetch, make, |next| {
        let mut step = first;
        while let Some(b) = next() {
            let b = b.map_err(|e| Failure::data(format!("training data (step {}): {e}", step + 1)))?;
            f(step, &b.source_degraded, &b.source_clean, &b.target);
            step += 1;
        }
        Ok(())
    })
}

pub fn train(method: Method, inp: &TrainInputs, on_step: &mut dyn FnMut(StepInfo)) -> Result<Trained> {
    let spec = inp.spec;
    check_inputs(method, inp)?;
    // Without its loss D has no effect on G: the step is exactly the source-only step.
    let method = if spec.noise_da.diffusion_loss { method } else { Method::SourceOnly };
    let device = inp.device.clone().autodiff();
    device.seed(crate::rng::derive_seed(inp.seed, "init", &[]));
    let mut g = inp.nets.restorer.init(&device);
    if let Some(path) = inp.init_restorer {
        g = g.try_load_file(path).map_err(|e| {
            Failure::internal(format!("{}: cannot load the restorer to start from: {e}", path.display()))
        })?;
    }
    let params_g = g.num_params();
    // The release's Adam: PyTorch defaults (β 0.9 / 0.999, ε 1e-8; burn's default ε is 1e-5).
    let mut optim = AdamConfig::new().with_beta_1(0.9).with_beta_2(0.999).with_epsilon(1e-8).init();
    let schedule = NoiseSchedule::paper();
    // One data stream per seed, shared by every recipe: the same synthetic crops in the same
    // order, so recipes differ only by what they are meant to differ by.
    let data_seed = crate::rng::derive_seed(inp.seed, "data", &[]);

    let mut held = match method {
        // The upper bound trains like source-only; the caller passes target pairs as `source`.
        Method::SourceOnly | Method::TargetSupervised => Held::G(g),
        Method::Neighbor2Neighbor => {
            if inp.target.is_none() {
                return Err(Failure::config("neighbor2neighbor needs a target training set (its noisy images)"));
            }
            Held::G(g)
        }
        Method::NoiseDa => {
            if inp.target.is_none() {
                return Err(Failure::config("noise_da needs a target training set"));
            }
            let d = inp.nets.diffusion.init_for(spec.noise_da.conditions.count(), &device);
            Held::Joint(NoiseDaModel { g, d })
        }
        Method::Dann => {
            if inp.target.is_none() {
                return Err(Failure::config("dann needs a target training set"));
            }
            let c = crate::networks::domain::DomainClassifier::new(
                inp.nets.restorer.feature_channels(),
                spec.dann.hidden,
                &device,
            );
            Held::Dann(DannModel { g, c })
        }
        Method::PixelDa => {
            if inp.target.is_none() {
                return Err(Failure::config("pixel_da needs a target training set"));
            }
            // G's images are RGB (grayscale replicated), so are T's and D's.
            let (c, w) = (3, spec.pixel_da.width);
            Held::PixelDa(PixelDaModel {
                g,
                t: crate::networks::pixel_da::Translator::new(c, w, &device),
                d: crate::networks::pixel_da::PatchDiscriminator::new(c, w, &device),
            })
        }
    };
    let params_extra = match &held {
        Held::Joint(m) => vec![("diffusion", m.d.num_params())],
        Held::Dann(m) => vec![("classifier", m.c.num_params())],
        Held::PixelDa(m) => vec![("translator", m.t.num_params()), ("discriminator", m.d.num_params())],
        Held::G(_) => vec![],
    };
    let mut ema = spec.ema.map(|d| ema::Ema::new(held.g(), d));

    let mut curve = Vec::new();
    let mut window: Vec<CurvePoint> = Vec::new();
    let mut start = 0;
    let mut elapsed_before = 0.0;
    let mut best: Option<(PathBuf, f64)> = None;
    let mut last_checkpoint = None;
    if let Some(dir) = inp.checkpoints
        && let Some(latest) = checkpoint::latest(dir)?
    {
        let st = checkpoint::read_state(&latest)?;
        if st.fingerprint != inp.fingerprint || st.method != method.name() {
            return Err(Failure::config(format!(
                "{}: this checkpoint belongs to a different training (recipe, networks, data or seed changed); \
                 start a fresh run (--fresh) or remove the folder",
                latest.display()
            )));
        }
        held = held.load(&latest.join(checkpoint::MODEL))?;
        let opt = burn::optim::OptimizerRecord::load(latest.join(checkpoint::OPTIM)).map_err(|e| {
            Failure::internal(format!("{}: cannot load optimiser state: {e}", latest.join(checkpoint::OPTIM).display()))
        })?;
        optim = optim.load_record(opt);
        if let Some(e) = ema.as_mut() {
            let shadow = Held::G(held.g().clone()).load(&latest.join(checkpoint::EMA))?;
            *e = ema::Ema::new(shadow.g(), e.decay);
        }
        start = st.step;
        elapsed_before = st.elapsed_s;
        curve = st.curve;
        window = st.window;
        best = Some(st.best_val_psnr).filter(|v| v.is_finite()).map(|v| (dir.join("best"), v));
        last_checkpoint = Some(latest.clone());
        tracing::info!(checkpoint = %latest.display(), step = start, "continuing from checkpoint");
    }

    let replicas: Vec<Device> =
        std::iter::once(device.clone()).chain(inp.data_parallel.iter().map(|d| d.clone().autodiff())).collect();
    let per_device = shards_per_device(method, spec, inp.nets, inp.device == Device::flex(), replicas.len())?;
    let n_shards = replicas.len() * per_device;
    let t0 = Instant::now();
    let stride = inp.nets.restorer.stride();
    let mut steps_done = start;
    let mut saved_at = start;
    let save = |held: &Held,
                optim: &burn::optim::ModuleOptimizer,
                ema: &Option<ema::Ema>,
                name: &str,
                state: &checkpoint::State|
     -> Result<Option<PathBuf>> {
        let Some(dir) = inp.checkpoints else { return Ok(None) };
        let path = checkpoint::write(dir, name, state, |tmp| {
            held.save(&tmp.join(checkpoint::MODEL))?;
            optim
                .to_record()
                .save(tmp.join(checkpoint::OPTIM))
                .map_err(|e| Failure::internal(format!("{}: cannot save optimiser state: {e}", tmp.display())))?;
            if let Some(e) = ema {
                Held::G(e.apply(held.g().clone())).save(&tmp.join(checkpoint::EMA))?;
            }
            Ok(())
        })?;
        if name.starts_with("step-") {
            checkpoint::prune(dir, spec.checkpoint.keep)?;
        }
        Ok(Some(path))
    };
    let state =
        |step: usize, curve: &[CurvePoint], window: &[CurvePoint], best: &Option<(PathBuf, f64)>| checkpoint::State {
            step,
            method: method.name().into(),
            fingerprint: inp.fingerprint.clone(),
            elapsed_s: elapsed_before + t0.elapsed().as_secs_f64(),
            curve: curve.to_vec(),
            window: window.to_vec(),
            best_val_psnr: best.as_ref().map_or(f64::NAN, |b| b.1),
        };

    // Target inputs only for the methods that read them.
    let target =
        if matches!(held, Held::Joint(_) | Held::Dann(_) | Held::PixelDa(_)) || method == Method::Neighbor2Neighbor {
            inp.target
        } else {
            None
        };
    let (batch, target_batch) = (spec.batch, spec.noise_da.target_count(spec.batch));
    let make = |step: u64| {
        sample_batch(inp.source, target, batch, target_batch, spec.patch, data_seed, step).map_err(|e| e.to_string())
    };
    let steps = start as u64..spec.steps as u64;
    let held =
        prefetch::with_prefetch(steps, spec.loader.workers, spec.loader.prefetch, make, |next| -> Result<Held> {
            let mut held = held;
            for step in start..spec.steps {
                if inp.stop.load(Ordering::SeqCst) {
                    break;
                }
                // Every random draw of the step (dropout included) derives from (seed, step), so a run
                // continued from a checkpoint draws exactly what the uninterrupted one would have.
                device.seed(crate::rng::derive_seed(inp.seed, "step", &[step as u64]));
                for (k, d) in replicas.iter().enumerate().skip(1) {
                    d.seed(crate::rng::derive_seed(inp.seed, "step", &[step as u64, k as u64]));
                }
                let b = match next() {
                    Some(Ok(b)) => b,
                    Some(Err(e)) => {
                        return Err(Failure::data(format!("training data (step {}): {e}", step + 1)));
                    }
                    None => break,
                };
                let ctx = StepCtx {
                    spec,
                    schedule: &schedule,
                    signed: inp.task.diffusion_signed(),
                    // During D's warm-up G feels nothing; the ramp starts after it.
                    alpha: match (&held, step.checked_sub(spec.noise_da.d_warmup)) {
                        (Held::Dann(_), _) => spec.dann.lambda_at(step, spec.steps),
                        (_, Some(after)) => alpha_ramp(after, spec.noise_da.ramp_steps, spec.noise_da.w),
                        (_, None) => 0.0,
                    },
                    warmup: step < spec.noise_da.d_warmup,
                    // Shard losses are means over their shard: 1/n each makes the summed gradient the
                    // gradient of the whole batch's mean.
                    scale: spec.precision.loss_scale() / n_shards as f64,
                    diagnose: (step + 1) % spec.log_every.max(1) == 0,
                    pixel_da: matches!(held, Held::PixelDa(_))
                        .then(|| crate::rng::derive_seed(data_seed, "pixel_da", &[step as u64])),
                    ne2ne: (method == Method::Neighbor2Neighbor).then(|| {
                        (
                            spec.ne2ne.gamma_at(step, spec.steps),
                            crate::rng::derive_seed(data_seed, "ne2ne", &[step as u64]),
                        )
                    }),
                };
                // Every draw of the step, for the whole batch, before it is split.
                let pairs = b.source_degraded.len().max(b.target.len());
                let draws = matches!(held, Held::Joint(_)).then(|| {
                    let mut rng = Rng::derive(data_seed, "diffusion", &[step as u64]);
                    StepDraws::draw(&mut rng, pairs, [spec.patch, spec.patch], &ctx.noise_da())
                });
                let mut point = if n_shards == 1 {
                    let shard = Shard { held: &held, device: &device, batch: b, pairs: 0..pairs };
                    let (p, mut grads) = run_step(std::slice::from_ref(&shard), &ctx, draws.as_ref());
                    held = held.step(&mut optim, spec.lr, grads.pop().expect("one shard"));
                    CurvePoint { step: step + 1, ..p }
                } else {
                    // Shard k on replica k / per_device: the first shard on the held module, the others on
                    // forks (the same parameter ids, their own autodiff graphs); the gradients summed
                    // onto the master weights by the optimiser.
                    let forks: Vec<(Held, &Device)> = (1..n_shards)
                        .map(|k| {
                            let d = &replicas[k / per_device];
                            (held.fork(d), d)
                        })
                        .collect();
                    let m = pairs / n_shards;
                    let shards: Vec<Shard> = std::iter::once((&held, &device))
                        .chain(forks.iter().map(|(h, d)| (h, *d)))
                        .enumerate()
                        .map(|(k, (h, d))| Shard {
                            held: h,
                            device: d,
                            batch: b.shard(k, n_shards),
                            pairs: k * m..(k + 1) * m,
                        })
                        .collect();
                    let (p, grads) = run_step(&shards, &ctx, draws.as_ref());
                    let devices: Vec<Device> = shards.iter().map(|s| s.device.clone()).collect();
                    drop(shards);
                    drop(forks);
                    let grads = grads.into_iter().zip(devices).collect();
                    held = held.step_multi(&mut optim, spec.lr, burn::optim::MultiGradientsParams { grads });
                    CurvePoint { step: step + 1, ..p }
                };

                if !point.loss.is_finite() {
                    // Nothing is saved from here on: the newest checkpoint is the last good state.
                    let kept = match inp.checkpoints {
                        Some(dir) => match checkpoint::latest(dir)? {
                            Some(p) => format!("; the last good checkpoint is {}", p.display()),
                            None => "; no checkpoint was written before it".into(),
                        },
                        None => String::new(),
                    };
                    return Err(Failure::new(
                        ExitCode::Diverged,
                        format!(
                            "{} diverged at step {} (loss {}); lower train.lr or check the data{kept}",
                            method.name(),
                            step + 1,
                            point.loss
                        ),
                    ));
                }
                if let Some(e) = ema.as_mut() {
                    e.update(held.g());
                }
                point.elapsed_s = elapsed_before + t0.elapsed().as_secs_f64();
                steps_done = step + 1;
                let last = steps_done == spec.steps;
                let validate_now = inp.validate_every > 0
                    && !inp.validation.is_empty()
                    && (steps_done % inp.validate_every == 0 || last);
                if validate_now {
                    point.val_psnr = validate(held.g(), inp.validation, stride, &inp.device);
                }
                window.push(point.clone());
                if steps_done % spec.log_every.max(1) == 0 || last || validate_now {
                    curve.push(mean_point(&window));
                    window.clear();
                }
                if validate_now {
                    let v = point.val_psnr[0];
                    if v.is_finite() && best.as_ref().is_none_or(|b| v > b.1) {
                        best = Some((PathBuf::new(), v));
                        if let Some(p) = save(&held, &optim, &ema, "best", &state(steps_done, &curve, &window, &best))?
                        {
                            best = Some((p, v));
                        }
                    }
                }
                let every = spec.checkpoint.every;
                if last || (every > 0 && steps_done % every == 0) {
                    let before = last_checkpoint.take();
                    last_checkpoint = save(
                        &held,
                        &optim,
                        &ema,
                        &checkpoint::step_name(steps_done),
                        &state(steps_done, &curve, &window, &best),
                    )?
                    .or(before);
                    saved_at = steps_done;
                }
                on_step(StepInfo { step: steps_done, steps: spec.steps, latest: &point });
            }
            Ok(held)
        })?;
    // Stopped early (interrupt): keep what was done.
    if steps_done > saved_at {
        last_checkpoint =
            save(&held, &optim, &ema, &checkpoint::step_name(steps_done), &state(steps_done, &curve, &window, &best))?
                .or(last_checkpoint);
    }
    if steps_done == spec.steps && !window.is_empty() {
        curve.push(mean_point(&window));
    }
    let wall_s = t0.elapsed().as_secs_f64();
    let (g, diffusion, translator) = match held {
        Held::G(g) => (g, None, None),
        Held::Joint(m) => (m.g, Some(m.d.valid()), None),
        Held::Dann(m) => (m.g, None, None),
        Held::PixelDa(m) => (m.g, None, Some(m.t.valid())),
    };
    let restorer_ema = ema.map(|e| e.apply(g.clone()).valid());
    Ok(Trained {
        restorer: g.valid(),
        diffusion,
        translator,
        restorer_ema,
        curve,
        steps_done,
        resumed_from: start,
        wall_s,
        steps_per_s: (steps_done - start) as f64 / wall_s.max(1e-9),
        params_g,
        params_d: (!params_extra.is_empty()).then(|| params_extra.iter().map(|p| p.1).sum()),
        params_extra,
        shards: n_shards,
        last_checkpoint,
        best_checkpoint: best.filter(|b| !b.0.as_os_str().is_empty()),
    })
}

fn mean_point(w: &[CurvePoint]) -> CurvePoint {
    let n = w.len() as f64;
    let m = |f: fn(&CurvePoint) -> f64| w.iter().map(f).sum::<f64>() / n;
    let last = w.last().expect("non-empty window");
    CurvePoint {
        step: last.step,
        loss: m(|p| p.loss),
        charbonnier: m(|p| p.charbonnier),
        mse_pos: m(|p| p.mse_pos),
        mse_neg: m(|p| p.mse_neg),
        hinge: m(|p| p.hinge),
        hinge_active: m(|p| p.hinge_active),
        alpha: last.alpha,
        domain: m(|p| p.domain),
        rec: m(|p| p.rec),
        reg: m(|p| p.reg),
        disc: m(|p| p.disc),
        adv: m(|p| p.adv),
        content: m(|p| p.content),
        elapsed_s: last.elapsed_s,
        grad_syn: last.grad_syn,
        grad_real: last.grad_real,
        val_psnr: last.val_psnr.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::config::NoiseDaSpec;
    use super::*;
    use crate::datasets::PairedItem;
    use crate::networks::{DiffusionConfig, RestorerConfig};

    fn spec(residual_swap: bool) -> TrainSpec {
        TrainSpec {
            steps: 1,
            batch: 2,
            patch: 8,
            lr: 1e-3,
            charbonnier_eps: 1e-3,
            log_every: 1,
            ema: None,
            checkpoint: Default::default(),
            precision: Default::default(),
            devices: 1,
            shards: Default::default(),
            init_from: None,
            noise_da: NoiseDaSpec {
                w: 0.2,
                ramp_steps: 0,
                delta: 0.1,
                t_range: [1, 1000],
                channel_shuffle: true,
                residual_swap,
                diffusion_loss: true,
                conditions: Conditions::Both,
                target_batch: None,
                d_warmup: 0,
            },
            dann: Default::default(),
            pixel_da: Default::default(),
            ne2ne: Default::default(),
            loader: Default::default(),
        }
    }

    fn rand4(seed: u64, device: &Device) -> Tensor<4> {
        let mut r = Rng::new(seed);
        let v: Vec<f32> = (0..2 * 3 * 8 * 8).map(|_| r.uniform() as f32).collect();
        Tensor::from_data(TensorData::new(v, [2, 3, 8, 8]), device)
    }

    /// A small G and D (no dropout) from a fixed seed; callers hold [`SERIAL`].
    fn tiny_joint_model(device: &Device) -> NoiseDaModel {
        device.seed(3);
        NoiseDaModel {
            g: RestorerConfig::unet(vec![4, 8]).init(device),
            d: DiffusionConfig { base: 4, mults: vec![1, 2], res_blocks: 1, attn_heads: 1, dropout: 0.0 }.init(device),
        }
    }

    /// The diffusion loss must reach G (no stop-gradient), through both the synthetic and
    /// the real condition: with the supervised term removed, G still gets gradients, and they
    /// change when only the target input changes.
    #[test]
    fn diffusion_loss_reaches_the_restorer_through_both_conditions() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let device = Device::flex().autodiff();
        let model = tiny_joint_model(&device);
        let schedule = NoiseSchedule::paper();
        for residual_swap in [false, true] {
            let sp = spec(residual_swap);
            let cfg = NoiseDaStep { spec: &sp, schedule: &schedule, signed: false, alpha: 1.0, warmup: false };
            let grad_of_g = |x_r: Tensor<4>| {
                let l = noise_da_losses(&model, rand4(1, &device), rand4(2, &device), x_r, &cfg, &mut Rng::new(9));
                assert_eq!(l.contrastive.is_some(), residual_swap);
                // Only the diffusion part: total − Charbonnier.
                let only_noise = l.total - l.charbonnier;
                let grads = GradientsParams::from_grads(only_noise.backward(), &model.g);
                let n = grads.len();
                let mut sum = 0.0f64;
                model.g.clone().visit(&mut GradAbsSum { grads: &grads, sum: &mut sum });
                (n, sum)
            };
            let (n1, s1) = grad_of_g(rand4(3, &device));
            let (_, s2) = grad_of_g(rand4(4, &device));
            assert!(n1 > 0 && s1 > 0.0, "G received no gradient from the diffusion loss");
            assert!((s1 - s2).abs() > 1e-9 * s1.max(1.0), "G's gradient must depend on the real condition");
        }
    }

    /// With a D warm-up configured, D's loss has weight 1 and α scales only G's share: G gets
    /// the same diffusion gradient as in the joint formula, D's is 1/α times larger.
    #[test]
    fn warmup_recipes_weight_d_fully_and_scale_only_gs_share() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let device = Device::flex().autodiff();
        let model = tiny_joint_model(&device);
        let schedule = NoiseSchedule::paper();
        let alpha = 0.25;
        let grads = |d_warmup: usize| {
            let sp = TrainSpec { noise_da: NoiseDaSpec { d_warmup, ..spec(true).noise_da }, ..spec(true) };
            let cfg = NoiseDaStep { spec: &sp, schedule: &schedule, signed: false, alpha, warmup: false };
            let l = noise_da_losses(
                &model,
                rand4(1, &device),
                rand4(2, &device),
                rand4(3, &device),
                &cfg,
                &mut Rng::new(9),
            );
            let grads = GradientsParams::from_grads((l.total - l.charbonnier).backward(), &model);
            let (mut g, mut d) = (0.0f64, 0.0f64);
            model.g.clone().visit(&mut GradAbsSum { grads: &grads, sum: &mut g });
            model.d.clone().visit(&mut GradAbsSum { grads: &grads, sum: &mut d });
            (g, d)
        };
        let ((g_joint, d_joint), (g_dec, d_dec)) = (grads(0), grads(5));
        assert!(g_joint > 0.0 && d_joint > 0.0);
        assert!((g_dec / g_joint - 1.0).abs() < 1e-3, "G: {g_dec} vs {g_joint}");
        assert!((d_dec / d_joint - 1.0 / alpha).abs() < 1e-2, "D: {d_dec} vs {d_joint}");
    }

    struct GradAbsSum<'a> {
        grads: &'a GradientsParams,
        sum: &'a mut f64,
    }

    impl burn::module::ModuleVisitor for GradAbsSum<'_> {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            if let Some(g) = self.grads.get::<D>(param.id) {
                *self.sum += g.abs().sum().into_data().iter::<f32>().map(|v| v as f64).sum::<f64>();
            }
        }
    }

    // --- whole training runs on tiny data -------------------------------------------------

    fn image(rng: &mut Rng, side: usize) -> Image {
        Image::from_vec(side, side, (0..side * side * 3).map(|_| rng.uniform() as f32).collect())
    }

    fn tiny_data(poison: bool) -> (PairedSet, TargetTrainSet) {
        let mut rng = Rng::new(5);
        let items = (0..3)
            .map(|i| {
                let clean = image(&mut rng, 16);
                let mut degraded = clean.clone();
                for v in degraded.data.iter_mut() {
                    *v += 0.2 * (rng.uniform() as f32 - 0.5);
                }
                if poison && i == 2 {
                    degraded.data[7] = f32::NAN;
                }
                PairedItem { id: format!("s{i}"), degraded, clean, params: Default::default() }
            })
            .collect();
        let source = PairedSet::held("tiny", crate::datasets::Split::Train, items, "f");
        let target = TargetTrainSet {
            dataset: "tiny-target".into(),
            items: (0..3)
                .map(|i| crate::datasets::DegradedItem {
                    id: format!("t{i}"),
                    degraded: image(&mut rng, 16),
                    params: Default::default(),
                })
                .collect(),
            fingerprint: "g".into(),
            cached: false,
            problems: vec![],
            store: None,
        };
        (source, target)
    }

    fn nets() -> NetworksSpec {
        NetworksSpec {
            restorer: RestorerConfig::unet(vec![4, 8]),
            // Dropout on: resuming must also replay the random dropout masks.
            diffusion: DiffusionConfig { base: 4, mults: vec![1, 2], res_blocks: 1, attn_heads: 1, dropout: 0.2 },
        }
    }

    fn run_spec(steps: usize) -> TrainSpec {
        TrainSpec {
            steps,
            batch: 2,
            patch: 8,
            ema: Some(0.9),
            checkpoint: super::config::CheckpointSpec { every: 2, keep: 2 },
            noise_da: NoiseDaSpec { ramp_steps: 3, ..spec(true).noise_da },
            ..spec(true)
        }
    }

    pub(crate) use crate::util::RNG_LOCK as SERIAL;

    /// Bit-equality of two weight vectors, reported briefly.
    fn same(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    fn weights<M: Module>(m: &M) -> Vec<f32> {
        struct Collect(Vec<f32>);
        impl burn::module::ModuleVisitor for Collect {
            fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
                self.0.extend(param.val().into_data().iter::<f32>());
            }
        }
        let mut c = Collect(Vec::new());
        m.visit(&mut c);
        c.0
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rp-train-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn go(
        method: Method,
        spec: &TrainSpec,
        data: &(PairedSet, TargetTrainSet),
        dir: Option<&Path>,
        stop_at: Option<usize>,
    ) -> Result<Trained> {
        go_on(method, spec, data, dir, stop_at, None, 1)
    }

    /// Train on the tiny data; `devices` > 1 adds data-parallel replicas on the CPU device.
    fn go_on(
        method: Method,
        spec: &TrainSpec,
        data: &(PairedSet, TargetTrainSet),
        dir: Option<&Path>,
        stop_at: Option<usize>,
        init: Option<&Path>,
        devices: usize,
    ) -> Result<Trained> {
        // The back-end's random generator (weight init, dropout) is process-wide: trainings
        // in concurrently running tests would draw from each other's stream.
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let stop = AtomicBool::new(false);
        let nets = nets();
        let inp = TrainInputs {
            task: Task::Denoise,
            spec,
            nets: &nets,
            init_restorer: init,
            source: &data.0,
            target: Some(&data.1),
            seed: 11,
            device: Device::flex(),
            stop: &stop,
            checkpoints: dir,
            fingerprint: "fp".into(),
            validation: &[],
            validate_every: 0,
            data_parallel: vec![Device::flex(); devices - 1],
        };
        train(method, &inp, &mut |s| {
            if Some(s.step) == stop_at {
                stop.store(true, Ordering::SeqCst);
            }
        })
    }

    /// Interrupt a Noise-DA run after step 3 of 7 (between the every-2 checkpoints), continue
    /// it in a fresh call from its checkpoint: the final weights, EMA and curve equal an
    /// uninterrupted run bit for bit on the CPU.
    #[test]
    fn resumed_training_is_bit_identical_to_an_uninterrupted_one() {
        let data = tiny_data(false);
        let spec = run_spec(7);
        let straight = go(Method::NoiseDa, &spec, &data, None, None).unwrap();
        assert_eq!(straight.steps_done, 7);

        let dir = tmp("resume");
        let first = go(Method::NoiseDa, &spec, &data, Some(&dir), Some(3)).unwrap();
        assert_eq!(first.steps_done, 3, "stopped at the safe point after step 3");
        let latest = checkpoint::latest(&dir).unwrap().unwrap();
        assert!(latest.ends_with(checkpoint::step_name(3)), "the interrupt wrote a checkpoint: {latest:?}");
        assert!(!same(&weights(&first.restorer), &weights(&straight.restorer)));

        let resumed = go(Method::NoiseDa, &spec, &data, Some(&dir), None).unwrap();
        assert_eq!((resumed.resumed_from, resumed.steps_done), (3, 7));
        let (r, s) = (weights(&resumed.restorer), weights(&straight.restorer));
        assert!(same(&r, &s), "restorer weights differ by up to {}", max_diff(&r, &s));
        let (r, s) =
            (weights(resumed.restorer_ema.as_ref().unwrap()), weights(straight.restorer_ema.as_ref().unwrap()));
        assert!(same(&r, &s), "EMA weights differ by up to {}", max_diff(&r, &s));
        let losses = |t: &Trained| t.curve.iter().map(|p| (p.step, p.loss, p.mse_pos, p.hinge)).collect::<Vec<_>>();
        assert_eq!(format!("{:?}", losses(&resumed)), format!("{:?}", losses(&straight)));
        // keep: 2 → the two newest step checkpoints remain.
        let mut left: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        left.sort();
        assert_eq!(left, vec![checkpoint::step_name(6), checkpoint::step_name(7)]);

        // A finished checkpoint is reused, not retrained; another training refuses it.
        let again = go(Method::NoiseDa, &spec, &data, Some(&dir), None).unwrap();
        assert_eq!((again.resumed_from, again.steps_done), (7, 7));
        assert!(same(&weights(&again.restorer), &weights(&straight.restorer)));
        let err = go(Method::SourceOnly, &spec, &data, Some(&dir), None).err().expect("different training");
        assert_eq!(err.code, ExitCode::Config);
        assert!(err.to_string().contains("different training"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A NaN loss stops training with exit code 4; the newest checkpoint is the last good state.
    #[test]
    fn divergence_stops_with_the_last_good_checkpoint_intact() {
        let data = tiny_data(true);
        let spec = TrainSpec { checkpoint: super::config::CheckpointSpec { every: 1, keep: 3 }, ..run_spec(40) };
        let dir = tmp("diverge");
        let err = go(Method::SourceOnly, &spec, &data, Some(&dir), None).err().expect("the NaN image diverges");
        assert_eq!(err.code, ExitCode::Diverged);
        let msg = err.to_string();
        let at: usize = msg.split("diverged at step ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
        assert!(at > 1, "this seed meets the poisoned image after a few good steps: {msg}");
        let latest = checkpoint::latest(&dir).unwrap().unwrap();
        assert!(msg.contains(&latest.display().to_string()), "{msg}");
        let st = checkpoint::read_state(&latest).unwrap();
        assert_eq!(st.step, at - 1);
        assert!(st.curve.iter().all(|p| p.loss.is_finite()));
        let g = {
            let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
            spec_restorer()
        }
        .try_load_file(latest.join(checkpoint::MODEL))
        .unwrap();
        assert!(weights(&g).iter().all(|v| v.is_finite()), "saved weights are the good ones");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn spec_restorer() -> Restorer {
        nets().restorer.init(&Device::flex())
    }

    /// Ablation switches: without its loss, Noise-DA is exactly source-only training; with a
    /// single condition D takes 6 channels and training runs.
    #[test]
    fn ablation_switches() {
        let data = tiny_data(false);
        let base = run_spec(3);
        let off =
            TrainSpec { noise_da: NoiseDaSpec { diffusion_loss: false, ..base.noise_da.clone() }, ..base.clone() };
        let a = go(Method::NoiseDa, &off, &data, None, None).unwrap();
        let b = go(Method::SourceOnly, &base, &data, None, None).unwrap();
        let (wa, wb) = (weights(&a.restorer), weights(&b.restorer));
        assert!(same(&wa, &wb), "differ by up to {}", max_diff(&wa, &wb));
        assert!(a.params_d.is_none(), "no D is built without its loss");
        let full = go(Method::NoiseDa, &base, &data, None, None).unwrap();
        assert!(!same(&weights(&full.restorer), &wb), "the diffusion loss changes G");
        for c in [Conditions::Synthetic, Conditions::Real] {
            let one = TrainSpec { noise_da: NoiseDaSpec { conditions: c, ..base.noise_da.clone() }, ..base.clone() };
            let t = go(Method::NoiseDa, &one, &data, None, None).unwrap();
            assert!(t.curve.iter().all(|p| p.mse_pos.is_finite() && p.mse_neg.is_finite()), "{c:?}");
            assert!(t.params_d.unwrap() < full.params_d.unwrap(), "{c:?}: 6 input channels instead of 9");
            assert!(!same(&weights(&t.restorer), &weights(&full.restorer)), "{c:?}");
        }
    }

    /// D's warm-up: while it lasts G learns from the Charbonnier term alone (ending where
    /// source-only training ends, up to float summation order) and α is 0, while D trains;
    /// after it the diffusion loss reaches G.
    #[test]
    fn d_warmup_trains_d_while_g_learns_source_only() {
        let data = tiny_data(false);
        let base = run_spec(4);
        let warm = |steps: usize, d_warmup: usize| TrainSpec {
            steps,
            noise_da: NoiseDaSpec { d_warmup, ..base.noise_da.clone() },
            ..base.clone()
        };
        let so = go(Method::SourceOnly, &base, &data, None, None).unwrap();
        let w = go(Method::NoiseDa, &warm(4, 4), &data, None, None).unwrap();
        let d = max_diff(&weights(&w.restorer), &weights(&so.restorer));
        eprintln!("G after a 4-step D warm-up vs source-only: max weight difference {d:e}");
        assert!(d < 1e-6, "the diffusion loss moved G during the warm-up: {d}");
        assert!(w.curve.iter().all(|p| p.alpha == 0.0 && p.mse_pos.is_finite()), "{:?}", w.curve);
        let d1 = go(Method::NoiseDa, &warm(1, 4), &data, None, None).unwrap().diffusion.unwrap();
        assert!(max_diff(&weights(&d1), &weights(w.diffusion.as_ref().unwrap())) > 1e-4, "D trains during its warm-up");
        let after = go(Method::NoiseDa, &warm(4, 2), &data, None, None).unwrap();
        assert!(after.curve.last().unwrap().alpha > 0.0);
        let moved = max_diff(&weights(&after.restorer), &weights(&so.restorer));
        assert!(moved > 1e-6, "after it, G feels D: {moved}");
    }

    /// Batch composition: `target_batch` equal to the batch is the default step exactly; more
    /// or fewer target images train, change G, and every image of both sides reaches D.
    #[test]
    fn target_batch_sets_the_batch_composition() {
        let data = tiny_data(false);
        let base = run_spec(3);
        let with = |tb: usize| TrainSpec {
            noise_da: NoiseDaSpec { target_batch: Some(tb), ..base.noise_da.clone() },
            ..base.clone()
        };
        let a = go(Method::NoiseDa, &base, &data, None, None).unwrap();
        let same_count = go(Method::NoiseDa, &with(base.batch), &data, None, None).unwrap();
        assert!(same(&weights(&a.restorer), &weights(&same_count.restorer)));
        for tb in [1, 2 * base.batch] {
            let t = go(Method::NoiseDa, &with(tb), &data, None, None).unwrap();
            assert!(t.curve.iter().all(|p| p.loss.is_finite()), "target_batch {tb}");
            assert!(!same(&weights(&t.restorer), &weights(&a.restorer)), "target_batch {tb}");
        }
        // Rows are reused in order, so each of the smaller side's images appears.
        let device = Device::flex();
        let t = rand4(5, &device);
        let grown = cycle_rows(t.clone(), 5).into_data().try_to_vec::<f32>().unwrap();
        let rows = t.into_data().try_to_vec::<f32>().unwrap();
        let row = rows.len() / 2;
        for i in 0..5 {
            assert_eq!(&grown[i * row..(i + 1) * row], &rows[(i % 2) * row..(i % 2 + 1) * row], "row {i}");
        }
    }

    /// bf16 and f16 steps train (loss falls, everything finite) and follow f32 closely without
    /// equalling it; the f32 weights receive the gradients through the casts.
    #[test]
    fn mixed_precision_trains() {
        use super::config::Precision;
        let data = tiny_data(false);
        let base = TrainSpec { lr: 3e-3, ..run_spec(30) };
        let f32_run = go(Method::NoiseDa, &base, &data, None, None).unwrap();
        let w32 = weights(&f32_run.restorer);
        for p in [Precision::Bf16, Precision::F16] {
            let t = go(Method::NoiseDa, &TrainSpec { precision: p, ..base.clone() }, &data, None, None).unwrap();
            let c: Vec<f64> = t.curve.iter().map(|p| p.charbonnier).collect();
            assert!(c.iter().all(|v| v.is_finite()) && t.curve.iter().all(|p| p.mse_pos.is_finite()), "{p:?}");
            let (head, tail) = (c[..5].iter().sum::<f64>(), c[c.len() - 5..].iter().sum::<f64>());
            assert!(tail < 0.8 * head, "{p:?}: Charbonnier {head} → {tail} over 30 steps");
            let w = weights(&t.restorer);
            assert!(w.iter().all(|v| v.is_finite()));
            assert!(!same(&w, &w32), "{p:?} must actually compute in lower precision");
            let f32_tail: f64 = f32_run.curve[25..].iter().map(|p| p.charbonnier).sum();
            assert!((tail - f32_tail).abs() < 0.25 * f32_tail, "{p:?}: {tail} vs f32 {f32_tail}");
        }
    }

    /// Training is bit-identical whatever the thread count: the same Noise-DA run (2 shards)
    /// under rayon pools of 1, 2 and 3 threads gives the same weights to the last bit (our
    /// kernels sum over images in a fixed order, never in rayon's scheduling order).
    #[test]
    fn training_does_not_depend_on_the_thread_count() {
        use config::Shards;
        let data = tiny_data(false);
        let spec = TrainSpec { batch: 8, shards: Shards::Count(2), ..run_spec(4) };
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let t = pool.install(|| go_on(Method::NoiseDa, &spec, &data, None, None, None, 1).unwrap());
            (weights(&t.restorer), weights(t.diffusion.as_ref().expect("Noise-DA trains D")))
        };
        let one = run(1);
        for threads in [2, 3] {
            assert!(run(threads) == one, "{threads} threads train differently from 1");
        }
    }

    /// Batches read ahead on worker threads train exactly as batches made when the step
    /// needs them, whatever the number of workers and the prefetch depth.
    #[test]
    fn training_does_not_depend_on_the_loader() {
        use config::LoaderSpec;
        let data = tiny_data(false);
        let run = |workers: usize, prefetch: usize| {
            let spec = TrainSpec { loader: LoaderSpec { workers, prefetch }, ..run_spec(6) };
            let t = go(Method::NoiseDa, &spec, &data, None, None).unwrap();
            (weights(&t.restorer), weights(t.diffusion.as_ref().expect("Noise-DA trains D")))
        };
        let inline = run(0, 1);
        for (workers, prefetch) in [(1, 1), (2, 4), (3, 2)] {
            assert!(run(workers, prefetch) == inline, "{workers} workers, prefetch {prefetch} train differently");
        }
    }

    /// Neighbor2Neighbor learns from the target's noisy images alone: another source set
    /// gives the very same weights, G changes, the reconstruction and regulariser terms are
    /// logged and γ ramps linearly from 0.
    #[test]
    fn neighbor2neighbor_trains_on_target_images_alone() {
        let data = tiny_data(false);
        let spec = TrainSpec { log_every: 1, ..run_spec(5) };
        let a = go(Method::Neighbor2Neighbor, &spec, &data, None, None).unwrap();
        let mut other = data.clone();
        for it in other.0.items.iter_mut() {
            it.degraded.data.iter_mut().for_each(|v| *v = 1.0 - *v);
            it.clean.data.iter_mut().for_each(|v| *v = 0.5);
        }
        let b = go(Method::Neighbor2Neighbor, &spec, &other, None, None).unwrap();
        assert_eq!(max_diff(&weights(&a.restorer), &weights(&b.restorer)), 0.0, "the source set is not used");
        let so = go(Method::SourceOnly, &spec, &data, None, None).unwrap();
        assert!(max_diff(&weights(&so.restorer), &weights(&a.restorer)) > 1e-6);
        assert!(
            a.curve.iter().all(|p| p.rec.is_finite() && p.reg.is_finite() && p.charbonnier.is_nan()),
            "{:?}",
            a.curve
        );
        let gammas: Vec<f64> = a.curve.iter().map(|p| p.alpha).collect();
        assert_eq!(gammas[0], 0.0);
        assert!(gammas.windows(2).all(|w| w[1] > w[0]), "{gammas:?}");
    }

    /// DANN trains G against a domain classifier: λ ramps from 0 DANN-style, the classifier's
    /// loss is logged (near ln 2 ≈ 0.693 when it cannot tell the domains apart), G ends
    /// different from source-only's on the same data stream, and interrupting and resuming
    /// gives the same weights (the classifier is checkpointed with G).
    #[test]
    fn dann_trains_g_against_the_domain_classifier() {
        let data = tiny_data(false);
        let spec = TrainSpec { log_every: 1, ..run_spec(6) };
        let so = go(Method::SourceOnly, &spec, &data, None, None).unwrap();
        let da = go(Method::Dann, &spec, &data, None, None).unwrap();
        assert!(da.params_d.is_some_and(|n| n > 0), "the classifier's parameters are counted");
        assert!(max_diff(&weights(&so.restorer), &weights(&da.restorer)) > 1e-6, "the adversarial term changes G");
        let lambdas: Vec<f64> = da.curve.iter().map(|p| p.alpha).collect();
        assert!(
            lambdas.windows(2).all(|w| w[1] > w[0]) && lambdas[0] >= 0.0 && *lambdas.last().unwrap() < 1.0,
            "{lambdas:?}"
        );
        assert!(da.curve.iter().all(|p| p.domain.is_finite() && (p.domain - 0.693).abs() < 0.3), "{:?}", da.curve);
        assert!(so.curve.iter().all(|p| p.domain.is_nan()));
        resumes_bit_identically(Method::Dann, &spec, &data, &da);
    }

    /// Stopped after 3 steps and continued from its checkpoint, `method` ends with `whole`'s G.
    fn resumes_bit_identically(method: Method, spec: &TrainSpec, data: &(PairedSet, TargetTrainSet), whole: &Trained) {
        let dir = tmp(&format!("{}-resume", method.name()));
        let ckpt = TrainSpec { checkpoint: config::CheckpointSpec { every: 2, keep: 2 }, ..spec.clone() };
        let first = go(method, &ckpt, data, Some(&dir), Some(3)).unwrap();
        assert!(first.steps_done < spec.steps);
        let resumed = go(method, &ckpt, data, Some(&dir), None).unwrap();
        assert_eq!(max_diff(&weights(&resumed.restorer), &weights(&whole.restorer)), 0.0, "{}", method.name());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// PixelDA trains G on translated inputs: G moves away from source-only, the translator
    /// (the identity at the start) changes its inputs, the discriminator's loss stays a real
    /// game, both extra networks are counted, and a resumed run is bit-identical.
    #[test]
    fn pixel_da_translates_and_trains_g_on_the_translations() {
        let data = tiny_data(false);
        let spec =
            TrainSpec { log_every: 1, pixel_da: config::PixelDaSpec { width: 8, ..Default::default() }, ..run_spec(6) };
        let so = go(Method::SourceOnly, &spec, &data, None, None).unwrap();
        let da = go(Method::PixelDa, &spec, &data, None, None).unwrap();
        let names: Vec<&str> = da.params_extra.iter().map(|p| p.0).collect();
        assert_eq!(names, ["translator", "discriminator"]);
        assert!(da.params_extra.iter().all(|p| p.1 > 0));
        assert!(max_diff(&weights(&so.restorer), &weights(&da.restorer)) > 1e-6, "G trains on translations");
        let t = da.translator.as_ref().expect("the translator is returned");
        let dev = Device::flex();
        let x = to_tensor(&[data.0.items[0].degraded.clone()], &dev);
        // Host-drawn noise: the back-end's generator is shared with concurrently running tests.
        let mut rng = Rng::new(3);
        let z: Vec<f32> = (0..256).map(|_| rng.normal() as f32).collect();
        let z = Tensor::<4>::from_data(TensorData::new(z, [1, 1, 16, 16]), &dev);
        let y = t.forward(x.clone(), z);
        let change = (y - x).abs().max().into_scalar::<f32>();
        assert!(change > 1e-4, "the trained translator changes its input (max {change})");
        for p in &da.curve {
            assert!(p.disc.is_finite() && p.adv.is_finite() && p.content.is_finite(), "{p:?}");
            assert!((p.disc - 0.693).abs() < 0.3, "the discriminator's loss near chance on tiny data: {p:?}");
            assert!(p.domain.is_nan() && p.mse_pos.is_nan());
        }
        assert!(so.curve.iter().all(|p| p.disc.is_nan()));
        resumes_bit_identically(Method::PixelDa, &spec, &data, &da);
    }

    /// Each PixelDA term reaches only the network it trains: the adversarial term moves the
    /// translator and not the discriminator (it sees a frozen copy), the content term moves
    /// only the translator, and G's gradient does not depend on either (it sees the
    /// translation detached).
    #[test]
    fn pixel_da_terms_reach_only_their_networks() {
        use crate::networks::pixel_da::{PatchDiscriminator, Translator};
        let data = tiny_data(false);
        let device = Device::flex().autodiff();
        let schedule = NoiseSchedule::paper();
        // Away from the identity it starts as (where the content term is 0 and flat).
        struct Perturb;
        impl burn::module::ModuleMapper for Perturb {
            fn map_float<const D: usize>(
                &mut self,
                p: burn::module::Param<Tensor<D>>,
            ) -> burn::module::Param<Tensor<D>> {
                p.map(|t| {
                    let noise = t.random_like(burn::tensor::Distribution::Normal(0.0, 0.05));
                    let device = t.device();
                    Tensor::from_data((t.detach() + noise).into_data(), &device).require_grad()
                })
            }
        }
        // Every draw from the back-end's (process-wide) generator under the lock.
        let model = {
            let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
            device.seed(4);
            let m = PixelDaModel {
                g: nets().restorer.init(&device),
                t: Translator::new(3, 8, &device),
                d: PatchDiscriminator::new(3, 8, &device),
            };
            PixelDaModel { t: m.t.map(&mut Perturb), ..m }
        };

        let held = Held::PixelDa(model);
        let grads_of = |adversarial: f64, content: f64| {
            let sp = TrainSpec {
                pixel_da: config::PixelDaSpec { adversarial, content, content_pool: 2, width: 8 },
                ..run_spec(1)
            };
            let ctx = StepCtx {
                spec: &sp,
                schedule: &schedule,
                signed: false,
                alpha: 0.0,
                warmup: false,
                scale: 1.0,
                diagnose: false,
                ne2ne: None,
                pixel_da: Some(9),
            };
            let batch = sample_batch(&data.0, Some(&data.1), 2, 2, 8, 7, 3).unwrap();
            let shard = Shard { held: &held, device: &device, batch, pairs: 0..2 };
            let (point, grads) = run_step(std::slice::from_ref(&shard), &ctx, None);
            let Held::PixelDa(m) = &held else { unreachable!() };
            let of = |module: &dyn Fn(&mut CollectGrads)| {
                let mut c = CollectGrads { grads: &grads[0], out: Vec::new() };
                module(&mut c);
                c.out.concat()
            };
            let g = of(&|c| m.g.visit(c));
            let t = of(&|c| m.t.visit(c));
            let d = of(&|c| m.d.visit(c));
            (point, g, t, d)
        };
        let (p0, g0, t0, d0) = grads_of(0.0, 0.0);
        let (p1, g1, t1, d1) = grads_of(1.0, 0.0);
        let (p2, g2, t2, d2) = grads_of(0.0, 1.0);
        assert!(p0.adv.is_finite() && p0.adv == p1.adv && p0.content == p2.content);
        assert!(t0.iter().all(|v| *v == 0.0), "no translator term, no translator gradient");
        assert!(p0.content > 0.0, "the perturbed translator changes the content a little");
        assert!(d0.iter().any(|v| *v != 0.0), "the discriminator learns its own loss");
        assert!(g0.iter().any(|v| *v != 0.0), "G learns the Charbonnier term");
        assert!(t1.iter().any(|v| *v != 0.0), "the adversarial term moves the translator");
        assert!(t2.iter().any(|v| *v != 0.0), "the content term moves the translator");
        assert_eq!(max_diff(&d0, &d1), 0.0, "the adversarial term does not train the discriminator");
        assert_eq!(max_diff(&d0, &d2), 0.0);
        assert_eq!(max_diff(&g0, &g1), 0.0, "G sees the translation detached");
        assert_eq!(max_diff(&g0, &g2), 0.0);
    }

    /// A step split into shards — concurrent on one device (`shards`) or over data-parallel
    /// replicas (`devices`) — trains exactly as the whole batch does, up to float summation
    /// order: per-sample draws (γ, ε, slot swaps, dropout masks) and the whole batch's hinge
    /// state make the summed shard gradients the whole batch's gradient, for source-only,
    /// Noise-DA and DANN alike.
    #[test]
    fn sharded_steps_train_as_the_whole_batch() {
        use config::Shards;
        let data = tiny_data(false);
        // Log every step, so the gradient-norm diagnostic is compared too.
        let base = TrainSpec { batch: 4, log_every: 1, shards: Shards::Count(1), ..run_spec(6) };
        let go_dp =
            |method: Method, spec: &TrainSpec| go_on(method, spec, &data, None, None, None, spec.devices).unwrap();
        for method in [Method::SourceOnly, Method::NoiseDa, Method::Dann, Method::Neighbor2Neighbor, Method::PixelDa] {
            let one = go_dp(method, &base);
            assert_eq!(one.shards, 1);
            for split in [
                TrainSpec { shards: Shards::Count(2), ..base.clone() },
                TrainSpec { shards: Shards::Count(4), ..base.clone() },
                TrainSpec { devices: 2, ..base.clone() },
                TrainSpec { devices: 2, shards: Shards::Count(2), ..base.clone() },
            ] {
                let dp = go_dp(method, &split);
                let what = format!("{}, {} shards on {} device(s)", method.name(), dp.shards, split.devices);
                assert_eq!(dp.shards, split.devices * if let Shards::Count(n) = split.shards { n } else { 1 });
                let d = max_diff(&weights(&one.restorer), &weights(&dp.restorer));
                assert!(d < 1e-4, "{what}: G's max weight difference {d}");
                if let (Some(a), Some(b)) = (&one.diffusion, &dp.diffusion) {
                    let d = max_diff(&weights(a), &weights(b));
                    // Adam (ε 1e-8) turns float noise in gradients that are truly 0 (conv biases
                    // before a GroupNorm) into ±lr steps: D's weights agree loosely here, its
                    // gradients closely in `shard_gradients_sum_to_the_whole_batch_gradient`.
                    assert!(d < 5e-3, "{what}: D's max weight difference {d}");
                }
                assert_eq!(one.curve.len(), dp.curve.len());
                for (p, q) in one.curve.iter().zip(&dp.curve) {
                    let close =
                        |a: f64, b: f64| (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-4 * a.abs().max(1e-3);
                    for (name, a, b) in [
                        ("loss", p.loss, q.loss),
                        ("mse_pos", p.mse_pos, q.mse_pos),
                        ("mse_neg", p.mse_neg, q.mse_neg),
                        ("hinge", p.hinge, q.hinge),
                        ("grad_syn", p.grad_syn, q.grad_syn),
                        ("grad_real", p.grad_real, q.grad_real),
                    ] {
                        assert!(close(a, b), "{what}, step {}: {name} {a} vs {b}", p.step);
                    }
                }
            }
        }
        // `auto` splits every method on the CPU when there are threads to use.
        let auto = TrainSpec { shards: Shards::Auto, ..base.clone() };
        let expect = if rayon::current_num_threads() >= 2 { 2 } else { 1 };
        assert_eq!(go_dp(Method::SourceOnly, &auto).shards, expect);
        assert_eq!(go_dp(Method::NoiseDa, &auto).shards, expect);
        // A split that does not divide the batch is refused, naming the key.
        match go_on(Method::NoiseDa, &TrainSpec { shards: Shards::Count(3), ..base }, &data, None, None, None, 1) {
            Err(e) => assert!(e.message.contains("train.shards"), "{}", e.message),
            Ok(_) => panic!("3 shards of a batch of 4 must be refused"),
        }
    }

    /// The gradients of one Noise-DA step on a fixed batch: the whole batch on one module, and
    /// the same batch as 2 and 4 concurrent shards (forks summed), agree to float precision
    /// for every parameter of G and D, with the hinge active and inactive.
    #[test]
    fn shard_gradients_sum_to_the_whole_batch_gradient() {
        let data = tiny_data(false);
        let device = Device::flex().autodiff();
        let schedule = NoiseSchedule::paper();
        let model = {
            let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
            device.seed(4);
            NoiseDaModel { g: nets().restorer.init(&device), d: nets().diffusion.init(&device) }
        };
        let held = Held::Joint(model);
        for delta in [0.1, -10.0] {
            let sp = TrainSpec { batch: 4, noise_da: NoiseDaSpec { delta, ..spec(true).noise_da }, ..spec(true) };
            let b = sample_batch(&data.0, Some(&data.1), 4, 4, sp.patch, 7, 3).unwrap();
            let grads_of = |n: usize| {
                let ctx = StepCtx {
                    spec: &sp,
                    schedule: &schedule,
                    signed: false,
                    alpha: 0.5,
                    warmup: false,
                    scale: 1.0 / n as f64,
                    diagnose: true,
                    ne2ne: None,
                    pixel_da: None,
                };
                let draws = StepDraws::draw(&mut Rng::new(21), 4, [sp.patch, sp.patch], &ctx.noise_da());
                let forks: Vec<Held> = (1..n).map(|_| held.fork(&device)).collect();
                let shards: Vec<Shard> = std::iter::once(&held)
                    .chain(forks.iter())
                    .enumerate()
                    .map(|(k, h)| Shard {
                        held: h,
                        device: &device,
                        batch: b.shard(k, n),
                        pairs: k * (4 / n)..(k + 1) * (4 / n),
                    })
                    .collect();
                let (point, grads) = run_step(&shards, &ctx, Some(&draws));
                // Sum the shards' gradients per parameter.
                let Held::Joint(m) = &held else { unreachable!() };
                let mut per_param: Vec<Vec<f32>> = Vec::new();
                for g in &grads {
                    let mut c = CollectGrads { grads: g, out: Vec::new() };
                    m.visit(&mut c);
                    if per_param.is_empty() {
                        per_param = c.out;
                    } else {
                        for (acc, v) in per_param.iter_mut().zip(c.out) {
                            acc.iter_mut().zip(v).for_each(|(a, b)| *a += b);
                        }
                    }
                }
                (point, per_param)
            };
            let (p1, g1) = grads_of(1);
            assert_eq!(p1.hinge_active, if delta > 0.0 { 1.0 } else { 0.0 }, "δ {delta}: {}", p1.hinge);
            for n in [2, 4] {
                let (pn, gn) = grads_of(n);
                for (name, a, b) in [
                    ("loss", p1.loss, pn.loss),
                    ("grad_syn", p1.grad_syn, pn.grad_syn),
                    ("grad_real", p1.grad_real, pn.grad_real),
                ] {
                    assert!((a - b).abs() <= 1e-5 * a.abs().max(1e-6), "δ {delta}, {n} shards: {name} {a} vs {b}");
                }
                assert_eq!(g1.len(), gn.len());
                // Relative to each tensor's gradient, with a floor far below any real gradient
                // for those whose true gradient is 0 (a conv bias before a GroupNorm: float noise).
                let overall = g1.iter().flatten().fold(0.0f32, |m, v| m.max(v.abs()));
                for (i, (a, b)) in g1.iter().zip(&gn).enumerate() {
                    let scale = a.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    let diff = a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
                    assert!(
                        diff <= 1e-4 * scale + 1e-6 * overall,
                        "δ {delta}, {n} shards: parameter {i}: max |Δgrad| {diff} of {scale} (largest gradient {overall})"
                    );
                }
            }
        }
    }

    /// Every float parameter's gradient (zeros where it has none), in visiting order.
    struct CollectGrads<'a> {
        grads: &'a GradientsParams,
        out: Vec<Vec<f32>>,
    }

    impl burn::module::ModuleVisitor for CollectGrads<'_> {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            let v = match self.grads.get::<D>(param.id) {
                Some(g) => g.into_data().iter::<f32>().collect(),
                None => vec![0.0; param.val().shape().num_elements()],
            };
            self.out.push(v);
        }
    }

    /// Warm start: G begins from saved weights (a negligible learning rate keeps them), and
    /// Noise-DA adapts from there.
    #[test]
    fn warm_start_begins_from_the_saved_restorer() {
        let data = tiny_data(false);
        let pre = go(Method::SourceOnly, &run_spec(4), &data, None, None).unwrap();
        let dir = tmp("warm");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pre.bpk");
        pre.restorer.clone().save_file(&file).unwrap();
        let frozen = TrainSpec { lr: 1e-20, ema: None, ..run_spec(2) };
        let warm = go_on(Method::NoiseDa, &frozen, &data, None, None, Some(&file), 1).unwrap();
        let d = max_diff(&weights(&warm.restorer), &weights(&pre.restorer));
        assert!(d < 1e-6, "warm-started G moved by {d} with lr 1e-20");
        let cold = go(Method::NoiseDa, &frozen, &data, None, None).unwrap();
        assert!(max_diff(&weights(&cold.restorer), &weights(&pre.restorer)) > 1e-3, "without it, G starts elsewhere");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Noise-DA, the method this tool exists for (METHOD.md steps 1–8): G and the diffusion
//! network D live in one module and are updated by one Adam optimiser in the same step; the
//! diffusion loss reaches G through both condition slots; slots are shuffled per sample; a
//! residual-swapped negative pair adds a hinge on the whole batch's mean MSEs; α ramps
//! DANN-style, after an optional D warm-up. Here: the step's draws (γ, ε, slot swaps,
//! dropout), the joint forward of G and D over both domains, the loss and its shards, and the
//! gradient-norm diagnostics.

use burn::tensor::TensorData;

use super::*;
use crate::networks::{NoiseSchedule, like};
use crate::rng::Rng;
use crate::training::config::Conditions;
use crate::training::losses::{alpha_ramp, charbonnier, hinge, slot_swap};

/// G and D as one module, so one optimiser updates both (the paper's joint training).
#[derive(Module, Debug)]
pub struct NoiseDaModel {
    pub g: Restorer,
    pub d: DiffusionUNet,
}

pub(crate) struct NoiseDa;

/// The paper's noise schedule, computed once (every step samples γ from it).
fn paper_schedule() -> &'static NoiseSchedule {
    static SCHEDULE: std::sync::OnceLock<NoiseSchedule> = std::sync::OnceLock::new();
    SCHEDULE.get_or_init(NoiseSchedule::paper)
}

/// What a Noise-DA step fixes before it is split: α, the warm-up flag and every draw.
pub(crate) struct NoiseDaPrepared {
    signed: bool,
    alpha: f64,
    warmup: bool,
    draws: StepDraws,
}

impl NoiseDaPrepared {
    fn cfg<'a>(&'a self, spec: &'a TrainSpec) -> NoiseDaStep<'a> {
        NoiseDaStep { spec, schedule: paper_schedule(), signed: self.signed, alpha: self.alpha, warmup: self.warmup }
    }
}

/// A shard after its forward: its inputs (for the diagnostic's own forward), its
/// differentiable terms, and their values read back.
struct JointForward {
    inputs: [Tensor<4>; 3],
    terms: NoiseDaForward,
    charbonnier: f64,
    mse_pos: f64,
    mse_neg: Option<f64>,
}

impl TrainingMethod for NoiseDa {
    type Model = NoiseDaModel;
    type Step = NoiseDaPrepared;

    fn reads_target(&self, spec: &TrainSpec) -> bool {
        spec.noise_da.diffusion_loss
    }

    fn sections(&self) -> &'static [&'static str] {
        &["noise_da"]
    }

    /// Without its loss D has no effect on G: the step is exactly the source-only step.
    fn trains_as(&self, spec: &TrainSpec) -> Option<Method> {
        (!spec.noise_da.diffusion_loss).then_some(Method::SourceOnly)
    }

    /// The hinge is a function of the whole batch's pairs: shards must hold whole pairs.
    fn unsplittable(&self, spec: &TrainSpec) -> Option<&'static str> {
        (spec.noise_da.target_count(spec.batch) != spec.batch).then_some("noise_da.target_batch equal to batch")
    }

    fn build(&self, g: Restorer, inp: &TrainInputs, device: &Device) -> NoiseDaModel {
        let d = inp.nets.diffusion.init_for(inp.spec.noise_da.conditions.count(), device);
        NoiseDaModel { g, d }
    }

    fn restorer(model: &NoiseDaModel) -> &Restorer {
        &model.g
    }

    fn extras(model: &NoiseDaModel) -> Vec<(&'static str, usize)> {
        vec![("diffusion", model.d.num_params())]
    }

    fn prepare(&self, ctx: &StepCtx, pairs: usize) -> NoiseDaPrepared {
        let nd = &ctx.spec.noise_da;
        let signed = ctx.task.diffusion_signed();
        // During D's warm-up G feels nothing; the ramp starts after it.
        let alpha = ctx.step.checked_sub(nd.d_warmup).map_or(0.0, |after| alpha_ramp(after, nd.ramp_steps, nd.w));
        let warmup = ctx.step < nd.d_warmup;
        // Every draw of the step, for the whole batch, before it is split.
        let mut rng = Rng::derive(ctx.data_seed, "diffusion", &[ctx.step as u64]);
        let cfg = NoiseDaStep { spec: ctx.spec, schedule: paper_schedule(), signed, alpha, warmup };
        let draws = StepDraws::draw(&mut rng, pairs, [ctx.spec.patch, ctx.spec.patch], &cfg);
        NoiseDaPrepared { signed, alpha, warmup, draws }
    }

    /// The hinge is a function of the whole batch's mean MSEs, so each shard's forward reports
    /// its MSEs first, and every shard then backpropagates a loss with the whole batch's hinge
    /// gradient (see [`NoiseDaForward::total`]).
    fn step(
        &self,
        shards: &[Shard<NoiseDaModel>],
        ctx: &StepCtx,
        prep: &NoiseDaPrepared,
    ) -> (CurvePoint, Vec<GradientsParams>) {
        let spec = ctx.spec;
        let nda = prep.cfg(spec);
        let joint = par_map(shards.iter().collect(), |sh: &Shard<NoiseDaModel>| {
            let [x_s, y_s, x_r] = ctx.inputs(sh);
            let draws = prep.draws.shard(sh.pairs.clone());
            let terms = noise_da_forward(&ctx.lowered(sh.model), x_s.clone(), y_s.clone(), x_r.clone(), &nda, &draws);
            JointForward {
                charbonnier: scalar(like(terms.charbonnier.clone(), DType::F32)),
                mse_pos: scalar(like(terms.mse_pos.clone(), DType::F32)),
                mse_neg: terms.mse_neg.clone().map(|t| scalar(like(t, DType::F32))),
                inputs: [x_s, y_s, x_r],
                terms,
            }
        });
        // The whole batch's MSEs and hinge state, then every shard's backward.
        let s = shards.len() as f64;
        let mean = |f: fn(&JointForward) -> f64| joint.iter().map(f).sum::<f64>() / s;
        let mut point = CurvePoint::at(0);
        point.charbonnier = mean(|j| j.charbonnier);
        let pos = mean(|j| j.mse_pos);
        let neg = mean(|j| j.mse_neg.unwrap_or(f64::NAN));
        let weight = joint[0].terms.weight;
        let residual_swap = spec.noise_da.residual_swap;
        let hinge_value = (pos - neg + spec.noise_da.delta).max(0.0);
        let active = residual_swap && hinge_value > 0.0;
        point.alpha = prep.alpha;
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
        let done = par_map(joint.into_iter().zip(shards).collect(), |(j, sh): (JointForward, &Shard<NoiseDaModel>)| {
            let JointForward { inputs: [x_s, y_s, x_r], terms, .. } = j;
            let grads = ctx.backward(terms.total(active), sh.model);
            // Its own forward (a graph is consumed by its backward), the step's draws.
            let sq = ctx.diagnose.then(|| {
                let draws = prep.draws.shard(sh.pairs.clone());
                condition_gradient_sq_norms(&ctx.lowered(sh.model), x_s, y_s, x_r, &nda, &draws, active)
            });
            (grads, sq)
        });
        if ctx.diagnose {
            // The whole batch's loss is the mean of the shards': its gradient on a shard's rows
            // is 1/s of the shard's own.
            let (a, b) = done.iter().filter_map(|d| d.1).fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
            (point.grad_syn, point.grad_real) = (a.sqrt() / s, b.sqrt() / s);
        }
        (point, done.into_iter().map(|d| d.0).collect())
    }

    fn finish(model: NoiseDaModel) -> Finished {
        Finished { restorer: model.g, diffusion: Some(model.d.valid()), translator: None }
    }
}

/// Fixed settings of one Noise-DA step.
pub struct NoiseDaStep<'a> {
    pub spec: &'a TrainSpec,
    pub schedule: &'a NoiseSchedule,
    /// Feed D images in [−1, 1] (derain, deblur) instead of [0, 1] (denoise).
    pub signed: bool,
    pub alpha: f64,
    /// A D warm-up step: D learns from its loss, G from the Charbonnier term alone.
    pub warmup: bool,
}

/// Every random draw of one Noise-DA step, made once for the whole batch in a fixed order and
/// kept per pair (synthetic sample i with target sample i), so a pair's γ, ε, slot swaps and
/// dropout masks are the same whichever shard or device computes it: training results do not
/// depend on `train.shards` or `train.devices` (up to float summation order).
pub struct StepDraws {
    gammas: Vec<f32>,
    /// ε, pair-major: `plane` values per pair.
    eps: Vec<f32>,
    plane: usize,
    swap_pos: Vec<bool>,
    swap_neg: Vec<bool>,
    dropout_seed: u64,
}

impl StepDraws {
    /// The draws for `pairs` pairs of `h`×`w` crops, from `rng`.
    pub(crate) fn draw(rng: &mut Rng, pairs: usize, [h, w]: [usize; 2], cfg: &NoiseDaStep) -> StepDraws {
        let nd = &cfg.spec.noise_da;
        let gammas =
            (0..pairs).map(|_| cfg.schedule.sample_gamma(rng, nd.t_range[0], nd.t_range[1]).1 as f32).collect();
        let plane = 3 * h * w;
        let eps = (0..pairs * plane).map(|_| rng.normal() as f32).collect();
        let mut swaps = |on: bool| -> Vec<bool> { (0..pairs).map(|_| on && rng.chance(0.5)).collect() };
        let swap_pos = swaps(nd.channel_shuffle);
        let swap_neg = if nd.residual_swap { swaps(nd.channel_shuffle) } else { vec![] };
        StepDraws { gammas, eps, plane, swap_pos, swap_neg, dropout_seed: rng.next_u64() }
    }

    pub fn pairs(&self) -> usize {
        self.gammas.len()
    }

    /// The draws of pairs `range` (one shard's). D's rows are the shard's positive pairs then
    /// its negative ones, identified by their index among the step's rows (positives first).
    pub(crate) fn shard(&self, range: std::ops::Range<usize>) -> ShardDraws<'_> {
        let n = self.pairs();
        let pos = range.clone().map(|i| i as u64);
        let rows = if self.swap_neg.is_empty() {
            pos.collect()
        } else {
            pos.chain(range.clone().map(|i| (n + i) as u64)).collect()
        };
        ShardDraws {
            gammas: &self.gammas[range.clone()],
            eps: &self.eps[range.start * self.plane..range.end * self.plane],
            swap_pos: &self.swap_pos[range.clone()],
            swap_neg: if self.swap_neg.is_empty() { &[] } else { &self.swap_neg[range] },
            dropout: crate::networks::diffusion::DropoutDraw { seed: self.dropout_seed, rows },
        }
    }
}

/// One shard's view of [`StepDraws`].
pub(crate) struct ShardDraws<'a> {
    gammas: &'a [f32],
    eps: &'a [f32],
    swap_pos: &'a [bool],
    swap_neg: &'a [bool],
    dropout: crate::networks::diffusion::DropoutDraw,
}

/// The differentiable terms of one Noise-DA forward on one shard (or the whole batch), before
/// the hinge, which is a function of the whole batch's mean MSEs, is known.
pub struct NoiseDaForward {
    pub charbonnier: Tensor<1>,
    pub mse_pos: Tensor<1>,
    /// The MSE with residual-swapped conditions, when residual swapping is on.
    pub mse_neg: Option<Tensor<1>>,
    /// Weight of the diffusion loss in the total (α; 1 with a D warm-up, see below).
    pub weight: f64,
}

impl NoiseDaForward {
    /// The shard's total loss given whether the whole batch's hinge max(0, δ + MSE⁺ − MSE⁻) is
    /// active: ½(MSE⁺ + a·(MSE⁺ − MSE⁻)) has the hinge's gradient, so the mean of the shards'
    /// losses has the gradient of the whole batch's loss.
    pub(crate) fn total(&self, hinge_active: bool) -> Tensor<1> {
        let l_noise = match &self.mse_neg {
            Some(neg) if hinge_active => (self.mse_pos.clone() * 2.0 - neg.clone()) * 0.5,
            Some(_) => self.mse_pos.clone() * 0.5,
            None => self.mse_pos.clone(),
        };
        self.charbonnier.clone() + l_noise * self.weight
    }
}

/// The loss terms of one Noise-DA step (all differentiable, nothing detached).
pub struct NoiseDaLosses {
    pub charbonnier: Tensor<1>,
    pub mse_pos: Tensor<1>,
    /// (MSE with residual-swapped conditions, hinge) when residual swapping is on.
    pub contrastive: Option<(Tensor<1>, Tensor<1>)>,
    pub total: Tensor<1>,
}

/// METHOD.md steps 1–7 for one whole batch: synthetic pairs (`x_s`, `y_s`) and target inputs
/// `x_r`, every draw from `rng`.
pub fn noise_da_losses(
    model: &NoiseDaModel,
    x_s: Tensor<4>,
    y_s: Tensor<4>,
    x_r: Tensor<4>,
    cfg: &NoiseDaStep,
    rng: &mut Rng,
) -> NoiseDaLosses {
    let [n_s, _, h, w] = x_s.dims();
    let pairs = n_s.max(x_r.dims()[0]);
    let draws = StepDraws::draw(rng, pairs, [h, w], cfg);
    let f = noise_da_forward(model, x_s, y_s, x_r, cfg, &draws.shard(0..pairs));
    let delta = cfg.spec.noise_da.delta;
    let (contrastive, l_noise) = match f.mse_neg.clone() {
        Some(neg) => {
            let l_con = hinge(f.mse_pos.clone(), neg.clone(), delta);
            (Some((neg, l_con.clone())), (f.mse_pos.clone() + l_con) * 0.5)
        }
        None => (None, f.mse_pos.clone()),
    };
    // 7. Total loss.
    let total = f.charbonnier.clone() + l_noise * f.weight;
    NoiseDaLosses { charbonnier: f.charbonnier, mse_pos: f.mse_pos, contrastive, total }
}

/// METHOD.md steps 1–6 on one shard: G's residuals, the Charbonnier term and D's MSEs.
pub(crate) fn noise_da_forward(
    model: &NoiseDaModel,
    x_s: Tensor<4>,
    y_s: Tensor<4>,
    x_r: Tensor<4>,
    cfg: &NoiseDaStep,
    draws: &ShardDraws,
) -> NoiseDaForward {
    // 1. Residuals of both domains in one pass.
    let (r_s, r_r) = split_rows(model.g.residual(Tensor::cat(vec![x_s.clone(), x_r.clone()], 0)), x_s.dims()[0]);
    // 2. Supervised loss on the synthetic pair only.
    let l_char = charbonnier(x_s.clone() + r_s.clone(), y_s.clone(), cfg.spec.charbonnier_eps);
    // With a D warm-up, D's loss keeps weight 1 for the whole training and only G's share of
    // its gradient follows α (0 during the warm-up): the value G's residuals carry is
    // unchanged, their gradient scaled. Weighting D's loss by α instead would make its
    // gradients jump from full size to ≈ 0 when the ramp starts, and Adam, normalised by
    // the warm-up's large second moments, would all but stop D for hundreds of steps (seen:
    // D's error stalled at 0.5 against 0.13 without a warm-up).
    let (r_s, r_r, weight) = if cfg.spec.noise_da.d_warmup > 0 {
        let g = if cfg.warmup { 0.0 } else { cfg.alpha };
        let share = |r: Tensor<4>| if g == 0.0 { r.detach() } else { r.clone() * g + r.detach() * (1.0 - g) };
        (share(r_s), share(r_r), 1.0)
    } else {
        (r_s, r_r, cfg.alpha)
    };
    let (mse_pos, mse_neg) = diffusion_terms(&model.d, x_s, y_s, x_r, r_s, r_r, cfg, draws);
    NoiseDaForward { charbonnier: l_char, mse_pos, mse_neg, weight }
}

/// Diagnostic (issue: does D ignore the real condition?): the squared L2 norms of the
/// diffusion loss's gradient with respect to G's synthetic and to its real residuals on one
/// shard — how much of the adaptation signal reaches G through each domain — with the step's
/// own draws and hinge state.
#[allow(clippy::too_many_arguments)]
pub(crate) fn condition_gradient_sq_norms(
    model: &NoiseDaModel,
    x_s: Tensor<4>,
    y_s: Tensor<4>,
    x_r: Tensor<4>,
    cfg: &NoiseDaStep,
    draws: &ShardDraws,
    hinge_active: bool,
) -> (f64, f64) {
    let (r_s, r_r) =
        split_rows(model.g.residual(Tensor::cat(vec![x_s.clone(), x_r.clone()], 0)).detach(), x_s.dims()[0]);
    let (r_s, r_r) = (r_s.require_grad(), r_r.require_grad());
    let (mse_pos, mse_neg) = diffusion_terms(&model.d, x_s, y_s, x_r, r_s.clone(), r_r.clone(), cfg, draws);
    let terms = NoiseDaForward { charbonnier: mse_pos.zeros_like(), mse_pos, mse_neg, weight: 1.0 };
    let grads = like(terms.total(hinge_active), DType::F32).backward();
    let sq = |t: &Tensor<4>| {
        t.grad(&grads).map_or(0.0, |g| {
            like(g, DType::F32).powf_scalar(2.0).sum().into_data().try_to_vec::<f32>().expect("f32")[0] as f64
        })
    };
    (sq(&r_s), sq(&r_r))
}

/// D's MSE with the true conditions and, with residual swapping, with the swapped ones.
#[allow(clippy::too_many_arguments)]
pub(crate) fn diffusion_terms(
    d: &DiffusionUNet,
    x_s: Tensor<4>,
    y_s: Tensor<4>,
    x_r: Tensor<4>,
    r_s: Tensor<4>,
    r_r: Tensor<4>,
    cfg: &NoiseDaStep,
    draws: &ShardDraws,
) -> (Tensor<1>, Option<Tensor<1>>) {
    let device = x_s.device();
    // Batch composition: pair every synthetic with a real image, the smaller side cycled.
    let n = x_s.dims()[0].max(x_r.dims()[0]);
    assert_eq!(n, draws.gammas.len(), "draws for {} pairs, batch has {n}", draws.gammas.len());
    let (x_s, y_s, r_s) = (cycle_rows(x_s, n), cycle_rows(y_s, n), cycle_rows(r_s, n));
    let (x_r, r_r) = (cycle_rows(x_r, n), cycle_rows(r_r, n));
    let [_, _, h, w] = x_s.dims();
    let yhat_s = x_s.clone() + r_s.clone();
    let yhat_r = x_r.clone() + r_r.clone();
    // 3–4. Noisy synthetic ground truth at a continuous noise level γ per sample.
    let nd = &cfg.spec.noise_da;
    let signed = cfg.signed;
    let to_d = |t: Tensor<4>| if signed { t * 2.0 - 1.0 } else { t };
    let eps = like(Tensor::<4>::from_data(TensorData::new(draws.eps.to_vec(), [n, 3, h, w]), &device), x_s.dtype());
    let y_noisy = noised(to_d(y_s), eps.clone(), draws.gammas);
    // 5. Positive conditions, slots shuffled per sample.
    // With a single condition (ablation) there are no slots to shuffle.
    let conditions = |syn: Tensor<4>, real: Tensor<4>, shuffle: &[bool]| match nd.conditions {
        Conditions::Both => {
            let (a, c) = slot_swap(to_d(syn), to_d(real), shuffle);
            vec![a, c]
        }
        Conditions::Synthetic => vec![to_d(syn)],
        Conditions::Real => vec![to_d(real)],
    };
    let pos_in = Tensor::cat([vec![y_noisy.clone()], conditions(yhat_s, yhat_r, draws.swap_pos)].concat(), 1);

    if nd.residual_swap {
        // 6. Negative conditions: residuals swapped across domains, own slot shuffle, same ỹ, γ, ε.
        let neg = conditions(x_s + r_r, x_r + r_s, draws.swap_neg);
        let neg_in = Tensor::cat([vec![y_noisy], neg].concat(), 1);
        let g2: Vec<f32> = draws.gammas.iter().chain(draws.gammas.iter()).copied().collect();
        let out = d.forward_with(Tensor::cat(vec![pos_in, neg_in], 0), &g2, Some(&draws.dropout));
        let mut o = out.chunk(2, 0);
        let e_neg = o.pop().expect("neg");
        let e_pos = o.pop().expect("pos");
        let mse_pos = (eps.clone() - e_pos).powf_scalar(2.0).mean();
        let mse_neg = (eps - e_neg).powf_scalar(2.0).mean();
        (mse_pos, Some(mse_neg))
    } else {
        let e_pos = d.forward_with(pos_in, draws.gammas, Some(&draws.dropout));
        ((eps - e_pos).powf_scalar(2.0).mean(), None)
    }
}

/// Standard normal draws from `rng` as a tensor (row-major order).
pub(crate) fn normal_tensor(rng: &mut Rng, shape: [usize; 4], dtype: DType, device: &Device) -> Tensor<4> {
    let v: Vec<f32> = (0..shape.iter().product::<usize>()).map(|_| rng.normal() as f32).collect();
    like(Tensor::<4>::from_data(TensorData::new(v, shape), device), dtype)
}

/// METHOD.md step 3: ỹ = √γ·y + √(1−γ)·ε per sample, `y` already in D's range.
pub(crate) fn noised(y: Tensor<4>, eps: Tensor<4>, gammas: &[f32]) -> Tensor<4> {
    let (device, dtype) = (y.device(), y.dtype());
    let per_sample = |f: &dyn Fn(f32) -> f32| {
        let v: Vec<f32> = gammas.iter().map(|&g| f(g)).collect();
        like(Tensor::<4>::from_data(TensorData::new(v, [gammas.len(), 1, 1, 1]), &device), dtype)
    };
    y * per_sample(&|g| g.sqrt()) + eps * per_sample(&|g| (1.0 - g).sqrt())
}

/// The first `k` rows and the rest.
pub(crate) fn split_rows(t: Tensor<4>, k: usize) -> (Tensor<4>, Tensor<4>) {
    let n = t.dims()[0];
    (t.clone().narrow(0, 0, k), t.narrow(0, k, n - k))
}

/// `t` grown to `n` rows by repeating its rows in order (row i is row i mod len).
pub(crate) fn cycle_rows(t: Tensor<4>, n: usize) -> Tensor<4> {
    let len = t.dims()[0];
    if len == n {
        return t;
    }
    let idx: Vec<i64> = (0..n).map(|i| (i % len) as i64).collect();
    let idx = Tensor::<1, burn::tensor::Int>::from_data(TensorData::new(idx, [n]), &t.device());
    t.select(0, idx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::networks::{DiffusionConfig, NoiseSchedule, RestorerConfig};
    use crate::training::Method;
    use crate::training::batch::sample_batch;
    use crate::training::config::{Conditions, NoiseDaSpec};
    use crate::training::tests::*;

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
        for residual_swap in [false, true] {
            let sp = spec(residual_swap);
            let cfg =
                NoiseDaStep { spec: &sp, schedule: &NoiseSchedule::paper(), signed: false, alpha: 1.0, warmup: false };
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
        let alpha = 0.25;
        let grads = |d_warmup: usize| {
            let sp = TrainSpec { noise_da: NoiseDaSpec { d_warmup, ..spec(true).noise_da }, ..spec(true) };
            let cfg = NoiseDaStep { spec: &sp, schedule: &NoiseSchedule::paper(), signed: false, alpha, warmup: false };
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

    /// The gradients of one Noise-DA step on a fixed batch: the whole batch on one module, and
    /// the same batch as 2 and 4 concurrent shards (forks summed), agree to float precision
    /// for every parameter of G and D, with the hinge active and inactive.
    #[test]
    fn shard_gradients_sum_to_the_whole_batch_gradient() {
        let data = tiny_data(false);
        let device = Device::flex().autodiff();
        let model = {
            let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
            device.seed(4);
            NoiseDaModel { g: nets().restorer.init(&device), d: nets().diffusion.init(&device) }
        };
        for delta in [0.1, -10.0] {
            let sp = TrainSpec { batch: 4, noise_da: NoiseDaSpec { delta, ..spec(true).noise_da }, ..spec(true) };
            let b = sample_batch(&data.0, Some(&data.1), 4, 4, sp.patch, 7, 3).unwrap();
            let grads_of = |n: usize| {
                let ctx = test_ctx(&sp, 1.0 / n as f64, true);
                let prepared = NoiseDa.prepare(&ctx, 4);
                let forks: Vec<NoiseDaModel> = (1..n).map(|_| model.clone().fork(&device)).collect();
                let shards: Vec<Shard<NoiseDaModel>> = std::iter::once(&model)
                    .chain(forks.iter())
                    .enumerate()
                    .map(|(k, h)| Shard {
                        model: h,
                        device: &device,
                        batch: b.shard(k, n),
                        pairs: k * (4 / n)..(k + 1) * (4 / n),
                    })
                    .collect();
                let (point, grads) = NoiseDa.step(&shards, &ctx, &prepared);
                // Sum the shards' gradients per parameter.
                let m = &model;
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
}

//! The Noise-DA step's terms: per-step draws (γ, ε, slot swaps, dropout), the joint forward
//! of G and D over both domains, the diffusion loss, the residual-swapping hinge and the
//! gradient-norm diagnostics (METHOD.md steps 1–8).

use super::*;

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
    pub(super) fn shard(&self, range: std::ops::Range<usize>) -> ShardDraws<'_> {
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
pub(super) struct ShardDraws<'a> {
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
pub(super) fn noise_da_forward(
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
pub(super) fn condition_gradient_sq_norms(
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
pub(super) fn diffusion_terms(
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
pub(super) fn split_rows(t: Tensor<4>, k: usize) -> (Tensor<4>, Tensor<4>) {
    let n = t.dims()[0];
    (t.clone().narrow(0, 0, k), t.narrow(0, k, n - k))
}

/// `t` grown to `n` rows by repeating its rows in order (row i is row i mod len).
pub(super) fn cycle_rows(t: Tensor<4>, n: usize) -> Tensor<4> {
    let len = t.dims()[0];
    if len == n {
        return t;
    }
    let idx: Vec<i64> = (0..n).map(|i| (i % len) as i64).collect();
    let idx = Tensor::<1, burn::tensor::Int>::from_data(TensorData::new(idx, [n]), &t.device());
    t.select(0, idx)
}

//! The optimiser: Adam with PyTorch's defaults (the release's), its per-parameter update fused
//! into one parallel pass on flex (the weight average's update is `kernels::blend`).
//!
//! Why: burn's `Adam` runs thirteen element-wise tensor ops per parameter per step, each a
//! single-threaded pass that allocates its result; over NAFNet's 29 M weights that was ≈ 10 %
//! of a training step (issue 28's profile). The fused pass does the same f32 arithmetic in the
//! same order (bit-identical, tested), so results, checkpoints and the optimiser record (burn's
//! `AdamState`, names unchanged) are those of burn's `Adam`; other back-ends and dtypes take
//! burn's ops.

use burn::optim::{Adam, AdamConfig, AdamState, AdaptiveMomentumState, LearningRate, ModuleOptimizer, Optimizer};
use burn::tensor::{Device, Tensor, TensorData};
use rayon::prelude::*;

use crate::networks::kernels::{CHUNK, fast_path, vectorised};

/// Adam as the release trains with it: β 0.9 / 0.999, ε 1e-8 (PyTorch's defaults; burn's own
/// default ε is 1e-5), no weight decay.
#[derive(Clone)]
pub(crate) struct FusedAdam {
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    /// burn's own, for tensors the fused pass does not take.
    plain: Adam,
}

impl FusedAdam {
    pub(crate) fn release() -> Self {
        let (beta_1, beta_2, epsilon) = (0.9, 0.999, 1e-8);
        let plain = AdamConfig::new().with_beta_1(beta_1).with_beta_2(beta_2).with_epsilon(epsilon).build();
        FusedAdam { beta_1, beta_2, epsilon, plain }
    }

    /// The module optimiser the training loop steps (`ModuleOptimizer::step_multi`).
    pub(crate) fn init(self) -> ModuleOptimizer {
        ModuleOptimizer::from(self)
    }
}

/// The scalars of one Adam step, as burn's `AdaptiveMomentum` computes them (f32).
#[derive(Clone, Copy)]
struct AdamScalars {
    beta_1: f32,
    beta_2: f32,
    /// √(1 − β₂ᵗ) / (1 − β₁ᵗ)
    combined: f32,
    /// ε · √(1 − β₂ᵗ)
    eps: f32,
    lr: f32,
}

impl Optimizer for FusedAdam {
    type State<const D: usize> = AdamState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<AdamState<D>>,
    ) -> (Tensor<D>, Option<AdamState<D>>) {
        let fused = fast_path(&tensor)
            && fast_path(&grad)
            && state.as_ref().is_none_or(|s| {
                let m = &s.momentum;
                m.max_moment_2.is_none() && fast_path(&m.moment_1) && fast_path(&m.moment_2)
            });
        if !fused {
            return self.plain.step(lr, tensor, grad, state);
        }
        let (device, shape) = (tensor.device(), tensor.dims());
        let n = tensor.shape().num_elements();
        let (time, m, v) = match state {
            Some(s) => (s.momentum.time + 1, Some(s.momentum.moment_1), Some(s.momentum.moment_2)),
            None => (1, None, None),
        };
        let bias_correction2_sqrt = (1.0 - self.beta_2.powi(time as i32)).sqrt();
        let c = AdamScalars {
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            combined: bias_correction2_sqrt / (1.0 - self.beta_1.powi(time as i32)),
            eps: self.epsilon * bias_correction2_sqrt,
            lr: lr as f32,
        };
        // Buffers travel as `TensorData` (zero-copy where the tensor owns its buffer alone, and
        // flex's aligned allocation kept; a `Vec` round trip copied every tensor twice).
        let mut p = tensor.into_data();
        let g = grad.into_data();
        let first = m.is_none();
        let zeros = || TensorData::new(vec![0.0f32; n], shape);
        let mut m = m.map(Tensor::into_data).unwrap_or_else(zeros);
        let mut v = v.map(Tensor::into_data).unwrap_or_else(zeros);
        adam_update(f32s_mut(&mut p), f32s(&g), f32s_mut(&mut m), f32s_mut(&mut v), c, first);
        let state = AdamState::new(AdaptiveMomentumState::new(
            time,
            Tensor::from_data(m, &device),
            Tensor::from_data(v, &device),
        ));
        (Tensor::from_data(p, &device), Some(state))
    }

    fn to_device<const D: usize>(state: AdamState<D>, device: &Device) -> AdamState<D> {
        <Adam as Optimizer>::to_device(state, device)
    }
}

/// The f32 values of data taken from a tensor that passed [`fast_path`] (f32 by that check).
fn f32s(data: &TensorData) -> &[f32] {
    data.as_slice::<f32>().expect("f32, checked by `fast_path`")
}

fn f32s_mut(data: &mut TensorData) -> &mut [f32] {
    data.as_mut_slice::<f32>().expect("f32, checked by `fast_path`")
}

/// One Adam step over a parameter, its gradient and its two moments, in place. The first step
/// (`first`) starts the moments from the gradient alone, as burn does (no `0 · β` term).
fn adam_update(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], c: AdamScalars, first: bool) {
    p.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .for_each(|(((p, g), m), v)| vectorised(|| adam_chunk(p, g, m, v, c, first)));
}

/// The element loop of [`adam_update`]: the scalars are locals and the branch is outside the
/// loop, so the compiler keeps them in registers and vectorises it (it did neither when they
/// were read through the captured struct: a scalar loop slower than burn's thirteen passes).
#[inline(always)]
fn adam_chunk(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], c: AdamScalars, first: bool) {
    let AdamScalars { beta_1, beta_2, combined, eps, lr } = c;
    let (f1, f2) = (1.0 - beta_1, 1.0 - beta_2);
    let n = p.len();
    let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
    if first {
        for i in 0..n {
            m[i] = g[i] * f1;
            v[i] = (g[i] * g[i]) * f2;
        }
    } else {
        for i in 0..n {
            m[i] = m[i] * beta_1 + g[i] * f1;
            v[i] = v[i] * beta_2 + (g[i] * g[i]) * f2;
        }
    }
    for i in 0..n {
        p[i] -= ((m[i] * combined) / (v[i].sqrt() + eps)) * lr;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    fn vals<const D: usize>(t: &Tensor<D>) -> Vec<f32> {
        t.clone().into_data().try_into_vec::<f32>().unwrap()
    }

    /// The fused step equals burn's `Adam` bit for bit over several steps, moments included,
    /// for tensors larger than one parallel chunk and for tiny ones.
    #[test]
    fn fused_adam_equals_burns_adam() {
        let device = Device::flex();
        device.seed(7);
        let ours = FusedAdam::release();
        let theirs = ours.plain.clone();
        for shape in [[3, 5], [300, 257]] {
            let mut a = Tensor::<2>::random(shape, Distribution::Normal(0.0, 1.0), &device);
            let mut b = a.clone();
            let (mut sa, mut sb) = (None, None);
            for step in 0..4 {
                let g = Tensor::<2>::random(shape, Distribution::Normal(0.0, 0.1 + step as f64), &device);
                let lr = 2e-4 * (step + 1) as f64;
                (a, sa) = ours.step(lr, a, g.clone(), sa);
                (b, sb) = theirs.step(lr, b, g, sb);
                assert_eq!(vals(&a), vals(&b), "parameters after step {step}");
                let (ma, mb) = (&sa.as_ref().unwrap().momentum, &sb.as_ref().unwrap().momentum);
                assert_eq!(ma.time, mb.time);
                assert_eq!(vals(&ma.moment_1), vals(&mb.moment_1));
                assert_eq!(vals(&ma.moment_2), vals(&mb.moment_2));
            }
            // It moved: not a no-op that equals a no-op.
            assert!(vals(&a).iter().zip(vals(&Tensor::<2>::zeros(shape, &device))).any(|(x, z)| *x != z));
        }
    }

    /// A state saved by burn's `Adam` continues under the fused step exactly as under burn's.
    #[test]
    fn fused_adam_continues_burns_state() {
        let device = Device::flex();
        device.seed(11);
        let ours = FusedAdam::release();
        let p = Tensor::<1>::random([1000], Distribution::Normal(0.0, 1.0), &device);
        let g = Tensor::<1>::random([1000], Distribution::Normal(0.0, 1.0), &device);
        let (p, s) = ours.plain.step(1e-3, p, g.clone(), None);
        let (a, _) = ours.step(1e-3, p.clone(), g.clone(), s.clone());
        let (b, _) = ours.plain.step(1e-3, p, g, s);
        assert_eq!(vals(&a), vals(&b));
    }
}

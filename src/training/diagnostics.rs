//! Diagnostics of the adaptation signal, for a user asking *why* Noise-DA did or did not help.
//!
//! This module owns two measurements on our own data and networks:
//! - the **D probe**, after Noise-DA training: D's noise-prediction error when the real slot
//!   holds the target's clean reference, G's restored output, or the raw degraded input (on a
//!   simulated or paired target, where a reference exists). The method only works if D rewards
//!   the truth: error(reference) < error(G's output) < error(input).
//! - the **premise check** of the paper's Fig. 1a: a D trained alone with conditions =
//!   reference + AWGN(σ), σ random, then its error per σ on held-out references. The paper's
//!   premise is that the error grows with σ; how steeply it grows is how much signal D's loss
//!   can give a restorer.
//!
//! Both are pure functions of their seeds (every draw from [`Rng::derive`]).

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::batch::{dihedral, random_crop, sample_batch, to_tensor};
use super::config::Conditions;
use super::losses::slot_swap;
use super::methods::noise_da::{NoiseDaModel, noised, normal_tensor};
use super::methods::scalar;
use crate::datasets::{PairedItem, PairedSet};
use crate::image::Image;
use crate::networks::diffusion::DropoutDraw;
use crate::networks::{DiffusionConfig, DiffusionUNet, NoiseSchedule, Restorer};
use crate::rng::Rng;

/// D's mean noise-prediction MSE with three contents of the real condition slot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DProbe {
    /// (ỹ, γ, ε) samples averaged over (the same draws for each row).
    pub samples: usize,
    /// The target's clean reference in the real slot.
    pub reference: f64,
    /// G's restoration of the target input.
    pub restored: f64,
    /// The unrestored target input.
    pub input: f64,
}

impl DProbe {
    /// Does D rank the conditions the way the method needs it to?
    pub(crate) fn rewards_truth(&self) -> bool {
        self.reference < self.restored && self.restored < self.input
    }
}

/// Crops of `patch`² from the degraded input and the reference of random `items`, same place.
fn paired_crops(items: &[PairedItem], n: usize, patch: usize, rng: &mut Rng) -> (Vec<Image>, Vec<Image>) {
    (0..n)
        .map(|_| {
            let item = &items[rng.below(items.len() as u64) as usize];
            let p = patch.min(item.degraded.width).min(item.degraded.height);
            let (x, y) = random_crop(&item.degraded, p, rng);
            let k = rng.below(8) as u8;
            (dihedral(&item.degraded.crop(x, y, p, p), k), dihedral(&item.clean.crop(x, y, p, p), k))
        })
        .unzip()
}

/// Scale to D's range: [−1, 1] when `signed`.
fn to_d(t: Tensor<4>, signed: bool) -> Tensor<4> {
    if signed { t * 2.0 - 1.0 } else { t }
}

/// Settings of a probe.
pub struct ProbeInputs<'a> {
    /// Synthetic source pairs (the other condition slot, and ỹ's clean image, as in training).
    pub source: &'a PairedSet,
    /// Target images with their reference (a test or validation set of the target domain).
    pub target: &'a [PairedItem],
    pub conditions: Conditions,
    pub patch: usize,
    pub signed: bool,
    pub batches: usize,
    pub batch: usize,
    pub seed: u64,
}

/// The D probe (see the module doc) with trained `g` and `d` (inference weights). `None` when
/// D never sees the real condition (`conditions: synthetic`) or there is no target image.
pub(crate) fn probe_d(g: &Restorer, d: &DiffusionUNet, inp: &ProbeInputs, device: &Device) -> Option<DProbe> {
    if inp.conditions == Conditions::Synthetic
        || inp.target.is_empty()
        || crate::datasets::CropPool::count(inp.source) == 0
    {
        return None;
    }
    let schedule = NoiseSchedule::paper();
    let n = inp.batch;
    let mut sums = [0.0f64; 3];
    for b in 0..inp.batches {
        let mut rng = Rng::derive(inp.seed, "d-probe", &[b as u64]);
        let syn = sample_batch(inp.source, None, n, 0, inp.patch, inp.seed, b as u64).ok()?;
        let (noisy, reference) = paired_crops(inp.target, n, inp.patch, &mut rng);
        if noisy[0].width != syn.source_clean[0].width {
            return None; // target images smaller than the training patch
        }
        let x_t = to_tensor(&noisy, device);
        let yhat_s = g.restore(to_tensor(&syn.source_degraded, device));
        let yhat_t = g.restore(x_t.clone());
        let [_, _, h, w] = x_t.dims();
        let gammas: Vec<f32> = (0..n).map(|_| schedule.sample_gamma(&mut rng, 1, 1000).1 as f32).collect();
        let eps = normal_tensor(&mut rng, [n, 3, h, w], DType::F32, device);
        let y_noisy = noised(to_d(to_tensor(&syn.source_clean, device), inp.signed), eps.clone(), &gammas);
        let swaps: Vec<bool> = (0..n).map(|_| rng.chance(0.5)).collect();
        for (k, real) in [to_tensor(&reference, device), yhat_t, x_t].into_iter().enumerate() {
            let conds = match inp.conditions {
                Conditions::Both => {
                    let (a, c) = slot_swap(to_d(yhat_s.clone(), inp.signed), to_d(real, inp.signed), &swaps);
                    vec![a, c]
                }
                _ => vec![to_d(real, inp.signed)],
            };
            let e = d.forward(Tensor::cat([vec![y_noisy.clone()], conds].concat(), 1), &gammas);
            sums[k] += scalar((eps.clone() - e).powf_scalar(2.0).mean());
        }
    }
    let m = inp.batches.max(1) as f64;
    Some(DProbe { samples: inp.batches * n, reference: sums[0] / m, restored: sums[1] / m, input: sums[2] / m })
}

/// Settings of the premise check.
pub struct PremiseInputs<'a> {
    pub diffusion: &'a DiffusionConfig,
    pub conditions: Conditions,
    /// Clean training images (the source's), cropped to `patch`.
    pub train: &'a PairedSet,
    /// Held-out references D is scored on.
    pub eval: &'a [PairedItem],
    /// AWGN levels scored, 8-bit units; training draws σ uniformly up to the largest.
    pub sigmas: &'a [f64],
    pub steps: usize,
    pub batch: usize,
    pub patch: usize,
    pub lr: f64,
    pub signed: bool,
    pub seed: u64,
    /// Evaluation batches (of `batch` samples, the same draws for every σ).
    pub eval_batches: usize,
}

/// One row of the premise check: D's mean error with conditions = reference + AWGN(σ).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PremisePoint {
    pub sigma: f64,
    pub mse: f64,
}

/// Conditions for D: every slot the reference plus its own AWGN of σ (unit noise `z` scaled).
fn noisy_conditions(y: &Tensor<4>, zs: &[Tensor<4>], sigmas: &[f32], signed: bool) -> Vec<Tensor<4>> {
    let device = y.device();
    let n = sigmas.len();
    let s = Tensor::<4>::from_data(burn::tensor::TensorData::new(sigmas.to_vec(), [n, 1, 1, 1]), &device);
    zs.iter().map(|z| to_d(y.clone() + z.clone() * s.clone(), signed)).collect()
}

/// The premise check (see the module doc): trains a fresh D for `steps`, returns its error per σ.
pub(crate) fn premise_check(inp: &PremiseInputs, device: &Device) -> Vec<PremisePoint> {
    let ad = device.clone().autodiff();
    ad.seed(crate::rng::derive_seed(inp.seed, "premise-init", &[]));
    let slots = inp.conditions.count();
    let mut d = inp.diffusion.init_for(slots, &ad);
    let mut optim = super::optim::FusedAdam::release().init();
    let schedule = NoiseSchedule::paper();
    let sigma_max = inp.sigmas.iter().copied().fold(0.0, f64::max);
    let n = inp.batch;
    for step in 0..inp.steps {
        ad.seed(crate::rng::derive_seed(inp.seed, "premise-step", &[step as u64]));
        let mut rng = Rng::derive(inp.seed, "premise", &[step as u64]);
        let b = match sample_batch(inp.train, None, n, 0, inp.patch, inp.seed, step as u64) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "premise check: cannot read its training crops; skipped");
                return vec![];
            }
        };
        let y = to_tensor(&b.source_clean, &ad);
        let shape = y.dims();
        let sig: Vec<f32> = (0..n).map(|_| (rng.range(0.0, sigma_max) / 255.0) as f32).collect();
        let zs: Vec<Tensor<4>> = (0..slots).map(|_| normal_tensor(&mut rng, shape, DType::F32, &ad)).collect();
        let gammas: Vec<f32> = (0..n).map(|_| schedule.sample_gamma(&mut rng, 1, 1000).1 as f32).collect();
        let eps = normal_tensor(&mut rng, shape, DType::F32, &ad);
        let conds = noisy_conditions(&y, &zs, &sig, inp.signed);
        let y_noisy = noised(to_d(y, inp.signed), eps.clone(), &gammas);
        // D trains with its dropout, as in a Noise-DA step.
        let dropout = DropoutDraw { seed: rng.next_u64(), rows: (0..n as u64).collect() };
        let e = d.forward_with(Tensor::cat([vec![y_noisy], conds].concat(), 1), &gammas, Some(&dropout));
        let loss = (eps - e).powf_scalar(2.0).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &d);
        d = optim.step(inp.lr, d, grads);
    }
    let d = d.valid();
    let mut sums = vec![0.0f64; inp.sigmas.len()];
    for b in 0..inp.eval_batches {
        let mut rng = Rng::derive(inp.seed, "premise-eval", &[b as u64]);
        let (_, refs) = paired_crops(inp.eval, n, inp.patch, &mut rng);
        let y = to_tensor(&refs, device);
        let shape = y.dims();
        let zs: Vec<Tensor<4>> = (0..slots).map(|_| normal_tensor(&mut rng, shape, DType::F32, device)).collect();
        let gammas: Vec<f32> = (0..n).map(|_| schedule.sample_gamma(&mut rng, 1, 1000).1 as f32).collect();
        let eps = normal_tensor(&mut rng, shape, DType::F32, device);
        let y_noisy = noised(to_d(y.clone(), inp.signed), eps.clone(), &gammas);
        for (k, &sigma) in inp.sigmas.iter().enumerate() {
            let conds = noisy_conditions(&y, &zs, &vec![(sigma / 255.0) as f32; n], inp.signed);
            let e = d.forward(Tensor::cat([vec![y_noisy.clone()], conds].concat(), 1), &gammas);
            sums[k] += scalar((eps.clone() - e).powf_scalar(2.0).mean());
        }
    }
    let m = inp.eval_batches.max(1) as f64;
    inp.sigmas.iter().zip(sums).map(|(&sigma, s)| PremisePoint { sigma, mse: s / m }).collect()
}

/// The probe for a trained joint model (its inference weights).
pub fn probe_model(model: &NoiseDaModel, inp: &ProbeInputs, device: &Device) -> Option<DProbe> {
    let m = model.clone().valid();
    probe_d(&m.g, &m.d, inp, device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasets::Split;

    fn set(n: usize, side: usize, seed: u64) -> PairedSet {
        let mut rng = Rng::new(seed);
        let items = (0..n)
            .map(|i| {
                // Smooth colour ramps: content a small D can learn to denoise quickly.
                let (a, b, c) = (rng.uniform() as f32, rng.uniform() as f32, rng.uniform() as f32);
                let clean = Image::from_vec(
                    side,
                    side,
                    (0..side * side * 3)
                        .map(|k| {
                            let (x, y, ch) = ((k / 3) % side, (k / 3) / side, k % 3);
                            (0.2 + 0.5 * (a * x as f32 + b * y as f32) / side as f32 + 0.1 * c * ch as f32)
                                .clamp(0.0, 1.0)
                        })
                        .collect(),
                );
                let degraded =
                    Image::from_vec(side, side, clean.data.iter().map(|v| v + 0.1 * rng.normal() as f32).collect());
                PairedItem { id: format!("i{i}"), degraded, clean, params: Default::default() }
            })
            .collect();
        PairedSet::held("t", Split::Train, items, "f")
    }

    /// The premise holds for a D trained on our step's loss: conditioned on a noisier
    /// reference, it predicts ε worse; and the check is a pure function of its seed.
    #[test]
    fn premise_error_grows_with_the_conditions_noise() {
        let _serial = super::super::tests::SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let train = set(8, 16, 1);
        let eval = set(4, 16, 2);
        let cfg = DiffusionConfig { base: 8, mults: vec![1, 2], res_blocks: 1, attn_heads: 1, dropout: 0.0 };
        let inp = PremiseInputs {
            diffusion: &cfg,
            conditions: Conditions::Both,
            train: &train,
            eval: &eval.items,
            sigmas: &[0.0, 50.0, 150.0],
            steps: 60,
            batch: 4,
            patch: 16,
            lr: 2e-3,
            signed: false,
            seed: 5,
            eval_batches: 4,
        };
        let pts = premise_check(&inp, &Device::flex());
        eprintln!("premise: {pts:?}");
        assert_eq!(pts.iter().map(|p| p.sigma).collect::<Vec<_>>(), vec![0.0, 50.0, 150.0]);
        assert!(pts.windows(2).all(|w| w[0].mse < w[1].mse), "{pts:?}");
        assert_eq!(pts, premise_check(&inp, &Device::flex()));
    }

    /// The probe runs the three contents of the real slot through the same draws; an
    /// untrained D cannot tell them apart much, but the numbers are finite, positive and
    /// repeatable; `conditions: synthetic` has nothing to probe.
    #[test]
    fn probe_is_repeatable_and_skips_when_d_cannot_see_the_target() {
        let _serial = super::super::tests::SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let device = Device::flex();
        device.seed(1);
        let source = set(4, 16, 3);
        let target = set(4, 16, 4);
        let g = crate::networks::RestorerConfig::unet(vec![4, 8]).init(&device);
        let cfg = DiffusionConfig { base: 4, mults: vec![1, 2], res_blocks: 1, attn_heads: 1, dropout: 0.0 };
        let d = cfg.init_for(2, &device);
        let mut inp = ProbeInputs {
            source: &source,
            target: &target.items,
            conditions: Conditions::Both,
            patch: 16,
            signed: false,
            batches: 2,
            batch: 3,
            seed: 7,
        };
        let p = probe_d(&g, &d, &inp, &device).unwrap();
        assert_eq!(p.samples, 6);
        assert!([p.reference, p.restored, p.input].iter().all(|v| v.is_finite() && *v > 0.0), "{p:?}");
        assert_ne!(p.reference, p.input, "the real slot's content reaches D");
        assert_eq!(Some(p), probe_d(&g, &d, &inp, &device));
        inp.conditions = Conditions::Synthetic;
        assert!(probe_d(&g, &cfg.init_for(1, &device), &inp, &device).is_none());
    }
}

//! Neighbor2Neighbor (Huang et al. 2021): self-supervised denoising on the target's noisy
//! images alone, no synthetic data. Each image is split into two neighbouring sub-images by a
//! random per-cell choice; G learns to map one onto the other, plus a regulariser that makes
//! the same sub-sampling of G's full-size output consistent (γ ramps linearly, `train.ne2ne`).

use super::*;
use crate::networks::like;
use crate::rng::Rng;
use crate::training::batch;

pub(crate) struct Neighbor2Neighbor;

/// A step's γ and the seed of its sub-sampler's draws.
pub(crate) struct Ne2NeStep {
    gamma: f64,
    seed: u64,
}

impl TrainingMethod for Neighbor2Neighbor {
    type Model = Restorer;
    type Step = Ne2NeStep;

    fn reads_target(&self, _spec: &TrainSpec) -> bool {
        true
    }

    fn sections(&self) -> &'static [&'static str] {
        &["ne2ne"]
    }

    fn check(&self, task: Task, spec: &TrainSpec, stride: usize) -> Result<(), String> {
        if task != Task::Denoise {
            return Err("neighbor2neighbor is a self-supervised denoiser: task denoise only".into());
        }
        if (spec.patch / 2) % stride != 0 || spec.patch % 2 != 0 {
            return Err(format!(
                "neighbor2neighbor trains on half-size sub-images: train.patch / 2 must be a multiple of {stride}"
            ));
        }
        Ok(())
    }

    fn build(&self, g: Restorer, _inp: &TrainInputs, _device: &Device) -> Restorer {
        g
    }

    fn restorer(model: &Restorer) -> &Restorer {
        model
    }

    fn prepare(&self, ctx: &StepCtx, _pairs: usize) -> Ne2NeStep {
        Ne2NeStep {
            gamma: ctx.spec.ne2ne.gamma_at(ctx.step, ctx.steps),
            seed: crate::rng::derive_seed(ctx.data_seed, "ne2ne", &[ctx.step as u64]),
        }
    }

    fn step(&self, shards: &[Shard<Restorer>], ctx: &StepCtx, st: &Ne2NeStep) -> (CurvePoint, Vec<GradientsParams>) {
        let gamma = st.gamma;
        let ([rec, reg], grads) = independent_shards(shards, |sh| {
            // Target noisy images only: g1(y) → G → compared with g2(y), and the regulariser
            // with the same sub-sampling of G(y) (no gradient through it).
            let y = &sh.batch.target;
            let m = ctx.lowered(sh.model);
            let full = batch::from_tensor(m.restore(ctx.input(y, sh.device)).detach());
            let (mut g1, mut g2, mut f1, mut f2) = (vec![], vec![], vec![], vec![]);
            for (j, (img, out)) in y.iter().zip(&full).enumerate() {
                let mut rng = Rng::derive(st.seed, "pairs", &[(sh.pairs.start + j) as u64]);
                let ch = batch::neighbour_choices(img.width, img.height, &mut rng);
                let (a, b) = batch::neighbour_subsample(img, &ch);
                let (fa, fb) = batch::neighbour_subsample(out, &ch);
                g1.push(a);
                g2.push(b);
                f1.push(fa);
                f2.push(fb);
            }
            let input = |imgs: &[Image]| ctx.input(imgs, sh.device);
            let diff = m.restore(input(&g1)) - input(&g2);
            let rec = like(diff.clone().powf_scalar(2.0).mean(), DType::F32);
            let reg = like((diff - (input(&f1) - input(&f2))).powf_scalar(2.0).mean(), DType::F32);
            let vals = [scalar(rec.clone()), scalar(reg.clone())];
            (vals, ctx.backward(rec + reg * gamma, sh.model))
        });
        let point = CurvePoint { rec, reg, alpha: gamma, loss: rec + gamma * reg, ..CurvePoint::at(0) };
        (point, grads)
    }

    fn finish(model: Restorer) -> Finished {
        Finished::restorer(model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::training::Method;
    use crate::training::tests::*;

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
}

//! DANN (Ganin & Lempitsky 2015), feature-space adaptation: a domain classifier on G's
//! bottleneck features learns to tell synthetic from target inputs while, through a gradient
//! reversal layer, G learns to make them indistinguishable; λ ramps DANN-style (`train.dann`).

use super::*;
use crate::networks::domain::{DomainClassifier, bce_with_logits, reverse_gradient};
use crate::networks::like;
use crate::training::losses::charbonnier;
use burn::tensor::TensorData;

/// G and DANN's domain classifier as one module (one optimiser; the reversal layer between
/// them makes G's update adversarial).
#[derive(Module, Debug)]
pub struct DannModel {
    pub g: Restorer,
    pub c: DomainClassifier,
}

pub(crate) struct Dann;

impl TrainingMethod for Dann {
    type Model = DannModel;
    /// λ of the step.
    type Step = f64;

    fn reads_target(&self, _spec: &TrainSpec) -> bool {
        true
    }

    fn sections(&self) -> &'static [&'static str] {
        &["dann"]
    }

    fn build(&self, g: Restorer, inp: &TrainInputs, device: &Device) -> DannModel {
        let c = DomainClassifier::new(inp.nets.restorer.feature_channels(), inp.spec.dann.hidden, device);
        DannModel { g, c }
    }

    fn restorer(model: &DannModel) -> &Restorer {
        &model.g
    }

    fn extras(model: &DannModel) -> Vec<(&'static str, usize)> {
        vec![("classifier", model.c.num_params())]
    }

    fn prepare(&self, ctx: &StepCtx, _pairs: usize) -> f64 {
        ctx.spec.dann.lambda_at(ctx.step, ctx.steps)
    }

    fn step(&self, shards: &[Shard<DannModel>], ctx: &StepCtx, &lambda: &f64) -> (CurvePoint, Vec<GradientsParams>) {
        let ([charb, domain], grads) = independent_shards(shards, |sh| {
            let m = ctx.lowered(sh.model);
            let [x_s, y_s, x_r] = ctx.inputs(sh);
            let (ns, nr) = (x_s.dims()[0], x_r.dims()[0]);
            let (res_s, f_s) = m.g.residual_and_features(x_s.clone());
            let (_, f_r) = m.g.residual_and_features(x_r);
            let charb = like(charbonnier(res_s + x_s, y_s, ctx.spec.charbonnier_eps), DType::F32);
            // Synthetic 0, target 1; the classifier learns them, G (through the reversal) unlearns.
            let feats = reverse_gradient(Tensor::cat(vec![f_s, f_r], 0), lambda);
            let logits = like(m.c.forward(feats), DType::F32);
            let mut labels = vec![0f32; ns];
            labels.extend(std::iter::repeat_n(1f32, nr));
            let labels = Tensor::<2>::from_data(TensorData::new(labels, [ns + nr, 1]), sh.device);
            let domain = bce_with_logits(logits, labels);
            let vals = [scalar(charb.clone()), scalar(domain.clone())];
            (vals, ctx.backward(charb + domain, sh.model))
        });
        let point = CurvePoint { charbonnier: charb, domain, alpha: lambda, loss: charb + domain, ..CurvePoint::at(0) };
        (point, grads)
    }

    fn finish(model: DannModel) -> Finished {
        Finished::restorer(model.g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::training::Method;
    use crate::training::tests::*;

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
}

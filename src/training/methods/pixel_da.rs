//! PixelDA (Bousmalis et al. 2017; CyCADA's pixel half), pixel-space adaptation: a translator
//! T learns, against a patch discriminator on target inputs, to make synthetic degraded
//! inputs look like the target's; G trains on (translated input, clean) pairs. Each term
//! reaches only the network it trains (see [`crate::training::config::PixelDaSpec`]).

use super::*;
use crate::networks::domain::bce_with_logits;
use crate::networks::like;
use crate::networks::pixel_da::{PatchDiscriminator, Translator};
use crate::rng::Rng;
use crate::training::losses::charbonnier;
use burn::tensor::TensorData;

/// G, PixelDA's translator T and its patch discriminator D as one module (one optimiser; each
/// term reaches only the network it trains).
#[derive(Module, Debug)]
pub struct PixelDaModel {
    pub g: Restorer,
    pub t: Translator,
    pub d: PatchDiscriminator,
}

pub(crate) struct PixelDa;

impl TrainingMethod for PixelDa {
    type Model = PixelDaModel;
    /// The step's seed for the translator's noise (drawn per pair).
    type Step = u64;

    fn reads_target(&self, _spec: &TrainSpec) -> bool {
        true
    }

    fn sections(&self) -> &'static [&'static str] {
        &["pixel_da"]
    }

    fn build(&self, g: Restorer, inp: &TrainInputs, device: &Device) -> PixelDaModel {
        // G's images are RGB (grayscale replicated), so are T's and D's.
        let (c, w) = (3, inp.spec.pixel_da.width);
        PixelDaModel { g, t: Translator::new(c, w, device), d: PatchDiscriminator::new(c, w, device) }
    }

    fn restorer(model: &PixelDaModel) -> &Restorer {
        &model.g
    }

    fn extras(model: &PixelDaModel) -> Vec<(&'static str, usize)> {
        vec![("translator", model.t.num_params()), ("discriminator", model.d.num_params())]
    }

    fn prepare(&self, ctx: &StepCtx, _pairs: usize) -> u64 {
        crate::rng::derive_seed(ctx.data_seed, "pixel_da", &[ctx.step as u64])
    }

    fn step(&self, shards: &[Shard<PixelDaModel>], ctx: &StepCtx, &seed: &u64) -> (CurvePoint, Vec<GradientsParams>) {
        let p = &ctx.spec.pixel_da;
        let ([charb, disc, adv, content], grads) = independent_shards(shards, |sh| {
            let m = ctx.lowered(sh.model);
            let [x_s, y_s, x_r] = ctx.inputs(sh);
            let [n, _, h, w] = x_s.dims();
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
                bce_with_logits(logits, labels)
            };
            // D: translated 0, target 1 (T fixed).
            let disc = (bce(m.d.forward(fake.clone().detach()), 0.0) + bce(m.d.forward(x_r), 1.0)) * 0.5;
            // T: fool D (non-saturating; a frozen copy, so this term does not train D) and
            // keep the input's content at the scale of the pooling blocks.
            let adv = bce(m.d.clone().no_grad().forward(fake.clone()), 1.0);
            let pool = |x: Tensor<4>| {
                let k = p.content_pool.max(1);
                burn::tensor::module::avg_pool2d(x, burn::tensor::ops::AvgPoolOptions::new([k, k]).with_stride([k, k]))
            };
            let content = like((pool(fake.clone()) - pool(x_s)).abs().mean(), DType::F32);
            // G: the translated input, T fixed (G does not steer the translation).
            let charb = like(charbonnier(m.g.restore(fake.detach()), y_s, ctx.spec.charbonnier_eps), DType::F32);
            let vals = [&charb, &disc, &adv, &content].map(|t| scalar((*t).clone()));
            let total = charb + disc + adv * p.adversarial + content * p.content;
            (vals, ctx.backward(total, sh.model))
        });
        let loss = charb + disc + p.adversarial * adv + p.content * content;
        (CurvePoint { charbonnier: charb, disc, adv, content, loss, ..CurvePoint::at(0) }, grads)
    }

    fn finish(model: PixelDaModel) -> Finished {
        Finished { restorer: model.g, diffusion: None, translator: Some(model.t.valid()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::training::Method;
    use crate::training::batch::{sample_batch, to_tensor};
    use crate::training::config;
    use crate::training::tests::*;
    use burn::tensor::TensorData;

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

        let grads_of = |adversarial: f64, content: f64| {
            let sp = TrainSpec {
                pixel_da: config::PixelDaSpec { adversarial, content, content_pool: 2, width: 8 },
                ..run_spec(1)
            };
            let ctx = test_ctx(&sp, 1.0, false);
            let batch = sample_batch(&data.0, Some(&data.1), 2, 2, 8, 7, 3).unwrap();
            let shard = Shard { model: &model, device: &device, batch, pairs: 0..2 };
            let (point, grads) = PixelDa.step(std::slice::from_ref(&shard), &ctx, &9);
            let m = &model;
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
}

//! Training: the source-only baseline and Noise-DA on burn, plus restoring images with G.
//!
//! Noise-DA follows METHOD.md steps 1–8: G and the diffusion network D live in one module and
//! are updated by one Adam optimiser in the same step; the diffusion loss reaches G through
//! both condition slots; slots are shuffled per sample; a residual-swapped negative pair adds a
//! hinge; α ramps DANN-style.

pub mod batch;
pub mod ema;
pub mod losses;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};
use serde::Serialize;

use crate::datasets::{PairedSet, TargetTrainSet};
use crate::error::{ExitCode, Failure, Result};
use crate::image::Image;
use crate::networks::{DiffusionUNet, NoiseSchedule, RestorerUNet};
use crate::pipeline::spec::{Method, NetworksSpec, Task, TrainSpec};
use crate::rng::Rng;
use batch::{from_tensor, sample_batch, to_tensor};
use losses::{alpha_ramp, charbonnier, hinge, slot_swap};

/// G and D as one module, so one optimiser updates both (the paper's joint training).
#[derive(Module, Debug)]
pub struct NoiseDaModel {
    pub g: RestorerUNet,
    pub d: DiffusionUNet,
}

/// One row of the training-curve table (means over the logging window).
#[derive(Clone, Debug, Default, Serialize)]
pub struct CurvePoint {
    pub step: usize,
    pub loss: f64,
    pub charbonnier: f64,
    /// Diffusion MSE with the true (positive) conditions; NaN for source-only.
    pub mse_pos: f64,
    /// Diffusion MSE with residual-swapped (negative) conditions.
    pub mse_neg: f64,
    pub hinge: f64,
    /// Fraction of steps in the window whose hinge was active.
    pub hinge_active: f64,
    pub alpha: f64,
    pub elapsed_s: f64,
}

/// Live progress of one step, for progress bars and logs.
pub struct StepInfo<'a> {
    pub step: usize,
    pub steps: usize,
    pub latest: &'a CurvePoint,
}

pub struct Trained {
    pub restorer: RestorerUNet,
    /// The moving average of the restorer's weights, when `train.ema` is set.
    pub restorer_ema: Option<RestorerUNet>,
    pub curve: Vec<CurvePoint>,
    pub steps_done: usize,
    pub wall_s: f64,
    pub steps_per_s: f64,
    pub params_g: usize,
    pub params_d: Option<usize>,
}

pub struct TrainInputs<'a> {
    pub task: Task,
    pub spec: &'a TrainSpec,
    pub nets: &'a NetworksSpec,
    pub source: &'a PairedSet,
    /// Target inputs; `None` for source-only training.
    pub target: Option<&'a TargetTrainSet>,
    pub seed: u64,
    pub device: Device,
    pub stop: &'a AtomicBool,
}

fn scalar(t: Tensor<1>) -> f64 {
    t.into_data().try_to_vec::<f32>().expect("f32")[0] as f64
}

/// Train `method`; `on_step` is called after every step.
pub fn train(method: Method, inp: &TrainInputs, on_step: &mut dyn FnMut(StepInfo)) -> Result<Trained> {
    let spec = inp.spec;
    let device = inp.device.clone().autodiff();
    device.seed(crate::rng::derive_seed(inp.seed, "init", &[]));
    let g = inp.nets.restorer.init(&device);
    let params_g = g.num_params();
    let t0 = Instant::now();
    let mut curve = Vec::new();
    let mut window: Vec<CurvePoint> = Vec::new();
    let mut optim = AdamConfig::new().with_beta_1(0.9).with_beta_2(0.999).init();
    let schedule = NoiseSchedule::paper();
    let data_seed = crate::rng::derive_seed(inp.seed, method.name(), &[]);

    let (mut g_only, mut joint) = match method {
        Method::SourceOnly => (Some(g), None),
        Method::NoiseDa => {
            if inp.target.is_none() {
                return Err(Failure::config("noise_da needs a target training set"));
            }
            let d = inp.nets.diffusion.init(&device);
            (None, Some(NoiseDaModel { g, d }))
        }
    };
    let params_d = joint.as_ref().map(|m| m.d.num_params());
    let mut ema = spec.ema.map(|d| {
        let g = g_only.as_ref().or(joint.as_ref().map(|m| &m.g)).expect("a model");
        ema::Ema::new(g, d)
    });

    let mut steps_done = 0;
    for step in 0..spec.steps {
        if inp.stop.load(Ordering::SeqCst) {
            break;
        }
        let target = if joint.is_some() { inp.target } else { None };
        let b = sample_batch(inp.source, target, spec.batch, spec.patch, data_seed, step as u64);
        let x_s = to_tensor(&b.source_degraded, &device);
        let y_s = to_tensor(&b.source_clean, &device);
        let mut point = CurvePoint {
            step: step + 1,
            mse_pos: f64::NAN,
            mse_neg: f64::NAN,
            hinge: f64::NAN,
            hinge_active: f64::NAN,
            ..Default::default()
        };

        if let Some(g) = g_only.take() {
            let loss = charbonnier(g.restore(x_s), y_s, spec.charbonnier_eps);
            point.charbonnier = scalar(loss.clone());
            point.loss = point.charbonnier;
            let grads = GradientsParams::from_grads(loss.backward(), &g);
            let g = optim.step(spec.lr, g, grads);
            if let Some(e) = ema.as_mut() {
                e.update(&g);
            }
            g_only = Some(g);
        } else if let Some(model) = joint.take() {
            let mut rng = Rng::derive(data_seed, "diffusion", &[step as u64]);
            let x_r = to_tensor(&b.target, &device);
            let alpha = alpha_ramp(step, spec.noise_da.ramp_steps, spec.noise_da.w);
            let l = noise_da_losses(
                &model,
                x_s,
                y_s,
                x_r,
                &NoiseDaStep { spec, schedule: &schedule, signed: inp.task.diffusion_signed(), alpha },
                &mut rng,
            );
            point.alpha = alpha;
            point.charbonnier = scalar(l.charbonnier);
            point.mse_pos = scalar(l.mse_pos);
            if let Some((mse_neg, l_con)) = l.contrastive {
                point.mse_neg = scalar(mse_neg);
                point.hinge = scalar(l_con);
                point.hinge_active = if point.hinge > 0.0 { 1.0 } else { 0.0 };
            }
            let loss = l.total;
            point.loss = scalar(loss.clone());
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            let model = optim.step(spec.lr, model, grads);
            if let Some(e) = ema.as_mut() {
                e.update(&model.g);
            }
            joint = Some(model);
        }

        if !point.loss.is_finite() {
            return Err(Failure::new(
                ExitCode::Diverged,
                format!(
                    "{} diverged at step {} (loss {}); lower train.lr or check the data",
                    method.name(),
                    step + 1,
                    point.loss
                ),
            ));
        }
        point.elapsed_s = t0.elapsed().as_secs_f64();
        steps_done = step + 1;
        window.push(point.clone());
        if steps_done % spec.log_every.max(1) == 0 || steps_done == spec.steps {
            curve.push(mean_point(&window));
            window.clear();
        }
        on_step(StepInfo { step: steps_done, steps: spec.steps, latest: &point });
    }
    if !window.is_empty() {
        curve.push(mean_point(&window));
    }
    let wall_s = t0.elapsed().as_secs_f64();
    let g = match (g_only, joint) {
        (Some(g), _) => g,
        (_, Some(m)) => m.g,
        _ => unreachable!("one model is always held between steps"),
    };
    let restorer_ema = ema.map(|e| e.apply(g.clone()).valid());
    Ok(Trained {
        restorer: g.valid(),
        restorer_ema,
        curve,
        steps_done,
        wall_s,
        steps_per_s: steps_done as f64 / wall_s.max(1e-9),
        params_g,
        params_d,
    })
}

/// Fixed settings of one Noise-DA step.
pub struct NoiseDaStep<'a> {
    pub spec: &'a TrainSpec,
    pub schedule: &'a NoiseSchedule,
    /// Feed D images in [−1, 1] (derain, deblur) instead of [0, 1] (denoise).
    pub signed: bool,
    pub alpha: f64,
}

/// The loss terms of one Noise-DA step (all differentiable, nothing detached).
pub struct NoiseDaLosses {
    pub charbonnier: Tensor<1>,
    pub mse_pos: Tensor<1>,
    /// (MSE with residual-swapped conditions, hinge) when residual swapping is on.
    pub contrastive: Option<(Tensor<1>, Tensor<1>)>,
    pub total: Tensor<1>,
}

/// METHOD.md steps 1–7 for one batch: synthetic pairs (`x_s`, `y_s`) and target inputs `x_r`.
pub fn noise_da_losses(
    model: &NoiseDaModel,
    x_s: Tensor<4>,
    y_s: Tensor<4>,
    x_r: Tensor<4>,
    cfg: &NoiseDaStep,
    rng: &mut Rng,
) -> NoiseDaLosses {
    let device = x_s.device();
    let [n, _, h, w] = x_s.dims();
    // 1. Residuals of both domains in one pass.
    let r = model.g.residual(Tensor::cat(vec![x_s.clone(), x_r.clone()], 0));
    let mut parts = r.chunk(2, 0);
    let r_r = parts.pop().expect("r_r");
    let r_s = parts.pop().expect("r_s");
    let yhat_s = x_s.clone() + r_s.clone();
    let yhat_r = x_r.clone() + r_r.clone();
    // 2. Supervised loss on the synthetic pair only.
    let l_char = charbonnier(yhat_s.clone(), y_s.clone(), cfg.spec.charbonnier_eps);

    // 3–4. Noisy synthetic ground truth at a continuous noise level γ per sample.
    let nd = &cfg.spec.noise_da;
    let signed = cfg.signed;
    let to_d = |t: Tensor<4>| if signed { t * 2.0 - 1.0 } else { t };
    let gammas: Vec<f32> =
        (0..n).map(|_| cfg.schedule.sample_gamma(rng, nd.t_range[0], nd.t_range[1]).1 as f32).collect();
    let eps_v: Vec<f32> = (0..n * 3 * h * w).map(|_| rng.normal() as f32).collect();
    let eps = Tensor::<4>::from_data(TensorData::new(eps_v, [n, 3, h, w]), &device);
    let per_sample = |f: &dyn Fn(f32) -> f32| {
        Tensor::<4>::from_data(
            TensorData::new(gammas.iter().map(|&g| f(g)).collect::<Vec<f32>>(), [n, 1, 1, 1]),
            &device,
        )
    };
    let y_noisy = to_d(y_s) * per_sample(&|g| g.sqrt()) + eps.clone() * per_sample(&|g| (1.0 - g).sqrt());
    // 5. Positive conditions, slots shuffled per sample.
    let mut swaps = |on: bool| -> Vec<bool> { (0..n).map(|_| on && rng.chance(0.5)).collect() };
    let (a, c) = slot_swap(to_d(yhat_s), to_d(yhat_r), &swaps(nd.channel_shuffle));
    let pos_in = Tensor::cat(vec![y_noisy.clone(), a, c], 1);

    let (mse_pos, l_noise, contrastive) = if nd.residual_swap {
        // 6. Negative conditions: residuals swapped across domains, own slot shuffle, same ỹ, γ, ε.
        let (na, nc) = slot_swap(to_d(x_s + r_r), to_d(x_r + r_s), &swaps(nd.channel_shuffle));
        let neg_in = Tensor::cat(vec![y_noisy, na, nc], 1);
        let g2: Vec<f32> = gammas.iter().chain(gammas.iter()).copied().collect();
        let out = model.d.forward(Tensor::cat(vec![pos_in, neg_in], 0), &g2);
        let mut o = out.chunk(2, 0);
        let e_neg = o.pop().expect("neg");
        let e_pos = o.pop().expect("pos");
        let mse_pos = (eps.clone() - e_pos).powf_scalar(2.0).mean();
        let mse_neg = (eps - e_neg).powf_scalar(2.0).mean();
        let l_con = hinge(mse_pos.clone(), mse_neg.clone(), nd.delta);
        let l_noise = (mse_pos.clone() + l_con.clone()) * 0.5;
        (mse_pos, l_noise, Some((mse_neg, l_con)))
    } else {
        let e_pos = model.d.forward(pos_in, &gammas);
        let mse_pos = (eps - e_pos).powf_scalar(2.0).mean();
        (mse_pos.clone(), mse_pos, None)
    };
    // 7. Total loss.
    let total = l_char.clone() + l_noise * cfg.alpha;
    NoiseDaLosses { charbonnier: l_char, mse_pos, contrastive, total }
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
        elapsed_s: last.elapsed_s,
    }
}

/// Restore a whole image of any size: pad (edge replicate) to a multiple of the network's
/// stride, run x + G(x), crop back.
pub fn restore_image(g: &RestorerUNet, img: &Image, stride: usize, device: &Device) -> Image {
    let pw = img.width.div_ceil(stride) * stride;
    let ph = img.height.div_ceil(stride) * stride;
    let padded = if (pw, ph) == (img.width, img.height) {
        img.clone()
    } else {
        let mut p = Image::new(pw, ph);
        for y in 0..ph {
            for x in 0..pw {
                for c in 0..3 {
                    p.set(x, y, c, img.get(x.min(img.width - 1), y.min(img.height - 1), c));
                }
            }
        }
        p
    };
    let out = g.restore(to_tensor(std::slice::from_ref(&padded), device));
    let restored = from_tensor(out).pop().expect("one image");
    restored.crop(0, 0, img.width, img.height)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::networks::{DiffusionConfig, RestorerConfig};
    use crate::pipeline::spec::NoiseDaSpec;

    fn spec(residual_swap: bool) -> TrainSpec {
        TrainSpec {
            steps: 1,
            batch: 2,
            patch: 8,
            lr: 1e-3,
            charbonnier_eps: 1e-3,
            log_every: 1,
            ema: None,
            noise_da: NoiseDaSpec {
                w: 0.2,
                ramp_steps: 0,
                delta: 0.1,
                t_range: [1, 1000],
                channel_shuffle: true,
                residual_swap,
            },
        }
    }

    fn rand4(seed: u64, device: &Device) -> Tensor<4> {
        let mut r = Rng::new(seed);
        let v: Vec<f32> = (0..2 * 3 * 8 * 8).map(|_| r.uniform() as f32).collect();
        Tensor::from_data(TensorData::new(v, [2, 3, 8, 8]), device)
    }

    /// The diffusion loss must reach G (no stop-gradient), through both the synthetic and
    /// the real condition: with the supervised term removed, G still gets gradients, and they
    /// change when only the target input changes.
    #[test]
    fn diffusion_loss_reaches_the_restorer_through_both_conditions() {
        let device = Device::flex().autodiff();
        device.seed(3);
        let model = NoiseDaModel {
            g: RestorerConfig { widths: vec![4, 8] }.init(&device),
            d: DiffusionConfig { base: 4, mults: vec![1, 2], res_blocks: 1, attn_heads: 1, dropout: 0.0 }.init(&device),
        };
        let schedule = NoiseSchedule::paper();
        for residual_swap in [false, true] {
            let sp = spec(residual_swap);
            let cfg = NoiseDaStep { spec: &sp, schedule: &schedule, signed: false, alpha: 1.0 };
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
}

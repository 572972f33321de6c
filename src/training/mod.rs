//! Training: the source-only baseline and Noise-DA on burn, plus restoring images with G.
//!
//! Noise-DA follows METHOD.md steps 1–8: G and the diffusion network D live in one module and
//! are updated by one Adam optimiser in the same step; the diffusion loss reaches G through
//! both condition slots; slots are shuffled per sample; a residual-swapped negative pair adds a
//! hinge; α ramps DANN-style.

pub mod batch;
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
            g_only = Some(optim.step(spec.lr, g, grads));
        } else if let Some(model) = joint.take() {
            let mut rng = Rng::derive(data_seed, "diffusion", &[step as u64]);
            let x_r = to_tensor(&b.target, &device);
            let n = spec.batch;
            let r = model.g.residual(Tensor::cat(vec![x_s.clone(), x_r.clone()], 0));
            let mut parts = r.chunk(2, 0);
            let r_r = parts.pop().expect("r_r");
            let r_s = parts.pop().expect("r_s");
            let yhat_s = x_s.clone() + r_s.clone();
            let yhat_r = x_r.clone() + r_r.clone();
            let l_char = charbonnier(yhat_s.clone(), y_s.clone(), spec.charbonnier_eps);

            let nd = &spec.noise_da;
            let signed = inp.task.diffusion_signed();
            let to_d = |t: Tensor<4>| if signed { t * 2.0 - 1.0 } else { t };
            let gammas: Vec<f32> =
                (0..n).map(|_| schedule.sample_gamma(&mut rng, nd.t_range[0], nd.t_range[1]).1 as f32).collect();
            let [_, _, h, w] = y_s.dims();
            let eps_v: Vec<f32> = (0..n * 3 * h * w).map(|_| rng.normal() as f32).collect();
            let eps = Tensor::<4>::from_data(TensorData::new(eps_v, [n, 3, h, w]), &device);
            let per_sample = |f: &dyn Fn(f32) -> f32| {
                Tensor::<4>::from_data(
                    TensorData::new(gammas.iter().map(|&g| f(g)).collect::<Vec<f32>>(), [n, 1, 1, 1]),
                    &device,
                )
            };
            let y_noisy = to_d(y_s) * per_sample(&|g| g.sqrt()) + eps.clone() * per_sample(&|g| (1.0 - g).sqrt());
            let mut swaps = |on: bool| -> Vec<bool> { (0..n).map(|_| on && rng.chance(0.5)).collect() };
            let (a, c) = slot_swap(to_d(yhat_s), to_d(yhat_r), &swaps(nd.channel_shuffle));
            let pos_in = Tensor::cat(vec![y_noisy.clone(), a, c], 1);

            let (mse_pos, l_noise, extra) = if nd.residual_swap {
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
            let alpha = alpha_ramp(step, nd.ramp_steps, nd.w);
            let loss = l_char.clone() + l_noise * alpha;
            point.alpha = alpha;
            point.charbonnier = scalar(l_char);
            point.mse_pos = scalar(mse_pos);
            if let Some((mse_neg, l_con)) = extra {
                point.mse_neg = scalar(mse_neg);
                point.hinge = scalar(l_con);
                point.hinge_active = if point.hinge > 0.0 { 1.0 } else { 0.0 };
            }
            point.loss = scalar(loss.clone());
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            joint = Some(optim.step(spec.lr, model, grads));
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
    Ok(Trained {
        restorer: g.valid(),
        curve,
        steps_done,
        wall_s,
        steps_per_s: steps_done as f64 / wall_s.max(1e-9),
        params_g,
        params_d,
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

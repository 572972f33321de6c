//! Training: the generic loop every method runs in — data (read ahead), the optimiser,
//! checkpoints and resume, EMA, validation, sharding over threads and devices, divergence —
//! and restoring images with G. What a method computes lives in its own file under
//! [`methods`] (source-only, Noise-DA, DANN, PixelDA, Neighbor2Neighbor, the upper bound).

pub(crate) mod batch;
pub(crate) mod checkpoint;
pub mod config;
mod curve;
pub mod diagnostics;
pub(crate) mod ema;
mod inference;
pub(crate) mod losses;
pub(crate) mod methods;
mod optim;
mod prefetch;
#[cfg(test)]
pub(crate) mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::Module;
use burn::tensor::Device;

use crate::datasets::{CropPool, PairedSet, TargetTrainSet};
use crate::error::{ExitCode, Failure, Result};
use crate::image::Image;
use crate::networks::NetworksSpec;
use crate::networks::{DiffusionUNet, Restorer};
use crate::protocols::ProtocolKind;
use crate::task::Task;
use batch::sample_batch;
pub use config::{Conditions, Method, TrainSpec};
pub use curve::CurvePoint;
pub use inference::{Tiles, restore_image, restore_tiled, restore_within, tiles_for_budget, translate_image};
pub use methods::noise_da::{NoiseDaForward, NoiseDaLosses, NoiseDaStep, StepDraws, noise_da_losses};
pub use methods::{DannModel, NoiseDaModel, PixelDaModel};
use methods::{Shard, StepCtx, TrainingMethod};

impl Method {
    /// Reads the target's training inputs under `spec`.
    pub fn reads_target(self, spec: &TrainSpec) -> bool {
        methods::rules(self).reads_target(spec)
    }

    /// The `train` sub-sections this method reads (the others do not change what it trains).
    pub fn sections(self) -> &'static [&'static str] {
        methods::rules(self).sections()
    }

    /// The method's own rules across a recipe's keys (`stride`: the restorer's).
    pub fn check(self, task: Task, spec: &TrainSpec, stride: usize) -> std::result::Result<(), String> {
        methods::rules(self).check(task, spec, stride)
    }
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

/// Mean PSNR of each validation set restored by `g` (inference weights, no randomness); an
/// image too large for the memory left is restored in tiles.
fn validate(g: &Restorer, cfg: &crate::networks::RestorerConfig, sets: &[ValidationSet], device: &Device) -> Vec<f64> {
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
                        let Ok(out) = restore_within(&g, cfg, &item.degraded, crate::util::memory_budget(), device)
                        else {
                            return f64::NAN;
                        };
                        crate::protocols::score(v.protocol, &out, &item.clean).map(|s| s.psnr).unwrap_or(f64::NAN)
                    })
                    .sum::<f64>();
            }
            sum / v.set.len().max(1) as f64
        })
        .collect()
}

/// Shards per device (see [`TrainSpec::shards`]); `cpu`: the device is flex. `auto` shards on
/// the CPU (measured on 2 cores with our kernels, 2 shards against 1: demo shapes source-only
/// 56 → 71 and Noise-DA 5.3 → 7.8 steps/s, paper128 source-only 1.12 → 1.22; with burn's own
/// ops source-only had lost, 14.1 → 9.9), only when the batch splits evenly, and never a
/// restorer with BatchNorm (DnCNN), whose batch statistics would become per-shard.
fn shards_per_device(
    unsplittable: Option<&str>,
    spec: &TrainSpec,
    nets: &NetworksSpec,
    cpu: bool,
    devices: usize,
) -> Result<usize> {
    let splits = |n: usize| spec.batch % (devices * n) == 0 && unsplittable.is_none();
    match spec.shards {
        config::Shards::Count(n) if n <= 1 => Ok(1),
        config::Shards::Count(n) => {
            if !splits(n) {
                return Err(Failure::config(format!(
                    "train.shards: {n} shards × {devices} device(s) need a batch ({}) that divides into them{}",
                    spec.batch,
                    unsplittable.map(|u| format!(" and {u}")).unwrap_or_default()
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

/// Every training crop must fit its image, and there must be something to crop: checked up
/// front, naming the dataset and image, instead of failing inside a step.
fn check_inputs(method: Method, reads_target: bool, inp: &TrainInputs) -> Result<()> {
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
    if !reads_target {
        return Ok(());
    }
    let Some(t) = inp.target else {
        return Err(Failure::config(format!("{} needs a target training set", method.name())));
    };
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

/// Train `method`; `on_step` is called after every step. With a checkpoint folder, the state is
/// saved every `train.checkpoint.every` steps, at the end and when stopped, and training
/// continues from the newest checkpoint found there.
pub fn train(method: Method, inp: &TrainInputs, on_step: &mut dyn FnMut(StepInfo)) -> Result<Trained> {
    struct Loop<'a, 'b, 'c> {
        method: Method,
        inp: &'a TrainInputs<'b>,
        on_step: &'c mut dyn FnMut(StepInfo),
    }
    impl methods::Visit for Loop<'_, '_, '_> {
        type Out = Result<Trained>;
        fn visit<T: TrainingMethod + 'static>(self, m: &'static T) -> Result<Trained> {
            run(m, self.method, self.inp, self.on_step)
        }
    }
    let reads_target = method.reads_target(inp.spec);
    check_inputs(method, reads_target, inp)?;
    let method = methods::rules(method).trains_as(inp.spec).unwrap_or(method);
    methods::dispatch(method, Loop { method, inp, on_step })
}

/// The loop, for method `m` (named `method`).
fn run<T: TrainingMethod>(
    m: &T,
    method: Method,
    inp: &TrainInputs,
    on_step: &mut dyn FnMut(StepInfo),
) -> Result<Trained> {
    let spec = inp.spec;
    let device = inp.device.clone().autodiff();
    // The initial weights are drawn on flex whatever the back-end, then moved: a seed gives the
    // same networks on every back-end (each back-end's own generator would draw others), so
    // runs on wgpu/cuda/tch compare with flex's (`.ci/wgpu-smoke`).
    let init_device = Device::flex().autodiff();
    init_device.seed(crate::rng::derive_seed(inp.seed, "init", &[]));
    let mut g = inp.nets.restorer.init(&init_device);
    if let Some(path) = inp.init_restorer {
        g = g.try_load_file(path).map_err(|e| {
            Failure::internal(format!("{}: cannot load the restorer to start from: {e}", path.display()))
        })?;
    }
    let params_g = g.num_params();
    // The release's Adam (PyTorch's defaults), fused on flex.
    let mut optim = optim::FusedAdam::release().init();
    // One data stream per seed, shared by every recipe: the same synthetic crops in the same
    // order, so recipes differ only by what they are meant to differ by.
    let data_seed = crate::rng::derive_seed(inp.seed, "data", &[]);
    let reads_target = m.reads_target(spec);
    let mut model = m.build(g, inp, &init_device);
    if device != init_device {
        model = model.fork(&device);
    }
    let params_extra = T::extras(&model);
    let mut ema = spec.ema.map(|d| ema::Ema::new(T::restorer(&model), d));

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
        model = load(model, &latest.join(checkpoint::MODEL))?;
        let opt = burn::optim::OptimizerRecord::load(latest.join(checkpoint::OPTIM)).map_err(|e| {
            Failure::internal(format!("{}: cannot load optimiser state: {e}", latest.join(checkpoint::OPTIM).display()))
        })?;
        optim = optim.load_record(opt);
        if let Some(e) = ema.as_mut() {
            let shadow = load(T::restorer(&model).clone(), &latest.join(checkpoint::EMA))?;
            *e = ema::Ema::new(&shadow, e.decay);
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
    let per_device =
        shards_per_device(m.unsplittable(spec), spec, inp.nets, inp.device == Device::flex(), replicas.len())?;
    let n_shards = replicas.len() * per_device;
    let t0 = Instant::now();
    let mut steps_done = start;
    let mut saved_at = start;
    let save = |model: &T::Model,
                optim: &burn::optim::ModuleOptimizer,
                ema: &Option<ema::Ema>,
                name: &str,
                state: &checkpoint::State|
     -> Result<Option<PathBuf>> {
        let Some(dir) = inp.checkpoints else { return Ok(None) };
        let path = checkpoint::write(dir, name, state, |tmp| {
            save_module(model, &tmp.join(checkpoint::MODEL))?;
            optim
                .to_record()
                .save(tmp.join(checkpoint::OPTIM))
                .map_err(|e| Failure::internal(format!("{}: cannot save optimiser state: {e}", tmp.display())))?;
            if let Some(e) = ema {
                save_module(&e.apply(T::restorer(model).clone()), &tmp.join(checkpoint::EMA))?;
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
    let target = if reads_target { inp.target } else { None };
    let (batch, target_batch) = (spec.batch, spec.noise_da.target_count(spec.batch));
    let make = |step: u64| {
        sample_batch(inp.source, target, batch, target_batch, spec.patch, data_seed, step).map_err(|e| e.to_string())
    };
    let steps = start as u64..spec.steps as u64;
    let model =
        prefetch::with_prefetch(steps, spec.loader.workers, spec.loader.prefetch, make, |next| -> Result<T::Model> {
            let mut model = model;
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
                    task: inp.task,
                    step,
                    steps: spec.steps,
                    data_seed,
                    // Shard losses are means over their shard: 1/n each makes the summed gradient the
                    // gradient of the whole batch's mean.
                    scale: spec.precision.loss_scale() / n_shards as f64,
                    diagnose: (step + 1) % spec.log_every.max(1) == 0,
                };
                let pairs = b.source_degraded.len().max(b.target.len());
                let prepared = m.prepare(&ctx, pairs);
                let mut point = if n_shards == 1 {
                    let shard = Shard { model: &model, device: &device, batch: b, pairs: 0..pairs };
                    let (p, mut grads) = m.step(std::slice::from_ref(&shard), &ctx, &prepared);
                    model = optim.step(spec.lr, model, grads.pop().expect("one shard"));
                    CurvePoint { step: step + 1, ..p }
                } else {
                    // Shard k on replica k / per_device: the first shard on the held module, the others on
                    // forks (the same parameter ids, their own autodiff graphs); the gradients summed
                    // onto the master weights by the optimiser.
                    let forks: Vec<(T::Model, &Device)> = (1..n_shards)
                        .map(|k| {
                            let d = &replicas[k / per_device];
                            (model.clone().fork(d), d)
                        })
                        .collect();
                    let per = pairs / n_shards;
                    let shards: Vec<Shard<T::Model>> = std::iter::once((&model, &device))
                        .chain(forks.iter().map(|(h, d)| (h, *d)))
                        .enumerate()
                        .map(|(k, (h, d))| Shard {
                            model: h,
                            device: d,
                            batch: b.shard(k, n_shards),
                            pairs: k * per..(k + 1) * per,
                        })
                        .collect();
                    let (p, grads) = m.step(&shards, &ctx, &prepared);
                    let devices: Vec<Device> = shards.iter().map(|s| s.device.clone()).collect();
                    drop(shards);
                    drop(forks);
                    let grads = grads.into_iter().zip(devices).collect();
                    model = optim.step_multi(spec.lr, model, burn::optim::MultiGradientsParams { grads });
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
                    e.update(T::restorer(&model));
                }
                point.elapsed_s = elapsed_before + t0.elapsed().as_secs_f64();
                steps_done = step + 1;
                let last = steps_done == spec.steps;
                let validate_now = inp.validate_every > 0
                    && !inp.validation.is_empty()
                    && (steps_done % inp.validate_every == 0 || last);
                if validate_now {
                    point.val_psnr = validate(T::restorer(&model), &inp.nets.restorer, inp.validation, &inp.device);
                }
                window.push(point.clone());
                if steps_done % spec.log_every.max(1) == 0 || last || validate_now {
                    curve.push(CurvePoint::mean(&window));
                    window.clear();
                }
                if validate_now {
                    let v = point.val_psnr[0];
                    if v.is_finite() && best.as_ref().is_none_or(|b| v > b.1) {
                        best = Some((PathBuf::new(), v));
                        if let Some(p) = save(&model, &optim, &ema, "best", &state(steps_done, &curve, &window, &best))?
                        {
                            best = Some((p, v));
                        }
                    }
                }
                let every = spec.checkpoint.every;
                if last || (every > 0 && steps_done % every == 0) {
                    let before = last_checkpoint.take();
                    last_checkpoint = save(
                        &model,
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
            Ok(model)
        })?;
    // Stopped early (interrupt): keep what was done.
    if steps_done > saved_at {
        last_checkpoint =
            save(&model, &optim, &ema, &checkpoint::step_name(steps_done), &state(steps_done, &curve, &window, &best))?
                .or(last_checkpoint);
    }
    if steps_done == spec.steps && !window.is_empty() {
        curve.push(CurvePoint::mean(&window));
    }
    let wall_s = t0.elapsed().as_secs_f64();
    let done = T::finish(model);
    let restorer_ema = ema.map(|e| e.apply(done.restorer.clone()).valid());
    Ok(Trained {
        restorer: done.restorer.valid(),
        diffusion: done.diffusion,
        translator: done.translator,
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

fn save_module<M: Module>(m: &M, path: &Path) -> Result<()> {
    m.clone().save_file(path).map_err(|e| Failure::internal(format!("{}: cannot save weights: {e}", path.display())))
}

fn load<M: Module>(m: M, path: &Path) -> Result<M> {
    m.try_load_file(path).map_err(|e| {
        Failure::internal(format!("{}: cannot load weights (not this training's checkpoint?): {e}", path.display()))
    })
}

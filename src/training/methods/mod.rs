//! The training methods, one file each, behind [`TrainingMethod`]: which networks a method
//! trains beside G (one module, so one optimiser updates them all), what one step computes on
//! a shard of the batch, how the shards' terms make the step's loss and curve row, and the
//! rules a recipe using it must follow. The generic loop (`training::train`) owns the rest:
//! data, the optimiser, checkpoints and resume, EMA, validation, sharding and divergence.
//!
//! Adding a method: a file here with a unit struct implementing [`TrainingMethod`], a variant
//! of [`Method`] (its name and doc: the `methods:` key users write), and its arm in
//! [`dispatch`] — the one place that maps a method to its implementation.

mod dann;
mod neighbor2neighbor;
pub(crate) mod noise_da;
mod pixel_da;
mod source_only;
mod target_supervised;

use std::ops::Range;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{DType, Device, Tensor};

use super::TrainInputs;
use super::batch::{Batch, to_tensor};
use super::config::{Method, TrainSpec};
use super::curve::CurvePoint;
use crate::image::Image;
use crate::networks::{DiffusionUNet, Restorer};
use crate::task::Task;

pub use dann::DannModel;
pub use noise_da::NoiseDaModel;
pub use pixel_da::PixelDaModel;

/// Settings of one step, shared by its shards.
pub(crate) struct StepCtx<'a> {
    pub spec: &'a TrainSpec,
    pub task: Task,
    /// The step (0-based) and the training's length.
    pub step: usize,
    pub steps: usize,
    /// Seed of the training's data stream (every per-step draw derives from it and `step`).
    pub data_seed: u64,
    /// Multiplies each shard's loss before backward (mixed-precision scale ÷ shards).
    pub scale: f64,
    /// A logged step: also measure the per-domain gradient norms (Noise-DA).
    pub diagnose: bool,
}

impl StepCtx<'_> {
    /// Images as a tensor on `device`, in the step's compute precision.
    pub fn input(&self, imgs: &[Image], device: &Device) -> Tensor<4> {
        let t = to_tensor(imgs, device);
        self.spec.precision.compute_dtype().map_or(t.clone(), |d| t.cast(d))
    }

    /// A shard's synthetic degraded inputs, their clean targets and the target inputs, as
    /// tensors (the three every adaptation method reads).
    pub fn inputs<M>(&self, sh: &Shard<M>) -> [Tensor<4>; 3] {
        let b = &sh.batch;
        [&b.source_degraded, &b.source_clean, &b.target].map(|imgs| self.input(imgs, sh.device))
    }

    /// A differentiable low-precision view of `m` in the step's compute precision (same
    /// parameter ids; gradients flow back through the casts to the f32 weights).
    pub fn lowered<M: Module>(&self, m: &M) -> M {
        match self.spec.precision.compute_dtype() {
            Some(d) => m.clone().map(&mut CastParams(d)),
            None => m.clone(),
        }
    }

    /// A shard's loss, scaled, backpropagated onto `model`'s parameters.
    pub fn backward<M: Module>(&self, loss: Tensor<1>, model: &M) -> GradientsParams {
        GradientsParams::from_grads((crate::networks::like(loss, DType::F32) * self.scale).backward(), model)
    }
}

struct CastParams(DType);

impl burn::module::ModuleMapper for CastParams {
    fn map_float<const D: usize>(&mut self, param: burn::module::Param<Tensor<D>>) -> burn::module::Param<Tensor<D>> {
        let dtype = self.0;
        param.map(|t| t.cast(dtype))
    }
}

/// One shard of a step: the module replica that computes it, its device, its part of the
/// batch and the pairs it holds (their indices in the whole batch, for per-pair draws).
pub(crate) struct Shard<'a, M> {
    pub model: &'a M,
    pub device: &'a Device,
    pub batch: Batch,
    pub pairs: Range<usize>,
}

/// What a method leaves when training ends (inference weights).
pub(crate) struct Finished {
    pub restorer: Restorer,
    pub diffusion: Option<DiffusionUNet>,
    pub translator: Option<crate::networks::pixel_da::Translator>,
}

impl Finished {
    pub fn restorer(g: Restorer) -> Finished {
        Finished { restorer: g, diffusion: None, translator: None }
    }
}

/// A training method: its networks, its step, its rules.
pub(crate) trait TrainingMethod: Sync {
    /// G and the networks trained beside it, as one module.
    type Model: Module + Sync;
    /// What a step computes once for the whole batch before it is split into shards (ramps,
    /// seeds, random draws), so results do not depend on the split.
    type Step: Sync;

    /// Reads the target's training inputs (a recipe without a target set is refused).
    fn reads_target(&self, spec: &TrainSpec) -> bool;

    /// The `train` sub-sections it reads (others are left out of its stage key).
    fn sections(&self) -> &'static [&'static str] {
        &[]
    }

    /// Trains exactly as another method under these settings (Noise-DA without its loss is
    /// source-only).
    fn trains_as(&self, _spec: &TrainSpec) -> Option<Method> {
        None
    }

    /// Rules across a recipe's keys this method adds to `TrainSpec::check` (`stride`: the
    /// restorer's down-sampling stride); the message names the problem.
    fn check(&self, _task: Task, _spec: &TrainSpec, _stride: usize) -> Result<(), String> {
        Ok(())
    }

    /// Why the batch cannot be split into shards, if it cannot (beyond dividing evenly).
    fn unsplittable(&self, _spec: &TrainSpec) -> Option<&'static str> {
        None
    }

    fn build(&self, g: Restorer, inp: &TrainInputs, device: &Device) -> Self::Model;
    fn restorer(model: &Self::Model) -> &Restorer;
    /// Parameters of the networks beside G, by name.
    fn extras(_model: &Self::Model) -> Vec<(&'static str, usize)> {
        vec![]
    }
    fn prepare(&self, ctx: &StepCtx, pairs: usize) -> Self::Step;
    /// Forward and backward of one step over its shards: the step's curve row (whole-batch
    /// means, `step` unset) and each shard's gradients.
    fn step(
        &self,
        shards: &[Shard<Self::Model>],
        ctx: &StepCtx,
        step: &Self::Step,
    ) -> (CurvePoint, Vec<GradientsParams>);
    fn finish(model: Self::Model) -> Finished;
}

/// Something to do with a method's implementation (the loop, a rule lookup): Rust has no
/// generic closures, so [`dispatch`] hands the implementation to a visitor.
pub(crate) trait Visit {
    type Out;
    fn visit<T: TrainingMethod + 'static>(self, method: &'static T) -> Self::Out;
}

/// The registry: each method's implementation.
pub(crate) fn dispatch<V: Visit>(method: Method, v: V) -> V::Out {
    match method {
        Method::SourceOnly => v.visit(&source_only::SourceOnly),
        Method::NoiseDa => v.visit(&noise_da::NoiseDa),
        Method::TargetSupervised => v.visit(&target_supervised::TargetSupervised),
        Method::Dann => v.visit(&dann::Dann),
        Method::Neighbor2Neighbor => v.visit(&neighbor2neighbor::Neighbor2Neighbor),
        Method::PixelDa => v.visit(&pixel_da::PixelDa),
    }
}

/// The object-safe part of a method: its rules, for the layers above.
pub(crate) trait Rules: Sync {
    fn reads_target(&self, spec: &TrainSpec) -> bool;
    fn sections(&self) -> &'static [&'static str];
    fn trains_as(&self, spec: &TrainSpec) -> Option<Method>;
    fn check(&self, task: Task, spec: &TrainSpec, stride: usize) -> Result<(), String>;
}

impl<T: TrainingMethod> Rules for T {
    fn reads_target(&self, spec: &TrainSpec) -> bool {
        TrainingMethod::reads_target(self, spec)
    }
    fn sections(&self) -> &'static [&'static str] {
        TrainingMethod::sections(self)
    }
    fn trains_as(&self, spec: &TrainSpec) -> Option<Method> {
        TrainingMethod::trains_as(self, spec)
    }
    fn check(&self, task: Task, spec: &TrainSpec, stride: usize) -> Result<(), String> {
        TrainingMethod::check(self, task, spec, stride)
    }
}

/// `method`'s rules.
pub(crate) fn rules(method: Method) -> &'static dyn Rules {
    struct Get;
    impl Visit for Get {
        type Out = &'static dyn Rules;
        fn visit<T: TrainingMethod + 'static>(self, method: &'static T) -> &'static dyn Rules {
            method
        }
    }
    dispatch(method, Get)
}

/// The value of a one-element tensor.
pub(crate) fn scalar(t: Tensor<1>) -> f64 {
    crate::networks::like(t, DType::F32).into_data().try_to_vec::<f32>().expect("f32")[0] as f64
}

/// `f` over `items`, concurrently on rayon's threads when there are several (each shard has its
/// own autodiff graph, so forward and backward passes overlap); inline for one.
pub(crate) fn par_map<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync + Send) -> Vec<R> {
    use rayon::prelude::*;
    if items.len() == 1 {
        return items.into_iter().map(f).collect();
    }
    items.into_par_iter().map(f).collect()
}

/// A step whose shards are independent (every method but Noise-DA, whose hinge needs the whole
/// batch): each shard's forward and backward at once, concurrently; `f` gives the shard's
/// `N` loss terms (means over the shard) and gradients. Returns the terms' means over shards
/// (summed in shard order, so the result does not depend on thread scheduling).
pub(crate) fn independent_shards<M: Sync, const N: usize>(
    shards: &[Shard<M>],
    f: impl Fn(&Shard<M>) -> ([f64; N], GradientsParams) + Sync + Send,
) -> ([f64; N], Vec<GradientsParams>) {
    let done = par_map(shards.iter().collect(), |sh: &Shard<M>| f(sh));
    let s = shards.len() as f64;
    let mut sums = [0.0; N];
    let mut grads = Vec::with_capacity(done.len());
    for (terms, g) in done {
        for (a, v) in sums.iter_mut().zip(terms) {
            *a += v;
        }
        grads.push(g);
    }
    (sums.map(|v| v / s), grads)
}

/// A step's settings for tests that call a method's step directly (step 3 of 10).
#[cfg(test)]
pub(crate) fn test_ctx(spec: &TrainSpec, scale: f64, diagnose: bool) -> StepCtx<'_> {
    StepCtx { spec, task: Task::Denoise, step: 3, steps: 10, data_seed: 7, scale, diagnose }
}

//! Exponential moving average of the restorer's weights (the release keeps one at 0.9999
//! beside the raw weights; it scored the raw ones, and so do we by default).

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;

use crate::networks::kernels::blend;

/// Shadow copies of every float parameter, flattened, in the module's visiting order.
pub struct Ema {
    pub decay: f64,
    shadow: Vec<Tensor<1>>,
}

struct Collect<'a>(&'a mut Vec<Tensor<1>>);

impl ModuleVisitor for Collect<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        // Off the autodiff back-end altogether: `detach` would keep the autodiff association,
        // and every update would then add a node to a chain as long as the training (each step
        // slower than the last: 0.07 s at step 20, 0.3 s at step 400 of the demo).
        let t = param.val().without_autodiff();
        let n = t.shape().num_elements();
        self.0.push(t.reshape([n]));
    }
}

struct Apply<'a> {
    shadow: &'a [Tensor<1>],
    next: usize,
}

impl ModuleMapper for Apply<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let value = self.shadow[self.next].clone();
        self.next += 1;
        param.map(|t| value.reshape(t.dims()))
    }
}

fn flatten<M: Module>(module: &M) -> Vec<Tensor<1>> {
    let mut out = Vec::new();
    module.visit(&mut Collect(&mut out));
    out
}

impl Ema {
    /// Start from the module's current weights.
    pub fn new<M: Module>(module: &M, decay: f64) -> Self {
        Ema { decay, shadow: flatten(module) }
    }

    /// shadow ← decay·shadow + (1 − decay)·θ, after each optimiser step.
    pub(crate) fn update<M: Module>(&mut self, module: &M) {
        let d = self.decay;
        let shadow = std::mem::take(&mut self.shadow);
        self.shadow = shadow.into_iter().zip(flatten(module)).map(|(s, p)| blend(s, p, d)).collect();
    }

    /// A copy of `module` holding the averaged weights.
    pub(crate) fn apply<M: Module>(&self, module: M) -> M {
        module.map(&mut Apply { shadow: &self.shadow, next: 0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::networks::RestorerConfig;
    use burn::tensor::Device;

    fn values<M: Module>(m: &M) -> Vec<f32> {
        flatten(m).into_iter().flat_map(|t| t.into_data().try_to_vec::<f32>().unwrap()).collect()
    }

    #[test]
    fn ema_blends_weights_in_order() {
        let _rng = crate::util::rng_lock();
        let dev = Device::flex();
        dev.seed(1);
        let a = RestorerConfig::unet(vec![4, 8]).init(&dev);
        dev.seed(2);
        let b = RestorerConfig::unet(vec![4, 8]).init(&dev);
        let (va, vb) = (values(&a), values(&b));
        assert_ne!(va, vb);
        // decay 0.5, one update: the mean of the two weight sets.
        let mut ema = Ema::new(&a, 0.5);
        ema.update(&b);
        let mixed = values(&ema.apply(b.clone()));
        for ((x, y), m) in va.iter().zip(&vb).zip(&mixed) {
            assert!((m - 0.5 * (x + y)).abs() < 1e-6);
        }
        // decay 1 keeps the start; decay 0 follows the model.
        let mut keep = Ema::new(&a, 1.0);
        keep.update(&b);
        assert_eq!(values(&keep.apply(b.clone())), va);
        let mut follow = Ema::new(&a, 0.0);
        follow.update(&b);
        assert_eq!(values(&follow.apply(a.clone())), vb);
    }

    /// Training's weights live on the autodiff back-end; the average must not, or each
    /// update chains a node onto the last (the step time then grows with the step count).
    #[test]
    fn shadow_of_an_autodiff_module_leaves_the_autodiff_backend() {
        let _rng = crate::util::rng_lock();
        let dev = Device::flex().autodiff();
        dev.seed(1);
        let g = RestorerConfig::unet(vec![4, 8]).init(&dev);
        assert!(Tensor::<1>::zeros([1], &dev).is_autodiff(), "the test needs autodiff weights");
        let mut ema = Ema::new(&g, 0.9);
        for _ in 0..3 {
            ema.update(&g);
        }
        assert!(ema.shadow.iter().all(|t| !t.is_autodiff()));
        // Blending a model with itself keeps it (up to rounding).
        for (x, y) in values(&ema.apply(g.clone())).iter().zip(values(&g)) {
            assert!((x - y).abs() < 1e-6);
        }
    }
}

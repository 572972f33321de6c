//! DANN's domain classifier (Ganin & Lempitsky 2015) and the gradient reversal layer.
//!
//! The classifier sees G's bottleneck features: global average pool → unit RMS → linear →
//! LeakyReLU(0.2) → linear → one logit (target = 1, synthetic = 0). Between G and it, the reversal layer is
//! the identity forward and multiplies the gradient by −λ backward, so one backward pass trains
//! the classifier to tell the domains apart and G to make them indistinguishable.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::leaky_relu;
use burn::tensor::{Device, Tensor};

#[derive(Module, Debug)]
pub struct DomainClassifier {
    fc1: Linear,
    fc2: Linear,
}

impl DomainClassifier {
    pub fn new(channels: usize, hidden: usize, device: &Device) -> DomainClassifier {
        // Drawn now, from the init seed: burn's parameters are lazy, and a replica forked to
        // another device before first use would draw its own.
        super::init::materialize(DomainClassifier {
            fc1: LinearConfig::new(channels, hidden).init(device),
            fc2: LinearConfig::new(hidden, 1).init(device),
        })
    }

    /// Logits `[n, 1]` of features `[n, c, h, w]`.
    pub fn forward(&self, features: Tensor<4>) -> Tensor<2> {
        let [n, c, _, _] = features.dims();
        let pooled: Tensor<2> = features.mean_dim(3).mean_dim(2).reshape([n, c]);
        // Scale-free input (unit RMS per sample): G cannot fool the classifier, through the
        // reversal, by inflating its features — unbounded features made the adversarial term
        // run away (classifier loss 0.69 → 128 within 500 demo steps, G destroyed).
        let rms = pooled.clone().powf_scalar(2.0).mean_dim(1).add_scalar(1e-6).sqrt();
        let pooled = pooled / rms;
        self.fc2.forward(leaky_relu(self.fc1.forward(pooled), 0.2))
    }
}

/// Gradient reversal: `x` forward; `−λ · ∂L/∂y` backward.
pub fn reverse_gradient<const D: usize>(x: Tensor<D>, lambda: f64) -> Tensor<D> {
    let frozen = x.clone().detach();
    frozen.clone() + (x - frozen) * (-lambda)
}

/// Mean binary cross-entropy of `logits` against `labels` (0/1), in the stable form
/// max(z, 0) − z·y + log(1 + e^(−|z|)).
pub fn bce_with_logits(logits: Tensor<2>, labels: Tensor<2>) -> Tensor<1> {
    let relu = logits.clone().clamp_min(0.0);
    let softplus = logits.clone().abs().neg().exp().add_scalar(1.0).log();
    (relu - logits * labels + softplus).mean()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    /// The reversal layer is the identity forward and flips (and scales) the gradient.
    #[test]
    fn gradient_reversal_flips_the_sign() {
        let dev = Device::flex().autodiff();
        let v = vec![0.5f32, -1.0, 2.0, 3.0];
        let r = vec![1.0f32, 2.0, -3.0, 0.5];
        let x = Tensor::<1>::from_data(TensorData::new(v.clone(), [4]), &dev).require_grad();
        let w = Tensor::<1>::from_data(TensorData::new(r.clone(), [4]), &dev);
        let y = reverse_gradient(x.clone(), 0.7);
        assert_eq!(y.clone().into_data().try_to_vec::<f32>().unwrap(), v);
        let g = (y * w).sum().backward();
        let grad = x.grad(&g).unwrap().into_data().try_to_vec::<f32>().unwrap();
        for (a, b) in grad.iter().zip(&r) {
            assert!((a + 0.7 * b).abs() < 1e-6, "{grad:?}");
        }
    }

    #[test]
    fn bce_matches_its_definition() {
        let dev = Device::flex();
        let z = Tensor::<2>::from_data(TensorData::new(vec![2.0f32, -1.0, 30.0, -30.0], [4, 1]), &dev);
        let y = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 0.0, 0.0, 1.0], [4, 1]), &dev);
        let got = bce_with_logits(z, y).into_scalar::<f32>() as f64;
        let s = |x: f64| 1.0 / (1.0 + (-x).exp());
        let want = (-(s(2.0)).ln() - (1.0 - s(-1.0)).ln() + 30.0 + 30.0) / 4.0;
        assert!((got - want).abs() < 1e-4, "{got} {want}");
    }
}

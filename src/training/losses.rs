//! Loss pieces of Noise-DA (METHOD.md steps 2, 5, 6, 7), each small enough to test alone.

use burn::tensor::activation::relu;
use burn::tensor::{Tensor, TensorData};

/// Charbonnier: mean(sqrt((pred − target)² + ε²)), ε = 1e-3.
pub(crate) fn charbonnier(pred: Tensor<4>, target: Tensor<4>, eps: f64) -> Tensor<1> {
    let d = pred - target;
    (d.clone() * d + eps * eps).sqrt().mean()
}

/// Per-sample slot swap: where `swap[i]` is true, sample i gets (b, a) instead of (a, b).
/// Implemented as a blend with a 0/1 mask so gradients reach both inputs.
pub(crate) fn slot_swap(a: Tensor<4>, b: Tensor<4>, swap: &[bool]) -> (Tensor<4>, Tensor<4>) {
    let device = a.device();
    let m: Vec<f32> = swap.iter().map(|&s| if s { 1.0 } else { 0.0 }).collect();
    let m =
        crate::networks::like(Tensor::<4>::from_data(TensorData::new(m, [swap.len(), 1, 1, 1]), &device), a.dtype());
    let keep = m.clone().neg() + 1.0;
    let first = a.clone() * keep.clone() + b.clone() * m.clone();
    let second = b * keep + a * m;
    (first, second)
}

/// Residual-swapping hinge: max(0, mse_pos − mse_neg + δ), one hinge on batch-mean MSEs.
pub fn hinge(mse_pos: Tensor<1>, mse_neg: Tensor<1>, delta: f64) -> Tensor<1> {
    relu(mse_pos - mse_neg + delta)
}

/// DANN-style ramp: α = w·(2/(1+exp(−5p)) − 1), p = min(progress/ramp, 1).
pub(crate) fn alpha_ramp(step: usize, ramp_steps: usize, w: f64) -> f64 {
    let p = if ramp_steps == 0 { 1.0 } else { (step as f64 / ramp_steps as f64).min(1.0) };
    w * (2.0 / (1.0 + (-5.0 * p).exp()) - 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    fn t4(v: Vec<f32>, shape: [usize; 4]) -> Tensor<4> {
        Tensor::from_data(TensorData::new(v, shape), &Device::flex())
    }

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn slot_swap_swaps_only_flagged_samples() {
        // 3 samples of 1×1×2: a = 1,2,3 per sample, b = 10,20,30.
        let a = t4(vec![1., 1., 2., 2., 3., 3.], [3, 1, 1, 2]);
        let b = t4(vec![10., 10., 20., 20., 30., 30.], [3, 1, 1, 2]);
        let (x, y) = slot_swap(a, b, &[false, true, false]);
        assert_eq!(values(x), vec![1., 1., 20., 20., 3., 3.]);
        assert_eq!(values(y), vec![10., 10., 2., 2., 30., 30.]);
    }

    #[test]
    fn hinge_is_active_only_inside_the_margin() {
        let dev = Device::flex();
        let one = |v: f32| Tensor::<1>::from_data(TensorData::new(vec![v], [1]), &dev);
        // Positive already better than negative by more than δ: no loss.
        assert_eq!(values(hinge(one(0.1), one(0.5), 0.1)), vec![0.0]);
        // Within the margin: pos − neg + δ.
        let v = values(hinge(one(0.3), one(0.35), 0.1))[0];
        assert!((v - 0.05).abs() < 1e-6, "{v}");
        // Positive worse than negative.
        let v = values(hinge(one(0.5), one(0.2), 0.1))[0];
        assert!((v - 0.4).abs() < 1e-6, "{v}");
    }

    #[test]
    fn charbonnier_matches_formula() {
        let p = t4(vec![0.0, 0.5, 1.0, 0.25], [1, 1, 2, 2]);
        let y = t4(vec![0.0, 0.0, 0.0, 0.0], [1, 1, 2, 2]);
        let got = values(charbonnier(p, y, 1e-3))[0] as f64;
        let want = [0.0f64, 0.5, 1.0, 0.25].iter().map(|d| (d * d + 1e-6).sqrt()).sum::<f64>() / 4.0;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }

    #[test]
    fn alpha_ramp_goes_from_zero_to_w() {
        assert_eq!(alpha_ramp(0, 100, 0.2), 0.0);
        let end = alpha_ramp(100, 100, 0.2);
        assert!((end - 0.2 * (2.0 / (1.0 + (-5.0f64).exp()) - 1.0)).abs() < 1e-12);
        assert!((end - 0.197).abs() < 1e-3);
        assert_eq!(alpha_ramp(500, 100, 0.2), end);
        assert!(alpha_ramp(50, 100, 0.2) < end);
        assert_eq!(alpha_ramp(3, 0, 0.2), end);
    }
}

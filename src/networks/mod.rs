//! Networks on burn: the residual restorer G and the conditional diffusion UNet D.
//!
//! Both are plain `#[derive(Module)]` structs without a backend type parameter (burn 0.22):
//! the device, and so the back-end, is picked at run time by the caller.

pub mod diffusion;
pub mod init;
pub mod restorer;

pub use diffusion::{DiffusionConfig, DiffusionUNet, NoiseSchedule};
pub use restorer::{RestorerConfig, RestorerUNet};

/// Parameter counts of the restorer and the diffusion network as configured (built on the
/// CPU device just to count; cheap next to training).
pub fn param_counts(restorer: &RestorerConfig, diffusion: &DiffusionConfig) -> (usize, usize) {
    use burn::module::Module;
    let device = burn::tensor::Device::flex();
    (restorer.init(&device).num_params(), diffusion.init(&device).num_params())
}

/// Largest group count ≤ 32 that divides `channels` (GroupNorm(32) at the paper's widths,
/// graceful for the tiny demo widths).
pub fn group_count(channels: usize) -> usize {
    (1..=32.min(channels)).rev().find(|g| channels % g == 0).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Tensor, TensorData};

    /// The paper's sizes (METHOD.md): UNet-S 8.56 M parameters, the diffusion UNet 62.6 M.
    #[test]
    fn parameter_counts_match_the_paper() {
        let (g, d) = param_counts(
            &RestorerConfig { widths: vec![64, 128, 256, 512] },
            &DiffusionConfig { base: 64, mults: vec![1, 2, 4, 8], res_blocks: 2, attn_heads: 16, dropout: 0.2 },
        );
        assert_eq!((g as f64 / 1e4).round() / 100.0, 8.56, "UNet-S has {g} parameters");
        assert_eq!((d as f64 / 1e5).round() / 10.0, 62.6, "diffusion UNet has {d} parameters");
    }

    /// UNet-S costs 12.48 GMACs at 128² in the paper's table; our count of its convolutions
    /// gives 12.438 (the rest is the up-sampling and pooling a profiler adds).
    #[test]
    fn restorer_macs_match_the_paper() {
        let g = RestorerConfig { widths: vec![64, 128, 256, 512] }.macs(128, 128) as f64 / 1e9;
        assert!((g - 12.48).abs() < 0.05, "UNet-S: {g} GMACs");
        // Doubling both sides quadruples the cost of a fully convolutional network.
        let small = RestorerConfig { widths: vec![16, 32, 64] };
        assert_eq!(small.macs(64, 64) * 4, small.macs(128, 128));
    }

    #[test]
    fn networks_keep_the_image_shape() {
        let dev = Device::flex();
        let g = RestorerConfig { widths: vec![4, 8, 16] }.init(&dev);
        let x = Tensor::<4>::from_data(TensorData::new(vec![0.5f32; 2 * 3 * 16 * 24], [2, 3, 16, 24]), &dev);
        assert_eq!(g.restore(x).dims(), [2, 3, 16, 24]);
        let d = DiffusionConfig { base: 8, mults: vec![1, 2], res_blocks: 1, attn_heads: 2, dropout: 0.0 }.init(&dev);
        let x9 = Tensor::<4>::from_data(TensorData::new(vec![0.1f32; 2 * 9 * 8 * 12], [2, 9, 8, 12]), &dev);
        assert_eq!(d.forward(x9, &[0.3, 0.9]).dims(), [2, 3, 8, 12]);
    }
}

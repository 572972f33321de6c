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

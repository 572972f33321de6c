//! Compute back-ends: which burn device a run uses.
//!
//! burn 0.22 picks the back-end at run time through its `Device`; this module maps the
//! pipeline's `backend` key to a device and says when a build lacks the back-end asked for.

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::error::{Failure, Result};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// burn's pure-Rust CPU back-end (always built).
    #[default]
    Flex,
    /// burn's wgpu back-end (Vulkan / Metal / DX12); needs `--features wgpu`.
    Wgpu,
    /// burn-cuda (NVIDIA, CubeCL), GPU 0; needs `--features cuda`.
    Cuda,
    /// burn-tch over LibTorch: CUDA GPU 0 if LibTorch sees one, else its CPU; needs `--features tch`.
    Tch,
    /// A discrete or integrated GPU through wgpu when this build has it and one answers,
    /// otherwise flex.
    Auto,
}

/// The device for `backend`, and a description for logs and provenance.
pub fn device(backend: Backend) -> Result<(Device, String)> {
    match backend {
        Backend::Flex => Ok((Device::flex(), "flex (CPU)".into())),
        Backend::Wgpu => wgpu_device(burn::tensor::DeviceKind::DefaultDevice)
            .map(|d| (d, "wgpu (default adapter)".into()))
            .ok_or_else(|| {
                Failure::config(if cfg!(feature = "wgpu") {
                    "backend wgpu: no usable wgpu adapter (is a Vulkan driver installed?)".to_string()
                } else {
                    "backend wgpu: this binary was built without it; rebuild with `cargo build --release --features wgpu`"
                        .to_string()
                })
            }),
        Backend::Cuda => cuda_device().ok_or_else(|| {
            Failure::config(if cfg!(feature = "cuda") {
                "backend cuda: no usable CUDA device (driver and GPU visible?)".to_string()
            } else {
                "backend cuda: this binary was built without it; rebuild with `cargo build --release --features cuda`"
                    .to_string()
            })
        }),
        Backend::Tch => tch_device().ok_or_else(|| {
            Failure::config(
                "backend tch: this binary was built without it; rebuild with `cargo build --release --features tch` \
                 (see README: PyTorch 2.9.0, LIBTORCH_USE_PYTORCH=1)",
            )
        }),
        Backend::Auto => {
            if cfg!(feature = "cuda")
                && let Ok(found) = device(Backend::Cuda)
            {
                return Ok(found);
            }
            for (kind, name) in [
                (burn::tensor::DeviceKind::DiscreteGpu(0), "wgpu (discrete GPU 0)"),
                (burn::tensor::DeviceKind::IntegratedGpu(0), "wgpu (integrated GPU 0)"),
            ] {
                if let Some(d) = wgpu_device(kind) {
                    return Ok((d, name.into()));
                }
            }
            Ok((Device::flex(), "flex (CPU; no GPU found)".into()))
        }
    }
}

/// A wgpu device of `kind` that answers a tiny computation, if this build has wgpu.
#[cfg(feature = "wgpu")]
fn wgpu_device(kind: burn::tensor::DeviceKind) -> Option<Device> {
    // Adapter selection panics inside wgpu when none matches: probe behind catch_unwind.
    std::panic::catch_unwind(|| {
        let d = Device::wgpu(kind);
        let t = burn::tensor::Tensor::<1>::ones([4], &d);
        let v: f32 = t.sum().into_scalar();
        (v == 4.0).then_some(d)
    })
    .ok()
    .flatten()
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_device(_kind: burn::tensor::DeviceKind) -> Option<Device> {
    None
}

/// CUDA GPU 0, if this build has burn-cuda and it answers a tiny computation.
#[cfg(feature = "cuda")]
fn cuda_device() -> Option<(Device, String)> {
    std::panic::catch_unwind(|| {
        let d = Device::cuda(0);
        let v: f32 = burn::tensor::Tensor::<1>::ones([4], &d).sum().into_scalar();
        (v == 4.0).then(|| (d, "cuda (GPU 0)".to_string()))
    })
    .ok()
    .flatten()
}

#[cfg(not(feature = "cuda"))]
fn cuda_device() -> Option<(Device, String)> {
    None
}

/// LibTorch's CUDA GPU 0 when it answers, else LibTorch's CPU.
#[cfg(feature = "tch")]
#[allow(deprecated)]
fn tch_device() -> Option<(Device, String)> {
    let gpu = std::panic::catch_unwind(|| {
        let d = Device::libtorch_cuda(0);
        let v: f32 = burn::tensor::Tensor::<1>::ones([4], &d).sum().into_scalar();
        (v == 4.0).then_some(d)
    })
    .ok()
    .flatten();
    Some(match gpu {
        Some(d) => (d, "tch (LibTorch CUDA GPU 0)".to_string()),
        None => (Device::libtorch(), "tch (LibTorch CPU)".to_string()),
    })
}

#[cfg(not(feature = "tch"))]
fn tch_device() -> Option<(Device, String)> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flex_is_always_available_and_auto_falls_back_to_it_without_gpu() {
        let (_, name) = device(Backend::Flex).unwrap();
        assert_eq!(name, "flex (CPU)");
        if !cfg!(feature = "wgpu") {
            assert!(device(Backend::Auto).unwrap().1.starts_with("flex"));
            let err = device(Backend::Wgpu).unwrap_err().to_string();
            assert!(err.contains("--features wgpu"), "{err}");
        }
        if !cfg!(feature = "cuda") {
            assert!(device(Backend::Cuda).unwrap_err().to_string().contains("--features cuda"));
        }
        if !cfg!(feature = "tch") {
            assert!(device(Backend::Tch).unwrap_err().to_string().contains("--features tch"));
        }
    }
}

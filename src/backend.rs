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

impl Backend {
    /// Whether training's activations live in this machine's memory: flex, and `auto` in a
    /// build with no GPU back-end. A GPU's own memory is not known before a device answers,
    /// so the memory check counts only what stays on the host there.
    pub fn activations_on_host(self) -> bool {
        match self {
            Backend::Flex => true,
            Backend::Auto => !(cfg!(feature = "wgpu") || cfg!(feature = "cuda") || cfg!(feature = "tch")),
            Backend::Wgpu | Backend::Cuda | Backend::Tch => false,
        }
    }
}

/// The device for `backend`, and a description for logs and provenance.
pub fn device(backend: Backend) -> Result<(Device, String)> {
    let (mut devices, name) = devices(backend, 1)?;
    Ok((devices.remove(0), name))
}

/// `n` devices of one back-end for data-parallel training (index 0 first), and a description.
/// flex has a single CPU device: asking it for more gives replicas on that one device, which
/// computes the shards one after another (the code path, without a speed-up).
pub(crate) fn devices(backend: Backend, n: usize) -> Result<(Vec<Device>, String)> {
    let n = n.max(1);
    let many = |name: &str| if n > 1 { format!("{name} ×{n}") } else { name.to_string() };
    match backend {
        Backend::Flex => Ok((vec![Device::flex(); n], many("flex (CPU)"))),
        Backend::Wgpu => {
            if n == 1 {
                let d = wgpu_device(burn::tensor::DeviceKind::DefaultDevice).ok_or_else(wgpu_missing)?;
                return Ok((vec![d], "wgpu (default adapter)".into()));
            }
            let d = (0..n)
                .map(|i| wgpu_device(burn::tensor::DeviceKind::DiscreteGpu(i)).ok_or_else(wgpu_missing))
                .collect::<Result<Vec<_>>>()?;
            Ok((d, format!("wgpu (discrete GPUs 0..{n})")))
        }
        Backend::Cuda => {
            let d = (0..n).map(|i| cuda_device(i).ok_or_else(cuda_missing)).collect::<Result<Vec<_>>>()?;
            Ok((d, many("cuda (GPU 0)")))
        }
        Backend::Tch => {
            let d = (0..n).map(|i| tch_device(i).ok_or_else(tch_missing)).collect::<Result<Vec<_>>>()?;
            let name = if tch_has_cuda() { "tch (LibTorch CUDA GPU 0)" } else { "tch (LibTorch CPU)" };
            Ok((d, many(name)))
        }
        Backend::Auto => {
            if cfg!(feature = "cuda") && cuda_device(0).is_some() {
                return devices(Backend::Cuda, n);
            }
            if let Some(d) = wgpu_device(burn::tensor::DeviceKind::DiscreteGpu(0)) {
                if n == 1 {
                    return Ok((vec![d], "wgpu (discrete GPU 0)".into()));
                }
                return devices(Backend::Wgpu, n);
            }
            if n == 1
                && let Some(d) = wgpu_device(burn::tensor::DeviceKind::IntegratedGpu(0))
            {
                return Ok((vec![d], "wgpu (integrated GPU 0)".into()));
            }
            Ok((vec![Device::flex(); n], many("flex (CPU; no GPU found)")))
        }
    }
}

/// Why back-end `name` (Cargo feature of the same name) gave no device: not built in, or
/// built but `unusable` here.
fn missing(name: &str, built: bool, unusable: &str, build_hint: &str) -> Failure {
    Failure::config(if built {
        format!("backend {name}: {unusable}")
    } else {
        format!(
            "backend {name}: this binary was built without it; rebuild with `cargo build --release --features {name}`{build_hint}"
        )
    })
}

fn wgpu_missing() -> Failure {
    missing("wgpu", cfg!(feature = "wgpu"), "no usable wgpu adapter (is a Vulkan driver installed?)", "")
}

fn cuda_missing() -> Failure {
    missing("cuda", cfg!(feature = "cuda"), "no usable CUDA device (driver and GPU visible?)", "")
}

fn tch_missing() -> Failure {
    missing(
        "tch",
        cfg!(feature = "tch"),
        "LibTorch has no such CUDA device",
        " (see README: PyTorch 2.9.0, LIBTORCH_USE_PYTORCH=1)",
    )
}

/// Run a device probe that may panic (wgpu without an adapter, LibTorch without a driver)
/// without the panic hook printing it: a failed probe is an expected answer, and LibTorch's
/// panic carries ~30 C++ frames. The hook is process-wide; probes run at start-up only.
#[allow(dead_code)]
fn quiet_probe<T>(probe: impl FnOnce() -> Option<T> + std::panic::UnwindSafe) -> Option<T> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let found = std::panic::catch_unwind(probe).ok().flatten();
    std::panic::set_hook(hook);
    found
}

/// A wgpu device of `kind` that answers a tiny computation, if this build has wgpu.
#[cfg(feature = "wgpu")]
fn wgpu_device(kind: burn::tensor::DeviceKind) -> Option<Device> {
    // Adapter selection panics inside wgpu when none matches.
    quiet_probe(|| {
        let d = Device::wgpu(kind);
        let t = burn::tensor::Tensor::<1>::ones([4], &d);
        let v: f32 = t.sum().into_scalar();
        (v == 4.0).then_some(d)
    })
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_device(_kind: burn::tensor::DeviceKind) -> Option<Device> {
    None
}

/// CUDA GPU `i`, if this build has burn-cuda and it answers a tiny computation.
#[cfg(feature = "cuda")]
fn cuda_device(i: usize) -> Option<Device> {
    quiet_probe(|| {
        let d = Device::cuda(i);
        let v: f32 = burn::tensor::Tensor::<1>::ones([4], &d).sum().into_scalar();
        (v == 4.0).then_some(d)
    })
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(_i: usize) -> Option<Device> {
    None
}

/// LibTorch's CUDA GPU `i` when LibTorch sees CUDA GPUs; its CPU for `i == 0` otherwise.
#[cfg(feature = "tch")]
#[allow(deprecated)]
fn tch_device(i: usize) -> Option<Device> {
    if tch_has_cuda() {
        return quiet_probe(|| {
            let d = Device::libtorch_cuda(i);
            let v: f32 = burn::tensor::Tensor::<1>::ones([4], &d).sum().into_scalar();
            (v == 4.0).then_some(d)
        });
    }
    (i == 0).then(Device::libtorch)
}

#[cfg(not(feature = "tch"))]
fn tch_device(_i: usize) -> Option<Device> {
    None
}

/// Whether LibTorch can reach a CUDA GPU (probed once).
#[cfg(feature = "tch")]
#[allow(deprecated)]
fn tch_has_cuda() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        quiet_probe(|| {
            let d = Device::libtorch_cuda(0);
            let v: f32 = burn::tensor::Tensor::<1>::ones([4], &d).sum().into_scalar();
            (v == 4.0).then_some(())
        })
        .is_some()
    })
}

#[cfg(not(feature = "tch"))]
fn tch_has_cuda() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flex_is_always_available_and_auto_falls_back_to_it_without_gpu() {
        let (_, name) = device(Backend::Flex).unwrap();
        assert_eq!(name, "flex (CPU)");
        let (d, name) = devices(Backend::Flex, 2).unwrap();
        assert_eq!((d.len(), name.as_str()), (2, "flex (CPU) ×2"));
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

//! The restorer G, always residual: restored = x + G(x) (the residual is what Noise-DA swaps).
//!
//! One file per architecture; this file is their registry. `networks.restorer` is a serde enum
//! tagged by `arch` ([`RestorerConfig`]); each family's settings struct implements [`Arch`]
//! (check, size, MACs, BatchNorm or not, the names its authors' checkpoints use, building the
//! network) and its module is one variant of [`Restorer`]. Adding a family: its file, a
//! variant in both enums, an arm in [`RestorerConfig::arch`] and [`Restorer::residual_and_features`],
//! and an entry in [`FAMILIES`] (what `describe`, `restore --arch` and the parity tests list).
//!
//! - `unet` (default): the release's plain UNet ([`unet`]).
//! - `dncnn`: DnCNN (Zhang et al. 2017) ([`dncnn`]).
//! - `nafnet`: NAFNet (Chen et al., ECCV 2022), SIDD width-32 by default ([`nafnet`]).
//! - `restormer`: Restormer (Zamir et al., CVPR 2022), the real-denoising configuration
//!   ([`restormer`]).

pub mod dncnn;
mod layers;
pub mod nafnet;
#[cfg(test)]
mod parity;
pub mod restormer;
pub mod unet;

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

pub use dncnn::{DnCnn, DncnnConfig};
pub use nafnet::{NafNet, NafnetConfig};
pub use restormer::{LayerNormKind, Restormer, RestormerConfig};
pub use unet::{RestorerUNet, UnetConfig, Upsample};

/// Where one of our parameters comes from in a published checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    Key(String),
    /// Not stored there (the release's DnCNN convolutions have no bias): zero.
    Zero,
}

/// What every architecture provides.
pub trait Arch {
    /// Its settings, checked (keys within `networks.restorer`).
    fn check(&self) -> crate::util::Check;
    /// One line for plans: family and size.
    fn describe(&self) -> String;
    /// Spatial sizes must be a multiple of this (callers pad to it).
    fn stride(&self) -> usize;
    /// Multiply-accumulates of one forward pass on an `h × w` image.
    fn macs(&self, h: usize, w: usize) -> u64;
    /// Channels of the features [`Restorer::residual_and_features`] returns (DANN's input).
    fn feature_channels(&self) -> usize;
    /// Peak memory of restoring one image (inference, flex), per pixel of the padded image:
    /// an upper bound measured with `cargo bench --bench restore_memory` (see each impl).
    fn inference_bytes_per_pixel(&self) -> u64;
    /// Memory one training forward + backward keeps per pixel of one crop (autodiff holds
    /// every layer's output): measured with `cargo bench --bench train_memory` (see each impl).
    fn training_bytes_per_pixel(&self) -> u64;
    /// Whether the network has BatchNorm (its statistics need whole batches, not shards).
    fn batch_norm(&self) -> bool {
        false
    }
    /// The network, parameters lazy (nothing drawn until first use).
    fn init_lazy(&self, device: &Device) -> Restorer;
    /// Our parameter path → the key its authors' published checkpoints use.
    fn published_key(&self, ours: &str) -> Option<Source>;
    /// Whether `key` (the file's prefix removed) is one of this family's published keys, so
    /// that a left-over key of the same network is reported while other networks are ignored.
    fn published_family(&self, key: &str) -> bool;
}

/// `networks.restorer`: one architecture's settings, tagged by `arch` (`unet` when absent).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "arch", rename_all = "snake_case")]
pub enum RestorerConfig {
    Unet(UnetConfig),
    Dncnn(DncnnConfig),
    Nafnet(NafnetConfig),
    Restormer(RestormerConfig),
}

impl Default for RestorerConfig {
    fn default() -> Self {
        RestorerConfig::Unet(UnetConfig::default())
    }
}

/// Deserialize a [`RestorerConfig`] whose `arch` may be left out (then `unet`, as before the
/// tag existed); for `#[serde(deserialize_with)]`.
pub(crate) fn with_default_arch<'de, D: serde::Deserializer<'de>>(d: D) -> Result<RestorerConfig, D::Error> {
    use serde::de::Error;
    let mut v = serde_json::Value::deserialize(d)?;
    if let serde_json::Value::Object(m) = &mut v {
        m.entry("arch").or_insert_with(|| "unet".into());
    }
    RestorerConfig::deserialize(v).map_err(D::Error::custom)
}

impl RestorerConfig {
    /// A UNet with `widths` per level (standard up-sampling).
    pub fn unet(widths: Vec<usize>) -> Self {
        RestorerConfig::Unet(UnetConfig { widths, upsample: Upsample::Standard })
    }

    /// A UNet with the authors' up-block (their checkpoints load into it).
    pub fn unet_release(widths: Vec<usize>) -> Self {
        RestorerConfig::Unet(UnetConfig { widths, upsample: Upsample::Release })
    }

    /// The family's implementation of [`Arch`] — the one match over families.
    pub fn arch(&self) -> &dyn Arch {
        match self {
            RestorerConfig::Unet(c) => c,
            RestorerConfig::Dncnn(c) => c,
            RestorerConfig::Nafnet(c) => c,
            RestorerConfig::Restormer(c) => c,
        }
    }

    pub fn check(&self) -> crate::util::Check {
        self.arch().check()
    }

    pub fn describe(&self) -> String {
        self.arch().describe()
    }

    pub fn stride(&self) -> usize {
        self.arch().stride()
    }

    pub fn macs(&self, h: usize, w: usize) -> u64 {
        self.arch().macs(h, w)
    }

    pub fn feature_channels(&self) -> usize {
        self.arch().feature_channels()
    }

    /// Peak memory of restoring one `w × h` image whole (padded to the stride), bytes: the
    /// per-pixel model of the architecture, the image's own planes in and out, and 64 MiB of
    /// fixed overhead (thread buffers). Measured (flex, `cargo bench --bench restore_memory`,
    /// peak resident growth): UNet-S 380 / 1,163 / 4,564 MiB at 256² / 512² / 1024² (model
    /// 384 / 1,344 / 5,184 with the planes); DnCNN-17 196 / 624 / 2,508; NAFNet-32 125 / 287 at
    /// 256² / 512²; Restormer 124 / 392 at 128² / 256².
    pub fn inference_bytes(&self, w: usize, h: usize) -> u64 {
        let s = self.stride().max(1);
        let px = (w.div_ceil(s) * s) as u64 * (h.div_ceil(s) * s) as u64;
        px * (self.arch().inference_bytes_per_pixel() + 4 * 3 * 4) + (64 << 20)
    }

    /// Memory the activations of one training forward + backward of G over `batch` crops of
    /// `w × h` keep, bytes (autodiff holds every layer's output for the backward, where
    /// inference frees them as it goes). Weights, gradients and optimiser state are counted
    /// apart, from the parameters.
    pub fn training_bytes(&self, batch: usize, w: usize, h: usize) -> u64 {
        let s = self.stride().max(1);
        let px = (w.div_ceil(s) * s) as u64 * (h.div_ceil(s) * s) as u64;
        (batch as u64).saturating_mul(px).saturating_mul(self.arch().training_bytes_per_pixel())
    }

    pub fn batch_norm(&self) -> bool {
        self.arch().batch_norm()
    }

    pub fn init(&self, device: &Device) -> Restorer {
        super::init::materialize(self.init_lazy(device))
    }

    /// The network with burn's lazy parameters (nothing drawn until first use): for counting.
    pub(crate) fn init_lazy(&self, device: &Device) -> Restorer {
        self.arch().init_lazy(device)
    }
}

/// One entry of the registry: a family, its named configurations and `--arch` syntax.
pub struct Family {
    pub name: &'static str,
    /// `--arch` syntax (`FAMILY:N,N,...` or a preset name).
    pub syntax: &'static str,
    pub about: &'static str,
    /// Published configurations (`describe` prints them with their parameter counts).
    pub presets: fn() -> Vec<(&'static str, RestorerConfig)>,
    /// The configuration `--arch FAMILY:NUMS` names.
    pub from_numbers: fn(&[usize]) -> Result<RestorerConfig, String>,
}

/// Every architecture, for `describe`, `restore --arch`, `export` and the parity tests.
pub const FAMILIES: &[Family] = &[
    Family {
        name: "unet",
        syntax: "unet:W1,W2,... (unet-release:... for the authors' up-sampling)",
        about: "the release's plain UNet (UNet-S = 64,128,256,512)",
        presets: unet::presets,
        from_numbers: |n| Ok(RestorerConfig::unet(n.to_vec())),
    },
    Family {
        name: "unet-release",
        syntax: "unet-release:W1,W2,...",
        about: "the UNet with the authors' up-block: their checkpoints load into it",
        presets: Vec::new,
        from_numbers: |n| Ok(RestorerConfig::Unet(UnetConfig { widths: n.to_vec(), upsample: Upsample::Release })),
    },
    Family {
        name: "dncnn",
        syntax: "dncnn:DEPTH,WIDTH",
        about: "DnCNN (Zhang et al. 2017)",
        presets: dncnn::presets,
        from_numbers: dncnn::from_numbers,
    },
    Family {
        name: "nafnet",
        syntax: "nafnet or nafnet:WIDTH (SIDD blocks) or nafnet-gopro:WIDTH",
        about: "NAFNet (Chen et al., ECCV 2022)",
        presets: nafnet::presets,
        from_numbers: nafnet::from_numbers,
    },
    Family {
        name: "nafnet-gopro",
        syntax: "nafnet-gopro:WIDTH",
        about: "NAFNet with the GoPro block counts",
        presets: Vec::new,
        from_numbers: nafnet::gopro_from_numbers,
    },
    Family {
        name: "restormer",
        syntax: "restormer or restormer:DIM",
        about: "Restormer (Zamir et al., CVPR 2022)",
        presets: restormer::presets,
        from_numbers: restormer::from_numbers,
    },
];

/// `--arch`: `unet:16,32,64`, `unet-release:64,128,256,512`, `dncnn:17,64`, `nafnet`,
/// `nafnet:64`, `restormer`, `restormer:48`, or a preset name (`nafnet-sidd-width32`).
pub fn parse_arch(s: &str) -> Result<RestorerConfig, String> {
    let all_presets = || FAMILIES.iter().flat_map(|f| (f.presets)());
    if let Some((_, cfg)) = all_presets().find(|(name, _)| *name == s) {
        return Ok(cfg);
    }
    let (family, nums) = s.split_once(':').unwrap_or((s, ""));
    let f = FAMILIES.iter().find(|f| f.name == family).ok_or_else(|| {
        let names: Vec<&str> = FAMILIES.iter().map(|f| f.name).chain(all_presets().map(|(n, _)| n)).collect();
        format!("--arch {s}: unknown architecture \"{family}\" ({})", names.join(", "))
    })?;
    let nums: Vec<usize> = if nums.is_empty() {
        Vec::new()
    } else {
        nums.split(',')
            .map(|n| n.trim().parse::<usize>().map_err(|_| format!("--arch {s}: \"{n}\" is not a number")))
            .collect::<Result<_, _>>()?
    };
    let cfg = (f.from_numbers)(&nums).map_err(|m| format!("--arch {s}: {m} (syntax: {})", f.syntax))?;
    cfg.check().map(|()| cfg).map_err(|(_, m)| format!("--arch {s}: {m}"))
}

/// G of any family.
#[derive(Module, Debug)]
pub enum Restorer {
    Unet(RestorerUNet),
    Dncnn(DnCnn),
    Nafnet(NafNet),
    Restormer(Restormer),
}

impl Restorer {
    /// The residual R = G(x); callers add it to x.
    pub fn residual(&self, x: Tensor<4>) -> Tensor<4> {
        self.residual_and_features(x).0
    }

    /// The residual and G's bottleneck features (UNet: the deepest encoder level; DnCNN: its
    /// middle layer; NAFNet: the middle blocks; Restormer: the latent level), on which DANN's
    /// domain classifier works.
    pub fn residual_and_features(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        match self {
            Restorer::Unet(n) => n.residual_and_bottleneck(x),
            Restorer::Dncnn(n) => n.residual_and_features(x),
            Restorer::Nafnet(n) => n.residual_and_features(x),
            Restorer::Restormer(n) => n.residual_and_features(x),
        }
    }

    /// Restored image x + G(x).
    pub fn restore(&self, x: Tensor<4>) -> Tensor<4> {
        self.residual(x.clone()) + x
    }
}

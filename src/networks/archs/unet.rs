//! `unet` (default): the release's plain UNet ("UNet-S" = widths 64/128/256/512, 8.56 M
//! parameters): two 3×3 convs + LeakyReLU(0.2) per level, average-pool down, bilinear up +
//! 3×3 conv, skip concatenation, no normalisation. UNet-T = 32/64/128/256 (3.11 GMACs at
//! 128²). `upsample: release` is the authors' exact up-block (corner-aligned bilinear, no
//! activation after the up-conv): their checkpoints load into it (`networks::interop`).

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::{Arch, Restorer, RestorerConfig, Source};
use crate::networks::init::conv as conv_layer;
use crate::networks::kernels::{avg_pool2x, conv, conv_leaky_relu};

/// `networks.restorer: {arch: unet, widths: [...], upsample: ...}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnetConfig {
    /// Channel width per level, shallowest first (UNet-S: [64, 128, 256, 512]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub widths: Vec<usize>,
    /// How a decoder level up-samples (see [`Upsample`]).
    #[serde(default, skip_serializing_if = "Upsample::is_standard")]
    pub upsample: Upsample,
}

/// The UNet's up-sampling step, `bilinear ×2 → 3×3 conv`, in one of two flavours.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Upsample {
    /// `align_corners = false` (PyTorch's default) and LeakyReLU(0.2) after the up-conv.
    #[default]
    Standard,
    /// As the authors' release (`RestorationNet`): `align_corners = true` and no activation
    /// after the up-conv, so its PyTorch weights load and compute the same function.
    Release,
}

impl Upsample {
    fn is_standard(&self) -> bool {
        *self == Upsample::Standard
    }
}

/// The release's sizes.
pub(super) fn presets() -> Vec<(&'static str, RestorerConfig)> {
    let release = |w: Vec<usize>| RestorerConfig::Unet(UnetConfig { widths: w, upsample: Upsample::Release });
    vec![("unet-s", release(vec![64, 128, 256, 512])), ("unet-t", release(vec![32, 64, 128, 256]))]
}

impl Arch for UnetConfig {
    fn check(&self) -> crate::util::Check {
        if self.widths.is_empty() || self.widths.contains(&0) {
            return crate::util::fail_at("widths", "the unet needs `widths`: at least one level, all > 0");
        }
        Ok(())
    }

    fn describe(&self) -> String {
        match self.upsample {
            Upsample::Release => format!("UNet {:?} (release up-sampling)", self.widths),
            Upsample::Standard => format!("UNet {:?}", self.widths),
        }
    }

    fn feature_channels(&self) -> usize {
        self.widths.last().copied().unwrap_or(0)
    }

    /// Calibrated with `cargo bench --bench restore_memory` (see the README's memory table).
    fn inference_bytes_per_pixel(&self) -> u64 {
        4 * 20 * self.widths.first().copied().unwrap_or(1) as u64
    }

    /// Measured (batch × pixels): 91·C0 B with widths [8, 16], 99·C0 with [32, 64, 128],
    /// 158·C0 with UNet-S's four levels; deeper levels add less and less (half the pixels).
    fn training_bytes_per_pixel(&self) -> u64 {
        160 * self.widths.first().copied().unwrap_or(1) as u64
    }

    /// One halving per level below the first.
    fn stride(&self) -> usize {
        1 << (self.widths.len().saturating_sub(1))
    }

    /// Convolutions only (pooling and interpolation are not counted, as profilers of the
    /// paper's table do not).
    fn macs(&self, h: usize, w: usize) -> u64 {
        let conv = |cin: usize, cout: usize, hw: usize| (cin * cout * 9 * hw) as u64;
        let w_ = &self.widths;
        let mut total = 0;
        let mut c_in = 3;
        for (i, &c) in w_.iter().enumerate() {
            let hw = (h >> i) * (w >> i);
            total += conv(c_in, c, hw) + conv(c, c, hw);
            c_in = c;
        }
        for i in (0..w_.len().saturating_sub(1)).rev() {
            let hw = (h >> i) * (w >> i);
            total += conv(w_[i + 1], w_[i], hw) + conv(2 * w_[i], w_[i], hw) + conv(w_[i], w_[i], hw);
        }
        total + conv(w_.first().copied().unwrap_or(0), 3, h * w)
    }

    fn init_lazy(&self, device: &Device) -> Restorer {
        assert!(!self.widths.is_empty(), "restorer needs at least one level");
        let w = &self.widths;
        let mut enc = Vec::new();
        let mut c_in = 3;
        for &c in w {
            enc.push(DoubleConv::new(c_in, c, device));
            c_in = c;
        }
        let mut up = Vec::new();
        let mut dec = Vec::new();
        for i in (0..w.len() - 1).rev() {
            up.push(conv_layer(w[i + 1], w[i], 3, device));
            dec.push(DoubleConv::new(2 * w[i], w[i], device));
        }
        Restorer::Unet(RestorerUNet {
            enc,
            up,
            dec,
            out: conv_layer(w[0], 3, 3, device),
            release_up: self.upsample == Upsample::Release,
        })
    }

    /// The release's `RestorationNet` names its parameters `down_path.{i}.block.{0,2}`,
    /// `up_path.{j}.conv_up`, `up_path.{j}.conv_block.block.{0,2}` and `last` (up levels
    /// deepest first, as ours): `enc.1.b.weight` → `down_path.1.block.2.weight`, ...
    fn published_key(&self, ours: &str) -> Option<Source> {
        let p: Vec<&str> = ours.split('.').collect();
        let conv = |x: &str| match x {
            "a" => Some("0"),
            "b" => Some("2"),
            _ => None,
        };
        let key = |k: String| Some(Source::Key(k));
        match p.as_slice() {
            ["enc", i, ab, leaf] => key(format!("down_path.{i}.block.{}.{leaf}", conv(ab)?)),
            ["up", j, leaf] => key(format!("up_path.{j}.conv_up.{leaf}")),
            ["dec", j, ab, leaf] => key(format!("up_path.{j}.conv_block.block.{}.{leaf}", conv(ab)?)),
            ["out", leaf] => key(format!("last.{leaf}")),
            _ => None,
        }
    }

    fn published_family(&self, key: &str) -> bool {
        key.starts_with("down_path.") || key.starts_with("up_path.") || key.starts_with("last.")
    }
}

#[derive(Module, Debug)]
pub struct DoubleConv {
    a: Conv2d,
    b: Conv2d,
}

impl DoubleConv {
    fn new(c_in: usize, c_out: usize, device: &Device) -> Self {
        DoubleConv { a: conv_layer(c_in, c_out, 3, device), b: conv_layer(c_out, c_out, 3, device) }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = conv_leaky_relu(&self.a, x, 0.2);
        conv_leaky_relu(&self.b, x, 0.2)
    }
}

#[derive(Module, Debug)]
pub struct RestorerUNet {
    enc: Vec<DoubleConv>,
    up: Vec<Conv2d>,
    dec: Vec<DoubleConv>,
    out: Conv2d,
    /// [`Upsample::Release`]: corner-aligned bilinear, no activation after the up-conv.
    release_up: bool,
}

impl RestorerUNet {
    /// The residual R = G(x); callers add it to x (the residual form is what Noise-DA swaps).
    pub fn residual(&self, x: Tensor<4>) -> Tensor<4> {
        self.residual_and_bottleneck(x).0
    }

    /// The residual and the deepest encoder level's features (DANN's classifier input).
    pub fn residual_and_bottleneck(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let mut skips = Vec::with_capacity(self.enc.len());
        let mut h = x;
        for (i, block) in self.enc.iter().enumerate() {
            if i > 0 {
                h = avg_pool2x(h);
            }
            h = block.forward(h);
            skips.push(h.clone());
        }
        let bottleneck = skips.pop().expect("at least one level");
        for (up, dec) in self.up.iter().zip(&self.dec) {
            let skip = skips.pop().expect("one skip per decoder level");
            h = if self.release_up {
                conv(up, crate::networks::upsample2x_bilinear_aligned(h))
            } else {
                conv_leaky_relu(up, crate::networks::upsample2x_bilinear(h), 0.2)
            };
            h = dec.forward(Tensor::cat(vec![h, skip], 1));
        }
        (conv(&self.out, h), bottleneck)
    }
}

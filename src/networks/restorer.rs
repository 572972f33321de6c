//! The restorer G, always residual: restored = x + G(x) (the residual is what Noise-DA swaps).
//!
//! Two families from the release's list, chosen with `networks.restorer.arch`:
//! - `unet` (default): plain UNet ("UNet-S" = widths 64/128/256/512, 8.56 M parameters): two
//!   3×3 convs + LeakyReLU(0.2) per level, average-pool down, bilinear up + 3×3 conv, skip
//!   concatenation, no normalisation. UNet-T = 32/64/128/256 (3.11 GMACs at 128²).
//!   `upsample: release` is the authors' exact up-block (corner-aligned bilinear, no activation
//!   after the up-conv): their checkpoints load into it (`networks::interop`).
//! - `dncnn`: DnCNN (Zhang et al. 2017): conv+ReLU, `depth − 2` × (conv+BatchNorm+ReLU), conv;
//!   depth 17, width 64 by default.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, BatchNormConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::init::conv as conv_layer;
use super::kernels::{avg_pool2x, conv, leaky_relu};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestorerArch {
    #[default]
    Unet,
    Dncnn,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestorerConfig {
    /// `unet` (default) or `dncnn`.
    #[serde(default)]
    pub arch: RestorerArch,
    /// UNet: channel width per level, shallowest first (UNet-S: [64, 128, 256, 512]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub widths: Vec<usize>,
    /// DnCNN: number of conv layers (default 17).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<usize>,
    /// DnCNN: feature channels (default 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<usize>,
    /// UNet: how a decoder level up-samples (see [`Upsample`]).
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

impl RestorerConfig {
    pub fn unet(widths: Vec<usize>) -> Self {
        RestorerConfig { widths, ..Default::default() }
    }

    fn dncnn_shape(&self) -> (usize, usize) {
        (self.depth.unwrap_or(17), self.width.unwrap_or(64))
    }

    /// The settings for the chosen family, checked (keys within `networks.restorer`).
    pub fn check(&self) -> crate::util::Check {
        use crate::util::fail_at;
        match self.arch {
            RestorerArch::Unet if self.widths.is_empty() || self.widths.contains(&0) => {
                fail_at("widths", "the unet needs `widths`: at least one level, all > 0")
            }
            RestorerArch::Unet if self.depth.is_some() || self.width.is_some() => fail_at(
                if self.depth.is_some() { "depth" } else { "width" },
                "`depth` and `width` are DnCNN settings; the unet takes `widths`",
            ),
            RestorerArch::Dncnn if !self.widths.is_empty() || !self.upsample.is_standard() => fail_at(
                if self.widths.is_empty() { "upsample" } else { "widths" },
                "`widths` and `upsample` are UNet settings; DnCNN takes `depth` and `width`",
            ),
            RestorerArch::Dncnn if self.dncnn_shape().0 < 2 || self.dncnn_shape().1 == 0 => fail_at(
                if self.dncnn_shape().0 < 2 { "depth" } else { "width" },
                "DnCNN needs depth >= 2 and width > 0",
            ),
            _ => Ok(()),
        }
    }

    /// One line for plans: family and size.
    pub fn describe(&self) -> String {
        match self.arch {
            RestorerArch::Unet if self.upsample == Upsample::Release => {
                format!("UNet {:?} (release up-sampling)", self.widths)
            }
            RestorerArch::Unet => format!("UNet {:?}", self.widths),
            RestorerArch::Dncnn => {
                let (d, w) = self.dncnn_shape();
                format!("DnCNN depth {d}, width {w}")
            }
        }
    }

    /// Channels of the features [`Restorer::residual_and_features`] returns.
    pub fn feature_channels(&self) -> usize {
        match self.arch {
            RestorerArch::Unet => self.widths.last().copied().unwrap_or(0),
            RestorerArch::Dncnn => self.dncnn_shape().1,
        }
    }

    /// Spatial size must be a multiple of this (one halving per UNet level below the first).
    pub fn stride(&self) -> usize {
        match self.arch {
            RestorerArch::Unet => 1 << (self.widths.len().saturating_sub(1)),
            RestorerArch::Dncnn => 1,
        }
    }

    /// Multiply-accumulates of one forward pass on an `h × w` image (convolutions; the
    /// pooling, normalisation and interpolation are not counted, as profilers of the paper's
    /// table do not).
    pub fn macs(&self, h: usize, w: usize) -> u64 {
        let conv = |cin: usize, cout: usize, hw: usize| (cin * cout * 9 * hw) as u64;
        if self.arch == RestorerArch::Dncnn {
            let (d, c) = self.dncnn_shape();
            return conv(3, c, h * w) + (d as u64 - 2) * conv(c, c, h * w) + conv(c, 3, h * w);
        }
        let w_ = &self.widths;
        let mut total = 0;
        let mut c_in = 3;
        for (i, &c) in w_.iter().enumerate() {
            let hw = (h >> i) * (w >> i);
            total += conv(c_in, c, hw) + conv(c, c, hw);
            c_in = c;
        }
        for i in (0..w_.len() - 1).rev() {
            let hw = (h >> i) * (w >> i);
            total += conv(w_[i + 1], w_[i], hw) + conv(2 * w_[i], w_[i], hw) + conv(w_[i], w_[i], hw);
        }
        total + conv(w_[0], 3, h * w)
    }

    pub fn init(&self, device: &Device) -> Restorer {
        super::init::materialize(self.init_lazy(device))
    }

    /// The network with burn's lazy parameters (nothing drawn until first use): for counting.
    pub(crate) fn init_lazy(&self, device: &Device) -> Restorer {
        match self.arch {
            RestorerArch::Unet => Restorer::Unet(self.init_unet(device)),
            RestorerArch::Dncnn => {
                let (d, c) = self.dncnn_shape();
                Restorer::Dncnn(DnCnn {
                    first: conv_layer(3, c, 3, device),
                    mid: (0..d - 2)
                        .map(|_| ConvBn { conv: conv_layer(c, c, 3, device), bn: BatchNormConfig::new(c).init(device) })
                        .collect(),
                    last: conv_layer(c, 3, 3, device),
                })
            }
        }
    }

    fn init_unet(&self, device: &Device) -> RestorerUNet {
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
        RestorerUNet {
            enc,
            up,
            dec,
            out: conv_layer(w[0], 3, 3, device),
            release_up: self.upsample == Upsample::Release,
        }
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
        let x = leaky_relu(conv(&self.a, x), 0.2);
        leaky_relu(conv(&self.b, x), 0.2)
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
                conv(up, super::upsample2x_bilinear_aligned(h))
            } else {
                leaky_relu(conv(up, super::upsample2x_bilinear(h)), 0.2)
            };
            h = dec.forward(Tensor::cat(vec![h, skip], 1));
        }
        (conv(&self.out, h), bottleneck)
    }
}

#[derive(Module, Debug)]
pub struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm,
}

/// DnCNN: a plain stack of 3×3 convolutions predicting the residual.
#[derive(Module, Debug)]
pub struct DnCnn {
    first: Conv2d,
    mid: Vec<ConvBn>,
    last: Conv2d,
}

impl DnCnn {
    /// The residual and the features of the middle layer (DANN's classifier input).
    fn residual_and_features(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let mut h = relu(conv(&self.first, x));
        let mut mid = h.clone();
        for (i, l) in self.mid.iter().enumerate() {
            h = relu(l.bn.forward(conv(&l.conv, h)));
            if i + 1 == self.mid.len().div_ceil(2) {
                mid = h.clone();
            }
        }
        (conv(&self.last, h), mid)
    }
}

/// G of any family.
#[derive(Module, Debug)]
pub enum Restorer {
    Unet(RestorerUNet),
    Dncnn(DnCnn),
}

impl Restorer {
    /// The residual R = G(x); callers add it to x.
    pub fn residual(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Restorer::Unet(n) => n.residual(x),
            Restorer::Dncnn(n) => n.residual_and_features(x).0,
        }
    }

    /// The residual and G's bottleneck features (UNet: the deepest encoder level; DnCNN: its
    /// middle layer), on which DANN's domain classifier works.
    pub fn residual_and_features(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        match self {
            Restorer::Unet(n) => n.residual_and_bottleneck(x),
            Restorer::Dncnn(n) => n.residual_and_features(x),
        }
    }

    /// Restored image x + G(x).
    pub fn restore(&self, x: Tensor<4>) -> Tensor<4> {
        self.residual(x.clone()) + x
    }
}

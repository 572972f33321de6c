//! `dncnn`: DnCNN (Zhang et al. 2017): conv+ReLU, `depth − 2` × (conv+BatchNorm+ReLU), conv;
//! depth 17, width 64 by default. The release's `dncnn` Sequential stores no conv biases.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, BatchNormConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::{Arch, Restorer, RestorerConfig, Source};
use crate::networks::init::conv as conv_layer;
use crate::networks::kernels::conv;

/// `networks.restorer: {arch: dncnn, depth: 17, width: 64}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DncnnConfig {
    /// Number of conv layers (default 17).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<usize>,
    /// Feature channels (default 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<usize>,
}

impl DncnnConfig {
    fn shape(&self) -> (usize, usize) {
        (self.depth.unwrap_or(17), self.width.unwrap_or(64))
    }
}

pub(super) fn presets() -> Vec<(&'static str, RestorerConfig)> {
    vec![("dncnn-17", RestorerConfig::Dncnn(DncnnConfig::default()))]
}

pub(super) fn from_numbers(n: &[usize]) -> Result<RestorerConfig, String> {
    match n {
        [] => Ok(RestorerConfig::Dncnn(DncnnConfig::default())),
        [d, w] => Ok(RestorerConfig::Dncnn(DncnnConfig { depth: Some(*d), width: Some(*w) })),
        _ => Err("dncnn takes DEPTH,WIDTH".into()),
    }
}

impl Arch for DncnnConfig {
    fn check(&self) -> crate::util::Check {
        let (d, w) = self.shape();
        if d < 2 || w == 0 {
            return crate::util::fail_at(if d < 2 { "depth" } else { "width" }, "DnCNN needs depth >= 2 and width > 0");
        }
        Ok(())
    }

    fn describe(&self) -> String {
        let (d, w) = self.shape();
        format!("DnCNN depth {d}, width {w}")
    }

    fn stride(&self) -> usize {
        1
    }

    fn macs(&self, h: usize, w: usize) -> u64 {
        let conv = |cin: usize, cout: usize| (cin * cout * 9 * h * w) as u64;
        let (d, c) = self.shape();
        conv(3, c) + (d as u64 - 2) * conv(c, c) + conv(c, 3)
    }

    fn feature_channels(&self) -> usize {
        self.shape().1
    }

    /// Calibrated with `cargo bench --bench restore_memory` (see the README's memory table).
    fn inference_bytes_per_pixel(&self) -> u64 {
        4 * 10 * self.shape().1 as u64
    }

    /// Measured: 14.9 KB per pixel for DnCNN-17 (width 64), ≈ 14 B per layer and channel.
    fn training_bytes_per_pixel(&self) -> u64 {
        let (depth, width) = self.shape();
        14 * depth as u64 * width as u64
    }

    fn batch_norm(&self) -> bool {
        true
    }

    fn init_lazy(&self, device: &Device) -> Restorer {
        let (d, c) = self.shape();
        Restorer::Dncnn(DnCnn {
            first: conv_layer(3, c, 3, device),
            mid: (0..d - 2)
                .map(|_| ConvBn { conv: conv_layer(c, c, 3, device), bn: BatchNormConfig::new(c).init(device) })
                .collect(),
            last: conv_layer(c, 3, 3, device),
        })
    }

    /// The release's `dncnn` Sequential of `depth` convs with BatchNorm after each middle one
    /// and no conv biases: `first` → `dncnn.0`, `mid.k.conv` → `dncnn.{2+3k}`,
    /// `mid.k.bn.{gamma,beta,running_mean,running_var}` → `dncnn.{3+3k}.{weight,bias,...}`,
    /// `last` → `dncnn.{3·(depth−2)+2}`.
    fn published_key(&self, ours: &str) -> Option<Source> {
        let p: Vec<&str> = ours.split('.').collect();
        let key = |k: String| Some(Source::Key(k));
        let conv_at = |i: usize, leaf: &str| match leaf {
            "weight" => key(format!("dncnn.{i}.weight")),
            "bias" => Some(Source::Zero),
            _ => None,
        };
        match p.as_slice() {
            ["first", leaf] => conv_at(0, leaf),
            ["mid", k, "conv", leaf] => conv_at(2 + 3 * k.parse::<usize>().ok()?, leaf),
            ["mid", k, "bn", leaf] => {
                let name = match *leaf {
                    "gamma" => "weight",
                    "beta" => "bias",
                    "running_mean" | "running_var" => leaf,
                    _ => return None,
                };
                key(format!("dncnn.{}.{name}", 3 + 3 * k.parse::<usize>().ok()?))
            }
            ["last", leaf] => conv_at(3 * (self.shape().0 - 2) + 2, leaf),
            _ => None,
        }
    }

    fn published_family(&self, key: &str) -> bool {
        key.starts_with("dncnn.")
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
    pub(super) fn residual_and_features(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
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

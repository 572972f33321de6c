//! The residual UNet restorer G: restored = x + G(x).
//!
//! Plain 4-level UNet as in the Noise-DA release ("UNet-S" = widths 64/128/256/512,
//! 8.56 M parameters): two 3×3 convs + LeakyReLU(0.2) per level, average-pool down,
//! bilinear up + 3×3 conv, skip concatenation, no normalisation.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::activation::leaky_relu;
use burn::tensor::module::avg_pool2d;
use burn::tensor::ops::AvgPoolOptions;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::init::conv;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestorerConfig {
    /// Channel width per level, shallowest first (the paper's UNet-S: [64, 128, 256, 512]).
    pub widths: Vec<usize>,
}

impl RestorerConfig {
    /// Spatial size must be a multiple of this (one halving per level below the first).
    pub fn stride(&self) -> usize {
        1 << (self.widths.len().saturating_sub(1))
    }

    /// Multiply-accumulates of one forward pass on an `h × w` image (convolutions; the
    /// pooling and interpolation are not counted, as profilers of the paper's table do not).
    pub fn macs(&self, h: usize, w: usize) -> u64 {
        let conv = |cin: usize, cout: usize, hw: usize| (cin * cout * 9 * hw) as u64;
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

    pub fn init(&self, device: &Device) -> RestorerUNet {
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
            up.push(conv(w[i + 1], w[i], 3, device));
            dec.push(DoubleConv::new(2 * w[i], w[i], device));
        }
        RestorerUNet { enc, up, dec, out: conv(w[0], 3, 3, device) }
    }
}

#[derive(Module, Debug)]
pub struct DoubleConv {
    a: Conv2d,
    b: Conv2d,
}

impl DoubleConv {
    fn new(c_in: usize, c_out: usize, device: &Device) -> Self {
        DoubleConv { a: conv(c_in, c_out, 3, device), b: conv(c_out, c_out, 3, device) }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = leaky_relu(self.a.forward(x), 0.2);
        leaky_relu(self.b.forward(x), 0.2)
    }
}

#[derive(Module, Debug)]
pub struct RestorerUNet {
    enc: Vec<DoubleConv>,
    up: Vec<Conv2d>,
    dec: Vec<DoubleConv>,
    out: Conv2d,
}

impl RestorerUNet {
    /// The residual R = G(x); callers add it to x (the residual form is what Noise-DA swaps).
    pub fn residual(&self, x: Tensor<4>) -> Tensor<4> {
        let mut skips = Vec::with_capacity(self.enc.len());
        let mut h = x;
        for (i, block) in self.enc.iter().enumerate() {
            if i > 0 {
                h = avg_pool2d(h, AvgPoolOptions::new([2, 2]));
            }
            h = block.forward(h);
            skips.push(h.clone());
        }
        skips.pop();
        for (up, dec) in self.up.iter().zip(&self.dec) {
            let skip = skips.pop().expect("one skip per decoder level");
            h = leaky_relu(up.forward(super::upsample2x_bilinear(h)), 0.2);
            h = dec.forward(Tensor::cat(vec![h, skip], 1));
        }
        self.out.forward(h)
    }

    /// Restored image x + G(x).
    pub fn restore(&self, x: Tensor<4>) -> Tensor<4> {
        self.residual(x.clone()) + x
    }
}

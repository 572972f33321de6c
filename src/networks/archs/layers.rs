//! Building blocks of the published transformer-era restorers (NAFNet, Restormer): PyTorch's
//! layer defaults, depthwise convolutions, pixel (un)shuffle and per-pixel channel LayerNorm.
//! Written from burn's element-wise ops, so they differentiate on every back-end.

use burn::module::{Module, Param};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::{Device, Tensor};

/// A `k × k` convolution as PyTorch's `nn.Conv2d` builds it (its default init: uniform in
/// ±1/√fan_in for weights and bias), "same" padding for odd `k`, `groups` groups.
pub(super) fn conv(c_in: usize, c_out: usize, k: usize, bias: bool, groups: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([c_in, c_out], [k, k])
        .with_padding(PaddingConfig2d::Explicit(k / 2, k / 2, k / 2, k / 2))
        .with_groups(groups)
        .with_bias(bias)
        .init(device)
}

/// A 3×3 depthwise convolution on `c` channels.
pub(super) fn depthwise(c: usize, bias: bool, device: &Device) -> Conv2d {
    conv(c, c, 3, bias, c, device)
}

/// A `k × k` convolution with stride `k` and no padding (NAFNet's 2×2 down-sampling).
pub(super) fn strided(c_in: usize, c_out: usize, k: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([c_in, c_out], [k, k]).with_stride([k, k]).init(device)
}

/// PyTorch's `PixelShuffle(2)`: `[b, 4c, h, w]` → `[b, c, 2h, 2w]`,
/// `out[c, 2y+i, 2x+j] = in[4c + 2i + j, y, x]`.
pub(super) fn pixel_shuffle(x: Tensor<4>) -> Tensor<4> {
    let [b, c4, h, w] = x.dims();
    let c = c4 / 4;
    x.reshape([b, c, 2, 2, h, w]).permute([0, 1, 4, 2, 5, 3]).reshape([b, c, 2 * h, 2 * w])
}

/// PyTorch's `PixelUnshuffle(2)`, the inverse of [`pixel_shuffle`].
pub(super) fn pixel_unshuffle(x: Tensor<4>) -> Tensor<4> {
    let [b, c, h2, w2] = x.dims();
    let (h, w) = (h2 / 2, w2 / 2);
    x.reshape([b, c, h, 2, w, 2]).permute([0, 1, 3, 5, 2, 4]).reshape([b, 4 * c, h, w])
}

/// LayerNorm over the channels at each pixel (NAFNet's `LayerNorm2d`, Restormer's
/// `WithBias`/`BiasFree` LayerNorm): per-channel `weight`, optional `bias`. Without bias
/// (Restormer's bias-free form) the numerator is `x` itself, not `x − mean`.
#[derive(Module, Debug)]
pub struct ChannelNorm {
    pub(super) weight: Param<Tensor<1>>,
    pub(super) bias: Option<Param<Tensor<1>>>,
    eps: f64,
}

impl ChannelNorm {
    pub(super) fn new(c: usize, bias: bool, eps: f64, device: &Device) -> Self {
        ChannelNorm {
            weight: Param::from_tensor(Tensor::ones([c], device)),
            bias: bias.then(|| Param::from_tensor(Tensor::zeros([c], device))),
            eps,
        }
    }

    pub(super) fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        // One kernel each way on flex; the composition below elsewhere (equal, tested).
        let x = match crate::networks::kernels::channel_norm(
            x,
            self.weight.val(),
            self.bias.as_ref().map(|b| b.val()),
            self.eps,
        ) {
            Ok(y) => return y,
            Err(x) => x,
        };
        let c = x.dims()[1];
        let mean = x.clone().mean_dim(1);
        let centred = x.clone() - mean;
        let var = centred.clone().powi_scalar(2).mean_dim(1);
        let inv = (var + self.eps).sqrt().recip();
        let w = self.weight.val().reshape([1, c, 1, 1]);
        match &self.bias {
            Some(b) => centred * inv * w + b.val().reshape([1, c, 1, 1]),
            None => x * inv * w,
        }
    }
}

/// A per-channel scale of shape `(1, c, 1, 1)` (NAFNet's β and γ), starting at `value`.
pub(super) fn channel_scale(c: usize, value: f32, device: &Device) -> Param<Tensor<4>> {
    Param::from_tensor(Tensor::full([1, c, 1, 1], value, device))
}

/// Zero-pad `x` on the right and bottom to a multiple of `m` (NAFNet's `check_image_size`).
pub(super) fn pad_to_multiple(x: Tensor<4>, m: usize) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    let (ph, pw) = ((m - h % m) % m, (m - w % m) % m);
    if ph == 0 && pw == 0 {
        return x;
    }
    x.pad((0, pw, 0, ph), burn::tensor::ops::PadMode::Constant(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    /// Pixel shuffle puts channel 4c + 2i + j of pixel (y, x) at (2y + i, 2x + j), and
    /// unshuffle undoes it.
    #[test]
    fn pixel_shuffle_follows_pytorchs_layout() {
        let dev = Device::flex();
        let v: Vec<f32> = (0..2 * 8 * 3 * 5).map(|i| i as f32).collect();
        let x = Tensor::<4>::from_data(TensorData::new(v.clone(), [2, 8, 3, 5]), &dev);
        let y = pixel_shuffle(x.clone());
        assert_eq!(y.dims(), [2, 2, 6, 10]);
        let yv = y.clone().into_data().try_to_vec::<f32>().unwrap();
        for (b, c, yy, xx, i, j) in [(0, 0, 0, 0, 0, 0), (1, 1, 2, 4, 1, 0), (0, 1, 1, 3, 0, 1), (1, 0, 2, 4, 1, 1)] {
            let src = v[((b * 8 + 4 * c + 2 * i + j) * 3 + yy) * 5 + xx];
            let dst = yv[((b * 2 + c) * 6 + 2 * yy + i) * 10 + 2 * xx + j];
            assert_eq!(src, dst, "{b} {c} {yy} {xx} {i} {j}");
        }
        let back = pixel_unshuffle(y).into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(back, v);
    }

    /// Each pixel's channels come out with zero mean and unit variance (with bias), or scaled
    /// by the root-mean-square about the mean only (bias-free).
    #[test]
    fn channel_norm_normalises_each_pixel() {
        let dev = Device::flex();
        let v: Vec<f32> = (0..4 * 6).map(|i| ((i * 7) % 11) as f32 - 3.0).collect();
        let x = Tensor::<4>::from_data(TensorData::new(v.clone(), [1, 4, 2, 3]), &dev);
        let y = ChannelNorm::new(4, true, 1e-6, &dev).forward(x.clone()).into_data().try_to_vec::<f32>().unwrap();
        let z = ChannelNorm::new(4, false, 1e-5, &dev).forward(x).into_data().try_to_vec::<f32>().unwrap();
        for p in 0..6 {
            let ch: Vec<f32> = (0..4).map(|c| v[c * 6 + p]).collect();
            let m = ch.iter().sum::<f32>() / 4.0;
            let var = ch.iter().map(|a| (a - m).powi(2)).sum::<f32>() / 4.0;
            for c in 0..4 {
                assert!((y[c * 6 + p] - (ch[c] - m) / (var + 1e-6).sqrt()).abs() < 1e-4);
                assert!((z[c * 6 + p] - ch[c] / (var + 1e-5).sqrt()).abs() < 1e-4);
            }
        }
    }
}

//! PixelDA's networks (Bousmalis et al. 2017, pixel-space adaptation; CyCADA's pixel half): a
//! translator that turns synthetic degraded inputs into target-looking ones, and a patch
//! discriminator that tells translated inputs from real target inputs.
//!
//! - Translator T(x, z): x and one channel of per-pixel Gaussian noise z (the degradation to
//!   add is random — real sensor noise is not a function of the image), five 3×3 convolutions
//!   of width `width` with LeakyReLU(0.2), and a residual output x + r. The last convolution
//!   starts at zero, so T starts as the identity and G's first steps are source-only's.
//! - Discriminator: a PatchGAN — two stride-2 3×3 convolutions (width, 2·width) with
//!   LeakyReLU(0.2), then a 3×3 convolution to one logit per patch (receptive field 15 px, one
//!   logit per 4×4 block); no normalisation, so it is the same under any batch split.

use burn::module::{Module, Param};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::activation::leaky_relu;
use burn::tensor::{Device, Tensor};

use super::init::conv;

#[derive(Module, Debug)]
pub struct Translator {
    head: Conv2d,
    body: Vec<Conv2d>,
    tail: Conv2d,
}

impl Translator {
    pub fn new(channels: usize, width: usize, device: &Device) -> Translator {
        let mut tail = conv(width, channels, 3, device);
        tail.weight = Param::from_tensor(Tensor::zeros([channels, width, 3, 3], device));
        super::init::materialize(Translator {
            head: conv(channels + 1, width, 3, device),
            body: (0..3).map(|_| conv(width, width, 3, device)).collect(),
            tail,
        })
    }

    /// `x` `[n, c, h, w]` translated, with the noise `z` `[n, 1, h, w]`.
    pub fn forward(&self, x: Tensor<4>, z: Tensor<4>) -> Tensor<4> {
        let mut h = leaky_relu(self.head.forward(Tensor::cat(vec![x.clone(), z], 1)), 0.2);
        for c in &self.body {
            h = leaky_relu(c.forward(h), 0.2);
        }
        x + self.tail.forward(h)
    }
}

#[derive(Module, Debug)]
pub struct PatchDiscriminator {
    convs: Vec<Conv2d>,
    out: Conv2d,
}

impl PatchDiscriminator {
    pub fn new(channels: usize, width: usize, device: &Device) -> PatchDiscriminator {
        let strided = |c_in: usize, c_out: usize| {
            let mut c = Conv2dConfig::new([c_in, c_out], [3, 3])
                .with_stride([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device);
            c.bias = Some(Param::from_tensor(Tensor::zeros([c_out], device)));
            c
        };
        super::init::materialize(PatchDiscriminator {
            convs: vec![strided(channels, width), strided(width, 2 * width)],
            out: conv(2 * width, 1, 3, device),
        })
    }

    /// One logit per patch, flattened to `[n · patches, 1]` (real target = 1).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut h = x;
        for c in &self.convs {
            h = leaky_relu(c.forward(h), 0.2);
        }
        let y = self.out.forward(h);
        let n = y.dims().iter().product::<usize>();
        y.reshape([n, 1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};

    /// The translator starts as the identity (zero last layer), and the discriminator gives
    /// one logit per 4×4 block.
    #[test]
    fn shapes_and_identity_start() {
        let _rng = crate::util::rng_lock();
        let dev = Device::flex();
        let t = Translator::new(3, 8, &dev);
        let x = Tensor::<4>::random([2, 3, 16, 12], Distribution::Uniform(0.0, 1.0), &dev);
        let z = Tensor::<4>::random([2, 1, 16, 12], Distribution::Normal(0.0, 1.0), &dev);
        let y = t.forward(x.clone(), z);
        assert_eq!(y.dims(), [2, 3, 16, 12]);
        let (a, b): (Vec<f32>, Vec<f32>) = (x.into_data().try_to_vec().unwrap(), y.into_data().try_to_vec().unwrap());
        assert_eq!(a, b);
        let d = PatchDiscriminator::new(3, 8, &dev);
        let x = Tensor::<4>::from_data(TensorData::new(vec![0.5f32; 2 * 3 * 16 * 12], [2, 3, 16, 12]), &dev);
        assert_eq!(d.forward(x).dims(), [2 * 4 * 3, 1]);
    }
}

//! Layer constructors with the release's initialisation: Kaiming-normal weights, zero bias.

use burn::module::{Initializer, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor};

fn kaiming() -> Initializer {
    Initializer::KaimingNormal { gain: 2.0f64.sqrt(), fan_out_only: false }
}

/// k×k convolution with "same" padding.
pub(crate) fn conv(c_in: usize, c_out: usize, k: usize, device: &Device) -> Conv2d {
    let mut c = Conv2dConfig::new([c_in, c_out], [k, k])
        .with_padding(PaddingConfig2d::Explicit(k / 2, k / 2, k / 2, k / 2))
        .with_initializer(kaiming())
        .init(device);
    c.bias = Some(Param::from_tensor(Tensor::zeros([c_out], device)));
    c
}

pub(crate) fn linear(d_in: usize, d_out: usize, device: &Device) -> Linear {
    let mut l = LinearConfig::new(d_in, d_out).with_initializer(kaiming()).init(device);
    l.bias = Some(Param::from_tensor(Tensor::zeros([d_out], device)));
    l
}

/// Initialise every parameter now, in the module's visiting order. burn initialises parameters
/// lazily on first use, so the draw order — and so the weights a seed gives — would otherwise
/// depend on which parameter a caller touches first (a forward pass, a fork for a shard, an
/// EMA copy).
pub(crate) fn materialize<M: burn::module::Module>(m: M) -> M {
    struct Touch;
    impl burn::module::ModuleVisitor for Touch {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let _ = param.val();
        }
    }
    m.visit(&mut Touch);
    m
}

//! Hand-written CPU kernels, forward and backward, for the networks' hot operations on burn's
//! `flex` back-end: the stride-1 "same" convolution (3×3 and 1×1), SiLU and LeakyReLU, and
//! GroupNorm with its affine, FiLM and activation folded in.
//!
//! Why: flex differentiates a convolution through a direct-loop transposed convolution (input
//! gradient) and a convolution whose kernel is the whole output-gradient map (weight gradient),
//! and runs element-wise work as single-threaded passes, one per primitive (SiLU alone is six);
//! those paths were most of the gap to PyTorch (issue 13). Here every convolution pass is a
//! gemm over a banded im2col, or Winograd F(2×2, 3×3) for 3×3 layers with ≥ 16 channels each
//! side (the input gradient is the same convolution with the filters turned), parallel on
//! rayon, and each normalisation or activation is one parallel pass each way.
//!
//! The ops are registered through burn's backend-extension mechanism (`#[backend_extension]`)
//! with our own autodiff backward. Other back-ends (wgpu, cuda, tch) and other dtypes (the
//! mixed-precision f16 path) keep burn's own ops: the functions here choose at run time, and
//! each equals its burn composition within float rounding (tested, value and gradients).

mod channel_norm;
mod conv;
mod depthwise;
mod gemm;
mod norm;
mod pointwise;
mod resample;
mod winograd;

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::nn::conv::Conv2d;
use burn::nn::{GroupNorm, PaddingConfig2d};
use burn::tensor::{DType, Device, Tensor, TensorData};
use channel_norm::ChannelShape;
use depthwise::DepthShape;
use norm::NormShape;
use pointwise::Act;
/// Elements per rayon job in the element-wise passes (also the fused optimiser's).
pub(crate) use pointwise::CHUNK;
use resample::Resample2x;

/// Shapes of one stride-1 "same" convolution.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    pub b: usize,
    pub ci: usize,
    pub co: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
}

impl Geometry {
    fn hw(&self) -> usize {
        self.h * self.w
    }
    /// Rows of the im2col matrix: one per (input channel, kernel tap).
    fn kk(&self) -> usize {
        self.ci * self.k * self.k
    }
    /// Run the images one after another with a parallel gemm when there are fewer images than
    /// threads (a single image to restore, the paper's batch of 2 split over shards), else one
    /// image per rayon job with a sequential gemm.
    fn images_in_parallel(&self) -> bool {
        self.b >= rayon::current_num_threads()
    }
}

/// Runs `f` inside a function compiled for AVX2 + FMA where the CPU has them (the crate is
/// built for baseline x86-64, whose vectors are 4 floats wide): for the simple vector loops of
/// our kernels, which the compiler then widens to 8. Elsewhere, `f` as it is.
#[inline(always)]
pub(crate) fn vectorised<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has both features (checked just above).
            return unsafe { avx2(f) };
        }
    }
    f()
}

/// Operations with a hand-written kernel on flex (inference) and a hand-written backward
/// (training, `Autodiff<Flex>`). Activations travel as `(kind, slope)` ([`Act::code`]).
#[backend_extension(Flex, Autodiff)]
pub trait KernelOps: Backend {
    /// k×k convolution, stride 1, zero padding k/2 (k odd), one group, with bias.
    fn conv_same(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `act(conv_same(x))`: fused on flex (inference), the two ops under autodiff.
    fn conv_same_act(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        kind: u32,
        slope: f32,
    ) -> FloatTensor<Self>;
    /// An element-wise activation.
    fn activation(x: FloatTensor<Self>, kind: u32, slope: f32) -> FloatTensor<Self>;
    /// `act(GroupNorm(x) · mul + add)` for `x: [b, c, h, w]`, `mul, add: [b, c]`.
    fn norm_act(
        x: FloatTensor<Self>,
        mul: FloatTensor<Self>,
        add: FloatTensor<Self>,
        groups: usize,
        eps: f32,
        kind: u32,
        slope: f32,
    ) -> FloatTensor<Self>;
    /// A ×2 resampling of `x: [b, c, h, w]` ([`Resample2x::code`]).
    fn resample2x(x: FloatTensor<Self>, kind: u32) -> FloatTensor<Self>;
    /// Depthwise k×k convolution (weight `[c, 1, k, k]`), stride 1, zero padding k/2, with bias.
    fn depthwise_same(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self>;
    /// LayerNorm over the channels of `x: [b, c, h, w]` at each pixel, then `· weight + bias`
    /// (`[c]` each); `centred` 0: Restormer's bias-free `x/σ`.
    fn channel_norm(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        eps: f32,
        centred: u32,
    ) -> FloatTensor<Self>;
    /// `shadow · a + theta · b`, element-wise over equal shapes, in place where `shadow` owns
    /// its buffer (the weight average's update; never differentiated).
    fn blend(shadow: FloatTensor<Self>, theta: FloatTensor<Self>, a: f32, b: f32) -> FloatTensor<Self>;
}

impl Resample2x {
    fn code(self) -> u32 {
        match self {
            Resample2x::Bilinear => 0,
            Resample2x::Nearest => 1,
            Resample2x::AvgPool => 2,
            Resample2x::BilinearAligned => 3,
        }
    }

    fn from_code(kind: u32) -> Resample2x {
        match kind {
            0 => Resample2x::Bilinear,
            1 => Resample2x::Nearest,
            3 => Resample2x::BilinearAligned,
            _ => Resample2x::AvgPool,
        }
    }
}

impl Act {
    fn code(self) -> (u32, f32) {
        match self {
            Act::Identity => (0, 0.0),
            Act::Silu => (1, 0.0),
            Act::LeakyRelu(a) => (2, a),
        }
    }

    fn from_code(kind: u32, slope: f32) -> Act {
        match kind {
            1 => Act::Silu,
            2 => Act::LeakyRelu(slope),
            _ => Act::Identity,
        }
    }
}

thread_local! {
    /// Route this thread's calls through burn's own ops: the kernels' reference, for tests
    /// that compare whole networks both ways.
    static PLAIN_OPS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run `f` with the kernels off on this thread (burn's ops everywhere).
#[cfg(test)]
pub(crate) fn with_plain_ops<R>(f: impl FnOnce() -> R) -> R {
    PLAIN_OPS.with(|p| p.set(true));
    let r = f();
    PLAIN_OPS.with(|p| p.set(false));
    r
}

/// Can the kernels here take this tensor (flex device, f32)? (Also the fused optimiser's test.)
pub(crate) fn fast_path<const D: usize>(x: &Tensor<D>) -> bool {
    x.dtype() == DType::F32 && x.device() == Device::flex() && !PLAIN_OPS.with(|p| p.get())
}

/// `layer.forward(x)`, through [`KernelOps::conv_same`] where it applies (flex, f32, stride 1,
/// "same" padding, one group).
pub(crate) fn conv(layer: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    conv_then(layer, x, Act::Identity)
}

/// `leaky_relu(layer.forward(x), slope)`: one fused kernel on flex for inference (the
/// activation applied to each band of the output while it is in cache).
pub(crate) fn conv_leaky_relu(layer: &Conv2d, x: Tensor<4>, slope: f64) -> Tensor<4> {
    conv_then(layer, x, Act::LeakyRelu(slope as f32))
}

fn conv_then(layer: &Conv2d, x: Tensor<4>, act: Act) -> Tensor<4> {
    let [k0, k1] = layer.kernel_size;
    let same = matches!(layer.padding, PaddingConfig2d::Explicit(t, l, b, r) if t == k0 / 2 && b == k0 / 2 && l == k1 / 2 && r == k1 / 2);
    let channels = x.dims()[1];
    let [co, per_group, _, _] = layer.weight.dims();
    // One group (a plain convolution), or one filter per channel (depthwise).
    let depthwise = layer.groups == channels && co == channels && per_group == 1 && act == Act::Identity;
    let covered = k0 == k1
        && k0 % 2 == 1
        && same
        && layer.stride == [1, 1]
        && layer.dilation == [1, 1]
        && (layer.groups == 1 || depthwise)
        && fast_path(&x);
    if covered {
        let w = layer.weight.val();
        // A convolution without bias (Restormer's, NAFNet's up-convs) takes a zero bias.
        let b = match &layer.bias {
            Some(bias) => bias.val(),
            None => Tensor::zeros([w.dims()[0]], &w.device()),
        };
        // The kernel reads f32 parameters too (a cast module with an f32 input falls back).
        if w.dtype() == DType::F32 && b.dtype() == DType::F32 {
            let (x, w, b) = (x.into_dispatch(), w.into_dispatch(), b.into_dispatch());
            return Tensor::from_dispatch(match act {
                _ if depthwise => <Dispatch as KernelOps>::depthwise_same(x, w, b),
                Act::Identity => <Dispatch as KernelOps>::conv_same(x, w, b),
                act => {
                    let (kind, slope) = act.code();
                    <Dispatch as KernelOps>::conv_same_act(x, w, b, kind, slope)
                }
            });
        }
    }
    match act {
        Act::Identity => layer.forward(x),
        Act::Silu => burn::tensor::activation::silu(layer.forward(x)),
        Act::LeakyRelu(a) => burn::tensor::activation::leaky_relu(layer.forward(x), a as f64),
    }
}

fn activation<const D: usize>(x: Tensor<D>, act: Act) -> Tensor<D> {
    let (kind, slope) = act.code();
    Tensor::from_dispatch(<Dispatch as KernelOps>::activation(x.into_dispatch(), kind, slope))
}

/// SiLU: one fused pass on flex (f32), burn's `silu` elsewhere.
pub(crate) fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if fast_path(&x) { activation(x, Act::Silu) } else { burn::tensor::activation::silu(x) }
}

/// LeakyReLU: one fused pass on flex (f32), burn's `leaky_relu` elsewhere. (The networks use
/// [`conv_leaky_relu`]; kept as the activation kernel's own entry, tested against burn.)
#[cfg(test)]
pub(crate) fn leaky_relu<const D: usize>(x: Tensor<D>, slope: f64) -> Tensor<D> {
    if fast_path(&x) {
        activation(x, Act::LeakyRelu(slope as f32))
    } else {
        burn::tensor::activation::leaky_relu(x, slope)
    }
}

/// A ×2 resampling through the kernel, or `None` where it does not apply (not flex f32, or an
/// odd size to pool): the caller then uses burn's ops.
fn resample2x(x: Tensor<4>, kind: Resample2x) -> Result<Tensor<4>, Tensor<4>> {
    let [_, _, h, w] = x.dims();
    if !fast_path(&x) || (kind == Resample2x::AvgPool && (h % 2 != 0 || w % 2 != 0)) {
        return Err(x);
    }
    Ok(Tensor::from_dispatch(<Dispatch as KernelOps>::resample2x(x.into_dispatch(), kind.code())))
}

/// Bilinear ×2 up-sampling (`align_corners = false`) through the kernel on flex (f32).
pub(crate) fn upsample2x_bilinear(x: Tensor<4>) -> Result<Tensor<4>, Tensor<4>> {
    resample2x(x, Resample2x::Bilinear)
}

/// Bilinear ×2 up-sampling (`align_corners = true`) through the kernel on flex (f32).
pub(crate) fn upsample2x_bilinear_aligned(x: Tensor<4>) -> Result<Tensor<4>, Tensor<4>> {
    resample2x(x, Resample2x::BilinearAligned)
}

/// Nearest ×2 up-sampling through the kernel on flex (f32).
pub(crate) fn upsample2x_nearest(x: Tensor<4>) -> Result<Tensor<4>, Tensor<4>> {
    resample2x(x, Resample2x::Nearest)
}

/// 2×2 average pooling: the kernel on flex (f32, even sizes), burn's `avg_pool2d` elsewhere.
pub(crate) fn avg_pool2x(x: Tensor<4>) -> Tensor<4> {
    resample2x(x, Resample2x::AvgPool)
        .unwrap_or_else(|x| burn::tensor::module::avg_pool2d(x, burn::tensor::ops::AvgPoolOptions::new([2, 2])))
}

/// `shadow · decay + theta · (1 − decay)` (the scalars rounded to f32, as burn's scalar ops
/// do): one parallel pass in place on flex (f32); burn's three ops elsewhere.
pub(crate) fn blend<const D: usize>(shadow: Tensor<D>, theta: Tensor<D>, decay: f64) -> Tensor<D> {
    if fast_path(&shadow) && fast_path(&theta) && shadow.dims() == theta.dims() {
        let (a, b) = (decay as f32, (1.0 - decay) as f32);
        Tensor::from_dispatch(<Dispatch as KernelOps>::blend(shadow.into_dispatch(), theta.into_dispatch(), a, b))
    } else {
        shadow * decay + theta * (1.0 - decay)
    }
}

/// LayerNorm over the channels at each pixel, `· weight + bias` (no bias: Restormer's
/// bias-free `x/σ · weight`): one kernel each way on flex (f32); `Err(x)` elsewhere, for the
/// caller's composition of burn ops.
pub(crate) fn channel_norm(
    x: Tensor<4>,
    weight: Tensor<1>,
    bias: Option<Tensor<1>>,
    eps: f64,
) -> Result<Tensor<4>, Tensor<4>> {
    if !fast_path(&x) || weight.dtype() != DType::F32 || bias.as_ref().is_some_and(|b| b.dtype() != DType::F32) {
        return Err(x);
    }
    let centred = u32::from(bias.is_some());
    let bias = bias.unwrap_or_else(|| Tensor::zeros(weight.dims(), &weight.device()));
    Ok(Tensor::from_dispatch(<Dispatch as KernelOps>::channel_norm(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        eps as f32,
        centred,
    )))
}

/// GroupNorm with the module's own γ, β, then (optionally) a per-sample FiLM scale-shift
/// `x·(1 + scale) + shift`, then (optionally) SiLU. On flex (f32): one kernel each way, the
/// affine parts folded into one per-(sample, channel) multiply-add. Elsewhere:
/// [`group_norm_film_ops`], then burn's SiLU.
pub(crate) fn group_norm_act(
    norm: &GroupNorm,
    x: Tensor<4>,
    film: Option<(Tensor<4>, Tensor<4>)>,
    silu_after: bool,
) -> Tensor<4> {
    // The kernel reads f32 affine terms too (cast γ/β or FiLM with an f32 input fall back).
    let affine_f32 = norm.gamma.as_ref().is_none_or(|g| g.val().dtype() == DType::F32)
        && film.as_ref().is_none_or(|(s, t)| s.dtype() == DType::F32 && t.dtype() == DType::F32);
    if !fast_path(&x) || !affine_f32 {
        let y = group_norm_film_ops(norm, x, film);
        return if silu_after { burn::tensor::activation::silu(y) } else { y };
    }
    let [b, c, _, _] = x.dims();
    let (mul, add) = folded_affine(norm, b, c, &x.device(), film);
    let act = if silu_after { Act::Silu } else { Act::Identity };
    let (kind, slope) = act.code();
    Tensor::from_dispatch(<Dispatch as KernelOps>::norm_act(
        x.into_dispatch(),
        mul.into_dispatch(),
        add.into_dispatch(),
        norm.num_groups,
        norm.epsilon as f32,
        kind,
        slope,
    ))
}

/// γ·(1 + scale) and β·(1 + scale) + shift per (sample, channel), `[b, c]` each.
fn folded_affine(
    norm: &GroupNorm,
    b: usize,
    c: usize,
    device: &Device,
    film: Option<(Tensor<4>, Tensor<4>)>,
) -> (Tensor<2>, Tensor<2>) {
    let (gamma, beta) = match (&norm.gamma, &norm.beta) {
        (Some(g), Some(bt)) => (g.val().reshape([1, c]), bt.val().reshape([1, c])),
        _ => (Tensor::ones([1, c], device), Tensor::zeros([1, c], device)),
    };
    match film {
        Some((scale, shift)) => {
            let s1 = scale.reshape([b, c]) + 1.0;
            (gamma * s1.clone(), beta * s1 + shift.reshape([b, c]))
        }
        None => (gamma.expand([b, c]), beta.expand([b, c])),
    }
}

/// [`group_norm_act`]'s normalisation from burn's primitives (every back-end): the affine
/// parts folded into one per-(sample, channel) multiply-add, four passes over the feature map
/// (centre, square, scale, shift) where burn's GroupNorm then FiLM take seven. Equal to
/// `GroupNorm::forward` then FiLM up to float rounding (tested).
pub(crate) fn group_norm_film_ops(norm: &GroupNorm, x: Tensor<4>, film: Option<(Tensor<4>, Tensor<4>)>) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let g = norm.num_groups;
    let xg = x.reshape([b, g, (c / g) * h * w]);
    let centred = xg.clone() - xg.mean_dim(2);
    let rstd = (centred.clone().square().mean_dim(2) + norm.epsilon).sqrt().recip();
    // Per (sample, channel): the group's 1/σ times γ (times 1 + scale), and β (then FiLM).
    let rstd = rstd.expand([b, g, c / g]).reshape([b, c]);
    let (mul, add) = folded_affine(norm, b, c, &centred.device(), film);
    centred.reshape([b, c, h, w]) * (rstd * mul).reshape([b, c, 1, 1]) + add.reshape([b, c, 1, 1])
}

// ---------------------------------------------------------------------------------------------
// flex: the forward kernels

fn shape_of(t: &FlexTensor) -> Vec<usize> {
    t.shape().to_vec()
}

/// Contiguous f32 view (copies only when the layout is not contiguous).
fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.as_slice::<f32>().is_some() { t } else { t.to_contiguous() }
}

fn slice(t: &FlexTensor) -> &[f32] {
    t.as_slice().expect("made contiguous f32 by `contiguous`")
}

fn flex_tensor(data: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(data, shape))
}

fn conv_geometry(x: &FlexTensor, weight: &FlexTensor) -> Geometry {
    let ([b, ci, h, w], [co, _, k, _]) = (x.shape().dims(), weight.shape().dims());
    Geometry { b, ci, co, h, w, k }
}

fn norm_shape(x: &FlexTensor, groups: usize, eps: f32) -> NormShape {
    let [b, c, h, w] = x.shape().dims();
    NormShape { b, c, hw: h * w, groups, eps }
}

impl KernelOps for Flex {
    fn conv_same(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
        let (kind, slope) = Act::Identity.code();
        Self::conv_same_act(x, weight, bias, kind, slope)
    }

    fn conv_same_act(x: FlexTensor, weight: FlexTensor, bias: FlexTensor, kind: u32, slope: f32) -> FlexTensor {
        let g = conv_geometry(&x, &weight);
        let (x, weight, bias) = (contiguous(x), contiguous(weight), contiguous(bias));
        let act = Act::from_code(kind, slope);
        flex_tensor(conv::conv_forward(slice(&x), slice(&weight), slice(&bias), g, act), vec![g.b, g.co, g.h, g.w])
    }

    fn activation(x: FlexTensor, kind: u32, slope: f32) -> FlexTensor {
        let shape = shape_of(&x);
        let x = contiguous(x);
        flex_tensor(pointwise::forward(slice(&x), Act::from_code(kind, slope)), shape)
    }

    fn norm_act(
        x: FlexTensor,
        mul: FlexTensor,
        add: FlexTensor,
        groups: usize,
        eps: f32,
        kind: u32,
        slope: f32,
    ) -> FlexTensor {
        let (shape, s) = (shape_of(&x), norm_shape(&x, groups, eps));
        let (x, mul, add) = (contiguous(x), contiguous(mul), contiguous(add));
        flex_tensor(norm::forward(slice(&x), slice(&mul), slice(&add), s, Act::from_code(kind, slope)), shape)
    }

    fn resample2x(x: FlexTensor, kind: u32) -> FlexTensor {
        let [b, c, h, w] = x.shape().dims();
        let kind = Resample2x::from_code(kind);
        let (oh, ow) = kind.out_size(h, w);
        let x = contiguous(x);
        flex_tensor(resample::forward(slice(&x), b * c, h, w, kind), vec![b, c, oh, ow])
    }

    fn depthwise_same(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
        let (shape, s) = (shape_of(&x), depth_shape(&x, &weight));
        let (x, weight, bias) = (contiguous(x), contiguous(weight), contiguous(bias));
        flex_tensor(depthwise::forward(slice(&x), slice(&weight), slice(&bias), s), shape)
    }

    fn channel_norm(x: FlexTensor, weight: FlexTensor, bias: FlexTensor, eps: f32, centred: u32) -> FlexTensor {
        let (shape, s) = (shape_of(&x), channel_shape(&x, eps, centred));
        let (x, weight, bias) = (contiguous(x), contiguous(weight), contiguous(bias));
        flex_tensor(channel_norm::forward(slice(&x), slice(&weight), slice(&bias), s), shape)
    }

    fn blend(shadow: FlexTensor, theta: FlexTensor, a: f32, b: f32) -> FlexTensor {
        let theta = contiguous(theta);
        let mut shadow = contiguous(shadow);
        let n = shadow.shape().num_elements();
        let whole = shadow.layout().contiguous_offsets() == Some((0, n));
        match shadow.try_storage_mut::<f32>() {
            Some(s) if whole && s.len() == n => {
                pointwise::blend(s, slice(&theta), a, b);
                shadow
            }
            _ => {
                let mut s = slice(&shadow).to_vec();
                pointwise::blend(&mut s, slice(&theta), a, b);
                flex_tensor(s, shape_of(&shadow))
            }
        }
    }
}

fn depth_shape(x: &FlexTensor, weight: &FlexTensor) -> DepthShape {
    let ([b, c, h, w], [_, _, k, _]) = (x.shape().dims(), weight.shape().dims());
    DepthShape { b, c, h, w, k }
}

fn channel_shape(x: &FlexTensor, eps: f32, centred: u32) -> ChannelShape {
    let [b, c, h, w] = x.shape().dims();
    ChannelShape { b, c, hw: h * w, eps, centred: centred != 0 }
}

// ---------------------------------------------------------------------------------------------
// Autodiff<Flex>: the same forward, our backward

/// The gradients of an op's input (when asked), weight and bias, shaped.
type WeightedGrads = (Option<FlexTensor>, FlexTensor, FlexTensor);

/// The backward of `y = f(x, weight, bias)` whose kernel gives all three gradients from the
/// saved input and weight and the output gradient (the convolutions).
#[derive(Debug)]
struct WeightedBackward(fn(&FlexTensor, &FlexTensor, &FlexTensor, bool) -> WeightedGrads);

impl Backward<Flex, 3> for WeightedBackward {
    type State = (NodeId, NodeId);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let grad = contiguous(grads.consume::<Flex>(&ops.node));
        let (x, weight) = (saved(checkpointer, ops.state.0), saved(checkpointer, ops.state.1));
        let (gx, gw, gb) = (self.0)(&x, &weight, &grad, node_x.is_some());
        if let (Some(node), Some(gx)) = (node_x, gx) {
            grads.register::<Flex>(node.id, gx);
        }
        if let Some(node) = node_w {
            grads.register::<Flex>(node.id, gw);
        }
        if let Some(node) = node_b {
            grads.register::<Flex>(node.id, gb);
        }
    }
}

/// `forward(x, weight, bias)` on flex, tracked under autodiff with `backward` (x and the
/// weight saved for it).
fn weighted_op<C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<Flex, C>>,
    weight: FloatTensor<Autodiff<Flex, C>>,
    bias: FloatTensor<Autodiff<Flex, C>>,
    backward: WeightedBackward,
    forward: fn(FlexTensor, FlexTensor, FlexTensor) -> FlexTensor,
) -> FloatTensor<Autodiff<Flex, C>> {
    match backward.prepare::<C>([x.node(), weight.node(), bias.node()]).compute_bound().stateful() {
        OpsKind::Tracked(mut prep) => {
            let state = (prep.checkpoint(&x), prep.checkpoint(&weight));
            prep.finish(state, forward(x.into_primitive(), weight.into_primitive(), bias.into_primitive()))
        }
        OpsKind::UnTracked(prep) => {
            prep.finish(forward(x.into_primitive(), weight.into_primitive(), bias.into_primitive()))
        }
    }
}

/// [`WeightedBackward`]'s kernel for [`KernelOps::conv_same`].
fn conv_grads(x: &FlexTensor, weight: &FlexTensor, grad: &FlexTensor, want_dx: bool) -> WeightedGrads {
    let g = conv_geometry(x, weight);
    let (gx, gw, gb) = conv::conv_backward(slice(x), slice(weight), slice(grad), g, want_dx);
    (
        gx.map(|v| flex_tensor(v, vec![g.b, g.ci, g.h, g.w])),
        flex_tensor(gw, vec![g.co, g.ci, g.k, g.k]),
        flex_tensor(gb, vec![g.co]),
    )
}

/// [`WeightedBackward`]'s kernel for [`KernelOps::depthwise_same`].
fn depthwise_grads(x: &FlexTensor, weight: &FlexTensor, grad: &FlexTensor, want_dx: bool) -> WeightedGrads {
    let s = depth_shape(x, weight);
    let (gx, gw, gb) = depthwise::backward(slice(x), slice(weight), slice(grad), s, want_dx);
    (gx.map(|v| flex_tensor(v, shape_of(x))), flex_tensor(gw, vec![s.c, 1, s.k, s.k]), flex_tensor(gb, vec![s.c]))
}

/// The saved input of a tracked op, read back as a contiguous flex tensor.
fn saved(checkpointer: &mut Checkpointer, id: NodeId) -> FlexTensor {
    contiguous(checkpointer.retrieve_node_output::<FlexTensor>(id))
}

impl<C: CheckpointStrategy> KernelOps for Autodiff<Flex, C> {
    fn blend(shadow: FloatTensor<Self>, theta: FloatTensor<Self>, a: f32, b: f32) -> FloatTensor<Self> {
        // The weight average is never differentiated: an untracked result.
        FloatTensor::<Self>::new(Flex::blend(shadow.into_primitive(), theta.into_primitive(), a, b))
    }

    fn conv_same(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        weighted_op::<C>(x, weight, bias, WeightedBackward(conv_grads), Flex::conv_same)
    }

    fn conv_same_act(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        kind: u32,
        slope: f32,
    ) -> FloatTensor<Self> {
        // The backward of each op needs its own input: two tracked ops, as before fusing.
        Self::activation(Self::conv_same(x, weight, bias), kind, slope)
    }

    fn activation(x: FloatTensor<Self>, kind: u32, slope: f32) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct ActivationBackward;

        impl Backward<Flex, 1> for ActivationBackward {
            type State = (NodeId, Act);

            fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
                let [node_x] = ops.parents;
                let grad = contiguous(grads.consume::<Flex>(&ops.node));
                let x = saved(checkpointer, ops.state.0);
                let Some(node) = node_x else { return };
                let dx = pointwise::backward(slice(&x), slice(&grad), ops.state.1);
                grads.register::<Flex>(node.id, flex_tensor(dx, shape_of(&x)));
            }
        }

        match ActivationBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let state = (prep.checkpoint(&x), Act::from_code(kind, slope));
                prep.finish(state, Flex::activation(x.into_primitive(), kind, slope))
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::activation(x.into_primitive(), kind, slope)),
        }
    }

    fn norm_act(
        x: FloatTensor<Self>,
        mul: FloatTensor<Self>,
        add: FloatTensor<Self>,
        groups: usize,
        eps: f32,
        kind: u32,
        slope: f32,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct NormActBackward;

        impl Backward<Flex, 3> for NormActBackward {
            type State = (NodeId, NodeId, NodeId, usize, f32, Act);

            fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
                let [node_x, node_mul, node_add] = ops.parents;
                let grad = contiguous(grads.consume::<Flex>(&ops.node));
                let (x_id, mul_id, add_id, groups, eps, act) = ops.state;
                let (x, mul, add) =
                    (saved(checkpointer, x_id), saved(checkpointer, mul_id), saved(checkpointer, add_id));
                let s = norm_shape(&x, groups, eps);
                let (dx, dmul, dadd) = norm::backward(slice(&x), slice(&mul), slice(&add), slice(&grad), s, act);
                if let Some(node) = node_x {
                    grads.register::<Flex>(node.id, flex_tensor(dx, shape_of(&x)));
                }
                if let Some(node) = node_mul {
                    grads.register::<Flex>(node.id, flex_tensor(dmul, vec![s.b, s.c]));
                }
                if let Some(node) = node_add {
                    grads.register::<Flex>(node.id, flex_tensor(dadd, vec![s.b, s.c]));
                }
            }
        }

        let forward = |x: Self::FloatTensorPrimitive, m: Self::FloatTensorPrimitive, a: Self::FloatTensorPrimitive| {
            Flex::norm_act(x.into_primitive(), m.into_primitive(), a.into_primitive(), groups, eps, kind, slope)
        };
        match NormActBackward.prepare::<C>([x.node(), mul.node(), add.node()]).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let act = Act::from_code(kind, slope);
                let state = (prep.checkpoint(&x), prep.checkpoint(&mul), prep.checkpoint(&add), groups, eps, act);
                prep.finish(state, forward(x, mul, add))
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(x, mul, add)),
        }
    }

    fn resample2x(x: FloatTensor<Self>, kind: u32) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct ResampleBackward;

        impl Backward<Flex, 1> for ResampleBackward {
            /// The input's `[b, c, h, w]` and the resampling: the backward needs no values.
            type State = ([usize; 4], Resample2x);

            fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
                let [node_x] = ops.parents;
                let grad = contiguous(grads.consume::<Flex>(&ops.node));
                let ([b, c, h, w], kind) = ops.state;
                let Some(node) = node_x else { return };
                let dx = resample::backward(slice(&grad), b * c, h, w, kind);
                grads.register::<Flex>(node.id, flex_tensor(dx, vec![b, c, h, w]));
            }
        }

        match ResampleBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let state = (x.primitive().shape().dims(), Resample2x::from_code(kind));
                prep.finish(state, Flex::resample2x(x.into_primitive(), kind))
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::resample2x(x.into_primitive(), kind)),
        }
    }

    fn depthwise_same(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        weighted_op::<C>(x, weight, bias, WeightedBackward(depthwise_grads), Flex::depthwise_same)
    }

    fn channel_norm(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        eps: f32,
        centred: u32,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct ChannelNormBackward;

        impl Backward<Flex, 3> for ChannelNormBackward {
            /// The input and the weight (the statistics are recomputed), ε and the form.
            type State = (NodeId, NodeId, f32, u32);

            fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
                let [node_x, node_w, node_b] = ops.parents;
                let grad = contiguous(grads.consume::<Flex>(&ops.node));
                let (x, weight) = (saved(checkpointer, ops.state.0), saved(checkpointer, ops.state.1));
                let s = channel_shape(&x, ops.state.2, ops.state.3);
                let (dx, dw, db) = channel_norm::backward(slice(&x), slice(&weight), slice(&grad), s);
                if let Some(node) = node_x {
                    grads.register::<Flex>(node.id, flex_tensor(dx, shape_of(&x)));
                }
                if let Some(node) = node_w {
                    grads.register::<Flex>(node.id, flex_tensor(dw, vec![s.c]));
                }
                if let Some(node) = node_b {
                    grads.register::<Flex>(node.id, flex_tensor(db, vec![s.c]));
                }
            }
        }

        let forward = |x: Self::FloatTensorPrimitive, w: Self::FloatTensorPrimitive, b: Self::FloatTensorPrimitive| {
            Flex::channel_norm(x.into_primitive(), w.into_primitive(), b.into_primitive(), eps, centred)
        };
        match ChannelNormBackward.prepare::<C>([x.node(), weight.node(), bias.node()]).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let state = (prep.checkpoint(&x), prep.checkpoint(&weight), eps, centred);
                prep.finish(state, forward(x, weight, bias))
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(x, weight, bias)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use burn::module::Param;
    use burn::tensor::Tensor;

    fn data(rng: &mut Rng, shape: Vec<usize>, sd: f64) -> TensorData {
        let n = shape.iter().product::<usize>();
        TensorData::new((0..n).map(|_| (sd * rng.normal()) as f32).collect::<Vec<_>>(), shape)
    }

    fn vals<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    /// Largest difference relative to the largest magnitude of the reference.
    fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        a.iter().zip(b).map(|(p, q)| (p - q).abs()).fold(0.0, f32::max) / scale
    }

    /// The weight average's blend equals burn's `s · d + t · (1 − d)` bit for bit, whether the
    /// shadow owns its buffer (updated in place) or shares it (copied first, the sharer kept).
    #[test]
    fn blend_matches_burn_in_place_and_shared() {
        let mut rng = Rng::new(3);
        let dev = Device::flex();
        for n in [5, 100_003] {
            let s = Tensor::<1>::from_data(data(&mut rng, vec![n], 1.0), &dev);
            let t = Tensor::<1>::from_data(data(&mut rng, vec![n], 1.0), &dev);
            let reference = vals(with_plain_ops(|| blend(s.clone(), t.clone(), 0.9999)));
            let before = vals(s.clone());
            // `s` is shared by the clone here: the result is new and `s` unchanged.
            assert_eq!(vals(blend(s.clone(), t.clone(), 0.9999)), reference);
            assert_eq!(vals(s.clone()), before);
            // Owned alone: in place.
            let owned = Tensor::<1>::from_data(TensorData::new(before.clone(), [n]), &dev);
            assert_eq!(vals(blend(owned, t.clone(), 0.9999)), reference);
            assert_ne!(reference, before);
        }
    }

    /// Our convolution equals burn's (flex's own kernels) in value and in the gradients of the
    /// input, weight and bias, for 3×3 and 1×1 kernels on non-square images, in training
    /// (autodiff) and in inference.
    #[test]
    fn conv_matches_burn_forward_and_backward() {
        let mut rng = Rng::new(5);
        // Batches of 1 run the images in sequence with a parallel gemm, larger ones in parallel.
        for (nb, k, ci, co, h, w) in [
            (3, 3, 5, 7, 6, 9),
            (3, 1, 6, 4, 5, 3),
            (4, 3, 9, 16, 8, 8),
            (1, 3, 9, 16, 8, 8),
            (1, 1, 6, 4, 5, 3),
            (3, 3, 2, 3, 1, 4),
            // Winograd (≥ 16 channels each side, ≥ 64²): odd sizes, both gradients; and a layer
            // with one side too narrow for it.
            (3, 3, 16, 17, 64, 66),
            (1, 3, 20, 16, 65, 63),
            (2, 3, 17, 5, 6, 6),
        ] {
            let dev = Device::flex().autodiff();
            let mut layer = super::super::init::conv(ci, co, k, &dev);
            layer.weight = Param::from_tensor(Tensor::from_data(data(&mut rng, vec![co, ci, k, k], 0.3), &dev));
            layer.bias = Some(Param::from_tensor(Tensor::from_data(data(&mut rng, vec![co], 0.5), &dev)));
            let x = Tensor::<4>::from_data(data(&mut rng, vec![nb, ci, h, w], 1.0), &dev).require_grad();
            let r = Tensor::<4>::from_data(data(&mut rng, vec![nb, co, h, w], 1.0), &dev);
            let run = |fast: bool| {
                let y = if fast { conv(&layer, x.clone()) } else { layer.forward(x.clone()) };
                let grads = (y.clone() * r.clone()).sum().backward();
                let gx = vals(x.grad(&grads).unwrap());
                let gw = vals(layer.weight.val().grad(&grads).unwrap());
                let gb = vals(layer.bias.as_ref().unwrap().val().grad(&grads).unwrap());
                (vals(y), gx, gw, gb)
            };
            let (a, b) = (run(true), run(false));
            let what = format!("batch {nb} k{k} {ci}→{co} {h}×{w}");
            assert!(rel_diff(&a.0, &b.0) < 1e-5, "{what}: value {}", rel_diff(&a.0, &b.0));
            assert!(rel_diff(&a.1, &b.1) < 1e-5, "{what}: d/dx {}", rel_diff(&a.1, &b.1));
            assert!(rel_diff(&a.2, &b.2) < 1e-5, "{what}: d/dw {}", rel_diff(&a.2, &b.2));
            assert!(rel_diff(&a.3, &b.3) < 1e-5, "{what}: d/db {}", rel_diff(&a.3, &b.3));

            // Inference (no autodiff): the plain flex kernel.
            let plain = Device::flex();
            let mut l2 = super::super::init::conv(ci, co, k, &plain);
            l2.weight = Param::from_tensor(Tensor::from_data(layer.weight.val().into_data(), &plain));
            l2.bias =
                Some(Param::from_tensor(Tensor::from_data(layer.bias.as_ref().unwrap().val().into_data(), &plain)));
            let xp = Tensor::<4>::from_data(x.clone().into_data(), &plain);
            let d = rel_diff(&vals(conv(&l2, xp.clone())), &vals(l2.forward(xp)));
            assert!(d < 1e-5, "{what}: inference value {d}");
        }
    }

    /// Channel LayerNorm equals its burn composition (NAFNet's and Restormer's), with and
    /// without bias (the bias-free `x/σ` form), in value and in the input, weight and bias
    /// gradients; images of more than one pixel block, and a pixel count not a multiple of it.
    #[test]
    fn channel_norm_matches_burn() {
        let mut rng = Rng::new(17);
        for (b, c, h, w, with_bias) in [(2, 6, 5, 7, true), (1, 24, 30, 40, true), (2, 9, 23, 31, false)] {
            let dev = Device::flex().autodiff();
            let x = Tensor::<4>::from_data(data(&mut rng, vec![b, c, h, w], 1.5), &dev).require_grad();
            let wt = Tensor::<1>::from_data(data(&mut rng, vec![c], 1.0), &dev).require_grad();
            let bias = Tensor::<1>::from_data(data(&mut rng, vec![c], 1.0), &dev).require_grad();
            let r = Tensor::<4>::from_data(data(&mut rng, vec![b, c, h, w], 1.0), &dev);
            let eps = 1e-6;
            let reference = |x: Tensor<4>| {
                let mean = x.clone().mean_dim(1);
                let centred = x.clone() - mean;
                let inv = (centred.clone().powi_scalar(2).mean_dim(1) + eps).sqrt().recip();
                let wv = wt.clone().reshape([1, c, 1, 1]);
                if with_bias { centred * inv * wv + bias.clone().reshape([1, c, 1, 1]) } else { x * inv * wv }
            };
            let run = |y: Tensor<4>| {
                let grads = (y.clone() * r.clone()).sum().backward();
                let mut out = vec![vals(y), vals(x.grad(&grads).unwrap()), vals(wt.grad(&grads).unwrap())];
                if with_bias {
                    out.push(vals(bias.grad(&grads).unwrap()));
                }
                out
            };
            let ours = run(channel_norm(x.clone(), wt.clone(), with_bias.then(|| bias.clone()), eps)
                .expect("flex f32 takes the kernel"));
            let theirs = run(reference(x.clone()));
            for (k, (a, t)) in ours.iter().zip(&theirs).enumerate() {
                assert!(rel_diff(a, t) < 1e-5, "{b}×{c}×{h}×{w} bias {with_bias}: part {k} off by {}", rel_diff(a, t));
            }
        }
    }

    /// The depthwise convolution (one filter per channel) equals burn's grouped convolution in
    /// value and in the input, weight and bias gradients: 3×3 and 5×5, with and without bias,
    /// one row, odd sizes, batches.
    #[test]
    fn depthwise_matches_burn() {
        let mut rng = Rng::new(23);
        for (nb, c, k, h, w, bias) in [(2, 6, 3, 7, 9, true), (1, 8, 3, 1, 5, false), (3, 4, 5, 6, 4, true)] {
            let dev = Device::flex().autodiff();
            let mut layer = super::super::init::conv(c, c, k, &dev);
            layer.groups = c;
            layer.weight = Param::from_tensor(Tensor::from_data(data(&mut rng, vec![c, 1, k, k], 0.3), &dev));
            layer.bias = bias.then(|| Param::from_tensor(Tensor::from_data(data(&mut rng, vec![c], 0.5), &dev)));
            let x = Tensor::<4>::from_data(data(&mut rng, vec![nb, c, h, w], 1.0), &dev).require_grad();
            let r = Tensor::<4>::from_data(data(&mut rng, vec![nb, c, h, w], 1.0), &dev);
            let run = |fast: bool| {
                let y = if fast { conv(&layer, x.clone()) } else { layer.forward(x.clone()) };
                let grads = (y.clone() * r.clone()).sum().backward();
                let mut out =
                    vec![vals(y), vals(x.grad(&grads).unwrap()), vals(layer.weight.val().grad(&grads).unwrap())];
                if let Some(b) = &layer.bias {
                    out.push(vals(b.val().grad(&grads).unwrap()));
                }
                out
            };
            let (a, b) = (run(true), run(false));
            for (i, (p, q)) in a.iter().zip(&b).enumerate() {
                assert!(rel_diff(p, q) < 1e-5, "{nb}×{c}×{h}×{w} k{k}: part {i} off by {}", rel_diff(p, q));
            }
        }
    }

    /// A layer the kernel does not cover (stride 2) goes through burn's convolution unchanged.
    #[test]
    fn conv_falls_back_outside_its_cover() {
        let dev = Device::flex();
        let mut layer = super::super::init::conv(3, 4, 3, &dev);
        layer.stride = [2, 2];
        let x = Tensor::<4>::from_data(data(&mut Rng::new(2), vec![1, 3, 8, 8], 1.0), &dev);
        assert_eq!(conv(&layer, x.clone()).dims(), [1, 4, 4, 4]);
        assert_eq!(vals(conv(&layer, x.clone())), vals(layer.forward(x)));
    }

    /// Fused SiLU equals burn's `x · sigmoid(x)` in value and gradient, including large |x|.
    #[test]
    fn silu_matches_burn_forward_and_backward() {
        let dev = Device::flex().autodiff();
        let mut rng = Rng::new(9);
        let mut d = data(&mut rng, vec![2, 3, 40, 50], 4.0);
        {
            let v = d.as_mut_slice::<f32>().unwrap();
            v[..6].copy_from_slice(&[-200.0, -90.0, -20.0, 20.0, 90.0, 200.0]);
        }
        let x = Tensor::<4>::from_data(d, &dev).require_grad();
        let r = Tensor::<4>::from_data(data(&mut rng, vec![2, 3, 40, 50], 1.0), &dev);
        let run = |fast: bool| {
            let y = if fast { silu(x.clone()) } else { burn::tensor::activation::silu(x.clone()) };
            let grads = (y.clone() * r.clone()).sum().backward();
            (vals(y), vals(x.grad(&grads).unwrap()))
        };
        let (a, b) = (run(true), run(false));
        for (p, q) in a.0.iter().zip(&b.0).chain(a.1.iter().zip(&b.1)) {
            assert!(p.is_finite());
            assert!((p - q).abs() <= 2e-6 * (1.0 + q.abs()), "{p} vs {q}");
        }
    }

    /// GroupNorm + FiLM + SiLU three ways — our kernel (flex), the folded burn composition
    /// (other back-ends) and burn's `GroupNorm::forward`, the scale-shift and burn's `silu` —
    /// agree in value and in the gradients of the input, γ, β and the FiLM terms, with and
    /// without FiLM and SiLU, on a map whose size is not a multiple of the kernel's 8 lanes.
    #[test]
    fn group_norm_act_matches_burn() {
        let dev = Device::flex().autodiff();
        let mut rng = Rng::new(17);
        let mut t = |shape: Vec<usize>, mean: f32, sd: f64| {
            let v: Vec<f32> = data(&mut rng, shape.clone(), sd).try_to_vec::<f32>().unwrap();
            TensorData::new(v.into_iter().map(|v| v + mean).collect::<Vec<_>>(), shape)
        };
        let mut norm = burn::nn::GroupNormConfig::new(4, 8).init(&dev);
        norm.gamma = Some(Param::from_tensor(Tensor::<1>::from_data(t(vec![8], 1.0, 0.3), &dev)));
        norm.beta = Some(Param::from_tensor(Tensor::<1>::from_data(t(vec![8], 0.0, 0.3), &dev)));
        let x = Tensor::<4>::from_data(t(vec![2, 8, 5, 7], 0.3, 2.0), &dev).require_grad();
        let scale = Tensor::<4>::from_data(t(vec![2, 8, 1, 1], 0.0, 0.5), &dev).require_grad();
        let shift = Tensor::<4>::from_data(t(vec![2, 8, 1, 1], 0.0, 0.5), &dev).require_grad();
        let r = Tensor::<4>::from_data(t(vec![2, 8, 5, 7], 0.5, 0.3), &dev);
        for (film, act) in [(false, false), (true, false), (false, true), (true, true)] {
            let run = |how: u8| {
                let ss = film.then(|| (scale.clone(), shift.clone()));
                let y = match (how, ss) {
                    (0, ss) => group_norm_act(&norm, x.clone(), ss, act),
                    (1, ss) => group_norm_film_ops(&norm, x.clone(), ss),
                    (_, Some((a, b))) => norm.forward(x.clone()) * (a + 1.0) + b,
                    (_, None) => norm.forward(x.clone()),
                };
                let y = if act && how != 0 { burn::tensor::activation::silu(y) } else { y };
                let grads = (y.clone() * r.clone()).sum().backward();
                let g = |p: &Tensor<1>| vals(p.grad(&grads).unwrap());
                let gx = vals(x.grad(&grads).unwrap());
                let gg = g(&norm.gamma.as_ref().unwrap().val());
                let gb = g(&norm.beta.as_ref().unwrap().val());
                let gs = if film {
                    [vals(scale.grad(&grads).unwrap()), vals(shift.grad(&grads).unwrap())].concat()
                } else {
                    vec![]
                };
                [vals(y), gx, gg, gb, gs]
            };
            let reference = run(2);
            for how in [0, 1] {
                for (i, (a, b)) in run(how).iter().zip(&reference).enumerate() {
                    let d = rel_diff(a, b);
                    assert!(d < 2e-5, "film {film} silu {act} way {how}: part {i} differs by {d}");
                }
            }
        }
    }

    /// LeakyReLU through the kernel equals burn's, value and gradient (training and inference).
    #[test]
    fn leaky_relu_matches_burn() {
        // Fused into the convolution (inference on flex, banded and 1×1): burn's conv then
        // leaky_relu in value. Under autodiff: the same value, and the gradient of our conv
        // then our leaky_relu (against burn's, a pre-activation within rounding of 0 could
        // take the other slope; `conv_matches_burn_forward_and_backward` covers the conv).
        for dev in [Device::flex(), Device::flex().autodiff()] {
            for (k, h, w) in [(3, 40, 700), (1, 9, 11)] {
                let mut rng = Rng::new(6);
                let layer = {
                    let _serial = crate::util::rng_lock();
                    dev.seed(6);
                    crate::networks::init::conv(64, 8, k, &dev)
                };
                let x = Tensor::<4>::from_data(data(&mut rng, vec![1, 64, h, w], 1.0), &dev);
                let x = if dev.is_autodiff() { x.require_grad() } else { x };
                let a = conv_leaky_relu(&layer, x.clone(), 0.2);
                let b = burn::tensor::activation::leaky_relu(layer.forward(x.clone()), 0.2);
                assert!(rel_diff(&vals(a.clone()), &vals(b)) < 1e-5, "k {k}");
                if dev.is_autodiff() {
                    let c = leaky_relu(conv(&layer, x.clone()), 0.2);
                    let ga = vals(x.grad(&a.sum().backward()).unwrap());
                    let gc = vals(x.grad(&c.sum().backward()).unwrap());
                    assert!(rel_diff(&ga, &gc) < 1e-6, "k {k}");
                }
            }
        }
        for dev in [Device::flex().autodiff(), Device::flex()] {
            let mut rng = Rng::new(4);
            let x = Tensor::<4>::from_data(data(&mut rng, vec![2, 3, 17, 19], 1.0), &dev);
            let x = if dev.is_autodiff() { x.require_grad() } else { x };
            let r = Tensor::<4>::from_data(data(&mut rng, vec![2, 3, 17, 19], 1.0), &dev);
            let a = leaky_relu(x.clone(), 0.2);
            let b = burn::tensor::activation::leaky_relu(x.clone(), 0.2);
            assert!(rel_diff(&vals(a.clone()), &vals(b.clone())) < 1e-6);
            if dev.is_autodiff() {
                let ga = vals(x.grad(&(a * r.clone()).sum().backward()).unwrap());
                let gb = vals(x.grad(&(b * r).sum().backward()).unwrap());
                assert!(rel_diff(&ga, &gb) < 1e-6);
            }
        }
    }

    /// The three ×2 resamplings equal burn's ops (flex's bilinear `interpolate`, nearest by
    /// reshape and expand, `avg_pool2d`) in value and in the input gradient; an odd size to
    /// pool falls back to burn.
    #[test]
    fn resampling_matches_burn() {
        use burn::tensor::module::{avg_pool2d, interpolate};
        use burn::tensor::ops::{AvgPoolOptions, InterpolateMode, InterpolateOptions};
        let dev = Device::flex().autodiff();
        let mut rng = Rng::new(8);
        let x = Tensor::<4>::from_data(data(&mut rng, vec![2, 3, 6, 10], 1.0), &dev).require_grad();
        let kinds: [(Resample2x, fn(Tensor<4>) -> Tensor<4>); 5] = [
            (Resample2x::Bilinear, |x| {
                let [_, _, h, w] = x.dims();
                let o = InterpolateOptions::new(InterpolateMode::Bilinear)
                    .with_align_corners(false)
                    .with_output_size([2 * h, 2 * w]);
                interpolate(x, o)
            }),
            (Resample2x::BilinearAligned, |x| {
                let [_, _, h, w] = x.dims();
                let o = InterpolateOptions::new(InterpolateMode::Bilinear)
                    .with_align_corners(true)
                    .with_output_size([2 * h, 2 * w]);
                interpolate(x, o)
            }),
            // The index-select form the other back-ends use.
            (Resample2x::BilinearAligned, |x| crate::networks::upsample2x_bilinear_ops_aligned(x)),
            (Resample2x::Nearest, |x| {
                let [b, c, h, w] = x.dims();
                x.reshape([b, c, h, 1, w, 1]).expand([b, c, h, 2, w, 2]).reshape([b, c, 2 * h, 2 * w])
            }),
            (Resample2x::AvgPool, |x| avg_pool2d(x, AvgPoolOptions::new([2, 2]))),
        ];
        for (kind, reference) in kinds {
            let (oh, ow) = kind.out_size(6, 10);
            let r = Tensor::<4>::from_data(data(&mut rng, vec![2, 3, oh, ow], 1.0), &dev);
            let run = |y: Tensor<4>| {
                let g = x.grad(&(y.clone() * r.clone()).sum().backward()).unwrap();
                (vals(y), vals(g))
            };
            let ours = run(resample2x(x.clone(), kind).expect("flex f32 takes the kernel"));
            let theirs = run(reference(x.clone()));
            assert!(rel_diff(&ours.0, &theirs.0) < 1e-6, "{kind:?}: value");
            assert!(rel_diff(&ours.1, &theirs.1) < 1e-6, "{kind:?}: gradient");
        }
        let odd = Tensor::<4>::from_data(data(&mut rng, vec![1, 2, 5, 6], 1.0), &dev);
        assert!(resample2x(odd.clone(), Resample2x::AvgPool).is_err());
        assert_eq!(avg_pool2x(odd).dims(), [1, 2, 2, 3]);
    }
}

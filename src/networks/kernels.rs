//! Hand-written CPU kernels, forward and backward, for the networks' hot operations on burn's
//! `flex` back-end: the stride-1 "same" convolution (3×3 and 1×1) and SiLU.
//!
//! Why: flex differentiates a convolution through a direct-loop transposed convolution (input
//! gradient) and a convolution whose kernel is the whole output-gradient map (weight gradient),
//! and runs SiLU as six single-threaded element-wise passes; those paths were most of the gap
//! to PyTorch (issue 13). Here every convolution pass is one im2col (or col2im) plus one gemm,
//! batch-parallel on rayon, and SiLU is one fused pass each way.
//!
//! The ops are registered through burn's backend-extension mechanism (`#[backend_extension]`)
//! with our own autodiff backward. Other back-ends (wgpu, cuda, tch) and other dtypes (the
//! mixed-precision f16 path) keep burn's own ops: [`conv`] and [`silu`] choose at run time.

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::{DType, Device, Tensor, TensorData};
use rayon::prelude::*;

/// Operations with a hand-written kernel on flex (inference) and a hand-written backward
/// (training, `Autodiff<Flex>`).
#[backend_extension(Flex, Autodiff)]
pub trait KernelOps: Backend {
    /// k×k convolution, stride 1, zero padding k/2 (k odd), one group, with bias.
    fn conv_same(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `x · sigmoid(x)`.
    fn silu_fused(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// Is this tensor one the kernels here can take (flex device, f32)?
fn fast_path(x: &Tensor<4>) -> bool {
    x.dtype() == DType::F32 && x.device() == Device::flex()
}

/// `layer.forward(x)`, through [`KernelOps::conv_same`] where it applies (flex, f32, stride 1,
/// "same" padding, one group, bias): equal to burn's convolution within float rounding (tested).
pub fn conv(layer: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let [k0, k1] = layer.kernel_size;
    let same = matches!(layer.padding, PaddingConfig2d::Explicit(t, l, b, r) if t == k0 / 2 && b == k0 / 2 && l == k1 / 2 && r == k1 / 2);
    match &layer.bias {
        Some(bias)
            if k0 == k1
                && k0 % 2 == 1
                && same
                && layer.stride == [1, 1]
                && layer.dilation == [1, 1]
                && layer.groups == 1
                && fast_path(&x) =>
        {
            let w = layer.weight.val();
            let b = bias.val();
            Tensor::from_dispatch(<Dispatch as KernelOps>::conv_same(
                x.into_dispatch(),
                w.into_dispatch(),
                b.into_dispatch(),
            ))
        }
        _ => layer.forward(x),
    }
}

/// SiLU, fused on flex (f32), burn's `silu` elsewhere.
pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if x.dtype() == DType::F32 && x.device() == Device::flex() {
        return Tensor::from_dispatch(<Dispatch as KernelOps>::silu_fused(x.into_dispatch()));
    }
    burn::tensor::activation::silu(x)
}

// ---------------------------------------------------------------------------------------------
// flex: forward kernels

fn dims4(t: &FlexTensor) -> [usize; 4] {
    let s = burn::backend::TensorMetadata::shape(t);
    [s[0], s[1], s[2], s[3]]
}

/// Contiguous f32 view (copies only when the layout is not contiguous).
fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.as_slice::<f32>().is_some() { t } else { t.to_contiguous() }
}

fn flex_tensor(data: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(data, shape))
}

impl KernelOps for Flex {
    fn conv_same(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
        let [b, ci, h, w] = dims4(&x);
        let [co, _, k, _] = dims4(&weight);
        let (x, weight, bias) = (contiguous(x), contiguous(weight), contiguous(bias));
        let out = conv_forward(
            x.as_slice().expect("contiguous"),
            weight.as_slice().expect("contiguous"),
            bias.as_slice().expect("contiguous"),
            Geometry { b, ci, co, h, w, k },
        );
        flex_tensor(out, vec![b, co, h, w])
    }

    fn silu_fused(x: FlexTensor) -> FlexTensor {
        let shape = burn::backend::TensorMetadata::shape(&x).to_vec();
        let x = contiguous(x);
        let xs: &[f32] = x.as_slice().expect("contiguous");
        let mut out = vec![0f32; xs.len()];
        par_chunks2(xs, &mut out, |x, y| {
            for (y, &x) in y.iter_mut().zip(x) {
                *y = x * sigmoid(x);
            }
        });
        flex_tensor(out, shape)
    }
}

// ---------------------------------------------------------------------------------------------
// Autodiff<Flex>: the same forward, our backward

impl<C: CheckpointStrategy> KernelOps for Autodiff<Flex, C> {
    fn conv_same(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct ConvSameBackward;

        impl Backward<Flex, 3> for ConvSameBackward {
            type State = (NodeId, NodeId);

            fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
                let [node_x, node_w, node_b] = ops.parents;
                let grad = contiguous(grads.consume::<Flex>(&ops.node));
                let (x_state, w_state) = ops.state;
                let x = contiguous(checkpointer.retrieve_node_output::<FlexTensor>(x_state));
                let weight = contiguous(checkpointer.retrieve_node_output::<FlexTensor>(w_state));
                let [b, ci, h, w] = dims4(&x);
                let [co, _, k, _] = dims4(&weight);
                let g = Geometry { b, ci, co, h, w, k };
                let (gx, gw, gb) = conv_backward(
                    x.as_slice().expect("contiguous"),
                    weight.as_slice().expect("contiguous"),
                    grad.as_slice().expect("contiguous"),
                    g,
                    node_x.is_some(),
                );
                if let (Some(node), Some(gx)) = (node_x, gx) {
                    grads.register::<Flex>(node.id, flex_tensor(gx, vec![b, ci, h, w]));
                }
                if let Some(node) = node_w {
                    grads.register::<Flex>(node.id, flex_tensor(gw, vec![co, ci, k, k]));
                }
                if let Some(node) = node_b {
                    grads.register::<Flex>(node.id, flex_tensor(gb, vec![co]));
                }
            }
        }

        match ConvSameBackward.prepare::<C>([x.node(), weight.node(), bias.node()]).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let w_state = prep.checkpoint(&weight);
                let out = Flex::conv_same(x.into_primitive(), weight.into_primitive(), bias.into_primitive());
                prep.finish((x_state, w_state), out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(Flex::conv_same(x.into_primitive(), weight.into_primitive(), bias.into_primitive()))
            }
        }
    }

    fn silu_fused(x: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct SiluBackward;

        impl Backward<Flex, 1> for SiluBackward {
            type State = NodeId;

            fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
                let [node_x] = ops.parents;
                let grad = contiguous(grads.consume::<Flex>(&ops.node));
                let x = contiguous(checkpointer.retrieve_node_output::<FlexTensor>(ops.state));
                let Some(node) = node_x else { return };
                let shape = burn::backend::TensorMetadata::shape(&x).to_vec();
                let xs: &[f32] = x.as_slice().expect("contiguous");
                let gs: &[f32] = grad.as_slice().expect("contiguous");
                let mut out = vec![0f32; xs.len()];
                out.par_chunks_mut(CHUNK).zip(xs.par_chunks(CHUNK)).zip(gs.par_chunks(CHUNK)).for_each(
                    |((o, x), g)| {
                        for ((o, &x), &g) in o.iter_mut().zip(x).zip(g) {
                            let s = sigmoid(x);
                            *o = g * s * (1.0 + x * (1.0 - s));
                        }
                    },
                );
                grads.register::<Flex>(node.id, flex_tensor(out, shape));
            }
        }

        match SiluBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let state = prep.checkpoint(&x);
                prep.finish(state, Flex::silu_fused(x.into_primitive()))
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::silu_fused(x.into_primitive())),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The kernels, on plain slices (NCHW, contiguous)

/// Element-wise work is split in chunks this long (about 64 KiB of f32) over rayon.
const CHUNK: usize = 16 * 1024;

fn par_chunks2(x: &[f32], y: &mut [f32], f: impl Fn(&[f32], &mut [f32]) + Sync) {
    y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(y, x)| f(x, y));
}

/// `1 / (1 + e^-x)` with an exponential LLVM can vectorise (see [`exp`]).
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// `e^x` in f32 to ≈ 2 ulp, branch-free so that loops over it vectorise (libm's `expf` is a
/// call per element): x = n·ln2 + r with |r| ≤ ln2/2, e^r by a degree-6 polynomial, 2ⁿ by
/// building the exponent bits. Inputs are clamped to [−87.3, 88] (2ⁿ stays a normal f32; e^x
/// under- or overflows there anyway, and SiLU's results are exact).
#[inline(always)]
fn exp(x: f32) -> f32 {
    // Adding 1.5·2²³ rounds to the nearest integer in the low mantissa bits (SSE2 has no
    // round instruction, and `f32::round` is a libm call).
    const SHIFTER: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.0);
    let t = x * std::f32::consts::LOG2_E + SHIFTER;
    let n = t - SHIFTER;
    // Cody–Waite: ln2 split in a high part exact in f32 and a low correction.
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p =
        1.0 + r * (1.0 + r * (0.5 + r * (0.166_666_67 + r * (0.041_666_58 + r * (0.008_333_452 + r * 0.001_393_3)))));
    let n_int = t.to_bits().wrapping_sub(SHIFTER.to_bits()) as i32;
    p * f32::from_bits(((n_int + 127) as u32) << 23)
}

/// Shapes of one stride-1 "same" convolution.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    b: usize,
    ci: usize,
    co: usize,
    h: usize,
    w: usize,
    k: usize,
}

impl Geometry {
    fn hw(&self) -> usize {
        self.h * self.w
    }
    /// Rows of the im2col matrix: one per (input channel, kernel tap).
    fn kk(&self) -> usize {
        self.ci * self.k * self.k
    }
}

/// The rows `[y0, y1)` and columns `[x0, x1)` of the output where a tap at offset `(dy, dx)`
/// reads inside the image.
fn tap_range(g: Geometry, dy: isize, dx: isize) -> (usize, usize, usize, usize) {
    let (h, w) = (g.h as isize, g.w as isize);
    let y0 = (-dy).clamp(0, h) as usize;
    let y1 = (h - dy).clamp(0, h) as usize;
    let x0 = (-dx).clamp(0, w) as usize;
    let x1 = (w - dx).clamp(0, w) as usize;
    (y0, y1.max(y0), x0, x1.max(x0))
}

/// im2col for one image: `cols[(c·k + ky)·k + kx][y·w + x] = x[c][y + ky − k/2][x + kx − k/2]`,
/// zero outside the image. Both sides are row-major with the same width, so each tap is one
/// contiguous copy shifted by `dy·w + dx`; the few values that wrap across a row end are then
/// zeroed (a copy per image row would be a `memcpy` call per 32 values).
fn im2col(x: &[f32], g: Geometry, cols: &mut [f32]) {
    let (w, k, hw) = (g.w, g.k, g.hw());
    let p = (k / 2) as isize;
    for c in 0..g.ci {
        let plane = &x[c * hw..(c + 1) * hw];
        for ky in 0..k {
            for kx in 0..k {
                let row = &mut cols[((c * k + ky) * k + kx) * hw..][..hw];
                let (dy, dx) = (ky as isize - p, kx as isize - p);
                let (y0, y1, x0, x1) = tap_range(g, dy, dx);
                if y0 == y1 || x0 == x1 {
                    row.fill(0.0);
                    continue;
                }
                let (start, end) = (y0 * w + x0, (y1 - 1) * w + x1);
                let shift = dy * w as isize + dx;
                let src = (start as isize + shift) as usize;
                row[..start].fill(0.0);
                row[start..end].copy_from_slice(&plane[src..src + (end - start)]);
                row[end..].fill(0.0);
                if x0 > 0 || x1 < w {
                    for y in y0..y1 {
                        row[y * w..y * w + x0].fill(0.0);
                        row[y * w + x1..(y + 1) * w].fill(0.0);
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: `dx[c][y + ky − k/2][x + kx − k/2] += cols[(c, ky, kx)][y·w + x]`.
/// Consumes `cols` as scratch: the values of each tap that would wrap across a row end are
/// zeroed so that the tap is one contiguous, vectorisable addition.
fn col2im(cols: &mut [f32], g: Geometry, dx_out: &mut [f32]) {
    let (w, k, hw) = (g.w, g.k, g.hw());
    let p = (k / 2) as isize;
    for c in 0..g.ci {
        let plane = &mut dx_out[c * hw..(c + 1) * hw];
        for ky in 0..k {
            for kx in 0..k {
                let row = &mut cols[((c * k + ky) * k + kx) * hw..][..hw];
                let (dy, dx) = (ky as isize - p, kx as isize - p);
                let (y0, y1, x0, x1) = tap_range(g, dy, dx);
                if y0 == y1 || x0 == x1 {
                    continue;
                }
                if x0 > 0 || x1 < w {
                    for y in y0..y1 {
                        row[y * w..y * w + x0].fill(0.0);
                        row[y * w + x1..(y + 1) * w].fill(0.0);
                    }
                }
                let (start, end) = (y0 * w + x0, (y1 - 1) * w + x1);
                let dst = (start as isize + dy * w as isize + dx) as usize;
                for (d, s) in plane[dst..dst + (end - start)].iter_mut().zip(&row[start..end]) {
                    *d += s;
                }
            }
        }
    }
}

/// `dst (m×n, row-major) = [dst +] a · b` with `a` (m×k) and `b` (k×n) given by their row and
/// column strides (a transposed operand is just swapped strides).
#[allow(clippy::too_many_arguments)]
fn gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    accumulate: bool,
    a: &[f32],
    (a_rs, a_cs): (usize, usize),
    b: &[f32],
    (b_rs, b_cs): (usize, usize),
    parallel: bool,
) {
    assert!(dst.len() >= m * n);
    assert!(m == 0 || k == 0 || a.len() > (m - 1) * a_rs + (k - 1) * a_cs);
    assert!(n == 0 || k == 0 || b.len() > (k - 1) * b_rs + (n - 1) * b_cs);
    let parallelism = if parallel { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
    // SAFETY: the asserts above keep every index the strides reach inside the slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism,
        );
    }
}

thread_local! {
    /// Reused im2col / col2im buffers (taken out while in use, so a nested call on the same
    /// thread — rayon steals work while a parallel gemm waits — simply allocates its own).
    static SCRATCH: std::cell::RefCell<Vec<Vec<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A buffer of `n` values (contents unspecified: callers overwrite all of it).
fn scratch(n: usize) -> Vec<f32> {
    let mut v = SCRATCH.with(|s| s.borrow_mut().pop()).unwrap_or_default();
    v.resize(n, 0.0);
    v
}

fn release(v: Vec<f32>) {
    SCRATCH.with(|s| {
        let mut pool = s.borrow_mut();
        if pool.len() < 4 {
            pool.push(v);
        }
    });
}

/// A sum LLVM can vectorise (eight independent partial sums instead of one serial chain).
fn sum(xs: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// Run the images one after another with a parallel gemm when there are fewer images than
/// threads (a single image to restore, the paper's batch of 2 split over shards), else one
/// image per rayon job with a sequential gemm.
fn images_in_parallel(g: Geometry) -> bool {
    g.b >= rayon::current_num_threads()
}

/// Forward: per image, `out = W (co × ci·k²) · im2col(x) + bias`.
fn conv_forward(x: &[f32], weight: &[f32], bias: &[f32], g: Geometry) -> Vec<f32> {
    let (hw, kk) = (g.hw(), g.kk());
    let mut out = vec![0f32; g.b * g.co * hw];
    let one = |i: usize, out: &mut [f32], gemm_parallel: bool| {
        for (o, &bv) in out.chunks_mut(hw).zip(bias) {
            o.fill(bv);
        }
        let xi = &x[i * g.ci * hw..(i + 1) * g.ci * hw];
        if g.k == 1 {
            gemm(g.co, hw, kk, out, true, weight, (kk, 1), xi, (hw, 1), gemm_parallel);
        } else {
            let mut cols = scratch(kk * hw);
            im2col(xi, g, &mut cols);
            gemm(g.co, hw, kk, out, true, weight, (kk, 1), &cols, (hw, 1), gemm_parallel);
            release(cols);
        }
    };
    if images_in_parallel(g) {
        out.par_chunks_mut(g.co * hw).enumerate().for_each(|(i, o)| one(i, o, false));
    } else {
        out.chunks_mut(g.co * hw).enumerate().for_each(|(i, o)| one(i, o, true));
    }
    out
}

/// Backward: per image, `dcols = Wᵀ · dy` then col2im (the input gradient) and
/// `dW += dy · im2col(x)ᵀ` (the weight gradient, summed over the images of each rayon job and
/// then over the jobs); `db = Σ dy`.
fn conv_backward(
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    g: Geometry,
    want_dx: bool,
) -> (Option<Vec<f32>>, Vec<f32>, Vec<f32>) {
    let (hw, kk) = (g.hw(), g.kk());
    let mut dx = if want_dx { vec![0f32; g.b * g.ci * hw] } else { Vec::new() };
    // (dW, db) partial sums, one per rayon job.
    let zero = || (vec![0f32; g.co * kk], vec![0f32; g.co]);
    let one = |i: usize, dxi: &mut [f32], (dw, db): &mut (Vec<f32>, Vec<f32>), par: bool| {
        let xi = &x[i * g.ci * hw..(i + 1) * g.ci * hw];
        let dyi = &dy[i * g.co * hw..(i + 1) * g.co * hw];
        for (s, row) in db.iter_mut().zip(dyi.chunks(hw)) {
            *s += sum(row);
        }
        if g.k == 1 {
            // dW (co × ci) += dy (co × hw) · xᵀ (hw × ci)
            gemm(g.co, kk, hw, dw, true, dyi, (hw, 1), xi, (1, hw), par);
            if want_dx {
                // dx (ci × hw) = Wᵀ (ci × co) · dy (co × hw)
                gemm(g.ci, hw, g.co, dxi, false, weight, (1, kk), dyi, (hw, 1), par);
            }
            return;
        }
        let mut cols = scratch(kk * hw);
        im2col(xi, g, &mut cols);
        // dW (co × kk) += dy (co × hw) · colsᵀ (hw × kk)
        gemm(g.co, kk, hw, dw, true, dyi, (hw, 1), &cols, (1, hw), par);
        if want_dx {
            // dcols (kk × hw) = Wᵀ (kk × co) · dy (co × hw), then col2im.
            gemm(kk, hw, g.co, &mut cols, false, weight, (1, kk), dyi, (hw, 1), par);
            col2im(&mut cols, g, dxi);
        }
        release(cols);
    };
    let (dw, db) = match (want_dx, images_in_parallel(g)) {
        (true, true) => dx
            .par_chunks_mut(g.ci * hw)
            .enumerate()
            .fold(zero, |mut acc, (i, dxi)| {
                one(i, dxi, &mut acc, false);
                acc
            })
            .reduce(zero, add_pair),
        (false, true) => (0..g.b)
            .into_par_iter()
            .fold(zero, |mut acc, i| {
                one(i, &mut [], &mut acc, false);
                acc
            })
            .reduce(zero, add_pair),
        (true, false) => {
            let mut acc = zero();
            dx.chunks_mut(g.ci * hw).enumerate().for_each(|(i, dxi)| one(i, dxi, &mut acc, true));
            acc
        }
        (false, false) => {
            let mut acc = zero();
            (0..g.b).for_each(|i| one(i, &mut [], &mut acc, true));
            acc
        }
    };
    (want_dx.then_some(dx), dw, db)
}

fn add_pair(mut a: (Vec<f32>, Vec<f32>), b: (Vec<f32>, Vec<f32>)) -> (Vec<f32>, Vec<f32>) {
    for (x, y) in a.0.iter_mut().zip(&b.0) {
        *x += y;
    }
    for (x, y) in a.1.iter_mut().zip(&b.1) {
        *x += y;
    }
    a
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

    /// The vectorisable exponential is within a few ulp of libm's over SiLU's range.
    #[test]
    fn exp_is_accurate() {
        let mut worst = 0f32;
        for i in -87_000..=87_999 {
            let x = i as f32 * 1e-3;
            let (a, b) = (exp(x), x.exp());
            worst = worst.max((a - b).abs() / b);
        }
        assert!(worst < 5e-7, "relative error {worst}");
        // Outside the clamp: still finite, and still tiny or huge.
        assert!(exp(-1000.0) >= 0.0 && exp(-1000.0) < 1e-37);
        assert!(exp(1000.0).is_finite() && exp(1000.0) > 1e38);
    }
}

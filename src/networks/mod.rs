//! Networks on burn: the residual restorer G and the conditional diffusion UNet D.
//!
//! Both are plain `#[derive(Module)]` structs without a backend type parameter (burn 0.22):
//! the device, and so the back-end, is picked at run time by the caller.

pub mod archs;
pub mod diffusion;
pub mod domain;
pub(crate) mod init;
pub mod interop;
pub(crate) mod kernels;
pub mod pixel_da;

pub use archs::{Restorer, RestorerConfig, RestorerUNet, Upsample};
pub use diffusion::{DiffusionConfig, DiffusionUNet, NoiseSchedule};

/// `t` in `dtype` (a no-op when it already is): tensors built from host data are f32, and
/// must follow the network's precision under mixed-precision training.
pub fn like<const D: usize>(t: burn::tensor::Tensor<D>, dtype: burn::tensor::DType) -> burn::tensor::Tensor<D> {
    if t.dtype() == dtype { t } else { t.cast(dtype) }
}

/// Parameter counts of the restorer and the diffusion network as configured (built on the
/// CPU device just to count, parameters never materialised).
pub fn param_counts(restorer: &RestorerConfig, diffusion: &DiffusionConfig) -> (usize, usize) {
    use burn::module::Module;
    let device = burn::tensor::Device::flex();
    // Lazy parameters: counting draws nothing (the paper's D alone is 62.6 M values).
    (restorer.init_lazy(&device).num_params(), diffusion.init_lazy(2, &device).num_params())
}

/// Bilinear ×2 up-sampling with `align_corners = false` (PyTorch's default), written with
/// slices, concatenation and reshapes only. burn's `interpolate` has no bilinear backward on
/// the ndarray and CubeCL (wgpu, cuda) back-ends; these ops differentiate everywhere.
pub(crate) fn upsample2x_bilinear(x: burn::tensor::Tensor<4>) -> burn::tensor::Tensor<4> {
    // Our kernel on flex (f32): one pass each way, parallel over planes.
    let x = match kernels::upsample2x_bilinear(x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    if x.device() == burn::tensor::Device::flex() {
        // flex has the bilinear forward and backward as single kernels: far cheaper than the
        // dozen element-wise ops below (equal within 1e-6 both ways, tested).
        use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
        let [_, _, h, w] = x.dims();
        let opts = InterpolateOptions::new(InterpolateMode::Bilinear)
            .with_align_corners(false)
            .with_output_size([2 * h, 2 * w]);
        return burn::tensor::module::interpolate(x, opts);
    }
    upsample2x_bilinear_ops(x)
}

/// Bilinear ×2 up-sampling with `align_corners = true` (the authors' `nn.Upsample`): output
/// pixel `j` samples the input at `j·(n−1)/(2n−1)`. burn's `interpolate` on flex (forward and
/// backward kernels); elsewhere an index-select form that differentiates on every back-end.
pub(crate) fn upsample2x_bilinear_aligned(x: burn::tensor::Tensor<4>) -> burn::tensor::Tensor<4> {
    // Our kernel on flex (f32): burn's flex interpolate is a scalar loop (12 % of a restore).
    let x = match kernels::upsample2x_bilinear_aligned(x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    let [_, _, h, w] = x.dims();
    if x.device() == burn::tensor::Device::flex() {
        use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
        let opts = InterpolateOptions::new(InterpolateMode::Bilinear)
            .with_align_corners(true)
            .with_output_size([2 * h, 2 * w]);
        return burn::tensor::module::interpolate(x, opts);
    }
    upsample2x_bilinear_ops_aligned(x)
}

/// [`upsample2x_bilinear_aligned`] from index selects (every back-end).
pub(crate) fn upsample2x_bilinear_ops_aligned(x: burn::tensor::Tensor<4>) -> burn::tensor::Tensor<4> {
    let x = aligned_axis(x, 2);
    aligned_axis(x, 3)
}

/// One axis of [`upsample2x_bilinear_aligned`]: out[j] = (1−f)·x[i] + f·x[i+1], i + f = j·(n−1)/(2n−1).
fn aligned_axis(x: burn::tensor::Tensor<4>, dim: usize) -> burn::tensor::Tensor<4> {
    use burn::tensor::{Int, Tensor, TensorData};
    let n = x.dims()[dim];
    let m = 2 * n;
    let (mut lo, mut hi, mut frac) = (Vec::with_capacity(m), Vec::with_capacity(m), Vec::with_capacity(m));
    for j in 0..m {
        let pos = if m > 1 { j as f64 * (n - 1) as f64 / (m - 1) as f64 } else { 0.0 };
        let i = (pos.floor() as usize).min(n - 1);
        lo.push(i as i64);
        hi.push((i + 1).min(n - 1) as i64);
        frac.push((pos - i as f64) as f32);
    }
    let device = x.device();
    let idx = |v: Vec<i64>| Tensor::<1, Int>::from_data(TensorData::new(v, [m]), &device);
    let mut shape = [1usize; 4];
    shape[dim] = m;
    let f = Tensor::<1>::from_data(TensorData::new(frac, [m]), &device).reshape(shape);
    let a = x.clone().select(dim, idx(lo));
    let b = x.select(dim, idx(hi));
    a.clone() + (b - a) * f
}

/// [`upsample2x_bilinear`] from slices, concatenation and reshapes (every back-end).
pub(crate) fn upsample2x_bilinear_ops(x: burn::tensor::Tensor<4>) -> burn::tensor::Tensor<4> {
    let x = upsample_axis(x, 2);
    upsample_axis(x, 3)
}

/// Along `dim`: out[2i] = ¾·x[i] + ¼·x[i−1], out[2i+1] = ¾·x[i] + ¼·x[i+1], edges clamped.
fn upsample_axis(x: burn::tensor::Tensor<4>, dim: usize) -> burn::tensor::Tensor<4> {
    use burn::tensor::Tensor;
    let dims = x.dims();
    let n = dims[dim];
    let prev = Tensor::cat(vec![x.clone().narrow(dim, 0, 1), x.clone().narrow(dim, 0, n - 1)], dim);
    let next = Tensor::cat(vec![x.clone().narrow(dim, 1, n - 1), x.clone().narrow(dim, n - 1, 1)], dim);
    let even = x.clone() * 0.75 + prev * 0.25;
    let odd = x * 0.75 + next * 0.25;
    let mut out = dims;
    out[dim] = 2 * n;
    // Interleave: stack on a new axis right after `dim`, then merge the two axes.
    Tensor::stack::<5>(vec![even, odd], dim + 1).reshape(out)
}

/// Nearest ×2 up-sampling through reshape and expand (differentiable on every back-end).
pub(crate) fn upsample2x_nearest(x: burn::tensor::Tensor<4>) -> burn::tensor::Tensor<4> {
    let x = match kernels::upsample2x_nearest(x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h, 1, w, 1]).expand([b, c, h, 2, w, 2]).reshape([b, c, 2 * h, 2 * w])
}

/// The two networks of a pipeline: the restorer G and the diffusion network D.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworksSpec {
    #[serde(deserialize_with = "archs::with_default_arch")]
    pub restorer: RestorerConfig,
    pub diffusion: DiffusionConfig,
}

/// Largest group count ≤ 32 that divides `channels` (GroupNorm(32) at the paper's widths,
/// graceful for the tiny demo widths).
pub(crate) fn group_count(channels: usize) -> usize {
    (1..=32.min(channels)).rev().find(|g| channels % g == 0).unwrap_or(1)
}

/// Every parameter's gradient, in the module's visiting order (empty where it has none).
#[cfg(test)]
pub(crate) fn param_grads<M: burn::module::Module>(m: &M, grads: &burn::tensor::Gradients) -> Vec<Vec<f32>> {
    use burn::tensor::Tensor;
    struct Collect<'a>(&'a burn::tensor::Gradients, Vec<Vec<f32>>);
    impl burn::module::ModuleVisitor for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            let g = param.val().grad(self.0).map(|g| g.into_data().try_to_vec::<f32>().unwrap());
            self.1.push(g.unwrap_or_default());
        }
    }
    let mut c = Collect(grads, Vec::new());
    m.visit(&mut c);
    c.1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Corner-aligned ×2 bilinear (the release's up-sampling): hand-computed values on a 1×3
    /// row (positions j·2/5), and the index-select form equal to flex's kernel in value and
    /// input gradient.
    #[test]
    fn aligned_upsampling_matches_its_definition_on_every_path() {
        use burn::tensor::{Tensor, TensorData};
        let dev = Device::flex();
        let x = Tensor::<4>::from_data(TensorData::new(vec![0.0f32, 1.0, 4.0], [1, 1, 1, 3]), &dev);
        let y = upsample2x_bilinear_aligned(x).into_data().try_to_vec::<f32>().unwrap();
        // Rows double too (one row: every output row is that row).
        let want = [0.0, 0.4, 0.8, 1.6, 2.8, 4.0];
        assert_eq!(y.len(), 12);
        for (a, b) in y[..6].iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{y:?}");
        }
        let ad = dev.clone().autodiff();
        let v: Vec<f32> = (0..2 * 3 * 5 * 7).map(|i| ((i * 37) % 19) as f32 / 7.0 - 1.0).collect();
        let r: Vec<f32> = (0..2 * 3 * 10 * 14).map(|i| ((i * 11) % 23) as f32 / 11.0 - 1.0).collect();
        let run = |ops: bool| {
            let x = Tensor::<4>::from_data(TensorData::new(v.clone(), [2, 3, 5, 7]), &ad).require_grad();
            let rr = Tensor::<4>::from_data(TensorData::new(r.clone(), [2, 3, 10, 14]), &ad);
            let y =
                if ops { aligned_axis(aligned_axis(x.clone(), 2), 3) } else { upsample2x_bilinear_aligned(x.clone()) };
            let g = (y.clone() * rr).sum().backward();
            (y.into_data().try_to_vec::<f32>().unwrap(), x.grad(&g).unwrap().into_data().try_to_vec::<f32>().unwrap())
        };
        let (a, b) = (run(false), run(true));
        let d = |p: &[f32], q: &[f32]| p.iter().zip(q).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(d(&a.0, &b.0) < 1e-5 && d(&a.1, &b.1) < 1e-4, "{} {}", d(&a.0, &b.0), d(&a.1, &b.1));
    }
    use burn::tensor::{Device, Tensor, TensorData};

    /// Whole networks with our kernels (flex) equal the same networks on burn's own ops: the
    /// restorer (UNet, DnCNN) and the diffusion UNet (with attention, up/down blocks and
    /// dropout), in output, input gradient and every parameter's gradient, on fixed batches.
    #[test]
    fn networks_with_kernels_match_burn_ops() {
        let _rng = crate::util::rng_lock();
        let dev = Device::flex().autodiff();
        // Fixed weights: for some initialisations a ReLU pre-activation sits so close to its
        // kink that the input gradient itself is discontinuous there — for seed 189 of the
        // DnCNN below, burn's own gradient moves by 5 % when the input moves by 3e-6 — and no
        // two summation orders can agree. Such a draw once came from the shared global seed.
        dev.seed(0);
        let mut rng = crate::rng::Rng::new(3);
        let mut t = |shape: [usize; 4]| {
            let n = shape.iter().product::<usize>();
            let v: Vec<f32> = (0..n).map(|_| rng.normal() as f32 * 0.5).collect();
            Tensor::<4>::from_data(TensorData::new(v, shape), &dev)
        };
        let rel = |a: &[f32], b: &[f32]| {
            let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
            a.iter().zip(b).map(|(p, q)| (p - q).abs()).fold(0.0, f32::max) / scale
        };
        let check = |what: &str, run: &dyn Fn() -> (Vec<f32>, Vec<f32>, Vec<Vec<f32>>)| {
            let fast = run();
            let plain = kernels::with_plain_ops(run);
            assert!(rel(&fast.0, &plain.0) < 1e-4, "{what}: output {}", rel(&fast.0, &plain.0));
            assert!(rel(&fast.1, &plain.1) < 1e-4, "{what}: input gradient {}", rel(&fast.1, &plain.1));
            assert_eq!(fast.2.len(), plain.2.len());
            // Parameter gradients relative to the largest of the network, or of the parameter if
            // larger: a conv bias right before BatchNorm (DnCNN) has a gradient that is zero but
            // for rounding, which no per-parameter relative test can compare.
            let global = plain.2.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
            for (i, (a, b)) in fast.2.iter().zip(&plain.2).enumerate() {
                assert_eq!(a.len(), b.len(), "{what}: parameter {i}");
                let scale = b.iter().fold(1e-3 * global, |m, v| m.max(v.abs()));
                let d = a.iter().zip(b).map(|(p, q)| (p - q).abs()).fold(0.0, f32::max) / scale;
                assert!(d < 1e-3, "{what}: parameter {i} gradient differs by {d}");
            }
        };
        for cfg in [
            RestorerConfig::unet(vec![8, 16, 32]),
            RestorerConfig::Dncnn(archs::DncnnConfig { depth: Some(5), width: Some(16) }),
            RestorerConfig::Nafnet(archs::NafnetConfig {
                width: 4,
                enc_blocks: vec![1, 1],
                middle_blocks: 1,
                dec_blocks: vec![1, 1],
            }),
            RestorerConfig::Restormer(archs::RestormerConfig {
                dim: 4,
                blocks: [1, 1, 1, 1],
                refinement: 1,
                ..Default::default()
            }),
        ] {
            let g = cfg.init(&dev);
            let x = t([2, 3, 16, 24]).require_grad();
            let r = t([2, 3, 16, 24]);
            check(&cfg.describe(), &|| {
                let y = g.restore(x.clone());
                let grads = (y.clone() * r.clone()).sum().backward();
                (
                    y.into_data().try_to_vec::<f32>().unwrap(),
                    x.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap(),
                    param_grads(&g, &grads),
                )
            });
        }
        let cfg = DiffusionConfig { base: 8, mults: vec![1, 2], res_blocks: 1, attn_heads: 2, dropout: 0.2 };
        let d = cfg.init_for(1, &dev);
        let x = t([3, 6, 16, 16]).require_grad();
        let r = t([3, 3, 16, 16]);
        let gamma = [0.2f32, 0.5, 0.9];
        let draw = diffusion::DropoutDraw { seed: 11, rows: vec![0, 1, 2] };
        check("diffusion UNet", &|| {
            let y = d.forward_with(x.clone(), &gamma, Some(&draw));
            let grads = (y.clone() * r.clone()).sum().backward();
            (
                y.into_data().try_to_vec::<f32>().unwrap(),
                x.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap(),
                param_grads(&d, &grads),
            )
        });
    }

    /// The paper's sizes (METHOD.md): UNet-S 8.56 M parameters, the diffusion UNet 62.6 M.
    #[test]
    fn parameter_counts_match_the_paper() {
        let _rng = crate::util::rng_lock();
        let (g, d) = param_counts(
            &RestorerConfig::unet(vec![64, 128, 256, 512]),
            &DiffusionConfig { base: 64, mults: vec![1, 2, 4, 8], res_blocks: 2, attn_heads: 16, dropout: 0.2 },
        );
        assert_eq!((g as f64 / 1e4).round() / 100.0, 8.56, "UNet-S has {g} parameters");
        assert_eq!((d as f64 / 1e5).round() / 10.0, 62.6, "diffusion UNet has {d} parameters");
    }

    /// UNet-S costs 12.48 GMACs at 128² in the paper's table; our count of its convolutions
    /// gives 12.438 (the rest is the up-sampling and pooling a profiler adds).
    #[test]
    fn restorer_macs_match_the_paper() {
        let _rng = crate::util::rng_lock();
        let g = RestorerConfig::unet(vec![64, 128, 256, 512]).macs(128, 128) as f64 / 1e9;
        assert!((g - 12.48).abs() < 0.05, "UNet-S: {g} GMACs");
        // Doubling both sides quadruples the cost of a fully convolutional network.
        let small = RestorerConfig::unet(vec![16, 32, 64]);
        assert_eq!(small.macs(64, 64) * 4, small.macs(128, 128));
        // UNet-T, the paper's ≈ 3.1 GMACs: half the widths, a quarter of the cost.
        let t = RestorerConfig::unet(vec![32, 64, 128, 256]).macs(128, 128) as f64 / 1e9;
        assert!((t - 3.1).abs() < 0.05, "UNet-T: {t} GMACs");
    }

    /// DnCNN-17 (width 64, colour): 15 conv+BN blocks between an input and an output conv; the
    /// counts follow from the layer shapes (weights, biases, BN scale/shift, and BN's running
    /// mean/variance, which burn stores, and counts, as parameters).
    #[test]
    fn dncnn_family() {
        let _rng = crate::util::rng_lock();
        let cfg = RestorerConfig::Dncnn(archs::DncnnConfig::default());
        assert_eq!(cfg.check(), Ok(()));
        let dev = Device::flex();
        let g = cfg.init(&dev);
        let want = (3 * 64 * 9 + 64) + 15 * (64 * 64 * 9 + 64 + 4 * 64) + (64 * 3 * 9 + 3);
        assert_eq!(burn::module::Module::num_params(&g), want);
        assert_eq!(cfg.macs(128, 128), (3 * 64 + 15 * 64 * 64 + 64 * 3) * 9 * 128 * 128u64);
        assert_eq!(cfg.stride(), 1, "no down-sampling: any image size");
        let x = Tensor::<4>::from_data(TensorData::new(vec![0.5f32; 2 * 3 * 13 * 9], [2, 3, 13, 9]), &dev);
        assert_eq!(g.restore(x).dims(), [2, 3, 13, 9]);
        let (key, msg) = RestorerConfig::default().check().unwrap_err();
        assert!(key == "widths" && msg.contains("needs `widths`"), "{key}: {msg}");
    }

    /// Our differentiable up-sampling equals burn's `interpolate` forward (flex has both).
    #[test]
    fn upsampling_matches_burn_interpolate() {
        use burn::tensor::module::interpolate;
        use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
        let dev = Device::flex();
        let v: Vec<f32> = (0..2 * 3 * 5 * 7).map(|k| ((k * 37) % 101) as f32 / 101.0).collect();
        let x = Tensor::<4>::from_data(TensorData::new(v, [2, 3, 5, 7]), &dev);
        let close = |a: Tensor<4>, b: Tensor<4>| {
            assert_eq!(a.dims(), b.dims());
            let (a, b) = (a.into_data().try_to_vec::<f32>().unwrap(), b.into_data().try_to_vec::<f32>().unwrap());
            let max = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
            assert!(max < 1e-6, "max difference {max}");
        };
        let bil =
            InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(false).with_output_size([10, 14]);
        close(upsample2x_bilinear_ops(x.clone()), interpolate(x.clone(), bil));
        // flex takes burn's kernel: the same values, and the same gradient both ways.
        let ad = dev.clone().autodiff();
        let xa = Tensor::<4>::from_data(x.clone().into_data(), &ad).require_grad();
        let w: Vec<f32> = (0..2 * 3 * 10 * 14).map(|k| ((k * 13) % 29) as f32 / 29.0 - 0.5).collect();
        let w = Tensor::<4>::from_data(TensorData::new(w, [2, 3, 10, 14]), &ad);
        let grad = |f: fn(Tensor<4>) -> Tensor<4>| {
            let y = f(xa.clone());
            let g = (y.clone() * w.clone()).sum().backward();
            (
                Tensor::<4>::from_data(y.into_data(), &dev),
                Tensor::<4>::from_data(xa.grad(&g).unwrap().into_data(), &dev),
            )
        };
        let (y_native, g_native) = grad(upsample2x_bilinear);
        let (y_ops, g_ops) = grad(upsample2x_bilinear_ops);
        close(y_native, y_ops);
        close(g_native, g_ops);
        let near = InterpolateOptions::new(InterpolateMode::Nearest).with_output_size([10, 14]);
        close(upsample2x_nearest(x.clone()), interpolate(x, near));
    }

    #[test]
    fn networks_keep_the_image_shape() {
        let _rng = crate::util::rng_lock();
        let dev = Device::flex();
        let g = RestorerConfig::unet(vec![4, 8, 16]).init(&dev);
        let x = Tensor::<4>::from_data(TensorData::new(vec![0.5f32; 2 * 3 * 16 * 24], [2, 3, 16, 24]), &dev);
        assert_eq!(g.restore(x).dims(), [2, 3, 16, 24]);
        let d = DiffusionConfig { base: 8, mults: vec![1, 2], res_blocks: 1, attn_heads: 2, dropout: 0.0 }.init(&dev);
        let x9 = Tensor::<4>::from_data(TensorData::new(vec![0.1f32; 2 * 9 * 8 * 12], [2, 9, 8, 12]), &dev);
        assert_eq!(d.forward(x9, &[0.3, 0.9]).dims(), [2, 3, 8, 12]);
    }
}

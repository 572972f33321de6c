//! `restormer`: Restormer (Zamir et al. — "Restormer: Efficient Transformer for
//! High-Resolution Image Restoration", CVPR 2022). Default: the published configuration (dim
//! 48, blocks [4, 6, 6, 8], 4 refinement blocks, heads [1, 2, 4, 8], FFN expansion 2.66, no
//! conv biases) with LayerNorms that subtract the mean and have a bias (`layer_norm:
//! with_bias`, the deblurring checkpoints': 26,126,644 parameters); the real-denoising
//! checkpoint uses `layer_norm: bias_free` (x/σ·w, no bias: 26,111,668).
//!
//! 3×3 patch embedding → three encoder levels and a latent level at dim·[1, 2, 4, 8]
//! (down: 3×3 conv c → c/2 + pixel unshuffle; up: 3×3 conv c → 2c + pixel shuffle) → decoder
//! levels 3 and 2 concatenate their skip and reduce it with a 1×1 conv, level 1 concatenates
//! without reducing (blocks at 2·dim) → refinement blocks → 3×3 output conv; restored = x +
//! output. Transformer block: x + MDTA(LN(x)), then + GDFN(LN(x)). MDTA attends across
//! channels: q, k, v from a 1×1 then a depthwise 3×3 conv, per head L2-normalised along the
//! pixels, softmax(q·kᵀ·τ)·v, τ a learned per-head temperature. GDFN: 1×1 to 2·hidden,
//! depthwise 3×3, GELU(first half)·second half, 1×1 back. Sizes must be multiples of 8.

use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::layers::{ChannelNorm, conv as layer, depthwise, pixel_shuffle, pixel_unshuffle};
use super::{Arch, Restorer, RestorerConfig, Source};
use crate::networks::kernels::conv;

/// `networks.restorer: {arch: restormer, dim: 48, blocks: [4, 6, 6, 8], refinement: 4,
/// heads: [1, 2, 4, 8], ffn_expansion: 2.66}` (every key optional).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestormerConfig {
    /// Channels of the first level (×2 per level).
    #[serde(default = "default_dim")]
    pub dim: usize,
    /// Transformer blocks of levels 1, 2, 3 and the latent level (decoders mirror 1–3).
    #[serde(default = "default_blocks")]
    pub blocks: [usize; 4],
    /// Refinement blocks after decoder level 1.
    #[serde(default = "default_refinement")]
    pub refinement: usize,
    /// Attention heads per level.
    #[serde(default = "default_heads")]
    pub heads: [usize; 4],
    /// GDFN's hidden channels = ⌊c · ffn_expansion⌋.
    #[serde(default = "default_ffn")]
    pub ffn_expansion: f64,
    /// The LayerNorms' form.
    #[serde(default)]
    pub layer_norm: LayerNormKind,
}

/// Restormer's two LayerNorms (both over the channels at each pixel, ε = 1e-5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerNormKind {
    /// (x − mean)/σ · w + b (`WithBias`; the deblurring checkpoints).
    #[default]
    WithBias,
    /// x/σ · w (`BiasFree`; the real-denoising checkpoint).
    BiasFree,
}

fn default_dim() -> usize {
    48
}
fn default_blocks() -> [usize; 4] {
    [4, 6, 6, 8]
}
fn default_refinement() -> usize {
    4
}
fn default_heads() -> [usize; 4] {
    [1, 2, 4, 8]
}
fn default_ffn() -> f64 {
    2.66
}

impl Default for RestormerConfig {
    fn default() -> Self {
        RestormerConfig {
            dim: 48,
            blocks: default_blocks(),
            refinement: 4,
            heads: default_heads(),
            ffn_expansion: 2.66,
            layer_norm: LayerNormKind::WithBias,
        }
    }
}

pub(super) fn presets() -> Vec<(&'static str, RestorerConfig)> {
    let with = |layer_norm| RestorerConfig::Restormer(RestormerConfig { layer_norm, ..Default::default() });
    vec![
        ("restormer-motion-deblurring", with(LayerNormKind::WithBias)),
        ("restormer-real-denoising", with(LayerNormKind::BiasFree)),
    ]
}

pub(super) fn from_numbers(n: &[usize]) -> Result<RestorerConfig, String> {
    match n {
        [] => Ok(RestorerConfig::Restormer(RestormerConfig::default())),
        [d] => Ok(RestorerConfig::Restormer(RestormerConfig { dim: *d, ..Default::default() })),
        _ => Err("restormer takes DIM".into()),
    }
}

impl RestormerConfig {
    fn hidden(&self, c: usize) -> usize {
        (c as f64 * self.ffn_expansion) as usize
    }

    /// (channels, heads, blocks) of the encoder levels 1–3 and the latent level.
    fn levels(&self) -> [(usize, usize, usize); 4] {
        std::array::from_fn(|i| (self.dim << i, self.heads[i], self.blocks[i]))
    }
}

impl Arch for RestormerConfig {
    fn check(&self) -> crate::util::Check {
        use crate::util::fail_at;
        if self.dim == 0 {
            return fail_at("dim", "Restormer needs dim > 0");
        }
        if let Some(i) = (0..4).find(|&i| self.heads[i] == 0 || (self.dim << i) % self.heads[i] != 0) {
            return fail_at(
                "heads",
                format!("level {} has {} channels: its head count must divide them", i + 1, self.dim << i),
            );
        }
        // Decoder level 1 and the refinement work at 2·dim with heads[0].
        if (2 * self.dim) % self.heads[0] != 0 {
            return fail_at("heads", "heads[0] must divide 2·dim");
        }
        if !(self.ffn_expansion.is_finite() && self.ffn_expansion > 0.0 && self.hidden(self.dim) > 0) {
            return fail_at("ffn_expansion", "needs a positive expansion giving at least one hidden channel");
        }
        Ok(())
    }

    fn describe(&self) -> String {
        let norm = match self.layer_norm {
            LayerNormKind::WithBias => "",
            LayerNormKind::BiasFree => ", bias-free LayerNorm",
        };
        format!(
            "Restormer dim {}, blocks {:?}, refinement {}, heads {:?}{norm}",
            self.dim, self.blocks, self.refinement, self.heads
        )
    }

    /// Three halvings.
    fn stride(&self) -> usize {
        8
    }

    /// Convolutions and the attention's two products.
    fn macs(&self, h: usize, w: usize) -> u64 {
        let block = |c: usize, heads: usize, hw: usize| -> u64 {
            let hidden = self.hidden(c);
            let attn = 3 * c * c + 3 * c * 9 + 2 * (c / heads) * c + c * c;
            let ffn = c * 2 * hidden + 2 * hidden * 9 + hidden * c;
            ((attn + ffn) * hw) as u64
        };
        let hw = |i: usize| (h >> i) * (w >> i);
        let lv = self.levels();
        let mut total = (3 * self.dim * 9 * hw(0)) as u64;
        for (i, &(c, heads, n)) in lv.iter().enumerate() {
            total += n as u64 * block(c, heads, hw(i));
            if i < 3 {
                total += (c * (c / 2) * 9 * hw(i)) as u64; // down
            }
        }
        for i in (0..3).rev() {
            let (c, heads, n) = lv[i];
            total += (lv[i + 1].0 * 2 * lv[i + 1].0 * 9 * hw(i + 1)) as u64; // up
            if i > 0 {
                total += (2 * c * c * hw(i)) as u64 + n as u64 * block(c, heads, hw(i));
            } else {
                total += n as u64 * block(2 * c, heads, hw(0));
            }
        }
        total += self.refinement as u64 * block(2 * self.dim, self.heads[0], hw(0));
        total + (2 * self.dim * 3 * 9 * hw(0)) as u64
    }

    fn feature_channels(&self) -> usize {
        self.dim * 8
    }

    /// Calibrated with `cargo bench --bench restore_memory` (see the README's memory table).
    fn inference_bytes_per_pixel(&self) -> u64 {
        4 * 32 * self.dim as u64
    }

    /// Measured: 32 KB per pixel with dim 8 (the published blocks and heads).
    fn training_bytes_per_pixel(&self) -> u64 {
        4100 * self.dim as u64
    }

    fn init_lazy(&self, device: &Device) -> Restorer {
        let lv = self.levels();
        let (ffn, bias) = (self.ffn_expansion, self.layer_norm == LayerNormKind::WithBias);
        let blocks =
            |c: usize, heads: usize, n: usize| (0..n).map(|_| Block::new(c, heads, ffn, bias, device)).collect();
        let d = self.dim;
        Restorer::Restormer(Restormer {
            patch_embed: layer(3, d, 3, false, 1, device),
            encoder_level1: blocks(lv[0].0, lv[0].1, lv[0].2),
            down1_2: layer(d, d / 2, 3, false, 1, device),
            encoder_level2: blocks(lv[1].0, lv[1].1, lv[1].2),
            down2_3: layer(2 * d, d, 3, false, 1, device),
            encoder_level3: blocks(lv[2].0, lv[2].1, lv[2].2),
            down3_4: layer(4 * d, 2 * d, 3, false, 1, device),
            latent: blocks(lv[3].0, lv[3].1, lv[3].2),
            up4_3: layer(8 * d, 16 * d, 3, false, 1, device),
            reduce_chan_level3: layer(8 * d, 4 * d, 1, false, 1, device),
            decoder_level3: blocks(lv[2].0, lv[2].1, lv[2].2),
            up3_2: layer(4 * d, 8 * d, 3, false, 1, device),
            reduce_chan_level2: layer(4 * d, 2 * d, 1, false, 1, device),
            decoder_level2: blocks(lv[1].0, lv[1].1, lv[1].2),
            up2_1: layer(2 * d, 4 * d, 3, false, 1, device),
            decoder_level1: blocks(2 * d, lv[0].1, lv[0].2),
            refinement: blocks(2 * d, lv[0].1, self.refinement),
            output: layer(2 * d, 3, 3, false, 1, device),
        })
    }

    /// Ours are the authors' names but where they wrap a layer: `patch_embed.proj`,
    /// `down*/up*.body.0`, the LayerNorms' `body`.
    fn published_key(&self, ours: &str) -> Option<Source> {
        let p: Vec<&str> = ours.split('.').collect();
        let key = match p.as_slice() {
            ["patch_embed", leaf] => format!("patch_embed.proj.{leaf}"),
            [s, leaf] if s.starts_with("down") || s.starts_with("up") => format!("{s}.body.0.{leaf}"),
            [head @ .., n, leaf] if n.starts_with("norm") => format!("{}.{n}.body.{leaf}", head.join(".")),
            _ => ours.to_string(),
        };
        Some(Source::Key(key))
    }

    fn published_family(&self, key: &str) -> bool {
        const ROOTS: [&str; 18] = [
            "patch_embed",
            "encoder_level1",
            "down1_2",
            "encoder_level2",
            "down2_3",
            "encoder_level3",
            "down3_4",
            "latent",
            "up4_3",
            "reduce_chan_level3",
            "decoder_level3",
            "up3_2",
            "reduce_chan_level2",
            "decoder_level2",
            "up2_1",
            "decoder_level1",
            "refinement",
            "output",
        ];
        key.split('.').next().is_some_and(|r| ROOTS.contains(&r))
    }
}

/// Multi-Dconv head transposed attention.
#[derive(Module, Debug)]
pub struct Mdta {
    temperature: Param<Tensor<3>>,
    qkv: Conv2d,
    qkv_dwconv: Conv2d,
    project_out: Conv2d,
    heads: usize,
}

impl Mdta {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let heads = self.heads;
        let qkv = conv(&self.qkv_dwconv, conv(&self.qkv, x));
        let mut parts = qkv.chunk(3, 1);
        let shape = [b, heads, c / heads, h * w];
        let v = parts.pop().expect("q, k, v").reshape(shape);
        let k = l2_normalise(parts.pop().expect("q, k, v").reshape(shape));
        let q = l2_normalise(parts.pop().expect("q, k, v").reshape(shape));
        let t = self.temperature.val().reshape([1, heads, 1, 1]);
        let attn = softmax(q.matmul(k.swap_dims(2, 3)) * t, 3);
        conv(&self.project_out, attn.matmul(v).reshape([b, c, h, w]))
    }
}

/// `F.normalize(x, dim=-1)`: x / max(‖x‖₂, 1e-12) along the last axis.
fn l2_normalise(x: Tensor<4>) -> Tensor<4> {
    let n = x.clone().powi_scalar(2).sum_dim(3).sqrt().clamp_min(1e-12);
    x / n
}

/// Gated-Dconv feed-forward network.
#[derive(Module, Debug)]
pub struct Gdfn {
    project_in: Conv2d,
    dwconv: Conv2d,
    project_out: Conv2d,
}

impl Gdfn {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let h = conv(&self.dwconv, conv(&self.project_in, x));
        let mut halves = h.chunk(2, 1);
        let b = halves.pop().expect("two halves");
        let a = halves.pop().expect("two halves");
        conv(&self.project_out, gelu(a) * b)
    }
}

/// Restormer's transformer block.
#[derive(Module, Debug)]
pub struct Block {
    norm1: ChannelNorm,
    attn: Mdta,
    norm2: ChannelNorm,
    ffn: Gdfn,
}

impl Block {
    fn new(c: usize, heads: usize, expansion: f64, norm_bias: bool, device: &Device) -> Self {
        let hidden = (c as f64 * expansion) as usize;
        Block {
            norm1: ChannelNorm::new(c, norm_bias, 1e-5, device),
            attn: Mdta {
                temperature: Param::from_tensor(Tensor::ones([heads, 1, 1], device)),
                qkv: layer(c, 3 * c, 1, false, 1, device),
                qkv_dwconv: depthwise(3 * c, false, device),
                project_out: layer(c, c, 1, false, 1, device),
                heads,
            },
            norm2: ChannelNorm::new(c, norm_bias, 1e-5, device),
            ffn: Gdfn {
                project_in: layer(c, 2 * hidden, 1, false, 1, device),
                dwconv: depthwise(2 * hidden, false, device),
                project_out: layer(hidden, c, 1, false, 1, device),
            },
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = x.clone() + self.attn.forward(self.norm1.forward(x));
        x.clone() + self.ffn.forward(self.norm2.forward(x))
    }
}

fn run(blocks: &[Block], mut x: Tensor<4>) -> Tensor<4> {
    for b in blocks {
        x = b.forward(x);
    }
    x
}

/// Restormer (see the module's comment); field names are the authors' state-dict names.
#[derive(Module, Debug)]
pub struct Restormer {
    patch_embed: Conv2d,
    encoder_level1: Vec<Block>,
    down1_2: Conv2d,
    encoder_level2: Vec<Block>,
    down2_3: Conv2d,
    encoder_level3: Vec<Block>,
    down3_4: Conv2d,
    latent: Vec<Block>,
    up4_3: Conv2d,
    reduce_chan_level3: Conv2d,
    decoder_level3: Vec<Block>,
    up3_2: Conv2d,
    reduce_chan_level2: Conv2d,
    decoder_level2: Vec<Block>,
    up2_1: Conv2d,
    decoder_level1: Vec<Block>,
    refinement: Vec<Block>,
    output: Conv2d,
}

impl Restormer {
    /// The residual and the latent level's output. Sizes must be multiples of 8 (callers pad).
    pub(super) fn residual_and_features(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let down = |c: &Conv2d, t: Tensor<4>| pixel_unshuffle(conv(c, t));
        let up = |c: &Conv2d, t: Tensor<4>| pixel_shuffle(conv(c, t));
        let e1 = run(&self.encoder_level1, conv(&self.patch_embed, x));
        let e2 = run(&self.encoder_level2, down(&self.down1_2, e1.clone()));
        let e3 = run(&self.encoder_level3, down(&self.down2_3, e2.clone()));
        let latent = run(&self.latent, down(&self.down3_4, e3.clone()));
        let d3 = Tensor::cat(vec![up(&self.up4_3, latent.clone()), e3], 1);
        let d3 = run(&self.decoder_level3, conv(&self.reduce_chan_level3, d3));
        let d2 = Tensor::cat(vec![up(&self.up3_2, d3), e2], 1);
        let d2 = run(&self.decoder_level2, conv(&self.reduce_chan_level2, d2));
        let d1 = run(&self.decoder_level1, Tensor::cat(vec![up(&self.up2_1, d2), e1], 1));
        let r = conv(&self.output, run(&self.refinement, d1));
        (r, latent)
    }
}

//! `nafnet`: NAFNet (Chen, Chu, Zhang, Sun — "Simple Baselines for Image Restoration", ECCV
//! 2022). Default: the SIDD configuration at width 32 (encoder blocks [2, 2, 4, 8], 12 middle
//! blocks, decoder [2, 2, 2, 2]; 29,159,715 parameters).
//!
//! intro 3×3 conv → per level: NAFBlocks, 2×2 stride-2 conv (c → 2c) → middle blocks → per
//! level: 1×1 conv (c → 2c, no bias) + pixel shuffle (→ c/2), plus the level's skip, NAFBlocks
//! → ending 3×3 conv; restored = x + ending. The input is zero-padded right/bottom to a
//! multiple of 2^levels and the residual cropped back, as the authors' `check_image_size`.
//! NAFBlock: y = x + β·conv3(SCA(SG(dwconv(conv1(LN(x)))))), z = y + γ·conv5(SG(conv4(LN(y)))),
//! SimpleGate SG = first half of the channels × second half, SCA = x · conv1×1(mean over
//! pixels); β, γ start at zero (each block starts as the identity). Parameter names are the
//! authors' (`intro`, `encoders.{i}.{j}`, `downs`, `middle_blks`, `ups`, `decoders`, `ending`),
//! so their `{"params": ...}` checkpoints load by name.

use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::layers::{ChannelNorm, channel_scale, conv as layer, depthwise, pad_to_multiple, pixel_shuffle, strided};
use super::{Arch, Restorer, RestorerConfig, Source};
use crate::networks::kernels::conv;

/// `networks.restorer: {arch: nafnet, width: 32, enc_blocks: [2, 2, 4, 8], middle_blocks: 12,
/// dec_blocks: [2, 2, 2, 2]}` (the SIDD configuration; every key optional).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NafnetConfig {
    /// Channels of the first level (doubled per level): 32 or 64 in the paper.
    #[serde(default = "default_width")]
    pub width: usize,
    /// NAFBlocks per encoder level, shallowest first.
    #[serde(default = "default_enc")]
    pub enc_blocks: Vec<usize>,
    #[serde(default = "default_middle")]
    pub middle_blocks: usize,
    /// NAFBlocks per decoder level, deepest first (one per encoder level).
    #[serde(default = "default_dec")]
    pub dec_blocks: Vec<usize>,
}

fn default_width() -> usize {
    32
}
fn default_enc() -> Vec<usize> {
    vec![2, 2, 4, 8]
}
fn default_middle() -> usize {
    12
}
fn default_dec() -> Vec<usize> {
    vec![2, 2, 2, 2]
}

impl Default for NafnetConfig {
    fn default() -> Self {
        NafnetConfig { width: 32, enc_blocks: default_enc(), middle_blocks: 12, dec_blocks: default_dec() }
    }
}

impl NafnetConfig {
    /// The GoPro (deblurring) block counts at `width`.
    pub fn gopro(width: usize) -> Self {
        NafnetConfig { width, enc_blocks: vec![1, 1, 1, 28], middle_blocks: 1, dec_blocks: vec![1, 1, 1, 1] }
    }
}

pub(super) fn presets() -> Vec<(&'static str, RestorerConfig)> {
    let sidd = |w| RestorerConfig::Nafnet(NafnetConfig { width: w, ..Default::default() });
    vec![
        ("nafnet-sidd-width32", sidd(32)),
        ("nafnet-sidd-width64", sidd(64)),
        ("nafnet-gopro-width32", RestorerConfig::Nafnet(NafnetConfig::gopro(32))),
        ("nafnet-gopro-width64", RestorerConfig::Nafnet(NafnetConfig::gopro(64))),
    ]
}

pub(super) fn from_numbers(n: &[usize]) -> Result<RestorerConfig, String> {
    match n {
        [] => Ok(RestorerConfig::Nafnet(NafnetConfig::default())),
        [w] => Ok(RestorerConfig::Nafnet(NafnetConfig { width: *w, ..Default::default() })),
        _ => Err("nafnet takes WIDTH".into()),
    }
}

pub(super) fn gopro_from_numbers(n: &[usize]) -> Result<RestorerConfig, String> {
    match n {
        [w] => Ok(RestorerConfig::Nafnet(NafnetConfig::gopro(*w))),
        _ => Err("nafnet-gopro takes WIDTH".into()),
    }
}

impl Arch for NafnetConfig {
    fn check(&self) -> crate::util::Check {
        use crate::util::fail_at;
        if self.width == 0 {
            return fail_at("width", "NAFNet needs width > 0");
        }
        if self.enc_blocks.is_empty() || self.enc_blocks.len() > 6 {
            return fail_at("enc_blocks", "NAFNet needs 1 to 6 encoder levels");
        }
        if self.dec_blocks.len() != self.enc_blocks.len() {
            return fail_at(
                "dec_blocks",
                format!(
                    "one decoder level per encoder level: {} here, {} encoder levels",
                    self.dec_blocks.len(),
                    self.enc_blocks.len()
                ),
            );
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!(
            "NAFNet width {}, blocks {:?}/{}/{:?}",
            self.width, self.enc_blocks, self.middle_blocks, self.dec_blocks
        )
    }

    /// Any size: the network pads to its multiple itself.
    fn stride(&self) -> usize {
        1
    }

    /// Convolutions (the 1×1 of SCA on one pixel included; the LayerNorms, gates and
    /// pixel shuffle are not counted).
    fn macs(&self, h: usize, w: usize) -> u64 {
        let m = 1usize << self.enc_blocks.len();
        let (h, w) = (h.div_ceil(m) * m, w.div_ceil(m) * m);
        let block = |c: usize, hw: usize| -> u64 {
            let c = c as u64;
            let hw = hw as u64;
            // conv1 (c→2c), dwconv (2c, 3×3), conv3 (c→c), conv4 (c→2c), conv5 (c→c); SCA c→c once.
            (2 * c * c + 2 * c * 9 + c * c + 2 * c * c + c * c) * hw + c * c
        };
        let mut total = (3 * self.width * 9 * h * w) as u64;
        let mut c = self.width;
        for (i, &n) in self.enc_blocks.iter().enumerate() {
            let hw = (h >> i) * (w >> i);
            total += n as u64 * block(c, hw);
            total += (c * 2 * c * 4 * (hw / 4)) as u64;
            c *= 2;
        }
        let deep = (h >> self.enc_blocks.len()) * (w >> self.enc_blocks.len());
        total += self.middle_blocks as u64 * block(c, deep);
        for (k, &n) in self.dec_blocks.iter().enumerate() {
            let level = self.enc_blocks.len() - 1 - k;
            let hw_in = (h >> (level + 1)) * (w >> (level + 1));
            total += (c * 2 * c * hw_in) as u64;
            c /= 2;
            total += n as u64 * block(c, (h >> level) * (w >> level));
        }
        total + (self.width * 3 * 9 * h * w) as u64
    }

    fn feature_channels(&self) -> usize {
        self.width << self.enc_blocks.len()
    }

    /// Calibrated with `cargo bench --bench restore_memory` (see the README's memory table).
    fn inference_bytes_per_pixel(&self) -> u64 {
        4 * 10 * self.width as u64
    }

    /// Measured: 11.9 KB per pixel with width 16 (the SIDD block counts), 740 B per channel.
    fn training_bytes_per_pixel(&self) -> u64 {
        780 * self.width as u64
    }

    fn init_lazy(&self, device: &Device) -> Restorer {
        let w = self.width;
        let blocks = |c: usize, n: usize| (0..n).map(|_| NafBlock::new(c, device)).collect::<Vec<_>>();
        let (mut encoders, mut downs) = (Vec::new(), Vec::new());
        let mut c = w;
        for &n in &self.enc_blocks {
            encoders.push(blocks(c, n));
            downs.push(strided(c, 2 * c, 2, device));
            c *= 2;
        }
        let middle_blks = blocks(c, self.middle_blocks);
        let (mut ups, mut decoders) = (Vec::new(), Vec::new());
        for &n in &self.dec_blocks {
            ups.push(layer(c, 2 * c, 1, false, 1, device));
            c /= 2;
            decoders.push(blocks(c, n));
        }
        Restorer::Nafnet(NafNet {
            intro: layer(3, w, 3, true, 1, device),
            encoders,
            downs,
            middle_blks,
            ups,
            decoders,
            ending: layer(w, 3, 3, true, 1, device),
        })
    }

    /// Ours are the authors' names but for two wrappers they keep in `nn.Sequential`:
    /// `ups.{i}.weight` is their `ups.{i}.0.weight`, `….sca.*` their `….sca.1.*`.
    fn published_key(&self, ours: &str) -> Option<Source> {
        let p: Vec<&str> = ours.split('.').collect();
        let key = match p.as_slice() {
            ["ups", i, leaf] => format!("ups.{i}.0.{leaf}"),
            [head @ .., "sca", leaf] => format!("{}.sca.1.{leaf}", head.join(".")),
            _ => ours.to_string(),
        };
        Some(Source::Key(key))
    }

    fn published_family(&self, key: &str) -> bool {
        ["intro.", "encoders.", "downs.", "middle_blks.", "ups.", "decoders.", "ending."]
            .iter()
            .any(|p| key.starts_with(p))
    }
}

/// NAFNet's block (see the module's comment).
#[derive(Module, Debug)]
pub struct NafBlock {
    norm1: ChannelNorm,
    conv1: Conv2d,
    conv2: Conv2d,
    sca: Conv2d,
    conv3: Conv2d,
    beta: Param<Tensor<4>>,
    norm2: ChannelNorm,
    conv4: Conv2d,
    conv5: Conv2d,
    gamma: Param<Tensor<4>>,
}

/// SimpleGate: the first half of the channels times the second.
fn simple_gate(x: Tensor<4>) -> Tensor<4> {
    let mut halves = x.chunk(2, 1);
    let b = halves.pop().expect("two halves");
    let a = halves.pop().expect("two halves");
    a * b
}

impl NafBlock {
    fn new(c: usize, device: &Device) -> Self {
        NafBlock {
            norm1: ChannelNorm::new(c, true, 1e-6, device),
            conv1: layer(c, 2 * c, 1, true, 1, device),
            conv2: depthwise(2 * c, true, device),
            sca: layer(c, c, 1, true, 1, device),
            conv3: layer(c, c, 1, true, 1, device),
            beta: channel_scale(c, 0.0, device),
            norm2: ChannelNorm::new(c, true, 1e-6, device),
            conv4: layer(c, 2 * c, 1, true, 1, device),
            conv5: layer(c, c, 1, true, 1, device),
            gamma: channel_scale(c, 0.0, device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let h = conv(&self.conv1, self.norm1.forward(x.clone()));
        let h = simple_gate(conv(&self.conv2, h));
        let pooled = h.clone().mean_dim(2).mean_dim(3);
        let h = h * conv(&self.sca, pooled);
        let y = x + conv(&self.conv3, h) * self.beta.val();
        let h = simple_gate(conv(&self.conv4, self.norm2.forward(y.clone())));
        y + conv(&self.conv5, h) * self.gamma.val()
    }
}

/// NAFNet (see the module's comment); field names are the authors' state-dict names.
#[derive(Module, Debug)]
pub struct NafNet {
    intro: Conv2d,
    encoders: Vec<Vec<NafBlock>>,
    downs: Vec<Conv2d>,
    middle_blks: Vec<NafBlock>,
    ups: Vec<Conv2d>,
    decoders: Vec<Vec<NafBlock>>,
    ending: Conv2d,
}

impl NafNet {
    /// The residual (cropped to the input) and the middle blocks' output.
    pub(super) fn residual_and_features(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let [b, _, h, w] = x.dims();
        let x = pad_to_multiple(x, 1 << self.encoders.len());
        let mut t = conv(&self.intro, x);
        let mut skips = Vec::with_capacity(self.encoders.len());
        for (blocks, down) in self.encoders.iter().zip(&self.downs) {
            for blk in blocks {
                t = blk.forward(t);
            }
            skips.push(t.clone());
            t = down.forward(t);
        }
        for blk in &self.middle_blks {
            t = blk.forward(t);
        }
        let features = t.clone();
        for (up, blocks) in self.ups.iter().zip(&self.decoders) {
            t = pixel_shuffle(conv(up, t)) + skips.pop().expect("one skip per level");
            for blk in blocks {
                t = blk.forward(t);
            }
        }
        let r = conv(&self.ending, t).slice([0..b, 0..3, 0..h, 0..w]);
        (r, features)
    }
}

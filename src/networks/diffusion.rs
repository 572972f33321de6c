//! The conditional diffusion UNet D and its noise schedule.
//!
//! D sees 9 channels, [ỹ, cond_A, cond_B], and predicts the noise ε in ỹ. It is conditioned on
//! the continuous noise level γ (sinusoidal embedding + MLP, FiLM scale-shift in every residual
//! block), uses GroupNorm + SiLU and one self-attention block in the middle, guided-diffusion
//! style, with residual blocks that also do the down- (average pool) and up-sampling (nearest)
//! between levels, as the release's "res-block up/down sampling".

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{Dropout, DropoutConfig, GroupNorm, GroupNormConfig, Linear};
// `Dropout` stays a field of every residual block (its rate is part of the saved record);
// the masks come from [`DropoutDraw`].
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::group_count;
use super::init::{conv as conv_layer, linear};
use super::kernels::{avg_pool2x, conv, group_norm_act, silu};
use crate::rng::Rng;

/// Bytes autodiff keeps per activation value of D's blocks, and per attention score value
/// (see [`DiffusionConfig::training_bytes`]).
const BYTES_PER_ACTIVATION: u64 = 24;
const BYTES_PER_SCORE: u64 = 16;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffusionConfig {
    /// Base width (the release: 64).
    pub base: usize,
    /// Width multiplier per level (the release: [1, 2, 4, 8]).
    pub mults: Vec<usize>,
    /// Residual blocks per level (the release: 2).
    pub res_blocks: usize,
    /// Heads of the middle self-attention block (the release: 16).
    pub attn_heads: usize,
    /// Dropout inside residual blocks (the release: 0.2).
    #[serde(default)]
    pub dropout: f64,
}

impl DiffusionConfig {
    /// This configuration, checked (keys within `networks.diffusion`).
    pub fn check(&self) -> crate::util::Check {
        use crate::util::fail_at;
        let positive = "base, mults and res_blocks must be positive";
        if self.base == 0 {
            return fail_at("base", positive);
        }
        if self.mults.is_empty() || self.mults.contains(&0) {
            return fail_at("mults", positive);
        }
        if self.res_blocks == 0 {
            return fail_at("res_blocks", positive);
        }
        let ch = self.base * self.mults.last().copied().unwrap_or(1);
        if self.attn_heads == 0 || ch % self.attn_heads != 0 {
            return fail_at(
                "attn_heads",
                format!(
                    "attn_heads must divide the attention block's {ch} channels (base × the last mult), got {}",
                    self.attn_heads
                ),
            );
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return fail_at("dropout", format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        Ok(())
    }

    pub fn stride(&self) -> usize {
        1 << (self.mults.len().saturating_sub(1))
    }

    /// Multiply-accumulates of one forward pass on an `h × w` input (convolutions, FiLM and
    /// the attention block; normalisation and activations not counted).
    pub fn macs(&self, h: usize, w: usize) -> u64 {
        let base = self.base;
        let emb = 4 * base;
        let conv = |cin: usize, cout: usize, k: usize, hw: usize| (cin * cout * k * k * hw) as u64;
        // A residual block whose convolutions run on `hw` pixels (after any resampling).
        let block = |cin: usize, cout: usize, hw: usize| {
            conv(cin, cout, 3, hw)
                + conv(cout, cout, 3, hw)
                + (emb * 2 * cout) as u64
                + if cin != cout { conv(cin, cout, 1, hw) } else { 0 }
        };
        let hw = |level: usize| (h >> level) * (w >> level);
        let mut total = (base * emb + emb * emb) as u64 + conv(9, base, 3, hw(0));
        let mut ch = base;
        let mut skip_ch = vec![ch];
        for (level, &m) in self.mults.iter().enumerate() {
            for _ in 0..self.res_blocks {
                total += block(ch, m * base, hw(level));
                ch = m * base;
                skip_ch.push(ch);
            }
            if level + 1 < self.mults.len() {
                total += block(ch, ch, hw(level + 1));
                skip_ch.push(ch);
            }
        }
        let last = self.mults.len() - 1;
        let n = hw(last) as u64;
        total += 2 * block(ch, ch, hw(last));
        total += conv(ch, 3 * ch, 1, hw(last)) + 2 * n * n * ch as u64 + conv(ch, ch, 1, hw(last));
        for (level, &m) in self.mults.iter().enumerate().rev() {
            for _ in 0..=self.res_blocks {
                let s = skip_ch.pop().expect("skip bookkeeping");
                total += block(ch + s, m * base, hw(level));
                ch = m * base;
            }
            if level > 0 {
                total += block(ch, ch, hw(level - 1));
            }
        }
        total + conv(ch, 3, 3, hw(0))
    }

    /// Memory the activations of one training forward + backward of `images` inputs of
    /// `h × w` keep, bytes: what autodiff holds for the backward, per activation value of the
    /// residual blocks (their normalisations, activations and convolutions), and the middle
    /// attention's scores, which grow with the square of its tokens (the smoke D at 128² holds
    /// 64² tokens). Calibrated with `cargo bench --bench train_memory`.
    pub fn training_bytes(&self, images: usize, h: usize, w: usize) -> u64 {
        let (values, scores) = self.activation_values(h, w);
        let one = values.saturating_mul(BYTES_PER_ACTIVATION).saturating_add(scores.saturating_mul(BYTES_PER_SCORE));
        (images as u64).saturating_mul(one)
    }

    /// Activation values of one input's forward (residual blocks' outputs and the skips), and
    /// the middle attention's score values (heads × tokens²).
    fn activation_values(&self, h: usize, w: usize) -> (u64, u64) {
        let base = self.base;
        let hw = |level: usize| ((h >> level) * (w >> level)) as u64;
        let block = |cout: usize, hw: u64| cout as u64 * hw;
        let mut total = block(base, hw(0));
        let mut ch = base;
        let mut skips = vec![ch];
        for (level, &m) in self.mults.iter().enumerate() {
            for _ in 0..self.res_blocks {
                ch = m * base;
                total += block(ch, hw(level));
                skips.push(ch);
            }
            if level + 1 < self.mults.len() {
                total += block(ch, hw(level + 1));
                skips.push(ch);
            }
        }
        let last = self.mults.len() - 1;
        let n = hw(last);
        total += 2 * block(ch, n) + 5 * ch as u64 * n;
        for (level, &m) in self.mults.iter().enumerate().rev() {
            for _ in 0..=self.res_blocks {
                let s = skips.pop().unwrap_or(0);
                total += block(ch + s, hw(level)) / 2 + block(m * base, hw(level));
                ch = m * base;
            }
            if level > 0 {
                total += block(ch, hw(level - 1));
            }
        }
        (total, (self.attn_heads as u64).saturating_mul(n).saturating_mul(n))
    }

    /// D as the method uses it: conditioned on two restored images (9 input channels).
    pub fn init(&self, device: &Device) -> DiffusionUNet {
        self.init_for(2, device)
    }

    /// D conditioned on `conditions` restored images (3 + 3·conditions input channels).
    pub(crate) fn init_for(&self, conditions: usize, device: &Device) -> DiffusionUNet {
        super::init::materialize(self.init_lazy(conditions, device))
    }

    /// The network with burn's lazy parameters (nothing drawn until first use): for counting.
    pub(crate) fn init_lazy(&self, conditions: usize, device: &Device) -> DiffusionUNet {
        let base = self.base;
        let emb = 4 * base;
        let mut ch = base;
        let mut skip_ch = vec![ch];
        let mut down = Vec::new();
        let mut resample_down = Vec::new();
        for (level, &m) in self.mults.iter().enumerate() {
            for _ in 0..self.res_blocks {
                down.push(ResBlock::new(ch, m * base, emb, self.dropout, device));
                ch = m * base;
                skip_ch.push(ch);
            }
            if level + 1 < self.mults.len() {
                resample_down.push(ResBlock::new(ch, ch, emb, self.dropout, device).with_resample(Resample::Down));
                skip_ch.push(ch);
            }
        }
        let mid1 = ResBlock::new(ch, ch, emb, self.dropout, device);
        let attn = Attention::new(ch, self.attn_heads, device);
        let mid2 = ResBlock::new(ch, ch, emb, self.dropout, device);
        let mut up = Vec::new();
        let mut upsample = Vec::new();
        for (level, &m) in self.mults.iter().enumerate().rev() {
            for _ in 0..=self.res_blocks {
                let s = skip_ch.pop().expect("skip bookkeeping");
                up.push(ResBlock::new(ch + s, m * base, emb, self.dropout, device));
                ch = m * base;
            }
            if level > 0 {
                upsample.push(ResBlock::new(ch, ch, emb, self.dropout, device).with_resample(Resample::Up));
            }
        }
        DiffusionUNet {
            emb1: linear(base, emb, device),
            emb2: linear(emb, emb, device),
            input: conv_layer(3 + 3 * conditions, base, 3, device),
            down,
            resample_down,
            mid1,
            attn,
            mid2,
            up,
            upsample,
            out_norm: GroupNormConfig::new(group_count(ch), ch).init(device),
            out: conv_layer(ch, 3, 3, device),
            base,
            levels: self.mults.len(),
            res_blocks: self.res_blocks,
        }
    }
}

/// Spatial resampling done inside a residual block (between the first norm/activation and
/// the first convolution, on both the main and the skip path).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resample {
    None,
    Down,
    Up,
}

fn resample(x: Tensor<4>, r: Resample) -> Tensor<4> {
    match r {
        Resample::None => x,
        Resample::Down => avg_pool2x(x),
        Resample::Up => super::upsample2x_nearest(x),
    }
}

#[derive(Module, Debug)]
pub struct ResBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    film: Linear,
    norm2: GroupNorm,
    dropout: Dropout,
    conv2: Conv2d,
    skip: Option<Conv2d>,
    /// 0 none, 1 down, 2 up (a plain field: modules hold no enums of their own).
    resample: usize,
}

impl ResBlock {
    fn with_resample(mut self, r: Resample) -> Self {
        self.resample = match r {
            Resample::None => 0,
            Resample::Down => 1,
            Resample::Up => 2,
        };
        self
    }

    fn resample_kind(&self) -> Resample {
        match self.resample {
            1 => Resample::Down,
            2 => Resample::Up,
            _ => Resample::None,
        }
    }

    pub fn new(c_in: usize, c_out: usize, emb: usize, dropout: f64, device: &Device) -> Self {
        ResBlock {
            norm1: GroupNormConfig::new(group_count(c_in), c_in).init(device),
            conv1: conv_layer(c_in, c_out, 3, device),
            film: linear(emb, 2 * c_out, device),
            norm2: GroupNormConfig::new(group_count(c_out), c_out).init(device),
            dropout: DropoutConfig::new(dropout).init(),
            conv2: conv_layer(c_out, c_out, 3, device),
            skip: (c_in != c_out).then(|| conv_layer(c_in, c_out, 1, device)),
            resample: 0,
        }
    }

    /// `dropout`: the draws of a training forward and this block's index in D; `None` at
    /// inference.
    pub fn forward(&self, x: Tensor<4>, emb: Tensor<2>, dropout: Option<(&DropoutDraw, u64)>) -> Tensor<4> {
        let r = self.resample_kind();
        let h = conv(&self.conv1, resample(group_norm_act(&self.norm1, x.clone(), None, true), r));
        let x = resample(x, r);
        let [b, c, _, _] = h.dims();
        let ss = self.film.forward(silu(emb)).reshape([b, 2 * c, 1, 1]);
        let mut parts = ss.chunk(2, 1);
        let shift = parts.pop().expect("shift");
        let scale = parts.pop().expect("scale");
        let h = group_norm_act(&self.norm2, h, Some((scale, shift)), true);
        let h = match dropout {
            Some((draw, block)) if self.dropout.prob > 0.0 => h.clone() * draw.mask(block, self.dropout.prob, &h),
            _ => h,
        };
        let h = conv(&self.conv2, h);
        match &self.skip {
            Some(s) => conv(s, x) + h,
            None => x + h,
        }
    }
}

#[derive(Module, Debug)]
pub struct Attention {
    norm: GroupNorm,
    qkv: Conv2d,
    proj: Conv2d,
    heads: usize,
}

impl Attention {
    fn new(ch: usize, heads: usize, device: &Device) -> Self {
        let heads = if heads == 0 || ch % heads != 0 { 1 } else { heads };
        Attention {
            norm: GroupNormConfig::new(group_count(ch), ch).init(device),
            qkv: conv_layer(ch, 3 * ch, 1, device),
            proj: conv_layer(ch, ch, 1, device),
            heads,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let d = c / self.heads;
        let qkv =
            conv(&self.qkv, group_norm_act(&self.norm, x.clone(), None, false)).reshape([b, 3, self.heads, d, h * w]);
        let mut parts = qkv.chunk(3, 1);
        let v = parts.pop().expect("v").reshape([b, self.heads, d, h * w]);
        let k = parts.pop().expect("k").reshape([b, self.heads, d, h * w]);
        let q = parts.pop().expect("q").reshape([b, self.heads, d, h * w]);
        // scores[b, head, i, j] = q_i · k_j / sqrt(d)
        let scores = q.swap_dims(2, 3).matmul(k) / (d as f64).sqrt();
        let attn = softmax(scores, 3);
        let out = v.matmul(attn.swap_dims(2, 3)).reshape([b, c, h, w]);
        x + conv(&self.proj, out)
    }
}

#[derive(Module, Debug)]
pub struct DiffusionUNet {
    emb1: Linear,
    emb2: Linear,
    input: Conv2d,
    down: Vec<ResBlock>,
    mid1: ResBlock,
    attn: Attention,
    mid2: ResBlock,
    up: Vec<ResBlock>,
    resample_down: Vec<ResBlock>,
    upsample: Vec<ResBlock>,
    out_norm: GroupNorm,
    out: Conv2d,
    base: usize,
    levels: usize,
    res_blocks: usize,
}

impl DiffusionUNet {
    /// Predict ε from `x` = [ỹ, cond_A, cond_B] (9 channels) and per-sample γ (`[B]`), without
    /// dropout (inference, diagnostics).
    pub fn forward(&self, x: Tensor<4>, gamma: &[f32]) -> Tensor<4> {
        self.forward_with(x, gamma, None)
    }

    /// [`Self::forward`] with the dropout of training, drawn per row from `dropout`.
    pub(crate) fn forward_with(&self, x: Tensor<4>, gamma: &[f32], dropout: Option<&DropoutDraw>) -> Tensor<4> {
        let device = x.device();
        let emb = super::like(gamma_embedding(gamma, self.base, &device), x.dtype());
        let emb = self.emb2.forward(silu(self.emb1.forward(emb)));
        // Each residual block draws its own masks: block index k.
        let mut k = 0u64;
        let mut drop = || {
            k += 1;
            dropout.map(|d| (d, k))
        };

        let mut h = conv(&self.input, x);
        let mut skips = vec![h.clone()];
        let mut blocks = self.down.iter();
        let mut downs = self.resample_down.iter();
        for level in 0..self.levels {
            for _ in 0..self.res_blocks {
                h = blocks.next().expect("down block").forward(h, emb.clone(), drop());
                skips.push(h.clone());
            }
            if level + 1 < self.levels {
                h = downs.next().expect("down-sampling block").forward(h, emb.clone(), drop());
                skips.push(h.clone());
            }
        }
        h = self.mid1.forward(h, emb.clone(), drop());
        h = self.attn.forward(h);
        h = self.mid2.forward(h, emb.clone(), drop());
        let mut blocks = self.up.iter();
        let mut ups = self.upsample.iter();
        for level in (0..self.levels).rev() {
            for _ in 0..=self.res_blocks {
                let s = skips.pop().expect("skip");
                h = blocks.next().expect("up block").forward(Tensor::cat(vec![h, s], 1), emb.clone(), drop());
            }
            if level > 0 {
                h = ups.next().expect("up-sampling block").forward(h, emb.clone(), drop());
            }
        }
        conv(&self.out, group_norm_act(&self.out_norm, h, None, true))
    }
}

/// The dropout masks of one training forward of D, drawn per batch row from our own seeded
/// stream rather than burn's device RNG: row r of block k uses
/// `derive_seed(seed, "dropout", [rows[r], k])`, so a sample's masks do not depend on which
/// other rows share its batch (shards, devices) or on the order threads run in.
pub struct DropoutDraw {
    pub seed: u64,
    /// Identity of each row of the batch (its index in the whole step's batch).
    pub rows: Vec<u64>,
}

impl DropoutDraw {
    /// Inverted-dropout mask shaped like `like`: 0 with probability `p`, else 1/(1−p).
    fn mask(&self, block: u64, p: f64, like: &Tensor<4>) -> Tensor<4> {
        use rayon::prelude::*;
        let [b, c, h, w] = like.dims();
        assert_eq!(b, self.rows.len(), "dropout draws for {} rows, batch has {b}", self.rows.len());
        let per_row = c * h * w;
        let keep = (1.0 / (1.0 - p)) as f32;
        // Drop when a uniform 32-bit draw falls below p·2³².
        let threshold = (p.clamp(0.0, 1.0) * 4294967296.0) as u64;
        let mut v = vec![0f32; b * per_row];
        v.par_chunks_mut(per_row).zip(self.rows.par_iter()).for_each(|(row, &id)| {
            let mut rng = Rng::derive(self.seed, "dropout", &[id, block]);
            for pair in row.chunks_mut(2) {
                let r = rng.next_u64();
                for (j, x) in pair.iter_mut().enumerate() {
                    let u = (r >> (32 * j)) & 0xffff_ffff;
                    *x = if u < threshold { 0.0 } else { keep };
                }
            }
        });
        let m = Tensor::<4>::from_data(TensorData::new(v, [b, c, h, w]), &like.device());
        super::like(m, like.dtype())
    }
}

/// Sinusoidal embedding of the continuous noise level γ (scaled by 1000 so its range spans the
/// embedding's frequencies like a timestep would).
fn gamma_embedding(gamma: &[f32], dim: usize, device: &Device) -> Tensor<2> {
    let half = dim / 2;
    let mut data = Vec::with_capacity(gamma.len() * dim);
    for &g in gamma {
        let pos = g as f64 * 1000.0;
        let mut row = vec![0.0f32; dim];
        for i in 0..half {
            let freq = (-(10000f64.ln()) * i as f64 / half as f64).exp();
            row[i] = (pos * freq).sin() as f32;
            row[half + i] = (pos * freq).cos() as f32;
        }
        data.extend(row);
    }
    Tensor::from_data(TensorData::new(data, [gamma.len(), dim]), device)
}

/// Linear β schedule from METHOD.md: β from 1e-6 to 1e-2 over T = 1000 steps.
#[derive(Clone, Debug)]
pub struct NoiseSchedule {
    /// ᾱ_t for t = 0..=T, with ᾱ_0 = 1.
    pub alpha_bar: Vec<f64>,
}

impl NoiseSchedule {
    pub(crate) fn linear(t_max: usize, beta_start: f64, beta_end: f64) -> Self {
        let mut alpha_bar = Vec::with_capacity(t_max + 1);
        alpha_bar.push(1.0);
        let mut acc = 1.0;
        for i in 0..t_max {
            let beta = if t_max == 1 {
                beta_start
            } else {
                beta_start + (beta_end - beta_start) * i as f64 / (t_max - 1) as f64
            };
            acc *= 1.0 - beta;
            alpha_bar.push(acc);
        }
        NoiseSchedule { alpha_bar }
    }

    pub fn paper() -> Self {
        NoiseSchedule::linear(1000, 1e-6, 1e-2)
    }

    pub fn steps(&self) -> usize {
        self.alpha_bar.len() - 1
    }

    /// Draw t uniform in {t_lo..=t_hi} (clamped to 1..T−1), then γ uniform in (ᾱ_t, ᾱ_{t−1}).
    pub(crate) fn sample_gamma(&self, rng: &mut Rng, t_lo: usize, t_hi: usize) -> (usize, f64) {
        let hi = t_hi.min(self.steps() - 1).max(1);
        let lo = t_lo.clamp(1, hi);
        let t = lo + rng.below((hi - lo + 1) as u64) as usize;
        let g = rng.range(self.alpha_bar[t], self.alpha_bar[t - 1]);
        (t, g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_schedule_matches_method() {
        let s = NoiseSchedule::paper();
        assert_eq!(s.steps(), 1000);
        // METHOD.md: ᾱ_T ≈ 0.0066, the signal is never fully destroyed.
        let last = *s.alpha_bar.last().unwrap();
        assert!((last - 0.0066).abs() < 0.0003, "ᾱ_T = {last}");
        assert!(s.alpha_bar.windows(2).all(|w| w[1] < w[0]));
    }

    #[test]
    fn gamma_lies_between_neighbouring_alpha_bars() {
        let s = NoiseSchedule::paper();
        let mut rng = Rng::new(1);
        let mut seen_lo = false;
        let mut seen_hi = false;
        for _ in 0..20_000 {
            let (t, g) = s.sample_gamma(&mut rng, 1, 1000);
            assert!((1..=999).contains(&t));
            assert!(g >= s.alpha_bar[t] && g <= s.alpha_bar[t - 1], "t={t} γ={g}");
            seen_lo |= t < 50;
            seen_hi |= t > 950;
        }
        assert!(seen_lo && seen_hi, "full t range must be sampled");
        let (t, _) = s.sample_gamma(&mut rng, 900, 1000);
        assert!(t >= 900);
    }
}

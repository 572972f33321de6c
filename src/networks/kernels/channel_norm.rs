//! LayerNorm over the channels at each pixel (NAFNet's `LayerNorm2d`, Restormer's `WithBias`
//! and `BiasFree` LayerNorm), forward and backward, on plain slices (`[b, c, hw]`): one pass
//! over a block of pixels for the statistics and one for the output, blocks in parallel.
//! burn composes it from ten element-wise ops each way, each a pass over the whole tensor.

use super::gemm::SharedOut;
use super::vectorised;
use rayon::prelude::*;

/// Pixels per block: the statistics of a block stay in L1 while its channels stream by.
const BLOCK: usize = 512;

/// Shapes of one channel normalisation. `centred`: `(x − μ)/σ` (with bias), else `x/σ`
/// (Restormer's bias-free form; σ is still the centred deviation).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ChannelShape {
    pub b: usize,
    pub c: usize,
    pub hw: usize,
    pub eps: f32,
    pub centred: bool,
}

/// Blocks `(image, first pixel, last pixel)`, fixed by the shape alone (so the backward's sums
/// over blocks do not depend on the thread count).
fn blocks(s: ChannelShape) -> Vec<(usize, usize, usize)> {
    (0..s.b).flat_map(|i| (0..s.hw).step_by(BLOCK).map(move |p0| (i, p0, (p0 + BLOCK).min(s.hw)))).collect()
}

/// μ and 1/σ of each pixel of a block (biased variance, centred second pass, as PyTorch).
#[inline(always)]
fn stats(x: &[f32], s: ChannelShape, i: usize, (p0, p1): (usize, usize), mean: &mut [f32], inv: &mut [f32]) {
    let n = p1 - p0;
    let (mean, inv) = (&mut mean[..n], &mut inv[..n]);
    mean.fill(0.0);
    inv.fill(0.0);
    let row = |c: usize| &x[(i * s.c + c) * s.hw + p0..(i * s.c + c) * s.hw + p1];
    for c in 0..s.c {
        mean.iter_mut().zip(row(c)).for_each(|(m, &v)| *m += v);
    }
    let k = 1.0 / s.c as f32;
    mean.iter_mut().for_each(|m| *m *= k);
    for c in 0..s.c {
        inv.iter_mut().zip(row(c)).zip(&*mean).for_each(|((q, &v), &m)| *q += (v - m) * (v - m));
    }
    inv.iter_mut().for_each(|q| *q = 1.0 / (*q * k + s.eps).sqrt());
}

/// `y[c] = n(x)[c] · weight[c] + bias[c]`, with `n` the normalisation of [`ChannelShape`].
pub(crate) fn forward(x: &[f32], weight: &[f32], bias: &[f32], s: ChannelShape) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    let out = SharedOut(y.as_mut_ptr());
    blocks(s).into_par_iter().for_each(|(i, p0, p1)| {
        vectorised(|| {
            let (mut mean, mut inv) = ([0f32; BLOCK], [0f32; BLOCK]);
            stats(x, s, i, (p0, p1), &mut mean, &mut inv);
            let n = p1 - p0;
            let mu = if s.centred { 1.0 } else { 0.0 };
            for c in 0..s.c {
                let at = (i * s.c + c) * s.hw + p0;
                // SAFETY: block (i, p0..p1) alone writes these values of `y`, which outlives it.
                let yr = unsafe { std::slice::from_raw_parts_mut(out.ptr().add(at), n) };
                let (w, b) = (weight[c], bias[c]);
                for (((o, &v), &m), &q) in yr.iter_mut().zip(&x[at..at + n]).zip(&mean[..n]).zip(&inv[..n]) {
                    *o = (v - mu * m) * q * w + b;
                }
            }
        })
    });
    y
}

/// The gradients `(dx, dweight, dbias)` of [`forward`] from the output gradient `g`.
pub(crate) fn backward(x: &[f32], weight: &[f32], g: &[f32], s: ChannelShape) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut dx = vec![0f32; x.len()];
    let out = SharedOut(dx.as_mut_ptr());
    let parts: Vec<Vec<f32>> = blocks(s)
        .into_par_iter()
        .map(|(i, p0, p1)| {
            vectorised(|| {
                let (mut mean, mut inv) = ([0f32; BLOCK], [0f32; BLOCK]);
                stats(x, s, i, (p0, p1), &mut mean, &mut inv);
                let n = p1 - p0;
                let (mean, inv) = (&mean[..n], &inv[..n]);
                let mu = if s.centred { 1.0 } else { 0.0 };
                fn rows(v: &[f32], at: usize, n: usize) -> &[f32] {
                    &v[at..at + n]
                }
                let at = |c: usize| (i * s.c + c) * s.hw + p0;
                // Per pixel: Σ_c g·w and Σ_c g·w·x̂ (x̂ the normalised value).
                let (mut s1, mut s2) = ([0f32; BLOCK], [0f32; BLOCK]);
                // Per channel: Σ_p g·x̂ (dweight) and Σ_p g (dbias).
                let mut dwb = vec![0f32; 2 * s.c];
                for c in 0..s.c {
                    let (xr, gr, w) = (rows(x, at(c), n), rows(g, at(c), n), weight[c]);
                    let (mut a, mut b) = (0f32, 0f32);
                    for p in 0..n {
                        let xh = (xr[p] - mu * mean[p]) * inv[p];
                        s1[p] += gr[p] * w;
                        s2[p] += gr[p] * w * xh;
                        a += gr[p] * xh;
                        b += gr[p];
                    }
                    dwb[c] = a;
                    dwb[s.c + c] = b;
                }
                let k = 1.0 / s.c as f32;
                for c in 0..s.c {
                    let (xr, gr, w) = (rows(x, at(c), n), rows(g, at(c), n), weight[c]);
                    // SAFETY: block (i, p0..p1) alone writes these values of `dx`.
                    let d = unsafe { std::slice::from_raw_parts_mut(out.ptr().add(at(c)), n) };
                    for p in 0..n {
                        let xh = (xr[p] - mu * mean[p]) * inv[p];
                        d[p] = if s.centred {
                            // inv · (g·w − mean(g·w) − x̂ · mean(g·w·x̂))
                            inv[p] * (gr[p] * w - k * s1[p] - xh * k * s2[p])
                        } else {
                            // d(x·inv)/dx: inv · g·w − inv · (x − μ)·inv · mean(g·w·x̂)
                            inv[p] * (gr[p] * w - (xr[p] - mean[p]) * inv[p] * k * s2[p])
                        };
                    }
                }
                dwb
            })
        })
        .collect();
    let mut total = vec![0f32; 2 * s.c];
    for part in parts {
        total.iter_mut().zip(&part).for_each(|(t, v)| *t += v);
    }
    let db = total.split_off(s.c);
    (dx, total, db)
}

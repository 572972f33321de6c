//! GroupNorm, then a per-(sample, channel) multiply-add (γ, β and FiLM folded), then an
//! activation — one pass forward and two backward, one rayon job per (sample, group).

use super::pointwise::{Act, sum, sum_by};
use rayon::prelude::*;

/// Shapes of one normalisation: `x` is `[b, c, hw]`, `mul` and `add` are `[b, c]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NormShape {
    pub b: usize,
    pub c: usize,
    pub hw: usize,
    pub groups: usize,
    pub eps: f32,
}

impl NormShape {
    fn per_group(&self) -> usize {
        self.c / self.groups
    }
}

/// Mean and 1/σ of one group (biased variance, centred second pass, as burn's GroupNorm).
fn stats(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = sum(x) / n;
    let var = sum_by(x, |v| (v - mean) * (v - mean)) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// `y = act(x·m + a)` over one channel, one monomorphic loop per activation (so each vectorises).
#[inline(always)]
fn affine_act(x: &[f32], y: &mut [f32], m: f32, a: f32, act: Act) {
    let it = y.iter_mut().zip(x);
    match act {
        Act::Identity => it.for_each(|(y, &x)| *y = x * m + a),
        Act::Silu => it.for_each(|(y, &x)| *y = Act::Silu.f(x * m + a)),
        Act::LeakyRelu(s) => it.for_each(|(y, &x)| *y = Act::LeakyRelu(s).f(x * m + a)),
    }
}

/// `gz = gy · act'(x·m + a)` over one channel, one monomorphic loop per activation.
#[inline(always)]
fn grad_through_act(x: &[f32], gy: &[f32], gz: &mut [f32], m: f32, a: f32, act: Act) {
    let it = gz.iter_mut().zip(x).zip(gy);
    match act {
        Act::Identity => it.for_each(|((o, _), &g)| *o = g),
        Act::Silu => it.for_each(|((o, &x), &g)| *o = g * Act::Silu.df(x * m + a)),
        Act::LeakyRelu(s) => it.for_each(|((o, &x), &g)| *o = g * Act::LeakyRelu(s).df(x * m + a)),
    }
}

/// `(Σ g, Σ g·x)` in eight lanes (vectorisable).
fn sums(g: &[f32], x: &[f32]) -> (f32, f32) {
    let (mut a, mut b) = ([0f32; 8], [0f32; 8]);
    let n8 = g.len() / 8 * 8;
    for (gc, xc) in g[..n8].chunks_exact(8).zip(x[..n8].chunks_exact(8)) {
        for l in 0..8 {
            a[l] += gc[l];
            b[l] += gc[l] * xc[l];
        }
    }
    let tail = g[n8..].iter().zip(&x[n8..]);
    let (ta, tb) = tail.fold((0f32, 0f32), |(p, q), (&g, &x)| (p + g, q + g * x));
    (a.iter().sum::<f32>() + ta, b.iter().sum::<f32>() + tb)
}

/// `act((x − μ_g)/σ_g · mul + add)`.
pub(crate) fn forward(x: &[f32], mul: &[f32], add: &[f32], s: NormShape, act: Act) -> Vec<f32> {
    let (cg, hw) = (s.per_group(), s.hw);
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(cg * hw).zip(x.par_chunks(cg * hw)).zip(mul.par_chunks(cg)).zip(add.par_chunks(cg)).for_each(
        |(((o, x), mul), add)| {
            let (mean, rstd) = stats(x, s.eps);
            for j in 0..cg {
                let m = mul[j] * rstd;
                affine_act(&x[j * hw..(j + 1) * hw], &mut o[j * hw..(j + 1) * hw], m, add[j] - mean * m, act);
            }
        },
    );
    out
}

/// Gradients of [`forward`] given the output gradient `gy`: `(dx, dmul, dadd)`.
///
/// With x̂ the normalised input, z = x̂·mul + add and gz = gy·act'(z): dadd = Σ gz,
/// dmul = Σ gz·x̂ (per sample and channel), and per group, with ĝ = gz·mul,
/// dx = (ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)) / σ.
pub(crate) fn backward(
    x: &[f32],
    mul: &[f32],
    add: &[f32],
    gy: &[f32],
    s: NormShape,
    act: Act,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (cg, hw) = (s.per_group(), s.hw);
    let mut dx = vec![0f32; x.len()];
    let mut dmul = vec![0f32; s.b * s.c];
    let mut dadd = vec![0f32; s.b * s.c];
    dx.par_chunks_mut(cg * hw)
        .zip(dmul.par_chunks_mut(cg))
        .zip(dadd.par_chunks_mut(cg))
        .zip(x.par_chunks(cg * hw).zip(gy.par_chunks(cg * hw)))
        .zip(mul.par_chunks(cg).zip(add.par_chunks(cg)))
        .for_each(|((((dx, dmul), dadd), (x, gy)), (mul, add))| {
            let (mean, rstd) = stats(x, s.eps);
            // Σ ĝ and Σ ĝ·x̂ over the group, from per-channel sums (ĝ = gz·mul is gz scaled).
            let (mut s1, mut s2) = (0f32, 0f32);
            for j in 0..cg {
                let range = j * hw..(j + 1) * hw;
                let (xs, gz) = (&x[range.clone()], &mut dx[range.clone()]);
                let mm = mul[j] * rstd;
                // gz = gy · act'(z), written where dx will go.
                grad_through_act(xs, &gy[range], gz, mm, add[j] - mean * mm, act);
                let (sum_gz, sum_gz_x) = sums(gz, xs);
                let sum_gz_xh = rstd * (sum_gz_x - mean * sum_gz);
                dadd[j] = sum_gz;
                dmul[j] = sum_gz_xh;
                s1 += mul[j] * sum_gz;
                s2 += mul[j] * sum_gz_xh;
            }
            let n = (cg * hw) as f32;
            let (m1, m2) = (s1 / n, s2 / n);
            for j in 0..cg {
                let range = j * hw..(j + 1) * hw;
                let m0 = mul[j];
                for (d, &xv) in dx[range.clone()].iter_mut().zip(&x[range]) {
                    let xh = (xv - mean) * rstd;
                    *d = rstd * (*d * m0 - m1 - xh * m2);
                }
            }
        });
    (dx, dmul, dadd)
}

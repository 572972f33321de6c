//! Element-wise kernels on plain slices: a vectorisable exponential, the activations and their
//! derivatives, parallel over chunks.

use rayon::prelude::*;

/// Element-wise work is split in chunks this long (64 KiB of f32) over rayon.
pub(crate) const CHUNK: usize = 16 * 1024;

/// An activation with its derivative, both in terms of the activation's input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Act {
    Identity,
    /// `x · sigmoid(x)`.
    Silu,
    /// `x` for x > 0, `slope · x` otherwise (burn's convention at 0).
    LeakyRelu(f32),
}

impl Act {
    #[inline(always)]
    pub(crate) fn f(self, x: f32) -> f32 {
        match self {
            Act::Identity => x,
            Act::Silu => x * sigmoid(x),
            Act::LeakyRelu(a) => {
                if x > 0.0 {
                    x
                } else {
                    a * x
                }
            }
        }
    }

    #[inline(always)]
    pub(crate) fn df(self, x: f32) -> f32 {
        match self {
            Act::Identity => 1.0,
            Act::Silu => {
                let s = sigmoid(x);
                s * (1.0 + x * (1.0 - s))
            }
            Act::LeakyRelu(a) => {
                if x > 0.0 {
                    1.0
                } else {
                    a
                }
            }
        }
    }
}

/// `x ← act(x)` on one slice, on this thread (an epilogue on data still in cache).
#[inline]
pub(crate) fn apply_in_place(x: &mut [f32], act: Act) {
    match act {
        Act::Identity => {}
        Act::Silu => x.iter_mut().for_each(|v| *v = Act::Silu.f(*v)),
        Act::LeakyRelu(a) => x.iter_mut().for_each(|v| *v = Act::LeakyRelu(a).f(*v)),
    }
}

/// `act(x)`, chunks in parallel.
pub(crate) fn forward(x: &[f32], act: Act) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(y, x)| match act {
        // One monomorphic loop per activation, so each vectorises.
        Act::Identity => y.copy_from_slice(x),
        Act::Silu => y.iter_mut().zip(x).for_each(|(y, &x)| *y = Act::Silu.f(x)),
        Act::LeakyRelu(a) => y.iter_mut().zip(x).for_each(|(y, &x)| *y = Act::LeakyRelu(a).f(x)),
    });
    out
}

/// `grad · act'(x)`, chunks in parallel.
pub(crate) fn backward(x: &[f32], grad: &[f32], act: Act) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).zip(grad.par_chunks(CHUNK)).for_each(|((o, x), g)| {
        let it = o.iter_mut().zip(x).zip(g);
        match act {
            Act::Identity => it.for_each(|((o, _), &g)| *o = g),
            Act::Silu => it.for_each(|((o, &x), &g)| *o = g * Act::Silu.df(x)),
            Act::LeakyRelu(a) => it.for_each(|((o, &x), &g)| *o = g * Act::LeakyRelu(a).df(x)),
        }
    });
    out
}

/// `s ← s · a + t · b` in parallel (the weight average's update).
pub(crate) fn blend(s: &mut [f32], t: &[f32], a: f32, b: f32) {
    s.par_chunks_mut(CHUNK).zip(t.par_chunks(CHUNK)).for_each(|(s, t)| {
        super::vectorised(|| {
            let t = &t[..s.len()];
            for i in 0..s.len() {
                s[i] = s[i] * a + t[i] * b;
            }
        })
    });
}

/// A sum LLVM can vectorise (eight independent partial sums instead of one serial chain).
pub(crate) fn sum(xs: &[f32]) -> f32 {
    sum_by(xs, |v| v)
}

/// `Σ f(x)` in eight lanes, like [`sum`].
#[inline(always)]
pub(crate) fn sum_by(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().map(|&v| f(v)).sum::<f32>()
}

/// `Σ a·b` in eight lanes, like [`sum`].
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `1 / (1 + e^-x)` with an exponential LLVM can vectorise (see [`exp`]).
#[inline(always)]
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// `e^x` in f32 to ≈ 2 ulp, branch-free so that loops over it vectorise (libm's `expf` is a
/// call per element): x = n·ln2 + r with |r| ≤ ln2/2, e^r by a degree-6 polynomial, 2ⁿ by
/// building the exponent bits. Inputs are clamped to [−87.3, 88] (2ⁿ stays a normal f32; e^x
/// under- or overflows there anyway, and SiLU's results are exact).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
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

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Each activation's derivative is its slope (central differences in f64 terms).
    #[test]
    fn derivatives_match_finite_differences() {
        for act in [Act::Identity, Act::Silu, Act::LeakyRelu(0.2)] {
            for i in -60..=60 {
                let x = i as f32 * 0.1 + 0.05;
                let h = 1e-3f32;
                let fd = (act.f(x + h) - act.f(x - h)) / (2.0 * h);
                assert!((fd - act.df(x)).abs() < 2e-3, "{act:?} at {x}: {fd} vs {}", act.df(x));
            }
        }
    }
}

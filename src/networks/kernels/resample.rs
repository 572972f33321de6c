//! ×2 resampling kernels on plain slices (NCHW planes, contiguous), one rayon job per plane:
//! bilinear and nearest up-sampling, 2×2 average pooling, and their adjoints.

use rayon::prelude::*;

/// The three ×2 resamplings the networks use.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Resample2x {
    /// Bilinear up-sampling, `align_corners = false` (PyTorch's default): each output sample is
    /// ¾ of its nearer and ¼ of its farther input neighbour, edges clamped.
    Bilinear,
    /// Nearest up-sampling: each input sample repeated 2×2.
    Nearest,
    /// 2×2 average pooling (even sizes).
    AvgPool,
}

impl Resample2x {
    /// Output plane size for an `h × w` input.
    pub(crate) fn out_size(self, h: usize, w: usize) -> (usize, usize) {
        match self {
            Resample2x::Bilinear | Resample2x::Nearest => (2 * h, 2 * w),
            Resample2x::AvgPool => (h / 2, w / 2),
        }
    }
}

/// The two inputs of bilinear output `o` along an axis of length `n`: (nearer, farther).
#[inline(always)]
fn bilinear_taps(o: usize, n: usize) -> (usize, usize) {
    let i = o / 2;
    if o % 2 == 0 { (i, i.saturating_sub(1)) } else { (i, (i + 1).min(n - 1)) }
}

/// Apply `kind` to `planes` planes of `h × w`.
pub(crate) fn forward(x: &[f32], planes: usize, h: usize, w: usize, kind: Resample2x) -> Vec<f32> {
    let (oh, ow) = kind.out_size(h, w);
    let mut out = vec![0f32; planes * oh * ow];
    if out.is_empty() {
        return out;
    }
    out.par_chunks_mut(oh * ow).zip(x.par_chunks(h * w)).for_each(|(o, x)| match kind {
        Resample2x::Bilinear => {
            // Horizontal pass into `t` (h × 2w), then vertical rows (whole-row multiply-adds).
            let mut t = vec![0f32; h * ow];
            for (xr, tr) in x.chunks(w).zip(t.chunks_mut(ow)) {
                for (ox, v) in tr.iter_mut().enumerate() {
                    let (a, b) = bilinear_taps(ox, w);
                    *v = 0.75 * xr[a] + 0.25 * xr[b];
                }
            }
            for (oy, orow) in o.chunks_mut(ow).enumerate() {
                let (a, b) = bilinear_taps(oy, h);
                let (ra, rb) = (&t[a * ow..(a + 1) * ow], &t[b * ow..(b + 1) * ow]);
                for ((v, &p), &q) in orow.iter_mut().zip(ra).zip(rb) {
                    *v = 0.75 * p + 0.25 * q;
                }
            }
        }
        Resample2x::Nearest => {
            for (oy, orow) in o.chunks_mut(ow).enumerate() {
                let xr = &x[(oy / 2) * w..(oy / 2 + 1) * w];
                for (pair, &v) in orow.chunks_exact_mut(2).zip(xr) {
                    pair[0] = v;
                    pair[1] = v;
                }
            }
        }
        Resample2x::AvgPool => {
            for (oy, orow) in o.chunks_mut(ow).enumerate() {
                let (r0, r1) = (&x[2 * oy * w..(2 * oy + 1) * w], &x[(2 * oy + 1) * w..(2 * oy + 2) * w]);
                for (ox, v) in orow.iter_mut().enumerate() {
                    *v = 0.25 * (r0[2 * ox] + r0[2 * ox + 1] + r1[2 * ox] + r1[2 * ox + 1]);
                }
            }
        }
    });
    out
}

/// The adjoint of [`forward`]: the input gradient from the output gradient `g`.
pub(crate) fn backward(g: &[f32], planes: usize, h: usize, w: usize, kind: Resample2x) -> Vec<f32> {
    let (oh, ow) = kind.out_size(h, w);
    let mut dx = vec![0f32; planes * h * w];
    if dx.is_empty() {
        return dx;
    }
    dx.par_chunks_mut(h * w).zip(g.par_chunks(oh * ow)).for_each(|(d, g)| match kind {
        Resample2x::Bilinear => {
            // Adjoint of the vertical pass into `t` (h × 2w), then of the horizontal pass.
            let mut t = vec![0f32; h * ow];
            for (oy, grow) in g.chunks(ow).enumerate() {
                let (a, b) = bilinear_taps(oy, h);
                for (v, &q) in t[a * ow..(a + 1) * ow].iter_mut().zip(grow) {
                    *v += 0.75 * q;
                }
                for (v, &q) in t[b * ow..(b + 1) * ow].iter_mut().zip(grow) {
                    *v += 0.25 * q;
                }
            }
            for (dr, tr) in d.chunks_mut(w).zip(t.chunks(ow)) {
                for (ox, &q) in tr.iter().enumerate() {
                    let (a, b) = bilinear_taps(ox, w);
                    dr[a] += 0.75 * q;
                    dr[b] += 0.25 * q;
                }
            }
        }
        Resample2x::Nearest => {
            for (y, drow) in d.chunks_mut(w).enumerate() {
                let (g0, g1) = (&g[2 * y * ow..(2 * y + 1) * ow], &g[(2 * y + 1) * ow..(2 * y + 2) * ow]);
                for (x, v) in drow.iter_mut().enumerate() {
                    *v = g0[2 * x] + g0[2 * x + 1] + g1[2 * x] + g1[2 * x + 1];
                }
            }
        }
        Resample2x::AvgPool => {
            for (y, drow) in d.chunks_mut(w).enumerate() {
                let grow = &g[(y / 2) * ow..(y / 2 + 1) * ow];
                for (pair, &q) in drow.chunks_exact_mut(2).zip(grow) {
                    pair[0] = 0.25 * q;
                    pair[1] = 0.25 * q;
                }
            }
        }
    });
    dx
}

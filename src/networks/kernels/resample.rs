//! ×2 resampling kernels on plain slices (NCHW planes, contiguous), one rayon job per plane:
//! bilinear and nearest up-sampling, 2×2 average pooling, and their adjoints.

use rayon::prelude::*;

/// The three ×2 resamplings the networks use.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Resample2x {
    /// Bilinear up-sampling, `align_corners = false` (PyTorch's default): each output sample is
    /// ¾ of its nearer and ¼ of its farther input neighbour, edges clamped.
    Bilinear,
    /// Bilinear up-sampling, `align_corners = true` (the authors' `nn.Upsample` in UNet-S):
    /// output sample `j` of `2n` reads the input at `j·(n−1)/(2n−1)`.
    BilinearAligned,
    /// Nearest up-sampling: each input sample repeated 2×2.
    Nearest,
    /// 2×2 average pooling (even sizes).
    AvgPool,
}

impl Resample2x {
    /// Output plane size for an `h × w` input.
    pub(crate) fn out_size(self, h: usize, w: usize) -> (usize, usize) {
        match self {
            Resample2x::Bilinear | Resample2x::BilinearAligned | Resample2x::Nearest => (2 * h, 2 * w),
            Resample2x::AvgPool => (h / 2, w / 2),
        }
    }
}

/// Bilinear output `o` of an axis of `n` inputs reads `wa·x[a] + wb·x[b]`: one `(a, b, wa, wb)`
/// per output, computed once per call (both passes and the adjoint read the same table).
fn bilinear_taps(n: usize, aligned: bool) -> Vec<(usize, usize, f32, f32)> {
    (0..2 * n)
        .map(|o| {
            if aligned {
                // Position i + f = o·(n−1)/(2n−1), in f64 (as the index-select form).
                let pos = if n > 1 { o as f64 * (n - 1) as f64 / (2 * n - 1) as f64 } else { 0.0 };
                let i = (pos as usize).min(n - 1);
                let f = (pos - i as f64) as f32;
                (i, (i + 1).min(n - 1), 1.0 - f, f)
            } else {
                // ¾ of the nearer input, ¼ of the farther, edges clamped.
                let i = o / 2;
                let far = if o % 2 == 0 { i.saturating_sub(1) } else { (i + 1).min(n - 1) };
                (i, far, 0.75, 0.25)
            }
        })
        .collect()
}

/// Apply `kind` to `planes` planes of `h × w`.
pub(crate) fn forward(x: &[f32], planes: usize, h: usize, w: usize, kind: Resample2x) -> Vec<f32> {
    let (oh, ow) = kind.out_size(h, w);
    let mut out = vec![0f32; planes * oh * ow];
    if out.is_empty() {
        return out;
    }
    let aligned = kind == Resample2x::BilinearAligned;
    let bilinear = matches!(kind, Resample2x::Bilinear | Resample2x::BilinearAligned);
    let (tx, ty) = if bilinear { (bilinear_taps(w, aligned), bilinear_taps(h, aligned)) } else { Default::default() };
    out.par_chunks_mut(oh * ow).zip(x.par_chunks(h * w)).for_each(|(o, x)| match kind {
        Resample2x::Bilinear | Resample2x::BilinearAligned => {
            // Horizontal pass into `t` (h × 2w), then vertical rows (whole-row multiply-adds).
            let mut t = vec![0f32; h * ow];
            for (xr, tr) in x.chunks(w).zip(t.chunks_mut(ow)) {
                for (v, &(a, b, wa, wb)) in tr.iter_mut().zip(&tx) {
                    *v = wa * xr[a] + wb * xr[b];
                }
            }
            for (orow, &(a, b, wa, wb)) in o.chunks_mut(ow).zip(&ty) {
                let (ra, rb) = (&t[a * ow..(a + 1) * ow], &t[b * ow..(b + 1) * ow]);
                for ((v, &p), &q) in orow.iter_mut().zip(ra).zip(rb) {
                    *v = wa * p + wb * q;
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
    let aligned = kind == Resample2x::BilinearAligned;
    let bilinear = matches!(kind, Resample2x::Bilinear | Resample2x::BilinearAligned);
    let (tx, ty) = if bilinear { (bilinear_taps(w, aligned), bilinear_taps(h, aligned)) } else { Default::default() };
    dx.par_chunks_mut(h * w).zip(g.par_chunks(oh * ow)).for_each(|(d, g)| match kind {
        Resample2x::Bilinear | Resample2x::BilinearAligned => {
            // Adjoint of the vertical pass into `t` (h × 2w), then of the horizontal pass.
            let mut t = vec![0f32; h * ow];
            for (grow, &(a, b, wa, wb)) in g.chunks(ow).zip(&ty) {
                for (v, &q) in t[a * ow..(a + 1) * ow].iter_mut().zip(grow) {
                    *v += wa * q;
                }
                for (v, &q) in t[b * ow..(b + 1) * ow].iter_mut().zip(grow) {
                    *v += wb * q;
                }
            }
            for (dr, tr) in d.chunks_mut(w).zip(t.chunks(ow)) {
                for (&q, &(a, b, wa, wb)) in tr.iter().zip(&tx) {
                    dr[a] += wa * q;
                    dr[b] += wb * q;
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

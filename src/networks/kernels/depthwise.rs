//! The depthwise k×k convolution (one filter per channel, stride 1, zero padding k/2: NAFNet's
//! and Restormer's 3×3 `dwconv`), forward and backward, on plain slices (NCHW): per plane, each
//! tap is one shifted multiply-add over a row, planes in parallel. burn's flex runs a grouped
//! convolution as one small convolution per group.

use super::gemm::SharedOut;
use super::pointwise::{dot, sum};
use super::vectorised;
use rayon::prelude::*;

/// Shapes of one depthwise convolution: `x` is `[b, c, h, w]`, the weight `[c, 1, k, k]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DepthShape {
    pub b: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
}

/// Each tap `(index, dy, dx)` with the output rows and columns whose source is in the image:
/// rows `[y0, y1)`, columns `[x0, x1)`.
fn taps(s: DepthShape) -> impl Iterator<Item = (usize, isize, isize, (usize, usize), (usize, usize))> {
    let p = (s.k / 2) as isize;
    let (h, w) = (s.h as isize, s.w as isize);
    (0..s.k * s.k).filter_map(move |t| {
        let (dy, dx) = ((t / s.k) as isize - p, (t % s.k) as isize - p);
        let (y0, y1) = ((-dy).clamp(0, h) as usize, (h - dy).clamp(0, h) as usize);
        let (x0, x1) = ((-dx).clamp(0, w) as usize, (w - dx).clamp(0, w) as usize);
        (y0 < y1 && x0 < x1).then_some((t, dy, dx, (y0, y1), (x0, x1)))
    })
}

/// `y[i][c] = bias[c] + Σ_taps weight[c][t] · shift_t(x[i][c])`.
pub(crate) fn forward(x: &[f32], weight: &[f32], bias: &[f32], s: DepthShape) -> Vec<f32> {
    let (hw, kk) = (s.h * s.w, s.k * s.k);
    let mut y = vec![0f32; x.len()];
    y.par_chunks_mut(hw).zip(x.par_chunks(hw)).enumerate().for_each(|(plane, (out, src))| {
        let ch = plane % s.c;
        let wt = &weight[ch * kk..(ch + 1) * kk];
        vectorised(|| {
            out.fill(bias[ch]);
            for (t, dy, dx, (y0, y1), (x0, x1)) in taps(s) {
                let wv = wt[t];
                for yy in y0..y1 {
                    let sy = (yy as isize + dy) as usize;
                    let (o, r) = (&mut out[yy * s.w + x0..yy * s.w + x1], &src[sy * s.w..(sy + 1) * s.w]);
                    let r = &r[(x0 as isize + dx) as usize..(x1 as isize + dx) as usize];
                    o.iter_mut().zip(r).for_each(|(o, &v)| *o += wv * v);
                }
            }
        })
    });
    y
}

/// The gradients `(dx, dweight, dbias)` of [`forward`] from the output gradient `g` (`dx` only
/// when asked). The weight and bias gradients sum over images in image order per channel, so
/// they do not depend on the thread count.
pub(crate) fn backward(
    x: &[f32],
    weight: &[f32],
    g: &[f32],
    s: DepthShape,
    want_dx: bool,
) -> (Option<Vec<f32>>, Vec<f32>, Vec<f32>) {
    let (hw, kk) = (s.h * s.w, s.k * s.k);
    let mut dx = if want_dx { vec![0f32; x.len()] } else { Vec::new() };
    let out = SharedOut(dx.as_mut_ptr());
    // Per channel: (dweight[c], dbias[c]) over the images in order; dx of each of its planes.
    let per_channel: Vec<(Vec<f32>, f32)> = (0..s.c)
        .into_par_iter()
        .map(|ch| {
            vectorised(|| {
                let wt = &weight[ch * kk..(ch + 1) * kk];
                let (mut dw, mut db) = (vec![0f32; kk], 0f32);
                for i in 0..s.b {
                    let at = (i * s.c + ch) * hw;
                    let (src, gp) = (&x[at..at + hw], &g[at..at + hw]);
                    db += sum(gp);
                    for (t, dy, dx_, (y0, y1), (x0, x1)) in taps(s) {
                        let mut acc = 0f32;
                        for yy in y0..y1 {
                            let sy = (yy as isize + dy) as usize;
                            let (sx0, sx1) = ((x0 as isize + dx_) as usize, (x1 as isize + dx_) as usize);
                            let gr = &gp[yy * s.w + x0..yy * s.w + x1];
                            let r = &src[sy * s.w + sx0..sy * s.w + sx1];
                            acc += dot(gr, r);
                            if want_dx {
                                // SAFETY: plane (i, ch) of `dx` is written by this channel's job
                                // alone, and `dx` outlives the jobs.
                                let d = unsafe {
                                    std::slice::from_raw_parts_mut(out.ptr().add(at + sy * s.w + sx0), sx1 - sx0)
                                };
                                d.iter_mut().zip(gr).for_each(|(d, &v)| *d += wt[t] * v);
                            }
                        }
                        dw[t] += acc;
                    }
                }
                (dw, db)
            })
        })
        .collect();
    let mut dw = Vec::with_capacity(s.c * kk);
    let mut db = Vec::with_capacity(s.c);
    for (w, b) in per_channel {
        dw.extend(w);
        db.push(b);
    }
    (want_dx.then_some(dx), dw, db)
}

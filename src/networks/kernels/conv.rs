//! The convolution kernels on plain slices (NCHW, contiguous): banded im2col and gemm, or
//! Winograd F(2×2, 3×3) ([`super::winograd`]) for 3×3 layers with enough channels.

use super::Geometry;
use super::gemm::{SharedOut, gemm, gemm_raw, release, scratch};
use super::pointwise::{Act, CHUNK, apply_in_place, sum};
use super::winograd;
use rayon::prelude::*;

/// One kernel tap of one input channel: its im2col row, and where it reads inside the image.
/// Both the image plane and the im2col row are row-major `h × w`, so over output rows
/// `[y0, y1)` the tap reads one contiguous run of the plane at offset `shift`, except the values
/// in columns outside `[x0, x1)`, which wrap across a row end (they read outside the image, so
/// they are zero).
struct Tap {
    channel: usize,
    row: usize,
    x0: usize,
    x1: usize,
    y0: usize,
    y1: usize,
    shift: isize,
}

/// Zero the columns outside `[x0, x1)` of rows `[y0, y1)` of a row-major `· × w` plane.
fn zero_columns(plane: &mut [f32], w: usize, (x0, x1): (usize, usize), (y0, y1): (usize, usize)) {
    for column in (0..x0).chain(x1..w) {
        plane[y0 * w + column..].iter_mut().step_by(w).take(y1 - y0).for_each(|v| *v = 0.0);
    }
}

/// Every (input channel, tap) of a "same" convolution with a non-empty reach (a tap whose
/// reach is empty, possible on images smaller than the kernel, is left out).
fn taps(g: Geometry) -> impl Iterator<Item = Tap> {
    let (h, w, k) = (g.h as isize, g.w as isize, g.k);
    let p = (k / 2) as isize;
    (0..g.ci * k * k).filter_map(move |row| {
        let (channel, ky, kx) = (row / (k * k), (row / k) % k, row % k);
        let (dy, dx) = (ky as isize - p, kx as isize - p);
        let (y0, y1) = ((-dy).clamp(0, h) as usize, (h - dy).clamp(0, h) as usize);
        let (x0, x1) = ((-dx).clamp(0, w) as usize, (w - dx).clamp(0, w) as usize);
        (y0 < y1 && x0 < x1).then(|| Tap { channel, row, x0, x1, y0, y1, shift: dy * w + dx })
    })
}

/// im2col for one image: `cols[(c·k + ky)·k + kx][y·w + x] = x[c][y + ky − k/2][x + kx − k/2]`,
/// zero outside the image: one contiguous copy per tap, then the wrapped values zeroed (a copy
/// per image row would be a `memcpy` call per 32 values).
fn im2col(x: &[f32], g: Geometry, cols: &mut [f32]) {
    im2col_rows(x, g, (0, g.h), cols);
}

/// [`im2col`] of the output rows `[r0, r1)` only: `cols` holds `kk` rows of `(r1 − r0)·w`
/// values (a band of the full matrix). Bands keep the matrix a few MB — in cache, and not the
/// whole image's k²-fold copy (1.2 GB for a 64-channel layer of a 669×761 photo).
fn im2col_rows(x: &[f32], g: Geometry, (r0, r1): (usize, usize), cols: &mut [f32]) {
    let (hw, n) = (g.hw(), (r1 - r0) * g.w);
    let mut next_row = 0;
    for t in taps(g) {
        let (ys, ye) = (t.y0.max(r0), t.y1.min(r1));
        cols[next_row * n..t.row * n].fill(0.0);
        next_row = t.row + 1;
        let row = &mut cols[t.row * n..(t.row + 1) * n];
        if ys >= ye {
            row.fill(0.0);
            continue;
        }
        // The tap's contiguous run over the band's outputs, in band coordinates.
        let (start, end) = (ys * g.w + t.x0, (ye - 1) * g.w + t.x1);
        let (ls, le) = (start - r0 * g.w, end - r0 * g.w);
        let plane = &x[t.channel * hw..(t.channel + 1) * hw];
        let src = (start as isize + t.shift) as usize;
        row[..ls].fill(0.0);
        row[ls..le].copy_from_slice(&plane[src..src + (end - start)]);
        row[le..].fill(0.0);
        zero_columns(row, g.w, (t.x0, t.x1), (ys - r0, ye - r0));
    }
    cols[next_row * n..g.kk() * n].fill(0.0);
}

/// Output rows per band of the banded forward: the whole image when its im2col is at most
/// 8 MB (the deep, low-resolution layers: one gemm packs their large weight matrix once, not
/// once per band), else about 1 MB of im2col per band (L2-sized), at least one row. From the
/// geometry alone, so the result does not depend on the thread count.
fn band_rows(g: Geometry) -> usize {
    if g.kk() * g.hw() <= 1 << 21 {
        return g.h.max(1);
    }
    ((1usize << 18) / (g.kk() * g.w).max(1)).clamp(1, g.h.max(1))
}

/// Forward: per image, `out = act(W (co × ci·k²) · im2col(x) + bias)` — the activation applied
/// to each band right after its gemm, while it is in cache (inference: one pass over the
/// output saved per layer; training keeps the two ops, whose backward needs the conv output).
pub(crate) fn conv_forward(x: &[f32], weight: &[f32], bias: &[f32], g: Geometry, act: Act) -> Vec<f32> {
    let (hw, kk) = (g.hw(), g.kk());
    let mut out = vec![0f32; g.b * g.co * hw];
    if winograd::applies(g) {
        winograd::forward(x, weight, bias, g, act, &mut out);
        return out;
    }
    let one = |i: usize, out: &mut [f32], gemm_parallel: bool| {
        for (o, &bv) in out.chunks_mut(hw).zip(bias) {
            o.fill(bv);
        }
        let xi = &x[i * g.ci * hw..(i + 1) * g.ci * hw];
        if g.k == 1 {
            gemm(g.co, hw, kk, out, true, weight, (kk, 1), xi, (hw, 1), gemm_parallel);
            if act != Act::Identity {
                out.par_chunks_mut(CHUNK).for_each(|c| apply_in_place(c, act));
            }
            return;
        }
        // Bands of output rows, each an im2col of ≈ 1 MB and a gemm into its columns of `out`;
        // in parallel (each gemm sequential) where the image alone has the threads.
        let rows = band_rows(g);
        let band = |r0: usize, out: SharedOut, parallel: bool| {
            let r1 = (r0 + rows).min(g.h);
            let n = (r1 - r0) * g.w;
            let mut buf = scratch(kk * n);
            let cols = &mut buf[..kk * n];
            im2col_rows(xi, g, (r0, r1), cols);
            // SAFETY: band r0 writes only columns [r0·w, r1·w) of each of the co rows of `out`
            // (row stride hw): bands are disjoint, and `out` outlives them.
            unsafe { gemm_raw(g.co, n, kk, out.0.add(r0 * g.w), hw, true, weight, (kk, 1), cols, (n, 1), parallel) };
            if act != Act::Identity {
                for o in 0..g.co {
                    // SAFETY: the same columns of row o that this band's gemm just wrote.
                    let row = unsafe { std::slice::from_raw_parts_mut(out.0.add(o * hw + r0 * g.w), n) };
                    apply_in_place(row, act);
                }
            }
            release(buf);
        };
        let shared = SharedOut(out.as_mut_ptr());
        if gemm_parallel && rows >= g.h {
            // One band (a small layer): its gemm has the threads.
            band(0, shared, true);
        } else if gemm_parallel {
            (0..g.h).into_par_iter().step_by(rows).for_each(|r0| band(r0, shared, false));
        } else {
            (0..g.h).step_by(rows).for_each(|r0| band(r0, shared, false));
        }
    };
    if g.images_in_parallel() {
        out.par_chunks_mut(g.co * hw).enumerate().for_each(|(i, o)| one(i, o, false));
    } else {
        out.chunks_mut(g.co * hw).enumerate().for_each(|(i, o)| one(i, o, true));
    }
    out
}

/// Backward: the input gradient as a convolution of dy (k > 1: see below; 1×1: `Wᵀ · dy`),
/// per image `dW += dy · im2col(x)ᵀ` (the weight gradient; Winograd's transposed form where
/// the forward uses Winograd) and `db = Σ dy`. Deterministic: the same
/// result for any thread count and any rayon scheduling (tested).
pub(crate) fn conv_backward(
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    g: Geometry,
    want_dx: bool,
) -> (Option<Vec<f32>>, Vec<f32>, Vec<f32>) {
    let (hw, kk) = (g.hw(), g.kk());
    // The input gradient of a k×k "same" convolution is the same convolution of dy with each
    // filter turned 180° and the channel axes swapped: the forward's banded (or Winograd)
    // path, no k²-fold dcols matrix and col2im.
    let flipped = (want_dx && g.k > 1).then(|| {
        let gt = Geometry { ci: g.co, co: g.ci, ..g };
        let kk2 = g.k * g.k;
        let mut wt = vec![0f32; weight.len()];
        for o in 0..g.co {
            for c in 0..g.ci {
                let src = &weight[(o * g.ci + c) * kk2..(o * g.ci + c + 1) * kk2];
                let dst = &mut wt[(c * g.co + o) * kk2..(c * g.co + o + 1) * kk2];
                for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
                    *d = *s;
                }
            }
        }
        conv_forward(dy, &wt, &vec![0f32; g.ci], gt, Act::Identity)
    });
    let want_dx = want_dx && flipped.is_none();
    let mut dx = if want_dx { vec![0f32; g.b * g.ci * hw] } else { Vec::new() };
    // The weight and bias gradients sum over the images. For results that do not depend on how
    // rayon happens to split the work (or on the thread count), images are summed in fixed
    // groups of consecutive images, each group in image order, then the groups in order.
    let group = g.b.div_ceil(16).max(1);
    let groups = g.b.div_ceil(group);
    let wino = winograd::applies(g);
    let dw_len = if wino { winograd::weight_grad_len(g) } else { g.co * kk };
    let one = |i: usize, dxi: &mut [f32], (dw, db): &mut (Vec<f32>, Vec<f32>), par: bool| {
        let xi = &x[i * g.ci * hw..(i + 1) * g.ci * hw];
        let dyi = &dy[i * g.co * hw..(i + 1) * g.co * hw];
        for (s, row) in db.iter_mut().zip(dyi.chunks(hw)) {
            *s += sum(row);
        }
        if wino {
            // Winograd's accumulator (see `winograd::weight_grad`), transformed once at the end.
            winograd::weight_grad(xi, dyi, Geometry { b: 1, ..g }, dw, par);
            return;
        }
        if g.k == 1 {
            // dW (co × ci) += dy (co × hw) · xᵀ (hw × ci): x and dy are the same size, so the
            // weight's own layout (a transposition of dWᵀ strides through up to 8 MB).
            gemm(g.co, kk, hw, dw, true, dyi, (hw, 1), xi, (1, hw), par);
            if want_dx {
                // dx (ci × hw) = Wᵀ (ci × co) · dy (co × hw)
                gemm(g.ci, hw, g.co, dxi, false, weight, (1, kk), dyi, (hw, 1), par);
            }
            return;
        }
        let mut buf = scratch(kk * hw);
        let cols = &mut buf[..kk * hw];
        im2col(xi, g, cols);
        // dWᵀ (kk × co) += cols (kk × hw) · dyᵀ (hw × co). Transposed so that gemm (which
        // computes a row-major product through its transpose) packs the small dy, not the
        // k²-times larger cols.
        gemm(kk, g.co, hw, dw, true, cols, (hw, 1), dyi, (1, hw), par);
        release(buf);
    };
    // One group's images, in order, into its (dWᵀ, db).
    let run_group = |j: usize, dx_group: &mut [f32], par: bool| {
        let mut acc = (vec![0f32; dw_len], vec![0f32; g.co]);
        for i in j * group..((j + 1) * group).min(g.b) {
            let dxi: &mut [f32] = if want_dx {
                let k = i - j * group;
                &mut dx_group[k * g.ci * hw..(k + 1) * g.ci * hw]
            } else {
                &mut []
            };
            one(i, dxi, &mut acc, par);
        }
        acc
    };
    let parallel = groups > 1 && g.images_in_parallel();
    let parts: Vec<(Vec<f32>, Vec<f32>)> = match (want_dx, parallel) {
        (true, true) => dx.par_chunks_mut(group * g.ci * hw).enumerate().map(|(j, d)| run_group(j, d, false)).collect(),
        (false, true) => (0..groups).into_par_iter().map(|j| run_group(j, &mut [], false)).collect(),
        (true, false) => dx.chunks_mut(group * g.ci * hw).enumerate().map(|(j, d)| run_group(j, d, true)).collect(),
        (false, false) => (0..groups).map(|j| run_group(j, &mut [], true)).collect(),
    };
    let (dw, db) = parts.into_iter().reduce(add_pair).unwrap_or_else(|| (vec![0f32; dw_len], vec![0f32; g.co]));
    if wino {
        return (flipped, winograd::finish_weight_grad(&dw, g), db);
    }
    if g.k == 1 {
        return (want_dx.then_some(dx), dw, db);
    }
    // dWᵀ (kk × co) back to the weight's layout (co × kk).
    let mut dw_out = vec![0f32; dw.len()];
    for (j, row) in dw.chunks(g.co).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            dw_out[c * kk + j] = v;
        }
    }
    (flipped.or(want_dx.then_some(dx)), dw_out, db)
}

fn add_pair(mut a: (Vec<f32>, Vec<f32>), b: (Vec<f32>, Vec<f32>)) -> (Vec<f32>, Vec<f32>) {
    for (x, y) in a.0.iter_mut().zip(&b.0) {
        *x += y;
    }
    for (x, y) in a.1.iter_mut().zip(&b.1) {
        *x += y;
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// The banded forward (several bands of output rows here, in parallel and not) equals a
    /// direct convolution: every band boundary, image edge and wrapped column.
    #[test]
    fn banded_forward_equals_a_direct_convolution() {
        let mut rng = Rng::new(5);
        for (b, ci, co, h, w) in [(1, 64, 5, 80, 64), (2, 32, 4, 130, 60), (1, 3, 6, 9, 12000)] {
            let g = Geometry { b, ci, co, h, w, k: 3 };
            assert!(band_rows(g) < h, "{g:?}: one band only");
            let mut draw = |n: usize| (0..n).map(|_| rng.normal() as f32).collect::<Vec<_>>();
            let (x, wt, bias) = (draw(b * ci * h * w), draw(co * ci * 9), draw(co));
            let ours = conv_forward(&x, &wt, &bias, g, Act::Identity);
            for i in 0..b {
                for o in 0..co {
                    for y in 0..h {
                        for xx in 0..w {
                            let mut s = bias[o] as f64;
                            for c in 0..ci {
                                for ky in 0..3 {
                                    for kx in 0..3 {
                                        let (sy, sx) = (y as isize + ky as isize - 1, xx as isize + kx as isize - 1);
                                        if sy >= 0 && sx >= 0 && (sy as usize) < h && (sx as usize) < w {
                                            s += (wt[((o * ci + c) * 3 + ky) * 3 + kx]
                                                * x[((i * ci + c) * h + sy as usize) * w + sx as usize])
                                                as f64;
                                        }
                                    }
                                }
                            }
                            let v = ours[((i * co + o) * h + y) * w + xx] as f64;
                            assert!((v - s).abs() < 1e-3 * (1.0 + s.abs()), "{g:?} ({i},{o},{y},{xx}): {v} vs {s}");
                        }
                    }
                }
            }
        }
    }

    /// The backward's sums over images do not depend on the thread count or on rayon's
    /// scheduling: bit-identical gradients from 1, 2 and 3 threads and from repeated runs,
    /// for batches that run image-parallel and batches that run with a parallel gemm.
    #[test]
    fn backward_is_deterministic() {
        let mut rng = Rng::new(21);
        // The last two: Winograd (≥ 16 channels), image-parallel and with parallel products.
        for (b, k, ci, co) in [(8, 3, 6, 5), (2, 3, 6, 5), (5, 1, 6, 5), (20, 3, 6, 5), (20, 3, 16, 17), (1, 3, 17, 16)]
        {
            let g = Geometry { b, ci, co, h: 9, w: 7, k };
            let mut draw = |n: usize| (0..n).map(|_| rng.normal() as f32).collect::<Vec<_>>();
            let (x, w, dy) = (draw(b * g.ci * g.hw()), draw(g.co * g.kk()), draw(b * g.co * g.hw()));
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| conv_backward(&x, &w, &dy, g, true))
            };
            let first = run(1);
            for threads in [2, 3, 2, 1] {
                assert!(run(threads) == first, "batch {b}, k {k}: {threads} threads differ");
            }
        }
    }
}

//! Winograd F(2×2, 3×3): a stride-1 "same" 3×3 convolution as 16 matrix products of
//! (co × ci) · (ci × tiles), one per point of the 4×4 transformed tile, instead of one product
//! of (co × 9·ci) · (9·ci × pixels) — 2.25× fewer multiplications (Lavin & Gray, "Fast
//! Algorithms for Convolutional Neural Networks", 2016), and a transformed input 4× the
//! image's size instead of im2col's 9×. Each 2×2 output tile reads the 4×4 input tile around
//! it; with `d` that tile and `g` one 3×3 filter, the output is `Aᵀ [Σ_c (G g Gᵀ) ⊙ (Bᵀ d B)] A`:
//!
//! ```text
//!        ⎡1  0  0⎤        ⎡1  0 -1  0⎤        ⎡1  1  1  0⎤
//!   G =  ⎢½  ½  ½⎥   Bᵀ = ⎢0  1  1  0⎥   Aᵀ = ⎣0  1 -1 -1⎦
//!        ⎢½ -½  ½⎥        ⎢0 -1  1  0⎥
//!        ⎣0  0  1⎦        ⎣0  1  0 -1⎦
//! ```
//!
//! The transforms are additions only (and halvings of the filter), so the result is the direct
//! convolution's to a few float roundings (tested against it and against burn's). Used by
//! [`super::conv`] where both channel counts are large enough for the products to dominate.

use super::Geometry;
use super::gemm::{SharedOut, gemm_raw, release, scratch};
use super::pointwise::{Act, apply_in_place};
use super::vectorised;
use rayon::prelude::*;

/// Whether the Winograd path computes this convolution: 3×3, at least 16 channels on both
/// sides and at least 1,024 output tiles (64² pixels). With fewer channels the 16 small
/// products and the transforms cost more than they save (the colour layers at either end of a
/// restorer stay on im2col); on small images, too: the demo's 32² networks ran 20.6 source-only
/// steps/s with Winograd against 29.6 without, while paper128 and `restore` gain.
pub(crate) fn applies(g: Geometry) -> bool {
    g.k == 3 && g.ci >= 16 && g.co >= 16 && g.h.div_ceil(2) * g.w.div_ceil(2) >= 1024
}

/// `U[ξ][o][c] = (G g Gᵀ)[i][j]` with ξ = 4i + j, for every filter `g = weight[o][c]`.
fn transform_weights(weight: &[f32], g: Geometry) -> Vec<f32> {
    let (ci, co) = (g.ci, g.co);
    let mut u = vec![0f32; 16 * co * ci];
    let gg = |a: f32, b: f32, c: f32| [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c];
    for o in 0..co {
        for c in 0..ci {
            let f = &weight[(o * ci + c) * 9..(o * ci + c) * 9 + 9];
            // G f: 4 rows of 3.
            let cols = [gg(f[0], f[3], f[6]), gg(f[1], f[4], f[7]), gg(f[2], f[5], f[8])];
            for i in 0..4 {
                let row = gg(cols[0][i], cols[1][i], cols[2][i]);
                for (j, v) in row.into_iter().enumerate() {
                    u[((4 * i + j) * co + o) * ci + c] = v;
                }
            }
        }
    }
    u
}

/// Tile rows per band: the whole image when its transformed input and output are at most
/// 8 MB together (deep, low-resolution layers: their weights are packed once), else about
/// 4 MB of them per band, at least one tile row. From the geometry alone (not the thread
/// count), so results do not depend on it.
fn band_tile_rows(g: Geometry, th: usize, tw: usize) -> usize {
    let per_row = 16 * (g.ci + g.co) * tw;
    if per_row * th <= 1 << 21 {
        return th.max(1);
    }
    ((1usize << 20) / per_row.max(1)).clamp(1, th.max(1))
}

/// One input row split into its values at odd and even columns, as the tiles read them:
/// `odd[k] = row[2k − 1]`, `even[k] = row[2k]`, zero outside the row (k = 0 ..= tw).
#[inline(always)]
fn split_row(row: Option<&[f32]>, odd: &mut [f32], even: &mut [f32]) {
    odd.fill(0.0);
    even.fill(0.0);
    let Some(row) = row else { return };
    for (k, pair) in row.chunks_exact(2).enumerate() {
        even[k] = pair[0];
        odd[k + 1] = pair[1];
    }
    if row.len() % 2 == 1 {
        even[row.len() / 2] = row[row.len() - 1];
    }
}

/// `V[c][ξ][t] = (Bᵀ d B)[i][j]` for each tile `t` of tile rows `[t0, t1)` (row-major, `tw`
/// per row) and channel `c`: `v` holds `ci` chunks of `16 · nt` values.
fn transform_input(x: &[f32], g: Geometry, (t0, t1): (usize, usize), tw: usize, v: &mut [f32], parallel: bool) {
    let (hw, nt) = (g.h * g.w, (t1 - t0) * tw);
    let channel =
        |c: usize, vc: &mut [f32]| vectorised(|| input_channel(&x[c * hw..(c + 1) * hw], g, (t0, t1), tw, vc));
    let v = &mut v[..g.ci * 16 * nt];
    if parallel {
        v.par_chunks_mut(16 * nt).enumerate().for_each(|(c, vc)| channel(c, vc));
    } else {
        v.chunks_mut(16 * nt).enumerate().for_each(|(c, vc)| channel(c, vc));
    }
}

/// [`transform_input`] of one channel's plane into its `16 · nt` values.
#[inline(always)]
fn input_channel(plane: &[f32], g: Geometry, (t0, t1): (usize, usize), tw: usize, vc: &mut [f32]) {
    let (h, w) = (g.h, g.w);
    let nt = (t1 - t0) * tw;
    let n = tw + 1;
    // split[(2·slot[r] + s)·n..]: input row r of the tile row at its odd (s = 0) or even
    // (s = 1) columns; comb[(2i + s)·n..]: row i of Bᵀ d, for the same columns.
    // Input row r of the tile row lives in slot[r] of `split`: consecutive tile rows share
    // two input rows, which are rotated into place rather than split again.
    let (mut split, mut comb) = (vec![0f32; 8 * n], vec![0f32; 8 * n]);
    let mut slot = [0, 1, 2, 3];
    for ty in t0..t1 {
        let fresh = if ty == t0 { 0 } else { 2 };
        if fresh == 2 {
            slot = [slot[2], slot[3], slot[0], slot[1]];
        }
        for r in fresh..4 {
            let y = (2 * ty + r) as isize - 1;
            let row = (0..h as isize).contains(&y).then(|| &plane[y as usize * w..(y as usize + 1) * w]);
            let (odd, even) = split[2 * slot[r] * n..2 * (slot[r] + 1) * n].split_at_mut(n);
            split_row(row, odd, even);
        }
        for s in 0..2 {
            let d = |r: usize| &split[(2 * slot[r] + s) * n..(2 * slot[r] + s + 1) * n];
            let (d0, d1, d2, d3) = (d(0), d(1), d(2), d(3));
            let mut rows = comb.chunks_mut(n).skip(s).step_by(2);
            let (r0, r1, r2, r3) =
                (rows.next().unwrap(), rows.next().unwrap(), rows.next().unwrap(), rows.next().unwrap());
            for k in 0..n {
                r0[k] = d0[k] - d2[k];
                r1[k] = d1[k] + d2[k];
                r2[k] = d2[k] - d1[k];
                r3[k] = d1[k] - d3[k];
            }
        }
        // Then B over columns: with a, b, c, d the tile's columns 2tx−1 … 2tx+2 (odd[tx],
        // even[tx], odd[tx+1], even[tx+1]): (a − c, b + c, c − b, b − d).
        let base = (ty - t0) * tw;
        for i in 0..4 {
            let (o, e) = (&comb[2 * i * n..(2 * i + 1) * n], &comb[(2 * i + 1) * n..(2 * i + 2) * n]);
            let at = |j: usize| (4 * i + j) * nt + base;
            let (v0, rest) = vc[at(0)..at(3) + tw].split_at_mut(nt);
            let (v1, rest) = rest.split_at_mut(nt);
            let (v2, v3) = rest.split_at_mut(nt);
            for tx in 0..tw {
                v0[tx] = o[tx] - o[tx + 1];
                v1[tx] = e[tx] + o[tx + 1];
                v2[tx] = o[tx + 1] - e[tx];
                v3[tx] = e[tx] - e[tx + 1];
            }
        }
    }
}

/// `out[o]` for tile rows `[t0, t1)` from `M[o][ξ][t]`: `Aᵀ M A` per tile, plus the bias, then
/// the activation; tiles reaching past the image's last row or column write only what is in it.
fn transform_output(
    m: &[f32],
    g: Geometry,
    (t0, t1): (usize, usize),
    tw: usize,
    bias: &[f32],
    act: Act,
    out: SharedOut,
    parallel: bool,
) {
    let nt = (t1 - t0) * tw;
    let one = |o: usize, mo: &[f32]| vectorised(|| output_channel(mo, g, (t0, t1), tw, bias[o], act, out, o));
    let m = &m[..g.co * 16 * nt];
    if parallel {
        m.par_chunks(16 * nt).enumerate().for_each(|(o, mo)| one(o, mo));
    } else {
        m.chunks(16 * nt).enumerate().for_each(|(o, mo)| one(o, mo));
    }
}

/// [`transform_output`] of output channel `o` from its `16 · nt` values.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn output_channel(
    mo: &[f32],
    g: Geometry,
    (t0, t1): (usize, usize),
    tw: usize,
    b: f32,
    act: Act,
    out: SharedOut,
    o: usize,
) {
    let (h, w, hw) = (g.h, g.w, g.h * g.w);
    let nt = (t1 - t0) * tw;
    let mut y = vec![0f32; 4 * tw];
    for ty in t0..t1 {
        let base = (ty - t0) * tw;
        let mx: [&[f32]; 16] = std::array::from_fn(|xi| &mo[xi * nt + base..xi * nt + base + tw]);
        let (y00, rest) = y.split_at_mut(tw);
        let (y01, rest) = rest.split_at_mut(tw);
        let (y10, y11) = rest.split_at_mut(tw);
        for tx in 0..tw {
            let s0: [f32; 4] = std::array::from_fn(|j| mx[j][tx] + mx[4 + j][tx] + mx[8 + j][tx]);
            let s1: [f32; 4] = std::array::from_fn(|j| mx[4 + j][tx] - mx[8 + j][tx] - mx[12 + j][tx]);
            y00[tx] = s0[0] + s0[1] + s0[2];
            y01[tx] = s0[1] - s0[2] - s0[3];
            y10[tx] = s1[0] + s1[1] + s1[2];
            y11[tx] = s1[1] - s1[2] - s1[3];
        }
        for (dy, (ya, yb)) in [(0, (&*y00, &*y01)), (1, (&*y10, &*y11))] {
            let yy = 2 * ty + dy;
            if yy >= h {
                continue;
            }
            // SAFETY: channel o's row yy of `out` is written by this call alone (channels
            // are split between workers, tile rows between bands).
            let row = unsafe { std::slice::from_raw_parts_mut(out.ptr().add(o * hw + yy * w), w) };
            for (pair, (a, c)) in row.chunks_exact_mut(2).zip(ya.iter().zip(yb)) {
                pair[0] = a + b;
                pair[1] = c + b;
            }
            if w % 2 == 1 {
                row[w - 1] = ya[tw - 1] + b;
            }
            apply_in_place(row, act);
        }
    }
}

/// `out = act(conv3×3(x, weight) + bias)` for each image of `x`, into `out` (b × co × h × w,
/// fully written). The filters are transformed once for the batch; images run in parallel
/// when there are at least as many as threads, else one after another with the threads.
pub(crate) fn forward(x: &[f32], weight: &[f32], bias: &[f32], g: Geometry, act: Act, out: &mut [f32]) {
    debug_assert!(g.k == 3);
    let hw = g.h * g.w;
    let (th, tw) = (g.h.div_ceil(2), g.w.div_ceil(2));
    let u = transform_weights(weight, g);
    let rows = band_tile_rows(g, th, tw);
    let bands = th.div_ceil(rows);
    // `parallel`: this image has the threads — bands in parallel when there are enough of
    // them, else each band's stages in parallel.
    let image = |xi: &[f32], out: &mut [f32], parallel: bool| {
        let outer = parallel && bands >= rayon::current_num_threads();
        let inner = parallel && !outer;
        let shared = SharedOut(out.as_mut_ptr());
        let band = |t0: usize| {
            let t1 = (t0 + rows).min(th);
            let nt = (t1 - t0) * tw;
            let (mut v, mut m) = (scratch(16 * g.ci * nt), scratch(16 * g.co * nt));
            transform_input(xi, g, (t0, t1), tw, &mut v, inner);
            let ms = SharedOut(m.as_mut_ptr());
            let product = |xi: usize| {
                // SAFETY: M[·][ξ][·] (co rows of nt at stride 16·nt) is written by product ξ
                // alone; `m` outlives the products.
                unsafe {
                    gemm_raw(
                        g.co,
                        nt,
                        g.ci,
                        ms.ptr().add(xi * nt),
                        16 * nt,
                        false,
                        &u[xi * g.co * g.ci..(xi + 1) * g.co * g.ci],
                        (g.ci, 1),
                        &v[xi * nt..],
                        (16 * nt, 1),
                        false,
                    )
                };
            };
            if inner {
                (0..16).into_par_iter().for_each(product);
            } else {
                (0..16).for_each(product);
            }
            transform_output(&m, g, (t0, t1), tw, bias, act, shared, inner);
            release(v);
            release(m);
        };
        if outer {
            (0..th).into_par_iter().step_by(rows).for_each(band);
        } else {
            (0..th).step_by(rows).for_each(band);
        }
    };
    let (per_in, per_out) = (g.ci * hw, g.co * hw);
    if g.images_in_parallel() {
        out.par_chunks_mut(per_out).zip(x.par_chunks(per_in)).for_each(|(o, xi)| image(xi, o, false));
    } else {
        out.chunks_mut(per_out).zip(x.chunks(per_in)).for_each(|(o, xi)| image(xi, o, true));
    }
}

/// The weight gradient's accumulator: `M[ξ][o][c] = Σ_tiles Ŷ[ξ][o][t] · V[ξ][c][t]` over the
/// images and bands added so far, with `Ŷ = A dY Aᵀ` the transformed 2×2 output-gradient tile
/// and `V = Bᵀ d B` the forward's transformed input tile. By the transpose of F(2×2, 3×3) —
/// F(3×3, 2×2) — `dW[o][c] = Gᵀ M[·][o][c] G` ([`finish_weight_grad`]): 16 products of
/// (co × tiles) · (tiles × ci), 2.25× fewer multiplications than `dy · im2col(x)ᵀ`.
pub(crate) fn weight_grad_len(g: Geometry) -> usize {
    16 * g.co * g.ci
}

/// `Ŷ[o][ξ][t]` for tile rows `[t0, t1)`: with `a`, `b` a tile's two output-gradient values
/// along an axis (zero past the image), `A (a, b) = (a, a + b, a − b, −b)`, rows then columns.
fn transform_grad(dy: &[f32], g: Geometry, (t0, t1): (usize, usize), tw: usize, yh: &mut [f32], parallel: bool) {
    let (hw, nt) = (g.h * g.w, (t1 - t0) * tw);
    let channel =
        |o: usize, yo: &mut [f32]| vectorised(|| grad_channel(&dy[o * hw..(o + 1) * hw], g, (t0, t1), tw, yo));
    let yh = &mut yh[..g.co * 16 * nt];
    if parallel {
        yh.par_chunks_mut(16 * nt).enumerate().for_each(|(o, yo)| channel(o, yo));
    } else {
        yh.chunks_mut(16 * nt).enumerate().for_each(|(o, yo)| channel(o, yo));
    }
}

/// [`transform_grad`] of one output-gradient plane into its `16 · nt` values.
#[inline(always)]
fn grad_channel(plane: &[f32], g: Geometry, (t0, t1): (usize, usize), tw: usize, yo: &mut [f32]) {
    let (h, w) = (g.h, g.w);
    let nt = (t1 - t0) * tw;
    // The tile row's two output rows at even and odd columns: (even, odd) per row.
    let mut split = vec![0f32; 4 * tw];
    for ty in t0..t1 {
        for (r, eo) in split.chunks_mut(2 * tw).enumerate() {
            let y = 2 * ty + r;
            let (even, odd) = eo.split_at_mut(tw);
            even.fill(0.0);
            odd.fill(0.0);
            if y >= h {
                continue;
            }
            let row = &plane[y * w..(y + 1) * w];
            for (k, pair) in row.chunks_exact(2).enumerate() {
                even[k] = pair[0];
                odd[k] = pair[1];
            }
            if w % 2 == 1 {
                even[tw - 1] = row[w - 1];
            }
        }
        let (r0, r1) = split.split_at(2 * tw);
        let base = (ty - t0) * tw;
        // Rows: (r0, r0 + r1, r0 − r1, −r1); then columns within each.
        for i in 0..4 {
            let pick = |k: usize| -> f32 {
                let (a, b) = (r0[k], r1[k]);
                match i {
                    0 => a,
                    1 => a + b,
                    2 => a - b,
                    _ => -b,
                }
            };
            let at = |j: usize| (4 * i + j) * nt + base;
            let (v0, rest) = yo[at(0)..at(3) + tw].split_at_mut(nt);
            let (v1, rest) = rest.split_at_mut(nt);
            let (v2, v3) = rest.split_at_mut(nt);
            for tx in 0..tw {
                let (a, b) = (pick(tx), pick(tw + tx));
                v0[tx] = a;
                v1[tx] = a + b;
                v2[tx] = a - b;
                v3[tx] = -b;
            }
        }
    }
}

/// Add one image's terms to the weight-gradient accumulator `m` ([`weight_grad_len`] values):
/// bands of tile rows in order, so the sum does not depend on the thread count. `parallel`:
/// the 16 products (and the transforms) share the threads.
pub(crate) fn weight_grad(x: &[f32], dy: &[f32], g: Geometry, m: &mut [f32], parallel: bool) {
    debug_assert!(applies(g) && g.b == 1);
    let (th, tw) = (g.h.div_ceil(2), g.w.div_ceil(2));
    let rows = band_tile_rows(g, th, tw);
    let ms = SharedOut(m.as_mut_ptr());
    for t0 in (0..th).step_by(rows) {
        let t1 = (t0 + rows).min(th);
        let nt = (t1 - t0) * tw;
        let (mut v, mut yh) = (scratch(16 * g.ci * nt), scratch(16 * g.co * nt));
        transform_input(x, g, (t0, t1), tw, &mut v, parallel);
        transform_grad(dy, g, (t0, t1), tw, &mut yh, parallel);
        let product = |xi: usize| {
            // SAFETY: M[ξ] (co × ci, contiguous) is written by product ξ alone; `m` outlives it.
            unsafe {
                gemm_raw(
                    g.co,
                    g.ci,
                    nt,
                    ms.ptr().add(xi * g.co * g.ci),
                    g.ci,
                    true,
                    &yh[xi * nt..],
                    (16 * nt, 1),
                    &v[xi * nt..],
                    (1, 16 * nt),
                    false,
                )
            };
        };
        if parallel {
            (0..16).into_par_iter().for_each(product);
        } else {
            (0..16).for_each(product);
        }
        release(v);
        release(yh);
    }
}

/// `dW[o][c] = Gᵀ M[·][o][c] G`, in the weight's layout (co × ci × 3 × 3).
pub(crate) fn finish_weight_grad(m: &[f32], g: Geometry) -> Vec<f32> {
    let (ci, co) = (g.ci, g.co);
    let mut dw = vec![0f32; co * ci * 9];
    // Gᵀ (m0, m1, m2, m3) = (m0 + ½(m1 + m2), ½(m1 − m2), ½(m1 + m2) + m3).
    let gt = |a: f32, b: f32, c: f32, d: f32| [a + 0.5 * (b + c), 0.5 * (b - c), 0.5 * (b + c) + d];
    for o in 0..co {
        for c in 0..ci {
            let at = |i: usize, j: usize| m[((4 * i + j) * co + o) * ci + c];
            let rows: [[f32; 3]; 4] = std::array::from_fn(|i| gt(at(i, 0), at(i, 1), at(i, 2), at(i, 3)));
            for kx in 0..3 {
                let col = gt(rows[0][kx], rows[1][kx], rows[2][kx], rows[3][kx]);
                for ky in 0..3 {
                    dw[(o * ci + c) * 9 + ky * 3 + kx] = col[ky];
                }
            }
        }
    }
    dw
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::networks::kernels::conv::conv_forward;
    use crate::rng::Rng;

    /// The direct definition of a stride-1 "same" 3×3 convolution, in f64.
    fn direct(x: &[f32], wt: &[f32], bias: &[f32], g: Geometry) -> Vec<f64> {
        let (h, w) = (g.h as isize, g.w as isize);
        let mut out = vec![0f64; g.b * g.co * g.h * g.w];
        for i in 0..g.b {
            for o in 0..g.co {
                for y in 0..h {
                    for xx in 0..w {
                        let mut s = bias[o] as f64;
                        for c in 0..g.ci {
                            for ky in 0..3isize {
                                for kx in 0..3isize {
                                    let (sy, sx) = (y + ky - 1, xx + kx - 1);
                                    if (0..h).contains(&sy) && (0..w).contains(&sx) {
                                        let wv = wt[((o * g.ci + c) * 3 + ky as usize) * 3 + kx as usize];
                                        let xv = x[((i * g.ci + c) * g.h + sy as usize) * g.w + sx as usize];
                                        s += wv as f64 * xv as f64;
                                    }
                                }
                            }
                        }
                        out[((i * g.co + o) * g.h + y as usize) * g.w + xx as usize] = s;
                    }
                }
            }
        }
        out
    }

    /// [`forward`] called directly (small images included, which [`applies`] leaves to im2col).
    fn direct_call(x: &[f32], wt: &[f32], bias: &[f32], g: Geometry, act: Act) -> Vec<f32> {
        let mut out = vec![0f32; g.b * g.co * g.h * g.w];
        forward(x, wt, bias, g, act, &mut out);
        out
    }

    /// Winograd equals the direct convolution on every tile position: odd and even sizes, a
    /// single row, column or pixel, several bands (in parallel and not), batches run
    /// image-parallel, 1–3 threads; and its result does not depend on the thread count.
    #[test]
    fn winograd_equals_a_direct_convolution() {
        let mut rng = Rng::new(11);
        for (b, ci, co, h, w) in
            [(1, 16, 16, 1, 1), (1, 16, 17, 2, 1), (2, 17, 16, 1, 7), (3, 16, 20, 5, 9), (1, 64, 64, 70, 71)]
        {
            let g = Geometry { b, ci, co, h, w, k: 3 };
            let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
            let several = band_tile_rows(g, th, tw) < th;
            assert_eq!(several, h == 70, "{g:?}: bands");
            let mut draw = |n: usize| (0..n).map(|_| rng.normal() as f32).collect::<Vec<_>>();
            let (x, wt, bias) = (draw(b * ci * h * w), draw(co * ci * 9), draw(co));
            let reference = direct(&x, &wt, &bias, g);
            let scale = reference.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            let mut first = None;
            for threads in [1, 2, 3] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let ours = pool.install(|| direct_call(&x, &wt, &bias, g, Act::Identity));
                let worst = ours.iter().zip(&reference).map(|(a, r)| (*a as f64 - r).abs()).fold(0.0, f64::max);
                assert!(worst < 1e-5 * scale, "{g:?}, {threads} threads: off by {worst} (scale {scale})");
                match &first {
                    None => first = Some(ours),
                    Some(f) => assert!(*f == ours, "{g:?}: {threads} threads differ from 1"),
                }
            }
        }
    }

    /// The fused activation is applied to every output value, edges included.
    #[test]
    fn winograd_applies_the_activation() {
        let mut rng = Rng::new(3);
        let g = Geometry { b: 1, ci: 16, co: 16, h: 5, w: 7, k: 3 };
        let mut draw = |n: usize| (0..n).map(|_| rng.normal() as f32).collect::<Vec<_>>();
        let (x, wt, bias) = (draw(g.ci * 35), draw(g.co * g.ci * 9), draw(g.co));
        let plain = direct_call(&x, &wt, &bias, g, Act::Identity);
        let act = Act::LeakyRelu(0.2);
        let fused = direct_call(&x, &wt, &bias, g, act);
        // And through the convolution's dispatch, on an image large enough for Winograd.
        let big = Geometry { b: 2, h: 64, w: 66, ..g };
        assert!(applies(big));
        let mut draw = |n: usize| (0..n).map(|_| rng.normal() as f32).collect::<Vec<_>>();
        let xb = draw(2 * g.ci * 64 * 66);
        let (p, f) = (conv_forward(&xb, &wt, &bias, big, Act::Identity), conv_forward(&xb, &wt, &bias, big, act));
        assert_eq!(f, p.iter().map(|&v| act.f(v)).collect::<Vec<_>>());
        assert_eq!(fused, plain.iter().map(|&v| act.f(v)).collect::<Vec<_>>());
    }
}

//! RealBlur's scoring: the 7×7 box SSIM on 8-bit images (`realblur-noalign`, the Noise-DA
//! release) and the official protocol (`realblur`: gain, ECC homography, cubic warp, masked SSIM).

use super::*;

/// scikit-image's default window side (uniform filter).
pub(super) const BOX_WIN: usize = 7;

/// scikit-image `structural_similarity(x, y, channel_axis=-1)` defaults on interleaved 8-bit
/// RGB: 7×7 uniform window, sample covariance (49/48), L = 255, mean over the valid region
/// (3 px cropped: exactly the positions whose window never reads skimage's 'reflect' padding),
/// per channel then averaged. Computed from exact integer window sums with one division per
/// position, so it is slightly *more* accurate than skimage's float filters (they agree to
/// ~1e-13).
pub(super) fn ssim_box7_u8(x8: &[u8], y8: &[u8], w: usize, h: usize) -> f64 {
    const N: usize = BOX_WIN;
    const NP: usize = N * N;
    // skimage's map, ((2·ux·uy + C1)(2·vxy + C2)) / ((ux² + uy² + C1)(vx + vy + C2)) with
    // u = S/NP and v = (NP·S₂ − S·S)/(NP·(NP−1)), multiplied through by NP³·(NP−1): only
    // integer window sums S and one division, and E[x²] − E[x]² without cancellation error.
    let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
    let np2 = (NP * NP) as f64;
    let (c1_np2, c2_np_n1) = (c1 * np2, c2 * (NP * (NP - 1)) as f64);
    let (ow, oh) = (w - N + 1, h - N + 1);
    // Per row, the horizontal 7-sums of x, y, x², y², xy (plane k at k * ow), kept for the last
    // 7 rows; `vert` is their running sum down the columns, i.e. the 7×7 window sums.
    let mut ring = vec![0u32; N * 5 * ow];
    let mut vert = vec![0u32; 5 * ow];
    let mut planes = vec![0u32; 5 * w];
    let mut total = 0.0;
    for c in 0..3 {
        vert.fill(0);
        let mut sum = 0.0;
        for r in 0..h {
            let slot = &mut ring[(r % N) * 5 * ow..][..5 * ow];
            if r >= N {
                // The slot still holds row r-7, which leaves the window now.
                vert.iter_mut().zip(slot.iter()).for_each(|(v, &s)| *v -= s);
            }
            let (xs, ys) = (&x8[r * w * 3..][..w * 3], &y8[r * w * 3..][..w * 3]);
            let (px, rest) = planes.split_at_mut(w);
            let (py, rest) = rest.split_at_mut(w);
            let (pxx, rest) = rest.split_at_mut(w);
            let (pyy, pxy) = rest.split_at_mut(w);
            for x in 0..w {
                let (p, q) = (xs[x * 3 + c] as u32, ys[x * 3 + c] as u32);
                (px[x], py[x], pxx[x], pyy[x], pxy[x]) = (p, q, p * p, q * q, p * q);
            }
            for k in 0..5 {
                let (src, out) = (&planes[k * w..][..w], &mut slot[k * ow..][..ow]);
                out.copy_from_slice(&src[..ow]);
                for t in 1..N {
                    out.iter_mut().zip(&src[t..]).for_each(|(o, &v)| *o += v);
                }
            }
            vert.iter_mut().zip(slot.iter()).for_each(|(v, &s)| *v += s);
            if r + 1 >= N {
                let (sx, sy, sxx, syy, sxy) =
                    (&vert[..ow], &vert[ow..2 * ow], &vert[2 * ow..3 * ow], &vert[3 * ow..4 * ow], &vert[4 * ow..]);
                for i in 0..ow {
                    let (sx, sy) = (sx[i] as i32, sy[i] as i32);
                    // NP²·cov and NP²·(var x + var y) (population); every term is an exact i32 (< 3.2·10⁸).
                    let dxy = NP as i32 * sxy[i] as i32 - sx * sy;
                    let dxx_yy = NP as i32 * (sxx[i] + syy[i]) as i32 - sx * sx - sy * sy;
                    let a1 = (2 * sx * sy) as f64 + c1_np2;
                    let b1 = (sx * sx + sy * sy) as f64 + c1_np2;
                    sum += a1 * ((2 * dxy) as f64 + c2_np_n1) / (b1 * (dxx_yy as f64 + c2_np_n1));
                }
            }
        }
        total += sum / (ow * oh) as f64;
    }
    total / 3.0
}

// ---------------------------------------------------------------------------------------------
// realblur: gain, ECC homography alignment, masked PSNR / SSIM
// ---------------------------------------------------------------------------------------------

/// `findTransformECC`'s iteration count in the RealBlur evaluation (criteria COUNT + EPS, 100, 0:
/// ε = 0 never stops it early).
pub(super) const ECC_ITERATIONS: usize = 100;
/// Stop early once an update moves no image corner by more than this many pixels. ECC converges
/// linearly (each step 0.2-0.5× the last on the fixtures), so the remaining iterations could move
/// the warp by about as much again: far below the ~5e-5 px resolution of the f32 warp OpenCV
/// keeps at 700 px. Saves 70-90 of the 100 iterations when ECC converges.
pub(super) const ECC_STOP_PX: f64 = 1e-7;

/// The official RealBlur protocol; see the module docs.
pub(super) fn realblur(restored: &Image, reference: &Image) -> Result<Score> {
    let (w, h) = (reference.width, reference.height);
    if w < metrics::SSIM_WIN || h < metrics::SSIM_WIN {
        bail!("realblur SSIM needs at least {0}x{0} pixels, got {w}x{h}", metrics::SSIM_WIN);
    }
    let x: Vec<f64> = reference.data.iter().map(|&v| v as f64).collect();
    let mut z: Vec<f64> = restored.data.iter().map(|&v| v.clamp(0.0, 1.0) as f64).collect();
    let (sxz, szz) = x.iter().zip(&z).fold((0.0, 0.0), |(a, b), (&p, &q)| (a + p * q, b + q * q));
    if szz == 0.0 {
        bail!("realblur: the restored image is black, so the gain Σxz/Σz² is undefined");
    }
    let gain = sxz / szz;
    z.iter_mut().for_each(|v| *v *= gain);
    // OpenCV's COLOR_RGB2GRAY on float32 images (the evaluation passes float32 to findTransformECC).
    let gray = |d: &[f64]| -> Vec<f32> {
        d.chunks_exact(3).map(|p| p[0] as f32 * 0.299 + p[1] as f32 * 0.587 + p[2] as f32 * 0.114).collect()
    };
    let (hom, iterations) = ecc_homography(&gray(&x), &gray(&z), w, h)?;
    let (mut zr, mask) = warp_cubic_reflect(&z, w, h, &hom);
    // The evaluation multiplies both images by the mask before PSNR *and* SSIM; for SSIM this
    // matters (windows straddling the mask edge see zeros on both sides).
    let mut xr = x;
    for (i, &m) in mask.iter().enumerate() {
        if !m {
            xr[3 * i..3 * i + 3].fill(0.0);
            zr[3 * i..3 * i + 3].fill(0.0);
        }
    }
    let valid = mask.iter().filter(|&&m| m).count();
    if valid == 0 {
        bail!("realblur: the ECC homography maps every pixel outside the restored image");
    }
    let sse: f64 = xr.iter().zip(&zr).map(|(a, b)| (a - b) * (a - b)).sum();
    let mut ssim = 0.0;
    let (mut ca, mut cb) = (Vec::with_capacity(w * h), Vec::with_capacity(w * h));
    for c in 0..3 {
        ca.clear();
        cb.clear();
        ca.extend(xr[c..].iter().step_by(3));
        cb.extend(zr[c..].iter().step_by(3));
        ssim += masked_ssim(&ca, &cb, &mask, w, h)?;
    }
    let mut extra = vec![("gain", gain), ("ecc_iterations", iterations as f64)];
    const H_NAMES: [&str; 8] = ["h00", "h01", "h02", "h10", "h11", "h12", "h20", "h21"];
    extra.extend(H_NAMES.into_iter().zip(hom));
    Ok(Score { psnr: psnr_from_mse(sse / (3 * valid) as f64, 1.0), ssim: ssim / 3.0, extra })
}

/// `cv2.findTransformECC(template, input, eye(3), MOTION_HOMOGRAPHY, (COUNT+EPS, 100, 0), None, 5)`
/// (Evangelidis & Psarakis 2008, forward-additive ECC), computed in f64 on OpenCV's f32 images.
///
/// Returns the homography `[h00, h01, h02, h10, h11, h12, h20, h21]` (h22 = 1), mapping template
/// pixel (X, Y) to input position ((h00 X + h01 Y + h02) / D, (h10 X + h11 Y + h12) / D) with
/// D = h20 X + h21 Y + 1, and the number of iterations run.
///
/// Matches OpenCV's formulation, including the parts that are not in the paper: both images
/// pre-blurred ([`blur5`]); gradients of the blurred input (not of the warped image), warped
/// along with it; bilinear warps with 0 outside the image but the valid set from a separate
/// nearest-neighbour warp, so pixels whose bilinear sample straddles the border are "valid" and
/// pixels just outside still feed the Jacobian terms (OpenCV zero-means only the valid pixels).
pub(super) fn ecc_homography(tmpl: &[f32], input: &[f32], w: usize, h: usize) -> Result<([f64; 8], usize)> {
    let t = blur5(tmpl, w, h);
    let b = blur5(input, w, h);
    // The input and its central differences (OpenCV's filter2D with [-0.5 0 0.5] and
    // BORDER_REFLECT_101, i.e. 0 on the first and last row / column), interleaved so the warp
    // samples all three with one set of weights.
    let mut src = vec![[0.0f32; 3]; w * h];
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let gx = if x == 0 || x == w - 1 { 0.0 } else { 0.5 * (b[i + 1] - b[i - 1]) };
            let gy = if y == 0 || y == h - 1 { 0.0 } else { 0.5 * (b[i + w] - b[i - w]) };
            src[i] = [b[i], gx, gy];
        }
    }
    let mut p = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0];
    for iteration in 1..=ECC_ITERATIONS {
        let s = ecc_sums(&src, &t, w, h, &p);
        if s.n == 0.0 {
            bail!("realblur: ECC lost the image (no template pixel maps into the restored image)");
        }
        let (mi, mt) = (s.si / s.n, s.st / s.n);
        // Zero-mean over the valid pixels: Jᵀ(i − mean) = Jᵀi − mean·Σ_valid J, and likewise for t.
        let gi: [f64; 8] = std::array::from_fn(|k| s.ji[k] - mi * s.jm[k]);
        let gt: [f64; 8] = std::array::from_fn(|k| s.jt[k] - mt * s.jm[k]);
        let (inorm2, tnorm2) = (s.sii - s.n * mi * mi, s.stt - s.n * mt * mt);
        let correlation = s.sti - s.n * mt * mi;
        let rho = correlation / (inorm2 * tnorm2).sqrt();
        let hi = cholesky_solve(&s.hess, &gi)
            .ok_or_else(|| anyhow::anyhow!("realblur: the ECC Hessian is singular (flat image?)"))?;
        // The paper's λ, which absorbs the contrast difference between the two images.
        let lambda_d = correlation - dot(&gt, &hi);
        if !(rho.is_finite() && lambda_d > 0.0) {
            bail!("realblur: ECC did not converge (images uncorrelated or not overlapping), ρ = {rho}");
        }
        let lambda = (inorm2 - dot(&gi, &hi)) / lambda_d;
        let e: [f64; 8] = std::array::from_fn(|k| lambda * gt[k] - gi[k]);
        let dp = cholesky_solve(&s.hess, &e).expect("factorised above");
        let old = p;
        p.iter_mut().zip(&dp).for_each(|(p, d)| *p += d);
        if corner_shift(&old, &p, w, h) < ECC_STOP_PX {
            return Ok((p, iteration));
        }
    }
    Ok((p, ECC_ITERATIONS))
}

/// The largest distance an image corner moves between warps `a` and `b`, in pixels.
pub(super) fn corner_shift(a: &[f64; 8], b: &[f64; 8], w: usize, h: usize) -> f64 {
    let map = |p: &[f64; 8], x: f64, y: f64| {
        let d = p[6] * x + p[7] * y + 1.0;
        ((p[0] * x + p[1] * y + p[2]) / d, (p[3] * x + p[4] * y + p[5]) / d)
    };
    let (xm, ym) = ((w - 1) as f64, (h - 1) as f64);
    [(0.0, 0.0), (xm, 0.0), (0.0, ym), (xm, ym)]
        .into_iter()
        .map(|(x, y)| {
            let ((ax, ay), (bx, by)) = (map(a, x, y), map(b, x, y));
            (ax - bx).hypot(ay - by)
        })
        .fold(0.0, f64::max)
}

/// One ECC iteration's sums, for the Jacobian J (one row per pixel), the warped input i, the
/// template t and the validity m: `hess` = JᵀJ (upper triangle) and `ji` = Jᵀi over all pixels,
/// `jt` = Jᵀ(m·t), `jm` = Jᵀm, and n, si, sii, st, stt, sti = Σm, Σmi, Σmi², Σmt, Σmt², Σmti.
#[derive(Default)]
pub(super) struct EccSums {
    hess: [[f64; 8]; 8],
    ji: [f64; 8],
    jt: [f64; 8],
    jm: [f64; 8],
    n: f64,
    si: f64,
    sii: f64,
    st: f64,
    stt: f64,
    sti: f64,
}

/// Warps the input (and its gradients) by `p` and forms the sums of [`EccSums`]. One row at a
/// time into columns (the eight Jacobian entries, i, m, m·t, m·i), so that every sum is a dot
/// product along the row, which vectorises.
pub(super) fn ecc_sums(src: &[[f32; 3]], t: &[f32], w: usize, h: usize, p: &[f64; 8]) -> EccSums {
    let mut s = EccSums::default();
    let mut cols = vec![0.0f64; 12 * w];
    for y in 0..h {
        let yf = y as f64;
        for x in 0..w {
            let xf = x as f64;
            let r = 1.0 / (p[6] * xf + p[7] * yf + 1.0);
            let (sx, sy) = ((p[0] * xf + p[1] * yf + p[2]) * r, (p[3] * xf + p[4] * yf + p[5]) * r);
            let [iv, gx, gy] = bilinear(src, w, h, sx, sy);
            // d(input at W(X; p))/dp by the chain rule, with the warped gradients.
            let (gx, gy) = (gx * r, gy * r);
            let q = -(sx * gx + sy * gy);
            let m = if inside_nearest(sx, sy, w, h) { 1.0 } else { 0.0 };
            let row =
                [gx * xf, gx * yf, gx, gy * xf, gy * yf, gy, q * xf, q * yf, iv, m, m * t[y * w + x] as f64, m * iv];
            for (k, v) in row.into_iter().enumerate() {
                cols[k * w + x] = v;
            }
        }
        let col = |k: usize| &cols[k * w..][..w];
        let (iv, m, mt, mi) = (col(8), col(9), col(10), col(11));
        for k in 0..8 {
            for l in k..8 {
                s.hess[k][l] += dot(col(k), col(l));
            }
            s.ji[k] += dot(col(k), iv);
            s.jt[k] += dot(col(k), mt);
            s.jm[k] += dot(col(k), m);
        }
        s.n += m.iter().sum::<f64>();
        s.si += mi.iter().sum::<f64>();
        s.sii += dot(mi, iv);
        s.st += mt.iter().sum::<f64>();
        s.stt += dot(mt, mt);
        s.sti += dot(mt, iv);
    }
    s
}

/// Σ aₖbₖ with four running sums (so it vectorises).
pub(super) fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = ca.remainder().iter().zip(cb.remainder()).map(|(a, b)| a * b).sum();
    for (a, b) in ca.zip(cb) {
        for k in 0..4 {
            acc[k] += a[k] * b[k];
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// Solves `A v = b` for the symmetric positive definite `A` given by its upper triangle.
/// `None` if `A` is not numerically positive definite.
pub(super) fn cholesky_solve(a: &[[f64; 8]; 8], b: &[f64; 8]) -> Option<[f64; 8]> {
    // A = L Lᵀ, L lower triangular.
    let mut l = [[0.0f64; 8]; 8];
    for i in 0..8 {
        for j in 0..=i {
            let s = a[j][i] - (0..j).map(|k| l[i][k] * l[j][k]).sum::<f64>();
            if i == j {
                if s.is_nan() || s <= 0.0 {
                    return None;
                }
                l[i][i] = s.sqrt();
            } else {
                l[i][j] = s / l[j][j];
            }
        }
    }
    let mut v = *b;
    for i in 0..8 {
        v[i] = (v[i] - (0..i).map(|k| l[i][k] * v[k]).sum::<f64>()) / l[i][i];
    }
    for i in (0..8).rev() {
        v[i] = (v[i] - (i + 1..8).map(|k| l[k][i] * v[k]).sum::<f64>()) / l[i][i];
    }
    Some(v)
}

/// Bilinear sample of the interleaved planes at (sx, sy), with 0 outside the image (OpenCV's
/// INTER_LINEAR + BORDER_CONSTANT: a sample straddling the border is blended with 0).
#[inline]
pub(super) fn bilinear(src: &[[f32; 3]], w: usize, h: usize, sx: f64, sy: f64) -> [f64; 3] {
    let (x0, y0) = (floor(sx), floor(sy));
    let (ax, ay) = (sx - x0 as f64, sy - y0 as f64);
    let taps = [(0, 0, (1.0 - ay) * (1.0 - ax)), (0, 1, (1.0 - ay) * ax), (1, 0, ay * (1.0 - ax)), (1, 1, ay * ax)];
    let mut out = [0.0; 3];
    if x0 >= 0 && y0 >= 0 && x0 + 1 < w as isize && y0 + 1 < h as isize {
        let i = y0 as usize * w + x0 as usize;
        for (dy, dx, wt) in taps {
            let v = &src[i + dy * w + dx];
            for c in 0..3 {
                out[c] += wt * v[c] as f64;
            }
        }
    } else if x0 >= -1 && y0 >= -1 && x0 < w as isize && y0 < h as isize {
        for (dy, dx, wt) in taps {
            let (xx, yy) = (x0 + dx as isize, y0 + dy as isize);
            if xx >= 0 && yy >= 0 && xx < w as isize && yy < h as isize {
                let v = &src[yy as usize * w + xx as usize];
                for c in 0..3 {
                    out[c] += wt * v[c] as f64;
                }
            }
        }
    }
    out
}

/// ⌊v⌋ as an integer (saturating; NaN gives 0), without the libm call that `f64::floor` is on
/// the baseline x86-64 target.
#[inline]
pub(super) fn floor(v: f64) -> isize {
    let t = v as isize;
    t - ((t as f64) > v) as isize
}

/// Whether INTER_NEAREST samples a pixel inside the image: OpenCV rounds half to even, so
/// −0.5 rounds in, and n − 0.5 rounds in when n − 1 is even.
#[inline]
pub(super) fn inside_nearest(sx: f64, sy: f64, w: usize, h: usize) -> bool {
    let inside = |v: f64, n: usize| v >= -0.5 && (v < n as f64 - 0.5 || (v == n as f64 - 0.5 && n % 2 == 1));
    inside(sx, w) && inside(sy, h)
}

/// OpenCV's `GaussianBlur(src, dst, Size(5, 5), 0, 0)` on f32 (what findTransformECC's
/// gaussFiltSize = 5 does): for ksize ≤ 7 and σ = 0, `getGaussianKernel` uses its fixed table,
/// here the binomial [1 4 6 4 1]/16, not the σ = 1.1 Gaussian its σ formula gives. Border
/// BORDER_REFLECT_101 (`gfedcb|abcdefgh|gfedcba`).
pub(super) fn blur5(src: &[f32], w: usize, h: usize) -> Vec<f32> {
    const K: [f32; 5] = [0.0625, 0.25, 0.375, 0.25, 0.0625];
    let r101 = |i: isize, n: usize| -> usize {
        let n = n as isize;
        let i = if i < 0 { -i } else { i };
        (if i >= n { (2 * n - 2 - i).max(0) } else { i }) as usize
    };
    let mut tmp = vec![0.0f32; w * h];
    for y in 0..h {
        let row = &src[y * w..][..w];
        for x in 0..w {
            tmp[y * w + x] = (0..5).map(|k| K[k] * row[r101(x as isize + k as isize - 2, w)]).sum();
        }
    }
    let mut out = vec![0.0f32; w * h];
    for y in 0..h {
        for x in 0..w {
            out[y * w + x] = (0..5).map(|k| K[k] * tmp[r101(y as isize + k as isize - 2, h) * w + x]).sum();
        }
    }
    out
}

/// `cv2.warpPerspective(z, H, INTER_CUBIC | WARP_INVERSE_MAP, BORDER_REFLECT)` of the
/// interleaved RGB `z`, and the validity mask `warpPerspective(ones, H, INTER_NEAREST |
/// WARP_INVERSE_MAP, BORDER_CONSTANT 0)`.
///
/// Bicubic with a = −0.75 (Keys, OpenCV's), sampled at the exact sub-pixel position (OpenCV 5's
/// warps no longer quantise it to 1/32 px); BORDER_REFLECT repeats the edge pixel
/// (`fedcba|abcdefgh|hgfedcb`).
pub(super) fn warp_cubic_reflect(z: &[f64], w: usize, h: usize, p: &[f64; 8]) -> (Vec<f64>, Vec<bool>) {
    let reflect = |i: isize, n: usize| -> usize {
        let m = i.rem_euclid(2 * n as isize) as usize;
        if m < n { m } else { 2 * n - 1 - m }
    };
    let mut out = vec![0.0; w * h * 3];
    let mut mask = vec![false; w * h];
    for y in 0..h {
        let yf = y as f64;
        for x in 0..w {
            let xf = x as f64;
            let d = p[6] * xf + p[7] * yf + 1.0;
            let (sx, sy) = ((p[0] * xf + p[1] * yf + p[2]) / d, (p[3] * xf + p[4] * yf + p[5]) / d);
            mask[y * w + x] = inside_nearest(sx, sy, w, h);
            // Saturating casts keep absurd warps (masked out anyway) from panicking.
            let (x0, y0) = (floor(sx), floor(sy));
            let (wx, wy) = (cubic_weights(sx - x0 as f64), cubic_weights(sy - y0 as f64));
            let cols: [usize; 4] = std::array::from_fn(|k| reflect(x0.saturating_add(k as isize - 1), w));
            let o = &mut out[(y * w + x) * 3..][..3];
            for (ky, &wyk) in wy.iter().enumerate() {
                let row = reflect(y0.saturating_add(ky as isize - 1), h) * w;
                for c in 0..3 {
                    let s: f64 = (0..4).map(|k| wx[k] * z[(row + cols[k]) * 3 + c]).sum();
                    o[c] += wyk * s;
                }
            }
        }
    }
    (out, mask)
}

/// Keys' cubic convolution weights (a = −0.75, OpenCV's INTER_CUBIC) for the taps at offsets
/// −1, 0, 1, 2 from the sample's floor, `t` in [0, 1).
pub(super) fn cubic_weights(t: f64) -> [f64; 4] {
    const A: f64 = -0.75;
    let w0 = ((A * (t + 1.0) - 5.0 * A) * (t + 1.0) + 8.0 * A) * (t + 1.0) - 4.0 * A;
    let w1 = ((A + 2.0) * t - (A + 3.0)) * t * t + 1.0;
    let w2 = ((A + 2.0) * (1.0 - t) - (A + 3.0)) * (1.0 - t) * (1.0 - t) + 1.0;
    [w0, w1, w2, 1.0 - w0 - w1 - w2]
}

/// One channel's RealBlur SSIM: scikit-image's standard Gaussian SSIM map (as
/// [`metrics::ssim_gray`] with L = 1) times the mask, summed over the map with 5 px cropped,
/// divided by the mask's sum there.
///
/// Only the cropped map is needed, and its 11×11 windows never reach past the image, so
/// skimage's 'reflect' padding is never read.
pub(super) fn masked_ssim(a: &[f64], b: &[f64], mask: &[bool], w: usize, h: usize) -> Result<f64> {
    const R: usize = metrics::SSIM_WIN / 2;
    let g = metrics::gaussian_kernel();
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    let (mut sum, mut weight) = (0.0, 0usize);
    let mut col = vec![[0.0f64; 5]; w];
    let moments = |i: usize| [a[i], b[i], a[i] * a[i], b[i] * b[i], a[i] * b[i]];
    for y in R..h - R {
        if !mask[y * w + R..(y + 1) * w - R].iter().any(|&m| m) {
            continue;
        }
        // Down the columns, then along the row; each pass sums the centre tap then mirrored pairs
        // from the outside in, like scipy's correlate1d for symmetric kernels.
        for (x, c) in col.iter_mut().enumerate() {
            *c = moments(y * w + x).map(|v| v * g[R]);
            for j in (1..=R).rev() {
                let (u, d) = (moments((y - j) * w + x), moments((y + j) * w + x));
                for k in 0..5 {
                    c[k] += (u[k] + d[k]) * g[R - j];
                }
            }
        }
        for x in R..w - R {
            if !mask[y * w + x] {
                continue;
            }
            let mut mu = col[x].map(|v| v * g[R]);
            for j in (1..=R).rev() {
                for k in 0..5 {
                    mu[k] += (col[x - j][k] + col[x + j][k]) * g[R - j];
                }
            }
            let [mx, my, mxx, myy, mxy] = mu;
            let (vx, vy, vxy) = (mxx - mx * mx, myy - my * my, mxy - mx * my);
            sum += (2.0 * mx * my + c1) * (2.0 * vxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2));
            weight += 1;
        }
    }
    if weight == 0 {
        bail!("realblur: no valid pixel is left inside the 5-px SSIM border");
    }
    Ok(sum / weight as f64)
}

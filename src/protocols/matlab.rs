//! MATLAB's arithmetic: `rgb2ycbcr` luma (`y-matlab`) and the default 3-D `ssim` (`sidd`).

use super::*;

/// MATLAB's `rgb2ycbcr` luma on the image rounded to 8 bits, one value per pixel (row-major),
/// each an integer in [16, 235].
///
/// Exactly MATLAB's arithmetic: for `uint8` input `rgb2ycbcr` calls `imlincomb` with
/// coefficients `(1/255)·[65.481 128.553 24.966]` and offset 16, which sums
/// `((c₁·R + c₂·G) + c₃·B) + 16` in double (R, G, B the 8-bit values) and converts to `uint8`
/// rounding half away from zero. Mathematically this is `16 + 65.481 r + 128.553 g + 24.966 b`
/// with r = R/255; evaluating that form instead changes the rounding of 88 of the 2²⁴ colours
/// (all exact ties), and numpy's round-half-to-even changes 57 more.
pub fn rgb_to_y_matlab(img: &Image) -> Vec<f64> {
    let lut = y_matlab_lut();
    img.data
        .chunks_exact(3)
        .map(|p| {
            let v = ((lut[0][q8(p[0]) as usize] + lut[1][q8(p[1]) as usize]) + lut[2][q8(p[2]) as usize]) + 16.0;
            // `f64::round` rounds half away from zero, like MATLAB; v is within [16, 236).
            v.round().clamp(0.0, 255.0)
        })
        .collect()
}

/// A grayscale image's one channel rounded to 8 bits (0–255), one value per pixel. A colour
/// image (a network's output for a grayscale input) gives the mean of its channels — exactly the
/// channel when the three are equal.
pub fn gray_8bit(img: &Image) -> Vec<f64> {
    img.data.chunks_exact(3).map(|p| q8(((p[0] as f64 + p[1] as f64 + p[2] as f64) / 3.0) as f32) as f64).collect()
}

/// `lut[k][v] = c_k · v` for the three `imlincomb` coefficients (same products MATLAB forms).
pub(super) fn y_matlab_lut() -> [[f64; 256]; 3] {
    let coeff = [65.481, 128.553, 24.966].map(|c| (1.0 / 255.0) * c);
    coeff.map(|c| std::array::from_fn(|v| c * v as f64))
}

/// Mean SSIM as MATLAB's default `ssim(A, ref)` computes it for an H×W×3 array, which MATLAB
/// treats as a 3-D volume (`images/ssim.m`, no 'DataFormat' given): every local statistic is an
/// `imgaussfilt3(X, 1.5, 'FilterSize', 11, 'Padding', 'replicate')` (σ = 1.5 and size
/// `2·ceil(3σ)+1` = 11 along height, width *and* the 3-deep channel axis; kernel
/// `exp(-x²/(2σ²))` normalised), C1 = (0.01 L)², C2 = (0.03 L)², the two-term SSIM formula
/// (exponents 1, C3 = C2/2), and the mean over the full H×W×3 map, no border cropped.
///
/// Replicate padding along the 3-deep channel axis makes every channel's statistics a fixed
/// mix of all three: R's use 0.633 R + 0.213 G + 0.154 B, G's use 0.367 R + 0.266 G + 0.367 B
/// (B mirrors R). That is why this differs so much from per-channel SSIM.
/// Works for any size ≥ 1×1. `a` and `b` are used as given (no clamping or rounding).
pub fn ssim_3d_matlab(a: &Image, b: &Image, data_range: f64) -> Result<f64> {
    check_pair(a, b)?;
    if !(data_range.is_finite() && data_range > 0.0) {
        bail!("data_range must be positive and finite, got {data_range}");
    }
    let (w, h) = (a.width, a.height);
    if w == 0 || h == 0 {
        bail!("cannot compute SSIM of empty images");
    }
    let g = matlab_gaussian_kernel();
    let mix = depth_weights(&g);
    let (c1, c2) = ((0.01 * data_range).powi(2), (0.03 * data_range).powi(2));

    // 15 planes per row: the five moments (x, y, x², y², xy) × 3 channels, plane `k * 3 + c`,
    // already filtered along the channel axis. Planes are separate arrays (so the filter loops
    // run along x and vectorise). Each image row is made once, into a ring of 2R+1 rows (any
    // 11 consecutive rows have distinct `row % 11`).
    let mut ring = vec![0.0f64; KSIZE * 15 * w];
    let mut chan = vec![0.0f64; 6 * w];
    let mut raw = vec![0.0f64; 3 * w];
    let mut make_row = |y: usize, out: &mut [f64]| {
        let (ra, rb) = (&a.data[y * w * 3..][..w * 3], &b.data[y * w * 3..][..w * 3]);
        for c in 0..3 {
            for x in 0..w {
                chan[c * w + x] = ra[x * 3 + c] as f64;
                chan[(3 + c) * w + x] = rb[x * 3 + c] as f64;
            }
        }
        for k in 0..5 {
            for c in 0..3 {
                let (p, q) = (&chan[c * w..][..w], &chan[(3 + c) * w..][..w]);
                let r = &mut raw[c * w..][..w];
                match k {
                    0 => r.copy_from_slice(p),
                    1 => r.copy_from_slice(q),
                    2 => r.iter_mut().zip(p).for_each(|(r, &p)| *r = p * p),
                    3 => r.iter_mut().zip(q).for_each(|(r, &q)| *r = q * q),
                    _ => r.iter_mut().zip(p.iter().zip(q)).for_each(|(r, (&p, &q))| *r = p * q),
                }
            }
            let (r0, r1, r2) = (&raw[..w], &raw[w..2 * w], &raw[2 * w..]);
            for (c, m) in mix.iter().enumerate() {
                let o = &mut out[(k * 3 + c) * w..][..w];
                for x in 0..w {
                    o[x] = m[0] * r0[x] + m[1] * r1[x] + m[2] * r2[x];
                }
            }
        }
    };
    // Vertically filtered planes, each with R replicated columns on both sides; then the
    // horizontally filtered means.
    let wp = w + 2 * KR;
    let mut col = vec![0.0f64; 15 * wp];
    let mut mu = vec![0.0f64; 15 * w];
    let mut next_row = 0;
    let mut sum = 0.0;
    for y in 0..h {
        while next_row <= (y + KR).min(h - 1) {
            make_row(next_row, &mut ring[(next_row % KSIZE) * 15 * w..][..15 * w]);
            next_row += 1;
        }
        let plane = |dy: isize, k: usize| {
            let r = (y as isize + dy).clamp(0, h as isize - 1) as usize;
            &ring[((r % KSIZE) * 15 + k) * w..][..w]
        };
        for k in 0..15 {
            // Down the columns: centre tap, then symmetric pairs.
            let cp = &mut col[k * wp..][..wp];
            let c = &mut cp[KR..KR + w];
            c.iter_mut().zip(plane(0, k)).for_each(|(c, &v)| *c = v * g[KR]);
            for j in 1..=KR {
                let (up, down, gj) = (plane(-(j as isize), k), plane(j as isize, k), g[KR - j]);
                c.iter_mut().zip(up.iter().zip(down)).for_each(|(c, (&u, &d))| *c += (u + d) * gj);
            }
            let (first, last) = (cp[KR], cp[KR + w - 1]);
            cp[..KR].fill(first);
            cp[KR + w..].fill(last);
            // Along the row.
            let m = &mut mu[k * w..][..w];
            m.iter_mut().zip(&cp[KR..]).for_each(|(m, &v)| *m = v * g[KR]);
            for j in 1..=KR {
                let gj = g[KR - j];
                m.iter_mut().zip(cp[KR - j..].iter().zip(&cp[KR + j..])).for_each(|(m, (&l, &r))| *m += (l + r) * gj);
            }
        }
        for c in 0..3 {
            let p = |k: usize| &mu[(k * 3 + c) * w..][..w];
            let (mx, my, mxx, myy, mxy) = (p(0), p(1), p(2), p(3), p(4));
            for x in 0..w {
                let (mx, my, mxx, myy, mxy) = (mx[x], my[x], mxx[x], myy[x], mxy[x]);
                // ssim.m's expression order.
                let (muxy, mux2, muy2) = (mx * my, mx * mx, my * my);
                let (sx2, sy2, sxy) = (mxx - mux2, myy - muy2, mxy - muxy);
                sum += (2.0 * muxy + c1) * (2.0 * sxy + c2) / ((mux2 + muy2 + c1) * (sx2 + sy2 + c2));
            }
        }
    }
    Ok(sum / (w * h * 3) as f64)
}

/// MATLAB `ssim`'s filter radius, `ceil(3σ)` with σ = 1.5, and the filter size.
pub(super) const KR: usize = 5;
pub(super) const KSIZE: usize = 2 * KR + 1;

/// `images.internal.createGaussianKernel(1.5, 11)`: `exp(-(x²/σ²)/2)`, x = -5..=5, normalised.
/// (No tap falls below `eps·max`, so MATLAB's suppression step changes nothing.)
pub(super) fn matlab_gaussian_kernel() -> [f64; KSIZE] {
    let sigma = 1.5f64;
    let g: [f64; KSIZE] = std::array::from_fn(|i| {
        let x = i as f64 - KR as f64;
        (-((x * x) / (sigma * sigma)) / 2.0).exp()
    });
    let s: f64 = g.iter().sum();
    g.map(|v| v / s)
}

/// The channel-axis pass of the 11-tap filter on a 3-deep axis with replicate padding, as a
/// 3×3 matrix: `out[c] = Σ_k m[c][k]·in[k]`, `m[c][k]` = sum of the taps whose clamped source
/// index is k.
pub(super) fn depth_weights(g: &[f64; KSIZE]) -> [[f64; 3]; 3] {
    let mut m = [[0.0; 3]; 3];
    for (c, row) in m.iter_mut().enumerate().take(2) {
        for (t, &gt) in g.iter().enumerate() {
            row[(c as isize + t as isize - KR as isize).clamp(0, 2) as usize] += gt;
        }
    }
    // Channel 2 mirrors channel 0; built as the mirror so swapping R and B is exact.
    m[2] = [m[0][2], m[0][1], m[0][0]];
    m
}

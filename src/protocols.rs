//! The field's named scoring protocols, exactly as the published tables computed them.
//!
//! [`crate::metrics`] owns the generic definitions (PSNR, standard Gaussian SSIM). This module
//! owns the *protocols*: which image representation, rounding, colour conversion, window and
//! averaging each benchmark's published numbers used (see `DATASETS.md`, "Scoring protocols").
//! Every number a report prints should say which [`ProtocolKind`] produced it.
//!
//! * [`ProtocolKind::Rgb`] (`rgb`): restored clamped to [0, 1], unquantised; PSNR with peak 1;
//!   standard SSIM ([`metrics::ssim`], L = 1).
//! * [`ProtocolKind::YMatlab`] (`y-matlab`, deraining / SPA-Data tables): both images rounded
//!   to 8 bits, luma by MATLAB's `rgb2ycbcr` on `uint8` input, rounded back to 8 bits
//!   ([`rgb_to_y_matlab`]); PSNR with peak 255 on Y; standard 11×11 Gaussian 'valid' SSIM on Y
//!   with L = 255 (Wang's `SSIM_index`, via [`metrics::ssim_gray`]).
//! * [`ProtocolKind::Sidd`] (`sidd`): restored clamped to [0, 1], unquantised; PSNR on RGB with
//!   peak 1; SSIM = MATLAB's default `ssim(A, ref)` on the H×W×3 array, which treats it as a
//!   volume ([`ssim_3d_matlab`]). The per-channel standard SSIM is reported as the extra value
//!   `"ssim_per_channel"`; the two can differ a lot (by 0.3 to 0.6 on the test fixtures for
//!   a grey-for-colour output or strong noise). Scores one block: the SIDD tables average this
//!   over the 1280 256×256 blocks.
//! * [`ProtocolKind::RealblurNoalign`] (`realblur-noalign`, what the Noise-DA release reported
//!   for RealBlur-J, no alignment): both images rounded to 8 bits; PSNR with peak 255 on RGB;
//!   SSIM with scikit-image's defaults for `structural_similarity(gt, restored,
//!   channel_axis=-1)` on `uint8`: 7×7 uniform window, sample covariance (NP/(NP−1)),
//!   data range 255, mean over the valid region (3 px cropped), per channel then averaged.
//!   This is *not* the official RealBlur protocol (gain + ECC alignment + masked scores).
//!
//! "Rounded to 8 bits" means [`crate::image::quantize_u8`], what saving a PNG does (computed
//! here by a faster bit-identical routine). `score` is single-threaded on purpose: parallelise
//! over images in the caller.
//!
//! `tests/protocols_reference.rs` checks every protocol against scikit-image / exact numpy
//! re-implementations of the MATLAB code on real photographs.

use crate::image::Image;
use crate::metrics;
use anyhow::{Result, bail};

/// A named scoring protocol; see the module docs for the exact definitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProtocolKind {
    Rgb,
    YMatlab,
    Sidd,
    RealblurNoalign,
}

impl ProtocolKind {
    pub const ALL: [ProtocolKind; 4] =
        [ProtocolKind::Rgb, ProtocolKind::YMatlab, ProtocolKind::Sidd, ProtocolKind::RealblurNoalign];

    /// The protocol's label in reports and specs: `rgb`, `y-matlab`, `sidd`, `realblur-noalign`.
    pub fn name(self) -> &'static str {
        match self {
            ProtocolKind::Rgb => "rgb",
            ProtocolKind::YMatlab => "y-matlab",
            ProtocolKind::Sidd => "sidd",
            ProtocolKind::RealblurNoalign => "realblur-noalign",
        }
    }
}

impl std::fmt::Display for ProtocolKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ProtocolKind {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match ProtocolKind::ALL.into_iter().find(|k| k.name() == s) {
            Some(k) => Ok(k),
            None => bail!("unknown scoring protocol {s:?} (known: rgb, y-matlab, sidd, realblur-noalign)"),
        }
    }
}

/// One image pair's scores under one protocol.
#[derive(Clone, Debug, PartialEq)]
pub struct Score {
    /// dB; `+∞` when the compared representations are identical.
    pub psnr: f64,
    pub ssim: f64,
    /// Extra named values, e.g. `("ssim_per_channel", v)` for `sidd`.
    pub extra: Vec<(&'static str, f64)>,
}

impl Score {
    /// The extra value called `name`, if this protocol reports one.
    pub fn extra(&self, name: &str) -> Option<f64> {
        self.extra.iter().find(|(k, _)| *k == name).map(|&(_, v)| v)
    }
}

/// Scores `restored` against the ground truth `reference` under protocol `kind`.
///
/// Errors on mismatched sizes, malformed buffers, or images too small for the protocol's
/// SSIM window (11 px for `rgb`, `y-matlab` and `sidd`'s per-channel value; 7 px for
/// `realblur-noalign`).
pub fn score(kind: ProtocolKind, restored: &Image, reference: &Image) -> Result<Score> {
    check_pair(restored, reference)?;
    match kind {
        ProtocolKind::Rgb => {
            let r = restored.clamped();
            Ok(Score {
                psnr: metrics::psnr(&r, reference, 1.0)?,
                ssim: metrics::ssim(&r, reference, 1.0)?,
                extra: vec![],
            })
        }
        ProtocolKind::YMatlab => {
            let (w, h) = (reference.width, reference.height);
            if w < metrics::SSIM_WIN || h < metrics::SSIM_WIN {
                bail!("y-matlab SSIM needs at least {0}x{0} pixels, got {w}x{h}", metrics::SSIM_WIN);
            }
            let (yr, yg) = (rgb_to_y_matlab(restored), rgb_to_y_matlab(reference));
            // Y values are integers, so the squared-error sum is exact.
            let sse: f64 = yr.iter().zip(&yg).map(|(a, b)| (a - b) * (a - b)).sum();
            Ok(Score {
                psnr: psnr_from_mse(sse / yr.len() as f64, 255.0),
                ssim: metrics::ssim_gray(&yr, &yg, w, h, 255.0),
                extra: vec![],
            })
        }
        ProtocolKind::Sidd => {
            let r = restored.clamped();
            Ok(Score {
                psnr: metrics::psnr(&r, reference, 1.0)?,
                ssim: ssim_3d_matlab(&r, reference, 1.0)?,
                extra: vec![("ssim_per_channel", metrics::ssim(&r, reference, 1.0)?)],
            })
        }
        ProtocolKind::RealblurNoalign => {
            let (w, h) = (reference.width, reference.height);
            if w < BOX_WIN || h < BOX_WIN {
                bail!("realblur-noalign SSIM needs at least {BOX_WIN}x{BOX_WIN} pixels, got {w}x{h}");
            }
            let (r8, g8) = (to_u8(restored), to_u8(reference));
            let sse: u64 = r8.iter().zip(&g8).map(|(&a, &b)| (a as i64 - b as i64).pow(2) as u64).sum();
            Ok(Score {
                psnr: psnr_from_mse(sse as f64 / r8.len() as f64, 255.0),
                ssim: ssim_box7_u8(&g8, &r8, w, h),
                extra: vec![],
            })
        }
    }
}

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

/// `lut[k][v] = c_k · v` for the three `imlincomb` coefficients (same products MATLAB forms).
fn y_matlab_lut() -> [[f64; 256]; 3] {
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
const KR: usize = 5;
const KSIZE: usize = 2 * KR + 1;

/// `images.internal.createGaussianKernel(1.5, 11)`: `exp(-(x²/σ²)/2)`, x = -5..=5, normalised.
/// (No tap falls below `eps·max`, so MATLAB's suppression step changes nothing.)
fn matlab_gaussian_kernel() -> [f64; KSIZE] {
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
fn depth_weights(g: &[f64; KSIZE]) -> [[f64; 3]; 3] {
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

/// scikit-image's default window side (uniform filter).
const BOX_WIN: usize = 7;

/// scikit-image `structural_similarity(x, y, channel_axis=-1)` defaults on interleaved 8-bit
/// RGB: 7×7 uniform window, sample covariance (49/48), L = 255, mean over the valid region
/// (3 px cropped: exactly the positions whose window never reads skimage's 'reflect' padding),
/// per channel then averaged. Computed from exact integer window sums with one division per
/// position, so it is slightly *more* accurate than skimage's float filters (they agree to
/// ~1e-13).
fn ssim_box7_u8(x8: &[u8], y8: &[u8], w: usize, h: usize) -> f64 {
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

/// [`crate::image::quantize_u8`] (round half away from zero, then clamp), bit for bit for
/// every `f32` including NaN (checked over all 2³² inputs), without the `roundf` libm call the
/// baseline x86-64 target makes for `f32::round`: clamped `v·255` is exact in `f64`, so adding
/// 0.5 there and truncating rounds half up correctly.
#[inline]
fn q8(v: f32) -> u8 {
    ((v * 255.0).clamp(0.0, 255.0) as f64 + 0.5) as u8
}

/// [`Image::to_rgb8`], through [`q8`].
fn to_u8(img: &Image) -> Vec<u8> {
    img.data.iter().map(|&v| q8(v)).collect()
}

fn psnr_from_mse(mse: f64, peak: f64) -> f64 {
    if mse == 0.0 { f64::INFINITY } else { 10.0 * (peak * peak / mse).log10() }
}

fn check_pair(a: &Image, b: &Image) -> Result<()> {
    if !a.same_size(b) {
        bail!("image sizes differ: {}x{} vs {}x{}", a.width, a.height, b.width, b.height);
    }
    for img in [a, b] {
        if img.data.len() != img.width * img.height * 3 {
            bail!("{}x{} image holds {} values, not width*height*3", img.width, img.height, img.data.len());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic smooth-plus-noise image (same LCG idea as the metrics tests).
    fn pattern(w: usize, h: usize, seed: u64) -> Image {
        let mut s = seed;
        let data = (0..w * h * 3)
            .map(|i| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let smooth = ((i / 3 % w) as f32 / w as f32 + (i / 3 / w) as f32 / h as f32) * 0.4;
                smooth + (s >> 40) as f32 / (1u64 << 24) as f32 * 0.2 + (i % 3) as f32 * 0.1
            })
            .collect();
        Image::from_vec(w, h, data)
    }

    #[test]
    fn names_round_trip() {
        for k in ProtocolKind::ALL {
            assert_eq!(k.name().parse::<ProtocolKind>().unwrap(), k);
            assert_eq!(k.to_string(), k.name());
        }
        assert!("y_matlab".parse::<ProtocolKind>().unwrap_err().to_string().contains("unknown scoring protocol"));
    }

    #[test]
    fn y_matlab_known_values_and_ties() {
        let px = |r: u8, g: u8, b: u8| Image::from_rgb8(1, 1, &[r, g, b]);
        assert_eq!(rgb_to_y_matlab(&px(0, 0, 0)), [16.0]);
        assert_eq!(rgb_to_y_matlab(&px(255, 255, 255)), [235.0]);
        // 16 + 65.481·(200/255) + 128.553·(100/255) + 24.966·(50/255) = 122.7333…
        assert_eq!(rgb_to_y_matlab(&px(200, 100, 50)), [123.0]);
        // Exact ties (255000·Y ≡ 127500 mod 255000). (6,34,182) is 52.5 exactly and imlincomb's
        // double sum lands on 52.5: half away from zero gives 53 (numpy's round, 52).
        assert_eq!(rgb_to_y_matlab(&px(6, 34, 182)), [53.0]);
        // (0,204,68) is 125.5 exactly, but imlincomb's sum is 125.49999999999999 → 125 (the
        // `16 + 65.481·R/255 + …` form gives 125.5 → 126).
        assert_eq!(rgb_to_y_matlab(&px(0, 204, 68)), [125.0]);
        // Out-of-range and unrounded inputs are quantised first.
        let f = Image::from_vec(1, 1, vec![-0.2, 1.7, 0.5]);
        assert_eq!(rgb_to_y_matlab(&f), rgb_to_y_matlab(&px(0, 255, 128)));
    }

    #[test]
    fn q8_is_quantize_u8() {
        // Exhaustively equal over all 2³² f32 (checked once in release); here, a few ulps around
        // every rounding boundary and each exact level, plus the specials.
        let mut vals = vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 0.0, f32::MIN_POSITIVE, -1e-30, 2.0];
        for k in 0..=256 {
            for centre in [(k as f32 - 0.5) / 255.0, k as f32 / 255.0] {
                let b = centre.to_bits() as i64;
                vals.extend((-8..=8).map(|d| f32::from_bits((b + d).max(0) as u32)));
            }
        }
        for v in vals {
            assert_eq!(q8(v), crate::image::quantize_u8(v), "{v:e}");
        }
    }

    #[test]
    fn depth_weights_are_replicate_padding() {
        let g = matlab_gaussian_kernel();
        let m = depth_weights(&g);
        for row in &m {
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        }
        assert_eq!(m[0][1], g[6]);
        assert_eq!(m[1][1], g[5]);
        assert_eq!(m[2], [m[0][2], m[0][1], m[0][0]]);
        assert_eq!([m[0][0], m[0][1], m[0][2]].map(|v| (v * 1e3).round()), [633.0, 213.0, 154.0]);
        assert_eq!([m[1][0], m[1][1], m[1][2]].map(|v| (v * 1e3).round()), [367.0, 266.0, 367.0]);
    }

    #[test]
    fn identical_images_are_perfect() {
        let a = pattern(23, 17, 1).clamped();
        for k in ProtocolKind::ALL {
            let s = score(k, &a, &a).unwrap();
            assert_eq!(s.psnr, f64::INFINITY, "{k}");
            assert!((s.ssim - 1.0).abs() < 1e-12, "{k}: {}", s.ssim);
        }
        assert!((ssim_3d_matlab(&a, &a, 1.0).unwrap() - 1.0).abs() < 1e-12);
        let one = Image::from_vec(1, 1, vec![0.1, 0.5, 0.9]);
        assert!((ssim_3d_matlab(&one, &one, 1.0).unwrap() - 1.0).abs() < 1e-12);
    }

    /// Direct 11×11×11 correlation with clamped indices, the definition itself.
    fn ssim_3d_direct(a: &Image, b: &Image, l: f64) -> f64 {
        let g = matlab_gaussian_kernel();
        let (w, h) = (a.width as isize, a.height as isize);
        let cl = |v: isize, n: isize| v.clamp(0, n - 1) as usize;
        let (c1, c2) = ((0.01 * l).powi(2), (0.03 * l).powi(2));
        let mut sum = 0.0;
        for y in 0..h {
            for x in 0..w {
                for c in 0..3isize {
                    let mut m = [0.0; 5];
                    for dy in -5..=5isize {
                        for dx in -5..=5isize {
                            for dc in -5..=5isize {
                                let wt = g[(dy + 5) as usize] * g[(dx + 5) as usize] * g[(dc + 5) as usize];
                                let (xx, yy, cc) = (cl(x + dx, w), cl(y + dy, h), cl(c + dc, 3));
                                let (p, q) = (a.get(xx, yy, cc) as f64, b.get(xx, yy, cc) as f64);
                                for (k, v) in [p, q, p * p, q * q, p * q].into_iter().enumerate() {
                                    m[k] += wt * v;
                                }
                            }
                        }
                    }
                    let [mx, my, mxx, myy, mxy] = m;
                    let (sx, sy, sxy) = (mxx - mx * mx, myy - my * my, mxy - mx * my);
                    sum += (2.0 * mx * my + c1) * (2.0 * sxy + c2) / ((mx * mx + my * my + c1) * (sx + sy + c2));
                }
            }
        }
        sum / (w * h * 3) as f64
    }

    #[test]
    fn ssim_3d_matches_direct_definition() {
        // Sizes below, at and above the kernel support, so every padding path runs.
        for (w, h) in [(3, 4), (12, 7), (17, 13)] {
            let a = pattern(w, h, 3);
            let b =
                Image::from_vec(w, h, pattern(w, h, 4).data.iter().zip(&a.data).map(|(n, v)| v + 0.3 * n).collect());
            let (fast, slow) = (ssim_3d_matlab(&a, &b, 1.0).unwrap(), ssim_3d_direct(&a, &b, 1.0));
            assert!((fast - slow).abs() < 1e-13, "{w}x{h}: {fast} vs {slow}");
            assert!(fast < 0.99);
        }
    }

    #[test]
    fn rgb_and_sidd_clamp_the_restored_image() {
        let gt = pattern(20, 16, 5).clamped();
        let mut wild = pattern(20, 16, 6);
        wild.data.iter_mut().enumerate().for_each(|(i, v)| *v = *v * 1.6 - 0.3 + (i % 7) as f32 * 0.01);
        for k in [ProtocolKind::Rgb, ProtocolKind::Sidd] {
            assert_eq!(score(k, &wild, &gt).unwrap(), score(k, &wild.clamped(), &gt).unwrap(), "{k}");
        }
        let s = score(ProtocolKind::Sidd, &wild, &gt).unwrap();
        assert_eq!(s.extra("ssim_per_channel"), Some(metrics::ssim(&wild.clamped(), &gt, 1.0).unwrap()));
        // The 8-bit protocols see only the quantised images.
        for k in [ProtocolKind::YMatlab, ProtocolKind::RealblurNoalign] {
            assert_eq!(score(k, &wild, &gt).unwrap(), score(k, &wild.quantized(), &gt.quantized()).unwrap(), "{k}");
        }
    }

    #[test]
    fn realblur_psnr_is_on_8_bit_values() {
        let a = Image::from_rgb8(8, 8, &[100; 8 * 8 * 3]);
        let b = Image::from_rgb8(8, 8, &[110; 8 * 8 * 3]);
        let s = score(ProtocolKind::RealblurNoalign, &b, &a).unwrap();
        assert_eq!(s.psnr, 10.0 * (255.0f64 * 255.0 / 100.0).log10());
        // Constant images: σ = 0 everywhere, SSIM = luminance term only.
        let want = (2.0 * 100.0 * 110.0 + 6.5025) / (100.0f64.powi(2) + 110.0f64.powi(2) + 6.5025);
        assert!((s.ssim - want).abs() < 1e-15);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let (a, b) = (pattern(20, 20, 7), pattern(20, 21, 8));
        for k in ProtocolKind::ALL {
            assert_eq!(score(k, &a, &b).unwrap_err().to_string(), "image sizes differ: 20x20 vs 20x21");
        }
        let small = pattern(10, 12, 9);
        for k in [ProtocolKind::Rgb, ProtocolKind::YMatlab, ProtocolKind::Sidd] {
            assert!(score(k, &small, &small).unwrap_err().to_string().contains("11x11"), "{k}");
        }
        assert!(score(ProtocolKind::RealblurNoalign, &small, &small).is_ok());
        let tiny = pattern(6, 9, 9);
        assert!(score(ProtocolKind::RealblurNoalign, &tiny, &tiny).unwrap_err().to_string().contains("7x7"));
        let mut bad = pattern(20, 20, 10);
        bad.data.pop();
        assert!(ssim_3d_matlab(&bad, &a, 1.0).unwrap_err().to_string().contains("not width*height*3"));
        assert!(ssim_3d_matlab(&a, &a, 0.0).is_err());
    }
}

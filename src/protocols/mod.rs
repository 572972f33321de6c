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
//!   with L = 255 (Wang's `SSIM_index`, via [`metrics::ssim_gray`]). A grayscale reference
//!   (read from a one-channel file) is its own Y, and the restored image is read as one channel
//!   ([`gray_8bit`]), as the published scripts and BasicSR treat one-channel images.
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
//! * [`ProtocolKind::Realblur`] (`realblur`, the official RealBlur evaluation): restored clamped
//!   to [0, 1], then scaled by one least-squares gain a = Σxz/Σz² against the ground truth x;
//!   aligned to x by an ECC homography as OpenCV's `findTransformECC(gray(x), gray(a·z),
//!   MOTION_HOMOGRAPHY, 100 iterations, gaussFiltSize 5)` computes it (`realblur::ecc_homography`);
//!   warped by `warpPerspective` with bicubic (a = −0.75) and BORDER_REFLECT, plus a validity
//!   mask m from a nearest-neighbour warp of ones; both images multiplied by m; PSNR with peak
//!   1 over the valid entries, Σm(x−z)² / (3Σm); SSIM = the standard Gaussian SSIM map (as
//!   `rgb`) times m, 5 px cropped, Σ map / Σ m per channel, averaged over channels. Extras:
//!   `gain`, `ecc_iterations` and the homography `h00` … `h21` (h22 = 1), which maps ground-truth
//!   pixel coordinates to restored ones. Stops before 100 iterations once ECC has converged
//!   (`ECC_STOP_PX`). Where ECC does not converge (small or flat images: it can wander for all
//!   100 iterations), OpenCV's result is chaotic in the inputs' last bits, and so is ours.
//!
//! "Rounded to 8 bits" means [`crate::image::quantize_u8`], what saving a PNG does (computed
//! here by a faster bit-identical routine). `score` is single-threaded on purpose: parallelise
//! over images in the caller.
//!
//! `tests/protocols_reference.rs` checks every protocol against scikit-image / exact numpy
//! re-implementations of the MATLAB code on real photographs; `tests/realblur_reference.rs`
//! checks `realblur` against OpenCV + scikit-image.

use crate::image::Image;
use crate::metrics;
use anyhow::{Result, bail};

mod matlab;
mod realblur;

pub use matlab::{gray_8bit, rgb_to_y_matlab, ssim_3d_matlab};
use realblur::*;

/// A named scoring protocol; see the module docs for the exact definitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProtocolKind {
    Rgb,
    YMatlab,
    Sidd,
    RealblurNoalign,
    Realblur,
}

impl ProtocolKind {
    pub const ALL: [ProtocolKind; 5] = [
        ProtocolKind::Rgb,
        ProtocolKind::YMatlab,
        ProtocolKind::Sidd,
        ProtocolKind::RealblurNoalign,
        ProtocolKind::Realblur,
    ];

    /// The protocol's label in reports and specs: `rgb`, `y-matlab`, `sidd`, `realblur-noalign`,
    /// `realblur`.
    pub fn name(self) -> &'static str {
        match self {
            ProtocolKind::Rgb => "rgb",
            ProtocolKind::YMatlab => "y-matlab",
            ProtocolKind::Sidd => "sidd",
            ProtocolKind::RealblurNoalign => "realblur-noalign",
            ProtocolKind::Realblur => "realblur",
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
            None => {
                let known: Vec<&str> = ProtocolKind::ALL.iter().map(|k| k.name()).collect();
                bail!("unknown scoring protocol {s:?} (known: {})", known.join(", "))
            }
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
/// SSIM window (11 px for `rgb`, `y-matlab`, `sidd`'s per-channel value and `realblur`; 7 px for
/// `realblur-noalign`); for `realblur` also where OpenCV's `findTransformECC` would throw
/// (uncorrelated or flat images) and for an all-black restored image (no gain).
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
            // A grayscale reference is its own luma (the published scripts guard `rgb2ycbcr`
            // with `size(im, 3) == 3`; BasicSR's `to_y_channel` leaves one channel as it is);
            // the restored image is then read as one channel too.
            let luma = |im: &Image| if reference.gray { gray_8bit(im) } else { rgb_to_y_matlab(im) };
            let (yr, yg) = (luma(restored), luma(reference));
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
        ProtocolKind::Realblur => realblur(restored, reference),
    }
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
    use super::matlab::*;
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

    /// A grayscale pair under `y-matlab` is scored on its 8-bit values as they are (the
    /// published scripts' one-channel path), not through `rgb2ycbcr` of a replicated RGB image,
    /// which compresses the range to 16–235 and reads ≈ 20·log10(255/219) = 1.32 dB higher.
    #[test]
    fn y_matlab_reads_grayscale_images_as_their_own_luma() {
        let dir = std::env::temp_dir().join(format!("rp-gray-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (w, h) = (24u32, 20u32);
        let a: Vec<u8> = (0..w * h).map(|i| ((i * 37 + i / 5) % 256) as u8).collect();
        let b: Vec<u8> = a.iter().enumerate().map(|(i, &v)| v.saturating_add((i % 9) as u8 * 3)).collect();
        let save = |name: &str, v: &[u8], rgb: bool| {
            let p = dir.join(name);
            if rgb {
                let rep: Vec<u8> = v.iter().flat_map(|&x| [x, x, x]).collect();
                image::RgbImage::from_raw(w, h, rep).unwrap().save(&p).unwrap();
            } else {
                image::GrayImage::from_raw(w, h, v.to_vec()).unwrap().save(&p).unwrap();
            }
            Image::load(&p).unwrap()
        };
        let (ga, gb) = (save("a.png", &a, false), save("b.png", &b, false));
        let (ca, cb) = (save("a_rgb.png", &a, true), save("b_rgb.png", &b, true));
        assert!(ga.gray && gb.gray && !ca.gray, "one-channel files are marked gray");
        assert_eq!(ga.data, ca.data, "the same pixels either way");

        let gray = score(ProtocolKind::YMatlab, &ga, &gb).unwrap();
        let (fa, fb): (Vec<f64>, Vec<f64>) =
            (a.iter().map(|&v| v as f64).collect(), b.iter().map(|&v| v as f64).collect());
        let mse = fa.iter().zip(&fb).map(|(x, y)| (x - y) * (x - y)).sum::<f64>() / fa.len() as f64;
        assert!((gray.psnr - 10.0 * (255.0 * 255.0 / mse).log10()).abs() < 1e-9, "{}", gray.psnr);
        assert!((gray.ssim - metrics::ssim_gray(&fa, &fb, w as usize, h as usize, 255.0)).abs() < 1e-12);
        // A colour restoration of the grayscale reference is read as one channel too.
        assert!((score(ProtocolKind::YMatlab, &cb, &ga).unwrap().psnr - gray.psnr).abs() < 1e-9);

        let rgb = score(ProtocolKind::YMatlab, &ca, &cb).unwrap();
        let gap = rgb.psnr - gray.psnr;
        assert!((gap - 20.0 * (255.0f64 / 219.0).log10()).abs() < 0.1, "RGB path reads {gap} dB higher");
        std::fs::remove_dir_all(&dir).unwrap();
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
    fn realblur_identical_images_are_perfect() {
        let a = pattern(40, 30, 11).clamped();
        // Halving is exact in f32 and the gain undoes it exactly: the same perfect score.
        let half = Image::from_vec(40, 30, a.data.iter().map(|v| v * 0.5).collect());
        for (restored, gain) in [(&a, 1.0), (&half, 2.0)] {
            let s = score(ProtocolKind::Realblur, restored, &a).unwrap();
            assert_eq!((s.psnr, s.extra("gain"), s.extra("ecc_iterations")), (f64::INFINITY, Some(gain), Some(1.0)));
            assert!((s.ssim - 1.0).abs() < 1e-12, "{}", s.ssim);
            let identity = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0];
            for (name, want) in ["h00", "h01", "h02", "h10", "h11", "h12", "h20", "h21"].into_iter().zip(identity) {
                assert_eq!(s.extra(name), Some(want), "{name}");
            }
        }
    }

    /// Oblique waves under a smooth bump, flat grey within `margin` px of the frame's edges, with
    /// content at canvas coordinates (x + x0, y + y0).
    fn waves(w: usize, h: usize, x0: f32, y0: f32, margin: f32) -> Image {
        let bump = |t: f32, n: usize| {
            let s = ((t - margin) / (n as f32 - 1.0 - 2.0 * margin)).clamp(0.0, 1.0);
            (std::f32::consts::PI * s).sin().powi(2)
        };
        let mut img = Image::new(w, h);
        for y in 0..h {
            for x in 0..w {
                let (u, v) = (x as f32 + x0, y as f32 + y0);
                for c in 0..3 {
                    let k = c as f32 * 0.7;
                    let val = 0.2 * (0.51 * u + 0.27 * v + k).sin() + 0.15 * (0.23 * u - 0.49 * v + 2.0 * k).sin();
                    img.set(x, y, c, 0.5 + bump(u, w) * bump(v, h) * val);
                }
            }
        }
        img
    }

    #[test]
    fn realblur_recovers_an_integer_shift() {
        let (w, h, dx, dy) = (80, 60, 2.0f64, -1.0f64);
        let gt = waves(w, h, 0.0, 0.0, 10.0);
        // restored(p) = gt(p - d), so ECC must map gt pixel p to restored p + d. Flat borders on
        // both sides, so the pre-blur's border padding is exact and nothing biases the optimum.
        let restored = waves(w, h, -dx as f32, -dy as f32, 10.0);
        let s = score(ProtocolKind::Realblur, &restored, &gt).unwrap();
        let names = ["h00", "h01", "h02", "h10", "h11", "h12", "h20", "h21"];
        let hom: [f64; 8] = std::array::from_fn(|k| s.extra(names[k]).unwrap());
        let err = corner_shift(&hom, &[1.0, 0.0, dx, 0.0, 1.0, dy, 0.0, 0.0], w, h);
        assert!(err < 2e-5, "{hom:?}: corners off by {err:e} px"); // measured 2.3e-6
        // Not perfect: the gain is fitted before the alignment, on the shifted images (0.9972).
        assert!((s.extra("gain").unwrap() - 1.0).abs() < 5e-3, "{:?}", s.extra("gain"));
        assert!(s.psnr > 55.0 && s.ssim > 0.99999, "{} dB, {}", s.psnr, s.ssim);
        let unaligned = score(ProtocolKind::Rgb, &restored, &gt).unwrap().psnr;
        assert!(unaligned < 30.0, "the shift matters: {unaligned} dB");
    }

    #[test]
    fn realblur_rejects_what_opencv_rejects() {
        let gt = waves(30, 20, 0.0, 0.0, 0.0);
        let black = Image::new(30, 20);
        assert!(score(ProtocolKind::Realblur, &black, &gt).unwrap_err().to_string().contains("black"));
        let flat = Image::from_vec(30, 20, vec![0.5; 30 * 20 * 3]);
        assert!(score(ProtocolKind::Realblur, &flat, &gt).is_err());
        assert!(score(ProtocolKind::Realblur, &gt, &flat).is_err());
        let small = waves(10, 30, 0.0, 0.0, 0.0);
        assert!(score(ProtocolKind::Realblur, &small, &small).unwrap_err().to_string().contains("11x11"));
    }

    #[test]
    fn realblur_warp_helpers() {
        // Keys' weights: interpolating at integer positions, partition of unity, a = -0.75.
        assert_eq!(cubic_weights(0.0), [0.0, 1.0, 0.0, 0.0]);
        let c = cubic_weights(0.5);
        assert!((c.iter().sum::<f64>() - 1.0).abs() < 1e-15 && (c[0] - (-0.09375)).abs() < 1e-15, "{c:?}");
        // Nearest rounds half to even, like OpenCV's cvRound.
        assert!(inside_nearest(-0.5, 0.0, 4, 4) && !inside_nearest(-0.5000001, 0.0, 4, 4));
        assert!(!inside_nearest(3.5, 0.0, 4, 4) && inside_nearest(4.5, 0.0, 5, 5));
        assert_eq!([floor(-0.5), floor(-1.0), floor(2.999), floor(f64::NAN)], [-1, -1, 2, 0]);
        // Binomial pre-blur with reflect-101 borders.
        let b = blur5(&[0.0, 1.0, 0.0, 0.0, 0.0], 5, 1);
        assert_eq!(b, [0.5, 0.4375, 0.25, 0.0625, 0.0]);
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

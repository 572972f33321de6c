//! Image quality metrics: MSE, PSNR and SSIM.
//!
//! This module owns the exact definitions the whole project reports, so that numbers are
//! comparable with the literature. They follow scikit-image 0.26 (`skimage.metrics`):
//!
//! * `mse`: mean of squared differences over every pixel and channel, in `f64`.
//! * `psnr`: `10·log10(L² / MSE)` with `L = data_range`; `+∞` for identical images.
//! * `ssim`: Wang et al. 2004 as `structural_similarity(a, b, gaussian_weights=True,
//!   sigma=1.5, use_sample_covariance=False, data_range=L, channel_axis=-1)`: 11×11 Gaussian
//!   window (σ = 1.5, radius 5), K1 = 0.01, K2 = 0.03, population covariance, SSIM map
//!   averaged over the valid region (5 px cropped from every border), per channel, then
//!   averaged over channels.
//!
//! `tests/metrics_reference.rs` checks all of this against scikit-image on real photographs.

use crate::image::Image;
use anyhow::{Result, bail};

/// Gaussian window radius: skimage uses `truncate = 3.5`, so `int(3.5 * 1.5 + 0.5) = 5`.
const RADIUS: usize = 5;
/// Window side, 11; also the smallest image side SSIM accepts.
pub const SSIM_WIN: usize = 2 * RADIUS + 1;
const SIGMA: f64 = 1.5;
const K1: f64 = 0.01;
const K2: f64 = 0.03;

/// Shared argument checks, so the metrics report bad input instead of panicking or
/// silently comparing truncated buffers (`Image` fields are public).
fn check_inputs(a: &Image, b: &Image, data_range: f64) -> Result<()> {
    if !a.same_size(b) {
        bail!("image sizes differ: {}x{} vs {}x{}", a.width, a.height, b.width, b.height);
    }
    for img in [a, b] {
        if img.data.len() != img.width * img.height * 3 {
            bail!("{}x{} image holds {} values, not width*height*3", img.width, img.height, img.data.len());
        }
    }
    if !(data_range.is_finite() && data_range > 0.0) {
        bail!("data_range must be positive and finite, got {data_range}");
    }
    Ok(())
}

/// Mean squared error over all pixels and channels, accumulated in `f64`.
pub(crate) fn mse(a: &Image, b: &Image) -> Result<f64> {
    check_inputs(a, b, 1.0)?;
    if a.data.is_empty() {
        bail!("cannot compute MSE of empty images");
    }
    let sum: f64 = a.data.iter().zip(&b.data).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum();
    Ok(sum / a.data.len() as f64)
}

/// Peak signal-to-noise ratio in dB, `10·log10(L² / MSE)`; `+∞` when the images are equal.
pub fn psnr(a: &Image, b: &Image, data_range: f64) -> Result<f64> {
    check_inputs(a, b, data_range)?;
    let err = mse(a, b)?;
    Ok(if err == 0.0 { f64::INFINITY } else { 10.0 * (data_range * data_range / err).log10() })
}

/// Mean SSIM over the RGB channels (see the module docs for the exact definition).
pub fn ssim(a: &Image, b: &Image, data_range: f64) -> Result<f64> {
    check_inputs(a, b, data_range)?;
    let (w, h) = (a.width, a.height);
    if w < SSIM_WIN || h < SSIM_WIN {
        bail!("SSIM needs images of at least {SSIM_WIN}x{SSIM_WIN} pixels, got {w}x{h}");
    }
    let (mut ca, mut cb) = (Vec::with_capacity(w * h), Vec::with_capacity(w * h));
    let mut total = 0.0;
    for c in 0..3 {
        // De-interleave one channel into reused buffers (fresh large allocations cost page faults).
        ca.clear();
        cb.clear();
        ca.extend(a.data[c..].iter().step_by(3).map(|&v| v as f64));
        cb.extend(b.data[c..].iter().step_by(3).map(|&v| v as f64));
        total += ssim_gray(&ca, &cb, w, h, data_range);
    }
    Ok(total / 3.0)
}

/// Mean SSIM of one `w × h` channel (row-major), over the valid region.
///
/// `data_range` must be positive (`ssim` checks this and the sizes for images).
///
/// # Panics
/// If a slice is not `w * h` long or a side is below 11.
pub fn ssim_gray(a: &[f64], b: &[f64], w: usize, h: usize, data_range: f64) -> f64 {
    assert!(a.len() == w * h && b.len() == w * h, "ssim_gray: slices must hold w*h values");
    assert!(w >= SSIM_WIN && h >= SSIM_WIN, "ssim_gray: sides must be at least {SSIM_WIN}");
    let g = gaussian_kernel();
    let (c1, c2) = ((K1 * data_range).powi(2), (K2 * data_range).powi(2));
    // Only the valid region is averaged, and there the 'reflect' padding skimage uses is never
    // read, so the separable filter runs over just those positions, one output row at a time,
    // for all five moments at once (no full-size temporaries). Like scipy's `gaussian_filter`
    // it goes down columns first, then along the row, and each 1-D pass sums as scipy's
    // `correlate1d` does for symmetric kernels (centre tap, then mirrored pairs from the
    // outside in), so results match skimage to rounding.
    let mut col = vec![[0.0; 5]; w];
    let mut sum = 0.0;
    for y in 0..h - 2 * RADIUS {
        let rows = |dy: usize| (&a[(y + dy) * w..][..w], &b[(y + dy) * w..][..w]);
        let (ca, cb) = rows(RADIUS);
        for (c, (&p, &q)) in col.iter_mut().zip(ca.iter().zip(cb)) {
            *c = moments(p, q).map(|v| v * g[RADIUS]);
        }
        for j in (1..=RADIUS).rev() {
            let ((ua, ub), (da, db)) = (rows(RADIUS - j), rows(RADIUS + j));
            for x in 0..w {
                let (u, d) = (moments(ua[x], ub[x]), moments(da[x], db[x]));
                for k in 0..5 {
                    col[x][k] += (u[k] + d[k]) * g[RADIUS - j];
                }
            }
        }
        for x in RADIUS..w - RADIUS {
            let mut mu = col[x].map(|v| v * g[RADIUS]);
            for j in (1..=RADIUS).rev() {
                for k in 0..5 {
                    mu[k] += (col[x - j][k] + col[x + j][k]) * g[RADIUS - j];
                }
            }
            // Same expression order as skimage, so the cancellation in E[x²] - E[x]² matches.
            let [mx, my, mxx, myy, mxy] = mu;
            let (vx, vy, vxy) = (mxx - mx * mx, myy - my * my, mxy - mx * my);
            sum += (2.0 * mx * my + c1) * (2.0 * vxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2));
        }
    }
    sum / ((w - 2 * RADIUS) * (h - 2 * RADIUS)) as f64
}

/// The per-pixel quantities whose windowed means SSIM needs: x, y, x², y², xy.
#[inline(always)]
fn moments(x: f64, y: f64) -> [f64; 5] {
    [x, y, x * x, y * y, x * y]
}

/// scipy's `_gaussian_kernel1d(1.5, 0, 5)`: `exp(-0.5/σ² · x²)` for x in -5..=5, normalised.
pub(crate) fn gaussian_kernel() -> [f64; SSIM_WIN] {
    let mut g = [0.0; SSIM_WIN];
    for (i, v) in g.iter_mut().enumerate() {
        let x = i as f64 - RADIUS as f64;
        *v = (-0.5 / (SIGMA * SIGMA) * (x * x)).exp();
    }
    // numpy's pairwise sum for 11 values: 8 lanes combined as a tree, then the rest in order.
    let s = ((g[0] + g[1]) + (g[2] + g[3])) + ((g[4] + g[5]) + (g[6] + g[7])) + g[8] + g[9] + g[10];
    g.map(|v| v / s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random test image (a small LCG keeps the module dependency-free).
    fn pattern(w: usize, h: usize, seed: u64) -> Image {
        let mut s = seed;
        let data = (0..w * h * 3)
            .map(|i| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let smooth = ((i / 3 % w) as f32 / w as f32 + (i / 3 / w) as f32 / h as f32) * 0.4;
                smooth + (s >> 40) as f32 / (1u64 << 24) as f32 * 0.2
            })
            .collect();
        Image::from_vec(w, h, data)
    }

    fn noisy(img: &Image, sigma: f32, seed: u64) -> Image {
        let n = pattern(img.width, img.height, seed);
        let data = img.data.iter().zip(&n.data).map(|(&v, &r)| v + sigma * (r - 0.3)).collect();
        Image::from_vec(img.width, img.height, data)
    }

    #[test]
    fn kernel_is_scipys() {
        // repr() of scipy.ndimage._filters._gaussian_kernel1d(1.5, 0, 5)[5:] (scipy 1.17); equal
        // bit for bit with glibc, the slack allows another libm's exp to differ by an ulp.
        let scipy = [
            0.26601172486179436,
            0.2130055377112537,
            0.10936068950970002,
            0.03600077212843083,
            0.007598758135239185,
            0.00102838008447911,
        ];
        let g = gaussian_kernel();
        for (i, &want) in scipy.iter().enumerate() {
            assert!((g[RADIUS + i] - want).abs() <= 4.0 * f64::EPSILON * want, "tap {i}: {} vs {want}", g[RADIUS + i]);
            assert_eq!(g[RADIUS - i], g[RADIUS + i]);
        }
    }

    #[test]
    fn identical_images_are_perfect() {
        let a = pattern(32, 24, 1);
        assert_eq!(psnr(&a, &a, 1.0).unwrap(), f64::INFINITY);
        assert!((ssim(&a, &a, 1.0).unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn constant_offset_psnr() {
        let a = pattern(16, 16, 2).clamped();
        let b = Image::from_vec(16, 16, a.data.iter().map(|v| v + 0.1).collect());
        // 10·log10(1 / 0.1²) = 20 dB; the slack only covers f32 storage of the pixels.
        assert!((psnr(&a, &b, 1.0).unwrap() - 20.0).abs() < 1e-5);
        // Exactly representable offset: 10·log10(64).
        let c = Image::from_vec(16, 16, vec![0.25; 16 * 16 * 3]);
        let d = Image::from_vec(16, 16, vec![0.375; 16 * 16 * 3]);
        assert_eq!(psnr(&c, &d, 1.0).unwrap(), 10.0 * 64f64.log10());
        assert_eq!(mse(&c, &d).unwrap(), 1.0 / 64.0);
    }

    #[test]
    fn ssim_is_symmetric() {
        let a = pattern(40, 30, 3);
        let b = noisy(&a, 0.2, 4);
        let (ab, ba) = (ssim(&a, &b, 1.0).unwrap(), ssim(&b, &a, 1.0).unwrap());
        assert!((ab - ba).abs() < 1e-14, "{ab} vs {ba}");
    }

    #[test]
    fn bad_inputs_are_errors() {
        let (a, b) = (pattern(20, 20, 5), pattern(20, 21, 6));
        for err in [mse(&a, &b).unwrap_err(), psnr(&a, &b, 1.0).unwrap_err(), ssim(&a, &b, 1.0).unwrap_err()] {
            assert_eq!(err.to_string(), "image sizes differ: 20x20 vs 20x21");
        }
        let s = pattern(10, 40, 7);
        assert!(ssim(&s, &s, 1.0).unwrap_err().to_string().contains("at least 11x11"));
        let mut bad = pattern(20, 20, 8);
        bad.data.pop();
        assert!(mse(&bad, &a).unwrap_err().to_string().contains("not width*height*3"));
        assert!(psnr(&a, &a, 0.0).unwrap_err().to_string().contains("data_range"));
        assert!(ssim(&a, &a, f64::NAN).is_err());
        let t = pattern(11, 11, 8);
        assert!((ssim(&t, &t, 1.0).unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn ssim_falls_as_noise_grows() {
        let a = pattern(48, 40, 9);
        let scores: Vec<f64> =
            [0.02, 0.05, 0.1, 0.2, 0.4].iter().map(|&s| ssim(&a, &noisy(&a, s, 10), 1.0).unwrap()).collect();
        assert!(scores[0] < 1.0 && scores.windows(2).all(|p| p[1] < p[0]), "{scores:?}");
    }
}

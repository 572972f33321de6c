//! Procedural clean images: the "dead leaves" model.
//!
//! This module owns the synthetic *clean* content every experiment starts from (the source
//! domain's ground truth and the input to the simulated camera in `camera.rs`). Dead leaves
//! are random occluding shapes whose radii follow a power law `p(r) ∝ r^-alpha`; with
//! `alpha ≈ 3` every octave of scale covers the same area, which reproduces the scale
//! invariance, edge density and occlusion statistics of natural images well enough to train
//! and test small denoisers without any downloaded data.
//!
//! An image is a pure function of `(config, seed, index)`: all randomness comes from
//! `Rng::derive(seed, "dead_leaves", &[index])`.
//!
//! Rendering is front to back: the first leaf drawn is on top. Each pixel keeps the fraction of
//! it still visible (`rem`); a leaf with analytic coverage `cov` (a 1-px soft edge from a signed
//! distance, i.e. anti-aliased edges) adds `rem·cov·colour` and leaves `rem·(1−cov)` behind.
//! A pixel counts as covered once `rem < 1/512`; drawing stops when every pixel is covered or
//! after `max_leaves`, and what remains is filled with a background colour. Each leaf only
//! touches its bounding box, so the cost is O(pixels × layers): about a millisecond or two
//! for a 128×128 image in release.

use crate::image::Image;
use crate::rng::Rng;
use std::f64::consts::PI;

#[derive(Clone, Debug, PartialEq)]
pub struct DeadLeavesConfig {
    /// Side of the square image, pixels.
    pub size: usize,
    /// Smallest and largest leaf radius, pixels.
    pub r_min: f64,
    pub r_max: f64,
    /// Power-law exponent of the radius density, p(r) ∝ r^-alpha (3 = scale invariant).
    pub alpha: f64,
    /// Give leaves low-amplitude texture (sinusoidal gratings or smooth gradients).
    pub textured: bool,
    /// Shape mix: rotated rectangles and ellipses with these probabilities, discs otherwise.
    pub rect_prob: f64,
    pub ellipse_prob: f64,
    /// Chance that a leaf takes (a jittered) colour from the image's small palette rather than
    /// a fresh colour; repeated materials are typical of natural scenes.
    pub palette_prob: f64,
    /// Safety cap on the number of leaves per image.
    pub max_leaves: usize,
    /// Edge profile. 0: a 1-px linear ramp (box-filtered, hard-looking edges). > 0: a Gaussian
    /// edge of this σ in px, as a lens blurs them; what a camera sees (see [`Self::photo`]).
    pub edge_sigma: f64,
    /// Shortest period of a texture grating, px (2.5: up to near the pixel grid's Nyquist).
    pub min_period: f64,
    /// σ (px) of a Gaussian on the two chroma components (luminance kept sharp): natural
    /// images carry far less fine detail in colour than in brightness, which is what a Bayer
    /// sensor's demosaic relies on. 0: off.
    pub chroma_sigma: f64,
}

impl Default for DeadLeavesConfig {
    fn default() -> Self {
        DeadLeavesConfig {
            size: 128,
            r_min: 2.0,
            r_max: 48.0,
            alpha: 3.0,
            textured: true,
            rect_prob: 0.2,
            ellipse_prob: 0.25,
            palette_prob: 0.5,
            max_leaves: 20_000,
            edge_sigma: 0.0,
            min_period: 2.5,
            chroma_sigma: 0.0,
        }
    }
}

impl DeadLeavesConfig {
    /// Photographic content: edges blurred like a good lens does (Gaussian σ 0.7 px), colour
    /// softer than brightness (chroma σ 1.5 px) and no texture finer than a 4-px period. Detail
    /// beyond that aliases in a Bayer sensor's demosaic; a real lens never delivers it, natural
    /// scenes carry little of it in colour, and real references (SIDD's) do not show the colour
    /// fringes it causes.
    pub fn photo(size: usize) -> Self {
        DeadLeavesConfig { size, edge_sigma: 0.7, min_period: 4.0, chroma_sigma: 1.5, ..Default::default() }
    }
}

/// Complementary error function (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly =
        t * (0.254_829_592 + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let e = poly * (-z * z).exp();
    if x >= 0.0 { e } else { 2.0 - e }
}

/// Remaining visibility below which a pixel counts as covered (invisible at 8 bits).
const COVERED: f32 = 1.0 / 512.0;

enum Shape {
    Disc,
    /// Semi-axes (a, b) in the leaf frame.
    Ellipse(f64, f64),
    /// Half-sizes (hw, hh) in the leaf frame.
    Rect(f64, f64),
}

enum Texture {
    Flat,
    /// amp · sin(kx·dx + ky·dy + phase)
    Grating {
        kx: f64,
        ky: f64,
        phase: f64,
        amp: f64,
    },
    /// gx·dx + gy·dy
    Gradient {
        gx: f64,
        gy: f64,
    },
}

/// A colour with mild saturation: a luminance plus a small chroma in an opponent-colour plane
/// (never pure saturated RGB). Luminance is skewed a little towards darker values.
fn sample_colour(rng: &mut Rng) -> [f64; 3] {
    let l = 0.03 + 0.94 * rng.uniform().powf(1.25);
    let s = 0.6 * l.min(1.0 - l) * rng.uniform().powf(1.5);
    let h = rng.range(0.0, 2.0 * PI);
    let (a, b) = (s * h.cos(), s * h.sin());
    let c = [l + a, l - 0.5 * a + 0.866 * b, l - 0.5 * a - 0.866 * b];
    c.map(|v| v.clamp(0.0, 1.0))
}

/// Radius from the truncated power law p(r) ∝ r^-alpha on [r_min, r_max] (inverse CDF).
fn sample_radius(cfg: &DeadLeavesConfig, rng: &mut Rng) -> f64 {
    let u = rng.uniform();
    if (cfg.alpha - 1.0).abs() < 1e-9 {
        return cfg.r_min * (cfg.r_max / cfg.r_min).powf(u);
    }
    let e = 1.0 - cfg.alpha;
    let (a, b) = (cfg.r_min.powf(e), cfg.r_max.powf(e));
    (a + u * (b - a)).powf(1.0 / e)
}

/// The clean image number `index` of the stream `seed`.
pub(crate) fn dead_leaves(cfg: &DeadLeavesConfig, seed: u64, index: u64) -> Image {
    assert!(cfg.size > 0 && cfg.r_min > 0.0 && cfg.r_max >= cfg.r_min, "bad dead-leaves config");
    let mut rng = Rng::derive(seed, "dead_leaves", &[index]);
    let n = cfg.size;
    let palette: Vec<[f64; 3]> = (0..4 + rng.below(7)).map(|_| sample_colour(&mut rng)).collect();
    let mut rem = vec![1.0f32; n * n];
    let mut acc = vec![0.0f32; n * n * 3];
    let mut uncovered = n * n;

    for _ in 0..cfg.max_leaves {
        if uncovered == 0 {
            break;
        }
        let r = sample_radius(cfg, &mut rng);
        let pick = rng.uniform();
        let aspect = rng.range(0.3, 1.0);
        let (shape, extent) = if pick < cfg.rect_prob {
            (Shape::Rect(r, r * aspect), r * (1.0 + aspect * aspect).sqrt())
        } else if pick < cfg.rect_prob + cfg.ellipse_prob {
            (Shape::Ellipse(r, r * aspect), r)
        } else {
            (Shape::Disc, r)
        };
        let theta = rng.range(0.0, PI);
        let (sin_t, cos_t) = theta.sin_cos();
        // Centres over the image grown by the leaf's extent, so coverage is stationary.
        let cx = rng.range(-extent, n as f64 + extent);
        let cy = rng.range(-extent, n as f64 + extent);
        let mut colour = if rng.chance(cfg.palette_prob) {
            let p = palette[rng.below(palette.len() as u64) as usize];
            let j = rng.range(-0.04, 0.04);
            p.map(|v| v + j)
        } else {
            sample_colour(&mut rng)
        };
        let texture = if cfg.textured && rng.chance(0.5) {
            if rng.chance(0.5) {
                let period = rng.range(cfg.min_period, 24.0f64.max(cfg.min_period));
                let dir = rng.range(0.0, PI);
                let k = 2.0 * PI / period;
                Texture::Grating {
                    kx: k * dir.cos(),
                    ky: k * dir.sin(),
                    phase: rng.range(0.0, 2.0 * PI),
                    amp: rng.range(0.02, 0.1),
                }
            } else {
                // A total change of up to ±0.15 across the leaf.
                let g = rng.range(0.02, 0.15) / r;
                let dir = rng.range(0.0, 2.0 * PI);
                Texture::Gradient { gx: g * dir.cos(), gy: g * dir.sin() }
            }
        } else {
            Texture::Flat
        };
        colour = colour.map(|v| v.clamp(0.0, 1.0));

        // The edge profile reaches 1 px (ramp) or 4σ (Gaussian edge) beyond the shape.
        let reach = extent + 1.0 + 4.0 * cfg.edge_sigma;
        let x0 = (cx - reach).floor().max(0.0) as usize;
        let y0 = (cy - reach).floor().max(0.0) as usize;
        let x1 = ((cx + reach).ceil().max(0.0) as usize).min(n);
        let y1 = ((cy + reach).ceil().max(0.0) as usize).min(n);
        for y in y0..y1 {
            let dy = y as f64 + 0.5 - cy;
            for x in x0..x1 {
                let p = y * n + x;
                let left = rem[p];
                if left < COVERED {
                    continue;
                }
                let dx = x as f64 + 0.5 - cx;
                let sd = match shape {
                    Shape::Disc => (dx * dx + dy * dy).sqrt() - r,
                    Shape::Ellipse(a, b) => {
                        let (u, v) = (cos_t * dx + sin_t * dy, -sin_t * dx + cos_t * dy);
                        let q = ((u / a).powi(2) + (v / b).powi(2)).sqrt();
                        if q < 1e-9 {
                            -b
                        } else {
                            // First-order distance to the level set q = 1.
                            let g = ((u / (a * a)).powi(2) + (v / (b * b)).powi(2)).sqrt() / q;
                            (q - 1.0) / g
                        }
                    }
                    Shape::Rect(hw, hh) => {
                        let (u, v) = (cos_t * dx + sin_t * dy, -sin_t * dx + cos_t * dy);
                        let (ex, ey) = (u.abs() - hw, v.abs() - hh);
                        ex.max(0.0).hypot(ey.max(0.0)) + ex.max(ey).min(0.0)
                    }
                };
                let cov = if cfg.edge_sigma > 0.0 {
                    // Area of a Gaussian-blurred half-plane beyond the signed distance.
                    0.5 * erfc(sd / (cfg.edge_sigma * std::f64::consts::SQRT_2)) as f32
                } else {
                    (0.5 - sd).clamp(0.0, 1.0) as f32
                };
                let cov = if cov < 1e-4 { 0.0 } else { cov };
                if cov <= 0.0 {
                    continue;
                }
                let t = match texture {
                    Texture::Flat => 0.0,
                    Texture::Grating { kx, ky, phase, amp } => amp * (kx * dx + ky * dy + phase).sin(),
                    Texture::Gradient { gx, gy } => gx * dx + gy * dy,
                };
                let w = left * cov;
                for c in 0..3 {
                    acc[p * 3 + c] += w * (colour[c] + t).clamp(0.0, 1.0) as f32;
                }
                rem[p] = left - w;
                if rem[p] < COVERED {
                    uncovered -= 1;
                }
            }
        }
    }
    if uncovered > 0 {
        let bg = sample_colour(&mut rng);
        for (p, &left) in rem.iter().enumerate() {
            for c in 0..3 {
                acc[p * 3 + c] += left * bg[c] as f32;
            }
        }
    }
    if cfg.chroma_sigma > 0.0 {
        soften_chroma(&mut acc, n, cfg.chroma_sigma);
    }
    for v in acc.iter_mut() {
        *v = v.clamp(0.0, 1.0);
    }
    Image::from_vec(n, n, acc)
}

/// Blur the chroma of an HWC `n × n` image (orthonormal opponent basis: luminance
/// (R+G+B)/√3 kept, the two colour-difference components blurred).
fn soften_chroma(acc: &mut [f32], n: usize, sigma: f64) {
    const S3: f32 = 0.577_350_27;
    let c1: Vec<f32> = acc.chunks_exact(3).map(|p| (p[0] - p[2]) * std::f32::consts::FRAC_1_SQRT_2).collect();
    let c2: Vec<f32> = acc.chunks_exact(3).map(|p| (p[0] - 2.0 * p[1] + p[2]) * 0.408_248_3).collect();
    let c1 = crate::degradations::blur::gaussian_blur_plane(&c1, n, n, sigma);
    let c2 = crate::degradations::blur::gaussian_blur_plane(&c2, n, n, sigma);
    for (i, p) in acc.chunks_exact_mut(3).enumerate() {
        let y = (p[0] + p[1] + p[2]) * S3;
        let (a, b) = (c1[i], c2[i]);
        p[0] = y * S3 + a * std::f32::consts::FRAC_1_SQRT_2 + b * 0.408_248_3;
        p[1] = y * S3 - 2.0 * b * 0.408_248_3;
        p[2] = y * S3 - a * std::f32::consts::FRAC_1_SQRT_2 + b * 0.408_248_3;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variance(img: &Image) -> f64 {
        let n = img.data.len() as f64;
        let m = img.data.iter().map(|&v| v as f64).sum::<f64>() / n;
        img.data.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / n
    }

    #[test]
    fn deterministic_per_seed_and_index() {
        let cfg = DeadLeavesConfig { size: 64, ..Default::default() };
        assert_eq!(dead_leaves(&cfg, 7, 3), dead_leaves(&cfg, 7, 3));
        assert_ne!(dead_leaves(&cfg, 7, 3), dead_leaves(&cfg, 7, 4));
        assert_ne!(dead_leaves(&cfg, 7, 3), dead_leaves(&cfg, 8, 3));
    }

    #[test]
    fn values_in_range_with_variance_and_colours() {
        for textured in [false, true] {
            let cfg = DeadLeavesConfig { textured, ..Default::default() };
            for i in 0..8 {
                let img = dead_leaves(&cfg, 1, i);
                assert_eq!((img.width, img.height), (128, 128));
                assert!(img.data.iter().all(|v| (0.0..=1.0).contains(v)));
                let var = variance(&img);
                assert!(var > 0.003, "image {i}: variance {var}");
                let mut colours: Vec<[u8; 3]> =
                    img.to_rgb8().chunks(3).map(|c| [c[0] >> 4, c[1] >> 4, c[2] >> 4]).collect();
                colours.sort();
                colours.dedup();
                assert!(colours.len() >= 8, "image {i}: only {} coarse colours", colours.len());
                // Not pure saturated RGB: channels of a pixel stay fairly close on average.
                let chroma = img.data.chunks(3).map(|c| {
                    let m = (c[0] + c[1] + c[2]) / 3.0;
                    c.iter().map(|v| (v - m).abs()).fold(0.0f32, f32::max)
                });
                let mean_chroma = chroma.sum::<f32>() / (128.0 * 128.0);
                assert!(mean_chroma < 0.2, "mean chroma {mean_chroma}");
            }
        }
    }

    #[test]
    fn radii_follow_the_bounds() {
        let cfg = DeadLeavesConfig::default();
        let mut rng = Rng::new(5);
        let rs: Vec<f64> = (0..10_000).map(|_| sample_radius(&cfg, &mut rng)).collect();
        assert!(rs.iter().all(|&r| r >= cfg.r_min && r <= cfg.r_max));
        // alpha = 3 puts most leaves near r_min: median = r_min·sqrt(2) (upper bound negligible).
        let small = rs.iter().filter(|&&r| r < cfg.r_min * 2f64.sqrt()).count();
        assert!((small as f64 / 1e4 - 0.5).abs() < 0.03, "{small}");
    }

    #[test]
    fn renders_quickly() {
        let cfg = DeadLeavesConfig::default();
        let t = std::time::Instant::now();
        for i in 0..20 {
            std::hint::black_box(dead_leaves(&cfg, 2, i));
        }
        let ms = t.elapsed().as_secs_f64() * 1e3 / 20.0;
        eprintln!("dead_leaves 128x128: {ms:.2} ms/image");
        assert!(ms < 100.0, "{ms} ms per image");
    }
}

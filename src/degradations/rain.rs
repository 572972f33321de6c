//! Rain degradations: synthetic streaks (the source domain) and real-like rain (the target).
//!
//! This module owns the rain models and their configs:
//! - [`synth_rain`], the Rain100 / Rain13K manner: per layer, sparse random drops are
//!   motion-blurred along one angle into streaks and **added** to the clean image, with
//!   clipping. Every streak of a layer has the same shape; rain is grey (equal on R, G, B).
//! - [`real_rain`], which departs from that the way real rain (SPA-Data) does: several depth
//!   layers with different scales (near streaks long, wide, sparse and defocused because the
//!   camera focuses on the scene; far ones short, thin, dense and faint), angles that vary
//!   within an image (a wind angle, a per-layer deviation and a per-streak jitter), a veil of
//!   haze that lowers contrast with depth, and **screen** blending (`1 − (1 − a)(1 − b)`:
//!   light adds but can never exceed white) instead of addition. The veil belongs to the
//!   scene: it is in the ground truth too, as SPA-Data's references (the same scene without
//!   its rain streaks) keep the weather's haze; only the streaks are the degradation.
//!
//! Angles are degrees from the vertical; a positive angle leans the lower end of a streak to
//! the right (wind blowing left to right). A streak is rasterised as an anti-aliased
//! rectangle of coverage 1 inside (see [`line_coverage`]), so a streak's peak equals its drop's
//! brightness — the line kernel is normalised to a peak of 1, not to a sum of 1 (a sum-1 kernel
//! would make brightness depend on length). Stamping that rectangle at every drop is exactly
//! the convolution of the drop map with the line kernel; drops are seeded over the image grown
//! by the streak's reach, so streaks enter from outside at the same density as inside.

use super::blur::{gaussian_blur_plane, line_coverage};
use crate::image::{Image, quantize_u8};
use crate::rng::Rng;

// ---------------------------------------------------------------------------------------------
// Shared helpers

/// `Err` naming `name` unless `min (<|<=) lo <= hi <= max` (strict lower bound when `open`).
fn check(name: &str, r: [f64; 2], min: f64, open: bool, max: f64) -> Result<(), String> {
    let low_ok = if open { min < r[0] } else { min <= r[0] };
    if !(low_ok && r[0] <= r[1] && r[1] <= max) {
        let op = if open { "<" } else { "<=" };
        return Err(format!("{name} must satisfy {min} {op} lo <= hi <= {max}, got {r:?}"));
    }
    Ok(())
}

/// Most rain layers a config may ask for.
const MAX_LAYERS: usize = 8;

fn check_layers(name: &str, r: [usize; 2]) -> Result<(), String> {
    if !(1 <= r[0] && r[0] <= r[1] && r[1] <= MAX_LAYERS) {
        return Err(format!("{name} must satisfy 1 <= lo <= hi <= {MAX_LAYERS}, got {r:?}"));
    }
    Ok(())
}

fn draw(r: [f64; 2], rng: &mut Rng) -> f64 {
    rng.range(r[0], r[1])
}

/// One rasterised streak: [`line_coverage`] on the smallest odd grid that holds it.
struct Streak {
    size: usize,
    cov: Vec<f32>,
}

impl Streak {
    /// A `length × width` streak at `angle` degrees from vertical.
    fn new(length: f64, width: f64, angle: f64) -> Streak {
        let size = Streak::grid(length, width);
        Streak { size, cov: line_coverage(length, width, angle - 90.0, size) }
    }

    /// Odd side of a grid that holds a `length × width` rectangle at any angle.
    fn grid(length: f64, width: f64) -> usize {
        2 * ((length + width) / 2.0).ceil() as usize + 1
    }

    /// Add `amount ×` the streak, centred on pixel `(cx, cy)`, to a `w × h` plane (clipped).
    fn stamp(&self, plane: &mut [f32], w: usize, h: usize, (cx, cy): (isize, isize), amount: f32) {
        let r = (self.size / 2) as isize;
        for (gy, row) in self.cov.chunks_exact(self.size).enumerate() {
            let y = cy + gy as isize - r;
            if y < 0 || y >= h as isize {
                continue;
            }
            for (gx, &c) in row.iter().enumerate() {
                let x = cx + gx as isize - r;
                if x >= 0 && x < w as isize {
                    plane[y as usize * w + x as usize] += amount * c;
                }
            }
        }
    }
}

/// Call `stamp(x, y, rng)` for every drop: one Bernoulli(`density`) draw per pixel of the
/// image grown by `margin` px on every side, in raster order (deterministic).
fn for_each_drop(
    w: usize,
    h: usize,
    margin: usize,
    density: f64,
    rng: &mut Rng,
    mut stamp: impl FnMut(isize, isize, &mut Rng),
) {
    let m = margin as isize;
    for y in -m..h as isize + m {
        for x in -m..w as isize + m {
            if rng.chance(density) {
                stamp(x, y, rng);
            }
        }
    }
}

/// What was drawn for one rainy image.
#[derive(Clone, Debug, PartialEq)]
pub struct RainDraw {
    pub layers: usize,
    /// Mean over layers of the drawn drop density (fraction of pixels seeding a drop).
    pub density: f64,
    /// Degrees from vertical: the mean of the layers' angles (synthetic) or the image's wind
    /// angle, around which layers and streaks deviate (real-like).
    pub angle: f64,
    /// Mean over layers of the drawn streak length and width, px.
    pub length: f64,
    pub width: f64,
}

// ---------------------------------------------------------------------------------------------
// Synthetic rain

/// Synthetic rain settings; every range is drawn uniformly, per layer except `layers`. Keys
/// left out of a pipeline take their defaults.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RainConfig {
    pub layers: [usize; 2],
    /// Fraction of pixels seeding a drop.
    pub density: [f64; 2],
    /// Streak length and width, px.
    pub length: [f64; 2],
    pub width: [f64; 2],
    /// Streak angle, degrees from vertical (one per layer).
    pub angle: [f64; 2],
    /// Drop brightness; each drop then takes `brightness · U(0.5, 1)`.
    pub brightness: [f64; 2],
}

impl Default for RainConfig {
    /// Rain100 / Rain13K-like: 1–3 layers of straight grey streaks. Mean input PSNR ≈ 25 dB
    /// (sd ≈ 4) on 96-px dead leaves.
    fn default() -> Self {
        RainConfig {
            layers: [1, 3],
            density: [0.0008, 0.003],
            length: [8.0, 40.0],
            width: [1.0, 2.0],
            angle: [-30.0, 30.0],
            brightness: [0.15, 0.4],
        }
    }
}

impl RainConfig {
    pub(crate) fn validate(&self) -> Result<(), String> {
        check_layers("rain.layers", self.layers)?;
        check("rain.density", self.density, 0.0, true, 1.0)?;
        check("rain.length", self.length, 1.0, false, 200.0)?;
        check("rain.width", self.width, 0.0, true, 20.0)?;
        check("rain.angle", self.angle, -90.0, false, 90.0)?;
        check("rain.brightness", self.brightness, 0.0, true, 1.0)
    }
}

/// Add synthetic rain to `clean` (cfg assumed valid): per layer, draw density, length, width,
/// angle and brightness; seed drops (Bernoulli per pixel, intensity `brightness · U(0.5, 1)`);
/// blur them into streaks with that layer's line; add all layers to R, G and B and clip to
/// [0, 1]. Not quantised.
pub fn synth_rain(clean: &Image, cfg: &RainConfig, rng: &mut Rng) -> (Image, RainDraw) {
    let (w, h) = (clean.width, clean.height);
    let layers = cfg.layers[0] + rng.below((cfg.layers[1] - cfg.layers[0] + 1) as u64) as usize;
    let mut rain = vec![0.0f32; w * h];
    let mut sum = RainDraw { layers, density: 0.0, angle: 0.0, length: 0.0, width: 0.0 };
    for _ in 0..layers {
        let density = draw(cfg.density, rng);
        let length = draw(cfg.length, rng);
        let width = draw(cfg.width, rng);
        let angle = draw(cfg.angle, rng);
        let brightness = draw(cfg.brightness, rng);
        let streak = Streak::new(length, width, angle);
        for_each_drop(w, h, streak.size / 2, density, rng, |x, y, rng| {
            streak.stamp(&mut rain, w, h, (x, y), (brightness * rng.range(0.5, 1.0)) as f32);
        });
        sum.density += density;
        sum.angle += angle;
        sum.length += length;
        sum.width += width;
    }
    let n = layers as f64;
    let drawn = RainDraw {
        layers,
        density: sum.density / n,
        angle: sum.angle / n,
        length: sum.length / n,
        width: sum.width / n,
    };
    let data = clean.data.iter().enumerate().map(|(i, &v)| (v + rain[i / 3]).clamp(0.0, 1.0)).collect();
    (Image::from_vec(w, h, data), drawn)
}

// ---------------------------------------------------------------------------------------------
// Real-like rain

/// Ranges for one depth layer of real-like rain; intermediate layers interpolate between the
/// far and near specs (both ends of each range; see `towards`), then draw uniformly.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RainLayerSpec {
    /// Fraction of pixels seeding a drop.
    pub density: [f64; 2],
    /// Streak length and width, px (each streak's length is further jittered by ±25%).
    pub length: [f64; 2],
    pub width: [f64; 2],
    /// Peak opacity of a streak (each takes `brightness · U(0.5, 1)`) before defocus.
    pub brightness: [f64; 2],
    /// Defocus: σ of the Gaussian blur of the layer, px.
    pub defocus: [f64; 2],
}

impl RainLayerSpec {
    fn validate(&self, name: &str) -> Result<(), String> {
        check(&format!("{name}.density"), self.density, 0.0, true, 1.0)?;
        check(&format!("{name}.length"), self.length, 1.0, false, 200.0)?;
        check(&format!("{name}.width"), self.width, 0.0, true, 20.0)?;
        check(&format!("{name}.brightness"), self.brightness, 0.0, true, 1.0)?;
        check(&format!("{name}.defocus"), self.defocus, 0.0, false, 10.0)
    }

    /// The spec a fraction `z` of the way from `self` (far) to `near`: linear, except density
    /// which is geometric (it spans orders of magnitude; linear mixing would give the middle
    /// layers near-layer streaks at almost far-layer density).
    fn towards(&self, near: &RainLayerSpec, z: f64) -> RainLayerSpec {
        let mix = |a: [f64; 2], b: [f64; 2]| [a[0] + (b[0] - a[0]) * z, a[1] + (b[1] - a[1]) * z];
        let geo = |a: [f64; 2], b: [f64; 2]| [a[0] * (b[0] / a[0]).powf(z), a[1] * (b[1] / a[1]).powf(z)];
        RainLayerSpec {
            density: geo(self.density, near.density),
            length: mix(self.length, near.length),
            width: mix(self.width, near.width),
            brightness: mix(self.brightness, near.brightness),
            defocus: mix(self.defocus, near.defocus),
        }
    }
}

/// Real-like (SPA-Data-like) rain settings.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RealRainConfig {
    /// Number of depth layers.
    pub layers: [usize; 2],
    /// The farthest and the nearest layer.
    pub far: RainLayerSpec,
    pub near: RainLayerSpec,
    /// Wind angle of the image, degrees from vertical.
    pub wind_angle: [f64; 2],
    /// Standard deviations of each layer's deviation from the wind angle and of each streak's
    /// deviation from its layer's angle, degrees.
    pub layer_angle_sd: f64,
    pub streak_angle_sd: f64,
    /// Haze extinction β: transmission `t = exp(−β·d)` over a depth map `d ∈ [0, 1]`.
    pub haze: [f64; 2],
    /// Airlight grey level A of the haze (each channel jittered by ±0.02: greyish).
    pub airlight: [f64; 2],
}

impl Default for RealRainConfig {
    /// Moderate rain, SPA-Data-like: mostly faint streaks, a light veil. Mean input PSNR
    /// ≈ 32.7 dB on 96-px dead leaves against the hazy scene (the veil is in the reference:
    /// only the streaks count).
    fn default() -> Self {
        RealRainConfig {
            layers: [3, 4],
            far: RainLayerSpec {
                density: [0.004, 0.012],
                length: [4.0, 10.0],
                width: [0.6, 1.0],
                brightness: [0.05, 0.12],
                defocus: [0.0, 0.4],
            },
            near: RainLayerSpec {
                density: [0.0002, 0.0008],
                length: [25.0, 60.0],
                width: [2.0, 4.0],
                brightness: [0.12, 0.3],
                defocus: [1.5, 3.0],
            },
            wind_angle: [-25.0, 25.0],
            layer_angle_sd: 5.0,
            streak_angle_sd: 2.0,
            haze: [0.02, 0.12],
            airlight: [0.8, 1.0],
        }
    }
}

impl RealRainConfig {
    /// Heavy rain: four layers, denser and brighter streaks, thick haze (which belongs to the
    /// scene, so only the streaks lower the input's PSNR).
    pub(crate) fn heavy() -> Self {
        let d = Self::default();
        RealRainConfig {
            layers: [4, 4],
            far: RainLayerSpec { density: [0.01, 0.025], brightness: [0.12, 0.3], ..d.far },
            near: RainLayerSpec { density: [0.0006, 0.0015], brightness: [0.4, 0.8], ..d.near },
            haze: [0.3, 0.9],
            ..d
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        check_layers("real_rain.layers", self.layers)?;
        self.far.validate("real_rain.far")?;
        self.near.validate("real_rain.near")?;
        check("real_rain.wind_angle", self.wind_angle, -90.0, false, 90.0)?;
        for (name, sd) in [("layer_angle_sd", self.layer_angle_sd), ("streak_angle_sd", self.streak_angle_sd)] {
            if !(0.0..=45.0).contains(&sd) {
                return Err(format!("real_rain.{name} must satisfy 0 <= sd <= 45, got {sd}"));
            }
        }
        check("real_rain.haze", self.haze, 0.0, false, 10.0)?;
        check("real_rain.airlight", self.airlight, 0.0, false, 1.0)
    }
}

/// Cells per side of the depth map's value noise.
const DEPTH_CELLS: usize = 4;

/// A smooth random depth map in [0, 1] (1 = far): a vertical gradient (the top of a scene is
/// usually farther) mixed with smoothly interpolated value noise on a coarse grid.
fn depth_map(w: usize, h: usize, rng: &mut Rng) -> Vec<f32> {
    let n = DEPTH_CELLS + 1;
    let grid: Vec<f64> = (0..n * n).map(|_| rng.uniform()).collect();
    let slope = rng.range(0.4, 0.9);
    let smooth = |t: f64| t * t * (3.0 - 2.0 * t);
    let mut d = vec![0.0f32; w * h];
    for y in 0..h {
        let v = (y as f64 + 0.5) / h as f64;
        let gy = v * DEPTH_CELLS as f64;
        let iy = (gy.floor() as usize).min(DEPTH_CELLS - 1);
        let fy = smooth(gy - iy as f64);
        for x in 0..w {
            let gx = (x as f64 + 0.5) / w as f64 * DEPTH_CELLS as f64;
            let ix = (gx.floor() as usize).min(DEPTH_CELLS - 1);
            let fx = smooth(gx - ix as f64);
            let at = |i: usize, j: usize| grid[j * n + i];
            let noise = (1.0 - fy) * ((1.0 - fx) * at(ix, iy) + fx * at(ix + 1, iy))
                + fy * ((1.0 - fx) * at(ix, iy + 1) + fx * at(ix + 1, iy + 1));
            d[y * w + x] = (slope * (1.0 - v) + (1.0 - slope) * noise) as f32;
        }
    }
    d
}

/// Real-like rain over `clean` (cfg assumed valid): `(rainy, scene, draw)`. The scene — the
/// ground truth — is `clean` under its haze `I = J·t + A·(1 − t)`, `t = exp(−β·d)` over a
/// smooth depth map (SPA-Data's references keep the weather's veil; removing it is dehazing, a
/// task of its own). Then, from far to near, each layer's streaks (own angle, per-streak
/// jitter, length ±25%) are rasterised, defocused with that layer's Gaussian and
/// screen-blended over the scene. Both outputs are 8-bit (k/255), like saved photographs.
pub fn real_rain(clean: &Image, cfg: &RealRainConfig, rng: &mut Rng) -> (Image, Image, RainDraw) {
    let (w, h) = (clean.width, clean.height);
    let layers = cfg.layers[0] + rng.below((cfg.layers[1] - cfg.layers[0] + 1) as u64) as usize;
    let wind = draw(cfg.wind_angle, rng);
    let beta = draw(cfg.haze, rng);
    let grey = draw(cfg.airlight, rng);
    let airlight: [f64; 3] = std::array::from_fn(|_| (grey + rng.range(-0.02, 0.02)).clamp(0.0, 1.0));
    let depth = depth_map(w, h, rng);
    // Product of (1 − streak opacity) over layers: screen blending of all layers at once.
    let mut keep = vec![1.0f32; w * h];
    let mut sum = RainDraw { layers, density: 0.0, angle: wind, length: 0.0, width: 0.0 };
    for k in 0..layers {
        let z = if layers == 1 { 1.0 } else { k as f64 / (layers - 1) as f64 };
        let spec = cfg.far.towards(&cfg.near, z);
        let density = draw(spec.density, rng);
        let length = draw(spec.length, rng);
        let width = draw(spec.width, rng);
        let brightness = draw(spec.brightness, rng);
        let sigma = draw(spec.defocus, rng);
        let angle = wind + cfg.layer_angle_sd * rng.normal();
        let mut layer = vec![0.0f32; w * h];
        let reach = Streak::grid(1.25 * length, width) / 2;
        for_each_drop(w, h, reach, density, rng, |x, y, rng| {
            let a = angle + cfg.streak_angle_sd * rng.normal();
            let l = length * rng.range(0.75, 1.25);
            let amount = (brightness * rng.range(0.5, 1.0)) as f32;
            Streak::new(l, width, a).stamp(&mut layer, w, h, (x, y), amount);
        });
        for (kp, s) in keep.iter_mut().zip(gaussian_blur_plane(&layer, w, h, sigma)) {
            *kp *= 1.0 - s.clamp(0.0, 1.0);
        }
        sum.density += density;
        sum.length += length;
        sum.width += width;
    }
    let n = layers as f64;
    let hazed: Vec<f64> = clean
        .data
        .iter()
        .enumerate()
        .map(|(i, &j)| {
            let t = (-beta * depth[i / 3] as f64).exp();
            (j as f64).clamp(0.0, 1.0) * t + airlight[i % 3] * (1.0 - t)
        })
        .collect();
    let u8_image =
        |v: Vec<f64>| Image::from_vec(w, h, v.into_iter().map(|v| quantize_u8(v as f32) as f32 / 255.0).collect());
    let rainy = hazed.iter().enumerate().map(|(i, &s)| 1.0 - (1.0 - s) * keep[i / 3] as f64).collect();
    let drawn = RainDraw { density: sum.density / n, length: sum.length / n, width: sum.width / n, ..sum };
    (u8_image(rainy), u8_image(hazed), drawn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasets::dead_leaves::{DeadLeavesConfig, dead_leaves};

    fn psnr(a: &Image, b: &Image) -> f64 {
        crate::metrics::psnr(a, b, 1.0).expect("same-size images")
    }

    fn clean(size: usize, index: u64) -> Image {
        dead_leaves(&DeadLeavesConfig { size, ..Default::default() }, 23, index)
    }

    fn std(img: &Image) -> f64 {
        let n = img.data.len() as f64;
        let m = img.data.iter().map(|&v| v as f64).sum::<f64>() / n;
        (img.data.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / n).sqrt()
    }

    /// Dominant streak orientation of a plane (degrees from vertical, in (−90, 90]) from its
    /// gradient structure tensor: streaks run across the dominant gradient direction. The plane
    /// is smoothed first: finite differences across 1–2 px lines are direction-biased.
    fn streak_orientation(p: &[f32], w: usize, h: usize) -> f64 {
        let p = gaussian_blur_plane(p, w, h, 1.5);
        let (mut xx, mut yy, mut xy) = (0.0, 0.0, 0.0);
        for y in 1..h - 1 {
            for x in 1..w - 1 {
                let gx = (p[y * w + x + 1] - p[y * w + x - 1]) as f64;
                let gy = (p[(y + 1) * w + x] - p[(y - 1) * w + x]) as f64;
                (xx, yy, xy) = (xx + gx * gx, yy + gy * gy, xy + gx * gy);
            }
        }
        // Gradient at φ (x right, y down); the streak direction (−sin φ, cos φ) is −φ from vertical.
        let phi = 0.5 * (2.0 * xy).atan2(xx - yy);
        let theta = (-phi.to_degrees()).rem_euclid(180.0);
        if theta > 90.0 { theta - 180.0 } else { theta }
    }

    #[test]
    fn configs_validate_with_named_keys() {
        assert!(RainConfig::default().validate().is_ok());
        assert!(RealRainConfig::default().validate().is_ok());
        assert!(RealRainConfig::heavy().validate().is_ok());
        let e = RainConfig { density: [0.01, 2.0], ..Default::default() }.validate().unwrap_err();
        assert_eq!(e, "rain.density must satisfy 0 < lo <= hi <= 1, got [0.01, 2.0]");
        assert!(RainConfig { layers: [0, 2], ..Default::default() }.validate().unwrap_err().contains("rain.layers"));
        assert!(RainConfig { angle: [10.0, -10.0], ..Default::default() }.validate().is_err());
        assert!(RainConfig { width: [f64::NAN, 1.0], ..Default::default() }.validate().is_err());
        let mut r = RealRainConfig::default();
        r.near.defocus = [-1.0, 1.0];
        assert!(r.validate().unwrap_err().starts_with("real_rain.near.defocus"));
        let r = RealRainConfig { streak_angle_sd: 90.0, ..Default::default() };
        assert!(r.validate().unwrap_err().contains("streak_angle_sd"));
    }

    #[test]
    fn synth_rain_adds_clipped_streaks_at_the_drawn_density() {
        let cfg = RainConfig::default();
        for i in 0..10 {
            let img = clean(64, i);
            let (rainy, d) = synth_rain(&img, &cfg, &mut Rng::derive(1, "rain", &[i]));
            assert!((cfg.layers[0]..=cfg.layers[1]).contains(&d.layers));
            assert!(d.density >= cfg.density[0] && d.density <= cfg.density[1], "{d:?}");
            assert!(d.length >= cfg.length[0] && d.length <= cfg.length[1]);
            assert!(d.angle >= cfg.angle[0] && d.angle <= cfg.angle[1]);
            assert!(rainy.data.iter().zip(&img.data).all(|(r, c)| r >= c && *r <= 1.0));
            // Grey rain: the same increment on every channel wherever nothing clipped.
            for (r, c) in rainy.data.chunks(3).zip(img.data.chunks(3)) {
                if r.iter().all(|&v| v < 1.0) {
                    assert!((r[0] - c[0] - (r[1] - c[1])).abs() < 1e-6);
                }
            }
            assert!(rainy != img, "image {i}: no rain");
        }
    }

    #[test]
    fn realised_drop_rate_matches_density() {
        // One short, 1-px streak per drop on a black image: count lit pixel centres.
        let cfg = RainConfig {
            layers: [1, 1],
            density: [0.01, 0.01],
            length: [1.0, 1.0],
            width: [1.0, 1.0],
            angle: [0.0, 0.0],
            brightness: [1.0, 1.0],
        };
        let (rainy, _) = synth_rain(&Image::new(200, 200), &cfg, &mut Rng::new(3));
        let lit = rainy.data.iter().step_by(3).filter(|&&v| v > 0.0).count() as f64 / 40_000.0;
        assert!((lit - 0.01).abs() < 0.002, "drop rate {lit}");
    }

    #[test]
    fn streaks_follow_the_drawn_angle() {
        let flat = Image::from_vec(128, 128, vec![0.1; 128 * 128 * 3]);
        for angle in [-25.0, -8.0, 0.0, 14.0, 30.0] {
            let cfg = RainConfig {
                layers: [1, 1],
                density: [0.002, 0.002],
                length: [20.0, 30.0],
                width: [1.0, 2.0],
                angle: [angle, angle],
                brightness: [0.5, 0.5],
            };
            let (rainy, d) = synth_rain(&flat, &cfg, &mut Rng::new(angle.to_bits()));
            assert_eq!(d.angle, angle);
            let diff: Vec<f32> = rainy.data.iter().zip(&flat.data).step_by(3).map(|(r, c)| r - c).collect();
            let got = streak_orientation(&diff, 128, 128);
            assert!((got - angle).abs() < 3.0, "drawn {angle}°, measured {got}°");
        }
    }

    #[test]
    fn real_rain_is_bounded_quantised_and_leans_with_the_wind() {
        let cfg = RealRainConfig::default();
        for i in 0..6 {
            let img = clean(96, i);
            let (rainy, scene, d) = real_rain(&img, &cfg, &mut Rng::derive(2, "real_rain", &[i]));
            assert!((cfg.layers[0]..=cfg.layers[1]).contains(&d.layers));
            assert!(d.angle >= cfg.wind_angle[0] && d.angle <= cfg.wind_angle[1]);
            assert!(d.density >= cfg.near.density[0] && d.density <= cfg.far.density[1]);
            assert!(rainy.data.iter().all(|&v| (0.0..=1.0).contains(&v) && v == (v * 255.0).round() / 255.0));
            assert!(psnr(&rainy, &scene) < 40.0);
            // Screen blending only brightens: the scene is under the streaks everywhere.
            assert!(rainy.data.iter().zip(&scene.data).all(|(r, s)| r >= s));
        }
        // Without haze, streaks over a dark flat scene lean like the wind.
        let flat = Image::from_vec(160, 160, vec![0.05; 160 * 160 * 3]);
        for seed in 0..4 {
            let cfg = RealRainConfig { haze: [0.0, 0.0], wind_angle: [-20.0, 20.0], ..Default::default() };
            let (rainy, _, d) = real_rain(&flat, &cfg, &mut Rng::new(seed));
            let diff: Vec<f32> = rainy.data.iter().step_by(3).map(|v| v - 0.05).collect();
            let got = streak_orientation(&diff, 160, 160);
            assert!((got - d.angle).abs() < 8.0, "wind {}°, measured {got}°", d.angle);
        }
    }

    #[test]
    fn haze_veils_contrast_and_screen_never_exceeds_white() {
        let img = clean(96, 7);
        let thin = RealRainConfig { haze: [0.0, 0.0], ..Default::default() };
        let thick = RealRainConfig { haze: [1.5, 1.5], ..Default::default() };
        // Same seed, same number of draws: identical streaks, only the veil differs.
        let (a, scene_a, _) = real_rain(&img, &thin, &mut Rng::new(4));
        let (b, scene_b, _) = real_rain(&img, &thick, &mut Rng::new(4));
        assert!(std(&b) < 0.8 * std(&a), "haze should lower contrast: {} vs {}", std(&b), std(&a));
        let mean = |x: &Image| x.data.iter().map(|&v| v as f64).sum::<f64>() / x.data.len() as f64;
        assert!(mean(&b) > mean(&a), "the veil is bright");
        // The veil is part of the scene: the ground truth carries it, so only streaks differ.
        assert!(psnr(&scene_a, &img) > 45.0, "no haze: the scene is the clean image (up to 8 bits)");
        assert!(std(&scene_b) < 0.8 * std(&scene_a) && mean(&scene_b) > mean(&scene_a));
        // Scored against its hazy scene, a thickly veiled input is far closer than against the
        // haze-free image: dehazing is not asked of a deraining restorer.
        assert!(psnr(&b, &scene_b) > psnr(&b, &img) + 3.0, "{} vs {}", psnr(&b, &scene_b), psnr(&b, &img));
        // Screen blending over white stays white; over black it is the streak opacity, < 1.
        let white = Image::from_vec(48, 48, vec![1.0; 48 * 48 * 3]);
        assert!(real_rain(&white, &thin, &mut Rng::new(5)).0.data.iter().all(|&v| v == 1.0));
        let (dark, _, _) = real_rain(&Image::new(48, 48), &thin, &mut Rng::new(5));
        assert!(dark.data.iter().all(|&v| v < 1.0) && dark.data.iter().any(|&v| v > 0.0));
    }

    #[test]
    fn layer_specs_run_from_far_to_near() {
        let cfg = RealRainConfig::default();
        assert_eq!(cfg.far.towards(&cfg.near, 0.0), cfg.far);
        let near = cfg.far.towards(&cfg.near, 1.0);
        assert!((near.density[0] - cfg.near.density[0]).abs() < 1e-12 && near.length == cfg.near.length);
        let mid = cfg.far.towards(&cfg.near, 0.5);
        let geo = (cfg.far.density[0] * cfg.near.density[0]).sqrt();
        assert!((mid.density[0] - geo).abs() < 1e-12, "density is interpolated geometrically");
        assert_eq!(mid.width[1], (cfg.far.width[1] + cfg.near.width[1]) / 2.0);
        // Nearer layers: longer, wider, sparser, more defocused, brighter.
        let (f, n) = (&cfg.far, &cfg.near);
        assert!(n.length[0] > f.length[1] && n.width[0] > f.width[1] && n.density[1] < f.density[0]);
        assert!(n.defocus[0] > f.defocus[1] && n.brightness[0] >= f.brightness[1]);
    }

    #[test]
    fn depth_map_is_smooth_and_in_range() {
        let (w, h) = (64, 48);
        let d = depth_map(w, h, &mut Rng::new(6));
        assert!(d.iter().all(|&v| (0.0..=1.0).contains(&v)));
        let jump =
            (0..h).flat_map(|y| (1..w).map(move |x| (y, x))).map(|(y, x)| (d[y * w + x] - d[y * w + x - 1]).abs());
        assert!(jump.fold(0.0f32, f32::max) < 0.05);
        let row_mean = |y: usize| d[y * w..(y + 1) * w].iter().sum::<f32>() / w as f32;
        assert!(row_mean(0) > row_mean(h - 1), "top should be farther");
    }

    #[test]
    fn results_are_deterministic_and_thread_count_independent() {
        let img = clean(80, 3);
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| {
                (
                    synth_rain(&img, &RainConfig::default(), &mut Rng::derive(9, "rain", &[3])),
                    real_rain(&img, &RealRainConfig::default(), &mut Rng::derive(9, "real_rain", &[3])),
                    real_rain(&img, &RealRainConfig::heavy(), &mut Rng::derive(9, "real_rain", &[4])),
                )
            })
        };
        let one = run(1);
        assert_eq!(one, run(4));
        assert_eq!(one, run(1));
        assert_ne!(one.1.0, real_rain(&img, &RealRainConfig::default(), &mut Rng::derive(9, "real_rain", &[5])).0);
    }

    #[test]
    fn default_psnr_is_in_band() {
        let (mut synth, mut real) = (0.0, 0.0);
        let n = 12;
        for i in 0..n {
            let img = clean(96, 100 + i);
            synth += psnr(&synth_rain(&img, &RainConfig::default(), &mut Rng::derive(8, "sr", &[i])).0, &img);
            let (rainy, scene, _) = real_rain(&img, &RealRainConfig::default(), &mut Rng::derive(8, "rr", &[i]));
            real += psnr(&rainy, &scene);
        }
        let (synth, real) = (synth / n as f64, real / n as f64);
        eprintln!("mean input PSNR: synth rain {synth:.2} dB, real rain {real:.2} dB");
        assert!((22.0..=33.0).contains(&synth), "synth {synth}");
        assert!((29.0..=35.0).contains(&real), "real {real}");
    }
}

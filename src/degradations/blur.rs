//! Blur degradations: motion-blur kernels, exact convolution, GoPro-manner frame averaging,
//! the synthetic source blur and a RealBlur-like target blur.
//!
//! This module owns everything that spreads light over neighbouring pixels:
//! - kernels ([`Kernel`]): an anti-aliased straight line ([`linear_kernel`]) and a camera-shake
//!   trajectory ([`shake_kernel`], Boracchi & Foi 2012), always **centred** (centroid on the
//!   centre pixel), so a blur never shifts the image relative to its ground truth;
//! - [`convolve`] (reflect boundary, parallel over rows, bit-identical for any thread count)
//!   and [`gaussian_blur_plane`] (the defocus of rain streaks in `rain.rs`);
//! - [`frame_average`] along a [`motion_path`], the way GoPro averaged 240 fps frames;
//! - [`synth_blur`]: the source domain (kernels convolved in sRGB, as in most synthetic
//!   deblurring sets, or frame averaging in linear light);
//! - [`real_blur`]: the target domain, modelled on RealBlur's low-light captures — saturated
//!   light sources, non-linear shake, sensor noise after the blur, clipping in linear light,
//!   sRGB gamma and JPEG (RealBlur-J); its ground truth is the same pipeline without blur
//!   and noise.
//!
//! It also holds the sRGB transfer functions ([`srgb_to_linear`], [`linear_to_srgb`]).

use rayon::prelude::*;

use super::jpeg::jpeg_like;
use crate::image::{Image, linear_to_srgb, quantize_u8, srgb_to_linear};
use crate::rng::Rng;

// ---------------------------------------------------------------------------------------------
// Colour

/// The image in linear light (input clamped to [0, 1] first), one `f64` per sample.
fn to_linear(img: &Image) -> Vec<f64> {
    img.data.iter().map(|&v| srgb_to_linear((v as f64).clamp(0.0, 1.0))).collect()
}

// ---------------------------------------------------------------------------------------------
// Kernels

/// A blur kernel: `size × size` weights (odd `size`), row-major, non-negative, summing to 1.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    pub size: usize,
    pub w: Vec<f32>,
}

impl Kernel {
    /// Normalise non-negative weights to sum 1 (a zero kernel becomes the identity).
    fn normalised(size: usize, w: Vec<f64>) -> Kernel {
        assert!(size % 2 == 1, "kernel size must be odd, got {size}");
        let total: f64 = w.iter().sum();
        if total <= 0.0 {
            let mut w = vec![0.0; size * size];
            w[size * size / 2] = 1.0;
            return Kernel { size, w };
        }
        Kernel { size, w: w.iter().map(|v| (v / total) as f32).collect() }
    }
}

/// Supersampling factor (per axis) for rasterising lines.
const LINE_SS: usize = 8;

/// Fraction of each pixel of an odd `size × size` grid covered by a `length × width` rectangle
/// centred on the centre pixel, its long side at `angle_deg` counter-clockwise from the
/// horizontal as displayed (y grows downwards). Anti-aliased by 8×8 supersampling. Unlike a
/// [`Kernel`] this is not normalised: a pixel inside the rectangle has coverage 1, which is
/// what a rain streak of a given brightness needs. Parts outside the grid are cut off.
pub fn line_coverage(length: f64, width: f64, angle_deg: f64, size: usize) -> Vec<f32> {
    assert!(size % 2 == 1, "grid size must be odd, got {size}");
    let (s, c) = angle_deg.to_radians().sin_cos();
    let (ux, uy) = (c, -s);
    let (half_l, half_w) = (length / 2.0, width / 2.0);
    let mid = (size / 2) as f64;
    let mut out = vec![0.0f32; size * size];
    for py in 0..size {
        for px in 0..size {
            let (dx, dy) = (px as f64 - mid, py as f64 - mid);
            // No sub-sample can be inside when the pixel centre is farther than half a diagonal.
            if (dx * ux + dy * uy).abs() > half_l + 0.75 || (-dx * uy + dy * ux).abs() > half_w + 0.75 {
                continue;
            }
            let mut hits = 0;
            for j in 0..LINE_SS {
                let sy = dy + (j as f64 + 0.5) / LINE_SS as f64 - 0.5;
                for i in 0..LINE_SS {
                    let sx = dx + (i as f64 + 0.5) / LINE_SS as f64 - 0.5;
                    if (sx * ux + sy * uy).abs() <= half_l && (-sx * uy + sy * ux).abs() <= half_w {
                        hits += 1;
                    }
                }
            }
            out[py * size + px] = hits as f32 / (LINE_SS * LINE_SS) as f32;
        }
    }
    out
}

/// Linear motion blur: a 1-px-wide anti-aliased line of `length` px (at least 1; an
/// axis-aligned length-1 line is the identity) at `angle_deg` counter-clockwise from the
/// horizontal (as displayed, the convention of MATLAB's `fspecial('motion')`), in an odd
/// `size × size` kernel. The line is symmetric about the centre, so the kernel is centred by
/// construction. Lengths beyond the kernel are cut off.
pub fn linear_kernel(length: f64, angle_deg: f64, size: usize) -> Kernel {
    let cov = line_coverage(length.max(1.0), 1.0, angle_deg, size);
    Kernel::normalised(size, cov.iter().map(|&v| v as f64).collect())
}

/// Steps of a shake trajectory (Boracchi & Foi use 2000).
const SHAKE_STEPS: usize = 2000;

/// Camera-shake blur in an odd `size × size` kernel, after Boracchi & Foi (2012, "Modeling
/// the performance of image restoration from motion blur"): a trajectory of constant speed
/// whose velocity is perturbed at each step by Gaussian noise, a centripetal pull back to the
/// start (inertia: the hand returns) and occasional abrupt jerks that reverse the direction,
/// observed for a random 30–100% of its duration (the exposure time).
/// The trajectory is rasterised by bilinear splatting of sub-steps ≤ 1/4 px apart (equal
/// exposure time per step), and translated and scaled about its time-weighted mean so that the
/// mean lies exactly on the centre pixel (the kernel's centroid is the centre up to rounding)
/// and the farthest point reaches a random 50–100% of the way to half a pixel inside the
/// border (like the line lengths of [`synth_blur`]: `size` bounds the blur).
pub fn shake_kernel(size: usize, rng: &mut Rng) -> Kernel {
    assert!(size % 2 == 1 && size >= 3, "shake kernel size must be odd and ≥ 3, got {size}");
    // The original's parameter draws (step MaxTotLength / (numT − 1), MaxTotLength 60), except
    // anxiety: 0.1·U there makes tangled blobs; DeblurGAN's 0.003–0.01 gives the smooth curves
    // with occasional sharp turns of measured hand shake (Levin et al., Köhler et al.).
    let step = 60.0 / (SHAKE_STEPS - 1) as f64;
    let anxiety = rng.range(0.003, 0.01);
    let centripetal = 0.7 * rng.uniform();
    let gaussian = 10.0 * rng.uniform();
    let jerk_freq = 0.2 * rng.uniform();
    let a0 = rng.range(0.0, 2.0 * std::f64::consts::PI);
    let mut v = (a0.cos() * step, a0.sin() * step);
    let mut pts = Vec::with_capacity(SHAKE_STEPS);
    pts.push((0.0f64, 0.0f64));
    // Exposure: the shutter is open for a random 30–100% of the trajectory (Boracchi & Foi's
    // exposure-time fractions); short exposures give simpler curves.
    let steps = (rng.range(0.3, 1.0) * SHAKE_STEPS as f64) as usize;
    for _ in 1..steps {
        let (x, y) = pts[pts.len() - 1];
        let mut next = (0.0, 0.0);
        if rng.chance(jerk_freq * anxiety) {
            // Roughly reverse the motion, at twice the speed.
            let phi = std::f64::consts::PI + rng.range(-0.5, 0.5);
            let (s, c) = phi.sin_cos();
            next = (2.0 * (v.0 * c - v.1 * s), 2.0 * (v.0 * s + v.1 * c));
        }
        let (nx, ny) = (rng.normal(), rng.normal());
        v.0 += next.0 + anxiety * (gaussian * nx - centripetal * x) * step;
        v.1 += next.1 + anxiety * (gaussian * ny - centripetal * y) * step;
        let speed = v.0.hypot(v.1).max(1e-12);
        v = (v.0 / speed * step, v.1 / speed * step);
        pts.push((x + v.0, y + v.1));
    }
    // Every segment gets the same exposure; its sub-steps are symmetric about its midpoint, so
    // the kernel's centroid is the mean of the segment midpoints.
    let n = (pts.len() - 1) as f64;
    let mean = pts.windows(2).fold((0.0, 0.0), |m, p| (m.0 + (p[0].0 + p[1].0) / 2.0, m.1 + (p[0].1 + p[1].1) / 2.0));
    let mean = (mean.0 / n, mean.1 / n);
    let reach = pts.iter().map(|p| (p.0 - mean.0).abs().max((p.1 - mean.1).abs())).fold(0.0, f64::max);
    let mid = (size / 2) as f64;
    let scale = if reach > 0.0 { rng.range(0.5, 1.0) * (mid - 0.5) / reach } else { 0.0 };
    let place = |p: (f64, f64)| (mid + (p.0 - mean.0) * scale, mid + (p.1 - mean.1) * scale);
    let mut w = vec![0.0f64; size * size];
    for seg in pts.windows(2) {
        let (a, b) = (place(seg[0]), place(seg[1]));
        let subs = ((b.0 - a.0).hypot(b.1 - a.1) * 4.0).ceil().max(1.0) as usize;
        for i in 0..subs {
            let t = (i as f64 + 0.5) / subs as f64;
            let (x, y) = (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t);
            let (x0, y0) = (x.floor(), y.floor());
            let (fx, fy) = (x - x0, y - y0);
            let (x0, y0) = (x0 as usize, y0 as usize);
            let share = 1.0 / subs as f64;
            w[y0 * size + x0] += share * (1.0 - fx) * (1.0 - fy);
            w[y0 * size + x0 + 1] += share * fx * (1.0 - fy);
            w[(y0 + 1) * size + x0] += share * (1.0 - fx) * fy;
            w[(y0 + 1) * size + x0 + 1] += share * fx * fy;
        }
    }
    Kernel::normalised(size, w)
}

/// Centre of mass `(x, y)` of a kernel in its own pixel coordinates; a centred kernel gives
/// `((size − 1) / 2, (size − 1) / 2)`.
pub(crate) fn centroid(k: &Kernel) -> (f64, f64) {
    let (mut sx, mut sy, mut total) = (0.0, 0.0, 0.0);
    for (i, &v) in k.w.iter().enumerate() {
        sx += v as f64 * (i % k.size) as f64;
        sy += v as f64 * (i / k.size) as f64;
        total += v as f64;
    }
    (sx / total, sy / total)
}

/// Central second moments `[xx, yy, xy]` of a kernel (pixel units, y downwards).
fn second_moments(k: &Kernel) -> [f64; 3] {
    let (cx, cy) = centroid(k);
    let total: f64 = k.w.iter().map(|&v| v as f64).sum();
    let mut m = [0.0; 3];
    for (i, &v) in k.w.iter().enumerate() {
        let (dx, dy) = ((i % k.size) as f64 - cx, (i / k.size) as f64 - cy);
        m[0] += v as f64 * dx * dx;
        m[1] += v as f64 * dy * dy;
        m[2] += v as f64 * dx * dy;
    }
    m.map(|v| v / total)
}

/// Eigenvalues (larger first) of the symmetric 2×2 matrix `[[xx, xy], [xy, yy]]`.
fn eigen2(m: [f64; 3]) -> (f64, f64) {
    let (mean, diff) = ((m[0] + m[1]) / 2.0, ((m[0] - m[1]) / 2.0).hypot(m[2]));
    (mean + diff, mean - diff)
}

/// Length of the straight line with the same spread as the kernel along its principal axis
/// (a uniform line of length L has variance L²/12): the reported extent of non-linear blurs.
fn equivalent_length(k: &Kernel) -> f64 {
    (12.0 * eigen2(second_moments(k)).0).sqrt()
}

// ---------------------------------------------------------------------------------------------
// Convolution

/// Symmetric (edge-mirrored, half-sample) reflection of index `i` into `0..n`:
/// `… 1 0 | 0 1 … n−1 | n−1 n−2 …`, repeated for offsets longer than the image.
#[inline]
fn reflect(i: isize, n: usize) -> usize {
    let period = 2 * n as isize;
    let m = i.rem_euclid(period);
    if m < n as isize { m as usize } else { (period - 1 - m) as usize }
}

/// 2-D convolution `out(x, y) = Σ k(i, j) · img(x − (i − r), y − (j − r))` with r = size / 2
/// (a true convolution: the kernel is flipped, so a kernel's mass at +d moves content by +d),
/// same-size output, **reflect boundary** (symmetric, edge-mirrored: index −1 reads 0, −2 reads
/// 1, `w` reads `w − 1`). Parallel over output rows; each pixel sums its taps in the same
/// fixed order, so the result does not depend on the thread count.
pub fn convolve(img: &Image, k: &Kernel) -> Image {
    let (w, h) = (img.width, img.height);
    let mut out = Image::new(w, h);
    if w == 0 || h == 0 {
        return out;
    }
    let r = (k.size / 2) as isize;
    // Zero taps are skipped: shake kernels are mostly empty.
    let taps: Vec<(isize, isize, f32)> = (0..k.size * k.size)
        .filter(|&i| k.w[i] != 0.0)
        .map(|i| ((i % k.size) as isize - r, (i / k.size) as isize - r, k.w[i]))
        .collect();
    // Source column of output column x for horizontal offset o, at [(o + r)·w + x].
    let cols: Vec<usize> = (-r..=r).flat_map(|o| (0..w).map(move |x| reflect(x as isize - o, w))).collect();
    out.data.par_chunks_mut(w * 3).enumerate().for_each(|(y, row)| {
        for &(ox, oy, wt) in &taps {
            let src_row = &img.data[reflect(y as isize - oy, h) * w * 3..][..w * 3];
            let col = &cols[(ox + r) as usize * w..][..w];
            for (x, &sx) in col.iter().enumerate() {
                for c in 0..3 {
                    row[x * 3 + c] += wt * src_row[sx * 3 + c];
                }
            }
        }
    });
    out
}

/// Separable Gaussian blur of one `w × h` plane (row-major) with standard deviation `sigma`
/// px, taps out to 3σ, reflect boundary as in [`convolve`]. `sigma ≤ 0` returns a copy.
/// Parallel over rows, thread-count independent.
pub fn gaussian_blur_plane(plane: &[f32], w: usize, h: usize, sigma: f64) -> Vec<f32> {
    assert_eq!(plane.len(), w * h, "plane has the wrong length");
    if sigma <= 0.0 || w == 0 || h == 0 {
        return plane.to_vec();
    }
    let r = (3.0 * sigma).ceil() as isize;
    let g: Vec<f64> = (-r..=r).map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp()).collect();
    let total: f64 = g.iter().sum();
    let g: Vec<f32> = g.iter().map(|v| (v / total) as f32).collect();
    let mut tmp = vec![0.0f32; w * h];
    tmp.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
        let src = &plane[y * w..][..w];
        for (x, v) in row.iter_mut().enumerate() {
            *v = (-r..=r).zip(&g).map(|(o, &gw)| gw * src[reflect(x as isize + o, w)]).sum();
        }
    });
    let mut out = vec![0.0f32; w * h];
    out.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
        for (o, &gw) in (-r..=r).zip(&g) {
            let src = &tmp[reflect(y as isize + o, h) * w..][..w];
            for (v, &s) in row.iter_mut().zip(src) {
                *v += gw * s;
            }
        }
    });
    out
}

// ---------------------------------------------------------------------------------------------
// Frame averaging (GoPro)

/// A smooth camera path of `frames` positions, for [`frame_average`]: constant-ish speed, the
/// heading turning by a small Gaussian angle per frame and the speed jittering (a hand-held
/// camera over ~50 ms is smooth), then scaled so that every position lies within `extent / 2`
/// px of the mean (per axis, the farthest exactly there) and translated so that the mean is
/// (0, 0): the average is centred, like the kernels. One frame (or `extent` 0) gives [(0, 0)].
pub fn motion_path(frames: usize, extent: f64, rng: &mut Rng) -> Vec<(f64, f64)> {
    let mut heading = rng.range(0.0, 2.0 * std::f64::consts::PI);
    let turn = rng.range(0.0, 0.35);
    let mut p = (0.0f64, 0.0f64);
    let mut path = Vec::with_capacity(frames);
    for _ in 0..frames {
        path.push(p);
        heading += turn * rng.normal();
        let speed = (1.0 + 0.2 * rng.normal()).max(0.2);
        p = (p.0 + speed * heading.cos(), p.1 + speed * heading.sin());
    }
    let n = frames.max(1) as f64;
    let mean = path.iter().fold((0.0, 0.0), |m, q| (m.0 + q.0 / n, m.1 + q.1 / n));
    let reach = path.iter().map(|q| (q.0 - mean.0).abs().max((q.1 - mean.1).abs())).fold(0.0, f64::max);
    let scale = if reach > 0.0 { extent / 2.0 / reach } else { 0.0 };
    path.iter().map(|q| ((q.0 - mean.0) * scale, (q.1 - mean.1) * scale)).collect()
}

/// Average copies of `clean` translated by each `(dx, dy)` of `path` (a copy shows the content
/// moved by +d; bilinear resampling, reflect boundary), **in linear light** — inverse sRGB
/// gamma, average, sRGB gamma — the way GoPro averaged consecutive 240 fps frames (linear
/// light is what a longer exposure integrates). An empty path returns the image unchanged.
pub fn frame_average(clean: &Image, path: &[(f64, f64)]) -> Image {
    let (w, h) = (clean.width, clean.height);
    if path.is_empty() || w == 0 || h == 0 {
        return clean.clone();
    }
    let lin = to_linear(clean);
    let n = path.len() as f64;
    let mut out = Image::new(w, h);
    out.data.par_chunks_mut(w * 3).enumerate().for_each(|(y, row)| {
        let mut acc = vec![0.0f64; w * 3];
        for &(dx, dy) in path {
            let sy = y as f64 - dy;
            let y0 = sy.floor();
            let fy = sy - y0;
            let (r0, r1) = (reflect(y0 as isize, h), reflect(y0 as isize + 1, h));
            for x in 0..w {
                let sx = x as f64 - dx;
                let x0 = sx.floor();
                let fx = sx - x0;
                let (c0, c1) = (reflect(x0 as isize, w), reflect(x0 as isize + 1, w));
                for c in 0..3 {
                    let at = |yy: usize, xx: usize| lin[(yy * w + xx) * 3 + c];
                    acc[x * 3 + c] += (1.0 - fy) * ((1.0 - fx) * at(r0, c0) + fx * at(r0, c1))
                        + fy * ((1.0 - fx) * at(r1, c0) + fx * at(r1, c1));
                }
            }
        }
        for (v, a) in row.iter_mut().zip(&acc) {
            *v = linear_to_srgb((a / n).clamp(0.0, 1.0)) as f32;
        }
    });
    out
}

/// Arc length of a path, px.
fn path_length(path: &[(f64, f64)]) -> f64 {
    path.windows(2).map(|p| (p[1].0 - p[0].0).hypot(p[1].1 - p[0].1)).sum()
}

// ---------------------------------------------------------------------------------------------
// Synthetic (source) blur

/// Which blur [`synth_blur`] applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlurKind {
    /// GoPro manner: average of frames along a smooth motion path, in linear light.
    Frames,
    /// Straight-line motion kernel, convolved in sRGB.
    Linear,
    /// Camera-shake kernel, convolved in sRGB.
    Shake,
    /// One of the three above per image, equally likely.
    Mixed,
}

impl BlurKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BlurKind::Frames => "frames",
            BlurKind::Linear => "linear",
            BlurKind::Shake => "shake",
            BlurKind::Mixed => "mixed",
        }
    }
}

/// Synthetic source blur settings (keys left out of a pipeline take their defaults).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlurConfig {
    pub kind: BlurKind,
    /// Blur support, px: the odd kernel side (for frames, the box the path may span), drawn
    /// uniformly among the odd values in the range; the blur itself extends over 50–100% of it.
    pub size: [usize; 2],
    /// Number of averaged frames (GoPro used 7–13).
    pub frames: [usize; 2],
}

impl Default for BlurConfig {
    /// All three kinds, 3–9 px: mean input PSNR ≈ 23 dB on 96-px dead leaves (frames ≈ 21,
    /// linear ≈ 22.5, shake ≈ 26). Dead leaves carry far more detail per pixel than GoPro's
    /// 1280×720 frames, so blurs of a few px already cost what 20–40 px cost there.
    fn default() -> Self {
        BlurConfig { kind: BlurKind::Mixed, size: [3, 9], frames: [7, 13] }
    }
}

/// Largest kernel side accepted by the configs.
const MAX_KERNEL: usize = 63;

fn check_kernel_sizes(name: &str, size: [usize; 2]) -> Result<(), String> {
    if !(size[0] >= 3 && size[0] <= size[1] && size[1] <= MAX_KERNEL && size[0] % 2 == 1 && size[1] % 2 == 1) {
        return Err(format!("{name} must be odd with 3 <= lo <= hi <= {MAX_KERNEL}, got {size:?}"));
    }
    Ok(())
}

impl BlurConfig {
    pub(crate) fn validate(&self) -> Result<(), String> {
        check_kernel_sizes("blur.size", self.size)?;
        let f = self.frames;
        if !(f[0] >= 2 && f[0] <= f[1] && f[1] <= 64) {
            return Err(format!("blur.frames must satisfy 2 <= lo <= hi <= 64, got {f:?}"));
        }
        Ok(())
    }
}

/// What was drawn for one blurred image.
#[derive(Clone, Debug, PartialEq)]
pub struct BlurDraw {
    /// The kind applied (never `Mixed`).
    pub kind: BlurKind,
    /// Kernel side, or the side of the box the frame path spans, px.
    pub size: usize,
    /// Blur extent, px: the line length (linear), the path's arc length (frames), or the
    /// equivalent line length √(12·λ₁) of the kernel's principal second moment (shake).
    pub length: f64,
    /// Line angle, degrees counter-clockwise from the horizontal; NaN for frames and shake.
    pub angle: f64,
    /// Averaged frames; 0 for kernel blurs.
    pub frames: usize,
}

/// Uniform draw among the odd integers of an odd range `[lo, hi]`.
fn odd_in(r: [usize; 2], rng: &mut Rng) -> usize {
    r[0] + 2 * rng.below(((r[1] - r[0]) / 2 + 1) as u64) as usize
}

/// Uniform integer in `[lo, hi]`.
fn int_in(r: [usize; 2], rng: &mut Rng) -> usize {
    r[0] + rng.below((r[1] - r[0] + 1) as u64) as usize
}

/// The synthetic source blur (cfg assumed valid). Kernels are convolved directly on the sRGB
/// values, as in most synthetic deblurring sets; frames are averaged in linear light as GoPro
/// did. Lines, frame paths and shake trajectories all extend over a random 50–100% of the
/// `size` they were drawn with (lines over `size` px, paths and trajectories over the `size − 1`
/// between the outer pixel centres, less half a pixel for the trajectory's bilinear splat).
/// Output in [0, 1], not quantised.
pub fn synth_blur(clean: &Image, cfg: &BlurConfig, rng: &mut Rng) -> (Image, BlurDraw) {
    let kind = match cfg.kind {
        BlurKind::Mixed => [BlurKind::Frames, BlurKind::Linear, BlurKind::Shake][rng.below(3) as usize],
        k => k,
    };
    let size = odd_in(cfg.size, rng);
    match kind {
        BlurKind::Frames => {
            let frames = int_in(cfg.frames, rng);
            let path = motion_path(frames, rng.range(0.5, 1.0) * (size - 1) as f64, rng);
            let length = path_length(&path);
            (frame_average(clean, &path), BlurDraw { kind, size, length, angle: f64::NAN, frames })
        }
        BlurKind::Linear => {
            let length = rng.range(0.5, 1.0) * size as f64;
            let angle = rng.range(0.0, 180.0);
            let k = linear_kernel(length, angle, size);
            (convolve(clean, &k).clamped(), BlurDraw { kind, size, length, angle, frames: 0 })
        }
        _ => {
            let k = shake_kernel(size, rng);
            let length = equivalent_length(&k);
            (convolve(clean, &k).clamped(), BlurDraw { kind, size, length, angle: f64::NAN, frames: 0 })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Real-like (target) blur

/// RealBlur-like capture settings. Ranges are drawn uniformly per image, noise variances
/// log-uniformly (uniformly when the lower end is 0).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealBlurConfig {
    /// Camera-shake kernel side (odd), px.
    pub size: [usize; 2],
    /// Fraction of the brightest pixels (by linear luminance) treated as light sources.
    pub highlight_fraction: [f64; 2],
    /// Gain on those light sources, in linear light: they exceed 1 and saturate.
    pub highlight_gain: [f64; 2],
    /// Low-light exposure: the fraction of full scale the capture reaches before digital gain.
    pub exposure: [f64; 2],
    /// Shot-noise variance per unit signal, in captured (pre-gain) linear units.
    pub shot: [f64; 2],
    /// Read-noise variance, in captured linear units.
    pub read: [f64; 2],
    /// JPEG quality of the saved images (RealBlur-J); `None` keeps 8-bit PNG-like output.
    pub jpeg_quality: Option<u8>,
}

impl Default for RealBlurConfig {
    /// RealBlur-J-like: mean input PSNR ≈ 22.7 dB (sd ≈ 3.6) against its ground truth on 96-px
    /// dead leaves; sensor noise alone costs ≈ 36 dB, JPEG q90 ≈ 0.6 dB of the total.
    fn default() -> Self {
        RealBlurConfig {
            size: [3, 7],
            highlight_fraction: [0.01, 0.04],
            highlight_gain: [2.0, 4.0],
            exposure: [0.15, 0.5],
            shot: [5e-5, 5e-4],
            read: [1e-7, 2e-6],
            jpeg_quality: Some(90),
        }
    }
}

fn check_range(name: &str, r: [f64; 2], min: f64, max: f64) -> Result<(), String> {
    if !(min <= r[0] && r[0] <= r[1] && r[1] <= max) {
        return Err(format!("{name} must satisfy {min} <= lo <= hi <= {max}, got {r:?}"));
    }
    Ok(())
}

impl RealBlurConfig {
    /// RealBlur-R-like: the same capture without JPEG (its images come from raw files).
    pub(crate) fn realblur_r() -> Self {
        RealBlurConfig { jpeg_quality: None, ..Self::default() }
    }

    pub fn validate(&self) -> Result<(), String> {
        check_kernel_sizes("real_blur.size", self.size)?;
        check_range("real_blur.highlight_fraction", self.highlight_fraction, 0.0, 0.5)?;
        check_range("real_blur.highlight_gain", self.highlight_gain, 1.0, 100.0)?;
        let e = self.exposure;
        if !(0.0 < e[0] && e[0] <= e[1] && e[1] <= 1.0) {
            return Err(format!("real_blur.exposure must satisfy 0 < lo <= hi <= 1, got {e:?}"));
        }
        check_range("real_blur.shot", self.shot, 0.0, 1.0)?;
        check_range("real_blur.read", self.read, 0.0, 1.0)?;
        if let Some(q) = self.jpeg_quality
            && !(1..=100).contains(&q)
        {
            return Err(format!("real_blur.jpeg_quality must be in 1..=100, got {q}"));
        }
        Ok(())
    }
}

/// Log-uniform draw in `[lo, hi]`, uniform when `lo` is 0.
fn log_range(r: [f64; 2], rng: &mut Rng) -> f64 {
    if r[0] > 0.0 { rng.range(r[0].ln(), r[1].ln()).exp() } else { rng.range(r[0], r[1]) }
}

/// Linear scene with light sources: pixels whose linear luminance is above the `1 − fraction`
/// quantile are multiplied by up to `gain`, ramping up smoothly over the first quarter of the
/// range above the threshold (so highlight edges stay anti-aliased).
fn boost_highlights(lin: &mut [f64], fraction: f64, gain: f64) {
    let lum: Vec<f64> = lin.chunks_exact(3).map(|p| 0.2126 * p[0] + 0.7152 * p[1] + 0.0722 * p[2]).collect();
    if lum.is_empty() || fraction <= 0.0 {
        return;
    }
    let mut sorted = lum.clone();
    sorted.sort_by(f64::total_cmp);
    let at = ((1.0 - fraction) * sorted.len() as f64) as usize;
    let thr = sorted[at.min(sorted.len() - 1)];
    let ramp = (0.25 * (sorted[sorted.len() - 1] - thr)).max(1e-6);
    for (p, &y) in lin.chunks_exact_mut(3).zip(&lum) {
        let t = ((y - thr) / ramp).clamp(0.0, 1.0);
        let g = 1.0 + (gain - 1.0) * t * t * (3.0 - 2.0 * t);
        p.iter_mut().for_each(|v| *v *= g);
    }
}

/// Linear light → clip at 1 (saturation) → sRGB gamma → 8 bits → JPEG when asked.
fn finish(lin: &[f64], w: usize, h: usize, jpeg_quality: Option<u8>) -> Image {
    let data = lin.iter().map(|&v| quantize_u8(linear_to_srgb(v.clamp(0.0, 1.0)) as f32) as f32 / 255.0).collect();
    let img = Image::from_vec(w, h, data);
    match jpeg_quality {
        Some(q) => jpeg_like(&img, q),
        None => img,
    }
}

/// A RealBlur-like pair `(degraded, ground truth, draw)` (cfg assumed valid). In linear
/// light: the brightest few % become light sources (gain 2–4, so they exceed 1); a dark
/// exposure scales the scene down; a camera-shake kernel blurs it; shot noise (variance ∝
/// signal, Gaussian approximation of Poisson) and read noise are added **after** the blur (the
/// sensor sees the blurred light); digital gain scales back up; values clip at 1 (saturated
/// lights smear into bright streaks with hard cores); then sRGB gamma, 8 bits and JPEG. The
/// ground truth is the same pipeline without blur and noise — same light sources, clipping,
/// gamma and JPEG — as RealBlur's sharp references went through the same camera.
pub fn real_blur(clean: &Image, cfg: &RealBlurConfig, rng: &mut Rng) -> (Image, Image, BlurDraw) {
    let (w, h) = (clean.width, clean.height);
    let mut scene = to_linear(clean);
    let fraction = rng.range(cfg.highlight_fraction[0], cfg.highlight_fraction[1]);
    let gain = rng.range(cfg.highlight_gain[0], cfg.highlight_gain[1]);
    boost_highlights(&mut scene, fraction, gain);
    let size = odd_in(cfg.size, rng);
    let k = shake_kernel(size, rng);
    let exposure = rng.range(cfg.exposure[0], cfg.exposure[1]);
    let (shot, read) = (log_range(cfg.shot, rng), log_range(cfg.read, rng));
    // Convolve the captured (scaled) scene; Image carries f32, enough for linear values > 1.
    let captured = Image::from_vec(w, h, scene.iter().map(|&v| (v * exposure) as f32).collect());
    let blurred = convolve(&captured, &k);
    let noisy: Vec<f64> = blurred
        .data
        .iter()
        .map(|&b| {
            let b = b as f64;
            (b + (shot * b.max(0.0) + read).sqrt() * rng.normal()) / exposure
        })
        .collect();
    let draw = BlurDraw { kind: BlurKind::Shake, size, length: equivalent_length(&k), angle: f64::NAN, frames: 0 };
    (finish(&noisy, w, h, cfg.jpeg_quality), finish(&scene, w, h, cfg.jpeg_quality), draw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasets::dead_leaves::{DeadLeavesConfig, dead_leaves};

    fn psnr(a: &Image, b: &Image) -> f64 {
        crate::metrics::psnr(a, b, 1.0).expect("same-size images")
    }

    fn clean(size: usize, index: u64) -> Image {
        dead_leaves(&DeadLeavesConfig { size, ..Default::default() }, 17, index)
    }

    fn check_kernel(k: &Kernel, what: &str) {
        assert_eq!(k.size % 2, 1, "{what}: even size");
        assert_eq!(k.w.len(), k.size * k.size, "{what}");
        let sum: f64 = k.w.iter().map(|&v| v as f64).sum();
        assert!((sum - 1.0).abs() < 1e-5, "{what}: sum {sum}");
        assert!(k.w.iter().all(|&v| v >= 0.0), "{what}: negative weight");
        let (cx, cy) = centroid(k);
        let mid = (k.size / 2) as f64;
        assert!((cx - mid).abs() < 0.5 && (cy - mid).abs() < 0.5, "{what}: centroid ({cx}, {cy}) vs {mid}");
    }

    /// Principal axis of the kernel's second moments, degrees counter-clockwise from the
    /// horizontal as displayed, in [0, 180).
    fn principal_angle(k: &Kernel) -> f64 {
        let [xx, yy, xy] = second_moments(k);
        // y grows downwards: flip it to measure counter-clockwise.
        (0.5 * (-2.0 * xy).atan2(xx - yy)).to_degrees().rem_euclid(180.0)
    }

    fn angle_diff(a: f64, b: f64) -> f64 {
        let d = (a - b).rem_euclid(180.0);
        d.min(180.0 - d)
    }

    #[test]
    fn linear_kernels_are_valid_and_point_along_their_angle() {
        for size in [7, 15, 31] {
            for frac in [0.4, 0.7, 1.0] {
                for angle in [0.0, 17.0, 45.0, 90.0, 123.0, 160.0] {
                    let length = frac * (size - 1) as f64;
                    let k = linear_kernel(length, angle, size);
                    let what = format!("linear L {length} θ {angle} size {size}");
                    check_kernel(&k, &what);
                    let got = principal_angle(&k);
                    assert!(angle_diff(got, angle) < 3.0, "{what}: principal direction {got}");
                    let eq = equivalent_length(&k);
                    assert!((eq - length).abs() < 0.15 * length + 1.0, "{what}: equivalent length {eq}");
                }
            }
        }
        // An axis-aligned line of length ≤ 1 is the identity.
        for angle in [0.0, 90.0] {
            assert_eq!(linear_kernel(0.5, angle, 5).w[12], 1.0);
        }
    }

    #[test]
    fn shake_kernels_are_valid_and_not_lines() {
        let mut curved = 0;
        let n = 60;
        for seed in 0..n {
            let size = [7, 11, 15, 21, 25, 31][seed as usize % 6];
            let mut rng = Rng::derive(3, "shake", &[seed]);
            let k = shake_kernel(size, &mut rng);
            check_kernel(&k, &format!("shake seed {seed} size {size}"));
            // Centred by construction, not merely within half a pixel.
            let (cx, cy) = centroid(&k);
            let mid = (size / 2) as f64;
            assert!((cx - mid).abs() < 1e-3 && (cy - mid).abs() < 1e-3, "seed {seed}: centroid ({cx}, {cy})");
            // The trajectory reaches 50–100% of the way to the border along one axis.
            let (mut x0, mut x1, mut y0, mut y1) = (size, 0, size, 0);
            for (i, &v) in k.w.iter().enumerate() {
                if v > 0.0 {
                    (x0, x1, y0, y1) = (x0.min(i % size), x1.max(i % size), y0.min(i / size), y1.max(i / size));
                }
            }
            let mid = size / 2;
            let reach = [mid - x0, x1 - mid, mid - y0, y1 - mid].into_iter().max().unwrap_or(0);
            assert!(2 * reach + 2 >= mid, "seed {seed}: box {x0}..{x1} × {y0}..{y1}");
            // Not a straight line: the minor spread is not negligible, or the kernel occupies
            // far more pixels than an equally long 1-px line would.
            let (l1, l2) = eigen2(second_moments(&k));
            let support = k.w.iter().filter(|&&v| v > 1e-4).count() as f64;
            let line_support = 2.0 * equivalent_length(&k) + 2.0;
            if l2 / l1 > 0.05 || support > 1.5 * line_support {
                curved += 1;
            }
        }
        eprintln!("{curved}/{n} shake kernels are not line-like");
        assert!(curved * 10 >= n * 8, "only {curved}/{n} shake kernels are not line-like");
    }

    #[test]
    fn shake_kernels_are_reproducible() {
        let a = shake_kernel(21, &mut Rng::new(9));
        assert_eq!(a, shake_kernel(21, &mut Rng::new(9)));
        assert_ne!(a, shake_kernel(21, &mut Rng::new(10)));
    }

    /// Direct definition of [`convolve`], in f64.
    fn naive_convolve(img: &Image, k: &Kernel) -> Image {
        let (w, h) = (img.width as isize, img.height as isize);
        let r = (k.size / 2) as isize;
        let refl = |i: isize, n: isize| {
            let mut i = i;
            while i < 0 || i >= n {
                i = if i < 0 { -1 - i } else { 2 * n - 1 - i };
            }
            i as usize
        };
        let mut out = Image::new(img.width, img.height);
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    let mut s = 0.0f64;
                    for j in 0..k.size as isize {
                        for i in 0..k.size as isize {
                            let v = img.get(refl(x - (i - r), w), refl(y - (j - r), h), c);
                            s += k.w[(j as usize) * k.size + i as usize] as f64 * v as f64;
                        }
                    }
                    out.set(x as usize, y as usize, c, s as f32);
                }
            }
        }
        out
    }

    #[test]
    fn convolution_matches_naive_reflect_definition() {
        let mut rng = Rng::new(4);
        // Smaller than the kernel radius in one axis: reflection must repeat.
        for (w, h, size) in [(13, 9, 7), (6, 11, 15)] {
            let mut img = Image::new(w, h);
            img.data.iter_mut().for_each(|v| *v = rng.uniform() as f32);
            // An asymmetric kernel catches a missing flip.
            let k = shake_kernel(size, &mut rng);
            let (fast, slow) = (convolve(&img, &k), naive_convolve(&img, &k));
            let err = fast.data.iter().zip(&slow.data).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(err < 1e-5, "{w}×{h} kernel {size}: max error {err}");
        }
        // A kernel with all its mass one pixel right moves content right.
        let mut img = Image::new(5, 1);
        img.set(2, 0, 0, 1.0);
        let mut w = vec![0.0; 9];
        w[5] = 1.0;
        let shifted = convolve(&img, &Kernel { size: 3, w });
        assert_eq!(shifted.get(3, 0, 0), 1.0);
    }

    #[test]
    fn delta_is_identity_and_constants_are_preserved() {
        let img = clean(40, 0);
        let mut w = vec![0.0; 49];
        w[24] = 1.0;
        assert_eq!(convolve(&img, &Kernel { size: 7, w }), img);
        let flat = Image::from_vec(20, 16, vec![0.37; 20 * 16 * 3]);
        for k in [linear_kernel(20.0, 33.0, 25), shake_kernel(31, &mut Rng::new(2))] {
            let out = convolve(&flat, &k);
            assert!(out.data.iter().all(|&v| (v - 0.37).abs() < 1e-5));
        }
        let plane = vec![0.6f32; 30 * 7];
        assert!(gaussian_blur_plane(&plane, 30, 7, 2.5).iter().all(|&v| (v - 0.6).abs() < 1e-5));
    }

    #[test]
    fn gaussian_blur_matches_convolution_with_a_gaussian_kernel() {
        let (w, h, sigma) = (23, 17, 1.7f64);
        let img = clean(32, 1).crop(0, 0, w, h);
        let r = (3.0 * sigma).ceil() as isize;
        let size = (2 * r + 1) as usize;
        let g: Vec<f64> = (0..size * size)
            .map(|i| {
                let (dx, dy) = ((i % size) as isize - r, (i / size) as isize - r);
                (-((dx * dx + dy * dy) as f64) / (2.0 * sigma * sigma)).exp()
            })
            .collect();
        let reference = convolve(&img, &Kernel::normalised(size, g));
        let red: Vec<f32> = img.data.iter().step_by(3).copied().collect();
        let blurred = gaussian_blur_plane(&red, w, h, sigma);
        for (i, v) in blurred.iter().enumerate() {
            assert!((v - reference.data[i * 3]).abs() < 1e-5);
        }
    }

    #[test]
    fn motion_path_is_centred_and_spans_its_extent() {
        for seed in 0..20 {
            let mut rng = Rng::new(seed);
            let path = motion_path(9, 14.0, &mut rng);
            assert_eq!(path.len(), 9);
            let (mx, my) = path.iter().fold((0.0, 0.0), |m, p| (m.0 + p.0 / 9.0, m.1 + p.1 / 9.0));
            assert!(mx.abs() < 1e-9 && my.abs() < 1e-9);
            let reach = path.iter().map(|p| p.0.abs().max(p.1.abs())).fold(0.0, f64::max);
            assert!((reach - 7.0).abs() < 1e-9, "reach {reach}");
        }
        assert_eq!(motion_path(1, 10.0, &mut Rng::new(1)), vec![(0.0, 0.0)]);
    }

    #[test]
    fn frame_average_is_in_linear_light() {
        // Two frames of a black/white edge, shifted by ±0.5 px: the edge pixels average black
        // and white in linear light, i.e. 0.5 linear = 0.735 in sRGB, not 0.5.
        let mut img = Image::new(8, 1);
        for x in 4..8 {
            (0..3).for_each(|c| img.set(x, 0, c, 1.0));
        }
        let out = frame_average(&img, &[(-1.0, 0.0), (0.0, 0.0)]);
        assert!((out.get(3, 0, 0) as f64 - linear_to_srgb(0.5)).abs() < 1e-6, "{}", out.get(3, 0, 0));
        assert_eq!(out.get(0, 0, 0), 0.0);
        assert_eq!(out.get(7, 0, 1), 1.0);
        // A zero path is the identity up to the gamma round trip.
        let c = clean(24, 2);
        let same = frame_average(&c, &[(0.0, 0.0); 3]);
        assert!(psnr(&same, &c) > 80.0);
    }

    #[test]
    fn configs_validate() {
        assert!(BlurConfig::default().validate().is_ok());
        assert!(RealBlurConfig::default().validate().is_ok());
        let e = BlurConfig { size: [8, 15], ..Default::default() }.validate().unwrap_err();
        assert!(e.contains("blur.size"), "{e}");
        assert!(BlurConfig { frames: [9, 3], ..Default::default() }.validate().is_err());
        let bad = RealBlurConfig { exposure: [0.0, 0.5], ..Default::default() };
        assert!(bad.validate().unwrap_err().contains("real_blur.exposure"));
        assert!(RealBlurConfig { jpeg_quality: Some(0), ..Default::default() }.validate().is_err());
        assert!(RealBlurConfig { shot: [f64::NAN, 1e-3], ..Default::default() }.validate().is_err());
    }

    #[test]
    fn synth_blur_draws_follow_the_config() {
        let img = clean(48, 3);
        for kind in [BlurKind::Frames, BlurKind::Linear, BlurKind::Shake] {
            let cfg = BlurConfig { kind, ..Default::default() };
            for i in 0..6 {
                let (out, d) = synth_blur(&img, &cfg, &mut Rng::derive(1, "blur", &[i]));
                assert_eq!(d.kind, kind);
                assert!(d.size % 2 == 1 && (cfg.size[0]..=cfg.size[1]).contains(&d.size));
                assert!(d.length > 0.0 && d.length < 2.0 * d.size as f64, "{d:?}");
                assert_eq!(d.angle.is_nan(), kind != BlurKind::Linear);
                assert_eq!(d.frames > 0, kind == BlurKind::Frames);
                assert!(out.data.iter().all(|v| (0.0..=1.0).contains(v)));
                assert!(psnr(&out, &img) < 35.0, "{kind:?} barely blurs");
            }
        }
        let kinds: Vec<BlurKind> = (0..30)
            .map(|i| synth_blur(&img, &BlurConfig::default(), &mut Rng::derive(2, "blur", &[i])).1.kind)
            .collect();
        for k in [BlurKind::Frames, BlurKind::Linear, BlurKind::Shake] {
            assert!(kinds.contains(&k), "mixed never drew {k:?}");
        }
    }

    #[test]
    fn real_blur_ground_truth_is_noise_free_and_saturated() {
        let cfg = RealBlurConfig::default();
        for i in 0..6 {
            let img = clean(64, 10 + i);
            let run = || real_blur(&img, &cfg, &mut Rng::derive(5, "real_blur", &[i]));
            let (deg, gt, d) = run();
            assert_eq!((deg.clone(), gt.clone()), (run().0, run().1));
            assert_ne!(deg, gt);
            assert_eq!(d.kind, BlurKind::Shake);
            for v in deg.data.iter().chain(&gt.data) {
                assert!((0.0..=1.0).contains(v));
            }
            // Light sources saturate: some ground-truth pixels sit at the clip.
            assert!(gt.data.contains(&1.0), "image {i}: no saturated highlight");
        }
        // On a flat scene blur changes nothing: what differs from the flat ground truth is noise,
        // and the ground truth itself stays flat (no noise in it).
        let flat = Image::from_vec(32, 32, vec![0.4; 32 * 32 * 3]);
        let no_jpeg = RealBlurConfig { highlight_fraction: [0.0, 0.0], jpeg_quality: None, ..cfg };
        let (deg, gt, _) = real_blur(&flat, &no_jpeg, &mut Rng::new(3));
        assert!(gt.data.iter().all(|&v| v == gt.data[0]));
        assert!(deg.data.iter().any(|&v| v != gt.data[0]));
    }

    #[test]
    fn results_do_not_depend_on_thread_count() {
        let img = clean(64, 4);
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| {
                let s: Vec<_> = (0..6).map(|i| synth_blur(&img, &BlurConfig::default(), &mut Rng::new(i))).collect();
                let r = real_blur(&img, &RealBlurConfig::default(), &mut Rng::new(7));
                let g = gaussian_blur_plane(&img.data[..64 * 64], 64, 64, 2.2);
                (s, r, g)
            })
        };
        let (one, four) = (run(1), run(4));
        // Compare bits: NaN angles make `==` on draws useless.
        for ((a, da), (b, db)) in one.0.iter().zip(&four.0) {
            assert_eq!(a, b);
            assert_eq!(format!("{da:?}"), format!("{db:?}"));
        }
        assert_eq!((&one.1.0, &one.1.1), (&four.1.0, &four.1.1));
        assert_eq!(one.2, four.2);
    }

    #[test]
    fn default_psnr_is_in_band() {
        let (mut synth, mut real) = (0.0, 0.0);
        let n = 12;
        for i in 0..n {
            let img = clean(96, 100 + i);
            synth += psnr(&synth_blur(&img, &BlurConfig::default(), &mut Rng::derive(8, "sb", &[i])).0, &img);
            let (deg, gt, _) = real_blur(&img, &RealBlurConfig::default(), &mut Rng::derive(8, "rb", &[i]));
            real += psnr(&deg, &gt);
        }
        let (synth, real) = (synth / n as f64, real / n as f64);
        eprintln!("mean input PSNR: synth blur {synth:.2} dB, real blur {real:.2} dB");
        assert!((20.0..=32.0).contains(&synth), "synth {synth}");
        assert!((21.0..=29.0).contains(&real), "real {real}");
    }
}

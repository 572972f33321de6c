//! JPEG-like lossy compression, for the compression artefacts of real captures (RealBlur-J).
//!
//! This module owns the baseline-JPEG quantisation model, not a file codec: 8-bit samples →
//! JFIF YCbCr → level shift → orthonormal 8×8 DCT-II → quantisation with the standard (Annex K)
//! luminance / chrominance tables scaled by the IJG quality formula → dequantisation →
//! inverse DCT → RGB → 8 bits. Entropy coding is lossless and therefore skipped. Differences
//! from a real encoder, all deliberate: chroma is **not** subsampled (4:4:4, what high-quality
//! camera JPEGs often use and the mildest choice), and partial edge blocks are padded by
//! replicating the last row / column, as libjpeg does.

use rayon::prelude::*;

use crate::image::{Image, quantize_u8};

/// Annex K.1 luminance quantisation table, row-major (quality 50).
const LUMA_Q: [u16; 64] = [
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51,
    87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
];

/// Annex K.2 chrominance quantisation table, row-major (quality 50).
const CHROMA_Q: [u16; 64] = [
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99,
];

/// A base table scaled to `quality` (clamped to 1..=100) with the IJG formula, entries clamped
/// to the baseline range 1..=255.
fn scaled_table(base: &[u16; 64], quality: u8) -> [f32; 64] {
    let q = quality.clamp(1, 100) as u32;
    let scale = if q < 50 { 5000 / q } else { 200 - 2 * q };
    base.map(|b| ((b as u32 * scale + 50) / 100).clamp(1, 255) as f32)
}

/// Orthonormal DCT-II basis: `C[u][x] = a(u)·cos((2x+1)uπ/16)`, a(0) = √(1/8), else √(2/8).
fn dct_matrix() -> [[f32; 8]; 8] {
    let mut c = [[0.0f32; 8]; 8];
    for (u, row) in c.iter_mut().enumerate() {
        let a = if u == 0 { (1.0f64 / 8.0).sqrt() } else { (2.0f64 / 8.0).sqrt() };
        for (x, v) in row.iter_mut().enumerate() {
            *v = (a * ((2 * x + 1) as f64 * u as f64 * std::f64::consts::PI / 16.0).cos()) as f32;
        }
    }
    c
}

/// `M·B·Mᵀ` of one 8×8 block in place: the forward DCT with `M = C`, the inverse with `M = Cᵀ`.
fn transform(block: &mut [f32; 64], m: &[[f32; 8]; 8]) {
    let mut tmp = [0.0f32; 64];
    for i in 0..8 {
        for x in 0..8 {
            tmp[i * 8 + x] = (0..8).map(|y| m[i][y] * block[y * 8 + x]).sum();
        }
    }
    for i in 0..8 {
        for j in 0..8 {
            block[i * 8 + j] = (0..8).map(|x| tmp[i * 8 + x] * m[j][x]).sum();
        }
    }
}

/// Compress and decompress `img` as a baseline JPEG of the given IJG `quality` (1–100; 100 is
/// near-lossless, ~90 is a good camera default, < 50 shows strong blocking). The input is
/// first rounded to 8 bits (encoders take 8-bit samples) and the output is 8-bit (k/255).
pub fn jpeg_like(img: &Image, quality: u8) -> Image {
    let (w, h) = (img.width, img.height);
    let tables = [scaled_table(&LUMA_Q, quality), scaled_table(&CHROMA_Q, quality), scaled_table(&CHROMA_Q, quality)];
    let c = dct_matrix();
    let ct: [[f32; 8]; 8] = std::array::from_fn(|i| std::array::from_fn(|j| c[j][i]));
    // Level-shifted JFIF YCbCr planes of the 8-bit input.
    let mut planes = [vec![0.0f32; w * h], vec![0.0f32; w * h], vec![0.0f32; w * h]];
    for (i, px) in img.data.chunks_exact(3).enumerate() {
        let [r, g, b] = [0, 1, 2].map(|k| quantize_u8(px[k]) as f32);
        planes[0][i] = 0.299 * r + 0.587 * g + 0.114 * b - 128.0;
        planes[1][i] = -0.168_736 * r - 0.331_264 * g + 0.5 * b;
        planes[2][i] = 0.5 * r - 0.418_688 * g - 0.081_312 * b;
    }
    let (bw, bh) = (w.div_ceil(8), h.div_ceil(8));
    // Each band of 8 rows is independent; rayon cannot change the result.
    let bands: Vec<[Vec<f32>; 3]> = (0..bh)
        .into_par_iter()
        .map(|by| {
            let rows = (h - by * 8).min(8);
            let mut out = [vec![0.0f32; rows * w], vec![0.0f32; rows * w], vec![0.0f32; rows * w]];
            for (k, plane) in planes.iter().enumerate() {
                for bx in 0..bw {
                    let mut block = [0.0f32; 64];
                    for y in 0..8 {
                        let sy = (by * 8 + y).min(h - 1);
                        for x in 0..8 {
                            block[y * 8 + x] = plane[sy * w + (bx * 8 + x).min(w - 1)];
                        }
                    }
                    transform(&mut block, &c);
                    for (v, q) in block.iter_mut().zip(&tables[k]) {
                        *v = (*v / q).round() * q;
                    }
                    transform(&mut block, &ct);
                    for y in 0..rows {
                        for x in 0..(w - bx * 8).min(8) {
                            out[k][y * w + bx * 8 + x] = block[y * 8 + x];
                        }
                    }
                }
            }
            out
        })
        .collect();
    let mut data = Vec::with_capacity(w * h * 3);
    for [yp, cb, cr] in &bands {
        for i in 0..yp.len() {
            let (y, cb, cr) = (yp[i] + 128.0, cb[i], cr[i]);
            let rgb = [y + 1.402 * cr, y - 0.344_136 * cb - 0.714_136 * cr, y + 1.772 * cb];
            data.extend(rgb.map(|v| quantize_u8(v / 255.0) as f32 / 255.0));
        }
    }
    Image::from_vec(w, h, data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasets::dead_leaves::{DeadLeavesConfig, dead_leaves};
    use crate::rng::Rng;

    fn psnr(a: &Image, b: &Image) -> f64 {
        crate::metrics::psnr(a, b, 1.0).expect("same-size images")
    }

    #[test]
    fn dct_is_orthonormal_and_round_trips() {
        let c = dct_matrix();
        for i in 0..8 {
            for j in 0..8 {
                let dot: f32 = (0..8).map(|x| c[i][x] * c[j][x]).sum();
                assert!((dot - (i == j) as u8 as f32).abs() < 1e-5, "rows {i},{j}: {dot}");
            }
        }
        let mut rng = Rng::new(1);
        let orig: [f32; 64] = std::array::from_fn(|_| rng.range(-128.0, 128.0) as f32);
        let mut b = orig;
        transform(&mut b, &c);
        // Parseval: an orthonormal transform keeps the energy.
        let (e0, e1) = (orig.iter().map(|v| v * v).sum::<f32>(), b.iter().map(|v| v * v).sum::<f32>());
        assert!((e0 - e1).abs() < 1e-4 * e0);
        let ct: [[f32; 8]; 8] = std::array::from_fn(|i| std::array::from_fn(|j| c[j][i]));
        transform(&mut b, &ct);
        assert!(orig.iter().zip(&b).all(|(a, b)| (a - b).abs() < 1e-3));
    }

    #[test]
    fn ijg_scaling_matches_libjpeg() {
        assert_eq!(scaled_table(&LUMA_Q, 50)[0], 16.0);
        assert_eq!(scaled_table(&LUMA_Q, 75)[0], 8.0);
        assert_eq!(scaled_table(&LUMA_Q, 90)[0], 3.0);
        assert!(scaled_table(&LUMA_Q, 100).iter().all(|&q| q == 1.0));
        assert!(scaled_table(&CHROMA_Q, 1).iter().all(|&q| q == 255.0));
    }

    #[test]
    fn quality_orders_psnr() {
        // Sizes not divisible by 8 exercise the replicated edge blocks.
        let img = dead_leaves(&DeadLeavesConfig { size: 100, ..Default::default() }, 3, 0);
        let reference = img.quantized();
        let p: Vec<f64> = [100, 95, 75, 30, 5].iter().map(|&q| psnr(&jpeg_like(&img, q), &reference)).collect();
        eprintln!("JPEG PSNR at q 100/95/75/30/5: {p:.2?}");
        assert!(p[0] > 40.0, "q100 {}", p[0]);
        assert!(p.windows(2).all(|w| w[0] > w[1]), "{p:?}");
        let out = jpeg_like(&img, 30);
        assert!(out.data.iter().all(|&v| (0.0..=1.0).contains(&v) && v == (v * 255.0).round() / 255.0));
        // Bands of blocks run in parallel: the thread count cannot matter.
        let four = rayon::ThreadPoolBuilder::new().num_threads(4).build().unwrap().install(|| jpeg_like(&img, 30));
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(|| jpeg_like(&img, 30));
        assert_eq!((&out, &out), (&four, &one));
    }

    #[test]
    fn block_constant_image_is_unchanged() {
        // Each aligned 8×8 block has a single colour: only DC coefficients survive, so blocks
        // stay flat and move by at most the DC step / 8 (plus 8-bit rounding).
        let (w, h) = (40, 24);
        let mut rng = Rng::new(5);
        let colours: Vec<[f32; 3]> = (0..15).map(|_| [0, 1, 2].map(|_| rng.below(256) as f32 / 255.0)).collect();
        let mut img = Image::new(w, h);
        for y in 0..h {
            for x in 0..w {
                for (c, &v) in colours[(y / 8) * 5 + x / 8].iter().enumerate() {
                    img.set(x, y, c, v);
                }
            }
        }
        for q in [75, 90, 100] {
            let out = jpeg_like(&img, q);
            for y in 0..h {
                for x in 0..w {
                    for c in 0..3 {
                        let (a, b) = (out.get(x, y, c), out.get(x - x % 8, y - y % 8, c));
                        assert_eq!(a, b, "q {q}: block not flat at ({x},{y})");
                        // q 100 (all steps 1) is exact; q 75 moves Y and chroma DC by ≤ 0.6 levels.
                        let tol = if q == 100 { 0.0 } else { 2.0 / 255.0 };
                        assert!((a - img.get(x, y, c)).abs() <= tol, "q {q} at ({x},{y},{c})");
                    }
                }
            }
        }
    }
}

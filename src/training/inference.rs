//! Inference: restoring images of any size with a trained restorer — whole, or in overlapping
//! tiles planned from the memory left — and what PixelDA's translator makes of an image.

use burn::tensor::{Device, Tensor, TensorData};

use super::batch::{from_tensor, to_tensor};
use crate::image::Image;
use crate::networks::{Restorer, RestorerConfig};
use crate::rng::Rng;

/// Restore a whole image of any size: pad (edge replicate) to a multiple of the network's
/// stride, run x + G(x), crop back.
pub fn restore_image(g: &Restorer, img: &Image, stride: usize, device: &Device) -> Image {
    let pw = img.width.div_ceil(stride) * stride;
    let ph = img.height.div_ceil(stride) * stride;
    let padded = if (pw, ph) == (img.width, img.height) {
        img.clone()
    } else {
        let mut p = Image::new(pw, ph);
        for y in 0..ph {
            for x in 0..pw {
                for c in 0..3 {
                    p.set(x, y, c, img.get(x.min(img.width - 1), y.min(img.height - 1), c));
                }
            }
        }
        p
    };
    let out = g.restore(to_tensor(std::slice::from_ref(&padded), device));
    let restored = from_tensor(out).pop().expect("one image");
    restored.crop(0, 0, img.width, img.height)
}

/// Overlapping square tiles: `side` px (a multiple of the network's stride), neighbours
/// sharing `overlap` px blended by linear ramps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiles {
    pub side: usize,
    pub overlap: usize,
}

/// The tiles a restore of a `w × h` image needs to stay within `budget` bytes, or `None` when
/// the whole image fits. Three quarters of the budget are planned for: the model counts
/// resident memory, while the allocator's arenas and the threads' stacks also take address
/// space. The overlap is a quarter of the tile, at most 128 px (UNet-S's receptive field is
/// ≈ 100 px). Errors when not even the smallest tile fits beside the image's own planes.
pub fn tiles_for_budget(cfg: &RestorerConfig, w: usize, h: usize, budget: u64) -> Result<Option<Tiles>, String> {
    // The image's planes beside the network's, per pixel: the decoded file (up to 16-bit RGBA,
    // 8 B), its 8-bit copies in and out (3 + 4 B), the input, its padded copy, the blended output
    // and the blending weights (f32, 40 B), the encoded PNG (≤ 4 B).
    let planes = (w * h) as u64 * 60;
    let usable = budget / 4 * 3;
    let need = cfg.inference_bytes(w, h) + planes;
    if need <= usable {
        return Ok(None);
    }
    let s = cfg.stride().max(1);
    let smallest = (4 * s).max(64).div_ceil(s) * s;
    let fits = |t: usize| cfg.inference_bytes(t, t) + planes <= usable;
    if !fits(smallest) {
        return Err(format!(
            "{w}×{h}: restoring it needs at least {} (the image and a {smallest}² tile); {} available",
            // The budget that plan would fit in (it uses three quarters of what it is given).
            crate::util::human_bytes((cfg.inference_bytes(smallest, smallest) + planes) as u128 * 4 / 3),
            crate::util::human_bytes(budget as u128)
        ));
    }
    let mut t = smallest;
    while t + s <= w.max(h) && fits(t + s) {
        t += s;
    }
    let overlap = (t / 4).min(128);
    Ok(Some(Tiles { side: t, overlap }))
}

/// Restore an image whole (`tiles` `None`, or a tile covering it) or tile by tile, each tile
/// restored whole and blended into the result with linear ramps over the overlap (the weights
/// sum to one at every pixel).
pub fn restore_tiled(g: &Restorer, img: &Image, stride: usize, tiles: Option<Tiles>, device: &Device) -> Image {
    let whole = |im: &Image| restore_image(g, im, stride, device);
    let Some(Tiles { side: tile, overlap }) = tiles.filter(|t| t.side < img.width.max(img.height)) else {
        return whole(img);
    };
    let step = tile.saturating_sub(overlap).max(1);
    let starts = |n: usize| -> Vec<usize> {
        if n <= tile {
            return vec![0];
        }
        let mut v: Vec<usize> = (0..n - tile).step_by(step).collect();
        v.push(n - tile);
        v.dedup();
        v
    };
    // Linear ramps over the overlap: tiles blend smoothly and the weights sum to one.
    let ramp = |i: usize, len: usize, lo_edge: bool, hi_edge: bool| -> f32 {
        let o = overlap.max(1) as f32;
        let a = if lo_edge { 1.0 } else { ((i as f32 + 0.5) / o).min(1.0) };
        let b = if hi_edge { 1.0 } else { ((len - i) as f32 - 0.5).min(o) / o };
        a.min(b).max(1e-3)
    };
    let (xs, ys) = (starts(img.width), starts(img.height));
    let mut acc = vec![0f32; img.data.len()];
    let mut wsum = vec![0f32; img.width * img.height];
    for &y0 in &ys {
        for &x0 in &xs {
            let (tw, th) = (tile.min(img.width), tile.min(img.height));
            let out = whole(&img.crop(x0, y0, tw, th));
            for y in 0..th {
                let wy = ramp(y, th, y0 == 0, y0 + th == img.height);
                for x in 0..tw {
                    let w = wy * ramp(x, tw, x0 == 0, x0 + tw == img.width);
                    let (gx, gy) = (x0 + x, y0 + y);
                    wsum[gy * img.width + gx] += w;
                    for c in 0..3 {
                        acc[(gy * img.width + gx) * 3 + c] += w * out.get(x, y, c);
                    }
                }
            }
        }
    }
    let data = acc.iter().enumerate().map(|(i, v)| v / wsum[i / 3]).collect();
    Image { data, ..img.clone() }
}

/// Restore an image within `budget` bytes (the memory left, [`crate::util::memory_budget`];
/// `None`: unknown, whole): whole when it fits — the same result as [`restore_image`] — else in
/// the largest tiles that fit. An error when not even the smallest tile fits.
pub fn restore_within(
    g: &Restorer,
    cfg: &RestorerConfig,
    img: &Image,
    budget: Option<u64>,
    device: &Device,
) -> Result<Image, String> {
    let tiles = match budget {
        Some(b) => tiles_for_budget(cfg, img.width, img.height, b)?,
        None => None,
    };
    if let Some(t) = tiles {
        tracing::debug!(
            width = img.width,
            height = img.height,
            tile = t.side,
            overlap = t.overlap,
            "restoring in tiles"
        );
    }
    Ok(restore_tiled(g, img, cfg.stride(), tiles, device))
}

/// PixelDA's translator applied to one image, with per-pixel noise drawn from `seed` (the same
/// seed, the same translation).
pub fn translate_image(t: &crate::networks::pixel_da::Translator, img: &Image, seed: u64, device: &Device) -> Image {
    let mut rng = Rng::new(seed);
    let z: Vec<f32> = (0..img.width * img.height).map(|_| rng.normal() as f32).collect();
    let z = Tensor::<4>::from_data(TensorData::new(z, [1, 1, img.height, img.width]), device);
    let out = t.forward(to_tensor(std::slice::from_ref(img), device), z);
    from_tensor(out).pop().expect("one image")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The memory plan: whole when it fits, else the largest tile that fits (a multiple of the
    /// stride, with the planes of the whole image beside it), an error when nothing fits.
    #[test]
    fn tiles_follow_the_memory_budget() {
        let cfg = RestorerConfig::unet_release(vec![64, 128, 256, 512]);
        let (w, h) = (6000, 4000);
        assert_eq!(tiles_for_budget(&cfg, 512, 512, 64 << 30).unwrap(), None);
        let budget = 8u64 << 30;
        let Tiles { side: t, overlap: o } =
            tiles_for_budget(&cfg, w, h, budget).unwrap().expect("24 MP of UNet-S does not fit 8 GiB");
        assert_eq!(t % cfg.stride(), 0);
        assert!(o < t && o <= 128);
        let planes = (w * h) as u64 * 60;
        assert!(cfg.inference_bytes(t, t) + planes <= budget / 4 * 3);
        assert!(cfg.inference_bytes(t + cfg.stride(), t + cfg.stride()) + planes > budget / 4 * 3, "the largest");
        let e = tiles_for_budget(&cfg, w, h, 1 << 30).unwrap_err();
        assert!(e.contains("6000×4000") && e.contains("available"), "{e}");
    }

    /// Restoring within a budget: unknown or ample, the whole-image result exactly; too small
    /// for the whole image, the planned tiles' result (close to the whole image); too small
    /// for any tile, an error naming the image's size.
    #[test]
    fn restore_within_tiles_only_when_the_whole_image_would_not_fit() {
        let dev = Device::flex();
        let cfg = RestorerConfig::unet(vec![4, 8]);
        let g = {
            let _serial = crate::util::rng_lock();
            dev.seed(11);
            cfg.init(&dev)
        };
        let img = Image::from_vec(300, 200, (0..300 * 200 * 3).map(|i| ((i * 37) % 101) as f32 / 101.0).collect());
        let whole = restore_image(&g, &img, cfg.stride(), &dev);
        assert_eq!(restore_within(&g, &cfg, &img, None, &dev).unwrap().data, whole.data);
        assert_eq!(restore_within(&g, &cfg, &img, Some(64 << 30), &dev).unwrap().data, whole.data);
        // A budget between the image's planes and its whole-image restore.
        let planes = 300 * 200 * 60;
        let budget = (planes + (cfg.inference_bytes(64, 64) + cfg.inference_bytes(300, 200)) / 2) / 3 * 4;
        let tiles = tiles_for_budget(&cfg, 300, 200, budget).unwrap().expect("tiles");
        assert!(tiles.side < 300, "{tiles:?}");
        let tiled = restore_within(&g, &cfg, &img, Some(budget), &dev).unwrap();
        assert_eq!(tiled.data, restore_tiled(&g, &img, cfg.stride(), Some(tiles), &dev).data);
        let mean =
            whole.data.iter().zip(&tiled.data).map(|(a, b)| (a - b).abs()).sum::<f32>() / whole.data.len() as f32;
        assert!(mean > 0.0 && mean < 0.02, "mean |Δ| {mean}");
        let e = restore_within(&g, &cfg, &img, Some(planes / 2), &dev).unwrap_err();
        assert!(e.contains("300×200"), "{e}");
    }
}

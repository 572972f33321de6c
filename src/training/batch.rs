//! Training batches: random crops with dihedral augmentation, assembled as NCHW tensors.
//!
//! A synthetic pair shares one crop and one of the 8 dihedral transforms; each target image
//! gets its own crop and transform and is drawn independently of the synthetic samples, so
//! real images are re-paired with synthetic ones at random every step.

use burn::tensor::{Device, Tensor, TensorData};

use crate::datasets::{CropPool, PairedSet, TargetTrainSet};
use crate::image::Image;
use crate::rng::Rng;

/// One of the 8 symmetries of the square: `k & 3` quarter turns, then a horizontal flip if `k & 4`.
pub(crate) fn dihedral(img: &Image, k: u8) -> Image {
    let (w, h) = (img.width, img.height);
    let turns = k & 3;
    let (ow, oh) = if turns % 2 == 1 { (h, w) } else { (w, h) };
    let mut out = Image::new(ow, oh);
    for y in 0..oh {
        for x in 0..ow {
            let xf = if k & 4 != 0 { ow - 1 - x } else { x };
            // Source coordinates of output (xf, y) after `turns` clockwise quarter turns.
            let (sx, sy) = match turns {
                0 => (xf, y),
                1 => (y, h - 1 - xf),
                2 => (w - 1 - xf, h - 1 - y),
                _ => (w - 1 - y, xf),
            };
            for c in 0..3 {
                out.set(x, y, c, img.get(sx, sy, c));
            }
        }
    }
    out
}

/// Top-left corner of a random `patch`² crop of a `w × h` image.
pub(crate) fn crop_at((w, h): (usize, usize), patch: usize, rng: &mut Rng) -> (usize, usize) {
    let x = rng.below((w - patch + 1) as u64) as usize;
    let y = rng.below((h - patch + 1) as u64) as usize;
    (x, y)
}

pub(crate) fn random_crop(img: &Image, patch: usize, rng: &mut Rng) -> (usize, usize) {
    crop_at((img.width, img.height), patch, rng)
}

/// HWC images to one NCHW tensor.
pub(crate) fn to_tensor(images: &[Image], device: &Device) -> Tensor<4> {
    let (w, h) = (images[0].width, images[0].height);
    let mut data: Vec<f32> = Vec::with_capacity(images.len() * 3 * w * h);
    for img in images {
        assert!(img.width == w && img.height == h, "batch images must share a size");
        for c in 0..3 {
            data.extend(img.data.iter().skip(c).step_by(3));
        }
    }
    Tensor::from_data(TensorData::new(data, [images.len(), 3, h, w]), device)
}

/// NCHW tensor back to HWC images.
pub(crate) fn from_tensor(t: Tensor<4>) -> Vec<Image> {
    let [n, c, h, w] = t.dims();
    assert_eq!(c, 3);
    let v = t.into_data().try_to_vec::<f32>().expect("f32 tensor");
    (0..n)
        .map(|i| {
            let mut img = Image::new(w, h);
            for ch in 0..3 {
                let plane = &v[(i * 3 + ch) * h * w..(i * 3 + ch + 1) * h * w];
                for (p, &val) in plane.iter().enumerate() {
                    img.data[p * 3 + ch] = val;
                }
            }
            img
        })
        .collect()
}

#[derive(Debug)]
pub struct Batch {
    pub source_degraded: Vec<Image>,
    pub source_clean: Vec<Image>,
    /// Target inputs (no ground truth exists for them).
    pub target: Vec<Image>,
}

impl Batch {
    /// Shard `k` of `n` equal, contiguous parts (the batch size must divide by `n`).
    pub fn shard(&self, k: usize, n: usize) -> Batch {
        let part = |v: &[Image]| {
            let m = v.len() / n;
            v[k * m..(k + 1) * m].to_vec()
        };
        Batch {
            source_degraded: part(&self.source_degraded),
            source_clean: part(&self.source_clean),
            target: part(&self.target),
        }
    }
}

/// The batch of step `step`, a pure function of (seed, step) — the source's redrawn
/// degradation included, so a resumed run draws the same noise, and neither thread counts nor
/// the prefetch depth matter. Which image, where and which transform are drawn from the sizes
/// alone ([`CropPool`]); then each crop is read, from memory or from a patch store, so a set
/// held in memory and the same images in a store give the same batch.
pub(crate) fn sample_batch(
    source: &PairedSet,
    target: Option<&TargetTrainSet>,
    batch: usize,
    target_batch: usize,
    patch: usize,
    seed: u64,
    step: u64,
) -> std::io::Result<Batch> {
    let mut rng = Rng::derive(seed, "batch", &[step]);
    let mut out = Batch { source_degraded: Vec::new(), source_clean: Vec::new(), target: Vec::new() };
    // A redrawn degradation has a stream per step, its crops indexed by their position, so the
    // crops and transforms below are the same whether or not the degradation is redrawn.
    let redraw_seed = crate::rng::derive_seed(seed, "redraw", &[step]);
    for i in 0..batch {
        let item = rng.below(source.count() as u64) as usize;
        let (x, y) = crop_at(source.dims(item), patch, &mut rng);
        let k = rng.below(8) as u8;
        let (stored, clean) = source.read_pair(item, (x, y, patch, patch), source.redraw.is_none())?;
        let clean = dihedral(&clean, k);
        let degraded = match (&source.redraw, stored) {
            (Some(spec), _) => spec.apply(&clean, redraw_seed, i as u64).0,
            (None, Some(d)) => dihedral(&d, k),
            (None, None) => {
                return Err(std::io::Error::other(format!(
                    "dataset \"{}\": clean images only, and no degradation to draw",
                    source.dataset
                )));
            }
        };
        out.source_degraded.push(degraded);
        out.source_clean.push(clean);
    }
    if let Some(t) = target {
        // Drawn after the synthetic pairs: changing `target_batch` keeps the synthetic crops.
        for _ in 0..target_batch {
            let item = rng.below(t.count() as u64) as usize;
            let (x, y) = crop_at(t.dims(item), patch, &mut rng);
            let k = rng.below(8) as u8;
            out.target.push(dihedral(&t.read(item, (x, y, patch, patch))?, k));
        }
    }
    Ok(out)
}

/// Neighbor2Neighbor's ordered pairs of edge-adjacent pixels in a 2×2 cell (cell pixels
/// 0 = (0,0), 1 = (1,0), 2 = (0,1), 3 = (1,1)): never the same pixel, never diagonal.
const NEIGHBOURS: [(usize, usize); 8] = [(0, 1), (1, 0), (0, 2), (2, 0), (1, 3), (3, 1), (2, 3), (3, 2)];

/// One random pair per 2×2 cell of a `w × h` image (an index into [`NEIGHBOURS`]).
pub(crate) fn neighbour_choices(w: usize, h: usize, rng: &mut Rng) -> Vec<u8> {
    (0..(w / 2) * (h / 2)).map(|_| rng.below(NEIGHBOURS.len() as u64) as u8).collect()
}

/// The two half-resolution images g1(y), g2(y) of Neighbor2Neighbor's sub-sampler: from each
/// 2×2 cell, the two neighbouring pixels `choices` picks.
pub(crate) fn neighbour_subsample(img: &Image, choices: &[u8]) -> (Image, Image) {
    let (w, h) = (img.width / 2, img.height / 2);
    let (mut a, mut b) = (Image::new(w, h), Image::new(w, h));
    let at = |cx: usize, cy: usize, k: usize| (2 * cx + k % 2, 2 * cy + k / 2);
    for cy in 0..h {
        for cx in 0..w {
            let (p, q) = NEIGHBOURS[choices[cy * w + cx] as usize];
            let ((px, py), (qx, qy)) = (at(cx, cy, p), at(cx, cy, q));
            for c in 0..3 {
                a.set(cx, cy, c, img.get(px, py, c));
                b.set(cx, cy, c, img.get(qx, qy, c));
            }
        }
    }
    (a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sub-sampler takes two edge-adjacent pixels of each cell: never the same one, never
    /// diagonal, every one of the 8 ordered pairs drawn.
    #[test]
    fn neighbour_subsampler_picks_adjacent_distinct_pixels() {
        // Pixel value = its own coordinates, so each output says where it came from.
        let mut img = Image::new(8, 6);
        for y in 0..6 {
            for x in 0..8 {
                img.set(x, y, 0, x as f32);
                img.set(x, y, 1, y as f32);
            }
        }
        let mut rng = Rng::new(5);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let ch = neighbour_choices(8, 6, &mut rng);
            seen.extend(ch.iter().copied());
            let (a, b) = neighbour_subsample(&img, &ch);
            assert_eq!((a.width, a.height), (4, 3));
            for cy in 0..3 {
                for cx in 0..4 {
                    let (ax, ay, bx, by) = (a.get(cx, cy, 0), a.get(cx, cy, 1), b.get(cx, cy, 0), b.get(cx, cy, 1));
                    for (x, y) in [(ax, ay), (bx, by)] {
                        assert!((x as usize) / 2 == cx && (y as usize) / 2 == cy, "outside its cell");
                    }
                    assert_eq!((ax - bx).abs() + (ay - by).abs(), 1.0, "neighbours: one step apart");
                }
            }
        }
        assert_eq!(seen.len(), 8);
    }

    fn ramp(w: usize, h: usize) -> Image {
        Image::from_vec(w, h, (0..w * h * 3).map(|v| v as f32).collect())
    }

    #[test]
    fn dihedral_group_has_eight_distinct_members_and_inverses() {
        let img = ramp(4, 4);
        let all: Vec<Image> = (0..8).map(|k| dihedral(&img, k)).collect();
        for i in 0..8 {
            for j in i + 1..8 {
                assert_ne!(all[i], all[j], "{i} vs {j}");
            }
        }
        // Four quarter turns give the identity; a flip twice too.
        let mut r = img.clone();
        for _ in 0..4 {
            r = dihedral(&r, 1);
        }
        assert_eq!(r, img);
        assert_eq!(dihedral(&dihedral(&img, 4), 4), img);
        // Non-square images swap their sides on odd turns.
        let t = dihedral(&ramp(3, 2), 1);
        assert_eq!((t.width, t.height), (2, 3));
    }

    /// A source whose degradation is redrawn: the noise on the same image differs from step to
    /// step, and a step's noise is identical on a rerun and for any thread count.
    #[test]
    fn redrawn_noise_is_fresh_per_step_and_reproducible() {
        use crate::datasets::{PairedItem, PairedSet, Split};
        use crate::degradations::DegradationSpec;
        // One flat image (so the dihedral transform cannot hide a difference), cropped whole.
        let clean = Image::from_vec(8, 8, vec![0.5; 8 * 8 * 3]);
        let stored = Image::from_vec(8, 8, vec![0.9; 8 * 8 * 3]);
        let source = PairedSet::held(
            "flat",
            Split::Train,
            vec![PairedItem {
                id: "a".into(),
                degraded: stored.clone(),
                clean: clean.clone(),
                params: Default::default(),
            }],
            "f",
        )
        .redrawn(DegradationSpec::Awgn { sigma: [25.0, 25.0] });
        assert!(source.fingerprint.ends_with("+redraw"));
        let noisy = |step: u64, threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| sample_batch(&source, None, 2, 0, 8, 3, step).unwrap().source_degraded)
        };
        let (a, b) = (noisy(0, 1), noisy(1, 1));
        assert_ne!(a[0], b[0], "the same image gets new noise at the next step");
        assert_ne!(a[0], a[1], "and each crop of a step its own");
        assert!(a[0] != stored && a[0].data.iter().all(|&v| (v - 0.5).abs() < 0.5), "drawn around the clean image");
        assert_eq!(a, noisy(0, 1), "identical on a rerun");
        assert_eq!(a, noisy(0, 4), "and for any thread count");
        // Without redraw, the stored pair is used.
        let fixed = PairedSet { redraw: None, ..source.clone() };
        assert_eq!(sample_batch(&fixed, None, 1, 0, 8, 3, 0).unwrap().source_degraded[0], stored);
    }

    /// A set held in memory and the same images in a patch store draw the same batches: the
    /// same images, windows and transforms, the same pixels, pairs aligned — with and without
    /// a redrawn degradation.
    #[test]
    fn a_patch_store_draws_the_same_crops_as_the_images_in_memory() {
        use crate::datasets::layouts::FileItem;
        use crate::datasets::patches::{Planes, StoreView, Tiling, prepare};
        use crate::datasets::{DegradedItem, PairedItem, PairedSet, Split, TargetTrainSet};
        use crate::degradations::DegradationSpec;
        let dir = std::env::temp_dir().join(format!("rp-batch-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut rng = Rng::new(4);
        let mut files = vec![];
        for (i, (w, h)) in [(40u32, 33u32), (64, 64), (21, 50)].into_iter().enumerate() {
            let mut pair = vec![];
            for side in ["noisy", "gt"] {
                let p = dir.join(format!("{side}{i}.png"));
                image::RgbImage::from_fn(w, h, |_, _| image::Rgb([0, 0, 0].map(|_: u8| rng.below(256) as u8)))
                    .save(&p)
                    .unwrap();
                pair.push(p);
            }
            files.push(FileItem {
                id: format!("p{i}"),
                clean: Some(pair.pop().unwrap()),
                degraded: pair.pop().unwrap(),
                meta: vec![],
            });
        }
        // Patches as large as the images: one patch per image, in the same order.
        let tiling = Tiling { side: 64, overlap: 16 };
        let (pairs, _) =
            prepare(&dir.join("pairs"), "a", serde_json::json!({}), &files, tiling, Planes::Pair, &|| false).unwrap();
        let (inputs, _) =
            prepare(&dir.join("inputs"), "b", serde_json::json!({}), &files, tiling, Planes::Degraded, &|| false)
                .unwrap();
        let load = |p: &std::path::Path| Image::load(p).unwrap();
        let memory = PairedSet::held(
            "d",
            Split::Train,
            files
                .iter()
                .map(|f| PairedItem {
                    id: f.id.clone(),
                    degraded: load(&f.degraded),
                    clean: load(f.clean.as_ref().unwrap()),
                    params: Default::default(),
                })
                .collect(),
            "f",
        );
        let streamed = PairedSet {
            items: vec![],
            store: Some(StoreView::new(std::sync::Arc::new(pairs), None)),
            ..memory.clone()
        };
        let target_memory = TargetTrainSet {
            dataset: "t".into(),
            items: memory
                .items
                .iter()
                .map(|it| DegradedItem { id: it.id.clone(), degraded: it.degraded.clone(), params: Default::default() })
                .collect(),
            fingerprint: "g".into(),
            cached: false,
            problems: vec![],
            store: None,
        };
        let target_streamed = TargetTrainSet {
            items: vec![],
            store: Some(StoreView::new(std::sync::Arc::new(inputs), None)),
            ..target_memory.clone()
        };
        let awgn = DegradationSpec::Awgn { sigma: [10.0, 30.0] };
        for (a, b) in
            [(memory.clone(), streamed.clone()), (memory.clone().redrawn(awgn.clone()), streamed.redrawn(awgn))]
        {
            for step in 0..6 {
                let x = sample_batch(&a, Some(&target_memory), 4, 3, 20, 9, step).unwrap();
                let y = sample_batch(&b, Some(&target_streamed), 4, 3, 20, 9, step).unwrap();
                assert_eq!(x.source_degraded, y.source_degraded, "step {step}");
                assert_eq!(x.source_clean, y.source_clean, "step {step}");
                assert_eq!(x.target, y.target, "step {step}");
            }
        }
        // A store of clean images only cannot give degraded crops unless they are redrawn.
        let clean_only = PairedSet { store: target_streamed.store.clone(), ..memory };
        assert!(sample_batch(&clean_only, None, 2, 0, 20, 9, 0).unwrap_err().to_string().contains("clean images only"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tensor_round_trip() {
        let imgs = vec![ramp(5, 3), ramp(5, 3)];
        let t = to_tensor(&imgs, &Device::flex());
        assert_eq!(t.dims(), [2, 3, 3, 5]);
        assert_eq!(from_tensor(t), imgs);
    }
}

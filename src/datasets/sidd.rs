//! Everything SIDD (Abdelhamed et al., CVPR 2018; `shared/DATASETS.md`): the sRGB Medium/Small
//! folder layout and what its scene-folder names say (phone, ISO, shutter, ...), and the
//! validation/benchmark MAT-files of 256² blocks (read with [`super::matv5`]).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, ensure};

use super::layouts::{self, FileItem, Scan, images_in, stem, subdirs};
use super::{DegradationParams, PairedItem, PairedSet, Split, matv5};
use crate::error::{Failure, Result};
use crate::image::Image;

/// SIDD sRGB, Medium (`<inst>_GT_SRGB_010.PNG`) or Small (`GT_SRGB_010.PNG`) layout:
/// `Data/<inst>_<scene>_<phone>_<ISO>_<shutter>_<temp>_<L|N|H>/`.
pub fn layout(root: &Path) -> Scan {
    let mut scan = Scan::default();
    let data = root.join("Data");
    let dirs = match subdirs(&data) {
        Ok(d) => d,
        Err(e) => {
            scan.problem(&data, format!("cannot list SIDD Data/ folder: {e}"));
            return scan;
        }
    };
    for dir in dirs {
        let folder = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let meta = match folder_meta(&folder) {
            Some(m) => m,
            None => {
                scan.problem(&dir, "folder name is not <inst>_<scene>_<phone>_<ISO>_<shutter>_<temp>_<L|N|H>");
                continue;
            }
        };
        let files = match images_in(&dir) {
            Ok(f) => f,
            Err(e) => {
                scan.problem(&dir, format!("cannot list: {e}"));
                continue;
            }
        };
        let mut noisy: Vec<&PathBuf> = files.iter().filter(|p| stem(p).contains("NOISY_SRGB_")).collect();
        noisy.sort();
        if noisy.is_empty() {
            scan.problem(&dir, "no *NOISY_SRGB_*.PNG image");
        }
        for n in noisy {
            let name = n.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let gt_name = name.replace("NOISY_SRGB_", "GT_SRGB_");
            let gt = dir.join(&gt_name);
            if !gt.is_file() {
                scan.problem(n, format!("missing ground truth {gt_name}"));
                continue;
            }
            let frame = stem(n).rsplit('_').next().unwrap_or("").to_string();
            scan.items.push(FileItem {
                id: format!("{folder}/{frame}"),
                degraded: n.clone(),
                clean: Some(gt),
                meta: meta.clone(),
            });
        }
    }
    scan.dedupe()
}

/// Metadata columns from a SIDD scene folder name, e.g. `0052_002_S6_01600_01000_5500_N`.
pub(crate) fn folder_meta(folder: &str) -> Option<Vec<(String, String)>> {
    let parts: Vec<&str> = folder.split('_').collect();
    if parts.len() != 7 || !["L", "N", "H"].contains(&parts[6]) {
        return None;
    }
    let num = |s: &str| {
        s.trim_start_matches('0')
            .parse::<u64>()
            .map(|v| v.to_string())
            .ok()
            .or((s.chars().all(|c| c == '0')).then(|| "0".into()))
    };
    let keys = ["instance", "scene", "phone", "iso", "shutter", "temperature", "brightness"];
    let mut out = Vec::new();
    for (i, (k, v)) in keys.iter().zip(&parts).enumerate() {
        let v = if matches!(i, 3 | 4 | 5) { num(v)? } else { v.to_string() };
        out.push((k.to_string(), v));
    }
    Some(out)
}

// ------------------------------------------------------------------------------------------------
// MAT-file blocks

/// The blocks of variable `stem` in `root/<stem>.mat`, in (image, block) order.
pub(crate) fn read_blocks(root: &Path, stem: &str) -> Result<Vec<((usize, usize), Image)>> {
    let path = root.join(format!("{stem}.mat"));
    let arr = matv5::read_variable(&path, stem).map_err(|e| Failure::data(format!("{e:#}")))?;
    blocks(&arr).map_err(|e| Failure::data(format!("{}: {e:#}", path.display())))
}

/// SIDD validation: 40 images × 32 blocks of 256² in `ValidationNoisyBlocksSrgb.mat` and
/// `ValidationGtBlocksSrgb.mat` (MATLAB v5, read natively); the first `count` blocks. The two
/// arrays are kept as stored (8-bit, ≈ 250 MB each) and made into images a chunk at a time
/// when scored ([`PairedSet::chunks`]); the first few pairs are made now, for figures.
pub fn validation(root: &Path, count: usize) -> Result<PairedSet> {
    let read = |stem: &str| -> Result<matv5::MatArray> {
        let path = root.join(format!("{stem}.mat"));
        let arr = matv5::read_variable(&path, stem).map_err(|e| Failure::data(format!("{e:#}")))?;
        block_shape(&arr).map_err(|e| Failure::data(format!("{}: {e:#}", path.display())))?;
        Ok(arr)
    };
    let (noisy, gt) = (read("ValidationNoisyBlocksSrgb")?, read("ValidationGtBlocksSrgb")?);
    if noisy.dims != gt.dims {
        return Err(Failure::data(format!(
            "{}: noisy blocks of shape {:?} but ground-truth blocks of shape {:?}",
            root.display(),
            noisy.dims,
            gt.dims
        )));
    }
    let mats = ["ValidationNoisyBlocksSrgb.mat", "ValidationGtBlocksSrgb.mat"].map(|f| root.join(f));
    let fingerprint = layouts::files_fingerprint(mats.iter().map(PathBuf::as_path));
    let (ni, nb) = (noisy.dims[0], noisy.dims[1]);
    let blocks: Vec<(usize, usize)> = (0..ni).flat_map(|i| (0..nb).map(move |b| (i, b))).take(count).collect();
    let items = blocks[..blocks.len().min(super::SAMPLE)]
        .iter()
        .map(|&ix| block_pair(&noisy, &gt, ix))
        .collect::<Result<Vec<_>>>()?;
    Ok(PairedSet {
        dataset: "sidd-validation".into(),
        split: Split::Test,
        items,
        fingerprint,
        cached: false,
        problems: vec![],
        redraw: None,
        store: None,
        files: Some(std::sync::Arc::new(super::TestFiles {
            source: super::TestSource::Blocks { noisy, gt, blocks },
            reference_input: false,
        })),
    })
}

/// The metadata columns of a SIDD block.
pub(crate) const BLOCK_META: [&str; 2] = ["image", "block"];

/// Block `ix` of the noisy and ground-truth arrays (checked by [`block_shape`]) as a test pair.
pub(crate) fn block_pair(noisy: &matv5::MatArray, gt: &matv5::MatArray, ix: (usize, usize)) -> Result<PairedItem> {
    let get = |a: &matv5::MatArray| block(a, ix).map_err(|e| Failure::data(format!("{e:#}")));
    Ok(PairedItem {
        id: block_id(ix),
        degraded: get(noisy)?,
        clean: get(gt)?,
        params: DegradationParams {
            meta: vec![(BLOCK_META[0].into(), ix.0.to_string()), (BLOCK_META[1].into(), ix.1.to_string())],
            ..Default::default()
        },
    })
}

/// The values and shape (images, blocks, height, width) of a SIDD blocks array, checked:
/// `uint8`, (images, blocks, H, W, 3), as many values as the shape says.
fn block_shape(arr: &matv5::MatArray) -> anyhow::Result<(&[u8], usize, usize, usize, usize)> {
    let src = arr.as_u8().ok_or_else(|| {
        anyhow!("variable '{}': SIDD blocks must be a uint8 array, found {}", arr.name, arr.class.name())
    })?;
    ensure!(
        arr.dims.len() == 5 && arr.dims[4] == 3,
        "variable '{}': SIDD blocks must have shape (images, blocks, height, width, 3), found {:?}",
        arr.name,
        arr.dims
    );
    ensure!(src.len() == arr.numel(), "variable '{}': {} values for dims {:?}", arr.name, src.len(), arr.dims);
    Ok((src, arr.dims[0], arr.dims[1], arr.dims[2], arr.dims[3]))
}

/// Block `(i, b)` of a SIDD blocks array: pixel `(x, y, c)` is element `(i, b, y, x, c)` / 255
/// (column-major), as [`blocks`] converts the whole array.
pub fn block(arr: &matv5::MatArray, (i, b): (usize, usize)) -> anyhow::Result<Image> {
    let (src, ni, nb, h, w) = block_shape(arr)?;
    ensure!(i < ni && b < nb, "variable '{}': no block ({i}, {b}) in shape {:?}", arr.name, arr.dims);
    let (s, k) = (ni * nb, i + ni * b);
    let mut data = vec![0f32; h * w * 3];
    for c in 0..3 {
        for x in 0..w {
            for y in 0..h {
                data[(y * w + x) * 3 + c] = src[s * (y + h * (x + w * c)) + k] as f32 / 255.0;
            }
        }
    }
    Ok(Image::from_vec(w, h, data))
}

/// SIDD blocks: a `uint8` array of shape (images, blocks, H, W, 3) (MATLAB order, as in
/// `ValidationNoisyBlocksSrgb.mat`) → `images * blocks` [`Image`]s of `W × H`, in (image, block)
/// order, each paired with its 0-based `(image_idx, block_idx)`. Pixel `(x, y, c)` of block
/// `(i, b)` is element `(i, b, y, x, c)` / 255, exactly as [`Image::from_rgb8`] converts.
///
/// The result holds 4 bytes per stored byte (≈ 1 GB for a full SIDD file).
pub fn blocks(arr: &matv5::MatArray) -> anyhow::Result<Vec<((usize, usize), Image)>> {
    let (src, ni, nb, h, w) = block_shape(arr)?;
    let s = ni * nb; // stride between consecutive pixels of one block
    let npix = h * w * 3;
    if s == 0 {
        return Ok(Vec::new());
    }
    let mut lut = [0f32; 256];
    for (v, out) in lut.iter_mut().enumerate() {
        *out = v as u8 as f32 / 255.0; // the expression Image::from_rgb8 uses
    }
    // outs[k] is block (i, b) with k = i + ni * b, MATLAB's column-major order of the first two
    // dimensions. A group of GROUP consecutive k shares every source cache line, so each line is
    // read once; tiles of TILE × TILE pixels keep the group's output lines in cache meanwhile.
    const GROUP: usize = 64;
    const TILE: usize = 16;
    let mut outs: Vec<Vec<f32>> = (0..s).map(|_| vec![0f32; npix]).collect();
    let fill = |k0: usize, group: &mut [Vec<f32>]| {
        let g = group.len();
        for y0 in (0..h).step_by(TILE) {
            for x0 in (0..w).step_by(TILE) {
                for c in 0..3 {
                    for x in x0..(x0 + TILE).min(w) {
                        for y in y0..(y0 + TILE).min(h) {
                            let off = s * (y + h * (x + w * c)) + k0;
                            let row = &src[off..off + g];
                            let o = (y * w + x) * 3 + c;
                            for (out, &v) in group.iter_mut().zip(row) {
                                out[o] = lut[v as usize];
                            }
                        }
                    }
                }
            }
        }
    };
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(s.div_ceil(GROUP)).max(1);
    let groups_per_thread = s.div_ceil(GROUP).div_ceil(threads);
    std::thread::scope(|scope| {
        for (t, chunk) in outs.chunks_mut(groups_per_thread * GROUP).enumerate() {
            let fill = &fill;
            scope.spawn(move || {
                for (j, group) in chunk.chunks_mut(GROUP).enumerate() {
                    fill(t * groups_per_thread * GROUP + j * GROUP, group);
                }
            });
        }
    });
    // Reorder from k = i + ni*b to (image, block) order.
    let mut slots: Vec<Option<Vec<f32>>> = outs.into_iter().map(Some).collect();
    let mut result = Vec::with_capacity(s);
    for i in 0..ni {
        for b in 0..nb {
            let data = slots[i + ni * b].take().unwrap_or_default();
            result.push(((i, b), Image::from_vec(w, h, data)));
        }
    }
    Ok(result)
}

/// Identifier for block `b` of image `i` (0-based) as used in file names: `"0003_17"`.
pub fn block_id((image, block): (usize, usize)) -> String {
    format!("{image:04}_{block:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasets::matv5::tests::{blocks as block_bytes, formula, tmp};
    use crate::datasets::matv5::{MatArray, MatClass, MatData, list_variables, read_variable, write_mat};

    #[test]
    fn sidd_folder_metadata() {
        let m = folder_meta("0052_002_S6_01600_01000_5500_N").unwrap();
        let get = |k: &str| m.iter().find(|(a, _)| a == k).unwrap().1.clone();
        assert_eq!(get("instance"), "0052");
        assert_eq!(get("phone"), "S6");
        assert_eq!(get("iso"), "1600");
        assert_eq!(get("shutter"), "1000");
        assert_eq!(get("temperature"), "5500");
        assert_eq!(get("brightness"), "N");
        assert!(folder_meta("not_a_sidd_folder").is_none());
    }

    #[test]
    fn sidd_blocks_rejects_wrong_shapes() {
        let a = MatArray {
            name: "x".into(),
            dims: vec![2, 2, 2, 2],
            class: MatClass::UInt8,
            logical: false,
            data: MatData::U8(vec![0; 16]),
        };
        assert!(blocks(&a).unwrap_err().to_string().contains("shape"));
        let a = MatArray { dims: vec![1, 1, 2, 2, 3], data: MatData::F64(vec![0.0; 12]), class: MatClass::Double, ..a };
        assert!(blocks(&a).unwrap_err().to_string().contains("uint8"));
    }

    #[test]
    fn sidd_blocks_many_groups() {
        // More than one 64-block group and an odd image count, to exercise the grouped gather.
        let d = [7, 20, 3, 5, 3];
        let a = MatArray {
            name: "b".into(),
            dims: d.to_vec(),
            class: MatClass::UInt8,
            logical: false,
            data: MatData::U8(block_bytes(d)),
        };
        let imgs = blocks(&a).unwrap();
        assert_eq!(imgs.len(), 140);
        for (n, ((i, b), img)) in imgs.iter().enumerate() {
            assert_eq!((*i, *b), (n / 20, n % 20));
            assert_eq!((img.width, img.height), (5, 3));
            let want: Vec<u8> = (0..3)
                .flat_map(|y| (0..5).flat_map(move |x| (0..3).map(move |c| (y, x, c))))
                .map(|(y, x, c)| formula(*i, *b, y, x, c))
                .collect();
            assert_eq!(*img, Image::from_rgb8(5, 3, &want));
        }
    }

    /// The size of SIDD's block files: `cargo test --release -- --ignored --nocapture sidd_scale`.
    #[test]
    #[ignore]
    fn sidd_scale_timing() {
        let d = [40usize, 32, 256, 256, 3];
        let n: usize = d.iter().product();
        // Image-like content: smooth ramps plus pseudo-random noise (compresses ~like real noisy sRGB).
        let mut v = Vec::with_capacity(n);
        let mut s = 0x2545F4914F6CDD1Du64;
        for k in 0..n {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let y = (k / (40 * 32)) % 256;
            v.push(((y / 2) as u64 + (s & 31)) as u8);
        }
        let path = std::env::var("MATV5_BIG").map(std::path::PathBuf::from).unwrap_or_else(|_| tmp("big.mat"));
        let t = std::time::Instant::now();
        write_mat(&path, &[("ValidationNoisyBlocksSrgb", &d, MatData::U8(v.clone()))], true).unwrap();
        let size = std::fs::metadata(&path).unwrap().len();
        eprintln!("write (compressed): {:.2} s, {} MB on disk", t.elapsed().as_secs_f64(), size / 1_000_000);
        let t = std::time::Instant::now();
        let vars = list_variables(&path).unwrap();
        eprintln!("list_variables: {:.3} s -> {}", t.elapsed().as_secs_f64(), vars[0]);
        let t = std::time::Instant::now();
        let a = read_variable(&path, "ValidationNoisyBlocksSrgb").unwrap();
        eprintln!("read_variable: {:.2} s", t.elapsed().as_secs_f64());
        assert!(a.as_u8().unwrap() == &v[..]);
        let t = std::time::Instant::now();
        let floor: Vec<f32> = a.as_u8().unwrap().iter().map(|&b| b as f32 / 255.0).collect();
        eprintln!("(floor: plain sequential u8->f32 of the whole array: {:.2} s)", t.elapsed().as_secs_f64());
        drop(floor);
        let t = std::time::Instant::now();
        let imgs = blocks(&a).unwrap();
        eprintln!("sidd_blocks: {:.2} s ({} images)", t.elapsed().as_secs_f64(), imgs.len());
        assert_eq!(imgs.len(), 1280);
        let (id, img) = &imgs[37 * 32 + 5];
        assert_eq!(*id, (37, 5));
        assert_eq!(img.get(100, 200, 2), v[a.linear_index(&[37, 5, 200, 100, 2]).unwrap()] as f32 / 255.0);
        if std::env::var("MATV5_BIG").is_err() {
            let _ = std::fs::remove_file(&path);
        }
    }
}

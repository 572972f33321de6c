//! `run-pipeline restore` and `run-pipeline export`: use a trained restorer — from one of our
//! runs, or PyTorch weights (`.pth`, safetensors; the authors' release among them) — on a folder
//! of photos, and hand ours to PyTorch users as safetensors with the release's key names.
//!
//! Images of any size: whole, padded (edge replicate) to the network's stride, or in tiles with
//! overlap blended by linear ramps (`--tile`), for memory. Grayscale stays grayscale (restored
//! as RGB, written as the channel mean), RGBA keeps its alpha. A file that cannot be read or
//! written is reported and the others are still restored (exit 3 at the end).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::Device;
use indicatif::{ProgressBar, ProgressStyle};

use crate::error::{Failure, Result};
use crate::image::Image;
use crate::networks::interop::{self, Naming};
use crate::networks::{Restorer, RestorerConfig};
use crate::training::{self, Tiles};

/// Where a restorer's weights come from.
#[derive(Clone, Debug)]
pub enum WeightsSource {
    /// A file: our `.bpk` (its configuration from `arch`, or from the run it lies in), or a
    /// PyTorch `.pth` / safetensors file (configuration from `arch`).
    File(PathBuf),
    /// A run's final weights of `method` and `seed` (`ema`: the EMA copy).
    Run { dir: PathBuf, method: String, seed: u64, ema: bool },
}

/// The value range the network sees: [0, 1] (ours, and the release's denoising) or [−1, 1].
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Range {
    #[value(name = "01")]
    Unit,
    #[value(name = "pm1")]
    Signed,
}

pub use crate::networks::archs::parse_arch;

/// The restorer of a run's recipe, from its `resolved.json`.
fn run_config(run_dir: &Path, method: &str) -> Result<RestorerConfig> {
    let file = run_dir.join("resolved.json");
    let text = crate::util::read_config(&file)
        .map_err(|e| Failure::config(format!("{}: cannot read the run's configuration: {e}", file.display())))?;
    let spec: super::spec::PipelineSpec = serde_json::from_str(&text)
        .map_err(|e| Failure::config(format!("{}: not a run configuration of this version: {e}", file.display())))?;
    let recipe = spec.recipe(method).ok_or_else(|| {
        Failure::config(format!(
            "{}: no recipe \"{method}\" in this run (methods: {})",
            file.display(),
            spec.methods.join(", ")
        ))
    })?;
    Ok(recipe.networks.restorer.clone())
}

/// Load the restorer `source` names, on `device`. `arch` gives the configuration where the
/// source does not (PyTorch files, a `.bpk` outside a run).
pub fn load(
    source: &WeightsSource,
    arch: Option<&RestorerConfig>,
    device: &Device,
) -> Result<(Restorer, RestorerConfig)> {
    let (file, from_run) = match source {
        WeightsSource::Run { dir, method, seed, ema } => {
            let name = format!("{method}-seed{seed}{}.bpk", if *ema { "-ema" } else { "" });
            (dir.join("checkpoints").join(name), Some((dir.clone(), method.clone())))
        }
        WeightsSource::File(f) => {
            // A `.bpk` inside a run's checkpoints folder: that run says what network it is.
            let inferred = f
                .parent()
                .filter(|p| p.file_name().is_some_and(|n| n == "checkpoints"))
                .and_then(|p| p.parent())
                .filter(|run| run.join("resolved.json").is_file())
                .zip(f.file_stem().and_then(|s| s.to_str()).and_then(|s| s.split("-seed").next()))
                .map(|(run, m)| (run.to_path_buf(), m.to_string()));
            (f.clone(), if f.extension().is_some_and(|e| e == "bpk") { inferred } else { None })
        }
    };
    if !file.is_file() {
        return Err(Failure::data(format!("{}: no such weights file", file.display())));
    }
    let is_bpk = file.extension().is_some_and(|e| e == "bpk");
    let cfg = match (arch, &from_run) {
        (Some(a), _) => a.clone(),
        (None, Some((run, method))) => run_config(run, method)?,
        (None, None) if is_bpk => {
            return Err(Failure::config(format!(
                "{}: a .bpk outside a run does not say which network it holds; pass --arch (e.g. unet:16,32,64)",
                file.display()
            )));
        }
        (None, None) => parse_arch("unet-release:64,128,256,512").expect("the release's UNet-S"),
    };
    if is_bpk {
        if from_run.is_some() {
            crate::integrity::verify_file(&file).map_err(Failure::data)?;
        }
        let g = cfg
            .init(device)
            .try_load_file(&file)
            .map_err(|e| Failure::data(format!("{}: cannot load as {}: {e}", file.display(), cfg.describe())))?;
        return Ok((g, cfg));
    }
    let sd = interop::read_state_dict(&file).map_err(Failure::data)?;
    // The release's names first (its checkpoints), then ours (our exports).
    let g = interop::load_restorer(&cfg, &sd, Naming::Release, device)
        .or_else(|release| {
            interop::load_restorer(&cfg, &sd, Naming::Ours, device)
                .map_err(|ours| format!("{}: {release} (with the release's names); {ours} (with ours)", file.display()))
        })
        .map_err(Failure::data)?;
    Ok((g, cfg))
}

/// How to run the network over an image.
#[derive(Clone, Copy, Debug)]
pub struct Apply {
    pub range: Range,
    /// Tiles of this side (a multiple of the stride); `None`: the whole image.
    pub tile: Option<usize>,
    pub overlap: usize,
}

/// Restore one RGB image: whole, or in tiles of `how.tile` blended over `how.overlap`.
pub fn restore(g: &Restorer, cfg: &RestorerConfig, img: &Image, how: Apply, device: &Device) -> Image {
    let tiles = how.tile.map(|side| Tiles { side, overlap: how.overlap });
    match how.range {
        Range::Unit => training::restore_tiled(g, img, cfg.stride(), tiles, device),
        Range::Signed => {
            // The network sees [−1, 1]; the mapping is pointwise, so it commutes with the tiles.
            let x = Image { data: img.data.iter().map(|v| 2.0 * v - 1.0).collect(), ..img.clone() };
            let y = training::restore_tiled(g, &x, cfg.stride(), tiles, device);
            Image { data: y.data.iter().map(|v| (v + 1.0) / 2.0).collect(), ..y }
        }
    }
}

/// The images to restore: one file, or every image under a folder (relative paths kept), and
/// the problems the folder's scan found (files not read: too deep, not regular files).
fn inputs(input: &Path) -> Result<(Vec<(PathBuf, PathBuf)>, Vec<String>)> {
    if input.is_file() {
        let name = input.file_name().map(PathBuf::from).unwrap_or_default();
        return Ok((vec![(input.to_path_buf(), name)], vec![]));
    }
    if !input.is_dir() {
        return Err(Failure::data(format!("{}: no such file or folder", input.display())));
    }
    let scan = crate::datasets::layouts::clean_folder(input, false);
    let problems = scan.problems.iter().map(|p| format!("{}: {}", p.path.display(), p.message)).collect();
    let items = scan.items.into_iter().map(|it| (it.degraded, PathBuf::from(&it.id))).collect();
    Ok((items, problems))
}

/// What `restore` will do: each image and the PNG it becomes (relative to the output folder),
/// every destination checked.
pub struct Plan {
    items: Vec<(PathBuf, PathBuf)>,
    /// Files of the input folder that are not read, with why (reported as failures: exit 3).
    problems: Vec<String>,
}

/// The images of `input` and their destinations in `out`: an error (nothing written) when the
/// input and output overlap, when there is nothing to restore, when two inputs would become
/// the same PNG (`a.jpg`, `a.png`) or a destination may not be written.
pub fn plan(input: &Path, out: &crate::output::OutputDir) -> Result<Plan> {
    let output = out.path();
    if let Ok(a) = input.canonicalize() {
        let b = crate::output::resolve(output);
        let what = if a == b || (input.is_file() && a.parent() == Some(b.as_path())) {
            Some("the output folder is the input's")
        } else if a.starts_with(&b) {
            Some("the input is inside the output folder")
        } else if b.starts_with(&a) {
            Some("the output folder is inside the input folder")
        } else {
            None
        };
        if let Some(what) = what {
            return Err(Failure::config(format!(
                "{} → {}: {what}; choose folders apart so no photo is read back or overwritten",
                input.display(),
                output.display()
            )));
        }
    }
    let (items, problems) = inputs(input)?;
    if items.is_empty() && problems.is_empty() {
        return Err(Failure::data(format!("{}: no images to restore (PNG, JPEG, TIFF, BMP)", input.display())));
    }
    let mut seen: BTreeMap<PathBuf, &Path> = BTreeMap::new();
    let mut planned = Vec::with_capacity(items.len());
    for (path, rel) in &items {
        let dest = rel.with_extension("png");
        if let Some(other) = seen.insert(dest.clone(), path) {
            return Err(Failure::data(format!(
                "{} and {} would both be written as {}; restore them separately",
                other.display(),
                path.display(),
                output.join(&dest).display()
            )));
        }
        out.check(&dest)?;
        planned.push((path.clone(), dest));
    }
    Ok(Plan { items: planned, problems })
}

/// What `restore` did.
pub struct Restored {
    pub written: Vec<PathBuf>,
    pub failed: Vec<String>,
}

/// Restore every image of `plan` into `out` (PNG, same relative names).
pub fn restore_all(
    g: &Restorer,
    cfg: &RestorerConfig,
    plan: Plan,
    out: &mut crate::output::OutputDir,
    how: Apply,
    device: &Device,
    bars: bool,
) -> Result<Restored> {
    if let Some(t) = how.tile
        && (t == 0 || t % cfg.stride() != 0 || how.overlap >= t)
    {
        return Err(Failure::config(format!(
            "--tile {t}: must be a positive multiple of {} (the network's stride) and larger than --overlap {}",
            cfg.stride(),
            how.overlap
        )));
    }
    let items = plan.items;
    for p in &plan.problems {
        tracing::warn!("{p}");
    }
    let bar = bars.then(|| {
        let b = ProgressBar::new(items.len() as u64);
        b.set_style(ProgressStyle::with_template("restore [{bar:30}] {pos}/{len} {eta} {msg}").expect("template"));
        b
    });
    let mut done = Restored { written: Vec::new(), failed: plan.problems };
    for (i, (path, dest)) in items.iter().enumerate() {
        match restore_file(g, cfg, path, how, device).and_then(|bytes| out.write(dest, &bytes).map_err(|e| e.message)) {
            Ok(()) => done.written.push(out.path().join(dest)),
            Err(e) => {
                tracing::warn!(file = %path.display(), "{e}");
                done.failed.push(format!("{}: {e}", path.display()));
            }
        }
        match &bar {
            Some(b) => b.inc(1),
            None => tracing::info!(done = i + 1, of = items.len(), file = %dest.display(), "restored"),
        }
    }
    if let Some(b) = bar {
        b.finish();
    }
    Ok(done)
}

/// One image restored, as PNG bytes.
fn restore_file(
    g: &Restorer,
    cfg: &RestorerConfig,
    path: &Path,
    how: Apply,
    device: &Device,
) -> std::result::Result<Vec<u8>, String> {
    // Sizes from the header: the memory plan is made before any pixel is decoded.
    let (w, h) = crate::image::dimensions_of(path).map_err(|e| format!("unreadable image: {e}"))?;
    let (w, h) = (w as usize, h as usize);
    if w == 0 || h == 0 {
        return Err("empty image".into());
    }
    // Known before the work starts: whole if it fits the memory left, else in tiles.
    let how = match (how.tile, crate::util::memory_budget()) {
        (None, Some(budget)) => match training::tiles_for_budget(cfg, w, h, budget)? {
            Some(Tiles { side: tile, overlap }) => {
                tracing::info!(
                    file = %path.display(),
                    tile,
                    overlap,
                    whole = %crate::util::human_bytes(cfg.inference_bytes(w, h) as u128),
                    available = %crate::util::human_bytes(budget as u128),
                    "restoring in tiles: the whole image would not fit"
                );
                Apply { tile: Some(tile), overlap, ..how }
            }
            None => how,
        },
        _ => how,
    };
    let decoded = crate::image::decode(path).map_err(|e| format!("unreadable image: {e}"))?;
    if (decoded.width() as usize, decoded.height() as usize) != (w, h) {
        return Err("its header and its pixels disagree on the size".into());
    }
    let alpha = decoded.color().has_alpha().then(|| decoded.to_rgba8());
    let gray = !decoded.color().has_color();
    let img = Image::from_rgb8(w, h, decoded.to_rgb8().as_raw());
    drop(decoded);
    let out = restore(g, cfg, &img, how, device);
    let px = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    let encoded: image::DynamicImage = match (alpha, gray) {
        (Some(mut rgba), false) => {
            for (i, p) in rgba.pixels_mut().enumerate() {
                let (x, y) = (i % w, i / w);
                p.0 = [px(out.get(x, y, 0)), px(out.get(x, y, 1)), px(out.get(x, y, 2)), p.0[3]];
            }
            rgba.into()
        }
        (alpha, true) => {
            let mean = |x: usize, y: usize| px((out.get(x, y, 0) + out.get(x, y, 1) + out.get(x, y, 2)) / 3.0);
            match alpha {
                Some(a) => image::GrayAlphaImage::from_fn(w as u32, h as u32, |x, y| {
                    image::LumaA([mean(x as usize, y as usize), a.get_pixel(x, y).0[3]])
                })
                .into(),
                None => {
                    image::GrayImage::from_fn(w as u32, h as u32, |x, y| image::Luma([mean(x as usize, y as usize)]))
                        .into()
                }
            }
        }
        (None, false) => image::RgbImage::from_raw(w as u32, h as u32, out.to_rgb8()).expect("w×h×3 bytes").into(),
    };
    let mut bytes = Vec::new();
    encoded
        .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .map_err(|e| format!("cannot encode: {e}"))?;
    Ok(bytes)
}

/// `g` as safetensors for PyTorch: the release's key names (under `prefix`, e.g.
/// `RestorationNet.` to load into its whole `Network`, or none to load into `RestorationNet`).
pub fn export(g: &Restorer, cfg: &RestorerConfig, file: &Path, naming: Naming, prefix: &str) -> Result<usize> {
    let sd = interop::state_dict(g, cfg, naming, prefix).map_err(Failure::config)?;
    let arch = cfg.describe();
    interop::write_safetensors(file, &sd, &[("format", "pt"), ("producer", "run-pipeline"), ("network", &arch)])
        .map_err(|e| Failure::internal(format!("{}: cannot write: {e}", file.display())))?;
    Ok(sd.tensors.len())
}

/// Number of parameters, for messages.
pub fn param_count(g: &Restorer) -> usize {
    g.num_params()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_strings() {
        assert_eq!(parse_arch("unet:8,16").unwrap(), RestorerConfig::unet(vec![8, 16]));
        assert_eq!(
            parse_arch("unet-release:64,128,256,512").unwrap(),
            RestorerConfig::unet_release(vec![64, 128, 256, 512])
        );
        assert_eq!(parse_arch("unet-s").unwrap(), parse_arch("unet-release:64,128,256,512").unwrap());
        use crate::networks::archs::{DncnnConfig, NafnetConfig, RestormerConfig};
        assert_eq!(
            parse_arch("dncnn:17,64").unwrap(),
            RestorerConfig::Dncnn(DncnnConfig { depth: Some(17), width: Some(64) })
        );
        assert_eq!(parse_arch("nafnet").unwrap(), RestorerConfig::Nafnet(NafnetConfig::default()));
        assert_eq!(parse_arch("nafnet:64").unwrap(), parse_arch("nafnet-sidd-width64").unwrap());
        assert_eq!(parse_arch("nafnet-gopro:32").unwrap(), RestorerConfig::Nafnet(NafnetConfig::gopro(32)));
        assert_eq!(parse_arch("restormer:48").unwrap(), RestorerConfig::Restormer(RestormerConfig::default()));
        for bad in ["unet", "unet:8,x", "resnet:3", "dncnn:17", "unet:0", "nafnet:0", "restormer:0", "nafnet:1,2"] {
            assert!(parse_arch(bad).is_err(), "{bad}");
        }
    }

    /// Tiles approximate the whole-image result: they see less context near their borders,
    /// so the difference shrinks as the overlap grows (measured on a random 2-level UNet,
    /// 36×28: mean |Δ| 0.055 / 0.018 / 0.0065 / 0.0046 for tile/overlap 16/6, 24/12, 32/16,
    /// 32/24), and a tile covering the image is the whole-image result exactly.
    #[test]
    fn tiled_restoration_converges_to_the_whole_image() {
        let dev = Device::flex();
        let cfg = RestorerConfig::unet(vec![4, 8]);
        // Fixed weights: the back-end's generator is shared with concurrently running tests.
        let g = {
            let _serial = crate::util::rng_lock();
            dev.seed(7);
            cfg.init(&dev)
        };
        let img = Image::from_vec(36, 28, (0..36 * 28 * 3).map(|i| ((i * 31) % 97) as f32 / 97.0).collect());
        let whole = restore(&g, &cfg, &img, Apply { range: Range::Unit, tile: None, overlap: 0 }, &dev);
        let mut last = f32::INFINITY;
        for (t, o) in [(16, 6), (24, 12), (32, 16), (32, 24)] {
            let tiled = restore(&g, &cfg, &img, Apply { range: Range::Unit, tile: Some(t), overlap: o }, &dev);
            assert_eq!((tiled.width, tiled.height), (36, 28));
            let m =
                whole.data.iter().zip(&tiled.data).map(|(a, b)| (a - b).abs()).sum::<f32>() / whole.data.len() as f32;
            assert!(m < last && m < 0.08, "tile {t} overlap {o}: mean |Δ| {m} (previous {last})");
            last = m;
        }
        assert!(last < 0.01, "{last}");
        let big = restore(&g, &cfg, &img, Apply { range: Range::Unit, tile: Some(64), overlap: 8 }, &dev);
        assert_eq!(big.data, whole.data);
    }
}

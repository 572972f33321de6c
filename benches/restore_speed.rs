//! The speed report's `restore` rows: one photo restored with UNet-S (the release's
//! architecture, widths 64/128/256/512), ours against PyTorch eager running the authors' test
//! path (`scripts/torch_restore.py`: replicate padding, x + G(x), crop) on the same weights and
//! pixels — whole-image and tiled — with time, peak RSS and the largest output difference.
//!
//!   cargo bench --bench restore_speed                     # 669×761 and 2000×1500, whole and 512/64 tiles
//!   cargo bench --bench restore_speed -- 669x761          # one size
//!   TORCH_PYTHON=/path/to/python cargo bench --bench restore_speed   # PyTorch's interpreter
//!
//! Each measurement runs in a fresh process (peak RSS is the process's high-water mark, its
//! libraries and weights included, as `ru_maxrss` is for PyTorch); seconds are the restore
//! alone (padding, network, crop, blending), best of 2, no file decoding or encoding on either
//! side. Threads: rayon's default here, `torch.set_num_threads` the same count. Without
//! PyTorch, ours alone. Prints numbers; asserts nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use burn::tensor::Device;
use run_pipeline::image::Image;
use run_pipeline::networks::archs::parse_arch;
use run_pipeline::networks::interop::Naming;
use run_pipeline::pipeline::restore::{Apply, Range, WeightsSource, export, load, restore};

const ARCH: &str = "unet-s";
const WIDTHS: &str = "64,128,256,512";
const TILE: (usize, usize) = (512, 64);

mod common;

/// A photo-like test image: smooth gradients, edges and texture, in [0, 1], HWC.
fn photo(w: usize, h: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
            let edge = if (x / 97 + y / 61) % 2 == 0 { 0.15 } else { 0.0 };
            let tex = ((x * 7919 + y * 104_729) % 97) as f32 / 97.0 * 0.1;
            for c in 0..3 {
                v.push((0.2 + 0.5 * fx * (c as f32 + 1.0) / 3.0 + 0.2 * fy + edge + tex).min(1.0));
            }
        }
    }
    v
}

fn write_f32(path: &Path, v: &[f32]) {
    std::fs::write(path, v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).expect("write");
}

fn read_f32(path: &Path) -> Option<Vec<f32>> {
    let b = std::fs::read(path).ok()?;
    Some(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// One measurement in this process: restore `image` (w × h) with the weights, write the output.
fn one(weights: &Path, image: &Path, w: usize, h: usize, tile: usize, out: &Path) {
    let device = Device::flex();
    let cfg = parse_arch(ARCH).expect("preset");
    let (g, cfg) = load(&WeightsSource::File(weights.to_path_buf()), Some(&cfg), &device).expect("weights");
    let img = Image::from_vec(w, h, read_f32(image).expect("image"));
    let how =
        Apply { range: Range::Unit, tile: (tile > 0).then_some(tile), overlap: if tile > 0 { TILE.1 } else { 0 } };
    let mut best = f64::INFINITY;
    let mut restored = None;
    for _ in 0..2 {
        let t = Instant::now();
        let y = restore(&g, &cfg, &img, how, &device);
        best = best.min(t.elapsed().as_secs_f64());
        restored = Some(y);
    }
    write_f32(out, &restored.expect("ran").data);
    let peak = common::status_kib("VmHWM:").unwrap_or(0) as f64 / 1024.0;
    println!("{{\"seconds\": {best}, \"peak_rss_mib\": {peak}}}");
}

fn parse_json(out: &[u8]) -> Option<(f64, f64)> {
    let text = String::from_utf8_lossy(out);
    let v: serde_json::Value = serde_json::from_str(text.lines().last()?).ok()?;
    Some((v["seconds"].as_f64()?, v["peak_rss_mib"].as_f64()?))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    if args.first().map(String::as_str) == Some("one") {
        let n = |i: usize| args[i].parse::<usize>().expect("number");
        one(Path::new(&args[1]), Path::new(&args[2]), n(3), n(4), n(5), Path::new(&args[6]));
        return;
    }
    let sizes: Vec<(usize, usize)> = {
        let s: Vec<(usize, usize)> = args
            .iter()
            .filter_map(|a| a.split_once('x'))
            .filter_map(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
            .collect();
        if s.is_empty() { vec![(669, 761), (2000, 1500)] } else { s }
    };
    let dir = std::env::temp_dir().join(format!("restore-speed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let weights = dir.join("unet_s.safetensors");
    {
        let device = Device::flex();
        device.seed(0);
        let cfg = parse_arch(ARCH).expect("preset");
        let g = cfg.init(&device);
        export(&g, &cfg, &weights, Naming::Release, "RestorationNet.").expect("export");
    }
    let python = std::env::var("TORCH_PYTHON").unwrap_or_else(|_| "/root/.venv-torch/bin/python".into());
    let script: PathBuf = [env!("CARGO_MANIFEST_DIR"), "scripts", "torch_restore.py"].iter().collect();
    let threads = rayon::current_num_threads();
    println!("restore with {ARCH} ({threads} threads; ours: flex; PyTorch: eager, inference mode)");
    println!(
        "{:<10} {:<8} {:>9} {:>9} {:>7} {:>10} {:>10} {:>10}",
        "image", "mode", "ours s", "torch s", "ratio", "ours MiB", "torch MiB", "max |Δ|"
    );
    for (w, h) in sizes {
        let image = dir.join(format!("{w}x{h}.f32"));
        write_f32(&image, &photo(w, h));
        for tile in [0, TILE.0] {
            let (ours_out, torch_out) = (dir.join("ours.f32"), dir.join("torch.f32"));
            let exe = std::env::current_exe().expect("own path");
            let ours = Command::new(&exe)
                .args(["one", weights.to_str().unwrap(), image.to_str().unwrap()])
                .args([w.to_string(), h.to_string(), tile.to_string(), ours_out.to_str().unwrap().to_string()])
                .output()
                .ok()
                .and_then(|o| parse_json(&o.stdout));
            let mut torch_cmd = Command::new(&python);
            torch_cmd
                .arg(&script)
                .args([weights.to_str().unwrap(), WIDTHS, image.to_str().unwrap()])
                .args([w.to_string(), h.to_string(), torch_out.to_str().unwrap().to_string()])
                .args(["--threads", &threads.to_string(), "--repeat", "2"]);
            if tile > 0 {
                torch_cmd.args(["--tile", &TILE.0.to_string(), "--overlap", &TILE.1.to_string()]);
            }
            let torch = torch_cmd.output().ok().and_then(|o| parse_json(&o.stdout));
            let diff = match (read_f32(&ours_out), read_f32(&torch_out)) {
                (Some(a), Some(b)) if a.len() == b.len() && torch.is_some() => {
                    format!("{:.2e}", a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max))
                }
                _ => "-".into(),
            };
            let mode = if tile > 0 { format!("{}/{}", TILE.0, TILE.1) } else { "whole".into() };
            let f = |v: Option<f64>, p: usize| v.map_or("-".into(), |v| format!("{v:.p$}"));
            println!(
                "{:<10} {:<8} {:>9} {:>9} {:>7} {:>10} {:>10} {:>10}",
                format!("{w}x{h}"),
                mode,
                f(ours.map(|o| o.0), 2),
                f(torch.map(|t| t.0), 2),
                match (ours, torch) {
                    (Some(o), Some(t)) => format!("{:.2}×", t.0 / o.0),
                    _ => "-".into(),
                },
                f(ours.map(|o| o.1), 0),
                f(torch.map(|t| t.1), 0),
                diff
            );
            let _ = std::fs::remove_file(&ours_out);
            let _ = std::fs::remove_file(&torch_out);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

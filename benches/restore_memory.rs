//! Peak memory and time of restoring one image whole, per architecture and size: the
//! measurements behind each architecture's inference memory model (`Arch::inference_bytes`),
//! printed beside the model's estimate.
//!
//!   cargo bench --bench restore_memory                          # every preset, 256² and 512²
//!   cargo bench --bench restore_memory -- unet-s 1024 2048      # one architecture, chosen sides
//!
//! Peak resident memory is the process's high-water mark (`VmHWM`), reset before each
//! measurement (`/proc/self/clear_refs`), minus the resident size before it; Linux only.
//! Prints numbers; asserts nothing.

use burn::tensor::Device;
use run_pipeline::image::Image;
use run_pipeline::networks::archs::parse_arch;
use run_pipeline::pipeline::restore::{Apply, Range, restore};

mod common;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let (archs, sides): (Vec<String>, Vec<usize>) = match args.split_first() {
        Some((a, rest)) => (vec![a.clone()], rest.iter().filter_map(|s| s.parse().ok()).collect()),
        None => (
            ["unet-s", "dncnn-17", "nafnet-sidd-width32", "restormer-real-denoising"].map(String::from).to_vec(),
            vec![256, 512],
        ),
    };
    let sides = if sides.is_empty() { vec![256, 512] } else { sides };
    let device = Device::flex();
    println!("{:<28} {:>6} {:>10} {:>12} {:>12} {:>9}", "arch", "side", "seconds", "peak MiB", "model MiB", "B/pixel");
    for arch in &archs {
        let cfg = match parse_arch(arch) {
            Ok(c) => c,
            Err(e) => {
                println!("{arch}: {e}");
                continue;
            }
        };
        let g = cfg.init(&device);
        for &side in &sides {
            let img =
                Image::from_vec(side, side, (0..side * side * 3).map(|i| ((i * 37) % 101) as f32 / 101.0).collect());
            let (secs, peak) = common::measure(|| {
                restore(&g, &cfg, &img, Apply { range: Range::Unit, tile: None, overlap: 0 }, &device);
            });
            let model = cfg.inference_bytes(side, side);
            println!(
                "{:<28} {:>6} {:>10.2} {:>12.0} {:>12.0} {:>9.0}",
                arch,
                side,
                secs,
                peak as f64 / 1048576.0,
                model as f64 / 1048576.0,
                peak as f64 / (side * side) as f64
            );
        }
    }
}

//! Peak memory of one training forward + backward, per network and shape: the measurements
//! behind the activation model the memory check uses (`RestorerConfig::training_bytes`,
//! `DiffusionConfig::training_bytes`), printed beside the model's estimate.
//!
//!   cargo bench --bench train_memory                            # restorers and D presets
//!   cargo bench --bench train_memory -- g unet:8,16 4 128 256   # G, batch 4, sides 128 and 256
//!   cargo bench --bench train_memory -- d demo 8 64 128         # D (smoke|demo|paper), 8 images
//!
//! G: an L1 loss on x + G(x); D: a mean of its ε prediction (9 channels in: the two-condition
//! method's input), each backward through every parameter. Peak resident memory is the
//! process's high-water mark (`VmHWM`), reset before each measurement, minus the resident size
//! before it (the weights are already resident); Linux only. Prints numbers; asserts nothing.

use burn::tensor::{Device, Distribution, Tensor};
use run_pipeline::networks::DiffusionConfig;
use run_pipeline::networks::archs::parse_arch;

mod common;

fn diffusion(name: &str) -> Option<DiffusionConfig> {
    let (base, mults, res_blocks, attn_heads) = match name {
        "smoke" => (8, vec![1, 2], 1, 2),
        "demo" => (16, vec![1, 2, 4], 1, 4),
        "paper" => (64, vec![1, 2, 4, 8], 2, 16),
        _ => return None,
    };
    Some(DiffusionConfig { base, mults, res_blocks, attn_heads, dropout: 0.0 })
}

/// One measurement in this process: `kind` (g or d) `name`, `n` images of `side`²; prints its row.
fn one(kind: &str, name: &str, n: usize, side: usize) {
    let device = Device::flex().autodiff();
    let (what, (secs, peak), model) = match kind {
        "g" => {
            let cfg = match parse_arch(name) {
                Ok(c) => c,
                Err(e) => return println!("{name}: {e}"),
            };
            let g = cfg.init(&device);
            let measured = common::measure(|| {
                let x = Tensor::<4>::random([n, 3, side, side], Distribution::Uniform(0.0, 1.0), &device);
                let y = Tensor::<4>::random([n, 3, side, side], Distribution::Uniform(0.0, 1.0), &device);
                let _grads = (g.restore(x) - y).abs().mean().backward();
            });
            (format!("G {name}"), measured, cfg.training_bytes(n, side, side))
        }
        "d" => {
            let Some(cfg) = diffusion(name) else { return println!("{name}: D is smoke, demo or paper") };
            let d = cfg.init(&device);
            let measured = common::measure(|| {
                let x = Tensor::<4>::random([n, 9, side, side], Distribution::Normal(0.0, 1.0), &device);
                let _grads = d.forward(x, &vec![0.5f32; n]).powi_scalar(2).mean().backward();
            });
            (format!("D {name}"), measured, cfg.training_bytes(n, side, side))
        }
        other => return println!("{other}: measure g (a restorer) or d (the diffusion network)"),
    };
    let mib = |b: u64| b as f64 / 1048576.0;
    println!(
        "{what:<34} {n:>5} {side:>6} {secs:>8.2} {:>11.0} {:>11.0} {:>6.2}",
        mib(peak),
        mib(model),
        model as f64 / peak.max(1) as f64
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let number = |s: Option<&String>| s.and_then(|s| s.parse::<usize>().ok());
    if let [first, kind, name, n, side] = &args[..]
        && first == "one"
    {
        match (number(Some(n)), number(Some(side))) {
            (Some(n), Some(side)) => one(kind, name, n, side),
            _ => println!("one {kind} {name} {n} {side}: batch and side are numbers"),
        }
        return;
    }
    let jobs: Vec<(String, String, usize, Vec<usize>)> = match &args[..] {
        [kind, name, rest @ ..] => {
            let nums: Vec<usize> = rest.iter().filter_map(|s| s.parse().ok()).collect();
            let sides = if nums.len() > 1 { nums[1..].to_vec() } else { vec![64, 128] };
            vec![(kind.clone(), name.clone(), nums.first().copied().unwrap_or(2), sides)]
        }
        _ => vec![
            ("g".into(), "unet:8,16".into(), 8, vec![64, 128]),
            ("g".into(), "unet:32,64,128".into(), 8, vec![64, 128]),
            ("g".into(), "unet-s".into(), 2, vec![128, 256]),
            ("g".into(), "dncnn-17".into(), 2, vec![128, 256]),
            ("g".into(), "nafnet:16".into(), 2, vec![64, 128]),
            ("g".into(), "restormer:8".into(), 2, vec![64, 128]),
            ("d".into(), "smoke".into(), 8, vec![32, 64, 128]),
            ("d".into(), "demo".into(), 8, vec![32, 64, 128]),
            ("d".into(), "paper".into(), 2, vec![64, 128]),
        ],
    };
    println!(
        "{:<34} {:>5} {:>6} {:>8} {:>11} {:>11} {:>6}",
        "network", "batch", "side", "seconds", "peak MiB", "model MiB", "ratio"
    );
    // Each measurement in a fresh process: memory freed by an earlier one stays resident in the
    // allocator's arenas and would hide the next one's peak.
    let exe = std::env::current_exe().expect("own path");
    for (kind, name, n, sides) in jobs {
        for side in sides {
            let out = std::process::Command::new(&exe)
                .args(["one", &kind, &name, &n.to_string(), &side.to_string()])
                .output()
                .expect("run a measurement");
            print!("{}", String::from_utf8_lossy(&out.stdout));
        }
    }
}

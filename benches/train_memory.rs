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

use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use run_pipeline::networks::DiffusionConfig;
use run_pipeline::networks::archs::parse_arch;

fn status_kib(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Run `f`, return (seconds, peak resident growth in bytes).
fn measure(f: impl FnOnce()) -> (f64, u64) {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = status_kib("VmRSS:").unwrap_or(0);
    let t = Instant::now();
    f();
    (t.elapsed().as_secs_f64(), status_kib("VmHWM:").unwrap_or(0).saturating_sub(before) * 1024)
}

fn diffusion(name: &str) -> Option<DiffusionConfig> {
    let (base, mults, res_blocks, attn_heads) = match name {
        "smoke" => (8, vec![1, 2], 1, 2),
        "demo" => (16, vec![1, 2, 4], 1, 4),
        "paper" => (64, vec![1, 2, 4, 8], 2, 16),
        _ => return None,
    };
    Some(DiffusionConfig { base, mults, res_blocks, attn_heads, dropout: 0.0 })
}

fn row(what: &str, n: usize, side: usize, secs: f64, peak: u64, model: u64) {
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
    let device = Device::flex().autodiff();
    println!(
        "{:<34} {:>5} {:>6} {:>8} {:>11} {:>11} {:>6}",
        "network", "batch", "side", "seconds", "peak MiB", "model MiB", "ratio"
    );
    let nums = |rest: &[String]| -> Vec<usize> { rest.iter().filter_map(|s| s.parse().ok()).collect() };
    let jobs: Vec<(String, String, usize, Vec<usize>)> = match args.split_first() {
        Some((kind, rest)) if rest.len() >= 2 => {
            let n = nums(&rest[1..]);
            vec![(kind.clone(), rest[0].clone(), n.first().copied().unwrap_or(2), n[1.min(n.len())..].to_vec())]
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
    // Each measurement in a fresh process: memory freed by an earlier one stays resident in the
    // allocator's arenas and would hide the next one's peak.
    if args.first().map(String::as_str) != Some("one") {
        let exe = std::env::current_exe().expect("own path");
        for (kind, name, n, sides) in jobs {
            for side in if sides.is_empty() { vec![64, 128] } else { sides } {
                let out = std::process::Command::new(&exe)
                    .args(["one", &kind, &name, &n.to_string(), &side.to_string()])
                    .output()
                    .expect("run a measurement");
                print!(
                    "{}",
                    String::from_utf8_lossy(&out.stdout).lines().skip(1).collect::<Vec<_>>().join("\n") + "\n"
                );
            }
        }
        return;
    }
    let jobs = {
        let rest = &args[1..];
        let n = nums(&rest[2..]);
        vec![(rest[0].clone(), rest[1].clone(), n[0], n[1..].to_vec())]
    };
    for (kind, name, n, sides) in jobs {
        match kind.as_str() {
            "g" => {
                let cfg = match parse_arch(&name) {
                    Ok(c) => c,
                    Err(e) => {
                        println!("{name}: {e}");
                        continue;
                    }
                };
                let g = cfg.init(&device);
                for &side in &sides {
                    let (secs, peak) = measure(|| {
                        let x = Tensor::<4>::random([n, 3, side, side], Distribution::Uniform(0.0, 1.0), &device);
                        let y = Tensor::<4>::random([n, 3, side, side], Distribution::Uniform(0.0, 1.0), &device);
                        let loss = (g.restore(x) - y).abs().mean();
                        let _grads = loss.backward();
                    });
                    row(&format!("G {name}"), n, side, secs, peak, cfg.training_bytes(n, side, side));
                }
            }
            "d" => {
                let Some(cfg) = diffusion(&name) else {
                    println!("{name}: D is smoke, demo or paper");
                    continue;
                };
                let d = cfg.init(&device);
                for &side in &sides {
                    let (secs, peak) = measure(|| {
                        let x = Tensor::<4>::random([n, 9, side, side], Distribution::Normal(0.0, 1.0), &device);
                        let gamma = vec![0.5f32; n];
                        let loss = d.forward(x, &gamma).powi_scalar(2).mean();
                        let _grads = loss.backward();
                    });
                    row(&format!("D {name}"), n, side, secs, peak, cfg.training_bytes(n, side, side));
                }
            }
            other => println!("{other}: measure g (a restorer) or d (the diffusion network)"),
        }
    }
}

//! The project's speed report: training-step throughput per method on our back-ends, early and
//! late in a run, side by side with PyTorch eager on the same networks and shapes.
//!
//!   cargo bench --bench train_step                       # demo shape, 120 steps per method
//!   cargo bench --bench train_step -- demo 600           # a long run: are steps 500–600 as fast as 50–100?
//!   cargo bench --bench train_step -- paper128 30        # paper-size networks, 128² crops, batch 2
//!   cargo bench --bench train_step -- nafnet 12          # NAFNet-SIDD-width32 (29.2 M) as G, 64² crops, batch 2
//!   cargo bench --bench train_step -- restormer 12       # Restormer as published (26.1 M), same
//!   cargo bench --bench train_step -- smoke 50           # any profile of pipelines/denoise.yaml
//!   BENCH_BACKENDS=flex,wgpu cargo bench --features wgpu --bench train_step   # back-ends to compare
//!   BENCH_SHARDS=1,2                                     # train.shards values to compare (default: auto)
//!   BENCH_METHODS=noise_da                               # methods to time (default: source_only,noise_da)
//!   BENCH_PYTHON=/path/to/venv/bin/python3               # interpreter with torch (default python3)
//!   BENCH_TORCH=0                                        # skip the PyTorch column
//!   BENCH_EXTRAS=0                                       # only the steps (no D-alone or restore timing; for profiling)
//!
//! Each method trains `steps` steps exactly as a run does (fresh noise, EMA, loss read-back) and
//! is timed over its whole run and over two windows: early (steps N/12..N/6, i.e. 50–100 of
//! 600) and late (the last sixth, 500–600 of 600), with the cores the process used (CPU time ÷
//! wall). When PyTorch is importable, `scripts/torch_step.py` times the same shapes in the same
//! invocation (threads = ours) and each row prints its ratio to it.
//!
//! Prints numbers; asserts nothing (speed targets live here, not in tests).

use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use burn::module::Module;
use burn::tensor::Device;
use run_pipeline::datasets::{Loader, Registry, Take};
use run_pipeline::pipeline::{self, spec::Method};
use run_pipeline::training::{self, TrainInputs};

/// CPU seconds (user + system) this process has used so far, from /proc (Linux); `None`
/// elsewhere.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on every Linux we run on
}

/// Wall and CPU time stamped after every step.
#[derive(Default)]
struct Stamps {
    wall: Vec<f64>,
    cpu: Vec<Option<f64>>,
}

impl Stamps {
    /// Steps/s and cores used between step indices `a` and `b` (stamps after those steps).
    fn window(&self, a: usize, b: usize) -> Option<(f64, Option<f64>)> {
        if b <= a || b >= self.wall.len() {
            return None;
        }
        let dt = self.wall[b] - self.wall[a];
        let cores = match (self.cpu[a], self.cpu[b]) {
            (Some(x), Some(y)) => Some((y - x) / dt.max(1e-9)),
            _ => None,
        };
        Some(((b - a) as f64 / dt.max(1e-9), cores))
    }
}

/// PyTorch eager steps/s for each method on the same shapes, from `scripts/torch_step.py`;
/// `None` (with the reason printed) when it cannot run here.
fn torch_reference(spec: &run_pipeline::pipeline::spec::PipelineSpec, steps: usize) -> Option<serde_json::Value> {
    if std::env::var("BENCH_TORCH").is_ok_and(|v| v == "0") {
        println!("pytorch: skipped (BENCH_TORCH=0)");
        return None;
    }
    let python = std::env::var("BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let join = |v: &[usize]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",");
    let d = &spec.networks.diffusion;
    let mut cmd = Command::new(&python);
    cmd.arg(repo_root().join("scripts/torch_step.py"))
        .args(["--device", "cpu", "--json", "--threads"])
        .arg(rayon::current_num_threads().to_string())
        .args(restorer_args(&spec.networks.restorer))
        .args(["--base", &d.base.to_string(), "--mults", &join(&d.mults)])
        .args(["--res-blocks", &d.res_blocks.to_string(), "--attn-heads", &d.attn_heads.to_string()])
        .args(["--dropout", &d.dropout.to_string()])
        .args(["--batch", &spec.train.batch.to_string(), "--patch", &spec.train.patch.to_string()])
        .args(["--steps", &steps.to_string()]);
    if spec.task.diffusion_signed() {
        cmd.arg("--signed");
    }
    match cmd.output() {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            match serde_json::from_str::<serde_json::Value>(text.trim()) {
                Ok(v) => Some(v),
                Err(e) => {
                    println!("pytorch: unreadable output ({e}): {text}");
                    None
                }
            }
        }
        Ok(out) => {
            let err = String::from_utf8_lossy(&out.stderr);
            let last = err.lines().last().unwrap_or("").to_string();
            println!("pytorch: not measured ({python}: {last}); set BENCH_PYTHON to an interpreter with torch");
            None
        }
        Err(e) => {
            println!("pytorch: not measured ({python}: {e})");
            None
        }
    }
}

/// The restorer for `scripts/torch_step.py`: the UNet's widths, or a published architecture as
/// our configuration's JSON (its PyTorch implementation is `scripts/archs_parity.py`'s).
fn restorer_args(cfg: &run_pipeline::networks::RestorerConfig) -> Vec<String> {
    match cfg {
        run_pipeline::networks::RestorerConfig::Unet(u) => {
            vec!["--widths".into(), u.widths.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",")]
        }
        other => vec!["--arch".into(), serde_json::to_string(other).expect("a restorer serialises")],
    }
}

/// The repository (read at run time: a bench binary reused from a shared target dir).
/// A shape of large networks at a CPU-sized batch: 2 crops of `side`², from 16 images of that
/// side per domain.
fn batch_of_two(mut res: pipeline::Resolved, side: usize) -> pipeline::Resolved {
    res.spec.train.batch = 2;
    res.spec.train.patch = side;
    res.spec.source.size = side;
    res.spec.target.size = side;
    res.spec.source.count = Some(16);
    res.spec.target.count = Some(16);
    res
}

fn repo_root() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let shape = args.first().cloned().unwrap_or_else(|| "demo".into());
    let steps: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(120).max(12);
    let root = repo_root();
    let pipeline_file = root.join("pipelines/denoise.yaml");
    let mut res = if shape == "paper128" {
        // The paper's networks (UNet-S, D base 64 mults 1/2/4/8) at 128² with a CPU-sized batch,
        // on the demo's embedded data.
        let paper = pipeline::load(&pipeline_file, Some("paper"), &[]).expect("pipeline");
        let mut res = pipeline::load(&pipeline_file, Some("demo"), &[]).expect("pipeline");
        res.spec.networks = paper.spec.networks.clone();
        batch_of_two(res, 128)
    } else if shape == "nafnet" || shape == "restormer" {
        // A published restorer as G (its paper's configuration: NAFNet-SIDD-width32, Restormer's
        // real-denoising one) with the demo's D, data and methods, at 64² with batch 2.
        let arch = format!("networks.restorer={{arch: {shape}}}");
        let res = pipeline::load(&pipeline_file, Some("demo"), &[arch]).expect("pipeline");
        batch_of_two(res, 64)
    } else {
        pipeline::load(&pipeline_file, Some(&shape), &[]).expect("pipeline")
    };
    res.spec.train.steps = steps;
    let spec = &res.spec;
    let registry = Registry::load(&root.join("datasets.toml")).expect("registry");
    let cache = std::env::temp_dir().join("run-pipeline-bench-cache");
    let loader = Loader { registry: &registry, cache_dir: &cache, seed: spec.seeds.data, plan_only: false, stop: None };
    let source = loader
        .source_pairs(
            &spec.source.dataset,
            Take { count: spec.source.count.unwrap_or(Take::ALL), size: spec.source.size },
            spec.source.degradation.as_ref(),
            spec.source.on_problem,
        )
        .expect("source");
    // As a run trains: the degradation redrawn per crop and step where the pipeline says so.
    let source = match spec.source.redraw() {
        Some(d) if source.redraw.is_none() => source.redrawn(d.clone()),
        _ => source,
    };
    let target = loader
        .target_train(
            &spec.target.dataset,
            Take { count: spec.target.count.unwrap_or(Take::ALL), size: spec.target.size },
            spec.target.on_problem,
        )
        .expect("target");
    let stop = AtomicBool::new(false);
    println!(
        "shape {shape}: batch {} (+{} target for noise_da), {}² crops, restorer {}, diffusion base {} mults {:?}, {} res blocks; {} steps per method; {} rayon threads",
        spec.train.batch,
        spec.train.batch,
        spec.train.patch,
        spec.networks.restorer.describe(),
        spec.networks.diffusion.base,
        spec.networks.diffusion.mults,
        spec.networks.diffusion.res_blocks,
        steps,
        rayon::current_num_threads()
    );
    // PyTorch first, so its process is gone before ours trains.
    let torch = torch_reference(spec, steps.min(60));
    if let Some(t) = &torch {
        println!(
            "pytorch {} eager, {} threads: source_only {:.2} steps/s, noise_da {:.2} steps/s ({} timed steps after {} warm-up)",
            t["torch"].as_str().unwrap_or("?"),
            t["cpu_threads"],
            t["methods"]["source_only"]["steps_per_s"].as_f64().unwrap_or(f64::NAN),
            t["methods"]["noise_da"]["steps_per_s"].as_f64().unwrap_or(f64::NAN),
            t["steps"],
            t["warmup"],
        );
    }
    // Back-ends to compare: BENCH_BACKENDS=flex,wgpu,cuda,tch (those this build has), plus
    // ndarray with `--features ndarray`.
    let wanted = std::env::var("BENCH_BACKENDS").unwrap_or_else(|_| "flex".into());
    let mut backends: Vec<(String, Device)> = Vec::new();
    for name in wanted.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let b: run_pipeline::backend::Backend = match serde_json::from_value(serde_json::json!(name)) {
            Ok(b) => b,
            Err(_) => {
                println!("{name}: unknown back-end, skipped");
                continue;
            }
        };
        match run_pipeline::backend::device(b) {
            Ok((d, desc)) => backends.push((desc, d)),
            Err(e) => println!("{name}: skipped: {e}"),
        }
    }
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)]
    backends.push(("ndarray".into(), Device::ndarray()));
    let (e0, e1) = (steps / 12, steps / 6);
    let (l0, l1) = (steps - steps / 6, steps - 1);
    println!(
        "{:<24} {:<12} {:>6} {:>9} {:>9} {:>9} {:>10} {:>6} {:>9}",
        "back-end",
        "method",
        "shards",
        "steps/s",
        format!("{e0}–{e1}"),
        format!("{l0}–{}", l1 + 1),
        "late/early",
        "cores",
        "×pytorch"
    );
    let shard_settings: Vec<run_pipeline::pipeline::spec::Shards> = match std::env::var("BENCH_SHARDS") {
        Ok(v) => v
            .split(',')
            .filter_map(|s| serde_json::from_value(serde_json::json!(s.trim().parse::<usize>().ok()?)).ok())
            .collect(),
        Err(_) => vec![spec.train.shards],
    };
    let methods: Vec<Method> = std::env::var("BENCH_METHODS")
        .unwrap_or_else(|_| "source_only,noise_da".into())
        .split(',')
        .filter_map(|m| serde_json::from_value(serde_json::json!(m.trim())).ok())
        .collect();
    let mut restorer = None;
    for (backend, device) in &backends {
        for method in &methods {
            let method = *method;
            for &shards in &shard_settings {
                let mut train = spec.train.clone();
                train.shards = shards;
                let inputs = TrainInputs {
                    task: spec.task,
                    spec: &train,
                    nets: &spec.networks,
                    init_restorer: None,
                    source: &source,
                    target: Some(&target),
                    seed: 0,
                    device: device.clone(),
                    stop: &stop,
                    checkpoints: None,
                    fingerprint: String::new(),
                    validation: &[],
                    validate_every: 0,
                    data_parallel: vec![],
                };
                let mut stamps = Stamps::default();
                // ndarray panics on operations it lacks (e.g. bilinear-interpolation backward).
                let t = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let t0 = Instant::now();
                    training::train(method, &inputs, &mut |_| {
                        stamps.wall.push(t0.elapsed().as_secs_f64());
                        stamps.cpu.push(cpu_seconds());
                    })
                })) {
                    Ok(t) => t.expect("training"),
                    Err(e) => {
                        let msg = e
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
                        println!("{backend:<24} {:<12} unsupported: {}", method.name(), msg.unwrap_or_default());
                        continue;
                    }
                };
                let early = stamps.window(e0, e1);
                let late = stamps.window(l0, l1);
                let whole = stamps.window(0, l1);
                let fmt = |w: Option<(f64, Option<f64>)>| w.map_or("-".to_string(), |(s, _)| format!("{s:.2}"));
                let ratio = match (early, late) {
                    (Some((e, _)), Some((l, _))) => format!("{:.2}", l / e),
                    _ => "-".into(),
                };
                let cores = whole.and_then(|(_, c)| c).map_or("-".to_string(), |c| format!("{c:.2}"));
                let vs_torch = torch
                    .as_ref()
                    .and_then(|v| v["methods"][method.name()]["steps_per_s"].as_f64())
                    .map_or("-".to_string(), |p| format!("{:.2}", t.steps_per_s / p));
                println!(
                    "{backend:<24} {:<12} {:>6} {:>9.2} {:>9} {:>9} {:>10} {:>6} {:>9}   (params G {} D {})",
                    method.name(),
                    t.shards,
                    t.steps_per_s,
                    fmt(early),
                    fmt(late),
                    ratio,
                    cores,
                    vs_torch,
                    t.params_g,
                    t.params_d.unwrap_or(0)
                );
                if restorer.is_none() {
                    restorer = Some((t.restorer, backend.clone(), device.clone()));
                }
            }
        }
    }
    if std::env::var("BENCH_EXTRAS").is_ok_and(|v| v == "0") {
        return;
    }
    // D alone (no bilinear up-sampling), forward + backward on a Noise-DA-sized batch: the
    // one comparison every back-end can run.
    for (backend, device) in &backends {
        let ad = device.clone().autodiff();
        let d = spec.networks.diffusion.init(&ad);
        let n = 4 * spec.train.batch;
        let p = spec.train.patch;
        let x = burn::tensor::Tensor::<4>::random([n, 9, p, p], burn::tensor::Distribution::Default, &ad);
        let gam = vec![0.5f32; n];
        let _ = d.forward(x.clone(), &gam).mean().backward();
        let t0 = Instant::now();
        let reps = 3;
        for _ in 0..reps {
            let _ = d.forward(x.clone(), &gam).mean().backward();
        }
        println!(
            "{backend:<24} diffusion fwd+bwd {n}×9×{p}²  {:>8.1} ms",
            t0.elapsed().as_secs_f64() * 1000.0 / reps as f64
        );
        // The same work as two half-batch shards at once on rayon's threads, each with its own
        // graph (fork: the same parameters, new autodiff nodes): what concurrency buys on a
        // CPU whose single-threaded element-wise kernels leave cores idle.
        let d2 = d.clone().fork(&ad);
        let half = x.clone().chunk(2, 0);
        let (xa, xb) = (half[0].clone().detach(), half[1].clone().detach());
        let g2 = vec![0.5f32; n / 2];
        let t0 = Instant::now();
        for _ in 0..reps {
            rayon::join(
                || {
                    let _ = d.forward(xa.clone(), &g2).mean().backward();
                },
                || {
                    let _ = d2.forward(xb.clone(), &g2).mean().backward();
                },
            );
        }
        println!(
            "{backend:<24} diffusion fwd+bwd 2 shards × {}×9×{p}²  {:>8.1} ms",
            n / 2,
            t0.elapsed().as_secs_f64() * 1000.0 / reps as f64
        );
    }
    let Some((g, backend, device)) = restorer else {
        println!("no back-end trained; nothing more to time");
        return;
    };
    let test =
        loader.test_pairs("camera-sim-sidd", Take { count: 4, size: 128 }, Default::default()).expect("test set");
    let t0 = Instant::now();
    for item in &test.items {
        training::restore_image(&g, &item.degraded, spec.networks.restorer.stride(), &device);
    }
    println!(
        "{backend:<24} restore 128² image {:>8.1} ms/image",
        t0.elapsed().as_secs_f64() * 1000.0 / test.items.len() as f64
    );
}

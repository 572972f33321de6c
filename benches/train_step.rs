//! Throughput of one training step per method, and of restoring one test image, on the
//! resolved pipeline (CPU `flex` back-end).
//!
//!   cargo bench --bench train_step                       # demo profile, 20 steps each
//!   cargo bench --bench train_step -- smoke 50           # profile, steps
//!   BENCH_BACKENDS=flex,tch cargo bench --features tch --bench train_step   # back-ends to compare
//!
//! Prints numbers; asserts nothing (speed targets live here, not in tests).

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use burn::tensor::Device;
use run_pipeline::datasets::{Loader, Registry, Take};
use run_pipeline::pipeline::{self, spec::Method};
use run_pipeline::training::{self, TrainInputs};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let profile = args.first().cloned().unwrap_or_else(|| "demo".into());
    let steps: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20);
    let root = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    let mut res = pipeline::load(&root.join("pipelines/denoise.yaml"), Some(&profile), &[]).expect("pipeline");
    res.spec.train.steps = steps;
    let spec = &res.spec;
    let registry = Registry::load(&root.join("datasets.toml")).expect("registry");
    let cache = std::env::temp_dir().join("run-pipeline-bench-cache");
    let loader = Loader { registry: &registry, cache_dir: &cache, seed: spec.seeds.data };
    let source = loader
        .source_pairs(
            &spec.source.dataset,
            Take { count: spec.source.count, size: spec.source.size },
            spec.source.degradation.as_ref(),
            spec.source.on_problem,
        )
        .expect("source");
    // As a run trains: the degradation redrawn per crop and step where the pipeline says so.
    let source = match spec.source.redraw() {
        Some(d) => source.redrawn(d.clone()),
        None => source,
    };
    let target = loader
        .target_train(
            &spec.target.dataset,
            Take { count: spec.target.count, size: spec.target.size },
            spec.target.on_problem,
        )
        .expect("target");
    let stop = AtomicBool::new(false);
    println!(
        "profile {profile}: batch {} (+{} target for noise_da), {}² crops, restorer {}, diffusion base {} mults {:?}; {} rayon threads",
        spec.train.batch,
        spec.train.batch,
        spec.train.patch,
        spec.networks.restorer.describe(),
        spec.networks.diffusion.base,
        spec.networks.diffusion.mults,
        rayon::current_num_threads()
    );
    // Back-ends to compare: BENCH_BACKENDS=flex,wgpu,cuda,tch (those this build has), plus
    // ndarray with `--features ndarray`.
    let wanted = std::env::var("BENCH_BACKENDS").unwrap_or_else(|_| "flex".into());
    let mut backends: Vec<(String, Device)> = Vec::new();
    for name in wanted.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let b: run_pipeline::backend::Backend =
            serde_json::from_value(serde_json::json!(name)).unwrap_or_else(|_| panic!("unknown back-end {name}"));
        match run_pipeline::backend::device(b) {
            Ok((d, desc)) => backends.push((desc, d)),
            Err(e) => println!("{name}: skipped: {e}"),
        }
    }
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)]
    backends.push(("ndarray".into(), Device::ndarray()));
    let mut restorer = None;
    for (backend, device) in &backends {
        for method in [Method::SourceOnly, Method::NoiseDa] {
            let inputs = TrainInputs {
                task: spec.task,
                spec: &spec.train,
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
            // ndarray panics on operations it lacks (e.g. bilinear-interpolation backward).
            let t = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                training::train(method, &inputs, &mut |_| {})
            })) {
                Ok(t) => t.expect("training"),
                Err(e) => {
                    let msg =
                        e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
                    println!("{backend:<24} {:<12} unsupported: {}", method.name(), msg.unwrap_or_default());
                    continue;
                }
            };
            println!(
                "{backend:<24} {:<12} {:>7.2} steps/s  {:>8.1} ms/step  (params G {} D {})",
                method.name(),
                t.steps_per_s,
                1000.0 / t.steps_per_s,
                t.params_g,
                t.params_d.unwrap_or(0)
            );
            if restorer.is_none() {
                restorer = Some((t.restorer, backend.clone(), device.clone()));
            }
        }
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
    }
    let (g, backend, device) = restorer.expect("trained");
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

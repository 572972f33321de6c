//! The data path at the paper's scale: preparing the patch store, and how many training crops
//! a second the streaming loader sustains, alone and beside a training.
//!
//!   python3 scripts/make_trees.py sidd  --out /data/sidd-like            # 60 pairs of 4000×3000
//!   python3 scripts/make_trees.py clean --out /data/dfwb-like            # 2,000 photos ≥ 1500 px
//!   BENCH_SIDD=/data/sidd-like BENCH_CLEAN=/data/dfwb-like cargo bench --bench data_stream
//!
//!   BENCH_CACHE=dir          where the stores go (default: a folder under the system temp dir)
//!   BENCH_STEPS=300          steps of batch 24 synthetic + 24 target 128² crops to time
//!   BENCH_WORKERS=1,2,4      train.loader.workers to compare (prefetch 4)
//!   BENCH_FRESH=1            remove the stores first (time a cold preparation)
//!
//! For each tree: prepare (images, patches, store size, seconds, MB/s of image files read),
//! prepare again (found done: the verification's cost), then the loader: crops/s over
//! BENCH_STEPS steps, the paper's batch (24 clean-folder crops with fresh AWGN + 24 SIDD
//! crops), alone and with a source-only training of the demo running on the same cores.
//! Peak memory of whole runs is measured by `scripts/bench_memory.py`.
//!
//! Prints numbers; asserts nothing.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use run_pipeline::datasets::{CropPool, Loader, OnProblem, Registry, Split, Take, disk, patches};
use run_pipeline::degradations::DegradationSpec;
use run_pipeline::pipeline;
use run_pipeline::training::{self, TrainInputs, TrainSpec};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.into())
}

fn repo_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from).unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}

/// Prepare the store of `name`'s training split twice (fresh or continued, then found done).
fn prepare_twice(reg: &Registry, cache: &std::path::Path, name: &str, planes: patches::Planes) {
    let scan = disk::scan(reg, name, Split::Train).expect("scan");
    let tiling = patches::Tiling::release(512);
    let key = patches::store_key(&disk::fingerprint(&scan), tiling, planes);
    let dir = patches::store_dir(cache, &key);
    if env_or("BENCH_FRESH", "0") == "1" {
        let _ = std::fs::remove_dir_all(&dir);
    }
    for pass in ["prepare", "again"] {
        let (store, rep) =
            patches::prepare(&dir, &key, serde_json::json!({"dataset": name}), &scan.items, tiling, planes, &|| false)
                .expect("prepare");
        println!(
            "{name} {pass:<8} {:>5} images  {:>7} patches  store {:>8.1} MB  {:>7.1} s  built {} resumed {} rebuilt {}  \
             read {:.0} MB at {:.1} MB/s",
            rep.images,
            rep.patches,
            store.bytes() as f64 / 1e6,
            rep.seconds,
            rep.built,
            rep.reused,
            rep.rebuilt,
            rep.read_bytes as f64 / 1e6,
            rep.read_bytes as f64 / 1e6 / rep.seconds.max(1e-9)
        );
    }
    let t0 = Instant::now();
    let ok = patches::open_verified(&dir, &key).is_some();
    println!(
        "{name} verify   {:.1} s (every chunk hashed before use): {}",
        t0.elapsed().as_secs_f64(),
        if ok { "ok" } else { "FAILED" }
    );
}

fn main() {
    let (Ok(sidd), Ok(clean)) = (std::env::var("BENCH_SIDD"), std::env::var("BENCH_CLEAN")) else {
        println!(
            "data_stream: set BENCH_SIDD and BENCH_CLEAN to trees made by scripts/make_trees.py (see the top of benches/data_stream.rs)"
        );
        return;
    };
    let cache =
        PathBuf::from(env_or("BENCH_CACHE", &std::env::temp_dir().join("rp-bench-stream").display().to_string()));
    let text = format!(
        "[datasets.sidd]\nkind = \"sidd\"\nlayout = \"medium\"\nroot = \"{sidd}\"\n\n\
         [datasets.dfwb]\nkind = \"clean_folder\"\nroot = \"{clean}\"\n"
    );
    let reg = Registry::parse(&text, std::path::Path::new("bench.toml")).expect("registry");
    println!("threads: {}", rayon::current_num_threads());
    prepare_twice(&reg, &cache, "sidd", patches::Planes::Degraded);
    prepare_twice(&reg, &cache, "dfwb", patches::Planes::Degraded);

    let loader = Loader { registry: &reg, cache_dir: &cache, seed: 2025, plan_only: false, stop: None };
    let take = Take { count: Take::ALL, size: 512 };
    let awgn = DegradationSpec::Awgn { sigma: [0.0, 75.0] };
    let source = loader.synthetic_pairs("dfwb", Split::Train, take, &awgn, OnProblem::Fail).expect("source");
    let target = loader.target_train("sidd", take, OnProblem::Fail).expect("target");
    println!("source {} patches, target {} patches", source.count(), target.count());

    let demo = pipeline::load(&repo_root().join("pipelines/denoise.yaml"), Some("demo"), &[]).expect("pipeline");
    let steps: u64 = env_or("BENCH_STEPS", "300").parse().unwrap_or(300);
    let workers: Vec<usize> =
        env_or("BENCH_WORKERS", "1,2,4").split(',').filter_map(|w| w.trim().parse().ok()).collect();
    for &w in &workers {
        let mut spec: TrainSpec = demo.spec.train.clone();
        spec.batch = 24;
        spec.patch = 128;
        spec.loader.workers = w;
        spec.loader.prefetch = 4;
        for beside in [false, true] {
            // A source-only training of the demo on the same cores, while the loader is timed.
            let stop = Arc::new(AtomicBool::new(false));
            let trainer = beside.then(|| {
                let stop = stop.clone();
                let demo = demo.clone();
                std::thread::spawn(move || train_until(&demo, &stop))
            });
            let t0 = Instant::now();
            let mut crops = 0usize;
            let mut bytes = 0usize;
            training::for_each_batch(&source, Some(&target), &spec, 24, 7, 0..steps, |_, d, c, t| {
                crops += d.len() + t.len();
                bytes += (d.len() + c.len() + t.len()) * 128 * 128 * 3 * 4;
                std::hint::black_box((d, c, t));
            })
            .expect("loader");
            let secs = t0.elapsed().as_secs_f64();
            stop.store(true, Ordering::SeqCst);
            let trained = trainer.map(|h| h.join().unwrap_or(0));
            println!(
                "loader workers {w} prefetch 4{}: {:>7.0} crops/s of 128² ({} steps of 24+24 in {:.1} s; {:.0} MB/s of f32 batches){}",
                if beside { " beside training" } else { "                 " },
                crops as f64 / secs,
                steps,
                secs,
                bytes as f64 / 1e6 / secs,
                trained.map(|n| format!("; the training made {n} steps meanwhile")).unwrap_or_default()
            );
        }
    }
}

/// Source-only training of the demo until `stop`; returns the steps made.
fn train_until(demo: &pipeline::Resolved, stop: &AtomicBool) -> usize {
    let spec = &demo.spec;
    let reg = Registry::load(&repo_root().join("datasets.toml")).expect("registry");
    let cache = std::env::temp_dir().join("rp-bench-stream-demo");
    let loader = Loader { registry: &reg, cache_dir: &cache, seed: spec.seeds.data, plan_only: false, stop: None };
    let take = |c: Option<usize>, size| Take { count: c.unwrap_or(Take::ALL), size };
    let source = loader
        .source_pairs(
            &spec.source.dataset,
            take(spec.source.count, spec.source.size),
            spec.source.degradation.as_ref(),
            spec.source.on_problem,
        )
        .expect("demo source");
    let mut train = spec.train.clone();
    train.steps = 1_000_000;
    let mut done = 0;
    let inp = TrainInputs {
        task: spec.task,
        spec: &train,
        nets: &spec.networks,
        init_restorer: None,
        source: &source,
        target: None,
        seed: 0,
        device: burn::tensor::Device::flex(),
        stop,
        checkpoints: None,
        fingerprint: "bench".into(),
        validation: &[],
        validate_every: 0,
        data_parallel: vec![],
    };
    let _ = training::train(training::Method::SourceOnly, &inp, &mut |s| done = s.step);
    done
}

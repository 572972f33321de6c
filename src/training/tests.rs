//! Tests of the training loop and its methods on tiny data (whole trainings on the CPU), and
//! the helpers the methods' own tests share.

use super::config::NoiseDaSpec;
use super::*;
use crate::datasets::PairedItem;
use crate::networks::{DiffusionConfig, RestorerConfig};
use crate::rng::Rng;
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

pub(crate) fn spec(residual_swap: bool) -> TrainSpec {
    TrainSpec {
        steps: 1,
        batch: 2,
        patch: 8,
        lr: 1e-3,
        charbonnier_eps: 1e-3,
        log_every: 1,
        ema: None,
        checkpoint: Default::default(),
        precision: Default::default(),
        devices: 1,
        shards: Default::default(),
        init_from: None,
        noise_da: NoiseDaSpec {
            w: 0.2,
            ramp_steps: 0,
            delta: 0.1,
            t_range: [1, 1000],
            channel_shuffle: true,
            residual_swap,
            diffusion_loss: true,
            conditions: Conditions::Both,
            target_batch: None,
            d_warmup: 0,
        },
        dann: Default::default(),
        pixel_da: Default::default(),
        ne2ne: Default::default(),
        loader: Default::default(),
    }
}

// --- whole training runs on tiny data -------------------------------------------------

pub(crate) fn image(rng: &mut Rng, side: usize) -> Image {
    Image::from_vec(side, side, (0..side * side * 3).map(|_| rng.uniform() as f32).collect())
}

pub(crate) fn tiny_data(poison: bool) -> (PairedSet, TargetTrainSet) {
    let mut rng = Rng::new(5);
    let items = (0..3)
        .map(|i| {
            let clean = image(&mut rng, 16);
            let mut degraded = clean.clone();
            for v in degraded.data.iter_mut() {
                *v += 0.2 * (rng.uniform() as f32 - 0.5);
            }
            if poison && i == 2 {
                degraded.data[7] = f32::NAN;
            }
            PairedItem { id: format!("s{i}"), degraded, clean, params: Default::default() }
        })
        .collect();
    let source = PairedSet::held("tiny", crate::datasets::Split::Train, items, "f");
    let target = TargetTrainSet {
        dataset: "tiny-target".into(),
        items: (0..3)
            .map(|i| crate::datasets::DegradedItem {
                id: format!("t{i}"),
                degraded: image(&mut rng, 16),
                params: Default::default(),
            })
            .collect(),
        fingerprint: "g".into(),
        cached: false,
        problems: vec![],
        store: None,
    };
    (source, target)
}

pub(crate) fn nets() -> NetworksSpec {
    NetworksSpec {
        restorer: RestorerConfig::unet(vec![4, 8]),
        // Dropout on: resuming must also replay the random dropout masks.
        diffusion: DiffusionConfig { base: 4, mults: vec![1, 2], res_blocks: 1, attn_heads: 1, dropout: 0.2 },
    }
}

pub(crate) fn run_spec(steps: usize) -> TrainSpec {
    TrainSpec {
        steps,
        batch: 2,
        patch: 8,
        ema: Some(0.9),
        checkpoint: super::config::CheckpointSpec { every: 2, keep: 2 },
        noise_da: NoiseDaSpec { ramp_steps: 3, ..spec(true).noise_da },
        ..spec(true)
    }
}

pub(crate) use crate::util::RNG_LOCK as SERIAL;

/// Bit-equality of two weight vectors, reported briefly.
pub(crate) fn same(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

pub(crate) fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

pub(crate) fn weights<M: Module>(m: &M) -> Vec<f32> {
    struct Collect(Vec<f32>);
    impl burn::module::ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            self.0.extend(param.val().into_data().iter::<f32>());
        }
    }
    let mut c = Collect(Vec::new());
    m.visit(&mut c);
    c.0
}

pub(crate) fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rp-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

pub(crate) fn go(
    method: Method,
    spec: &TrainSpec,
    data: &(PairedSet, TargetTrainSet),
    dir: Option<&Path>,
    stop_at: Option<usize>,
) -> Result<Trained> {
    go_on(method, spec, data, dir, stop_at, None, 1)
}

/// Train on the tiny data; `devices` > 1 adds data-parallel replicas on the CPU device.
pub(crate) fn go_on(
    method: Method,
    spec: &TrainSpec,
    data: &(PairedSet, TargetTrainSet),
    dir: Option<&Path>,
    stop_at: Option<usize>,
    init: Option<&Path>,
    devices: usize,
) -> Result<Trained> {
    // The back-end's random generator (weight init, dropout) is process-wide: trainings
    // in concurrently running tests would draw from each other's stream.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let stop = AtomicBool::new(false);
    let nets = nets();
    let inp = TrainInputs {
        task: Task::Denoise,
        spec,
        nets: &nets,
        init_restorer: init,
        source: &data.0,
        target: Some(&data.1),
        seed: 11,
        device: Device::flex(),
        stop: &stop,
        checkpoints: dir,
        fingerprint: "fp".into(),
        validation: &[],
        validate_every: 0,
        data_parallel: vec![Device::flex(); devices - 1],
    };
    train(method, &inp, &mut |s| {
        if Some(s.step) == stop_at {
            stop.store(true, Ordering::SeqCst);
        }
    })
}

/// Interrupt a Noise-DA run after step 3 of 7 (between the every-2 checkpoints), continue
/// it in a fresh call from its checkpoint: the final weights, EMA and curve equal an
/// uninterrupted run bit for bit on the CPU.
#[test]
fn resumed_training_is_bit_identical_to_an_uninterrupted_one() {
    let data = tiny_data(false);
    let spec = run_spec(7);
    let straight = go(Method::NoiseDa, &spec, &data, None, None).unwrap();
    assert_eq!(straight.steps_done, 7);

    let dir = tmp("resume");
    let first = go(Method::NoiseDa, &spec, &data, Some(&dir), Some(3)).unwrap();
    assert_eq!(first.steps_done, 3, "stopped at the safe point after step 3");
    let latest = checkpoint::latest(&dir).unwrap().unwrap();
    assert!(latest.ends_with(checkpoint::step_name(3)), "the interrupt wrote a checkpoint: {latest:?}");
    assert!(!same(&weights(&first.restorer), &weights(&straight.restorer)));

    let resumed = go(Method::NoiseDa, &spec, &data, Some(&dir), None).unwrap();
    assert_eq!((resumed.resumed_from, resumed.steps_done), (3, 7));
    let (r, s) = (weights(&resumed.restorer), weights(&straight.restorer));
    assert!(same(&r, &s), "restorer weights differ by up to {}", max_diff(&r, &s));
    let (r, s) = (weights(resumed.restorer_ema.as_ref().unwrap()), weights(straight.restorer_ema.as_ref().unwrap()));
    assert!(same(&r, &s), "EMA weights differ by up to {}", max_diff(&r, &s));
    let losses = |t: &Trained| t.curve.iter().map(|p| (p.step, p.loss, p.mse_pos, p.hinge)).collect::<Vec<_>>();
    assert_eq!(format!("{:?}", losses(&resumed)), format!("{:?}", losses(&straight)));
    // keep: 2 → the two newest step checkpoints remain.
    let mut left: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    left.sort();
    assert_eq!(left, vec![checkpoint::step_name(6), checkpoint::step_name(7)]);

    // A finished checkpoint is reused, not retrained; another training refuses it.
    let again = go(Method::NoiseDa, &spec, &data, Some(&dir), None).unwrap();
    assert_eq!((again.resumed_from, again.steps_done), (7, 7));
    assert!(same(&weights(&again.restorer), &weights(&straight.restorer)));
    let err = go(Method::SourceOnly, &spec, &data, Some(&dir), None).err().expect("different training");
    assert_eq!(err.code, ExitCode::Config);
    assert!(err.to_string().contains("different training"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A NaN loss stops training with exit code 4; the newest checkpoint is the last good state.
#[test]
fn divergence_stops_with_the_last_good_checkpoint_intact() {
    let data = tiny_data(true);
    let spec = TrainSpec { checkpoint: super::config::CheckpointSpec { every: 1, keep: 3 }, ..run_spec(40) };
    let dir = tmp("diverge");
    let err = go(Method::SourceOnly, &spec, &data, Some(&dir), None).err().expect("the NaN image diverges");
    assert_eq!(err.code, ExitCode::Diverged);
    let msg = err.to_string();
    let at: usize = msg.split("diverged at step ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(at > 1, "this seed meets the poisoned image after a few good steps: {msg}");
    let latest = checkpoint::latest(&dir).unwrap().unwrap();
    assert!(msg.contains(&latest.display().to_string()), "{msg}");
    let st = checkpoint::read_state(&latest).unwrap();
    assert_eq!(st.step, at - 1);
    assert!(st.curve.iter().all(|p| p.loss.is_finite()));
    let g = {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        spec_restorer()
    }
    .try_load_file(latest.join(checkpoint::MODEL))
    .unwrap();
    assert!(weights(&g).iter().all(|v| v.is_finite()), "saved weights are the good ones");
    std::fs::remove_dir_all(&dir).unwrap();
}

pub(crate) fn spec_restorer() -> Restorer {
    nets().restorer.init(&Device::flex())
}

/// bf16 and f16 steps train (loss falls, everything finite) and follow f32 closely without
/// equalling it; the f32 weights receive the gradients through the casts.
#[test]
fn mixed_precision_trains() {
    use super::config::Precision;
    let data = tiny_data(false);
    let base = TrainSpec { lr: 3e-3, ..run_spec(30) };
    let f32_run = go(Method::NoiseDa, &base, &data, None, None).unwrap();
    let w32 = weights(&f32_run.restorer);
    for p in [Precision::Bf16, Precision::F16] {
        let t = go(Method::NoiseDa, &TrainSpec { precision: p, ..base.clone() }, &data, None, None).unwrap();
        let c: Vec<f64> = t.curve.iter().map(|p| p.charbonnier).collect();
        assert!(c.iter().all(|v| v.is_finite()) && t.curve.iter().all(|p| p.mse_pos.is_finite()), "{p:?}");
        let (head, tail) = (c[..5].iter().sum::<f64>(), c[c.len() - 5..].iter().sum::<f64>());
        assert!(tail < 0.8 * head, "{p:?}: Charbonnier {head} → {tail} over 30 steps");
        let w = weights(&t.restorer);
        assert!(w.iter().all(|v| v.is_finite()));
        assert!(!same(&w, &w32), "{p:?} must actually compute in lower precision");
        let f32_tail: f64 = f32_run.curve[25..].iter().map(|p| p.charbonnier).sum();
        assert!((tail - f32_tail).abs() < 0.25 * f32_tail, "{p:?}: {tail} vs f32 {f32_tail}");
    }
}

/// Training is bit-identical whatever the thread count: the same Noise-DA run (2 shards)
/// under rayon pools of 1, 2 and 3 threads gives the same weights to the last bit (our
/// kernels sum over images in a fixed order, never in rayon's scheduling order).
#[test]
fn training_does_not_depend_on_the_thread_count() {
    use config::Shards;
    let data = tiny_data(false);
    let spec = TrainSpec { batch: 8, shards: Shards::Count(2), ..run_spec(4) };
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let t = pool.install(|| go_on(Method::NoiseDa, &spec, &data, None, None, None, 1).unwrap());
        (weights(&t.restorer), weights(t.diffusion.as_ref().expect("Noise-DA trains D")))
    };
    let one = run(1);
    for threads in [2, 3] {
        assert!(run(threads) == one, "{threads} threads train differently from 1");
    }
}

/// Batches read ahead on worker threads train exactly as batches made when the step
/// needs them, whatever the number of workers and the prefetch depth.
#[test]
fn training_does_not_depend_on_the_loader() {
    use config::LoaderSpec;
    let data = tiny_data(false);
    let run = |workers: usize, prefetch: usize| {
        let spec = TrainSpec { loader: LoaderSpec { workers, prefetch }, ..run_spec(6) };
        let t = go(Method::NoiseDa, &spec, &data, None, None).unwrap();
        (weights(&t.restorer), weights(t.diffusion.as_ref().expect("Noise-DA trains D")))
    };
    let inline = run(0, 1);
    for (workers, prefetch) in [(1, 1), (2, 4), (3, 2)] {
        assert!(run(workers, prefetch) == inline, "{workers} workers, prefetch {prefetch} train differently");
    }
}

/// Stopped after 3 steps and continued from its checkpoint, `method` ends with `whole`'s G.
pub(crate) fn resumes_bit_identically(
    method: Method,
    spec: &TrainSpec,
    data: &(PairedSet, TargetTrainSet),
    whole: &Trained,
) {
    let dir = tmp(&format!("{}-resume", method.name()));
    let ckpt = TrainSpec { checkpoint: config::CheckpointSpec { every: 2, keep: 2 }, ..spec.clone() };
    let first = go(method, &ckpt, data, Some(&dir), Some(3)).unwrap();
    assert!(first.steps_done < spec.steps);
    let resumed = go(method, &ckpt, data, Some(&dir), None).unwrap();
    assert_eq!(max_diff(&weights(&resumed.restorer), &weights(&whole.restorer)), 0.0, "{}", method.name());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A step split into shards — concurrent on one device (`shards`) or over data-parallel
/// replicas (`devices`) — trains exactly as the whole batch does, up to float summation
/// order: per-sample draws (γ, ε, slot swaps, dropout masks) and the whole batch's hinge
/// state make the summed shard gradients the whole batch's gradient, for source-only,
/// Noise-DA and DANN alike.
#[test]
fn sharded_steps_train_as_the_whole_batch() {
    use config::Shards;
    let data = tiny_data(false);
    // Log every step, so the gradient-norm diagnostic is compared too.
    let base = TrainSpec { batch: 4, log_every: 1, shards: Shards::Count(1), ..run_spec(6) };
    let go_dp = |method: Method, spec: &TrainSpec| go_on(method, spec, &data, None, None, None, spec.devices).unwrap();
    for method in [Method::SourceOnly, Method::NoiseDa, Method::Dann, Method::Neighbor2Neighbor, Method::PixelDa] {
        let one = go_dp(method, &base);
        assert_eq!(one.shards, 1);
        for split in [
            TrainSpec { shards: Shards::Count(2), ..base.clone() },
            TrainSpec { shards: Shards::Count(4), ..base.clone() },
            TrainSpec { devices: 2, ..base.clone() },
            TrainSpec { devices: 2, shards: Shards::Count(2), ..base.clone() },
        ] {
            let dp = go_dp(method, &split);
            let what = format!("{}, {} shards on {} device(s)", method.name(), dp.shards, split.devices);
            assert_eq!(dp.shards, split.devices * if let Shards::Count(n) = split.shards { n } else { 1 });
            let d = max_diff(&weights(&one.restorer), &weights(&dp.restorer));
            assert!(d < 1e-4, "{what}: G's max weight difference {d}");
            if let (Some(a), Some(b)) = (&one.diffusion, &dp.diffusion) {
                let d = max_diff(&weights(a), &weights(b));
                // Adam (ε 1e-8) turns float noise in gradients that are truly 0 (conv biases
                // before a GroupNorm) into ±lr steps: D's weights agree loosely here, its
                // gradients closely in `shard_gradients_sum_to_the_whole_batch_gradient`.
                assert!(d < 5e-3, "{what}: D's max weight difference {d}");
            }
            assert_eq!(one.curve.len(), dp.curve.len());
            for (p, q) in one.curve.iter().zip(&dp.curve) {
                let close = |a: f64, b: f64| (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-4 * a.abs().max(1e-3);
                for (name, a, b) in [
                    ("loss", p.loss, q.loss),
                    ("mse_pos", p.mse_pos, q.mse_pos),
                    ("mse_neg", p.mse_neg, q.mse_neg),
                    ("hinge", p.hinge, q.hinge),
                    ("grad_syn", p.grad_syn, q.grad_syn),
                    ("grad_real", p.grad_real, q.grad_real),
                ] {
                    assert!(close(a, b), "{what}, step {}: {name} {a} vs {b}", p.step);
                }
            }
        }
    }
    // `auto` splits every method on the CPU when there are threads to use.
    let auto = TrainSpec { shards: Shards::Auto, ..base.clone() };
    let expect = if rayon::current_num_threads() >= 2 { 2 } else { 1 };
    assert_eq!(go_dp(Method::SourceOnly, &auto).shards, expect);
    assert_eq!(go_dp(Method::NoiseDa, &auto).shards, expect);
    // A split that does not divide the batch is refused, naming the key.
    match go_on(Method::NoiseDa, &TrainSpec { shards: Shards::Count(3), ..base }, &data, None, None, None, 1) {
        Err(e) => assert!(e.message.contains("train.shards"), "{}", e.message),
        Ok(_) => panic!("3 shards of a batch of 4 must be refused"),
    }
}

/// Every float parameter's gradient (zeros where it has none), in visiting order.
pub(crate) struct CollectGrads<'a> {
    pub grads: &'a GradientsParams,
    pub out: Vec<Vec<f32>>,
}

impl burn::module::ModuleVisitor for CollectGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
        let v = match self.grads.get::<D>(param.id) {
            Some(g) => g.into_data().iter::<f32>().collect(),
            None => vec![0.0; param.val().shape().num_elements()],
        };
        self.out.push(v);
    }
}

/// Warm start: G begins from saved weights (a negligible learning rate keeps them), and
/// Noise-DA adapts from there.
#[test]
fn warm_start_begins_from_the_saved_restorer() {
    let data = tiny_data(false);
    let pre = go(Method::SourceOnly, &run_spec(4), &data, None, None).unwrap();
    let dir = tmp("warm");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pre.bpk");
    pre.restorer.clone().save_file(&file).unwrap();
    let frozen = TrainSpec { lr: 1e-20, ema: None, ..run_spec(2) };
    let warm = go_on(Method::NoiseDa, &frozen, &data, None, None, Some(&file), 1).unwrap();
    let d = max_diff(&weights(&warm.restorer), &weights(&pre.restorer));
    assert!(d < 1e-6, "warm-started G moved by {d} with lr 1e-20");
    let cold = go(Method::NoiseDa, &frozen, &data, None, None).unwrap();
    assert!(max_diff(&weights(&cold.restorer), &weights(&pre.restorer)) > 1e-3, "without it, G starts elsewhere");
    std::fs::remove_dir_all(&dir).unwrap();
}

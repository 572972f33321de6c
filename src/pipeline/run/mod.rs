//! Running a resolved pipeline inside `reports/<pipeline>/<run-id>/`, as a sequence of named
//! stages that read like the pipeline: [`run`] is that sequence, `Run` what the stages share.
//! Each stage lives in its own file: `open` (prepare: run directory, lock, resume), `data`
//! (load and fingerprint the data), `evaluate` (score inputs and restorers, the score cache),
//! `train` (one training stage per recipe × seed, or its cached result), `outputs` (diagnostics,
//! tables, figures, summaries, provenance, gates); `dry` is `--dry-run`/`plan`, `progress` the
//! training progress display.

mod data;
mod dry;
mod evaluate;
mod job;
mod open;
mod outputs;
mod progress;
mod train;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Instant, SystemTime};

use burn::tensor::Device;
use tracing::info;

use super::Resolved;
use super::plan::describe;
use super::spec::PipelineSpec;
use super::stages::StageCache;
use crate::datasets::Registry;
use crate::error::Result;

pub use dry::dry_run;
pub use job::{PlannedStage, planned_stages, run_stage};
pub(crate) use open::forced_stages;
pub(crate) use outputs::{write_report_html, write_summaries};

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogMode {
    /// indicatif bars (interactive terminal).
    Bars,
    /// Plain log lines (no terminal, CI, or `--log-format json`).
    Lines,
}

/// What to do with an unfinished run of the same resolved pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    /// Continue it if there is one (the default: re-running an interrupted job continues it).
    Auto,
    /// Continue it; fail if there is none (`--resume`).
    Require,
    /// Start a new run regardless (`--fresh`).
    Fresh,
}

pub struct RunOptions {
    pub registry: PathBuf,
    pub resume: Resume,
    pub log: LogMode,
    pub stop: Arc<AtomicBool>,
    pub command_line: Vec<String>,
    /// Stages to run even when a finished one with the same key is cached (`--force`): a stage
    /// name (`train:noise_da:seed0`), a prefix of one (`train:noise_da`) or a recipe name.
    pub force: Vec<String>,
    /// Run this stage and every later one in plan order regardless of the cache (`--from`).
    pub from: Option<String>,
    /// Run even when the data would not fit in the memory available (`--skip-memory-check`).
    pub skip_memory_check: bool,
}

/// Refuse (exit 2, before anything is written) a run whose data alone would not fit in the
/// memory this machine has available, unless told otherwise.
fn check_memory(spec: &PipelineSpec, registry: &Registry, skip: bool) -> Result<()> {
    let need = super::plan::data_memory(spec, registry);
    let nets = super::plan::network_memory(spec);
    let Some(have) = super::plan::available_memory() else { return Ok(()) };
    if need.total() + nets.total() > have && !skip {
        let plan = super::plan::count;
        return Err(crate::error::Failure::config(format!(
            "this configuration needs ≈ {} in memory: {} for sets held whole (source \
             {}×{}², target {}×{}² when generated, test and validation sets), {} for batches streamed from patch \
             stores, {} for the networks' weights, gradients and Adam moments, {} for one training step's \
             activations (train.batch × train.patch²); more than the {} available here; lower the counts, sizes, \
             batch, patch or widths (or train.loader.prefetch), or pass --skip-memory-check",
            crate::util::human_bytes(need.total() + nets.total()),
            crate::util::human_bytes(need.held),
            plan(spec.source.count),
            spec.source.size,
            plan(spec.target.count),
            spec.target.size,
            crate::util::human_bytes(need.streamed),
            crate::util::human_bytes(nets.state),
            crate::util::human_bytes(nets.activations),
            crate::util::human_bytes(have)
        )));
    }
    Ok(())
}

pub struct RunOutcome {
    pub run_dir: PathBuf,
    pub summary: String,
}

/// Run a resolved pipeline: its stages in order. A stage that fails stops the run with its
/// exit code; the unfinished run directory (checkpoints, cached stages) is continued by the
/// next invocation of the same configuration.
pub fn run(res: &Resolved, opts: &RunOptions) -> Result<RunOutcome> {
    let mut run = Run::prepare(res, opts)?;
    let data = match run.load_data() {
        Ok(data) => data,
        Err(e) => {
            run.discard_if_new();
            return Err(e);
        }
    };
    let mut scores = run.score_inputs(&data)?;
    let trained = run.train_and_evaluate(&data, &mut scores)?;
    run.diagnostics(&data, &trained)?;
    let summaries = run.write_reports(&data, scores, &trained)?;
    run.write_provenance(&data, trained)?;
    outputs::write_report_html(&run.open.run_dir, run.spec, &summaries)?;
    run.check_gates(summaries)
}

/// One run in progress: what its stages read (configuration, devices, the locked run
/// directory) and the seconds each stage took.
struct Run<'a> {
    res: &'a Resolved,
    opts: &'a RunOptions,
    spec: &'a PipelineSpec,
    registry: Registry,
    /// Training stages `--force`/`--from` re-run.
    forced: Vec<String>,
    /// The first device trains and evaluates; the rest serve data-parallel training.
    devices: Vec<Device>,
    backend_name: String,
    /// The resolved configuration as written to `resolved.json` (the run's identity).
    resolved_json: String,
    report_root: PathBuf,
    stage_cache: StageCache,
    open: open::OpenRun,
    started: SystemTime,
    t0: Instant,
    timings: Timings,
}

impl<'a> Run<'a> {
    /// The `prepare` stage: check the configuration's datasets and `--force`/`--from`, choose
    /// the devices, open (or continue) the run directory under its lock and record the
    /// resolved configuration.
    fn prepare(res: &'a Resolved, opts: &'a RunOptions) -> Result<Run<'a>> {
        let spec = &res.spec;
        let started = SystemTime::now();
        let t0 = Instant::now();
        let registry = Registry::load(&opts.registry)?;
        data::preflight(res, &registry)?;
        check_memory(spec, &registry, opts.skip_memory_check)?;
        let forced = forced_stages(spec, &opts.force, opts.from.as_deref())?;
        let max_devices = spec.recipes().iter().map(|r| r.train.devices).max().unwrap_or(1);
        let (devices, backend_name) = crate::backend::devices(spec.backend, max_devices)?;
        info!(backend = %backend_name, "compute back-end");
        let resolved_json = serde_json::to_string_pretty(spec).expect("spec serialises");
        let report_root = PathBuf::from(&spec.report.dir);
        let open = open::open_run(res, opts, &resolved_json, started)?;
        sweep_leftovers(&report_root, &open.run_dir);
        crate::util::write_atomic(&open.run_dir.join("resolved.json"), resolved_json.as_bytes())?;
        info!(run = %open.run_id, dir = %open.run_dir.display(), profile = %res.profile, "run started");
        eprintln!("plan for {} (profile {}):\n{}", res.path.display(), res.profile, describe(spec));
        let (params_g, params_d) = crate::networks::param_counts(&spec.networks.restorer, &spec.networks.diffusion);
        info!(restorer_params = params_g, diffusion_params = params_d, "networks");
        Ok(Run {
            res,
            opts,
            spec,
            registry,
            forced,
            devices,
            backend_name,
            resolved_json,
            stage_cache: StageCache::new(&report_root),
            report_root,
            open,
            started,
            t0,
            timings: Timings::new(),
        })
    }

    /// A new run that failed before anything was computed (its data did not load) leaves no
    /// empty "unfinished" directory behind.
    fn discard_if_new(self) {
        if !self.open.resumed {
            let dir = self.open.run_dir.clone();
            drop(self);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    fn device(&self) -> &Device {
        &self.devices[0]
    }
}

/// The folders where a run's writers leave temporary files: the pipeline's folder, the run's,
/// its figures and checkpoints (each recipe's too), and the shared stage and shard caches.
pub(crate) fn temp_folders(report_root: &std::path::Path, run_dir: &std::path::Path) -> Vec<PathBuf> {
    let checkpoints = run_dir.join("checkpoints");
    let mut dirs = vec![
        run_dir.parent().map(|p| p.to_path_buf()).unwrap_or_default(),
        run_dir.to_path_buf(),
        run_dir.join("figures"),
        checkpoints.clone(),
        report_root.join(".cache").join("stages"),
        report_root.join(".cache").join("shards"),
    ];
    if let Ok(rd) = std::fs::read_dir(&checkpoints) {
        dirs.extend(rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()));
    }
    dirs
}

/// Remove the temporary files and directories that killed or failed writers left in this
/// run's folders and the caches (only those whose writer is certainly gone; see
/// `util::sweep_temp`), so a rerun after `kill -9` or a full disk leaves nothing behind.
fn sweep_leftovers(report_root: &std::path::Path, run_dir: &std::path::Path) {
    for dir in temp_folders(report_root, run_dir) {
        for removed in crate::util::sweep_temp(&dir) {
            info!(path = %removed.display(), "removed a temporary file left by an earlier, interrupted run");
        }
    }
}

/// Seconds per finished stage, for the log and `provenance.json`.
struct Timings {
    seconds: serde_json::Map<String, serde_json::Value>,
    since: Instant,
}

impl Timings {
    fn new() -> Timings {
        Timings { seconds: Default::default(), since: Instant::now() }
    }

    /// Stage `name` finished now (it started when the previous one finished).
    fn finish(&mut self, name: impl std::fmt::Display) {
        let s = self.since.elapsed().as_secs_f64();
        info!(stage = %name, seconds = format!("{s:.1}"), "stage finished");
        self.seconds.insert(name.to_string(), serde_json::json!(s));
        self.since = Instant::now();
    }
}

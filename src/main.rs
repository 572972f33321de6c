//! The `run-pipeline` command line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode as ProcessExit;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand, ValueEnum};
use run_pipeline::commands::restore as restore_cmd;
use run_pipeline::commands::score as score_cmd;
use run_pipeline::commands::{datasets, registry_path};
use run_pipeline::error::{ExitCode, Failure, Result};
use run_pipeline::pipeline;
use run_pipeline::pipeline::run::{LogMode, Resume, RunOptions};

#[derive(Parser, Debug)]
#[command(
    name = "run-pipeline",
    version,
    about = "Run image-restoration pipelines (Noise-DA) from YAML files",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: PipelineArgs,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
}

#[derive(clap::Args, Debug, Clone)]
struct PipelineArgs {
    /// Pipeline file, e.g. pipelines/denoise.yaml.
    pipeline: Option<PathBuf>,
    /// Profile inside the file (default: the file's `default_profile`, else `demo`).
    #[arg(long, short)]
    profile: Option<String>,
    /// Override a value: --set train.steps=100 (repeatable; type-checked, recorded with the run).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Dataset registry (default: ./datasets.toml, else the one beside the pipelines/ folder).
    #[arg(long)]
    registry: Option<PathBuf>,
    /// Compute back-end (flex, wgpu, cuda, tch, auto); the same as --set backend=...
    #[arg(long)]
    backend: Option<String>,
    /// Continue the unfinished run of this pipeline and configuration (fail if there is none).
    /// Without --resume or --fresh an unfinished run is continued when there is one.
    #[arg(long, conflicts_with = "fresh")]
    resume: bool,
    /// Start a new run even if an unfinished one of the same configuration exists.
    #[arg(long)]
    fresh: bool,
    /// Re-run a stage even if a finished one with the same key is cached: a stage name
    /// (train:noise_da:seed0), a prefix (train:noise_da) or a recipe name. Repeatable.
    #[arg(long, value_name = "STAGE")]
    force: Vec<String>,
    /// Re-run this stage and every later one in plan order, ignoring the stage cache.
    #[arg(long, value_name = "STAGE")]
    from: Option<String>,
    /// Print the stages, which would run and why, which are reused, and a rough cost; train
    /// nothing (the same as `run-pipeline plan`).
    #[arg(long)]
    dry_run: bool,
    /// Run even when the data of the configuration would not fit in the memory available.
    #[arg(long)]
    skip_memory_check: bool,
    /// Where the stages run: local (this process) or slurm (one job per training stage and a
    /// final report job; see README "On a Slurm cluster"). Default: the pipeline's `executor`.
    #[arg(long, value_enum)]
    executor: Option<pipeline::spec::ExecutorKind>,
    /// With --executor slurm: follow the jobs to the end and exit with the pipeline's code.
    #[arg(long)]
    wait: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a pipeline (the same as giving the file directly).
    Run(PipelineArgs),
    /// Internal: run exactly one training stage of a pipeline into the stage cache (what a
    /// Slurm job of `--executor slurm` runs).
    #[command(name = "__stage", hide = true)]
    Stage {
        #[command(flatten)]
        args: PipelineArgs,
        #[arg(long)]
        stage: String,
        /// A file the submitter wrote under the report folder: the job must see it.
        #[arg(long)]
        submitted: Option<PathBuf>,
    },
    /// Validate a pipeline and print its resolved stages and networks (parameters, GMACs at the
    /// training patch size) without running anything.
    Describe(PipelineArgs),
    /// The stages of a run: which would run and why (new config key, changed input data, code
    /// changed, forced), which are reused from the stage cache, and a rough cost. Loads (and
    /// caches) the data to fingerprint it; trains nothing.
    Plan(PipelineArgs),
    /// Score restored images against references (two files or two folders) with a protocol.
    Score {
        restored: PathBuf,
        reference: PathBuf,
        /// rgb, y-matlab, sidd, realblur-noalign or realblur.
        #[arg(long, default_value = "rgb")]
        protocol: run_pipeline::protocols::ProtocolKind,
        /// Pair folder contents by natural sort order instead of by file name.
        #[arg(long)]
        by_order: bool,
        #[arg(long, value_enum, default_value_t = score_cmd::Format::Table)]
        format: score_cmd::Format,
    },
    /// Re-summarise finished runs with this version's report code (summary with bootstrap
    /// intervals, paired comparisons, recipes, summary.md) from their per-image scores, and
    /// write the benchmark table across them (task × method × test set, the paper's layout).
    Report {
        /// Run directories (reports/<pipeline>/<run-id>).
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Where the cross-run benchmark table goes (benchmark.{md,csv,parquet}); default
        /// `benchmark/` beside the first run's pipeline folder (reports/benchmark).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Pair every run's methods image by image against this one, across runs:
        /// RUN_ID/METHOD (or METHOD of the first run). Written as comparisons.{csv,parquet}.
        #[arg(long, value_name = "RUN/METHOD")]
        baseline: Option<String>,
        /// Replace files already there that this tool did not write (never a folder, device
        /// or a run's checkpoints).
        #[arg(long)]
        force: bool,
    },
    /// List the runs under a reports folder: id, pipeline, profile, status (finished, gate
    /// failed, running, unfinished) and the first test set's mean PSNR per method.
    Runs {
        /// The reports folder (`report.dir` of the pipelines).
        #[arg(long, default_value = "reports")]
        dir: PathBuf,
    },
    /// Restore your own photos with a trained restorer: a run's (--run DIR --method M --seed S)
    /// or a weights file (--weights: a run's .bpk, a PyTorch .pth or safetensors — the authors'
    /// release included, with --arch). Writes 8-bit PNGs with the same names; with --reference it
    /// also scores them (scores.csv/.parquet). Exit 3 if some files could not be restored (the
    /// others are written).
    Restore {
        /// A photo, or a folder of photos (searched recursively).
        input: PathBuf,
        /// Folder for the restored PNGs (same relative names); not the input folder.
        output: PathBuf,
        #[command(flatten)]
        weights: WeightsArgs,
        /// Value range the network works in: 01 (ours; the release's denoising) or pm1 ([-1, 1]).
        #[arg(long, value_enum, default_value = "01")]
        range: pipeline::restore::Range,
        /// Restore in tiles of this side (a multiple of the network's stride) to bound memory;
        /// default: whole images. Tiles approximate the whole-image result (less context at their
        /// borders); a larger --overlap brings them closer.
        #[arg(long)]
        tile: Option<usize>,
        #[arg(long, default_value_t = 32)]
        overlap: usize,
        /// Score the restored images against the references with the same names in this folder.
        #[arg(long)]
        reference: Option<PathBuf>,
        /// Protocol for --reference: rgb, y-matlab, sidd, realblur-noalign or realblur.
        #[arg(long, default_value = "rgb")]
        protocol: run_pipeline::protocols::ProtocolKind,
        /// Compute back-end (flex, wgpu, cuda, tch, auto).
        #[arg(long, default_value = "flex")]
        backend: String,
        /// Replace files already there that this tool did not write (never a folder, device
        /// or a run's checkpoints).
        #[arg(long)]
        force: bool,
    },
    /// Export a restorer as safetensors for PyTorch, with the key names its authors publish
    /// (the Noise-DA release's RestorationNet for the UNet and DnCNN, NAFNet's and Restormer's
    /// own: load with load_state_dict) or ours.
    Export {
        /// The .safetensors file to write.
        output: PathBuf,
        #[command(flatten)]
        weights: WeightsArgs,
        /// Key names: release (the authors' published names) or ours.
        #[arg(long, default_value = "release")]
        names: String,
        /// Prefix for every key, e.g. `RestorationNet.` to load into the release's whole Network.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Replace files already there that this tool did not write (never a folder, device
        /// or a run's checkpoints).
        #[arg(long)]
        force: bool,
    },
    /// The Slurm jobs of the latest `--executor slurm` submission of each pipeline under a
    /// reports folder: stage, job id, state, exit code, log.
    Jobs {
        /// The reports folder (`report.dir` of the pipelines).
        #[arg(long, default_value = "reports")]
        dir: PathBuf,
    },
    /// Check and prune what runs keep: cached stages, scores and shards, and each run's weights
    /// and checkpoints, against their content hashes.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
        /// The reports folder (`report.dir` of the pipelines).
        #[arg(long, default_value = "reports", global = true)]
        dir: PathBuf,
    },
    /// Dataset registry commands.
    Datasets {
        #[command(subcommand)]
        command: DatasetsCommand,
        /// Dataset registry (default: ./datasets.toml).
        #[arg(long, global = true)]
        registry: Option<PathBuf>,
    },
}

/// Which restorer: a run's recipe, or a weights file.
#[derive(clap::Args, Debug)]
struct WeightsArgs {
    /// Weights file: a run's checkpoints/<method>-seed<s>.bpk (its network read from the run), a
    /// PyTorch .pth or a safetensors file (network from --arch).
    #[arg(long, conflicts_with = "run")]
    weights: Option<PathBuf>,
    /// A run directory: its final weights of --method and --seed.
    #[arg(long)]
    run: Option<PathBuf>,
    #[arg(long, default_value = "noise_da")]
    method: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The EMA weights instead of the raw ones.
    #[arg(long)]
    ema: bool,
    /// The network, where the weights do not say: unet:16,32,64 | unet-release:64,128,256,512
    /// (the authors' UNet-S, the default for PyTorch files) | dncnn:17,64 | nafnet[:WIDTH] |
    /// nafnet-gopro:WIDTH | restormer[:DIM] | a preset (nafnet-sidd-width64,
    /// restormer-real-denoising, ...; `run-pipeline describe` lists them).
    #[arg(long)]
    arch: Option<String>,
    /// Use weights that hold NaN or ±∞ (refused by default, naming the parameters).
    #[arg(long)]
    allow_nonfinite: bool,
}

impl WeightsArgs {
    fn spec(&self) -> run_pipeline::commands::restore::Weights {
        run_pipeline::commands::restore::Weights {
            file: self.weights.clone(),
            run: self.run.clone(),
            method: self.method.clone(),
            seed: self.seed,
            ema: self.ema,
            arch: self.arch.clone(),
            allow_nonfinite: self.allow_nonfinite,
        }
    }
}

#[derive(Subcommand, Debug)]
enum CacheCommand {
    /// Verify every entry; list those that fail (exit 3), or remove them with --fix (cache
    /// entries are recomputed by the next run).
    Verify {
        #[arg(long)]
        fix: bool,
    },
    /// Remove abandoned temporary files, cache entries that fail verification and, with
    /// --older-than-days, cache entries unused for that long. Runs and their weights stay.
    Gc {
        #[arg(long)]
        older_than_days: Option<f64>,
        /// Say what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand, Debug)]
enum DatasetsCommand {
    /// List registered datasets and whether their data is present.
    List,
    /// Write a dataset's test pairs as PNGs (`DIR/input`, `DIR/target`, same names): SIDD's
    /// MAT-file blocks, SPA, RealBlur or a simulated set, ready for `restore --reference`.
    Export {
        name: String,
        dir: PathBuf,
        /// How many pairs (default: all).
        #[arg(long)]
        count: Option<usize>,
        /// Replace files already there that this tool did not write (never a folder, device
        /// or a run's checkpoints).
        #[arg(long)]
        force: bool,
    },
    /// Scan and decode a dataset: counts per split, problems found, content fingerprint. A split
    /// with no usable image is a problem; so, with --min-size, is an image smaller than the crop a
    /// pipeline takes (its `size` or `train.patch`). Exit 3 when there are problems.
    Check {
        name: String,
        /// Report images narrower or shorter than this many pixels.
        #[arg(long, default_value_t = 0)]
        min_size: usize,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).with_target(false).init(),
    }
}

fn resolve(args: &PipelineArgs) -> Result<pipeline::Resolved> {
    let path = args
        .pipeline
        .as_deref()
        .ok_or_else(|| Failure::config("no pipeline file given (usage: run-pipeline pipelines/denoise.yaml)"))?;
    let mut sets = args.sets.clone();
    if let Some(b) = &args.backend {
        sets.push(format!("backend={b}"));
    }
    pipeline::load(path, args.profile.as_deref(), &sets)
}

fn run_pipeline(args: &PipelineArgs, format: LogFormat, stage: Option<&str>) -> Result<()> {
    let resolved = resolve(args)?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(ExitCode::Interrupted as i32);
        }
        eprintln!("interrupt received: stopping at the next safe point (again to abort now)");
    })
    .map_err(|e| Failure::internal(format!("cannot install the signal handler: {e}")))?;
    let interactive = interactive();
    let opts = RunOptions {
        registry: registry_path(args.registry.as_deref(), args.pipeline.as_deref()),
        resume: if args.resume {
            Resume::Require
        } else if args.fresh {
            Resume::Fresh
        } else {
            Resume::Auto
        },
        log: if interactive && matches!(format, LogFormat::Text) { LogMode::Bars } else { LogMode::Lines },
        stop,
        command_line: std::env::args().collect(),
        force: args.force.clone(),
        skip_memory_check: args.skip_memory_check,
        from: args.from.clone(),
    };
    if args.dry_run {
        print!("{}", pipeline::run::dry_run(&resolved, &opts)?);
        return Ok(());
    }
    if let Some(stage) = stage {
        return pipeline::run::run_stage(&resolved, &opts, stage);
    }
    if args.executor.unwrap_or(resolved.spec.executor.kind) == pipeline::spec::ExecutorKind::Slurm {
        let jobs = pipeline::slurm::submit(&resolved, &opts, args.wait)?;
        if !args.wait {
            println!(
                "submitted {} job(s); the report job is {}",
                jobs.len(),
                jobs.last().map_or("-", |j| j.id.as_str())
            );
        }
        return Ok(());
    }
    let outcome = pipeline::run::run(&resolved, &opts)?;
    if resolved.spec.report.print_summary {
        println!("\n{}", outcome.summary);
    }
    println!("report: {}", outcome.run_dir.display());
    println!("page:   {}", outcome.run_dir.join("report.html").display());
    Ok(())
}

/// Progress bars only for a person at a terminal (not under CI or with stderr redirected).
fn interactive() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("CI").is_none()
}

fn main() -> ProcessExit {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match &cli.command {
        None => run_pipeline(&cli.run, cli.log_format, None),
        Some(Command::Run(args)) => run_pipeline(args, cli.log_format, None),
        Some(Command::Stage { args, stage, submitted }) => match submitted.as_ref().filter(|m| !m.is_file()) {
            Some(m) => Err(Failure::data(format!(
                "this job cannot see {} (written by the submitter): the report folder must be on a file system \
                 shared by the submitting machine and every node",
                m.display()
            ))),
            None => run_pipeline(args, cli.log_format, Some(stage)),
        },
        Some(Command::Plan(args)) => {
            let mut a = args.clone();
            a.dry_run = true;
            run_pipeline(&a, cli.log_format, None)
        }
        Some(Command::Describe(args)) => resolve(args).map(|r| run_pipeline::commands::describe::describe(&r)),
        Some(Command::Score { restored, reference, protocol, by_order, format }) => {
            score_cmd::score(restored, reference, *protocol, *by_order, *format)
        }
        Some(Command::Report { runs, out, baseline, force }) => {
            run_pipeline::commands::report(runs, out.as_deref(), baseline.as_deref(), *force)
        }
        Some(Command::Restore {
            input,
            output,
            weights,
            range,
            tile,
            overlap,
            reference,
            protocol,
            backend,
            force,
        }) => {
            let how = pipeline::restore::Apply { range: *range, tile: *tile, overlap: *overlap };
            let w = weights.spec();
            let out = restore_cmd::Output { dir: output, force: *force };
            restore_cmd::restore(input, out, &w, how, reference.as_deref(), *protocol, backend, interactive())
        }
        Some(Command::Export { output, weights, names, prefix, force }) => {
            restore_cmd::export(output, *force, &weights.spec(), names, prefix)
        }
        Some(Command::Cache { command: CacheCommand::Verify { fix }, dir }) => {
            pipeline::cache::verify(dir, *fix).map(|out| print!("{out}"))
        }
        Some(Command::Cache { command: CacheCommand::Gc { older_than_days, dry_run }, dir }) => {
            match older_than_days.map(|d| std::time::Duration::try_from_secs_f64(d * 86_400.0)).transpose() {
                Ok(older) => pipeline::cache::gc(dir, older, *dry_run).map(|out| print!("{out}")),
                Err(_) => Err(Failure::config("--older-than-days: must be a non-negative number of days")),
            }
        }
        Some(Command::Jobs { dir }) => pipeline::slurm::status(dir).map(|out| print!("{out}")),
        Some(Command::Runs { dir }) => {
            let runs = run_pipeline::reports::runs::list(dir);
            if runs.is_empty() {
                println!("no runs under {}", dir.display());
            } else {
                print!("{}", run_pipeline::reports::runs::render(&runs));
            }
            Ok(())
        }
        Some(Command::Datasets { command, registry }) => {
            let registry = registry_path(registry.as_deref(), None);
            match command {
                DatasetsCommand::List => datasets::list(&registry).map(|out| print!("{out}")),
                DatasetsCommand::Export { name, dir, count, force } => {
                    datasets::export(&registry, name, dir, *count, *force).map(|out| println!("{out}"))
                }
                DatasetsCommand::Check { name, min_size } => datasets::check(&registry, name, *min_size),
            }
        }
    };
    match result {
        Ok(()) => ProcessExit::SUCCESS,
        Err(f) => {
            eprintln!("error: {f}");
            ProcessExit::from(f.code as u8)
        }
    }
}

//! `--executor slurm`: a pipeline's stages as Slurm jobs. Each training stage the stage cache
//! does not hold becomes one job (`run-pipeline __stage`, the same binary), a warm-started stage
//! waits for the stage it starts from (`--dependency=afterok`), each evaluation waits for its
//! training and scores into the score cache, and one final job runs the pipeline locally — every
//! stage and score then comes from the caches — to write the reports and check the gates. The run directory and the stage cache (`report.dir`) must be on a file system every
//! node sees; the submitter checks that the jobs see it (`__stage` fails with exit 3 otherwise).
//!
//! With `--wait` the submitter follows the jobs — one `squeue` and one `sacct` (or `scontrol`)
//! call per poll for all of them — and exits with the pipeline's codes: the report job's, or a failed job's,
//! naming it and its log. Re-running after a failure submits only what the cache still lacks;
//! a training job stopped by its time limit (SIGTERM first, `--signal`) continues from its
//! checkpoint when resubmitted.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::Resolved;
use super::run::{PlannedStage, RunOptions, planned_stages};
use super::spec::SlurmResources;
use crate::error::{ExitCode, Failure, Result};

/// A submitted job.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Job {
    pub id: String,
    /// `train:<recipe>:seed<s>` or `report`.
    pub stage: String,
    pub log: PathBuf,
}

fn quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn slurm(cmd: &str, args: &[String]) -> Result<String> {
    let out = Command::new(cmd).args(args).output().map_err(|e| {
        Failure::config(format!("{cmd}: cannot run it ({e}); --executor slurm needs the Slurm client commands on PATH"))
    })?;
    if !out.status.success() {
        return Err(Failure::internal(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `run-pipeline` arguments that reproduce this resolved pipeline (file, profile, registry,
/// overrides).
fn pipeline_args(res: &Resolved, opts: &RunOptions) -> Vec<String> {
    let mut a = vec![
        res.path.display().to_string(),
        "--profile".into(),
        res.profile.clone(),
        "--registry".into(),
        opts.registry.display().to_string(),
    ];
    for s in &res.overrides {
        a.extend(["--set".into(), s.clone()]);
    }
    if opts.skip_memory_check {
        a.push("--skip-memory-check".into());
    }
    a
}

/// Submit `command` as the job of `stage`, after `deps`; it logs to
/// `<logs>/<stage>-<job id>.out`.
fn sbatch(stage: &str, logs: &Path, res: &SlurmResources, deps: &[String], command: &[String]) -> Result<Job> {
    let log = logs.join(format!("{}-%j.out", stage.replace(':', "_")));
    let mut a = vec![
        "--parsable".to_string(),
        format!("--job-name=rp-{stage}"),
        format!("--output={}", log.display()),
        format!("--chdir={}", std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_else(|_| ".".into())),
        // SIGTERM two minutes before a time limit: the stage checkpoints and exits 130.
        "--signal=B:TERM@120".into(),
        // A requeued job adds to its log instead of starting it afresh.
        "--open-mode=append".into(),
    ];
    if let Some(p) = &res.partition {
        a.push(format!("--partition={p}"));
    }
    if let Some(x) = &res.account {
        a.push(format!("--account={x}"));
    }
    if let Some(t) = &res.time {
        a.push(format!("--time={t}"));
    }
    if let Some(m) = &res.mem {
        a.push(format!("--mem={m}"));
    }
    if let Some(c) = res.cpus {
        a.push(format!("--cpus-per-task={c}"));
    }
    if let Some(g) = res.gpus {
        a.push(format!("--gres=gpu:{g}"));
    }
    if !deps.is_empty() {
        a.push(format!("--dependency=afterok:{}", deps.join(":")));
        a.push("--kill-on-invalid-dep=yes".into());
    }
    a.extend(res.extra.iter().cloned());
    let line: Vec<String> = command.iter().map(|s| quote(s)).collect();
    a.push(format!("--wrap=exec {}", line.join(" ")));
    let id = slurm("sbatch", &a)?.trim().split(';').next().unwrap_or_default().to_string();
    let log = PathBuf::from(log.display().to_string().replace("%j", &id));
    eprintln!("submitted {stage} as job {id} (log {})", log.display());
    Ok(Job { id, stage: stage.to_string(), log })
}

/// Submit the pipeline's stages; with `wait`, follow them to the end.
pub fn submit(res: &Resolved, opts: &RunOptions, wait: bool) -> Result<Vec<Job>> {
    let spec = &res.spec;
    let exe = std::env::current_exe().map_err(|e| Failure::internal(format!("cannot find this binary: {e}")))?;
    let exe = exe.display().to_string();
    // Shards are generated here, once, into the shared cache; the jobs read them.
    let planned: Vec<PlannedStage> = planned_stages(res, opts)?;
    let logs = PathBuf::from(&spec.report.dir).join(&spec.name).join(".slurm");
    std::fs::create_dir_all(&logs).map_err(|e| Failure::internal(format!("{}: {e}", logs.display())))?;
    let args = pipeline_args(res, opts);
    // Every job checks it sees this file: the run directory and caches must be shared.
    let marker = logs.join(format!(".submitted-{}", std::process::id()));
    crate::util::write_atomic(&marker, b"run-pipeline --executor slurm\n")?;
    let marker = marker.canonicalize().unwrap_or(marker);
    let mut jobs: Vec<Job> = Vec::new();
    let submit_stage = |stage: &str, deps: Vec<String>, jobs: &mut Vec<Job>| -> Result<()> {
        let mut cmd = vec![exe.clone(), "__stage".into()];
        cmd.extend(args.iter().cloned());
        cmd.extend(["--stage".into(), stage.to_string(), "--submitted".into(), marker.display().to_string()]);
        let mut res = spec.executor.train.clone();
        // A training job requeues itself when stopped before its time limit (`__stage`).
        res.extra.insert(0, "--requeue".into());
        jobs.push(sbatch(stage, &logs, &res, &deps, &cmd)?);
        Ok(())
    };
    let job_of = |jobs: &[Job], stage: &str| jobs.iter().find(|j| j.stage == stage).map(|j| j.id.clone());
    for p in &planned {
        if !p.cached {
            let deps: Vec<String> = p.init_from.iter().filter_map(|f| job_of(&jobs, f)).collect();
            submit_stage(&p.name, deps, &mut jobs)?;
        } else {
            eprintln!("{}: in the stage cache, not submitted", p.name);
        }
        // Each evaluation after its training.
        if !p.eval_cached {
            let deps: Vec<String> = job_of(&jobs, &p.name).into_iter().collect();
            submit_stage(&p.eval_name(), deps, &mut jobs)?;
        } else {
            eprintln!("{}: in the score cache, not submitted", p.eval_name());
        }
    }
    let deps: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
    let mut cmd = vec![exe.clone(), "run".into()];
    cmd.extend(args.iter().cloned());
    cmd.extend(["--executor".into(), "local".into()]);
    jobs.push(sbatch("report", &logs, &spec.executor.report, &deps, &cmd)?);
    let record = logs.join(format!("{}.json", crate::util::utc_stamp(std::time::SystemTime::now())));
    crate::util::write_atomic(&record, serde_json::to_string_pretty(&jobs).expect("json").as_bytes())?;
    if wait {
        follow(&jobs, spec.executor.poll_s)?;
    }
    Ok(jobs)
}

/// A job's state as Slurm reports it, and its exit code once finished.
#[derive(Clone, Debug, PartialEq)]
pub struct JobState {
    pub state: String,
    pub exit: Option<i32>,
    pub reason: String,
}

/// The states of `ids`: one `squeue` call (pending and running), then for finished jobs one
/// `sacct` call (clusters with accounting) and, for any still unknown, one `scontrol` call.
pub fn states(ids: &[String]) -> Result<std::collections::HashMap<String, JobState>> {
    let mut out = std::collections::HashMap::new();
    let q =
        slurm("squeue", &["-h".into(), "-o".into(), "%i|%T|%r".into(), "-j".into(), ids.join(",")]).unwrap_or_default();
    for line in q.lines() {
        let f: Vec<&str> = line.trim().split('|').collect();
        if f.len() == 3 {
            out.insert(f[0].to_string(), JobState { state: f[1].into(), exit: None, reason: f[2].into() });
        }
    }
    if ids.iter().any(|i| !out.contains_key(i)) {
        // Finished jobs: the accounting database when the cluster has one (one call).
        let acct = slurm(
            "sacct",
            &[
                "-n".into(),
                "-P".into(),
                "-X".into(),
                "-o".into(),
                "JobID,State,ExitCode,Reason".into(),
                "-j".into(),
                ids.join(","),
            ],
        )
        .unwrap_or_default();
        let mut finished = std::collections::HashMap::new();
        for line in acct.lines() {
            let f: Vec<&str> = line.trim().split('|').collect();
            if f.len() == 4 && ids.iter().any(|i| i == f[0]) {
                // "CANCELLED by 0" → CANCELLED. Later lines are newer records (a job id
                // reused after a controller restart): they win.
                let state = f[1].split_whitespace().next().unwrap_or_default().to_string();
                let exit = f[2].split(':').next().and_then(|c| c.parse().ok());
                finished.insert(f[0].to_string(), JobState { state, exit, reason: f[3].into() });
            }
        }
        for (id, st) in finished {
            out.entry(id).or_insert(st);
        }
    }
    if ids.iter().any(|i| !out.contains_key(i)) {
        let s = slurm("scontrol", &["-o".into(), "show".into(), "job".into()]).unwrap_or_default();
        for line in s.lines() {
            let field =
                |k: &str| line.split_whitespace().find_map(|w| w.strip_prefix(k)).unwrap_or_default().to_string();
            let id = field("JobId=");
            if ids.contains(&id) && !out.contains_key(&id) {
                let exit = field("ExitCode=").split(':').next().and_then(|c| c.parse().ok());
                out.insert(id, JobState { state: field("JobState="), exit, reason: field("Reason=") });
            }
        }
    }
    Ok(out)
}

/// Poll until the report job ends or a job fails; the pipeline's exit code either way.
pub fn follow(jobs: &[Job], poll_s: u64) -> Result<()> {
    let ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
    let mut last = String::new();
    loop {
        let st = states(&ids)?;
        let line: Vec<String> =
            jobs.iter().map(|j| format!("{} {}", j.stage, st.get(&j.id).map_or("?", |s| s.state.as_str()))).collect();
        let line = line.join(", ");
        if line != last {
            tracing::info!("jobs: {line}");
            last = line;
        }
        for j in jobs {
            let Some(s) = st.get(&j.id) else { continue };
            let failed = matches!(
                s.state.as_str(),
                "FAILED"
                    | "CANCELLED"
                    | "TIMEOUT"
                    | "OUT_OF_MEMORY"
                    | "NODE_FAIL"
                    | "PREEMPTED"
                    | "BOOT_FAIL"
                    | "DEADLINE"
            ) || s.reason.contains("DependencyNeverSatisfied");
            if failed {
                let rest: Vec<String> = ids.iter().filter(|i| **i != j.id).cloned().collect();
                let _ = slurm("scancel", &rest);
                let code = match s.exit {
                    Some(c) if c > 0 => c,
                    _ if s.state == "TIMEOUT" || s.state == "CANCELLED" || s.state == "PREEMPTED" => {
                        ExitCode::Interrupted as i32
                    }
                    _ => 1,
                };
                return Err(Failure {
                    code: ExitCode::from_code(code),
                    message: format!(
                        "Slurm job {} ({}) ended {} (exit {code}); its log: {}. Run the same command again to submit what is missing",
                        j.id,
                        j.stage,
                        s.state,
                        j.log.display()
                    ),
                });
            }
        }
        let report = jobs.last().expect("a report job");
        if st.get(&report.id).is_some_and(|s| s.state == "COMPLETED") {
            tracing::info!(log = %report.log.display(), "all jobs finished");
            if let Ok(text) = std::fs::read_to_string(&report.log) {
                print!("{text}");
            }
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_secs(poll_s.max(1)));
    }
}

/// `run-pipeline jobs`: the latest submission of each pipeline under `reports`, job by job.
pub fn status(reports: &Path) -> Result<String> {
    let mut out = String::new();
    let Ok(rd) = std::fs::read_dir(reports) else { return Ok(format!("no reports under {}\n", reports.display())) };
    let mut pipelines: Vec<PathBuf> =
        rd.filter_map(|e| e.ok()).map(|e| e.path().join(".slurm")).filter(|p| p.is_dir()).collect();
    pipelines.sort();
    for dir in pipelines {
        let Some(latest) = std::fs::read_dir(&dir)
            .ok()
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .max()
        else {
            continue;
        };
        let jobs: Vec<Job> = std::fs::read_to_string(&latest)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .ok_or_else(|| Failure::data(format!("{}: unreadable job record", latest.display())))?;
        let ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
        let st = states(&ids)?;
        out.push_str(&format!("{} ({})\n", dir.parent().unwrap_or(&dir).display(), latest.display()));
        for j in &jobs {
            let (state, exit) = st.get(&j.id).map_or(("unknown to Slurm now".to_string(), String::new()), |s| {
                (s.state.clone(), s.exit.map(|c| format!(" exit {c}")).unwrap_or_default())
            });
            out.push_str(&format!("  {:<28} job {:<8} {state}{exit}  {}\n", j.stage, j.id, j.log.display()));
        }
    }
    if out.is_empty() {
        out = format!("no Slurm submissions under {}\n", reports.display());
    }
    Ok(out)
}

//! End-to-end tests: drive the `run-pipeline` binary the way a user does.

mod common;

use common::{run, smoke, text};

use std::path::{Path, PathBuf};
use std::process::Command;

use run_pipeline::reports::{Column, Table};

fn repo() -> PathBuf {
    common::repo_root()
}

fn run_dirs(reports: &Path) -> Vec<PathBuf> {
    let root = reports.join("denoise");
    let mut v: Vec<PathBuf> = match std::fs::read_dir(&root) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => vec![],
    };
    v.sort();
    v
}

fn strs(c: Option<&Column>) -> Vec<String> {
    match c {
        Some(Column::Str(v)) => v.iter().map(|s| s.clone().unwrap_or_default()).collect(),
        other => panic!("not a string column: {other:?}"),
    }
}

fn floats(c: Option<&Column>) -> Vec<f64> {
    match c {
        Some(Column::F64(v)) => v.iter().map(|s| s.unwrap_or(f64::NAN)).collect(),
        other => panic!("not a float column: {other:?}"),
    }
}

#[test]
fn smoke_profile_runs_every_stage_and_reuses_shards() {
    let reports = common::tmpdir("cli", "smoke");
    let dir_arg = format!("report.dir={}", reports.display());
    let out = smoke(&reports, &[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status.code());

    // Plain progress lines without a terminal, and the summary table at the end.
    assert!(stderr.contains("train:noise_da:seed0"), "{stderr}");
    assert!(stderr.contains("step=8"), "{stderr}");
    for m in ["input", "source_only", "noise_da"] {
        assert!(stdout.contains(m), "summary lacks {m}:\n{stdout}");
    }

    let runs = run_dirs(&reports);
    assert_eq!(runs.len(), 1);
    let run_dir = &runs[0];
    for f in [
        "per_image.parquet",
        "per_image.csv",
        "summary.parquet",
        "summary.csv",
        "summary.md",
        "curves.parquet",
        "curves.csv",
        "resolved.json",
        "provenance.json",
        "comparisons.parquet",
        "comparisons.csv",
        "recipes.csv",
        "checkpoints/source_only-seed0.bpk",
        "checkpoints/noise_da-seed0.bpk",
        "checkpoints/source_only-seed0-ema.bpk",
        "checkpoints/noise_da-seed0-ema.bpk",
        "figures/curves.svg",
        "report.html",
        "figures/crops/camera-sim-test/crops.json",
        "figures/camera-sim-test-crops.png",
        "figures/awgn-test-crops.png",
    ] {
        assert!(run_dir.join(f).is_file(), "missing {f}");
    }
    // No temporary files are left behind.
    for e in std::fs::read_dir(run_dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.contains(".tmp-"), "left {name}");
    }

    // Per-image rows: 2 test sets × 4 images × (input + 2 methods).
    let per_image = Table::read_parquet(&run_dir.join("per_image.parquet")).unwrap();
    assert_eq!(per_image.rows(), 24);
    let methods = strs(per_image.get("method"));
    let tests = strs(per_image.get("test_set"));
    let psnr = floats(per_image.get("psnr"));
    let ssim = floats(per_image.get("ssim"));
    assert!(psnr.iter().all(|p| p.is_finite() && *p > 5.0 && *p < 60.0), "{psnr:?}");
    assert!(ssim.iter().all(|s| *s > -1.0 && *s <= 1.0), "{ssim:?}");
    // Degradation parameters travel to the report: σ for AWGN rows, ISO for camera rows.
    let sigma = floats(per_image.get("sigma"));
    match per_image.get("iso") {
        Some(Column::U64(iso)) => {
            for i in 0..per_image.rows() {
                if tests[i] == "camera-sim-test" {
                    assert!(iso[i].is_some() && sigma[i].is_nan());
                } else {
                    assert!(iso[i].is_none() && sigma[i].is_finite());
                }
            }
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(methods.iter().filter(|m| *m == "input").count(), 8);

    // CSV and Parquet hold the same rows.
    let csv_rows = csv::Reader::from_path(run_dir.join("per_image.csv")).unwrap().records().count();
    assert_eq!(csv_rows, 24);

    // Summary: 2 test sets × 3 methods, input first.
    let summary = Table::read_parquet(&run_dir.join("summary.parquet")).unwrap();
    assert_eq!(summary.rows(), 6);
    assert_eq!(strs(summary.get("method"))[0], "input");

    // Curves for both methods; Noise-DA logs its diffusion terms.
    let curves = Table::read_parquet(&run_dir.join("curves.parquet")).unwrap();
    let cm = strs(curves.get("method"));
    assert!(cm.contains(&"source_only".to_string()) && cm.contains(&"noise_da".to_string()));
    let mse_pos = match curves.get("mse_pos") {
        Some(Column::F64(v)) => v.clone(),
        other => panic!("{other:?}"),
    };
    for (m, v) in cm.iter().zip(&mse_pos) {
        assert_eq!(m == "noise_da", v.is_some(), "{m}: {v:?}");
    }
    // The per-domain gradient diagnostic at every logged Noise-DA step.
    for col in ["grad_syn", "grad_real"] {
        let g = floats(curves.get(col));
        for (m, v) in cm.iter().zip(&g) {
            assert_eq!(m == "noise_da", v.is_finite() && *v > 0.0, "{col} {m}: {v}");
        }
    }
    // Validation every 4 steps (the smoke profile): PSNR at steps 4 and 8, nowhere else.
    let steps = match curves.get("step") {
        Some(Column::U64(v)) => v.iter().map(|s| s.unwrap()).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    let val = match curves.get("val_psnr:camera-sim-val") {
        Some(Column::F64(v)) => v.clone(),
        other => panic!("no validation column: {other:?}"),
    };
    for (s, v) in steps.iter().zip(&val) {
        assert_eq!(s % 4 == 0, v.is_some_and(|p| p > 5.0 && p < 60.0), "step {s}: {v:?}");
    }

    // noise_da against source_only, image by image, per test set.
    let cmp = Table::read_parquet(&run_dir.join("comparisons.parquet")).unwrap();
    assert_eq!(strs(cmp.get("method")), vec!["noise_da", "noise_da"]);
    assert_eq!(strs(cmp.get("baseline")), vec!["source_only", "source_only"]);
    let (d, lo, hi) =
        (floats(cmp.get("delta_psnr")), floats(cmp.get("delta_psnr_lo95")), floats(cmp.get("delta_psnr_hi95")));
    for k in 0..2 {
        assert!(lo[k] <= d[k] && d[k] <= hi[k], "{lo:?} {d:?} {hi:?}");
    }
    let summary_md = text(&std::fs::read(run_dir.join("summary.md")).unwrap());
    assert!(summary_md.contains("Paired differences against source_only"));

    // Diagnostics: the D probe of the Noise-DA stage and the smoke profile's premise check.
    let diag: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("diagnostics.json")).unwrap()).unwrap();
    let probes = diag["d_probe"].as_array().unwrap();
    assert_eq!(probes.len(), 1, "one Noise-DA stage: {diag}");
    assert_eq!((probes[0]["recipe"].as_str(), probes[0]["test"].as_str()), (Some("noise_da"), Some("camera-sim-test")));
    for k in ["reference", "restored", "input"] {
        assert!(probes[0][k].as_f64().is_some_and(|v| v.is_finite() && v > 0.0), "{k}: {diag}");
    }
    let premise = diag["premise"]["points"].as_array().unwrap();
    assert_eq!(premise.iter().map(|p| p["sigma"].as_f64().unwrap()).collect::<Vec<_>>(), vec![0.0, 25.0, 50.0]);
    assert!(summary_md.contains("D probe") && summary_md.contains("Premise check"), "{summary_md}");

    // Provenance and the resolved pipeline with the override recorded.
    let prov: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("provenance.json")).unwrap()).unwrap();
    assert_eq!(prov["profile"], "smoke");
    assert_eq!(prov["overrides"][0], dir_arg.as_str());
    assert_eq!(prov["backend"], "flex");
    assert_eq!(prov["scored_weights"], "raw");
    assert_eq!(prov["ema_decay"], 0.9999);
    assert!(prov["wall_s"].as_f64().unwrap() > 0.0);
    assert_eq!(prov["training"].as_array().unwrap().len(), 2);
    for t in prov["training"].as_array().unwrap() {
        // The best-on-validation checkpoint and the final step checkpoint exist.
        let best = PathBuf::from(t["best_checkpoint"]["path"].as_str().unwrap());
        assert!(best.join("model.bpk").is_file() && best.join("state.json").is_file(), "{best:?}");
        let last = PathBuf::from(t["last_checkpoint"].as_str().unwrap());
        assert!(last.ends_with("step-00000008") && last.join("optim.bpk").is_file(), "{last:?}");
    }
    assert_eq!(prov["datasets"]["source"]["cached"], false);
    let resolved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("resolved.json")).unwrap()).unwrap();
    assert_eq!(resolved["train"]["steps"], 8);
    assert_eq!(resolved["report"]["dir"], reports.display().to_string());

    // A second run reuses the materialised shards and reproduces the input scores exactly.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out2 = smoke(&reports, &[]);
    assert!(out2.status.success(), "{}", text(&out2.stderr));
    let runs = run_dirs(&reports);
    assert_eq!(runs.len(), 2);
    let prov2: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(runs[1].join("provenance.json")).unwrap()).unwrap();
    assert_eq!(prov2["datasets"]["source"]["cached"], true);
    assert_eq!(prov2["datasets"]["target"]["cached"], true);
    assert_eq!(prov2["datasets"]["source"]["shard"], prov["datasets"]["source"]["shard"]);
    let per_image2 = Table::read_parquet(&runs[1].join("per_image.parquet")).unwrap();
    let psnr2 = floats(per_image2.get("psnr"));
    assert_eq!(&psnr2[..8], &psnr[..8], "input scores must be identical across runs");
    // The training stages were reused from the stage cache, not trained again.
    assert!(text(&out2.stderr).contains("reusing the finished stage"), "{}", text(&out2.stderr));
    assert!(text(&out2.stderr).contains("reusing the cached scores"), "{}", text(&out2.stderr));
    assert!(runs[1].join("figures/camera-sim-test-crops.png").is_file());
    let ids = strs(per_image2.get("run_id"));
    assert!(ids.iter().all(|r| runs[1].ends_with(r)), "reused rows carry this run's id: {ids:?}");
    assert!(prov2["training"].as_array().unwrap().iter().all(|t| t["reused_stage"].is_string()), "{prov2}");
    assert_eq!(psnr2, psnr);
    // The plan says why a stage would run: a config edit, changed input data, --force.
    let plan = |extra: &[&str]| {
        let mut a = vec!["plan", "pipelines/denoise.yaml", "--profile", "smoke", "--set", &dir_arg];
        a.extend_from_slice(extra);
        let out = run(&a);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let p = plan(&[]);
    assert!(p.contains("train:source_only:seed0: reuse") && p.contains("train:noise_da:seed0: reuse"), "{p}");
    assert!(p.contains("0 training stage(s) to run, 2 reused"), "{p}");
    assert!(p.contains("evaluate:noise_da:seed0: reuse cached scores"), "{p}");
    assert!(p.contains("diagnostics:premise: reuse the cached result"), "{p}");
    let p = plan(&["--set", "train.noise_da.w=0.5"]);
    assert!(p.contains("train:source_only:seed0: reuse"), "{p}");
    assert!(p.contains("train:noise_da:seed0: run (new config key)"), "{p}");
    assert!(p.contains("steps at"), "the cost comes from the measured speed: {p}");
    let p = plan(&["--set", "source.count=11"]);
    assert!(p.contains("train:noise_da:seed0: run (changed input data)"), "{p}");
    assert!(p.contains("diagnostics:premise: run (D trained alone)"), "{p}");
    let p = plan(&["--force", "noise_da"]);
    assert!(
        p.contains("train:noise_da:seed0: run (forced by --force/--from)") && p.contains("source_only:seed0: reuse")
    );
    let p = plan(&["--from", "train:source_only"]);
    assert!(p.contains("2 training stage(s) to run, 0 reused"), "{p}");
    assert_eq!(run(&["plan", "pipelines/denoise.yaml", "--force", "nosuch"]).status.code(), Some(2));
    // Forced re-training with the same seeds and data reproduces the scores exactly.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out3 = smoke(&reports, &["--force", "train"]);
    assert!(out3.status.success(), "{}", text(&out3.stderr));
    assert!(!text(&out3.stderr).contains("reusing the finished stage"));
    let runs = run_dirs(&reports);
    let per_image3 = Table::read_parquet(&runs[2].join("per_image.parquet")).unwrap();
    assert_eq!(floats(per_image3.get("psnr")), psnr, "training is reproducible");

    // Across runs: the forced re-run's noise_da against the first run's source_only, image by
    // image, equals the first run's own comparison (identical scores).
    let id = |d: &Path| d.file_name().unwrap().to_string_lossy().to_string();
    let across = reports.join("across");
    let base = format!("{}/source_only", id(&runs[0]));
    let out = run(&[
        "report",
        runs[0].to_str().unwrap(),
        runs[2].to_str().unwrap(),
        "--baseline",
        &base,
        "--out",
        across.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let x = Table::read_parquet(&across.join("comparisons.parquet")).unwrap();
    let own = Table::read_parquet(&runs[0].join("comparisons.parquet")).unwrap();
    let (xm, xt, xd) = (strs(x.get("method")), strs(x.get("test_set")), floats(x.get("delta_psnr")));
    let (ot, od) = (strs(own.get("test_set")), floats(own.get("delta_psnr")));
    let target = format!("{}/noise_da", id(&runs[2]));
    for (k, test) in ot.iter().enumerate() {
        let i = (0..x.rows()).find(|&i| xm[i] == target && &xt[i] == test).expect("cross-run row");
        assert!((xd[i] - od[k]).abs() < 1e-9, "{test}: {} vs {}", xd[i], od[k]);
    }
    assert!(std::fs::read_to_string(across.join("benchmark.md")).unwrap().contains("across runs"));
    let out = run(&["report", runs[0].to_str().unwrap(), "--baseline", "nosuch", "--out", across.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    // The benchmark folder: its own files are replaced by a later report, a file it did not
    // write is not (exit 2, named) unless --force; a file as --out is refused.
    let again = |extra: &[&str]| {
        let mut a = vec!["report", runs[0].to_str().unwrap(), "--out", across.to_str().unwrap()];
        a.extend_from_slice(extra);
        run(&a)
    };
    assert!(again(&[]).status.success());
    std::fs::write(across.join("benchmark.html"), "my notes").unwrap();
    let out = again(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("benchmark.html") && text(&out.stderr).contains("--force"));
    assert_eq!(std::fs::read_to_string(across.join("benchmark.html")).unwrap(), "my notes");
    assert!(again(&["--force"]).status.success());
    assert_ne!(std::fs::read_to_string(across.join("benchmark.html")).unwrap(), "my notes");
    let out = run(&["report", runs[0].to_str().unwrap(), "--out", across.join("benchmark.md").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("must be a folder"), "{}", text(&out.stderr));

    // `report` re-summarises a finished run from its per-image scores: the same summary again.
    let md_before = std::fs::read_to_string(runs[0].join("summary.md")).unwrap();
    for f in ["summary.md", "summary.parquet", "comparisons.csv"] {
        std::fs::remove_file(runs[0].join(f)).unwrap();
    }
    let out = run(&["report", runs[0].to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(runs[0].join("summary.md")).unwrap(), md_before);
    assert!(runs[0].join("summary.parquet").is_file() && runs[0].join("comparisons.csv").is_file());
    let out = run(&["report", reports.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "not a run directory: {}", text(&out.stderr));
    std::fs::remove_dir_all(&reports).unwrap();
}

#[test]
fn config_errors_point_at_file_line_col_and_exit_2_before_any_work() {
    let dir = common::tmpdir("cli", "config");
    let reports = dir.join("reports");
    let src = std::fs::read_to_string(repo().join("pipelines/denoise.yaml")).unwrap();
    // A typo'd key on a known line.
    let bad = src.replacen("  lr: 3.0e-4", "  lerning_rate: 3.0e-4", 1);
    let line = bad.lines().position(|l| l.contains("lerning_rate")).unwrap() + 1;
    let file = dir.join("bad.yaml");
    std::fs::write(&file, &bad).unwrap();
    let dir_arg = format!("report.dir={}", reports.display());
    let out = run(&[file.to_str().unwrap(), "--set", &dir_arg]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("bad.yaml:{line}:3")), "{err}");
    assert!(err.contains("did you mean \"lr\"?") || err.contains("unknown key \"lerning_rate\""), "{err}");

    // A wrongly typed override names the --set argument.
    let out = run(&["pipelines/denoise.yaml", "--set", "train.steps=many", "--set", &dir_arg]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--set train.steps=many"), "{err}");

    // An unknown override key gets a suggestion.
    let out = run(&["pipelines/denoise.yaml", "--set", "train.step=5", "--set", &dir_arg]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("did you mean \"steps\"?"), "{err}");

    // Unknown profile.
    let out = run(&["pipelines/denoise.yaml", "--profile", "smok", "--set", &dir_arg]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("did you mean \"smoke\"?"), "{err}");

    // Semantic check at the offending key: a patch that the UNet cannot halve.
    let out = run(&["pipelines/denoise.yaml", "--set", "train.patch=50", "--set", &dir_arg]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--set train.patch=50: train.patch: must be a positive multiple of 4"), "{err}");

    // Nothing was started: no run directory.
    assert!(!reports.exists(), "a config error must stop before any work");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_dataset_root_exits_3_naming_dataset_path_and_source() {
    let dir = common::tmpdir("cli", "paper");
    let reports = dir.join("reports");
    let out = Command::new(env!("CARGO_BIN_EXE_run-pipeline"))
        .args(["pipelines/denoise.yaml", "--profile", "paper", "--set", &format!("report.dir={}", reports.display())])
        .current_dir(repo())
        .env("CI", "true")
        .env("DIV2K_ROOT", dir.join("no-such-div2k"))
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("\"clean-div2k\""), "{err}");
    assert!(err.contains("no-such-div2k"), "{err}");
    assert!(err.contains("DIV2K"), "{err}");
    assert!(!reports.exists(), "data problems found before the run starts leave no run directory");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn plan_and_datasets_list() {
    let out = run(&["plan", "pipelines/denoise.yaml", "--profile", "smoke"]);
    let s = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for stage in ["data", "score:input", "train:source_only:seed0", "evaluate:noise_da:seed0", "report"] {
        assert!(s.contains(stage), "{s}");
    }
    // The paper profile's networks at their real sizes.
    let out = run(&["describe", "pipelines/denoise.yaml", "--profile", "paper"]);
    let s = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(s.contains("UNet [64, 128, 256, 512] (release up-sampling): 8.559 M parameters, 12.438 GMACs"), "{s}");
    assert!(s.contains("62.6"), "{s}");
    let out = run(&["datasets", "list"]);
    let s = text(&out.stdout);
    assert!(out.status.success());
    assert!(s.contains("dead-leaves") && s.contains("embedded"), "{s}");
    assert!(s.contains("sidd-medium"), "{s}");
}

/// `run-pipeline score` on two images and on two folders (by name and by natural order),
/// against the scikit-image / MATLAB-formula reference values of the protocol fixtures.
#[test]
fn score_command_matches_reference_values() {
    let fx = repo().join("tests/fixtures/protocols");
    let refs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.join("reference.json")).unwrap()).unwrap();
    let pair = &refs["pairs"][0];
    let (deg, reference) = (fx.join(pair["degraded"].as_str().unwrap()), fx.join(pair["reference"].as_str().unwrap()));
    for protocol in ["rgb", "y-matlab", "sidd", "realblur-noalign"] {
        let out = run(&[
            "score",
            deg.to_str().unwrap(),
            reference.to_str().unwrap(),
            "--protocol",
            protocol,
            "--format",
            "json",
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let want = &pair["scores"][protocol];
        assert!((v["rows"][0]["psnr"].as_f64().unwrap() - want["psnr"].as_f64().unwrap()).abs() < 1e-6, "{protocol}");
        assert!((v["rows"][0]["ssim"].as_f64().unwrap() - want["ssim"].as_f64().unwrap()).abs() < 1e-6, "{protocol}");
    }

    // Folders: restored/<n>.png vs reference/<n>.png by name, then by order with other names.
    let dir = common::tmpdir("cli", "score");
    let (a, b, c) = (dir.join("restored"), dir.join("gt"), dir.join("gt_renamed"));
    for d in [&a, &b, &c] {
        std::fs::create_dir_all(d).unwrap();
    }
    let pairs = refs["pairs"].as_array().unwrap();
    for (k, p) in pairs.iter().take(3).enumerate() {
        std::fs::copy(fx.join(p["degraded"].as_str().unwrap()), a.join(format!("img{}.png", k + 1))).unwrap();
        std::fs::copy(fx.join(p["reference"].as_str().unwrap()), b.join(format!("img{}.png", k + 1))).unwrap();
        std::fs::copy(fx.join(p["reference"].as_str().unwrap()), c.join(format!("gt_{}.png", k + 1))).unwrap();
    }
    let mean_ref = pairs.iter().take(3).map(|p| p["scores"]["y-matlab"]["psnr"].as_f64().unwrap()).sum::<f64>() / 3.0;
    let out = run(&["score", a.to_str().unwrap(), b.to_str().unwrap(), "--protocol", "y-matlab", "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["images"], 3);
    assert!((v["mean_psnr"].as_f64().unwrap() - mean_ref).abs() < 1e-9);
    // Different names: by name fails clearly, by order works.
    let out = run(&["score", a.to_str().unwrap(), c.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--by-order"));
    let out = run(&[
        "score",
        a.to_str().unwrap(),
        c.to_str().unwrap(),
        "--by-order",
        "--protocol",
        "y-matlab",
        "--format",
        "csv",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let csv_out = text(&out.stdout);
    assert_eq!(csv_out.lines().count(), 4, "{csv_out}");
    assert!(csv_out.starts_with("restored,reference,protocol,psnr,ssim"), "{csv_out}");
    // Unknown protocol is a usage error.
    let out = run(&["score", a.to_str().unwrap(), b.to_str().unwrap(), "--protocol", "ycbcr"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown scoring protocol"), "{}", text(&out.stderr));
    // A grayscale image against a colour reference is refused, not scored as replicated gray.
    let (g1, g2) = (dir.join("gray.png"), dir.join("rgb.png"));
    image::GrayImage::from_fn(16, 16, |x, y| image::Luma([(x * 9 + y) as u8])).save(&g1).unwrap();
    image::RgbImage::from_fn(16, 16, |x, y| image::Rgb([(x * 9 + y) as u8, 3, 200])).save(&g2).unwrap();
    let out = run(&["score", g1.to_str().unwrap(), g2.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("is grayscale and"), "{}", text(&out.stderr));
    // A 16-bit image is scored at 8 bits, as the protocols do, and said so: the same scores
    // as its 8-bit rounding, and a warning naming the file.
    let (deep, rounded) = (dir.join("deep.png"), dir.join("rounded.png"));
    let v16 = |x: u32, y: u32, c: u32| ((x * 4099 + y * 1031 + c * 7919) % 65536) as u16;
    image::ImageBuffer::<image::Rgb<u16>, _>::from_fn(16, 16, |x, y| {
        image::Rgb([v16(x, y, 0), v16(x, y, 1), v16(x, y, 2)])
    })
    .save(&deep)
    .unwrap();
    image::DynamicImage::ImageRgb16(image::open(&deep).unwrap().to_rgb16()).to_rgb8().save(&rounded).unwrap();
    let psnr_of = |restored: &std::path::Path| {
        let out = run(&["score", restored.to_str().unwrap(), g2.to_str().unwrap(), "--format", "json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (v["rows"][0]["psnr"].as_f64().unwrap(), text(&out.stderr))
    };
    let ((deep_psnr, warned), (rounded_psnr, quiet)) = (psnr_of(&deep), psnr_of(&rounded));
    assert_eq!(deep_psnr, rounded_psnr);
    assert!(warned.contains("16-bit image scored at 8 bits") && warned.contains("deep.png"), "{warned}");
    assert!(!quiet.contains("-bit image"), "{quiet}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A back-end this build lacks is a usage error before any work; `auto` falls back to flex.
#[test]
fn backend_selection() {
    let dir = common::tmpdir("cli", "backend");
    if !cfg!(feature = "wgpu") {
        let out = smoke(&dir, &["--backend", "wgpu"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("--features wgpu"));
        assert!(!dir.join("denoise").exists());
    }
    let out = smoke(&dir, &["--backend", "gpu"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--set backend=gpu"), "{}", text(&out.stderr));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// SIGTERM during training stops at a safe point with exit 130 and a checkpoint; running the
/// same command again continues that run and ends with the same scores as an uninterrupted run.
#[test]
fn interrupted_run_continues_where_it_stopped() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let reports = common::tmpdir("cli", "resume");
    let dir_arg = format!("report.dir={}", reports.display());
    let args = [
        "pipelines/denoise.yaml",
        "--profile",
        "smoke",
        "--set",
        &dir_arg,
        "--set",
        "train.steps=200",
        "--set",
        "train.log_every=10",
        "--set",
        "train.checkpoint.every=50",
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_run-pipeline"))
        .args(args)
        .current_dir(repo())
        .env("CI", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("stage=train:noise_da:seed0") && line.contains("step=") {
            break;
        }
    }
    // The same command while the first still runs: the run directory is locked, exit 75.
    let second = run(&args);
    let second_err = text(&second.stderr);
    assert_eq!(second.status.code(), Some(75), "{second_err}");
    assert!(second_err.contains(&format!("locked by another run (pid {}", child.id())), "{second_err}");
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    for line in lines {
        seen.push_str(&line.unwrap());
        seen.push('\n');
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{seen}");
    assert!(seen.contains("run the same command again to continue"), "{seen}");
    let runs = run_dirs(&reports);
    assert_eq!(runs.len(), 1);
    assert!(!runs[0].join("provenance.json").exists(), "an interrupted run is not finished");
    let ckpts = runs[0].join("checkpoints/noise_da-seed0");
    assert!(std::fs::read_dir(&ckpts).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().starts_with("step-")));
    assert!(!runs[0].join("run.lock").exists(), "an interrupted run releases its lock");
    let listed = text(&run(&["runs", "--dir", reports.to_str().unwrap()]).stdout);
    assert!(listed.contains("| unfinished"), "{listed}");
    // A crashed holder's lock (its pid is gone) does not block the continuation.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
    std::fs::write(
        runs[0].join("run.lock"),
        format!(r#"{{"pid": 4194321, "host": "{host}", "started_unix": 1, "heartbeat_unix": 1}}"#),
    )
    .unwrap();

    // The same command continues the run in place.
    let out = run(&args);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("continuing the unfinished run"), "{stderr}");
    assert!(stderr.contains("continuing from checkpoint"), "{stderr}");
    assert!(stderr.contains("taking over a stale lock"), "{stderr}");
    assert_eq!(run_dirs(&reports).len(), 1);
    let prov: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(runs[0].join("provenance.json")).unwrap()).unwrap();
    assert_eq!(prov["resumed"], true);
    let resumed_from = prov["training"][1]["resumed_from_step"].as_u64().unwrap();
    assert!(resumed_from > 0 && resumed_from < 200, "{resumed_from}");

    // --resume with nothing left to resume is a usage error; --fresh starts a new run, and an
    // uninterrupted run scores exactly the same.
    let mut with = args.to_vec();
    with.push("--resume");
    let out = run(&with);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no unfinished run"), "{}", text(&out.stderr));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let mut fresh = args.to_vec();
    // --force train: really train again (not reuse the resumed run's cached stages).
    fresh.extend(["--fresh", "--force", "train"]);
    let out = run(&fresh);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let runs = run_dirs(&reports);
    assert_eq!(runs.len(), 2);
    let scores = |dir: &Path| {
        let t = Table::read_parquet(&dir.join("per_image.parquet")).unwrap();
        (strs(t.get("method")), floats(t.get("psnr")), floats(t.get("ssim")))
    };
    assert_eq!(scores(&runs[0]), scores(&runs[1]), "resumed and uninterrupted runs must score the same");
    std::fs::remove_dir_all(&reports).unwrap();
}

/// The derain and deblur pipelines run end to end on their embedded data (synthetic source,
/// real-like target), their degradation parameters reach the per-image table, and `report`
/// over the three tasks' runs writes one benchmark table in the paper's layout.
#[test]
fn derain_and_deblur_pipelines_join_the_benchmark_table() {
    let reports = common::tmpdir("cli", "tasks");
    let dir_arg = format!("report.dir={}", reports.display());
    let mut run_dirs = Vec::new();
    for (pipeline, name) in [
        ("pipelines/denoise.yaml", "denoise"),
        ("pipelines/derain.yaml", "derain"),
        ("pipelines/deblur.yaml", "deblur"),
    ] {
        let out = run(&[pipeline, "--profile", "smoke", "--set", &dir_arg]);
        assert!(out.status.success(), "{pipeline}: exit {:?}\n{}", out.status.code(), text(&out.stderr));
        let dirs: Vec<PathBuf> = std::fs::read_dir(reports.join(name)).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(dirs.len(), 1, "{name}");
        run_dirs.push(dirs[0].clone());
    }
    // Another pipeline with the same clean source, degradation and data seed reuses the
    // synthesised shards.
    let out =
        run(&["pipelines/ablation.yaml", "--profile", "smoke", "--set", &dir_arg, "--set", "methods=[no_diffusion]"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ablation: Vec<PathBuf> =
        std::fs::read_dir(reports.join("ablation")).unwrap().map(|e| e.unwrap().path()).collect();
    let prov: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ablation[0].join("provenance.json")).unwrap()).unwrap();
    assert_eq!(prov["datasets"]["source"]["cached"], true, "{prov}");

    // Per-image parameters: the real-like rain's layers and density, the real-like blur's kind
    // and kernel size.
    let table = |dir: &Path| Table::read_parquet(&dir.join("per_image.parquet")).unwrap();
    let rain = table(&run_dirs[1]);
    match (rain.get("rain_layers"), rain.get("rain_density")) {
        (Some(Column::U64(l)), Some(Column::F64(d))) => {
            assert!(l.iter().all(|v| v.is_some_and(|n| n >= 2)), "{l:?}");
            assert!(d.iter().all(|v| v.is_some_and(|x| x > 0.0 && x < 1.0)), "{d:?}");
        }
        other => panic!("{other:?}"),
    }
    let blur = table(&run_dirs[2]);
    assert!(strs(blur.get("blur")).iter().all(|k| k == "shake"), "{:?}", blur.get("blur"));
    let protocols = strs(blur.get("protocol"));
    assert!(protocols.iter().all(|p| p == "realblur"), "{protocols:?}");
    for t in [&rain, &blur] {
        assert!(floats(t.get("psnr")).iter().all(|p| p.is_finite() && *p > 5.0), "{:?}", t.get("psnr"));
    }

    let out_dir = reports.join("bench-out");
    let args: Vec<&str> = ["report"]
        .into_iter()
        .chain(run_dirs.iter().map(|d| d.to_str().unwrap()))
        .chain(["--out", out_dir.to_str().unwrap()])
        .collect();
    let out = run(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let md = std::fs::read_to_string(out_dir.join("benchmark.md")).unwrap();
    let header = md.lines().find(|l| l.starts_with("| method")).unwrap();
    for col in ["denoise: camera-sim-test", "derain: rain-sim-test", "deblur: blur-sim-j-test", "paper: SPA-Data test"]
    {
        assert!(header.contains(col), "{md}");
    }
    // The paper's number for the same algorithm in the paper's column beside each task.
    let noise_da: Vec<&str> =
        md.lines().find(|l| l.starts_with("| noise_da ")).unwrap().split('|').map(str::trim).collect();
    assert_eq!((noise_da[5], noise_da[7]), ("34.39 / 0.9571", "26.46 / 0.8048"), "{md}");
    let html = std::fs::read_to_string(out_dir.join("benchmark.html")).unwrap();
    assert!(html.contains("<th>paper: RealBlur-J test</th>") && html.contains(">26.46 / 0.8048</td>"), "{html}");
    let bench = Table::read_parquet(&out_dir.join("benchmark.parquet")).unwrap();
    let tasks = strs(bench.get("task"));
    for task in ["denoise", "derain", "deblur"] {
        assert!(tasks.iter().any(|t| t == task), "{tasks:?}");
    }
    std::fs::remove_dir_all(&reports).unwrap();
}

/// A failed quality gate still writes the whole report, lists the gates in summary.md and
/// gates.json, and exits 5; `runs` shows the run as "gate failed". A malformed gate is a
/// config error (exit 2) naming its key.
#[test]
fn failed_quality_gate_exits_5_after_the_report() {
    let reports = common::tmpdir("cli", "gates");
    let gates = r#"gates=[{compare: "noise_da >= noise_da"}, {method: input, min: 99}]"#;
    let out = smoke(&reports, &["--set", "train.steps=2", "--set", gates, "--log-format", "json"]);
    let stderr = text(&out.stderr);
    // JSON lines for machines: progress rows carry stage, step and ETA as fields.
    let progress: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["step"].is_number())
        .collect();
    assert!(!progress.is_empty(), "{stderr}");
    for v in &progress {
        assert!(v["fields"]["stage"].as_str().unwrap().starts_with("train:"), "{v}");
        assert!(
            v["fields"]["eta_s"].is_string() && v["fields"]["message"].as_str().unwrap().starts_with("loss"),
            "{v}"
        );
    }
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("quality gate failed: input psnr >= 99 on camera-sim-test"), "{stderr}");
    let runs = run_dirs(&reports);
    assert_eq!(runs.len(), 1);
    for f in ["provenance.json", "summary.md", "per_image.parquet", "gates.json"] {
        assert!(runs[0].join(f).is_file(), "missing {f}");
    }
    let md = std::fs::read_to_string(runs[0].join("summary.md")).unwrap();
    assert!(md.contains("Quality gates") && md.contains("| pass") && md.contains("| FAIL"), "{md}");
    // The page says so too: exit status and each gate.
    let page = std::fs::read_to_string(runs[0].join("report.html")).unwrap();
    assert!(page.contains("finished, exit 5 (1 gate(s) failed)") && page.contains(r#"<td class="fail">FAILED</td>"#));
    let listed = text(&run(&["runs", "--dir", reports.to_str().unwrap()]).stdout);
    assert!(listed.contains("| gate failed") && listed.contains("camera-sim-test: input"), "{listed}");

    let bad = r#"gates=[{compare: "noise_da > nosie_da"}]"#;
    let out = smoke(&reports, &["--set", bad]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("gates[0].compare: \"nosie_da\" is not one of"), "{}", text(&out.stderr));
    std::fs::remove_dir_all(&reports).unwrap();
}

/// A training that diverges stops with exit 4 naming the stage and what to change.
#[test]
fn divergence_exits_4() {
    let reports = common::tmpdir("cli", "diverge");
    let out = smoke(&reports, &["--set", "train.lr=1e30"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("source_only diverged at step") && stderr.contains("lower train.lr"), "{stderr}");
    std::fs::remove_dir_all(&reports).unwrap();
}

/// The upper bound and a reference-input test set (how much each restorer changes the clean
/// references): no input rows for that set, finite scores for every recipe, and the summary's
/// headroom section relative to the upper bound.
#[test]
fn upper_bound_headroom_and_reference_input_test_set() {
    let reports = common::tmpdir("cli", "headroom");
    let tests = "tests=[{name: camera-sim-test, dataset: camera-sim-sidd, count: 4, size: 32, protocol: rgb}, \
                 {name: camera-sim-clean, dataset: camera-sim-sidd, count: 4, size: 32, protocol: rgb, input: reference}]";
    let out = smoke(
        &reports,
        &["--set", "methods=[source_only, noise_da, target_supervised]", "--set", tests, "--set", "diagnostics={}"],
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let run_dir = &run_dirs(&reports)[0];
    let per_image = Table::read_parquet(&run_dir.join("per_image.parquet")).unwrap();
    let (methods, sets, psnr) =
        (strs(per_image.get("method")), strs(per_image.get("test_set")), floats(per_image.get("psnr")));
    let clean_rows: Vec<usize> = (0..per_image.rows()).filter(|&i| sets[i] == "camera-sim-clean").collect();
    assert_eq!(clean_rows.len(), 12, "3 recipes × 4 images, no input rows");
    assert!(clean_rows.iter().all(|&i| methods[i] != "input" && psnr[i].is_finite() && psnr[i] > 10.0));
    let md = std::fs::read_to_string(run_dir.join("summary.md")).unwrap();
    assert!(md.contains("Headroom on camera-sim-test: the upper bound (target_supervised"), "{md}");
    assert!(md.contains("| noise_da ") && md.contains("share of the headroom"), "{md}");
    assert!(!md.contains("Premise check"), "diagnostics={{}} turns the premise check off");
    std::fs::remove_dir_all(&reports).unwrap();
}

/// `dann`, `neighbor2neighbor` and `pixel_da` (issue 18's baselines) run as recipes of a
/// pipeline: their rows in the per-image table, their loss terms in the curves, their extra
/// networks' sizes in the provenance; Neighbor2Neighbor is refused outside denoising.
#[test]
fn dann_runs_as_a_recipe() {
    let reports = common::tmpdir("cli", "dann");
    let out = smoke(&reports, &["--set", "methods=[source_only, dann, neighbor2neighbor, pixel_da]"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run = run_dirs(&reports).remove(0);
    let per_image = Table::read_parquet(&run.join("per_image.parquet")).unwrap();
    assert!(strs(per_image.get("method")).iter().any(|m| m == "dann"));
    assert!(strs(per_image.get("method")).iter().any(|m| m == "neighbor2neighbor"));
    let rec = floats(Table::read_parquet(&run.join("curves.parquet")).unwrap().get("ne2ne_rec"));
    assert!(rec.iter().any(|v| v.is_finite()), "{rec:?}");
    // A self-supervised denoiser only denoises.
    let out = common::run(&["describe", "pipelines/derain.yaml", "--set", "methods=[source_only, neighbor2neighbor]"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("task denoise only"), "{}", text(&out.stderr));
    let curves = Table::read_parquet(&run.join("curves.parquet")).unwrap();
    let (methods, domain) = (strs(curves.get("method")), floats(curves.get("domain_loss")));
    assert!(methods.iter().zip(&domain).all(|(m, d)| (m == "dann") == d.is_finite()), "{methods:?} {domain:?}");
    let prov: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("provenance.json")).unwrap()).unwrap();
    let dann = prov["training"].as_array().unwrap().iter().find(|t| t["method"] == "dann").unwrap();
    assert!(dann["params_classifier"].as_u64().unwrap() > 0 && dann["steps_per_s"].as_f64().unwrap() > 0.0, "{dann}");
    let pix = prov["training"].as_array().unwrap().iter().find(|t| t["method"] == "pixel_da").unwrap();
    assert!(
        pix["params_translator"].as_u64().unwrap() > 0 && pix["params_discriminator"].as_u64().unwrap() > 0,
        "{pix}"
    );
    assert!(pix.get("params_diffusion").is_none() && pix.get("params_classifier").is_none(), "{pix}");
    let disc = floats(curves.get("disc_loss"));
    assert!(methods.iter().zip(&disc).all(|(m, d)| (m == "pixel_da") == d.is_finite()), "{methods:?} {disc:?}");
    // What the translator does, as a figure and on the page — also when the stage is reused.
    let figure = run.join("figures/translations-pixel_da-seed0.png");
    assert!(run_pipeline::image::Image::load(&figure).is_ok(), "{}", figure.display());
    assert!(std::fs::read_to_string(run.join("report.html")).unwrap().contains("PixelDA translations"));
    let again = smoke(&reports, &["--set", "methods=[source_only, dann, neighbor2neighbor, pixel_da]"]);
    assert!(again.status.success() && text(&again.stderr).contains("reusing the finished stage"));
    let rerun = run_dirs(&reports).pop().unwrap();
    assert_ne!(rerun, run);
    assert_eq!(
        std::fs::read(rerun.join("figures/translations-pixel_da-seed0.png")).unwrap(),
        std::fs::read(&figure).unwrap()
    );
    // Its settings are checked like every other key.
    let out = common::run(&["describe", "pipelines/denoise.yaml", "--set", "train.pixel_da.content_pool=0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("train.pixel_da.content_pool"), "{}", text(&out.stderr));
    std::fs::remove_dir_all(&reports).unwrap();
}

/// NAFNet and Restormer (issue 26) as `networks.restorer`: every method trains them (DANN on
/// their bottleneck features), the run scores them, its provenance counts their parameters,
/// and `restore --run` rebuilds them from the run's configuration to restore a photo whose
/// size is no multiple of their strides; `export` writes their authors' key names.
#[test]
fn nafnet_and_restormer_train_with_every_method() {
    let all = "methods=[source_only, noise_da, target_supervised, dann, pixel_da, neighbor2neighbor]";
    let archs = [
        (
            "nafnet",
            "{arch: nafnet, width: 8, enc_blocks: [1, 1], middle_blocks: 1, dec_blocks: [1, 1]}",
            "ups.0.0.weight",
        ),
        ("restormer", "{arch: restormer, dim: 4, blocks: [1, 1, 1, 1], refinement: 1}", "patch_embed.proj.weight"),
    ];
    for (family, cfg, published_key) in archs {
        let reports = common::tmpdir("cli", family);
        let set = format!("networks.restorer={cfg}");
        let out = smoke(&reports, &["--set", &set, "--set", all]);
        assert!(out.status.success(), "{family}: {}", text(&out.stderr));
        let run = run_dirs(&reports).remove(0);
        let per_image = Table::read_parquet(&run.join("per_image.parquet")).unwrap();
        let (methods, psnr) = (strs(per_image.get("method")), floats(per_image.get("psnr")));
        for m in ["source_only", "noise_da", "target_supervised", "dann", "pixel_da", "neighbor2neighbor"] {
            let rows: Vec<f64> = methods.iter().zip(&psnr).filter(|(x, _)| *x == m).map(|(_, p)| *p).collect();
            assert!(!rows.is_empty() && rows.iter().all(|p| p.is_finite() && *p > 5.0), "{family} {m}: {rows:?}");
        }
        let prov: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("provenance.json")).unwrap()).unwrap();
        let counts: Vec<u64> =
            prov["training"].as_array().unwrap().iter().map(|t| t["params_restorer"].as_u64().unwrap()).collect();
        assert!(counts.len() == 6 && counts.iter().all(|c| *c == counts[0] && *c > 0), "{family}: {counts:?}");
        // Restore a 37×29 photo with the run's Noise-DA weights.
        let dir = reports.join("photos");
        std::fs::create_dir_all(dir.join("in")).unwrap();
        let img =
            image::RgbImage::from_fn(37, 29, |x, y| image::Rgb([(x * 7) as u8, (y * 9) as u8, ((x + y) * 3) as u8]));
        img.save(dir.join("in/p.png")).unwrap();
        let rd = run.to_str().unwrap();
        let (inp, outp) = (dir.join("in"), dir.join("out"));
        let o = common::run(&["restore", inp.to_str().unwrap(), outp.to_str().unwrap(), "--run", rd]);
        assert_eq!(o.status.code(), Some(0), "{family}: {}", text(&o.stderr));
        let restored = image::open(outp.join("p.png")).unwrap();
        assert_eq!((restored.width(), restored.height()), (37, 29), "{family}");
        let st = dir.join("g.safetensors");
        let o = common::run(&["export", st.to_str().unwrap(), "--run", rd, "--method", "noise_da"]);
        assert_eq!(o.status.code(), Some(0), "{family}: {}", text(&o.stderr));
        let sd = run_pipeline::networks::interop::read_state_dict(&st).unwrap();
        assert!(
            sd.tensors.contains_key(published_key),
            "{family}: {:?}",
            sd.tensors.keys().take(5).collect::<Vec<_>>()
        );
        std::fs::remove_dir_all(&reports).unwrap();
    }
}

//! Fault injection, end to end through the binary: what a crash, bit rot, a full disk or a
//! hostile configuration leaves behind must never be used silently, and a rerun heals it.

mod common;

use common::{run, smoke, text};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use run_pipeline::reports::{Column, Table};

fn ok(out: &Output) -> String {
    let (o, e) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "exit {:?}\nstdout:\n{o}\nstderr:\n{e}", out.status.code());
    e
}

fn runs(reports: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(reports.join("denoise")).unwrap().map(|e| e.unwrap().path()).collect();
    v.retain(|p| p.is_dir());
    v.sort();
    v
}

/// Every file under `dir` whose name ends with `suffix`.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Flip one bit in the middle of a file, keeping its size (what bit rot does).
fn flip(path: &Path) {
    let mut b = std::fs::read(path).unwrap();
    let at = b.len() / 2;
    b[at] ^= 0x08;
    std::fs::write(path, b).unwrap();
}

/// (method, test set, image) → (PSNR, SSIM) of a run.
fn scores(run: &Path) -> Vec<(String, f64, f64)> {
    let t = Table::read_parquet(&run.join("per_image.parquet")).unwrap();
    let s = |n: &str| match t.get(n) {
        Some(Column::Str(v)) => v.iter().map(|x| x.clone().unwrap_or_default()).collect::<Vec<_>>(),
        c => panic!("{n}: {c:?}"),
    };
    let f = |n: &str| match t.get(n) {
        Some(Column::F64(v)) => v.iter().map(|x| x.unwrap_or(f64::NAN)).collect::<Vec<_>>(),
        c => panic!("{n}: {c:?}"),
    };
    let (m, ts, id, p, ss) = (s("method"), s("test_set"), s("image_id"), f("psnr"), f("ssim"));
    let mut rows: Vec<(String, f64, f64)> =
        (0..t.rows()).map(|i| (format!("{}/{}/{}", m[i], ts[i], id[i]), p[i], ss[i])).collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string()
}

/// Bit flips (same size) in every cached stage's weights, every cached evaluation and every
/// shard: the rerun detects each, recomputes it and scores exactly as the first run did.
#[test]
fn corrupted_caches_are_recomputed_never_used() {
    let reports = common::tmpdir("faults", "corrupt");
    ok(&smoke(&reports, &[]));
    let cache = reports.join(".cache");
    let models = files(&cache.join("stages"), "model.bpk");
    let evals = files(&cache.join("stages"), "per_image.parquet");
    let shards = files(&cache.join("shards"), ".shard");
    assert!(models.len() == 2 && !evals.is_empty() && !shards.is_empty(), "{models:?} {evals:?} {shards:?}");
    for f in models.iter().chain(&evals).chain(&shards) {
        flip(f);
    }
    let err = ok(&smoke(&reports, &[]));
    assert!(err.contains("failed verification"), "{err}");
    assert!(err.contains("hash mismatch"), "{err}");
    assert!(!err.contains("reusing the finished stage"), "a corrupted stage was reused:\n{err}");
    let r = runs(&reports);
    assert_eq!(r.len(), 2);
    let (a, b) = (scores(&r[0]), scores(&r[1]));
    assert!(b.iter().all(|(_, p, s)| p.is_finite() && s.is_finite()), "{b:?}");
    assert_eq!(a, b, "the healed rerun scores as the first run");
    // Healed: a third run reuses everything.
    let err = ok(&smoke(&reports, &[]));
    assert!(!err.contains("failed verification"), "{err}");
    assert!(err.contains("reusing the finished stage"), "{err}");
    std::fs::remove_dir_all(&reports).unwrap();
}

/// Truncated cache files (a disk that filled up under an older version, a copy cut short) are
/// recomputed too, not an error that blocks every rerun.
#[test]
fn truncated_caches_do_not_block_reruns() {
    let reports = common::tmpdir("faults", "truncated");
    ok(&smoke(&reports, &[]));
    let cache = reports.join(".cache");
    for f in files(&cache.join("stages"), "model.bpk").iter().chain(&files(&cache.join("shards"), ".shard")) {
        let b = std::fs::read(f).unwrap();
        std::fs::write(f, &b[..b.len() / 3]).unwrap();
    }
    ok(&smoke(&reports, &[]));
    let r = runs(&reports);
    assert_eq!(scores(&r[0]), scores(&r[1]));
    std::fs::remove_dir_all(&reports).unwrap();
}

/// Temporary files that a `kill -9` or a full disk left (their writer's pid is gone) are
/// removed by the next run; a live writer's are not touched.
#[test]
fn leftover_temp_files_are_swept_by_the_next_run() {
    let reports = common::tmpdir("faults", "sweep");
    ok(&smoke(&reports, &[]));
    let run0 = runs(&reports)[0].clone();
    // pid 4194305 is beyond Linux's pid_max: certainly not running.
    let dead = format!("tmp-4194305@{}", host());
    let live = format!("tmp-{}@{}", std::process::id(), host());
    let planted = [
        reports.join("denoise").join(format!(".per_image.parquet.{dead}")),
        reports.join(".cache/shards").join(format!(".abc.shard.{dead}")),
        reports.join(".cache/stages").join(format!(".eval-123.{dead}")),
    ];
    for p in &planted {
        std::fs::write(p, b"partial").unwrap();
    }
    let best = run0.parent().unwrap().join(format!(".best.{dead}"));
    std::fs::create_dir_all(best.join("inner")).unwrap();
    let mine = reports.join("denoise").join(format!(".summary.csv.{live}"));
    std::fs::write(&mine, b"in progress").unwrap();
    let err = ok(&smoke(&reports, &[]));
    assert!(err.contains("removed a temporary file"), "{err}");
    for p in planted.iter().chain([&best]) {
        assert!(!p.exists(), "{} was left", p.display());
    }
    assert!(mine.exists(), "a live writer's temporary file was removed");
    std::fs::remove_dir_all(&reports).unwrap();
}

/// A registry beside the repository's, with extra `[datasets.*]` entries.
fn registry_with(dir: &Path, extra: &str) -> PathBuf {
    let mut text = std::fs::read_to_string(common::repo_root().join("datasets.toml")).unwrap();
    text.push_str(extra);
    let path = dir.join("datasets.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

/// A clean folder holding one 1×1 image, and an empty one: clear errors (exit 3) from the run
/// and from `datasets check`, never a panic, and no empty run folder left behind. With
/// `on_problem: skip` the small image is skipped (and then nothing is left: still exit 3).
#[test]
fn degenerate_datasets_are_errors_not_panics() {
    let dir = common::tmpdir("faults", "degenerate");
    std::fs::create_dir_all(dir.join("tiny")).unwrap();
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    std::fs::create_dir_all(dir.join("mixed")).unwrap();
    image::RgbImage::from_pixel(1, 1, image::Rgb([10, 20, 30])).save(dir.join("tiny/a.png")).unwrap();
    image::RgbImage::from_pixel(1, 1, image::Rgb([10, 20, 30])).save(dir.join("mixed/a.png")).unwrap();
    image::RgbImage::from_fn(48, 40, |x, y| image::Rgb([(x * 5) as u8, (y * 6) as u8, 90]))
        .save(dir.join("mixed/b.png"))
        .unwrap();
    let reg = registry_with(
        &dir,
        &format!(
            "\n[datasets.tiny]\nkind = \"clean_folder\"\nroot = \"{d}/tiny\"\nsplits = [\"train\"]\n\
             \n[datasets.empty]\nkind = \"clean_folder\"\nroot = \"{d}/empty\"\nsplits = [\"train\"]\n\
             \n[datasets.mixed]\nkind = \"clean_folder\"\nroot = \"{d}/mixed\"\nsplits = [\"train\"]\n",
            d = dir.display()
        ),
    );
    let reg_arg = reg.to_string_lossy().into_owned();
    let reports = dir.join("reports");
    let go = |dataset: &str, skip: bool| {
        let mut extra = vec!["--registry", &reg_arg];
        let set = format!("source.dataset={dataset}");
        extra.extend(["--set", &set]);
        if skip {
            extra.extend(["--set", "source.on_problem=skip"]);
        }
        smoke(&reports, &extra)
    };
    let out = go("tiny", false);
    let err = text(&out.stderr);
    assert_eq!(code(&out), Some(3), "{err}");
    assert!(err.contains("1×1 is smaller than the 32×32 crop") && err.contains("on_problem: skip"), "{err}");
    let out = go("tiny", true);
    let err = text(&out.stderr);
    assert_eq!(code(&out), Some(3), "{err}");
    assert!(err.contains("no usable train images"), "{err}");
    let out = go("empty", false);
    assert_eq!(code(&out), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no usable train images"));
    for e in [go("tiny", false), go("empty", true)] {
        assert!(!text(&e.stderr).contains("panicked"), "{}", text(&e.stderr));
    }
    // Skipping the small image of a mixed folder: the run goes on with the other.
    let out = go("mixed", true);
    let err = ok(&out);
    assert!(err.contains("skipped") && err.contains("a.png"), "{err}");
    // Failed runs left no directory; the successful one did.
    assert_eq!(std::fs::read_dir(reports.join("denoise")).unwrap().count(), 1);

    let check = |name: &str, min: &str| run(&["datasets", "check", name, "--registry", &reg_arg, "--min-size", min]);
    let out = check("tiny", "32");
    assert_eq!(code(&out), Some(3));
    assert!(text(&out.stdout).contains("1×1 is smaller than --min-size 32"), "{}", text(&out.stdout));
    let out = check("empty", "0");
    assert_eq!(code(&out), Some(3));
    assert!(text(&out.stdout).contains("no usable train images"), "{}", text(&out.stdout));
    assert_eq!(code(&check("mixed", "1")), Some(0));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Symbolic links inside a dataset root that lead out of it are reported, not read, unless
/// the registry says `follow_links = true`; a link that stays inside the root is fine.
#[test]
fn symlinks_are_not_followed_out_of_a_dataset_root() {
    let dir = common::tmpdir("faults", "links");
    let (root, outside) = (dir.join("root"), dir.join("outside"));
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::create_dir_all(outside.join("more")).unwrap();
    let img = |p: &Path| image::RgbImage::from_pixel(40, 40, image::Rgb([1, 2, 3])).save(p).unwrap();
    img(&root.join("sub/a.png"));
    img(&outside.join("secret.png"));
    img(&outside.join("more/b.png"));
    std::os::unix::fs::symlink(outside.join("secret.png"), root.join("leak.png")).unwrap();
    std::os::unix::fs::symlink(outside.join("more"), root.join("linked")).unwrap();
    std::os::unix::fs::symlink(root.join("sub/a.png"), root.join("inside.png")).unwrap();
    let entry = |name: &str, follow: bool| {
        format!(
            "\n[datasets.{name}]\nkind = \"clean_folder\"\nroot = \"{}\"\nsplits = [\"train\"]\nfollow_links = {follow}\n",
            root.display()
        )
    };
    let reg = registry_with(&dir, &format!("{}{}", entry("strict", false), entry("open", true)));
    let reg = reg.to_string_lossy().into_owned();
    let out = run(&["datasets", "check", "strict", "--registry", &reg]);
    let stdout = text(&out.stdout);
    assert_eq!(code(&out), Some(3), "{stdout}");
    assert!(stdout.contains("leak.png") && stdout.contains("outside the dataset root"), "{stdout}");
    assert!(stdout.contains("linked") && stdout.contains("not followed"), "{stdout}");
    assert!(stdout.contains("train 2 items"), "a.png and the inside link remain:\n{stdout}");
    let out = run(&["datasets", "check", "open", "--registry", &reg]);
    let stdout = text(&out.stdout);
    assert_eq!(code(&out), Some(0), "{stdout}");
    assert!(stdout.contains("train 4 items"), "{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `cache verify` finds a corrupted cache entry (exit 3), `--fix` removes it, and `cache gc`
/// prunes the cache by age without touching runs.
#[test]
fn cache_verify_and_gc() {
    let reports = common::tmpdir("faults", "cachecmd");
    ok(&smoke(&reports, &[]));
    let dir = reports.to_string_lossy().into_owned();
    let out = run(&["cache", "verify", "--dir", &dir]);
    assert_eq!(code(&out), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("0 failed verification"), "{}", text(&out.stdout));
    let model = files(&reports.join(".cache/stages"), "model.bpk").remove(0);
    flip(&model);
    let out = run(&["cache", "verify", "--dir", &dir]);
    assert_eq!(code(&out), Some(3));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("1 failed verification") && stdout.contains("model.bpk"), "{stdout}");
    assert!(text(&out.stderr).contains("--fix"), "{}", text(&out.stderr));
    let out = run(&["cache", "verify", "--dir", &dir, "--fix"]);
    assert_eq!(code(&out), Some(0), "{}", text(&out.stderr));
    assert!(!model.parent().unwrap().exists());
    assert_eq!(code(&run(&["cache", "verify", "--dir", &dir])), Some(0));
    // A run's own weights are reported, never removed.
    let run0 = runs(&reports).remove(0);
    let weights = run0.join("checkpoints/source_only-seed0.bpk");
    flip(&weights);
    let out = run(&["cache", "verify", "--dir", &dir, "--fix"]);
    assert_eq!(code(&out), Some(3));
    assert!(weights.exists() && text(&out.stderr).contains("never removed"), "{}", text(&out.stderr));
    // gc: nothing is old yet; with a zero age every cache entry goes, the run stays.
    let out = run(&["cache", "gc", "--dir", &dir, "--older-than-days", "1"]);
    assert!(text(&out.stdout).contains("freed 0.0 MiB"), "{}", text(&out.stdout));
    let out = run(&["cache", "gc", "--dir", &dir, "--older-than-days", "0", "--dry-run"]);
    assert!(text(&out.stdout).contains("would remove shard"), "{}", text(&out.stdout));
    assert!(!files(&reports.join(".cache/shards"), ".shard").is_empty());
    let out = run(&["cache", "gc", "--dir", &dir, "--older-than-days", "0"]);
    assert_eq!(code(&out), Some(0));
    assert!(files(&reports.join(".cache"), "").is_empty(), "{}", text(&out.stdout));
    assert!(run0.join("per_image.parquet").is_file() && weights.exists());
    // Temporary files: `--dry-run` lists what gc then removes, one named for this host whose
    // pid is alive (pid 1) but three days old included; a fresh one of a live writer stays.
    let stale = reports.join(format!(".x.tmp-1@{}", host()));
    let live = reports.join(format!(".y.tmp-1@{}", host()));
    std::fs::write(&stale, b"x").unwrap();
    std::fs::write(&live, b"y").unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3 * 86_400);
    std::fs::File::options().write(true).open(&stale).unwrap().set_modified(old).unwrap();
    let out = run(&["cache", "gc", "--dir", &dir, "--dry-run"]);
    assert!(
        text(&out.stdout).contains(&format!("would remove temporary {}", stale.display())),
        "{}",
        text(&out.stdout)
    );
    assert!(!text(&out.stdout).contains(".y.tmp-"), "{}", text(&out.stdout));
    assert!(stale.exists());
    let out = run(&["cache", "gc", "--dir", &dir]);
    assert!(text(&out.stdout).contains(&format!("removed temporary {}", stale.display())), "{}", text(&out.stdout));
    assert!(!stale.exists() && live.exists());
    // A mistyped folder is an error, not an empty success.
    for sub in ["verify", "gc"] {
        let out = run(&["cache", sub, "--dir", &format!("{dir}/nonexistent")]);
        assert_eq!(code(&out), Some(2), "{sub}: {}", text(&out.stderr));
    }
    std::fs::remove_dir_all(&reports).unwrap();
}

/// `kill -9` at ten pseudo-random moments (data, training, checkpointing, evaluation,
/// reports), then a bit flipped in the newest checkpoint: running the same command again each
/// time continues the same run and it ends with exactly the scores of an uninterrupted run.
#[test]
fn killed_ten_times_and_a_corrupted_checkpoint_still_give_identical_results() {
    let args = |reports: &Path| -> Vec<String> {
        [
            "pipelines/denoise.yaml",
            "--profile",
            "smoke",
            "--set",
            &format!("report.dir={}", reports.display()),
            "--set",
            "train.steps=400",
            "--set",
            "train.checkpoint.every=20",
        ]
        .map(String::from)
        .to_vec()
    };
    let reference = common::tmpdir("faults", "kill-ref");
    let a: Vec<String> = args(&reference);
    ok(&run(&a.iter().map(String::as_str).collect::<Vec<_>>()));
    let reports = common::tmpdir("faults", "kill");
    let b: Vec<String> = args(&reports);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut killed = 0;
    for _ in 0..10 {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let delay_ms = 150 + (state >> 33) % 600;
        let mut child = Command::new(env!("CARGO_BIN_EXE_run-pipeline"))
            .args(&b)
            .current_dir(common::repo_root())
            .env("CI", "true")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        if child.try_wait().unwrap().is_none() {
            Command::new("kill").args(["-KILL", &child.id().to_string()]).status().unwrap();
            killed += 1;
        }
        child.wait().unwrap();
    }
    assert!(killed >= 5, "only {killed} of 10 runs were still going when killed");
    // Bit rot in the newest step checkpoint of an unfinished stage, if one is left.
    let mut steps: Vec<PathBuf> = files(&reports.join("denoise"), "model.bpk")
        .into_iter()
        .filter(|p| p.parent().unwrap().file_name().unwrap().to_string_lossy().starts_with("step-"))
        .collect();
    steps.sort_by_key(|p| p.parent().unwrap().file_name().unwrap().to_owned());
    if let Some(newest) = steps.last() {
        flip(newest);
    }
    let out = run(&b.iter().map(String::as_str).collect::<Vec<_>>());
    ok(&out);
    let finished: Vec<PathBuf> = runs(&reports).into_iter().filter(|r| r.join("provenance.json").is_file()).collect();
    assert_eq!(finished.len(), 1, "the kills continued one run");
    assert_eq!(scores(&runs(&reference)[0]), scores(&finished[0]), "killed and uninterrupted runs must score the same");
    // Nothing temporary is left in the run.
    assert!(files(&finished[0], "").iter().all(|p| !p.to_string_lossy().contains(".tmp-")));
    std::fs::remove_dir_all(&reference).unwrap();
    std::fs::remove_dir_all(&reports).unwrap();
}

/// Every malformed pipeline and registry in `tests/fixtures/bad/` fails with the exit code and
/// message its header documents, before any work (no run folder is left).
#[test]
fn the_corpus_of_bad_inputs_fails_as_documented() {
    let root = common::repo_root().join("tests/fixtures/bad");
    let header = |text: &str, key: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("# {key}: ")))
            .unwrap_or_else(|| panic!("no `# {key}:` header"))
            .to_string()
    };
    let reports = common::tmpdir("faults", "corpus");
    let mut checked = 0;
    for kind in ["pipelines", "registries"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(kind)).unwrap().map(|e| e.unwrap().path()).collect();
        files.retain(|p| p.extension().is_some_and(|e| e == "yaml" || e == "toml"));
        files.sort();
        assert!(files.len() >= 5, "{kind}: {files:?}");
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            let want: i32 = header(&text, "expect-exit").parse().unwrap();
            let message = header(&text, "message");
            let fs = f.to_string_lossy().into_owned();
            let dir_arg = format!("report.dir={}", reports.display());
            let out = match (kind, text.contains("# command: run")) {
                ("pipelines", true) => run(&[&fs, "--set", &dir_arg]),
                ("pipelines", false) => run(&["describe", &fs]),
                _ => run(&["datasets", "check", &header(&text, "dataset"), "--registry", &fs]),
            };
            let err = text_of(&out);
            assert_eq!(code(&out), Some(want), "{}: {err}", f.display());
            assert!(err.contains(&message), "{}: expected {message:?} in:\n{err}", f.display());
            assert!(!err.contains("panicked"), "{}: {err}", f.display());
            checked += 1;
        }
    }
    assert!(checked >= 25, "{checked}");
    assert!(!reports.join("minimal").exists(), "a refused pipeline left a run folder");
    std::fs::remove_dir_all(&reports).unwrap();
}

fn text_of(out: &Output) -> String {
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

/// A full disk (a small tmpfs in a private mount namespace) at several points of a run: each
/// failure is an error, not a panic, and leaves no temporary file; with space again the same
/// command finishes. Skipped, saying why, where unprivileged namespaces are not allowed.
#[test]
fn a_full_disk_leaves_nothing_half_written() {
    let dir = common::tmpdir("faults", "enospc");
    let probe = Command::new("unshare").args(["--user", "--map-root-user", "--mount", "true"]).output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!("SKIPPED a_full_disk_leaves_nothing_half_written: no unprivileged mount namespace here ({probe:?})");
        return;
    }
    let bin = env!("CARGO_BIN_EXE_run-pipeline");
    let mnt = dir.join("disk");
    std::fs::create_dir_all(&mnt).unwrap();
    let script = format!(
        r#"set -u
cd "{repo}"
run() {{ CI=true "{bin}" pipelines/denoise.yaml --profile smoke --set report.dir="{mnt}/reports" >"{mnt}.log" 2>&1; echo $?; }}
for size in 96k 400k 1200k 2500k; do
  mount -t tmpfs -o size=$size tmpfs "{mnt}"
  code=$(run)
  echo "size=$size exit=$code temps=$(find "{mnt}" -name '*.tmp-*' | wc -l) panics=$(grep -c panicked "{mnt}.log")"
  grep -m1 -i 'space' "{mnt}.log" | cut -c1-160
  mount -o remount,size=64m "{mnt}"
  code=$(run)
  echo "rerun exit=$code temps=$(find "{mnt}" -name '*.tmp-*' | wc -l)"
  umount "{mnt}"
done
"#,
        repo = common::repo_root().display(),
        mnt = mnt.display()
    );
    let out =
        Command::new("unshare").args(["--user", "--map-root-user", "--mount", "sh", "-c", &script]).output().unwrap();
    let report = text(&out.stdout);
    eprintln!("{report}{}", text(&out.stderr));
    let lines: Vec<&str> = report.lines().filter(|l| l.starts_with("size=")).collect();
    assert_eq!(lines.len(), 4, "{report}");
    let mut failed = 0;
    for l in &lines {
        assert!(l.contains("temps=0") && l.contains("panics=0"), "{l}");
        assert!(!l.contains("exit=101"), "{l}");
        if !l.contains("exit=0") {
            failed += 1;
        }
    }
    assert!(failed >= 2, "the small disks should have filled up:\n{report}");
    let reruns: Vec<&str> = report.lines().filter(|l| l.starts_with("rerun")).collect();
    assert_eq!(reruns.len(), 4, "{report}");
    assert!(reruns.iter().all(|l| l.contains("exit=0") && l.contains("temps=0")), "{report}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A photo whose whole-image restore would not fit the memory left is restored in tiles by
/// default, planned from its header before any pixel is decoded: a 2000×1500 PNG (≈ 2 GiB
/// whole with this network) under a 1 GiB address-space limit (`ulimit -v`) restores, exit 0,
/// full size, where the whole-image path would abort. Without the limit it runs whole.
#[test]
fn a_photo_larger_than_memory_restores_in_tiles_under_an_address_space_limit() {
    let dir = common::tmpdir("faults", "bigphoto");
    let inp = dir.join("in");
    std::fs::create_dir_all(&inp).unwrap();
    image::RgbImage::from_fn(2000, 1500, |x, y| image::Rgb([(x * 7 + y * 3) as u8, (x ^ y) as u8, (x + 2 * y) as u8]))
        .save(inp.join("big.png"))
        .unwrap();
    let weights = common::repo_root().join("tests/fixtures/interop/release_unet.pth");
    let out = dir.join("out");
    let cmd = format!(
        "ulimit -v 1048576 && exec '{}' restore '{}' '{}' --weights '{}' --arch unet-release:8,16,32",
        env!("CARGO_BIN_EXE_run-pipeline"),
        inp.display(),
        out.display(),
        weights.display()
    );
    let o = std::process::Command::new("sh").args(["-c", &cmd]).output().unwrap();
    let err = text_of(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("restoring in tiles") && err.contains("tile="), "{err}");
    let restored = image::open(out.join("big.png")).unwrap();
    assert_eq!((restored.width(), restored.height()), (2000, 1500));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The tables a run writes are verified when read back: `report` on a run whose
/// `per_image.parquet` had one bit flipped (same size) or was cut short exits 3 naming the
/// file, instead of re-summarising changed scores; a run written before hashes existed (no
/// sidecar) is still reported, with a warning.
#[test]
fn report_refuses_changed_per_image_scores() {
    let reports = common::tmpdir("faults", "tables");
    ok(&smoke(&reports, &[]));
    let run = runs(&reports).pop().unwrap();
    let table = run.join("per_image.parquet");
    let original = std::fs::read(&table).unwrap();
    assert!(run.join("per_image.parquet.sha256").is_file() && run.join("summary.parquet.sha256").is_file());
    let report = || common::run(&["report", run.to_str().unwrap()]);
    ok(&report());
    flip(&table);
    let o = report();
    assert_eq!(code(&o), Some(3), "{}", text_of(&o));
    assert!(text_of(&o).contains("per_image.parquet") && text_of(&o).contains("hash mismatch"), "{}", text_of(&o));
    std::fs::write(&table, &original[..original.len() / 2]).unwrap();
    let o = report();
    assert_eq!(code(&o), Some(3), "{}", text_of(&o));
    std::fs::write(&table, &original).unwrap();
    std::fs::remove_file(run.join("per_image.parquet.sha256")).unwrap();
    let o = report();
    assert_eq!(code(&o), Some(0), "{}", text_of(&o));
    assert!(text_of(&o).contains("read unverified"), "{}", text_of(&o));
    std::fs::remove_dir_all(&reports).unwrap();
}

/// Shapes no machine here can hold are refused before any work, by `plan` as by the run
/// (exit 2, the key named): a million-image source (the memory check, with nothing generated),
/// a batch of ten million, a restorer of 270 G parameters (counted without allocating), and
/// 64 crops of 4096² whose training activations alone need terabytes (the step used to abort
/// allocating them, exit 134).
#[test]
fn impossible_shapes_are_refused_before_any_work() {
    let reports = common::tmpdir("faults", "shapes");
    let pipeline = common::repo_root().join("pipelines/denoise.yaml");
    let dir = format!("report.dir={}", reports.display());
    for (sets, key) in [
        (vec!["source.count=1000000", "source.size=64"], "needs ≈"),
        (vec!["train.batch=10000000"], "train.batch"),
        (vec!["networks.restorer={widths: [65536, 65536]}"], "networks.restorer"),
        (
            vec![
                "source.size=4096",
                "target.size=4096",
                "source.count=2",
                "target.count=2",
                "train.patch=4096",
                "train.batch=64",
            ],
            "for one training step's activations",
        ),
    ] {
        for cmd in ["plan", "run"] {
            let mut args: Vec<&str> = if cmd == "plan" { vec!["plan"] } else { vec![] };
            args.push(pipeline.to_str().unwrap());
            for s in &sets {
                args.extend(["--set", s]);
            }
            args.extend(["--set", &dir]);
            let o = common::run(&args);
            assert_eq!(code(&o), Some(2), "{cmd} {sets:?}: {}", text_of(&o));
            assert!(text_of(&o).contains(key), "{cmd} {sets:?}: {}", text_of(&o));
        }
    }
    assert!(!reports.join(".cache").exists(), "nothing was generated");
    let _ = std::fs::remove_dir_all(&reports);
}

/// SIGTERM while a large generated dataset is being made is honoured at once, not after the
/// whole data stage: exit 130, a clear message, nothing of it cached (`finished`: the shards of
/// the datasets made before it).
fn sigterm_while_generating(name: &str, sets: &[&str], started: &str, finished: usize) {
    let reports = common::tmpdir("faults", name);
    let pipeline = common::repo_root().join("pipelines/denoise.yaml");
    let dir = format!("report.dir={}", reports.display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_run-pipeline"));
    child.args([pipeline.to_str().unwrap(), "--profile", "smoke", "--set", &dir]);
    for s in sets {
        child.args(["--set", s]);
    }
    let mut child = child.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    // Until it is generating (its log says so on stderr, read line by line).
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let mut log = String::new();
    for l in lines.by_ref() {
        let l = l.unwrap();
        log.push_str(&l);
        log.push('\n');
        if l.contains("generating images") && l.contains(started) {
            break;
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let t0 = std::time::Instant::now();
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    for l in lines {
        log.push_str(&l.unwrap());
        log.push('\n');
    }
    let status = child.wait().unwrap();
    let waited = t0.elapsed();
    assert_eq!(status.code(), Some(130), "{log}");
    assert!(log.contains("interrupted while generating dataset"), "{log}");
    assert!(waited < std::time::Duration::from_secs(3), "took {waited:?} after SIGTERM:\n{log}");
    assert_eq!(files(&reports.join(".cache/shards"), ".shard").len(), finished, "nothing of it cached");
    let _ = std::fs::remove_dir_all(&reports);
}

/// Many small images: each worker starts no image after the stop (measured: exit 130 within
/// 0.24 s with 40,000 128² images to make).
#[test]
fn sigterm_during_data_generation_stops_within_a_second() {
    sigterm_while_generating("sigterm", &["source.count=40000", "source.size=128"], "images=40000", 0);
}

/// One large image (a 4096² camera render takes most of a minute on 2 cores; the source made
/// before it stays cached): the generation is not waited for (measured: exit 130 0.08 s after SIGTERM, 8 s into the render).
#[test]
fn sigterm_during_one_large_image_stops_within_a_second() {
    sigterm_while_generating("sigterm-large", &["target.count=1", "target.size=4096"], "size=4096", 1);
}

/// Evaluation inside a run plans each test image against the memory left, as `restore` does:
/// a run whose test set holds a 2000×1500 photo (≈ 2.4 GB peak scored whole with the smoke
/// restorer) completes under a 1 GiB address-space limit, scoring it in tiles — the same input
/// score and a restored score within 0.5 dB of the whole-image run without the limit.
#[test]
fn a_run_scores_a_test_photo_larger_than_memory_in_tiles() {
    let dir = common::tmpdir("faults", "bigtest");
    let (rain, gt) = (dir.join("spa/real_test_1000/rain"), dir.join("spa/real_test_1000/gt"));
    std::fs::create_dir_all(&rain).unwrap();
    std::fs::create_dir_all(&gt).unwrap();
    let clean = |x: u32, y: u32| [(x * 7 + y * 3) as u8, (x ^ y) as u8, (x + 2 * y) as u8];
    image::RgbImage::from_fn(2000, 1500, |x, y| image::Rgb(clean(x, y))).save(gt.join("000gt.png")).unwrap();
    let mut rng = 1u32;
    image::RgbImage::from_fn(2000, 1500, |x, y| {
        image::Rgb(clean(x, y).map(|v| {
            rng = rng.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (v as i32 + (rng >> 27) as i32 - 16).clamp(0, 255) as u8
        }))
    })
    .save(rain.join("000.png"))
    .unwrap();
    let registry =
        registry_with(&dir, &format!("\n[datasets.spa-big]\nkind = \"spa_data\"\nroot = \"{}/spa\"\n", dir.display()));
    let go = |reports: &Path, limit: &str| {
        let cmd = format!(
            "ulimit -v {limit} && exec '{}' pipelines/denoise.yaml --profile smoke --registry '{}' \
             --set 'report.dir={}' --set 'methods=[source_only]' --set validation=null \
             --set 'tests=[{{name: big, dataset: spa-big, count: 1, size: 2000, protocol: y-matlab}}]'",
            env!("CARGO_BIN_EXE_run-pipeline"),
            registry.display(),
            reports.display()
        );
        let o = std::process::Command::new("sh")
            .args(["-c", &cmd])
            .current_dir(common::repo_root())
            .env("CI", "true")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "limit {limit}: {}", text_of(&o));
        scores(&runs(reports).pop().unwrap())
    };
    let tiled = go(&dir.join("limited"), "1048576");
    let whole = go(&dir.join("unlimited"), "unlimited");
    assert_eq!(tiled.len(), 2, "{tiled:?}");
    for (t, w) in tiled.iter().zip(&whole) {
        assert_eq!(t.0, w.0);
        if t.0.starts_with("input/") {
            assert_eq!(t.1, w.1);
        } else {
            assert!(t.1.is_finite() && (t.1 - w.1).abs() < 0.5, "{t:?} vs {w:?}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A `.pth` whose archive carries an entry the pickle never references — 1.5 GiB of zeros
/// deflated to ≈ 1.5 MB beside the release fixture's real tensors — loads under a 1 GiB
/// address-space limit: only the entries the pickle references are inflated (built here, not
/// committed: the file is a zip bomb).
#[test]
fn an_unreferenced_zip_bomb_in_a_weights_file_is_never_inflated() {
    use std::io::Write;
    let dir = common::tmpdir("faults", "zipbomb");
    let release = common::repo_root().join("tests/fixtures/interop/release_unet.pth");
    let bomb = dir.join("release_unet.pth");
    let mut src = zip::ZipArchive::new(std::fs::File::open(&release).unwrap()).unwrap();
    let mut out = zip::ZipWriter::new(std::fs::File::create(&bomb).unwrap());
    for i in 0..src.len() {
        out.raw_copy_file(src.by_index_raw(i).unwrap()).unwrap();
    }
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(1))
        .large_file(true);
    out.start_file("release_unet/data/9999", opts).unwrap();
    let zeros = vec![0u8; 64 << 20];
    for _ in 0..24 {
        out.write_all(&zeros).unwrap();
    }
    out.finish().unwrap();
    assert!(std::fs::metadata(&bomb).unwrap().len() < 16 << 20, "a small file");
    let inflated = zip::ZipArchive::new(std::fs::File::open(&bomb).unwrap())
        .unwrap()
        .by_name("release_unet/data/9999")
        .unwrap()
        .size();
    assert_eq!(inflated, 24 << 26, "1.5 GiB once inflated");
    let inp = dir.join("in");
    std::fs::create_dir_all(&inp).unwrap();
    image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([(x * 5) as u8, (y * 7) as u8, 90]))
        .save(inp.join("a.png"))
        .unwrap();
    let restore = |weights: &Path, out: &str| {
        let cmd = format!(
            "ulimit -v 1048576 && exec '{}' restore '{}' '{}' --weights '{}' --arch unet-release:8,16,32",
            env!("CARGO_BIN_EXE_run-pipeline"),
            inp.display(),
            dir.join(out).display(),
            weights.display()
        );
        let o = std::process::Command::new("sh").args(["-c", &cmd]).output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", text_of(&o));
        std::fs::read(dir.join(out).join("a.png")).unwrap()
    };
    assert_eq!(restore(&bomb, "out"), restore(&release, "out-release"), "the same weights");
    std::fs::remove_dir_all(&dir).unwrap();
}

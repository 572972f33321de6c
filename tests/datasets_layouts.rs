//! Dataset loaders on tiny fixtures built in each dataset's exact on-disk layout.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use run_pipeline::datasets::layouts;
use run_pipeline::datasets::{OnProblem, Registry, Split, disk};
use run_pipeline::image::Image;

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rp-layout-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A small image whose content depends on `seed`.
fn img(w: usize, h: usize, seed: usize) -> Image {
    Image::from_vec(w, h, (0..w * h * 3).map(|k| ((k * 7 + seed * 31) % 256) as f32 / 255.0).collect())
}

fn put(path: &Path, image: &Image) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let bytes = match path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref() {
        Some("jpg") => {
            let mut out = std::io::Cursor::new(Vec::new());
            image::RgbImage::from_raw(image.width as u32, image.height as u32, image.to_rgb8())
                .unwrap()
                .write_to(&mut out, image::ImageFormat::Jpeg)
                .unwrap();
            out.into_inner()
        }
        Some("bmp") => {
            let mut out = std::io::Cursor::new(Vec::new());
            image::RgbImage::from_raw(image.width as u32, image.height as u32, image.to_rgb8())
                .unwrap()
                .write_to(&mut out, image::ImageFormat::Bmp)
                .unwrap();
            out.into_inner()
        }
        _ => image.png_bytes().unwrap(),
    };
    std::fs::write(path, bytes).unwrap();
}

fn registry(dir: &Path, body: &str) -> Registry {
    let p = dir.join("datasets.toml");
    std::fs::write(&p, body).unwrap();
    Registry::load(&p).unwrap()
}

#[test]
fn sidd_medium_and_small_with_metadata_and_missing_partner() {
    let root = tmpdir("sidd");
    let medium = root.join("Data/0052_002_S6_01600_01000_5500_N");
    for f in ["010", "011"] {
        put(&medium.join(format!("0052_GT_SRGB_{f}.PNG")), &img(16, 12, 1));
        put(&medium.join(format!("0052_NOISY_SRGB_{f}.PNG")), &img(16, 12, 2));
    }
    let small = root.join("Data/0001_001_GP_00100_00060_3200_L");
    put(&small.join("GT_SRGB_010.PNG"), &img(16, 12, 3));
    put(&small.join("NOISY_SRGB_010.PNG"), &img(16, 12, 4));
    let broken = root.join("Data/0002_001_IP_00800_00400_4400_H");
    put(&broken.join("0002_NOISY_SRGB_010.PNG"), &img(16, 12, 5));
    let scan = run_pipeline::datasets::sidd::layout(&root);
    assert_eq!(scan.items.len(), 3, "{:?}", scan.problems);
    assert_eq!(scan.problems.len(), 1);
    assert!(scan.problems[0].message.contains("missing ground truth 0002_GT_SRGB_010.PNG"), "{}", scan.problems[0]);
    let it = scan.items.iter().find(|i| i.id == "0052_002_S6_01600_01000_5500_N/011").unwrap();
    assert!(it.clean.as_ref().unwrap().ends_with("0052_GT_SRGB_011.PNG"));
    assert!(it.meta.contains(&("iso".into(), "1600".into())));
    assert!(it.meta.contains(&("phone".into(), "S6".into())));
    let dec = disk::decode(scan, usize::MAX, true);
    assert_eq!(dec.items.len(), 3);
    assert_eq!(dec.items[0].2.as_ref().unwrap(), &img(16, 12, 3).quantized());
    std::fs::remove_dir_all(&root).unwrap();
}

/// A list in the official RealBlur-J format, as shipped with the dataset: one `GT BLUR ` pair
/// per line (GT first, every line but the last ending in a space), no final newline; `scenes`
/// scenes of `per_scene` pairs in a shuffled order, as in the official files.
fn realblur_j_list(first_scene: usize, scenes: usize, per_scene: usize) -> String {
    let dir = "RealBlur-J_ECC_IMCORR_centroid_itensity_ref";
    let mut lines = Vec::new();
    for s in first_scene..first_scene + scenes {
        for k in 0..per_scene {
            let i = (k * 7 + 3) % per_scene + 1;
            lines.push(format!("{dir}/scene{s:03}/gt/gt_{i}.png {dir}/scene{s:03}/blur/blur_{i}.png "));
        }
    }
    lines.join("\n").trim_end().to_string()
}

/// RealBlur-J lists in the official format (GT first, trailing spaces, no final newline, the
/// official test and train sizes) on a tree with exactly their relative paths.
#[test]
fn realblur_official_lists() {
    let root = tmpdir("realblur");
    let test_list = realblur_j_list(230, 49, 20);
    assert!(!test_list.ends_with('\n'), "the official list has no final newline");
    std::fs::write(root.join("RealBlur_J_test_list.txt"), &test_list).unwrap();
    let tiny = img(4, 4, 0).png_bytes().unwrap();
    for line in test_list.lines() {
        for p in line.split_whitespace() {
            let f = root.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, &tiny).unwrap();
        }
    }
    let scan = layouts::pair_list(&root, &root.join("RealBlur_J_test_list.txt"), true);
    assert_eq!(scan.problems, vec![]);
    assert_eq!(scan.items.len(), 980);
    for it in &scan.items {
        let d = it.degraded.to_string_lossy();
        let c = it.clean.as_ref().unwrap().to_string_lossy().into_owned();
        assert!(d.contains("/blur/blur_") && c.contains("/gt/gt_"), "{d} / {c}");
        assert!(
            d.starts_with(&*root.to_string_lossy()) && d.contains("RealBlur-J_ECC_IMCORR_centroid_itensity_ref/scene")
        );
    }
    // The train list on a tree holding only its first 10 pairs: the rest are reported missing.
    // Scenes disjoint from the test list's, as in the official split.
    let train_list = realblur_j_list(300, 3758 / 2, 2);
    assert_eq!(train_list.lines().count(), 3758);
    std::fs::write(root.join("RealBlur_J_train_list.txt"), &train_list).unwrap();
    for line in train_list.lines().take(10) {
        for p in line.split_whitespace() {
            let f = root.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, &tiny).unwrap();
        }
    }
    let reg = registry(
        &root,
        &format!(
            "[datasets.rbj]\nkind = \"realblur\"\nlayout = \"j\"\nroot = \"{}\"\nsplits = [\"train\", \"test\"]\n",
            root.display()
        ),
    );
    let scan = disk::scan(&reg, "rbj", Split::Train).unwrap();
    assert_eq!(scan.items.len(), 10);
    assert!(scan.problems.len() >= 3748, "{}", scan.problems.len());
    let err = disk::check("rbj", &scan.problems, disk::OnProblem::Fail).unwrap_err();
    assert_eq!(err.code, run_pipeline::error::ExitCode::Data);
    assert!(disk::check("rbj", &scan.problems, disk::OnProblem::Skip).is_ok());
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn spa_data_lists_and_test_split() {
    let root = tmpdir("spa");
    put(&root.join("real_world/001/001-1/001-1_1_1.png"), &img(8, 8, 1));
    put(&root.join("real_world_gt/001/001_1_1.png"), &img(8, 8, 2));
    put(&root.join("real_world/001/001-2/001-2_1_1.png"), &img(8, 8, 3));
    std::fs::write(
        root.join("real_world.txt"),
        "/real_world/001/001-1/001-1_1_1.png /real_world_gt/001/001_1_1.png\n\
         ./real_world/001/001-2/001-2_1_1.png ./real_world_gt/001/001_1_1.png\n\
         ../outside/x.png /real_world_gt/001/001_1_1.png\n\
         /real_world/001/001-3/001-3_1_1.png /real_world_gt/001/001_1_1.png\n\
         /real_world/001/001-1/001-1_1_1.png /real_world_gt/001/001_1_1.png\n",
    )
    .unwrap();
    let scan = layouts::pair_list(&root, &root.join("real_world.txt"), false);
    assert_eq!(scan.items.len(), 2);
    assert_eq!(scan.items[0].id, "real_world/001/001-1/001-1_1_1");
    assert_eq!(scan.problems.len(), 3, "{:?}", scan.problems);
    assert!(scan.problems[0].message.contains("escapes the dataset root"));
    assert!(scan.problems[0].path.to_string_lossy().ends_with("real_world.txt:3"));
    assert!(scan.problems[1].message.contains("listed at line 4 but missing"));
    assert!(
        scan.problems[2].message.contains("duplicate id \"real_world/001/001-1/001-1_1_1\""),
        "{}",
        scan.problems[2]
    );

    put(&root.join("real_test_1000/rain/000.png"), &img(8, 8, 4));
    put(&root.join("real_test_1000/gt/000gt.png"), &img(8, 8, 5));
    put(&root.join("real_test_1000/rain/001.png"), &img(8, 8, 6));
    let scan = layouts::spa_test(&root);
    assert_eq!(scan.items.len(), 1);
    assert_eq!(scan.items[0].id, "000");
    assert_eq!(scan.problems.len(), 1);
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn input_target_pairs_gopro_and_decode_problems() {
    let root = tmpdir("pairs");
    // Rain13K style with JORDER names, a size mismatch, a truncated file and an orphan.
    put(&root.join("input/rain-1.png"), &img(12, 12, 1));
    put(&root.join("target/norain-1.png"), &img(12, 12, 2));
    put(&root.join("input/2.png"), &img(12, 12, 3));
    put(&root.join("target/2.png"), &img(10, 12, 4));
    put(&root.join("input/3.png"), &img(12, 12, 5));
    let full = img(12, 12, 6).png_bytes().unwrap();
    std::fs::write(root.join("target/3.png"), &full[..full.len() / 2]).unwrap();
    put(&root.join("target/4.png"), &img(12, 12, 7));
    let scan = layouts::input_target(&root, false);
    assert_eq!(scan.items.len(), 3);
    assert_eq!(scan.problems.len(), 1, "orphan target: {:?}", scan.problems);
    let dec = disk::decode(scan, usize::MAX, true);
    assert_eq!(dec.items.len(), 1);
    assert_eq!(dec.items[0].0.id, "rain-1");
    let msgs: Vec<String> = dec.problems.iter().map(|p| p.to_string()).collect();
    assert!(msgs.iter().any(|m| m.contains("size 12×12 differs from its ground truth's 10×12")), "{msgs:?}");
    assert!(msgs.iter().any(|m| m.contains("3.png") && m.contains("unreadable image")), "{msgs:?}");

    // Natural-order pairing (the RealBlur re-packaging).
    let rp = tmpdir("repack");
    for (i, n) in ["a2.png", "a10.png", "a1.png"].iter().enumerate() {
        put(&rp.join("input").join(n), &img(8, 8, i));
        put(&rp.join("target").join(format!("t{n}")), &img(8, 8, i + 10));
    }
    let scan = layouts::input_target(&rp, true);
    let ids: Vec<&str> = scan.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, vec!["a1", "a2", "a10"]);
    assert!(scan.items[2].clean.as_ref().unwrap().ends_with("ta10.png"));

    // GoPro original tree.
    let gp = tmpdir("gopro");
    for seq in ["GOPR0372_07_00", "GOPR0374_11_00"] {
        for k in 0..2 {
            put(&gp.join(format!("train/{seq}/blur/{k:06}.png")), &img(8, 8, k));
            put(&gp.join(format!("train/{seq}/sharp/{k:06}.png")), &img(8, 8, k + 1));
            put(&gp.join(format!("train/{seq}/blur_gamma/{k:06}.png")), &img(8, 8, k + 2));
        }
    }
    let scan = layouts::gopro(&gp, "train");
    assert_eq!(scan.items.len(), 4);
    assert_eq!(scan.items[0].id, "GOPR0372_07_00/000000");
    for d in [root, rp, gp] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn clean_folder_recursive_png_jpg_bmp() {
    let root = tmpdir("clean");
    put(&root.join("a/0001.png"), &img(16, 16, 1));
    put(&root.join("a/b/0002.jpg"), &img(16, 16, 2));
    put(&root.join("0003.BMP"), &img(16, 16, 3));
    std::fs::write(root.join("notes.txt"), "not an image").unwrap();
    let scan = layouts::clean_folder(&root, false);
    let ids: Vec<&str> = scan.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, vec!["0003.BMP", "a/0001.png", "a/b/0002.jpg"]);
    let dec = disk::decode(scan, usize::MAX, false);
    assert_eq!(dec.items.len(), 3);
    assert!(dec.problems.is_empty());
    std::fs::remove_dir_all(&root).unwrap();
}

/// A pipeline whose test set is a folder dataset with problems: `skip` runs and reports them,
/// `fail` (the default) exits 3 before training.
#[test]
fn pipeline_test_set_from_disk_with_problem_policy() {
    let dir = tmpdir("pipeline");
    let data = dir.join("rain");
    for k in 0..3 {
        put(&data.join(format!("input/{k}.png")), &img(24, 20, k));
        put(&data.join(format!("target/{k}.png")), &img(24, 20, k + 5));
    }
    put(&data.join("input/9.png"), &img(24, 20, 9));
    let repo = common::repo_root();
    let mut reg = std::fs::read_to_string(repo.join("datasets.toml")).unwrap();
    reg.push_str(&format!(
        "\n[datasets.rain-fixture]\nkind = \"rain13k\"\nroot = \"{}\"\nsplits = [\"test\"]\n",
        data.display()
    ));
    std::fs::write(dir.join("datasets.toml"), reg).unwrap();
    let reports = dir.join("reports");
    let run = |policy: &str| {
        Command::new(env!("CARGO_BIN_EXE_run-pipeline"))
            .args(["pipelines/denoise.yaml", "--profile", "smoke", "--registry"])
            .arg(dir.join("datasets.toml"))
            .args(["--set", &format!("report.dir={}", reports.display())])
            .args([
                "--set",
                &format!("tests=[{{name: rain, dataset: rain-fixture, count: 10, size: 24, protocol: rgb{policy}}}]"),
            ])
            .current_dir(&repo)
            .env("CI", "true")
            .output()
            .unwrap()
    };
    let out = run("");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("9.png: no target image with the same name"), "{err}");

    let out = run(", on_problem: skip");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run_dir = std::fs::read_dir(reports.join("denoise"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("provenance.json").exists())
        .unwrap();
    let prov: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("provenance.json")).unwrap()).unwrap();
    assert_eq!(prov["datasets"]["test:rain"]["items"], 3);
    assert_eq!(prov["datasets"]["test:rain"]["skipped"].as_array().unwrap().len(), 1);
    let csv = std::fs::read_to_string(run_dir.join("per_image.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 3 * 3, "{csv}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// SIDD validation blocks from MATLAB v5 files written in SIDD's layout (compressed).
#[test]
fn sidd_validation_blocks_from_mat_files() {
    use run_pipeline::datasets::matv5::{MatData, write_mat};
    let root = tmpdir("siddval");
    let dims = [2usize, 3, 16, 16, 3];
    let n: usize = dims.iter().product();
    // Column-major (MATLAB) order: the first index runs fastest.
    let value = |k: usize, offset: usize| ((k * 7 + offset) % 256) as u8;
    let noisy: Vec<u8> = (0..n).map(|k| value(k, 0)).collect();
    let gt: Vec<u8> = (0..n).map(|k| value(k, 3)).collect();
    write_mat(
        &root.join("ValidationNoisyBlocksSrgb.mat"),
        &[("ValidationNoisyBlocksSrgb", &dims, MatData::U8(noisy))],
        true,
    )
    .unwrap();
    write_mat(&root.join("ValidationGtBlocksSrgb.mat"), &[("ValidationGtBlocksSrgb", &dims, MatData::U8(gt))], true)
        .unwrap();
    let set = run_pipeline::datasets::sidd::validation(&root, 1280).unwrap();
    assert_eq!(set.len(), 6);
    // Made into images a chunk at a time from the arrays kept as stored; the same images the
    // whole array's conversion gives.
    let all: Vec<_> = set.chunks(4).flat_map(|c| c.unwrap().into_owned()).collect();
    assert_eq!(all.len(), 6);
    let arr = run_pipeline::datasets::matv5::read_variable(
        &root.join("ValidationNoisyBlocksSrgb.mat"),
        "ValidationNoisyBlocksSrgb",
    )
    .unwrap();
    let eager = run_pipeline::datasets::sidd::blocks(&arr).unwrap();
    for (lazy, (ix, img)) in all.iter().zip(&eager) {
        assert_eq!((&lazy.id, &lazy.degraded), (&run_pipeline::datasets::sidd::block_id(*ix), img));
    }
    assert_eq!(set.items.len(), 4, "the first pairs are kept for figures");
    for (a, b) in set.items.iter().zip(&all) {
        assert_eq!((&a.id, &a.degraded, &a.clean), (&b.id, &b.degraded, &b.clean));
    }
    let it = &all[4]; // (image 1, block 1)
    assert_eq!(it.id, run_pipeline::datasets::sidd::block_id((1, 1)));
    assert_eq!((it.degraded.width, it.degraded.height), (16, 16));
    // Element (i, b, y, x, c) sits at i + 2·(b + 3·(y + 16·(x + 16·c))).
    let (i, b, y, x, c) = (1usize, 1usize, 5usize, 9usize, 2usize);
    let k = i + 2 * (b + 3 * (y + 16 * (x + 16 * c)));
    assert_eq!(it.degraded.get(x, y, c), value(k, 0) as f32 / 255.0);
    assert_eq!(it.clean.get(x, y, c), value(k, 3) as f32 / 255.0);
    assert_eq!(run_pipeline::datasets::sidd::validation(&root, 4).unwrap().len(), 4);
    std::fs::remove_file(root.join("ValidationGtBlocksSrgb.mat")).unwrap();
    let err = run_pipeline::datasets::sidd::validation(&root, 4).unwrap_err().to_string();
    assert!(err.contains("ValidationGtBlocksSrgb.mat"), "{err}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// A folder of clean images as a synthetic source: tiled into the patch store (reused when
/// unchanged, a new one when the folder changes), every patch of it used or `count` of them,
/// the degradation drawn per crop.
#[test]
fn clean_folder_as_synthetic_source_with_cache_invalidation() {
    use run_pipeline::datasets::{CropPool, Loader, Take};
    use run_pipeline::degradations::DegradationSpec;
    let dir = tmpdir("cleansrc");
    let data = dir.join("div2k");
    put(&data.join("0001.png"), &img(40, 30, 1));
    put(&data.join("sub/0002.png"), &img(36, 36, 2));
    let reg = registry(
        &dir,
        &format!("[datasets.div2k]\nkind = \"clean_folder\"\nroot = \"{}\"\nsplits = [\"train\"]\n", data.display()),
    );
    let cache = dir.join("cache");
    let loader = Loader { registry: &reg, cache_dir: &cache, seed: 7, plan_only: false, stop: None };
    let spec = DegradationSpec::Awgn { sigma: [10.0, 20.0] };
    // Patches of 16 overlapping by 4: 40×30 → 3×3, 36×36 → 3×3.
    let all = Take { count: Take::ALL, size: 16 };
    let a = loader.synthetic_pairs("div2k", Split::Train, all, &spec, OnProblem::Fail).unwrap();
    assert!(!a.cached && a.store.is_some());
    assert_eq!(a.count(), 18);
    assert_eq!(a.redraw, Some(spec.clone()), "a store of clean photos draws its degradation per crop");
    for i in 0..a.count() {
        assert_eq!(a.dims(i), (16, 16));
    }
    // The items are a few whole patches, degraded, for figures.
    assert_eq!(a.items.len(), 4);
    assert!((10.0..20.0).contains(&a.items[0].params.sigma.unwrap()));
    let capped =
        loader.synthetic_pairs("div2k", Split::Train, Take { count: 5, ..all }, &spec, OnProblem::Fail).unwrap();
    assert!(capped.cached, "the same store, capped");
    assert_eq!(capped.count(), 5);
    assert_ne!(capped.fingerprint, a.fingerprint);
    let b = loader.synthetic_pairs("div2k", Split::Train, all, &spec, OnProblem::Fail).unwrap();
    assert!(b.cached);
    assert_eq!(a.fingerprint, b.fingerprint);
    assert_eq!(a.items[3].clean, b.items[3].clean);
    put(&data.join("0003.png"), &img(32, 32, 3));
    let c = loader.synthetic_pairs("div2k", Split::Train, all, &spec, OnProblem::Fail).unwrap();
    assert!(!c.cached, "a changed folder must not reuse the old store");
    assert_eq!(c.count(), 27);
    // Degraded test pairs cannot serve as a clean source.
    let reg2 = registry(&dir, "[datasets.spa]\nkind = \"spa_data\"\nroot = \"/tmp\"\n");
    let loader2 = Loader { registry: &reg2, cache_dir: &cache, seed: 7, plan_only: false, stop: None };
    let err = loader2.synthetic_pairs("spa", Split::Train, all, &spec, OnProblem::Fail).unwrap_err().to_string();
    assert!(err.contains("needs clean images"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `run-pipeline datasets check` on a registry entry with a problem: counts, the problem, a
/// fingerprint, exit code 3; and exit 0 once the problem is fixed.
#[test]
fn datasets_check_command() {
    let dir = tmpdir("check");
    let data = dir.join("spa");
    put(&data.join("real_test_1000/rain/000.png"), &img(8, 8, 1));
    put(&data.join("real_test_1000/gt/000gt.png"), &img(8, 8, 2));
    put(&data.join("real_test_1000/rain/001.png"), &img(8, 8, 3));
    std::fs::write(
        dir.join("datasets.toml"),
        format!("[datasets.spa]\nkind = \"spa_data\"\nroot = \"{}\"\nsplits = [\"test\"]\n", data.display()),
    )
    .unwrap();
    let check = || {
        Command::new(env!("CARGO_BIN_EXE_run-pipeline"))
            .args(["datasets", "check", "spa", "--registry"])
            .arg(dir.join("datasets.toml"))
            .output()
            .unwrap()
    };
    let out = check();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("test  1 items (1 with ground truth), 1 problem(s), fingerprint "), "{stdout}");
    assert!(stdout.contains("001.png: missing ground truth"), "{stdout}");
    put(&data.join("real_test_1000/gt/001gt.png"), &img(8, 8, 4));
    let out = check();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("test  2 items (2 with ground truth), 0 problem(s)"), "{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The target-supervised upper bound gets the very target images the adaptation trains on,
/// now with their ground truth: for the camera simulator and for SIDD Medium on disk (crops of
/// both sides at the same places).
#[test]
fn target_training_pairs_for_the_upper_bound() {
    use run_pipeline::datasets::{Loader, OnProblem, Take};
    let root = tmpdir("oracle");
    let medium = root.join("sidd/Data/0052_002_S6_01600_01000_5500_N");
    for (f, s) in [("010", 1), ("011", 2)] {
        put(&medium.join(format!("0052_GT_SRGB_{f}.PNG")), &img(24, 20, s));
        put(&medium.join(format!("0052_NOISY_SRGB_{f}.PNG")), &img(24, 20, s + 10));
    }
    let reg = registry(
        &root,
        &format!(
            "[datasets.cam]\nkind = \"camera_sim\"\npreset = \"sidd_like\"\n\n[datasets.sidd]\nkind = \"sidd\"\nroot = \"{}\"\n",
            root.join("sidd").display()
        ),
    );
    let cache = root.join("cache");
    let loader = Loader { registry: &reg, cache_dir: &cache, seed: 3, plan_only: false, stop: None };
    let take = Take { count: 5, size: 16 };
    for name in ["cam", "sidd"] {
        let inputs = loader.target_train(name, take, OnProblem::Fail).unwrap();
        let pairs = loader.target_train_pairs(name, take, OnProblem::Fail).unwrap();
        assert_eq!(inputs.items.len(), pairs.items.len(), "{name}");
        for (a, b) in inputs.items.iter().zip(&pairs.items) {
            assert_eq!(a.id, b.id, "{name}");
            assert_eq!(a.degraded, b.degraded, "{name}: the same degraded images");
            assert_ne!(b.degraded, b.clean, "{name}: with their ground truth");
        }
    }
    // On disk the ground-truth crop is the matching window of the GT file.
    let pairs = loader.target_train_pairs("sidd", take, OnProblem::Fail).unwrap();
    let item = &pairs.items[0];
    let (x, y) = item.id.rsplit_once('@').unwrap().1.split_once(',').unwrap();
    let (x, y): (usize, usize) = (x.parse().unwrap(), y.parse().unwrap());
    let src = if item.id.starts_with("0052_002_S6_01600_01000_5500_N/010") { 1 } else { 2 };
    assert_eq!(item.clean, img(24, 20, src).quantized().crop(x, y, 16, 16));
    std::fs::remove_dir_all(&root).unwrap();
}

/// The derain pipeline with the paper's kind of source: Rain13K-layout pairs on disk, cropped,
/// no synthetic degradation (`source.degradation: null`); a clean-only source without a
/// degradation is a config error.
#[test]
fn paired_dataset_as_the_source() {
    let dir = tmpdir("paired-source");
    let data = dir.join("Rain13K");
    for k in 0..4 {
        put(&data.join(format!("input/{k}.png")), &img(40, 36, k));
        put(&data.join(format!("target/{k}.png")), &img(40, 36, k + 7));
    }
    let repo = common::repo_root();
    let reports = dir.join("reports");
    let run = |source: &str| {
        Command::new(env!("CARGO_BIN_EXE_run-pipeline"))
            .args(["pipelines/derain.yaml", "--profile", "smoke"])
            .args(["--set", &format!("report.dir={}", reports.display())])
            .args(["--set", source])
            .current_dir(&repo)
            .env("CI", "true")
            .env("RAIN13K_ROOT", &data)
            .output()
            .unwrap()
    };
    let out = run("source={dataset: rain13k, count: 6, size: 32, degradation: null}");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run_dir = std::fs::read_dir(reports.join("derain")).unwrap().next().unwrap().unwrap().path();
    let prov: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("provenance.json")).unwrap()).unwrap();
    assert_eq!(prov["datasets"]["source"]["dataset"], "rain13k");
    assert_eq!(prov["datasets"]["source"]["items"], 6, "6 of the 16 patches of 32² of 4 pairs (the cap)");
    assert_eq!(prov["datasets"]["source"]["streamed"], true, "read from the patch store");
    let out = run("source={dataset: dead-leaves, count: 6, size: 32, degradation: null}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("holds clean images only"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Training and test data on disk, as a paper-scale run reads them: `plan` says which patch
/// stores it will prepare and their disk use; the run trains from every patch of a folder of
/// photos (fresh AWGN) and of a SIDD tree (noisy side only), scores a test set read a chunk
/// at a time with the scores `run-pipeline score` gives the same files; a second run reuses
/// the stores, and a corrupted chunk is found and rebuilt before use.
#[test]
fn training_and_test_data_on_disk_stream_from_patch_stores() {
    let dir = tmpdir("stream");
    for k in 0..3 {
        put(&dir.join(format!("photos/{k:04}.png")), &img(80 + 8 * k, 70, k));
    }
    for (scene, s) in [("0001_001_S6_00100_00060_3200_L", 1), ("0002_002_GP_03200_00800_5500_N", 2)] {
        put(&dir.join(format!("sidd/Data/{scene}/{}_GT_SRGB_010.PNG", &scene[..4])), &img(96, 80, s));
        put(&dir.join(format!("sidd/Data/{scene}/{}_NOISY_SRGB_010.PNG", &scene[..4])), &img(96, 80, s + 10));
    }
    for k in 0..3 {
        put(&dir.join(format!("spa/real_test_1000/rain/{k:03}.png")), &img(40, 36, k + 20));
        put(&dir.join(format!("spa/real_test_1000/gt/{k:03}gt.png")), &img(40, 36, k + 30));
    }
    let reg = dir.join("datasets.toml");
    std::fs::write(
        &reg,
        format!(
            "[datasets.photos]\nkind = \"clean_folder\"\nroot = \"{d}/photos\"\n\n\
             [datasets.sidd]\nkind = \"sidd\"\nlayout = \"medium\"\nroot = \"{d}/sidd\"\n\n\
             [datasets.spa]\nkind = \"spa_data\"\nroot = \"{d}/spa\"\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let reports = dir.join("reports");
    let (reg_s, rep) = (reg.display().to_string(), format!("report.dir={}", reports.display()));
    let args = |cmd: Option<&'static str>| {
        let mut a: Vec<String> = cmd.into_iter().map(String::from).collect();
        a.extend(
            [
                "pipelines/denoise.yaml",
                "--profile",
                "smoke",
                "--registry",
                &reg_s,
                "--set",
                &rep,
                "--set",
                "source={dataset: photos, count: null, size: 48, degradation: {awgn: {sigma: [0, 50]}}}",
                "--set",
                "target={dataset: sidd, count: null, size: 48}",
                "--set",
                "tests=[{name: spa, dataset: spa, count: 3, size: 32, protocol: y-matlab}]",
                "--set",
                "validation=null",
                "--set",
                "diagnostics={}",
            ]
            .map(String::from),
        );
        a
    };
    let go = |a: Vec<String>| {
        Command::new(env!("CARGO_BIN_EXE_run-pipeline"))
            .args(&a)
            .current_dir(common::repo_root())
            .env("CI", "true")
            .output()
            .unwrap()
    };
    // 48² patches overlapping by 12 (stride 36, the last one flush with the edge): widths
    // 80 / 88 / 96 → 2 / 3 / 3 columns, heights 70 / 80 → 2 rows.
    let out = go(args(Some("plan")));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("prepare:photos: run") && stdout.contains("3 images → 16 patches of 48² (overlap 12)"),
        "{stdout}"
    );
    assert!(stdout.contains("prepare:sidd: run") && stdout.contains("2 images → 12 patches"), "{stdout}");
    assert!(stdout.contains("held whole") && stdout.contains("streamed from patch stores"), "{stdout}");

    let out = go(args(None));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("preparing the patch store"), "{stderr}");
    let run_dir = std::fs::read_dir(reports.join("denoise")).unwrap().next().unwrap().unwrap().path();
    let prov: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("provenance.json")).unwrap()).unwrap();
    let ds = &prov["datasets"];
    assert_eq!((ds["source"]["items"].as_u64(), ds["source"]["streamed"].as_bool()), (Some(16), Some(true)), "{ds}");
    assert_eq!((ds["target"]["items"].as_u64(), ds["target"]["streamed"].as_bool()), (Some(12), Some(true)), "{ds}");
    assert_eq!((ds["test:spa"]["items"].as_u64(), ds["test:spa"]["streamed"].as_bool()), (Some(3), Some(true)), "{ds}");
    // The test set read a chunk at a time scores as `run-pipeline score` scores the same files.
    let per_image = std::fs::read_to_string(run_dir.join("per_image.csv")).unwrap();
    let score = go([
        "score",
        &format!("{}/spa/real_test_1000/rain", dir.display()),
        &format!("{}/spa/real_test_1000/gt", dir.display()),
    ]
    .into_iter()
    .chain(["--protocol", "y-matlab", "--by-order"])
    .map(String::from)
    .collect());
    let scored = String::from_utf8_lossy(&score.stdout).into_owned();
    assert!(score.status.success(), "{scored}{}", String::from_utf8_lossy(&score.stderr));
    let header: Vec<&str> = per_image.lines().next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let input_rows: Vec<Vec<&str>> = per_image
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|r| r[col("method")] == "input")
        .collect();
    assert_eq!(input_rows.len(), 3);
    for r in &input_rows {
        let psnr: f64 = r[col("psnr")].parse().unwrap();
        assert!(
            scored.contains(&format!("PSNR {psnr:>8.4} dB")),
            "input PSNR {psnr} of {} not in:\n{scored}",
            r[col("image_id")]
        );
    }

    // The stores: one per (dataset, planes), complete and verified.
    let stores: Vec<PathBuf> = std::fs::read_dir(reports.join(".cache/patches"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("index.json").is_file())
        .collect();
    assert_eq!(stores.len(), 2, "{stores:?}");
    for s in &stores {
        let key = s.file_name().unwrap().to_string_lossy().into_owned();
        assert!(run_pipeline::datasets::patches::open_verified(s, &key).is_some());
    }
    // A flipped byte in a chunk: the next run finds it before use and rebuilds it.
    let chunk = stores[0].join("chunk-00000.bin");
    let mut bytes = std::fs::read(&chunk).unwrap();
    bytes[7] ^= 0x40;
    std::fs::write(&chunk, &bytes).unwrap();
    // `cache verify` reports it (a patch store is a cache entry like shards and stages).
    let out = go(["cache", "verify", "--dir", &reports.display().to_string()].map(String::from).to_vec());
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("patches:") && stdout.contains("chunk 0: content hash mismatch"), "{stdout}");
    let mut again = args(None);
    again.push("--fresh".into());
    let out = go(again);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("does not verify; rebuilding it"), "{stderr}");
    assert!(stderr.contains("patch store verified"), "the other store is reused:\n{stderr}");
    let key = stores[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(run_pipeline::datasets::patches::open_verified(&stores[0], &key).is_some());
    let out = go(["cache", "verify", "--dir", &reports.display().to_string()].map(String::from).to_vec());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    std::fs::remove_dir_all(&dir).unwrap();
}

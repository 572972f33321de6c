//! `run-pipeline restore` and `export` as a user runs them: a folder of odd-sized, grayscale,
//! RGBA and broken photos; a run's weights and the release's PyTorch weights.

mod common;

use common::{run, smoke, text};
use std::path::Path;

fn photos(dir: &Path) {
    std::fs::create_dir_all(dir.join("nested")).unwrap();
    image::RgbImage::from_fn(97, 131, |x, y| image::Rgb([(x * 2) as u8, (y * 3 % 256) as u8, 77]))
        .save(dir.join("odd.png"))
        .unwrap();
    image::GrayImage::from_fn(40, 36, |x, y| image::Luma([((x + y) * 3) as u8])).save(dir.join("gray.png")).unwrap();
    image::RgbaImage::from_fn(33, 20, |x, y| image::Rgba([x as u8 * 7, y as u8 * 9, 50, (x * 5 + y) as u8]))
        .save(dir.join("nested/alpha.png"))
        .unwrap();
    image::RgbImage::from_fn(30, 30, |x, _| image::Rgb([x as u8 * 8, 10, 200])).save(dir.join("photo.jpg")).unwrap();
    std::fs::write(dir.join("broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
}

/// The release's weights (PyTorch, safetensors): every readable photo restored to a PNG of the
/// same name and size, gray stays gray, alpha is kept, the broken file is named and exit 3;
/// with --reference the outputs are scored.
#[test]
fn restore_a_folder_of_photos_with_the_releases_weights() {
    let dir = common::tmpdir("restore", "folder");
    let (inp, out) = (dir.join("in"), dir.join("out"));
    photos(&inp);
    let weights = common::repo_root().join("tests/fixtures/interop/release_unet.pth");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> =
            ["restore", inp.to_str().unwrap(), out.to_str().unwrap(), "--weights", weights.to_str().unwrap()]
                .map(String::from)
                .to_vec();
        a.extend(["--arch", "unet-release:8,16,32"].map(String::from));
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let a = args(&[]);
    let o = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("broken.png") && err.contains("could not be restored"), "{err}");
    assert!(text(&o.stdout).contains("restored 4 image(s)"), "{}", text(&o.stdout));
    let odd = image::open(out.join("odd.png")).unwrap();
    assert_eq!((odd.width(), odd.height()), (97, 131));
    assert_eq!(odd.color(), image::ColorType::Rgb8);
    let gray = image::open(out.join("gray.png")).unwrap();
    assert_eq!((gray.width(), gray.height(), gray.color()), (40, 36, image::ColorType::L8));
    let alpha = image::open(out.join("nested/alpha.png")).unwrap().to_rgba8();
    let alpha_in = image::open(inp.join("nested/alpha.png")).unwrap().to_rgba8();
    assert_eq!(alpha.dimensions(), (33, 20));
    assert!(alpha.pixels().zip(alpha_in.pixels()).all(|(a, b)| a.0[3] == b.0[3]), "alpha kept");
    assert!(out.join("photo.png").is_file(), "a JPEG becomes a PNG of the same name");
    assert!(!out.join("broken.png").exists());
    // The network changed the photos (a random small UNet: far from the identity).
    let odd_in = image::open(inp.join("odd.png")).unwrap().to_rgb8();
    assert_ne!(odd.to_rgb8().as_raw(), odd_in.as_raw());
    // Tiles, and scoring against the inputs as references.
    std::fs::remove_file(inp.join("broken.png")).unwrap();
    let tiled = dir.join("tiled");
    let mut a = args(&["--tile", "32", "--overlap", "16", "--reference", inp.to_str().unwrap()]);
    a[2] = tiled.to_string_lossy().into_owned();
    let o = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("PSNR"), "{}", text(&o.stdout));
    assert!(tiled.join("scores.csv").is_file() && tiled.join("scores.parquet").is_file());
    let t = image::open(tiled.join("odd.png")).unwrap().to_rgb8();
    assert_eq!(t.dimensions(), (97, 131));
    // Input and output apart: an output folder inside the input folder, the input inside the
    // output folder, or the input folder itself are refused before anything is written.
    for (input, output) in
        [(inp.clone(), inp.join("restored")), (out.join("nested"), out.clone()), (inp.clone(), inp.clone())]
    {
        let mut a = args(&[]);
        a[1] = input.to_string_lossy().into_owned();
        a[2] = output.to_string_lossy().into_owned();
        let o = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
        assert!(text(&o.stderr).contains("choose folders apart"), "{}", text(&o.stderr));
    }
    assert!(!inp.join("restored").exists());
    // A second restore into the same folder replaces what the first wrote; a file it did not
    // write is refused (exit 2, nothing written) unless --force.
    let again = run(&args(&[]).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    std::fs::write(out.join("gray.png"), b"someone else's").unwrap();
    let before = std::fs::read(out.join("odd.png")).unwrap();
    std::fs::remove_file(out.join("odd.png")).unwrap();
    let o = run(&args(&[]).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("gray.png") && text(&o.stderr).contains("--force"), "{}", text(&o.stderr));
    assert!(!out.join("odd.png").exists(), "checked before anything is written");
    assert_eq!(std::fs::read(out.join("gray.png")).unwrap(), b"someone else's");
    let o = run(&args(&["--force"]).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(std::fs::read(out.join("odd.png")).unwrap(), before, "the same weights restore the same");
    assert!(image::open(out.join("gray.png")).is_ok());
    // Files read by what they are, not their names; what is not read is named (exit 3), the
    // rest restored: a JPEG named .png restores, a FIFO named .png is reported (never opened:
    // reading it would wait forever), an image below the depth limit is reported, not dropped.
    let odd_names = dir.join("odd_names");
    std::fs::create_dir_all(&odd_names).unwrap();
    std::fs::copy(inp.join("photo.jpg"), odd_names.join("really_a_jpeg.png")).unwrap();
    assert!(std::process::Command::new("mkfifo").arg(odd_names.join("fifo.png")).status().unwrap().success());
    let deep = (0..33).fold(odd_names.clone(), |p, i| p.join(format!("d{i}")));
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::copy(inp.join("odd.png"), deep.join("deep.png")).unwrap();
    std::fs::write(odd_names.join("text.png"), b"hello, not an image").unwrap();
    let mut a = args(&[]);
    a[1] = odd_names.to_string_lossy().into_owned();
    a[2] = dir.join("odd_out").to_string_lossy().into_owned();
    let o = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(dir.join("odd_out/really_a_jpeg.png").is_file(), "{err}");
    assert!(err.contains("fifo.png") && err.contains("not a regular file"), "{err}");
    assert!(err.contains("deeper than 32 folders"), "{err}");
    assert!(err.contains("text.png") && err.contains("not an image this tool reads"), "{err}");
    // Two inputs that would become the same PNG, and a folder with no image: errors, not silence.
    let clash = dir.join("clash");
    std::fs::create_dir_all(&clash).unwrap();
    std::fs::copy(inp.join("odd.png"), clash.join("a.png")).unwrap();
    std::fs::copy(inp.join("photo.jpg"), clash.join("a.jpg")).unwrap();
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    for (input, code, msg) in [(&clash, 3, "would both be written as"), (&empty, 3, "no images to restore")] {
        let mut a = args(&[]);
        a[1] = input.to_string_lossy().into_owned();
        a[2] = dir.join("elsewhere").to_string_lossy().into_owned();
        let o = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(o.status.code(), Some(code), "{}", text(&o.stderr));
        assert!(text(&o.stderr).contains(msg), "{}", text(&o.stderr));
    }
    // Weights that do not fit the network named.
    let mut a = args(&[]);
    a[6] = "unet-release:8,16".into();
    let o = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(3));
    assert!(text(&o.stderr).contains("unexpected: RestorationNet.down_path.2"), "{}", text(&o.stderr));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A run's own weights (`--run`, or its .bpk with no --arch), and the export of them loaded
/// back: the same restored photos.
#[test]
fn restore_with_a_runs_weights_and_export_them() {
    let dir = common::tmpdir("restore", "run");
    let reports = dir.join("reports");
    assert!(smoke(&reports, &[]).status.success());
    let run_dir = std::fs::read_dir(reports.join("denoise")).unwrap().next().unwrap().unwrap().path();
    let inp = dir.join("in");
    photos(&inp);
    std::fs::remove_file(inp.join("broken.png")).unwrap();
    let go = |out: &str, w: &[&str]| {
        let out = dir.join(out);
        let mut a = vec!["restore", inp.to_str().unwrap(), out.to_str().unwrap()];
        a.extend_from_slice(w);
        let o = run(&a);
        assert!(o.status.success(), "{}", text(&o.stderr));
        std::fs::read(out.join("odd.png")).unwrap()
    };
    let rd = run_dir.to_string_lossy().into_owned();
    let a = go("a", &["--run", &rd, "--method", "noise_da", "--seed", "0"]);
    let bpk = run_dir.join("checkpoints/noise_da-seed0.bpk").to_string_lossy().into_owned();
    let b = go("b", &["--weights", &bpk]);
    assert_eq!(a, b, "--run and the run's .bpk are the same restorer");
    let st = dir.join("g.safetensors").to_string_lossy().into_owned();
    let o = run(&["export", &st, "--run", &rd, "--method", "noise_da", "--names", "ours"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    // Export never replaces a file without --force, and never a device, a folder or a run's
    // checkpoints (the run's own weights once were replaced this way).
    let exported = std::fs::read(&st).unwrap();
    let weights = std::fs::read(run_dir.join("checkpoints/noise_da-seed0.bpk")).unwrap();
    for (target, msg) in [
        (st.clone(), "--force"),
        (bpk.clone(), "checkpoints"),
        (run_dir.join("checkpoints/new.safetensors").to_string_lossy().into_owned(), "checkpoints"),
        ("/dev/full".to_string(), "device"),
        (dir.to_string_lossy().into_owned(), "folder"),
    ] {
        let all = ["export", target.as_str(), "--run", rd.as_str(), "--method", "noise_da", "--force"];
        let o = run(&all[..if msg == "--force" { 6 } else { 7 }]);
        assert_eq!(o.status.code(), Some(2), "{target}: {}", text(&o.stderr));
        assert!(text(&o.stderr).contains(msg), "{target}: {}", text(&o.stderr));
    }
    assert_eq!(std::fs::read(&st).unwrap(), exported);
    assert_eq!(std::fs::read(run_dir.join("checkpoints/noise_da-seed0.bpk")).unwrap(), weights);
    let o = run(&["export", &st, "--run", &rd, "--method", "noise_da", "--names", "ours", "--force"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    // The smoke profile's restorer (its widths) from resolved.json.
    let resolved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("resolved.json")).unwrap()).unwrap();
    let widths: Vec<String> =
        resolved["networks"]["restorer"]["widths"].as_array().unwrap().iter().map(|w| w.to_string()).collect();
    let arch = format!("unet:{}", widths.join(","));
    let c = go("c", &["--weights", &st, "--arch", &arch]);
    assert_eq!(a, c, "the exported weights restore the same");
    // A NaN (or ±∞) in the weights is refused, naming the parameter, unless --allow-nonfinite.
    let mut bytes = std::fs::read(&st).unwrap();
    let start = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    bytes[start..start + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    let nan = dir.join("nan.safetensors");
    std::fs::write(&nan, &bytes).unwrap();
    let nan = nan.to_string_lossy().into_owned();
    let o =
        run(&["restore", inp.to_str().unwrap(), dir.join("e").to_str().unwrap(), "--weights", &nan, "--arch", &arch]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("NaN") && text(&o.stderr).contains("(1 values)"), "{}", text(&o.stderr));
    assert!(!dir.join("e").exists(), "refused before anything is written");
    let e = dir.join("e").to_string_lossy().into_owned();
    let o = run(&["restore", inp.to_str().unwrap(), &e, "--weights", &nan, "--arch", &arch, "--allow-nonfinite"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    // A flipped byte in the run's weights is refused, not used.
    let mut w = std::fs::read(run_dir.join("checkpoints/noise_da-seed0.bpk")).unwrap();
    let k = w.len() - 9;
    w[k] ^= 4;
    std::fs::write(run_dir.join("checkpoints/noise_da-seed0.bpk"), w).unwrap();
    let o = run(&["restore", inp.to_str().unwrap(), dir.join("d").to_str().unwrap(), "--run", &rd]);
    assert_eq!(o.status.code(), Some(3));
    assert!(text(&o.stderr).contains("hash mismatch"), "{}", text(&o.stderr));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `datasets export` writes a test set's pairs as PNGs that `restore --reference` scores: the
/// one-command path from a dataset (SIDD's MAT blocks included) to scored restorations.
#[test]
fn export_a_test_set_then_restore_and_score_it() {
    let dir = common::tmpdir("restore", "export");
    let pairs = dir.join("pairs");
    let o = run(&["datasets", "export", "camera-sim-sidd", pairs.to_str().unwrap(), "--count", "3"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    for sub in ["input", "target"] {
        assert_eq!(std::fs::read_dir(pairs.join(sub)).unwrap().count(), 3, "{sub}");
    }
    let weights = common::repo_root().join("tests/fixtures/interop/release_unet.safetensors");
    let out = dir.join("out");
    let o = run(&[
        "restore",
        pairs.join("input").to_str().unwrap(),
        out.to_str().unwrap(),
        "--weights",
        weights.to_str().unwrap(),
        "--arch",
        "unet-release:8,16,32",
        "--reference",
        pairs.join("target").to_str().unwrap(),
        "--protocol",
        "sidd",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let scores = std::fs::read_to_string(out.join("scores.csv")).unwrap();
    assert_eq!(scores.lines().count(), 4, "{scores}");
    assert!(scores.lines().skip(1).all(|l| l.contains(",sidd,")), "{scores}");
    std::fs::remove_dir_all(&dir).unwrap();
}

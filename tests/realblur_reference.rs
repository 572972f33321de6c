//! Checks the official RealBlur protocol (`protocols::score(ProtocolKind::Realblur, ..)`: gain,
//! ECC homography alignment, masked PSNR / SSIM) against OpenCV's findTransformECC +
//! warpPerspective and scikit-image's SSIM map, on crops of real photographs misaligned by
//! sub-pixel translations and small rotations, with gain changes, noise and blur.
//!
//! The fixtures and `reference.json` come from `tests/reference/make_realblur_refs.py`; rerun it
//! (and commit its output) if the degradations or the reference libraries change.
//!
//! OpenCV runs ECC in f32 (images, Jacobian, Hessian and the warp itself) where we accumulate in
//! f64, so agreement is to a tolerance, not to rounding. ECC converges on every fixture pair (the
//! generator checks); where it does not, OpenCV's result is chaotic and nothing can match it.

mod common;

use run_pipeline::image::Image;
use run_pipeline::protocols::{ProtocolKind, score};
use std::collections::BTreeMap;

// Tolerances, with the largest deviations measured on the fixtures (OpenCV 5.0.0, scikit-image
// 0.26, x86-64) in parentheses. Two 680×770 frames checked the same way gave the same orders.
/// Σxz/Σz² in f64 on both sides; only the summation order differs (4.3e-14).
const GAIN_TOL: f64 = 1e-9;
/// Homography entries, each as the pixels its error moves the far corner by (1.1e-5 px).
const HOMOGRAPHY_PX_TOL: f64 = 1e-4;
/// dB (2.2e-5).
const PSNR_TOL: f64 = 1e-4;
/// (8.4e-8).
const SSIM_TOL: f64 = 1e-6;

fn value(v: &serde_json::Value, key: &str, ctx: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("{ctx}: no number \"{key}\" in reference.json"))
}

#[test]
fn realblur_matches_opencv_and_skimage() {
    let dir = common::repo_root().join("tests/fixtures/realblur");
    let text = std::fs::read_to_string(dir.join("reference.json"))
        .unwrap_or_else(|e| panic!("{}: {e} (run tests/reference/make_realblur_refs.py)", dir.display()));
    let refs: serde_json::Value = serde_json::from_str(&text).expect("reference.json is not valid JSON");
    let pairs = refs["pairs"].as_array().expect("reference.json has no \"pairs\" array");
    assert!(!pairs.is_empty(), "reference.json lists no pairs");

    let mut worst: BTreeMap<&str, f64> = BTreeMap::new();
    let mut check = |what: &'static str, ctx: &str, ours: f64, want: f64, tol: f64| {
        let d = (ours - want).abs();
        assert!(d <= tol, "{ctx} {what}: ours {ours:.12} vs reference {want:.12} (|Δ| {d:.2e} > {tol:.0e})");
        let w = worst.entry(what).or_insert(0.0);
        *w = w.max(d);
    };
    for p in pairs {
        let name = |k: &str| p[k].as_str().unwrap_or_else(|| panic!("pair without \"{k}\": {p}"));
        let ctx = name("restored");
        let restored = Image::load(&dir.join(ctx)).unwrap();
        let gt = Image::load(&dir.join(name("gt"))).unwrap();
        assert_eq!((gt.width as f64, gt.height as f64), (value(p, "width", ctx), value(p, "height", ctx)), "{ctx}");
        let r = &p["realblur"];
        let s = score(ProtocolKind::Realblur, &restored, &gt).unwrap();
        check("gain", ctx, s.extra("gain").unwrap(), value(r, "gain", ctx), GAIN_TOL);
        check("psnr", ctx, s.psnr, value(r, "psnr", ctx), PSNR_TOL);
        check("ssim", ctx, s.ssim, value(r, "ssim", ctx), SSIM_TOL);
        let cv = r["homography"].as_array().expect("homography array");
        assert_eq!(cv.len(), 9, "{ctx}: homography has 9 entries");
        let (w, h) = (gt.width as f64 - 1.0, gt.height as f64 - 1.0);
        // How many pixels a unit error in each entry moves the far corner by (at most).
        let reach = [w, h, 1.0, w, h, 1.0, w * w.max(h), h * w.max(h)];
        for (k, name) in ["h00", "h01", "h02", "h10", "h11", "h12", "h20", "h21"].into_iter().enumerate() {
            let want = cv[k].as_f64().unwrap();
            let ours = s.extra(name).unwrap_or_else(|| panic!("realblur reports {name}"));
            check("homography (px at the far corner)", ctx, (ours - want) * reach[k], 0.0, HOMOGRAPHY_PX_TOL);
        }
        let iters = s.extra("ecc_iterations").unwrap();
        assert!((1.0..=100.0).contains(&iters), "{ctx}: {iters} ECC iterations");
    }
    println!("{} pairs; max |Δ| against OpenCV + scikit-image:", pairs.len());
    for (k, d) in &worst {
        println!("  {k:36} {d:.2e}");
    }
    assert_eq!(worst.len(), 4, "every quantity was checked");
}

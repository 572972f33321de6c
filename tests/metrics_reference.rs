//! Cross-checks `metrics::{psnr, ssim}` against scikit-image on real photographs.
//!
//! The fixtures and `reference.json` come from `tests/reference/make_metric_refs.py`; rerun it
//! (and commit its output) if the degradations or the reference library change.

mod common;

use run_pipeline::image::Image;
use run_pipeline::metrics::{psnr, ssim};

/// Fed identical f64 pixels the two agree to ~1e-13; what remains (measured: PSNR ≤ 2.5e-7 dB,
/// SSIM ≤ 5.2e-9) comes from `Image` storing u8/255 as f32 where skimage gets f64.
const PSNR_TOL_DB: f64 = 1e-6;
const SSIM_TOL: f64 = 1e-7;

#[test]
fn psnr_and_ssim_match_scikit_image() {
    let dir = common::repo_root().join("tests/fixtures/metrics");
    let text = std::fs::read_to_string(dir.join("reference.json"))
        .unwrap_or_else(|e| panic!("{}: {e} (run tests/reference/make_metric_refs.py)", dir.display()));
    let refs: serde_json::Value = serde_json::from_str(&text).expect("reference.json is not valid JSON");
    let pairs = refs["pairs"].as_array().expect("reference.json has no \"pairs\" array");
    assert!(!pairs.is_empty(), "reference.json lists no pairs");

    let (mut worst_psnr, mut worst_ssim) = (0.0f64, 0.0f64);
    for p in pairs {
        let field = |k: &str| p[k].as_str().unwrap_or_else(|| panic!("pair without \"{k}\": {p}"));
        let number = |k: &str| p[k].as_f64().unwrap_or_else(|| panic!("pair without \"{k}\": {p}"));
        let a = Image::load(&dir.join(field("reference"))).unwrap();
        let b = Image::load(&dir.join(field("degraded"))).unwrap();
        assert_eq!((a.width as f64, a.height as f64), (number("width"), number("height")), "{}", field("reference"));
        let (ours_psnr, ours_ssim) = (psnr(&a, &b, 1.0).unwrap(), ssim(&a, &b, 1.0).unwrap());
        let (dp, ds) = ((ours_psnr - number("psnr")).abs(), (ours_ssim - number("ssim")).abs());
        println!("{:24} psnr {ours_psnr:.6} (Δ {dp:.1e})  ssim {ours_ssim:.8} (Δ {ds:.1e})", field("degraded"));
        assert!(dp < PSNR_TOL_DB, "{}: PSNR {ours_psnr} vs skimage {}", field("degraded"), number("psnr"));
        assert!(ds < SSIM_TOL, "{}: SSIM {ours_ssim} vs skimage {}", field("degraded"), number("ssim"));
        worst_psnr = worst_psnr.max(dp);
        worst_ssim = worst_ssim.max(ds);
    }
    println!("{} pairs; max |Δ| PSNR {worst_psnr:.2e} dB, SSIM {worst_ssim:.2e}", pairs.len());
}

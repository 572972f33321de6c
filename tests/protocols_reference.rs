//! Cross-checks every `protocols::score` protocol against its reference implementation on real
//! photographs: scikit-image for `rgb` and `realblur-noalign`, exact numpy/scipy
//! re-implementations of the MATLAB code for `y-matlab` (rgb2ycbcr + Wang's SSIM) and `sidd`
//! (MATLAB's 3-D `ssim`).
//!
//! The fixtures and `reference.json` come from `tests/reference/make_protocol_refs.py`; rerun it
//! (and commit its output) if the degradations or the reference libraries change.

mod common;

use run_pipeline::image::Image;
use run_pipeline::protocols::{ProtocolKind, score};
use std::collections::BTreeMap;

/// PSNR (dB) and SSIM for `rgb`, `y-matlab`, `realblur-noalign` and sidd's per-channel SSIM.
/// Measured: ≤ 3.6e-7 dB / 5.0e-9 for the float protocols (`Image` stores u8/255 as f32 where
/// the references use f64), ≤ 4e-14 for the 8-bit ones.
const TOL: f64 = 1e-6;
/// sidd's 3-D SSIM against MATLAB's formula fed exactly the f32-rounded values `Image` holds:
/// only the summation order differs (measured ≤ 1.5e-14).
const SSIM3D_SAME_INPUT_TOL: f64 = 1e-12;
/// ...and against the value for the exact u8/255 inputs (measured ≤ 4.0e-9).
const SSIM3D_TOL: f64 = 1e-8;

fn value(v: &serde_json::Value, key: &str, ctx: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("{ctx}: no number \"{key}\" in reference.json"))
}

#[test]
fn protocols_match_reference_implementations() {
    let dir = common::repo_root().join("tests/fixtures/protocols");
    let text = std::fs::read_to_string(dir.join("reference.json"))
        .unwrap_or_else(|e| panic!("{}: {e} (run tests/reference/make_protocol_refs.py)", dir.display()));
    let refs: serde_json::Value = serde_json::from_str(&text).expect("reference.json is not valid JSON");
    let pairs = refs["pairs"].as_array().expect("reference.json has no \"pairs\" array");
    assert!(!pairs.is_empty(), "reference.json lists no pairs");

    // Worst |Δ| per (protocol, quantity).
    let mut worst: BTreeMap<String, f64> = BTreeMap::new();
    let mut check = |what: String, ours: f64, want: f64, tol: f64| {
        let d = (ours - want).abs();
        assert!(d < tol, "{what}: ours {ours:.15} vs reference {want:.15} (|Δ| {d:.2e} ≥ {tol:.0e})");
        let key = what.split_once(' ').map_or(what.as_str(), |(_, k)| k).to_string();
        let w = worst.entry(key).or_insert(0.0);
        *w = w.max(d);
    };
    for p in pairs {
        let name = |k: &str| p[k].as_str().unwrap_or_else(|| panic!("pair without \"{k}\": {p}"));
        let restored = Image::load(&dir.join(name("degraded"))).unwrap();
        let reference = Image::load(&dir.join(name("reference"))).unwrap();
        let size = (value(p, "width", name("degraded")), value(p, "height", name("degraded")));
        assert_eq!((reference.width as f64, reference.height as f64), size, "{}", name("reference"));
        // `realblur` (ECC alignment) is checked against OpenCV in tests/realblur_reference.rs.
        for kind in ProtocolKind::ALL.into_iter().filter(|&k| k != ProtocolKind::Realblur) {
            let r = &p["scores"][kind.name()];
            let ctx = format!("{} {kind}", name("degraded"));
            let s = score(kind, &restored, &reference).unwrap();
            check(format!("{ctx} psnr"), s.psnr, value(r, "psnr", &ctx), TOL);
            if kind == ProtocolKind::Sidd {
                check(
                    format!("{ctx} ssim3d-same-input"),
                    s.ssim,
                    value(r, "ssim_f32_input", &ctx),
                    SSIM3D_SAME_INPUT_TOL,
                );
                check(format!("{ctx} ssim3d"), s.ssim, value(r, "ssim", &ctx), SSIM3D_TOL);
                let per_channel = s.extra("ssim_per_channel").expect("sidd reports ssim_per_channel");
                check(format!("{ctx} ssim_per_channel"), per_channel, value(r, "ssim_per_channel", &ctx), TOL);
            } else {
                check(format!("{ctx} ssim"), s.ssim, value(r, "ssim", &ctx), TOL);
            }
        }
    }
    println!("{} pairs; max |Δ| against the references:", pairs.len());
    for (k, d) in &worst {
        println!("  {k:32} {d:.2e}");
    }
    assert_eq!(worst.len(), 4 * 2 + 2, "every protocol and quantity was checked");
}

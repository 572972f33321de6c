//! Parity with PyTorch implementations of NAFNet and Restormer written from the papers
//! (`scripts/archs_parity.py make tests/fixtures/archs`, seed 0, small configurations, every
//! parameter randomised): checkpoints in their authors' layout (`{"params": state_dict}`)
//! load by name, and the output, the loss, the input gradient and two parameters' gradients
//! equal PyTorch's. Also: the published configurations' parameter counts.

use super::*;
use crate::networks::interop::{Naming, load_restorer, read_state_dict, state_dict};
use burn::tensor::{Gradients, TensorData};

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/archs").join(name)
}

/// A fixture's configuration and its PyTorch parameter count (`configs.json`).
fn fixture_cfg(arch: &str) -> (RestorerConfig, usize) {
    let text = std::fs::read_to_string(fixture("configs.json")).unwrap();
    let all: serde_json::Value = serde_json::from_str(&text).unwrap();
    let c = &all[arch];
    let n = |k: &str| c[k].as_u64().unwrap() as usize;
    let list = |k: &str| c[k].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect::<Vec<_>>();
    let cfg = match arch {
        "nafnet" => RestorerConfig::Nafnet(NafnetConfig {
            width: n("width"),
            enc_blocks: list("enc_blocks"),
            middle_blocks: n("middle_blocks"),
            dec_blocks: list("dec_blocks"),
        }),
        _ => RestorerConfig::Restormer(RestormerConfig {
            dim: n("dim"),
            blocks: list("blocks").try_into().unwrap(),
            refinement: n("refinement"),
            heads: list("heads").try_into().unwrap(),
            ffn_expansion: c["ffn_expansion"].as_f64().unwrap(),
            layer_norm: LayerNormKind::BiasFree,
        }),
    };
    (cfg, n("params"))
}

fn tensor4(sd: &crate::networks::interop::StateDict, key: &str, device: &Device) -> Tensor<4> {
    let (shape, v) = sd.tensors[key].clone();
    Tensor::from_data(TensorData::new(v, [shape[0], shape[1], shape[2], shape[3]]), device)
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// max |a − b| / max(|b|, floor).
fn rel(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).map(|(p, q)| (p - q).abs()).fold(0.0, f32::max) / scale
}

/// The gradient of the parameter our path `path` names.
fn grad_of(g: &Restorer, grads: &Gradients, path: &str) -> Vec<f32> {
    let paths = crate::networks::interop::param_paths(g);
    let i = paths.iter().position(|(p, _)| p == path).unwrap_or_else(|| panic!("no parameter {path}"));
    crate::networks::param_grads(g, grads).swap_remove(i)
}

fn check_arch(arch: &str, ours_for: &[(&str, &str)]) {
    let _rng = crate::util::rng_lock();
    let (cfg, want_params) = fixture_cfg(arch);
    let dev = Device::flex().autodiff();
    let io = read_state_dict(&fixture(&format!("{arch}_io.safetensors"))).unwrap();
    for file in [format!("{arch}.pth"), format!("{arch}.safetensors")] {
        let sd = read_state_dict(&fixture(&file)).unwrap();
        // Loaded values are plain tensors; `train` makes them track gradients again.
        let g = load_restorer(&cfg, &sd, Naming::Release, &dev).unwrap_or_else(|e| panic!("{file}: {e}")).train();
        assert_eq!(g.num_params(), want_params, "{file}");
        // The export in the authors' names is the file again.
        let back = state_dict(&g, &cfg, Naming::Release, "").unwrap();
        let mut file_keys: Vec<&str> = sd.tensors.keys().map(|k| k.strip_prefix("params.").unwrap_or(k)).collect();
        file_keys.sort();
        assert_eq!(back.tensors.keys().map(String::as_str).collect::<Vec<_>>(), file_keys, "{file}");
        let x = tensor4(&io, "input", &dev).require_grad();
        let y = g.restore(x.clone());
        let out = values(y.clone());
        let d_out = rel(&out, &io.tensors["output"].1);
        assert!(d_out < 1e-5, "{file}: output differs from PyTorch's by {d_out} (relative)");
        // The target is the input's channels reversed, a constant (no gradient through it).
        let target = tensor4(&io, "input", &dev).flip([1]);
        let loss = (y - target).abs().mean();
        let l = values(loss.clone())[0];
        assert!((l - io.tensors["loss"].1[0]).abs() < 1e-5, "{file}: loss {l} vs {}", io.tensors["loss"].1[0]);
        let grads = loss.backward();
        let gx = values(x.grad(&grads).unwrap());
        let d_in = rel(&gx, &io.tensors["input_grad"].1);
        assert!(d_in < 1e-3, "{file}: input gradient differs by {d_in}");
        for (published, ours) in ours_for {
            assert_eq!(cfg.arch().published_key(ours), Some(Source::Key(published.to_string())));
            let d = rel(&grad_of(&g, &grads, ours), &io.tensors[&format!("grad.{published}")].1);
            assert!(d < 1e-3, "{file}: gradient of {published} differs by {d}");
        }
        eprintln!(
            "{file}: output within {d_out:.1e}, input gradient within {d_in:.1e} (relative to the largest value)"
        );
    }
}

#[test]
fn nafnet_matches_pytorch() {
    check_arch(
        "nafnet",
        &[("intro.weight", "intro.weight"), ("encoders.0.0.conv2.weight", "encoders.0.0.conv2.weight")],
    );
}

#[test]
fn restormer_matches_pytorch() {
    check_arch(
        "restormer",
        &[
            ("patch_embed.proj.weight", "patch_embed.weight"),
            ("encoder_level1.0.attn.qkv_dwconv.weight", "encoder_level1.0.attn.qkv_dwconv.weight"),
        ],
    );
}

/// The papers' configurations have the parameter counts of their authors' implementations.
#[test]
fn published_parameter_counts() {
    let count = |s: &str| parse_arch(s).unwrap().init_lazy(&Device::flex()).num_params();
    assert_eq!(count("nafnet"), 29_159_715);
    assert_eq!(count("nafnet-sidd-width64"), 115_982_915);
    assert_eq!(count("restormer"), 26_126_644);
    assert_eq!(count("restormer-real-denoising"), 26_111_668);
    assert_eq!(count("unet-s"), 8_559_171);
}

/// `arch` may be left out (a UNet, as before the tag existed); a family's settings are its
/// own: another family's key is refused.
#[test]
fn tagged_settings() {
    let parse = |s: &str| -> Result<RestorerConfig, String> {
        with_default_arch(&mut serde_json::Deserializer::from_str(s)).map_err(|e| e.to_string())
    };
    assert_eq!(parse(r#"{"widths": [8, 16]}"#).unwrap(), RestorerConfig::unet(vec![8, 16]));
    assert_eq!(
        parse(r#"{"arch": "nafnet", "width": 16}"#).unwrap().describe(),
        "NAFNet width 16, blocks [2, 2, 4, 8]/12/[2, 2, 2, 2]"
    );
    let err = parse(r#"{"arch": "dncnn", "widths": [8]}"#).unwrap_err();
    assert!(err.contains("unknown field `widths`"), "{err}");
    let err = parse(r#"{"arch": "resnet"}"#).unwrap_err();
    assert!(err.contains("unknown variant `resnet`") && err.contains("restormer"), "{err}");
    // Serialised with the tag first: a UNet's form (and so its stage key) is what it was.
    let json = serde_json::to_string(&RestorerConfig::unet_release(vec![8])).unwrap();
    assert_eq!(json, r#"{"arch":"unet","widths":[8],"upsample":"release"}"#);
    for (_, cfg) in FAMILIES.iter().flat_map(|f| (f.presets)()) {
        assert_eq!(parse(&serde_json::to_string(&cfg).unwrap()).unwrap(), cfg);
    }
}

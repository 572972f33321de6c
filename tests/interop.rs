//! Parity with PyTorch: weights of the authors' `RestorationNet` layout, saved by PyTorch
//! (`scripts/release_parity.py make`, widths 8/16/32, seed 0), load into our release-compatible
//! UNet and compute PyTorch's output on the same input.

mod common;

use burn::tensor::{Device, Tensor, TensorData};
use run_pipeline::networks::interop::{Naming, load_restorer, read_state_dict};
use run_pipeline::networks::{RestorerConfig, Upsample};

fn fixture(name: &str) -> std::path::PathBuf {
    common::repo_root().join("tests/fixtures/interop").join(name)
}

fn release_cfg() -> RestorerConfig {
    RestorerConfig { upsample: Upsample::Release, ..RestorerConfig::unet(vec![8, 16, 32]) }
}

/// Max |ours − PyTorch| over the fixture's input, for weights read from `weights`.
fn parity(weights: &str) -> f32 {
    let dev = Device::flex();
    let sd = read_state_dict(&fixture(weights)).unwrap();
    let g = load_restorer(&release_cfg(), &sd, Naming::Release, &dev).unwrap();
    let io = read_state_dict(&fixture("io.safetensors")).unwrap();
    let (shape, x) = io.tensors["input"].clone();
    let (_, want) = io.tensors["output"].clone();
    let x = Tensor::<4>::from_data(TensorData::new(x, [shape[0], shape[1], shape[2], shape[3]]), &dev);
    let got = g.restore(x).into_data().try_to_vec::<f32>().unwrap();
    assert_eq!(got.len(), want.len());
    got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

#[test]
fn release_weights_from_safetensors_compute_pytorchs_output() {
    let err = parity("release_unet.safetensors");
    eprintln!("max |ours - PyTorch| = {err:e}");
    assert!(err < 1e-5, "max |ours - PyTorch| = {err}");
}

/// The standard up-sampling (align_corners = false, LeakyReLU after the up-conv) is another
/// function: the same weights give another output — the release flavour is what makes them fit.
#[test]
fn the_standard_upsampling_is_not_the_release_network() {
    let dev = Device::flex();
    let sd = read_state_dict(&fixture("release_unet.safetensors")).unwrap();
    let g = load_restorer(&RestorerConfig::unet(vec![8, 16, 32]), &sd, Naming::Release, &dev).unwrap();
    let io = read_state_dict(&fixture("io.safetensors")).unwrap();
    let (shape, x) = io.tensors["input"].clone();
    let x = Tensor::<4>::from_data(TensorData::new(x, [shape[0], shape[1], shape[2], shape[3]]), &dev);
    let got = g.restore(x).into_data().try_to_vec::<f32>().unwrap();
    let err = got.iter().zip(&io.tensors["output"].1).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(err > 1e-3, "{err}");
}

/// The same checkpoint as PyTorch's own `torch.save` wrote it (zip + pickle): read without
/// Python, the same function.
#[test]
fn release_weights_from_a_pth_checkpoint_compute_pytorchs_output() {
    let a = read_state_dict(&fixture("release_unet.pth")).unwrap();
    let b = read_state_dict(&fixture("release_unet.safetensors")).unwrap();
    assert_eq!(a, b, "the .pth and safetensors copies hold the same tensors");
    let err = parity("release_unet.pth");
    assert!(err < 1e-5, "max |ours - PyTorch| = {err}");
}

/// A file that is neither format, or a cut-short one, is an error naming it.
#[test]
fn unreadable_weight_files_are_errors() {
    let dir = common::tmpdir("interop", "bad");
    let pth = std::fs::read(fixture("release_unet.pth")).unwrap();
    for (name, bytes) in [("cut.pth", pth[..pth.len() / 2].to_vec()), ("junk.safetensors", b"hello world".to_vec())] {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        let err = read_state_dict(&p).unwrap_err();
        assert!(err.contains(name), "{err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

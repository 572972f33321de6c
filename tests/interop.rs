//! Parity with PyTorch: weights of the authors' `RestorationNet` layout, saved by PyTorch
//! (`scripts/release_parity.py make`, widths 8/16/32, seed 0), load into our release-compatible
//! UNet and compute PyTorch's output on the same input.

mod common;

use burn::tensor::{Device, Tensor, TensorData};
use run_pipeline::networks::RestorerConfig;
use run_pipeline::networks::interop::{Naming, load_restorer, read_state_dict};

fn fixture(name: &str) -> std::path::PathBuf {
    common::repo_root().join("tests/fixtures/interop").join(name)
}

fn release_cfg() -> RestorerConfig {
    RestorerConfig::unet_release(vec![8, 16, 32])
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

/// Weight files made by hand (`scripts/hostile_weights.py`, no PyTorch needed): well-formed
/// variants load — a dict under `params` (as NAFNet's and Restormer's checkpoints), two
/// levels of dicts, the legacy pre-1.6 format — each with the same tensors; hostile ones are
/// refused with an error naming the file, never an abort (a stack overflow from 200,000 nested
/// lists, an allocation of 4 TiB, a shape whose element count overflows) or a wrong `Ok`.
#[test]
fn hostile_weight_files_are_refused_well_formed_variants_load() {
    let dir = common::repo_root().join("tests/fixtures/weights");
    let flat = read_state_dict(&dir.join("ok_params.pth")).unwrap();
    let conv = &flat.tensors["params.RestorationNet.conv.weight"];
    assert_eq!(conv.0, vec![4, 3, 3, 3]);
    let nested = read_state_dict(&dir.join("ok_nested2.pth")).unwrap();
    assert_eq!(&nested.tensors["model.net.RestorationNet.conv.weight"], conv);
    let legacy = read_state_dict(&dir.join("f_legacy.pth")).unwrap();
    assert_eq!(&legacy.tensors["RestorationNet.conv.weight"], conv);
    // 1,000 nested lists beside a tensor are a valid (if odd) pickle.
    assert!(read_state_dict(&dir.join("a_deep_lists_1000.pth")).is_ok());
    for bad in [
        "a_deep_lists_200000.pth",
        "c_truncated_half.pth",
        "e_storage_short.pth",
        "e_view_offset_past.pth",
        "e_view_stride_past.pth",
        "g_8gib_expand.pth",
        "g_huge_shape_stride0.pth",
        "g_huge_shape_stride1.pth",
        "g_numel_overflow.pth",
        "s_hdr_huge.safetensors",
        "s_offsets_past.safetensors",
        "s_overlap.safetensors",
        "s_shape_overflow.safetensors",
    ] {
        let err = read_state_dict(&dir.join(bad)).expect_err(bad);
        assert!(err.contains(bad), "{bad}: {err}");
        eprintln!("{bad}: {err}");
    }
    let err = read_state_dict(&dir).unwrap_err();
    assert!(err.contains("not a regular file"), "{err}");
    // A safetensors file is read whole: one larger than 2³⁰ f32 values and a header could take
    // (a sparse file here) is refused from its size, before any byte is read.
    let tmp = common::tmpdir("interop", "huge");
    let huge = tmp.join("huge.safetensors");
    std::fs::File::create(&huge).unwrap().set_len(5_000_000_000).unwrap();
    let err = read_state_dict(&huge).unwrap_err();
    assert!(err.contains("huge.safetensors") && err.contains("more than a safetensors file"), "{err}");
    std::fs::remove_dir_all(&tmp).unwrap();
}

//! Restorer weights in the PyTorch ecosystem's formats: safetensors (read and write) and
//! PyTorch `.pth` state dicts (read; `pth.rs`), with the key names of the authors' release.
//!
//! The release's `RestorationNet` (UNet) names its parameters `down_path.{i}.block.{0,2}`,
//! `up_path.{j}.conv_up`, `up_path.{j}.conv_block.block.{0,2}` and `last` (each `.weight`,
//! `.bias`; up levels deepest first, as ours). Its checkpoints store the whole `Network` — G under
//! `RestorationNet.`, the diffusion model under `denoise_fn.` — sometimes behind DataParallel's
//! `module.`: the prefix is found and everything else is ignored. Loaded into our UNet with
//! `upsample: release`, the weights compute the release's function exactly (`x + G(x)`; tested
//! against PyTorch with `scripts/release_parity.py`'s fixture).
//!
//! Every tensor is checked: a missing, unexpected or mis-shaped key is an error naming it.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor, TensorData};

use super::restorer::{Restorer, RestorerArch, RestorerConfig};

mod pth;

/// Named tensors as f32, in a file's order-independent form.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StateDict {
    pub tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

/// Read a state dict from `.safetensors` or a PyTorch `.pth`/`.pt` file (by content).
pub fn read_state_dict(path: &Path) -> Result<StateDict, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let what = path.display().to_string();
    if bytes.starts_with(b"PK\x03\x04") {
        pth::read(&bytes).map_err(|e| format!("{what}: {e}"))
    } else {
        read_safetensors(&bytes).map_err(|e| format!("{what}: {e}"))
    }
}

/// Parse safetensors: an 8-byte little-endian header length, a JSON header naming each
/// tensor's dtype, shape and byte range, then the data. F32, F64, F16 and BF16 are read.
pub fn read_safetensors(bytes: &[u8]) -> Result<StateDict, String> {
    let n = bytes.get(..8).ok_or("not a safetensors file (too short)")?;
    let n = u64::from_le_bytes(n.try_into().expect("8 bytes")) as usize;
    let header = bytes.get(8..8usize.saturating_add(n)).ok_or("not a safetensors file (header past the end)")?;
    let data = &bytes[8 + n..];
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| format!("not a safetensors file (header: {e})"))?;
    let mut out = StateDict::default();
    for (name, info) in header {
        if name == "__metadata__" {
            continue;
        }
        let dtype = info["dtype"].as_str().ok_or_else(|| format!("{name}: no dtype"))?;
        let shape: Vec<usize> = info["shape"]
            .as_array()
            .ok_or_else(|| format!("{name}: no shape"))?
            .iter()
            .map(|v| v.as_u64().map(|d| d as usize).ok_or_else(|| format!("{name}: bad shape")))
            .collect::<Result<_, _>>()?;
        let offs = info["data_offsets"].as_array().ok_or_else(|| format!("{name}: no data_offsets"))?;
        let (b, e) = match (offs.first().and_then(|v| v.as_u64()), offs.get(1).and_then(|v| v.as_u64())) {
            (Some(b), Some(e)) if b <= e => (b as usize, e as usize),
            _ => return Err(format!("{name}: bad data_offsets")),
        };
        let raw = data.get(b..e).ok_or_else(|| format!("{name}: data past the end of the file"))?;
        let numel: usize = shape.iter().product();
        let values = decode(raw, dtype).map_err(|m| format!("{name}: {m}"))?;
        if values.len() != numel {
            return Err(format!("{name}: {} values for shape {shape:?}", values.len()));
        }
        out.tensors.insert(name, (shape, values));
    }
    Ok(out)
}

/// Little-endian values of `dtype` as f32.
pub(crate) fn decode(raw: &[u8], dtype: &str) -> Result<Vec<f32>, String> {
    let chunks = |k: usize| {
        if raw.len() % k != 0 {
            return Err(format!("{} bytes is not a whole number of {dtype} values", raw.len()));
        }
        Ok(raw.chunks_exact(k))
    };
    Ok(match dtype {
        "F32" => chunks(4)?.map(|c| f32::from_le_bytes(c.try_into().expect("4"))).collect(),
        "F64" => chunks(8)?.map(|c| f64::from_le_bytes(c.try_into().expect("8")) as f32).collect(),
        "F16" => chunks(2)?.map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
        "BF16" => chunks(2)?.map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16)).collect(),
        other => return Err(format!("dtype {other} is not a float type we read")),
    })
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = (h >> 10) & 0x1f;
    let frac = (h & 0x3ff) as f32;
    sign * match exp {
        0 => frac * 2f32.powi(-24),
        31 if frac == 0.0 => f32::INFINITY,
        31 => f32::NAN,
        e => (1.0 + frac / 1024.0) * 2f32.powi(e as i32 - 15),
    }
}

/// Write `sd` as safetensors (F32), with `metadata` in the header's `__metadata__`.
pub fn write_safetensors(path: &Path, sd: &StateDict, metadata: &[(&str, &str)]) -> std::io::Result<()> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        let m: serde_json::Map<String, serde_json::Value> =
            metadata.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(*v))).collect();
        header.insert("__metadata__".into(), m.into());
    }
    let mut data = Vec::new();
    for (name, (shape, values)) in &sd.tensors {
        let b = data.len();
        for v in values {
            data.extend_from_slice(&v.to_le_bytes());
        }
        header
            .insert(name.clone(), serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [b, data.len()]}));
    }
    let mut h = serde_json::to_vec(&header).expect("json");
    // The data starts 8-byte aligned, as the format recommends.
    while (8 + h.len()) % 8 != 0 {
        h.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + h.len() + data.len());
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(&data);
    crate::util::write_atomic(path, &out).map_err(std::io::Error::other)
}

/// Parameter naming of a state dict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Naming {
    /// Our module paths (`enc.0.a.weight`, ...).
    Ours,
    /// The authors' release (`down_path.0.block.0.weight`, ...).
    Release,
}

/// Where one of our parameters comes from in a file.
#[derive(Clone, Debug, PartialEq)]
enum Source {
    Key(String),
    /// Not stored there (the release's DnCNN convolutions have no bias): zero.
    Zero,
}

/// Our parameter path → the release's key. UNet (`RestorationNet`): `enc.1.b.weight` →
/// `down_path.1.block.2.weight`, ... DnCNN (`dncnn` Sequential of `depth` convs, BatchNorm
/// after each middle one, no conv biases): `first` → `dncnn.0`, `mid.k.conv` → `dncnn.{2+3k}`,
/// `mid.k.bn.{gamma,beta,running_mean,running_var}` → `dncnn.{3+3k}.{weight,bias,...}`,
/// `last` → `dncnn.{3·(depth−2)+2}`.
fn release_source(cfg: &RestorerConfig, ours: &str) -> Option<Source> {
    let p: Vec<&str> = ours.split('.').collect();
    let conv = |x: &str| match x {
        "a" => Some("0"),
        "b" => Some("2"),
        _ => None,
    };
    let key = |k: String| Some(Source::Key(k));
    match cfg.arch {
        RestorerArch::Unet => match p.as_slice() {
            ["enc", i, ab, leaf] => key(format!("down_path.{i}.block.{}.{leaf}", conv(ab)?)),
            ["up", j, leaf] => key(format!("up_path.{j}.conv_up.{leaf}")),
            ["dec", j, ab, leaf] => key(format!("up_path.{j}.conv_block.block.{}.{leaf}", conv(ab)?)),
            ["out", leaf] => key(format!("last.{leaf}")),
            _ => None,
        },
        RestorerArch::Dncnn => {
            let depth = cfg.depth.unwrap_or(17);
            let conv_at = |i: usize, leaf: &str| match leaf {
                "weight" => key(format!("dncnn.{i}.weight")),
                "bias" => Some(Source::Zero),
                _ => None,
            };
            match p.as_slice() {
                ["first", leaf] => conv_at(0, leaf),
                ["mid", k, "conv", leaf] => conv_at(2 + 3 * k.parse::<usize>().ok()?, leaf),
                ["mid", k, "bn", leaf] => {
                    let name = match *leaf {
                        "gamma" => "weight",
                        "beta" => "bias",
                        "running_mean" | "running_var" => leaf,
                        _ => return None,
                    };
                    key(format!("dncnn.{}.{name}", 3 + 3 * k.parse::<usize>().ok()?))
                }
                ["last", leaf] => conv_at(3 * (depth - 2) + 2, leaf),
                _ => None,
            }
        }
    }
}

/// Keys of a file that belong to the restorer family named (the rest is another network).
fn release_family(key: &str) -> bool {
    key.starts_with("down_path.")
        || key.starts_with("up_path.")
        || key.starts_with("last.")
        || key.starts_with("dncnn.")
}

/// Every float parameter of `g` in visiting order: (our path, shape, values if `values`).
fn params(g: &Restorer, values: bool) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    struct Walk {
        stack: Vec<String>,
        values: bool,
        out: Vec<(String, Vec<usize>, Vec<f32>)>,
    }
    impl ModuleVisitor for Walk {
        fn enter_module(&mut self, name: &str, container: &str) {
            // The enum's variant is not part of a parameter's name.
            if !container.starts_with("Enum:") {
                self.stack.push(name.to_string());
            }
        }
        fn exit_module(&mut self, _name: &str, container: &str) {
            if !container.starts_with("Enum:") {
                self.stack.pop();
            }
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let t = param.val();
            let v = if self.values {
                t.clone().into_data().convert::<f32>().try_to_vec::<f32>().unwrap_or_default()
            } else {
                Vec::new()
            };
            self.out.push((self.stack.join("."), t.dims().to_vec(), v));
        }
    }
    let mut w = Walk { stack: Vec::new(), values, out: Vec::new() };
    g.visit(&mut w);
    w.out
}

/// Every float parameter of `g` as (our path, shape).
fn param_paths(g: &Restorer) -> Vec<(String, Vec<usize>)> {
    params(g, false).into_iter().map(|(p, s, _)| (p, s)).collect()
}

/// The prefix under which `sd` holds the restorer: `""`, `RestorationNet.`, `module.`, ...
fn find_prefix(sd: &StateDict, probe: &str) -> Option<String> {
    sd.tensors.keys().find_map(|k| k.strip_suffix(probe).map(str::to_string))
}

/// Build a restorer of `cfg` holding the weights of `sd` (named `naming`). Other networks in
/// the file (the release's diffusion model) are ignored; any restorer key that is missing,
/// left over or of another shape is an error listing them.
pub fn load_restorer(
    cfg: &RestorerConfig,
    sd: &StateDict,
    naming: Naming,
    device: &Device,
) -> Result<Restorer, String> {
    let g = cfg.init(device);
    let ours = param_paths(&g);
    let source_of = |path: &str| match naming {
        Naming::Ours => Some(Source::Key(path.to_string())),
        Naming::Release => release_source(cfg, path),
    };
    let sources: Vec<Source> = ours
        .iter()
        .map(|(p, _)| source_of(p).ok_or_else(|| format!("no key for our parameter {p}")))
        .collect::<Result<_, _>>()?;
    let first = sources
        .iter()
        .find_map(|s| match s {
            Source::Key(k) => Some(k.clone()),
            Source::Zero => None,
        })
        .ok_or("no key map for this network")?;
    let prefix = find_prefix(sd, &first).ok_or_else(|| {
        let some: Vec<&String> = sd.tensors.keys().take(6).collect();
        format!("no `{first}` (or `<prefix>{first}`) in the file; its first keys: {some:?}")
    })?;
    let (mut missing, mut misshaped, mut used) = (Vec::new(), Vec::new(), Vec::new());
    let mut values: Vec<(Vec<usize>, Vec<f32>)> = Vec::new();
    for ((_, shape), src) in ours.iter().zip(&sources) {
        match src {
            Source::Zero => values.push((shape.clone(), vec![0.0; shape.iter().product()])),
            Source::Key(k) => {
                let key = format!("{prefix}{k}");
                match sd.tensors.get(&key) {
                    None => missing.push(key.clone()),
                    Some((s, _)) if s != shape => misshaped.push(format!("{key}: {s:?} in the file, {shape:?} here")),
                    Some(t) => values.push(t.clone()),
                }
                used.push(key);
            }
        }
    }
    // Keys of the same network that nothing here takes (another depth or width).
    let unexpected: Vec<&str> = sd
        .tensors
        .keys()
        .filter(|k| k.starts_with(&prefix) && !used.contains(k))
        .filter(|k| {
            let rest = &k[prefix.len()..];
            match naming {
                Naming::Ours => true,
                Naming::Release => release_family(rest) && !rest.ends_with("num_batches_tracked"),
            }
        })
        .map(String::as_str)
        .collect();
    if !missing.is_empty() || !misshaped.is_empty() || !unexpected.is_empty() {
        let mut msg = format!("the weights do not fit the restorer {}", cfg.describe());
        if !missing.is_empty() {
            msg.push_str(&format!("; missing: {}", missing.join(", ")));
        }
        if !misshaped.is_empty() {
            msg.push_str(&format!("; shape mismatch: {}", misshaped.join("; ")));
        }
        if !unexpected.is_empty() {
            msg.push_str(&format!("; unexpected: {}", unexpected.join(", ")));
        }
        return Err(msg);
    }
    struct Fill {
        values: std::vec::IntoIter<(Vec<usize>, Vec<f32>)>,
        device: Device,
    }
    impl ModuleMapper for Fill {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (shape, v) = self.values.next().expect("one value per parameter");
            let t = Tensor::<D>::from_data(TensorData::new(v, shape), &self.device);
            param.map(|_| t)
        }
    }
    Ok(g.map(&mut Fill { values: values.into_iter(), device: device.clone() }))
}

/// `g`'s weights as a state dict named `naming` (the release's names under `prefix`, e.g.
/// `RestorationNet.` as its `Network` stores them, or none).
pub fn state_dict(g: &Restorer, cfg: &RestorerConfig, naming: Naming, prefix: &str) -> Result<StateDict, String> {
    let mut sd = StateDict::default();
    for (path, shape, v) in params(g, true) {
        let key = match naming {
            Naming::Ours => path,
            Naming::Release => match release_source(cfg, &path) {
                Some(Source::Key(k)) => k,
                // The release stores no such parameter; ours must then be zero to mean the same.
                Some(Source::Zero) if v.iter().all(|x| *x == 0.0) => continue,
                Some(Source::Zero) => {
                    return Err(format!("{path}: the release's network has no such parameter and ours is not zero"));
                }
                None => return Err(format!("{path}: no release name")),
            },
        };
        sd.tensors.insert(format!("{prefix}{key}"), (shape, v));
    }
    Ok(sd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfgs() -> Vec<RestorerConfig> {
        vec![
            RestorerConfig { upsample: super::super::Upsample::Release, ..RestorerConfig::unet(vec![4, 8, 16]) },
            RestorerConfig { arch: RestorerArch::Dncnn, depth: Some(4), width: Some(6), ..Default::default() },
        ]
    }

    /// Export then import (release names, under the release's prefix, through a safetensors
    /// file) gives the same network: the same output on an input.
    #[test]
    fn release_names_round_trip_through_safetensors() {
        let dev = Device::flex();
        let dir = std::env::temp_dir().join(format!("rp-interop-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for cfg in cfgs() {
            let mut g = cfg.init(&dev);
            if cfg.arch == RestorerArch::Dncnn {
                // The release's DnCNN convolutions have no bias: zero ours to mean the same.
                let mut sd = state_dict(&g, &cfg, Naming::Ours, "").unwrap();
                for (k, (_, v)) in sd.tensors.iter_mut() {
                    if k.ends_with("conv.bias") || k == "first.bias" || k == "last.bias" {
                        v.iter_mut().for_each(|x| *x = 0.0);
                    }
                }
                g = load_restorer(&cfg, &sd, Naming::Ours, &dev).unwrap();
            }
            let sd = state_dict(&g, &cfg, Naming::Release, "RestorationNet.").unwrap();
            let file = dir.join("g.safetensors");
            write_safetensors(&file, &sd, &[("format", "pt")]).unwrap();
            let back = read_state_dict(&file).unwrap();
            assert_eq!(back, sd);
            let h = load_restorer(&cfg, &back, Naming::Release, &dev).unwrap();
            let x = Tensor::<4>::from_data(
                TensorData::new(
                    (0..3 * 16 * 16).map(|i| ((i * 7) % 13) as f32 / 13.0).collect::<Vec<_>>(),
                    [1, 3, 16, 16],
                ),
                &dev,
            );
            let (a, b) = (g.restore(x.clone()).into_data(), h.restore(x).into_data());
            assert_eq!(a, b, "{}", cfg.describe());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn wrong_weights_are_named() {
        let dev = Device::flex();
        let cfg = RestorerConfig { upsample: super::super::Upsample::Release, ..RestorerConfig::unet(vec![4, 8]) };
        let g = cfg.init(&dev);
        let mut sd = state_dict(&g, &cfg, Naming::Release, "module.RestorationNet.").unwrap();
        sd.tensors.insert("module.denoise_fn.input_blocks.0.0.weight".into(), (vec![1], vec![0.0]));
        load_restorer(&cfg, &sd, Naming::Release, &dev).expect("the diffusion model is ignored");
        let mut bad = sd.clone();
        bad.tensors.remove("module.RestorationNet.last.bias");
        bad.tensors.insert("module.RestorationNet.down_path.2.block.0.weight".into(), (vec![1], vec![0.0]));
        let (s, v) = bad.tensors.get_mut("module.RestorationNet.up_path.0.conv_up.weight").unwrap();
        *s = vec![4, 8, 1, 9];
        let _ = v;
        let err = load_restorer(&cfg, &bad, Naming::Release, &dev).unwrap_err();
        assert!(err.contains("missing: module.RestorationNet.last.bias"), "{err}");
        assert!(err.contains("unexpected: module.RestorationNet.down_path.2.block.0.weight"), "{err}");
        assert!(err.contains("shape mismatch: module.RestorationNet.up_path.0.conv_up.weight: [4, 8, 1, 9]"), "{err}");
        let wider = RestorerConfig { upsample: super::super::Upsample::Release, ..RestorerConfig::unet(vec![8, 16]) };
        assert!(load_restorer(&wider, &sd, Naming::Release, &dev).unwrap_err().contains("shape mismatch"));
        assert!(read_safetensors(b"\x10\0\0\0\0\0\0\0{").is_err());
    }
}

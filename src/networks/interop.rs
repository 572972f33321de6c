//! Restorer weights in the PyTorch ecosystem's formats: safetensors (read and write) and
//! PyTorch `.pth` state dicts (read, through burn-store), with the key names their authors
//! publish (each architecture's `Arch::published_key`).
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

use super::archs::{Restorer, RestorerConfig, Source};

/// Named tensors as f32, in a file's order-independent form.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StateDict {
    pub tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

/// The most values a weights file may hold (4 GiB as f32; NAFNet at width 64, the largest
/// published restorer here, has 0.12 G): checked from the shapes before any data is read, so
/// a file claiming more is refused instead of exhausting memory.
const MAX_VALUES: u64 = 1 << 30;

/// The largest safetensors file read: MAX_VALUES f32 values and the format's largest header
/// (100 MB, as the safetensors crate bounds it).
const MAX_SAFETENSORS_BYTES: u64 = MAX_VALUES * 4 + 8 + 100_000_000;

/// Read a state dict from `.safetensors` or a PyTorch checkpoint (`torch.save`'s zip, or the
/// legacy pre-1.6 format), told apart by content. Parsing is burn-store's (`burn_store`:
/// pickle nesting bounded, only the entries a tensor uses inflated, views checked against
/// their storage); nested dicts come back as dotted paths (`params.intro.weight`), which the
/// loader's prefix search takes. Integer tensors (BatchNorm's `num_batches_tracked`) are
/// skipped: no restorer parameter is one.
pub fn read_state_dict(path: &Path) -> Result<StateDict, String> {
    use burn_store::{ModuleStore, PytorchStore, SafetensorsStore};
    let what = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| format!("{what}: cannot read: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{what}: not a regular file"));
    }
    let named = path.extension().is_some_and(|e| e == "safetensors");
    let tensors = if named || is_safetensors(path, meta.len()).map_err(|e| format!("{what}: cannot read: {e}"))? {
        // Read whole (not memory-mapped: a file cut while mapped would end the process), so
        // its size is the memory it takes: no more than MAX_VALUES f32 values and a header.
        if meta.len() > MAX_SAFETENSORS_BYTES {
            return Err(format!(
                "{what}: {} bytes, more than a safetensors file of {MAX_VALUES} f32 values takes: not a restorer's weights",
                meta.len()
            ));
        }
        let bytes = std::fs::read(path).map_err(|e| format!("{what}: cannot read: {e}"))?;
        let mut store = SafetensorsStore::from_bytes(Some(bytes)).map_indices_contiguous(false);
        store
            .get_all_tensors()
            .map(|t| t.clone())
            .map_err(|e| format!("{what}: not a readable safetensors file: {e}"))?
    } else {
        let mut store = PytorchStore::from_file(path).map_indices_contiguous(false);
        store
            .get_all_tensors()
            .map(|t| t.clone())
            .map_err(|e| format!("{what}: not a readable PyTorch checkpoint: {e}"))?
    };
    let mut total: u64 = 0;
    for (name, t) in &tensors {
        let n = t.shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
        total = n.and_then(|n| total.checked_add(n)).filter(|&t| t <= MAX_VALUES).ok_or_else(|| {
            let shape: Vec<_> = t.shape.iter().collect();
            format!(
                "{what}: {name} (shape {shape:?}) takes the file past {MAX_VALUES} values: not a restorer's weights"
            )
        })?;
    }
    let mut out = StateDict::default();
    for (name, t) in tensors {
        if !t.dtype.is_float() {
            continue;
        }
        let data = burn_store::bridge::to_data(&t).map_err(|e| format!("{what}: {name}: {e}"))?;
        let shape = data.shape().to_vec();
        let values = data.try_into_vec_as::<f32>().map_err(|e| format!("{what}: {name}: {e:?}"))?;
        out.tensors.insert(name, (shape, values));
    }
    Ok(out)
}

/// A safetensors file starts with its header's length (8 bytes, little-endian) and the JSON
/// header's `{`; everything else goes to the PyTorch reader.
fn is_safetensors(path: &Path, len: u64) -> std::io::Result<bool> {
    use std::io::Read;
    let mut head = [0u8; 9];
    let mut f = std::fs::File::open(path)?;
    let n = f.read(&mut head)?;
    Ok(n == 9 && head[8] == b'{' && u64::from_le_bytes(head[..8].try_into().expect("8 bytes")) <= len - 8)
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
    /// The names its authors publish: the Noise-DA release's for the UNet and DnCNN
    /// (`down_path.0.block.0.weight`, ...), NAFNet's and Restormer's own.
    Release,
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
pub(crate) fn param_paths(g: &Restorer) -> Vec<(String, Vec<usize>)> {
    params(g, false).into_iter().map(|(p, s, _)| (p, s)).collect()
}

/// The parameters of `g` holding NaN or ±∞, with how many such values each (our paths).
pub fn nonfinite_params(g: &Restorer) -> Vec<(String, usize)> {
    params(g, true)
        .into_iter()
        .filter_map(|(p, _, v)| {
            let n = v.iter().filter(|x| !x.is_finite()).count();
            (n > 0).then_some((p, n))
        })
        .collect()
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
        Naming::Release => cfg.arch().published_key(path),
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
                Naming::Release => cfg.arch().published_family(rest) && !rest.ends_with("num_batches_tracked"),
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
            Naming::Release => match cfg.arch().published_key(&path) {
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
    use crate::networks::archs::{DncnnConfig, NafnetConfig, RestormerConfig};

    fn cfgs() -> Vec<RestorerConfig> {
        vec![
            RestorerConfig::unet_release(vec![4, 8, 16]),
            RestorerConfig::Dncnn(DncnnConfig { depth: Some(4), width: Some(6) }),
            RestorerConfig::Nafnet(NafnetConfig {
                width: 4,
                enc_blocks: vec![1, 2],
                middle_blocks: 1,
                dec_blocks: vec![1, 1],
            }),
            RestorerConfig::Restormer(RestormerConfig {
                dim: 4,
                blocks: [1, 1, 1, 2],
                refinement: 1,
                heads: [1, 2, 2, 4],
                ..Default::default()
            }),
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
            if cfg.batch_norm() {
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
        let cfg = RestorerConfig::unet_release(vec![4, 8]);
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
        let wider = RestorerConfig::unet_release(vec![8, 16]);
        assert!(load_restorer(&wider, &sd, Naming::Release, &dev).unwrap_err().contains("shape mismatch"));
    }
}

//! Reuse of finished training stages across runs.
//!
//! A training stage is keyed by three parts: its **config** (the recipe's resolved `train` and
//! `networks`, method, task, seed), its **inputs** (fingerprints of the source, target and
//! target-pair data, and the key of the stage it warm-starts from) and the **code** (a hash of
//! the running binary). A finished stage leaves its final weights, EMA, curve and facts under
//! `<report.dir>/.cache/stages/<key>/` (written to a temporary directory, sealed with a manifest of
//! content hashes and renamed); a later run whose stage has the same key and whose entry
//! verifies loads them instead of training. When the key is new, the
//! cache says why: no entry with that config, the same config on other inputs, or the same
//! config and inputs under other code.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{Failure, Result};
use crate::training::CurvePoint;
use crate::util::sha256_hex;

/// Hash of the running executable: "the code version" of a stage (any rebuild that changes the
/// binary invalidates its stages).
pub(crate) fn code_version() -> &'static str {
    static CODE: OnceLock<String> = OnceLock::new();
    CODE.get_or_init(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| std::fs::read(p).ok())
            .map(|bytes| sha256_hex(&bytes)[..16].to_string())
            .unwrap_or_else(|| format!("version-{}", env!("CARGO_PKG_VERSION")))
    })
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageKey {
    pub config: String,
    pub inputs: String,
    pub code: String,
}

impl StageKey {
    pub fn new(config: &serde_json::Value, inputs: &serde_json::Value) -> StageKey {
        StageKey {
            config: sha256_hex(config.to_string().as_bytes())[..16].to_string(),
            inputs: sha256_hex(inputs.to_string().as_bytes())[..16].to_string(),
            code: code_version().to_string(),
        }
    }

    pub fn id(&self) -> String {
        sha256_hex(format!("{}/{}/{}", self.config, self.inputs, self.code).as_bytes())[..20].to_string()
    }
}

/// What to do with a stage, and why.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// A finished stage with the same key exists.
    Reuse(PathBuf),
    /// Run it: the reason.
    Run(String),
}

impl Decision {
    pub fn describe(&self) -> String {
        match self {
            Decision::Reuse(dir) => format!("reuse {}", dir.display()),
            Decision::Run(why) => format!("run ({why})"),
        }
    }
}

/// What a cached stage holds besides its weights.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cached {
    pub key: StageKey,
    pub stage: String,
    pub curve: Vec<CurvePoint>,
    /// The training facts of the run that produced it (steps, timings, parameter counts).
    pub facts: serde_json::Value,
    /// Hash of what sets a step's cost (method, networks, batch, patch, devices, precision):
    /// other stages with the same cost key estimate their time from this one's speed.
    #[serde(default)]
    pub cost: String,
}

pub const MODEL: &str = "model.bpk";
pub const EMA: &str = "ema.bpk";
const META: &str = "stage.json";
/// PixelDA stages: what the translator makes of synthetic inputs (a PNG grid).
pub(crate) const TRANSLATIONS: &str = "translations.png";

pub struct StageCache {
    pub root: PathBuf,
    /// The entries' keys, cost keys and speeds, read from disk once (their curves are not
    /// needed to explain a decision or estimate a cost) and kept current by [`Self::store`].
    index: std::sync::Mutex<Option<Vec<IndexEntry>>>,
}

#[derive(Clone)]
struct IndexEntry {
    key: StageKey,
    cost: String,
    steps_per_s: Option<f64>,
}

impl IndexEntry {
    fn of(c: &Cached) -> IndexEntry {
        IndexEntry { key: c.key.clone(), cost: c.cost.clone(), steps_per_s: c.facts["steps_per_s"].as_f64() }
    }
}

impl StageCache {
    pub fn new(report_root: &Path) -> StageCache {
        StageCache { root: report_root.join(".cache").join("stages"), index: Default::default() }
    }

    /// `f` over the index of cached entries (read from disk on first use).
    fn with_index<T>(&self, f: impl FnOnce(&[IndexEntry]) -> T) -> T {
        let mut guard = self.index.lock().unwrap_or_else(|e| e.into_inner());
        let index = guard.get_or_insert_with(|| {
            let Ok(rd) = std::fs::read_dir(&self.root) else { return vec![] };
            rd.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_to_string(e.path().join(META)).ok())
                .filter_map(|t| serde_json::from_str::<Cached>(&t).ok())
                .map(|c| IndexEntry::of(&c))
                .collect()
        });
        f(index)
    }

    /// Measured steps/s of an earlier training with this cost key, if cached.
    pub fn steps_per_s(&self, cost: &str) -> Option<f64> {
        self.with_index(|index| {
            index.iter().filter(|e| e.cost == cost).filter_map(|e| e.steps_per_s).find(|r| *r > 0.0)
        })
    }

    /// Reuse, or run and why. `forced` (from `--force` / `--from`) always runs.
    pub(crate) fn decide(&self, key: &StageKey, forced: bool) -> Decision {
        if forced {
            return Decision::Run("forced by --force/--from".into());
        }
        let dir = self.root.join(key.id());
        if dir.is_dir() {
            // Never used unverified: a corrupted or cut-short entry is trained again (and
            // replaced when the new one is stored).
            match crate::integrity::verify_dir(&dir) {
                Ok(()) if dir.join(META).is_file() && dir.join(MODEL).is_file() => return Decision::Reuse(dir),
                Ok(()) => return Decision::Run(format!("cached entry {} is incomplete", dir.display())),
                Err(e) => {
                    tracing::warn!(entry = %dir.display(), problem = %e, "cached stage failed verification; it will be trained again");
                    return Decision::Run(format!("cached entry failed verification: {e}"));
                }
            }
        }
        let same_config: Vec<StageKey> =
            self.with_index(|index| index.iter().map(|e| e.key.clone()).filter(|k| k.config == key.config).collect());
        if same_config.is_empty() {
            Decision::Run("new config key".into())
        } else if same_config.iter().any(|k| k.inputs == key.inputs) {
            Decision::Run("code changed".into())
        } else {
            Decision::Run("changed input data".into())
        }
    }

    pub fn load(&self, dir: &Path) -> Result<Cached> {
        crate::integrity::touch_dir(dir);
        let path = dir.join(META);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Failure::internal(format!("{}: cannot read the cached stage: {e}", path.display())))?;
        serde_json::from_str(&text)
            .map_err(|e| Failure::internal(format!("{}: unreadable cached stage: {e}", path.display())))
    }

    /// Store a finished stage: its weight files (and `extras`, as named) are copied in,
    /// everything lands at once.
    pub(crate) fn store(
        &self,
        cached: &Cached,
        model: &Path,
        ema: Option<&Path>,
        extras: &[(&str, &Path)],
    ) -> Result<PathBuf> {
        let dir = self.root.join(cached.key.id());
        if dir.is_dir() {
            if crate::integrity::verify_dir(&dir).is_ok() {
                return Ok(dir);
            }
            // A corrupted entry (see `decide`): replaced by this one.
            std::fs::remove_dir_all(&dir)
                .map_err(|e| Failure::internal(format!("{}: cannot remove the corrupted entry: {e}", dir.display())))?;
        }
        let io = |p: &Path, e: std::io::Error| {
            Failure::internal(format!("{}: cannot write the stage cache: {e}", p.display()))
        };
        let tmp = crate::integrity::build_sealed(
            &dir,
            |tmp| {
                (|| {
                    std::fs::copy(model, tmp.join(MODEL))?;
                    if let Some(ema) = ema {
                        std::fs::copy(ema, tmp.join(EMA))?;
                    }
                    for (name, file) in extras {
                        std::fs::copy(file, tmp.join(name))?;
                    }
                    std::fs::write(tmp.join(META), serde_json::to_string_pretty(cached).expect("json"))
                })()
                .map_err(|e| io(tmp, e))
            },
            io,
        )?;
        match std::fs::rename(&tmp, &dir) {
            Ok(()) => {
                if let Some(index) = self.index.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                    index.push(IndexEntry::of(cached));
                }
                Ok(dir)
            }
            // Another run stored the same stage meanwhile: theirs is as good as ours.
            Err(_) if crate::integrity::verify_dir(&dir).is_ok() => {
                let _ = std::fs::remove_dir_all(&tmp);
                Ok(dir)
            }
            Err(e) => Err(io(&tmp, e)),
        }
    }
}

/// The cost key of a training stage (see [`Cached::cost`]).
pub(crate) fn cost_key(method: &str, train: &crate::pipeline::spec::TrainSpec, networks: &impl Serialize) -> String {
    let mut v = json!({"method": method, "networks": networks, "batch": train.batch, "patch": train.patch,
        "target": train.noise_da.target_count(train.batch), "devices": train.devices, "precision": train.precision,
        "conditions": train.noise_da.conditions, "diffusion": train.noise_da.diffusion_loss});
    if method == "pixel_da" {
        // Its translator's and discriminator's width set its cost too.
        v["pixel_da_width"] = json!(train.pixel_da.width);
    }
    sha256_hex(v.to_string().as_bytes())[..16].to_string()
}

/// The config half of a training stage's key: what changes the trained weights or curve.
/// Keys that cannot (checkpoint cadence; the Noise-DA settings of a method without D) are left
/// out, so editing them reuses the stage.
pub(crate) fn train_config(
    method: crate::pipeline::spec::Method,
    train: &crate::pipeline::spec::TrainSpec,
    networks: &crate::pipeline::spec::NetworksSpec,
    task: &impl Serialize,
    seed: u64,
) -> serde_json::Value {
    let mut t = serde_json::to_value(train).expect("train serialises");
    if let Some(obj) = t.as_object_mut() {
        obj.remove("checkpoint");
        // Every draw is made per sample before a step is split: shards change no result.
        obj.remove("shards");
        // Batches are functions of their step: how they are read ahead changes nothing.
        obj.remove("loader");
        // Another method's section changes nothing this one trains.
        let own = method.sections();
        for other in crate::pipeline::spec::Method::ALL.iter().flat_map(|m| m.sections()) {
            if !own.contains(other) {
                obj.remove(*other);
            }
        }
    }
    let networks = if method == crate::pipeline::spec::Method::NoiseDa {
        serde_json::to_value(networks).expect("networks serialise")
    } else {
        serde_json::to_value(&networks.restorer).expect("restorer serialises")
    };
    json!({"method": method.name(), "train": t, "networks": networks, "task": task, "seed": seed})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuse_and_the_reasons_to_run() {
        let root = std::env::temp_dir().join(format!("rp-stages-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let cache = StageCache::new(&root);
        let key = StageKey::new(&json!({"lr": 1}), &json!({"source": "a"}));
        assert_eq!(cache.decide(&key, false), Decision::Run("new config key".into()));
        let model = root.join("m.bpk");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(&model, b"weights").unwrap();
        let cached = Cached {
            key: key.clone(),
            stage: "train:x:seed0".into(),
            curve: vec![],
            facts: json!({"steps_per_s": 2.5}),
            cost: "c1".into(),
        };
        let dir = cache.store(&cached, &model, None, &[]).unwrap();
        assert_eq!(cache.decide(&key, false), Decision::Reuse(dir.clone()));
        assert_eq!(std::fs::read(dir.join(MODEL)).unwrap(), b"weights");
        assert_eq!(cache.load(&dir).unwrap().stage, "train:x:seed0");
        assert_eq!(cache.steps_per_s("c1"), Some(2.5));
        assert_eq!(cache.steps_per_s("c2"), None);
        assert_eq!(cache.decide(&key, true), Decision::Run("forced by --force/--from".into()));
        let other_data = StageKey::new(&json!({"lr": 1}), &json!({"source": "b"}));
        assert_eq!(cache.decide(&other_data, false), Decision::Run("changed input data".into()));
        let other_code = StageKey { code: "other".into(), ..key.clone() };
        assert_eq!(cache.decide(&other_code, false), Decision::Run("code changed".into()));
        let other_config = StageKey::new(&json!({"lr": 2}), &json!({"source": "a"}));
        assert_eq!(cache.decide(&other_config, false), Decision::Run("new config key".into()));
        // A flipped byte in the cached weights: not reused, and the next store replaces it.
        std::fs::write(dir.join(MODEL), b"weightz").unwrap();
        match cache.decide(&key, false) {
            Decision::Run(why) => assert!(why.contains("failed verification") && why.contains("model.bpk"), "{why}"),
            d => panic!("a corrupted entry was reused: {d:?}"),
        }
        assert_eq!(cache.store(&cached, &model, None, &[]).unwrap(), dir);
        assert_eq!(cache.decide(&key, false), Decision::Reuse(dir.clone()));
        assert_eq!(std::fs::read(dir.join(MODEL)).unwrap(), b"weights");
        std::fs::remove_dir_all(&root).unwrap();
    }
}

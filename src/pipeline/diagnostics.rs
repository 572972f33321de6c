//! The run's diagnostics (see [`crate::training::diagnostics`]): the D probe after every
//! Noise-DA training, the premise check once per run (cached like a stage), and the
//! `diagnostics.json` + summary section that report them.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::spec::{Method, PipelineSpec, Recipe};
use crate::datasets::{PairedItem, PairedSet};
use crate::error::{Failure, Result};
use crate::training::Trained;
use crate::training::diagnostics::{self, DProbe, PremisePoint};
use crate::util::{sha256_hex, write_atomic};

/// Probe batches (of the recipe's batch size) per trained stage.
const PROBE_BATCHES: usize = 8;
/// Evaluation batches of the premise check.
const PREMISE_EVAL_BATCHES: usize = 16;
pub const FILE: &str = "diagnostics.json";

/// One trained stage's probe, as stored in its facts and in `diagnostics.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProbeRow {
    pub recipe: String,
    pub seed: u64,
    pub test: String,
    #[serde(flatten)]
    pub probe: DProbe,
}

/// The premise check's result and what it ran on.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Premise {
    pub steps: usize,
    pub train: String,
    pub test: String,
    pub points: Vec<PremisePoint>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Diagnostics {
    #[serde(default)]
    pub d_probe: Vec<ProbeRow>,
    #[serde(default)]
    pub premise: Option<Premise>,
}

/// The D probe of a finished Noise-DA stage on the pipeline's probe set (`None` when the
/// recipe trains no D, the set is not loaded or D never sees the target).
pub(crate) fn probe_stage(
    spec: &PipelineSpec,
    recipe: &Recipe,
    seed: u64,
    trained: &Trained,
    source: &PairedSet,
    test: Option<(&str, &[PairedItem])>,
    device: &Device,
) -> Option<ProbeRow> {
    let d = trained.diffusion.as_ref()?;
    let (name, items) = test?;
    let inp = diagnostics::ProbeInputs {
        source,
        target: items,
        conditions: recipe.train.noise_da.conditions,
        patch: recipe.train.patch,
        signed: spec.task.diffusion_signed(),
        batches: PROBE_BATCHES,
        batch: recipe.train.batch,
        seed: crate::rng::derive_seed(seed, "probe", &[]),
    };
    let probe = diagnostics::probe_d(&trained.restorer, d, &inp, device)?;
    Some(ProbeRow { recipe: recipe.name.to_string(), seed, test: name.to_string(), probe })
}

/// The premise check, when the pipeline asks for it: D trained on the source's clean images,
/// scored on the first test set's references. Its result is cached under the report root,
/// keyed by its settings, data fingerprints and the code.
pub(crate) fn premise_stage(
    spec: &PipelineSpec,
    source: &PairedSet,
    test: (&str, &PairedSet),
    cache_root: &Path,
    device: &Device,
) -> Result<Option<Premise>> {
    let (Some(p), Some(file)) = (&spec.diagnostics.premise, premise_file(spec, source, test.1, cache_root)) else {
        return Ok(None);
    };
    let seed = spec.seeds.train.first().copied().unwrap_or(0);
    if file.is_file() {
        let found = crate::integrity::verify_file(&file)
            .and_then(|()| std::fs::read(&file).map_err(|e| e.to_string()))
            .and_then(|bytes| serde_json::from_slice::<Premise>(&bytes).map_err(|e| e.to_string()));
        match found {
            Ok(found) if found.points.len() == p.sigmas.len() => {
                tracing::info!(file = %file.display(), "reusing the cached premise check");
                return Ok(Some(found));
            }
            Ok(_) => tracing::warn!(file = %file.display(), "cached premise check does not match; running it again"),
            Err(e) => {
                tracing::warn!(file = %file.display(), problem = %e, "cached premise check failed verification; running it again")
            }
        }
    }
    tracing::info!(steps = p.steps, "premise check: training D alone on reference + AWGN(σ) conditions");
    let inp = diagnostics::PremiseInputs {
        diffusion: &spec.networks.diffusion,
        conditions: spec.train.noise_da.conditions,
        train: source,
        eval: &test.1.items,
        sigmas: &p.sigmas,
        steps: p.steps,
        batch: spec.train.batch,
        patch: spec.train.patch,
        lr: spec.train.lr,
        signed: spec.task.diffusion_signed(),
        seed: crate::rng::derive_seed(seed, "premise", &[]),
        eval_batches: PREMISE_EVAL_BATCHES,
    };
    let premise = Premise {
        steps: p.steps,
        train: source.dataset.clone(),
        test: test.0.to_string(),
        points: diagnostics::premise_check(&inp, device),
    };
    std::fs::create_dir_all(cache_root)?;
    write_atomic(&file, serde_json::to_string_pretty(&premise).expect("json").as_bytes())?;
    crate::integrity::seal_file(&file)?;
    Ok(Some(premise))
}

/// Where the premise check's result is cached: keyed by its settings, the networks and
/// training keys it uses, the data's fingerprints and the code (`None`: not asked for).
pub(crate) fn premise_file(
    spec: &PipelineSpec,
    source: &PairedSet,
    test: &PairedSet,
    cache_root: &Path,
) -> Option<PathBuf> {
    let p = spec.diagnostics.premise.as_ref()?;
    let key = sha256_hex(
        json!({"premise": p, "diffusion": spec.networks.diffusion, "conditions": spec.train.noise_da.conditions,
            "batch": spec.train.batch, "patch": spec.train.patch, "lr": spec.train.lr, "task": spec.task,
            "seed": spec.seeds.train.first().copied().unwrap_or(0), "source": source.fingerprint,
            "test": test.fingerprint, "code": super::stages::code_version()})
        .to_string()
        .as_bytes(),
    );
    Some(cache_root.join(format!("premise-{}.json", &key[..20])))
}

/// Whether a recipe gets a probe (it trains D).
pub fn probes(recipe: &Recipe) -> bool {
    recipe.method == Method::NoiseDa && recipe.train.noise_da.diffusion_loss
}

pub fn write(run_dir: &Path, d: &Diagnostics) -> Result<()> {
    write_atomic(&run_dir.join(FILE), serde_json::to_string_pretty(d).expect("json").as_bytes())?;
    Ok(())
}

/// `diagnostics.json` of a run, if it has one (older runs do not).
pub fn read(run_dir: &Path) -> Result<Option<Diagnostics>> {
    let path = run_dir.join(FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Failure::data(format!("{}: not a diagnostics file: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Failure::internal(format!("{}: {e}", path.display()))),
    }
}

/// The summary's diagnostics section.
pub(crate) fn markdown(d: &Diagnostics) -> String {
    let mut md = String::new();
    if !d.d_probe.is_empty() {
        md.push_str(
            "\nD probe (D's noise-prediction MSE with the real condition slot holding the target's clean \
             reference, G's restoration, or the raw input; lower = D finds it cleaner; the method needs \
             reference < restored < input):\n\n",
        );
        let header =
            ["recipe", "seed", "test set", "reference", "G's output", "input", "rewards the truth"].map(String::from);
        let rows: Vec<Vec<String>> = d
            .d_probe
            .iter()
            .map(|r| {
                let rel = |v: f64| format!("{v:.5} ({:+.1}%)", 100.0 * (v / r.probe.reference - 1.0));
                vec![
                    r.recipe.clone(),
                    r.seed.to_string(),
                    r.test.clone(),
                    format!("{:.5}", r.probe.reference),
                    rel(r.probe.restored),
                    rel(r.probe.input),
                    if r.probe.rewards_truth() { "yes" } else { "no" }.into(),
                ]
            })
            .collect();
        md.push_str(&crate::reports::markdown_table(&header, &rows));
    }
    if let Some(p) = &d.premise {
        md.push_str(&format!(
            "\nPremise check (the paper's Fig. 1a): D trained alone for {} steps on {} with conditions = \
             reference + AWGN(σ), scored on {}'s references; the premise holds if the error grows with σ:\n\n",
            p.steps, p.train, p.test
        ));
        let base = p.points.first().map_or(f64::NAN, |q| q.mse);
        let header = ["σ (8-bit)", "D's MSE", "vs σ = first"].map(String::from);
        let rows: Vec<Vec<String>> = p
            .points
            .iter()
            .map(|q| {
                vec![format!("{}", q.sigma), format!("{:.5}", q.mse), format!("{:+.2}%", 100.0 * (q.mse / base - 1.0))]
            })
            .collect();
        md.push_str(&crate::reports::markdown_table(&header, &rows));
    }
    md
}

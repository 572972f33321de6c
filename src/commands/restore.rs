//! `run-pipeline restore` and `run-pipeline export`: a trained (or published) restorer applied
//! to photos, or written out for PyTorch. The work is `pipeline::restore`'s; here is which
//! weights to take, what is printed and the exit status.

use std::path::{Path, PathBuf};

use crate::error::{Failure, Result};
use crate::networks::{Restorer, RestorerConfig};
use crate::pipeline::restore::{self, Apply, WeightsSource, parse_arch};

use super::score as score_cmd;

/// Which restorer a command uses: a weights file, or a run's final weights of a method and
/// seed; `arch` where the file does not say which network it holds.
#[derive(Clone, Debug, Default)]
pub struct Weights {
    pub file: Option<PathBuf>,
    pub run: Option<PathBuf>,
    pub method: String,
    pub seed: u64,
    pub ema: bool,
    pub arch: Option<String>,
    /// Use weights holding NaN or ±∞ (refused by default: they restore black images).
    pub allow_nonfinite: bool,
}

impl Weights {
    /// The network and its configuration, on `device`.
    pub fn load(&self, device: &burn::tensor::Device) -> Result<(Restorer, RestorerConfig)> {
        let source = match (&self.file, &self.run) {
            (Some(f), _) => WeightsSource::File(f.clone()),
            (None, Some(dir)) => {
                WeightsSource::Run { dir: dir.clone(), method: self.method.clone(), seed: self.seed, ema: self.ema }
            }
            (None, None) => return Err(Failure::config("say which restorer: --weights FILE or --run RUN_DIR")),
        };
        let arch = self.arch.as_deref().map(parse_arch).transpose().map_err(Failure::config)?;
        let (g, cfg) = restore::load(&source, arch.as_ref(), device)?;
        let bad = crate::networks::interop::nonfinite_params(&g);
        if !bad.is_empty() && !self.allow_nonfinite {
            let what = match &source {
                WeightsSource::File(f) => f.display().to_string(),
                WeightsSource::Run { dir, method, seed, .. } => format!("{} ({method}, seed {seed})", dir.display()),
            };
            let list: Vec<String> = bad.iter().take(5).map(|(p, n)| format!("{p} ({n} values)")).collect();
            return Err(Failure::data(format!(
                "{what}: {} parameter(s) hold NaN or ±∞: {}{}; such weights restore black or broken images \
                 (pass --allow-nonfinite to use them anyway)",
                bad.len(),
                list.join(", "),
                if bad.len() > 5 { ", ..." } else { "" }
            )));
        }
        Ok((g, cfg))
    }
}

/// Where `restore` writes: a folder, and whether files this tool did not write may be replaced.
pub struct Output<'a> {
    pub dir: &'a Path,
    pub force: bool,
}

/// Restore `input` (a photo or a folder) into `output`; with `reference`, score the results.
/// Files that could not be restored are named at the end (exit 3), the others written.
#[allow(clippy::too_many_arguments)]
pub fn restore(
    input: &Path,
    output: Output,
    weights: &Weights,
    how: Apply,
    reference: Option<&Path>,
    protocol: crate::protocols::ProtocolKind,
    backend: &str,
    bars: bool,
) -> Result<()> {
    let backend: crate::backend::Backend = serde_json::from_value(serde_json::json!(backend))
        .map_err(|_| Failure::config(format!("--backend {backend}: expected flex, wgpu, cuda, tch or auto")))?;
    let (device, device_name) = crate::backend::device(backend)?;
    // Every destination is checked before the weights are even read.
    let mut out = crate::output::OutputDir::open(output.dir, output.force)?;
    let plan = restore::plan(input, &out)?;
    if reference.is_some() {
        for f in ["scores.csv", "scores.parquet", "scores.parquet.sha256"] {
            out.check(Path::new(f))?;
        }
    }
    let (g, cfg) = weights.load(&device)?;
    tracing::info!(network = %cfg.describe(), params = restore::param_count(&g), device = %device_name, "restorer loaded");
    let done = restore::restore_all(&g, &cfg, plan, &mut out, how, &device, bars)?;
    let output = output.dir;
    println!("restored {} image(s) into {}", done.written.len(), output.display());
    if let Some(reference) = reference {
        let pairs: Vec<(PathBuf, PathBuf)> = score_cmd::pairs(output, reference, false)?;
        let rows = score_cmd::score_pairs(&pairs, protocol)?;
        print!("{}", score_cmd::render(&rows, score_cmd::Format::Table)?);
        score_cmd::table(&rows).write(&output.join("scores"))?;
        for f in ["scores.csv", "scores.parquet", "scores.parquet.sha256"] {
            out.record(Path::new(f))?;
        }
    }
    out.finish()?;
    if !done.failed.is_empty() {
        return Err(Failure::data(format!(
            "{} file(s) could not be restored (the others were written):\n  {}",
            done.failed.len(),
            done.failed.join("\n  ")
        )));
    }
    Ok(())
}

/// Write the restorer as safetensors with `names` (`release`: its authors' key names; `ours`).
pub fn export(output: &Path, force: bool, weights: &Weights, names: &str, prefix: &str) -> Result<()> {
    crate::output::check_new_file(output, force)?;
    let naming = match names {
        "release" => crate::networks::interop::Naming::Release,
        "ours" => crate::networks::interop::Naming::Ours,
        other => return Err(Failure::config(format!("--names {other}: expected release or ours"))),
    };
    let (g, cfg) = weights.load(&burn::tensor::Device::flex())?;
    let n = restore::export(&g, &cfg, output, naming, prefix)?;
    println!("wrote {} ({n} tensors, {}, {names} names)", output.display(), cfg.describe());
    Ok(())
}

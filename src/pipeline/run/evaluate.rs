//! Scoring: the `score:input` stage (the unrestored inputs) and each `evaluate` stage (a
//! restorer on every test set), streaming rows into the run's per-image table. An
//! evaluation's rows are cached beside its training stage, keyed by the weights, the test set,
//! its protocol and the report's columns: the same code gives the same rows.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rayon::prelude::*;
use serde_json::json;
use tracing::info;

use super::Run;
use super::data::{Data, TestSet};
use crate::datasets::PairedItem;
use crate::error::{Failure, Result};
use crate::image::Image;
use crate::pipeline::plan::Stage;
use crate::pipeline::stages::{StageCache, StageKey};
use crate::reports::{self, INPUT, ImageScore, Table, TableWriter};
use crate::training;
use crate::util::sha256_hex;

use crate::datasets::EVAL_CHUNK;
/// Test images per set shown in the example-crops figure.
pub(super) const EXAMPLES: usize = 4;

/// The run's per-image table (`per_image.parquet`/`.csv`), written as scores arrive.
pub(super) struct Scores {
    writer: Option<TableWriter>,
    stem: PathBuf,
    /// The `meta_*` columns: every metadata key the test sets carry.
    meta_keys: Vec<String>,
}

impl Scores {
    /// An empty per-image table written to `stem`.parquet/.csv as rows arrive.
    pub(super) fn new(stem: PathBuf, tests: &[TestSet]) -> Scores {
        Scores { writer: None, stem, meta_keys: super::data::meta_keys(tests) }
    }

    /// Whether every test set's scores for `train_key` are in the score cache.
    pub(super) fn all_cached(cache: &StageCache, train_key: &StageKey, tests: &[TestSet]) -> bool {
        let meta = super::data::meta_keys(tests);
        tests.iter().all(|t| eval_cache(cache, train_key, t, &meta).join("per_image.parquet").is_file())
    }

    fn append(&mut self, table: &Table) -> Result<()> {
        if self.writer.is_none() {
            self.writer = Some(TableWriter::create(&self.stem, table)?);
        }
        Ok(self.writer.as_mut().expect("created above").append(table)?)
    }

    fn append_rows(&mut self, rows: &[ImageScore]) -> Result<()> {
        self.append(&reports::scores_table(rows, &self.meta_keys))
    }

    /// Close the table (a run with no scores at all has nothing to close).
    pub(super) fn finish(self) -> Result<()> {
        match self.writer {
            Some(w) => Ok(w.finish()?),
            None => Ok(()),
        }
    }
}

/// The first few restored test images per (test set, recipe), first seed only: the crops figure.
pub(super) type Examples = BTreeMap<(String, String), Vec<Image>>;

impl Run<'_> {
    /// The `score:input` stage: every test set's unrestored inputs against their references.
    pub(super) fn score_inputs(&mut self, data: &Data) -> Result<Scores> {
        let mut scores = Scores {
            writer: None,
            stem: self.open.run_dir.join("per_image"),
            meta_keys: super::data::meta_keys(&data.tests),
        };
        for t in data.tests.iter().filter(|t| !t.reference_input) {
            for chunk in t.set.chunks(EVAL_CHUNK) {
                scores.append_rows(&score_set(&self.open.run_id, INPUT, None, t, &chunk?, None)?)?;
            }
        }
        self.timings.finish(Stage::ScoreInput);
        Ok(scores)
    }

    /// The `evaluate` stage of recipe `name` × `seed`: restore and score every test set, or
    /// take the rows from the score cache unless the weights were just trained (`fresh`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn evaluate(
        &self,
        g: &crate::networks::Restorer,
        cfg: &crate::networks::RestorerConfig,
        name: &str,
        seed: u64,
        train_key: &StageKey,
        fresh: bool,
        data: &Data,
        scores: &mut Scores,
        examples: &mut Examples,
    ) -> Result<()> {
        let device = self.device();
        let run_id = &self.open.run_id;
        let first_seed = self.spec.seeds.train.first().copied();
        for t in &data.tests {
            let cached = eval_cache(&self.stage_cache, train_key, t, &scores.meta_keys);
            let file = cached.join("per_image.parquet");
            let example_key = (t.name.clone(), name.to_string());
            let usable = !fresh
                && file.is_file()
                && crate::integrity::verify_dir(&cached)
                    .map_err(|e| tracing::warn!(problem = %e, "cached scores failed verification; scoring again"))
                    .is_ok();
            if usable {
                if Some(seed) == first_seed {
                    // Scores come from the cache; only the figure's few images are restored.
                    let first = t.set.items[..t.set.items.len().min(EXAMPLES)]
                        .iter()
                        .map(|item| restore(g, cfg, item, device))
                        .collect::<Result<Vec<Image>>>()?;
                    examples.insert(example_key, first);
                }
                crate::integrity::touch_dir(&cached);
                let mut table = reports::Table::read_parquet(&file)?;
                // The rows belong to this run now.
                let rows = table.rows();
                for (n, c) in table.columns.iter_mut() {
                    if n == "run_id" {
                        *c = reports::Column::Str(vec![Some(run_id.clone()); rows]);
                    }
                }
                info!(stage = %Stage::Evaluate { recipe: name.to_string(), seed }, test = %t.name,
                      "reusing the cached scores (same weights, test set, protocol and code)");
                scores.append(&table)?;
                continue;
            }
            // Chunks keep memory bounded on large test sets (980 RealBlur frames): a set on
            // disk is decoded a chunk at a time; rows stream to the table as they are scored.
            let mut all = Table::default();
            for (k, chunk) in t.set.chunks(EVAL_CHUNK).enumerate() {
                let chunk = chunk?;
                let chunk = &chunk[..];
                let outputs = chunk.iter().map(|item| restore(g, cfg, item, device)).collect::<Result<Vec<Image>>>()?;
                if k == 0 && Some(seed) == first_seed {
                    examples.insert(example_key.clone(), outputs.iter().take(EXAMPLES).cloned().collect());
                }
                let rows = score_set(run_id, name, Some(seed), t, chunk, Some(&outputs))?;
                all.append_rows(reports::scores_table(&rows, &scores.meta_keys));
                scores.append_rows(&rows)?;
            }
            store_scores(&cached, &all)?;
        }
        Ok(())
    }
}

/// One test image restored: whole when it fits the memory left now, else in the largest tiles
/// that fit (planned per image, so a few full-size photos in a set of crops are tiled alone).
fn restore(
    g: &crate::networks::Restorer,
    cfg: &crate::networks::RestorerConfig,
    item: &PairedItem,
    device: &burn::tensor::Device,
) -> Result<Image> {
    training::restore_within(g, cfg, &item.degraded, crate::util::memory_budget(), device)
        .map_err(|e| Failure::data(format!("test image {}: {e}", item.id)))
}

/// Store an evaluation's rows in the score cache (whole or not at all, sealed with its hashes).
fn store_scores(cached: &Path, all: &Table) -> Result<()> {
    let tmp = crate::integrity::build_sealed(cached, |tmp| all.write(&tmp.join("per_image")), |_, e| e.into())?;
    if cached.is_dir() && crate::integrity::verify_dir(cached).is_err() {
        // A corrupted entry: replaced by this one.
        std::fs::remove_dir_all(cached)?;
    }
    if std::fs::rename(&tmp, cached).is_err() {
        // Stored meanwhile by another run: keep theirs.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(())
}

/// Where the scores of one evaluation are cached: keyed by the weights (the training stage's
/// key), the test set's fingerprint, its protocol, the report's columns and the code.
pub(super) fn eval_cache(cache: &StageCache, train_key: &StageKey, t: &TestSet, meta_keys: &[String]) -> PathBuf {
    let key = sha256_hex(
        json!({"train": train_key.id(), "test": t.set.fingerprint, "protocol": t.protocol.name(),
            "meta": meta_keys, "code": train_key.code})
        .to_string()
        .as_bytes(),
    );
    cache.root.join(format!("eval-{}", &key[..20]))
}

/// Score `outputs` (or, when `None`, the unrestored inputs) against the ground truth of
/// `items`, a slice of test set `t`.
fn score_set(
    run_id: &str,
    method: &str,
    seed: Option<u64>,
    t: &TestSet,
    items: &[PairedItem],
    outputs: Option<&[Image]>,
) -> Result<Vec<ImageScore>> {
    items
        .par_iter()
        .enumerate()
        .map(|(k, item)| {
            let out = outputs.map_or(&item.degraded, |o| &o[k]);
            let s = crate::protocols::score(t.protocol, out, &item.clean)
                .with_context(|| format!("scoring {}", item.id))?;
            Ok(ImageScore {
                run_id: run_id.into(),
                method: method.into(),
                seed,
                test_set: t.name.clone(),
                dataset: t.set.dataset.clone(),
                split: t.set.split.as_str().into(),
                image_id: item.id.clone(),
                protocol: t.protocol.name().into(),
                params: item.params.clone(),
                psnr: s.psnr,
                ssim: s.ssim,
                ssim_per_channel: s.extra("ssim_per_channel"),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()
        .map_err(Failure::from)
}

//! Datasets: the registry, embedded procedural data, and the typed sets stages exchange.
//!
//! The types encode who may see what: the target *training* set is a [`TargetTrainSet`] of
//! [`DegradedItem`]s, which have no ground-truth field at all, so adaptation code cannot use
//! real-domain ground truth by mistake. Test sets are [`PairedSet`]s.

pub(crate) mod dead_leaves;
pub mod disk;
pub mod layouts;
pub mod matv5;
pub mod patches;
pub(crate) mod registry;
pub(crate) mod shard;
pub mod sidd;

use std::path::Path;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::degradations::real::{Family, RealDomain};
use crate::degradations::{DegradationParams, DegradationSpec};
use crate::error::{Failure, Result};
use crate::image::Image;
use crate::rng::Rng;
pub use disk::OnProblem;
pub use registry::{DatasetEntry, DatasetKind, Registry};
use shard::{ShardEntry, ShardItem, materialise};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    /// Validation: its own images for embedded datasets; on disk, the test listing.
    Val,
    Test,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }

    /// The split whose files a dataset on disk lists (there is no separate validation listing).
    pub(crate) fn on_disk(self) -> Split {
        if self == Split::Val { Split::Test } else { self }
    }
}

/// A degraded image with its ground truth (synthetic source pairs, test sets).
#[derive(Clone, Debug)]
pub struct PairedItem {
    pub id: String,
    pub degraded: Image,
    pub clean: Image,
    pub params: DegradationParams,
}

/// A degraded image whose ground truth is not available (real target training data).
#[derive(Clone, Debug)]
pub struct DegradedItem {
    pub id: String,
    pub degraded: Image,
    pub params: DegradationParams,
}

#[derive(Clone, Debug)]
pub struct PairedSet {
    pub dataset: String,
    pub split: Split,
    pub items: Vec<PairedItem>,
    /// Content fingerprint (the shard key) recorded in provenance.
    pub fingerprint: String,
    pub cached: bool,
    /// Problems found and skipped (policy `skip`), listed in the run's provenance.
    pub problems: Vec<String>,
    /// For a synthetic training source: the degradation drawn afresh for every crop at every
    /// step (the release's on-the-fly AWGN), replacing the stored `degraded` images in training.
    pub redraw: Option<DegradationSpec>,
    /// Training pairs streamed from a patch store on disk instead of held in `items` (which
    /// then holds a few of its patches, for figures and diagnostics). A store of clean images
    /// only (a clean folder) always has `redraw`.
    pub store: Option<patches::StoreView>,
    /// A test set on disk: its pairs are decoded a chunk at a time when scored
    /// ([`PairedSet::chunks`]), never all at once; `items` holds its first few pairs.
    pub files: Option<std::sync::Arc<TestFiles>>,
}

/// Where a test set's pairs are read from when scored.
#[derive(Clone, Debug)]
pub struct TestFiles {
    pub source: TestSource,
    /// The restorers get the references themselves (`input: reference`).
    pub reference_input: bool,
}

#[derive(Clone, Debug)]
pub enum TestSource {
    /// Pairs of image files (a layout's test split).
    Files(Vec<layouts::FileItem>),
    /// SIDD's blocks: the two MATLAB arrays as stored (8-bit), made into images a chunk at a
    /// time — a quarter of the memory of the set as f32 images.
    Blocks { noisy: matv5::MatArray, gt: matv5::MatArray, blocks: Vec<(usize, usize)> },
}

impl PairedSet {
    /// Pairs held in memory, nothing skipped, not from a cache.
    pub fn held(dataset: &str, split: Split, items: Vec<PairedItem>, fingerprint: &str) -> PairedSet {
        PairedSet {
            dataset: dataset.into(),
            split,
            items,
            fingerprint: fingerprint.into(),
            cached: false,
            problems: vec![],
            redraw: None,
            store: None,
            files: None,
        }
    }

    /// This source with its degradation drawn afresh per crop and step (see [`Self::redraw`]);
    /// the fingerprint says so, as it changes what training sees.
    pub fn redrawn(self, spec: DegradationSpec) -> PairedSet {
        PairedSet { fingerprint: format!("{}+redraw", self.fingerprint), redraw: Some(spec), ..self }
    }
}

/// Target-domain training data: degraded inputs only, by construction.
#[derive(Clone, Debug)]
pub struct TargetTrainSet {
    pub dataset: String,
    pub items: Vec<DegradedItem>,
    pub fingerprint: String,
    pub cached: bool,
    pub problems: Vec<String>,
    /// Target inputs streamed from a patch store (see [`PairedSet::store`]).
    pub store: Option<patches::StoreView>,
}

/// What training crops are drawn from: the images of a set held in memory, or the patches of
/// its store. Crops are windows of one image, so drawing them needs only the sizes.
pub trait CropPool: Sync {
    /// The patch store the set streams from, if it does.
    fn store(&self) -> Option<&patches::StoreView>;
    /// Images held in memory (all of them when there is no store).
    fn held(&self) -> usize;
    /// Id and training-side image (clean for pairs, degraded for target inputs) of held image `i`.
    fn held_image(&self, i: usize) -> (&str, &Image);

    /// Images (or patches) to draw from.
    fn count(&self) -> usize {
        self.store().map_or(self.held(), |v| v.len())
    }
    /// Size of image `i`.
    fn dims(&self, i: usize) -> (usize, usize) {
        match self.store() {
            Some(v) => v.dims(i),
            None => {
                let im = self.held_image(i).1;
                (im.width, im.height)
            }
        }
    }
    /// Name of image `i` for messages.
    fn id(&self, i: usize) -> String {
        self.store().map_or_else(|| self.held_image(i).0.to_string(), |v| v.id(i))
    }
}

impl PairedSet {
    /// The `w × h` window at (x, y) of training image `i`: (degraded, clean). The degraded
    /// side is `None` when `degraded` is false (it will be redrawn) or not stored.
    pub fn read_pair(
        &self,
        i: usize,
        (x, y, w, h): (usize, usize, usize, usize),
        degraded: bool,
    ) -> std::io::Result<(Option<Image>, Image)> {
        match &self.store {
            Some(v) => {
                let mut planes = v.read(i, x, y, w, h)?;
                let clean = planes.pop().ok_or_else(|| std::io::Error::other("a patch without planes"))?;
                Ok((planes.pop().filter(|_| degraded), clean))
            }
            None => {
                let it = &self.items[i];
                Ok((degraded.then(|| it.degraded.crop(x, y, w, h)), it.clean.crop(x, y, w, h)))
            }
        }
    }
}

impl PairedSet {
    /// Number of pairs (of a test set: all of them, whether held or read when scored).
    pub fn len(&self) -> usize {
        match self.files.as_deref().map(|f| &f.source) {
            None => self.items.len(),
            Some(TestSource::Files(f)) => f.len(),
            Some(TestSource::Blocks { blocks, .. }) => blocks.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pairs in order, `n` at a time: borrowed when held, made from their files (decoded in
    /// parallel) or blocks otherwise, so a set is scored with memory for `n` pairs whatever its
    /// size.
    pub fn chunks(&self, n: usize) -> Box<dyn Iterator<Item = Result<std::borrow::Cow<'_, [PairedItem]>>> + '_> {
        use std::borrow::Cow;
        let n = n.max(1);
        let Some(files) = self.files.as_deref() else {
            return Box::new(self.items.chunks(n).map(|c| Ok(Cow::Borrowed(c))));
        };
        let reference = files.reference_input;
        match &files.source {
            TestSource::Files(f) => {
                Box::new(f.chunks(n).map(move |c| decode_pairs(&self.dataset, c, reference).map(Cow::Owned)))
            }
            TestSource::Blocks { noisy, gt, blocks } => Box::new(blocks.chunks(n).map(move |c| {
                c.iter()
                    .map(|&ix| {
                        let pair = sidd::block_pair(noisy, gt, ix);
                        pair.map(|it| if reference { PairedItem { degraded: it.clean.clone(), ..it } } else { it })
                    })
                    .collect::<Result<Vec<_>>>()
                    .map(Cow::Owned)
            })),
        }
    }

    /// The metadata keys of its pairs (the report's `meta_*` columns), without decoding.
    pub fn meta_keys(&self) -> std::collections::BTreeSet<String> {
        let keys = |m: &[(String, String)]| m.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
        match self.files.as_deref().map(|f| &f.source) {
            None => self.items.iter().flat_map(|i| keys(&i.params.meta)).collect(),
            Some(TestSource::Files(f)) => f.iter().flat_map(|i| keys(&i.meta)).collect(),
            Some(TestSource::Blocks { .. }) => sidd::BLOCK_META.iter().map(|k| k.to_string()).collect(),
        }
    }
}

/// Decode test pairs from their files; a problem now (checked up front, so the files changed)
/// is an error naming the file. `reference_input`: the restorer gets the reference itself.
fn decode_pairs(dataset: &str, files: &[layouts::FileItem], reference_input: bool) -> Result<Vec<PairedItem>> {
    let dec = disk::decode(layouts::Scan { items: files.to_vec(), problems: vec![] }, usize::MAX, true);
    disk::check(dataset, &dec.problems, OnProblem::Fail)?;
    dec.items
        .into_iter()
        .map(|(it, degraded, clean)| {
            let clean = clean.ok_or_else(|| Failure::data(format!("{}: no ground truth", it.degraded.display())))?;
            let degraded = if reference_input { clean.clone() } else { degraded };
            Ok(PairedItem {
                id: it.id,
                degraded,
                clean,
                params: DegradationParams { meta: it.meta, ..Default::default() },
            })
        })
        .collect()
}

impl CropPool for PairedSet {
    fn store(&self) -> Option<&patches::StoreView> {
        self.store.as_ref()
    }
    fn held(&self) -> usize {
        self.items.len()
    }
    fn held_image(&self, i: usize) -> (&str, &Image) {
        (&self.items[i].id, &self.items[i].clean)
    }
}

impl TargetTrainSet {
    /// The `w × h` window at (x, y) of target image `i`.
    pub fn read(&self, i: usize, (x, y, w, h): (usize, usize, usize, usize)) -> std::io::Result<Image> {
        match &self.store {
            Some(v) => v.read(i, x, y, w, h)?.into_iter().next().ok_or_else(|| std::io::Error::other("empty patch")),
            None => Ok(self.items[i].degraded.crop(x, y, w, h)),
        }
    }
}

impl CropPool for TargetTrainSet {
    fn store(&self) -> Option<&patches::StoreView> {
        self.store.as_ref()
    }
    fn held(&self) -> usize {
        self.items.len()
    }
    fn held_image(&self, i: usize) -> (&str, &Image) {
        (&self.items[i].id, &self.items[i].degraded)
    }
}

/// How many images of what size to take from a dataset split.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Take {
    /// Images to generate (embedded datasets), or a cap on the patches a dataset on disk gives
    /// training ([`Take::ALL`]: every one).
    pub count: usize,
    /// Side of the square images generated by embedded datasets; for training data on disk,
    /// the side of the patches its images are tiled into.
    pub size: usize,
}

impl Take {
    /// No cap: the whole dataset (datasets on disk only).
    pub const ALL: usize = usize::MAX;
}

/// Pairs of a test set on disk decoded up front, for the crop figures and the D probe.
pub const SAMPLE: usize = 4;

/// Pairs of a test set restored and scored at once: a set on disk is decoded this many at a
/// time (with their outputs, what scoring it holds; 8 full-size RealBlur frames ≈ 100 MB).
pub const EVAL_CHUNK: usize = 8;

/// The tiling of training data on disk for a [`Take`]: patches of `size`, a quarter of them
/// overlapping (the release: 512, overlap 128).
pub fn tiling(take: Take) -> patches::Tiling {
    patches::Tiling::release(take.size)
}

/// Context shared by the loaders.
pub struct Loader<'a> {
    pub registry: &'a Registry,
    pub cache_dir: &'a Path,
    /// Seed of all data generation (independent of the training seeds).
    pub seed: u64,
    /// Only say what the data is (fingerprints, stores to prepare): no patch store is built
    /// or opened (`plan`), so store-backed sets come back empty.
    pub plan_only: bool,
    /// Set on Ctrl-C / SIGTERM: preparing a patch store stops between images (what is done
    /// is kept; the same command continues); generating data stops at once (nothing cached).
    pub stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// A training set's patch store as [`Loader::stored`] found it.
struct Stored {
    /// `None` under `plan_only`.
    view: Option<patches::StoreView>,
    fingerprint: String,
    problems: Vec<String>,
    /// Found prepared (and verified) rather than prepared now.
    reused: bool,
}

/// What a training set on disk needs from its patch store, for `plan`.
#[derive(Clone, Debug, PartialEq)]
pub struct StorePlan {
    pub dataset: String,
    pub dir: std::path::PathBuf,
    /// Finished and present (still verified before use).
    pub ready: bool,
    pub images: usize,
    pub tiling: patches::Tiling,
    /// Estimated from the image headers (8-bit).
    pub bytes: u64,
    pub patches: usize,
}

impl Loader<'_> {
    fn entry(&self, name: &str) -> Result<&DatasetEntry> {
        self.registry.get(name)
    }

    /// Whether Ctrl-C / SIGTERM asked the run to stop.
    fn stopped(&self) -> bool {
        self.stop.as_ref().is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// `make(0..count)` in parallel; `Ok(None)` when a stop is asked first. The work runs on a
    /// thread of its own, waited for while watching the stop flag, so a stop is honoured at
    /// once even in the middle of one large image (a 4096² camera render takes most of a
    /// minute): a stopped generation caches nothing, so its result is not needed — the
    /// workers start no further image and the process exits meanwhile.
    fn generate<T: Send + 'static>(
        &self,
        count: usize,
        make: impl Fn(usize) -> T + Send + Sync + 'static,
    ) -> Result<Option<Vec<T>>> {
        use std::sync::atomic::Ordering::SeqCst;
        let Some(stop) = self.stop.clone() else {
            return Ok(Some((0..count).into_par_iter().map(make).collect()));
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let flag = stop.clone();
        std::thread::spawn(move || {
            let made: Option<Vec<T>> =
                (0..count).into_par_iter().map(|i| (!flag.load(SeqCst)).then(|| make(i))).collect();
            let _ = tx.send(made);
        });
        loop {
            match rx.recv_timeout(std::time::Duration::from_millis(20)) {
                Ok(made) => return Ok(made),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) if stop.load(SeqCst) => return Ok(None),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                // The worker thread ended without a result: it panicked (its message is on
                // stderr). A bug, reported as one (exit 1), not re-raised here.
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(Failure::internal("data generation failed: a worker stopped (see the message above)"));
                }
            }
        }
    }

    /// The error of a generation stopped by Ctrl-C / SIGTERM (exit 130; nothing was cached).
    fn interrupted(name: &str) -> Failure {
        Failure::new(
            crate::error::ExitCode::Interrupted,
            format!("interrupted while generating dataset \"{name}\" (nothing of it was cached)"),
        )
    }

    /// Procedural content of an embedded dataset split: dead leaves in the style its kind
    /// photographs (see [`content_config`]), on a stream of its own.
    fn content_images(&self, name: &str, kind: DatasetKind, split: Split, take: Take) -> Result<Vec<(String, Image)>> {
        // Validated by `check_take`: generated data has a count.
        let cfg = content_config(kind, take.size);
        // Distinct streams per dataset and split so no image is shared between them.
        let seed = crate::rng::derive_seed(self.seed, &format!("{name}/{}", split.as_str()), &[]);
        // A line before the work, so a large set does not start in silence.
        tracing::info!(
            dataset = name,
            split = split.as_str(),
            images = take.count,
            size = take.size,
            "generating images"
        );
        let prefix = format!("{name}-{}", split.as_str());
        let images = self.generate(take.count, move |i| {
            (format!("{prefix}-{i:05}"), dead_leaves::dead_leaves(&cfg, seed, i as u64))
        })?;
        images.ok_or_else(|| Self::interrupted(name))
    }

    /// Clean images of a dataset split (a synthetic source's, or a simulator's input).
    /// A clean folder's unreadable images, and (with `take.size > 0`) those smaller than the
    /// crop taken from them, are problems under `on_problem`; an empty result is an error.
    fn clean_images(
        &self,
        name: &str,
        split: Split,
        take: Take,
        on_problem: OnProblem,
    ) -> Result<Vec<(String, Image)>> {
        let entry = self.entry(name)?;
        match entry.kind {
            DatasetKind::DeadLeaves | DatasetKind::CameraSim | DatasetKind::RainSim | DatasetKind::BlurSim => {
                self.content_images(name, entry.kind, split, take)
            }
            DatasetKind::SimClean => {
                // The `like` dataset's renderer with its degradation off, on images of our own.
                let like = entry.like.as_deref().unwrap_or_default();
                let like_entry = self.entry(like)?;
                let sim = simulator(like, like_entry).map_err(|m| {
                    Failure::config(format!("{}: dataset \"{like}\": {m}", self.registry.path.display()))
                })?;
                let seed = crate::rng::derive_seed(self.seed, &format!("{name}/{}/look", split.as_str()), &[]);
                Ok(self
                    .content_images(name, like_entry.kind, split, take)?
                    .into_par_iter()
                    .enumerate()
                    .map(|(i, (id, c))| (id, sim.reference(&c, seed, i as u64)))
                    .collect())
            }
            DatasetKind::CleanFolder => {
                let scan = disk::scan(self.registry, name, split)?;
                let mut dec = disk::decode(scan, usize::MAX, false);
                dec.items.retain(|(it, d, _)| {
                    let small = take.size > 0 && (d.width < take.size || d.height < take.size);
                    if small {
                        dec.problems.push(layouts::Problem {
                            path: it.degraded.clone(),
                            message: format!(
                                "{}×{} is smaller than the {s}×{s} crop taken from it",
                                d.width,
                                d.height,
                                s = take.size
                            ),
                        });
                    }
                    !small
                });
                disk::check(name, &dec.problems, on_problem)?;
                if dec.items.is_empty() {
                    return Err(Failure::data(format!(
                        "dataset \"{name}\": no usable {} images under {}",
                        split.as_str(),
                        self.registry.root(name)?.display()
                    )));
                }
                let images: Vec<(String, Image, Vec<(String, String)>)> =
                    dec.items.into_iter().map(|(it, d, _)| (it.id, d, it.meta)).collect();
                Ok(crops(&images, take, self.seed, name).into_iter().map(|(id, im, _)| (id, im)).collect())
            }
            kind => Err(Failure::config(format!(
                "{}: dataset \"{name}\" is a {kind:?} dataset; a synthetic source needs clean images (kind dead_leaves, sim_clean or clean_folder)",
                self.registry.path.display()
            ))),
        }
    }

    /// Generated data needs a count; data on disk may take all of itself.
    fn check_take(&self, name: &str, take: Take) -> Result<()> {
        if take.count == Take::ALL && self.entry(name)?.kind.is_embedded() {
            return Err(Failure::config(format!("dataset \"{name}\" is generated: say how many images (count)")));
        }
        Ok(())
    }

    /// The patch store of a disk dataset's scan (`planes` of every image, tiled as
    /// [`tiling`] says), prepared or continued and verified, as training sees it (capped at
    /// `take.count`), with its fingerprint. Under `plan_only`, only the fingerprint and the
    /// plan. Scan and store problems go through `on_problem`.
    fn stored(
        &self,
        name: &str,
        scan: layouts::Scan,
        take: Take,
        planes: patches::Planes,
        on_problem: OnProblem,
        too_small: bool,
    ) -> Result<Stored> {
        let t = tiling(take);
        let key = patches::store_key(&disk::fingerprint(&scan), t, planes);
        let mut scan = scan;
        if too_small && !self.plan_only {
            // Photos smaller than a patch are problems (a clean folder's stray thumbnails);
            // paired sets use a small image whole, as one patch.
            let sizes = patches::header_sizes(&scan.items);
            let mut kept = Vec::with_capacity(scan.items.len());
            for (it, size) in std::mem::take(&mut scan.items).into_iter().zip(sizes) {
                match size {
                    Ok((w, h)) if w < take.size || h < take.size => scan.problem(
                        it.degraded.clone(),
                        format!("{w}×{h} is smaller than the {s}×{s} crop taken from it", s = take.size),
                    ),
                    _ => kept.push(it),
                }
            }
            scan.items = kept;
        }
        let cap = (take.count != Take::ALL).then_some(take.count);
        let fingerprint = match cap {
            Some(c) => format!("patches-{key}-cap{c}"),
            None => format!("patches-{key}"),
        };
        disk::check(name, &scan.problems, on_problem)?;
        let mut problems: Vec<String> = scan.problems.iter().map(|p| p.to_string()).collect();
        if self.plan_only {
            return Ok(Stored { view: None, fingerprint, problems, reused: false });
        }
        let dir = patches::store_dir(self.cache_dir, &key);
        let t0 = std::time::Instant::now();
        let opened = patches::open_verified(&dir, &key);
        let reused = opened.is_some();
        let store = match opened {
            Some(store) => {
                tracing::info!(dataset = name, store = %dir.display(), patches = store.len(),
                    verify_s = format!("{:.1}", t0.elapsed().as_secs_f64()), "patch store verified");
                store
            }
            None => {
                tracing::info!(dataset = name, store = %dir.display(), images = scan.items.len(),
                    side = t.side, overlap = t.overlap, "preparing the patch store");
                let def = json!({"dataset": name, "root": self.registry.root(name)?.display().to_string()});
                let stopped = || self.stopped();
                let (store, rep) = patches::prepare(&dir, &key, def, &scan.items, t, planes, &stopped).map_err(|e| {
                    if stopped() {
                        Failure::new(
                            crate::error::ExitCode::Interrupted,
                            format!("interrupted while preparing the patch store of \"{name}\"; its finished chunks are kept and the same command continues"),
                        )
                    } else {
                        Failure::data(format!("dataset \"{name}\": patch store: {e:#}"))
                    }
                })?;
                tracing::info!(
                    dataset = name,
                    patches = rep.patches,
                    bytes = rep.bytes,
                    built = rep.built,
                    resumed = rep.reused,
                    rebuilt = rep.rebuilt,
                    seconds = format!("{:.1}", rep.seconds),
                    "patch store ready"
                );
                store
            }
        };
        disk::check(name, &store.problems, on_problem)?;
        problems.extend(store.problems.iter().map(|p| p.to_string()));
        if store.is_empty() {
            return Err(Failure::data(format!(
                "dataset \"{name}\": no usable train images under {}",
                self.registry.root(name)?.display()
            )));
        }
        let view = Some(patches::StoreView::new(std::sync::Arc::new(store), cap));
        Ok(Stored { view, fingerprint, problems, reused })
    }

    /// What preparing the stores of a training set on disk would take (`plan`): `None` for
    /// generated data and sets read whole.
    pub fn store_plan(&self, name: &str, take: Take, planes: patches::Planes) -> Result<Option<StorePlan>> {
        let entry = self.entry(name)?;
        if !entry.streams_training() {
            return Ok(None);
        }
        let scan = disk::scan(self.registry, name, Split::Train)?;
        let t = tiling(take);
        let key = patches::store_key(&disk::fingerprint(&scan), t, planes);
        let dir = patches::store_dir(self.cache_dir, &key);
        let (mut bytes, mut n) = (0u64, 0usize);
        for (w, h) in patches::header_sizes(&scan.items).into_iter().flatten() {
            bytes += patches::stored_bytes(w, h, t, planes);
            n += t.count(w, h);
        }
        Ok(Some(StorePlan {
            dataset: name.to_string(),
            ready: dir.join("index.json").is_file(),
            dir,
            images: scan.items.len(),
            tiling: t,
            bytes,
            patches: n,
        }))
    }

    /// A few whole patches of a store-backed set, as items (figures and diagnostics look at
    /// images; training reads the store).
    fn sample_items(view: &patches::StoreView, n: usize) -> Result<Vec<(String, Vec<Image>)>> {
        (0..view.len().min(n))
            .map(|i| {
                let (w, h) = view.dims(i);
                let planes = view
                    .read(i, 0, 0, w, h)
                    .map_err(|e| Failure::data(format!("{}: {e}", view.store.dir().display())))?;
                Ok((view.id(i), planes))
            })
            .collect()
    }

    /// Synthetic source pairs: clean images of `name` degraded by `spec`.
    pub fn synthetic_pairs(
        &self,
        name: &str,
        split: Split,
        take: Take,
        spec: &DegradationSpec,
        on_problem: OnProblem,
    ) -> Result<PairedSet> {
        let entry = self.entry(name)?;
        self.check_take(name, take)?;
        if entry.kind == DatasetKind::CleanFolder && split == Split::Train {
            // Training from a folder of photos: every image tiled into the patch store, the
            // degradation drawn afresh per crop (nothing degraded is stored).
            let scan = disk::scan(self.registry, name, split)?;
            let Stored { view: store, fingerprint, problems, reused } =
                self.stored(name, scan, take, patches::Planes::Degraded, on_problem, true)?;
            let seed = crate::rng::derive_seed(self.seed, &format!("{name}/train/degrade"), &[]);
            let items = match &store {
                Some(v) => Self::sample_items(v, 4)?
                    .into_iter()
                    .enumerate()
                    .map(|(i, (id, mut planes))| {
                        let clean = planes.remove(0);
                        let (degraded, params) = spec.apply(&clean, seed, i as u64);
                        PairedItem { id, degraded, clean, params }
                    })
                    .collect(),
                None => vec![],
            };
            return Ok(PairedSet {
                dataset: name.to_string(),
                split,
                items,
                fingerprint,
                cached: reused,
                problems,
                redraw: None,
                store,
                files: None,
            }
            .redrawn(spec.clone()));
        }
        // Files on disk can change under an unchanged definition: their fingerprint is part of it.
        let files = if entry.kind == DatasetKind::CleanFolder {
            disk::fingerprint(&disk::scan(self.registry, name, split)?)
        } else {
            String::new()
        };
        // A sim_clean dataset's images are defined by the dataset it looks like, too.
        // Its calibration is keyed in full, so a change of a preset's numbers regenerates it.
        let look = entry
            .like
            .as_ref()
            .and_then(|l| self.registry.datasets.get(l).map(|e| (l, e)))
            .map(|(l, e)| json!({"entry": format!("{e:?}"), "simulator": simulator(l, e).ok()}));
        let def = json!({"role": "synthetic_pairs", "dataset": name, "entry": format!("{entry:?}"), "files": files,
            "split": split, "take": take, "degradation": spec, "seed": self.seed, "look": look});
        let (entries, cached) = materialise(self.cache_dir, &def, || {
            let clean = self.clean_images(name, split, take, on_problem)?;
            let seed = crate::rng::derive_seed(self.seed, &format!("{name}/{}/degrade", split.as_str()), &[]);
            let imgs: Vec<Image> = clean.iter().map(|(_, im)| im.clone()).collect();
            let degraded = spec.apply_all(&imgs, seed, 0);
            Ok(clean
                .into_iter()
                .zip(degraded)
                .map(|((id, c), (d, params))| ShardEntry {
                    item: ShardItem { id, width: c.width, height: c.height, params, planes: 2, gray: Vec::new() },
                    degraded: d,
                    clean: Some(c),
                })
                .collect())
        })?;
        Ok(PairedSet {
            dataset: name.to_string(),
            split,
            fingerprint: shard::shard_key(&def),
            cached,
            items: entries.into_iter().map(paired).collect(),
            problems: vec![],
            redraw: None,
            store: None,
            files: None,
        })
    }

    /// The training pairs of a pipeline's source: clean images of `name` degraded by
    /// `degradation`, or without one a paired dataset's own training pairs, cropped (Rain13K
    /// and GoPro, whose synthetic degradation is baked into the files).
    pub fn source_pairs(
        &self,
        name: &str,
        take: Take,
        degradation: Option<&DegradationSpec>,
        on_problem: OnProblem,
    ) -> Result<PairedSet> {
        match degradation {
            Some(spec) => self.synthetic_pairs(name, Split::Train, take, spec, on_problem),
            None => {
                let entry = self.entry(name)?;
                if matches!(entry.kind, DatasetKind::DeadLeaves | DatasetKind::CleanFolder | DatasetKind::SimClean) {
                    return Err(Failure::config(format!(
                        "source.degradation: dataset \"{name}\" holds clean images only; say how to degrade them (e.g. awgn, rain, blur)"
                    )));
                }
                self.train_pairs(name, entry, take, on_problem)
            }
        }
    }

    /// Real (or real-like) degraded pairs for testing.
    pub fn test_pairs(&self, name: &str, take: Take, on_problem: OnProblem) -> Result<PairedSet> {
        self.eval_pairs(name, Split::Test, take, on_problem)
    }

    /// Real (or real-like) degraded pairs of the test or validation split.
    pub fn eval_pairs(&self, name: &str, split: Split, take: Take, on_problem: OnProblem) -> Result<PairedSet> {
        let entry = self.entry(name)?;
        match entry.kind {
            k if k.is_simulated() => self.simulated_pairs(name, entry, split, take, false),
            DatasetKind::Sidd if entry.layout.as_deref() == Some("validation") => {
                let root = self.registry.root(name)?;
                let set = sidd::validation(&root, take.count)?;
                Ok(PairedSet { dataset: name.into(), ..set })
            }
            _ => {
                let mut scan = disk::scan(self.registry, name, split.on_disk())?;
                let fingerprint = disk::fingerprint(&scan);
                scan.items.truncate(take.count);
                // Checked up front from the headers (no pixel is decoded): every item has its
                // ground truth, of its own size. The pixels are read when scored.
                let mut problems = std::mem::take(&mut scan.problems);
                let sides: Vec<&layouts::FileItem> = scan.items.iter().collect();
                let sizes: Vec<_> = sides
                    .par_iter()
                    .map(|it| {
                        let d = crate::image::dimensions_of(&it.degraded);
                        let c = it.clean.as_ref().map(|c| crate::image::dimensions_of(c));
                        (d, c)
                    })
                    .collect();
                let mut files = Vec::with_capacity(scan.items.len());
                for (it, (d, c)) in scan.items.iter().zip(sizes) {
                    let problem = match (d, c) {
                        (Err(e), _) => Some((it.degraded.clone(), format!("unreadable image: {e}"))),
                        (_, None) => Some((it.degraded.clone(), "no ground truth for a test item".to_string())),
                        (_, Some(Err(e))) => {
                            Some((it.clean.clone().unwrap_or_default(), format!("unreadable image: {e}")))
                        }
                        (Ok(a), Some(Ok(b))) if a != b => Some((
                            it.degraded.clone(),
                            format!("size {}×{} differs from its ground truth's {}×{}", a.0, a.1, b.0, b.1),
                        )),
                        _ => None,
                    };
                    match problem {
                        Some((path, message)) => problems.push(layouts::Problem { path, message }),
                        None => files.push(it.clone()),
                    }
                }
                disk::check(name, &problems, on_problem)?;
                let items = decode_pairs(name, &files[..files.len().min(SAMPLE)], false)?;
                Ok(PairedSet {
                    dataset: name.into(),
                    split,
                    items,
                    fingerprint,
                    cached: false,
                    problems: problems.iter().map(|p| p.to_string()).collect(),
                    redraw: None,
                    store: None,
                    files: Some(std::sync::Arc::new(TestFiles {
                        source: TestSource::Files(files),
                        reference_input: false,
                    })),
                })
            }
        }
    }

    /// Target training inputs, without ground truth.
    pub fn target_train(&self, name: &str, take: Take, on_problem: OnProblem) -> Result<TargetTrainSet> {
        let entry = self.entry(name)?;
        match entry.kind {
            k if k.is_simulated() => {
                let (entries, cached, fp) = self.simulated(name, entry, Split::Train, take, false)?;
                Ok(TargetTrainSet {
                    dataset: name.into(),
                    items: entries
                        .into_iter()
                        .map(|e| DegradedItem { id: e.item.id, degraded: e.degraded, params: e.item.params })
                        .collect(),
                    fingerprint: fp,
                    cached,
                    problems: vec![],
                    store: None,
                })
            }
            DatasetKind::Sidd if entry.mat_blocks() => {
                // Noisy blocks only, e.g. SIDD's benchmark set (whose ground truth is withheld).
                let root = self.registry.root(name)?;
                let stem = if entry.layout.as_deref() == Some("benchmark") {
                    "BenchmarkNoisyBlocksSrgb"
                } else {
                    "ValidationNoisyBlocksSrgb"
                };
                let images: Vec<(String, Image, Vec<(String, String)>)> = sidd::read_blocks(&root, stem)?
                    .into_iter()
                    .map(|(ix, im)| (sidd::block_id(ix), im, vec![]))
                    .collect();
                let items = target_crops(&images, take, self.seed, name);
                let fingerprint = layouts::files_fingerprint([root.join(format!("{stem}.mat")).as_path()]);
                Ok(TargetTrainSet {
                    dataset: name.into(),
                    items,
                    fingerprint,
                    cached: false,
                    problems: vec![],
                    store: None,
                })
            }
            _ => {
                // Ground truth is never decoded, nor stored, for target training data.
                let scan = disk::scan(self.registry, name, Split::Train)?;
                let Stored { view: store, fingerprint, problems, reused } =
                    self.stored(name, scan, take, patches::Planes::Degraded, on_problem, false)?;
                let items = match &store {
                    Some(v) => Self::sample_items(v, 4)?
                        .into_iter()
                        .map(|(id, mut planes)| DegradedItem {
                            id,
                            degraded: planes.remove(0),
                            params: Default::default(),
                        })
                        .collect(),
                    None => vec![],
                };
                Ok(TargetTrainSet { dataset: name.into(), items, fingerprint, cached: reused, problems, store })
            }
        }
    }

    /// Target training images WITH their ground truth, for the target-supervised upper bound
    /// only (an oracle the method itself never has): the same degraded images (camera
    /// simulator) or crops (datasets on disk) as [`Loader::target_train`], paired.
    pub fn target_train_pairs(&self, name: &str, take: Take, on_problem: OnProblem) -> Result<PairedSet> {
        self.train_pairs(name, self.entry(name)?, take, on_problem)
    }

    /// Training pairs of a paired dataset: simulated ones with their ground truth, or crops
    /// of pairs on disk.
    fn train_pairs(&self, name: &str, entry: &DatasetEntry, take: Take, on_problem: OnProblem) -> Result<PairedSet> {
        match entry.kind {
            k if k.is_simulated() => self.simulated_pairs(name, entry, Split::Train, take, true),
            DatasetKind::Sidd if entry.mat_blocks() => Err(Failure::config(format!(
                "{}: dataset \"{name}\": its training use is noisy blocks only (no ground truth); training pairs need a dataset that has them (e.g. SIDD Medium)",
                self.registry.path.display()
            ))),
            _ => {
                let scan = disk::scan(self.registry, name, Split::Train)?;
                let Stored { view: store, fingerprint, problems, reused } =
                    self.stored(name, scan, take, patches::Planes::Pair, on_problem, false)?;
                let items = match &store {
                    Some(v) => Self::sample_items(v, 4)?
                        .into_iter()
                        .filter_map(|(id, mut planes)| {
                            let (clean, degraded) = (planes.pop()?, planes.pop()?);
                            Some(PairedItem { id, degraded, clean, params: Default::default() })
                        })
                        .collect(),
                    None => vec![],
                };
                Ok(PairedSet {
                    dataset: name.into(),
                    split: Split::Train,
                    items,
                    fingerprint,
                    cached: reused,
                    problems,
                    redraw: None,
                    store,
                    files: None,
                })
            }
        }
    }

    /// Simulated target images with their ground truth (see [`Loader::simulated`]).
    fn simulated_pairs(
        &self,
        name: &str,
        entry: &DatasetEntry,
        split: Split,
        take: Take,
        oracle_gt: bool,
    ) -> Result<PairedSet> {
        let (entries, cached, fp) = self.simulated(name, entry, split, take, oracle_gt)?;
        Ok(PairedSet {
            dataset: name.into(),
            split,
            items: entries.into_iter().map(paired).collect(),
            fingerprint: fp,
            cached,
            problems: vec![],
            redraw: None,
            store: None,
            files: None,
        })
    }

    /// Simulated real-like images (camera noise, rain, blur) of dead leaves. The train split
    /// renders (and stores) no ground truth unless `oracle_gt` (the upper bound) asks for it;
    /// the degraded images are the same either way, as their randomness does not depend on it.
    fn simulated(
        &self,
        name: &str,
        entry: &DatasetEntry,
        split: Split,
        take: Take,
        oracle_gt: bool,
    ) -> Result<(Vec<ShardEntry>, bool, String)> {
        self.check_take(name, take)?;
        let sim = simulator(name, entry)
            .map_err(|m| Failure::config(format!("{}: dataset \"{name}\": {m}", self.registry.path.display())))?;
        // The simulator's full configuration, not only its preset's name, keys the shard.
        let mut def = json!({"role": "camera", "dataset": name, "entry": format!("{entry:?}"), "simulator": sim,
            "split": split, "take": take, "seed": self.seed});
        if oracle_gt {
            def["oracle_gt"] = json!(true);
        }
        let (entries, cached) = materialise(self.cache_dir, &def, || {
            let clean = self.clean_images(name, split, take, OnProblem::Fail)?;
            let seed = crate::rng::derive_seed(self.seed, &format!("{name}/{}/camera", split.as_str()), &[]);
            let with_gt = split != Split::Train || oracle_gt;
            // Each image is taken out of its slot as it is rendered (no second copy held).
            let clean: Vec<std::sync::Mutex<Option<(String, Image)>>> =
                clean.into_iter().map(|c| std::sync::Mutex::new(Some(c))).collect();
            let sim = sim.clone();
            let rendered = self.generate(clean.len(), move |i| {
                let (id, c) = clean[i].lock().unwrap_or_else(|e| e.into_inner()).take().expect("each image once");
                let (degraded, gt, params) = sim.render(&c, seed, i as u64, with_gt);
                ShardEntry {
                    item: ShardItem {
                        id,
                        width: c.width,
                        height: c.height,
                        params,
                        planes: 1 + gt.is_some() as usize,
                        gray: Vec::new(),
                    },
                    degraded,
                    clean: gt,
                }
            });
            rendered?.ok_or_else(|| anyhow::Error::from(Self::interrupted(name)))
        })?;
        Ok((entries, cached, shard::shard_key(&def)))
    }
}

/// The simulated "real" domain of a simulated dataset, from its registry kind and preset.
fn simulator(name: &str, entry: &DatasetEntry) -> std::result::Result<RealDomain, String> {
    let family = match entry.kind {
        DatasetKind::CameraSim => Family::Noise,
        DatasetKind::RainSim => Family::Rain,
        DatasetKind::BlurSim => Family::Blur,
        kind @ (DatasetKind::DeadLeaves
        | DatasetKind::SimClean
        | DatasetKind::Sidd
        | DatasetKind::SpaData
        | DatasetKind::Realblur
        | DatasetKind::Gopro
        | DatasetKind::Rain13k
        | DatasetKind::CleanFolder) => return Err(format!("dataset \"{name}\" of kind {kind:?} is not simulated")),
    };
    RealDomain::new(family, entry.preset)
}

/// The dead-leaves style an embedded dataset of `kind` starts from: photographic content
/// (lens-soft edges, nothing finer than a Bayer sensor resolves) for the camera simulator, the
/// default style elsewhere (the rain and blur simulators were calibrated on it).
fn content_config(kind: DatasetKind, size: usize) -> dead_leaves::DeadLeavesConfig {
    match kind {
        DatasetKind::CameraSim => dead_leaves::DeadLeavesConfig::photo(size),
        _ => dead_leaves::DeadLeavesConfig { size, ..Default::default() },
    }
}

/// Target training items: [`crops`] as degraded-only items.
fn target_crops(
    images: &[(String, Image, Vec<(String, String)>)],
    take: Take,
    seed: u64,
    name: &str,
) -> Vec<DegradedItem> {
    crops(images, take, seed, name)
        .into_iter()
        .map(|(id, degraded, meta)| DegradedItem {
            id,
            degraded,
            params: DegradationParams { meta, ..Default::default() },
        })
        .collect()
}

/// `take.count` crops of `take.size`² from `images`, round-robin over the images with random
/// positions from (seed, dataset, crop index); images smaller than the crop are used whole.
fn crops(
    images: &[(String, Image, Vec<(String, String)>)],
    take: Take,
    seed: u64,
    name: &str,
) -> Vec<(String, Image, Vec<(String, String)>)> {
    if images.is_empty() {
        return vec![];
    }
    (0..take.count)
        .into_par_iter()
        .map(|k| {
            let (id, img, meta) = &images[k % images.len()];
            if img.width <= take.size || img.height <= take.size {
                return (format!("{id}#{k}"), img.clone(), meta.clone());
            }
            let mut rng = Rng::derive(seed, &format!("{name}/crop"), &[k as u64]);
            let x = rng.below((img.width - take.size + 1) as u64) as usize;
            let y = rng.below((img.height - take.size + 1) as u64) as usize;
            (format!("{id}@{x},{y}"), img.crop(x, y, take.size, take.size), meta.clone())
        })
        .collect()
}

fn paired(e: ShardEntry) -> PairedItem {
    PairedItem {
        id: e.item.id,
        degraded: e.degraded,
        clean: e.clean.expect("paired shard stores ground truth"),
        params: e.item.params,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `sim_clean` dataset's images are its `like` dataset's noise-free camera captures
    /// (the same renderer as the target's references: same content style, same camera model),
    /// of images of its own.
    #[test]
    fn sim_clean_images_come_from_the_targets_renderer() {
        let reg = Registry::parse(
            "[datasets.cam]\nkind = \"camera_sim\"\npreset = \"sidd_like\"\n\
             [datasets.cam-clean]\nkind = \"sim_clean\"\nlike = \"cam\"\n",
            Path::new("r.toml"),
        )
        .unwrap();
        let cache = std::env::temp_dir().join(format!("rp-simclean-{}", std::process::id()));
        let loader = Loader { registry: &reg, cache_dir: &cache, seed: 9, plan_only: false, stop: None };
        let take = Take { count: 4, size: 48 };
        let clean = loader.clean_images("cam-clean", Split::Train, take, OnProblem::Fail).unwrap();
        let seed = crate::rng::derive_seed(9, "cam-clean/train/look", &[]);
        let content_seed = crate::rng::derive_seed(9, "cam-clean/train", &[]);
        for (i, (_, img)) in clean.iter().enumerate() {
            // What the target's simulator does for its ground truth, spelled out.
            let content = dead_leaves::dead_leaves(&dead_leaves::DeadLeavesConfig::photo(48), content_seed, i as u64);
            let p = crate::degradations::camera::sample_params(
                &crate::degradations::camera::CameraConfig::sidd_like(),
                &mut Rng::derive(seed, "camera-params", &[i as u64]),
            );
            let (_, reference) = crate::degradations::camera::capture(
                &content,
                &p,
                Some(&mut Rng::derive(seed, "camera-noise", &[i as u64])),
            );
            assert_eq!(*img, reference, "image {i}");
            assert_ne!(*img, content, "a capture (8-bit, developed), not the raw content");
        }
        // The target's references: the same renderer, other images.
        let target = loader.eval_pairs("cam", Split::Test, take, OnProblem::Fail).unwrap();
        assert!(target.items.iter().all(|t| clean.iter().all(|(_, x)| *x != t.clean)));
        // And as a synthetic source, its pairs' clean side is exactly these images.
        let pairs = loader.synthetic_pairs(
            "cam-clean",
            Split::Train,
            take,
            &DegradationSpec::Awgn { sigma: [5.0, 5.0] },
            OnProblem::Fail,
        );
        let pairs = pairs.unwrap();
        assert!(pairs.items.iter().zip(&clean).all(|(p, (_, c))| p.clean == *c));
        // Generated data needs a count ("all of it" is for data on disk).
        let all = Take { count: Take::ALL, size: 48 };
        let err = loader.target_train("cam", all, OnProblem::Fail).unwrap_err().to_string();
        assert!(err.contains("dataset \"cam\" is generated: say how many images (count)"), "{err}");
        let awgn = DegradationSpec::Awgn { sigma: [5.0, 5.0] };
        assert!(loader.synthetic_pairs("cam-clean", Split::Train, all, &awgn, OnProblem::Fail).is_err());
        let _ = std::fs::remove_dir_all(&cache);
    }
}

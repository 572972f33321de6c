//! The patch store: every image of a dataset on disk tiled into fixed-size patches (the
//! release's `generate_patches_*.py`: 512 px, overlap 128), kept as 8-bit (16-bit for 16-bit
//! sources) samples in chunk files with an index, so training reads a crop with one positioned
//! read instead of decoding (or holding) whole photographs.
//!
//! Layout of `<cache>/patches/<key>/` (key: the dataset's files, side, overlap, planes):
//! - `chunk-<k>.bin`: the patches of a group of images, each patch's planes (degraded, then
//!   clean) one after the other, every plane row-major HWC;
//! - `chunk-<k>.json`: that chunk's patches, byte count and SHA-256, written after the chunk
//!   (its presence means the chunk is done: preparing again continues where it stopped);
//! - `index.json`: the definition, the image ids and every chunk's record, written last.
//!
//! Every chunk is hashed before a store is used; a chunk that does not verify is rebuilt from
//! its images. Images are decoded one at a time per worker, so preparing needs memory for a
//! few images, whatever the dataset's size.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::layouts::{FileItem, Problem};
use crate::image::Image;
use crate::util::{sha256_hex, temp_path, write_atomic};

/// Bump when the stored bytes change for the same definition.
const FORMAT: u32 = 1;
/// Target size of one chunk file; images are grouped until their patches would exceed it.
const CHUNK_BYTES: u64 = 256 << 20;

/// Which images of an item a store keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Planes {
    /// The degraded image only (target training inputs: ground truth is never read).
    Degraded,
    /// Degraded and clean, aligned (paired training data).
    Pair,
}

impl Planes {
    fn count(self) -> usize {
        match self {
            Planes::Degraded => 1,
            Planes::Pair => 2,
        }
    }
}

/// How a dataset is tiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tiling {
    /// Patch side (images smaller than it give one patch of their own size).
    pub side: usize,
    /// Pixels shared by neighbouring patches (the release: 128 of 512).
    pub overlap: usize,
}

impl Tiling {
    /// The release's tiling for a patch side: a quarter of it overlaps (512 → 128).
    pub fn release(side: usize) -> Tiling {
        Tiling { side, overlap: side / 4 }
    }

    /// Start positions along an axis of `len` pixels: every `side - overlap`, the last one
    /// flush with the far edge, so every pixel is in a patch.
    pub fn starts(&self, len: usize) -> Vec<usize> {
        if len <= self.side {
            return vec![0];
        }
        let stride = (self.side - self.overlap.min(self.side - 1)).max(1);
        let mut out: Vec<usize> = (0..).map(|k| k * stride).take_while(|&p| p + self.side < len).collect();
        out.push(len - self.side);
        out
    }

    /// Patches a `w × h` image gives.
    pub fn count(&self, w: usize, h: usize) -> usize {
        self.starts(w).len() * self.starts(h).len()
    }
}

/// One stored patch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Patch {
    /// Index into the store's image ids.
    pub image: u32,
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
    /// Byte offset of its first plane in its chunk.
    pub offset: u64,
    /// Bytes per sample: 1 (8-bit) or 2 (16-bit, little-endian).
    pub bytes: u8,
    /// Per plane: read from a single-channel file (stored replicated to RGB, see [`Image::gray`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gray: Vec<bool>,
}

impl Patch {
    fn plane_bytes(&self) -> u64 {
        self.w as u64 * self.h as u64 * 3 * self.bytes as u64
    }
}

/// A chunk's record: its patches (in order), size and hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct ChunkRecord {
    /// The store key it belongs to.
    key: String,
    /// Its images (indices into the store's ids), in order.
    images: Vec<u32>,
    patches: Vec<Patch>,
    bytes: u64,
    sha256: String,
    /// Images of this chunk that could not be stored, and why.
    problems: Vec<(PathBuf, String)>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Index {
    format: u32,
    key: String,
    definition: serde_json::Value,
    tiling: Tiling,
    planes: Planes,
    /// Image ids, in scan order.
    ids: Vec<String>,
    chunks: Vec<ChunkRecord>,
}

/// What preparing did, for logs, `plan` and the benchmark.
#[derive(Clone, Debug, Default)]
pub struct PrepareReport {
    pub images: usize,
    pub patches: usize,
    /// Bytes of the chunk files.
    pub bytes: u64,
    /// Chunks built now / found done (resumed) / found corrupted and rebuilt.
    pub built: usize,
    pub reused: usize,
    pub rebuilt: usize,
    pub seconds: f64,
    /// Bytes of image files read while building.
    pub read_bytes: u64,
}

/// A prepared, verified patch store, open for reading.
pub struct PatchStore {
    dir: PathBuf,
    index: Index,
    /// Every patch as (chunk, patch) in store order.
    order: Vec<(u32, u32)>,
    files: Vec<std::fs::File>,
    pub problems: Vec<Problem>,
}

impl std::fmt::Debug for PatchStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PatchStore({}, {} patches)", self.dir.display(), self.order.len())
    }
}

/// The key of a store: the dataset's files (paths, sizes, times), the tiling, the planes.
pub fn store_key(files_fingerprint: &str, tiling: Tiling, planes: Planes) -> String {
    let def = serde_json::json!({"files": files_fingerprint, "tiling": tiling, "planes": planes, "format": FORMAT});
    sha256_hex(def.to_string().as_bytes())[..20].to_string()
}

/// Where the store of `key` lives under the cache folder.
pub fn store_dir(cache_dir: &Path, key: &str) -> PathBuf {
    cache_dir.join("patches").join(key)
}

/// Stored bytes of a `w × h` image under `tiling` (8-bit), for plans before anything is read.
pub fn stored_bytes(w: usize, h: usize, tiling: Tiling, planes: Planes) -> u64 {
    let (xs, ys) = (tiling.starts(w), tiling.starts(h));
    let (pw, ph) = (tiling.side.min(w), tiling.side.min(h));
    (xs.len() * ys.len() * pw * ph * 3 * planes.count()) as u64
}

/// Image header sizes of `items` (degraded side), read in parallel without decoding.
pub fn header_sizes(items: &[FileItem]) -> Vec<Result<(usize, usize), Problem>> {
    items
        .par_iter()
        .map(|it| {
            crate::image::dimensions_of(&it.degraded)
                .map(|(w, h)| (w as usize, h as usize))
                .map_err(|e| Problem { path: it.degraded.clone(), message: format!("unreadable image header: {e}") })
        })
        .collect()
}

/// Prepare (or continue preparing, or repair) the store of `items` in `dir` and open it.
/// `definition` is recorded for people; `key` (see [`store_key`]) is what must match.
pub fn prepare(
    dir: &Path,
    key: &str,
    definition: serde_json::Value,
    items: &[FileItem],
    tiling: Tiling,
    planes: Planes,
    stop: &(dyn Fn() -> bool + Sync),
) -> anyhow::Result<(PatchStore, PrepareReport)> {
    prepare_chunked(dir, key, definition, items, tiling, planes, stop, CHUNK_BYTES)
}

/// [`prepare`] with chunks of about `chunk_bytes`.
#[allow(clippy::too_many_arguments)]
fn prepare_chunked(
    dir: &Path,
    key: &str,
    definition: serde_json::Value,
    items: &[FileItem],
    tiling: Tiling,
    planes: Planes,
    stop: &(dyn Fn() -> bool + Sync),
    chunk_bytes: u64,
) -> anyhow::Result<(PatchStore, PrepareReport)> {
    let t0 = std::time::Instant::now();
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("{}: cannot create: {e}", dir.display()))?;
    crate::util::sweep_temp(dir);
    // Group the images into chunks by their headers' sizes (deterministic: same files, same groups).
    let sizes = header_sizes(items);
    let mut groups: Vec<Vec<u32>> = vec![];
    let mut header_problems = vec![];
    let mut acc = u64::MAX;
    for (i, s) in sizes.iter().enumerate() {
        match s {
            Ok((w, h)) => {
                let b = stored_bytes(*w, *h, tiling, planes);
                if acc.saturating_add(b) > chunk_bytes {
                    groups.push(vec![]);
                    acc = 0;
                }
                acc += b;
                groups.last_mut().expect("a group").push(i as u32);
            }
            Err(p) => header_problems.push(p.clone()),
        }
    }
    let ids: Vec<String> = items.iter().map(|it| it.id.clone()).collect();
    let index_path = dir.join("index.json");
    // A finished store: reuse its chunk records when they are for the same groups.
    let previous: Option<Index> = std::fs::read(&index_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Index>(&b).ok())
        .filter(|ix| ix.key == key && ix.format == FORMAT && ix.ids == ids)
        .filter(|ix| ix.chunks.iter().all(|c| c.consistent(ix.ids.len(), ix.tiling, ix.planes).is_ok()));
    let outcomes: Vec<anyhow::Result<(ChunkRecord, Outcome, u64)>> = groups
        .par_iter()
        .enumerate()
        .map(|(k, images)| {
            let recorded = previous.as_ref().and_then(|ix| ix.chunks.get(k)).filter(|c| &c.images == images);
            build_chunk(dir, key, k, images, items, tiling, planes, recorded, stop)
        })
        .collect();
    let mut report = PrepareReport { images: items.len(), ..Default::default() };
    let mut chunks = Vec::with_capacity(groups.len());
    for o in outcomes {
        let (rec, outcome, read) = o?;
        match outcome {
            Outcome::Built => report.built += 1,
            Outcome::Reused => report.reused += 1,
            Outcome::Rebuilt => report.rebuilt += 1,
        }
        report.read_bytes += read;
        chunks.push(rec);
    }
    let index = Index { format: FORMAT, key: key.to_string(), definition, tiling, planes, ids, chunks };
    if report.built + report.rebuilt > 0 || previous.is_none() {
        write_atomic(&index_path, &serde_json::to_vec(&index)?)?;
    }
    let mut store = PatchStore::from_index(dir, index)?;
    store.problems.extend(header_problems);
    report.patches = store.len();
    report.bytes = store.index.chunks.iter().map(|c| c.bytes).sum();
    report.seconds = t0.elapsed().as_secs_f64();
    Ok((store, report))
}

enum Outcome {
    Built,
    Reused,
    Rebuilt,
}

fn chunk_paths(dir: &Path, k: usize) -> (PathBuf, PathBuf) {
    (dir.join(format!("chunk-{k:05}.bin")), dir.join(format!("chunk-{k:05}.json")))
}

/// Chunk `k` of the store: reused when its record (the index's, or its own sidecar from an
/// interrupted preparation) matches and its bytes hash to the recorded SHA-256; built (again)
/// otherwise. Returns the record, what happened and the image bytes read.
#[allow(clippy::too_many_arguments)]
fn build_chunk(
    dir: &Path,
    key: &str,
    k: usize,
    images: &[u32],
    items: &[FileItem],
    tiling: Tiling,
    planes: Planes,
    recorded: Option<&ChunkRecord>,
    stop: &(dyn Fn() -> bool + Sync),
) -> anyhow::Result<(ChunkRecord, Outcome, u64)> {
    let (bin, side) = chunk_paths(dir, k);
    let sidecar: Option<ChunkRecord> = recorded.cloned().or_else(|| {
        std::fs::read(&side)
            .ok()
            .and_then(|b| serde_json::from_slice::<ChunkRecord>(&b).ok())
            .filter(|c| c.key == key && c.images == images)
    });
    // A record that does not describe a readable chunk is rebuilt like a corrupted chunk.
    let sidecar = sidecar.filter(|r| r.consistent(items.len(), tiling, planes).is_ok());
    let had_record = sidecar.is_some();
    if let Some(rec) = sidecar {
        match verify_chunk(&bin, &rec) {
            Ok(()) => return Ok((rec, Outcome::Reused, 0)),
            Err(e) => tracing::warn!(chunk = %bin.display(), error = %e, "patch chunk does not verify; rebuilding it"),
        }
    }
    if stop() {
        anyhow::bail!("stopped");
    }
    let tmp = temp_path(&bin);
    let file = std::fs::File::create(&tmp).map_err(|e| anyhow::anyhow!("{}: cannot create: {e}", tmp.display()))?;
    let mut out = HashingWriter { w: std::io::BufWriter::with_capacity(1 << 20, file), h: Sha256::new(), n: 0 };
    let mut patches = vec![];
    let mut problems = vec![];
    let mut read = 0u64;
    let result = (|| -> anyhow::Result<()> {
        for &i in images {
            if stop() {
                anyhow::bail!("stopped");
            }
            let it = &items[i as usize];
            let mut paths = vec![&it.degraded];
            if planes == Planes::Pair {
                match &it.clean {
                    Some(c) => paths.push(c),
                    None => {
                        problems.push((it.degraded.clone(), "no ground truth for a training pair".to_string()));
                        continue;
                    }
                }
            }
            let decoded: Result<Vec<Decoded>, (PathBuf, String)> = paths
                .iter()
                .map(|p| {
                    read += std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
                    decode(p).map_err(|m| ((*p).clone(), m))
                })
                .collect();
            let decoded = match decoded {
                Ok(d) => d,
                Err(p) => {
                    problems.push(p);
                    continue;
                }
            };
            let (w, h) = (decoded[0].width, decoded[0].height);
            if let Some(c) = decoded.get(1)
                && (c.width, c.height) != (w, h)
            {
                problems.push((
                    it.degraded.clone(),
                    format!("size {w}×{h} differs from its ground truth's {}×{}", c.width, c.height),
                ));
                continue;
            }
            // One depth for both planes of a pair: 16-bit if either is.
            let bytes = decoded.iter().map(|d| d.bytes).max().unwrap_or(1);
            let gray: Vec<bool> = decoded.iter().map(|d| d.gray).collect();
            let (pw, ph) = (tiling.side.min(w), tiling.side.min(h));
            for &y in &tiling.starts(h) {
                for &x in &tiling.starts(w) {
                    let offset = out.n;
                    for d in &decoded {
                        d.write_window(&mut out, x, y, pw, ph, bytes)?;
                    }
                    patches.push(Patch {
                        image: i,
                        x: x as u32,
                        y: y as u32,
                        w: pw as u32,
                        h: ph as u32,
                        offset,
                        bytes: bytes as u8,
                        gray: if gray.contains(&true) { gray.clone() } else { vec![] },
                    });
                }
            }
        }
        out.w.flush()?;
        out.w.get_ref().sync_all()?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.context(format!("{}: cannot write patch chunk", bin.display())));
    }
    let HashingWriter { w, h, n } = out;
    drop(w);
    let rec = ChunkRecord {
        key: key.to_string(),
        images: images.to_vec(),
        patches,
        bytes: n,
        sha256: h.finalize().iter().map(|b| format!("{b:02x}")).collect(),
        problems,
    };
    std::fs::rename(&tmp, &bin).map_err(|e| anyhow::anyhow!("{}: cannot rename into place: {e}", bin.display()))?;
    write_atomic(&side, &serde_json::to_vec(&rec)?)?;
    Ok((rec, if had_record { Outcome::Rebuilt } else { Outcome::Built }, read))
}

impl ChunkRecord {
    /// Its patches as a reader will trust them: back to back from offset 0 to `bytes`, each of
    /// a known depth, inside the tiling's side, of a known image (`ids` of the store) — a
    /// record read back from disk is checked before any offset or index in it is used.
    fn consistent(&self, ids: usize, tiling: Tiling, planes: Planes) -> Result<(), String> {
        let mut end = 0u64;
        let side = tiling.side as u32;
        for (j, p) in self.patches.iter().enumerate() {
            let fits = (1..=side).contains(&p.w) && (1..=side).contains(&p.h);
            let known = (p.image as usize) < ids && p.gray.len() <= planes.count();
            if p.offset != end || !(p.bytes == 1 || p.bytes == 2) || !fits || !known {
                return Err(format!("patch {j} is inconsistent with its record"));
            }
            end = p.offset + p.plane_bytes() * planes.count() as u64;
        }
        if end != self.bytes {
            return Err("its patches do not add up to its size".into());
        }
        Ok(())
    }
}

fn verify_chunk(bin: &Path, rec: &ChunkRecord) -> Result<(), String> {
    let len = std::fs::metadata(bin).map_err(|e| format!("cannot read: {e}"))?.len();
    if len != rec.bytes {
        return Err(format!("{len} bytes, {} recorded (cut short or overwritten)", rec.bytes));
    }
    let h = crate::integrity::sha256_file(bin).map_err(|e| format!("cannot read: {e}"))?;
    if h != rec.sha256 {
        return Err("content hash mismatch (corrupted)".into());
    }
    Ok(())
}

struct HashingWriter<W: Write> {
    w: W,
    h: Sha256,
    n: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.w.write(buf)?;
        self.h.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }
}

/// A decoded file: RGB samples at its own depth.
struct Decoded {
    width: usize,
    height: usize,
    gray: bool,
    /// 1 or 2.
    bytes: usize,
    rgb8: Vec<u8>,
    rgb16: Vec<u16>,
}

fn decode(path: &Path) -> Result<Decoded, String> {
    let img = crate::image::decode(path).map_err(|e| format!("unreadable image: {e}"))?;
    let gray = !img.color().has_color();
    let sixteen = img.color().bytes_per_pixel() / img.color().channel_count().max(1) >= 2;
    let (w, h) = (img.width() as usize, img.height() as usize);
    Ok(if sixteen {
        Decoded { width: w, height: h, gray, bytes: 2, rgb8: vec![], rgb16: img.to_rgb16().into_raw() }
    } else {
        Decoded { width: w, height: h, gray, bytes: 1, rgb8: img.to_rgb8().into_raw(), rgb16: vec![] }
    })
}

impl Decoded {
    /// The `pw × ph` window at (x, y), as `bytes`-wide samples.
    fn write_window(
        &self,
        out: &mut impl Write,
        x: usize,
        y: usize,
        pw: usize,
        ph: usize,
        bytes: usize,
    ) -> std::io::Result<()> {
        let mut row = Vec::with_capacity(pw * 3 * bytes);
        for r in y..y + ph {
            row.clear();
            let (a, b) = ((r * self.width + x) * 3, (r * self.width + x + pw) * 3);
            match (self.bytes, bytes) {
                (1, 1) => row.extend_from_slice(&self.rgb8[a..b]),
                // An 8-bit partner of a 16-bit image: v · 257 maps 255 to 65535 exactly.
                (1, _) => row.extend(self.rgb8[a..b].iter().flat_map(|&v| (v as u16 * 257).to_le_bytes())),
                _ => row.extend(self.rgb16[a..b].iter().flat_map(|v| v.to_le_bytes())),
            }
            out.write_all(&row)?;
        }
        Ok(())
    }
}

impl PatchStore {
    fn from_index(dir: &Path, index: Index) -> anyhow::Result<PatchStore> {
        let mut files = Vec::with_capacity(index.chunks.len());
        let mut order = vec![];
        let mut problems = vec![];
        for (k, c) in index.chunks.iter().enumerate() {
            let (bin, _) = chunk_paths(dir, k);
            files.push(std::fs::File::open(&bin).map_err(|e| anyhow::anyhow!("{}: cannot open: {e}", bin.display()))?);
            c.consistent(index.ids.len(), index.tiling, index.planes)
                .map_err(|e| anyhow::anyhow!("{}: chunk {k}: {e}", dir.display()))?;
            order.extend((0..c.patches.len()).map(|j| (k as u32, j as u32)));
            problems.extend(c.problems.iter().map(|(p, m)| Problem { path: p.clone(), message: m.clone() }));
        }
        Ok(PatchStore { dir: dir.to_path_buf(), index, order, files, problems })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub fn planes(&self) -> Planes {
        self.index.planes
    }

    pub fn tiling(&self) -> Tiling {
        self.index.tiling
    }

    /// Bytes of the chunk files.
    pub fn bytes(&self) -> u64 {
        self.index.chunks.iter().map(|c| c.bytes).sum()
    }

    fn patch(&self, i: usize) -> (&std::fs::File, &Patch) {
        let (c, j) = self.order[i];
        (&self.files[c as usize], &self.index.chunks[c as usize].patches[j as usize])
    }

    /// Size of patch `i`.
    pub fn dims(&self, i: usize) -> (usize, usize) {
        let p = self.patch(i).1;
        (p.w as usize, p.h as usize)
    }

    /// Id of patch `i`: its image's id and position (`id@x,y`).
    pub fn id(&self, i: usize) -> String {
        let p = self.patch(i).1;
        format!("{}@{},{}", self.index.ids[p.image as usize], p.x, p.y)
    }

    /// The `w × h` window at (x, y) of patch `i`: every stored plane (degraded, then clean),
    /// read with one positioned read of the window's rows per plane.
    pub fn read(&self, i: usize, x: usize, y: usize, w: usize, h: usize) -> std::io::Result<Vec<Image>> {
        let (file, p) = self.patch(i);
        let (pw, ph, b) = (p.w as usize, p.h as usize, p.bytes as usize);
        if x + w > pw || y + h > ph {
            return Err(std::io::Error::other(format!("window {w}×{h} at ({x}, {y}) outside a {pw}×{ph} patch")));
        }
        let mut band = vec![0u8; h * pw * 3 * b];
        (0..self.index.planes.count())
            .map(|plane| {
                let at = p.offset + plane as u64 * p.plane_bytes() + (y * pw * 3 * b) as u64;
                file.read_exact_at(&mut band, at)?;
                let mut data = Vec::with_capacity(w * h * 3);
                for r in 0..h {
                    let row = &band[(r * pw + x) * 3 * b..(r * pw + x + w) * 3 * b];
                    if b == 1 {
                        data.extend(row.iter().map(|&v| v as f32 / 255.0));
                    } else {
                        data.extend(row.chunks_exact(2).map(|v| u16::from_le_bytes([v[0], v[1]]) as f32 / 65535.0));
                    }
                }
                Ok(Image { gray: p.gray.get(plane).copied().unwrap_or(false), ..Image::from_vec(w, h, data) })
            })
            .collect()
    }

    /// Patch `i` whole.
    pub fn read_whole(&self, i: usize) -> std::io::Result<Vec<Image>> {
        let (w, h) = self.dims(i);
        self.read(i, 0, 0, w, h)
    }
}

/// Open the finished store in `dir` for `key`, verifying every chunk; `None` if there is
/// none or it is incomplete or corrupted (then [`prepare`] continues or repairs it).
pub fn open_verified(dir: &Path, key: &str) -> Option<PatchStore> {
    let index: Index = serde_json::from_slice(&std::fs::read(dir.join("index.json")).ok()?).ok()?;
    if index.key != key || index.format != FORMAT {
        return None;
    }
    let ok = index.chunks.par_iter().enumerate().all(|(k, c)| verify_chunk(&chunk_paths(dir, k).0, c).is_ok());
    if !ok {
        return None;
    }
    // Used now: `cache gc --older-than-days` ages a store from its last use.
    if let Ok(f) = std::fs::File::options().append(true).open(dir.join("index.json")) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
    PatchStore::from_index(dir, index).ok()
}

/// Check a store in `dir` against its recorded hashes (`run-pipeline cache verify`): every
/// chunk the index (or, for a preparation not finished yet, a chunk's own record) lists. An
/// unfinished store is not an error: the next run continues it.
pub fn verify_store(dir: &Path) -> Result<(), String> {
    let records: Vec<(usize, ChunkRecord)> = match std::fs::read(dir.join("index.json")) {
        Ok(bytes) => {
            let index: Index =
                serde_json::from_slice(&bytes).map_err(|e| format!("{}: unreadable index: {e}", dir.display()))?;
            index.chunks.into_iter().enumerate().collect()
        }
        Err(_) => (0..)
            .map_while(|k| {
                let (bin, side) = chunk_paths(dir, k);
                (bin.exists() || side.exists()).then_some((k, side))
            })
            .filter_map(|(k, side)| {
                std::fs::read(side).ok().and_then(|b| serde_json::from_slice(&b).ok()).map(|r| (k, r))
            })
            .collect(),
    };
    let bad: Vec<String> = records
        .par_iter()
        .filter_map(|(k, r)| verify_chunk(&chunk_paths(dir, *k).0, r).err().map(|e| format!("chunk {k}: {e}")))
        .collect();
    if bad.is_empty() { Ok(()) } else { Err(format!("{}: {}", dir.display(), bad.join("; "))) }
}

/// A store as training sees it: the patches it may use (all, or `cap` spread evenly over the
/// store) and which stored plane is the clean image for a clean-only source.
#[derive(Clone, Debug)]
pub struct StoreView {
    pub store: Arc<PatchStore>,
    /// Patch indices in use, in store order.
    pub patches: Vec<u32>,
}

impl StoreView {
    /// Every patch, or `cap` of them evenly spread over the store (image order), so a cap
    /// samples every part of the dataset rather than its first images.
    pub fn new(store: Arc<PatchStore>, cap: Option<usize>) -> StoreView {
        let n = store.len();
        let patches = match cap {
            Some(c) if c < n => (0..c).map(|k| (k as u128 * n as u128 / c as u128) as u32).collect(),
            _ => (0..n as u32).collect(),
        };
        StoreView { store, patches }
    }

    pub fn len(&self) -> usize {
        self.patches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.patches.is_empty()
    }

    pub fn dims(&self, i: usize) -> (usize, usize) {
        self.store.dims(self.patches[i] as usize)
    }

    pub fn read(&self, i: usize, x: usize, y: usize, w: usize, h: usize) -> std::io::Result<Vec<Image>> {
        self.store.read(self.patches[i] as usize, x, y, w, h)
    }

    pub fn id(&self, i: usize) -> String {
        self.store.id(self.patches[i] as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rp-patches-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// An image whose every sample says where it is (x, y, channel), 8-bit.
    fn coded(w: u32, h: u32, salt: u8) -> image::RgbImage {
        image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x % 251) as u8, (y % 251) as u8, ((x / 251 + y / 251) as u8).wrapping_mul(7) ^ salt])
        })
    }

    fn tree(dir: &Path, sizes: &[(u32, u32)]) -> Vec<FileItem> {
        std::fs::create_dir_all(dir).unwrap();
        sizes
            .iter()
            .enumerate()
            .map(|(i, &(w, h))| {
                let d = dir.join(format!("noisy{i}.png"));
                let c = dir.join(format!("gt{i}.png"));
                coded(w, h, 1).save(&d).unwrap();
                coded(w, h, 2).save(&c).unwrap();
                FileItem { id: format!("img{i}"), degraded: d, clean: Some(c), meta: vec![] }
            })
            .collect()
    }

    #[test]
    fn tiling_covers_every_pixel_with_the_release_overlap() {
        let t = Tiling::release(512);
        assert_eq!(t.overlap, 128);
        assert_eq!(t.starts(512), vec![0]);
        assert_eq!(t.starts(300), vec![0]);
        assert_eq!(t.starts(1000), vec![0, 384, 488]);
        let s = t.starts(4000);
        assert_eq!(*s.last().unwrap(), 4000 - 512);
        assert!(s.windows(2).all(|p| p[1] - p[0] <= 384 && p[1] > p[0]));
        assert_eq!(t.count(4000, 3000), s.len() * t.starts(3000).len());
    }

    /// Every stored patch reads back as exactly the window of the files it came from, pairs
    /// aligned, and a window inside a patch is the same window of the image.
    #[test]
    fn store_round_trips_windows_of_the_images() {
        let dir = tmp("roundtrip");
        let items = tree(&dir.join("data"), &[(700, 530), (300, 200)]);
        let tiling = Tiling { side: 256, overlap: 64 };
        let key = store_key("fp", tiling, Planes::Pair);
        let (store, rep) =
            prepare(&dir.join("store"), &key, serde_json::json!({}), &items, tiling, Planes::Pair, &|| false).unwrap();
        assert_eq!(rep.built, 1);
        assert_eq!(store.len(), tiling.count(700, 530) + tiling.count(300, 200));
        let full: Vec<(Image, Image)> = items
            .iter()
            .map(|it| (Image::load(&it.degraded).unwrap(), Image::load(it.clean.as_ref().unwrap()).unwrap()))
            .collect();
        for i in 0..store.len() {
            let p = store.patch(i).1.clone();
            let (d, c) = &full[p.image as usize];
            let planes = store.read_whole(i).unwrap();
            assert_eq!(planes[0], d.crop(p.x as usize, p.y as usize, p.w as usize, p.h as usize), "patch {i}");
            assert_eq!(planes[1], c.crop(p.x as usize, p.y as usize, p.w as usize, p.h as usize), "patch {i}");
            let win = store.read(i, 3, 5, 17, 11).unwrap();
            assert_eq!(win[0], d.crop(p.x as usize + 3, p.y as usize + 5, 17, 11));
        }
        // The small image is one patch of its own size.
        assert!((0..store.len()).any(|i| store.dims(i) == (256, 200)));
        assert!(store.read(0, 250, 0, 10, 10).is_err(), "a window outside its patch is an error");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Preparing again reuses finished chunks (an interrupted preparation continues); a
    /// corrupted chunk is found before use and rebuilt, and the store reads as before.
    #[test]
    fn preparing_again_continues_and_repairs_a_corrupted_chunk() {
        let dir = tmp("resume");
        let items = tree(&dir.join("data"), &[(400, 300), (320, 320), (260, 300)]);
        let tiling = Tiling { side: 128, overlap: 32 };
        let key = store_key("fp", tiling, Planes::Degraded);
        let sdir = dir.join("store");
        let (a, _) = prepare(&sdir, &key, serde_json::json!({}), &items, tiling, Planes::Degraded, &|| false).unwrap();
        let first: Vec<Vec<Image>> = (0..a.len()).map(|i| a.read_whole(i).unwrap()).collect();
        assert!(open_verified(&sdir, &key).is_some());
        // Interrupted before the index was written: the chunk's sidecar says it is done.
        std::fs::remove_file(sdir.join("index.json")).unwrap();
        assert!(open_verified(&sdir, &key).is_none());
        let (_, rep) =
            prepare(&sdir, &key, serde_json::json!({}), &items, tiling, Planes::Degraded, &|| false).unwrap();
        assert_eq!((rep.built, rep.reused, rep.rebuilt), (0, 1, 0));
        // One flipped byte: detected, rebuilt, same content.
        let bin = sdir.join("chunk-00000.bin");
        let mut bytes = std::fs::read(&bin).unwrap();
        bytes[1000] ^= 0x10;
        std::fs::write(&bin, &bytes).unwrap();
        assert!(open_verified(&sdir, &key).is_none(), "a corrupted chunk is not used");
        let (b, rep) =
            prepare(&sdir, &key, serde_json::json!({}), &items, tiling, Planes::Degraded, &|| false).unwrap();
        assert_eq!((rep.built, rep.reused, rep.rebuilt), (0, 0, 1));
        assert_eq!(first, (0..b.len()).map(|i| b.read_whole(i).unwrap()).collect::<Vec<_>>());
        assert!(open_verified(&sdir, &key).is_some());
        // A chunk cut short is caught too.
        std::fs::write(&bin, &bytes[..bytes.len() / 2]).unwrap();
        assert!(open_verified(&sdir, &key).is_none());
        prepare(&sdir, &key, serde_json::json!({}), &items, tiling, Planes::Degraded, &|| false).unwrap();
        // A record pointing at an image the store does not have (its chunk hashes fine): not
        // used, no panic; preparing again rebuilds the chunk and the store reads as before.
        let index = sdir.join("index.json");
        let text = std::fs::read_to_string(&index).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["chunks"][0]["patches"][0]["image"] = 999.into();
        std::fs::write(&index, v.to_string()).unwrap();
        let side = sdir.join("chunk-00000.json");
        let mut r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&side).unwrap()).unwrap();
        r["patches"][0]["image"] = 999.into();
        std::fs::write(&side, r.to_string()).unwrap();
        assert!(open_verified(&sdir, &key).is_none());
        assert!(verify_store(&sdir).is_ok(), "the chunk's bytes are intact");
        let (c, rep) =
            prepare(&sdir, &key, serde_json::json!({}), &items, tiling, Planes::Degraded, &|| false).unwrap();
        assert_eq!((rep.built, rep.reused), (1, 0));
        assert_eq!(first, (0..c.len()).map(|i| c.read_whole(i).unwrap()).collect::<Vec<_>>());
        assert!(open_verified(&sdir, &key).is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// An interrupted preparation (stopped between images) keeps its finished chunks; the
    /// next one builds only the rest, and the store equals an uninterrupted one.
    #[test]
    fn an_interrupted_preparation_continues_where_it_stopped() {
        let dir = tmp("interrupt");
        let items = tree(&dir.join("data"), &[(200, 150), (180, 160), (150, 150), (170, 140)]);
        let tiling = Tiling { side: 64, overlap: 16 };
        let calls = std::sync::atomic::AtomicUsize::new(0);
        // One image per chunk; the stop comes after two images were stored (chunks build in
        // parallel, so it may come a little later: at least one chunk stays undone).
        let stop = || calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= 4;
        let sdir = dir.join("s");
        let (whole, _) =
            prepare_chunked(&dir.join("w"), "k", serde_json::json!({}), &items, tiling, Planes::Pair, &|| false, 1)
                .unwrap();
        assert!(prepare_chunked(&sdir, "k", serde_json::json!({}), &items, tiling, Planes::Pair, &stop, 1).is_err());
        assert!(!sdir.join("index.json").exists(), "no index for an unfinished store");
        assert!(verify_store(&sdir).is_ok(), "what was finished verifies");
        let (store, rep) =
            prepare_chunked(&sdir, "k", serde_json::json!({}), &items, tiling, Planes::Pair, &|| false, 1).unwrap();
        assert_eq!(rep.built + rep.reused, 4);
        assert!(rep.reused >= 1 && rep.built >= 1, "{rep:?}");
        assert_eq!(store.len(), whole.len());
        for i in 0..store.len() {
            assert_eq!(store.read_whole(i).unwrap(), whole.read_whole(i).unwrap());
        }
        assert!(!std::fs::read_dir(&sdir).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().contains(".tmp-")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// 16-bit files are stored at 16 bits (not rounded to 8); grayscale files are marked.
    #[test]
    fn sixteen_bit_and_gray_sources_keep_their_depth() {
        let dir = tmp("depth");
        let d = dir.join("a.png");
        let img = image::ImageBuffer::<image::Rgb<u16>, _>::from_fn(40, 30, |x, y| {
            image::Rgb([x as u16 * 1000 + 1, y as u16 * 2000 + 3, 65535])
        });
        img.save(&d).unwrap();
        let g = dir.join("b.png");
        image::GrayImage::from_fn(40, 30, |x, _| image::Luma([x as u8 * 5])).save(&g).unwrap();
        let items = vec![
            FileItem { id: "a".into(), degraded: d, clean: None, meta: vec![] },
            FileItem { id: "b".into(), degraded: g, clean: None, meta: vec![] },
        ];
        let tiling = Tiling { side: 64, overlap: 16 };
        let (store, _) =
            prepare(&dir.join("s"), "k", serde_json::json!({}), &items, tiling, Planes::Degraded, &|| false).unwrap();
        let a = &store.read_whole(0).unwrap()[0];
        assert_eq!(a.get(3, 2, 0), 3001.0 / 65535.0);
        assert_eq!(a.get(3, 2, 1), 4003.0 / 65535.0);
        let b = &store.read_whole(1).unwrap()[0];
        assert!(b.gray && !a.gray);
        assert_eq!(b.get(7, 0, 2), 35.0 / 255.0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_cap_spreads_over_the_store() {
        let dir = tmp("cap");
        let items = tree(&dir.join("data"), &[(200, 100), (200, 100)]);
        let tiling = Tiling { side: 64, overlap: 0 };
        let (store, _) =
            prepare(&dir.join("s"), "k", serde_json::json!({}), &items, tiling, Planes::Pair, &|| false).unwrap();
        let store = Arc::new(store);
        let n = store.len();
        let v = StoreView::new(store.clone(), Some(4));
        assert_eq!(v.len(), 4);
        assert!(v.patches.windows(2).all(|p| p[0] < p[1]));
        assert!(*v.patches.last().unwrap() as usize >= n / 2, "the cap reaches the second image");
        assert_eq!(StoreView::new(store, None).len(), n);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

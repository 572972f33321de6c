//! Materialised dataset shards: generated images cached on disk, keyed by what defines them.
//!
//! A shard's key is the hash of its full definition (dataset entry, split, count, size, seed,
//! degradation, generator version), so a cached shard is reused exactly when regenerating it
//! would give the same bytes, and any change to its definition makes a new one.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::degradations::DegradationParams;
use crate::image::Image;
use sha2::Digest;

use crate::util::{sha256_hex, write_atomic};

/// Version 2 adds the SHA-256 of everything after it (version-1 shards are regenerated).
const MAGIC: &[u8; 8] = b"RPSHARD2";
const HEADER: usize = 8 + 32;
/// Bump when a generator's output changes for the same definition.
pub const GENERATOR_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardItem {
    pub id: String,
    pub width: usize,
    pub height: usize,
    pub params: DegradationParams,
    /// Number of images stored for this item, in order: degraded, then clean if present.
    pub planes: usize,
    /// Which of those planes came from single-channel files ([`Image::gray`]); absent in
    /// shards written before it existed (all colour).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gray: Vec<bool>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShardManifest {
    pub definition: serde_json::Value,
    pub items: Vec<ShardItem>,
}

/// One item's images: `degraded` and, for paired data, `clean`.
#[derive(Clone, Debug)]
pub struct ShardEntry {
    pub item: ShardItem,
    pub degraded: Image,
    pub clean: Option<Image>,
}

/// The cache key of a definition.
pub(crate) fn shard_key(definition: &serde_json::Value) -> String {
    let mut v = definition.clone();
    if let serde_json::Value::Object(m) = &mut v {
        m.insert("generator_version".into(), GENERATOR_VERSION.into());
    }
    sha256_hex(serde_json::to_string(&v).expect("json").as_bytes())[..20].to_string()
}

pub(crate) fn shard_path(cache_dir: &Path, definition: &serde_json::Value) -> PathBuf {
    cache_dir.join("shards").join(format!("{}.shard", shard_key(definition)))
}

pub(crate) fn write_shard(path: &Path, definition: &serde_json::Value, entries: &[ShardEntry]) -> Result<()> {
    let items = entries
        .iter()
        .map(|e| {
            let planes = std::iter::once(&e.degraded).chain(e.clean.as_ref());
            let gray: Vec<bool> = planes.map(|im| im.gray).collect();
            ShardItem { gray: if gray.contains(&true) { gray } else { Vec::new() }, ..e.item.clone() }
        })
        .collect();
    let manifest = ShardManifest { definition: definition.clone(), items };
    let json = serde_json::to_vec(&manifest)?;
    let mut buf =
        Vec::with_capacity(16 + json.len() + entries.iter().map(|e| e.degraded.data.len() * 8).sum::<usize>());
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&[0u8; 32]);
    buf.extend_from_slice(&(json.len() as u64).to_le_bytes());
    buf.extend_from_slice(&json);
    for e in entries {
        for img in std::iter::once(&e.degraded).chain(e.clean.as_ref()) {
            for v in &img.data {
                buf.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
    let hash = sha2::Sha256::digest(&buf[HEADER..]);
    buf[8..HEADER].copy_from_slice(&hash);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    write_atomic(path, &buf)
}

/// Check a shard file's content hash without decoding it (`run-pipeline cache verify`).
pub(crate) fn verify_shard(path: &Path) -> std::result::Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    if bytes.len() < HEADER + 8 || &bytes[..8] != MAGIC {
        return Err(format!("{}: not a shard file of this version", path.display()));
    }
    if sha2::Sha256::digest(&bytes[HEADER..]).as_slice() != &bytes[8..HEADER] {
        return Err(format!("{}: content hash mismatch (corrupted or cut short)", path.display()));
    }
    Ok(())
}

pub(crate) fn read_shard(path: &Path) -> Result<(ShardManifest, Vec<ShardEntry>)> {
    let mut f = std::fs::File::open(path).with_context(|| format!("{}: cannot open shard", path.display()))?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    if bytes.len() < HEADER + 8 || &bytes[..8] != MAGIC {
        bail!("{}: not a shard file of this version", path.display());
    }
    if sha2::Sha256::digest(&bytes[HEADER..]).as_slice() != &bytes[8..HEADER] {
        bail!("{}: content hash mismatch (corrupted or cut short)", path.display());
    }
    let n = u64::from_le_bytes(bytes[HEADER..HEADER + 8].try_into().expect("8 bytes")) as usize;
    let start = HEADER + 8;
    let json =
        bytes.get(start..start.saturating_add(n)).with_context(|| format!("{}: truncated manifest", path.display()))?;
    let manifest: ShardManifest = serde_json::from_slice(json)?;
    let mut pos = start + n;
    let mut take = |w: usize, h: usize| -> Result<Image> {
        let len = w.checked_mul(h).and_then(|n| n.checked_mul(12)).unwrap_or(usize::MAX);
        let raw = bytes
            .get(pos..pos.saturating_add(len))
            .with_context(|| format!("{}: truncated image data", path.display()))?;
        pos += len;
        let data = raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        Ok(Image::from_vec(w, h, data))
    };
    let mut entries = Vec::with_capacity(manifest.items.len());
    for item in &manifest.items {
        let gray = |plane: usize| item.gray.get(plane).copied().unwrap_or(false);
        let degraded = Image { gray: gray(0), ..take(item.width, item.height)? };
        let clean =
            if item.planes > 1 { Some(Image { gray: gray(1), ..take(item.width, item.height)? }) } else { None };
        entries.push(ShardEntry { item: item.clone(), degraded, clean });
    }
    if pos != bytes.len() {
        bail!("{}: {} trailing bytes", path.display(), bytes.len() - pos);
    }
    Ok((manifest, entries))
}

/// Load the shard for `definition` from the cache, or generate and store it.
/// Returns the entries and whether they came from the cache.
pub(crate) fn materialise(
    cache_dir: &Path,
    definition: &serde_json::Value,
    generate: impl FnOnce() -> Result<Vec<ShardEntry>>,
) -> Result<(Vec<ShardEntry>, bool)> {
    let path = shard_path(cache_dir, definition);
    if path.exists() {
        match read_shard(&path) {
            Ok((m, entries)) if &m.definition == definition => return Ok((entries, true)),
            Ok(_) => tracing::warn!(path = %path.display(), "shard definition mismatch; regenerating"),
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "unreadable shard; regenerating"),
        }
    }
    let entries = generate()?;
    write_shard(&path, definition, &entries)?;
    Ok((entries, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_round_trip_and_cache_hit() {
        let dir = std::env::temp_dir().join(format!("rp-shard-{}", std::process::id()));
        let def = serde_json::json!({"dataset": "x", "count": 2});
        let mk = || {
            Ok((0..2)
                .map(|i| ShardEntry {
                    item: ShardItem {
                        id: format!("x{i}"),
                        width: 3,
                        height: 2,
                        params: DegradationParams { sigma: Some(i as f64), ..Default::default() },
                        planes: 2,
                        // The second item's clean image came from a grayscale file.
                        gray: if i == 1 { vec![false, true] } else { Vec::new() },
                    },
                    degraded: Image::from_vec(3, 2, (0..18).map(|v| v as f32 * 0.1 - 0.3).collect()),
                    clean: Some(Image { gray: i == 1, ..Image::new(3, 2) }),
                })
                .collect())
        };
        let (a, cached) = materialise(&dir, &def, mk).unwrap();
        assert!(!cached);
        let (b, cached) = materialise(&dir, &def, || panic!("must come from the cache")).unwrap();
        assert!(cached);
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.item, y.item);
            assert_eq!(x.degraded, y.degraded);
            assert_eq!(x.clean, y.clean);
        }
        // A changed definition is a different shard.
        let def2 = serde_json::json!({"dataset": "x", "count": 3});
        assert_ne!(shard_path(&dir, &def), shard_path(&dir, &def2));
        // A corrupted shard is regenerated, not trusted.
        let p = shard_path(&dir, &def);
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 5]).unwrap();
        let (_, cached) = materialise(&dir, &def, mk).unwrap();
        assert!(!cached);
        // So is one flipped bit in an image, same size (it parsed before shards carried a hash).
        let mut bytes = std::fs::read(&p).unwrap();
        let at = bytes.len() - 7;
        bytes[at] ^= 0x20;
        std::fs::write(&p, &bytes).unwrap();
        assert!(read_shard(&p).unwrap_err().to_string().contains("hash mismatch"));
        let (c, cached) = materialise(&dir, &def, mk).unwrap();
        assert!(!cached);
        assert_eq!(c[1].clean, a[1].clean);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Content hashes for everything we read back from disk (cached stages and scores, checkpoints,
//! final weights): what was written is verified before it is used, so a flipped or truncated
//! byte is detected instead of trained or scored on.
//!
//! A *sealed directory* holds `MANIFEST` (`manifest.sha256`): every regular file in it (recursively) with its
//! size and SHA-256, written last, inside the temporary directory that is then renamed into
//! place — so a directory either verifies or is not used. A *sealed file* has a sidecar
//! `<name>.sha256` written after it. Shards embed their hash in their own header
//! (`datasets::shard`).

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The manifest of a sealed directory.
pub(crate) const MANIFEST: &str = "manifest.sha256";
const SIDECAR_EXT: &str = "sha256";

/// SHA-256 of a file, streamed (weights of the paper-size networks are hundreds of MB).
pub(crate) fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Every regular file under `dir` (recursively), as paths relative to it, sorted; the manifest
/// itself excluded.
fn files_under(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let t = e.file_type()?;
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                let rel = e.path().strip_prefix(dir).expect("under dir").to_path_buf();
                if rel != Path::new(MANIFEST) {
                    out.push(rel);
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Write `dir`'s manifest: call last, before the directory is renamed into place.
pub(crate) fn seal_dir(dir: &Path) -> std::io::Result<()> {
    let mut text = String::new();
    for rel in files_under(dir)? {
        let path = dir.join(&rel);
        let size = std::fs::metadata(&path)?.len();
        text.push_str(&format!("{}  {size}  {}\n", sha256_file(&path)?, rel.display()));
    }
    std::fs::write(dir.join(MANIFEST), text)
}

/// Build the sealed directory that will become `target`: a fresh temporary sibling, filled by
/// `fill`, then sealed. On any failure (a full disk…) the temporary directory is removed, so
/// nothing partial is left; moving it into place is the caller's (replace or keep-theirs).
/// `io` turns a file-system error on the temporary directory into the caller's error.
pub(crate) fn build_sealed<E>(
    target: &Path,
    fill: impl FnOnce(&Path) -> Result<(), E>,
    io: impl Fn(&Path, std::io::Error) -> E,
) -> Result<std::path::PathBuf, E> {
    let tmp = crate::util::temp_path(target);
    let built = (|| {
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
        fill(&tmp)?;
        seal_dir(&tmp).map_err(|e| io(&tmp, e))
    })();
    match built {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

/// Mark a sealed directory as just used (its manifest's modification time), so that
/// `cache gc --older-than` removes what was not used, not what was written long ago.
pub(crate) fn touch_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::options().write(true).open(dir.join(MANIFEST)) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

/// Check a sealed directory: every file its manifest lists is there with its size and hash, and
/// no file is missing from the manifest. The error says what is wrong, naming the file.
pub(crate) fn verify_dir(dir: &Path) -> Result<(), String> {
    let manifest = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&manifest).map_err(|e| {
        format!("{}: no readable manifest ({e}); written by an older version or cut short", dir.display())
    })?;
    let mut listed = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut parts = line.splitn(3, "  ");
        let (Some(hash), Some(size), Some(rel)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("{}:{}: malformed manifest line", manifest.display(), n + 1));
        };
        let size: u64 = size.parse().map_err(|_| format!("{}:{}: malformed size", manifest.display(), n + 1))?;
        let rel = Path::new(rel);
        if rel.is_absolute() || rel.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
            return Err(format!("{}:{}: path outside the directory", manifest.display(), n + 1));
        }
        let path = dir.join(rel);
        let meta =
            std::fs::metadata(&path).map_err(|e| format!("{}: listed in the manifest but {e}", path.display()))?;
        if meta.len() != size {
            return Err(format!(
                "{}: {} bytes, the manifest says {size} (truncated or rewritten)",
                path.display(),
                meta.len()
            ));
        }
        let got = sha256_file(&path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        if got != hash {
            return Err(format!("{}: content hash mismatch (corrupted)", path.display()));
        }
        listed.push(rel.to_path_buf());
    }
    let present = files_under(dir).map_err(|e| format!("{}: cannot list: {e}", dir.display()))?;
    if let Some(extra) = present.iter().find(|p| !listed.contains(p)) {
        return Err(format!("{}: not in the manifest", dir.join(extra).display()));
    }
    Ok(())
}

fn sidecar(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!("{name}.{SIDECAR_EXT}"))
}

/// Write `path`'s sidecar hash (after the file itself is in place).
pub(crate) fn seal_file(path: &Path) -> std::io::Result<()> {
    let hash = sha256_file(path)?;
    let side = sidecar(path);
    crate::util::write_atomic(&side, format!("{hash}\n").as_bytes()).map_err(std::io::Error::other)
}

/// Whether `path` has a hash sidecar (files written before sidecars existed have none).
pub(crate) fn is_sealed(path: &Path) -> bool {
    sidecar(path).is_file()
}

/// Check a sealed file against its sidecar.
pub(crate) fn verify_file(path: &Path) -> Result<(), String> {
    let side = sidecar(path);
    let want = std::fs::read_to_string(&side)
        .map_err(|e| format!("{}: no readable hash ({e}); written by an older version or cut short", side.display()))?;
    let got = sha256_file(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    if got != want.trim() {
        return Err(format!("{}: content hash mismatch (corrupted)", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rp-integrity-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_sealed_directory_detects_flips_truncation_and_strays() {
        let d = tmp("dir");
        std::fs::write(d.join("model.bpk"), vec![7u8; 5000]).unwrap();
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/state.json"), b"{}").unwrap();
        assert!(verify_dir(&d).unwrap_err().contains("no readable manifest"));
        seal_dir(&d).unwrap();
        verify_dir(&d).unwrap();
        // One flipped bit, same size.
        let mut bytes = std::fs::read(d.join("model.bpk")).unwrap();
        bytes[1234] ^= 0x10;
        std::fs::write(d.join("model.bpk"), &bytes).unwrap();
        let err = verify_dir(&d).unwrap_err();
        assert!(err.contains("model.bpk") && err.contains("mismatch"), "{err}");
        bytes[1234] ^= 0x10;
        std::fs::write(d.join("model.bpk"), &bytes[..4000]).unwrap();
        assert!(verify_dir(&d).unwrap_err().contains("truncated"));
        std::fs::write(d.join("model.bpk"), &bytes).unwrap();
        verify_dir(&d).unwrap();
        std::fs::write(d.join("extra"), b"x").unwrap();
        assert!(verify_dir(&d).unwrap_err().contains("not in the manifest"));
        std::fs::remove_file(d.join("extra")).unwrap();
        std::fs::remove_file(d.join("sub/state.json")).unwrap();
        assert!(verify_dir(&d).unwrap_err().contains("state.json"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_sealed_file_detects_a_flip() {
        let d = tmp("file");
        let f = d.join("G.bpk");
        std::fs::write(&f, b"weights").unwrap();
        assert!(verify_file(&f).is_err(), "unsealed files do not verify");
        seal_file(&f).unwrap();
        verify_file(&f).unwrap();
        std::fs::write(&f, b"weighTs").unwrap();
        assert!(verify_file(&f).unwrap_err().contains("mismatch"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}

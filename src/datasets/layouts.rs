//! On-disk layouts of the public datasets, exactly as distributed (see `shared/DATASETS.md`):
//! scanning a root (or reading its list files) into pairs of file paths, with every problem
//! found recorded rather than panicked on.
//!
//! Scanning is separate from decoding: a layout yields [`FileItem`]s (paths + metadata), the
//! loader decodes them in parallel and checks sizes.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use walkdir::WalkDir;

/// One item of a split: the degraded input, its ground truth when the split has one, and
/// metadata columns (SIDD's scene, phone, ISO, ...).
#[derive(Clone, Debug, PartialEq)]
pub struct FileItem {
    pub id: String,
    pub degraded: PathBuf,
    pub clean: Option<PathBuf>,
    pub meta: Vec<(String, String)>,
}

/// What can be wrong with a dataset on disk.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub path: PathBuf,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

#[derive(Clone, Debug, Default)]
pub struct Scan {
    pub items: Vec<FileItem>,
    pub problems: Vec<Problem>,
}

impl Scan {
    pub(crate) fn problem(&mut self, path: impl Into<PathBuf>, message: impl Into<String>) {
        self.problems.push(Problem { path: path.into(), message: message.into() });
    }

    /// Flag duplicate ids (both occurrences after the first are reported and dropped).
    pub(crate) fn dedupe(mut self) -> Scan {
        let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut items = Vec::with_capacity(self.items.len());
        for it in std::mem::take(&mut self.items) {
            if let Some(first) = seen.get(&it.id) {
                let message = format!("duplicate id \"{}\" (first: {})", it.id, first.display());
                self.problems.push(Problem { path: it.degraded.clone(), message });
            } else {
                seen.insert(it.id.clone(), it.degraded.clone());
                items.push(it);
            }
        }
        self.items = items;
        self
    }
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg" | "bmp"))
        .unwrap_or(false)
}

pub(crate) fn stem(p: &Path) -> String {
    p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Natural ordering: digit runs compare as numbers ("img2" < "img10").
pub(crate) fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, _) => return std::cmp::Ordering::Less,
            (_, None) => return std::cmp::Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let nx = x.iter().take_while(|c| c.is_ascii_digit()).count();
                let ny = y.iter().take_while(|c| c.is_ascii_digit()).count();
                let (dx, dy) = (&x[..nx], &y[..ny]);
                let tx = dx.iter().skip_while(|&&c| c == b'0').collect::<Vec<_>>();
                let ty = dy.iter().skip_while(|&&c| c == b'0').collect::<Vec<_>>();
                let ord = tx.len().cmp(&ty.len()).then_with(|| tx.cmp(&ty)).then(nx.cmp(&ny));
                if ord != std::cmp::Ordering::Equal {
                    return ord;
                }
                x = &x[nx..];
                y = &y[ny..];
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(d);
                }
                x = &x[1..];
                y = &y[1..];
            }
        }
    }
}

/// Images (png, jpg, bmp) directly in `dir`, naturally sorted.
pub(crate) fn images_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_image(p))
        .collect();
    v.sort_by(|a, b| natural_cmp(&a.to_string_lossy(), &b.to_string_lossy()));
    Ok(v)
}

/// Sub-folders of `dir`, sorted.
pub(crate) fn subdirs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect();
    v.sort();
    Ok(v)
}

/// A path from a list file, relative to `root`; `None` when it would escape the root.
pub(crate) fn resolve_listed(root: &Path, listed: &str) -> Option<PathBuf> {
    let rel = listed.trim_start_matches("./").trim_start_matches('/');
    let rel = Path::new(rel);
    if rel.as_os_str().is_empty() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(root.join(rel))
}

/// Folder depth a clean-folder walk descends to.
pub(crate) const MAX_DEPTH: usize = 32;
/// Entries a clean-folder walk visits before it stops (a root of `/` must not walk the disk).
pub(crate) const MAX_ENTRIES: usize = 2_000_000;

/// Every image under `root` (recursive, at most `MAX_DEPTH` deep and `MAX_ENTRIES`
/// entries), for folders of clean images (DIV2K, Flickr2K, WED, BSD400, ...). Ids are paths
/// relative to the root. Symbolic links are followed only with `follow_links` (a link to a
/// file inside the root is always fine; `disk::scan` reports the rest).
pub fn clean_folder(root: &Path, follow_links: bool) -> Scan {
    let mut scan = Scan::default();
    let mut paths: Vec<PathBuf> = Vec::new();
    // One level deeper than is read, so that what lies below the limit is reported (once per
    // folder), not dropped.
    let mut too_deep = std::collections::BTreeSet::new();
    for (n, e) in WalkDir::new(root).follow_links(follow_links).max_depth(MAX_DEPTH + 1).into_iter().enumerate() {
        if n >= MAX_ENTRIES {
            scan.problem(root, format!("stopped after {MAX_ENTRIES} entries: is the root right?"));
            break;
        }
        match e {
            Ok(e) if e.depth() > MAX_DEPTH => {
                if let Some(parent) = e.path().parent()
                    && too_deep.insert(parent.to_path_buf())
                {
                    scan.problem(parent, format!("its contents are deeper than {MAX_DEPTH} folders: not read"));
                }
            }
            // A FIFO, socket or device with an image's name is never opened (reading a FIFO
            // would wait forever): reported.
            Ok(e)
                if is_image(e.path())
                    && !e.file_type().is_file()
                    && !e.file_type().is_dir()
                    && !e.path_is_symlink() =>
            {
                scan.problem(e.path(), "not a regular file (a FIFO, socket or device): not read")
            }
            Ok(e) if e.file_type().is_file() && is_image(e.path()) => paths.push(e.into_path()),
            // Not followed: kept as a path so that the scan's root check reports where it leads.
            Ok(e) if e.path_is_symlink() && is_image(e.path()) && e.path().is_file() => paths.push(e.into_path()),
            Ok(e) if !follow_links && e.path_is_symlink() && e.path().is_dir() => scan.problem(
                e.path(),
                "a symbolic link to a folder; not followed (set follow_links = true in the registry to allow)",
            ),
            Ok(_) => {}
            Err(err) => scan.problem(err.path().unwrap_or(root).to_path_buf(), format!("cannot read: {err}")),
        }
    }
    paths.sort_by(|a, b| natural_cmp(&a.to_string_lossy(), &b.to_string_lossy()));
    for p in paths {
        let id = p.strip_prefix(root).unwrap_or(&p).to_string_lossy().into_owned();
        scan.items.push(FileItem { id, degraded: p, clean: None, meta: vec![] });
    }
    scan.dedupe()
}

/// `{input,target}` folders paired by basename (Rain13K, GoPro and RealBlur re-packagings),
/// or by natural order when `by_order` (files named differently on each side).
pub fn input_target(dir: &Path, by_order: bool) -> Scan {
    let mut scan = Scan::default();
    let (inp, tgt) = (dir.join("input"), dir.join("target"));
    let (ins, tgts) = match (images_in(&inp), images_in(&tgt)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) => {
            scan.problem(inp, format!("cannot list: {e}"));
            return scan;
        }
        (_, Err(e)) => {
            scan.problem(tgt, format!("cannot list: {e}"));
            return scan;
        }
    };
    if by_order {
        if ins.len() != tgts.len() {
            scan.problem(dir, format!("{} inputs but {} targets: cannot pair by order", ins.len(), tgts.len()));
        }
        for (a, b) in ins.iter().zip(&tgts) {
            scan.items.push(FileItem { id: stem(a), degraded: a.clone(), clean: Some(b.clone()), meta: vec![] });
        }
        return scan.dedupe();
    }
    let by_name: BTreeMap<String, PathBuf> = tgts.iter().map(|p| (partner_key(&stem(p)), p.clone())).collect();
    let mut used = std::collections::BTreeSet::new();
    for a in &ins {
        let key = partner_key(&stem(a));
        match by_name.get(&key) {
            Some(b) => {
                used.insert(key.clone());
                scan.items.push(FileItem { id: stem(a), degraded: a.clone(), clean: Some(b.clone()), meta: vec![] });
            }
            None => scan.problem(a, "no target image with the same name"),
        }
    }
    for (k, b) in &by_name {
        if !used.contains(k) {
            scan.problem(b, "no input image with the same name");
        }
    }
    scan.dedupe()
}

/// JORDER naming: `rain-12` pairs with `norain-12`.
fn partner_key(stem: &str) -> String {
    stem.strip_prefix("norain-").or_else(|| stem.strip_prefix("rain-")).unwrap_or(stem).to_string()
}

/// A list of `<a> <b>` lines (SPA-Data `real_world.txt`: rainy then GT; RealBlur lists: GT
/// then blurred, so `gt_first`). Trailing spaces and a missing final newline are fine;
/// paths may start with `/` or `./` and are relative to `root`.
pub fn pair_list(root: &Path, list: &Path, gt_first: bool) -> Scan {
    let mut scan = Scan::default();
    let text = match std::fs::read_to_string(list) {
        Ok(t) => t,
        Err(e) => {
            scan.problem(list, format!("cannot read list: {e}"));
            return scan;
        }
    };
    for (n, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        let at = PathBuf::from(format!("{}:{}", list.display(), n + 1));
        if fields.len() != 2 {
            scan.problem(&at, format!("expected two paths, found {}", fields.len()));
            continue;
        }
        let (deg, gt) = if gt_first { (fields[1], fields[0]) } else { (fields[0], fields[1]) };
        let (Some(d), Some(g)) = (resolve_listed(root, deg), resolve_listed(root, gt)) else {
            scan.problem(&at, "path escapes the dataset root (.. or an absolute path outside it)");
            continue;
        };
        let mut missing = false;
        for p in [&d, &g] {
            if !p.is_file() {
                scan.problem(p, format!("listed at line {} but missing", n + 1));
                missing = true;
            }
        }
        if missing {
            continue;
        }
        let id = Path::new(deg.trim_start_matches("./").trim_start_matches('/'))
            .with_extension("")
            .to_string_lossy()
            .into_owned();
        scan.items.push(FileItem { id, degraded: d, clean: Some(g), meta: vec![] });
    }
    scan.dedupe()
}

/// SPA-Data test split: `real_test_1000/rain/NNN.png` with `real_test_1000/gt/NNNgt.png`.
pub fn spa_test(root: &Path) -> Scan {
    let mut scan = Scan::default();
    let base = root.join("real_test_1000");
    let rain = match images_in(&base.join("rain")) {
        Ok(r) => r,
        Err(e) => {
            scan.problem(base.join("rain"), format!("cannot list: {e}"));
            return scan;
        }
    };
    for r in rain {
        let s = stem(&r);
        let ext = r.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_else(|| "png".into());
        let gt = base.join("gt").join(format!("{s}gt.{ext}"));
        if gt.is_file() {
            scan.items.push(FileItem { id: s, degraded: r, clean: Some(gt), meta: vec![] });
        } else {
            scan.problem(&r, format!("missing ground truth {}", gt.display()));
        }
    }
    scan.dedupe()
}

/// GoPro original tree: `<split>/GOPRxxxx_xx_xx/{blur,sharp}/NNNNNN.png`.
pub fn gopro(root: &Path, split: &str) -> Scan {
    let mut scan = Scan::default();
    let base = root.join(split);
    let seqs = match subdirs(&base) {
        Ok(d) => d,
        Err(e) => {
            scan.problem(&base, format!("cannot list: {e}"));
            return scan;
        }
    };
    for seq in seqs {
        let blur = match images_in(&seq.join("blur")) {
            Ok(b) => b,
            Err(e) => {
                scan.problem(seq.join("blur"), format!("cannot list: {e}"));
                continue;
            }
        };
        let name = seq.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        for b in blur {
            let sharp = seq.join("sharp").join(b.file_name().unwrap_or_default());
            if sharp.is_file() {
                scan.items.push(FileItem {
                    id: format!("{name}/{}", stem(&b)),
                    degraded: b,
                    clean: Some(sharp),
                    meta: vec![],
                });
            } else {
                scan.problem(&b, "missing sharp partner");
            }
        }
    }
    scan.dedupe()
}

/// Fingerprint of a set of files: their paths, sizes and modification times.
pub(crate) fn files_fingerprint<'a>(paths: impl IntoIterator<Item = &'a Path>) -> String {
    let mut text = String::new();
    for p in paths {
        let md = std::fs::metadata(p).ok();
        let len = md.as_ref().map(|m| m.len()).unwrap_or(0);
        let mtime = md
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .unwrap_or(0);
        text.push_str(&format!("{}\t{len}\t{mtime}\n", p.display()));
    }
    crate::util::sha256_hex(text.as_bytes())[..20].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut v = vec!["img10.png", "img2.png", "img1.png", "img02.png"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, vec!["img1.png", "img2.png", "img02.png", "img10.png"]);
    }

    #[test]
    fn listed_paths_cannot_escape() {
        let root = Path::new("/data/spa");
        assert_eq!(resolve_listed(root, "/real_world/001/a.png"), Some(root.join("real_world/001/a.png")));
        assert_eq!(resolve_listed(root, "./real_world/a.png"), Some(root.join("real_world/a.png")));
        assert_eq!(resolve_listed(root, "../etc/passwd"), None);
        assert_eq!(resolve_listed(root, "real/../../x.png"), None);
    }
}

//! The dataset registry (`datasets.toml`): named datasets, their kind, root and notes.
//!
//! Pipelines refer to datasets by name only; where the bytes live (and how to get them) is the
//! registry's business, so one edit of `datasets.toml` (or an environment variable in a root)
//! moves a dataset for every pipeline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Failure, Result};

/// What a dataset is, which decides how it is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatasetKind {
    /// Embedded, procedural dead-leaves clean images (no download).
    DeadLeaves,
    /// Embedded simulated camera noise on dead-leaves images ("real-like" target).
    CameraSim,
    /// Embedded real-like rain (depth layers, haze, screen blending) on dead-leaves images.
    RainSim,
    /// Embedded real-like blur (camera shake, low light, saturation, JPEG) on dead-leaves images.
    BlurSim,
    /// Embedded clean images with the look of a simulated dataset's ground truth (`like`): its
    /// renderer with the degradation switched off, on images of its own. A synthetic source
    /// built from them shares the target's clean look, as DIV2K photos share SIDD's.
    SimClean,
    /// SIDD sRGB (Medium or Small layout).
    Sidd,
    /// SPA-Data real rain.
    SpaData,
    /// RealBlur-J / -R.
    Realblur,
    /// GoPro deblurring pairs.
    Gopro,
    /// Rain13K / Rain100 style `{input,target}` pairs.
    Rain13k,
    /// A folder of clean images (DIV2K, Flickr2K, WED, BSD400, ...).
    CleanFolder,
}

impl DatasetKind {
    pub fn is_embedded(self) -> bool {
        matches!(self, DatasetKind::DeadLeaves | DatasetKind::SimClean) || self.is_simulated()
    }

    /// An embedded real-like target: degraded images rendered from dead leaves, their ground
    /// truth rendered beside them (test splits, or the upper bound's oracle).
    pub(crate) fn is_simulated(self) -> bool {
        matches!(self, DatasetKind::CameraSim | DatasetKind::RainSim | DatasetKind::BlurSim)
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetEntry {
    pub kind: DatasetKind,
    /// Root folder; `${VAR}` and `${VAR:-default}` are expanded. Absent for embedded data.
    #[serde(default)]
    pub root: Option<String>,
    /// Layout variant inside the kind (e.g. SIDD `medium` / `small`).
    #[serde(default)]
    pub layout: Option<String>,
    #[serde(default)]
    pub splits: Vec<String>,
    /// For simulated targets: the calibrated domain ([`crate::degradations::real`];
    /// `camera_sim`: `sidd_like` or `harsh`; `rain_sim`:
    /// `spa_like` or `heavy`; `blur_sim`: `realblur_j` or `realblur_r`).
    #[serde(default)]
    pub preset: Option<crate::degradations::real::Preset>,
    /// For `sim_clean`: the simulated dataset whose clean look (noise-free render) it has.
    #[serde(default)]
    pub like: Option<String>,
    /// Follow symbolic links that lead out of `root` (default: such links are reported as
    /// problems and not read).
    #[serde(default)]
    pub follow_links: bool,
    #[serde(default)]
    pub licence: Option<String>,
    /// Where to get it.
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub notes: Option<String>,
}

impl DatasetEntry {
    /// Whether its training data is tiled into a patch store and streamed: data on disk read
    /// through a layout — not generated data, nor SIDD's MATLAB blocks (read whole).
    pub(crate) fn streams_training(&self) -> bool {
        !self.kind.is_embedded() && !self.mat_blocks()
    }

    /// SIDD's validation or benchmark blocks in MATLAB files.
    pub(crate) fn mat_blocks(&self) -> bool {
        self.kind == DatasetKind::Sidd && matches!(self.layout.as_deref(), Some("validation" | "benchmark"))
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    #[serde(default)]
    pub datasets: BTreeMap<String, DatasetEntry>,
    #[serde(skip)]
    pub path: PathBuf,
}

impl Registry {
    pub fn load(path: &Path) -> Result<Registry> {
        let text = crate::util::read_config(path)
            .map_err(|e| Failure::config(format!("{}: cannot read dataset registry: {e}", path.display())))?;
        Registry::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Registry> {
        let mut reg: Registry = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| {
                    let (line, col) = line_col(text, s.start);
                    format!(":{line}:{col}")
                })
                .unwrap_or_default();
            Failure::config(format!("{}{at}: {}", path.display(), e.message()))
        })?;
        reg.path = path.to_path_buf();
        for (name, e) in &reg.datasets {
            if let Some(raw) = &e.root
                && expand_env(raw) == Err(EnvError::Unclosed)
            {
                // The value's position: after its table's header (comments may quote it too).
                let from = text.find(&format!("[datasets.{name}]")).unwrap_or(0);
                let at = text[from..]
                    .find(raw.as_str())
                    .map(|o| line_col(text, from + o))
                    .map(|(l, c)| format!(":{l}:{c}"))
                    .unwrap_or_default();
                return Err(Failure::config(format!(
                    "{}{at}: dataset \"{name}\": root \"{raw}\": `${{` without its closing `}}`",
                    path.display()
                )));
            }
        }
        for (name, e) in &reg.datasets {
            if e.kind != DatasetKind::SimClean {
                continue;
            }
            let problem = match e.like.as_deref() {
                None => Some("a sim_clean dataset needs `like = \"<simulated dataset>\"`".to_string()),
                Some(l) => match reg.datasets.get(l) {
                    Some(t) if t.kind.is_simulated() => None,
                    Some(_) => {
                        Some(format!("like = \"{l}\" is not a simulated dataset (camera_sim, rain_sim or blur_sim)"))
                    }
                    None => Some(format!("like = \"{l}\": no dataset of that name")),
                },
            };
            if let Some(p) = problem {
                return Err(Failure::config(format!("{}: dataset \"{name}\": {p}", path.display())));
            }
        }
        Ok(reg)
    }

    pub fn get(&self, name: &str) -> Result<&DatasetEntry> {
        self.datasets.get(name).ok_or_else(|| {
            let names: Vec<&str> = self.datasets.keys().map(String::as_str).collect();
            let hint = crate::util::did_you_mean(name, &names)
                .map(|s| format!("; did you mean \"{s}\"?"))
                .unwrap_or_else(|| format!("; registered: {}", names.join(", ")));
            Failure::config(format!("{}: no dataset named \"{name}\"{hint}", self.path.display()))
        })
    }

    /// The dataset's root folder, which must exist; the error says how to get the data.
    pub fn root(&self, name: &str) -> Result<PathBuf> {
        let entry = self.get(name)?;
        let raw = entry
            .root
            .as_deref()
            .ok_or_else(|| Failure::config(format!("{}: dataset \"{name}\" has no `root`", self.path.display())))?;
        let expanded = expand_env(raw).map_err(|e| match e {
            EnvError::Unset(var) => Failure::data(format!(
                "dataset \"{name}\": root \"{raw}\" uses ${{{var}}}, which is not set; set it or edit {}",
                self.path.display()
            )),
            EnvError::Unclosed => Failure::config(format!(
                "{}: dataset \"{name}\": root \"{raw}\": `${{` without its closing `}}`",
                self.path.display()
            )),
        })?;
        let root = PathBuf::from(&expanded);
        if !root.exists() {
            let get = match entry.source.as_deref() {
                Some(source) => format!("Get it from {source}"),
                None => format!("The notes in {} say where to get it", self.path.display()),
            };
            return Err(Failure::data(format!(
                "dataset \"{name}\": root {} does not exist. {get}; then point `root` in {} (or its environment variable) at it",
                root.display(),
                self.path.display()
            )));
        }
        Ok(root)
    }
}

/// Why a root could not be expanded.
#[derive(Debug, PartialEq)]
pub(crate) enum EnvError {
    /// `${VAR}` without a default, and VAR is not set (a data problem: exit 3).
    Unset(String),
    /// `${` without its `}` (a configuration error: exit 2).
    Unclosed,
}

/// Expand `${VAR}` and `${VAR:-default}`; an unset variable without default is an error.
pub(crate) fn expand_env(s: &str) -> std::result::Result<String, EnvError> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or(EnvError::Unclosed)?;
        let body = &after[..end];
        let (var, default) = match body.split_once(":-") {
            Some((v, d)) => (v, Some(d)),
            None => (body, None),
        };
        match (std::env::var(var).ok().filter(|v| !v.is_empty()), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => return Err(EnvError::Unset(var.to_string())),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_expansion() {
        // SAFETY: test-local variable names.
        unsafe { std::env::set_var("RP_TEST_ROOT", "/data/x") };
        assert_eq!(expand_env("${RP_TEST_ROOT}/sidd").unwrap(), "/data/x/sidd");
        assert_eq!(expand_env("${RP_UNSET_VAR_Q:-data/sidd}").unwrap(), "data/sidd");
        assert_eq!(expand_env("${RP_UNSET_VAR_Q}").unwrap_err(), EnvError::Unset("RP_UNSET_VAR_Q".into()));
        assert_eq!(expand_env("${RP_UNSET_VAR_Q:-x").unwrap_err(), EnvError::Unclosed);
        let err = Registry::parse("[datasets.a]\nkind = \"clean_folder\"\nroot = \"${HOME/x\"\n", Path::new("r.toml"))
            .unwrap_err();
        assert_eq!(err.code, crate::error::ExitCode::Config);
        assert!(err.to_string().starts_with("r.toml:3:9: dataset \"a\""), "{err}");
        assert_eq!(expand_env("plain").unwrap(), "plain");
    }

    #[test]
    fn missing_root_names_dataset_path_and_source() {
        let text =
            "[datasets.sidd]\nkind = \"sidd\"\nroot = \"/nonexistent/SIDD\"\nsource = \"https://example.org/sidd\"\n";
        let reg = Registry::parse(text, Path::new("datasets.toml")).unwrap();
        let err = reg.root("sidd").unwrap_err().to_string();
        assert!(err.contains("\"sidd\""), "{err}");
        assert!(err.contains("/nonexistent/SIDD"), "{err}");
        assert!(err.contains("https://example.org/sidd"), "{err}");
    }

    #[test]
    fn sim_clean_must_name_a_simulated_dataset() {
        let base = "[datasets.cam]\nkind = \"camera_sim\"\n[datasets.dl]\nkind = \"dead_leaves\"\n";
        let ok = format!("{base}[datasets.c]\nkind = \"sim_clean\"\nlike = \"cam\"\n");
        assert!(Registry::parse(&ok, Path::new("r.toml")).unwrap().get("c").unwrap().kind.is_embedded());
        for (like, msg) in
            [("", "needs `like"), ("like = \"dl\"\n", "not a simulated"), ("like = \"x\"\n", "no dataset")]
        {
            let text = format!("{base}[datasets.c]\nkind = \"sim_clean\"\n{like}");
            let err = Registry::parse(&text, Path::new("r.toml")).unwrap_err().to_string();
            assert!(err.starts_with("r.toml: dataset \"c\"") && err.contains(msg), "{err}");
        }
    }

    #[test]
    fn bad_registry_reports_position() {
        let text = "[datasets.x]\nkind = \"dead_leaves\"\nrooot = \"a\"\n";
        let err = Registry::parse(text, Path::new("datasets.toml")).unwrap_err().to_string();
        assert!(err.starts_with("datasets.toml:3:1"), "{err}");
        assert!(err.contains("rooot"), "{err}");
    }

    #[test]
    fn shipped_registry_parses_and_has_embedded_and_real_entries() {
        let path = crate::util::repo_root().join("datasets.toml");
        let reg = Registry::load(&path).unwrap();
        for name in ["dead-leaves", "camera-sim-sidd", "sidd-medium", "spa-data", "realblur-j", "gopro", "rain13k"] {
            assert!(reg.get(name).is_ok(), "missing {name}");
        }
        assert!(reg.get("dead-leaves").unwrap().kind.is_embedded());
    }
}

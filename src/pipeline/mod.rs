//! Pipelines: loading a `pipelines/*.yaml` file into a validated [`PipelineSpec`] (profile
//! merged, `--set` overrides applied, every error at `file:line:col`), planning its stages and
//! running them.

pub mod cache;
pub(crate) mod diagnostics;
pub(crate) mod gates;
pub mod plan;
pub mod report;
pub mod restore;
pub mod run;
pub mod slurm;
pub mod spec;
pub(crate) mod stages;
pub mod yaml;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::error::{Failure, Result};
pub use spec::PipelineSpec;
use yaml::{ConfigError, Node, Value};

/// The default profile when neither the file nor the command line names one.
pub const DEFAULT_PROFILE: &str = "demo";

/// A pipeline as resolved for one run.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub path: PathBuf,
    pub profile: String,
    pub overrides: Vec<String>,
    pub spec: PipelineSpec,
    /// Profiles the file defines (for `--help`-style listings).
    pub profiles: Vec<String>,
    /// Where keys checked after loading (against the registry) are written: key path
    /// (`source.dataset`, `tests[0].dataset`, ...) → `file:line:col`.
    pub locations: std::collections::BTreeMap<String, String>,
}

impl Resolved {
    /// `key`'s position in the file, for errors found after loading.
    pub fn location(&self, key: &str) -> String {
        self.locations.get(key).cloned().unwrap_or_else(|| self.path.display().to_string())
    }
}

fn config_err(e: ConfigError) -> Failure {
    Failure::config(e.to_string())
}

/// Load `path`, select `profile` (or the file's `default_profile`, or `demo`), apply `sets`.
pub fn load(path: &Path, profile: Option<&str>, sets: &[String]) -> Result<Resolved> {
    let text = crate::util::read_config(path)
        .map_err(|e| Failure::config(format!("{}: cannot read pipeline: {e}", path.display())))?;
    let mut root = yaml::parse(&text, path).map_err(config_err)?;
    if !matches!(root.value, Value::Map(_)) {
        return Err(Failure::config(format!(
            "{}: {}: a pipeline file must be a mapping",
            root.location(),
            path.display()
        )));
    }
    let profiles_node = root.remove_key("profiles");
    let default_node = root.remove_key("default_profile");
    let default = match &default_node {
        Some(Node { value: Value::Str(s), .. }) => Some(s.clone()),
        Some(n) => {
            return Err(Failure::config(format!("{}: default_profile: expected a profile name", n.location())));
        }
        None => None,
    };
    let mut names = Vec::new();
    if let Some(p) = &profiles_node {
        match &p.value {
            Value::Map(entries) => names.extend(entries.iter().map(|(k, _)| k.name.clone())),
            Value::Null => {}
            _ => {
                return Err(Failure::config(format!(
                    "{}: profiles: expected a mapping of profile names",
                    p.location()
                )));
            }
        }
    }
    // A dangling default is an error even when -p picks another profile: the file is wrong.
    if let (Some(d), Some(n)) = (&default, &default_node)
        && d != DEFAULT_PROFILE
        && !names.contains(d)
    {
        return Err(Failure::config(format!(
            "{}: default_profile: \"{d}\" is not one of the profiles ({})",
            n.location(),
            if names.is_empty() { "none defined".to_string() } else { names.join(", ") }
        )));
    }
    let chosen = profile.map(str::to_string).or(default).unwrap_or_else(|| DEFAULT_PROFILE.to_string());
    let mut overlays: Vec<(String, Node)> = match profiles_node.map(|p| p.value) {
        Some(Value::Map(entries)) => entries.into_iter().map(|(k, v)| (k.name, v)).collect(),
        _ => vec![],
    };
    let overlay = overlays.iter().position(|(n, _)| *n == chosen).map(|i| overlays.remove(i).1);
    // The whole file is checked, not only what the chosen profile leaves in place: the base
    // values it overrides and every other profile (each as it would run, without --set).
    validate_all(&root, overlay.is_some().then_some(chosen.as_str()), &overlays)?;
    match overlay {
        Some(o) => {
            if !matches!(o.value, Value::Null) {
                root.merge(o);
            }
        }
        None if names.is_empty() && profile.is_none() => {}
        None => {
            let cands: Vec<&str> = names.iter().map(String::as_str).collect();
            let hint = crate::util::did_you_mean(&chosen, &cands)
                .map(|s| format!("; did you mean \"{s}\"?"))
                .unwrap_or_else(|| {
                    format!("; the file defines: {}", if cands.is_empty() { "none".into() } else { cands.join(", ") })
                });
            return Err(Failure::config(format!("{}: unknown profile \"{chosen}\"{hint}", path.display())));
        }
    }
    for s in sets {
        root.set_path(s).map_err(config_err)?;
    }
    let mut locations = std::collections::BTreeMap::new();
    let mut keys = vec!["source.dataset".to_string(), "target.dataset".to_string()];
    for list in ["tests", "validation.sets"] {
        keys.extend(
            (0..4096)
                .map(|i| format!("{list}[{i}]"))
                .take_while(|k| root.lookup(k).is_some())
                .map(|k| format!("{k}.dataset")),
        );
    }
    for k in keys {
        if let Some(n) = root.lookup(&k) {
            locations.insert(k, n.location());
        }
    }
    let spec = resolve(root)?;
    Ok(Resolved {
        path: path.to_path_buf(),
        profile: chosen,
        overrides: sets.to_vec(),
        spec,
        profiles: names,
        locations,
    })
}

/// Deserialise and validate a pipeline document (profile merged, overrides applied).
fn resolve(mut root: Node) -> Result<PipelineSpec> {
    // Errors in the pipeline's own sections are reported there first, not through the copies
    // the variants receive.
    let mut own = root.clone();
    own.remove_key("variants");
    yaml::from_node::<PipelineSpec>(&own).map_err(config_err)?;
    resolve_variants(&mut root);
    let spec: PipelineSpec = yaml::from_node(&root).map_err(config_err)?;
    validate(&spec, &root)?;
    Ok(spec)
}

/// Validate the base document and every profile other than `chosen` (which the caller
/// resolves with its overrides). An error names the profile and the key's file position.
fn validate_all(base: &Node, chosen: Option<&str>, others: &[(String, Node)]) -> Result<()> {
    if chosen.is_some() {
        resolve(base.clone())
            .map_err(|e| Failure::config(format!("{e} (in the base pipeline, outside any profile)")))?;
    }
    for (name, overlay) in others {
        let mut doc = base.clone();
        if !matches!(overlay.value, Value::Null) {
            doc.merge(overlay.clone());
        }
        resolve(doc).map_err(|e| Failure::config(format!("{e} (in profile \"{name}\")")))?;
    }
    Ok(())
}

/// Give every variant complete `train` and `networks` sections: the pipeline's (after profile
/// and overrides) with the variant's own keys merged over them, positions kept for errors.
fn resolve_variants(root: &mut Node) {
    let bases: Vec<(&str, Node)> =
        ["train", "networks"].into_iter().filter_map(|k| root.get(k).cloned().map(|n| (k, n))).collect();
    let Some(Node { value: Value::Map(variants), .. }) = root.get_mut("variants") else { return };
    for (_, variant) in variants.iter_mut() {
        let Value::Map(entries) = &mut variant.value else { continue };
        for (section, base) in &bases {
            let mut merged = base.clone();
            match entries.iter_mut().find(|(k, _)| k.name == *section) {
                Some((_, own)) => {
                    if !own.is_null() {
                        merged.merge(own.clone());
                    }
                    *own = merged;
                }
                None => {
                    let key = yaml::Key { name: section.to_string(), origin: variant.origin.clone() };
                    entries.push((key, merged));
                }
            }
        }
    }
}

/// Checks that need more than one key, reported at the position of the key at fault.
/// The most parameters a network may have (the paper's: 8.6 M and 62.6 M).
const MAX_PARAMS: usize = 1 << 30;

fn validate(s: &PipelineSpec, root: &Node) -> Result<()> {
    let fail = |key: &str, msg: String| -> Failure {
        // The key's position, else its nearest enclosing key's (a default that is wrong
        // together with a key the file sets).
        let mut at = None;
        let mut k = key;
        while at.is_none() {
            at = root.lookup(k).map(Node::location);
            match k.rfind('.') {
                Some(dot) => k = &k[..dot],
                None => break,
            }
        }
        let at = at.unwrap_or_else(|| "pipeline".into());
        Failure::config(format!("{at}: {key}: {msg}"))
    };
    // Names become file and directory names: never a path out of the report folder.
    crate::util::check_name(&s.name).map_err(|m| fail("name", m))?;
    for name in s.variants.keys() {
        crate::util::check_name(name).map_err(|m| {
            // A name with dots is no key path: find its key in the `variants` map itself.
            let at = root.lookup("variants").and_then(|v| v.get_key(name)).map(|k| k.origin.to_string());
            Failure::config(format!("{}: variants: {m}", at.unwrap_or_else(|| "pipeline".into())))
        })?;
    }
    let sets = s.tests.iter().enumerate().map(|(i, t)| (format!("tests[{i}].name"), t));
    let vals = s
        .validation
        .iter()
        .flat_map(|v| v.sets.iter().enumerate().map(|(i, t)| (format!("validation.sets[{i}].name"), t)));
    for (key, t) in sets.chain(vals) {
        crate::util::check_name(&t.name).map_err(|m| fail(&key, m))?;
    }
    let dir = std::path::Path::new(&s.report.dir);
    if s.report.dir.trim().is_empty() || dir.parent().is_none() {
        return Err(fail("report.dir", format!("\"{}\" cannot hold reports (not the file-system root)", s.report.dir)));
    }
    if let Some(v) = &s.validation
        && v.every == 0
    {
        return Err(fail("validation.every", "must be at least 1 (leave `validation` out to skip it)".into()));
    }
    if s.methods.is_empty() {
        return Err(fail("methods", "list at least one method (source_only, noise_da or a variant)".into()));
    }
    for name in s.variants.keys() {
        if spec::Method::from_name(name).is_some() {
            return Err(fail(
                &format!("variants.{name}"),
                format!("\"{name}\" is a built-in method; pick another name"),
            ));
        }
    }
    let mut seen = BTreeSet::new();
    for (i, m) in s.methods.iter().enumerate() {
        if s.recipe(m).is_none() {
            let mut known: Vec<&str> = spec::Method::ALL.iter().map(|m| m.name()).collect();
            known.extend(s.variants.keys().map(String::as_str));
            let hint = crate::util::did_you_mean(m, &known)
                .map(|k| format!("; did you mean \"{k}\"?"))
                .unwrap_or_else(|| format!("; known: {}", known.join(", ")));
            return Err(fail(&format!("methods[{i}]"), format!("unknown method \"{m}\"{hint}")));
        }
        if !seen.insert(m) {
            return Err(fail(&format!("methods[{i}]"), format!("{m} is listed twice")));
        }
    }
    if let Some(b) = &s.report.baseline
        && b != crate::reports::INPUT
        && !s.methods.contains(b)
    {
        return Err(fail("report.baseline", format!("\"{b}\" is not one of `methods` (or `input`)")));
    }
    if s.seeds.train.is_empty() {
        return Err(fail("seeds.train", "list at least one training seed".into()));
    }
    let checked = |section: &str, c: crate::util::Check| crate::util::within(section, c).map_err(|(k, m)| fail(&k, m));
    checked("networks.restorer", s.networks.restorer.check())?;
    // A network no machine here trains (the paper's D has 62.6 M parameters), refused from its
    // parameter count (counted without allocating) before anything else.
    let nets = std::iter::once(("networks".to_string(), &s.networks))
        .chain(s.variants.iter().map(|(name, v)| (format!("variants.{name}.networks"), &v.networks)));
    for (at, n) in nets {
        let (g, d) = crate::networks::param_counts(&n.restorer, &n.diffusion);
        for (key, count) in [("restorer", g), ("diffusion", d)] {
            if count > MAX_PARAMS {
                return Err(fail(
                    &format!("{at}.{key}"),
                    format!("{count} parameters; at most {MAX_PARAMS} (2³⁰) are supported — check the widths"),
                ));
            }
        }
    }
    let mut diffusions = vec![("networks.diffusion".to_string(), &s.networks.diffusion)];
    diffusions
        .extend(s.variants.iter().map(|(n, v)| (format!("variants.{n}.networks.diffusion"), &v.networks.diffusion)));
    for (key, d) in diffusions {
        checked(&key, d.check())?;
    }
    for (key, count) in [("source.count", s.source.count), ("target.count", s.target.count)] {
        if count == Some(0) {
            return Err(fail(key, "must be at least 1".into()));
        }
    }
    if let Some(deg) = &s.source.degradation {
        deg.validate().map_err(|m| fail("source.degradation", m))?;
    }
    if s.source.fresh == Some(true) && !s.source.degradation.as_ref().is_some_and(|d| d.redrawable()) {
        return Err(fail(
            "source.fresh",
            "only awgn and rain are drawn afresh per crop (blur needs content beyond the crop; a dataset's own pairs \
             are fixed); set it to false"
                .into(),
        ));
    }
    // The pipeline's `train` and every variant's resolved copy of it.
    let mut sections = vec![("train".to_string(), &s.train)];
    sections.extend(s.variants.iter().map(|(n, v)| (format!("variants.{n}.train"), &v.train)));
    let stride = s.networks.restorer.stride().max(if s.uses_target() { s.networks.diffusion.stride() } else { 1 });
    for (i, m) in s.methods.iter().enumerate() {
        let r = s.recipe(m).expect("checked above");
        if let Some(from) = &r.train.init_from {
            let at = if s.variants.contains_key(m) {
                format!("variants.{m}.train.init_from")
            } else {
                "train.init_from".into()
            };
            if !s.methods[..i].contains(from) {
                return Err(fail(&at, format!("\"{from}\" must be a recipe listed before {m} in `methods`")));
            }
            if s.recipe(from).is_some_and(|f| f.networks.restorer != r.networks.restorer) {
                return Err(fail(&at, format!("\"{from}\" trains a different restorer")));
            }
        }
        let at = if s.variants.contains_key(m) { format!("variants.{m}") } else { format!("methods[{i}]") };
        r.method.check(s.task, &r.train, r.networks.restorer.stride()).map_err(|msg| fail(&at, msg))?;
        if let Some(v) = s.variants.get(m) {
            checked(&format!("variants.{m}.networks.restorer"), v.networks.restorer.check())?;
        }
    }
    // Each `train` section checks its own keys (the training layer owns them); the crops
    // against the data's sizes are checked here.
    let ctx = spec::TrainContext { stride, batch_norm: s.networks.restorer.batch_norm() };
    for (at, t) in sections {
        t.check(ctx).map_err(|(k, m)| fail(&format!("{at}.{k}"), m))?;
        for (k, size) in [("source.size", s.source.size), ("target.size", s.target.size)] {
            if size < t.patch {
                return Err(fail(k, format!("images of {size}² cannot give {}² training crops ({at}.patch)", t.patch)));
            }
        }
    }
    if s.tests.is_empty() {
        return Err(fail("tests", "list at least one test set".into()));
    }
    let mut gate_methods: Vec<&str> = vec![crate::reports::INPUT];
    gate_methods.extend(s.methods.iter().map(String::as_str));
    let test_names: Vec<&str> = s.tests.iter().map(|t| t.name.as_str()).collect();
    for (i, g) in s.gates.iter().enumerate() {
        g.validate(&gate_methods, &test_names).map_err(|(key, m)| fail(&format!("gates[{i}].{key}"), m))?;
    }
    if let Some(p) = s.diagnostics.probe.as_deref()
        && p != "none"
        && !test_names.contains(&p)
    {
        return Err(fail("diagnostics.probe", format!("\"{p}\" is not a test set (known: {})", test_names.join(", "))));
    }
    if let Some(p) = &s.diagnostics.premise
        && (p.steps == 0 || p.sigmas.is_empty() || p.sigmas.iter().any(|v| !(*v >= 0.0 && v.is_finite())))
    {
        return Err(fail("diagnostics.premise", "needs steps >= 1 and non-negative sigmas".into()));
    }
    if s.tests[0].input != spec::TestInput::Degraded {
        return Err(fail("tests[0].input", "the first test set is the headline: it must score degraded inputs".into()));
    }
    let mut names = BTreeSet::new();
    for (i, test) in s.tests.iter().enumerate() {
        if !names.insert(test.name.clone()) {
            return Err(fail(&format!("tests[{i}].name"), format!("test set \"{}\" is defined twice", test.name)));
        }
        if test.size < 11 {
            return Err(fail(&format!("tests[{i}].size"), "SSIM needs images of at least 11×11".into()));
        }
        if test.count == 0 {
            return Err(fail(&format!("tests[{i}].count"), "must be at least 1".into()));
        }
        if let Some(deg) = &test.degradation {
            deg.validate().map_err(|m| fail(&format!("tests[{i}].degradation"), m))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> PathBuf {
        crate::util::repo_root().join("pipelines/denoise.yaml")
    }

    #[test]
    fn shipped_pipeline_resolves_in_every_profile() {
        let demo = load(&shipped(), None, &[]).unwrap();
        assert_eq!(demo.profile, "demo");
        assert_eq!(demo.profiles, vec!["demo", "smoke", "compare", "bench", "bench-harsh", "paper", "gpu-bench"]);
        let gpu = load(&shipped(), Some("gpu-bench"), &[]).unwrap();
        assert_eq!((gpu.spec.train.batch, gpu.spec.train.patch), (24, 128));
        assert_eq!(gpu.spec.networks.diffusion.base, 64);
        let smoke = load(&shipped(), Some("smoke"), &[]).unwrap();
        let paper = load(&shipped(), Some("paper"), &[]).unwrap();
        // Profiles merge nested maps key by key and replace lists.
        assert_eq!(smoke.spec.train.patch, 16);
        assert_eq!(smoke.spec.train.lr, demo.spec.train.lr, "unset keys keep the base value");
        assert_eq!(smoke.spec.train.noise_da.delta, 0.1);
        assert_eq!(smoke.spec.train.noise_da.ramp_steps, 4);
        assert_eq!(smoke.spec.tests.len(), 2);
        assert_eq!(smoke.spec.tests[0].size, 32);
        assert_eq!(
            paper.spec.networks.restorer,
            crate::networks::RestorerConfig::unet_release(vec![64, 128, 256, 512])
        );
        assert_eq!(paper.spec.networks.diffusion.attn_heads, 16);
        assert_eq!(paper.spec.train.lr, 1e-4);
        assert_eq!(paper.spec.target.dataset, "sidd-medium");
        // The whole training sets, tiled as the release (512², overlap 128).
        assert_eq!((paper.spec.source.count, paper.spec.source.size), (None, 512));
        assert_eq!((paper.spec.target.count, paper.spec.target.size), (None, 512));
    }

    #[test]
    fn overrides_are_typed_and_applied_after_the_profile() {
        let sets = vec![
            "train.steps=3".to_string(),
            "seeds.train=[4, 5]".to_string(),
            "train.noise_da.residual_swap=false".to_string(),
        ];
        let r = load(&shipped(), Some("smoke"), &sets).unwrap();
        assert_eq!(r.spec.train.steps, 3);
        assert_eq!(r.spec.seeds.train, vec![4, 5]);
        assert!(!r.spec.train.noise_da.residual_swap);
        assert_eq!(r.overrides, sets);
        let err = load(&shipped(), None, &["train.noise_da.delta=big".into()]).unwrap_err().to_string();
        assert!(err.starts_with("--set train.noise_da.delta=big: train.noise_da.delta: expected f64"), "{err}");
    }

    #[test]
    fn errors_inside_a_profile_point_into_the_profile() {
        let dir = std::env::temp_dir().join(format!("rp-profile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = std::fs::read_to_string(shipped()).unwrap();
        let bad = src.replacen("    train: {steps: 8, batch: 2,", "    train: {stepz: 8, batch: 2,", 1);
        let line = bad.lines().position(|l| l.contains("stepz")).unwrap() + 1;
        let col = bad.lines().nth(line - 1).unwrap().find("stepz").unwrap() + 1;
        let file = dir.join("p.yaml");
        std::fs::write(&file, bad).unwrap();
        // Choosing another profile does not hide it: the whole file is checked, the error
        // points into the smoke profile and names it...
        let err = load(&file, None, &[]).unwrap_err().to_string();
        assert!(err.contains(&format!(":{line}:{col}:")) && err.contains("profile \"smoke\""), "{err}");
        // ...and choosing the smoke profile reports it the same way.
        let err = load(&file, Some("smoke"), &[]).unwrap_err();
        assert_eq!(err.code, crate::error::ExitCode::Config);
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!(
                "{}:{line}:{col}: train.stepz: unknown key \"stepz\"; did you mean \"steps\"?",
                file.display()
            )),
            "{msg}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names_that_would_leave_the_report_folder_are_refused() {
        let text = std::fs::read_to_string(shipped()).unwrap();
        let dir = std::env::temp_dir().join(format!("rp-names-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cases = [
            (text.replacen("name: denoise", "name: ../../x", 1), "name: \"../../x\""),
            (text.replacen("name: denoise", "name: /abs", 1), "name: \"/abs\""),
            (
                text.replacen("variants:", "variants:\n  ../../../../x: {method: source_only}", 1),
                "variants: \"../../../../x\"",
            ),
        ];
        for (i, (yaml, want)) in cases.iter().enumerate() {
            assert_ne!(&text, yaml, "case {i} changed nothing");
            let f = dir.join(format!("p{i}.yaml"));
            std::fs::write(&f, yaml).unwrap();
            let err = load(&f, None, &[]).unwrap_err();
            assert_eq!(err.code, crate::error::ExitCode::Config);
            let err = err.to_string();
            assert!(err.contains(want) && err.contains(&format!("{}:", f.display())), "{err}");
        }
        let err = load(&shipped(), None, &["tests[0].name=a/b".into()]).unwrap_err().to_string();
        assert!(err.contains("tests[0].name") && err.contains("names files"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A bad value is an error wherever it is in the file: in the base where the chosen profile
    /// overrides it, or in a profile that is not chosen.
    #[test]
    fn the_whole_file_is_validated_not_only_the_chosen_profile() {
        let text = std::fs::read_to_string(shipped()).unwrap();
        let dir = std::env::temp_dir().join(format!("rp-whole-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // The smoke profile sets its own steps; the base's are broken.
        let base_bad = text.replacen("\n  steps: ", "\n  steps: 0 #", 1);
        assert_ne!(base_bad, text);
        let f = dir.join("base.yaml");
        std::fs::write(&f, &base_bad).unwrap();
        let err = load(&f, Some("smoke"), &[]).unwrap_err().to_string();
        assert!(err.contains("train.steps: must be at least 1") && err.contains("base pipeline"), "{err}");
        // A profile other than the chosen one.
        let prof_bad = text.replacen("  smoke:", "  broken:\n    seeds: {train: []}\n  smoke:", 1);
        let f = dir.join("profile.yaml");
        std::fs::write(&f, &prof_bad).unwrap();
        let err = load(&f, Some("smoke"), &[]).unwrap_err().to_string();
        assert!(err.contains("seeds.train") && err.contains("profile \"broken\""), "{err}");
        load(&shipped(), Some("smoke"), &[]).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn semantic_errors_name_the_key_position() {
        let err = load(&shipped(), None, &["train.noise_da.t_range=[10, 5]".into()]).unwrap_err().to_string();
        assert!(err.contains("train.noise_da.t_range: needs 1 <= lo <= hi <= 1000"), "{err}");
        let err = load(&shipped(), None, &["methods=[noise_da, noise_da]".into()]).unwrap_err().to_string();
        assert!(err.contains("methods[1]: noise_da is listed twice"), "{err}");
        let err = load(&shipped(), None, &["methods=[noise_dda]".into()]).unwrap_err().to_string();
        assert!(err.contains("did you mean \"noise_da\"?"), "{err}");
        let err = load(&shipped(), None, &["train.loader={workers: 2, prefetch: 0}".into()]).unwrap_err().to_string();
        assert!(err.contains("train.loader.prefetch: must be 1 to 1024 batches, got 0"), "{err}");
        // Network checks name the key within their section, positioned where the file sets it.
        let err = load(&shipped(), None, &["networks.diffusion.attn_heads=3".into()]).unwrap_err().to_string();
        assert!(err.contains("networks.diffusion.attn_heads: attn_heads must divide"), "{err}");
        let err =
            load(&shipped(), None, &["networks.restorer={arch: dncnn, depth: 1}".into()]).unwrap_err().to_string();
        assert!(err.contains("networks.restorer.depth: DnCNN needs depth >= 2"), "{err}");
        let err = load(&shipped(), None, &["train.loader.wrokers=2".into()]).unwrap_err().to_string();
        assert!(err.contains("did you mean \"workers\"?"), "{err}");
        // A count of zero is an error; no count is every patch of a dataset on disk.
        let err = load(&shipped(), None, &["target.count=0".into()]).unwrap_err().to_string();
        assert!(err.contains("target.count: must be at least 1"), "{err}");
        assert_eq!(load(&shipped(), None, &["target.count=null".into()]).unwrap().spec.target.count, None);
    }

    /// Every pipeline in pipelines/ resolves in every one of its profiles.
    #[test]
    fn every_shipped_pipeline_resolves_in_every_profile() {
        let dir = crate::util::repo_root().join("pipelines");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.extension().and_then(|x| x.to_str()) != Some("yaml") {
                continue;
            }
            let first = load(&path, None, &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for p in &first.profiles {
                load(&path, Some(p), &[]).unwrap_or_else(|e| panic!("{} --profile {p}: {e}", path.display()));
                n += 1;
            }
        }
        assert!(n >= 10, "{n} pipeline profiles");
        // The derain/deblur paper profiles drop the degradation: their sources are pairs.
        for task in ["derain", "deblur"] {
            let path = dir.join(format!("{task}.yaml"));
            let paper = load(&path, Some("paper"), &[]).unwrap();
            assert!(paper.spec.source.degradation.is_none(), "{task}");
            assert_eq!((paper.spec.source.count, paper.spec.target.count), (None, None), "{task}: all of it");
            assert!(load(&path, Some("demo"), &[]).unwrap().spec.source.degradation.is_some(), "{task}");
        }
    }

    #[test]
    fn batch_composition_is_a_recipe_switch() {
        let path = crate::util::repo_root().join("pipelines/regimes.yaml");
        let r = load(&path, None, &[]).unwrap();
        assert_eq!(r.spec.recipe("target_16").unwrap().train.noise_da.target_count(8), 16);
        assert_eq!(r.spec.recipe("noise_da").unwrap().train.noise_da.target_count(8), 8);
        let err = load(&path, None, &["train.noise_da.target_batch=0".into()]).unwrap_err().to_string();
        assert!(
            err.contains("train.noise_da.target_batch: must be a positive multiple of the devices (1), got 0"),
            "{err}"
        );
    }

    #[test]
    fn variants_merge_over_train_and_errors_point_into_them() {
        let path = crate::util::repo_root().join("pipelines/ablation.yaml");
        let r = load(&path, None, &["train.lr=1e-3".into()]).unwrap();
        let names: Vec<&str> = r.spec.recipes().iter().map(|r| r.name).collect();
        assert_eq!(names, r.spec.methods.iter().map(String::as_str).collect::<Vec<_>>());
        let diffusion = r.spec.recipe("diffusion").unwrap();
        assert_eq!(diffusion.method, spec::Method::NoiseDa);
        assert!(!diffusion.train.noise_da.channel_shuffle && !diffusion.train.noise_da.residual_swap);
        assert_eq!(diffusion.train.lr, 1e-3, "overrides of train reach the variants");
        assert_eq!(diffusion.train.steps, r.spec.train.steps);
        assert_eq!(r.spec.recipe("t_1_100").unwrap().train.noise_da.t_range, [1, 100]);
        assert_eq!(r.spec.recipe("only_real").unwrap().train.noise_da.conditions, spec::Conditions::Real);
        assert_eq!(r.spec.recipe("no_diffusion").unwrap().paper.unwrap().psnr, 26.58);
        assert_eq!(
            plan::train_changes(&r.spec.train, r.spec.recipe("shuffle").unwrap().train),
            vec!["noise_da.residual_swap=false"]
        );
        // A variant's own keys keep their positions for errors.
        let text = std::fs::read_to_string(&path).unwrap();
        let bad =
            text.replacen("train: {noise_da: {residual_swap: false}}", "train: {noise_da: {residual_swop: false}}", 1);
        let line = bad.lines().position(|l| l.contains("residual_swop")).unwrap() + 1;
        let col = bad.lines().nth(line - 1).unwrap().find("residual_swop").unwrap() + 1;
        let dir = std::env::temp_dir().join(format!("rp-variants-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.yaml");
        std::fs::write(&file, bad).unwrap();
        let err = load(&file, None, &[]).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "{}:{line}:{col}: variants.shuffle.train.noise_da.residual_swop: unknown key",
                file.display()
            )),
            "{err}"
        );
        assert!(err.contains("did you mean \"residual_swap\"?"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
        // Names: unknown ones get a suggestion among variants too; built-in names are reserved.
        let err = load(&path, None, &["methods=[shufle]".into()]).unwrap_err().to_string();
        assert!(err.contains("methods[0]: unknown method \"shufle\"; did you mean \"shuffle\"?"), "{err}");
        let err = load(&path, None, &["variants.noise_da={method: noise_da}".into()]).unwrap_err().to_string();
        assert!(err.contains("variants.noise_da: \"noise_da\" is a built-in method"), "{err}");
        let err = load(&path, None, &["variants.full.train.steps=0".into()]).unwrap_err().to_string();
        assert!(err.contains("variants.full.train.steps: must be at least 1"), "{err}");
    }
}

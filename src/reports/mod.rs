//! Reports: per-image scores, summaries, training curves, provenance.
//!
//! Per-image rows are streamed to Parquet + CSV through arrow as they are scored; summaries
//! are computed by reading the Parquet back into a [`Table`] and aggregating, the same path
//! the cross-run benchmark tables take. One table stack (arrow + parquet): polars, used for
//! one group-by, cost a second Arrow/Parquet implementation and ≈ 12 min of a cold build.

pub(crate) mod benchmark;
pub(crate) mod compare;
pub(crate) mod figures;
pub(crate) mod html;
pub mod runs;
pub(crate) mod svg;
pub(crate) mod table;

use anyhow::Result;
use serde::Serialize;

use crate::degradations::DegradationParams;
use crate::training::CurvePoint;
pub use table::{Column, Table, TableWriter};

/// Method name used for the unrestored input rows.
pub const INPUT: &str = "input";

/// One scored image.
#[derive(Clone, Debug, Serialize)]
pub struct ImageScore {
    pub run_id: String,
    pub method: String,
    /// Training seed (none for the unrestored input).
    pub seed: Option<u64>,
    pub test_set: String,
    pub dataset: String,
    pub split: String,
    pub image_id: String,
    pub protocol: String,
    pub params: DegradationParams,
    pub psnr: f64,
    pub ssim: f64,
    /// Per-channel standard SSIM where the protocol's headline SSIM is another (`sidd`).
    pub ssim_per_channel: Option<f64>,
}

/// Per-image rows as a table; `meta_keys` are the metadata columns of the whole run (fixed up
/// front so every streamed chunk has the same schema).
pub(crate) fn scores_table(rows: &[ImageScore], meta_keys: &[String]) -> Table {
    let s = |f: fn(&ImageScore) -> String| Column::Str(rows.iter().map(|r| Some(f(r))).collect());
    let mut t = Table::default();
    t.push("run_id", s(|r| r.run_id.clone()))
        .push("method", s(|r| r.method.clone()))
        .push("seed", Column::U64(rows.iter().map(|r| r.seed).collect()))
        .push("test_set", s(|r| r.test_set.clone()))
        .push("dataset", s(|r| r.dataset.clone()))
        .push("split", s(|r| r.split.clone()))
        .push("image_id", s(|r| r.image_id.clone()))
        .push("protocol", s(|r| r.protocol.clone()))
        .push("sigma", Column::F64(rows.iter().map(|r| r.params.sigma).collect()))
        .push("iso", Column::U64(rows.iter().map(|r| r.params.iso.map(u64::from)).collect()))
        .push("shot_noise", Column::F64(rows.iter().map(|r| r.params.shot).collect()))
        .push("read_noise", Column::F64(rows.iter().map(|r| r.params.read).collect()))
        .push("rain_layers", Column::U64(rows.iter().map(|r| r.params.rain_layers).collect()))
        .push("rain_density", Column::F64(rows.iter().map(|r| r.params.rain_density).collect()))
        .push("angle", Column::F64(rows.iter().map(|r| r.params.angle).collect()))
        .push("length", Column::F64(rows.iter().map(|r| r.params.length).collect()))
        .push("width", Column::F64(rows.iter().map(|r| r.params.width).collect()))
        .push("blur", Column::Str(rows.iter().map(|r| r.params.blur.clone()).collect()))
        .push("kernel_size", Column::U64(rows.iter().map(|r| r.params.kernel_size).collect()));
    for k in meta_keys {
        let col = rows.iter().map(|r| r.params.meta.iter().find(|(mk, _)| mk == k).map(|(_, v)| v.clone())).collect();
        t.push(&format!("meta_{k}"), Column::Str(col));
    }
    t.push("psnr", Column::F64(rows.iter().map(|r| Some(r.psnr)).collect()))
        .push("ssim", Column::F64(rows.iter().map(|r| Some(r.ssim)).collect()))
        .push("ssim_per_channel", Column::F64(rows.iter().map(|r| r.ssim_per_channel).collect()));
    t
}

pub(crate) fn curve_table(method: &str, seed: u64, points: &[CurvePoint], val_names: &[String]) -> Table {
    let f =
        |g: fn(&CurvePoint) -> f64| Column::F64(points.iter().map(|p| Some(g(p)).filter(|v| v.is_finite())).collect());
    let mut t = Table::default();
    t.push("method", Column::Str(points.iter().map(|_| Some(method.to_string())).collect()))
        .push("seed", Column::U64(points.iter().map(|_| Some(seed)).collect()))
        .push("step", Column::U64(points.iter().map(|p| Some(p.step as u64)).collect()))
        .push("loss", f(|p| p.loss))
        .push("charbonnier", f(|p| p.charbonnier))
        .push("mse_pos", f(|p| p.mse_pos))
        .push("mse_neg", f(|p| p.mse_neg))
        .push("hinge", f(|p| p.hinge))
        .push("hinge_active", f(|p| p.hinge_active))
        .push("alpha", f(|p| p.alpha))
        .push("domain_loss", f(|p| p.domain))
        .push("disc_loss", f(|p| p.disc))
        .push("adv_loss", f(|p| p.adv))
        .push("content_loss", f(|p| p.content))
        .push("ne2ne_rec", f(|p| p.rec))
        .push("ne2ne_reg", f(|p| p.reg))
        .push("grad_syn", f(|p| p.grad_syn))
        .push("grad_real", f(|p| p.grad_real))
        .push("elapsed_s", f(|p| p.elapsed_s));
    for (k, name) in val_names.iter().enumerate() {
        t.push(&format!("val_psnr:{name}"), Column::F64(points.iter().map(|p| p.val_psnr.get(k).copied()).collect()));
    }
    t
}

/// Mean ± std of PSNR/SSIM per test set, protocol and method (over images and seeds), with the
/// number of distinct images, of training seeds and of rows. Ordered by test set, then the
/// input, the methods in the pipeline's order and any others by name.
pub fn summarise(per_image: &Table, method_order: &[&str]) -> Result<Table> {
    let text = |name: &str| match per_image.get(name) {
        Some(Column::Str(v)) => Ok(v),
        _ => anyhow::bail!("per-image table has no text column `{name}`"),
    };
    let float = |name: &str| match per_image.get(name) {
        Some(Column::F64(v)) => Ok(v),
        _ => anyhow::bail!("per-image table has no number column `{name}`"),
    };
    let (test_set, protocol, method, image_id) =
        (text("test_set")?, text("protocol")?, text("method")?, text("image_id")?);
    let (psnr, ssim) = (float("psnr")?, float("ssim")?);
    let seed = match per_image.get("seed") {
        Some(Column::U64(v)) => v,
        _ => anyhow::bail!("per-image table has no integer column `seed`"),
    };
    let rank = |m: &str| {
        if m == INPUT { 0 } else { method_order.iter().position(|o| *o == m).map_or(method_order.len() + 1, |i| i + 1) }
    };
    #[derive(Default)]
    struct Group<'a> {
        psnr: Vec<f64>,
        ssim: Vec<f64>,
        images: std::collections::HashSet<&'a str>,
        seeds: std::collections::HashSet<u64>,
        rows: u64,
    }
    let name = |v: &Option<String>| v.clone().unwrap_or_default();
    let mut groups: std::collections::BTreeMap<(String, usize, String, String), Group> = Default::default();
    for i in 0..per_image.rows() {
        let m = name(&method[i]);
        let g = groups.entry((name(&test_set[i]), rank(&m), m, name(&protocol[i]))).or_default();
        g.psnr.extend(psnr[i]);
        g.ssim.extend(ssim[i]);
        if let Some(id) = &image_id[i] {
            g.images.insert(id);
        }
        g.seeds.extend(seed[i]);
        g.rows += 1;
    }
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    // Sample standard deviation (n − 1), undefined for a single value.
    let std = |v: &[f64]| {
        let m = mean(v)?;
        (v.len() > 1).then(|| (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1) as f64).sqrt())
    };
    let keys: Vec<_> = groups.keys().cloned().collect();
    let g: Vec<&Group> = groups.values().collect();
    let mut t = Table::default();
    t.push("test_set", Column::Str(keys.iter().map(|k| Some(k.0.clone())).collect()))
        .push("protocol", Column::Str(keys.iter().map(|k| Some(k.3.clone())).collect()))
        .push("method", Column::Str(keys.iter().map(|k| Some(k.2.clone())).collect()))
        .push("psnr_mean", Column::F64(g.iter().map(|g| mean(&g.psnr)).collect()))
        .push("psnr_std", Column::F64(g.iter().map(|g| std(&g.psnr)).collect()))
        .push("ssim_mean", Column::F64(g.iter().map(|g| mean(&g.ssim)).collect()))
        .push("ssim_std", Column::F64(g.iter().map(|g| std(&g.ssim)).collect()))
        .push("images", Column::U64(g.iter().map(|g| Some(g.images.len() as u64)).collect()))
        .push("seeds", Column::U64(g.iter().map(|g| Some(g.seeds.len() as u64)).collect()))
        .push("rows", Column::U64(g.iter().map(|g| Some(g.rows)).collect()));
    Ok(t)
}

/// The summary as an aligned text table (printed at the end of a run and saved as Markdown).
pub(crate) fn summary_markdown(summary: &Table) -> String {
    let get_s = |name: &str, i: usize| match summary.get(name) {
        Some(Column::Str(v)) => v[i].clone().unwrap_or_default(),
        _ => String::new(),
    };
    let get_f = |name: &str, i: usize| match summary.get(name) {
        Some(Column::F64(v)) => v[i],
        _ => None,
    };
    let get_u = |name: &str, i: usize| match summary.get(name) {
        Some(Column::U64(v)) => v[i].unwrap_or(0),
        _ => 0,
    };
    let pm = |m: Option<f64>, s: Option<f64>, d: usize| match (m, s) {
        (Some(m), Some(s)) if s.is_finite() => format!("{m:.d$} ± {s:.d$}"),
        (Some(m), _) => format!("{m:.d$}"),
        _ => "-".into(),
    };
    let ci = |lo: &str, hi: &str, i: usize, d: usize| match (get_f(lo, i), get_f(hi, i)) {
        (Some(l), Some(h)) => format!("[{l:.d$}, {h:.d$}]"),
        _ => "-".into(),
    };
    let header =
        ["test set", "protocol", "method", "PSNR (dB)", "PSNR 95% CI", "SSIM", "SSIM 95% CI", "images", "seeds"];
    let mut rows: Vec<Vec<String>> = Vec::new();
    for i in 0..summary.rows() {
        rows.push(vec![
            get_s("test_set", i),
            get_s("protocol", i),
            get_s("method", i),
            pm(get_f("psnr_mean", i), get_f("psnr_std", i), 2),
            ci("psnr_lo95", "psnr_hi95", i, 2),
            pm(get_f("ssim_mean", i), get_f("ssim_std", i), 4),
            ci("ssim_lo95", "ssim_hi95", i, 4),
            get_u("images", i).to_string(),
            get_u("seeds", i).to_string(),
        ]);
    }
    markdown_table(&header.map(String::from), &rows)
}

/// The share of the headroom each method takes on `test`: (method − baseline) / (bound −
/// baseline) in mean PSNR, where `bound` is the target-supervised upper bound. `None` when a
/// number is missing.
pub(crate) fn headroom_markdown(
    summary: &Table,
    test: &str,
    baseline: &str,
    bound: &str,
    methods: &[&str],
) -> Option<String> {
    let (Some(Column::Str(tests)), Some(Column::Str(names)), Some(Column::F64(psnr))) =
        (summary.get("test_set"), summary.get("method"), summary.get("psnr_mean"))
    else {
        return None;
    };
    let mean = |m: &str| {
        (0..summary.rows())
            .find(|&i| tests[i].as_deref() == Some(test) && names[i].as_deref() == Some(m))
            .and_then(|i| psnr[i])
    };
    let (b, ub) = (mean(baseline)?, mean(bound)?);
    let room = ub - b;
    let rows: Vec<Vec<String>> = methods
        .iter()
        .filter(|m| **m != baseline && **m != bound)
        .filter_map(|m| mean(m).map(|v| (m, v)))
        .map(|(m, v)| vec![m.to_string(), format!("{:+.2}", v - b), format!("{:+.0}%", 100.0 * (v - b) / room)])
        .collect();
    let mut md = format!(
        "\nHeadroom on {test}: the upper bound ({bound}, trained on the target's own pairs) is {room:+.2} dB over \
         {baseline}; the share of it each method takes (mean PSNR):\n\n"
    );
    md.push_str(&markdown_table(&["method", "Δ PSNR dB", "share of the headroom"].map(String::from), &rows));
    Some(md)
}

/// Append the bootstrap 95% intervals of the mean PSNR / SSIM (seeds, then images) to a
/// summary table, matched on (test set, method).
pub(crate) fn add_intervals(
    summary: &mut Table,
    intervals: &std::collections::BTreeMap<(String, String), (compare::Interval, compare::Interval)>,
) {
    let key = |name: &str, i: usize| match summary.get(name) {
        Some(Column::Str(v)) => v[i].clone().unwrap_or_default(),
        _ => String::new(),
    };
    let found: Vec<Option<&(compare::Interval, compare::Interval)>> =
        (0..summary.rows()).map(|i| intervals.get(&(key("test_set", i), key("method", i)))).collect();
    let col = |f: &dyn Fn(&(compare::Interval, compare::Interval)) -> f64| {
        Column::F64(found.iter().map(|x| x.map(f)).collect())
    };
    let (pl, ph, sl, sh) = (col(&|x| x.0.lo), col(&|x| x.0.hi), col(&|x| x.1.lo), col(&|x| x.1.hi));
    summary.push("psnr_lo95", pl).push("psnr_hi95", ph).push("ssim_lo95", sl).push("ssim_hi95", sh);
}

/// A training recipe as reports describe it.
#[derive(Clone, Debug)]
pub struct RecipeRow {
    pub name: String,
    /// The training algorithm (`source_only`, `noise_da`).
    pub method: String,
    /// `key=value` settings where the recipe differs from the pipeline's `train`.
    pub changes: Vec<String>,
    /// The paper's (PSNR, SSIM, source) for this configuration, on the paper's data.
    pub paper: Option<(f64, Option<f64>, String)>,
}

/// The recipes of a run as a table (recipes.parquet / .csv).
pub(crate) fn recipes_table(recipes: &[RecipeRow]) -> Table {
    let mut t = Table::default();
    let s = |f: &dyn Fn(&RecipeRow) -> Option<String>| Column::Str(recipes.iter().map(f).collect());
    t.push("recipe", s(&|r| Some(r.name.clone())));
    t.push("method", s(&|r| Some(r.method.clone())));
    t.push("changes", s(&|r| Some(r.changes.join("; "))));
    t.push("paper_psnr", Column::F64(recipes.iter().map(|r| r.paper.as_ref().map(|p| p.0)).collect()));
    t.push("paper_ssim", Column::F64(recipes.iter().map(|r| r.paper.as_ref().and_then(|p| p.1)).collect()));
    t.push("paper_source", s(&|r| r.paper.as_ref().map(|p| p.2.clone())));
    t
}

/// One Markdown table with a row per recipe (in pipeline order) and, per test set, our mean
/// PSNR / SSIM, next to the paper's number where the pipeline gives one: the ablation layout.
pub(crate) fn recipes_markdown(summary: &Table, recipes: &[RecipeRow]) -> String {
    let strs = |name: &str| match summary.get(name) {
        Some(Column::Str(v)) => v.clone(),
        _ => vec![None; summary.rows()],
    };
    let f64s = |name: &str| match summary.get(name) {
        Some(Column::F64(v)) => v.clone(),
        _ => vec![None; summary.rows()],
    };
    let (tests, methods, psnr, ssim) = (strs("test_set"), strs("method"), f64s("psnr_mean"), f64s("ssim_mean"));
    let mut test_names: Vec<String> = Vec::new();
    for t in tests.iter().flatten() {
        if !test_names.contains(t) {
            test_names.push(t.clone());
        }
    }
    let cell = |test: &str, method: &str| {
        (0..summary.rows())
            .find(|&i| tests[i].as_deref() == Some(test) && methods[i].as_deref() == Some(method))
            .map(|i| format!("{:.2} / {:.4}", psnr[i].unwrap_or(f64::NAN), ssim[i].unwrap_or(f64::NAN)))
            .unwrap_or_else(|| "-".into())
    };
    let mut header = vec!["recipe".to_string(), "method".into(), "changes".into()];
    header.extend(test_names.iter().map(|t| format!("{t} PSNR / SSIM")));
    header.push("paper PSNR / SSIM (their data)".into());
    let mut rows = vec![];
    let mut input = vec![INPUT.to_string(), "-".into(), "unrestored".into()];
    input.extend(test_names.iter().map(|t| cell(t, INPUT)));
    input.push("-".into());
    rows.push(input);
    for r in recipes {
        let mut row = vec![
            r.name.clone(),
            r.method.clone(),
            if r.changes.is_empty() { "-".into() } else { r.changes.join(", ") },
        ];
        row.extend(test_names.iter().map(|t| cell(t, &r.name)));
        row.push(match &r.paper {
            Some((p, Some(s), src)) => format!("{p:.2} / {s:.4} ({src})"),
            Some((p, None, src)) => format!("{p:.2} ({src})"),
            None => "-".into(),
        });
        rows.push(row);
    }
    markdown_table(&header, &rows)
}

/// A padded Markdown table.
pub(crate) fn markdown_table(header: &[String], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|j| rows.iter().map(|r| r[j].chars().count()).chain([header[j].chars().count()]).max().unwrap_or(0))
        .collect();
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        format!("| {} |", padded.join(" | "))
    };
    let mut out = vec![line(header)];
    out.push(format!("|{}|", widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("|")));
    out.extend(rows.iter().map(|r| line(r)));
    out.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(method: &str, seed: Option<u64>, id: &str, psnr: f64) -> ImageScore {
        ImageScore {
            run_id: "r".into(),
            method: method.into(),
            seed,
            test_set: "t".into(),
            dataset: "d".into(),
            split: "test".into(),
            image_id: id.into(),
            protocol: "rgb".into(),
            params: DegradationParams { iso: Some(1600), ..Default::default() },
            psnr,
            ssim: psnr / 100.0,
            ssim_per_channel: None,
        }
    }

    #[test]
    fn parquet_and_csv_round_trip_streamed_chunks_and_summary() {
        let dir = std::env::temp_dir().join(format!("rp-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let stem = dir.join("per_image");
        let a = vec![score(INPUT, None, "a", 20.0), score(INPUT, None, "b", 22.0)];
        let b = vec![score("noise_da", Some(0), "a", 30.123456789012), score("noise_da", Some(0), "b", 32.0)];
        let mut w = TableWriter::create(&stem, &scores_table(&a, &[])).unwrap();
        w.append(&scores_table(&a, &[])).unwrap();
        // Nothing is visible before the writer finishes.
        assert!(!stem.with_extension("parquet").exists());
        w.append(&scores_table(&b, &[])).unwrap();
        w.finish().unwrap();
        let mut left: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(left, ["per_image.csv", "per_image.parquet", "per_image.parquet.sha256"], "only the final files");

        let back = Table::read_parquet(&stem.with_extension("parquet")).unwrap();
        assert_eq!(back.rows(), 4);
        let mut want = scores_table(&a, &[]);
        want.append_rows(scores_table(&b, &[]));
        assert_eq!(back, want);

        let csv_text = std::fs::read_to_string(stem.with_extension("csv")).unwrap();
        let mut rdr = csv::Reader::from_reader(csv_text.as_bytes());
        let psnr_col = rdr.headers().unwrap().iter().position(|h| h == "psnr").unwrap();
        let psnrs: Vec<f64> = rdr.records().map(|r| r.unwrap()[psnr_col].parse().unwrap()).collect();
        assert_eq!(psnrs, vec![20.0, 22.0, 30.123456789012, 32.0]);

        let s = summarise(&back, &[]).unwrap();
        assert_eq!(s.rows(), 2);
        assert_eq!(s.get("method"), Some(&Column::Str(vec![Some(INPUT.into()), Some("noise_da".into())])));
        match s.get("psnr_mean") {
            Some(Column::F64(v)) => {
                assert!((v[0].unwrap() - 21.0).abs() < 1e-12);
                assert!((v[1].unwrap() - 31.061728394506).abs() < 1e-9);
            }
            other => panic!("{other:?}"),
        }
        match s.get("psnr_std") {
            Some(Column::F64(v)) => assert!((v[0].unwrap() - 2f64.sqrt()).abs() < 1e-12),
            other => panic!("{other:?}"),
        }
        // The unrestored input has no training seed.
        assert_eq!(s.get("seeds"), Some(&Column::U64(vec![Some(0), Some(1)])));
        let md = summary_markdown(&s);
        assert!(md.contains("21.00 ± 1.41"), "{md}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Recipes keep the pipeline's order (not alphabetical) and the ablation table puts each
    /// recipe's scores beside the paper's number.
    #[test]
    fn headroom_shares_are_relative_to_the_upper_bound() {
        let strs = |v: &[&str]| Column::Str(v.iter().map(|s| Some(s.to_string())).collect());
        let mut t = Table::default();
        t.push("test_set", strs(&["t", "t", "t", "t", "u"]));
        t.push("method", strs(&["input", "so", "da", "ub", "da"]));
        t.push("psnr_mean", Column::F64(vec![Some(20.0), Some(25.0), Some(25.5), Some(27.0), Some(99.0)]));
        let md = headroom_markdown(&t, "t", "so", "ub", &["so", "da", "ub"]).unwrap();
        assert!(md.contains("is +2.00 dB over so"), "{md}");
        assert!(md.contains("| da ") && md.contains("+0.50") && md.contains("+25%"), "{md}");
        assert!(headroom_markdown(&t, "t", "so", "missing", &["da"]).is_none());
    }

    #[test]
    fn recipes_in_pipeline_order_with_the_papers_numbers() {
        let rows =
            vec![score(INPUT, None, "a", 20.0), score("zeta", Some(0), "a", 25.0), score("alpha", Some(0), "a", 24.0)];
        let table = scores_table(&rows, &[]);
        let dir = std::env::temp_dir().join(format!("rp-recipes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        table.write(&dir.join("per_image")).unwrap();
        let back = Table::read_parquet(&dir.join("per_image.parquet")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let s = summarise(&back, &["zeta", "alpha"]).unwrap();
        assert_eq!(
            s.get("method"),
            Some(&Column::Str(vec![Some(INPUT.into()), Some("zeta".into()), Some("alpha".into())]))
        );
        let recipes = vec![
            RecipeRow { name: "zeta".into(), method: "source_only".into(), changes: vec![], paper: None },
            RecipeRow {
                name: "alpha".into(),
                method: "noise_da".into(),
                changes: vec!["noise_da.t_range=[1,100]".into()],
                paper: Some((16.8, None, "Table 4, SIDD".into())),
            },
        ];
        let md = recipes_markdown(&s, &recipes);
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(lines.len(), 5, "{md}");
        assert!(lines[2].starts_with("| input ") && lines[2].contains("20.00 /"), "{md}");
        assert!(lines[3].starts_with("| zeta ") && lines[3].contains("25.00 /"), "{md}");
        assert!(lines[4].contains("noise_da.t_range=[1,100]") && lines[4].contains("24.00 /"), "{md}");
        assert!(lines[4].contains("16.80 (Table 4, SIDD)"), "{md}");
        assert_eq!(recipes_table(&recipes).rows(), 2);
    }
}

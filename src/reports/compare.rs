//! Paired comparisons: how much a method changes PSNR / SSIM against a baseline on the very same
//! images, with bootstrap 95% confidence intervals.
//!
//! Rows are paired on (test set, seed, image). The point estimate is the mean difference over
//! seeds and images; the interval comes from a two-level percentile bootstrap that resamples the
//! seeds and then the images, so it carries both the seed-to-seed and the image-to-image
//! variation (with one seed it is the usual image bootstrap). Wins and losses count images
//! whose seed-averaged difference is above / below zero.

use std::collections::{BTreeMap, BTreeSet};

use super::{Column, INPUT, Table};
use crate::rng::Rng;

/// Bootstrap resamples per interval.
pub const RESAMPLES: usize = 2000;

/// A mean difference with its 95% interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    pub test_set: String,
    pub method: String,
    pub baseline: String,
    pub seeds: usize,
    pub images: usize,
    pub psnr: Interval,
    pub ssim: Interval,
    /// Standard deviation over seeds of the per-seed mean ΔPSNR (NaN with one seed).
    pub psnr_seed_std: f64,
    pub wins: usize,
    pub losses: usize,
}

/// Scores of one (test set, method): seed → image → (PSNR, SSIM).
type Scores = BTreeMap<Option<u64>, BTreeMap<String, (f64, f64)>>;

/// Per-image rows grouped by (test set, method), then seed and image.
fn grouped(per_image: &Table) -> BTreeMap<(String, String), Scores> {
    let (strs, floats) = (|n: &str| per_image.texts(n), |n: &str| per_image.floats(n));
    let seeds: Vec<Option<u64>> = match per_image.get("seed") {
        Some(Column::U64(v)) => v.clone(),
        _ => vec![None; per_image.rows()],
    };
    let (methods, tests, ids, psnr, ssim) =
        (strs("method"), strs("test_set"), strs("image_id"), floats("psnr"), floats("ssim"));
    let mut by: BTreeMap<(String, String), Scores> = BTreeMap::new();
    for i in 0..per_image.rows() {
        by.entry((tests[i].clone(), methods[i].clone()))
            .or_default()
            .entry(seeds[i])
            .or_default()
            .insert(ids[i].clone(), (psnr[i], ssim[i]));
    }
    by
}

/// Differences of the methods against `baseline` (which must share seeds and images with
/// them; `input` rows, having no seed, pair with every seed). `order` sorts the methods.
/// The columns pairing needs (test set, image, seed, method, PSNR, SSIM) of a run's per-image
/// table, methods renamed `<run_id>/<method>`: runs written by different versions (other
/// columns) line up, and methods of different runs stay apart.
pub(crate) fn relabelled(per_image: &Table, run_id: &str) -> Table {
    let mut t = Table::default();
    for name in ["test_set", "image_id", "seed", "psnr", "ssim"] {
        if let Some(c) = per_image.get(name) {
            t.push(name, c.clone());
        }
    }
    if let Some(Column::Str(m)) = per_image.get("method") {
        t.push("method", Column::Str(m.iter().map(|m| m.as_ref().map(|m| format!("{run_id}/{m}"))).collect()));
    }
    t
}

/// Distinct method labels of a per-image table, in order of appearance.
pub fn methods(per_image: &Table) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if let Some(Column::Str(m)) = per_image.get("method") {
        for m in m.iter().flatten() {
            if !out.contains(m) {
                out.push(m.clone());
            }
        }
    }
    out
}

pub fn compare(per_image: &Table, baseline: &str, order: &[&str]) -> Vec<Comparison> {
    let by = grouped(per_image);
    let rank = |m: &str| order.iter().position(|o| *o == m).unwrap_or(order.len());
    let mut keys: Vec<(String, String)> =
        by.keys().filter(|(_, m)| m != baseline && m != INPUT && !m.ends_with(&format!("/{INPUT}"))).cloned().collect();
    keys.sort_by(|a, b| a.0.cmp(&b.0).then(rank(&a.1).cmp(&rank(&b.1))).then(a.1.cmp(&b.1)));
    let mut out = Vec::new();
    for (test, method) in keys {
        let Some(base) = by.get(&(test.clone(), baseline.to_string())) else { continue };
        let this = &by[&(test.clone(), method.clone())];
        // d[s][i] = (Δpsnr, Δssim) for seeds and images present on both sides.
        let mut d: Vec<Vec<(f64, f64)>> = Vec::new();
        let images: BTreeSet<&String> = this.values().flat_map(|m| m.keys()).collect();
        let images: Vec<&String> = images
            .into_iter()
            .filter(|id| {
                this.iter().all(|(s, m)| {
                    m.contains_key(*id) && base.get(s).or_else(|| base.get(&None)).is_some_and(|b| b.contains_key(*id))
                })
            })
            .collect();
        for (s, m) in this {
            let Some(b) = base.get(s).or_else(|| base.get(&None)) else { continue };
            d.push(images.iter().map(|id| (m[*id].0 - b[*id].0, m[*id].1 - b[*id].1)).collect());
        }
        if d.is_empty() || images.is_empty() {
            continue;
        }
        let (ns, ni) = (d.len(), images.len());
        let per_image_mean: Vec<f64> = (0..ni).map(|i| d.iter().map(|row| row[i].0).sum::<f64>() / ns as f64).collect();
        let seed_means: Vec<f64> = d.iter().map(|row| row.iter().map(|x| x.0).sum::<f64>() / ni as f64).collect();
        let seed_std = if ns > 1 {
            let m = seed_means.iter().sum::<f64>() / ns as f64;
            (seed_means.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (ns - 1) as f64).sqrt()
        } else {
            f64::NAN
        };
        let (psnr_ci, ssim_ci) = bootstrap(&d);
        out.push(Comparison {
            test_set: test,
            method,
            baseline: baseline.to_string(),
            seeds: ns,
            images: ni,
            psnr: psnr_ci,
            ssim: ssim_ci,
            psnr_seed_std: seed_std,
            wins: per_image_mean.iter().filter(|&&x| x > 0.0).count(),
            losses: per_image_mean.iter().filter(|&&x| x < 0.0).count(),
        });
    }
    out
}

/// Mean PSNR and SSIM of every (test set, method) with the same two-level bootstrap interval
/// (seeds, then images): how precisely the runs pin each number down.
pub(crate) fn mean_intervals(per_image: &Table) -> BTreeMap<(String, String), (Interval, Interval)> {
    let by = grouped(per_image);
    by.into_iter()
        .filter_map(|(key, per_seed)| {
            let images: Vec<String> = per_seed.values().next()?.keys().cloned().collect();
            let rows: Vec<Vec<(f64, f64)>> = per_seed
                .values()
                .filter(|m| images.iter().all(|id| m.contains_key(id)))
                .map(|m| images.iter().map(|id| m[id]).collect())
                .collect();
            (!rows.is_empty() && !images.is_empty()).then(|| (key, bootstrap(&rows)))
        })
        .collect()
}

/// Two-level percentile bootstrap of the mean of `d[seed][image]` (both components).
fn bootstrap(d: &[Vec<(f64, f64)>]) -> (Interval, Interval) {
    let (ns, ni) = (d.len(), d[0].len());
    let total = (ns * ni) as f64;
    let mean_p = d.iter().flatten().map(|x| x.0).sum::<f64>() / total;
    let mean_s = d.iter().flatten().map(|x| x.1).sum::<f64>() / total;
    let mut rng = Rng::derive(7, "bootstrap", &[]);
    let (mut bp, mut bs) = (Vec::with_capacity(RESAMPLES), Vec::with_capacity(RESAMPLES));
    for _ in 0..RESAMPLES {
        let ss: Vec<usize> = (0..ns).map(|_| rng.below(ns as u64) as usize).collect();
        let ii: Vec<usize> = (0..ni).map(|_| rng.below(ni as u64) as usize).collect();
        let (mut p, mut q) = (0.0, 0.0);
        for &s in &ss {
            for &i in &ii {
                p += d[s][i].0;
                q += d[s][i].1;
            }
        }
        bp.push(p / total);
        bs.push(q / total);
    }
    (interval(mean_p, bp), interval(mean_s, bs))
}

fn interval(mean: f64, mut boots: Vec<f64>) -> Interval {
    boots.sort_by(f64::total_cmp);
    let at = |q: f64| boots[((q * (boots.len() - 1) as f64).round() as usize).min(boots.len() - 1)];
    Interval { mean, lo: at(0.025), hi: at(0.975) }
}

/// The comparisons as a table (comparisons.parquet / .csv).
pub(crate) fn comparisons_table(rows: &[Comparison]) -> Table {
    let mut t = Table::default();
    let s = |f: &dyn Fn(&Comparison) -> String| Column::Str(rows.iter().map(|r| Some(f(r))).collect());
    let u = |f: &dyn Fn(&Comparison) -> usize| Column::U64(rows.iter().map(|r| Some(f(r) as u64)).collect());
    let x = |f: &dyn Fn(&Comparison) -> f64| {
        Column::F64(rows.iter().map(|r| Some(f(r)).filter(|v| v.is_finite())).collect())
    };
    t.push("test_set", s(&|r| r.test_set.clone()))
        .push("method", s(&|r| r.method.clone()))
        .push("baseline", s(&|r| r.baseline.clone()))
        .push("seeds", u(&|r| r.seeds))
        .push("images", u(&|r| r.images))
        .push("delta_psnr", x(&|r| r.psnr.mean))
        .push("delta_psnr_lo95", x(&|r| r.psnr.lo))
        .push("delta_psnr_hi95", x(&|r| r.psnr.hi))
        .push("delta_psnr_seed_std", x(&|r| r.psnr_seed_std))
        .push("delta_ssim", x(&|r| r.ssim.mean))
        .push("delta_ssim_lo95", x(&|r| r.ssim.lo))
        .push("delta_ssim_hi95", x(&|r| r.ssim.hi))
        .push("wins", u(&|r| r.wins))
        .push("losses", u(&|r| r.losses));
    t
}

/// Markdown: one row per (test set, method) with ΔPSNR / ΔSSIM and their intervals.
pub(crate) fn comparisons_markdown(rows: &[Comparison]) -> String {
    let header: Vec<String> =
        ["test set", "method", "vs", "ΔPSNR dB [95% CI]", "ΔSSIM [95% CI]", "wins / losses", "seeds × images"]
            .map(String::from)
            .to_vec();
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.test_set.clone(),
                r.method.clone(),
                r.baseline.clone(),
                format!("{:+.3} [{:+.3}, {:+.3}]", r.psnr.mean, r.psnr.lo, r.psnr.hi),
                format!("{:+.4} [{:+.4}, {:+.4}]", r.ssim.mean, r.ssim.lo, r.ssim.hi),
                format!("{} / {}", r.wins, r.losses),
                format!("{} × {}", r.seeds, r.images),
            ]
        })
        .collect();
    super::markdown_table(&header, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rows: &[(&str, Option<u64>, &str, f64)]) -> Table {
        let mut t = Table::default();
        t.push("method", Column::Str(rows.iter().map(|r| Some(r.0.to_string())).collect()))
            .push("seed", Column::U64(rows.iter().map(|r| r.1).collect()))
            .push("test_set", Column::Str(rows.iter().map(|_| Some("t".to_string())).collect()))
            .push("image_id", Column::Str(rows.iter().map(|r| Some(r.2.to_string())).collect()))
            .push("psnr", Column::F64(rows.iter().map(|r| Some(r.3)).collect()))
            .push("ssim", Column::F64(rows.iter().map(|r| Some(r.3 / 100.0)).collect()));
        t
    }

    /// A constant +1 dB everywhere gives exactly +1 with a zero-width interval; mixed signs give
    /// an interval around the mean that contains it; wins/losses count seed-averaged images.
    #[test]
    fn paired_differences_and_intervals() {
        let mut rows = vec![];
        for s in [0, 1, 2] {
            for (i, base) in [20.0, 25.0, 30.0, 22.0].iter().enumerate() {
                let id = format!("im{i}");
                rows.push(("source_only", Some(s), id.clone(), *base));
                rows.push(("plus_one", Some(s), id.clone(), base + 1.0));
                // +2 on two images, −1 on the others, plus seed noise.
                let d = if i < 2 { 2.0 } else { -1.0 } + 0.1 * s as f64;
                rows.push(("mixed", Some(s), id.clone(), base + d));
            }
        }
        for i in 0..4 {
            rows.push((INPUT, None, format!("im{i}"), 15.0));
        }
        let rows: Vec<(&str, Option<u64>, &str, f64)> =
            rows.iter().map(|(m, s, id, p)| (*m, *s, id.as_str(), *p)).collect();
        let c = compare(&table(&rows), "source_only", &["source_only", "plus_one", "mixed"]);
        assert_eq!(c.iter().map(|c| c.method.as_str()).collect::<Vec<_>>(), vec!["plus_one", "mixed"]);
        let one = &c[0];
        assert_eq!((one.seeds, one.images, one.wins, one.losses), (3, 4, 4, 0));
        assert!(
            (one.psnr.mean - 1.0).abs() < 1e-12
                && (one.psnr.lo - 1.0).abs() < 1e-12
                && (one.psnr.hi - 1.0).abs() < 1e-12
        );
        assert!(one.psnr_seed_std.abs() < 1e-12);
        let mixed = &c[1];
        assert!((mixed.psnr.mean - 0.6).abs() < 1e-9, "{}", mixed.psnr.mean);
        assert!(mixed.psnr.lo < 0.6 && mixed.psnr.hi > 0.6 && mixed.psnr.lo >= -1.0 && mixed.psnr.hi <= 2.2);
        assert!((mixed.psnr_seed_std - 0.1).abs() < 1e-9);
        assert_eq!((mixed.wins, mixed.losses), (2, 2));
        // Against the unrestored input (no seed): it pairs with every seed.
        let vs_input = compare(&table(&rows), INPUT, &[]);
        assert!(vs_input.iter().any(|c| c.method == "source_only" && (c.psnr.mean - 9.25).abs() < 1e-9));
        // Absolute means: source_only's per-seed scores are identical, so its interval is the
        // image bootstrap of (20, 25, 30, 22).
        let abs = mean_intervals(&table(&rows));
        let (p, _) = abs[&("t".to_string(), "source_only".to_string())];
        assert!((p.mean - 24.25).abs() < 1e-12 && p.lo >= 20.0 && p.hi <= 30.0 && p.lo < 24.25 && p.hi > 24.25);
        let md = comparisons_markdown(&c);
        assert!(md.contains("+1.000 [+1.000, +1.000]"), "{md}");
        assert_eq!(comparisons_table(&c).rows(), 2);
    }
}

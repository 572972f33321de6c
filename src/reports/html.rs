//! Self-contained HTML pages: `report.html` per run and `benchmark.html` across runs.
//!
//! One file each, no network: CSS and a small script inline, charts as inline SVG
//! ([`super::svg`]), images as base64 PNG. Every text from files, names or configs is escaped
//! ([`esc`]); the page's only script sorts tables, toggles log scales and records, for tests
//! and the curious, how many images loaded (`body[data-images]`) and any script error
//! (`body[data-errors]`).

use std::collections::BTreeMap;
use std::fmt::Write;

use super::svg::{self, Series, Strip, esc};
use super::{Column, INPUT, Table};

/// One crop grid of a test set: column labels, and per row the image's id and each column's
/// PNG with its PSNR against the ground truth crop (none for the ground truth itself).
pub struct CropGrid {
    pub test_set: String,
    pub labels: Vec<String>,
    pub rows: Vec<CropRow>,
}

/// One image's crops: its id, then each column's PNG and PSNR.
pub type CropRow = (String, Vec<(Vec<u8>, Option<f64>)>);

/// Everything a run's page shows.
pub struct RunPage<'a> {
    pub title: String,
    /// Header facts, in order (pipeline, profile, commit, back-end, wall time, status…).
    pub header: Vec<(String, String)>,
    /// Gates: name, passed, detail.
    pub gates: Vec<(String, bool, String)>,
    pub summary: &'a Table,
    pub comparisons: Option<&'a Table>,
    pub baseline: Option<String>,
    /// The paper's layout, as Markdown (rendered as a table).
    pub paper_layout: Option<String>,
    pub curves: Option<&'a Table>,
    pub per_image: &'a Table,
    pub crops: Vec<CropGrid>,
    /// Grid PNGs of older runs without per-crop files: (test set, PNG).
    pub crop_pngs: Vec<(String, Vec<u8>)>,
    /// PixelDA's translation examples: (recipe and seed, PNG grid).
    pub translations: Vec<(String, Vec<u8>)>,
    pub provenance: Option<String>,
}

const CSS: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1280px;padding:16px 24px;color:#222}
h1{font-size:22px;margin:8px 0}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}
table{border-collapse:collapse;margin:6px 0 12px;font-variant-numeric:tabular-nums}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f4f4f4;cursor:pointer;user-select:none}
td:first-child,th:first-child,td.t{text-align:left}
table.facts td{text-align:left}table.facts td:first-child{font-weight:600;background:#fafafa}
.pass{color:#1a7f37;font-weight:600}.fail{color:#c62828;font-weight:600}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chartbox{border:1px solid #eee;padding:6px}
.crops td{text-align:center;vertical-align:top;font-size:12px}.crops img{image-rendering:pixelated;width:128px;height:128px;display:block}
pre{background:#f7f7f7;padding:8px;overflow:auto;max-height:480px;font-size:12px}
.note{color:#555;font-size:13px}
"#;

const SCRIPT: &str = r#"
(function(){
  var errors=[];
  window.addEventListener('error',function(e){errors.push(String(e.message));document.body.setAttribute('data-errors',errors.join(' | '));});
  document.querySelectorAll('table.sortable').forEach(function(t){
    t.querySelectorAll('th').forEach(function(th,i){
      th.addEventListener('click',function(){
        var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows),asc=th.getAttribute('data-asc')!=='1';
        rows.sort(function(a,b){
          var x=a.cells[i].getAttribute('data-v')||a.cells[i].textContent,y=b.cells[i].getAttribute('data-v')||b.cells[i].textContent;
          var nx=parseFloat(x),ny=parseFloat(y),c=(!isNaN(nx)&&!isNaN(ny))?nx-ny:x.localeCompare(y);
          return asc?c:-c;});
        rows.forEach(function(r){body.appendChild(r);});
        th.setAttribute('data-asc',asc?'1':'0');
      });
    });
  });
  document.querySelectorAll('input.logscale').forEach(function(cb){
    cb.addEventListener('change',function(){
      var box=cb.closest('.chartbox');
      box.querySelector('svg[data-scale=linear]').style.display=cb.checked?'none':'';
      box.querySelector('svg[data-scale=log]').style.display=cb.checked?'':'none';
    });
  });
  window.addEventListener('load',function(){
    var imgs=Array.prototype.slice.call(document.images);
    var ok=imgs.filter(function(i){return i.complete&&i.naturalWidth>0;}).length;
    document.body.setAttribute('data-images',ok+'/'+imgs.length);
  });
})();
"#;

/// Standard base64 (RFC 4648, padded), for `data:` URLs.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for k in 0..4 {
            if k <= c.len() {
                out.push(A[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{}</title><style>{CSS}</style></head><body>\n{body}\n<script>{SCRIPT}</script></body></html>\n",
        esc(title)
    )
}

/// A cell holding a number: shown with `digits`, sorted by its full value.
fn num_cell(v: f64, digits: usize) -> String {
    if v.is_finite() { format!(r#"<td data-v="{v}">{v:.digits$}</td>"#) } else { "<td data-v=\"\">-</td>".into() }
}

fn interval_cell(lo: f64, hi: f64, digits: usize) -> String {
    if lo.is_finite() && hi.is_finite() {
        format!(r#"<td data-v="{lo}">[{lo:.digits$}, {hi:.digits$}]</td>"#)
    } else {
        "<td>-</td>".into()
    }
}

fn text_cell(s: &str) -> String {
    format!(r#"<td class="t">{}</td>"#, esc(s))
}

/// The summary: one row per (test set, method), means with their bootstrap intervals.
fn summary_html(t: &Table) -> String {
    let (test, proto, method) = (t.texts("test_set"), t.texts("protocol"), t.texts("method"));
    let (p, plo, phi) = (t.floats("psnr_mean"), t.floats("psnr_lo95"), t.floats("psnr_hi95"));
    let (s, slo, shi) = (t.floats("ssim_mean"), t.floats("ssim_lo95"), t.floats("ssim_hi95"));
    let (images, seeds) = (t.floats("images"), t.floats("seeds"));
    let mut h = String::from(
        r#"<table class="sortable" id="summary"><thead><tr><th>test set</th><th>protocol</th><th>method</th><th>PSNR (dB)</th><th>PSNR 95% CI</th><th>SSIM</th><th>SSIM 95% CI</th><th>images</th><th>seeds</th></tr></thead><tbody>"#,
    );
    for i in 0..t.rows() {
        let _ = write!(
            h,
            "<tr>{}{}{}{}{}{}{}{}{}</tr>",
            text_cell(&test[i]),
            text_cell(&proto[i]),
            text_cell(&method[i]),
            num_cell(p[i], 2),
            interval_cell(plo[i], phi[i], 2),
            num_cell(s[i], 4),
            interval_cell(slo[i], shi[i], 4),
            num_cell(images[i], 0),
            num_cell(seeds[i], 0)
        );
    }
    h.push_str("</tbody></table>");
    h
}

fn comparisons_html(t: &Table) -> String {
    let (test, method, base) = (t.texts("test_set"), t.texts("method"), t.texts("baseline"));
    let (d, lo, hi) = (t.floats("delta_psnr"), t.floats("delta_psnr_lo95"), t.floats("delta_psnr_hi95"));
    let (ds, slo, shi) = (t.floats("delta_ssim"), t.floats("delta_ssim_lo95"), t.floats("delta_ssim_hi95"));
    let (wins, losses, seeds, images) = (t.floats("wins"), t.floats("losses"), t.floats("seeds"), t.floats("images"));
    let mut h = String::from(
        r#"<table class="sortable" id="comparisons"><thead><tr><th>test set</th><th>method</th><th>vs</th><th>ΔPSNR (dB)</th><th>95% CI</th><th>ΔSSIM</th><th>95% CI</th><th>wins</th><th>losses</th><th>seeds</th><th>images</th></tr></thead><tbody>"#,
    );
    for i in 0..t.rows() {
        let _ = write!(
            h,
            "<tr>{}{}{}{}{}{}{}{}{}{}{}</tr>",
            text_cell(&test[i]),
            text_cell(&method[i]),
            text_cell(&base[i]),
            num_cell(d[i], 3),
            interval_cell(lo[i], hi[i], 3),
            num_cell(ds[i], 4),
            interval_cell(slo[i], shi[i], 4),
            num_cell(wins[i], 0),
            num_cell(losses[i], 0),
            num_cell(seeds[i], 0),
            num_cell(images[i], 0)
        );
    }
    h.push_str("</tbody></table>");
    h
}

/// A Markdown table of ours (`markdown_table`'s output and the text around it) as HTML.
pub(crate) fn markdown_html(md: &str) -> String {
    let mut h = String::new();
    let mut in_table = false;
    let mut header_done = false;
    for line in md.lines() {
        let l = line.trim();
        if l.starts_with('|') {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            if cells.iter().all(|c| !c.is_empty() && c.chars().all(|ch| ch == '-' || ch == ':')) {
                continue;
            }
            if !in_table {
                h.push_str(r#"<table class="sortable"><thead><tr>"#);
                in_table = true;
                header_done = false;
            }
            if !header_done {
                for c in &cells {
                    let _ = write!(h, "<th>{}</th>", esc(c));
                }
                h.push_str("</tr></thead><tbody>");
                header_done = true;
            } else {
                h.push_str("<tr>");
                for c in &cells {
                    let v = c.split([' ', '/']).next().and_then(|x| x.parse::<f64>().ok());
                    match v {
                        Some(v) => {
                            let _ = write!(h, r#"<td data-v="{v}">{}</td>"#, esc(c));
                        }
                        None => h.push_str(&text_cell(c)),
                    }
                }
                h.push_str("</tr>");
            }
        } else {
            if in_table {
                h.push_str("</tbody></table>");
                in_table = false;
            }
            if !l.is_empty() {
                let _ = write!(h, r#"<p class="note">{}</p>"#, esc(l));
            }
        }
    }
    if in_table {
        h.push_str("</tbody></table>");
    }
    h
}

/// Curve series per (recipe, seed) for one column of the curves table.
pub(crate) fn curve_series(curves: &Table, column: &str) -> Vec<Series> {
    let (method, seed, step, v) =
        (curves.texts("method"), curves.texts("seed"), curves.floats("step"), curves.floats(column));
    let mut by: BTreeMap<(String, String), Vec<(f64, f64)>> = BTreeMap::new();
    let mut order: Vec<(String, String)> = Vec::new();
    for i in 0..curves.rows() {
        let key = (method[i].clone(), seed[i].clone());
        if !order.contains(&key) {
            order.push(key.clone());
        }
        if v[i].is_finite() {
            by.entry(key).or_default().push((step[i], v[i]));
        }
    }
    // A colour per recipe, a dash pattern per seed.
    let (mut recipes, mut seeds): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    for (m, s) in &order {
        if !recipes.contains(m) {
            recipes.push(m.clone());
        }
        if !seeds.contains(s) {
            seeds.push(s.clone());
        }
    }
    let index = |v: &[String], x: &String| v.iter().position(|y| y == x).unwrap_or(0);
    order
        .into_iter()
        .filter_map(|k| {
            let points = by.remove(&k)?;
            let (color, dash) = (index(&recipes, &k.0), index(&seeds, &k.1));
            Some(Series { name: format!("{} seed {}", k.0, k.1), points, color, dash })
        })
        .collect()
}

/// The training curves: loss (with a log-scale switch), Charbonnier, validation PSNR per set,
/// and every other logged term under "more".
pub(crate) fn curves_html(curves: &Table) -> String {
    let mut h = String::from(r#"<div class="charts">"#);
    let loss = curve_series(curves, "loss");
    let _ = write!(
        h,
        r#"<div class="chartbox"><label><input type="checkbox" class="logscale"> log scale</label><br>{}{}</div>"#,
        svg::line_chart("loss", "training loss (total)", &loss, "step", "loss", false),
        svg::line_chart("loss", "training loss (total)", &loss, "step", "loss (log)", true).replacen(
            "<svg ",
            r#"<svg style="display:none" "#,
            1
        )
    );
    let charb = curve_series(curves, "charbonnier");
    if !charb.is_empty() {
        let _ = write!(
            h,
            r#"<div class="chartbox">{}</div>"#,
            svg::line_chart("charbonnier", "Charbonnier (restoration term)", &charb, "step", "loss", false)
        );
    }
    for (name, _) in curves.columns.iter().filter(|(n, _)| n.starts_with("val_psnr:")) {
        let set = name.trim_start_matches("val_psnr:");
        let s = curve_series(curves, name);
        if !s.is_empty() {
            let _ = write!(
                h,
                r#"<div class="chartbox">{}</div>"#,
                svg::line_chart(name, &format!("validation PSNR: {set}"), &s, "step", "PSNR (dB)", false)
            );
        }
    }
    h.push_str("</div>");
    let skip = ["method", "seed", "step", "loss", "charbonnier", "elapsed_s"];
    let mut more = String::new();
    for (name, col) in &curves.columns {
        if skip.contains(&name.as_str()) || name.starts_with("val_psnr:") || !matches!(col, Column::F64(_)) {
            continue;
        }
        let s = curve_series(curves, name);
        if !s.is_empty() {
            let _ =
                write!(more, r#"<div class="chartbox">{}</div>"#, svg::line_chart(name, name, &s, "step", name, false));
        }
    }
    if !more.is_empty() {
        let _ =
            write!(h, r#"<details><summary>more training terms</summary><div class="charts">{more}</div></details>"#);
    }
    h
}

/// Per test set: per-image PSNR per method (strip plot) and input vs restored PSNR (scatter).
fn per_image_html(per_image: &Table, order: &[String]) -> String {
    let (test, method, image, seed, psnr) = (
        per_image.texts("test_set"),
        per_image.texts("method"),
        per_image.texts("image_id"),
        per_image.texts("seed"),
        per_image.floats("psnr"),
    );
    let mut tests: Vec<String> = Vec::new();
    for t in &test {
        if !tests.contains(t) {
            tests.push(t.clone());
        }
    }
    let mut h = String::new();
    for (k, t) in tests.iter().enumerate() {
        let rows: Vec<usize> = (0..per_image.rows()).filter(|&i| test[i] == *t).collect();
        let mut methods: Vec<String> =
            order.iter().filter(|m| rows.iter().any(|&i| method[i] == **m)).cloned().collect();
        for &i in &rows {
            if !methods.contains(&method[i]) {
                methods.push(method[i].clone());
            }
        }
        let label =
            |i: usize| if seed[i].is_empty() { image[i].clone() } else { format!("{} (seed {})", image[i], seed[i]) };
        let strips: Vec<Strip> = methods
            .iter()
            .map(|m| Strip {
                name: m.clone(),
                values: rows.iter().filter(|&&i| method[i] == *m).map(|&i| (label(i), psnr[i])).collect(),
            })
            .collect();
        let input: BTreeMap<&str, f64> =
            rows.iter().filter(|&&i| method[i] == INPUT).map(|&i| (image[i].as_str(), psnr[i])).collect();
        let groups: Vec<svg::ScatterGroup> = methods
            .iter()
            .filter(|m| *m != INPUT)
            .map(|m| {
                let pts = rows
                    .iter()
                    .filter(|&&i| method[i] == *m)
                    .filter_map(|&i| input.get(image[i].as_str()).map(|x| (label(i), *x, psnr[i])))
                    .collect();
                (m.clone(), pts)
            })
            .collect();
        let _ = write!(
            h,
            r#"<h3>{}</h3><div class="charts"><div class="chartbox">{}</div><div class="chartbox">{}</div></div>"#,
            esc(t),
            svg::strip_plot(&format!("per-image-{k}"), &format!("per-image PSNR: {t}"), &strips, "PSNR (dB)"),
            svg::scatter(
                &format!("scatter-{k}"),
                &format!("input vs restored: {t}"),
                &groups,
                "input PSNR (dB)",
                "restored PSNR (dB)"
            )
        );
    }
    h
}

fn crops_html(grids: &[CropGrid], pngs: &[(String, Vec<u8>)]) -> String {
    let mut h = String::new();
    for g in grids {
        let _ = write!(h, r#"<h3>{}</h3><table class="crops"><thead><tr><th>image</th>"#, esc(&g.test_set));
        for l in &g.labels {
            let _ = write!(h, "<th>{}</th>", esc(l));
        }
        h.push_str("</tr></thead><tbody>");
        for (id, cells) in &g.rows {
            let _ = write!(h, "<tr><td class=\"t\">{}</td>", esc(id));
            for (label, (png, psnr)) in g.labels.iter().zip(cells) {
                let caption = psnr.map_or_else(|| "reference".to_string(), |p| format!("{p:.2} dB"));
                let _ = write!(
                    h,
                    r#"<td><img alt="{} {}" src="data:image/png;base64,{}">{}</td>"#,
                    esc(id),
                    esc(label),
                    base64(png),
                    caption
                );
            }
            h.push_str("</tr>");
        }
        h.push_str("</tbody></table>");
    }
    for (name, png) in pngs {
        let _ = write!(
            h,
            r#"<h3>{}</h3><img alt="{} crops" src="data:image/png;base64,{}">"#,
            esc(name),
            esc(name),
            base64(png)
        );
    }
    if !grids.is_empty() {
        h.push_str(r#"<p class="note">Centre crops (64², shown 2×) of the first images of each test set; the dB under each is the crop's PSNR against the ground-truth crop (RGB, 8-bit).</p>"#);
    }
    h
}

/// Paired Δ against the baseline per test set, as interval plots.
fn delta_plots(c: &Table) -> String {
    let (test, method, d, lo, hi) = (
        c.texts("test_set"),
        c.texts("method"),
        c.floats("delta_psnr"),
        c.floats("delta_psnr_lo95"),
        c.floats("delta_psnr_hi95"),
    );
    let mut tests: Vec<String> = Vec::new();
    for t in &test {
        if !tests.contains(t) {
            tests.push(t.clone());
        }
    }
    let mut h = String::from(r#"<div class="charts">"#);
    for (k, t) in tests.iter().enumerate() {
        let rows: Vec<(String, f64, f64, f64)> =
            (0..c.rows()).filter(|&i| test[i] == *t).map(|i| (method[i].clone(), d[i], lo[i], hi[i])).collect();
        let _ = write!(
            h,
            r#"<div class="chartbox">{}</div>"#,
            svg::interval_plot(&format!("delta-{k}"), &format!("ΔPSNR vs baseline: {t}"), &rows, "ΔPSNR (dB), 95% CI")
        );
    }
    h.push_str("</div>");
    h
}

fn facts_html(rows: &[(String, String)]) -> String {
    let mut h = String::from(r#"<table class="facts">"#);
    for (k, v) in rows {
        let _ = write!(h, "<tr><td>{}</td><td>{}</td></tr>", esc(k), esc(v));
    }
    h.push_str("</table>");
    h
}

/// The run's page.
pub fn run_page(p: &RunPage) -> String {
    let mut b = format!("<h1>{}</h1>", esc(&p.title));
    b.push_str(r##"<p class="note"><a href="#summary-table">summary</a> · <a href="#paper">paper layout</a> · <a href="#curves">curves</a> · <a href="#per-image">per-image</a> · <a href="#crops">crops</a> · <a href="#provenance">provenance</a></p>"##);
    b.push_str(&facts_html(&p.header));
    if !p.gates.is_empty() {
        b.push_str("<h2 id=\"gates\">Quality gates</h2><table><thead><tr><th>gate</th><th>result</th><th>detail</th></tr></thead><tbody>");
        for (name, ok, detail) in &p.gates {
            let _ = write!(
                b,
                r#"<tr><td class="t">{}</td><td class="{}">{}</td><td class="t">{}</td></tr>"#,
                esc(name),
                if *ok { "pass" } else { "fail" },
                if *ok { "passed" } else { "FAILED" },
                esc(detail)
            );
        }
        b.push_str("</tbody></table>");
    }
    b.push_str("<h2 id=\"summary-table\">Summary</h2><p class=\"note\">Means over images and seeds; 95% intervals from a two-level bootstrap (seeds, then images). Click a column to sort.</p>");
    b.push_str(&summary_html(p.summary));
    if let Some(c) = p.comparisons.filter(|c| c.rows() > 0) {
        let _ = write!(
            b,
            "<h2 id=\"comparisons-table\">Paired comparisons against {}</h2>",
            esc(p.baseline.as_deref().unwrap_or("the baseline"))
        );
        b.push_str(&comparisons_html(c));
        b.push_str(&delta_plots(c));
    }
    if let Some(md) = &p.paper_layout {
        b.push_str("<h2 id=\"paper\">In the paper's layout</h2>");
        b.push_str(&markdown_html(md));
    }
    if let Some(curves) = p.curves.filter(|c| c.rows() > 0) {
        b.push_str("<h2 id=\"curves\">Training curves</h2><p class=\"note\">One line per recipe and seed; hover a point for its step and value.</p>");
        b.push_str(&curves_html(curves));
    }
    let mut order: Vec<String> = Vec::new();
    for m in p.summary.texts("method") {
        if !order.contains(&m) {
            order.push(m);
        }
    }
    b.push_str("<h2 id=\"per-image\">Per-image scores</h2>");
    b.push_str(&per_image_html(p.per_image, &order));
    if !p.crops.is_empty() || !p.crop_pngs.is_empty() {
        b.push_str("<h2 id=\"crops\">Example crops</h2>");
        b.push_str(&crops_html(&p.crops, &p.crop_pngs));
    }
    if !p.translations.is_empty() {
        b.push_str(r#"<h2 id="translations">PixelDA translations</h2><p class="note">The translator on synthetic training inputs (64² centre crops, 2×): what it changes (×4 around grey) beside target inputs. A good translation changes the degradation, not the scene.</p>"#);
        for (name, png) in &p.translations {
            let _ = write!(
                b,
                r#"<h3>{}</h3><img alt="{} translations" src="data:image/png;base64,{}">"#,
                esc(name),
                esc(name),
                base64(png)
            );
        }
    }
    if let Some(prov) = &p.provenance {
        let _ = write!(
            b,
            "<h2 id=\"provenance\">Provenance</h2><details><summary>provenance.json</summary><pre>{}</pre></details>",
            esc(prov)
        );
    }
    page(&p.title, &b)
}

/// The benchmark page: the paper's layout across runs, then per-run Δ plots.
pub fn benchmark_page(paper_layout_md: &str, runs: &[(String, Table)], comparisons_md: Option<&str>) -> String {
    let mut b = String::from("<h1>Benchmark across runs</h1><h2>In the paper's layout</h2>");
    b.push_str(&markdown_html(paper_layout_md));
    if let Some(md) = comparisons_md {
        b.push_str("<h2>Paired differences across runs</h2>");
        b.push_str(&markdown_html(md));
    }
    for (run, c) in runs.iter().filter(|r| r.1.rows() > 0) {
        let _ = write!(b, "<h2>{}</h2>", esc(run));
        b.push_str(&delta_plots(c));
    }
    page("run-pipeline benchmark", &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        for (raw, enc) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")] {
            assert_eq!(base64(raw.as_bytes()), enc);
        }
    }

    /// Markdown tables become sortable HTML tables; text around them notes; all escaped.
    #[test]
    fn markdown_tables_become_html() {
        let md = "Intro <b>\n\n| method | a: x |\n|---|---|\n| <img src=x> | 1.50 / 0.2 |\n";
        let h = markdown_html(md);
        assert!(h.contains("<th>method</th>") && h.contains(r#"<td data-v="1.5">1.50 / 0.2</td>"#), "{h}");
        assert!(h.contains("&lt;img src=x&gt;") && !h.contains("<img") && h.contains("Intro &lt;b&gt;"), "{h}");
    }
}

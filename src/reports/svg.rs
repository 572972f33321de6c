//! Charts as inline SVG for the HTML reports (and `figures/curves.svg`): line charts with axes,
//! ticks, labels, a legend and hover values; strip plots; scatter plots; interval plots.
//!
//! Hand-written SVG, no plotting crate (compile time matters) and no script: hover values are
//! SVG `<title>` elements, which every browser shows as a tooltip. Every text that reaches the
//! markup goes through [`esc`].

use std::fmt::Write;

/// Text escaped for HTML/SVG content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Distinct colours (Tableau 10).
pub const PALETTE: [&str; 10] =
    ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

/// One named line of a chart: its colour (palette index: one per recipe) and dash pattern
/// (one per seed).
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub color: usize,
    pub dash: usize,
}

/// Dots drawn per group of a strip or scatter plot, at most (every k-th beyond).
const MAX_DOTS: usize = 600;

const DASHES: [&str; 4] = ["", "6 3", "2 2", "8 3 2 3"];

/// A chart's frame: size and margins, and the data → pixel maps.
struct Frame {
    w: f64,
    h: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
    x: (f64, f64),
    y: (f64, f64),
    log_y: bool,
}

impl Frame {
    /// The standard frame: axis labels left, `legend_rows` rows of legend below.
    fn new(size: (f64, f64), legend_rows: usize, x: (f64, f64), y: (f64, f64), log_y: bool) -> Frame {
        let bottom = 44.0 + 18.0 * legend_rows as f64;
        Frame { w: size.0, h: size.1, left: 64.0, right: 16.0, top: 28.0, bottom, x, y, log_y }
    }

    fn sx(&self, x: f64) -> f64 {
        self.left + (x - self.x.0) / (self.x.1 - self.x.0) * (self.w - self.left - self.right)
    }

    fn sy(&self, y: f64) -> f64 {
        let (y, lo, hi) =
            if self.log_y { (y.log10(), self.y.0.log10(), self.y.1.log10()) } else { (y, self.y.0, self.y.1) };
        self.h - self.bottom - (y - lo) / (hi - lo) * (self.h - self.top - self.bottom)
    }
}

/// A data point with its hover text (escaped here).
fn dot(s: &mut String, (cx, cy): (f64, f64), color: &str, title: &str) {
    let _ = write!(
        s,
        r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="3" fill="{color}" fill-opacity="0.6"><title>{}</title></circle>"#,
        esc(title)
    );
}

/// About `n` round tick values covering [lo, hi].
pub(crate) fn nice_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return vec![lo];
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 && out.len() < 50 {
        out.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        t += step;
    }
    out
}

/// Powers of ten (and 2×, 5× between them when there are few) covering [lo, hi] > 0.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let mults: &[f64] = if b - a <= 2 { &[1.0, 2.0, 5.0] } else { &[1.0] };
    let mut out = Vec::new();
    for e in a..=b {
        for m in mults {
            let v = m * 10f64.powi(e);
            if v >= lo * (1.0 - 1e-9) && v <= hi * (1.0 + 1e-9) {
                out.push(v);
            }
        }
    }
    out
}

/// A number as a tick label: short, no trailing zeros.
pub(crate) fn fmt_num(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        return format!("{v:.1e}");
    }
    let s = if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    };
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

/// Data range with a little padding; a single value widens to a visible range.
fn range(values: impl Iterator<Item = f64>, pad: f64) -> Option<(f64, f64)> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return None;
    }
    if hi - lo < 1e-12 {
        let d = if lo.abs() > 1e-12 { lo.abs() * 0.05 } else { 0.5 };
        return Some((lo - d, hi + d));
    }
    let p = (hi - lo) * pad;
    Some((lo - p, hi + p))
}

/// The frame's axes, grid, tick labels and axis titles.
fn axes(f: &Frame, x_label: &str, y_label: &str, x_ticks: &[f64], x_names: Option<&[String]>) -> String {
    let mut s = String::new();
    let y_ticks = if f.log_y { log_ticks(f.y.0, f.y.1) } else { nice_ticks(f.y.0, f.y.1, 5) };
    for t in &y_ticks {
        let y = f.sy(*t);
        let _ = write!(
            s,
            r##"<line x1="{:.1}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#e5e5e5"/><text x="{:.1}" y="{:.1}" text-anchor="end" class="tick">{}</text>"##,
            f.left,
            f.w - f.right,
            f.left - 6.0,
            y + 4.0,
            fmt_num(*t)
        );
    }
    for (i, t) in x_ticks.iter().enumerate() {
        let x = f.sx(*t);
        let label = x_names.map_or_else(|| fmt_num(*t), |n| esc(&n[i]));
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{:.1}" y2="{:.1}" stroke="#888"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" class="tick">{label}</text>"##,
            f.h - f.bottom,
            f.h - f.bottom + 5.0,
            f.h - f.bottom + 18.0,
        );
    }
    let _ = write!(
        s,
        r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#888"/>"##,
        f.left,
        f.top,
        f.w - f.left - f.right,
        f.h - f.top - f.bottom
    );
    let _ = write!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" class="axis">{}</text><text transform="translate(14 {:.1}) rotate(-90)" text-anchor="middle" class="axis">{}</text>"##,
        (f.left + f.w - f.right) / 2.0,
        f.h - f.bottom + 34.0,
        esc(x_label),
        (f.top + f.h - f.bottom) / 2.0,
        esc(y_label)
    );
    s
}

const STYLE: &str = "<style>.tick{font:11px sans-serif;fill:#444}.axis{font:12px sans-serif;fill:#222}.ttl{font:bold 13px sans-serif}.leg{font:12px sans-serif}</style>";

/// The width and height of a [`line_chart`] of `series` lines (its legend: 3 a row).
pub fn line_chart_size(series: usize) -> (f64, f64) {
    (640.0, 300.0 + 18.0 * series.div_ceil(3) as f64)
}

/// A line chart: one `<g class="series">` per series (a path and hover markers), a legend.
/// `id` names the chart (`data-chart`); `log_y` plots y on a log scale (non-positive values
/// dropped).
pub fn line_chart(id: &str, title: &str, series: &[Series], x_label: &str, y_label: &str, log_y: bool) -> String {
    let keep = |(_, y): &(f64, f64)| y.is_finite() && (!log_y || *y > 0.0);
    let xs = series.iter().flat_map(|s| s.points.iter().filter(|p| keep(p)).map(|p| p.0));
    let ys = series.iter().flat_map(|s| s.points.iter().filter(|p| keep(p)).map(|p| p.1));
    let legend_rows = series.len().div_ceil(3);
    let (w, h) = line_chart_size(series.len());
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" data-chart="{}" data-scale="{}" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img"><title>{}</title>{STYLE}"#,
        esc(id),
        if log_y { "log" } else { "linear" },
        esc(title)
    );
    let _ = write!(s, r#"<text x="8" y="16" class="ttl">{}</text>"#, esc(title));
    let (Some(xr), Some(yr)) = (range(xs, 0.0), range(ys.clone(), 0.05)) else {
        s.push_str(r#"<text x="60" y="80" class="axis">no data</text></svg>"#);
        return s;
    };
    let yr = if log_y {
        let (lo, hi) = ys.fold((f64::INFINITY, 0f64), |(a, b), y| (a.min(y), b.max(y)));
        (lo / 1.2, hi * 1.2)
    } else {
        yr
    };
    let f = Frame::new((w, h), legend_rows, xr, yr, log_y);
    s.push_str(&axes(&f, x_label, y_label, &nice_ticks(xr.0, xr.1, 6), None));
    for (k, se) in series.iter().enumerate() {
        let color = PALETTE[se.color % PALETTE.len()];
        let dash = match DASHES[se.dash % DASHES.len()] {
            "" => String::new(),
            d => format!(r#" stroke-dasharray="{d}""#),
        };
        let pts: Vec<&(f64, f64)> = se.points.iter().filter(|p| keep(p) && p.0.is_finite()).collect();
        let _ = write!(s, r#"<g class="series" data-name="{}">"#, esc(&se.name));
        let mut d = String::new();
        for (i, (x, y)) in pts.iter().enumerate() {
            let _ = write!(d, "{}{:.1},{:.1}", if i == 0 { "M" } else { "L" }, f.sx(*x), f.sy(*y));
        }
        if !d.is_empty() {
            let _ = write!(s, r#"<path d="{d}" fill="none" stroke="{color}" stroke-width="1.6"{dash}/>"#);
        }
        // Hover markers, at most ~150 per series.
        let every = pts.len().div_ceil(150).max(1);
        for (x, y) in pts.iter().step_by(every) {
            let title = format!("{} · {} {}: {}", se.name, x_label, fmt_num(*x), fmt_num(*y));
            dot(&mut s, (f.sx(*x), f.sy(*y)), color, &title);
        }
        s.push_str("</g>");
        let (lx, ly) = (f.left + 200.0 * (k % 3) as f64, h - 18.0 * (legend_rows - k / 3) as f64 + 4.0);
        let _ = write!(
            s,
            r#"<g class="legend"><line x1="{lx:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="2.5"{dash}/><text x="{:.1}" y="{ly:.1}" class="leg">{}</text></g>"#,
            lx + 22.0,
            ly - 4.0,
            ly - 4.0,
            lx + 26.0,
            esc(&se.name)
        );
    }
    s.push_str("</svg>");
    s
}

/// One group of a strip plot: a name and labelled values.
pub struct Strip {
    pub name: String,
    pub values: Vec<(String, f64)>,
}

/// Values per group as jittered dots with the group's mean as a bar (per-image PSNR per
/// method): the spread a mean hides.
pub fn strip_plot(id: &str, title: &str, groups: &[Strip], y_label: &str) -> String {
    let (w, h) = ((120.0 + 90.0 * groups.len() as f64).max(360.0), 300.0);
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" data-chart="{}" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img"><title>{}</title>{STYLE}<text x="8" y="16" class="ttl">{}</text>"#,
        esc(id),
        esc(title),
        esc(title)
    );
    let Some(yr) = range(groups.iter().flat_map(|g| g.values.iter().map(|v| v.1)), 0.05) else {
        s.push_str(r#"<text x="60" y="80" class="axis">no data</text></svg>"#);
        return s;
    };
    let n = groups.len().max(1);
    let f = Frame::new((w, h), 0, (-0.5, n as f64 - 0.5), yr, false);
    let names: Vec<String> = groups.iter().map(|g| g.name.clone()).collect();
    let ticks: Vec<f64> = (0..groups.len()).map(|i| i as f64).collect();
    s.push_str(&axes(&f, "", y_label, &ticks, Some(&names)));
    for (k, g) in groups.iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        let _ = write!(s, r#"<g class="series" data-name="{}">"#, esc(&g.name));
        // At most ~MAX_DOTS dots a group (a SIDD-size test set has thousands); the mean uses all.
        let every = g.values.len().div_ceil(MAX_DOTS).max(1);
        for (i, (label, v)) in g.values.iter().enumerate().step_by(every) {
            if !v.is_finite() {
                continue;
            }
            // Deterministic jitter (golden-ratio sequence), ±0.3 of a slot.
            let jitter = ((i as f64 * 0.618_033_988_75).fract() - 0.5) * 0.6;
            dot(&mut s, (f.sx(k as f64 + jitter), f.sy(*v)), color, &format!("{label}: {}", fmt_num(*v)));
        }
        let finite: Vec<f64> = g.values.iter().map(|v| v.1).filter(|v| v.is_finite()).collect();
        if !finite.is_empty() {
            let mean = finite.iter().sum::<f64>() / finite.len() as f64;
            let _ = write!(
                s,
                r##"<line x1="{:.1}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#000" stroke-width="2"><title>{} mean: {}</title></line>"##,
                f.sx(k as f64 - 0.35),
                f.sx(k as f64 + 0.35),
                esc(&g.name),
                fmt_num(mean),
                y = f.sy(mean)
            );
        }
        s.push_str("</g>");
    }
    s.push_str("</svg>");
    s
}

/// A named group of labelled (x, y) points.
pub type ScatterGroup = (String, Vec<(String, f64, f64)>);

/// Labelled (x, y) points per group, with the diagonal y = x (input vs restored PSNR: points
/// above it improved).
pub fn scatter(id: &str, title: &str, groups: &[ScatterGroup], x_label: &str, y_label: &str) -> String {
    let legend_rows = groups.len().div_ceil(3);
    let (w, h) = (480.0, 420.0 + 18.0 * legend_rows as f64);
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" data-chart="{}" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img"><title>{}</title>{STYLE}<text x="8" y="16" class="ttl">{}</text>"#,
        esc(id),
        esc(title),
        esc(title)
    );
    let all = || groups.iter().flat_map(|g| g.1.iter().flat_map(|p| [p.1, p.2]));
    let Some(r) = range(all(), 0.05) else {
        s.push_str(r#"<text x="60" y="80" class="axis">no data</text></svg>"#);
        return s;
    };
    let f = Frame::new((w, h), legend_rows, r, r, false);
    s.push_str(&axes(&f, x_label, y_label, &nice_ticks(r.0, r.1, 6), None));
    let _ = write!(
        s,
        r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#999" stroke-dasharray="4 3"/>"##,
        f.sx(r.0),
        f.sy(r.0),
        f.sx(r.1),
        f.sy(r.1)
    );
    for (k, (name, pts)) in groups.iter().enumerate() {
        let color = PALETTE[(k + 1) % PALETTE.len()];
        let _ = write!(s, r#"<g class="series" data-name="{}">"#, esc(name));
        let every = pts.len().div_ceil(MAX_DOTS).max(1);
        for (label, x, y) in pts.iter().step_by(every).filter(|p| p.1.is_finite() && p.2.is_finite()) {
            let title = format!("{name} · {label}: {} → {}", fmt_num(*x), fmt_num(*y));
            dot(&mut s, (f.sx(*x), f.sy(*y)), color, &title);
        }
        s.push_str("</g>");
        let (lx, ly) = (f.left + 140.0 * (k % 3) as f64, h - 18.0 * (legend_rows - k / 3) as f64 + 4.0);
        let _ = write!(
            s,
            r#"<g class="legend"><circle cx="{:.1}" cy="{:.1}" r="4" fill="{color}"/><text x="{:.1}" y="{ly:.1}" class="leg">{}</text></g>"#,
            lx + 5.0,
            ly - 4.0,
            lx + 14.0,
            esc(name)
        );
    }
    s.push_str("</svg>");
    s
}

/// Horizontal intervals: one row per label, a point estimate with its [lo, hi] interval, and
/// the zero line (paired Δ against a baseline).
pub fn interval_plot(id: &str, title: &str, rows: &[(String, f64, f64, f64)], x_label: &str) -> String {
    let (w, h) = (560.0, 70.0 + 26.0 * rows.len() as f64);
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" data-chart="{}" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img"><title>{}</title>{STYLE}<text x="8" y="16" class="ttl">{}</text>"#,
        esc(id),
        esc(title),
        esc(title)
    );
    let Some(xr) = range(rows.iter().flat_map(|r| [r.1, r.2, r.3]).chain([0.0]), 0.08) else {
        s.push_str("</svg>");
        return s;
    };
    let left = 200.0;
    let sx = |x: f64| left + (x - xr.0) / (xr.1 - xr.0) * (w - left - 16.0);
    let (top, bottom) = (28.0, h - 40.0);
    for t in nice_ticks(xr.0, xr.1, 6) {
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{top}" y2="{bottom}" stroke="#eee"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" class="tick">{}</text>"##,
            bottom + 14.0,
            fmt_num(t),
            x = sx(t)
        );
    }
    let _ = write!(
        s,
        r##"<line x1="{x:.1}" x2="{x:.1}" y1="{top}" y2="{bottom}" stroke="#555" stroke-dasharray="3 3"/><text x="{:.1}" y="{:.1}" text-anchor="middle" class="axis">{}</text>"##,
        (left + w - 16.0) / 2.0,
        h - 8.0,
        esc(x_label),
        x = sx(0.0)
    );
    for (i, (label, mid, lo, hi)) in rows.iter().enumerate() {
        let y = top + 14.0 + 26.0 * i as f64;
        let color = if *lo > 0.0 {
            "#2ca02c"
        } else if *hi < 0.0 {
            "#d62728"
        } else {
            "#555"
        };
        let _ = write!(
            s,
            r#"<g class="series" data-name="{}"><text x="{:.1}" y="{:.1}" text-anchor="end" class="leg">{}</text><line x1="{:.1}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="{color}" stroke-width="2"/><circle cx="{:.1}" cy="{y:.1}" r="4" fill="{color}"><title>{}: {} [{}, {}]</title></circle></g>"#,
            esc(label),
            left - 8.0,
            y + 4.0,
            esc(label),
            sx(*lo),
            sx(*hi),
            sx(*mid),
            esc(label),
            fmt_num(*mid),
            fmt_num(*lo),
            fmt_num(*hi)
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(nice_ticks(0.0, 600.0, 6), [0.0, 100.0, 200.0, 300.0, 400.0, 500.0, 600.0]);
        assert_eq!(nice_ticks(22.3, 26.9, 5), [23.0, 24.0, 25.0, 26.0]);
        let t = nice_ticks(0.012, 0.031, 4);
        assert!(t.len() == 4 && [0.015, 0.02, 0.025, 0.03].iter().zip(&t).all(|(a, b)| (a - b).abs() < 1e-12), "{t:?}");
        assert_eq!(log_ticks(0.02, 0.9), [0.02, 0.05, 0.1, 0.2, 0.5]);
        assert_eq!(fmt_num(0.0500), "0.05");
        assert_eq!(fmt_num(25.0), "25");
        assert_eq!(fmt_num(1234.0), "1234");
    }

    /// One series group per line, hover titles with the values, names escaped.
    #[test]
    fn a_line_chart_has_its_series_and_escapes_names() {
        let series = vec![
            Series { name: "a<script>".into(), points: vec![(10.0, 1.0), (20.0, 0.5)], color: 0, dash: 0 },
            Series { name: "b".into(), points: vec![(10.0, 0.8), (20.0, f64::NAN), (30.0, 0.1)], color: 0, dash: 1 },
        ];
        for log in [false, true] {
            let svg = line_chart("loss", "loss", &series, "step", "loss", log);
            assert_eq!(svg.matches(r#"<g class="series""#).count(), 2);
            assert!(!svg.contains("<script>") && svg.contains("a&lt;script&gt;"), "{svg}");
            assert!(svg.contains("<title>b · step 30: 0.1</title>"), "{svg}");
            assert_eq!(svg.matches("<circle").count(), 4, "NaN points are skipped");
        }
    }
}

//! Figures people would rather look at than read: training curves and example crops as PNG.
//!
//! Drawn directly on an [`Image`] canvas (no plotting crate: compile time matters) with a tiny
//! built-in 3×5 pixel font for labels.

use std::collections::BTreeMap;
use std::path::Path;

use crate::image::Image;
use crate::util::write_atomic;

use super::{Column, Table};

/// 3×5 glyphs, rows top to bottom, 3 bits per row (MSB left).
fn glyph(c: char) -> Option<[u8; 5]> {
    Some(match c.to_ascii_uppercase() {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 2, 2, 2],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        'A' => [2, 5, 7, 5, 5],
        'B' => [6, 5, 6, 5, 6],
        'C' => [3, 4, 4, 4, 3],
        'D' => [6, 5, 5, 5, 6],
        'E' => [7, 4, 6, 4, 7],
        'F' => [7, 4, 6, 4, 4],
        'G' => [3, 4, 5, 5, 3],
        'H' => [5, 5, 7, 5, 5],
        'I' => [7, 2, 2, 2, 7],
        'J' => [1, 1, 1, 5, 2],
        'K' => [5, 5, 6, 5, 5],
        'L' => [4, 4, 4, 4, 7],
        'M' => [5, 7, 7, 5, 5],
        'N' => [6, 5, 5, 5, 5],
        'O' => [2, 5, 5, 5, 2],
        'P' => [6, 5, 6, 4, 4],
        'Q' => [2, 5, 5, 6, 3],
        'R' => [6, 5, 6, 5, 5],
        'S' => [3, 4, 2, 1, 6],
        'T' => [7, 2, 2, 2, 2],
        'U' => [5, 5, 5, 5, 7],
        'V' => [5, 5, 5, 5, 2],
        'W' => [5, 5, 7, 7, 5],
        'X' => [5, 5, 2, 5, 5],
        'Y' => [5, 5, 2, 2, 2],
        'Z' => [7, 1, 2, 4, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        '_' => [0, 0, 0, 0, 7],
        ':' => [0, 2, 0, 2, 0],
        '/' => [1, 1, 2, 4, 4],
        '+' => [0, 2, 7, 2, 0],
        ' ' => [0, 0, 0, 0, 0],
        _ => return None,
    })
}

/// Write `text` at (x, y) in `rgb`, each font pixel `scale`² screen pixels.
fn text(img: &mut Image, x: usize, y: usize, s: &str, rgb: [f32; 3], scale: usize) {
    let mut cx = x;
    for ch in s.chars() {
        let g = glyph(ch).unwrap_or([7, 7, 7, 7, 7]);
        for (row, bits) in g.iter().enumerate() {
            for col in 0..3 {
                if bits & (4 >> col) != 0 {
                    for dy in 0..scale {
                        for dx in 0..scale {
                            put(img, cx + col * scale + dx, y + row * scale + dy, rgb);
                        }
                    }
                }
            }
        }
        cx += 4 * scale;
    }
}

fn put(img: &mut Image, x: usize, y: usize, rgb: [f32; 3]) {
    if x < img.width && y < img.height {
        for (c, v) in rgb.iter().enumerate() {
            img.set(x, y, c, *v);
        }
    }
}

fn line(img: &mut Image, (x0, y0): (f64, f64), (x1, y1): (f64, f64), rgb: [f32; 3]) {
    let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
    for i in 0..=n {
        let t = i as f64 / n as f64;
        let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
        if x >= 0.0 && y >= 0.0 {
            put(img, x.round() as usize, y.round() as usize, rgb);
        }
    }
}

/// Distinct line colours (Tableau-like).
const PALETTE: [[f32; 3]; 8] = [
    [0.12, 0.47, 0.71],
    [1.0, 0.5, 0.05],
    [0.17, 0.63, 0.17],
    [0.84, 0.15, 0.16],
    [0.58, 0.4, 0.74],
    [0.55, 0.34, 0.29],
    [0.89, 0.47, 0.76],
    [0.5, 0.5, 0.5],
];

/// One panel: series of (x, y) points, drawn into `img` at (ox, oy) with size (w, h).
fn panel(
    img: &mut Image,
    origin: (usize, usize),
    size: (usize, usize),
    title: &str,
    series: &[(String, Vec<(f64, f64)>)],
) {
    let (ox, oy) = origin;
    let (w, h) = size;
    let black = [0.0, 0.0, 0.0];
    let pts = series.iter().flat_map(|(_, p)| p.iter()).filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    text(img, ox, oy, title, black, 2);
    let (px, py, pw, ph) = (ox + 4, oy + 16, w - 8, h - 40);
    for (a, b) in [
        ((px, py), (px + pw, py)),
        ((px, py + ph), (px + pw, py + ph)),
        ((px, py), (px, py + ph)),
        ((px + pw, py), (px + pw, py + ph)),
    ] {
        line(img, (a.0 as f64, a.1 as f64), (b.0 as f64, b.1 as f64), black);
    }
    if x0 > x1 {
        text(img, px + 8, py + 8, "NO DATA", black, 2);
        return;
    }
    if y1 - y0 < 1e-12 {
        (y0, y1) = (y0 - 0.5, y1 + 0.5);
    }
    let pad = (y1 - y0) * 0.05;
    let (y0, y1) = (y0 - pad, y1 + pad);
    let sx = |x: f64| px as f64 + (x - x0) / (x1 - x0).max(1e-12) * pw as f64;
    let sy = |y: f64| (py + ph) as f64 - (y - y0) / (y1 - y0) * ph as f64;
    text(img, px + 2, py + 2, &format!("{y1:.3}"), black, 1);
    text(img, px + 2, py + ph - 7, &format!("{y0:.3}"), black, 1);
    text(img, px + pw - 30, py + ph + 3, &format!("{x1:.0}"), black, 1);
    text(img, px, py + ph + 3, &format!("{x0:.0}"), black, 1);
    for (k, (name, p)) in series.iter().enumerate() {
        let rgb = PALETTE[k % PALETTE.len()];
        let p: Vec<&(f64, f64)> = p.iter().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
        for pair in p.windows(2) {
            line(img, (sx(pair[0].0), sy(pair[0].1)), (sx(pair[1].0), sy(pair[1].1)), rgb);
        }
        if p.len() == 1 {
            put(img, sx(p[0].0) as usize, sy(p[0].1) as usize, rgb);
        }
        text(img, px + 4, py + ph + 12 + 8 * k, name, rgb, 1);
    }
}

/// Loss and validation-PSNR curves of a run (one line per recipe and seed) as one PNG.
pub(crate) fn curves_png(curves: &Table, path: &Path) -> anyhow::Result<()> {
    let (Some(Column::Str(method)), Some(Column::U64(seed)), Some(Column::U64(step))) =
        (curves.get("method"), curves.get("seed"), curves.get("step"))
    else {
        anyhow::bail!("curves table without method/seed/step columns");
    };
    let val_col = curves.columns.iter().find(|(n, _)| n.starts_with("val_psnr:")).map(|(n, _)| n.clone());
    let mut panels: Vec<(String, Vec<(String, Vec<(f64, f64)>)>)> = Vec::new();
    for (title, col) in [
        ("LOSS".to_string(), Some("loss".to_string())),
        (format!("PSNR {}", val_col.clone().unwrap_or_default()), val_col),
    ] {
        let Some(Column::F64(v)) = col.as_deref().and_then(|c| curves.get(c)) else { continue };
        let mut by: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for i in 0..curves.rows() {
            let name = format!("{} s{}", method[i].clone().unwrap_or_default(), seed[i].unwrap_or(0));
            if let (Some(s), Some(y)) = (step[i], v[i]) {
                by.entry(name).or_default().push((s as f64, y));
            }
        }
        panels.push((title, by.into_iter().collect()));
    }
    let legend = panels.iter().map(|(_, s)| s.len()).max().unwrap_or(0);
    let (pw, ph) = (480, 300 + 8 * legend);
    let mut img = Image::from_vec(pw * panels.len().max(1), ph, vec![1.0; pw * panels.len().max(1) * ph * 3]);
    for (k, (title, series)) in panels.iter().enumerate() {
        panel(&mut img, (k * pw + 8, 8), (pw - 16, ph - 16 - 8 * legend), title, series);
    }
    write_atomic(path, &img.png_bytes()?)?;
    Ok(())
}

/// A grid of example crops: one row per image, columns `labels` (e.g. input, methods, ground
/// truth), each a `side`² centre crop shown at `zoom`×.
pub(crate) fn crops_png(
    rows: &[Vec<Image>],
    labels: &[String],
    side: usize,
    zoom: usize,
    path: &Path,
) -> anyhow::Result<()> {
    let cols = labels.len();
    // Images smaller than `side` are shown whole, every cell the same size.
    let side = rows.iter().flatten().map(|im| im.width.min(im.height)).fold(side, usize::min);
    let cell = side * zoom + 4;
    let header = 14;
    let (w, h) = (cols * cell, header + rows.len() * cell);
    let mut img = Image::from_vec(w, h, vec![1.0; w * h * 3]);
    for (c, label) in labels.iter().enumerate() {
        let max_chars = cell / 8;
        let short: String = label.chars().take(max_chars).collect();
        text(&mut img, c * cell + 2, 2, &short, [0.0, 0.0, 0.0], 2);
    }
    for (r, row) in rows.iter().enumerate() {
        for (c, im) in row.iter().enumerate().take(cols) {
            let s = side;
            let (x0, y0) = ((im.width - s) / 2, (im.height - s) / 2);
            for y in 0..s * zoom {
                for x in 0..s * zoom {
                    for ch in 0..3 {
                        let v = im.get(x0 + x / zoom, y0 + y / zoom, ch).clamp(0.0, 1.0);
                        img.set(c * cell + 2 + x, header + r * cell + 2 + y, ch, v);
                    }
                }
            }
        }
    }
    write_atomic(path, &img.png_bytes()?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_and_crops_are_pngs_with_content() {
        let dir = std::env::temp_dir().join(format!("rp-fig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut t = Table::default();
        let n = 10;
        t.push("method", Column::Str((0..n).map(|i| Some(if i < 5 { "a" } else { "b" }.to_string())).collect()))
            .push("seed", Column::U64(vec![Some(0); n]))
            .push("step", Column::U64((0..n).map(|i| Some((i % 5 + 1) as u64 * 10)).collect()))
            .push("loss", Column::F64((0..n).map(|i| Some(1.0 / (i + 1) as f64)).collect()))
            .push("val_psnr:x", Column::F64((0..n).map(|i| Some(20.0 + i as f64)).collect()));
        let path = dir.join("curves.png");
        curves_png(&t, &path).unwrap();
        let png = Image::load(&path).unwrap();
        assert_eq!((png.width, png.height), (960, 300 + 16));
        // Both series' colours were drawn.
        let has = |rgb: [f32; 3]| png.data.chunks(3).any(|p| (0..3).all(|c| (p[c] - rgb[c]).abs() < 0.01));
        assert!(has(PALETTE[0]) && has(PALETTE[1]));

        let a = Image::from_vec(8, 8, vec![0.25; 192]);
        let b = Image::from_vec(8, 8, vec![0.75; 192]);
        let path = dir.join("crops.png");
        crops_png(&[vec![a.clone(), b.clone()], vec![b, a]], &["input".into(), "gt".into()], 8, 2, &path).unwrap();
        let png = Image::load(&path).unwrap();
        assert_eq!((png.width, png.height), (2 * 20, 14 + 2 * 20));
        // Row 0 column 0 shows the first image, column 1 the second.
        assert!((png.get(2, 16, 0) - 0.25).abs() < 0.01 && (png.get(22, 16, 0) - 0.75).abs() < 0.01);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

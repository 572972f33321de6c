//! Figures people would rather look at than read: training curves as SVG (`curves.svg`, the
//! charts of the HTML report) and example crops — a labelled PNG grid per test set, and each
//! crop on its own with its PSNR (`crops/<test set>/`, listed in `crops.json`) for the report.
//!
//! The grid is drawn directly on an [`Image`] canvas (no plotting crate: compile time matters)
//! with a tiny built-in 3×5 pixel font for its labels.

use std::path::Path;

use crate::image::Image;
use crate::util::write_atomic;

#[cfg(test)]
use super::Column;
use super::Table;

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

/// Loss and validation-PSNR curves of a run (one line per recipe and seed) as one SVG: the
/// report's charts stacked.
pub(crate) fn curves_svg(curves: &Table, path: &Path) -> anyhow::Result<()> {
    if !matches!((curves.get("method"), curves.get("seed"), curves.get("step")), (Some(_), Some(_), Some(_))) {
        anyhow::bail!("curves table without method/seed/step columns");
    }
    let mut charts = vec![("loss".to_string(), "training loss (total)".to_string(), "loss")];
    for (name, _) in curves.columns.iter().filter(|(n, _)| n.starts_with("val_psnr:")) {
        let set = name.trim_start_matches("val_psnr:");
        charts.push((name.clone(), format!("validation PSNR: {set}"), "PSNR (dB)"));
    }
    let (mut width, mut y) = (0f64, 0.0);
    let mut body = String::new();
    for (column, title, y_label) in &charts {
        let series = super::html::curve_series(curves, column);
        let (w, h) = super::svg::line_chart_size(series.len());
        let chart = super::svg::line_chart(column, title, &series, "step", y_label, false);
        body.push_str(&chart.replacen("<svg ", &format!("<svg y=\"{y}\" "), 1));
        (width, y) = (width.max(w), y + h);
    }
    let svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{y}\" viewBox=\"0 0 {width} {y}\" style=\"background:#fff\">{body}</svg>\n"
    );
    write_atomic(path, svg.as_bytes())?;
    Ok(())
}

/// The crops of one test set for the report: `crops/<test>/r<row>-c<col>.png` and
/// `crops/<test>/crops.json` (labels, image ids, PSNR of each crop against the ground truth's;
/// the last column is the ground truth).
pub(crate) fn crop_cells(
    rows: &[(String, Vec<Image>)],
    labels: &[String],
    side: usize,
    dir: &Path,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let side = rows.iter().flat_map(|r| r.1.iter()).map(|im| im.width.min(im.height)).fold(side, usize::min);
    let centre = |im: &Image| im.crop((im.width - side) / 2, (im.height - side) / 2, side, side).clamped().quantized();
    let mut manifest = Vec::new();
    for (r, (id, images)) in rows.iter().enumerate() {
        let crops: Vec<Image> = images.iter().map(centre).collect();
        let reference = crops.last().cloned();
        let mut cells = Vec::new();
        for (c, crop) in crops.iter().enumerate() {
            let file = format!("r{r}-c{c}.png");
            write_atomic(&dir.join(&file), &crop.png_bytes()?)?;
            let psnr = match &reference {
                Some(gt) if c + 1 < crops.len() => crate::metrics::psnr(crop, gt, 1.0).ok(),
                _ => None,
            };
            cells.push(serde_json::json!({"file": file, "psnr": psnr.filter(|p| p.is_finite())}));
        }
        manifest.push(serde_json::json!({"image": id, "cells": cells}));
    }
    let json = serde_json::json!({"labels": labels, "side": side, "rows": manifest});
    write_atomic(&dir.join("crops.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;
    Ok(())
}

/// The crops written by [`crop_cells`], checked before use: the manifest parses, every listed
/// file is a PNG of the stated size in this folder. `None` when absent or not as written.
pub(crate) fn read_crop_cells(dir: &Path, test_set: &str) -> Option<super::html::CropGrid> {
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("crops.json")).ok()?).ok()?;
    let labels: Vec<String> = serde_json::from_value(json.get("labels")?.clone()).ok()?;
    let side = json.get("side")?.as_u64()? as usize;
    let mut rows = Vec::new();
    for row in json.get("rows")?.as_array()? {
        let id = row.get("image")?.as_str()?.to_string();
        let mut cells = Vec::new();
        for cell in row.get("cells")?.as_array()? {
            let file = cell.get("file")?.as_str()?;
            crate::util::check_name(file).ok()?;
            let path = dir.join(file);
            let img = Image::load(&path).ok()?;
            if (img.width, img.height) != (side, side) {
                return None;
            }
            cells.push((std::fs::read(&path).ok()?, cell.get("psnr").and_then(|p| p.as_f64())));
        }
        if cells.len() != labels.len() {
            return None;
        }
        rows.push((id, cells));
    }
    Some(super::html::CropGrid { test_set: test_set.to_string(), labels, rows })
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
    fn curves_svg_and_crops_with_content() {
        let dir = std::env::temp_dir().join(format!("rp-fig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut t = Table::default();
        let n = 10;
        t.push("method", Column::Str((0..n).map(|i| Some(if i < 5 { "a" } else { "b" }.to_string())).collect()))
            .push("seed", Column::U64(vec![Some(0); n]))
            .push("step", Column::U64((0..n).map(|i| Some((i % 5 + 1) as u64 * 10)).collect()))
            .push("loss", Column::F64((0..n).map(|i| Some(1.0 / (i + 1) as f64)).collect()))
            .push("val_psnr:x", Column::F64((0..n).map(|i| Some(20.0 + i as f64)).collect()));
        let path = dir.join("curves.svg");
        curves_svg(&t, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg xmlns"), "{svg}");
        // Two charts (loss, validation PSNR) of two series each.
        assert_eq!(svg.matches(r#"<g class="series""#).count(), 4);
        assert!(svg.contains("validation PSNR: x") && svg.contains("a seed 0"));

        let a = Image::from_vec(8, 8, vec![0.25; 192]);
        let b = Image::from_vec(8, 8, vec![0.75; 192]);
        let path = dir.join("crops.png");
        crops_png(
            &[vec![a.clone(), b.clone()], vec![b.clone(), a.clone()]],
            &["input".into(), "gt".into()],
            8,
            2,
            &path,
        )
        .unwrap();
        let png = Image::load(&path).unwrap();
        assert_eq!((png.width, png.height), (2 * 20, 14 + 2 * 20));
        // Row 0 column 0 shows the first image, column 1 the second.
        assert!((png.get(2, 16, 0) - 0.25).abs() < 0.01 && (png.get(22, 16, 0) - 0.75).abs() < 0.01);

        let cells = dir.join("crops").join("t");
        crop_cells(&[("im0".into(), vec![a.clone(), b.clone()])], &["input".into(), "gt".into()], 64, &cells).unwrap();
        let grid = read_crop_cells(&cells, "t").unwrap();
        assert_eq!(grid.labels, ["input", "gt"]);
        let psnr = grid.rows[0].1[0].1.unwrap();
        // 8-bit 64 vs 191: 20·log10(255 / 127) = 6.06 dB.
        assert!((psnr - 20.0 * (255.0f64 / 127.0).log10()).abs() < 1e-6, "{psnr}");
        assert!(grid.rows[0].1[1].1.is_none(), "no PSNR for the reference");
        // A crop that is not what the manifest says is not used.
        std::fs::write(cells.join("r0-c1.png"), b"not a png").unwrap();
        assert!(read_crop_cells(&cells, "t").is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

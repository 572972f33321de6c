//! `run-pipeline score`: re-score restored images against references with a named protocol,
//! for single images or whole folders (paired by name, or by natural order).

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::datasets::layouts::images_in;
use crate::error::{Failure, Result};
use crate::image::Image;
use crate::protocols::{self, ProtocolKind};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// JSON has no infinity: a PSNR of identical images (+∞) is written as the string
/// `"Infinity"` (and −∞ / NaN as `"-Infinity"` / `"NaN"`), the spelling JavaScript's
/// `Number()` and Python's `float()` read back; finite values stay numbers (CSV the same).
fn json_f64<S: serde::Serializer>(v: &f64, s: S) -> std::result::Result<S::Ok, S::Error> {
    match *v {
        v if v.is_finite() => s.serialize_f64(v),
        v if v.is_nan() => s.serialize_str("NaN"),
        v if v > 0.0 => s.serialize_str("Infinity"),
        _ => s.serialize_str("-Infinity"),
    }
}

fn json_value(v: f64) -> serde_json::Value {
    json_f64(&v, serde_json::value::Serializer).expect("a number or a string")
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub restored: String,
    pub reference: String,
    pub protocol: &'static str,
    #[serde(serialize_with = "json_f64")]
    pub psnr: f64,
    #[serde(serialize_with = "json_f64")]
    pub ssim: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssim_per_channel: Option<f64>,
}

fn images(dir: &Path) -> Result<Vec<PathBuf>> {
    images_in(dir).map_err(|e| Failure::data(format!("{}: cannot list: {e}", dir.display())))
}

/// Pair two files, or two folders by file stem (or natural order when `by_order`).
pub fn pairs(restored: &Path, reference: &Path, by_order: bool) -> Result<Vec<(PathBuf, PathBuf)>> {
    match (restored.is_dir(), reference.is_dir()) {
        (false, false) => Ok(vec![(restored.to_path_buf(), reference.to_path_buf())]),
        (true, true) => {
            let (a, b) = (images(restored)?, images(reference)?);
            if by_order {
                if a.len() != b.len() {
                    return Err(Failure::data(format!(
                        "{} has {} images but {} has {}: cannot pair by order",
                        restored.display(),
                        a.len(),
                        reference.display(),
                        b.len()
                    )));
                }
                return Ok(a.into_iter().zip(b).collect());
            }
            let stem = |p: &PathBuf| p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let mut out = Vec::new();
            let mut missing = Vec::new();
            for r in &a {
                match b.iter().find(|x| stem(x) == stem(r)) {
                    Some(x) => out.push((r.clone(), x.clone())),
                    None => missing.push(r.display().to_string()),
                }
            }
            if !missing.is_empty() {
                return Err(Failure::data(format!(
                    "no reference with the same name for {} image(s): {} (use --by-order to pair by sorted order)",
                    missing.len(),
                    missing.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
                )));
            }
            if out.is_empty() {
                return Err(Failure::data(format!("{}: no images to score", restored.display())));
            }
            Ok(out)
        }
        _ => Err(Failure::config("give two image files or two folders")),
    }
}

pub fn score_pairs(pairs: &[(PathBuf, PathBuf)], protocol: ProtocolKind) -> Result<Vec<Row>> {
    pairs
        .par_iter()
        .map(|(r, g)| {
            let load = |p: &Path| {
                let (img, bits) = Image::load_with_depth(p).map_err(|e| Failure::data(format!("{e:#}")))?;
                if bits > 8 {
                    // The protocols score uint8 images (the authors' `img2uint8` step): said, not silent.
                    tracing::warn!(
                        file = %p.display(),
                        "{bits}-bit image scored at 8 bits (each value rounded to the nearest of 256 levels), \
                         as the {} protocol scores uint8 images",
                        protocol.name()
                    );
                }
                Ok::<_, Failure>(img)
            };
            let (a, b) = (load(r)?, load(g)?);
            if a.gray != b.gray {
                let (gray, colour) = if a.gray { (r, g) } else { (g, r) };
                return Err(Failure::data(format!(
                    "{} is grayscale and {} is colour: the gray one would be scored as three equal channels \
                     against colour; give both in the same colour form",
                    gray.display(),
                    colour.display()
                )));
            }
            let s = protocols::score(protocol, &a, &b)
                .map_err(|e| Failure::data(format!("{} vs {}: {e:#}", r.display(), g.display())))?;
            Ok(Row {
                restored: r.display().to_string(),
                reference: g.display().to_string(),
                protocol: protocol.name(),
                psnr: s.psnr,
                ssim: s.ssim,
                ssim_per_channel: s.extra("ssim_per_channel"),
            })
        })
        .collect()
}

/// The rows as a table (`scores.parquet` / `.csv`).
pub fn table(rows: &[Row]) -> crate::reports::Table {
    use crate::reports::{Column, Table};
    let s = |f: &dyn Fn(&Row) -> String| Column::Str(rows.iter().map(|r| Some(f(r))).collect());
    let mut t = Table::default();
    t.push("restored", s(&|r| r.restored.clone()))
        .push("reference", s(&|r| r.reference.clone()))
        .push("protocol", s(&|r| r.protocol.to_string()))
        .push("psnr", Column::F64(rows.iter().map(|r| Some(r.psnr)).collect()))
        .push("ssim", Column::F64(rows.iter().map(|r| Some(r.ssim)).collect()));
    t
}

pub fn render(rows: &[Row], format: Format) -> Result<String> {
    let n = rows.len() as f64;
    let mean_psnr = rows.iter().map(|r| r.psnr).sum::<f64>() / n;
    let mean_ssim = rows.iter().map(|r| r.ssim).sum::<f64>() / n;
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(&serde_json::json!({
            "protocol": rows.first().map(|r| r.protocol),
            "images": rows.len(),
            "mean_psnr": json_value(mean_psnr),
            "mean_ssim": json_value(mean_ssim),
            "rows": rows,
        }))
        .expect("json"),
        Format::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            for r in rows {
                w.serialize(r).map_err(|e| Failure::internal(e.to_string()))?;
            }
            String::from_utf8(w.into_inner().map_err(|e| Failure::internal(e.to_string()))?).expect("utf8")
        }
        Format::Table => {
            let mut out = String::new();
            for r in rows {
                out.push_str(&format!("{:<40} PSNR {:>8.4} dB  SSIM {:.6}\n", r.restored, r.psnr, r.ssim));
            }
            out.push_str(&format!(
                "mean over {} image(s), protocol {}: PSNR {mean_psnr:.4} dB  SSIM {mean_ssim:.6}\n",
                rows.len(),
                rows.first().map(|r| r.protocol).unwrap_or("-")
            ));
            out
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_images_write_infinity_as_a_documented_string_in_json() {
        let row = |psnr: f64| Row {
            restored: "a.png".into(),
            reference: "b.png".into(),
            protocol: "rgb",
            psnr,
            ssim: 1.0,
            ssim_per_channel: None,
        };
        let out = render(&[row(f64::INFINITY), row(f64::INFINITY)], Format::Json).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["rows"][0]["psnr"], "Infinity");
        assert_eq!(v["mean_psnr"], "Infinity");
        assert_eq!(v["rows"][0]["ssim"], 1.0);
        let out = render(&[row(31.5)], Format::Json).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["rows"][0]["psnr"], 31.5);
    }
}

/// `run-pipeline score`: pair, score and print.
pub fn score(
    restored: &Path,
    reference: &Path,
    kind: crate::protocols::ProtocolKind,
    by_order: bool,
    format: Format,
) -> crate::error::Result<()> {
    let pairs = pairs(restored, reference, by_order)?;
    let rows = score_pairs(&pairs, kind)?;
    print!("{}", render(&rows, format)?);
    Ok(())
}

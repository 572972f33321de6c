//! The in-memory image type every stage exchanges, and PNG I/O.
//!
//! Pixels are RGB, interleaved (HWC), `f32`, nominally in [0, 1]. Values may leave that range
//! (unclipped AWGN, raw network outputs); conversion to 8 bits rounds and clamps.

use anyhow::Result;
use std::path::Path;

#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    /// `height * width * 3` values, row-major, RGB interleaved.
    pub data: Vec<f32>,
    /// Read from a single-channel (grayscale) file: the three channels hold the same value.
    /// Scoring protocols that convert to luma use that value as it is, as the published
    /// scripts do with a one-channel image.
    pub gray: bool,
}

impl Image {
    pub fn new(width: usize, height: usize) -> Self {
        Image { width, height, data: vec![0.0; width * height * 3], gray: false }
    }

    pub fn from_vec(width: usize, height: usize, data: Vec<f32>) -> Self {
        assert_eq!(data.len(), width * height * 3, "image buffer has the wrong length");
        Image { width, height, data, gray: false }
    }

    #[inline]
    pub(crate) fn idx(&self, x: usize, y: usize, c: usize) -> usize {
        (y * self.width + x) * 3 + c
    }

    #[inline]
    pub fn get(&self, x: usize, y: usize, c: usize) -> f32 {
        self.data[self.idx(x, y, c)]
    }

    #[inline]
    pub fn set(&mut self, x: usize, y: usize, c: usize, v: f32) {
        let i = self.idx(x, y, c);
        self.data[i] = v;
    }

    pub(crate) fn same_size(&self, other: &Image) -> bool {
        self.width == other.width && self.height == other.height
    }

    /// Copy of the `w × h` window whose top-left corner is `(x0, y0)`.
    pub fn crop(&self, x0: usize, y0: usize, w: usize, h: usize) -> Image {
        assert!(x0 + w <= self.width && y0 + h <= self.height, "crop outside the image");
        let mut out = Image { gray: self.gray, ..Image::new(w, h) };
        for y in 0..h {
            let src = self.idx(x0, y0 + y, 0);
            out.data[y * w * 3..(y + 1) * w * 3].copy_from_slice(&self.data[src..src + w * 3]);
        }
        out
    }

    pub(crate) fn clamped(&self) -> Image {
        Image {
            width: self.width,
            height: self.height,
            data: self.data.iter().map(|v| v.clamp(0.0, 1.0)).collect(),
            gray: self.gray,
        }
    }

    /// Round to 8 bits and back (what saving to PNG and reloading does).
    pub fn quantized(&self) -> Image {
        Image {
            width: self.width,
            height: self.height,
            data: self.data.iter().map(|&v| quantize_u8(v) as f32 / 255.0).collect(),
            gray: self.gray,
        }
    }

    pub fn to_rgb8(&self) -> Vec<u8> {
        self.data.iter().map(|&v| quantize_u8(v)).collect()
    }

    pub fn from_rgb8(width: usize, height: usize, bytes: &[u8]) -> Image {
        Image::from_vec(width, height, bytes.iter().map(|&b| b as f32 / 255.0).collect())
    }

    /// Read an image file as 8-bit RGB; a grayscale file (with or without alpha) is replicated
    /// to the three channels and marked [`Image::gray`].
    pub fn load(path: &Path) -> Result<Image> {
        Image::load_with_depth(path).map(|(img, _)| img)
    }

    /// [`Image::load`], and the file's bits per channel (8, 16, 32): deeper files are rounded
    /// to 8 bits, which callers that score may want to say.
    pub fn load_with_depth(path: &Path) -> Result<(Image, u16)> {
        let img = decode(path).map_err(|e| anyhow::anyhow!("{}: cannot read image: {e}", path.display()))?;
        let gray = !img.color().has_color();
        let c = img.color();
        let bits = c.bits_per_pixel() / c.channel_count().max(1) as u16;
        let img = img.to_rgb8();
        let (w, h) = img.dimensions();
        Ok((Image { gray, ..Image::from_rgb8(w as usize, h as usize, img.as_raw()) }, bits))
    }

    /// Encode as an 8-bit RGB PNG.
    pub fn png_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let enc = image::codecs::png::PngEncoder::new(&mut out);
        image::ImageEncoder::write_image(
            enc,
            &self.to_rgb8(),
            self.width as u32,
            self.height as u32,
            image::ExtendedColorType::Rgb8,
        )?;
        Ok(out)
    }
}

#[inline]
/// Inverse sRGB transfer function (IEC 61966-2-1): display value → linear light.
pub fn srgb_to_linear(v: f64) -> f64 {
    if v <= 0.04045 { v / 12.92 } else { ((v + 0.055) / 1.055).powf(2.4) }
}

/// sRGB transfer function: linear light → display value.
pub fn linear_to_srgb(v: f64) -> f64 {
    if v <= 0.0031308 { 12.92 * v } else { 1.055 * v.powf(1.0 / 2.4) - 0.055 }
}

pub fn quantize_u8(v: f32) -> u8 {
    (v * 255.0).round().clamp(0.0, 255.0) as u8
}

/// The reader of an image file by its content, not its name (a JPEG named `.png` reads as the
/// JPEG it is); the error says what the file starts with when it is no image this tool reads.
fn reader(
    path: &std::path::Path,
) -> std::result::Result<image::ImageReader<std::io::BufReader<std::fs::File>>, String> {
    let mut head = [0u8; 16];
    let n = std::io::Read::read(&mut std::fs::File::open(path).map_err(|e| e.to_string())?, &mut head)
        .map_err(|e| e.to_string())?;
    let r = image::ImageReader::open(path).map_err(|e| e.to_string())?;
    match image::guess_format(&head[..n]) {
        Ok(format) => {
            let mut r = r;
            r.set_format(format);
            Ok(r)
        }
        // TGA has no signature: its name is all there is.
        Err(_) if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("tga")) => {
            r.with_guessed_format().map_err(|e| e.to_string())
        }
        Err(_) => Err(format!(
            "not an image this tool reads (PNG, JPEG, TIFF, BMP, WebP, ...): it starts with bytes {:02x?}",
            &head[..n.min(8)]
        )),
    }
}

/// An image file's size from its header, its format taken from its content.
pub fn dimensions_of(path: &std::path::Path) -> std::result::Result<(u32, u32), String> {
    reader(path)?.into_dimensions().map_err(|e| e.to_string())
}

/// An image file decoded, its format taken from its content.
pub fn decode(path: &std::path::Path) -> std::result::Result<image::DynamicImage, String> {
    reader(path)?.decode().map_err(|e| e.to_string())
}

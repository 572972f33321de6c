//! Synthetic source degradations, generated in parallel and deterministically.
//!
//! Every image's randomness comes from `(global seed, image index)` alone (see [`crate::rng`]),
//! so the result does not depend on rayon's thread count or scheduling.

pub mod blur;
pub mod camera;
pub mod jpeg;
pub mod rain;
pub mod real;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::image::Image;
use crate::rng::Rng;

/// A degradation applied to clean images to make synthetic training pairs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum DegradationSpec {
    /// Additive white Gaussian noise, σ drawn per image uniformly from `sigma` (in 8-bit
    /// units, i.e. divided by 255), unclipped and unquantised as in the paper's source.
    Awgn { sigma: [f64; 2] },
    /// Rain100/Rain13K-style streak layers composited additively (see [`rain::synth_rain`]).
    Rain(rain::RainConfig),
    /// GoPro-style frame averaging and random linear / camera-shake kernels (see
    /// [`blur::synth_blur`]).
    Blur(blur::BlurConfig),
}

/// What was drawn for one image; becomes columns of the per-image report.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DegradationParams {
    /// AWGN σ in 8-bit units.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sigma: Option<f64>,
    /// Simulated camera ISO.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub iso: Option<u32>,
    /// Shot-noise variance factor of the simulated camera (linear raw units).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub shot: Option<f64>,
    /// Read-noise variance of the simulated camera (linear raw units).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub read: Option<f64>,
    /// Rain: number of streak layers drawn.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rain_layers: Option<u64>,
    /// Rain: fraction of pixels seeding a drop (mean over layers).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rain_density: Option<f64>,
    /// Rain streak or blur direction, degrees (rain: from vertical; blur: of the linear kernel).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub angle: Option<f64>,
    /// Rain streak or motion length, pixels.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub length: Option<f64>,
    /// Rain streak width, pixels.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub width: Option<f64>,
    /// Blur: how it was made (`frames`, `linear`, `shake`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub blur: Option<String>,
    /// Blur: kernel side (or motion-path extent for frame averaging), pixels.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kernel_size: Option<u64>,
    /// Metadata of real data (e.g. SIDD's scene, phone, ISO from the folder name), kept as
    /// string columns in the per-image report.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub meta: Vec<(String, String)>,
}

impl DegradationParams {
    /// The report columns of a rain draw (synthetic or real-like).
    pub(crate) fn from_rain(d: &rain::RainDraw) -> Self {
        DegradationParams {
            rain_layers: Some(d.layers as u64),
            rain_density: Some(d.density),
            angle: Some(d.angle),
            length: Some(d.length),
            width: Some(d.width),
            ..Default::default()
        }
    }

    /// The report columns of a blur draw (synthetic or real-like).
    pub(crate) fn from_blur(d: &blur::BlurDraw) -> Self {
        DegradationParams {
            blur: Some(d.kind.as_str().to_string()),
            kernel_size: Some(d.size as u64),
            length: Some(d.length),
            angle: d.angle.is_finite().then_some(d.angle),
            ..Default::default()
        }
    }
}

impl std::fmt::Display for DegradationSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DegradationSpec::Awgn { sigma } => write!(f, "AWGN σ ~ U[{}, {}]/255", sigma[0], sigma[1]),
            DegradationSpec::Rain(c) => write!(
                f,
                "rain, {}–{} layers, density {}–{}, length {}–{} px, angle {}–{}°",
                c.layers[0], c.layers[1], c.density[0], c.density[1], c.length[0], c.length[1], c.angle[0], c.angle[1]
            ),
            DegradationSpec::Blur(c) => {
                write!(f, "blur ({}), {}–{} px", c.kind.as_str(), c.size[0], c.size[1])
            }
        }
    }
}

impl DegradationSpec {
    /// Degrade one clean image; randomness from `(seed, index)` only.
    pub(crate) fn apply(&self, clean: &Image, seed: u64, index: u64) -> (Image, DegradationParams) {
        match self {
            DegradationSpec::Awgn { sigma } => {
                let mut rng = Rng::derive(seed, "awgn", &[index]);
                let s = rng.range(sigma[0], sigma[1]);
                let std = (s / 255.0) as f32;
                let data = clean.data.iter().map(|&v| v + std * rng.normal() as f32).collect();
                (
                    Image::from_vec(clean.width, clean.height, data),
                    DegradationParams { sigma: Some(s), ..Default::default() },
                )
            }
            DegradationSpec::Rain(cfg) => {
                let mut rng = Rng::derive(seed, "rain", &[index]);
                let (img, draw) = rain::synth_rain(clean, cfg, &mut rng);
                (img, DegradationParams::from_rain(&draw))
            }
            DegradationSpec::Blur(cfg) => {
                let mut rng = Rng::derive(seed, "blur", &[index]);
                let (img, draw) = blur::synth_blur(clean, cfg, &mut rng);
                (img, DegradationParams::from_blur(&draw))
            }
        }
    }

    /// Degrade many images in parallel; `first_index` offsets the per-image streams.
    pub(crate) fn apply_all(&self, clean: &[Image], seed: u64, first_index: u64) -> Vec<(Image, DegradationParams)> {
        clean.par_iter().enumerate().map(|(i, img)| self.apply(img, seed, first_index + i as u64)).collect()
    }

    /// Whether drawing it afresh for every small training crop is cheap and faithful: noise
    /// and rain are local; blur needs the content beyond the crop's edge, so it is drawn once
    /// per image.
    pub(crate) fn redrawable(&self) -> bool {
        !matches!(self, DegradationSpec::Blur(_))
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        match self {
            DegradationSpec::Awgn { sigma } => {
                if !(sigma[0] >= 0.0 && sigma[1] >= sigma[0]) {
                    return Err(format!("awgn.sigma must satisfy 0 <= lo <= hi, got {sigma:?}"));
                }
            }
            DegradationSpec::Rain(cfg) => cfg.validate()?,
            DegradationSpec::Blur(cfg) => cfg.validate()?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean_set(n: usize) -> Vec<Image> {
        (0..n)
            .map(|i| {
                let mut img = Image::new(16, 12);
                for (k, v) in img.data.iter_mut().enumerate() {
                    *v = ((k * 7 + i * 13) % 256) as f32 / 255.0;
                }
                img
            })
            .collect()
    }

    #[test]
    fn synthesis_is_identical_across_thread_counts() {
        for spec in [
            DegradationSpec::Awgn { sigma: [0.0, 75.0] },
            DegradationSpec::Rain(rain::RainConfig::default()),
            DegradationSpec::Blur(blur::BlurConfig::default()),
        ] {
            same_across_threads(&spec);
        }
    }

    /// Rain and blur specs read from a pipeline: defaults fill left-out keys, draws reach the
    /// per-image parameters, and a bad range names its key.
    #[test]
    fn rain_and_blur_specs_from_yaml() {
        let spec: DegradationSpec = serde_json::from_str(r#"{"rain": {"layers": [2, 2]}}"#).unwrap();
        let DegradationSpec::Rain(cfg) = &spec else { panic!("{spec:?}") };
        assert_eq!(cfg.density, rain::RainConfig::default().density);
        let (_, p) = spec.apply(&clean_set(1)[0], 3, 0);
        assert_eq!(p.rain_layers, Some(2));
        assert!(p.rain_density.is_some_and(|d| d >= cfg.density[0] && d <= cfg.density[1]), "{p:?}");
        let spec: DegradationSpec = serde_json::from_str(r#"{"blur": {"kind": "linear", "size": [5, 7]}}"#).unwrap();
        let (_, p) = spec.apply(&clean_set(1)[0], 3, 0);
        assert_eq!(p.blur.as_deref(), Some("linear"));
        assert!(matches!(p.kernel_size, Some(5 | 7)) && p.angle.is_some(), "{p:?}");
        let bad: DegradationSpec = serde_json::from_str(r#"{"blur": {"size": [4, 9]}}"#).unwrap();
        assert!(bad.validate().unwrap_err().starts_with("blur.size must be odd"));
        assert!(serde_json::from_str::<DegradationSpec>(r#"{"rain": {"densty": [0, 1]}}"#).is_err());
    }

    fn same_across_threads(spec: &DegradationSpec) {
        let clean = clean_set(24);
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| spec.apply_all(&clean, 42, 0))
        };
        let one = run(1);
        let four = run(4);
        assert_eq!(one, four);
        // And per-image draws depend on the index, not on the position in the batch.
        let tail = spec.apply_all(&clean[10..], 42, 10);
        assert_eq!(&one[10..], &tail[..]);
    }

    #[test]
    fn awgn_sigma_range_and_noise_level() {
        let spec = DegradationSpec::Awgn { sigma: [20.0, 30.0] };
        let clean = vec![Image::new(64, 64); 8];
        for (i, (noisy, p)) in spec.apply_all(&clean, 1, 0).into_iter().enumerate() {
            let s = p.sigma.unwrap();
            assert!((20.0..30.0).contains(&s), "image {i}: σ {s}");
            let n = noisy.data.len() as f64;
            let std = (noisy.data.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / n).sqrt();
            assert!((std * 255.0 - s).abs() < 0.05 * s, "measured {} vs σ {s}", std * 255.0);
            assert!(noisy.data.iter().any(|&v| v < 0.0), "AWGN must stay unclipped");
        }
    }
}

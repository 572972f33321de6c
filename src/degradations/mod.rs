//! Synthetic source degradations, generated in parallel and deterministically.
//!
//! Every image's randomness comes from `(global seed, image index)` alone (see [`crate::rng`]),
//! so the result does not depend on rayon's thread count or scheduling.

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
    /// Metadata of real data (e.g. SIDD's scene, phone, ISO from the folder name), kept as
    /// string columns in the per-image report.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub meta: Vec<(String, String)>,
}

impl std::fmt::Display for DegradationSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DegradationSpec::Awgn { sigma } => write!(f, "AWGN σ ~ U[{}, {}]/255", sigma[0], sigma[1]),
        }
    }
}

impl DegradationSpec {
    /// Degrade one clean image; randomness from `(seed, index)` only.
    pub fn apply(&self, clean: &Image, seed: u64, index: u64) -> (Image, DegradationParams) {
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
        }
    }

    /// Degrade many images in parallel; `first_index` offsets the per-image streams.
    pub fn apply_all(&self, clean: &[Image], seed: u64, first_index: u64) -> Vec<(Image, DegradationParams)> {
        clean.par_iter().enumerate().map(|(i, img)| self.apply(img, seed, first_index + i as u64)).collect()
    }

    pub fn validate(&self) -> Result<(), String> {
        match self {
            DegradationSpec::Awgn { sigma } => {
                if !(sigma[0] >= 0.0 && sigma[1] >= sigma[0]) {
                    return Err(format!("awgn.sigma must satisfy 0 <= lo <= hi, got {sigma:?}"));
                }
            }
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
        let spec = DegradationSpec::Awgn { sigma: [0.0, 75.0] };
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

//! The simulated "real" domains, in one place: the stand-ins for SIDD noise (a camera
//! pipeline, [`super::camera`]), SPA-Data rain ([`super::rain::real_rain`]) and RealBlur shake
//! ([`super::blur::real_blur`]) that a pipeline adapts to when the real data is not at hand.
//! This module names them ([`Preset`], the registry's `preset = "…"`), turns a preset into its
//! calibrated configuration ([`RealDomain`]) and renders one image — degraded, its ground truth
//! (the same capture with the degradation off: the clean look of the domain) and what was drawn.
//! The physics of each stays beside its synthetic counterpart, which shares its kernels.

use serde::{Deserialize, Serialize};

use super::DegradationParams;
use super::blur::RealBlurConfig;
use super::camera::{self, CameraConfig};
use super::rain::RealRainConfig;
use crate::image::Image;
use crate::rng::Rng;

/// Which degradation a simulated domain stands in for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Noise,
    Rain,
    Blur,
}

/// A calibrated simulated domain, as named in `datasets.toml`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// SIDD's sRGB validation noise (≈ 23.7 dB input PSNR).
    SiddLike,
    /// A harder phone capture: coarser grain, stronger chroma blotches, JPEG.
    Harsh,
    /// SPA-Data's real rain.
    SpaLike,
    /// Denser, brighter real-like rain.
    Heavy,
    /// RealBlur-J: low-light shake, saturated lights, noise, JPEG.
    RealblurJ,
    /// RealBlur-R: the same capture without JPEG.
    RealblurR,
}

impl Preset {
    pub(crate) fn family(self) -> Family {
        match self {
            Preset::SiddLike | Preset::Harsh => Family::Noise,
            Preset::SpaLike | Preset::Heavy => Family::Rain,
            Preset::RealblurJ | Preset::RealblurR => Family::Blur,
        }
    }

    /// The preset a family uses when the registry names none.
    pub(crate) fn default_for(family: Family) -> Preset {
        match family {
            Family::Noise => Preset::SiddLike,
            Family::Rain => Preset::SpaLike,
            Family::Blur => Preset::RealblurJ,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Preset::SiddLike => "sidd_like",
            Preset::Harsh => "harsh",
            Preset::SpaLike => "spa_like",
            Preset::Heavy => "heavy",
            Preset::RealblurJ => "realblur_j",
            Preset::RealblurR => "realblur_r",
        }
    }

    /// The presets of `family`, for error messages.
    pub fn of(family: Family) -> Vec<Preset> {
        [Preset::SiddLike, Preset::Harsh, Preset::SpaLike, Preset::Heavy, Preset::RealblurJ, Preset::RealblurR]
            .into_iter()
            .filter(|p| p.family() == family)
            .collect()
    }
}

/// A simulated domain with its full configuration (what a preset resolves to). Serialised
/// into the shard cache's keys, so a change of calibration regenerates the data.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "domain", rename_all = "snake_case")]
pub enum RealDomain {
    Camera(CameraConfig),
    Rain(RealRainConfig),
    Blur(RealBlurConfig),
}

impl RealDomain {
    /// The domain of `family` with `preset` (its default when `None`); a preset of another
    /// family is an error naming the family's presets.
    pub fn new(family: Family, preset: Option<Preset>) -> Result<RealDomain, String> {
        let preset = preset.unwrap_or(Preset::default_for(family));
        if preset.family() != family {
            let known: Vec<&str> = Preset::of(family).iter().map(|p| p.name()).collect();
            return Err(format!(
                "preset \"{}\" simulates {:?}, not {:?} (expected {})",
                preset.name(),
                preset.family(),
                family,
                known.join(" or ")
            ));
        }
        Ok(match preset {
            Preset::SiddLike => RealDomain::Camera(CameraConfig::sidd_like()),
            Preset::Harsh => RealDomain::Camera(CameraConfig::harsh()),
            Preset::SpaLike => RealDomain::Rain(RealRainConfig::default()),
            Preset::Heavy => RealDomain::Rain(RealRainConfig::heavy()),
            Preset::RealblurJ => RealDomain::Blur(RealBlurConfig::default()),
            Preset::RealblurR => RealDomain::Blur(RealBlurConfig::realblur_r()),
        })
    }

    /// Degraded image, ground truth (when asked) and the drawn parameters of image `index`;
    /// its randomness depends on `(seed, index)` alone.
    pub fn render(
        &self,
        clean: &Image,
        seed: u64,
        index: u64,
        with_gt: bool,
    ) -> (Image, Option<Image>, DegradationParams) {
        match self {
            RealDomain::Camera(cfg) => {
                let mut rng = Rng::derive(seed, "camera-params", &[index]);
                let p = camera::sample_params(cfg, &mut rng);
                let mut noise = Rng::derive(seed, "camera-noise", &[index]);
                let (noisy, gt) = camera::capture(clean, &p, Some(&mut noise));
                let params = DegradationParams {
                    iso: Some(p.iso),
                    shot: Some(p.shot),
                    read: Some(p.read),
                    ..Default::default()
                };
                (noisy, with_gt.then_some(gt), params)
            }
            RealDomain::Rain(cfg) => {
                let mut rng = Rng::derive(seed, "rain", &[index]);
                let (rainy, scene, draw) = super::rain::real_rain(clean, cfg, &mut rng);
                // Real rain's ground truth is the scene behind the streaks, its haze included.
                (rainy, with_gt.then_some(scene), DegradationParams::from_rain(&draw))
            }
            RealDomain::Blur(cfg) => {
                let mut rng = Rng::derive(seed, "blur", &[index]);
                let (blurred, gt, draw) = super::blur::real_blur(clean, cfg, &mut rng);
                (blurred, with_gt.then_some(gt), DegradationParams::from_blur(&draw))
            }
        }
    }

    /// The ground truth of image `index`: what the simulated capture records with the
    /// degradation off — the clean look of this domain.
    pub fn reference(&self, clean: &Image, seed: u64, index: u64) -> Image {
        self.render(clean, seed, index, true).1.expect("ground truth was asked for")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_by_name_and_belong_to_one_family() {
        for family in [Family::Noise, Family::Rain, Family::Blur] {
            for p in Preset::of(family) {
                let parsed: Preset = serde_json::from_value(serde_json::json!(p.name())).unwrap();
                assert_eq!(parsed, p);
                assert!(RealDomain::new(family, Some(p)).is_ok());
            }
            assert!(RealDomain::new(family, None).is_ok());
        }
        let err = RealDomain::new(Family::Rain, Some(Preset::RealblurJ)).unwrap_err();
        assert!(err.contains("realblur_j") && err.contains("spa_like or heavy"), "{err}");
        assert!(serde_json::from_value::<Preset>(serde_json::json!("sidd-like")).is_err());
    }

    #[test]
    fn a_domain_renders_deterministically_with_its_clean_look_as_reference() {
        let clean = Image::from_vec(24, 24, (0..24 * 24 * 3).map(|i| ((i * 37) % 255) as f32 / 255.0).collect());
        for preset in [Preset::SiddLike, Preset::SpaLike, Preset::RealblurJ] {
            let d = RealDomain::new(preset.family(), Some(preset)).unwrap();
            let (a, gt, _) = d.render(&clean, 5, 2, true);
            let (b, none, _) = d.render(&clean, 5, 2, false);
            assert_eq!(a, b, "{preset:?}: the degraded image does not depend on asking for the reference");
            assert!(none.is_none());
            assert_eq!(gt.unwrap(), d.reference(&clean, 5, 2));
            assert_ne!(a, d.render(&clean, 5, 3, false).0, "{preset:?}: another index draws anew");
        }
    }
}

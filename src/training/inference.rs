//! Inference: restoring whole images of any size with a trained restorer, and what PixelDA's
//! translator makes of an image.

use burn::tensor::{Device, Tensor, TensorData};

use super::batch::{from_tensor, to_tensor};
use crate::image::Image;
use crate::networks::Restorer;
use crate::rng::Rng;

/// Restore a whole image of any size: pad (edge replicate) to a multiple of the network's
/// stride, run x + G(x), crop back.
pub fn restore_image(g: &Restorer, img: &Image, stride: usize, device: &Device) -> Image {
    let pw = img.width.div_ceil(stride) * stride;
    let ph = img.height.div_ceil(stride) * stride;
    let padded = if (pw, ph) == (img.width, img.height) {
        img.clone()
    } else {
        let mut p = Image::new(pw, ph);
        for y in 0..ph {
            for x in 0..pw {
                for c in 0..3 {
                    p.set(x, y, c, img.get(x.min(img.width - 1), y.min(img.height - 1), c));
                }
            }
        }
        p
    };
    let out = g.restore(to_tensor(std::slice::from_ref(&padded), device));
    let restored = from_tensor(out).pop().expect("one image");
    restored.crop(0, 0, img.width, img.height)
}

/// PixelDA's translator applied to one image, with per-pixel noise drawn from `seed` (the same
/// seed, the same translation).
pub fn translate_image(t: &crate::networks::pixel_da::Translator, img: &Image, seed: u64, device: &Device) -> Image {
    let mut rng = Rng::new(seed);
    let z: Vec<f32> = (0..img.width * img.height).map(|_| rng.normal() as f32).collect();
    let z = Tensor::<4>::from_data(TensorData::new(z, [1, 1, img.height, img.width]), device);
    let out = t.forward(to_tensor(std::slice::from_ref(img), device), z);
    from_tensor(out).pop().expect("one image")
}

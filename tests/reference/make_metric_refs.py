#!/usr/bin/env python3
"""Regenerate the metric reference fixtures checked by tests/metrics_reference.rs.

Cuts small crops from public-domain photographs shipped inside scikit-image, degrades them
with a fixed seed (Gaussian noise at three levels, a blur, a brightness shift), writes every
image as an 8-bit RGB PNG under tests/fixtures/metrics/, and records scikit-image's PSNR and
SSIM for each (reference, degraded) pair in reference.json.

    pip install scikit-image pillow
    python3 tests/reference/make_metric_refs.py
"""
import json
from pathlib import Path

import numpy as np
import scipy
import skimage
from PIL import Image
from skimage import data
from skimage.filters import gaussian
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

OUT = Path(__file__).resolve().parent.parent / "fixtures" / "metrics"
SEED = 20240611
# SSIM exactly as run_pipeline::metrics::ssim defines it (Wang et al. 2004).
SSIM_ARGS = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=-1)

# (name, photograph, top, left, crop height, crop width); crops are halved by 2x2 averaging.
CROPS = [
    ("astronaut", data.astronaut, 60, 150, 128, 128),  # face and helmet: edges plus skin
    ("coffee", data.coffee, 120, 200, 96, 128),        # cup rim and saucer
    ("chelsea", data.chelsea, 60, 120, 128, 128),      # cat's face: fur texture
]
# (suffix, which crops get it): not every crop gets every degradation, which keeps the
# fixtures small (~120 KB) while covering each kind on at least two photographs.
DEGRADATIONS = {
    "noise5": ("astronaut", "coffee"),
    "noise15": ("coffee", "chelsea"),
    "noise30": ("astronaut", "chelsea"),
    "blur": ("astronaut", "coffee", "chelsea"),
    "bright": ("astronaut", "chelsea"),
}


def to_u8(x):
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def degrade(img, kind, rng):
    f = img.astype(np.float64)
    if kind.startswith("noise"):
        return to_u8(f + rng.normal(0.0, float(kind[5:]), f.shape))
    if kind == "blur":
        return to_u8(gaussian(f, sigma=1.0, channel_axis=-1, preserve_range=True))
    if kind == "bright":
        return to_u8(f + 20.0)
    raise ValueError(kind)


def save_png(arr, name):
    path = OUT / name
    Image.fromarray(arr).save(path, optimize=True)  # uint8 HxWx3 -> RGB
    assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), arr), name


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    pairs = []
    for name, load, top, left, h, w in CROPS:
        crop = load()[top : top + h, left : left + w].astype(np.float64)
        ref = to_u8(crop.reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3)))
        save_png(ref, f"{name}_ref.png")
        for kind, names in DEGRADATIONS.items():
            if name not in names:
                continue
            deg = degrade(ref, kind, rng)
            save_png(deg, f"{name}_{kind}.png")
            a, b = ref / 255.0, deg / 255.0
            pairs.append({
                "reference": f"{name}_ref.png",
                "degraded": f"{name}_{kind}.png",
                "width": int(ref.shape[1]),
                "height": int(ref.shape[0]),
                "psnr": float(peak_signal_noise_ratio(a, b, data_range=1.0)),
                "ssim": float(structural_similarity(a, b, **SSIM_ARGS)),
            })
    meta = {
        "generator": "tests/reference/make_metric_refs.py",
        "skimage_version": skimage.__version__,
        "numpy_version": np.__version__,
        "scipy_version": scipy.__version__,
        "seed": SEED,
        "images": "float64 = uint8 / 255",
        "psnr_call": "peak_signal_noise_ratio(ref, deg, data_range=1.0)",
        "ssim_call": "structural_similarity(ref, deg, "
        + ", ".join(f"{k}={v!r}" for k, v in SSIM_ARGS.items()) + ")",
        "pairs": pairs,
    }
    (OUT / "reference.json").write_text(json.dumps(meta, indent=2) + "\n")
    for p in pairs:
        print(f"{p['degraded']:24s} psnr {p['psnr']:8.4f} dB  ssim {p['ssim']:.6f}")


if __name__ == "__main__":
    main()

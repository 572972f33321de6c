#!/usr/bin/env python3
"""Regenerate the scoring-protocol fixtures checked by tests/protocols_reference.rs.

Cuts small crops (sides deliberately not multiples of 8) from public-domain photographs
shipped inside scikit-image, degrades them with a fixed seed (Gaussian noise, blur, JPEG at
quality 30, a 1-px shift, a x1.1 gain, grayscale-to-RGB, and a pair packed with the colours
whose MATLAB luma is an exact .5 tie), writes every image as an 8-bit RGB PNG under
tests/fixtures/protocols/, and records in reference.json, for each (reference, degraded) pair,
PSNR and SSIM under each protocol of run_pipeline::protocols:

* rgb:              scikit-image on uint8/255 (PSNR peak 1; Gaussian SSIM, population covariance).
* y-matlab:         numpy re-implementation of MATLAB rgb2ycbcr on uint8 (imlincomb's exact
                    arithmetic, round half away from zero), then scikit-image PSNR (peak 255)
                    and Gaussian SSIM (sigma 1.5, population covariance, L = 255) on Y.
* sidd:             PSNR on uint8/255 (peak 1); MATLAB's default ssim() on the HxWx3 volume,
                    re-implemented with scipy.ndimage.correlate and an explicit normalised
                    11x11x11 Gaussian kernel, mode='nearest' (= MATLAB 'replicate'), mean over
                    the full map; plus scikit-image's per-channel Gaussian SSIM.
* realblur-noalign: scikit-image defaults on uint8: peak_signal_noise_ratio(gt, restored),
                    structural_similarity(gt, restored, channel_axis=-1).

For sidd's 3-D SSIM it also records the value for the inputs rounded through float32
("ssim_f32_input"), which is what run_pipeline's f32 Image holds, so the test can check the
algorithm to rounding error and the end-to-end value separately.

    pip install scikit-image pillow
    python3 tests/reference/make_protocol_refs.py
"""
import io
import json
import platform
import sys
from pathlib import Path

import numpy as np
import PIL
import scipy
import skimage
from PIL import Image
from scipy import ndimage
from skimage import data
from skimage.color import rgb2gray
from skimage.filters import gaussian
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

OUT = Path(__file__).resolve().parent.parent / "fixtures" / "protocols"
SEED = 20250214
MAX_FIXTURE_BYTES = 200_000

# (name, photograph, top, left, height, width): a 2h x 2w crop halved by 2x2 averaging.
CROPS = [
    ("astronaut", data.astronaut, 40, 160, 45, 61),  # face, helmet: edges and skin
    ("coffee", data.coffee, 110, 190, 50, 66),  # cup rim, saucer, spoon
    ("chelsea", data.chelsea, 50, 110, 53, 67),  # cat's face: fur texture
    ("rocket", data.rocket, 120, 260, 59, 37),  # tower against sky: flat regions
]
# Not every crop gets every degradation (keeps fixtures under ~200 KB); each kind runs on >= 2.
DEGRADATIONS = {
    "astronaut": ["noise10", "jpeg30", "shift", "gray"],
    "coffee": ["noise25", "blur", "gain", "jpeg30"],
    "chelsea": ["noise10", "blur", "shift", "gain"],
    "rocket": ["noise25", "gray", "jpeg30"],
}


# ---------------------------------------------------------------------------------------------
# The protocols (shared with bench_skimage.py)
# ---------------------------------------------------------------------------------------------

# MATLAB rgb2ycbcr for uint8 input: T = scaleFactor.uint8.T * origT = (1/255) * [65.481 ...],
# offset 16, evaluated by imlincomb as ((0 + T1*R) + T2*G) + T3*B, then + offset, in double,
# converted to uint8 rounding half away from zero (images/eml/imlincomb.m, portable code path).
Y_COEFF = tuple((1 / 255) * c for c in (65.481, 128.553, 24.966))


def matlab_round(v):
    """MATLAB round(): half away from zero (numpy's np.round is half to even)."""
    t = np.trunc(v)
    return np.where(np.abs(v - t) >= 0.5, t + np.sign(v), t)


def y_matlab(u8):
    """Y channel of MATLAB rgb2ycbcr(uint8 HxWx3), as float64 holding the uint8 values."""
    r, g, b = (u8[..., i].astype(np.float64) for i in range(3))
    val = Y_COEFF[0] * r
    val = val + Y_COEFF[1] * g
    val = val + Y_COEFF[2] * b
    val = val + 16.0
    return np.clip(matlab_round(val), 0, 255)


def y_brief_formula(u8, rounding=matlab_round):
    """16 + (65.481 r + 128.553 g + 24.966 b), r = R/255: the textbook form (BasicSR's order)."""
    r, g, b = (u8[..., i] / 255.0 for i in range(3))
    return np.clip(rounding(16.0 + (65.481 * r + 128.553 * g + 24.966 * b)), 0, 255)


SIGMA = 1.5
KR = int(np.ceil(3 * SIGMA))  # ssim.m: filtRadius = ceil(radius*3) = 5, filtSize = 11


def matlab_gauss3d():
    """images.internal.createGaussianKernel(1.5, [11 11 11]): exp(-arg/2), normalised."""
    x = np.arange(-KR, KR + 1, dtype=np.float64)
    X, Y, Z = np.meshgrid(x, x, x, indexing="ij")
    h = np.exp(-((X * X) / SIGMA**2 + (Y * Y) / SIGMA**2 + (Z * Z) / SIGMA**2) / 2)
    h[h < np.finfo(np.float64).eps * h.max()] = 0  # no-op here, as in MATLAB
    return h / h.sum()


def _ssim3d_from(filt, a, b, L):
    """ssim.m (R2017a) on float arrays: same expression order, mean over the full map."""
    mux2, muy2 = filt(a), filt(b)
    muxy = mux2 * muy2
    mux2 = mux2**2
    muy2 = muy2**2
    sigmax2 = filt(a**2) - mux2
    sigmay2 = filt(b**2) - muy2
    sigmaxy = filt(a * b) - muxy
    C1, C2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    num = (2 * muxy + C1) * (2 * sigmaxy + C2)
    den = (mux2 + muy2 + C1) * (sigmax2 + sigmay2 + C2)
    return float(np.mean(num / den))


def ssim3d_matlab(a, b, L=1.0):
    """MATLAB default ssim(A, ref) for an HxWx3 double array: the definition, a direct 3-D
    correlation with the 11x11x11 kernel and replicate ('nearest') padding."""
    k = matlab_gauss3d()
    return _ssim3d_from(lambda x: ndimage.correlate(x, k, mode="nearest"), a, b, L)


def ssim3d_matlab_separable(a, b, L=1.0):
    """Same, with scipy's separable Gaussian (fast; agrees with the direct form to rounding)."""
    return _ssim3d_from(lambda x: ndimage.gaussian_filter(x, SIGMA, mode="nearest", radius=KR), a, b, L)


STD_SSIM = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)


def score_rgb(ref8, deg8):
    a, b = ref8 / 255.0, deg8 / 255.0
    return {
        "psnr": peak_signal_noise_ratio(a, b, data_range=1.0),
        "ssim": structural_similarity(a, b, data_range=1.0, channel_axis=-1, **STD_SSIM),
    }


def score_y_matlab(ref8, deg8):
    ya, yb = y_matlab(ref8), y_matlab(deg8)
    return {
        "psnr": peak_signal_noise_ratio(ya, yb, data_range=255.0),
        "ssim": structural_similarity(ya, yb, data_range=255.0, **STD_SSIM),
    }


def score_sidd(ref8, deg8, ssim3d=ssim3d_matlab):
    a, b = ref8 / 255.0, deg8 / 255.0
    # run_pipeline's Image stores u8/255 as f32; the same inputs, for the tight check.
    a32, b32 = (x.astype(np.float32).astype(np.float64) for x in (a, b))
    return {
        "psnr": peak_signal_noise_ratio(a, b, data_range=1.0),
        "ssim": ssim3d(b, a, 1.0),
        "ssim_f32_input": ssim3d(b32, a32, 1.0),
        "ssim_per_channel": structural_similarity(a, b, data_range=1.0, channel_axis=-1, **STD_SSIM),
    }


def score_realblur_noalign(ref8, deg8):
    return {
        "psnr": peak_signal_noise_ratio(ref8, deg8),
        "ssim": structural_similarity(ref8, deg8, channel_axis=-1),
    }


PROTOCOLS = {
    "rgb": score_rgb,
    "y-matlab": score_y_matlab,
    "sidd": score_sidd,
    "realblur-noalign": score_realblur_noalign,
}


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------


def to_u8(x):
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def crop_half(photo, top, left, h, w):
    c = photo[top : top + 2 * h, left : left + 2 * w].astype(np.float64)
    return to_u8(c.reshape(h, 2, w, 2, 3).mean(axis=(1, 3)))


def jpeg(u8, quality):
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def degrade(kind, ref, photo, crop, rng):
    f = ref.astype(np.float64)
    if kind.startswith("noise"):
        return to_u8(f + rng.normal(0.0, float(kind[5:]), f.shape))
    if kind == "blur":
        return to_u8(gaussian(f, sigma=1.2, channel_axis=-1, preserve_range=True))
    if kind.startswith("jpeg"):
        return jpeg(ref, int(kind[4:]))
    if kind == "shift":  # the same scene one output pixel down and right (2 px at full size)
        top, left, h, w = crop
        return crop_half(photo, top + 2, left + 2, h, w)
    if kind == "gain":
        return to_u8(f * 1.1)
    if kind == "gray":
        return np.repeat(to_u8(rgb2gray(ref) * 255.0)[..., None], 3, axis=-1)
    raise ValueError(kind)


def tie_colours():
    """Every 8-bit RGB triple whose exact BT.601 luma 16 + (65.481 R + ...)/255 ends in .5."""
    v = np.arange(256, dtype=np.int64)
    R, G, B = np.meshgrid(v, v, v, indexing="ij")
    tie = (65481 * R + 128553 * G + 24966 * B + 4080000) % 255000 == 127500
    return np.stack([R[tie], G[tie], B[tie]], axis=-1).astype(np.uint8)


def sprinkle(img, colours, rng, frac=0.5):
    out = img.copy()
    mask = rng.random(img.shape[:2]) < frac
    out[mask] = colours[rng.integers(0, len(colours), mask.sum())]
    return out


def save_png(arr, name):
    path = OUT / name
    Image.fromarray(arr, mode="RGB").save(path, optimize=True)
    assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), arr), name


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.png"):
        old.unlink()
    rng = np.random.default_rng(SEED)
    images = {}  # file name -> uint8 array
    pairs = []  # (reference file, degraded file, degradation)
    for name, load, top, left, h, w in CROPS:
        photo = load()
        assert h % 8 and w % 8, (name, h, w)
        ref = crop_half(photo, top, left, h, w)
        images[f"{name}_ref.png"] = ref
        for kind in DEGRADATIONS[name]:
            images[f"{name}_{kind}.png"] = degrade(kind, ref, photo, (top, left, h, w), rng)
            pairs.append((f"{name}_ref.png", f"{name}_{kind}.png", kind))
    # MATLAB-tie colours on both sides: pins rgb2ycbcr's rounding and arithmetic order.
    ties = tie_colours()
    base = images["astronaut_ref.png"]
    images["ties_ref.png"] = sprinkle(base, ties, rng)
    images["ties_noise10.png"] = sprinkle(degrade("noise10", base, None, None, rng), ties, rng)
    pairs.append(("ties_ref.png", "ties_noise10.png", "noise10 + MATLAB-tie colours on both"))

    out_pairs = []
    for ref_name, deg_name, kind in pairs:
        ref8, deg8 = images[ref_name], images[deg_name]
        assert ref8.shape == deg8.shape and not np.array_equal(ref8, deg8), deg_name
        scores = {p: {k: float(v) for k, v in f(ref8, deg8).items()} for p, f in PROTOCOLS.items()}
        fast = ssim3d_matlab_separable(deg8 / 255.0, ref8 / 255.0)
        assert abs(fast - scores["sidd"]["ssim"]) < 1e-12, (deg_name, fast, scores["sidd"]["ssim"])
        out_pairs.append({
            "reference": ref_name,
            "degraded": deg_name,
            "degradation": kind,
            "width": int(ref8.shape[1]),
            "height": int(ref8.shape[0]),
            "scores": scores,
        })
    for fname, arr in images.items():
        save_png(arr, fname)
    total = sum((OUT / f).stat().st_size for f in images)
    assert total <= MAX_FIXTURE_BYTES, f"fixtures take {total} bytes"

    # How much the tie handling matters on the ties pair (printed, not tested).
    r8, d8 = images["ties_ref.png"], images["ties_noise10.png"]
    for label, fn in [
        ("MATLAB imlincomb, half away (used)", y_matlab),
        ("16+(65.481r+...), half away", y_brief_formula),
        ("16+(65.481r+...), np.round", lambda u: y_brief_formula(u, np.round)),
        ("float Y (Python ports)", lambda u: y_brief_formula(u, lambda v: v)),
    ]:
        print(f"ties pair, Y PSNR with {label:36s}: {peak_signal_noise_ratio(fn(r8), fn(d8), data_range=255):.9f}")

    meta = {
        "generator": "tests/reference/make_protocol_refs.py",
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "scikit-image": skimage.__version__,
            "pillow": PIL.__version__,
        },
        "seed": SEED,
        "argument_order": "score(kind, restored = degraded, reference = reference)",
        "protocols": {
            "rgb": "uint8/255 float64; peak_signal_noise_ratio(data_range=1); structural_similarity("
            "gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=-1)",
            "y-matlab": "Y = MATLAB rgb2ycbcr(uint8) luma (imlincomb arithmetic, round half away); "
            "peak_signal_noise_ratio(data_range=255); structural_similarity(gaussian_weights=True, sigma=1.5, "
            "use_sample_covariance=False, data_range=255) on Y",
            "sidd": "uint8/255 float64; PSNR data_range=1; ssim = MATLAB ssim(A, ref) on HxWx3 via "
            "scipy.ndimage.correlate(11x11x11 normalised Gaussian sigma 1.5, mode='nearest'), mean of the full "
            "map; ssim_f32_input = same on inputs rounded through float32; ssim_per_channel as rgb",
            "realblur-noalign": "uint8; peak_signal_noise_ratio(gt, restored); "
            "structural_similarity(gt, restored, channel_axis=-1) (7x7 uniform, sample covariance, L=255)",
        },
        "pairs": out_pairs,
    }
    (OUT / "reference.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{len(out_pairs)} pairs, {len(images)} PNGs, {total} bytes")
    for p in out_pairs:
        s = p["scores"]
        print(f"{p['degraded']:22s} " + "  ".join(f"{k} {v['psnr']:7.3f}/{v['ssim']:.5f}" for k, v in s.items())
              + f"  (per-ch {s['sidd']['ssim_per_channel']:.5f})")


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Regenerate the fixtures checked by tests/realblur_reference.rs (the official RealBlur protocol).

Cuts small crops (sides not multiples of 8) from public-domain photographs shipped inside
scikit-image and makes "restored" versions that differ from the ground truth the way deblurred
RealBlur outputs do: a sub-pixel translation plus a small rotation (cv2.warpAffine on the whole
photograph, then the same crop, so the borders hold real content), a x0.9 brightness gain,
added noise, a Gaussian blur, and combinations. Every image is saved as an 8-bit RGB PNG under
tests/fixtures/realblur/, and reference.json records, per (gt, restored) pair, the protocol as
OpenCV + scikit-image compute it:

1. x = gt/255, z = clip(restored/255, 0, 1) (float32, then float64);
   gain a = sum(x*z)/sum(z*z); zs = a*z.
2. cv2.findTransformECC(gray(x), gray(zs), eye(3, float32), MOTION_HOMOGRAPHY,
   (COUNT|EPS, 100, 0), None, 5), gray = cv2.cvtColor(float32, COLOR_RGB2GRAY).
3. zr = cv2.warpPerspective(float32(zs), H, INTER_CUBIC | WARP_INVERSE_MAP, BORDER_REFLECT);
   m = cv2.warpPerspective(ones, H, INTER_NEAREST | WARP_INVERSE_MAP, BORDER_CONSTANT 0);
   both images are multiplied by m (zr*m, x*m), as the RealBlur evaluation does.
4. PSNR = 10 log10(1 / (sum((x*m - zr*m)^2) / sum(m))), m the HxWx3 mask.
5. SSIM: structural_similarity(x*m, zr*m, channel_axis=-1, gaussian_weights=True, sigma=1.5,
   use_sample_covariance=False, data_range=1, full=True) map, times m, 5 px cropped, per
   channel sum(map)/sum(m), mean over channels.

It also records "ssim_unmasked_inputs" (the map computed on x and zr without multiplying them by
m first) to show how much that choice matters (printed, not tested).

Needs an OpenCV whose warps sample at the exact sub-pixel position, as 5.0 does (cubic_sanity
checks): OpenCV 4.10 still quantises positions to 1/32 px, in ECC's bilinear warps and in the
final bicubic one, which moves these scores by up to 0.03 dB / 7e-5 (about 1e-3 dB on 680x770
frames) and keeps ECC from settling on a fixed point.

    pip install opencv-python-headless scikit-image pillow
    python3 tests/reference/make_realblur_refs.py
"""
import json
import platform
import sys
from pathlib import Path

import cv2
import numpy as np
import PIL
import scipy
import skimage
from PIL import Image
from skimage import data
from skimage.metrics import structural_similarity

OUT = Path(__file__).resolve().parent.parent / "fixtures" / "realblur"
SEED = 20250302
MAX_FIXTURE_BYTES = 150_000

# (name, photograph, top, left, height, width) of the crop. Chosen so that ECC converges on every
# pair: on many small crops with flat areas (e.g. coffee at (120, 200)) the homography keeps
# wandering for all 100 iterations (corners moving by 0.1-10 px between iterations 90 and 100),
# so the result is chaotic in the input's last bits and no other implementation can match it.
MAX_DRIFT_PX = 1e-4
CROPS = [
    ("astronaut", data.astronaut, 60, 170, 75, 90),  # face and helmet
    ("coffee", data.coffee, 200, 300, 70, 93),  # saucer, spoon and cloth
    ("chelsea", data.chelsea, 60, 130, 83, 67),  # cat's face
]

# name -> (dx, dy, rotation in degrees about the crop centre, gain, blur sigma, noise sigma/255)
DEGRADATIONS = {
    "shiftrot": (0.35, -0.6, 0.4, 1.0, 0.0, 0.0),
    "gainnoise": (0.0, 0.0, 0.0, 0.9, 0.0, 2.0),
    "blurshift": (-0.8, 0.45, 0.0, 1.0, 1.2, 0.0),
    "combo": (0.6, 0.9, -0.3, 0.9, 0.8, 2.0),
}
PAIRS = {
    "astronaut": ["shiftrot", "gainnoise", "combo"],
    "coffee": ["shiftrot", "blurshift", "combo"],
    "chelsea": ["gainnoise", "blurshift", "combo"],
}

ECC_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 0)


def realblur(gt8, res8):
    """The official RealBlur protocol on 8-bit RGB arrays (see the module docstring)."""
    # u8 / 255 rounded to float32 (as the RealBlur evaluation loads images, and as
    # run_pipeline's Image holds them), then float64.
    x = (gt8.astype(np.float32) / np.float32(255)).astype(np.float64)
    z = np.clip((res8.astype(np.float32) / np.float32(255)).astype(np.float64), 0.0, 1.0)
    gain = float(np.sum(x * z) / np.sum(z * z))
    zs = gain * z
    gray = lambda im: cv2.cvtColor(im.astype(np.float32), cv2.COLOR_RGB2GRAY)
    ecc = lambda n: cv2.findTransformECC(gray(x), gray(zs), np.eye(3, dtype=np.float32), cv2.MOTION_HOMOGRAPHY,
                                         (ECC_CRITERIA[0], n, 0), None, 5)
    cc, warp = ecc(100)
    # How far the last 10 iterations still moved an image corner (px): near 0 = converged.
    h, w = x.shape[:2]
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], np.float64).T
    proj = lambda H: (H.astype(np.float64) @ corners)[:2] / (H.astype(np.float64) @ corners)[2]
    drift = float(np.max(np.hypot(*(proj(warp) - proj(ecc(90)[1])))))
    # float32: OpenCV 5.0.0's INTER_CUBIC returns garbage for float64 images (see cubic_sanity).
    zr = cv2.warpPerspective(zs.astype(np.float32), warp, (w, h), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_REFLECT).astype(np.float64)
    m = cv2.warpPerspective(np.ones_like(zs), warp, (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    xr, zrm = x * m, zr * m
    psnr = 10 * np.log10(1.0 / (np.sum((xr - zrm) ** 2) / np.sum(m)))

    def masked_ssim(a, b):
        _, smap = structural_similarity(a, b, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False, data_range=1.0, full=True)
        p = 5  # int(3.5 * 1.5 + 0.5), skimage's Gaussian radius
        sm, mm = (smap * m)[p:-p, p:-p], m[p:-p, p:-p]
        return float(np.mean(sm.sum(axis=(0, 1)) / mm.sum(axis=(0, 1))))

    return {
        "gain": gain,
        "homography": [float(v) for v in warp.ravel()],
        "ecc": float(cc),
        "ecc_drift_last10_px": drift,
        "psnr": float(psnr),
        "ssim": masked_ssim(xr, zrm),
        "ssim_unmasked_inputs": masked_ssim(x, zr),
        "masked_pixels": int(round(h * w - m[..., 0].sum())),
    }


def cubic_sanity():
    """Fails if warpPerspective's INTER_CUBIC is not the a = -0.75 kernel at float coordinates."""
    rng = np.random.default_rng(1)
    img = rng.random((20, 24)).astype(np.float32)
    d = 0.3
    r = cv2.warpPerspective(img, np.array([[1, 0, d], [0, 1, 0], [0, 0, 1.0]]), (24, 20),
                            flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
    A, t = -0.75, d
    c0 = ((A * (t + 1) - 5 * A) * (t + 1) + 8 * A) * (t + 1) - 4 * A
    c1 = ((A + 2) * t - (A + 3)) * t * t + 1
    c2 = ((A + 2) * (1 - t) - (A + 3)) * (1 - t) * (1 - t) + 1
    want = img[5, 4:8].astype(np.float64) @ np.array([c0, c1, c2, 1 - c0 - c1 - c2])
    assert abs(r[5, 5] - want) < 1e-6, (r[5, 5], want)
    bad = cv2.warpPerspective(img.astype(np.float64), np.eye(3), (24, 20), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP)
    return float(np.abs(bad - img).max())


def to_u8(v):
    return np.clip(np.round(v), 0, 255).astype(np.uint8)


def degrade(photo, crop, params, rng):
    top, left, h, w = crop
    dx, dy, rot, gain, blur, noise = params
    f = photo.astype(np.float32)
    if blur:
        f = cv2.GaussianBlur(f, (0, 0), blur)
    if dx or dy or rot:
        # Rotate about the crop centre, then translate: restored(p) = gt(A^-1 p).
        centre = (left + (w - 1) / 2, top + (h - 1) / 2)
        A = cv2.getRotationMatrix2D(centre, rot, 1.0)
        A[:, 2] += (dx, dy)
        f = cv2.warpAffine(f, A, (f.shape[1], f.shape[0]), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    f = f[top : top + h, left : left + w].astype(np.float64) * gain
    if noise:
        f = f + rng.normal(0.0, noise, f.shape)
    return to_u8(f)


def save_png(arr, name):
    path = OUT / name
    Image.fromarray(arr, mode="RGB").save(path, optimize=True)
    assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), arr), name


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.png"):
        old.unlink()
    rng = np.random.default_rng(SEED)
    images, pairs = {}, []
    for name, load, top, left, h, w in CROPS:
        assert h % 8 and w % 8, (name, h, w)
        photo = load()
        gt = photo[top : top + h, left : left + w].copy()
        images[f"{name}_gt.png"] = gt
        for kind in PAIRS[name]:
            images[f"{name}_{kind}.png"] = degrade(photo, (top, left, h, w), DEGRADATIONS[kind], rng)
            pairs.append((f"{name}_gt.png", f"{name}_{kind}.png", kind))
    for fname, arr in images.items():
        save_png(arr, fname)
    total = sum((OUT / f).stat().st_size for f in images)
    assert total <= MAX_FIXTURE_BYTES, f"fixtures take {total} bytes"

    f64_err = cubic_sanity()
    print(f"INTER_CUBIC identity warp of a float64 image: max error {f64_err:.3g} (float32 used)")
    out_pairs = []
    for gt_name, res_name, kind in pairs:
        gt8, res8 = images[gt_name], images[res_name]
        scores = realblur(gt8, res8)
        assert scores["ecc_drift_last10_px"] < MAX_DRIFT_PX, (res_name, scores["ecc_drift_last10_px"])
        out_pairs.append({
            "gt": gt_name,
            "restored": res_name,
            "degradation": dict(zip(["dx", "dy", "rotation_deg", "gain", "blur_sigma", "noise_sigma_255"],
                                    DEGRADATIONS[kind])),
            "width": int(gt8.shape[1]),
            "height": int(gt8.shape[0]),
            "realblur": scores,
        })
    meta = {
        "generator": "tests/reference/make_realblur_refs.py",
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "scikit-image": skimage.__version__,
            "opencv": cv2.__version__,
            "pillow": PIL.__version__,
        },
        "seed": SEED,
        "argument_order": "score(Realblur, restored, reference = gt)",
        "protocol": __doc__.split("\n\n")[2],
        "pairs": out_pairs,
    }
    (OUT / "reference.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{len(out_pairs)} pairs, {len(images)} PNGs, {total} bytes")
    for p in out_pairs:
        s = p["realblur"]
        hom = s["homography"]
        print(f"{p['restored']:24s} gain {s['gain']:.5f} psnr {s['psnr']:7.3f} ssim {s['ssim']:.5f} "
              f"(unmasked inputs {s['ssim_unmasked_inputs']:.5f}) masked px {s['masked_pixels']:3d} "
              f"H t=({hom[2]:+.3f},{hom[5]:+.3f}) drift {s['ecc_drift_last10_px']:.1e}")


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Throughput of the Python reference implementations of run_pipeline's scoring protocols,
for comparison with `cargo bench --bench protocols` (same sizes: a 256x256 SIDD block and a
680x770 RealBlur frame; megapixels per second, one image at a time, one process).

Each timing covers the whole protocol as run_pipeline::protocols::score does it (clamping or
8-bit rounding included): scikit-image for rgb / realblur-noalign, the numpy MATLAB rgb2ycbcr
plus scikit-image for y-matlab, and for sidd PSNR + MATLAB's 3-D SSIM with scipy's *separable*
gaussian_filter (mode='nearest'; make_protocol_refs.py checks it against the direct 11x11x11
correlation, which is ~100x slower) + scikit-image per-channel SSIM.

    python3 tests/reference/bench_skimage.py [seconds per measurement, default 1]
"""
import sys
import time
from pathlib import Path

import numpy as np
import scipy
import skimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_protocol_refs import (  # noqa: E402
    score_realblur_noalign,
    score_y_matlab,
    ssim3d_matlab_separable,
    STD_SSIM,
)
from skimage.metrics import peak_signal_noise_ratio, structural_similarity  # noqa: E402


def q8(x):
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def rgb(restored, gt):
    r = np.clip(restored, 0, 1)
    return (peak_signal_noise_ratio(gt, r, data_range=1.0),
            structural_similarity(gt, r, data_range=1.0, channel_axis=-1, **STD_SSIM))


def y_matlab(restored, gt):
    return score_y_matlab(q8(gt), q8(restored))


def sidd(restored, gt):
    r = np.clip(restored, 0, 1)
    return (peak_signal_noise_ratio(gt, r, data_range=1.0), ssim3d_matlab_separable(r, gt, 1.0),
            structural_similarity(gt, r, data_range=1.0, channel_axis=-1, **STD_SSIM))


def realblur_noalign(restored, gt):
    return score_realblur_noalign(q8(gt), q8(restored))


PROTOCOLS = {"rgb": rgb, "y-matlab": y_matlab, "sidd": sidd, "realblur-noalign": realblur_noalign}


def pair(w, h, seed):
    """Smooth gradients plus texture as ground truth; a restoration with residual noise."""
    rng = np.random.default_rng(seed)
    fy, fx = np.meshgrid(np.arange(h) / h, np.arange(w) / w, indexing="ij")
    c = np.arange(3)
    gt = 0.5 + 0.3 * np.sin(fx[..., None] * 9.0 + c) * np.cos(fy[..., None] * 7.0)
    gt = np.clip(gt + 0.1 * (rng.random((h, w, 3)) - 0.5), 0, 1)
    restored = gt + 0.12 * (rng.random((h, w, 3)) - 0.5)
    return restored, gt


def timeit(budget, f):
    f()
    n, start = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - start < budget:
        f()
        n += 1
    return (time.perf_counter() - start) / n


def main():
    budget = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    print(f"scikit-image {skimage.__version__}, scipy {scipy.__version__}, numpy {np.__version__}: megapixels/s")
    for w, h, label in [(256, 256, "SIDD block"), (680, 770, "RealBlur frame")]:
        restored, gt = pair(w, h, 7)
        mp = w * h / 1e6
        print(f"{w}x{h} ({label}):")
        for name, f in PROTOCOLS.items():
            t = timeit(budget, lambda: f(restored, gt))
            print(f"  {name:17} {mp / t:8.2f} MP/s  ({t * 1e3:7.2f} ms/image)")


if __name__ == "__main__":
    main()

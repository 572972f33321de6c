"""PyTorch's side of the speed report's `restore` rows (`cargo bench --bench restore_speed`).

Runs the authors' test path on one image with the release's UNet (`release_parity.ReleaseUNet`,
written from the architecture the release documents): replicate-pad to a multiple of the
network's stride, x + G(x), crop back — whole, or in tiles blended with the same linear ramps
as run-pipeline's `--tile` — in eager mode, no autograd, on CPU threads as told.

    python scripts/torch_restore.py WEIGHTS.safetensors WIDTHS IMAGE.f32 W H OUT.f32 \
        [--tile T --overlap O] [--threads N]

IMAGE.f32 / OUT.f32: raw little-endian float32, H × W × 3 (HWC) in [0, 1]. Prints one JSON
line: seconds (the restore alone, best of --repeat), peak_rss_mib (the process's high-water
mark, PyTorch's libraries included, as run-pipeline's is). Needs PyTorch and NumPy
(benchmarks only; not part of CI).
"""

import argparse
import json
import os
import resource
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from release_parity import ReleaseUNet, read_safetensors  # noqa: E402


def whole(g, x, stride):
    _, _, h, w = x.shape
    ph, pw = -h % stride, -w % stride
    xp = F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x
    return (xp + g(xp))[:, :, :h, :w]


def starts(n, tile, step):
    if n <= tile:
        return [0]
    v = list(range(0, n - tile, step)) + [n - tile]
    return sorted(set(v))


def ramp(length, overlap, lo_edge, hi_edge):
    i = torch.arange(length, dtype=torch.float32)
    o = float(max(overlap, 1))
    a = torch.ones(length) if lo_edge else torch.clamp((i + 0.5) / o, max=1.0)
    b = torch.ones(length) if hi_edge else torch.clamp(length - i - 0.5, max=o) / o
    return torch.clamp(torch.minimum(a, b), min=1e-3)


def tiled(g, x, stride, tile, overlap):
    _, _, h, w = x.shape
    if tile >= max(h, w):
        return whole(g, x, stride)
    step = max(tile - overlap, 1)
    acc = torch.zeros_like(x)
    wsum = torch.zeros(1, 1, h, w)
    for y0 in starts(h, tile, step):
        for x0 in starts(w, tile, step):
            th, tw = min(tile, h), min(tile, w)
            out = whole(g, x[:, :, y0:y0 + th, x0:x0 + tw], stride)
            wgt = ramp(th, overlap, y0 == 0, y0 + th == h)[:, None] * ramp(tw, overlap, x0 == 0, x0 + tw == w)[None, :]
            acc[:, :, y0:y0 + th, x0:x0 + tw] += wgt * out
            wsum[:, :, y0:y0 + th, x0:x0 + tw] += wgt
    return acc / wsum


def main():
    p = argparse.ArgumentParser()
    p.add_argument("weights")
    p.add_argument("widths")
    p.add_argument("image")
    p.add_argument("width", type=int)
    p.add_argument("height", type=int)
    p.add_argument("out")
    p.add_argument("--tile", type=int, default=0)
    p.add_argument("--overlap", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    widths = [int(v) for v in a.widths.split(",")]
    g = ReleaseUNet(widths).eval()
    state = {k.removeprefix("RestorationNet."): v for k, v in read_safetensors(a.weights).items()}
    g.load_state_dict(state, strict=True)
    stride = 2 ** (len(widths) - 1)
    img = np.fromfile(a.image, dtype="<f4").reshape(a.height, a.width, 3)
    x = torch.from_numpy(img).permute(2, 0, 1).unsqueeze(0).contiguous()
    best = float("inf")
    with torch.inference_mode():
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            y = tiled(g, x, stride, a.tile, a.overlap) if a.tile else whole(g, x, stride)
            best = min(best, time.perf_counter() - t0)
    y[0].permute(1, 2, 0).contiguous().numpy().astype("<f4").tofile(a.out)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": best, "peak_rss_mib": peak, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Synthetic dataset trees in the REAL on-disk layouts `run-pipeline` reads, for benchmarks.

The trees are NOT committed: generate them where needed (they reach gigabytes), e.g.
  python3 scripts/make_trees.py sidd     --out data/SIDD_Medium_Srgb   (SIDD_ROOT)
  python3 scripts/make_trees.py clean    --out data/DIV2K_train_HR     (DIV2K_ROOT)
  python3 scripts/make_trees.py realblur --out data/RealBlur           (REALBLUR_ROOT)

  sidd:     Data/<inst>_<scene>_<phone>_<ISO>_<shutter>_<temp>_<L|N|H>/<inst>_{GT,NOISY}_SRGB_01x.PNG
            (`sidd::layout`; --per-folder 2 gives _010 and _011 as in SIDD_Medium_Srgb);
            noisy = clean + Gaussian noise whose sigma grows with the folder's ISO.
  clean:    flat folder of NNNN.png, each side random in [--min-side, --max-side] (DIV2K-like).
  realblur: RealBlur-J_ECC_IMCORR_centroid_itensity_ref/sceneNNN/{gt/gt_k,blur/blur_k}.png
            plus RealBlur_J_{test,train}_list.txt (`layouts::pair_list`, GT first): lines
            "<gt> <blur> " with a trailing space, no final newline; test k = 2..21, train k = 1..21.
            blur = clean box-blurred horizontally (length random per scene).
Content: smooth random gradients, a few rectangles and disks, faint grain; one RNG per image
seeded from (--seed, index), so trees are reproducible. Existing non-empty files are skipped
(re-running continues an interrupted tree); files are written to a temporary name and renamed.
--scale K multiplies the image/pair counts (1x/2x/4x trees). Needs numpy and Pillow only.
"""
import argparse
import os
import sys
import time
from multiprocessing import Pool

import numpy as np
from PIL import Image

RB_ROOT = "RealBlur-J_ECC_IMCORR_centroid_itensity_ref"  # the misspelling is the real name
PHONES = ["GP", "IP", "S6", "N6", "G4"]
ISOS = [100, 200, 400, 800, 1600, 3200, 6400, 10000]
SHUTTERS = [30, 50, 100, 200, 400, 800, 1000, 2000, 4000, 8000]
TEMPS = [3200, 4400, 5500]


def rng_for(seed, index, tag=0):
    return np.random.default_rng(np.random.SeedSequence([seed, tag, index]))


def scene(rng, w, h):
    """A cheap image-like uint8 (h, w, 3) picture."""
    gh, gw = rng.integers(2, 6, size=2)
    grid = rng.integers(0, 256, size=(gh, gw, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(grid).resize((w, h), Image.BICUBIC)).copy()
    for _ in range(int(rng.integers(3, 9))):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(2, max(3, w // 3))), y0 + int(rng.integers(2, max(3, h // 3)))
        img[y0:y1, x0:x1] = rng.integers(0, 256, size=3, dtype=np.uint8)
    for _ in range(int(rng.integers(3, 9))):
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        r = int(rng.integers(4, max(5, min(w, h) // 4)))
        ya, yb, xa, xb = max(cy - r, 0), min(cy + r + 1, h), max(cx - r, 0), min(cx + r + 1, w)
        yy, xx = np.ogrid[ya - cy:yb - cy, xa - cx:xb - cx]
        img[ya:yb, xa:xb][yy * yy + xx * xx <= r * r] = rng.integers(0, 256, size=3, dtype=np.uint8)
    out = rng.integers(0, 5, size=img.shape, dtype=np.uint8).astype(np.int16)  # grain: photo-sized PNGs
    out += img
    out -= 2
    return np.clip(out, 0, 255, out=out).astype(np.uint8)


def add_noise(rng, img, sigma):
    z = rng.standard_normal(img.shape, dtype=np.float32)
    z *= np.float32(sigma)
    z += img
    return np.clip(np.rint(z, out=z), 0, 255, out=z).astype(np.uint8)


def hblur(img, length):
    """Horizontal box blur of odd `length` (edge-replicated), via a cumulative sum."""
    r = length // 2
    pad = np.pad(img, ((0, 0), (r + 1, r), (0, 0)), mode="edge").astype(np.uint32)
    c = np.cumsum(pad, axis=1, dtype=np.uint32)
    s = c[:, length:] - c[:, :-length]
    return ((s + length // 2) // length).astype(np.uint8)


def done(path):
    return os.path.isfile(path) and os.path.getsize(path) > 0


def save(path, arr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    Image.fromarray(arr).save(tmp, format="PNG", compress_level=1)
    os.replace(tmp, path)
    return os.path.getsize(path)


def work(job):
    """One image or pair: (bytes written, files written). `job` = (kind, seed, index, paths, params)."""
    kind, seed, index, paths, p = job
    if all(done(q) for q in paths):
        return 0, 0
    rng = rng_for(seed, index, ["clean", "sidd", "realblur"].index(kind))  # trees differ
    clean = scene(rng, p["w"], p["h"])
    if kind == "clean":
        imgs = [clean]
    elif kind == "sidd":  # paths = (gt, noisy)
        imgs = [clean, add_noise(rng, clean, p["sigma"])]
    else:  # realblur: paths = (gt, blur)
        imgs = [clean, hblur(clean, p["blur"])]
    written = [save(q, a) for q, a in zip(paths, imgs) if not done(q)]
    return sum(written), len(written)


def sidd_jobs(a):
    n, jobs, data = round(a.pairs * a.scale), [], os.path.join(a.out, "Data")
    for f in range((n + a.per_folder - 1) // a.per_folder):
        r = rng_for(a.seed, 1_000_000 + f)
        iso = int(r.choice(ISOS))
        folder = "%04d_%03d_%s_%05d_%05d_%04d_%s" % (
            f + 1, int(r.integers(1, 11)), r.choice(PHONES), iso, int(r.choice(SHUTTERS)),
            int(r.choice(TEMPS)), r.choice(["L", "N", "H"]))
        for k in range(min(a.per_folder, n - f * a.per_folder)):
            d, frame = os.path.join(data, folder), "%03d" % (10 + k)
            paths = [os.path.join(d, "%04d_%s_SRGB_%s.PNG" % (f + 1, t, frame)) for t in ("GT", "NOISY")]
            jobs.append(("sidd", a.seed, len(jobs), paths,
                         {"w": a.width, "h": a.height, "sigma": 8.0 + 12.0 * iso / 10000}))
    return jobs, []


def clean_jobs(a):
    n, r = round(a.count * a.scale), rng_for(a.seed, 2_000_000)
    sides = r.integers(a.min_side, a.max_side + 1, size=(n, 2))
    return [("clean", a.seed, i, [os.path.join(a.out, "%04d.png" % (i + 1))],
             {"w": int(sides[i, 0]), "h": int(sides[i, 1])}) for i in range(n)], []


def realblur_jobs(a):
    jobs, lists, sc = [], [], 0
    train = a.pairs if a.train_pairs is None else a.train_pairs
    for split, n, ks in (("test", round(a.pairs * a.scale), range(2, 22)),
                         ("train", round(train * a.scale), range(1, 22))):
        lines = []
        while len(lines) < n:
            sc += 1
            blur = 2 * int(rng_for(a.seed, 3_000_000 + sc).integers(2, 12)) + 1
            for k in ks[:n - len(lines)]:
                rel = ["%s/scene%03d/%s/%s_%d.png" % (RB_ROOT, sc, t, t, k) for t in ("gt", "blur")]
                jobs.append(("realblur", a.seed, len(jobs), [os.path.join(a.out, q) for q in rel],
                             {"w": a.width, "h": a.height, "blur": blur}))
                lines.append("%s %s " % tuple(rel))
        lists.append((os.path.join(a.out, "RealBlur_J_%s_list.txt" % split), "\n".join(lines)))
    return jobs, lists


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    cmds = {"sidd": (sidd_jobs, 60, 4000, 3000), "clean": (clean_jobs, 2000, 0, 0),
            "realblur": (realblur_jobs, 200, 680, 776)}
    for name, (_, n, w, h) in cmds.items():
        p = sub.add_parser(name)
        p.add_argument("--out", required=True)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--scale", type=float, default=1.0, help="multiplies the count")
        p.add_argument("--procs", type=int, default=2)
        if name == "clean":
            p.add_argument("--count", type=int, default=n)
            p.add_argument("--min-side", type=int, default=1500)
            p.add_argument("--max-side", type=int, default=2040)
            continue
        p.add_argument("--pairs", type=int, default=n)
        p.add_argument("--width", type=int, default=w)
        p.add_argument("--height", type=int, default=h)
        if name == "sidd":
            p.add_argument("--per-folder", type=int, default=2, choices=[1, 2], help="frames _010 (and _011)")
        else:
            p.add_argument("--train-pairs", type=int, default=None, help="default: --pairs")
    a = ap.parse_args()
    if a.cmd == "clean" and not 1 <= a.min_side <= a.max_side:
        ap.error("need 1 <= --min-side <= --max-side")
    t0 = time.time()
    jobs, lists = cmds[a.cmd][0](a)
    total = files = 0
    with Pool(max(1, a.procs)) as pool:
        for i, (b, f) in enumerate(pool.imap_unordered(work, jobs), 1):
            total, files = total + b, files + f
            if i % 50 == 0 or i == len(jobs):
                print("  %d/%d items, %.1f MB, %.0f s" % (i, len(jobs), total / 1e6, time.time() - t0),
                      file=sys.stderr)
    for path, text in lists:  # written last: a list names only files that exist
        with open(path, "w", newline="") as fh:
            fh.write(text)
        total += os.path.getsize(path)
    print("%s: %d items, %d files written (%d bytes = %.2f GB) in %.1f s -> %s"
          % (a.cmd, len(jobs), files + len(lists), total, total / 1e9, time.time() - t0, a.out))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Peak memory (RSS) of whole `run-pipeline` runs as the data grows: does it stay flat?

  python3 scripts/bench_memory.py train --sidd /data/sidd --clean /data/dfwb --scales 1,2,4
  python3 scripts/bench_memory.py score --realblur /data/realblur --counts 50,200

train: for each scale K, a tree with K times the images of --sidd and --clean (hard links
       under new names, in the same layouts), then a DANN run (reads both sets every step; no attention, whose memory would hide the data path's) of --steps steps on every
       patch of both (512² patches, 128² crops, batch 8 + 8, small networks; the patch
       stores are prepared first, their time reported by the run's log); prints peak RSS.
score: a pipeline scoring the first N RealBlur-J test pairs at full size (1 training step,
       so nearly all of the run is reading, restoring and scoring); prints peak RSS per N.

Peak RSS is GNU time's "maximum resident set size" of the run-pipeline process. The trees
come from scripts/make_trees.py; nothing here is committed. Prints numbers; asserts nothing.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def binary():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    exe = os.path.join(target, "release", "run-pipeline")
    if not os.path.exists(exe):
        sys.exit(f"{exe} not found: cargo build --release first (or set CARGO_TARGET_DIR)")
    return exe


def peak_rss(args, env=None):
    """(exit code, peak RSS in MiB, wall seconds, stderr tail) of one run."""
    out = subprocess.run(["/usr/bin/time", "-f", "RSS_KB=%M WALL=%e"] + args, cwd=REPO, env=env,
                         capture_output=True, text=True)
    line = [l for l in out.stderr.splitlines() if l.startswith("RSS_KB=")][-1]
    kb, wall = line.split()
    return out.returncode, int(kb.split("=")[1]) / 1024, float(wall.split("=")[1]), out.stderr[-2000:]


def link_tree(src, dst, k):
    """`dst`: every file of `src` k times (copy j of a/b.png is a/b_j.png; SIDD scene folders
    get a new instance number instead), hard-linked."""
    if os.path.exists(dst):
        return
    tmp = dst + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for j in range(k):
        for root, _, files in os.walk(src):
            rel = os.path.relpath(root, src)
            parts = rel.split(os.sep)
            if parts[0] == "Data" and len(parts) == 2:  # SIDD: Data/<inst>_<scene>_..._<L|N|H>
                f = parts[1].split("_")
                f[0] = f"{int(f[0]) + 1000 * j:04d}"
                rel = os.path.join("Data", "_".join(f))
            os.makedirs(os.path.join(tmp, rel), exist_ok=True)
            for name in files:
                stem, ext = os.path.splitext(name)
                if parts[0] == "Data":
                    new = name if j == 0 else name.replace(name.split("_")[0], f"{int(name.split('_')[0]) + 1000 * j:04d}", 1)
                else:
                    new = name if j == 0 else f"{stem}_{j}{ext}"
                os.link(os.path.join(root, name), os.path.join(tmp, rel, new))
    os.rename(tmp, dst)


def registry(path, entries):
    """The repository's registry (its embedded datasets) plus `entries`."""
    with open(path, "w") as f:
        f.write(open(os.path.join(REPO, "datasets.toml")).read() + "\n")
        for name, kind, layout, root in entries:
            f.write(f'[datasets.{name}]\nkind = "{kind}"\n')
            if layout:
                f.write(f'layout = "{layout}"\n')
            f.write(f'root = "{root}"\n\n')


def train(a):
    exe = binary()
    work = a.work or tempfile.mkdtemp(prefix="rp-mem-")
    os.makedirs(work, exist_ok=True)
    for k in [int(s) for s in a.scales.split(",")]:
        sidd, clean = os.path.join(work, f"sidd-{k}x"), os.path.join(work, f"clean-{k}x")
        link_tree(a.sidd, sidd, k)
        link_tree(a.clean, clean, k)
        reg = os.path.join(work, f"datasets-{k}x.toml")
        registry(reg, [("sidd-big", "sidd", "medium", sidd), ("dfwb-big", "clean_folder", None, clean)])
        reports = os.path.join(work, f"reports-{k}x")
        args = [exe, "pipelines/denoise.yaml", "--profile", "smoke", "--registry", reg,
                "--set", f"report.dir={reports}",
                "--set", "source={dataset: dfwb-big, count: null, size: 512, degradation: {awgn: {sigma: [0, 75]}}}",
                "--set", "target={dataset: sidd-big, count: null, size: 512}",
                "--set", "methods=[dann]",
                "--set", f"train.steps={a.steps}", "--set", "train.batch=8", "--set", "train.patch=128",
                "--set", "validation=null", "--set", "diagnostics={}"]
        code, rss, wall, err = peak_rss(args, env={**os.environ, "CI": "true"})
        store = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(os.path.join(reports, ".cache", "patches")) for f in fs)
        n = sum(len(fs) for _, _, fs in os.walk(os.path.join(sidd, "Data"))) // 2
        m = sum(len(fs) for _, _, fs in os.walk(clean))
        print(f"train {k}x: {n} SIDD pairs + {m} photos, stores {store / 1e9:.1f} GB: exit {code}, "
              f"peak RSS {rss:.0f} MiB, wall {wall:.0f} s", flush=True)
        if code != 0:
            print(err)
        if not a.keep:
            shutil.rmtree(os.path.join(reports, ".cache", "patches"), ignore_errors=True)


def score(a):
    exe = binary()
    work = a.work or tempfile.mkdtemp(prefix="rp-mem-")
    os.makedirs(work, exist_ok=True)
    reg = os.path.join(work, "datasets-rb.toml")
    registry(reg, [("rb", "realblur", "j", a.realblur)])
    for n in [int(s) for s in a.counts.split(",")]:
        reports = os.path.join(work, f"reports-rb{n}")
        args = [exe, "pipelines/deblur.yaml", "--profile", "smoke", "--registry", reg,
                "--set", f"report.dir={reports}",
                "--set", f"tests=[{{name: rb-test, dataset: rb, count: {n}, size: 512, protocol: {a.protocol}}}]",
                "--set", "methods=[source_only]", "--set", "train.steps=1",
                "--set", "validation=null", "--set", "diagnostics={}"]
        code, rss, wall, err = peak_rss(args, env={**os.environ, "CI": "true"})
        print(f"score {n} RealBlur-J pairs ({a.protocol}): exit {code}, peak RSS {rss:.0f} MiB, wall {wall:.0f} s", flush=True)
        if code != 0:
            print(err)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--sidd", required=True)
    t.add_argument("--clean", required=True)
    t.add_argument("--scales", default="1,2,4")
    t.add_argument("--steps", type=int, default=200)
    t.add_argument("--work")
    t.add_argument("--keep", action="store_true", help="keep the patch stores")
    s = sub.add_parser("score")
    s.add_argument("--realblur", required=True)
    s.add_argument("--counts", default="50,200")
    s.add_argument("--protocol", default="realblur-noalign")
    s.add_argument("--work")
    a = p.parse_args()
    {"train": train, "score": score}[a.cmd](a)


if __name__ == "__main__":
    main()

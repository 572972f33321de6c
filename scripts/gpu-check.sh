#!/usr/bin/env bash
# GPU check for a machine with an accelerator (see README "Back-ends"): runs the `gpu-bench`
# profile (UNet-S + the 62.6 M diffusion UNet, 128² crops, batch 24, 30 steps per method) with a
# wgpu build and prints steps/s, images/s and peak GPU memory; then the same two networks and
# steps in PyTorch (scripts/torch_step.py; the lent machines have PyTorch). Under 5 minutes.
#
#   Build here:  cargo build --release --features wgpu && mkdir -p bin && cp "$CARGO_TARGET_DIR/release/run-pipeline" bin/ && strip bin/run-pipeline
#   Run there:   bash scripts/gpu-check.sh            (carry bin/ and, without a Vulkan loader there, .gl/)
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/run-pipeline}
[ -x "$BIN" ] || { echo "no $BIN: build it with --features wgpu first" >&2; exit 2; }
if ! ldconfig -p | grep -q libvulkan && [ -d .gl ]; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
[ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ] && export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
OUT=$(mktemp -d)
# Sample GPU memory every 0.5 s while the run goes.
( while :; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -1; sleep 0.5; done ) > "$OUT/mem.txt" &
SAMPLER=$!
start=$(date +%s)
CI=true "$BIN" pipelines/denoise.yaml --profile gpu-bench --backend wgpu --set "report.dir=$OUT/reports" 2> "$OUT/log.txt"
rc=$?
kill $SAMPLER 2>/dev/null
grep -E "compute back-end|training finished|run finished|error" "$OUT/log.txt"
python3 - "$OUT" <<'PY'
import glob, json, sys
out = sys.argv[1]
for p in glob.glob(f"{out}/reports/denoise/*/provenance.json"):
    prov = json.load(open(p))
    for t in prov["training"]:
        da = t.get("algorithm", t["method"]) == "noise_da"
        imgs = t["steps_per_s"] * 24 * (2 if da else 1)
        print(f'{prov["device"]}: {t["method"]:<12} {t["steps_per_s"]:.2f} steps/s, {imgs:.1f} images/s (batch 24 synthetic'
              f'{" + 24 target" if da else ""}), G {t["params_restorer"]} D {t["params_diffusion"]}')
mem = [int(x) for x in open(f"{out}/mem.txt").read().split() if x.strip().isdigit()]
print(f"peak GPU memory: {max(mem) if mem else 'n/a'} MiB")
PY
echo "burn/wgpu wall: $(( $(date +%s) - start )) s, exit $rc"
# The same steps in PyTorch (fp32, TF32 off), for reference on the same GPU.
if python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  timeout 150 python3 scripts/torch_step.py --device cuda --steps 20 --batch 24 --patch 128 || echo "torch_step.py failed"
else
  echo "PyTorch with CUDA not available here: no reference numbers"
fi
echo "total wall: $(( $(date +%s) - start )) s"
exit $rc

"""Parity fixtures between run-pipeline's restorer and the authors' PyTorch `RestorationNet`.

The network below is written from the architecture the release documents (plain UNet: two 3x3
convs + LeakyReLU(0.2) per level, average-pool down; up-block = bilinear x2 with
align_corners=True, then a 3x3 conv with no activation, concatenated with the skip, two 3x3
convs; a final 3x3 conv; the restored image is x + G(x)), with the parameter names its
checkpoints use, so that a state dict saved here has exactly the layout of the release's.

    python scripts/release_parity.py make OUT_DIR
        writes release_unet.pth (torch.save of {"RestorationNet.*": ..., "denoise_fn.*": ...},
        as the release's Network stores G beside its diffusion model), the same weights as
        release_unet.safetensors, and io.safetensors with an input and PyTorch's output.
        tests/fixtures/interop/ holds the committed output (widths 8/16/32, seed 0).

    python scripts/release_parity.py check-export EXPORT.safetensors IO.safetensors
        loads an export of run-pipeline (`run-pipeline export ...`) into this network with
        load_state_dict(strict=True) and compares its output on IO's input with IO's output.

Needs PyTorch and NumPy (benchmarks only; not part of CI).
"""

import json
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Level(nn.Module):
    """Two 3x3 convs with LeakyReLU(0.2); parameters block.0 and block.2."""

    def __init__(self, cin, cout):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(0.2))

    def forward(self, x):
        return self.block(x)


class Up(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv_up = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv_block = Level(cin, cout)

    def forward(self, x, skip):
        x = self.conv_up(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True))
        return self.conv_block(torch.cat([x, skip], 1))


class ReleaseUNet(nn.Module):
    def __init__(self, widths):
        super().__init__()
        self.down_path = nn.ModuleList()
        cin = 3
        for w in widths:
            self.down_path.append(Level(cin, w))
            cin = w
        self.up_path = nn.ModuleList([Up(widths[i + 1], widths[i]) for i in reversed(range(len(widths) - 1))])
        self.last = nn.Conv2d(widths[0], 3, 3, padding=1)

    def forward(self, x):
        skips = []
        for i, level in enumerate(self.down_path):
            x = level(x)
            if i < len(self.down_path) - 1:
                skips.append(x)
                x = F.avg_pool2d(x, 2)
        for up in self.up_path:
            x = up(x, skips.pop())
        return self.last(x)


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        data = t.detach().cpu().contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def read_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        assert info["dtype"] == "F32", info["dtype"]
        out[name] = torch.from_numpy(np.frombuffer(raw[8 + n + b:8 + n + e], dtype="<f4").copy()).reshape(info["shape"])
    return out


WIDTHS = [8, 16, 32]


def make(out_dir):
    torch.manual_seed(0)
    g = ReleaseUNet(WIDTHS).eval()
    state = {f"RestorationNet.{k}": v for k, v in g.state_dict().items()}
    # The diffusion model shares the checkpoint; loaders must ignore it.
    state["denoise_fn.input_blocks.0.0.weight"] = torch.randn(4, 9, 3, 3)
    torch.save(state, f"{out_dir}/release_unet.pth")
    write_safetensors(f"{out_dir}/release_unet.safetensors", state)
    # An input whose sides are multiples of 4 but not squares, in [0, 1].
    x = torch.rand(1, 3, 20, 28)
    with torch.no_grad():
        y = x + g(x)
    write_safetensors(f"{out_dir}/io.safetensors", {"input": x, "output": y})
    print(f"wrote {out_dir}: {sum(p.numel() for p in g.parameters())} parameters, output mean {y.mean():.6f}")


def check_export(export, io):
    g = ReleaseUNet(WIDTHS).eval()
    weights = read_safetensors(export)
    weights = {k.removeprefix("RestorationNet."): v for k, v in weights.items()}
    g.load_state_dict(weights, strict=True)
    t = read_safetensors(io)
    with torch.no_grad():
        y = t["input"] + g(t["input"])
    err = (y - t["output"]).abs().max().item()
    print(f"max |PyTorch(export) - run-pipeline| = {err:.3e}")
    sys.exit(0 if err < 1e-5 else 1)


if __name__ == "__main__":
    if sys.argv[1:2] == ["make"]:
        make(sys.argv[2])
    elif sys.argv[1:2] == ["check-export"]:
        check_export(sys.argv[2], sys.argv[3])
    else:
        print(__doc__)
        sys.exit(2)

"""Parity fixtures for the NAFNet and Restormer restorers against PyTorch.

Both networks below are written from /work/shared/ARCHS.md (the structure, initial values and
checkpoint layout of the published networks), with the parameter names the authors' checkpoints
use, so that a state dict saved here has exactly the layout of `NAFNet-SIDD-width32.pth` or
`real_denoising.pth` (`{"params": state_dict}`).

NAFNet: intro 3x3 conv; per level NAFBlocks then a 2x2 stride-2 conv (c -> 2c); middle blocks;
per level 1x1 conv (c -> 2c, no bias) + pixel shuffle, add the skip, NAFBlocks; ending 3x3 conv;
output = input + ending, the input zero-padded right/bottom to a multiple of 2^levels and the
output cropped back. NAFBlock: LayerNorm2d (eps 1e-6), 1x1, 3x3 depthwise, SimpleGate,
simplified channel attention, 1x1, times beta; LayerNorm2d, 1x1, SimpleGate, 1x1, times gamma.

Restormer: 3x3 patch embedding; three encoder levels and a latent of transformer blocks
(bias-free LayerNorm, MDTA transposed attention, GDFN gated feed-forward) at dim*[1, 2, 4, 8];
3x3 conv + pixel unshuffle down, 3x3 conv + pixel shuffle up, 1x1 channel reductions on decoder
levels 3 and 2, level 1 at 2*dim without one; refinement blocks; 3x3 output conv + the input.

    python scripts/archs_parity.py count
        prints the parameter counts of the published configs (NAFNet-SIDD width 32 / 64:
        29,159,715 / 115,982,915; Restormer dim 48: 26,111,668 with the real-denoising
        config's BiasFree norms, 26,126,644 with WithBias norms) and of the fixture configs.

    python scripts/archs_parity.py make OUT_DIR
        seed 0: builds the small fixture configs (FIXTURES below), with beta/gamma, the
        temperatures and the LayerNorm parameters drawn at random so that every parameter
        matters, and writes nafnet.pth / restormer.pth (torch.save of {"params": state_dict}),
        the same weights as nafnet.safetensors / restormer.safetensors (flat keys, F32),
        nafnet_io.safetensors (input 1x3x37x45, odd to exercise NAFNet's padding) and
        restormer_io.safetensors (input 1x3x32x40), each with `output` (eval, no grad), and for
        training parity `loss` = mean|model(input) - input.flip(1)| (shape [1]), `input_grad`
        and `grad.<param name>` for two parameters; configs.json holds the fixture configs and
        parameter counts. tests/fixtures/archs/ holds the committed output.

    python scripts/archs_parity.py check-export ARCH EXPORT.safetensors IO.safetensors
        ARCH is nafnet or restormer: loads EXPORT into the fixture-config network with
        load_state_dict(strict=True) and compares its output on IO's input with IO's output
        (exit 1 above 1e-4).

    python scripts/archs_parity.py step ARCH [--size S] [--batch B] [--iters N]
        times forward + backward + AdamW step of the published config (NAFNet width 32 SIDD,
        Restormer dim 48) on CPU with 2 threads, S x S crops, batch B, L1 loss; prints steps/s
        after one warm-up step.

Needs PyTorch and NumPy (benchmarks and fixtures only; not part of CI).
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


# ---------------------------------------------------------------------------------------- NAFNet

class LayerNorm2d(nn.Module):
    """LayerNorm over channels at each pixel (population variance), per-channel weight and bias."""

    def __init__(self, c, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.eps = eps

    def forward(self, x):
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        y = (x - mu) / (var + self.eps).sqrt()
        return self.weight.view(1, -1, 1, 1) * y + self.bias.view(1, -1, 1, 1)


def simple_gate(x):
    a, b = x.chunk(2, dim=1)
    return a * b


class NAFBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm1 = LayerNorm2d(c)
        self.conv1 = nn.Conv2d(c, 2 * c, 1)
        self.conv2 = nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2 * c)
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c, 1))
        self.conv3 = nn.Conv2d(c, c, 1)
        self.norm2 = LayerNorm2d(c)
        self.conv4 = nn.Conv2d(c, 2 * c, 1)
        self.conv5 = nn.Conv2d(c, c, 1)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x):
        t = simple_gate(self.conv2(self.conv1(self.norm1(x))))
        y = x + self.beta * self.conv3(t * self.sca(t))
        t = self.conv5(simple_gate(self.conv4(self.norm2(y))))
        return y + self.gamma * t


class NAFNet(nn.Module):
    def __init__(self, width=32, enc_blk_nums=(2, 2, 4, 8), middle_blk_num=12, dec_blk_nums=(2, 2, 2, 2), img_channel=3):
        super().__init__()
        self.intro = nn.Conv2d(img_channel, width, 3, padding=1)
        self.encoders, self.downs = nn.ModuleList(), nn.ModuleList()
        c = width
        for n in enc_blk_nums:
            self.encoders.append(nn.Sequential(*[NAFBlock(c) for _ in range(n)]))
            self.downs.append(nn.Conv2d(c, 2 * c, 2, stride=2))
            c *= 2
        self.middle_blks = nn.Sequential(*[NAFBlock(c) for _ in range(middle_blk_num)])
        self.ups, self.decoders = nn.ModuleList(), nn.ModuleList()
        for n in dec_blk_nums:
            self.ups.append(nn.Sequential(nn.Conv2d(c, 2 * c, 1, bias=False), nn.PixelShuffle(2)))
            c //= 2
            self.decoders.append(nn.Sequential(*[NAFBlock(c) for _ in range(n)]))
        self.ending = nn.Conv2d(width, img_channel, 3, padding=1)
        self.multiple = 2 ** len(enc_blk_nums)

    def forward(self, inp):
        h, w = inp.shape[-2:]
        m = self.multiple
        inp = F.pad(inp, (0, (m - w % m) % m, 0, (m - h % m) % m))
        x = self.intro(inp)
        skips = []
        for enc, down in zip(self.encoders, self.downs):
            x = enc(x)
            skips.append(x)
            x = down(x)
        x = self.middle_blks(x)
        for dec, up, skip in zip(self.decoders, self.ups, reversed(skips)):
            x = dec(up(x) + skip)
        return (inp + self.ending(x))[..., :h, :w]


# ------------------------------------------------------------------------------------- Restormer

class BiasFreeLayerNorm(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))

    def forward(self, x):
        var = x.var(1, keepdim=True, unbiased=False)
        return x / (var + 1e-5).sqrt() * self.weight.view(1, -1, 1, 1)


class WithBiasLayerNorm(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))

    def forward(self, x):
        mu = x.mean(1, keepdim=True)
        var = x.var(1, keepdim=True, unbiased=False)
        return (x - mu) / (var + 1e-5).sqrt() * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class LayerNorm(nn.Module):
    """Holds the norm as `body` so that the keys are norm1.body.weight (and .bias for WithBias)."""

    def __init__(self, c, kind):
        super().__init__()
        self.body = BiasFreeLayerNorm(c) if kind == "BiasFree" else WithBiasLayerNorm(c)

    def forward(self, x):
        return self.body(x)


class MDTA(nn.Module):
    def __init__(self, c, heads):
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(c, 3 * c, 1, bias=False)
        self.qkv_dwconv = nn.Conv2d(3 * c, 3 * c, 3, padding=1, groups=3 * c, bias=False)
        self.project_out = nn.Conv2d(c, c, 1, bias=False)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = (t.reshape(b, self.heads, c // self.heads, h * w) for t in self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = ((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1)
        return self.project_out((attn @ v).reshape(b, c, h, w))


class GDFN(nn.Module):
    def __init__(self, c, expansion):
        super().__init__()
        hidden = int(c * expansion)
        self.project_in = nn.Conv2d(c, 2 * hidden, 1, bias=False)
        self.dwconv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, bias=False)
        self.project_out = nn.Conv2d(hidden, c, 1, bias=False)

    def forward(self, x):
        a, b = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(a) * b)


class TransformerBlock(nn.Module):
    def __init__(self, c, heads, expansion, ln):
        super().__init__()
        self.norm1 = LayerNorm(c, ln)
        self.attn = MDTA(c, heads)
        self.norm2 = LayerNorm(c, ln)
        self.ffn = GDFN(c, expansion)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class Resample(nn.Module):
    """`body` = 3x3 conv + pixel (un)shuffle: down c -> c/2 -> 2c, up c -> 2c -> c/2."""

    def __init__(self, c, is_down):
        super().__init__()
        if is_down:
            self.body = nn.Sequential(nn.Conv2d(c, c // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))
        else:
            self.body = nn.Sequential(nn.Conv2d(c, 2 * c, 3, padding=1, bias=False), nn.PixelShuffle(2))

    def forward(self, x):
        return self.body(x)


class PatchEmbed(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, 3, padding=1, bias=False)

    def forward(self, x):
        return self.proj(x)


class Restormer(nn.Module):
    def __init__(self, dim=48, num_blocks=(4, 6, 6, 8), num_refinement_blocks=4, heads=(1, 2, 4, 8), ffn_expansion_factor=2.66,
                 LayerNorm_type="BiasFree"):
        super().__init__()

        def blocks(n, c, h):
            return nn.Sequential(*[TransformerBlock(c, h, ffn_expansion_factor, LayerNorm_type) for _ in range(n)])

        self.patch_embed = PatchEmbed(dim)
        self.encoder_level1 = blocks(num_blocks[0], dim, heads[0])
        self.down1_2 = Resample(dim, True)
        self.encoder_level2 = blocks(num_blocks[1], 2 * dim, heads[1])
        self.down2_3 = Resample(2 * dim, True)
        self.encoder_level3 = blocks(num_blocks[2], 4 * dim, heads[2])
        self.down3_4 = Resample(4 * dim, True)
        self.latent = blocks(num_blocks[3], 8 * dim, heads[3])
        self.up4_3 = Resample(8 * dim, False)
        self.reduce_chan_level3 = nn.Conv2d(8 * dim, 4 * dim, 1, bias=False)
        self.decoder_level3 = blocks(num_blocks[2], 4 * dim, heads[2])
        self.up3_2 = Resample(4 * dim, False)
        self.reduce_chan_level2 = nn.Conv2d(4 * dim, 2 * dim, 1, bias=False)
        self.decoder_level2 = blocks(num_blocks[1], 2 * dim, heads[1])
        self.up2_1 = Resample(2 * dim, False)
        self.decoder_level1 = blocks(num_blocks[0], 2 * dim, heads[0])
        self.refinement = blocks(num_refinement_blocks, 2 * dim, heads[0])
        self.output = nn.Conv2d(2 * dim, 3, 3, padding=1, bias=False)

    def forward(self, inp):
        assert inp.shape[-1] % 8 == 0 and inp.shape[-2] % 8 == 0, "Restormer needs H, W divisible by 8"
        e1 = self.encoder_level1(self.patch_embed(inp))
        e2 = self.encoder_level2(self.down1_2(e1))
        e3 = self.encoder_level3(self.down2_3(e2))
        x = self.latent(self.down3_4(e3))
        x = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(x), e3], 1)))
        x = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(x), e2], 1)))
        x = self.decoder_level1(torch.cat([self.up2_1(x), e1], 1))
        return self.output(self.refinement(x)) + inp


# ----------------------------------------------------------------------------------- the configs

# Small, with two blocks somewhere in each stage so that the block index in the key names is
# exercised; NAFNet's three levels pad 37x45 to 40x48. NAFNet's .pth stays under 200 KB (width 8
# with four levels would be 1.2 MB). Restormer's is 0.27 MB (dim 8 would be 0.86 MB): dim 2 would
# be smaller but is ill-conditioned, its 2-channel norms letting float32 rounding move the output
# by 1e-2, against 2.5e-7 at dim 4.
FIXTURES = {
    "nafnet": {"width": 4, "enc_blocks": [2, 1, 1], "middle_blocks": 2, "dec_blocks": [1, 1, 2]},
    "restormer": {"dim": 4, "blocks": [2, 1, 1, 1], "refinement": 2, "heads": [1, 2, 4, 8], "ffn_expansion": 2.66},
}
INPUT_SHAPES = {"nafnet": (1, 3, 37, 45), "restormer": (1, 3, 32, 40)}
GRAD_PARAMS = {
    "nafnet": ["intro.weight", "encoders.0.0.conv2.weight"],
    "restormer": ["patch_embed.proj.weight", "encoder_level1.0.attn.qkv_dwconv.weight"],
}


def build(arch, cfg):
    if arch == "nafnet":
        return NAFNet(cfg["width"], cfg["enc_blocks"], cfg["middle_blocks"], cfg["dec_blocks"])
    return Restormer(cfg["dim"], cfg["blocks"], cfg["refinement"], cfg["heads"], cfg["ffn_expansion"])


def published(arch, width=32, ln="BiasFree"):
    if arch == "nafnet":
        return NAFNet(width, [2, 2, 4, 8], 12, [2, 2, 2, 2])
    return Restormer(48, [4, 6, 6, 8], 4, [1, 2, 4, 8], 2.66, ln)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def randomize(model):
    """Overwrite the parameters that start as constants, so that every one of them matters."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("beta", "gamma"):
                p.copy_(torch.randn_like(p) * 0.3)
            elif leaf == "temperature":
                p.copy_(torch.rand_like(p) * 1.5 + 0.5)
            elif ".norm" in "." + name and leaf == "weight":
                p.copy_(torch.randn_like(p) * 0.5 + 1)
            elif ".norm" in "." + name and leaf == "bias":
                p.copy_(torch.randn_like(p) * 0.1)


# The same small safetensors reader/writer as the release UNet's fixtures (this folder).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from release_parity import read_safetensors, write_safetensors  # noqa: E402


# --------------------------------------------------------------------------------- the sub-commands

def count():
    print(f"NAFNet-SIDD width 32: {n_params(published('nafnet', 32)):,} (published 29,159,715)")
    print(f"NAFNet-SIDD width 64: {n_params(published('nafnet', 64)):,} (published 115,982,915)")
    # ARCHS.md's 26,126,644 is the authors' constructor default, WithBias LayerNorm (motion
    # deblurring); the real-denoising config's BiasFree norms have no bias: 14,976 fewer.
    print(f"Restormer dim 48 BiasFree (real_denoising): {n_params(published('restormer')):,}")
    print(f"Restormer dim 48 WithBias (motion_deblurring): {n_params(published('restormer', ln='WithBias')):,} (ARCHS.md 26,126,644)")
    for arch, cfg in FIXTURES.items():
        print(f"fixture {arch} {json.dumps(cfg)}: {n_params(build(arch, cfg)):,}")


def make(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)
    configs = {}
    for arch, cfg in FIXTURES.items():
        model = build(arch, cfg).eval()
        randomize(model)
        state = {k: v.detach().float() for k, v in model.state_dict().items()}
        torch.save({"params": state}, f"{out_dir}/{arch}.pth")
        write_safetensors(f"{out_dir}/{arch}.safetensors", state)
        x = torch.rand(*INPUT_SHAPES[arch])
        with torch.no_grad():
            y = model(x)
        # Training parity: L1 loss against the input with its channels reversed.
        xg = x.clone().requires_grad_(True)
        model.zero_grad()
        loss = (model(xg) - x.flip(1)).abs().mean()
        loss.backward()
        params = dict(model.named_parameters())
        io = {"input": x, "output": y, "loss": loss.detach().reshape(1), "input_grad": xg.grad}
        io.update({f"grad.{name}": params[name].grad for name in GRAD_PARAMS[arch]})
        write_safetensors(f"{out_dir}/{arch}_io.safetensors", io)
        configs[arch] = dict(cfg, params=n_params(model), input=list(x.shape), grads=GRAD_PARAMS[arch])
        with torch.no_grad():  # how far float32 rounding alone moves the output
            drift = (model.double()(x.double()) - y.double()).abs().max().item()
        print(f"{arch}: {n_params(model)} parameters, {len(state)} tensors, output mean {y.mean():.6f}, "
              f"loss {loss.item():.6f}, max |float64 - float32| {drift:.1e}")
    with open(f"{out_dir}/configs.json", "w") as f:
        json.dump(configs, f, indent=2)
        f.write("\n")
    print(f"wrote {out_dir}")


def check_export(arch, export, io):
    model = build(arch, FIXTURES[arch]).eval()
    model.load_state_dict(read_safetensors(export), strict=True)
    t = read_safetensors(io)
    with torch.no_grad():
        y = model(t["input"])
    err = (y - t["output"]).abs().max().item()
    print(f"{arch}: max |PyTorch(export) - reference| = {err:.3e}")
    sys.exit(0 if err <= 1e-4 else 1)


def step(arch, size, batch, iters):
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = published(arch).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.9))
    x = torch.rand(batch, 3, size, size)
    target = torch.rand(batch, 3, size, size)

    def one():
        opt.zero_grad()
        loss = (model(x) - target).abs().mean()
        loss.backward()
        opt.step()

    one()
    t0 = time.perf_counter()
    for _ in range(iters):
        one()
    dt = time.perf_counter() - t0
    print(f"{arch} ({n_params(model):,} params) {size}x{size} batch {batch}, 2 threads: "
          f"{iters / dt:.3f} steps/s ({dt / iters:.3f} s/step)")


if __name__ == "__main__":
    cmd = sys.argv[1:2]
    if cmd == ["count"]:
        count()
    elif cmd == ["make"] and len(sys.argv) == 3:
        make(sys.argv[2])
    elif cmd == ["check-export"] and len(sys.argv) == 5 and sys.argv[2] in FIXTURES:
        check_export(*sys.argv[2:5])
    elif cmd == ["step"]:
        p = argparse.ArgumentParser(prog="archs_parity.py step")
        p.add_argument("arch", choices=sorted(FIXTURES))
        p.add_argument("--size", type=int, default=64)
        p.add_argument("--batch", type=int, default=2)
        p.add_argument("--iters", type=int, default=2)
        a = p.parse_args(sys.argv[2:])
        step(a.arch, a.size, a.batch, a.iters)
    else:
        print(__doc__)
        sys.exit(2)

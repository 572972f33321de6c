#!/usr/bin/env python3
"""PyTorch reference timing of one training step of our two recipes.

Builds, in PyTorch, the same two networks as the Rust crate (src/networks/restorer.rs and
src/networks/diffusion.rs) at the paper's size, and times the training step as
src/training/mod.rs (`step_terms`, `noise_da_losses`) takes it:

- source_only: Charbonnier(x_s + G(x_s), y_s), Adam on G;
- noise_da:    G on cat(x_s, x_r); Charbonnier on the synthetic half; noisy GT
               ỹ = sqrt(γ)·y_s + sqrt(1−γ)·ε; per-sample slot shuffle; residual-swapped negative
               pair through the same D in one batched forward (positive and negative
               concatenated on the batch axis); hinge δ = 0.1;
               L = char + α·½(mse_pos + hinge), α = 0.197 (the ramp's end value);
               one Adam over G and D.

fp32 only (TF32 off unless --tf32). Inputs are uniform [0, 1] random data.

    python3 scripts/torch_step.py [--device cuda|cpu] [--steps 30] [--batch 24] [--patch 128]
                                  [--warmup 3] [--json]
"""

import argparse
import gc
import json
import math
import os
import random
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# The Rust counts (src/networks/mod.rs, `parameter_counts_match_the_paper`).
RUST_PARAMS_G = 8_559_171  # UNet-S, widths 64/128/256/512
RUST_PARAMS_D_ROUNDED = 62.6  # round(D / 1e5) / 10, base 64, mults 1/2/4/8, 2 res blocks


# --------------------------------------------------------------------------------------------
# Layers with the release's initialisation (src/networks/init.rs): Kaiming-normal weights with
# gain sqrt(2) over fan-in (std = sqrt(2 / fan_in)), zero bias.
# --------------------------------------------------------------------------------------------


def conv(c_in, c_out, k):
    """k×k convolution with "same" padding (k // 2 on every side)."""
    c = nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=True)
    nn.init.kaiming_normal_(c.weight, mode="fan_in", nonlinearity="relu")
    nn.init.zeros_(c.bias)
    return c


def linear(d_in, d_out):
    lin = nn.Linear(d_in, d_out, bias=True)
    nn.init.kaiming_normal_(lin.weight, mode="fan_in", nonlinearity="relu")
    nn.init.zeros_(lin.bias)
    return lin


def group_count(channels):
    """Largest group count <= 32 that divides `channels` (networks/mod.rs `group_count`)."""
    for g in range(min(32, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


def group_norm(channels):
    # burn's GroupNorm: affine (gamma = 1, beta = 0), epsilon 1e-5; same as PyTorch's default.
    return nn.GroupNorm(group_count(channels), channels, eps=1e-5, affine=True)


# --------------------------------------------------------------------------------------------
# G: the residual restorer, UNet family (restorer.rs).
# --------------------------------------------------------------------------------------------


class DoubleConv(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.a = conv(c_in, c_out, 3)
        self.b = conv(c_out, c_out, 3)

    def forward(self, x):
        x = F.leaky_relu(self.a(x), 0.2)
        return F.leaky_relu(self.b(x), 0.2)


class RestorerUNet(nn.Module):
    def __init__(self, widths=(64, 128, 256, 512)):
        super().__init__()
        w = list(widths)
        self.enc = nn.ModuleList()
        c_in = 3
        for c in w:
            self.enc.append(DoubleConv(c_in, c))
            c_in = c
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for i in reversed(range(len(w) - 1)):
            self.up.append(conv(w[i + 1], w[i], 3))
            self.dec.append(DoubleConv(2 * w[i], w[i]))
        self.out = conv(w[0], 3, 3)

    def residual(self, x):
        """R = G(x); callers add it to x."""
        skips = []
        h = x
        for i, block in enumerate(self.enc):
            if i > 0:
                h = F.avg_pool2d(h, 2)  # kernel 2, stride 2, no padding
            h = block(h)
            skips.append(h)
        skips.pop()
        for up, dec in zip(self.up, self.dec):
            skip = skips.pop()
            h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
            h = F.leaky_relu(up(h), 0.2)
            h = dec(torch.cat([h, skip], 1))
        return self.out(h)

    def restore(self, x):
        return self.residual(x) + x

    def macs(self, h, w):
        """Conv MACs as restorer.rs `macs` counts them (a check that the shapes agree)."""
        total = 0
        ws = [blk.b.out_channels for blk in self.enc]

        def c(cin, cout, hw):
            return cin * cout * 9 * hw

        c_in = 3
        for i, ch in enumerate(ws):
            hw = (h >> i) * (w >> i)
            total += c(c_in, ch, hw) + c(ch, ch, hw)
            c_in = ch
        for i in reversed(range(len(ws) - 1)):
            hw = (h >> i) * (w >> i)
            total += c(ws[i + 1], ws[i], hw) + c(2 * ws[i], ws[i], hw) + c(ws[i], ws[i], hw)
        return total + c(ws[0], 3, h * w)


# --------------------------------------------------------------------------------------------
# D: the conditional diffusion UNet (diffusion.rs).
# --------------------------------------------------------------------------------------------

NONE, DOWN, UP = 0, 1, 2


def resample(x, r):
    if r == DOWN:
        return F.avg_pool2d(x, 2)
    if r == UP:
        return F.interpolate(x, scale_factor=2, mode="nearest")
    return x


class ResBlock(nn.Module):
    def __init__(self, c_in, c_out, emb, dropout, resample_kind=NONE):
        super().__init__()
        self.norm1 = group_norm(c_in)
        self.conv1 = conv(c_in, c_out, 3)
        self.film = linear(emb, 2 * c_out)
        self.norm2 = group_norm(c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv(c_out, c_out, 3)
        self.skip = conv(c_in, c_out, 1) if c_in != c_out else None
        self.resample = resample_kind

    def forward(self, x, emb):
        r = self.resample
        # Resampling between the first norm/activation and the first conv, on both paths.
        h = self.conv1(resample(F.silu(self.norm1(x)), r))
        x = resample(x, r)
        b, c = h.shape[0], h.shape[1]
        ss = self.film(F.silu(emb)).reshape(b, 2 * c, 1, 1)
        scale, shift = ss.chunk(2, 1)
        h = self.norm2(h) * (scale + 1.0) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        if self.skip is not None:
            return self.skip(x) + h
        return x + h


class Attention(nn.Module):
    def __init__(self, ch, heads, use_sdpa=False):
        super().__init__()
        self.heads = 1 if heads == 0 or ch % heads != 0 else heads
        self.norm = group_norm(ch)
        self.qkv = conv(ch, 3 * ch, 1)
        self.proj = conv(ch, ch, 1)
        self.use_sdpa = use_sdpa

    def forward(self, x):
        b, c, h, w = x.shape
        nh = self.heads
        d = c // nh
        # qkv channels laid out as [3, heads, d] (q block, k block, v block; heads inside).
        qkv = self.qkv(self.norm(x)).reshape(b, 3, nh, d, h * w)
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]  # each [b, heads, d, hw]
        if self.use_sdpa:
            out = F.scaled_dot_product_attention(
                q.transpose(2, 3), k.transpose(2, 3), v.transpose(2, 3)
            ).transpose(2, 3)
        else:
            # scores[b, head, i, j] = q_i · k_j / sqrt(d); softmax over j.
            scores = q.transpose(2, 3).matmul(k) / math.sqrt(d)
            attn = torch.softmax(scores, dim=3)
            out = v.matmul(attn.transpose(2, 3))  # [b, heads, d, hw]
        out = out.reshape(b, c, h, w)
        return x + self.proj(out)


def gamma_embedding(gamma, dim):
    """Sinusoidal embedding of γ·1000: [sin(pos·f_i) for i < dim/2, cos(pos·f_i) ...],
    f_i = exp(−ln(10000)·i/(dim/2)); computed in f64 and stored as f32, like the Rust."""
    half = dim // 2
    pos = gamma.to(torch.float64) * 1000.0
    i = torch.arange(half, device=gamma.device, dtype=torch.float64)
    freq = torch.exp(-math.log(10000.0) * i / half)
    arg = pos[:, None] * freq[None, :]
    emb = torch.cat([torch.sin(arg), torch.cos(arg)], 1)
    if dim % 2 == 1:  # the Rust leaves the last entry 0 for odd dims
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], 1)
    return emb.to(torch.float32)


class DiffusionUNet(nn.Module):
    def __init__(self, base=64, mults=(1, 2, 4, 8), res_blocks=2, attn_heads=16, dropout=0.2,
                 conditions=2, use_sdpa=False):
        super().__init__()
        emb = 4 * base
        self.base, self.levels, self.res_blocks = base, len(mults), res_blocks
        ch = base
        skip_ch = [ch]
        self.down = nn.ModuleList()
        self.resample_down = nn.ModuleList()
        for level, m in enumerate(mults):
            for _ in range(res_blocks):
                self.down.append(ResBlock(ch, m * base, emb, dropout))
                ch = m * base
                skip_ch.append(ch)
            if level + 1 < len(mults):
                self.resample_down.append(ResBlock(ch, ch, emb, dropout, DOWN))
                skip_ch.append(ch)
        self.mid1 = ResBlock(ch, ch, emb, dropout)
        self.attn = Attention(ch, attn_heads, use_sdpa)
        self.mid2 = ResBlock(ch, ch, emb, dropout)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level in reversed(range(len(mults))):
            m = mults[level]
            for _ in range(res_blocks + 1):
                s = skip_ch.pop()
                self.up.append(ResBlock(ch + s, m * base, emb, dropout))
                ch = m * base
            if level > 0:
                self.upsample.append(ResBlock(ch, ch, emb, dropout, UP))
        assert not skip_ch, "skip bookkeeping"
        self.emb1 = linear(base, emb)
        self.emb2 = linear(emb, emb)
        self.input = conv(3 + 3 * conditions, base, 3)
        self.out_norm = group_norm(ch)
        self.out = conv(ch, 3, 3)

    def forward(self, x, gamma):
        """Predict ε from x = [ỹ, cond_A, cond_B] (9 channels) and per-sample γ ([B])."""
        emb = self.emb2(F.silu(self.emb1(gamma_embedding(gamma, self.base).to(x.dtype))))
        h = self.input(x)
        skips = [h]
        blocks = iter(self.down)
        downs = iter(self.resample_down)
        for level in range(self.levels):
            for _ in range(self.res_blocks):
                h = next(blocks)(h, emb)
                skips.append(h)
            if level + 1 < self.levels:
                h = next(downs)(h, emb)
                skips.append(h)
        h = self.mid1(h, emb)
        h = self.attn(h)
        h = self.mid2(h, emb)
        blocks = iter(self.up)
        ups = iter(self.upsample)
        for level in reversed(range(self.levels)):
            for _ in range(self.res_blocks + 1):
                s = skips.pop()
                h = next(blocks)(torch.cat([h, s], 1), emb)
            if level > 0:
                h = next(ups)(h, emb)
        return self.out(F.silu(self.out_norm(h)))


def rust_d_param_count(base=64, mults=(1, 2, 4, 8), res_blocks=2, attn_heads=16, conditions=2):
    """D's parameter count by the formula of diffusion.rs `init_for` (burn counts GroupNorm's
    gamma/beta; Dropout and the plain usize fields hold none), independent of the torch model."""
    emb = 4 * base

    def conv_p(ci, co, k):
        return ci * co * k * k + co

    def lin_p(di, do):
        return di * do + do

    def gn_p(c):
        return 2 * c

    def block(ci, co):
        return (gn_p(ci) + conv_p(ci, co, 3) + lin_p(emb, 2 * co) + gn_p(co) + conv_p(co, co, 3)
                + (conv_p(ci, co, 1) if ci != co else 0))

    total = lin_p(base, emb) + lin_p(emb, emb) + conv_p(3 + 3 * conditions, base, 3)
    ch = base
    skip_ch = [ch]
    for level, m in enumerate(mults):
        for _ in range(res_blocks):
            total += block(ch, m * base)
            ch = m * base
            skip_ch.append(ch)
        if level + 1 < len(mults):
            total += block(ch, ch)
            skip_ch.append(ch)
    total += 2 * block(ch, ch)
    total += gn_p(ch) + conv_p(ch, 3 * ch, 1) + conv_p(ch, ch, 1)  # attention
    for level in reversed(range(len(mults))):
        m = mults[level]
        for _ in range(res_blocks + 1):
            total += block(ch + skip_ch.pop(), m * base)
            ch = m * base
        if level > 0:
            total += block(ch, ch)
    return total + gn_p(ch) + conv_p(ch, 3, 3)


# --------------------------------------------------------------------------------------------
# Noise schedule and losses (diffusion.rs NoiseSchedule, training/losses.rs).
# --------------------------------------------------------------------------------------------


def alpha_bar_linear(t_max=1000, beta_start=1e-6, beta_end=1e-2):
    ab = [1.0]
    acc = 1.0
    for i in range(t_max):
        beta = beta_start if t_max == 1 else beta_start + (beta_end - beta_start) * i / (t_max - 1)
        acc *= 1.0 - beta
        ab.append(acc)
    return ab


def sample_gamma(ab, rng, t_lo=1, t_hi=1000):
    """t uniform in {t_lo..=t_hi} clamped to 1..T−1, then γ uniform in (ᾱ_t, ᾱ_{t−1})."""
    steps = len(ab) - 1
    hi = max(min(t_hi, steps - 1), 1)
    lo = min(max(t_lo, 1), hi)
    t = rng.randint(lo, hi)
    return rng.uniform(ab[t], ab[t - 1])


def charbonnier(pred, target, eps=1e-3):
    d = pred - target
    return torch.sqrt(d * d + eps * eps).mean()


def slot_swap(a, b, mask):
    """mask [n,1,1,1] of 0/1: where 1, sample gets (b, a). A blend, so gradients reach both."""
    keep = 1.0 - mask
    return a * keep + b * mask, b * keep + a * mask


# --------------------------------------------------------------------------------------------
# The two training steps.
# --------------------------------------------------------------------------------------------


class Recipe:
    def __init__(self, args, device):
        self.args = args
        self.device = device
        self.ab = alpha_bar_linear()
        self.rng = random.Random(args.seed)

    def batch(self, with_target):
        a, dev = self.args, self.device
        shape = (a.batch, 3, a.patch, a.patch)
        x_s = torch.rand(shape, device=dev)
        y_s = torch.rand(shape, device=dev)
        x_r = torch.rand(shape, device=dev) if with_target else None
        return x_s, y_s, x_r

    def source_only_step(self, g, opt):
        x_s, y_s, _ = self.batch(False)
        loss = charbonnier(g.restore(x_s), y_s, self.args.charbonnier_eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    def noise_da_step(self, g, d, opt):
        a, dev = self.args, self.device
        x_s, y_s, x_r = self.batch(True)
        n = x_s.shape[0]
        # 1. Residuals of both domains in one pass.
        r_s, r_r = g.residual(torch.cat([x_s, x_r], 0)).chunk(2, 0)
        yhat_s = x_s + r_s
        yhat_r = x_r + r_r
        # 2. Supervised loss on the synthetic pair only.
        l_char = charbonnier(yhat_s, y_s, a.charbonnier_eps)
        # 3–4. Noisy synthetic GT at a continuous γ per sample (γ drawn on the host, as in Rust).
        to_d = (lambda t: t * 2.0 - 1.0) if a.signed else (lambda t: t)
        gammas = [sample_gamma(self.ab, self.rng) for _ in range(n)]
        gamma = torch.tensor(gammas, dtype=torch.float32).to(dev, non_blocking=True)
        eps = torch.randn(n, 3, a.patch, a.patch, device=dev)
        g4 = gamma.view(n, 1, 1, 1)
        y_noisy = to_d(y_s) * g4.sqrt() + eps * (1.0 - g4).sqrt()

        # 5. Positive conditions, slots shuffled per sample (host coin flips, p = 0.5).
        def swaps():
            m = [1.0 if self.rng.random() < 0.5 else 0.0 for _ in range(n)]
            return torch.tensor(m, dtype=torch.float32).view(n, 1, 1, 1).to(dev, non_blocking=True)

        ca, cb = slot_swap(to_d(yhat_s), to_d(yhat_r), swaps())
        pos_in = torch.cat([y_noisy, ca, cb], 1)
        # 6. Negative conditions: residuals swapped across domains, own slot shuffle,
        #    same ỹ, γ, ε; positive and negative through D in one batched forward.
        na, nb = slot_swap(to_d(x_s + r_r), to_d(x_r + r_s), swaps())
        neg_in = torch.cat([y_noisy, na, nb], 1)
        out = d(torch.cat([pos_in, neg_in], 0), torch.cat([gamma, gamma], 0))
        e_pos, e_neg = out.chunk(2, 0)
        mse_pos = (eps - e_pos).pow(2.0).mean()
        mse_neg = (eps - e_neg).pow(2.0).mean()
        l_con = F.relu(mse_pos - mse_neg + a.delta)
        l_noise = (mse_pos + l_con) * 0.5
        # 7. Total loss.
        total = l_char + l_noise * a.alpha
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        return total.detach()


def adam(params, args):
    # The release's Adam (PyTorch defaults, eps 1e-8), which our burn training also uses
    # (burn adds ε·sqrt(1−β2^t) to sqrt(m2) before the bias corrections: the same update).
    return torch.optim.Adam(params, lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def maxrss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


class Published(nn.Module):
    """A published restorer (NAFNet, Restormer: `scripts/archs_parity.py`, written from the
    papers) whose forward already adds its input: restore = forward, residual = forward − x."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def restore(self, x):
        return self.net(x)

    def residual(self, x):
        return self.net(x) - x


def restorer(args):
    """G as our `networks.restorer` configures it (`--arch` JSON), or the UNet of `--widths`."""
    if not args.arch:
        return RestorerUNet(args.widths)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import archs_parity as ap
    cfg = json.loads(args.arch)
    if cfg.get("arch") == "nafnet":
        return Published(ap.NAFNet(cfg["width"], cfg["enc_blocks"], cfg["middle_blocks"], cfg["dec_blocks"]))
    if cfg.get("arch") == "restormer":
        ln = "WithBias" if cfg.get("layer_norm") == "with_bias" else "BiasFree"
        return Published(ap.Restormer(cfg["dim"], cfg["blocks"], cfg["refinement"], cfg["heads"],
                                      cfg["ffn_expansion"], ln))
    raise SystemExit(f"--arch: no PyTorch restorer for {cfg.get('arch')!r} here (unet, nafnet, restormer)")


def build_g(args, device):
    torch.manual_seed(args.seed)
    return restorer(args).to(device).train()


def build_d(args, device):
    torch.manual_seed(args.seed + 1)
    return DiffusionUNet(args.base, args.mults, args.res_blocks, args.attn_heads, args.dropout,
                         use_sdpa=args.sdpa).to(device).train()


def time_method(name, args, device, recipe):
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    g = build_g(args, device)
    if name == "source_only":
        opt = adam(g.parameters(), args)
        step = lambda: recipe.source_only_step(g, opt)  # noqa: E731
        images = args.batch
        d = None
    else:
        d = build_d(args, device)
        opt = adam(list(g.parameters()) + list(d.parameters()), args)
        step = lambda: recipe.noise_da_step(g, d, opt)  # noqa: E731
        images = 2 * args.batch
    losses = []
    for _ in range(args.warmup):
        losses.append(float(step()))
    sync(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
        if not args.no_loss_readback:
            # The Rust loop reads the loss back every step (curve + divergence check).
            losses.append(float(loss))
    sync(device)
    wall = time.perf_counter() - t0
    if args.no_loss_readback:
        losses.append(float(loss))
    res = {
        "steps": args.steps,
        "wall_s": wall,
        "steps_per_s": args.steps / wall,
        "ms_per_step": 1000.0 * wall / args.steps,
        "images_per_s": images * args.steps / wall,
        "images_per_step": images,
        "last_loss": losses[-1] if losses else None,
        "loss_finite": all(math.isfinite(v) for v in losses),
    }
    if device.type == "cuda":
        res["peak_mem_bytes"] = torch.cuda.max_memory_allocated(device)
        res["peak_mem_kind"] = "torch.cuda.max_memory_allocated"
    else:
        res["peak_mem_bytes"] = maxrss_bytes()
        res["peak_mem_kind"] = "ru_maxrss (process peak so far)"
    del g, d, opt, step
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=30, help="timed steps per method")
    p.add_argument("--batch", type=int, default=24, help="synthetic batch (noise_da adds as many target images)")
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before timing")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--methods", default="source_only,noise_da")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--alpha", type=float, default=0.197, help="α (w = 0.2 at the ramp's end)")
    p.add_argument("--delta", type=float, default=0.1)
    p.add_argument("--charbonnier-eps", type=float, default=1e-3)
    p.add_argument("--signed", action="store_true", help="feed D [-1, 1] images (derain/deblur)")
    p.add_argument("--sdpa", action="store_true",
                   help="attention through F.scaled_dot_product_attention (default: the explicit "
                        "matmul/softmax sequence of diffusion.rs)")
    p.add_argument("--tf32", action="store_true", help="allow TF32 in convs and matmuls (default off)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    p.add_argument("--no-loss-readback", action="store_true",
                   help="do not read the loss back every step (the Rust loop does)")
    p.add_argument("--widths", type=lambda s: [int(v) for v in s.split(",")], default=[64, 128, 256, 512])
    p.add_argument("--arch", default="", help="the restorer as our networks.restorer JSON "
                   "({\"arch\": \"nafnet\", ...} or restormer); default: the UNet of --widths")
    p.add_argument("--base", type=int, default=64)
    p.add_argument("--mults", type=lambda s: [int(v) for v in s.split(",")], default=[1, 2, 4, 8])
    p.add_argument("--res-blocks", type=int, default=2)
    p.add_argument("--attn-heads", type=int, default=16)
    p.add_argument("--dropout", type=float, default=0.2)
    args = p.parse_args()

    device = torch.device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    g_stride = 1 << (len(args.widths) - 1) if not args.arch else 8
    stride = max(g_stride, 1 << (len(args.mults) - 1))
    if args.patch % stride:
        p.error(f"--patch must be a multiple of {stride}")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        if m not in ("source_only", "noise_da"):
            p.error(f"unknown method {m!r}")

    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        precision = "tf32" if args.tf32 else "ieee"
        try:
            torch.backends.cuda.matmul.fp32_precision = precision
            torch.backends.cudnn.conv.fp32_precision = precision
        except AttributeError:  # PyTorch < 2.9
            torch.backends.cuda.matmul.allow_tf32 = args.tf32
            torch.backends.cudnn.allow_tf32 = args.tf32

    # Parameter counts (built on the CPU, like the Rust `param_counts`).
    g_cpu = restorer(args)
    d_cpu = DiffusionUNet(args.base, args.mults, args.res_blocks, args.attn_heads, args.dropout)
    pg, pd = n_params(g_cpu), n_params(d_cpu)
    pd_formula = rust_d_param_count(args.base, args.mults, args.res_blocks, args.attn_heads)
    g_macs = g_cpu.macs(args.patch, args.patch) if not args.arch else float("nan")
    del g_cpu, d_cpu
    paper = not args.arch and args.widths == [64, 128, 256, 512] and (args.base, args.mults, args.res_blocks) == (64, [1, 2, 4, 8], 2)
    checks = {"d_matches_rust_formula": pd == pd_formula}
    if paper:
        checks["g_equals_rust"] = pg == RUST_PARAMS_G
        checks["d_rounds_to_62.6"] = round(pd / 1e5) / 10 == RUST_PARAMS_D_ROUNDED

    recipe = Recipe(args, device)
    results = {}
    for m in methods:
        results[m] = time_method(m, args, device, recipe)

    info = {
        "torch": torch.__version__,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cpu_threads": torch.get_num_threads(),
        "dtype": "float32",
        "tf32": bool(args.tf32) if device.type == "cuda" else False,
        "cudnn_benchmark": device.type == "cuda",
        "attention": "sdpa" if args.sdpa else "explicit",
        "batch": args.batch,
        "patch": args.patch,
        "steps": args.steps,
        "warmup": args.warmup,
        "params_g": pg,
        "params_d": pd,
        "params_d_rust_formula": pd_formula,
        "g_gmacs_per_image": None if args.arch else g_macs / 1e9,
        "checks": checks,
        "methods": results,
    }
    if args.json:
        print(json.dumps(info))
    else:
        dn = info["device_name"]
        print(f"torch {info['torch']} on {info['device']} ({dn}), fp32, tf32={info['tf32']}, "
              f"threads={info['cpu_threads']}, attention={info['attention']}")
        print(f"batch {args.batch} × {args.patch}², {args.warmup} warm-up + {args.steps} timed steps")
        print(f"G params: {pg:,}" + (f"  (Rust UNet-S: {RUST_PARAMS_G:,})" if paper else "")
              + ("" if args.arch else f"  ({g_macs / 1e9:.3f} GMACs/image at {args.patch}²)"))
        print(f"D params: {pd:,}  (diffusion.rs formula: {pd_formula:,}; round(D/1e5)/10 = {round(pd / 1e5) / 10})")
        print("checks: " + ", ".join(f"{k}={'ok' if v else 'FAIL'}" for k, v in checks.items()))
        for m, r in results.items():
            print(f"{m:12s} {r['steps_per_s']:8.3f} steps/s  {r['ms_per_step']:9.1f} ms/step  "
                  f"{r['images_per_s']:8.1f} images/s ({r['images_per_step']}/step)  "
                  f"peak {r['peak_mem_bytes'] / 2**20:9.1f} MiB [{r['peak_mem_kind']}]  "
                  f"last loss {r['last_loss']:.4f}")
    ok = all(checks.values()) and all(r["loss_finite"] for r in results.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

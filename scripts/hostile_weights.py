#!/usr/bin/env python3
"""Build the test files by hand (no torch): the zip layout torch.save writes
(`<root>/data.pkl`, `<root>/data/<key>`, `<root>/version`, `<root>/byteorder`), pickles made
with the stdlib `pickle` module (fake `torch` globals registered in sys.modules so pickle
writes GLOBAL 'torch._utils _rebuild_tensor_v2' etc.), and a legacy (pre-1.6) stream.

Usage: gen.py OUTDIR [--bomb] [--big]
"""
import collections, io, os, pickle, struct, sys, types, zipfile, zlib

import numpy as np

OUT = sys.argv[1]
os.makedirs(OUT, exist_ok=True)

# --- fake torch globals -----------------------------------------------------------------
torch = types.ModuleType("torch")
torch_utils = types.ModuleType("torch._utils")
sys.modules["torch"] = torch
sys.modules["torch._utils"] = torch_utils


def _mkglobal(mod, modname, name, kind="func"):
    if kind == "class":
        obj = type(name, (), {})
    else:
        def obj(*a):
            raise RuntimeError("never called")
        obj.__name__ = name
        obj.__qualname__ = name
    obj.__module__ = modname
    setattr(mod, name, obj)
    return obj


_rebuild_tensor_v2 = _mkglobal(torch_utils, "torch._utils", "_rebuild_tensor_v2")
_rebuild_parameter = _mkglobal(torch_utils, "torch._utils", "_rebuild_parameter")
STORAGE = {
    "float32": _mkglobal(torch, "torch", "FloatStorage", "class"),
    "float64": _mkglobal(torch, "torch", "DoubleStorage", "class"),
    "float16": _mkglobal(torch, "torch", "HalfStorage", "class"),
}


class Storage:
    def __init__(self, key, dtype, numel):
        self.key, self.dtype, self.numel = key, dtype, numel


class T:
    """A tensor reference: storage, offset, shape, stride."""

    def __init__(self, storage, shape, stride=None, offset=0):
        if stride is None:
            stride, s = [], 1
            for d in reversed(shape):
                stride.insert(0, s)
                s *= d
        self.args = (storage, offset, tuple(shape), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self):
        return (_rebuild_tensor_v2, self.args)


class ZipPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", STORAGE[obj.dtype], obj.key, "cpu", obj.numel)
        return None


def pkl(obj):
    b = io.BytesIO()
    ZipPickler(b, protocol=2).dump(obj)
    return b.getvalue()


def write_pth(path, data_pkl, storages, root="archive", deflate_keys=(), extra=()):
    """storages: {key: bytes or callable(writer)}; deflate_keys: stored deflated."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        z.writestr(f"{root}/data.pkl", data_pkl)
        z.writestr(f"{root}/byteorder", "little")
        for key, data in storages.items():
            ct = zipfile.ZIP_DEFLATED if key in deflate_keys else zipfile.ZIP_STORED
            info = zipfile.ZipInfo(f"{root}/data/{key}")
            info.compress_type = ct
            if callable(data):
                with z.open(info, "w", force_zip64=True) as w:
                    data(w)
            else:
                z.writestr(info, data)
        z.writestr(f"{root}/version", "3\n")
        for name, data in extra:
            z.writestr(f"{root}/{name}", data)


def state(named):
    """OrderedDict of name -> T, storages dict; named: [(name, np.array)]."""
    sd, st = collections.OrderedDict(), {}
    for i, (name, arr) in enumerate(named):
        arr = np.ascontiguousarray(arr)
        key = str(i)
        st[key] = arr.tobytes()
        sd[name] = T(Storage(key, str(arr.dtype), arr.size), arr.shape)
    return sd, st


rng = np.random.default_rng(0)
small = [("RestorationNet.conv.weight", rng.standard_normal((4, 3, 3, 3), dtype=np.float32)),
         ("RestorationNet.conv.bias", rng.standard_normal(4, dtype=np.float32))]

# --- well-formed variants for the API checks ------------------------------------------------
sd, st = state(small)
write_pth(f"{OUT}/ok_flat.pth", pkl(sd), st)
write_pth(f"{OUT}/ok_params.pth", pkl({"params": sd, "epoch": 5}), st)
write_pth(f"{OUT}/ok_nested2.pth", pkl({"model": {"net": sd}, "opt": {"lr": 0.1}}), st)

# --- (a) a pickle nesting 200,000 lists (next to a valid tensor) -------------------------------
def deep_lists(n):
    sd_, st_ = state(small[:1])
    head = pkl(sd_)                       # PROTO 2 ... '.' ; splice a deep list in before STOP
    assert head.endswith(b".")
    body = b"X" + struct.pack("<I", 4) + b"junk" + b"]" * n + b"a" * (n - 1) + b"s"
    return head[:-1] + body + b".", st_

for n in (200_000, 1_000):
    p, st_ = deep_lists(n)
    write_pth(f"{OUT}/a_deep_lists_{n}.pth", p, st_)

# --- (b) zip bomb: a deflated data/0 that inflates to 4 GiB -----------------------------------
if "--bomb" in sys.argv:
    GiB4 = 4 << 30
    zeros = bytes(64 << 20)

    def bomb(w):
        for _ in range(GiB4 // len(zeros)):
            w.write(zeros)

    # b1: referenced by a 16-element tensor (the rest of the entry never needed)
    w = T(Storage("0", "float32", 16), (16,))
    write_pth(f"{OUT}/b_bomb_ref_small.pth", pkl({"w": w}), {"0": bomb}, deflate_keys={"0"})
    # b2: referenced by a tensor of the full 4 GiB (1<<30 f32)
    w = T(Storage("0", "float32", 1 << 30), (1 << 30,))
    write_pth(f"{OUT}/b_bomb_ref_full.pth", pkl({"w": w}), {"0": bomb}, deflate_keys={"0"})
    # b3: unreferenced (the tensor uses data/1)
    arr = small[1][1]
    w = T(Storage("1", "float32", arr.size), arr.shape)
    write_pth(f"{OUT}/b_bomb_unref.pth", pkl({"w": w}), {"0": bomb, "1": arr.tobytes()}, deflate_keys={"0"})

# --- (c) truncated zip ---------------------------------------------------------------------
sd, st = state(small)
write_pth(f"{OUT}/ok_small.pth", pkl(sd), st)
full = open(f"{OUT}/ok_small.pth", "rb").read()
open(f"{OUT}/c_truncated_half.pth", "wb").write(full[: len(full) // 2])
open(f"{OUT}/c_truncated_minus22.pth", "wb").write(full[:-22])   # EOCD cut off
rel = open("/work/main/tests/fixtures/interop/release_unet.pth", "rb").read()
open(f"{OUT}/c_release_half.pth", "wb").write(rel[: len(rel) // 2])

# --- (d) random bytes -------------------------------------------------------------------------
open(f"{OUT}/d_random.pth", "wb").write(rng.bytes(1 << 20))
open(f"{OUT}/d_random_pk.pth", "wb").write(b"PK\x03\x04" + rng.bytes(1 << 20))

# --- (e) view past its storage ----------------------------------------------------------------
buf = np.arange(16, dtype=np.float32).tobytes()
w = T(Storage("0", "float32", 16), (4, 4), (100, 1))
write_pth(f"{OUT}/e_view_stride_past.pth", pkl({"w": w}), {"0": buf})
w = T(Storage("0", "float32", 16), (4, 4), (4, 1), offset=8)
write_pth(f"{OUT}/e_view_offset_past.pth", pkl({"w": w}), {"0": buf})
w = T(Storage("0", "float32", 1000), (1000,))          # pid claims 1000, entry holds 16
write_pth(f"{OUT}/e_storage_short.pth", pkl({"w": w}), {"0": buf})

# --- (g) huge shape claims --------------------------------------------------------------------
w = T(Storage("0", "float32", 16), (1 << 40,), (1,))
write_pth(f"{OUT}/g_huge_shape_stride1.pth", pkl({"w": w}), {"0": buf})
w = T(Storage("0", "float32", 16), (1 << 40,), (0,))   # an expand(): valid view in torch
write_pth(f"{OUT}/g_huge_shape_stride0.pth", pkl({"w": w}), {"0": buf})
w = T(Storage("0", "float32", 16), (1 << 31,), (0,))   # 8 GiB expand
write_pth(f"{OUT}/g_8gib_expand.pth", pkl({"w": w}), {"0": buf})
w = T(Storage("0", "float32", 16), (1 << 62, 1 << 62), (0, 0))   # numel overflows usize
write_pth(f"{OUT}/g_numel_overflow.pth", pkl({"w": w}), {"0": buf})

# --- (f) legacy (pre-1.6) torch.save stream ---------------------------------------------------
class LegacyPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            # (typename, storage_type, root_key, location, numel, view_metadata)
            return ("storage", STORAGE[obj.dtype], obj.key, "cpu", obj.numel, None)
        return None


def legacy(path, named):
    b = io.BytesIO()
    pickle.dump(0x1950A86A20F9469CFC6C, b, protocol=2)
    pickle.dump(1001, b, protocol=2)
    pickle.dump({"protocol_version": 1001, "little_endian": True,
                 "type_sizes": {"short": 2, "int": 4, "long": 4}}, b, protocol=2)
    sd_, st_ = state(named)
    LegacyPickler(b, protocol=2).dump(sd_)
    keys = list(st_)
    pickle.dump(keys, b, protocol=2)
    for k in keys:
        data = st_[k]
        b.write(struct.pack("<q", len(data) // 4))
        b.write(data)
    open(path, "wb").write(b.getvalue())

legacy(f"{OUT}/f_legacy.pth", small)

# --- (4) ~100 MB checkpoint for the timing -----------------------------------------------------
if "--big" in sys.argv:
    named = [(f"RestorationNet.layer{i}.weight", rng.standard_normal((256, 256, 3, 3), dtype=np.float32))
             for i in range(42)]                      # 42 x 2.36 MB = 99.1 MB
    named += [(f"RestorationNet.layer{i}.bias", rng.standard_normal(256, dtype=np.float32)) for i in range(42)]
    sd, st = state(named)
    write_pth(f"{OUT}/big_100mb.pth", pkl(sd), st)
    # and the same tensors as safetensors (header by hand)
    import json
    header, off, blobs = {}, 0, []
    for name, arr in named:
        raw = arr.tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        blobs.append(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    with open(f"{OUT}/big_100mb.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for raw in blobs:
            f.write(raw)
print("ok")

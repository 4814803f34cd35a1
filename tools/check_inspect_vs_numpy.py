#!/usr/bin/env python3
"""Compare `quantscope inspect --json MODEL` with numpy on every tensor of a real model.

usage: python3 tools/check_inspect_vs_numpy.py MODEL [path/to/quantscope]
MODEL: a .safetensors file, a *.safetensors.index.json or a folder (numpy reads every .safetensors in it).
Prints the worst relative difference per statistic; exits 1 if any exceeds 1e-9 (min/max/absmax must be equal).
"""
import glob, json, os, subprocess, sys
import numpy as np
from safetensors.numpy import load_file

model = sys.argv[1]
exe = sys.argv[2] if len(sys.argv) > 2 else "target/release/quantscope"
out = subprocess.run([exe, "inspect", "--json", model], check=True, capture_output=True, text=True).stdout
ours = {t["name"]: t for t in json.loads(out)["tensors"]}

files = [model] if model.endswith(".safetensors") else sorted(glob.glob(os.path.join(model if os.path.isdir(model) else os.path.dirname(model), "*.safetensors")))


def tensors(f):
    """Every tensor of a file as a numpy array; bfloat16 (which numpy lacks) widened to float32 by its bits."""
    import struct
    with open(f, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        header = json.loads(fh.read(n))
    if not any(v.get("dtype") == "BF16" for k, v in header.items() if k != "__metadata__"):
        yield from load_file(f).items()
        return
    raw = np.memmap(f, dtype=np.uint8, mode="r")
    from safetensors import safe_open
    plain = safe_open(f, framework="numpy")
    for name, v in header.items():
        if name == "__metadata__":
            continue
        if v["dtype"] == "BF16":
            a, b = v["data_offsets"]
            bits = raw[8 + n + a: 8 + n + b].view(np.uint16).astype(np.uint32) << 16
            yield name, bits.view(np.float32).reshape(v["shape"])
        else:
            yield name, plain.get_tensor(name)


worst = {}
count = 0
for f in files:
    for name, arr in tensors(f):
        x = arr.astype(np.float32).ravel()
        fin = x[np.isfinite(x)].astype(np.float64)
        if fin.size == 0:
            continue
        m = fin.mean(); c = fin - m; m2 = (c ** 2).mean(); m4 = (c ** 4).mean()
        a = np.abs(fin)
        ref = {"min": fin.min(), "max": fin.max(), "absmax": a.max(), "mean": m, "std": np.sqrt(m2),
               "kurtosis": m4 / m2 ** 2 - 3 if m2 > 0 else 0.0,
               "p99": np.percentile(a, 99), "p99_9": np.percentile(a, 99.9), "p99_99": np.percentile(a, 99.99)}
        t = ours[name]
        for k, v in ref.items():
            d = abs(t[k] - v) / max(abs(v), 1e-300) if t[k] != v else 0.0
            worst[k] = max(worst.get(k, 0.0), d)
        count += 1
print(f"{count} tensors compared with numpy {np.__version__}")
bad = False
for k, d in worst.items():
    limit = 0.0 if k in ("min", "max", "absmax") else 1e-9
    flag = "" if d <= limit else "  <-- over the limit"
    bad |= d > limit
    print(f"  {k:<9} worst relative difference {d:.3e}{flag}")
sys.exit(1 if bad else 0)

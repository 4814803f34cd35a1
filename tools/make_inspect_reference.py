#!/usr/bin/env python3
"""Write tests/data/inspect_ref.safetensors and, computed by numpy, tests/data/inspect_ref.json:
the statistics `quantscope inspect` must reproduce. Run from the repository root:

    python3 tools/make_inspect_reference.py

The file holds the cases that matter: float32 weights with outliers, bfloat16 and float16 tensors,
NaN and Inf values, float64, an integer tensor, a zero-size tensor and a scalar. It is written by hand
(header JSON + little-endian bytes) so that bfloat16 needs no extra package.
"""
import json, struct
import numpy as np

rng = np.random.default_rng(20261127)

def bf16_bits(x32):
    # round to nearest even on the low 16 bits, as every bf16 cast does
    b = x32.astype(np.float32).view(np.uint32).astype(np.uint64)
    b = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
    return b.astype(np.uint16)

w = rng.normal(0, 0.02, (64, 48)).astype(np.float32)
w[3, 7] = 0.9; w[40, 1] = -1.3                        # outliers: high kurtosis
bf = rng.normal(0.5, 2.0, (32, 16)).astype(np.float32)
bf_bits = bf16_bits(bf)
bf_vals = (bf_bits.astype(np.uint32) << 16).view(np.float32)
h = rng.standard_t(3, 100).astype(np.float16)
h[5] = np.nan; h[6] = np.inf; h[7] = -np.inf
d = rng.normal(1e3, 1.0, (10, 10)).astype(np.float64)
ints = np.array([3, -7, 12, 0, 5], dtype=np.int64)

tensors = [  # name, dtype tag, shape, raw bytes, float32 values used for the statistics
    ("layer.weight", "F32", [64, 48], w.tobytes(), w.ravel()),
    ("layer.bias_bf16", "BF16", [32, 16], bf_bits.tobytes(), bf_vals.ravel()),
    ("act.f16_with_nan", "F16", [100], h.tobytes(), h.astype(np.float32)),
    ("double.weight", "F64", [10, 10], d.tobytes(), d.astype(np.float32).ravel()),
    ("ids", "I64", [5], ints.tobytes(), ints.astype(np.float32)),
    ("empty.weight", "F32", [0, 3], b"", np.zeros(0, np.float32)),
    ("scalar", "F32", [], np.float32(2.5).tobytes(), np.array([2.5], np.float32)),
]

header, data, ref = {}, b"", {}
for name, dt, shape, raw, vals in tensors:
    header[name] = {"dtype": dt, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
    data += raw
    fin = vals[np.isfinite(vals)].astype(np.float64)
    r = {"numel": int(vals.size), "nan": int(np.isnan(vals).sum()), "inf": int(np.isinf(vals).sum())}
    if fin.size:
        m = fin.mean(); c = fin - m; m2 = (c ** 2).mean(); m4 = (c ** 4).mean()
        a = np.abs(vals[np.isfinite(vals)])
        r.update(min=float(fin.min()), max=float(fin.max()), mean=float(m), std=float(np.sqrt(m2)),
                 absmax=float(np.abs(fin).max()),
                 kurtosis=float(m4 / m2 ** 2 - 3) if m2 > 0 else 0.0,
                 p99=float(np.percentile(a.astype(np.float64), 99)),
                 p99_9=float(np.percentile(a.astype(np.float64), 99.9)),
                 p99_99=float(np.percentile(a.astype(np.float64), 99.99)),
                 histogram=[int(x) for x in np.histogram(vals[np.isfinite(vals)].astype(np.float64), bins=16,
                                                         range=(fin.min(), fin.max()) if fin.max() > fin.min() else (fin.min() - 0.5, fin.max() + 0.5))[0]])
    ref[name] = r

hj = json.dumps(header).encode()
hj += b" " * (-len(hj) % 8)
with open("tests/data/inspect_ref.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(hj)) + hj + data)
with open("tests/data/inspect_ref.json", "w") as f:
    json.dump({"generator": "tools/make_inspect_reference.py (numpy %s)" % np.__version__, "tensors": ref}, f, indent=1)
print("wrote tests/data/inspect_ref.safetensors and tests/data/inspect_ref.json")

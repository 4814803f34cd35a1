#!/usr/bin/env python3
"""Time the same format round trips in numpy/ml_dtypes on this machine and print the ratio to
Quantscope's criterion results (run `cargo bench --bench formats` first).

Each case: 1 Mi float32 values from a normal distribution, scaled as the Rust benchmark scales them,
cast to the format (saturating, as clip + astype) and back to float32. One thread on both sides.
"""
import json, os, sys, time
import numpy as np

try:
    import ml_dtypes
except ImportError:
    sys.exit("pip install numpy ml-dtypes")

N = 1 << 20
rng = np.random.default_rng(0)
x = rng.standard_normal(N).astype(np.float32)
NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
                -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
                0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                0.7229568362236023, 1.0], dtype=np.float32)

def cast(dtype, mx):
    def f(v):
        return np.clip(v, -mx, mx).astype(dtype).astype(np.float32)
    return f

def nf4(v):
    mid = (NF4[1:] + NF4[:-1]) / 2
    return NF4[np.searchsorted(mid, np.clip(v, -1, 1))]

cases = {
    "fp8_e4m3": (cast(ml_dtypes.float8_e4m3fn, 448.0), 448.0),
    "fp4_e2m1": (cast(ml_dtypes.float4_e2m1fn, 6.0), 6.0),
    "bf16": (cast(ml_dtypes.bfloat16, 3.3895313892515355e38), 3.3895313892515355e38),
    "fp16": (cast(np.float16, 65504.0), 65504.0),
    "int8": (lambda v: np.clip(np.rint(v), -128, 127).astype(np.float32), 127.0),
    "nf4": (nf4, 1.0),
}

root = os.path.join(os.path.dirname(__file__), "..", "target", "criterion", "encode_1Mi")
print(f"{'format':<10} {'numpy ms':>9} {'quantscope ms':>14} {'ratio (ours/numpy)':>19}")
for name, (fn, mx) in cases.items():
    v = x * np.float32(min(mx / 4.0, 1e4))
    fn(v)
    best = min((lambda: (time.perf_counter(), fn(v), time.perf_counter()))() for _ in range(7))
    t_np = (best[2] - best[0]) * 1e3
    est = os.path.join(root, name, "new", "estimates.json")
    if os.path.exists(est):
        t_rs = json.load(open(est))["mean"]["point_estimate"] / 1e6
        print(f"{name:<10} {t_np:9.2f} {t_rs:14.2f} {t_rs / t_np:19.2f}")
    else:
        print(f"{name:<10} {t_np:9.2f} {'(no bench)':>14}")

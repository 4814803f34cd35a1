#!/usr/bin/env python3
"""Check `quantscope apply --format compressed-tensors` with the programs that read it.

    tools/check_compressed.py MODEL PLAN [--quantscope target/release/quantscope] [--work DIR]

1. Writes the plan twice with quantscope: as fake-quantized weights (`apply`) and as a compressed-tensors
   checkpoint (`apply --format compressed-tensors`).
2. Loads the checkpoint with transformers + the compressed-tensors package as a quantized model, has
   compressed-tensors decompress it (`hf_quantizer.compressor.decompress_model`; transformers'
   `run_compressed=False` path decompresses every module with the first config group's scheme, which
   is wrong for mixed plans), and compares every weight with the fake-quantized one: bit for bit, per
   scheme (tensors equal, largest difference, share of elements that differ).
3. Runs both models on the same text and compares their logits.

Needs torch, transformers, compressed-tensors, safetensors (pip). Prints a table; exit status 1 when a
scheme that is meant to be exact differs.
"""
import argparse
import collections
import json
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

# schemes whose decompressed values must equal quantscope's bit for bit (see src/plan/compressed.rs)
EXACT = ("int", "uint", "fp8", "mxfp4")


def family(spec):
    s = spec.split(":")[0]
    for p in ("uint", "int"):
        if s.startswith(p) and s[len(p):].isdigit():
            return p + s[len(p):]
    return s


def decompress_files(comp, cfg):
    """Every quantized module's weight, decompressed by compressed-tensors' compressor for its group."""
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.quantization import QuantizationScheme

    stored = {}
    for f in sorted(os.listdir(comp)):
        if f.endswith(".safetensors"):
            stored.update(load_file(os.path.join(comp, f)))
    out = {}
    for g in cfg["config_groups"].values():
        scheme = QuantizationScheme.model_validate(g)
        compressor = BaseCompressor.get_value_from_registry(g["format"])
        for t in g["targets"]:
            sd = {k[len(t) + 1:]: v for k, v in stored.items() if k.startswith(t + ".")}
            out[t + ".weight"] = compressor.decompress(sd, scheme)["weight"].to(torch.bfloat16)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("plan")
    ap.add_argument("--quantscope", default="target/release/quantscope")
    ap.add_argument("--work", default="/tmp/qs-check-compressed")
    a = ap.parse_args()
    fake, comp = os.path.join(a.work, "fake"), os.path.join(a.work, "compressed")
    subprocess.run(["rm", "-rf", fake, comp], check=True)
    for out, extra in ((fake, []), (comp, ["--format", "compressed-tensors"])):
        subprocess.run([a.quantscope, "apply", a.model, "--plan", a.plan, "--out", out, *extra],
                       check=True, stdout=subprocess.DEVNULL)
    plan = json.load(open(a.plan))["layers"]
    spec_of = {n: l["spec"] for n, l in plan.items()}

    cfg = json.load(open(os.path.join(comp, "config.json")))["quantization_config"]
    print(f"config: format {cfg['format']}, {len(cfg['config_groups'])} groups, "
          f"status {cfg['quantization_status']}, ignore {len(cfg['ignore'])}")
    try:
        model = AutoModelForCausalLM.from_pretrained(comp, dtype=torch.bfloat16)
    except RuntimeError as e:
        # transformers 5.25 builds an empty compressed module through compressed-tensors' meta path,
        # which leaves asymmetric zero points unpacked, so it refuses the packed ones that
        # compressed-tensors' own compress() (and vLLM's WNA16) use: decompress module by module instead
        print("transformers refused to load it:", str(e).splitlines()[0])
        print("decompressing every module with compressed-tensors' own compressors instead")
        model = None
    want = {}
    for f in sorted(os.listdir(fake)):
        if f.endswith(".safetensors"):
            want.update(load_file(os.path.join(fake, f)))
    if model is not None:
        kinds = collections.Counter(
            str(getattr(m, "quantization_scheme").format).split(".")[-1]
            for m in model.modules() if getattr(m, "quantization_scheme", None) is not None)
        print("loaded as quantized modules:", dict(kinds))
        model.hf_quantizer.compressor.decompress_model(model)
        got = model.state_dict()
    else:
        got = decompress_files(comp, cfg)
    rows = collections.OrderedDict()
    bad = []
    for name, spec in sorted(spec_of.items()):
        if spec == "none":
            continue
        if name not in got:
            bad.append(f"{name}: not in the loaded model")
            continue
        g, w = got[name].float(), want[name].float()
        fam = family(spec)
        r = rows.setdefault(fam, dict(tensors=0, equal=0, max_diff=0.0, diff_elems=0, elems=0))
        r["tensors"] += 1
        r["elems"] += w.numel()
        d = (g - w).abs()
        r["equal"] += int(torch.equal(got[name], want[name].to(got[name].dtype)))
        r["max_diff"] = max(r["max_diff"], float(d.max()))
        r["diff_elems"] += int((d > 0).sum())
    print(f"{'scheme':<8} {'tensors':>7} {'bit-equal':>9} {'max |diff|':>11} {'elements differing':>19}")
    ok = not bad
    for fam, r in rows.items():
        share = r["diff_elems"] / max(r["elems"], 1)
        print(f"{fam:<8} {r['tensors']:>7} {r['equal']:>9} {r['max_diff']:>11.3g} {share:>18.5%}")
        if any(fam.startswith(e) for e in EXACT) and r["equal"] != r["tensors"]:
            ok = False
    for b in bad:
        print("error:", b)

    if model is None:
        print("PASS" if ok else "FAIL")
        sys.exit(0 if ok else 1)
    ref_model = AutoModelForCausalLM.from_pretrained(fake, dtype=torch.bfloat16)
    tok = AutoTokenizer.from_pretrained(a.model)
    text = ("Phileas Fogg was a man of regular habits, and the reform club was the centre of his life. "
            "He played whist and read the papers, and spoke little to anyone.")
    ids = tok(text, return_tensors="pt").input_ids
    with torch.no_grad():
        la = model(ids).logits.float()
        lb = ref_model(ids).logits.float()
    print(f"logits on {ids.shape[1]} tokens: max |compressed - fake-quant| = {float((la - lb).abs().max()):.3g}, "
          f"top-1 agreement {float((la.argmax(-1) == lb.argmax(-1)).float().mean()):.1%}")
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

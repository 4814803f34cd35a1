#!/usr/bin/env python3
"""Check `quantscope export --to llama.cpp` with llama.cpp's own programs.

    tools/check_llamacpp.py MODEL PLAN --llama DIR [--quantscope target/release/quantscope]
                            [--work DIR] [--ctx 256] [--chunks 16]

DIR is a llama.cpp source tree with `build/bin/llama-quantize` and `build/bin/llama-perplexity` built
(the `vendor/llama.cpp` of the llama-cpp-python 0.3.36 sdist; see ../shared/reference/data.md or the
README). The script:

1. converts MODEL (a Hugging Face folder) to a bf16 GGUF with llama.cpp's `convert_hf_to_gguf.py`;
2. exports PLAN with quantscope (`export --to llama.cpp --json`): the tensor-type file and the type it
   promises for every tensor;
3. runs `llama-quantize --tensor-type-file` (base type Q8_0: overrides apply only over a quantized
   base), reads the result with the `gguf` package and checks that every tensor's type is the one
   promised;
4. quantizes the same GGUF to llama.cpp's own Q4_K_M, and with `llama-perplexity --kl-divergence`
   reports them (with --presets, more of llama.cpp's own types) against the bf16 GGUF on the evaluation half of the bundled text (the half Quantscope
   never calibrates on): mean KL, perplexity ratio, same top token, and bits per weight.
"""
import argparse
import gzip
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd, **kw):
    print("$", " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=True, **kw)


def gguf_types(path):
    import gguf

    r = gguf.GGUFReader(path)
    return {t.name: t.tensor_type.name.lower() for t in r.tensors}, r


def weight_bits(reader):
    """Bits per weight over the quantizable (2-D) tensors of a GGUF."""
    bits = n = 0
    for t in reader.tensors:
        if len(t.shape) >= 2:
            bits += int(t.n_bytes) * 8
            n += int(t.n_elements)
    return bits / max(n, 1)


def kl_stats(out):
    pick = lambda pat: (m := re.search(pat, out, re.M)) and float(m.group(1))
    return {
        "mean_kld": pick(r"^Mean\s+KLD:\s+([-\d.eE+]+)"),
        "ppl_ratio": pick(r"^Mean PPL\(Q\)/PPL\(base\)\s*:\s+([-\d.eE+]+)"),
        "ppl": pick(r"^Mean PPL\(Q\)\s*:\s+([-\d.eE+]+)"),
        "ppl_base": pick(r"^Mean PPL\(base\)\s*:\s+([-\d.eE+]+)"),
        "same_top": pick(r"^Same top p:\s+([-\d.eE+]+)"),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("plan")
    ap.add_argument("--llama", required=True)
    ap.add_argument("--quantscope", default="target/release/quantscope")
    ap.add_argument("--work", default="/tmp/qs-check-llamacpp")
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--chunks", type=int, default=16)
    ap.add_argument("--presets", default="Q4_K_M", help="llama.cpp's own types to compare with, e.g. Q4_K_M,Q4_K_S,Q3_K_M")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    bin_ = lambda n: os.path.join(a.llama, "build", "bin", n)
    env = dict(os.environ, PYTHONPATH=os.path.join(a.llama, "gguf-py"))
    base = os.path.join(a.work, "base-bf16.gguf")
    if not os.path.exists(base):
        run([sys.executable, os.path.join(a.llama, "convert_hf_to_gguf.py"), a.model, "--outtype", "bf16",
             "--outfile", base], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    types_file = os.path.join(a.work, "types.txt")
    ex = json.loads(run([a.quantscope, "export", a.plan, "--to", "llama.cpp", "--model", a.model, "--out",
                         types_file, "--json"], capture_output=True, text=True).stdout)
    promised = {r["target_name"]: r["target"] for r in ex["tensors"] if r["target"]}
    print(f"export: {len(promised)} tensors promised, {ex['target_bits_per_weight']:.3f} bits per weight "
          f"by quantscope's count; fit {ex['fit']}")

    ours = os.path.join(a.work, "quantscope.gguf")
    q = run([bin_("llama-quantize"), "--tensor-type-file", types_file, base, ours, "Q8_0"],
            capture_output=True, text=True)
    fallbacks = [l for l in (q.stdout + q.stderr).splitlines() if "falling back" in l]
    got, reader = gguf_types(ours)
    wrong = [(n, t, got.get(n)) for n, t in promised.items() if got.get(n) != t.lower()]
    print(f"llama-quantize: {len(fallbacks)} fallback(s) reported; {len(promised) - len(wrong)}/{len(promised)} "
          f"tensors have the promised type")
    for n, t, g in wrong[:10]:
        print(f"  {n}: promised {t}, got {g}")

    presets = []
    for p in a.presets.split(","):
        path = os.path.join(a.work, p.lower() + ".gguf")
        if not os.path.exists(path):
            run([bin_("llama-quantize"), base, path, p], capture_output=True)
        presets.append((f"llama.cpp {p}", path, gguf_types(path)[1]))

    text = gzip.open(os.path.join(HERE, "..", "assets", "text", "default_en.txt.gz"), "rt").read()
    evalf = os.path.join(a.work, "eval.txt")
    open(evalf, "w").write(text[len(text) // 2:])
    kld_base = os.path.join(a.work, "base.kld")
    run([bin_("llama-perplexity"), "-m", base, "-f", evalf, "-c", str(a.ctx), "--chunks", str(a.chunks),
         "--kl-divergence-base", kld_base, "-t", str(os.cpu_count())], capture_output=True)
    rows = []
    for label, path, rd in [("quantscope plan", ours, reader)] + presets:
        out = run([bin_("llama-perplexity"), "-m", path, "--kl-divergence-base", kld_base, "--kl-divergence",
                   "-t", str(os.cpu_count())], capture_output=True, text=True)
        st = kl_stats(out.stdout + out.stderr)
        rows.append((label, weight_bits(rd), st))
    print(f"\nagainst the bf16 GGUF, {a.chunks} chunks of {a.ctx} tokens of held-out text:")
    print(f"{'':<18} {'bits/w':>7} {'mean KL':>9} {'PPL(Q)':>8} {'PPL ratio':>10} {'same top':>9}")
    for label, bpw, st in rows:
        print(f"{label:<18} {bpw:>7.3f} {st['mean_kld']:>9.4f} {st['ppl']:>8.3f} {st['ppl_ratio']:>10.4f} "
              f"{st['same_top']:>8.2f}%")
    print(f"(base perplexity {rows[0][2]['ppl_base']:.3f})")
    ok = not wrong
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

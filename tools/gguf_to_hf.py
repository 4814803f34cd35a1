#!/usr/bin/env python3
"""Turn a GGUF checkpoint into a plain Hugging Face folder (config.json, model.safetensors, tokenizer.json).

    python3 tools/gguf_to_hf.py FILE.gguf OUT_DIR [--dtype bfloat16] [--arch LlamaForCausalLM]

Uses transformers' GGUF loader (needs the `gguf` and `accelerate` packages). The weights are dequantized
at load time (GgufConfig(dequantize=True)), copied into a model built from the same config without the
quantization entry (transformers refuses to save a model that came through its GGUF quantizer), cast to
--dtype and saved as safetensors. Called by tools/get_models.sh.
"""
import argparse, json, os, sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("out")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--arch", default=None, help="value for config.json's architectures, if missing")
    a = ap.parse_args()
    d, f = os.path.split(os.path.abspath(a.gguf))
    dtype = getattr(torch, a.dtype)

    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    src = AutoModelForCausalLM.from_pretrained(
        d, gguf_file=f, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True))
    cfg = src.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    cfg._name_or_path = ""
    if a.arch and not getattr(cfg, "architectures", None):
        cfg.architectures = [a.arch]
    cfg.dtype = dtype
    dst = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    sd = {k: v.to(dtype) for k, v in src.state_dict().items()}
    missing, unexpected = dst.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and cfg.tie_word_embeddings)]
    if missing or unexpected:
        sys.exit(f"state dict mismatch: missing {missing} unexpected {unexpected}")
    if cfg.tie_word_embeddings:
        dst.tie_weights()
    os.makedirs(a.out, exist_ok=True)
    dst.save_pretrained(a.out)
    tok.save_pretrained(a.out)
    # config.json: make sure architectures is there (llama.cpp's converter and our runtime read it)
    p = os.path.join(a.out, "config.json")
    c = json.load(open(p))
    if a.arch and not c.get("architectures"):
        c["architectures"] = [a.arch]
        json.dump(c, open(p, "w"), indent=2)
    if not os.path.exists(os.path.join(a.out, "tokenizer.json")):
        tok.backend_tokenizer.save(os.path.join(a.out, "tokenizer.json"))
    print("wrote", a.out, sorted(os.listdir(a.out)))


if __name__ == "__main__":
    main()

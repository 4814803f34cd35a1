#!/usr/bin/env python3
"""Load the folders written by tools/get_models.sh in transformers and show that they work: greedy
continuations for the two decoders, sentence similarities for MiniLM, and the facts a runtime needs
(config, tensor names and dtypes, what the tokenizer adds to "Hello world").

    python3 tools/check_models.py [DEST]      # DEST defaults to /root/qs-models
"""
import json, os, sys

import torch
from safetensors import safe_open
from tokenizers import Tokenizer
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

DEST = sys.argv[1] if len(sys.argv) > 1 else "/root/qs-models"
torch.manual_seed(0)


def facts(d):
    print(f"\n===== {d}")
    print(open(os.path.join(d, "config.json")).read())
    with safe_open(os.path.join(d, "model.safetensors"), "pt") as f:
        keys = list(f.keys())
        dts = {}
        for k in keys:
            dts.setdefault(str(f.get_slice(k).get_dtype()), []).append(k)
        print(f"{len(keys)} tensors; dtypes: { {k: len(v) for k, v in dts.items()} }")
        for k in keys[:6]:
            print("  ", k, f.get_slice(k).get_shape(), f.get_slice(k).get_dtype())
        print("   lm_head.weight stored:", "lm_head.weight" in keys)
    t = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    t.no_padding()
    e = t.encode("Hello world")
    print("tokenizers encode('Hello world'):", e.ids, e.tokens)


for name in ["smollm2-135m", "gemma3-270m"]:
    d = os.path.join(DEST, name)
    facts(d)
    tok = AutoTokenizer.from_pretrained(d)
    m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    for prompt in ["The capital of France is", "Once upon a time, there was a little"]:
        x = tok(prompt, return_tensors="pt")
        out = m.generate(**x, max_new_tokens=24, do_sample=False)
        print("  generate:", repr(tok.decode(out[0])))

d = os.path.join(DEST, "minilm")
facts(d)
tok = AutoTokenizer.from_pretrained(d)
m = AutoModel.from_pretrained(d, dtype=torch.float32).eval()
s = ["A man is playing a guitar.", "Someone plays an instrument.", "The stock market fell sharply today."]
x = tok(s, padding=True, return_tensors="pt")
with torch.no_grad():
    h = m(**x).last_hidden_state
mask = x["attention_mask"].unsqueeze(-1).float()
emb = torch.nn.functional.normalize((h * mask).sum(1) / mask.sum(1), dim=-1)
print("  cos(guitar, instrument) =", float(emb[0] @ emb[1]), " cos(guitar, stock market) =", float(emb[0] @ emb[2]))

#!/usr/bin/env python3
"""Copy a Hugging Face folder whose LM head is tied to its embedding into one with an untied head:
`lm_head.weight` becomes a copy of `model.embed_tokens.weight` and `tie_word_embeddings` false. The
model computes the same function, but its embedding and head are two tensors, as in Llama-2, Mistral or a
7B: a test bed for what a search does with an untied embedding.

usage: make_untied.py SRC_DIR OUT_DIR
"""
import json
import shutil
import struct
import sys
from pathlib import Path


def main():
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.name != "model.safetensors":
            shutil.copy(f, out / f.name)
    raw = (src / "model.safetensors").read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    embed = header["model.embed_tokens.weight"]
    if "lm_head.weight" in header:
        sys.exit("the model already has an lm_head.weight")
    a, b = embed["data_offsets"]
    header["lm_head.weight"] = {"dtype": embed["dtype"], "shape": embed["shape"],
                                "data_offsets": [len(data), len(data) + (b - a)]}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = out / "model.safetensors.tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        f.write(data)
        f.write(data[a:b])
    tmp.rename(out / "model.safetensors")
    cfg = json.loads((out / "config.json").read_text())
    cfg["tie_word_embeddings"] = False
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    print(f"{out}: lm_head.weight {embed['shape']} {embed['dtype']}, untied")


if __name__ == "__main__":
    main()

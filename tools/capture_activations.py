#!/usr/bin/env python3
"""Capture a calibration pack from a PyTorch / Hugging Face model with forward hooks, for Quantscope.

    python3 tools/capture_activations.py MODEL_DIR OUT.safetensors [--sentences 128] [--batch 16]
        [--max-tokens 128] [--text FILE]

MODEL_DIR is a transformers model folder (config.json + model.safetensors + tokenizer files). The text
defaults to CPython's own documentation (pydoc_data/topics.py, on every Python install), cut into
sentences. Every nn.Linear and nn.Conv2d gets a forward hook; per layer the pack keeps (layout in
src/activations/pack.rs):

  L.rows            [r, k]  a seeded random sample of up to 2048 input rows (padding tokens removed;
                            a convolution's inputs unfolded with F.unfold, one row per output position)
  L.inputs          [n]     a sample of up to 2^18 input values
  L.outputs         [m]     a sample of up to 2^18 output values
  L.batch_ranges    [B, 2]  min and max of the layer's whole input in each batch
  L.channel_absmax  [k]     max |x| of each input channel (feature) over all batches

and the metadata names the model, the data, and each layer's weight tensor name, which is the module
name + ".weight" (the names in the model's safetensors file).
"""
import argparse, json, os, re
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import save_file

MAX_ROWS, MAX_VALUES = 2048, 1 << 18


def sentences_from_pydoc(n):
    import pydoc_data.topics as t
    text = " ".join(t.topics.values())
    text = re.sub(r"\s+", " ", text)
    parts = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text)]
    parts = [s for s in parts if 30 <= len(s) <= 400]
    step = max(1, len(parts) // n)
    return parts[::step][:n]


def checkpoint_names(model_dir):
    """The tensor names stored in a Hugging Face folder's safetensors (one file or an index)."""
    from safetensors import safe_open
    idx = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.isfile(idx):
        return set(json.load(open(idx))["weight_map"])
    names = set()
    for f in os.listdir(model_dir):
        if f.endswith(".safetensors"):
            with safe_open(os.path.join(model_dir, f), "pt") as h:
                names.update(h.keys())
    return names


def weight_name(module, stored):
    """The checkpoint's name of a module's weight: AutoModel drops the task head's prefix (a Llama
    folder stores `model.layers.0.…`, AutoModel names the module `layers.0.…`), so match by suffix."""
    want = f"{module}.weight"
    if want in stored:
        return want
    hits = sorted(n for n in stored if n.endswith("." + want))
    if len(hits) != 1:
        raise SystemExit(f"{want}: {len(hits)} tensors of the checkpoint end with it ({hits[:3]})")
    return hits[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--sentences", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--text", help="a text file, one sentence per line (default: CPython's pydoc topics)")
    a = ap.parse_args()

    from transformers import AutoModel, AutoTokenizer
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModel.from_pretrained(a.model).eval()
    if a.text:
        sents = [l.strip() for l in open(a.text, encoding="utf-8") if l.strip()][: a.sentences]
        source = os.path.basename(a.text)
    else:
        sents = sentences_from_pydoc(a.sentences)
        source = "CPython pydoc_data/topics.py"

    batches = [sents[i:i + a.batch] for i in range(0, len(sents), a.batch)]
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    rows_per_batch = max(1, MAX_ROWS // len(batches))
    vals_per_batch = max(1, MAX_VALUES // len(batches))
    rec = {n: {"rows": [], "inputs": [], "outputs": [], "ranges": [], "absmax": None, "seen": 0, "k": None}
           for n, _ in layers}
    gen = torch.Generator().manual_seed(0)
    state = {"mask": None}

    def sample(t, k):
        t = t.reshape(-1)
        if t.numel() <= k:
            return t
        return t[torch.randperm(t.numel(), generator=gen)[:k]]

    def hook(name, mod):
        def f(_m, inp, out):
            x = inp[0].detach().float()
            r = rec[name]
            if isinstance(mod, torch.nn.Conv2d):
                rows = F.unfold(x, mod.kernel_size, dilation=mod.dilation, padding=mod.padding,
                                stride=mod.stride).transpose(1, 2).reshape(-1, x.shape[1] * mod.kernel_size[0] * mod.kernel_size[1])
                chan = x.transpose(0, 1).reshape(x.shape[1], -1).abs().amax(1)
                flat_in = x
            else:
                flat = x.reshape(-1, x.shape[-1])
                mask = state["mask"]
                if mask is not None and mask.numel() == flat.shape[0]:
                    flat = flat[mask.reshape(-1).bool()]
                rows, chan, flat_in = flat, flat.abs().amax(0), flat
            r["k"] = rows.shape[1]
            r["seen"] += flat_in.numel()
            r["ranges"].append([float(flat_in.min()), float(flat_in.max())])
            r["absmax"] = chan if r["absmax"] is None else torch.maximum(r["absmax"], chan)
            pick = torch.randperm(rows.shape[0], generator=gen)[:rows_per_batch]
            r["rows"].append(rows[pick])
            r["inputs"].append(sample(flat_in, vals_per_batch))
            o = out.detach().float()
            if not isinstance(mod, torch.nn.Conv2d) and state["mask"] is not None:
                o2 = o.reshape(-1, o.shape[-1])
                if state["mask"].numel() == o2.shape[0]:
                    o = o2[state["mask"].reshape(-1).bool()]
            r["outputs"].append(sample(o, vals_per_batch))
        return f

    handles = [m.register_forward_hook(hook(n, m)) for n, m in layers]
    with torch.no_grad():
        for b in batches:
            enc = tok(b, padding=True, truncation=True, max_length=a.max_tokens, return_tensors="pt")
            state["mask"] = enc.get("attention_mask")
            model(**enc)
    for h in handles:
        h.remove()

    stored = checkpoint_names(a.model)
    tensors, meta_layers = {}, []
    for n, _ in layers:
        r = rec[n]
        if r["k"] is None:
            continue
        tensors[f"{n}.rows"] = torch.cat(r["rows"]).numpy().astype(np.float32)
        tensors[f"{n}.inputs"] = torch.cat(r["inputs"]).numpy().astype(np.float32)
        tensors[f"{n}.outputs"] = torch.cat(r["outputs"]).numpy().astype(np.float32)
        tensors[f"{n}.batch_ranges"] = np.array(r["ranges"], dtype=np.float32)
        tensors[f"{n}.channel_absmax"] = r["absmax"].numpy().astype(np.float32)
        meta_layers.append({"name": n, "weight": weight_name(n, stored), "k": int(r["k"]), "seen": int(r["seen"])})
    meta = {
        "quantscope_calibration": "1",
        "model": os.path.abspath(a.model),
        "data": f"{len(sents)} sentences of {source}, at most {a.max_tokens} tokens, padding removed",
        "examples": str(len(sents)),
        "batches": str(len(batches)),
        "layers": json.dumps(meta_layers),
        "captured_by": "tools/capture_activations.py (PyTorch forward hooks)",
    }
    tmp = a.out + ".tmp"
    save_file(tensors, tmp, metadata=meta)
    os.replace(tmp, a.out)
    print(f"{a.out}: {len(meta_layers)} layers, {len(sents)} sentences in {len(batches)} batches")


if __name__ == "__main__":
    main()

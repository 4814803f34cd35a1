#!/usr/bin/env python3
"""Write a runnable Llama-shaped checkpoint with random bf16 weights, to measure the runtime's memory and
speed at a size no bundled model has:

    python3 tools/make_synthetic_llama.py OUT_DIR [--hidden 2048 --layers 16 --heads 32 --kv-heads 8
        --intermediate 8192 --vocab 49152] [--tokenizer DIR]

The defaults give 1.2 B parameters (2.4 GB in bf16), a 1B-class model. Weights are N(0, 0.02) (norms 1),
so the logits are meaningless; only shapes, names and dtypes matter. `--tokenizer DIR` copies that
folder's tokenizer.json (e.g. SmolLM2's, whose vocabulary is 49152)."""
import argparse, json, os, shutil
import numpy as np


def bf16(a):
    """float32 → bfloat16 bits (round to nearest even), as uint16."""
    u = a.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--intermediate", type=int, default=8192)
    ap.add_argument("--vocab", type=int, default=49152)
    ap.add_argument("--tokenizer", help="a folder whose tokenizer.json to copy")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(0)
    d, hd = a.hidden, a.hidden // a.heads
    shapes = {"model.embed_tokens.weight": (a.vocab, d), "model.norm.weight": (d,), "lm_head.weight": (a.vocab, d)}
    for i in range(a.layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (d,), p + "post_attention_layernorm.weight": (d,),
            p + "self_attn.q_proj.weight": (a.heads * hd, d), p + "self_attn.k_proj.weight": (a.kv_heads * hd, d),
            p + "self_attn.v_proj.weight": (a.kv_heads * hd, d), p + "self_attn.o_proj.weight": (d, a.heads * hd),
            p + "mlp.gate_proj.weight": (a.intermediate, d), p + "mlp.up_proj.weight": (a.intermediate, d),
            p + "mlp.down_proj.weight": (d, a.intermediate),
        })
    # shards of about 1 GB, written one at a time (bf16 stored as uint16 bits, header fixed below)
    shard, size, index, n = {}, 0, {}, 0
    names = list(shapes)

    def flush():
        nonlocal shard, size, n
        if not shard:
            return
        n += 1
        fn = f"model-{n:05d}.safetensors"
        # safetensors' numpy API has no bfloat16: write the (simple) format by hand
        header, off = {}, 0
        for k, v in shard.items():
            header[k] = {"dtype": "BF16", "shape": list(shapes[k]), "data_offsets": [off, off + v.nbytes]}
            off += v.nbytes
        hj = json.dumps(header).encode()
        hj += b" " * (-len(hj) % 8)
        with open(os.path.join(a.out, fn), "wb") as f:
            f.write(len(hj).to_bytes(8, "little") + hj)
            for v in shard.values():
                f.write(v.tobytes())
        for k in shard:
            index[k] = fn
        shard, size = {}, 0

    for k in names:
        s = shapes[k]
        x = np.ones(s, np.float32) if k.endswith("norm.weight") else rng.standard_normal(s, np.float32) * 0.02
        shard[k] = bf16(x)
        size += x.size * 2
        if size > 1 << 30:
            flush()
    flush()
    total = sum(int(np.prod(s)) for s in shapes.values())
    json.dump({"metadata": {"total_size": total * 2}, "weight_map": index},
              open(os.path.join(a.out, "model.safetensors.index.json"), "w"), indent=1)
    json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": d,
               "num_hidden_layers": a.layers, "num_attention_heads": a.heads, "num_key_value_heads": a.kv_heads,
               "head_dim": hd, "intermediate_size": a.intermediate, "vocab_size": a.vocab,
               "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
               "tie_word_embeddings": False, "hidden_act": "silu", "torch_dtype": "bfloat16"},
              open(os.path.join(a.out, "config.json"), "w"), indent=1)
    if a.tokenizer:
        shutil.copy(os.path.join(a.tokenizer, "tokenizer.json"), a.out)
    print(f"{a.out}: {total / 1e9:.2f} B parameters, {n} shards")


if __name__ == "__main__":
    main()

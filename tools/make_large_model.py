#!/usr/bin/env python3
"""Write a large synthetic sharded checkpoint (Llama-like names, bf16) to measure opening time and
peak memory: python3 tools/make_large_model.py OUT_DIR [GB]   (default 4 GB in shards of about 1 GB)."""
import json, os, struct, sys
import numpy as np

out = sys.argv[1]
gb = float(sys.argv[2]) if len(sys.argv) > 2 else 4.0
os.makedirs(out, exist_ok=True)
d, ff = 4096, 11008
rng = np.random.default_rng(0)
layer_tensors = [("self_attn.q_proj.weight", (d, d)), ("self_attn.k_proj.weight", (d, d)),
                 ("self_attn.v_proj.weight", (d, d)), ("self_attn.o_proj.weight", (d, d)),
                 ("mlp.gate_proj.weight", (ff, d)), ("mlp.up_proj.weight", (ff, d)),
                 ("mlp.down_proj.weight", (d, ff)), ("input_layernorm.weight", (d,))]
per_layer = sum(int(np.prod(s)) * 2 for _, s in layer_tensors)
n_layers = max(1, int(gb * 1e9 // per_layer))
base = (rng.standard_normal(1 << 22).astype(np.float32) * 0.02).view(np.uint32)
base_bf16 = ((base + 0x7FFF + ((base >> 16) & 1)) >> 16).astype(np.uint16).tobytes()

def data(nbytes):
    reps = nbytes // len(base_bf16) + 1
    return (base_bf16 * reps)[:nbytes]

weight_map, shard, shards = {}, [], []
def flush():
    if not shard:
        return
    name = f"model-{len(shards) + 1:05d}.safetensors"
    header, off = {}, 0
    for tn, shape, nb in shard:
        header[tn] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + nb]}
        off += nb
    hj = json.dumps(header).encode(); hj += b" " * (-len(hj) % 8)
    with open(os.path.join(out, name), "wb") as f:
        f.write(struct.pack("<Q", len(hj)) + hj)
        for tn, shape, nb in shard:
            f.write(data(nb))
            weight_map[tn] = name
    shards.append(name); shard.clear()

size = 0
for i in range(n_layers):
    for tn, shape in layer_tensors:
        nb = int(np.prod(shape)) * 2
        shard.append((f"model.layers.{i}.{tn}", shape, nb)); size += nb
    if sum(x[2] for x in shard) > 1e9:
        flush()
flush()
json.dump({"metadata": {"total_size": size}, "weight_map": weight_map}, open(os.path.join(out, "model.safetensors.index.json"), "w"))
json.dump({"architectures": ["LlamaForCausalLM"], "hidden_size": d, "intermediate_size": ff, "num_hidden_layers": n_layers},
          open(os.path.join(out, "config.json"), "w"))
print(f"{n_layers} layers, {size / 1e9:.2f} GB in {len(shards)} shards -> {out}")

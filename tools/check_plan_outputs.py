#!/usr/bin/env python3
"""Check quantscope's plan outputs with the tools that consume them (independent of quantscope's code).

  python3 tools/check_plan_outputs.py ct PLAN.json CONFIG.json [HF_MODEL_DIR]
      Load a `quantscope export --to compressed-tensors` config with the compressed-tensors package
      (QuantizationConfig.model_validate), and, given the model folder, attach it to the transformers
      model (apply_quantization_config) and check that every module got the scheme its plan spec names.

  python3 tools/check_plan_outputs.py applied ORIGINAL_DIR APPLIED_DIR
      Load both folders with transformers (AutoModel, AutoTokenizer), check the applied one loads with no
      missing or unexpected weights and the same dtypes, that its int8 layers equal a numpy int8
      quantization of the original weights (per output channel, amax/127, ties to even), and compare the
      sentence embeddings (mean pooling, as sentence-transformers does for this model) of English
      sentences from CPython's pydoc topics.

Prints one JSON object with the figures; exits non-zero when a check fails.
"""
import json
import sys


def check_ct(plan_path, config_path, model_dir=None):
    from compressed_tensors.quantization import QuantizationConfig

    plan = json.load(open(plan_path))
    raw = json.load(open(config_path))
    cfg = QuantizationConfig.model_validate(raw)  # extra or invalid fields raise here
    out = {"validated": True, "groups": len(cfg.config_groups), "ignore": len(cfg.ignore or [])}
    # every quantized tensor of the plan is targeted exactly once
    targeted = {}
    for name, scheme in cfg.config_groups.items():
        for t in scheme.targets:
            assert t not in targeted, f"{t} is in two groups"
            targeted[t] = scheme
    want = {
        n[: -len(".weight")]: l["spec"]
        for n, l in plan["layers"].items()
        if n.endswith(".weight") and l["spec"] != "none"
    }
    missing = sorted(set(want) - set(targeted))
    assert not missing, f"not targeted: {missing[:5]}"
    out["targeted"] = len(targeted)
    if model_dir:
        import torch
        from transformers import AutoModel
        from compressed_tensors.quantization import apply_quantization_config

        model = AutoModel.from_pretrained(model_dir, dtype=torch.float32)
        apply_quantization_config(model, cfg)
        got, mismatched = 0, []
        for name, module in model.named_modules():
            scheme = getattr(module, "quantization_scheme", None)
            if name in want:
                spec = want[name]
                if scheme is None:
                    mismatched.append((name, spec, None))
                    continue
                got += 1
                w = scheme.weights
                fam = spec.split(":")[0]
                bits = {"int8": 8, "nvfp4": 4, "mxfp4": 4, "fp8_e4m3": 8, "kmeans4": 4}.get(fam)
                if fam.startswith("int"):
                    bits = int(fam[3:])
                if bits is not None and w.num_bits != bits:
                    mismatched.append((name, spec, w.num_bits))
                if ":g" in spec and fam.startswith("int"):
                    g = int(spec.split(":g")[1].split(":")[0])
                    if w.group_size != g or w.strategy != "group":
                        mismatched.append((name, spec, (w.strategy, w.group_size)))
                if fam == "nvfp4" and (w.strategy != "tensor_group" or w.group_size != 16):
                    mismatched.append((name, spec, (w.strategy, w.group_size)))
            elif scheme is not None and name in (cfg.ignore or []):
                mismatched.append((name, "ignored", scheme))
        assert not mismatched, f"schemes differ: {mismatched[:5]}"
        out["modules_with_the_plan_scheme"] = got
    return out


def sentences(n):
    import pydoc_data.topics as t

    text = " ".join(t.topics.values())
    parts = [s.strip().replace("\n", " ") for s in text.split(". ")]
    parts = [s for s in parts if 40 <= len(s) <= 300]
    step = max(1, len(parts) // n)
    return parts[::step][:n]


def check_applied(orig_dir, applied_dir, n=256):
    import numpy as np
    import torch
    from safetensors.numpy import load_file
    from transformers import AutoModel, AutoTokenizer

    out = {}
    a_model, a_info = AutoModel.from_pretrained(applied_dir, output_loading_info=True)
    o_model = AutoModel.from_pretrained(orig_dir)
    out["missing_keys"] = list(a_info["missing_keys"])
    out["unexpected_keys"] = list(a_info["unexpected_keys"])
    assert not a_info["missing_keys"] and not a_info["unexpected_keys"], a_info
    o_sd, a_sd = o_model.state_dict(), a_model.state_dict()
    assert o_sd.keys() == a_sd.keys()
    assert all(o_sd[k].dtype == a_sd[k].dtype for k in o_sd)
    changed = [k for k in o_sd if not torch.equal(o_sd[k], a_sd[k])]
    out["tensors_changed"] = len(changed)

    # independent oracle for the int8 layers: numpy per-channel symmetric int8 (docs/DESIGN.md section 2)
    plan = json.load(open(f"{applied_dir}/quantscope_plan.json"))
    orig = load_file(f"{orig_dir}/model.safetensors")
    appl = load_file(f"{applied_dir}/model.safetensors")
    int8 = [n for n, l in plan["layers"].items() if l["spec"].startswith("int8:channel")]
    exact = 0
    for name in int8:
        w = orig[name].astype(np.float32)
        amax = np.abs(w).max(axis=1, keepdims=True).astype(np.float32)
        s = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)
        q = np.clip(np.round(w / s), -127, 127).astype(np.float32) * s
        exact += int(np.array_equal(q, appl[name]))
    out["int8_layers_equal_to_numpy"] = f"{exact}/{len(int8)}"
    assert exact == len(int8)

    tok = AutoTokenizer.from_pretrained(applied_dir)
    text = sentences(n)
    batch = tok(text, padding=True, truncation=True, max_length=128, return_tensors="pt")

    def embed(model):
        with torch.no_grad():
            h = model(**batch).last_hidden_state
        m = batch["attention_mask"].unsqueeze(-1).float()
        e = (h * m).sum(1) / m.sum(1)
        return torch.nn.functional.normalize(e, dim=-1)

    eo, ea = embed(o_model), embed(a_model)
    cos = (eo * ea).sum(-1)
    out["sentences"] = len(text)
    out["embedding_cosine_mean"] = round(float(cos.mean()), 6)
    out["embedding_cosine_min"] = round(float(cos.min()), 6)
    # does the quantized model still find the same nearest neighbour for each sentence?
    so, sa = eo @ eo.T, ea @ ea.T
    so.fill_diagonal_(-2)
    sa.fill_diagonal_(-2)
    out["nearest_neighbour_agreement"] = round(float((so.argmax(1) == sa.argmax(1)).float().mean()), 4)
    iu = torch.triu_indices(len(text), len(text), 1)
    a, b = so[iu[0], iu[1]].numpy(), sa[iu[0], iu[1]].numpy()
    ra, rb = a.argsort().argsort(), b.argsort().argsort()
    out["similarity_spearman"] = round(float(np.corrcoef(ra, rb)[0, 1]), 6)
    return out


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "ct":
        r = check_ct(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
    elif len(sys.argv) == 4 and sys.argv[1] == "applied":
        r = check_applied(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
    print(json.dumps(r, indent=1))

#!/usr/bin/env python3
"""Oracle for Quantscope's transformer runtime: run `quantscope forward` and transformers (float32, eager
attention) on the same token ids and compare.

    python3 tools/oracle_lm.py MODEL_DIR [--text TEXT | --text-file F] [--quantscope BIN] [--json]
    python3 tools/oracle_lm.py MODEL_DIR --from OUT.safetensors      # compare a file already written
    python3 tools/oracle_lm.py MODEL_DIR --self-test                 # transformers against itself

It runs `BIN forward MODEL_DIR --text TEXT --out TMP.safetensors` (BIN defaults to
target/release/quantscope in this repository), reads `ids` (I64 [T]) and, for decoders, `logits` (F32 [T, V]),
for encoders `hidden` (F32 [T, H]) and `embedding` (F32 [H], mean over tokens, not normalised), then runs
transformers in float32 with attn_implementation="eager" on those ids (stored bf16/f16 weights upcast) and
prints (the text: --text, --text-file, else MODEL_DIR/reference.txt if there is one, as in the tiny
test models of tests/data/lm, else a built-in English paragraph of about 190 tokens):
  * whether Quantscope's ids equal the Python `tokenizers` package's
    Tokenizer.from_file("tokenizer.json").encode(text).ids (padding switched off; truncation as the file says),
    and the first difference;
  * decoders: max |logit difference|, that over max |logit|, the share of positions whose argmax agrees,
    mean KL(transformers || quantscope) of the next-token distributions;
  * encoders: cosine between the mean-pooled embeddings, max |difference| of the last hidden state.
--json prints the same figures as one JSON line instead. --fail-above R exits 1 when the relative logit error
(decoders) is above R, or when 1 - cosine (encoders) is above R, or when the ids differ.
--self-test writes transformers' own output in Quantscope's layout and compares it with itself (all zeros).
"""
import argparse, json, os, subprocess, sys, tempfile, time

import numpy as np

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DEFAULT_BIN = os.path.join(REPO, "target", "release", "quantscope")

DEFAULT_TEXT = (
    "The lighthouse stood at the end of a narrow stone pier, and for more than a century its lamp had turned "
    "every night, whatever the weather. Its last keeper, a quiet woman who had come to the island as a young "
    "teacher, kept a logbook in which she wrote the wind, the state of the sea and the ships that passed. "
    "When the light was automated in 1987, she stayed on in the cottage beside it, because, as she told a "
    "visiting reporter, she had grown used to counting the seconds between the flashes before falling asleep. "
    "Scientists later used her notes to study how storms in the North Atlantic had changed over forty years. "
    "They found that the strongest gales now arrived earlier in the autumn, and that the calm spells of late "
    "summer had become shorter. Nobody had asked her to keep those records; she simply believed that a place "
    "is better understood when someone pays attention to it every day."
)

ENCODER_TYPES = {"bert", "roberta", "xlm-roberta", "distilbert", "electra", "mpnet", "nomic_bert", "modernbert"}


def is_decoder(cfg):
    archs = cfg.get("architectures") or []
    if any(a.endswith("ForCausalLM") for a in archs):
        return True
    return cfg.get("model_type") not in ENCODER_TYPES


def python_ids(model_dir, text):
    from tokenizers import Tokenizer
    t = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    notes = []
    if t.padding is not None:
        notes.append(f"tokenizer.json pads (to {t.padding.get('length') or 'longest'}); padding switched off")
        t.no_padding()
    if t.truncation is not None:
        notes.append(f"tokenizer.json truncates at {t.truncation.get('max_length')}")
    return t.encode(text).ids, notes


def run_quantscope(binary, model_dir, text, out):
    cmd = [binary, "forward", model_dir, "--text", text, "--out", out]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"quantscope forward failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return dt


def load_out(path):
    from safetensors.numpy import load_file
    return load_file(path)


def transformers_forward(model_dir, ids, decoder):
    import torch
    from transformers import AutoModel, AutoModelForCausalLM
    torch.set_num_threads(os.cpu_count() or 1)
    cls = AutoModelForCausalLM if decoder else AutoModel
    m = cls.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    x = torch.tensor([list(ids)], dtype=torch.long)
    with torch.no_grad():
        if decoder:
            return {"logits": m(input_ids=x).logits[0].float().numpy()}
        mask = torch.ones_like(x)
        kw = {"attention_mask": mask}
        if "token_type_ids" in m.forward.__code__.co_varnames:
            kw["token_type_ids"] = torch.zeros_like(x)
        h = m(input_ids=x, **kw).last_hidden_state[0].float()
        emb = (h * mask[0, :, None]).sum(0) / mask.sum()
        return {"hidden": h.numpy(), "embedding": emb.numpy()}


def write_like_quantscope(path, ids, ref):
    from safetensors.numpy import save_file
    d = {"ids": np.asarray(ids, dtype=np.int64)}
    d.update({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in ref.items()})
    save_file(d, path)


def log_softmax(x):
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def compare(model_dir, text, qs, decoder):
    res = {"model": os.path.abspath(model_dir), "kind": "decoder" if decoder else "encoder"}
    py_ids, notes = python_ids(model_dir, text)
    qs_ids = [int(i) for i in qs["ids"].tolist()]
    res["tokens"] = len(qs_ids)
    res["python_tokens"] = len(py_ids)
    res["ids_equal"] = qs_ids == py_ids
    first = None
    if not res["ids_equal"]:
        n = min(len(qs_ids), len(py_ids))
        first = next((i for i in range(n) if qs_ids[i] != py_ids[i]), n)
        res["first_id_difference"] = {"position": first,
                                      "quantscope": qs_ids[first:first + 5], "python": py_ids[first:first + 5]}
    res["notes"] = notes
    ref = transformers_forward(model_dir, qs_ids, decoder)
    if decoder:
        a, b = qs["logits"].astype(np.float32), ref["logits"]
        if a.shape != b.shape:
            res["error"] = f"logits shape {list(a.shape)} vs transformers {list(b.shape)}"
            return res
        diff = np.abs(a.astype(np.float64) - b)
        res["max_abs_logit_diff"] = float(diff.max())
        res["max_abs_logit"] = float(np.abs(b).max())
        res["rel_logit_diff"] = float(diff.max() / max(np.abs(b).max(), 1e-30))
        res["mean_abs_logit_diff"] = float(diff.mean())
        res["argmax_agree"] = float((a.argmax(-1) == b.argmax(-1)).mean())
        lp, lq = log_softmax(b), log_softmax(a)
        res["mean_kl"] = float((np.exp(lp) * (lp - lq)).sum(-1).mean())
    else:
        h, hr = qs["hidden"].astype(np.float32), ref["hidden"]
        if h.shape != hr.shape:
            res["error"] = f"hidden shape {list(h.shape)} vs transformers {list(hr.shape)}"
            return res
        e, er = qs["embedding"].astype(np.float64), ref["embedding"].astype(np.float64)
        res["embedding_cosine"] = float(e @ er / max(np.linalg.norm(e) * np.linalg.norm(er), 1e-30))
        res["max_abs_embedding_diff"] = float(np.abs(e - er).max())
        res["max_abs_hidden_diff"] = float(np.abs(h.astype(np.float64) - hr).max())
        res["max_abs_hidden"] = float(np.abs(hr).max())
    return res


def show(res):
    print(f"model      {res['model']} ({res['kind']})")
    for n in res.get("notes", []):
        print(f"note       {n}")
    if res["ids_equal"]:
        print(f"ids        equal to Python tokenizers ({res['tokens']} tokens)")
    else:
        f = res["first_id_difference"]
        print(f"ids        DIFFER from Python tokenizers: {res['tokens']} vs {res['python_tokens']} tokens, first at "
              f"position {f['position']}: quantscope {f['quantscope']} python {f['python']}")
    if "error" in res:
        print(f"error      {res['error']}")
        return
    if res["kind"] == "decoder":
        print(f"logits     max |diff| {res['max_abs_logit_diff']:.3e}  / max |logit| {res['max_abs_logit']:.3f} "
              f"= {res['rel_logit_diff']:.3e}   mean |diff| {res['mean_abs_logit_diff']:.3e}")
        print(f"argmax     agrees at {100 * res['argmax_agree']:.2f}% of positions   mean KL {res['mean_kl']:.3e}")
    else:
        print(f"embedding  cosine {res['embedding_cosine']:.8f}   max |diff| {res['max_abs_embedding_diff']:.3e}")
        print(f"hidden     max |diff| {res['max_abs_hidden_diff']:.3e}  (max |h| {res['max_abs_hidden']:.3f})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dir")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--text")
    g.add_argument("--text-file")
    ap.add_argument("--quantscope", default=DEFAULT_BIN, help="path to the quantscope binary")
    ap.add_argument("--from", dest="from_file", help="compare this file instead of running quantscope")
    ap.add_argument("--out", help="where quantscope writes (default: a temporary file, removed)")
    ap.add_argument("--self-test", action="store_true",
                    help="write transformers' output in quantscope's layout and compare it with itself")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    ap.add_argument("--fail-above", type=float, help="exit 1 above this relative error (see above)")
    a = ap.parse_args()

    if a.text is not None:
        text = a.text
    elif a.text_file:
        text = open(a.text_file, encoding="utf-8").read()
    elif os.path.exists(os.path.join(a.model_dir, "reference.txt")):  # the tiny test models
        text = open(os.path.join(a.model_dir, "reference.txt"), encoding="utf-8").read()
    else:
        text = DEFAULT_TEXT
    cfg = json.load(open(os.path.join(a.model_dir, "config.json")))
    decoder = is_decoder(cfg)
    if not decoder and cfg.get("max_position_embeddings"):
        n = len(python_ids(a.model_dir, text)[0])
        if n > cfg["max_position_embeddings"]:
            sys.exit(f"{n} tokens, more than this encoder's {cfg['max_position_embeddings']} positions: "
                     f"give a shorter --text")

    with tempfile.TemporaryDirectory() as tmp:
        out = a.out or os.path.join(tmp, "quantscope_forward.safetensors")
        qs_seconds = None
        if a.self_test:
            ids, _ = python_ids(a.model_dir, text)
            write_like_quantscope(out, ids, transformers_forward(a.model_dir, ids, decoder))
        elif a.from_file:
            out = a.from_file
        else:
            if not os.path.exists(a.quantscope):
                sys.exit(f"no quantscope binary at {a.quantscope} (cargo build --release, or --quantscope PATH)")
            qs_seconds = run_quantscope(a.quantscope, a.model_dir, text, out)
        qs = load_out(out)
        res = compare(a.model_dir, text, qs, decoder)
        if qs_seconds is not None:
            res["quantscope_seconds"] = round(qs_seconds, 3)
        if a.self_test:
            res["self_test"] = True

    if a.json:
        print(json.dumps(res, sort_keys=True))
    else:
        show(res)

    if "error" in res:
        sys.exit(2)
    if a.fail_above is not None:
        bad = not res["ids_equal"]
        if decoder:
            bad |= res["rel_logit_diff"] > a.fail_above
        else:
            bad |= (1.0 - res["embedding_cosine"]) > a.fail_above
        if bad:
            sys.exit(1)
    if a.self_test:
        z = res.get("max_abs_logit_diff", 0.0) + res.get("max_abs_hidden_diff", 0.0)
        if z != 0.0 or not res["ids_equal"]:
            sys.exit("self-test: transformers does not match itself")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Time one forward pass of a transformer in PyTorch and in `quantscope forward`, on the same token ids.

    python3 tools/bench_lm_vs_torch.py MODEL_DIR [--tokens 512] [--reps 3] [--quantscope BIN]
                                       [--quantscope-time-cmd CMD] [--json]

PyTorch: CPU, float32 (bf16/f16 weights upcast), torch.set_num_threads(all cores), attn_implementation
"eager" and "sdpa", each in its own child process: one warm-up pass, then the median of --reps passes of
model(input_ids) under inference_mode (the model already loaded); peak RSS of that process
(getrusage ru_maxrss, loading included).

Quantscope: `BIN forward MODEL_DIR --ids ... --out TMP` is timed as a whole process (median of --reps);
the same on a 1-token input is taken as the cost of loading and writing, and subtracted. Peak RSS of the
process from wait4's rusage. The output file of the full run holds T x vocab f32 logits (for Gemma's 262k
vocabulary and 512 tokens, 537 MB), and that write is part of the full run's time and not of the 1-token run.
--quantscope-time-cmd CMD: a shell command, run instead with {model} and {ids} substituted, whose last line of
output is the forward time in seconds (for when quantscope reports its own time).

The tokens: the first --tokens ids of assets/text/default_en.txt.gz (the English text shipped in the binary)
through the model's tokenizer.json (special tokens added, padding off), capped at the model's
max_position_embeddings for encoders.
"""
import argparse, gzip, json, os, shlex, statistics, subprocess, sys, tempfile, time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DEFAULT_BIN = os.path.join(REPO, "target", "release", "quantscope")
TEXT = os.path.join(REPO, "assets", "text", "default_en.txt.gz")
ENCODER_TYPES = {"bert", "roberta", "xlm-roberta", "distilbert", "electra", "mpnet", "nomic_bert", "modernbert"}


def is_decoder(cfg):
    archs = cfg.get("architectures") or []
    return any(a.endswith("ForCausalLM") for a in archs) or cfg.get("model_type") not in ENCODER_TYPES


def token_ids(model_dir, n, decoder, cfg):
    from tokenizers import Tokenizer
    t = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    t.no_padding()
    t.no_truncation()
    text = gzip.open(TEXT, "rt", encoding="utf-8").read()[: n * 12]
    ids = t.encode(text).ids
    if not decoder:
        n = min(n, cfg.get("max_position_embeddings", n))
        if len(ids) > n:  # keep the closing [SEP]
            ids = ids[: n - 1] + ids[-1:]
    return ids[:n]


def torch_child(model_dir, ids, attn, reps, decoder):
    import resource
    import torch
    from transformers import AutoModel, AutoModelForCausalLM
    torch.set_num_threads(os.cpu_count() or 1)
    cls = AutoModelForCausalLM if decoder else AutoModel
    m = cls.from_pretrained(model_dir, dtype=torch.float32, attn_implementation=attn).eval()
    x = torch.tensor([ids])
    kw = {} if decoder else {"attention_mask": torch.ones_like(x)}
    times = []
    with torch.inference_mode():
        m(input_ids=x, **kw)
        for _ in range(reps):
            t0 = time.perf_counter()
            m(input_ids=x, **kw)
            times.append(time.perf_counter() - t0)
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"median_s": statistics.median(times), "times_s": times, "peak_rss_mb": rss_kb / 1024,
                      "threads": torch.get_num_threads()}))


def run_torch(model_dir, ids_path, attn, reps, decoder):
    cmd = [sys.executable, __file__, model_dir, "--_child", attn, "--_ids", ids_path, "--reps", str(reps)]
    if not decoder:
        cmd.append("--_encoder")
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"torch ({attn}) failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def timed_process(cmd):
    """Wall time and peak RSS (MB) of one process."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t0
    out, err = p.stdout.read(), p.stderr.read()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd[:3])} ... failed ({p.returncode}):\n{err.decode(errors='replace')[-3000:]}")
    return dt, ru.ru_maxrss / 1024, out.decode(errors="replace")


def run_quantscope(binary, model_dir, ids, reps, out):
    full = [binary, "forward", model_dir, "--ids", ",".join(map(str, ids)), "--out", out]
    one = [binary, "forward", model_dir, "--ids", str(ids[0]), "--out", out]
    timed_process(one)  # warm the page cache
    t_full, t_one, rss = [], [], 0.0
    for _ in range(reps):
        dt, r, _ = timed_process(full)
        t_full.append(dt)
        rss = max(rss, r)
        t_one.append(timed_process(one)[0])
    f, o = statistics.median(t_full), statistics.median(t_one)
    return {"process_median_s": f, "one_token_median_s": o, "forward_s": max(f - o, 0.0),
            "times_s": t_full, "one_token_times_s": t_one, "peak_rss_mb": rss}


def run_time_cmd(cmd, model_dir, ids, reps):
    c = cmd.format(model=shlex.quote(model_dir), ids=",".join(map(str, ids)))
    times = []
    for _ in range(reps):
        p = subprocess.run(c, shell=True, capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"--quantscope-time-cmd failed:\n{p.stderr[-3000:]}")
        times.append(float(p.stdout.strip().splitlines()[-1].split()[0]))
    return {"forward_s": statistics.median(times), "times_s": times}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quantscope", default=DEFAULT_BIN)
    ap.add_argument("--quantscope-time-cmd")
    ap.add_argument("--no-quantscope", action="store_true", help="time PyTorch only")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    ap.add_argument("--_ids", help=argparse.SUPPRESS)
    ap.add_argument("--_encoder", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    model_dir = os.path.abspath(a.model_dir)

    if a._child:
        torch_child(model_dir, json.load(open(a._ids)), a._child, a.reps, not a._encoder)
        return

    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    decoder = is_decoder(cfg)
    ids = token_ids(model_dir, a.tokens, decoder, cfg)
    res = {"model": model_dir, "tokens": len(ids), "cores": os.cpu_count(), "reps": a.reps}
    with tempfile.TemporaryDirectory() as tmp:
        ids_path = os.path.join(tmp, "ids.json")
        json.dump(ids, open(ids_path, "w"))
        for attn in ("eager", "sdpa"):
            res[f"torch_{attn}"] = run_torch(model_dir, ids_path, attn, a.reps, decoder)
        if a.quantscope_time_cmd:
            res["quantscope"] = run_time_cmd(a.quantscope_time_cmd, model_dir, ids, a.reps)
        elif not a.no_quantscope:
            if not os.path.exists(a.quantscope):
                sys.exit(f"no quantscope binary at {a.quantscope} (or pass --no-quantscope)")
            res["quantscope"] = run_quantscope(a.quantscope, model_dir, ids, a.reps,
                                               os.path.join(tmp, "out.safetensors"))
    if "quantscope" in res:
        q = res["quantscope"]["forward_s"]
        for attn in ("eager", "sdpa"):
            res[f"ratio_vs_{attn}"] = q / res[f"torch_{attn}"]["median_s"]

    if a.json:
        print(json.dumps(res, sort_keys=True))
        return
    print(f"{model_dir}: {len(ids)} tokens, {os.cpu_count()} threads, median of {a.reps}")
    for attn in ("eager", "sdpa"):
        t = res[f"torch_{attn}"]
        print(f"  torch {attn:5s}   {t['median_s'] * 1e3:9.1f} ms   peak RSS {t['peak_rss_mb']:7.0f} MB")
    if "quantscope" in res:
        q = res["quantscope"]
        if "process_median_s" in q:
            print(f"  quantscope    {q['forward_s'] * 1e3:9.1f} ms   peak RSS {q['peak_rss_mb']:7.0f} MB   "
                  f"(process {q['process_median_s'] * 1e3:.0f} ms - 1-token process {q['one_token_median_s'] * 1e3:.0f} ms)")
        else:
            print(f"  quantscope    {q['forward_s'] * 1e3:9.1f} ms   (--quantscope-time-cmd)")
        print(f"  ratio quantscope / torch: {res['ratio_vs_eager']:.2f}x eager, {res['ratio_vs_sdpa']:.2f}x sdpa")


if __name__ == "__main__":
    main()

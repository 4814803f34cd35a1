#!/usr/bin/env python3
"""Whole-model commands on a large checkpoint: wall time, peak memory, and the ratio to a read+convert
floor measured on the same files.

    python3 tools/bench_whole_model.py MODEL_DIR [--quantscope BIN] [--floor BIN] [--make 7b --tokenizer DIR]
        [--skip-numpy]

`--make 7b` first writes a 7B-shaped sharded bf16 Llama (Llama-2-7B's shapes with a 49,152-word
vocabulary: 6.9 B parameters, 13.8 GB) into MODEL_DIR with tools/make_synthetic_llama.py; sensitivity
runs the model on text, so give it a tokenizer of that vocabulary (`--tokenizer` SmolLM2's folder, from
tools/get_models.sh). Each command
runs under /usr/bin/time -v (peak resident memory) after the model's files are read once into the page
cache, so every figure is from memory, not disk. The floor is `examples/read_floor.rs` (mmap, bf16 →
f32 on all cores, nothing else); numpy's single-threaded read + widen + sum is printed beside it, and
for the commands that write a model, the time to write (and sync) as many bytes. Sensitivity is
divided by its kernels timed alone (`examples/sensitivity_kernels.rs`).
Prints a Markdown table."""
import argparse, glob, json, os, re, shutil, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(cmd):
    """(wall seconds, peak RSS in MB, stdout) of one command run under /usr/bin/time -v."""
    p = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-2000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", p.stderr).group(1)
    secs = sum(float(x) * 60 ** i for i, x in enumerate(reversed(wall.split(":"))))
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1)) / 1024
    return secs, rss, p.stdout


def warm(files):
    for f in files:
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass


def numpy_floor(files):
    """Single-threaded numpy: read every bf16 tensor, widen to f32, sum."""
    import numpy as np
    t0 = time.time()
    total = 0.0
    for f in files:
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
            base = 8 + n
        mm = np.memmap(f, dtype=np.uint8, mode="r")
        for k, v in header.items():
            if k == "__metadata__" or v["dtype"] != "BF16":
                continue
            a, b = v["data_offsets"]
            u = mm[base + a: base + b].view(np.uint16).astype(np.uint32) << 16
            total += float(u.view(np.float32).sum(dtype=np.float64))
        del mm
    return time.time() - t0


def make_many(out, n=8192, rows=128, cols=128):
    """One bf16 file of `n` small matrices (layer-like names), written a tensor at a time."""
    import numpy as np
    os.makedirs(out, exist_ok=True)
    nb = rows * cols * 2
    header = {f"model.layers.{i}.mlp.up_proj.weight": {"dtype": "BF16", "shape": [rows, cols],
                                                        "data_offsets": [i * nb, (i + 1) * nb]} for i in range(n)}
    hj = json.dumps(header).encode()
    hj += b" " * (-len(hj) % 8)
    rng = np.random.default_rng(0)
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(len(hj).to_bytes(8, "little") + hj)
        for _ in range(n):
            u = (rng.standard_normal(rows * cols).astype(np.float32) * 0.02).view(np.uint32)
            f.write(((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16).tobytes())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--quantscope", default=os.path.join(ROOT, "target/release/quantscope"))
    ap.add_argument("--floor", default=os.path.join(ROOT, "target/release/examples/read_floor"))
    ap.add_argument("--sensitivity-kernels",
                    default=os.path.join(ROOT, "target/release/examples/sensitivity_kernels"))
    ap.add_argument("--make", choices=["7b", "many"], help="write the synthetic model first (many: 8,192 "
                    "tensors of 128 × 128, for per-tensor overhead)")
    ap.add_argument("--tokenizer", help="with --make 7b: a folder whose tokenizer.json has 49,152 words")
    ap.add_argument("--skip-numpy", action="store_true")
    ap.add_argument("--candidates", default="int8:scale=bf16,int4:g128:scale=bf16,nvfp4,mxfp4")
    a = ap.parse_args()
    if a.make == "7b":
        subprocess.run([sys.executable, os.path.join(ROOT, "tools/make_synthetic_llama.py"), a.model,
                        "--hidden", "4096", "--layers", "32", "--heads", "32", "--kv-heads", "32",
                        "--intermediate", "11008", "--vocab", "49152"]
                       + (["--tokenizer", a.tokenizer] if a.tokenizer else []), check=True)
    if a.make == "many":
        make_many(a.model)
    files = sorted(glob.glob(os.path.join(a.model, "*.safetensors")))
    gb = sum(os.path.getsize(f) for f in files) / 1e9
    warm(files)
    floor, floor_rss, out = timed([a.floor, a.model])
    print(f"model: {a.model}, {gb:.2f} GB in {len(files)} files; read+convert floor {floor:.2f} s "
          f"({json.loads(out)['gb_per_s']:.2f} GB/s), peak {floor_rss:.0f} MB")
    warm(files)
    kernels = json.loads(timed([a.floor, a.model, "int4:g128"])[2])["quantize_seconds"]
    print(f"the int4:g128 quantizer alone, summed over the tensors: {kernels:.2f} s")
    warm(files)
    sk = json.loads(timed([a.sensitivity_kernels, a.model, a.candidates])[2])
    print(f"sensitivity's kernels alone, summed over the layers: {sk['seconds']:.2f} s (calibration products "
          f"{sk['calibration_products']:.2f}, signals {sk['signals']:.2f}, quantizers {sk['quantizers']:.2f}, "
          f"errors {sk['errors']:.2f}; {sk['rows']} rows, {sk['tokens']} tokens)")
    if not a.skip_numpy:
        warm(files)
        print(f"numpy, one thread, read + widen + sum: {numpy_floor(files):.2f} s")
    q = a.quantscope
    work = tempfile.mkdtemp(prefix="qs-bench-", dir=os.path.dirname(os.path.abspath(a.model)))
    # the floor of commands that write a model: the same number of bytes written and synced
    t0, block = time.time(), bytes(1 << 24)
    with open(os.path.join(work, "write_floor"), "wb") as fh:
        for _ in range(int(gb * 1e9) >> 24):
            fh.write(block)
        fh.flush(); os.fsync(fh.fileno())
    write_floor = time.time() - t0
    os.remove(os.path.join(work, "write_floor"))
    print(f"writing {gb:.2f} GB (synced): {write_floor:.2f} s ({gb / write_floor:.2f} GB/s)")
    plan = os.path.join(work, "plan.json")
    commands = [
        ("inspect (all statistics)", [q, "inspect", a.model]),
        ("quantize int4:g128", [q, "quantize", a.model, "--spec", "int4:g128"]),
        ("quantize int4:g128 --out", [q, "quantize", a.model, "--spec", "int4:g128",
                                      "--out", os.path.join(work, "q.safetensors")]),
        (f"sensitivity ({a.candidates})", [q, "sensitivity", a.model, "--candidates", a.candidates,
                                           "--no-end-to-end", "--cache", os.path.join(work, "cells.json")]),
        # cells cached; it still runs the whole plans on 4 x 128 calibration tokens and judges them
        ("search --budget-bits 4.5 (cells cached, judged on 2 windows)",
         [q, "search", a.model, "--candidates", a.candidates, "--no-end-to-end", "--cache",
          os.path.join(work, "cells.json"), "--budget-bits", "4.5", "--eval-windows", "2", "--out", plan]),
        ("apply (fake-quant)", [q, "apply", a.model, "--plan", plan, "--out", os.path.join(work, "applied")]),
        ("apply --packed", [q, "apply", a.model, "--plan", plan, "--packed", "--out", os.path.join(work, "applied")]),
        ("apply --format compressed-tensors", [q, "apply", a.model, "--plan", plan, "--format",
                                               "compressed-tensors", "--lenient", "--out", os.path.join(work, "applied")]),
        ("export --to llama.cpp", [q, "export", plan, "--model", a.model, "--to", "llama.cpp",
                                   "--lenient", "--out", os.path.join(work, "types.txt")]),
    ]
    rows = []
    for name, cmd in commands:
        warm(files)
        secs, rss, _ = timed(cmd)
        rows.append((name, secs, rss))
        print(f"  {name}: {secs:.2f} s, {rss:.0f} MB", file=sys.stderr)
        for f in glob.glob(os.path.join(work, "q.safetensors")) + glob.glob(os.path.join(work, "applied")):
            shutil.rmtree(f) if os.path.isdir(f) else os.remove(f)
    print()
    print("| command | wall s | × read floor | × read floor + kernels | × kernels | × read + write floor "
          "| peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for name, secs, rss in rows:
        writes = "--out" in name or name.startswith("apply")
        both = f"{secs / (floor + write_floor):.2f}" if writes else ""
        kern = f"{secs / (floor + kernels):.2f}" if name == "quantize int4:g128" else ""
        alone = f"{secs / sk['seconds']:.2f}" if name.startswith("sensitivity") else ""
        print(f"| {name} | {secs:.2f} | {secs / floor:.2f} | {kern} | {alone} | {both} | {rss:.0f} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

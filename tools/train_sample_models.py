#!/usr/bin/env python3
"""Train the bundled sample model(s) with numpy, reproducibly, and write them as self-describing
safetensors files in sample_models/. Run from the repository root:

    python3 tools/train_sample_models.py

digits_mlp.safetensors: a 64-128-64-10 ReLU MLP on scikit-learn's 8x8 handwritten digits
(sample_models/data/digits.csv.gz, 1,797 images, BSD-3, copied from the scikit-learn wheel).
Split: a seeded stratified shuffle, 80 % train / 20 % held out. Inputs are pixel/16 in [0, 1].
Training: Adam, cross-entropy, 60 epochs, batch 32, seed 0. The architecture, the preprocessing,
the split and the held-out accuracy are stored in the file's metadata.
"""
import gzip, json
import numpy as np
from safetensors.numpy import save_file

def load_digits(path="sample_models/data/digits.csv.gz"):
    rows = np.loadtxt(gzip.open(path, "rt"), delimiter=",")
    return rows[:, :64].astype(np.float32) / 16.0, rows[:, 64].astype(np.int64)

def stratified_split(y, frac, seed):
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        test.extend(idx[: int(round(len(idx) * frac))])
    test = np.sort(np.array(test))
    train = np.setdiff1d(np.arange(len(y)), test)
    return train, test

def train_mlp(x, y, sizes, epochs, seed):
    rng = np.random.default_rng(seed)
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        w = (rng.standard_normal((fan_out, fan_in)) * np.sqrt(2.0 / fan_in)).astype(np.float32)  # He init
        params += [w, np.zeros(fan_out, np.float32)]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    lr, b1, b2, eps, step = 1e-3, 0.9, 0.999, 1e-8, 0
    n = len(y)
    for _ in range(epochs):
        order = rng.permutation(n)
        for s in range(0, n, 32):
            bi = order[s:s + 32]
            acts = [x[bi]]
            for i in range(0, len(params), 2):
                z = acts[-1] @ params[i].T + params[i + 1]
                acts.append(np.maximum(z, 0) if i + 2 < len(params) else z)
            logits = acts[-1]
            p = np.exp(logits - logits.max(1, keepdims=True)); p /= p.sum(1, keepdims=True)
            g = p; g[np.arange(len(bi)), y[bi]] -= 1; g /= len(bi)
            grads = [None] * len(params)
            for i in range(len(params) - 2, -1, -2):
                grads[i] = g.T @ acts[i // 2]
                grads[i + 1] = g.sum(0)
                if i > 0:
                    g = (g @ params[i]) * (acts[i // 2] > 0)
            step += 1
            for k, (p_, g_) in enumerate(zip(params, grads)):
                m[k] = b1 * m[k] + (1 - b1) * g_
                v[k] = b2 * v[k] + (1 - b2) * g_ * g_
                p_ -= (lr * (m[k] / (1 - b1 ** step)) / (np.sqrt(v[k] / (1 - b2 ** step)) + eps)).astype(np.float32)
    return params

def forward(params, x):
    a = x
    for i in range(0, len(params), 2):
        a = a @ params[i].T + params[i + 1]
        if i + 2 < len(params):
            a = np.maximum(a, 0)
    return a

def predict(params, x):
    return forward(params, x).argmax(1)

def main():
    x, y = load_digits()
    train, test = stratified_split(y, 0.2, seed=0)
    sizes = [64, 128, 64, 10]
    params = train_mlp(x[train], y[train], sizes, epochs=60, seed=0)
    acc = float((predict(params, x[test]) == y[test]).mean())
    logits = forward(params, x[test])
    m = logits.max(1, keepdims=True)
    logp = logits - m - np.log(np.exp(logits - m).sum(1, keepdims=True))
    loss = float(-logp[np.arange(len(test)), y[test]].mean())
    train_acc = float((predict(params, x[train]) == y[train]).mean())
    names = ["fc1", "fc2", "fc3"]
    tensors = {}
    for i, nm in enumerate(names):
        tensors[f"{nm}.weight"] = params[2 * i]
        tensors[f"{nm}.bias"] = params[2 * i + 1]
    arch = [{"op": "linear", "name": "fc1"}, {"op": "relu"}, {"op": "linear", "name": "fc2"}, {"op": "relu"},
            {"op": "linear", "name": "fc3"}]
    meta = {
        "quantscope_sample": "1",
        "architecture": json.dumps(arch),
        "input_shape": "[64]",
        "input_preprocessing": "pixel / 16 (8x8 grey levels 0..16 to [0, 1]), row-major",
        "dataset": "scikit-learn 8x8 handwritten digits, sample_models/data/digits.csv.gz (1797 images, BSD-3)",
        "split": "stratified 80/20 per class, numpy default_rng(0); test = first round(0.2*n_c) of each shuffled class",
        "held_out_accuracy": f"{acc:.4f}",
        "held_out_loss": f"{loss:.6f}",
        "test_indices": ",".join(str(i) for i in test),
        "dataset_file": "data/digits.csv.gz",
        "train_accuracy": f"{train_acc:.4f}",
        "trained_by": "tools/train_sample_models.py (numpy, Adam lr 1e-3, 60 epochs, batch 32, seed 0)",
    }
    save_file(tensors, "sample_models/digits_mlp.safetensors", metadata=meta)
    print(f"digits_mlp: held-out accuracy {acc:.4f}, loss {loss:.6f} on {len(test)} images (train {train_acc:.4f})")

if __name__ == "__main__":
    main()

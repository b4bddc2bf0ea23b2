"""Train the bundled Fashion-MNIST ResNet-8 and write ``data/fmnist_resnet8.onnx`` + ``data/fmnist_slice.npz``.

Usage (torch venv, after ``make data``): ``python -m compiler.zoo.train_fmnist``.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import fashion_mnist_raw, normalize
from .torch_models import ResNet8

DATA = Path(__file__).resolve().parent / "data"
EPOCHS, BATCH, LR = 4, 128, 3e-3
CALIB, TEST_SLICE = 256, 1000


def train(x: torch.Tensor, y: torch.Tensor) -> ResNet8:
    """Train ResNet-8 with AdamW and a one-cycle schedule; random horizontal flips."""
    model = ResNet8()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-4)
    steps = EPOCHS * ((len(x) + BATCH - 1) // BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(EPOCHS):
        for idx in torch.randperm(len(x)).split(BATCH):
            xb, yb = x[idx], y[idx]
            flip = torch.rand(len(idx)) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            opt.zero_grad()
            loss_fn(model(xb), yb).backward()
            opt.step()
            sched.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of ``model`` on (``x``, ``y``)."""
    pred = torch.cat([model(xb).argmax(1) for xb in x.split(1000)])
    return (pred == y).float().mean().item()


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    train_u8, train_y = fashion_mnist_raw("train")
    test_u8, test_y = fashion_mnist_raw("test")
    start = time.perf_counter()
    model = train(torch.from_numpy(normalize(train_u8)), torch.from_numpy(train_y))
    seconds = time.perf_counter() - start
    acc = accuracy(model, torch.from_numpy(normalize(test_u8)), torch.from_numpy(test_y))
    print(f"ResNet-8 Fashion-MNIST: test accuracy {acc:.4f}, trained {EPOCHS} epochs in {seconds:.1f} s")
    DATA.mkdir(exist_ok=True)
    torch.onnx.export(model, (torch.zeros(1, 1, 28, 28),), str(DATA / "fmnist_resnet8.onnx"),
                      input_names=["input"], output_names=["output"], opset_version=13, dynamo=False,
                      dynamic_axes={"input": {0: "N"}, "output": {0: "N"}})
    calib = np.random.default_rng(0).choice(len(train_u8), CALIB, replace=False)
    np.savez_compressed(DATA / "fmnist_slice.npz", calib=train_u8[np.sort(calib)],
                        test_x=test_u8[:TEST_SLICE], test_y=test_y[:TEST_SLICE].astype(np.uint8))


if __name__ == "__main__":
    main()

"""Export a zoo model to ONNX (run with the torch venv's python).

Usage: ``python -m compiler.zoo.export NAME OUT.onnx`` with NAME one of resnet18, mobilenetv2,
efficientnet-lite0, transformer-block.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import onnx
import onnxruntime as ort
import torch
from torch import nn

from . import INPUT_SHAPES
from .torch_models import MobileNetV2, ResNet18, TransformerBlock, efficientnet_lite0, num_params

EXPORTABLE = ("resnet18", "mobilenetv2", "efficientnet-lite0", "transformer-block")
# torchvision's parameter counts, which the torch.nn rewrites must match.
PARAM_COUNTS = {"resnet18": 11_689_512, "mobilenetv2": 3_504_872}


def randomize_batchnorm(model: nn.Module, shape: tuple[int, ...], batch: int = 8) -> None:
    """Give every BatchNorm random affine terms and running stats measured on random inputs.

    The running statistics are non-trivial (so BN folding is exercised) yet keep activations
    well scaled through deep random networks. Leaves ``model`` in eval mode.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in bns:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0.0, 0.1)
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the calibration pass
        model.train()
        model(torch.randn(batch, *shape[1:]))
    model.eval()


def build(name: str) -> tuple[nn.Module, int]:
    """Seeded eval-mode model ``name`` and the ONNX opset to export it with."""
    torch.manual_seed(0)
    if name == "efficientnet-lite0":
        return efficientnet_lite0().eval(), 13
    if name == "transformer-block":
        model = TransformerBlock().eval()
        with torch.no_grad():  # distinct, non-trivial LayerNorm affine terms
            for norm in (model.norm1, model.norm2):
                norm.weight.uniform_(0.5, 1.5)
                norm.bias.normal_(0.0, 0.1)
        return model, 17  # LayerNormalization needs opset 17
    model = {"resnet18": ResNet18, "mobilenetv2": MobileNetV2}[name]()
    if num_params(model) != PARAM_COUNTS[name]:
        raise AssertionError(f"{name}: {num_params(model)} parameters, torchvision has {PARAM_COUNTS[name]}")
    randomize_batchnorm(model, INPUT_SHAPES[name])
    return model, 13


def ort_basic_fold(src: Path, dst: Path) -> None:
    """Fold ``src`` with ORT's basic (standard-ONNX) graph optimizations into ``dst``.

    Collapses the exporter's TF-"same"-padding chains (450 → ~94 nodes for EfficientNet-Lite0)
    and drops the opset imports ORT adds but the graph does not use.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(dst)
    ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
    model = onnx.load(dst)
    used = {node.domain for node in model.graph.node}
    kept = [op for op in model.opset_import if op.domain in ("", "ai.onnx") or op.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    onnx.save(model, dst)


def export(name: str, out: Path) -> None:
    """Export zoo model ``name`` to ``out`` (input "input", output "output", batch 1)."""
    model, opset = build(name)
    example = torch.randn(*INPUT_SHAPES[name])
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.onnx" if name == "efficientnet-lite0" else out
        torch.onnx.export(model, (example,), str(raw), input_names=["input"], output_names=["output"],
                          opset_version=opset, dynamo=False, training=torch.onnx.TrainingMode.PRESERVE)
        if name == "efficientnet-lite0":
            ort_basic_fold(raw, out)
    onnx.checker.check_model(onnx.load(out), full_check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=EXPORTABLE)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    export(args.name, args.out)


if __name__ == "__main__":
    main()

"""Quantization-aware training of low-bit Fashion-MNIST ResNet-8s, exported as QONNX and as QDQ.

Usage (torch venv, after ``make data``): ``python -m compiler.zoo.train_lowbit [CONFIG ...]``.

Each configuration ``w<W>a<A>`` quantizes the convolutions of the three basic blocks to W-bit
weights (1: bipolar ±1, else narrow signed, e.g. ternary for 2) and their inputs to A-bit unsigned
activations; the stem convolution and the classifier keep 8 bits, as do the input, the two branches
of each residual add, the pooled features and the logits. Fake quantizers round with a
straight-through estimator and learn their scales (LSQ, per output channel for weights; bipolar
weights use the channel's mean magnitude). Training starts from FP32 weights trained first.

Writes ``data/fmnist_resnet8_<cfg>.qonnx.onnx`` (QONNX ``Quant``/``BipolarQuant`` nodes as
Brevitas exports them, biases through 32-bit ``Quant`` nodes like its Int32Bias),
``data/fmnist_resnet8_<cfg>.qdq.onnx`` (opset 21 QuantizeLinear/DequantizeLinear: int4 weights up
to 4 bits, uint4 4-bit activations, 1- and 2-bit activations in uint8 behind a Clip to their code
range) and the fake-quant test accuracies in ``data/fmnist_resnet8_lowbit.json``. At export
BatchNorm folds into the weights' per-channel scales and biases round to the accumulator's grid;
the accuracies are those of this frozen model, the one both exports hold.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from torch.nn import functional as F

from . import fashion_mnist_raw, normalize

DATA = Path(__file__).resolve().parent / "data"
CONFIGS = {"w1a1": (1, 1), "w2a8": (2, 8), "w2a2": (2, 2), "w4a4": (4, 4)}
FP32_EPOCHS, QAT_EPOCHS, BATCH, LR = 3, 3, 128, 2e-3
TEST_SLICE = 1000  # the test images bundled in fmnist_slice.npz
QONNX_DOMAIN = "qonnx.custom_op.general"


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half to even forward, identity backward (straight-through estimator)."""
    return x + (torch.round(x) - x).detach()


def grad_scaled(s: torch.Tensor, g: float) -> torch.Tensor:
    """``s`` forward, its gradient times ``g`` backward (LSQ's step-size gradient scale)."""
    return (s - s * g).detach() + s * g


class Quantizer(nn.Module):
    """Fake quantizer ``round(clip(x / s, lo, hi)) · s`` with a learned scale ``s``.

    Parameters
    ----------
    bits : int
        Code width; 1 with ``signed`` means bipolar ±1 (weights only).
    signed : bool
        Signed codes (narrow weights: ``[-(2^(b-1) - 1), 2^(b-1) - 1]``; activations full range)
        or unsigned ``[0, 2^b - 1]``.
    channels : int
        Scales, one per output channel (weights) or 1 (activations, per tensor).
    weight : bool
        A weight quantizer (narrow range, scale per channel along axis 0).
    """

    def __init__(self, bits: int, signed: bool, channels: int = 1, weight: bool = False) -> None:
        super().__init__()
        self.bits, self.signed, self.weight = bits, signed, weight
        self.bipolar = weight and bits == 1
        if signed:
            self.lo, self.hi = -(2 ** (bits - 1)) + int(weight), 2 ** (bits - 1) - 1
        else:
            self.lo, self.hi = 0, 2**bits - 1
        self.scale = nn.Parameter(torch.ones(channels))
        self.enabled, self.calibrating = False, False

    def view(self, s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Scales ``s`` broadcastable against ``x`` (per output channel, or a scalar)."""
        return s.view(-1, *[1] * (x.dim() - 1)) if self.weight else s.view(())

    def _magnitude(self, x: torch.Tensor) -> torch.Tensor:
        return x.abs().flatten(1) if self.weight else x.abs().reshape(1, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating and not self.bipolar:  # LSQ initialization; the maximum for 8 bits
            mag = self._magnitude(x)
            init = mag.amax(1) / self.hi if self.bits == 8 else 2 * mag.mean(1) / self.hi**0.5
            self.scale.data.copy_(init.clamp_min(1e-8))
        if not self.enabled:
            return x
        if self.bipolar:  # XNOR-Net: sign(x) · mean|x| per channel, STE through the sign
            s = self._magnitude(x).mean(1)
            self.scale.data.copy_(s.detach())
            return (x + (torch.where(x >= 0, 1.0, -1.0) - x).detach()) * self.view(s, x)
        g = 1.0 / (x[0].numel() * self.hi if self.weight else x.numel() * self.hi) ** 0.5
        s = self.view(grad_scaled(self.scale, g), x)
        return round_ste(torch.clamp(x / s, self.lo, self.hi)) * s

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes of ``x`` (a weight) as the forward pass rounds them."""
        if self.bipolar:
            return torch.where(x >= 0, 1.0, -1.0)
        return torch.round(torch.clamp(x / self.view(self.scale, x), self.lo, self.hi))


class QLayer(nn.Module):
    """A convolution followed by BatchNorm, or a linear layer with a bias, on quantized weights.

    :meth:`freeze` turns it into what the export holds: weight codes times positive per-channel
    scales (BatchNorm folded in) and a float bias on the accumulator's grid ``s_x · s_w``, which
    integer kernels then add exactly.
    """

    def __init__(self, layer: nn.Conv2d | nn.Linear, bits: int) -> None:
        super().__init__()
        self.layer = layer
        self.bn = nn.BatchNorm2d(layer.out_channels) if isinstance(layer, nn.Conv2d) else None
        self.wq = Quantizer(bits, True, layer.weight.shape[0], weight=True)
        self.frozen: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # codes, scales, bias
        self.s_in: float | None = None  # the scale of the codes it reads, once frozen

    def _op(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        if self.bn is None:
            return F.linear(x, w, b)
        return F.conv2d(x, w, b, self.layer.stride, self.layer.padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frozen is not None:
            codes, scale, bias = self.frozen
            return self._op(x, codes * self.wq.view(scale, codes), bias)
        y = self._op(x, self.wq(self.layer.weight), self.layer.bias)
        return y if self.bn is None else self.bn(y)

    @torch.no_grad()
    def freeze(self, s_in: float) -> None:
        """Fold BatchNorm (a channel whose multiplier is negative negates its codes) and round
        the bias to multiples of ``s_in`` times the channel's weight scale."""
        w = self.layer.weight
        if self.bn is None:
            k, bias = torch.ones(w.shape[0], dtype=torch.float64), self.layer.bias.double()
        else:
            bn = self.bn
            k = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
            bias = bn.bias.double() - bn.running_mean.double() * k
        codes = self.wq.codes(w).double() * self.wq.view(torch.sign(k), w)
        scale = (self.wq.scale.double() * k.abs()).float()
        unit = s_in * scale.double()
        self.s_in, self.frozen = s_in, (codes.float(), scale, (torch.round(bias / unit) * unit).float())


def conv(cin: int, cout: int, k: int, stride: int, bits: int) -> QLayer:
    """A bias-free ``k``×``k`` convolution with "same" padding, BatchNorm and ``bits``-bit weights."""
    return QLayer(nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, bias=False), bits)


class QBlock(nn.Module):
    """Basic block: low-bit convolutions on low-bit activations, an 8-bit residual add."""

    def __init__(self, cin: int, cout: int, stride: int, wbits: int, abits: int) -> None:
        super().__init__()
        self.conv1, self.act1 = conv(cin, cout, 3, stride, wbits), Quantizer(abits, False)
        self.conv2, self.q2 = conv(cout, cout, 3, 1, wbits), Quantizer(8, True)
        self.down = conv(cin, cout, 1, stride, wbits) if stride != 1 or cin != cout else None
        self.qd = Quantizer(8, True) if self.down is not None else None
        self.out = Quantizer(abits, False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.q2(self.conv2(self.act1(F.relu(self.conv1(x)))))
        identity = x if self.down is None else self.qd(self.down(x))
        return self.out(F.relu(y + identity))


class QResNet8(nn.Module):
    """torch_models.ResNet8's topology with fake quantizers: W-bit weights and A-bit activations
    in the blocks, 8 bits at the stem, the classifier and the residual adds."""

    def __init__(self, wbits: int, abits: int) -> None:
        super().__init__()
        self.inq = Quantizer(8, True)
        self.stem, self.stem_act = conv(1, 16, 3, 2, 8), Quantizer(abits, False)
        self.layers = nn.Sequential(QBlock(16, 16, 1, wbits, abits), QBlock(16, 32, 2, wbits, abits),
                                    QBlock(32, 64, 2, wbits, abits))
        self.poolq = Quantizer(8, False)
        self.fc = QLayer(nn.Linear(64, 10), 8)
        self.outq = Quantizer(8, True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem_act(F.relu(self.stem(self.inq(x)))))
        return self.outq(self.fc(self.poolq(x.mean((2, 3)))))

    def quantizers(self) -> list[Quantizer]:
        return [m for m in self.modules() if isinstance(m, Quantizer)]

    def freeze(self) -> None:
        """Freeze every layer (:meth:`QLayer.freeze`) with the scale of the codes it reads."""
        self.stem.freeze(self.inq.scale.item())
        x = self.stem_act
        for block in self.layers:
            block.conv1.freeze(x.scale.item())
            block.conv2.freeze(block.act1.scale.item())
            if block.down is not None:
                block.down.freeze(x.scale.item())
            x = block.out
        self.fc.freeze(self.poolq.scale.item())


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float) -> None:
    """AdamW with a one-cycle schedule and random horizontal flips; leaves ``model`` in eval mode."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    steps = epochs * ((len(x) + BATCH - 1) // BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(BATCH):
            flip = torch.rand(len(idx)) < 0.5
            xb = torch.where(flip[:, None, None, None], x[idx].flip(-1), x[idx])
            opt.zero_grad()
            F.cross_entropy(model(xb), y[idx]).backward()
            opt.step()
            sched.step()
    model.eval()


@torch.no_grad()
def predictions(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Predicted classes of ``model`` on ``x``."""
    return torch.cat([model(xb).argmax(1) for xb in x.split(1000)])


@torch.no_grad()
def quantize_from(model: QResNet8, fp32: nn.Module, calib: torch.Tensor) -> None:
    """Load ``fp32``'s weights into ``model``, initialize its scales on ``calib``, enable it."""
    model.load_state_dict(fp32.state_dict())
    model.eval()
    for q in model.quantizers():
        q.calibrating = q.enabled = True
    model(calib)
    for q in model.quantizers():
        q.calibrating = False


class Graph:
    """ONNX graph builder for one export format ("qonnx" or "qdq") of a trained QResNet8."""

    def __init__(self, fmt: str) -> None:
        self.fmt, self.nodes, self.inits, self.count = fmt, [], [], 0
        self.opset = 13 if fmt == "qonnx" else 21
        self.layer_names: dict[QLayer, str] = {}

    def name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}{self.count}"

    def const(self, value: np.ndarray, dtype=np.float32) -> str:
        name = self.name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def codes(self, value: np.ndarray, signed: bool, bits: int) -> str:
        """An integer initializer: int4/uint4 (packed two a byte) up to 4 bits, else int8/uint8."""
        name = self.name("q")
        dtype = {(True, True): ml_dtypes.int4, (False, True): ml_dtypes.uint4,
                 (True, False): np.int8, (False, False): np.uint8}[signed, bits <= 4]
        self.inits.append(numpy_helper.from_array(np.asarray(value).astype(np.int64).astype(dtype), name))
        return name

    def node(self, op: str, inputs: list[str], name: str | None = None, **attrs) -> str:
        out = name or self.name(op.lower())
        domain = QONNX_DOMAIN if op in ("Quant", "BipolarQuant") else ""
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, domain=domain, **attrs))
        return out

    def quant(self, x: str, scale, bits: int, signed: bool, narrow: bool) -> str:
        """A QONNX ``Quant`` node (zero point 0, rounding half to even)."""
        return self.node("Quant", [x, self.const(scale), self.const(0.0), self.const(float(bits))],
                         signed=int(signed), narrow=int(narrow), rounding_mode="ROUND")

    def act(self, x: str, q: Quantizer, relu: bool = False) -> str:
        """``[Relu →]`` activation quantizer ``q`` of ``x``: a QONNX Quant, or [Clip →] Q → DQ."""
        s = q.scale.item()
        if self.fmt == "qonnx":
            return self.quant(self.node("Relu", [x]) if relu else x, s, q.bits, q.signed, False)
        # 4-bit codes in uint4/int4; narrower ones in 8 bits behind a Clip (ONNX Runtime 1.32's
        # ClipQuantFusion fails on a Clip before a 4-bit QuantizeLinear)
        container = 4 if q.bits == 4 else 8
        c_lo = -(2 ** (container - 1)) if q.signed else 0
        c_hi = 2 ** (container - 1) - 1 if q.signed else 2**container - 1
        if (q.lo, q.hi) != (c_lo, c_hi):  # a Clip to the code range (the Relu's lower bound too)
            x = self.node("Clip", [x, self.const(q.lo * s), self.const(q.hi * s)])
        elif relu:
            x = self.node("Relu", [x])
        zero = self.codes(0, q.signed, container)
        quantized = self.node("QuantizeLinear", [x, self.const(s), zero])
        return self.node("DequantizeLinear", [quantized, self.const(s), zero])

    def weight(self, layer: QLayer) -> tuple[str, str]:
        """The dequantized weight of a frozen ``layer`` (per channel along axis 0) and its bias:
        in QONNX a 32-bit ``Quant`` on the accumulator's scale, as Brevitas' Int32Bias exports it."""
        codes, scale, bias = (t.double().numpy() for t in layer.frozen)
        q = layer.wq
        if self.fmt == "qdq":
            w = self.node("DequantizeLinear", [self.codes(codes, True, q.bits), self.const(scale)], axis=0)
            return w, self.const(bias)
        shaped = scale.astype(np.float32).reshape(-1, *[1] * (codes.ndim - 1))
        w = self.const(codes.astype(np.float32) * shaped)  # what the torch forward multiplies
        w = (self.node("BipolarQuant", [w, self.const(shaped)]) if q.bipolar
             else self.quant(w, shaped, q.bits, True, True))
        return w, self.quant(self.const(bias), layer.s_in * scale, 32, True, False)

    def conv(self, x: str, layer: QLayer) -> str:
        """The Conv node of a frozen ``layer`` reading ``x``."""
        c = layer.layer
        k = c.kernel_size[0]
        return self.node("Conv", [x, *self.weight(layer)], self.layer_names[layer], kernel_shape=[k, k],
                         strides=list(c.stride), pads=[c.padding[0]] * 4)

    def model(self, model: QResNet8) -> onnx.ModelProto:
        """The frozen ``model`` as ONNX; layers are named after their torch modules."""
        self.layer_names = {m: n for n, m in model.named_modules() if isinstance(m, QLayer)}
        x = self.act("input", model.inq)
        x = self.act(self.conv(x, model.stem), model.stem_act, relu=True)
        for block in model.layers:
            y = self.act(self.conv(x, block.conv1), block.act1, relu=True)
            y = self.act(self.conv(y, block.conv2), block.q2)
            identity = x if block.down is None else self.act(self.conv(x, block.down), block.qd)
            x = self.act(self.node("Add", [y, identity]), block.out, relu=True)
        axes = {"axes": [2, 3]} if self.opset < 18 else {}
        inputs = [x] if self.opset < 18 else [x, self.const(np.array([2, 3]), np.int64)]
        x = self.act(self.node("ReduceMean", inputs, keepdims=0, **axes), model.poolq)
        self.act(self.node("Gemm", [x, *self.weight(model.fc)], "fc", transB=1), model.outq)
        self.nodes[-1].output[0] = "output"
        graph = helper.make_graph(self.nodes, f"fmnist_resnet8_{self.fmt}",
                                  [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
                                  [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])],
                                  self.inits)
        opsets = [helper.make_opsetid("", self.opset)]
        if self.fmt == "qonnx":
            opsets.append(helper.make_opsetid(QONNX_DOMAIN, 1))
        return helper.make_model(graph, opset_imports=opsets, ir_version=10 if self.opset >= 21 else 8,
                                 producer_name="squeeze train_lowbit")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", metavar="CONFIG", help=f"of {', '.join(CONFIGS)} (default: all)")
    args = parser.parse_args()
    if set(args.configs) - set(CONFIGS):
        parser.error(f"unknown configurations {sorted(set(args.configs) - set(CONFIGS))}: use {', '.join(CONFIGS)}")
    torch.manual_seed(0)
    torch.set_num_threads(1)
    train_u8, train_y = fashion_mnist_raw("train")
    test_u8, test_y = fashion_mnist_raw("test")
    x, y = torch.from_numpy(normalize(train_u8)), torch.from_numpy(train_y)
    test_x, test_y = torch.from_numpy(normalize(test_u8)), torch.from_numpy(test_y)
    start = time.perf_counter()
    fp32 = QResNet8(8, 8)
    train(fp32, x, y, FP32_EPOCHS, LR)
    acc = (predictions(fp32, test_x) == test_y).float().mean().item()
    print(f"FP32 ResNet-8: test accuracy {acc:.4f} after {FP32_EPOCHS} epochs ({time.perf_counter() - start:.0f} s)",
          flush=True)
    record_path = DATA / "fmnist_resnet8_lowbit.json"
    records = json.loads(record_path.read_text()) if record_path.is_file() else {}
    for cfg in args.configs or CONFIGS:
        torch.manual_seed(1)
        start = time.perf_counter()
        model = QResNet8(*CONFIGS[cfg])
        quantize_from(model, fp32, x[:512])
        train(model, x, y, QAT_EPOCHS, LR / 2)
        trained = (predictions(model, test_x) == test_y).float().mean().item()
        model.freeze()
        correct = predictions(model, test_x) == test_y
        records[cfg] = {"torch_fake_quant_accuracy": round(correct.float().mean().item(), 4),
                        "torch_fake_quant_accuracy_first_1000": round(correct[:TEST_SLICE].float().mean().item(), 4),
                        "before_folding_accuracy": round(trained, 4), "fp32_start_accuracy": round(acc, 4),
                        "fp32_epochs": FP32_EPOCHS, "qat_epochs": QAT_EPOCHS,
                        "train_seconds": round(time.perf_counter() - start)}
        print(f"{cfg}: fake-quant test accuracy {records[cfg]['torch_fake_quant_accuracy']:.4f} "
              f"({trained:.4f} before folding BN; {records[cfg]['train_seconds']} s)", flush=True)
        for fmt in ("qonnx", "qdq"):
            proto = Graph(fmt).model(model)
            onnx.checker.check_model(proto)
            path = DATA / f"fmnist_resnet8_{cfg}.{fmt}.onnx"
            onnx.save(proto, path)
            print(f"  wrote {path.name} ({path.stat().st_size / 1e3:.0f} kB)")
        record_path.write_text(json.dumps(records, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()

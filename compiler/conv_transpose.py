"""Rewrite ONNX ConvTranspose as one Conv and a pixel shuffle (phase decomposition).

A transposed convolution of stride ``s`` computes ``s`` interleaved phases, and each phase is an
ordinary stride-1 convolution of the input with the taps of the kernel that land on it (flipped).
All phases together are one Conv with ``s_h·s_w`` times the output channels; a Reshape and a
Transpose interleave them (depth-to-space) and a Slice crops the padding. The FP32 and integer
convolution kernels, their tuning, quantization and layer names then apply to ConvTranspose as
they are, with no zeros multiplied (a stride-2 kernel-2 head becomes a 1×1 Conv). TVM's own
``conv2d_transpose`` has no NHWC or integer lowering, hence this rewrite.

For one spatial axis (kernel ``k``, stride ``s``, dilation ``d``, input length ``L``) output
position ``y' = i·s + j·d`` of the unpadded result takes input ``i`` and tap ``j``. Phase
``r = y' mod s`` holds the taps with ``j·d ≡ r (mod s)``, at input offsets ``m = (j·d − r) / s``;
with ``M`` the largest offset of any phase, phase ``r`` is a convolution with kernel length
``M + 1`` (tap ``j`` at ``M − m``), left padding ``M``, and as much right padding as the output needs.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import SqueezeError
from .fold_shapes import Names, constants, drop_unused


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _bad(node: onnx.NodeProto, what: str) -> SqueezeError:
    return SqueezeError(f"ConvTranspose '{node.name or node.output[0]}': {what}: fix the exporter's attributes")


def _axis_pads(node, attrs, lengths, kernel, strides, dilations, out_pads) -> list[tuple[int, int]]:
    """``(begin, end)`` padding per spatial axis, from ``pads``, ``output_shape`` or ``auto_pad``."""
    rank = len(lengths)
    full = [(L - 1) * s + (k - 1) * d + 1 + op for L, k, s, d, op in zip(lengths, kernel, strides, dilations, out_pads)]
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if "output_shape" in attrs or auto in ("SAME_UPPER", "SAME_LOWER"):
        target = list(attrs.get("output_shape", [L * s for L, s in zip(lengths, strides)]))[-rank:]
        if len(target) != rank:
            raise _bad(node, f"output_shape {target} has not {rank} spatial dims")
        totals = [f - t for f, t in zip(full, target)]
        if any(t < 0 for t in totals):
            raise _bad(node, f"output_shape {target} is larger than the full output {full}")
        lower = auto != "SAME_UPPER"  # the spec: only SAME_UPPER puts the smaller half first
        return [((t - t // 2) if lower else t // 2, (t // 2) if lower else t - t // 2) for t in totals]
    pads = list(attrs.get("pads", [0] * 2 * rank))
    if len(pads) != 2 * rank or any(p < 0 for p in pads):
        raise _bad(node, f"pads {pads} must be {2 * rank} non-negative numbers")
    if any(b + e >= f for b, e, f in zip(pads[:rank], pads[rank:], full)):
        raise _bad(node, f"pads {pads} leave no output")
    return list(zip(pads[:rank], pads[rank:]))


def _phase_taps(k: int, s: int, d: int) -> tuple[int, list[list[tuple[int, int]]]]:
    """The largest offset ``M`` and, per phase, ``[(tap, position in the phase kernel)]``."""
    offsets = [(j, (j * d) % s, (j * d) // s) for j in range(k)]
    top = max(m for _, _, m in offsets)
    return top, [[(j, top - m) for j, r, m in offsets if r == phase] for phase in range(s)]


def _phase_weight(w: np.ndarray, groups: int, strides, taps) -> np.ndarray:
    """The Conv weight ``[g·P·Og, C/g, T...]`` holding every phase's flipped taps."""
    cin, og = w.shape[:2]
    cg = cin // groups
    phases = list(np.ndindex(*strides))
    sizes = [m + 1 for m, _ in taps]
    out = np.zeros((groups, len(phases), og, cg, *sizes), w.dtype)
    wg = w.reshape(groups, cg, og, *w.shape[2:])
    for p, phase in enumerate(phases):
        for combo in np.ndindex(*[len(t[1][r]) for t, r in zip(taps, phase)]):
            src = tuple(t[1][r][c][0] for t, r, c in zip(taps, phase, combo))
            dst = tuple(t[1][r][c][1] for t, r, c in zip(taps, phase, combo))
            out[(slice(None), p, slice(None), slice(None), *dst)] = np.swapaxes(wg[(slice(None), slice(None), slice(None), *src)], 1, 2)
    return out.reshape(groups * len(phases) * og, cg, *sizes)


def _rewrite(node: onnx.NodeProto, weight: np.ndarray, bias: np.ndarray | None,
             in_shape: Sequence[int], names: Names) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    attrs = _attrs(node)
    rank = weight.ndim - 2
    lengths = list(in_shape[2:])
    groups = int(attrs.get("group", 1))
    kernel = list(attrs.get("kernel_shape", weight.shape[2:]))
    strides = list(attrs.get("strides", [1] * rank))
    dilations = list(attrs.get("dilations", [1] * rank))
    out_pads = list(attrs.get("output_padding", [0] * rank))
    if rank not in (1, 2) or len(in_shape) != rank + 2:
        raise _bad(node, f"a {rank}-D kernel on a {len(in_shape)}-D input is not supported (1-D and 2-D are)")
    if any(len(v) != rank for v in (kernel, strides, dilations, out_pads)) or list(weight.shape[2:]) != kernel:
        raise _bad(node, f"kernel_shape/strides/dilations/output_padding must have {rank} values matching the weight")
    if groups < 1 or in_shape[1] != weight.shape[0] or weight.shape[0] % groups:
        raise _bad(node, f"weight {list(weight.shape)} and group={groups} do not fit {in_shape[1]} input channels")
    if any(v < 1 for v in (*strides, *dilations)) or any(not 0 <= op < max(s, d) for op, s, d in zip(out_pads, strides, dilations)):
        raise _bad(node, f"strides {strides}, dilations {dilations} or output_padding {out_pads} out of range")
    pads = _axis_pads(node, attrs, lengths, kernel, strides, dilations, out_pads)
    outs = [(L - 1) * s + (k - 1) * d + 1 + op - b - e
            for L, k, s, d, op, (b, e) in zip(lengths, kernel, strides, dilations, out_pads, pads)]
    taps = [_phase_taps(k, s, d) for k, s, d in zip(kernel, strides, dilations)]
    phases_len = [math.ceil((b + o) / s) for (b, _), o, s in zip(pads, outs, strides)]
    conv_len = [max(q, L) for q, L in zip(phases_len, lengths)]
    og, batch, period = weight.shape[1], in_shape[0], int(np.prod(strides))
    w = _phase_weight(weight, groups, strides, taps)
    inits = [numpy_helper.from_array(w, names.new("weight"))]
    conv_in = [node.input[0], inits[0].name]
    if bias is not None:
        inits.append(numpy_helper.from_array(np.tile(bias.reshape(groups, 1, og), (1, period, 1)).reshape(-1), names.new("bias")))
        conv_in.append(inits[-1].name)
    conv_pads = [m for m, _ in taps] + [c - L for c, L in zip(conv_len, lengths)]
    last = names.new("phases")
    nodes = [helper.make_node("Conv", conv_in, [last], name=node.name, group=groups,
                              kernel_shape=[m + 1 for m, _ in taps], pads=conv_pads)]
    if period > 1:
        shuffle_in = names.const([batch, groups, *strides, og, *conv_len], inits)
        perm = [0, 1, 2 + rank] + [a for i in range(rank) for a in (3 + rank + i, 2 + i)]
        shuffle_out = names.const([batch, groups * og, *[c * s for c, s in zip(conv_len, strides)]], inits)
        grouped, interleaved, last = names.new("grouped"), names.new("interleaved"), names.new("shuffled")
        nodes += [helper.make_node("Reshape", [nodes[-1].output[0], shuffle_in], [grouped]),
                  helper.make_node("Transpose", [grouped], [interleaved], perm=perm),
                  helper.make_node("Reshape", [interleaved, shuffle_out], [last])]
    crop = [(b, b + o) for (b, _), o in zip(pads, outs)]
    if any(b or e != c * s for (b, e), c, s in zip(crop, conv_len, strides)):
        starts = names.const([b for b, _ in crop], inits)
        ends = names.const([e for _, e in crop], inits)
        axes = names.const(list(range(2, 2 + rank)), inits)
        cropped = names.new("cropped")
        nodes.append(helper.make_node("Slice", [last, starts, ends, axes], [cropped]))
        last = cropped
    nodes.append(helper.make_node("Identity", [last], [node.output[0]]))
    return nodes, inits


def decompose_conv_transpose(proto: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]]) -> onnx.ModelProto:
    """Rewrite every ConvTranspose with a constant weight and a known input shape into a Conv.

    Parameters
    ----------
    proto : onnx.ModelProto
        The model, changed in place and returned.
    shapes : dict
        Static tensor shapes by name (from ONNX shape inference).

    Raises
    ------
    SqueezeError
        A malformed ConvTranspose attribute, naming the node.
    """
    graph = proto.graph
    weights = constants(graph)
    nodes = []
    for node in graph.node:
        inputs = list(node.input) + [""] * (3 - len(node.input))
        if node.op_type != "ConvTranspose" or inputs[1] not in weights or node.input[0] not in shapes \
                or (inputs[2] and inputs[2] not in weights):
            nodes.append(node)
            continue
        weight, bias = weights[inputs[1]], weights[inputs[2]] if inputs[2] else None
        new_nodes, inits = _rewrite(node, weight, bias, shapes[node.input[0]], Names(node.name or node.output[0]))
        nodes += new_nodes
        graph.initializer.extend(inits)
    graph.ClearField("node")
    graph.node.extend(nodes)
    drop_unused(graph)
    return proto

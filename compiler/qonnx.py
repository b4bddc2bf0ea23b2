"""Low-bit quantizers of other tools as standard ONNX Q/DQ in 8-bit containers.

Brevitas and FINN export QONNX: ``Quant`` (``IntQuant``) and ``BipolarQuant`` nodes of the
``qonnx.custom_op.general`` domain (also ``finn.custom_op.general``, ``onnx.brevitas``); ONNX
opset 21 has int4/uint4 QuantizeLinear/DequantizeLinear. Before import both become what
:mod:`passes.quantize.qdq_to_integer` realizes into the integer IR:

- a quantizer of a constant (a weight) folds: its integer codes, zero point subtracted, become an
  int8 initializer read by a DequantizeLinear with the scale (per channel along the one axis the
  scale varies on), so a 4-bit weight is an int8 tensor whose codes lie in [-8, 7]; a constant
  quantized to more than 8 (up to 32) bits, a bias, folds into the float values it stands for;
- an activation quantizer of ``b`` ≤ 8 bits becomes QuantizeLinear → DequantizeLinear to the
  int8 (signed) or uint8 container, after a Clip to its code range when that is narrower than
  the container's (a Relu right before it merges into the Clip, which the integer layer fuses).

``y = (clip(round(x / s + z), q_min, q_max) - z) · s`` is what QONNX computes; clipping the float
to ``[(q_min - z) s, (q_max - z) s]`` first and rounding half to even (QuantizeLinear) after gives
the same codes. ``Trunc`` (FINN's and Brevitas' truncation of an integer sum's low bits, v1 and
v2) becomes the standard ONNX ops of its definition; they run as float ops, exactly. ``FloatQuant``
and attributes with no such form are refused with one line naming the node.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .errors import SqueezeError
from .fold_shapes import Names, constants, drop_unused

QONNX_DOMAINS = ("qonnx.custom_op.general", "finn.custom_op.general", "onnx.brevitas")
_ROUNDING = {
    "ROUND": np.round,  # half to even
    "CEIL": np.ceil,
    "FLOOR": np.floor,
    "UP": lambda v: np.sign(v) * np.ceil(np.abs(v)),
    "DOWN": np.trunc,
    "HALF_UP": lambda v: np.sign(v) * np.floor(np.abs(v) + 0.5),
    "HALF_DOWN": lambda v: np.sign(v) * np.ceil(np.abs(v) - 0.5),
}
_SUB_BYTE = frozenset({TensorProto.INT4, TensorProto.UINT4})
_CONTAINER = {True: ("int8", TensorProto.INT8, -128, 127), False: ("uint8", TensorProto.UINT8, 0, 255)}


def has_low_bit_quantizers(proto: onnx.ModelProto) -> bool:
    """Whether ``proto`` holds QONNX quantizers or int4/uint4 tensors."""
    return (any(n.domain in QONNX_DOMAINS for n in proto.graph.node)
            or any(t.data_type in _SUB_BYTE for t in proto.graph.initializer))


def lower_quantizers(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``proto`` with QONNX quantizers and int4/uint4 Q/DQ as 8-bit-container Q/DQ."""
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    values = constants(graph)
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.domain in QONNX_DOMAINS:
            nodes.extend(_lower_qonnx(node, values, graph, nodes, consumers))
        elif node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            nodes.extend(_widen_sub_byte(node, values, graph, nodes, consumers))
        else:
            nodes.append(node)
    graph.ClearField("node")
    graph.node.extend(nodes)
    drop_unused(graph)
    opsets = [o for o in model.opset_import if o.domain not in QONNX_DOMAINS]
    if not any(o.domain in ("", "ai.onnx") and o.version >= 13 for o in opsets):  # per-channel DequantizeLinear
        opsets = [o for o in opsets if o.domain not in ("", "ai.onnx")] + [helper.make_opsetid("", 13)]
    model.ClearField("opset_import")
    model.opset_import.extend(opsets)
    return model


def _name(node: onnx.NodeProto) -> str:
    return node.name or node.output[0]


def _bad(node: onnx.NodeProto, what: str, fix: str) -> SqueezeError:
    return SqueezeError(f"{node.op_type} '{_name(node)}': {what}: {fix}")


def _const(node: onnx.NodeProto, values: dict, index: int, what: str) -> np.ndarray:
    if index >= len(node.input) or node.input[index] not in values:
        raise _bad(node, f"its {what} is computed at run time", "export it as a constant")
    return np.asarray(values[node.input[index]], np.float64)


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _code_range(bits: int, signed: bool, narrow: bool) -> tuple[int, int]:
    if signed:
        return -(2 ** (bits - 1)) + int(narrow), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1 - int(narrow)


def _lower_qonnx(node, values, graph, emitted, consumers) -> list[onnx.NodeProto]:
    """The Q/DQ form of a QONNX ``Quant``/``IntQuant`` or ``BipolarQuant`` node."""
    if node.op_type == "BipolarQuant":
        if node.input[0] not in values:
            raise _bad(node, "binary activations are not supported yet", "only binary weights import")
        codes = np.where(np.asarray(values[node.input[0]]) >= 0, 1, -1)
        return _dequantized(node, codes, _const(node, values, 1, "scale"), graph)
    if node.op_type == "Trunc":
        return _trunc(node, values, graph)
    if node.op_type not in ("Quant", "IntQuant"):
        raise _bad(node, "this QONNX op is not supported", "export Quant/IntQuant, BipolarQuant and Trunc nodes only")
    attrs = _quantizer_attrs(node)
    mode = _rounding_mode(node, "ROUND", _ROUNDING)
    scale, zero = _const(node, values, 1, "scale"), _const(node, values, 2, "zero point")
    bits, constant = _const(node, values, 3, "bit width"), node.input[0] in values
    most = 32 if constant else 8  # a constant of more than 8 bits is a bias (Brevitas' Int32Bias)
    if bits.size != 1 or bits.item() != int(bits.item()) or not 1 <= bits.item() <= most:
        raise _bad(node, f"bit width {bits.ravel().tolist()} is not an integer from 1 to {most}",
                   f"quantize {'biases to 32' if constant else 'activations to 8'} bits or fewer")
    if np.any(zero != np.round(zero)):
        raise _bad(node, "its zero point is not an integer", "export integer zero points")
    signed, narrow = bool(attrs.get("signed", 1)), bool(attrs.get("narrow", 0))
    lo, hi = _code_range(int(bits.item()), signed, narrow)
    if lo >= hi:
        raise _bad(node, f"signed={int(signed)} narrow={int(narrow)} leaves {int(bits.item())}-bit codes one value",
                   "use narrow=0 (or BipolarQuant for ±1 weights)")
    if constant:
        x = np.asarray(values[node.input[0]], np.float64)
        codes = np.clip(_ROUNDING[mode](x / scale + zero), lo, hi) - zero
        if bits.item() <= 8:  # a weight
            return _dequantized(node, codes, scale, graph)
        graph.initializer.append(numpy_helper.from_array((codes * scale).astype(np.float32), node.output[0]))
        return []
    if scale.size != 1 or zero.size != 1:
        raise _bad(node, "per-channel activation quantization is not supported", "quantize activations per tensor")
    if mode != "ROUND":
        raise _bad(node, f"rounding_mode {mode} on activations is not supported", "use ROUND (half to even)")
    names = Names(node.output[0])
    q = names.new("q")
    nodes, s, z = _quantize(node, q, float(scale.item()), int(zero.item()), lo, hi, graph, emitted, consumers)
    return nodes + [helper.make_node("DequantizeLinear", [q, s, z], [node.output[0]], name=_name(node))]


def _quantizer_attrs(node: onnx.NodeProto) -> dict:
    """The attributes of a ``Quant`` or ``Trunc`` node; any other is refused."""
    attrs = _attrs(node)
    unknown = set(attrs) - {"signed", "narrow", "rounding_mode"}
    if unknown:
        raise _bad(node, f"unsupported attribute {', '.join(sorted(unknown))}", "export without it")
    return attrs


def _rounding_mode(node: onnx.NodeProto, default: str, modes) -> str:
    mode = _attrs(node).get("rounding_mode", default.encode())
    mode = (mode.decode() if isinstance(mode, bytes) else str(mode)).upper()
    if mode not in modes:
        raise _bad(node, f"rounding_mode {mode} is unknown", f"use one of {', '.join(modes)}")
    return mode


_TRUNC_ROUNDING = {"ROUND": "Round", "CEIL": "Ceil", "FLOOR": "Floor"}


def _trunc(node: onnx.NodeProto, values: dict, graph) -> list[onnx.NodeProto]:
    """QONNX ``Trunc`` as standard ONNX ops, as its specification computes it.

    v1 (5 inputs: x, scale, zero point, input and output bit widths):
    ``y = (R(round(x / s + z) / 2^(bi - bo)) - z) · s``; v2 (6 inputs: x, scale, zero point,
    input bit width, output scale, output bit width; ``signed`` and ``narrow`` attributes):
    ``t = 2^round(log2(s_out / s))``, ``y = (R(clip(round(x / s + z) / t)) - z / t) · s_out`` with
    the clip to the output bits' code range. ``R`` is the ``rounding_mode`` (default FLOOR).
    """
    if len(node.input) not in (5, 6):
        raise _bad(node, f"it has {len(node.input)} inputs", "export Trunc v1 (5 inputs) or v2 (6 inputs)")
    attrs = _quantizer_attrs(node)
    mode = _rounding_mode(node, "FLOOR", _TRUNC_ROUNDING)
    scale, zero = _const(node, values, 1, "scale"), _const(node, values, 2, "zero point")
    bits = [_const(node, values, i, "bit width") for i in ((3, 4) if len(node.input) == 5 else (3, 5))]
    if any(b.size != 1 or b.item() != int(b.item()) or b.item() < 1 for b in bits):
        raise _bad(node, "its bit widths are not positive integers", "export integer bit widths")
    names = Names(node.output[0])

    def const(name: str, value) -> str:
        graph.initializer.append(numpy_helper.from_array(np.asarray(value, np.float32), names.new(name)))
        return graph.initializer[-1].name

    def op(op_type: str, *inputs: str, out: str | None = None) -> str:
        out = out or names.new(op_type.lower())
        nodes.append(helper.make_node(op_type, list(inputs), [out], name=f"{_name(node)}_{op_type.lower()}"))
        return out

    nodes: list[onnx.NodeProto] = []
    y = op("Round", op("Add", op("Div", node.input[0], const("scale", scale)), const("zero", zero)))
    if len(node.input) == 5:
        step, out_zero, out_scale = 2.0 ** (bits[0].item() - bits[1].item()), zero, scale
        y = op(_TRUNC_ROUNDING[mode], op("Div", y, const("step", step)))
    else:
        out_scale = _const(node, values, 4, "output scale")
        step = 2.0 ** np.round(np.log2(out_scale / scale))
        lo, hi = _code_range(int(bits[1].item()), bool(attrs.get("signed", 1)), bool(attrs.get("narrow", 0)))
        y = op("Clip", op("Div", y, const("step", step)), const("lo", lo), const("hi", hi))
        y, out_zero = op(_TRUNC_ROUNDING[mode], y), zero / step
    op("Mul", op("Sub", y, const("out_zero", out_zero)), const("out_scale", out_scale), out=node.output[0])
    return nodes


def _dequantized(node: onnx.NodeProto, codes: np.ndarray, scale: np.ndarray, graph) -> list[onnx.NodeProto]:
    """``node.output[0]`` as a DequantizeLinear of symmetric int8 ``codes`` (a folded weight
    quantizer) with ``scale`` (a scalar, or varying along one axis of ``codes``)."""
    if codes.min() < -128 or codes.max() > 127:
        raise _bad(node, "its weight codes minus the zero point do not fit 8 signed bits",
                   "quantize weights to 8 bits or fewer, zero point in the middle")
    scale = np.asarray(scale)
    varying = [a for a, n in enumerate(scale.shape) if n > 1]
    if len(varying) > 1 or (varying and scale.ndim != codes.ndim):
        raise _bad(node, f"its scale of shape {list(scale.shape)} does not vary along one axis of the weight",
                   "quantize weights per tensor or per channel")
    names = Names(node.output[0])
    q, s = names.new("codes"), names.new("scale")
    graph.initializer.append(numpy_helper.from_array(codes.astype(np.int8), q))
    graph.initializer.append(numpy_helper.from_array(scale.reshape(-1 if varying else ()).astype(np.float32), s))
    axis = {"axis": varying[0]} if varying else {}
    return [helper.make_node("DequantizeLinear", [q, s], [node.output[0]], name=_name(node), **axis)]


def _quantize(node, q: str, scale: float, zero: int, lo: int, hi: int, graph, emitted, consumers
              ) -> tuple[list[onnx.NodeProto], str, str]:
    """``[Clip →] QuantizeLinear`` of ``node.input[0]`` into ``q`` (an int8/uint8 container),
    clipped to codes ``[lo, hi]``; returns the nodes and the scale and zero point names."""
    dtype, proto_type, c_lo, c_hi = _CONTAINER[lo < 0]
    if not c_lo <= zero <= c_hi:
        raise _bad(node, f"zero point {zero} does not fit {dtype}", "export a zero point in the code range")
    names, x, nodes = Names(node.output[0]), node.input[0], []
    if (lo, hi) != (c_lo, c_hi):
        f_lo, f_hi = (lo - zero) * scale, (hi - zero) * scale
        relu = emitted[-1] if emitted and emitted[-1].op_type == "Relu" and emitted[-1].output[0] == x else None
        if relu is not None and consumers.get(x) == 1:  # Relu → Clip: one clip, which the integer layer fuses
            emitted.pop()
            x, f_lo = relu.input[0], max(f_lo, 0.0)
        bounds = [names.new(k) for k in ("lo", "hi")]
        for name, v in zip(bounds, (f_lo, f_hi)):
            graph.initializer.append(numpy_helper.from_array(np.array(v, np.float32), name))
        clipped = names.new("clipped")
        nodes.append(helper.make_node("Clip", [x, *bounds], [clipped], name=f"{_name(node)}_clip"))
        x = clipped
    s, z = names.new("s"), names.new("z")
    graph.initializer.append(numpy_helper.from_array(np.array(scale, np.float32), s))
    graph.initializer.append(helper.make_tensor(z, proto_type, [], [zero]))
    nodes.append(helper.make_node("QuantizeLinear", [x, s, z], [q], name=f"{_name(node)}_quantize"))
    return nodes, s, z


def _widen_sub_byte(node, values, graph, emitted, consumers) -> list[onnx.NodeProto]:
    """An int4/uint4 QuantizeLinear or DequantizeLinear in an 8-bit container: the DQ of an int4
    weight reads int8 codes minus the zero point; an int4 activation quantizer clips to
    [-8, 7] (uint4: [0, 15]) and its DQ reads the zero point as int8/uint8."""
    inits = {t.name: t for t in graph.initializer}
    zero_init = inits.get(node.input[2]) if len(node.input) > 2 else None
    data_init = inits.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
    sub_byte = [t.data_type for t in (zero_init, data_init) if t is not None and t.data_type in _SUB_BYTE]
    attrs = _attrs(node)
    kind = sub_byte[0] if sub_byte else attrs.get("output_dtype")
    if kind not in _SUB_BYTE:
        return [node]
    if attrs.get("block_size", 0):
        raise _bad(node, "blocked quantization (block_size) is not supported", "quantize per tensor or per channel")
    zero = np.asarray(values[node.input[2]], np.int64) if zero_init is not None else np.zeros((), np.int64)
    scale = np.asarray(values[node.input[1]], np.float64)
    if data_init is not None:  # a weight
        codes = np.asarray(values[node.input[0]], np.int64)
        axis = attrs.get("axis", 1) % codes.ndim
        return _dequantized(node, codes - _along(zero, codes.ndim, axis), _along(scale, codes.ndim, axis), graph)
    if scale.size != 1 or zero.size != 1:
        raise _bad(node, "per-channel activation quantization is not supported", "quantize activations per tensor")
    signed = kind == TensorProto.INT4
    if node.op_type == "QuantizeLinear":
        lo, hi = (-8, 7) if signed else (0, 15)
        return _quantize(node, node.output[0], float(scale.item()), int(zero.item()), lo, hi, graph, emitted,
                         consumers)[0]
    z = Names(node.output[0]).new("z")
    graph.initializer.append(helper.make_tensor(z, _CONTAINER[signed][1], [], [int(zero.item())]))
    return [helper.make_node("DequantizeLinear", [node.input[0], node.input[1], z], node.output, name=_name(node))]


def _along(values: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """``values`` broadcastable along ``axis`` of an ``ndim``-dim tensor (a scalar stays one)."""
    if values.size == 1:
        return values.reshape(())
    shape = [1] * ndim
    shape[axis] = -1
    return values.reshape(shape)

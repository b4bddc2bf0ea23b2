"""``squeeze export --format onnx-qdq``: the model as Squeeze quantizes it, written as a standard
QDQ ONNX model (QuantizeLinear/DequantizeLinear pairs) that ONNX Runtime and TensorRT load.

The export does not compute a second quantization. It runs Squeeze's own steps (import, clean-ups,
calibration with the chosen observer, the ``realize`` walk with the same skip rules and target
layer kinds) and writes down what that walk decided: every tensor Squeeze holds in integers gets a
Q/DQ pair with Squeeze's scale and zero point; each integer conv/matmul reads its input through
DequantizeLinear, its weights as per-channel int8 initializers (Squeeze's codes, BatchNorm folded
as Squeeze folds it) with DequantizeLinear, and its bias as int32 codes with scale ``s_x · s_w``,
the way ONNX Runtime's ``quantize_static`` writes them; a fused ReLU/Clip stays after the layer
and the quantization follows it. With cross-layer equalization the rescaled weights are written, and
an equalized ReLU6 becomes Relu then Min with its per-channel cap. Layers Squeeze keeps float stay float. Relax values are tied to
ONNX tensors by the traced import of :mod:`passes.prune.onnxmap`.
"""
from __future__ import annotations

import argparse
import copy
import os
import tarfile
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from .cli_args import QUANT_ONLY, add_quantization_args, calibration_source, log as _log_line, quant_config
from .errors import SqueezeError

FORMATS = ("onnx-qdq",)
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger",
           "DynamicQuantizeLinear")
# ONNX nodes a conv/matmul chain may pass through before the tensor Squeeze quantizes.
_CHAIN_OPS = ("BatchNormalization", "Add", "Relu", "Clip")


def export_qdq(model, output: str | os.PathLike | None = None, quantize=None, *, target=None,
               input_shapes: Mapping[str, Sequence[int]] | None = None, calib: str | None = None,
               log: Callable[[str], None] | None = None):
    """Quantize ``model`` as :func:`compiler.compile` would and return it as a QDQ ONNX model.

    Parameters
    ----------
    model : path or onnx.ModelProto
        The float ONNX model, or a quantized artifact (.tar): then the model, calibration data,
        options, target and shapes it was compiled with, checked unchanged by SHA-256
        (:mod:`compiler.provenance`).
    output : path, optional
        Where to write the model (atomically: nothing is left behind on error).
    quantize : QuantConfig
        The same settings as ``compile(quantize=...)``; ``calibration`` is required.
    target : str or TargetSpec, optional
        Decides the default scheme and which layer kinds are quantized, as in ``compile``.
    input_shapes : dict, optional
        Static shapes for dynamic inputs.
    calib : path, optional
        An artifact's calibration data where it moved (or, for arrays given to ``compile``, an .npz
        of them).
    log : callable, optional
        Receives progress lines.

    Returns
    -------
    onnx.ModelProto
        The checked QDQ model; ``metadata_props`` record the scheme, the observer and, per model
        output, ``squeeze.output_step.NAME``: the quantization step Squeeze calibrated for it.
    """
    import onnx

    from .atomic import atomic_path, check_writable

    if output is not None:
        check_writable(output)
    if _is_artifact(model):
        if quantize is not None or target is not None or input_shapes:
            raise SqueezeError(f"{model} fixes its quantization, target and shapes: export it without options "
                               "(or export the ONNX model with yours)")
        model, quantize, input_shapes, target = _replayed(model, calib)
    plan = _plan(model, quantize, target, input_shapes, log)
    proto = _Writer(plan).write()
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:  # a bug here, not user input
        raise RuntimeError(f"the QDQ export failed ONNX's checker: {str(err).strip().splitlines()[0]}") from err
    if output is not None:
        with atomic_path(output) as tmp:
            onnx.save(proto, tmp)
    if log is not None:
        q = sum(r["mode"] != "float" for r in plan.walk.records)
        log(f"onnx-qdq: {q}/{len(plan.walk.records)} layers quantized ({plan.scheme.name}, {plan.observer})")
        for r in plan.walk.records:
            if r["mode"] == "float":
                log(f"  kept float: {plan.layer_name(r['index'])} ({r['reason']})")
    return proto


def _is_artifact(model) -> bool:
    return isinstance(model, (str, os.PathLike)) and os.path.isfile(model) and tarfile.is_tarfile(model)


def _replayed(path, calib: str | None):
    """What artifact ``path`` was quantized from and how (:func:`compiler.provenance.replay`)."""
    from .artifact import Artifact
    from .provenance import replay

    return replay(Artifact.read(path).manifest.summary.get("source"), str(path), calib)


class _Plan:
    """Squeeze's quantization decisions for one model, tied to its ONNX tensors."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def layer_name(self, index: int) -> str:
        return self.names[index] if index < len(self.names) else f"layer {index}"


def _plan(model, config, target, input_shapes, log) -> _Plan:
    from passes.prune import onnxmap
    from passes.quantize import layer_filter
    from passes.quantize.realize import realize_walk
    from passes.quantize.schemes import parse_scheme
    from targets import get_target

    from .calibration import calibrate_layerwise, calibrated_ranges, check_skip_names, refined_sites
    from .config import QuantConfig
    from .frontend import import_prepared, layer_calls, load_onnx, prepare_onnx
    from .ir import bindings, layer_names, user_inputs
    from .pipeline import PassSpec, Recipe, run_passes

    config = config if config is not None else QuantConfig()
    if config.calibration is None:
        raise SqueezeError("the onnx-qdq export needs calibration data: add --calib data.npz "
                           "(or QuantConfig(calibration=...))")
    spec = get_target(target)
    scheme = parse_scheme(config.scheme or spec.quant_scheme)
    if scheme.weights.bits not in (4, 8) or scheme.activations.bits != 8:
        raise SqueezeError(f"scheme {scheme.name} has no standard ONNX QDQ form: the onnx-qdq export writes "
                           "8-bit activations and 8- or 4-bit weights (e.g. --quantize int8 or int4)")
    proto = copy.deepcopy(load_onnx(model))
    present = sorted({n.op_type for n in proto.graph.node if n.op_type in QDQ_OPS})
    if present:
        raise SqueezeError(f"the model is quantized already (it holds {', '.join(present)}): export from its "
                           "float ONNX model")
    proto = (_at_opset(proto, 21, "int4 DequantizeLinear") if scheme.weights.bits == 4 else
             _at_opset(proto, 13, "per-channel DequantizeLinear"))
    _name_nodes(proto)
    prepared, inputs = prepare_onnx(proto, input_shapes)
    program = import_prepared(prepared, inputs)
    results = onnxmap.node_outputs(prepared, program)
    if not results:
        raise SqueezeError("cannot tie the imported model to its ONNX tensors (the traced import does not line up): "
                           "the onnx-qdq export does not support this model")
    pre = bindings(program.mod["main"])
    var_tensor: dict = {}
    for node in proto.graph.node:
        for tensor, where in zip(node.output, results.get(node.name, [])):
            if isinstance(where, int):
                var_tensor.setdefault(pre[where].var, tensor)
    program = run_passes(program, Recipe.cleanups())
    if config.equalize:  # rebinds the layers it rescales under the same vars: the ONNX ties hold
        before = [b.value for b in layer_calls(program.mod["main"])]
        program = run_passes(program, Recipe([PassSpec("equalize")]))
    func = program.mod["main"]
    for var, spec_in in zip(user_inputs(func), program.inputs):
        var_tensor[var] = spec_in.name
    check_skip_names(program.mod, config.skip)
    if config.smoothquant is not None:
        raise SqueezeError("the onnx-qdq export does not replay smoothquant (it adds ops the ONNX model lacks): "
                           "export without --smoothquant")
    weights = shifts = None
    if config.adaround or config.range_search or config.bias_correction == "auto":  # as the artifact's compile
        sites = refined_sites(func, scheme, config.skip, config.skip_ops, config.keep_first_last,
                              spec.integer_ops, config.layer_schemes)
        refined, means = calibrate_layerwise(program.mod, scheme, config.calibration, config.observer, log is not None,
                                             sites, config.adaround_iters if config.adaround else 0,
                                             config.range_search, config.bias_correction == "auto",
                                             **dict(config.observer_options))
        ranges, weights, shifts = refined.ranges, refined.weights, refined.shifts
    else:
        ranges, means = calibrated_ranges(program.mod, scheme, config.calibration, config.observer, log is not None,
                                          **dict(config.observer_options))
    names = layer_names(func)
    keep = layer_filter(config.skip, config.skip_ops, config.keep_first_last, func, frozenset(spec.integer_ops))
    _, walk = realize_walk(func, scheme, ranges, keep, means if config.bias_correction is True else None,
                           weights=weights, shifts=shifts)
    if config.equalize:
        _check_equalized_float(walk.records, before, [b.value for b in layer_calls(func)], names)
    outputs = [o.name for o in proto.graph.output]
    body = func.body.body
    out_vars = list(body.fields) if hasattr(body, "fields") else [body]
    output_steps = {name: float(scheme.activations.qparams(*ranges[v])[0])
                    for name, v in zip(outputs, out_vars) if v in ranges}
    return _Plan(proto=proto, func=func, walk=walk, scheme=scheme, observer=config.observer, names=names,
                 var_tensor=var_tensor, layers=[b.var for b in layer_calls(func)], output_steps=output_steps)


def _check_equalized_float(records: list, before: list, after: list, names: list) -> None:
    """Equalization may rescale layers Squeeze keeps float, whose weights the export does not rewrite:
    one line naming the first such layer. ``before``/``after``: the layer calls, in the records' order."""
    for r in records:
        if r["mode"] == "float" and not before[r["index"]].args[1].same_as(after[r["index"]].args[1]):
            name = names[r["index"]] if r["index"] < len(names) else f"layer {r['index']}"
            raise SqueezeError(f"--equalize rescaled {name}, which stays float ({r['reason']}): the onnx-qdq export "
                               "cannot write it; export without --equalize, or without keeping that layer float")


def _at_opset(proto, opset: int, why: str):
    """``proto`` converted up to ``opset`` when older (``why``: what needs it, for the error)."""
    from onnx import version_converter

    current = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)
    if current >= opset:
        return proto
    try:
        return version_converter.convert_version(proto, opset)
    except Exception as err:  # the converter raises several types
        raise SqueezeError(f"cannot convert the model from opset {current} to {opset} (needed for {why}): "
                           f"{str(err).strip().splitlines()[0]}: re-export it with opset >= {opset}") from None


def _name_nodes(proto) -> None:
    """Give every node a unique name (the import and the traced import then agree on them)."""
    seen: set[str] = set()
    for i, node in enumerate(proto.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        while name in seen:
            name = f"{name}_{i}"
        node.name = name
        seen.add(name)


class _Writer:
    """Rewrites the plan's ONNX graph into its QDQ form."""

    def __init__(self, plan: _Plan):
        import onnx

        self.plan, self.onnx = plan, onnx
        self.graph = plan.proto.graph
        self.walk = plan.walk
        self.used = {t for n in self.graph.node for t in (*n.input, *n.output)} | \
            {t.name for t in self.graph.initializer} | {v.name for v in (*self.graph.input, *self.graph.output)}
        self.inits: dict[str, object] = {}
        self.before: dict[str, list] = {}    # node name -> nodes emitted before it
        self.after: dict[str, list] = {}     # node name -> nodes emitted after it
        self.head: list = []                 # nodes before the first node (inputs' Q/DQ)
        self.removed: set[str] = set()
        view_ids = {id(q) for q in self.walk.views.values()}
        self.int_vars = {v: q for v, q in self.walk.quant.items() if id(q) not in view_ids}
        self.binding = {b.var: b.value for blk in plan.func.body.blocks for b in blk.bindings}
        self.tensor_var = {t: v for v, t in plan.var_tensor.items()}

    # ---- helpers -----------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        name, i = base, 1
        while name in self.used:
            name, i = f"{base}_{i}", i + 1
        self.used.add(name)
        return name

    def const(self, base: str, array: np.ndarray) -> str:
        name = self.fresh(base)
        self.inits[name] = self.onnx.numpy_helper.from_array(np.asarray(array), name)
        return name

    def codes(self, base: str, codes: np.ndarray) -> str:
        """An initializer of weight codes: int8, or packed int4 (opset 21) under a 4-bit scheme."""
        if self.plan.scheme.weights.bits == 8:
            return self.const(base, codes)
        name = self.fresh(base)
        self.inits[name] = self.onnx.helper.make_tensor(name, self.onnx.TensorProto.INT4, codes.shape,
                                                        codes.reshape(-1).tolist())
        return name

    def qparams(self, base: str, scale, zero, dtype) -> tuple[str, str]:
        scale = np.asarray(scale, dtype=np.float32)
        return self.const(f"{base}_scale", scale), self.const(f"{base}_zero_point", np.asarray(zero, dtype=dtype))

    def node(self, op: str, inputs: list[str], output: str, **attrs):
        return self.onnx.helper.make_node(op, inputs, [output], name=self.fresh(f"{output}_{op}"), **attrs)

    def producers(self) -> dict:
        return {t: n for n in self.graph.node if n.name not in self.removed for t in n.output}

    def consumers(self, tensor: str) -> list:
        return [n for n in self.graph.node if n.name not in self.removed and tensor in n.input]

    def initializer(self, name: str) -> np.ndarray | None:
        for t in self.graph.initializer:
            if t.name == name:
                return self.onnx.numpy_helper.to_array(t)
        for n in self.graph.node:
            if n.op_type == "Constant" and name in n.output:
                return self.onnx.numpy_helper.to_array(n.attribute[0].t) if n.attribute[0].name == "value" else None
        return None

    # ---- layers ------------------------------------------------------------------------------
    def write(self):
        plan = self.plan
        by_name = {n.name: n for n in self.graph.node}
        integer_nodes: dict[str, str] = {}   # node name -> dtype of the codes it reads
        act = plan.scheme.activations.dtype
        for var, info in self.walk.layers.items():
            index = plan.layers.index(var)
            node = by_name.get(plan.layer_name(index))
            if node is None or node.op_type not in ("Conv", "Gemm", "MatMul"):
                raise SqueezeError(f"cannot find the ONNX node of layer {plan.layer_name(index)}: the onnx-qdq "
                                   "export does not support this model")
            if "codes" in info:
                path = self.layer(node, info)
                integer_nodes.update({n.name: act for n in [node, *path]})
            else:  # activation x activation matmul: both operands symmetric codes
                integer_nodes[node.name] = info["a"].spec.dtype
        for name, where in self.node_results().items():
            if where in self.walk.consumed or where in self.int_vars:
                integer_nodes.setdefault(name, act)
        self.quantize_tensors(integer_nodes)
        return self.finish()

    def node_results(self) -> dict:
        """ONNX node name -> the var of ``main`` holding its (first) result, where one does."""
        out = {}
        for node in self.graph.node:
            var = self.tensor_var.get(node.output[0]) if node.output else None
            if var is not None:
                out[node.name] = var
        return out

    def chain_path(self, node, end: str) -> list:
        """The nodes from ``node``'s output to tensor ``end`` (BatchNorm, bias Add, Relu, Clip)."""
        path, tensor = [], node.output[0]
        while tensor != end:
            users = self.consumers(tensor)
            if len(users) != 1 or users[0].op_type not in _CHAIN_OPS or tensor in {o.name for o in self.graph.output}:
                raise SqueezeError(f"cannot export layer {node.name}: the nodes after it do not match the layer "
                                   "Squeeze quantized (expected BatchNormalization/Add/Relu/Clip)")
            path.append(users[0])
            tensor = users[0].output[0]
        return path

    def layer(self, node, info) -> list:
        """Rewrite one integer conv/Gemm/MatMul: int8 weights + int32 bias with DequantizeLinear,
        BatchNorm (folded by Squeeze) and bias Adds absorbed; returns the chain's nodes kept."""
        onnx = self.onnx
        chain = info["chain"]
        end = self.plan.var_tensor.get(chain[-1])
        if end is None:
            raise SqueezeError(f"cannot export layer {node.name}: its output has no ONNX tensor")
        path = self.chain_path(node, end)
        kind = node.op_type
        xq, codes = info["x"], info["codes"]
        w_scale = np.asarray(info["w_scale"], dtype=np.float32).reshape(-1)
        channels = codes.shape[0] if kind == "Conv" else codes.shape[1]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        plain = not attrs.get("transA", 0) and attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0
        if kind == "Gemm" and not plain:
            raise SqueezeError(f"cannot export layer {node.name}: Gemm with transA/alpha/beta is not supported")
        if kind == "Conv":
            w_codes, w_axis = codes, 0
        elif kind == "Gemm" and attrs.get("transB", 0):
            w_codes, w_axis = codes.T, 0
        else:
            w_codes, w_axis = codes, 1
        wname = node.input[1]
        per_channel = w_scale.size > 1
        axis = {"axis": w_axis} if per_channel else {}
        w_s = self.const(f"{wname}_scale", w_scale if per_channel else w_scale[0])
        zero = np.zeros(w_scale.size if per_channel else (), np.int8)
        w_z = self.codes(f"{wname}_zero_point", zero)
        w_q = self.codes(f"{wname}_quantized", w_codes.astype(np.int8))
        w_dq = self.fresh(f"{wname}_dequantized")
        pre = [self.node("DequantizeLinear", [w_q, w_s, w_z], w_dq, **axis)]
        inputs = [node.input[0], w_dq]
        bias = info["bias"]
        b_dq = None
        if bias is not None:  # as integer_layer computes it: round(b / (s_x s_w)), scale in float32
            per_out = np.float32(xq.scale) * np.broadcast_to(w_scale, (channels,))
            b_codes = np.round(np.asarray(bias).reshape(-1) / per_out).astype(np.int64)
            if np.abs(b_codes).max(initial=0) >= 2**31:
                raise SqueezeError(f"cannot export layer {node.name}: its bias does not fit int32 codes")
            base = f"{node.input[2]}" if len(node.input) > 2 and node.input[2] else f"{node.name}_bias"
            b_s, b_z = self.qparams(base, per_out, np.zeros(channels, np.int32), np.int32)
            b_q = self.const(f"{base}_quantized", b_codes.astype(np.int32))
            b_dq = self.fresh(f"{base}_dequantized")
            pre.append(self.node("DequantizeLinear", [b_q, b_s, b_z], b_dq, axis=0))
        removed_out = None
        cap = self.equalized_cap(chain[-1])
        for n in path:
            if n.op_type == "Clip" and cap is not None:
                self.relu_min(n, cap)
                continue
            if n.op_type in ("Relu", "Clip"):  # fused by Squeeze, kept here: the Q/DQ pair follows it
                continue
            if kind != "MatMul":  # BatchNorm (Squeeze folded it) or a bias Add: absorbed into the layer
                self.removed.add(n.name)
                removed_out = n.output[0]
                continue
            other = [i for i in n.input if self.initializer(i) is not None]
            if n.op_type != "Add" or len(other) != 1 or b_dq is None:
                raise SqueezeError(f"cannot export layer {node.name}: {n.name} is not a constant bias add")
            n.input[list(n.input).index(other[0])] = b_dq  # MatMul + Add: the Add reads the int32 bias
            b_dq = None
        if b_dq is not None:
            inputs.append(b_dq)
        del node.input[:]
        node.input.extend(inputs)
        if removed_out is not None:
            node.output[0] = removed_out
        self.before.setdefault(node.name, []).extend(pre)
        return [n for n in path if n.name not in self.removed]

    def equalized_cap(self, var) -> np.ndarray | None:
        """The per-channel cap of an equalized ReLU6 (``minimum(relu(x), cap)``) bound to ``var``."""
        value = self.binding.get(var)
        if value is None or getattr(value, "op", None) is None or value.op.name != "relax.minimum":
            return None
        return value.args[1].value.numpy().astype(np.float32)

    def relu_min(self, clip, cap: np.ndarray) -> None:
        """Rewrite ONNX ``clip`` (ReLU6) as Relu then Min with ``cap``, as equalization left it; the
        Min keeps the node's name and output, so the output's Q/DQ pair follows it."""
        relu = self.fresh(f"{clip.output[0]}_relu")
        self.before.setdefault(clip.name, []).append(self.node("Relu", [clip.input[0]], relu))
        clip.op_type = "Min"
        del clip.input[:]
        clip.input.extend([relu, self.const(f"{clip.output[0]}_cap", cap)])
        del clip.attribute[:]

    # ---- activations -------------------------------------------------------------------------
    def quantize_tensors(self, integer_nodes: dict[str, str]) -> None:
        producers = self.producers()
        inputs = {i.name for i in self.graph.input}
        for var, q in self.int_vars.items():  # produced in integers: T becomes DQ(Q(T))
            tensor = self.plan.var_tensor.get(var)
            if tensor is None:
                raise SqueezeError("cannot export: a tensor Squeeze keeps in integers has no ONNX name")
            producer = producers.get(tensor)
            if producer is None:
                raise SqueezeError(f"cannot export: tensor {tensor} has no producing node")
            pre = self.fresh(f"{tensor}_float")
            producer.output[list(producer.output).index(tensor)] = pre
            s, z = self.qparams(tensor, q.scale, q.zero, np.dtype(q.spec.dtype))
            codes = self.fresh(f"{tensor}_quantized")
            self.after.setdefault(producer.name, []).extend(
                [self.node("QuantizeLinear", [pre, s, z], codes), self.node("DequantizeLinear", [codes, s, z], tensor)])
        for (var, dtype), q in self.walk.views.items():  # quantized from a float value by its integer users
            tensor = self.plan.var_tensor.get(var)
            users = [n for n in self.consumers(tensor) if integer_nodes.get(n.name) == dtype] if tensor else []
            primary = self.int_vars.get(var)
            if not users or (primary is not None and primary.spec.dtype == dtype):
                continue
            s, z = self.qparams(f"{tensor}_{dtype}", q.scale, q.zero, np.dtype(q.spec.dtype))
            codes, deq = self.fresh(f"{tensor}_quantized"), self.fresh(f"{tensor}_dequantized")
            nodes = [self.node("QuantizeLinear", [tensor, s, z], codes),
                     self.node("DequantizeLinear", [codes, s, z], deq)]
            if tensor in inputs and tensor not in producers:
                self.head.extend(nodes)
            else:
                self.after.setdefault(producers[tensor].name, []).extend(nodes)
            for n in users:
                for i, name in enumerate(n.input):
                    if name == tensor:
                        n.input[i] = deq

    def finish(self):
        onnx, graph = self.onnx, self.graph
        nodes = list(self.head)
        for n in graph.node:
            if n.name in self.removed:
                continue
            nodes.extend(self.before.get(n.name, []))
            nodes.append(n)
            nodes.extend(self.after.get(n.name, []))
        graph.ClearField("node")
        graph.node.extend(nodes)
        graph.initializer.extend(self.inits.values())
        while True:  # drop what nothing reads any more (float weights, BatchNorm statistics)
            read = {t for n in graph.node for t in n.input} | {o.name for o in graph.output}
            dead = [n for n in graph.node if n.op_type == "Constant" and not set(n.output) & read]
            if not dead:
                break
            for n in dead:
                graph.node.remove(n)
        read = {t for n in graph.node for t in n.input} | {o.name for o in graph.output}
        keep = [t for t in graph.initializer if t.name in read]
        graph.ClearField("initializer")
        graph.initializer.extend(keep)
        names = {t.name for t in keep}
        inits_as_inputs = {t.name for t in self.plan.proto.graph.initializer} | set(self.inits)
        graph_inputs = [i for i in graph.input if i.name not in inits_as_inputs or i.name in names]
        graph.ClearField("input")
        graph.input.extend(graph_inputs)
        graph.ClearField("value_info")
        proto = self.plan.proto
        meta = {"squeeze.scheme": self.plan.scheme.name, "squeeze.observer": self.plan.observer,
                **{f"squeeze.output_step.{k}": repr(v) for k, v in self.plan.output_steps.items()}}
        onnx.helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props}, **meta})
        return proto


# ---- the ``squeeze export`` verb -----------------------------------------------------------------
def add_command(sub, model_args) -> None:
    """Register ``squeeze export``."""
    e = sub.add_parser("export", help="write the model quantized by Squeeze as QDQ ONNX (ONNX Runtime, TensorRT)")
    model_args(e, "the float ONNX model, or a quantized artifact (.tar) to export as it was compiled")
    e.add_argument("--format", default="onnx-qdq", help="export format: onnx-qdq (default)")
    e.add_argument("-o", "--output", required=True, help="output model path (.onnx), or the folder with --board")
    e.add_argument("--board", help="write a deploy bundle of the artifact for this board (a CPU target, e.g. rpi5): "
                                   "libraries, manifest, run.py, README.txt (compiler/deploy.py)")
    add_quantization_args(e, "quantization (as for squeeze compile; --quantize defaults to the target's scheme)")
    e.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> None:
    from .atomic import check_writable

    given = [f for f, v in (("--quantize", args.quantize), ("--target", args.target),
                            ("--input-shape", args.input_shape)) if v] + \
            [f"--{k.replace('_', '-')}" for k, default in QUANT_ONLY.items() if getattr(args, k) != default]
    if args.board:
        from .deploy import cmd_deploy

        return cmd_deploy(args, given, _log_line)
    if args.format not in FORMATS:
        raise SqueezeError(f"unknown export format '{args.format}': choose {', '.join(FORMATS)}")
    check_writable(args.output)
    if _is_artifact(args.model):
        if given:
            raise SqueezeError(f"{args.model} fixes its quantization, target and shapes: drop {', '.join(given)} "
                               "(or export the ONNX model with them)")
        export_qdq(args.model, args.output, calib=args.calib, log=_log_line)
    else:
        if not args.calib:
            raise SqueezeError("the onnx-qdq export needs calibration data: add --calib data.npz (or a folder of "
                               "images)")
        config = quant_config(args, calibration_source(args), required=True)
        export_qdq(args.model, args.output, config, target=args.target, input_shapes=dict(args.input_shape or []),
                   log=_log_line)
    size = Path(args.output).stat().st_size
    _log_line(f"wrote {args.output} ({size / 1e6:.2f} MB, {args.format})")

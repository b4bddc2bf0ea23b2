"""Build driver: Program → fused, scheduled TIR → compiled Relax executable."""
from __future__ import annotations

import contextlib
import hashlib
import os

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_call_tir, is_op, rewrite_call, wildcard
from tvm.relax.expr_functor import PyExprMutator, mutator

from targets import TargetSpec, host_target

from .hostexec import register_host_vm
from .program import Program
from .verify import check_tuned


def clamp_as_min_max() -> tvm.transform.Pass:
    """Rewrite clamps against scalars as ``R.minimum(R.maximum(x, lo), hi)``.

    ConvertLayout has no layout rule for ``R.clip`` and cannot look into the ``call_tir``
    kernels that TVM's ONNX importer emits for ``Clip``: either one would keep the clamp in
    NCHW between two transposes and outside the conv's fused epilogue. ``R.maximum`` and
    ``R.minimum`` with a scalar follow any layout.
    """
    x, bound = wildcard(), wildcard()
    clip = is_op("relax.clip")(x, wildcard(), wildcard())
    call_tir = is_call_tir("maximum", [x, bound]) | is_call_tir("minimum", [x, bound])

    def rewriter(expr: relax.Expr, matches: dict) -> relax.Expr:
        if clip in matches:
            dtype = matches[x].ty.dtype
            out = matches[x]
            low, high = (float(arg.value) for arg in expr.args[1:])
            if low != float("-inf"):
                out = relax.op.maximum(out, relax.const(low, dtype))
            if high != float("inf"):
                out = relax.op.minimum(out, relax.const(high, dtype))
            return out
        if matches[bound].ty.ndim != 0:
            return expr
        op = relax.op.maximum if "maximum" in expr.args[0].name_hint else relax.op.minimum
        return op(matches[x], matches[bound])

    @relax.transform.function_pass(opt_level=0, name="squeeze.clamp_as_min_max")
    def transform(func: relax.Function, _mod: tvm.IRModule, _ctx) -> relax.Function:
        return rewrite_call(clip | call_tir, rewriter, func)

    return transform


TABLE_ENTRIES = 256  # an 8-bit lookup table (passes.quantize.lut)


def _is_table(expr: relax.Expr) -> bool:
    """Whether ``expr`` is an 8-bit lookup table: a 1-D constant of at most :data:`TABLE_ENTRIES`."""
    return isinstance(expr, tvm.ir.expr.Constant) and len(expr.value.shape) == 1 and expr.value.shape[0] <= TABLE_ENTRIES


def transposes_through_lookups() -> tvm.transform.Pass:
    """Move ``permute_dims`` after the lookup tables and pads ConvertLayout left between them, and
    cancel the transposes that then meet.

    ConvertLayout has no layout rule for ``R.take``, so each int8 activation's lookup table
    (:mod:`passes.quantize.lut`: HardSwish, HardSigmoid, SiLU between two NHWC convs) stays in
    NCHW between two transposes, each a pass over the tensor (a third of a PP-LCNet classifier's
    INT8 time). A table lookup is element-wise and a constant pad only needs its widths permuted,
    so ``take(T, permute(x)) = permute(take(T, x))`` and ``pad(permute(x)) = permute(pad'(x))``;
    then ``permute(permute(x))`` with inverse axes is ``x``.
    """
    x, table = wildcard(), wildcard()
    permuted = is_op("relax.permute_dims")(x)
    lookup = is_op("relax.take")(table, permuted)
    pad = is_op("relax.nn.pad")(permuted)
    twice = is_op("relax.permute_dims")(permuted)

    def rewriter(expr: relax.Expr, matches: dict) -> relax.Expr:
        inner = matches[permuted]
        axes = [int(a) for a in inner.attrs.axes]
        if twice in matches:
            composed = [axes[int(a)] for a in expr.attrs.axes]
            return matches[x] if composed == list(range(len(composed))) else \
                relax.op.permute_dims(matches[x], composed)
        if lookup in matches:
            if not _is_table(matches[table]) or int(expr.attrs.axis) != 0:
                return expr
            return relax.op.permute_dims(relax.op.take(matches[table], matches[x], axis=0, mode=str(expr.attrs.mode)),
                                         axes)
        widths = [int(w) for w in expr.attrs.pad_width]
        moved = [0] * len(widths)
        for out_dim, in_dim in enumerate(axes):
            moved[2 * in_dim:2 * in_dim + 2] = widths[2 * out_dim:2 * out_dim + 2]
        return relax.op.permute_dims(relax.op.nn.pad(matches[x], moved, str(expr.attrs.pad_mode),
                                                     float(expr.attrs.pad_value)), axes)

    @relax.transform.function_pass(opt_level=0, name="squeeze.transposes_through_lookups")
    def transform(func: relax.Function, _mod: tvm.IRModule, _ctx) -> relax.Function:
        return rewrite_call(lookup | pad | twice, rewriter, func)

    return transform


def lookups_as_elementwise() -> tvm.transform.Pass:
    """Mark ``take`` kernels reading a table of at most :data:`TABLE_ENTRIES` entries element-wise.

    Such a ``take`` is an int8 activation's lookup table: one output per code, like any
    element-wise op. TVM annotates a gather as opaque (data-dependent loads), and FuseOps then keeps it out of the
    producing kernel, a pass over the tensor of its own (10 % of an OCR classifier's time).
    Marked element-wise, it fuses into the requantization epilogue.
    """
    @tvm.transform.module_pass(opt_level=0, name="squeeze.lookups_as_elementwise")
    def transform(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        for gvar, func in list(mod.functions.items()):
            if not isinstance(func, tvm.tirx.PrimFunc) or not func.attrs or "op_pattern" not in func.attrs:
                continue
            table = getattr(func.params[0].ty, "shape", None) if func.params else None
            if gvar.name_hint.startswith("take") and table is not None and len(table) == 1 \
                    and int(table[0]) <= TABLE_ENTRIES:
                mod[gvar] = func.with_attr("op_pattern", 0)
        return mod

    return transform


def graph_lowering(conv_layout: tuple[str, str], legalize: tvm.transform.Pass | None = None) -> tvm.transform.Pass:
    """Relax → fused TIR PrimFuncs, weights folded (layout transforms of constants included).

    ``legalize`` (a target's own kernels, see ``TargetSpec.legalize``) runs on the converted
    layout with folded weights, before TVM's generic legalization.

    PrimFunc parameters bound to weights are listed in their ``layout_free_buffers``
    attribute, so schedules (default or tuned) may re-lay them out (see :func:`lower`).
    """
    data_layout, kernel_layout = conv_layout
    return tvm.transform.Sequential(
        [
            clamp_as_min_max(),
            relax.transform.FoldConstant(),
            relax.transform.ConvertLayout({"relax.nn.conv2d": [data_layout, kernel_layout]}),
            transposes_through_lookups(),
            *([relax.transform.FoldConstant(), legalize] if legalize is not None else []),
            relax.transform.DecomposeOpsForInference(),
            relax.transform.CanonicalizeBindings(),
            relax.transform.FastMathTransform(),
            relax.transform.LegalizeOps(),
            relax.transform.AnnotateTIROpPattern(),
            lookups_as_elementwise(),
            relax.transform.FoldConstant(),
            relax.transform.FuseOps(),
            relax.transform.FuseTIR(),
            relax.transform.DeadCodeElimination(),
            relax.transform.AttachAttrLayoutFreeBuffers(),
        ],
        name="squeeze.graph_lowering",
    )


def fused_module(program: Program, spec: TargetSpec) -> tvm.IRModule:
    """The unscheduled module of fused PrimFuncs: what tuning tasks are extracted from."""
    with spec.target:
        legalize = spec.legalize(spec.target) if spec.legalize is not None else None
        return graph_lowering(spec.conv_layout, legalize)(program.bind_params().mod)


def prepack_weights() -> tvm.transform.Pass:
    """Run the weight re-layouts that schedules mark ``meta_schedule.layout_rewrite_preproc``
    once, at compile time: split them out of the kernels, then fold them into constants."""
    return tvm.transform.Sequential(
        [
            relax.transform.SplitLayoutRewritePreproc(),
            relax.transform.FoldConstant(),
            relax.transform.DeadCodeElimination(),
        ],
        name="squeeze.prepack_weights",
    )


def lower(program: Program, spec: TargetSpec, database: str | os.PathLike | None = None) -> tvm.IRModule:
    """Lower a Program to a module of scheduled PrimFuncs for ``spec``.

    Tuned schedules from ``database`` (a MetaSchedule work dir) take precedence once checked
    numerically (:func:`compiler.verify.check_tuned`); the remaining PrimFuncs get the
    target's default schedules.
    """
    mod = fused_module(program, spec)
    target = spec.target
    with target:
        if database is not None:
            tuned = relax.transform.MetaScheduleApplyDatabase(os.fspath(database))(mod)
            mod = check_tuned(mod, tuned, target, spec.schedule_func, database)
        if spec.schedule is not None:
            mod = spec.schedule(target)(mod)
        return prepack_weights()(mod)


def build(program: Program, spec: TargetSpec, database: str | os.PathLike | None = None) -> tvm.runtime.Executable:
    """Compile a Program for a target; returns a Relax VM executable."""
    return compile_lowered(lower(program, spec, database), spec)


def compile_lowered(mod: tvm.IRModule, spec: TargetSpec) -> tvm.runtime.Executable:
    """Compile the output of :func:`lower` into a Relax VM executable (in the target's
    ``build_context``, if it has one)."""
    with spec.build_context() if spec.build_context is not None else contextlib.nullcontext():
        return tvm.compile(mod, spec.target, relax_pipeline=relax.pipeline.default_build_pipeline())


LIFT_BYTES = 1024  # constants at least this large leave the library with lift_weights


def lift_weights(mod: tvm.IRModule, min_bytes: int = LIFT_BYTES) -> tuple[tvm.IRModule, list[np.ndarray]]:
    """``mod`` whose ``main`` takes each of its constants of ``min_bytes`` or more as a parameter
    after the user inputs (``num_input`` unchanged), and those constants' values in that order:
    the library no longer holds them, the caller passes them to every call (:mod:`compiler.weights`).

    Equal constants become one parameter: each call site of a shared weight (an unrolled LSTM's
    steps) gets its own copy from quantization and weight prepacking, dozens of copies in all."""
    lifted: dict = {}  # content key -> (parameter, constant)

    @mutator
    class _Lift(PyExprMutator):
        def visit_generic_const_(self, const):
            value = const.value
            if int(np.prod(value.shape)) * np.dtype(value.dtype).itemsize < min_bytes:
                return const
            array = value.numpy()
            key = (array.dtype.str, array.shape, hashlib.sha256(array.tobytes()).digest())
            if key not in lifted:
                lifted[key] = (relax.Var(f"w{len(lifted)}", relax.TensorType(value.shape, str(value.dtype))), array)
            return lifted[key][0]

    main = mod["main"]
    body = _Lift().visit_expr(main.body)
    out = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
    params = [param for param, _ in lifted.values()]
    out["main"] = relax.Function(list(main.params) + params, body, main.ret_ty, main.is_pure, main.attrs, main.span)
    return out, [array for _, array in lifted.values()]


def host_vm(program: Program) -> relax.VirtualMachine:
    """``program`` built for this host's target (:func:`targets.host_target`), in a VM."""
    return relax.VirtualMachine(build(program, host_target()), tvm.cpu())


register_host_vm(host_vm)

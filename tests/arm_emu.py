"""Run lowered Programs cross-compiled for AArch64 under ``qemu-aarch64``, without the TVM runtime.

The scheduled PrimFuncs of :func:`compiler.build.lower` are linked into one library with the
target's cross compiler; the Relax ``main`` (a chain of ``call_tir``) becomes a plan of kernel
calls that ``tests/arm_host.c`` executes under emulation (see its header for the format).
"""
from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import tvm
from tvm import relax
from tvm.support import cc

from compiler.build import lower
from compiler.program import Program
from targets import TargetSpec

HOST_SOURCE = Path(__file__).with_name("arm_host.c")
SYSROOT = "/usr/aarch64-linux-gnu"
TOOLS = {"aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu", "qemu-aarch64": "qemu-user"}
DTYPE_CODES = {"i": 0, "u": 1, "f": 2, "b": 1}


def missing_tools() -> str:
    """Why AArch64 code cannot be run here ("" when it can)."""
    missing = [f"{tool} (apt-get install {pkg})" for tool, pkg in TOOLS.items() if shutil.which(tool) is None]
    return "missing " + ", ".join(missing) if missing else ""


def host_binary(workdir: Path) -> Path:
    """``arm_host`` built for AArch64 in ``workdir`` (once)."""
    exe = workdir / "arm_host"
    if not exe.exists():
        subprocess.run(["aarch64-linux-gnu-gcc", "-O1", "-rdynamic", "-o", exe, HOST_SOURCE, "-ldl"], check=True)
    return exe


def _tensor_header(dtype: np.dtype, shape: tuple[int, ...], data: bytes | None, nbytes: int) -> bytes:
    head = struct.pack("<BBHI", DTYPE_CODES[dtype.kind], dtype.itemsize * 8, 0, len(shape))
    head += struct.pack(f"<{len(shape)}q", *shape) + struct.pack("<QB", nbytes, data is not None)
    return head + (data or b"")


def plan(mod: tvm.IRModule, inputs: list[np.ndarray]) -> tuple[bytes, list[tuple[str, tuple[int, ...]]]]:
    """The plan file of ``mod``'s ``main`` on ``inputs`` and its outputs' (dtype, shape)."""
    main = mod["main"]
    tensors, ids = [], {}

    def add(key, dtype: str, shape: tuple[int, ...], data: np.ndarray | None = None) -> int:
        dt = np.dtype(dtype)
        raw = None if data is None else np.ascontiguousarray(data, dt).tobytes()
        tensors.append((_tensor_header(dt, shape, raw, dt.itemsize * int(np.prod(shape))), dt, shape))
        ids[key] = len(tensors) - 1
        return ids[key]

    def arg(expr: relax.Expr) -> int:
        if isinstance(expr, tvm.ir.expr.Constant):
            value = expr.value.numpy()
            return add(("const", len(tensors)), str(value.dtype), value.shape, value)
        if isinstance(expr, relax.Var) and expr in ids:
            return ids[expr]
        raise NotImplementedError(f"plan: unsupported argument {expr}")

    for param, value in zip(main.params, inputs):
        add(param, str(value.dtype), value.shape, value)
    calls = []
    bindings = [b for block in main.body.blocks for b in block.bindings]
    for binding in bindings:
        value = binding.value
        if isinstance(value, relax.Var):
            ids[binding.var] = arg(value)
            continue
        if not (isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.call_tir"):
            raise NotImplementedError(f"plan: only call_tir chains run under emulation, not {value.op}")
        gvar, args = value.args[0], [arg(a) for a in value.args[1].fields]
        out = value.ty
        out_id = add(binding.var, str(out.dtype), tuple(int(d) for d in out.shape))
        calls.append((gvar.name_hint, [*args, out_id]))
    result = main.body.body
    outputs = [arg(r) for r in (result.fields if isinstance(result, relax.Tuple) else [result])]
    blob = b"SQZP" + struct.pack("<I", len(tensors)) + b"".join(t[0] for t in tensors)
    blob += struct.pack("<I", len(calls))
    for name, args in calls:
        blob += struct.pack("<I", len(name)) + name.encode() + struct.pack(f"<I{len(args)}I", len(args), *args)
    blob += struct.pack(f"<I{len(outputs)}I", len(outputs), *outputs)
    return blob, [(str(tensors[o][1]), tensors[o][2]) for o in outputs]


def library(mod: tvm.IRModule, spec: TargetSpec, path: Path) -> Path:
    """The PrimFuncs of ``mod`` compiled for ``spec`` and linked by its cross compiler into ``path``."""
    funcs = {gvar: func.with_attr("global_symbol", gvar.name_hint) for gvar, func in mod.functions_items()
             if isinstance(func, tvm.tirx.PrimFunc)}
    lib = tvm.compile(tvm.IRModule(funcs), spec.target)
    lib.export_library(str(path), fcompile=cc.cross_compiler(spec.cross_compiler or "aarch64-linux-gnu-gcc"))
    return path


def run_lowered(mod: tvm.IRModule, spec: TargetSpec, inputs: list[np.ndarray], workdir: Path,
                cpu: str = "max") -> list[np.ndarray]:
    """Outputs of lowered ``mod`` on ``inputs``, run under ``qemu-aarch64 -cpu CPU``."""
    blob, outs = plan(mod, inputs)
    (workdir / "plan.bin").write_bytes(blob)
    lib = library(mod, spec, workdir / "kernels.so")
    proc = subprocess.run(["qemu-aarch64", "-cpu", cpu, "-L", SYSROOT, host_binary(workdir), lib,
                           workdir / "plan.bin", workdir / "out.bin"], capture_output=True, text=True, timeout=600)
    if proc.returncode:
        raise RuntimeError(f"arm_host exited {proc.returncode}: {proc.stderr.strip()}")
    raw, results, at = (workdir / "out.bin").read_bytes(), [], 0
    for dtype, shape in outs:
        size = np.dtype(dtype).itemsize * int(np.prod(shape))
        results.append(np.frombuffer(raw[at:at + size], dtype).reshape(shape))
        at += size
    return results


def run_program(program: Program, spec: TargetSpec, inputs: list[np.ndarray], workdir: Path,
                cpu: str = "max") -> list[np.ndarray]:
    """``program`` lowered for ``spec`` and run under emulation (see :func:`run_lowered`)."""
    return run_lowered(lower(program, spec), spec, inputs, workdir, cpu)


def disassembly(path: Path) -> str:
    """``objdump -d`` of an AArch64 library."""
    return subprocess.run(["aarch64-linux-gnu-objdump", "-d", str(path)], capture_output=True, text=True,
                          check=True).stdout

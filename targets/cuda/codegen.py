"""CUDA code generation without a GPU: CUDA C from TVM, PTX and cubin from nvcc.

``tvm.compile`` for a CUDA target returns a source-only module where no driver is loaded
(no ``libcuda.so.1``); :func:`cuda_source` reads that source and :func:`nvcc` compiles it for
an architecture, which is how the tests check the generated instructions on any machine.
"""
from __future__ import annotations

import tvm
from tvm.support import nvcc as _nvcc

from .schedule import ASYNC_COPY


def cuda_target(arch: str, host: dict | None = None) -> tvm.target.Target:
    """The TVM target of CUDA architecture ``arch`` (``sm_80``) with an LLVM host."""
    return tvm.target.Target({"kind": "cuda", "arch": arch, "host": host or {"kind": "llvm"}})


def cuda_source(mod: tvm.IRModule, arch: str) -> str:
    """The CUDA C that TVM generates for scheduled PrimFuncs ``mod`` on ``arch``."""
    with tvm.transform.PassContext(opt_level=3, config=ASYNC_COPY):
        lib = tvm.compile(mod, cuda_target(arch))
    return "\n".join(m.inspect_source("") for m in lib.mod.imports if m.kind == "cuda")


def nvcc(source: str, arch: str, fmt: str = "ptx") -> bytes:
    """``source`` compiled by nvcc for ``arch`` to ``ptx`` or ``cubin``."""
    with cuda_target(arch):
        return bytes(_nvcc.compile_cuda(source, target_format=fmt, arch=arch, compiler="nvcc"))

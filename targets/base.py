"""What a target declares: its TVM target, what it accelerates, how it schedules."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import tvm


@dataclass(frozen=True)
class OpSupport:
    """One accelerated op pattern, in the spirit of torch.ao's BackendConfig."""

    op: str
    dtypes: tuple[str, ...]
    layout: str = ""
    kernel: str = ""

    def __str__(self) -> str:
        extra = ", ".join(x for x in (self.layout, self.kernel) if x)
        return f"{self.op}[{'/'.join(self.dtypes)}]" + (f" ({extra})" if extra else "")


@dataclass(frozen=True)
class TargetSpec:
    """A compilation target.

    Attributes
    ----------
    name : str
        Registry key (``squeeze compile --target NAME``).
    description : str
        One line for ``squeeze targets``.
    target_json : dict
        JSON form of the ``tvm.target.Target``.
    accelerates : tuple of OpSupport
        Ops with a dedicated kernel on this target; the rest use the generic path.
    schedule : callable, optional
        ``schedule(target) -> tvm.transform.Pass`` giving default (untuned)
        schedules to the fused PrimFuncs of a lowered module.
    conv_layout : tuple of str
        Data and kernel layout conv2d is converted to before lowering.
    legalize : callable, optional
        ``legalize(target) -> tvm.transform.Pass`` rewriting the ops the target has its own
        kernels for (e.g. integer conv2d/matmul) into ``call_tir`` of them; runs after layout
        conversion and constant folding, before TVM's generic legalization.
    search_strategy : callable, optional
        ``search_strategy(task_mod) -> SearchStrategy | None``: the MetaSchedule search
        strategy for a tuning task built around the target's own kernels (None: default).
    features : tuple of str
        LLVM CPU features of the target.
    sparse : tuple of str
        Weight sparsity patterns whose kernels beat dense layers here: ``"block"`` (BSR) and
        ``"nm"`` (N:M); other patterns are stored sparse but run dense.
    """

    name: str
    description: str
    target_json: dict
    accelerates: tuple[OpSupport, ...] = ()
    schedule: Optional[Callable[[tvm.target.Target], tvm.transform.Pass]] = None
    conv_layout: tuple[str, str] = ("NHWC", "OHWI")
    legalize: Optional[Callable[[tvm.target.Target], tvm.transform.Pass]] = None
    search_strategy: Optional[Callable[[tvm.IRModule], object]] = None
    features: tuple[str, ...] = field(default_factory=tuple)
    sparse: tuple[str, ...] = ("block",)

    @property
    def target(self) -> tvm.target.Target:
        return tvm.target.Target(self.target_json)

    @property
    def num_cores(self) -> int:
        return int(self.target_json.get("num-cores", 1))

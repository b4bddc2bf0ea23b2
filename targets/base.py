"""What a target declares: its TVM target, what it accelerates, how it is built, scheduled and run.

Like torch.ao's ``BackendConfig``, the declaration is data the rest of the compiler asks: the
quantizer reads which layer kinds run in integers and the default scheme, the build reads the
legalization, schedule hooks, triple and cross compiler, the runtime and the tuner read the
device kind and whether this host can run the code.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import tvm
from tvm import s_tir, tirx

from .host import host_cpu, host_triple, isa_extensions, triple_arch


@dataclass(frozen=True)
class OpSupport:
    """One accelerated layer kind (``compiler.ir.LAYER_KINDS``) with its dtypes, layout and kernel.

    ``dtypes`` is ``(activation, weight, accumulator)`` for integer kernels (accumulator
    ``int32``), or ``("float32",)``.
    """

    op: str
    dtypes: tuple[str, ...]
    layout: str = ""
    kernel: str = ""

    @property
    def integer(self) -> bool:
        return self.dtypes[-1] == "int32"

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
        JSON form of the ``tvm.target.Target`` (``mtriple`` for a cross target).
    accelerates : tuple of OpSupport
        Layer kinds with a dedicated kernel; the integer ones are what the quantizer
        quantizes (other layers stay float) and what ``legalize`` rewrites.
    quant_scheme : str
        The quantization scheme used when the user names none, matching the kernels
        (u8 × s8 for ``vpdpbusd``, s8 × s8 for ``sdot``, power-of-two for shift-only hardware).
    schedule : callable, optional
        ``schedule(target) -> tvm.transform.Pass`` giving default (untuned) schedules to the
        fused PrimFuncs of a lowered module.
    schedule_func : callable, optional
        ``schedule_func(func, target) -> Schedule | None``: the same default schedule for one
        PrimFunc (seeds tuning and is the reference tuned kernels are checked against).
    conv_layout : tuple of str
        Data and kernel layout conv2d is converted to before lowering.
    legalize : callable, optional
        ``legalize(target) -> tvm.transform.Pass`` rewriting the ops the target has its own
        kernels for into ``call_tir`` of them; runs after layout conversion and constant
        folding, before TVM's generic legalization.
    search_strategy : callable, optional
        ``search_strategy(task_mod) -> SearchStrategy | None``: the MetaSchedule search
        strategy for a tuning task built around the target's own kernels (None: default).
    features : tuple of str
        LLVM CPU features of the target (tuning flags included).
    sparse : tuple of str
        Weight sparsity patterns whose kernels beat dense layers here: ``"block"`` (BSR) and
        ``"nm"`` (N:M); other patterns are stored sparse but run dense.
    device : str
        Device kind the code runs on (``"cpu"``, ``"cuda"``): how the runtime opens it.
    cross_compiler : str, optional
        C compiler that links the library (e.g. ``aarch64-linux-gnu-gcc``); None: the host's.
    bitserial : BitSerialSupport, optional
        Where the target's bit-serial kernels replace its int8 ones
        (``targets.integer.bitserial_legalize``; its legalization acts on it).
    build_context : callable, optional
        ``build_context()`` returns a context manager the final ``tvm.compile`` runs in (a
        GPU target's PassContext config, target and device-code compiler); None: none.
    """

    name: str
    description: str
    target_json: dict
    accelerates: tuple[OpSupport, ...] = ()
    quant_scheme: str = "int8"
    schedule: Optional[Callable[[tvm.target.Target], tvm.transform.Pass]] = None
    schedule_func: Optional[Callable[[tirx.PrimFunc, tvm.target.Target], Optional[s_tir.Schedule]]] = None
    conv_layout: tuple[str, str] = ("NHWC", "OHWI")
    legalize: Optional[Callable[[tvm.target.Target], tvm.transform.Pass]] = None
    search_strategy: Optional[Callable[[tvm.IRModule], object]] = None
    features: tuple[str, ...] = field(default_factory=tuple)
    sparse: tuple[str, ...] = ("block",)
    device: str = "cpu"
    cross_compiler: Optional[str] = None
    bitserial: Optional[object] = None
    build_context: Optional[Callable[[], object]] = None

    @property
    def target(self) -> tvm.target.Target:
        return tvm.target.Target(self.target_json)

    @property
    def num_cores(self) -> int:
        return int(self.target_json.get("num-cores", 1))

    @property
    def triple(self) -> str:
        """The LLVM triple code is generated for."""
        host = self.target_json.get("host") or {}  # a device target's host code
        return str(self.target_json.get("mtriple") or host.get("mtriple") or host_triple())

    @property
    def arch(self) -> str:
        """The CPU architecture of the code (``x86_64``, ``aarch64``)."""
        return triple_arch(self.triple)

    @property
    def isa(self) -> list[str]:
        """The instruction-set extensions the generated code may use (not LLVM tuning flags)."""
        return isa_extensions(self.features)

    @property
    def integer_ops(self) -> frozenset[str]:
        """Layer kinds this target runs in integer kernels."""
        return frozenset(s.op for s in self.accelerates if s.integer)

    def runs_on_host(self) -> bool:
        """Whether code for this target runs on this machine (same architecture, every ISA
        extension present)."""
        return (self.device == "cpu" and self.arch == triple_arch(host_triple())
                and set(self.isa) <= host_cpu()[1])

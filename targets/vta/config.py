"""VTA's hardware configuration as data (the fields of apache/tvm-vta ``config/vta_config.json``).

Everything else derives from the ``LOG_*`` fields as ``include/vta/hw_spec_const.h`` derives it:
element widths and bytes of each on-chip buffer, their depths (and the index widths the
instruction fields take), the GEMM block. Boards add the clock and AXI width the cycle model uses.
An inconsistent configuration is one line naming the field (:meth:`VTAConfig.validate`).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace

from compiler.errors import SqueezeError

LOG_UOP_WIDTH = 5  # a micro-op is 32 bits
LOG_INS_WIDTH = 7  # an instruction is 128 bits


@dataclass(frozen=True)
class VTAConfig:
    """A VTA hardware configuration (the default is the published 1x16x16 int8 design)."""

    LOG_INP_WIDTH: int = 3
    LOG_WGT_WIDTH: int = 3
    LOG_ACC_WIDTH: int = 5
    LOG_BATCH: int = 0
    LOG_BLOCK: int = 4
    LOG_UOP_BUFF_SIZE: int = 15
    LOG_INP_BUFF_SIZE: int = 15
    LOG_WGT_BUFF_SIZE: int = 18
    LOG_ACC_BUFF_SIZE: int = 17
    LOG_OUT_WIDTH: int = 3  # = LOG_INP_WIDTH in the published designs (the output feeds the next layer)

    # --- derived sizes (hw_spec_const.h) -------------------------------------------------------
    @property
    def batch(self) -> int:
        return 1 << self.LOG_BATCH

    @property
    def block(self) -> int:
        return 1 << self.LOG_BLOCK

    @property
    def inp_bits(self) -> int:
        return 1 << self.LOG_INP_WIDTH

    @property
    def wgt_bits(self) -> int:
        return 1 << self.LOG_WGT_WIDTH

    @property
    def acc_bits(self) -> int:
        return 1 << self.LOG_ACC_WIDTH

    @property
    def out_bits(self) -> int:
        return 1 << self.LOG_OUT_WIDTH

    @property
    def inp_elem_bytes(self) -> int:
        return self.inp_bits * self.batch * self.block // 8

    @property
    def wgt_elem_bytes(self) -> int:
        return self.wgt_bits * self.block * self.block // 8

    @property
    def acc_elem_bytes(self) -> int:
        return self.acc_bits * self.batch * self.block // 8

    @property
    def out_elem_bytes(self) -> int:
        return self.out_bits * self.batch * self.block // 8

    @property
    def log_uop_depth(self) -> int:
        return self.LOG_UOP_BUFF_SIZE - LOG_UOP_WIDTH + 3

    @property
    def log_inp_depth(self) -> int:
        return self.LOG_INP_BUFF_SIZE - self.LOG_BATCH - self.LOG_BLOCK - self.LOG_INP_WIDTH + 3

    @property
    def log_wgt_depth(self) -> int:
        return self.LOG_WGT_BUFF_SIZE - 2 * self.LOG_BLOCK - self.LOG_WGT_WIDTH + 3

    @property
    def log_acc_depth(self) -> int:
        return self.LOG_ACC_BUFF_SIZE - self.LOG_BATCH - self.LOG_BLOCK - self.LOG_ACC_WIDTH + 3

    @property
    def uop_depth(self) -> int:
        return 1 << self.log_uop_depth

    @property
    def inp_depth(self) -> int:
        return 1 << self.log_inp_depth

    @property
    def wgt_depth(self) -> int:
        return 1 << self.log_wgt_depth

    @property
    def acc_depth(self) -> int:
        return 1 << self.log_acc_depth

    @property
    def macs_per_cycle(self) -> int:
        return self.batch * self.block * self.block

    def validate(self) -> "VTAConfig":
        """Check the configuration; raises a one-line :class:`SqueezeError` naming the bad field."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise SqueezeError(f"VTA config field {f.name} = {value!r}: give an integer")
        rules = [
            ("LOG_INP_WIDTH", self.LOG_INP_WIDTH == 3, "must be 3 (int8 activations, what the lowering emits)"),
            ("LOG_WGT_WIDTH", self.LOG_WGT_WIDTH == 3, "must be 3 (int8 weights)"),
            ("LOG_ACC_WIDTH", self.LOG_ACC_WIDTH == 5, "must be 5 (int32 accumulators)"),
            ("LOG_OUT_WIDTH", self.LOG_OUT_WIDTH == self.LOG_INP_WIDTH, "must equal LOG_INP_WIDTH"),
            ("LOG_BATCH", 0 <= self.LOG_BATCH <= 4, "must be 0..4 (batch 1..16)"),
            ("LOG_BLOCK", 2 <= self.LOG_BLOCK <= 6, "must be 2..6 (a 4x4 .. 64x64 GEMM core)"),
            ("LOG_UOP_BUFF_SIZE", 8 <= self.LOG_UOP_BUFF_SIZE <= 20, "must be 8..20"),
            ("LOG_INP_BUFF_SIZE", 0 < self.log_inp_depth <= 16, "gives an input buffer depth outside 2..65536"),
            ("LOG_WGT_BUFF_SIZE", 0 < self.log_wgt_depth <= 16, "gives a weight buffer depth outside 2..65536"),
            ("LOG_ACC_BUFF_SIZE", 0 < self.log_acc_depth <= 16, "gives an accumulator buffer depth outside 2..65536"),
        ]
        for name, ok, why in rules:
            if not ok:
                raise SqueezeError(f"VTA config field {name} = {getattr(self, name)} {why}")
        # the micro-op packs dst (acc), src (max of acc, inp) and wgt indices into 32 bits
        uop_bits = self.log_acc_depth + max(self.log_acc_depth, self.log_inp_depth) + self.log_wgt_depth
        if uop_bits > 32:
            raise SqueezeError(f"VTA config field LOG_WGT_BUFF_SIZE = {self.LOG_WGT_BUFF_SIZE}: the micro-op's "
                               f"acc/inp/wgt indices need {uop_bits} bits, more than its 32")
        # GEMM's second 64-bit word holds 2 acc + 2 inp + 2 wgt index factors
        gemm_bits = 2 * (self.log_acc_depth + self.log_inp_depth + self.log_wgt_depth)
        if gemm_bits > 64:
            raise SqueezeError(f"VTA config field LOG_WGT_BUFF_SIZE = {self.LOG_WGT_BUFF_SIZE}: the GEMM "
                               f"instruction's index factors need {gemm_bits} bits, more than 64")
        first = 3 + 4 + 1 + self.log_uop_depth + (self.log_uop_depth + 1) + 2 * 14
        if first > 64:
            raise SqueezeError(f"VTA config field LOG_UOP_BUFF_SIZE = {self.LOG_UOP_BUFF_SIZE}: the GEMM/ALU "
                               f"instruction's first word needs {first} bits, more than 64")
        if 4 * self.log_acc_depth + 3 + 1 + 16 > 64:
            raise SqueezeError(f"VTA config field LOG_ACC_BUFF_SIZE = {self.LOG_ACC_BUFF_SIZE}: the ALU "
                               "instruction's index factors and immediate exceed 64 bits")
        return self

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict | str) -> "VTAConfig":
        """A config from ``vta_config.json``'s fields (``TARGET``/``HW_VER`` ignored; ``LOG_BLOCK_IN``
        and ``LOG_BLOCK_OUT`` must agree), validated."""
        if isinstance(doc, str):
            doc = json.loads(doc)
        doc = {k: v for k, v in doc.items() if k not in ("TARGET", "HW_VER")}
        for key in ("LOG_BLOCK_IN", "LOG_BLOCK_OUT"):
            if key in doc:
                value = doc.pop(key)
                if doc.setdefault("LOG_BLOCK", value) != value:
                    raise SqueezeError(f"VTA config field {key} = {value} differs from LOG_BLOCK = {doc['LOG_BLOCK']}:"
                                       " Squeeze's VTA takes square GEMM blocks")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise SqueezeError(f"VTA config field {unknown[0]} is not a VTA configuration field "
                               f"(known: {', '.join(sorted(known))})")
        return cls(**doc).validate()

    def with_(self, **changes) -> "VTAConfig":
        return replace(self, **changes).validate()

    def describe(self) -> str:
        return (f"{self.batch}x{self.block}x{self.block} int{self.inp_bits} GEMM, int{self.acc_bits} acc, "
                f"buffers uop {1 << self.LOG_UOP_BUFF_SIZE >> 10} KiB inp {1 << self.LOG_INP_BUFF_SIZE >> 10} KiB "
                f"wgt {1 << self.LOG_WGT_BUFF_SIZE >> 10} KiB acc {1 << self.LOG_ACC_BUFF_SIZE >> 10} KiB")


@dataclass(frozen=True)
class Board:
    """Where a VTA bitstream runs: the clock and AXI width the cycle model uses, and the host CPU."""

    name: str
    clock_mhz: float
    axi_bits: int
    host: str  # the board CPU's target (for the CPU part of the graph)
    description: str

    @property
    def bus_bytes(self) -> int:
        return self.axi_bits // 8


BOARDS = {
    "pynq": Board("pynq", 100.0, 64, "armv7", "Pynq-Z1 (Zynq-7020, 2x Cortex-A9): 100 MHz, 64-bit AXI"),
    "ultra96": Board("ultra96", 333.0, 128, "aarch64", "Ultra96 (ZU3EG, 4x Cortex-A53): 333 MHz, 128-bit AXI"),
    "zcu104": Board("zcu104", 333.0, 128, "aarch64", "ZCU104 (ZU7EV, 4x Cortex-A53): 333 MHz, 128-bit AXI"),
    "de10nano": Board("de10nano", 100.0, 64, "armv7", "DE10-Nano (Cyclone V, 2x Cortex-A9): 100 MHz, 64-bit AXI"),
}

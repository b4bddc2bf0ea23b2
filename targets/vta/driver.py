"""Running a VTA program: the register-level driver, on a board or against the simulator.

The driver does what apache/tvm-vta's ``src/pynq/pynq_driver.cc`` does, in Python: the program's
DRAM image and instruction stream go into one physically contiguous buffer, the stream's DRAM
addresses are relocated to it (the hardware's addresses are physical, in units of each memory's
element), the fetch unit's instruction count and address are written, the four stages started
(fetch: START, load/compute/store: AUTORESTART) and the compute stage's done register polled.

Two devices speak that interface:

* :class:`BoardDevice`: ``/dev/mem`` for the AXI-lite registers and Xilinx's ``libcma`` (the
  Pynq image's contiguous allocator, also on Ultra96/ZCU104 Pynq images) for the buffers;
  run inside the board's TVM RPC server (``python -m targets.vta.rpc_server``).
* :class:`SimDevice`: the same registers in a dictionary and a DRAM arena, the START write
  executing the stream in the simulator. Tests exercise the driver through it.
"""
from __future__ import annotations

import ctypes
import mmap
import os
import time

import numpy as np

from compiler.errors import SqueezeError

from . import isa, simulator
from .config import BOARDS, Board, VTAConfig

# AXI-lite register map (tvm-vta config/pkg_config.py): base addresses per board, offsets per stage
REGISTER_BASES = {
    "pynq": (0x43C00000, 0x43C01000, 0x43C02000, 0x43C03000),
    "de10nano": (0xFF220000, 0xFF221000, 0xFF222000, 0xFF223000),
    "ultra96": (0xA0000000, 0xA0001000, 0xA0002000, 0xA0003000),
    "zcu104": (0xA0000000, 0xA0001000, 0xA0002000, 0xA0003000),
}
FETCH, LOAD_STAGE, COMPUTE, STORE_STAGE = range(4)
CONTROL = 0x00
FETCH_INSN_COUNT, FETCH_INSN_ADDR = 0x10, 0x18
LOAD_INP_ADDR, LOAD_WGT_ADDR = 0x10, 0x18
COMPUTE_DONE_WR, COMPUTE_DONE_RD, COMPUTE_UOP_ADDR, COMPUTE_BIAS_ADDR = 0x10, 0x18, 0x20, 0x28
STORE_OUT_ADDR = 0x10
START, AUTORESTART, DONE = 0x1, 0x81, 0x1
REGISTER_SPAN = 0x1000
PAGE = 4096


def relocate(stream: np.ndarray, cfg: VTAConfig, base: int) -> np.ndarray:
    """``stream`` with every LOAD/STORE's ``dram_base`` moved by ``base`` bytes (a multiple of
    every element size), vectorized on the instructions' first 64-bit words."""
    words = np.ascontiguousarray(stream, np.uint8).copy().view(np.uint64).reshape(-1, 2)
    mem = {f.name: f for f in isa.layouts(cfg)["mem"]}
    lo = words[:, 0]
    opcode = lo & np.uint64(7)
    mtype = (lo >> np.uint64(mem["memory_type"].pos)) & np.uint64(7)
    sizes = {isa.MEM_UOP: isa.UOP_BYTES, isa.MEM_WGT: cfg.wgt_elem_bytes, isa.MEM_INP: cfg.inp_elem_bytes,
             isa.MEM_ACC: cfg.acc_elem_bytes, isa.MEM_OUT: cfg.out_elem_bytes}
    field = mem["dram_base"]
    mask = np.uint64(((1 << field.width) - 1) << field.pos)
    for mtype_id, size in sizes.items():
        if base % size:
            raise ValueError(f"relocation base {base:#x} is not a multiple of {size}")
        rows = ((opcode == isa.LOAD) | (opcode == isa.STORE)) & (mtype == np.uint64(mtype_id))
        old = (lo[rows] & mask) >> np.uint64(field.pos)
        new = old + np.uint64(base // size)
        if new.size and int(new.max()) >= 1 << field.width:
            raise SqueezeError("the VTA buffer lies above the 32-bit element addresses the instructions hold")
        lo[rows] = (lo[rows] & ~mask) | (new << np.uint64(field.pos))
    return words.view(np.uint8).reshape(-1)


class SimDevice:
    """VTA's registers and DRAM, simulated: writing START to the fetch stage runs the stream."""

    def __init__(self, cfg: VTAConfig, board: Board | str = "pynq", arena_bytes: int = 1 << 20):
        self.cfg, self.board = cfg, BOARDS[board] if isinstance(board, str) else board
        self.arena = np.zeros(arena_bytes, np.uint8)
        self.next_free = PAGE  # physical address 0 stays unused, like a real board's
        self.registers: dict[tuple[int, int], int] = {}
        self.last_stats: simulator.SimStats | None = None

    def alloc(self, nbytes: int) -> tuple[int, np.ndarray]:
        """A contiguous buffer: its physical address and a writable view."""
        phys = self.next_free
        need = phys + -(-nbytes // PAGE) * PAGE
        if need > self.arena.size:
            if self.next_free != PAGE:  # growing moves the arena: earlier views would go stale
                raise ValueError("SimDevice arena full: allocate one buffer per run (Driver.run does)")
            grown = np.zeros(max(need, 2 * self.arena.size), np.uint8)
            grown[:self.arena.size] = self.arena
            self.arena = grown
        self.next_free = need
        return phys, self.arena[phys:phys + nbytes]

    def free_all(self) -> None:
        self.next_free = PAGE

    def write(self, stage: int, offset: int, value: int) -> None:
        self.registers[(stage, offset)] = value
        if (stage, offset) == (FETCH, CONTROL) and value & START:
            count = self.registers[(FETCH, FETCH_INSN_COUNT)]
            addr = self.registers[(FETCH, FETCH_INSN_ADDR)]
            stream = self.arena[addr:addr + isa.INSN_BYTES * count]
            self.registers[(COMPUTE, COMPUTE_DONE_RD)] = 0
            self.last_stats = simulator.run(stream, self.arena, self.cfg, self.board)
            self.registers[(COMPUTE, COMPUTE_DONE_RD)] = DONE

    def read(self, stage: int, offset: int) -> int:
        return self.registers.get((stage, offset), 0)

    def flush(self, view: np.ndarray) -> None:
        """Cache maintenance before the device reads (nothing to do in the simulator)."""

    invalidate = flush


class BoardDevice:
    """A VTA bitstream's registers through ``/dev/mem`` and buffers from Xilinx's ``libcma``."""

    def __init__(self, cfg: VTAConfig, board: str, cma_library: str = "libcma.so"):
        self.cfg, self.board = cfg, BOARDS[board]
        try:
            self.cma = ctypes.CDLL(cma_library)
        except OSError:
            raise SqueezeError(f"{cma_library} not found: run on a Pynq image (it ships Xilinx's contiguous "
                               "memory allocator) or set SQUEEZE_VTA_CMA to its path") from None
        self.cma.cma_alloc.restype = ctypes.c_void_p
        self.cma.cma_alloc.argtypes = [ctypes.c_uint32, ctypes.c_uint32]
        self.cma.cma_get_phy_addr.restype = ctypes.c_uint64
        self.cma.cma_get_phy_addr.argtypes = [ctypes.c_void_p]
        self.cma.cma_free.argtypes = [ctypes.c_void_p]
        for name in ("cma_flush_cache", "cma_invalidate_cache"):
            getattr(self.cma, name).argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int]
        fd = os.open("/dev/mem", os.O_RDWR | os.O_SYNC)
        try:
            self.maps = [mmap.mmap(fd, REGISTER_SPAN, offset=base) for base in REGISTER_BASES[board]]
        finally:
            os.close(fd)
        self.buffers: list[tuple[int, int, int]] = []
        self.last_stats = None

    def alloc(self, nbytes: int) -> tuple[int, np.ndarray]:
        virt = self.cma.cma_alloc(nbytes, 0)  # uncached: no flushes needed on the Zynq's ACP-less path
        if not virt:
            raise SqueezeError(f"the contiguous allocator could not give {nbytes} bytes")
        phys = int(self.cma.cma_get_phy_addr(virt))
        self.buffers.append((virt, phys, nbytes))
        view = np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(virt))
        return phys, view

    def free_all(self) -> None:
        for virt, _, _ in self.buffers:
            self.cma.cma_free(virt)
        self.buffers.clear()

    def _buffer(self, view: np.ndarray) -> tuple[int, int, int]:
        addr = view.ctypes.data
        return next(b for b in self.buffers if b[0] <= addr < b[0] + b[2])

    def flush(self, view: np.ndarray) -> None:
        virt, phys, size = self._buffer(view)
        self.cma.cma_flush_cache(virt, phys, size)

    def invalidate(self, view: np.ndarray) -> None:
        virt, phys, size = self._buffer(view)
        self.cma.cma_invalidate_cache(virt, phys, size)

    def write(self, stage: int, offset: int, value: int) -> None:
        self.maps[stage][offset:offset + 4] = int(value).to_bytes(4, "little")

    def read(self, stage: int, offset: int) -> int:
        return int.from_bytes(self.maps[stage][offset:offset + 4], "little")


class Driver:
    """Submits programs to a device (:class:`SimDevice` or :class:`BoardDevice`)."""

    def __init__(self, device, timeout_s: float = 10.0):
        self.device, self.timeout_s = device, timeout_s

    def run(self, stream: np.ndarray, dram: np.ndarray) -> np.ndarray:
        """Execute ``stream`` on ``dram`` (an image whose addresses start at 0); returns the
        image after the run (the STOREs' results in place)."""
        dev = self.device
        dev.free_all()
        # one contiguous buffer: the image, then the relocated stream (page-aligned)
        stream_at = -(-dram.size // PAGE) * PAGE
        phys, buffer = dev.alloc(stream_at + stream.size)
        relocated = relocate(stream, dev.cfg, phys)
        insn_phys = phys + stream_at
        buffer[:dram.size] = dram
        buffer[stream_at:] = relocated
        data = buffer[:dram.size]
        dev.flush(buffer)
        dev.write(FETCH, FETCH_INSN_COUNT, relocated.size // isa.INSN_BYTES)
        dev.write(FETCH, FETCH_INSN_ADDR, insn_phys)
        for stage, offset in ((LOAD_STAGE, LOAD_INP_ADDR), (LOAD_STAGE, LOAD_WGT_ADDR), (COMPUTE, COMPUTE_UOP_ADDR),
                              (COMPUTE, COMPUTE_BIAS_ADDR), (STORE_STAGE, STORE_OUT_ADDR)):
            dev.write(stage, offset, 0)  # the instructions hold physical addresses
        dev.write(FETCH, CONTROL, START)
        for stage in (LOAD_STAGE, COMPUTE, STORE_STAGE):
            dev.write(stage, CONTROL, AUTORESTART)
        deadline = time.monotonic() + self.timeout_s
        while dev.read(COMPUTE, COMPUTE_DONE_RD) != DONE:
            if time.monotonic() > deadline:
                raise SqueezeError(f"VTA did not finish within {self.timeout_s:g} s: is the bitstream loaded "
                                   "and built for this hardware configuration?")
            time.sleep(0)
        dev.invalidate(data)
        return data.copy()

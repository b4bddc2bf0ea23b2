"""The VTA functional simulator and cycle model (``sim/vta_sim.c``), through ctypes.

The C source is built with the system C compiler on first use into ``$SQUEEZE_CACHE/vta/``
(``make vta-sim`` does the same ahead of time), keyed by the source's hash. It executes the
binary instruction stream against a DRAM image: encoding bugs show as wrong results.
C, not numpy: the stream is a sequential machine whose GEMM micro-ops index SRAM through the
affine loop, and ResNet-18 must simulate in seconds.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compiler.errors import SqueezeError

from .config import BOARDS, Board, VTAConfig
from .isa import INSN_BYTES, decode, describe

SOURCE = Path(__file__).with_name("sim") / "vta_sim.c"
DMA_LATENCY = 32  # cycles per DMA command (AXI burst set-up and SRAM write latency): a model assumption
PIPE_LATENCY = 4  # GEMM / ALU pipeline fill per instruction


class _Cfg(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int32) for n in ("log_batch", "log_block", "log_uop_depth", "log_inp_depth",
                                             "log_wgt_depth", "log_acc_depth", "bus_bytes", "dma_latency",
                                             "pipe_latency")]


COUNTERS = ("inp_load_nbytes", "wgt_load_nbytes", "acc_load_nbytes", "uop_load_nbytes", "out_store_nbytes",
            "gemm_counter", "alu_counter")
TIMES = ("cycles", "load_busy", "compute_busy", "store_busy", "gemm_busy", "alu_busy")


class _Stats(ctypes.Structure):
    _fields_ = ([(n, ctypes.c_uint64) for n in COUNTERS + TIMES]
                + [("finish_count", ctypes.c_int64), ("error_index", ctypes.c_int64), ("error", ctypes.c_char * 256)])


@dataclass
class SimStats:
    """VTA simulator counters (as VTA's fsim reported them) and the cycle model's times."""

    inp_load_nbytes: int = 0
    wgt_load_nbytes: int = 0
    acc_load_nbytes: int = 0
    uop_load_nbytes: int = 0
    out_store_nbytes: int = 0
    gemm_counter: int = 0
    alu_counter: int = 0
    cycles: int = 0
    load_busy: int = 0
    compute_busy: int = 0
    store_busy: int = 0
    gemm_busy: int = 0
    alu_busy: int = 0

    def __iadd__(self, other: "SimStats") -> "SimStats":
        for name in COUNTERS + TIMES:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    @property
    def overlap(self) -> float:
        """How much of the load/compute/store work ran concurrently: busy time of all stages over
        the elapsed cycles (1: serial, up to 3)."""
        return (self.load_busy + self.compute_busy + self.store_busy) / max(self.cycles, 1)

    def seconds(self, board: Board) -> float:
        return self.cycles / (board.clock_mhz * 1e6)

    def as_dict(self) -> dict:
        return {n: getattr(self, n) for n in COUNTERS + TIMES}


class StreamError(SqueezeError):
    """A malformed instruction stream (the simulator stopped at ``index``)."""

    def __init__(self, index: int, message: str):
        super().__init__(f"VTA instruction {index}: {message}")
        self.index = index


_LIB = None


def _cache_dir() -> Path:
    return Path(os.environ.get("SQUEEZE_CACHE") or Path.home() / ".cache" / "squeeze") / "vta"


def library_path() -> Path:
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    return _cache_dir() / f"libvtasim-{digest}.so"


def build_library(path: Path | None = None) -> Path:
    """Compile the simulator (``cc -O3``) into ``path`` (default :func:`library_path`), atomically."""
    path = path or library_path()
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
    os.close(fd)
    cc = os.environ.get("CC", "cc")
    try:
        subprocess.run([cc, "-O3", "-shared", "-fPIC", "-std=c99", "-o", tmp, str(SOURCE)],
                       check=True, capture_output=True, text=True)
        os.replace(tmp, path)
    except FileNotFoundError:
        raise SqueezeError(f"the VTA simulator needs a C compiler: '{cc}' not found (install gcc or set CC)") from None
    except subprocess.CalledProcessError as err:
        raise SqueezeError(f"building the VTA simulator failed: {err.stderr.strip().splitlines()[-1]}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _lib():
    global _LIB
    if _LIB is None:
        lib = ctypes.CDLL(str(build_library()))
        lib.vta_run.argtypes = [ctypes.POINTER(_Cfg), ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p,
                                ctypes.c_int64, ctypes.POINTER(_Stats)]
        lib.vta_run.restype = ctypes.c_int
        _LIB = lib
    return _LIB


def run(stream: np.ndarray, dram: np.ndarray, cfg: VTAConfig, board: Board | str = "pynq") -> SimStats:
    """Execute ``stream`` (``uint8``, 16 bytes per instruction) against ``dram`` (``uint8``,
    modified in place: the STOREs land there); returns the counters and cycle estimates.

    Raises :class:`StreamError` naming the instruction index of a malformed stream.
    """
    board = BOARDS[board] if isinstance(board, str) else board
    stream = np.ascontiguousarray(stream, np.uint8)
    if stream.size % INSN_BYTES:
        raise StreamError(stream.size // INSN_BYTES, f"the stream is {stream.size} bytes, not a multiple of 16")
    if dram.dtype != np.uint8 or not dram.flags.c_contiguous:
        raise ValueError("dram must be a contiguous uint8 array")
    c = _Cfg(cfg.LOG_BATCH, cfg.LOG_BLOCK, cfg.log_uop_depth, cfg.log_inp_depth, cfg.log_wgt_depth,
             cfg.log_acc_depth, board.bus_bytes, DMA_LATENCY, PIPE_LATENCY)
    stats = _Stats()
    count = stream.size // INSN_BYTES
    rc = _lib().vta_run(ctypes.byref(c), stream.ctypes.data, count, dram.ctypes.data, dram.size,
                        ctypes.byref(stats))
    if rc:
        index = int(stats.error_index)
        where = ""
        if 0 <= index < count:
            try:
                where = f" ({describe(decode(stream[16 * index:16 * index + 16].tobytes(), cfg))})"
            except ValueError:
                where = ""
        raise StreamError(index, stats.error.decode() + where)
    return SimStats(**{n: int(getattr(stats, n)) for n in COUNTERS + TIMES})

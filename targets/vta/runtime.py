"""The runtime side of an offloaded layer: the packed function ``squeeze.vta.run``.

Compiled code calls it with the layer's input, its instruction stream, DRAM image and header,
and the output to fill. It packs the input into VTA's blocked layout inside a copy of the image,
runs the program on the process's :class:`~.driver.Driver` (the simulator by default; on a board
the RPC server installs the MMIO driver, :mod:`.rpc_server`), and unpacks the output. Every run
is appended to :data:`RUNS` (counters and cycle estimates) for benchmarks and ``inspect``-style
reports.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import tvm

from .config import BOARDS, Board, VTAConfig
from .driver import Driver, SimDevice
from .lower import VTAProgram, pack_activations, unpack_activations

FUNC_NAME = "squeeze.vta.run"
HEADER_VERSION = 1
LAYOUTS = ("NCHW", "NHWC", "MK")
_BOARD_IDS = {name: i for i, name in enumerate(BOARDS)}
RUNS: list[dict] = []

DriverFactory = Callable[[VTAConfig, str], Driver]
_FACTORY: DriverFactory | None = None


def header(program: VTAProgram, in_layout: str, out_layout: str, board: Board) -> np.ndarray:
    """What the runtime needs besides the stream and the image, as int32 numbers."""
    c, s = program.cfg, program.shape
    return np.array([HEADER_VERSION, c.LOG_BATCH, c.LOG_BLOCK, c.LOG_UOP_BUFF_SIZE, c.LOG_INP_BUFF_SIZE,
                     c.LOG_WGT_BUFF_SIZE, c.LOG_ACC_BUFF_SIZE, s.batch, s.in_channels, s.height, s.width,
                     s.out_channels, s.out_height, s.out_width, program.inp_offset, program.out_offset,
                     LAYOUTS.index(in_layout), LAYOUTS.index(out_layout), _BOARD_IDS[board.name], program.macs],
                    np.int32)


def set_driver(factory: DriverFactory | None) -> None:
    """Install ``factory(cfg, board) -> Driver`` giving the driver each layer runs on (None: the
    simulator with the configuration and board model the layer was compiled for)."""
    global _FACTORY
    _FACTORY = factory


def _driver(cfg: VTAConfig, board: str) -> Driver:
    return (_FACTORY or (lambda c, b: Driver(SimDevice(c, b))))(cfg, board)


def run_layer(x: np.ndarray, stream: np.ndarray, dram: np.ndarray, head: np.ndarray) -> np.ndarray:
    """Run one lowered layer on input ``x`` (in the layout its header names)."""
    (version, lb, lk, lu, li, lw, la, n, c, h, w, o, oh, ow, inp_off, out_off, in_layout, out_layout, board,
     macs) = (int(v) for v in head)
    if version != HEADER_VERSION:
        raise ValueError(f"VTA layer header version {version}, this runtime reads {HEADER_VERSION}")
    cfg = VTAConfig(LOG_BATCH=lb, LOG_BLOCK=lk, LOG_UOP_BUFF_SIZE=lu, LOG_INP_BUFF_SIZE=li, LOG_WGT_BUFF_SIZE=lw,
                    LOG_ACC_BUFF_SIZE=la)
    layout = LAYOUTS[in_layout]
    nchw = {"NCHW": x, "NHWC": x.transpose(0, 3, 1, 2) if x.ndim == 4 else x,
            "MK": x.T.reshape(1, c, 1, w) if x.ndim == 2 else x}[layout]
    image = dram.copy()
    packed = pack_activations(np.ascontiguousarray(nchw.reshape(n, c, h, w)), cfg)
    image[inp_off:inp_off + packed.size] = packed
    board_name = list(BOARDS)[board]
    driver = _driver(cfg, board_name)
    image = driver.run(stream, image)
    size = -(-n // cfg.batch) * -(-o // cfg.block) * oh * ow * cfg.out_elem_bytes
    y = unpack_activations(image[out_off:out_off + size], cfg, n, o, oh, ow)
    stats = getattr(getattr(driver, "device", None), "last_stats", None)
    RUNS.append({"macs": macs, "shape": (n, c, h, w, o, oh, ow), "board": board_name,
                 "stats": stats})
    out_layout_name = LAYOUTS[out_layout]
    if out_layout_name == "NHWC":
        return y.transpose(0, 2, 3, 1)
    if out_layout_name == "MK":
        return y.reshape(o, ow).T
    return y


def _packed(data, stream, dram, head, out) -> None:
    y = run_layer(data.numpy(), stream.numpy(), dram.numpy(), head.numpy())
    out.copyfrom(np.ascontiguousarray(y, np.int8))


tvm.register_global_func(FUNC_NAME, _packed, override=True)

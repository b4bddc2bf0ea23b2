"""A TVM RPC server that runs VTA layers: ``python -m targets.vta.rpc_server [--driver pynq]``.

TVM's own server (``tvm.rpc.Server``) with one addition: its worker process registers
``squeeze.vta.run`` and installs the driver ``--driver`` names (``sim``: the simulator, for a
host without a board; a board name from :data:`~.config.BOARDS`: the MMIO driver on that board's
bitstream, :class:`~.driver.BoardDevice`). ``squeeze run art.tar --rpc BOARD:9091`` then uploads
the artifact's library there and every offloaded layer executes on the accelerator.
"""
from __future__ import annotations

import argparse
import os

ENV = "SQUEEZE_VTA_DRIVER"


def init_worker() -> None:
    """``server_init_callback``: runs in the server's worker process before it serves."""
    from targets.vta import driver, runtime
    from targets.vta.config import BOARDS

    kind = os.environ.get(ENV, "sim")
    if kind == "sim":
        runtime.set_driver(None)
        return
    if kind not in BOARDS:
        raise SystemExit(f"{ENV}={kind}: use sim or one of {', '.join(BOARDS)}")
    drivers: dict = {}

    def factory(cfg, _board):
        if cfg not in drivers:  # one device (register maps, CMA) per hardware configuration
            drivers[cfg] = driver.Driver(driver.BoardDevice(cfg, kind, os.environ.get("SQUEEZE_VTA_CMA", "libcma.so")))
        return drivers[cfg]

    runtime.set_driver(factory)


def main() -> None:
    from tvm import rpc

    from targets.vta.config import BOARDS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=9091)
    parser.add_argument("--port-end", type=int, default=9199)
    parser.add_argument("--tracker", help="RPC tracker host:port to register with (then --key)")
    parser.add_argument("--key", default="")
    parser.add_argument("--driver", default="sim", choices=("sim", *BOARDS),
                        help="sim: the simulator; a board: the VTA bitstream on it")
    args = parser.parse_args()
    os.environ[ENV] = args.driver
    tracker = None
    if args.tracker:
        host, port = args.tracker.rsplit(":", 1)
        tracker = (host, int(port))
    server = rpc.Server(args.host, args.port, args.port_end, key=args.key, tracker_addr=tracker,
                        server_init_callback=init_worker)
    server.proc.join()


if __name__ == "__main__":
    main()

"""Tutorial 5: a model on VTA, the open FPGA accelerator (Pynq-Z1, Ultra96), simulated here.

Run it with the project's venv: ``.venv/bin/python tutorials/05_vta_deploy.py``. It compiles the
bundled Fashion-MNIST ResNet-8 for ``vta-sim`` (this x86 host + the VTA simulator), shows which
layers run on the accelerator, runs the artifact locally and through a TVM RPC server whose worker
executes the VTA layers, exactly as a board's would, only with the simulator as its driver.

On a board (the steps the simulator stands in for):

1. Bitstream. VTA's HLS design for your board and configuration (``vta_config.json``; the
   default is 1x16x16 int8) from apache/tvm-vta ``hardware/xilinx`` (``make ip`` then ``make
   bit`` with Vivado HLS/Vivado), or a prebuilt one of the same configuration. Load it with
   the Pynq image's overlay loader (``python -c "from pynq import Overlay;
   Overlay('vta.bit')"``). If your bitstream is not the default configuration, point
   ``SQUEEZE_VTA_CONFIG`` at its ``vta_config.json`` when compiling: the instruction fields'
   widths and the tiling follow it.
2. Runtime on the board: Python 3 with numpy, the TVM runtime (``pip install apache-tvm`` on the
   Ultra96's AArch64; a TVM runtime built from source on the Pynq's ARMv7) and this repository
   (``pip install --no-deps -e .``). The Pynq image ships ``libcma.so``, the contiguous memory
   allocator the driver uses (``SQUEEZE_VTA_CMA`` names another path).
3. RPC server on the board, as root (it maps the registers through ``/dev/mem``):
   ``python -m targets.vta.rpc_server --driver pynq --port 9091`` (``--driver ultra96`` on an
   Ultra96; ``--tracker HOST:9190 --key vta`` to register with an RPC tracker).
4. Compile on the host for the board's CPU: ``squeeze compile model.onnx --target vta-ultra96
   --quantize int8_pow2 --calib calib.npz -o model.tar`` (needs ``aarch64-linux-gnu-gcc``,
   ``make cross``; ``vta-pynq`` needs ``arm-linux-gnueabihf-gcc``).
5. Run: ``squeeze run model.tar --inputs x.npz --rpc BOARD:9091``; the CPU layers run on the
   board's ARM cores, the offloaded ones on VTA through ``squeeze.vta.run``.
"""
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

from compiler import zoo

work = tempfile.mkdtemp(prefix="squeeze-tutorial-")
data = zoo.bundled_slice()
np.savez(os.path.join(work, "calib.npz"), input=data["calib"][:64])
np.savez(os.path.join(work, "x.npz"), input=data["test_x"][:1])
cli = [sys.executable, "-m", "compiler.cli"]
art = os.path.join(work, "vta.tar")

# 1. Compile for VTA: shift-only quantization (power-of-two scales, VTA's ALU requantizes with
#    ADD and SHR); each line on stderr says where a layer runs and why (the 1-channel stem uses
#    6 % of the 16x16 GEMM blocks: it stays on the CPU, as does the float-output classifier).
subprocess.run(cli + ["compile", str(zoo.model_path("fmnist-resnet8")), "--target", "vta-sim", "--quantize",
                      "int8_pow2", "--calib", f"{work}/calib.npz", "-o", art], check=True)

# 2. The split: `schedule` says `int8 vta conv2d` for the layers VTA runs.
subprocess.run(cli + ["inspect", art], check=True)

# 3. Run locally: the VTA layers execute their binary instruction streams in the simulator.
subprocess.run(cli + ["run", art, "--inputs", f"{work}/x.npz", "--outputs", f"{work}/local.npz"], check=True)

# 4. The board's path: an RPC server whose worker registers squeeze.vta.run (here with the
#    simulator as its driver), and `squeeze run --rpc`.
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
server = subprocess.Popen([sys.executable, "-m", "targets.vta.rpc_server", "--host", "127.0.0.1", "--port",
                           str(port), "--port-end", str(port + 1), "--driver", "sim"], start_new_session=True)
try:
    deadline = time.time() + 120
    while True:
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        if time.time() > deadline or server.poll() is not None:
            raise SystemExit("the RPC server did not start")
        time.sleep(0.2)
    subprocess.run(cli + ["run", art, "--inputs", f"{work}/x.npz", "--outputs", f"{work}/rpc.npz", "--rpc",
                          f"127.0.0.1:{port}"], check=True)
finally:
    os.killpg(server.pid, 9)
    server.wait()
local, remote = np.load(f"{work}/local.npz"), np.load(f"{work}/rpc.npz")
assert all(np.array_equal(local[k], remote[k]) for k in local)
print(f"class {int(local[list(local)[0]].argmax())} (label {int(data['test_y'][0])}), the same through RPC")

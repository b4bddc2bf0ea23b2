"""Tutorial 4: an INT8 model for a Raspberry Pi 5, as a folder to copy to the board.

Run it with the project's venv: ``.venv/bin/python tutorials/04_deploy_to_a_board.py``. It
cross-compiles with ``aarch64-linux-gnu-gcc`` (``make cross``); with the emulated board of
``make arm-sysroot`` (an AArch64 Python and TVM runtime under ``qemu-aarch64``) it also runs the
bundle as the board would.
"""
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

from compiler import zoo

if shutil.which("aarch64-linux-gnu-gcc") is None:
    print("this tutorial cross-compiles for AArch64: install gcc-aarch64-linux-gnu (make cross)")
    sys.exit(0)
work = tempfile.mkdtemp(prefix="squeeze-tutorial-")
data = zoo.bundled_slice()
np.savez(os.path.join(work, "calib.npz"), input=data["calib"][:64])
np.savez(os.path.join(work, "x.npz"), input=data["test_x"][:8])
cli = [sys.executable, "-m", "compiler.cli"]

# 1. Compile for the board: its preset picks -mcpu=cortex-a76 and the sdot kernels, and the
#    ARM targets' s8 x s8 scheme (int8_sym), here with integer-only requantization.
scheme = "w8_sym_per_channel__a8_sym_per_tensor__fixed_point"
subprocess.run(cli + ["compile", str(zoo.model_path("fmnist-resnet8")), "--target", "rpi5", "--input-shape",
                      "input:8x1x28x28", "--quantize", scheme, "--calib", f"{work}/calib.npz",
                      "-o", f"{work}/rpi5.tar"], check=True)

# 2. The deploy bundle: libraries, manifest, run.py (TVM runtime + numpy only) and a README with
#    the pip line and the RPC server command. Copy the folder to the board (scp -r) and follow it.
subprocess.run(cli + ["export", f"{work}/rpi5.tar", "--board", "rpi5", "-o", f"{work}/deploy"], check=True)
print(open(os.path.join(work, "deploy", "README.txt")).read())

# 3. No board here? Run the bundle on the emulated one, as `python run.py` would run on the Pi
#    (its latency is qemu's, not the board's).
board_python = zoo.cache_dir() / "arm64-sysroot" / "python"
if not board_python.is_file():
    print("build the emulated board with `make arm-sysroot` to run the bundle here")
    sys.exit(0)
subprocess.run([str(board_python), f"{work}/deploy/run.py", "--inputs", f"{work}/x.npz", "--outputs",
                f"{work}/y.npz", "--repeat", "3"], check=True)
predicted = np.load(os.path.join(work, "y.npz"))["output"].argmax(1)
print(f"emulated Raspberry Pi 5: {int((predicted == data['test_y'][:8]).sum())} of 8 test images right")
assert (predicted == data["test_y"][:8]).mean() >= 0.75

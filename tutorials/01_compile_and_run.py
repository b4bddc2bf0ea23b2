"""Tutorial 1: compile an ONNX model and run it, from Python and from the `squeeze` command.

Run it with the project's venv: ``.venv/bin/python tutorials/01_compile_and_run.py``.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort

import compiler
from compiler import zoo

# 1. A model: the bundled Fashion-MNIST ResNet-8 (any ONNX file works the same way).
model = zoo.model_path("fmnist-resnet8")
images, labels = zoo.bundled_slice()["test_x"], zoo.bundled_slice()["test_y"]
work = tempfile.mkdtemp(prefix="squeeze-tutorial-")

# 2. Python API: compile for this machine's CPU. The model's batch dim is dynamic, so give it.
art = compiler.compile(model, target="x86", input_shapes={"input": (1, 1, 28, 28)})
path = art.save(os.path.join(work, "resnet8.tar"))
print(f"artifact {path}: inputs {[s.to_json() for s in art.manifest.inputs]}")

# 3. Load and run; compare with ONNX Runtime on the same image.
module = compiler.load(path)
x = images[:1]
ours = module.run({"input": x})["output"]
ref = ort.InferenceSession(str(model)).run(None, {"input": x})[0]
print(f"predicted class {ours.argmax()} (label {labels[0]}), max |Squeeze - ORT| = {np.abs(ours - ref).max():.2e}")
assert np.abs(ours - ref).max() <= 1e-4 * np.abs(ref).max()
print(f"median latency {module.benchmark({'input': x}, repeat=20)['median_ms']:.3f} ms")

# 4. The same from the command line (what a shell user would type).
squeeze = [sys.executable, "-m", "compiler.cli"]
np.savez(os.path.join(work, "x.npz"), input=x)
for args in (
    ["compile", str(model), "--target", "x86", "--input-shape", "input:1x1x28x28", "-o", f"{work}/cli.tar"],
    ["run", f"{work}/cli.tar", "--inputs", f"{work}/x.npz", "--outputs", f"{work}/y.npz", "--print-time"],
    ["inspect", f"{work}/cli.tar"],
):
    print("$ squeeze " + " ".join(args))
    subprocess.run(squeeze + args, check=True)
y = np.load(f"{work}/y.npz")["output"]
assert np.array_equal(y, ours), "CLI and API outputs differ"
print("CLI output equals the API output")

"""Tutorial 3: structured pruning with reconstruction, ONNX export, and block sparsity.

Run it with the project's venv: ``.venv/bin/python tutorials/03_prune.py``.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort

import compiler
from compiler import zoo
from passes.prune import analyze

model = zoo.model_path("fmnist-resnet8")
data = zoo.bundled_slice()
work = tempfile.mkdtemp(prefix="squeeze-tutorial-")
shape = {"input": (1, 1, 28, 28)}

# 1. The dependency graph: which channels must go together. Residual adds tie the stem to every
#    block's output; each block's first conv is a group of its own. No op is a barrier here.
_, _, graph, _ = analyze(model, shape)
for group in graph.groups:
    print(f"group {group.id}: {group.size:3d} channels, {len(group.members)} weight slices  {group.name}")
print("barriers:", graph.barriers or "none")


def accuracy(module) -> float:
    x, y = data["test_x"], data["test_y"]
    pred = [next(iter(module.run({"input": x[i:i + 1]}).values())).argmax() for i in range(len(x))]
    return float(np.mean(np.asarray(pred) == y))


# 2. Prune 30 % of the filters of every group (FPGM criterion), keeping counts multiples of 2,
#    and re-fit the layers that read the pruned channels by least squares on calibration images.
config = compiler.PruneConfig("filter", ratio=0.3, criterion="fpgm", round_to=2,
                              calibration={"input": data["calib"]})
art = compiler.compile(model, "x86", input_shapes=shape, prune=config)
summary = art.manifest.summary["prune"]
pruned = compiler.load(art.save(os.path.join(work, "pruned.tar")))
dense = compiler.load(compiler.compile(model, "x86", input_shapes=shape).save(os.path.join(work, "dense.tar")))
print(f"MACs {summary['macs_before']:,} -> {summary['macs_after']:,}; "
      f"top-1 on {len(data['test_y'])} test images: dense {accuracy(dense):.3f}, pruned {accuracy(pruned):.3f}")
assert summary["macs_after"] < 0.6 * summary["macs_before"]
assert accuracy(pruned) > accuracy(dense) - 0.08

# 3. The same from the command line, exporting the pruned ONNX model (e.g. to fine-tune it in
#    PyTorch) and inspecting it: per layer, shapes, MACs and weight sparsity.
np.savez(os.path.join(work, "calib.npz"), input=data["calib"])
squeeze = [sys.executable, "-m", "compiler.cli"]
out = os.path.join(work, "pruned.onnx")
for args in (["prune", str(model), "--input-shape", "input:1x1x28x28", "--ratio", "0.3", "--criterion", "fpgm",
              "--round-to", "2", "--calib", f"{work}/calib.npz", "-o", out],
             ["inspect", os.path.join(work, "pruned.tar")]):
    print("$ squeeze " + " ".join(args))
    subprocess.run(squeeze + args, check=True)
x = data["test_x"][:8]
ref = np.concatenate([next(iter(pruned.run({"input": x[i:i + 1]}).values())) for i in range(len(x))])
onnx_out = ort.InferenceSession(out).run(None, {"input": x})[0]
assert np.abs(onnx_out - ref).max() <= 1e-4 * np.abs(ref).max(), "exported ONNX differs from the artifact"
print("the exported ONNX model computes what the compiled artifact computes")

# 4. Block sparsity: 80 % of the 1x16 weight blocks of dense layers and 1x1 convs removed; Squeeze
#    runs the remaining blocks with a block-sparse (BSR) kernel. Here: the two 1x1 shortcut convs
#    (the classifier's 10 outputs do not tile into 16-wide blocks).
sparse = compiler.compile(model, "x86", input_shapes=shape, prune=compiler.PruneConfig("block", 0.8, block=(1, 16)))
rows = [r for r in sparse.manifest.summary["prune"]["layers"] if "sparsity" in r]
print("block-sparse layers:", [(r["name"], r["sparsity"]) for r in rows])
assert len(rows) == 2 and len([r for r in sparse.manifest.summary["layers"] if r["op"] == "conv2d"]) == 7

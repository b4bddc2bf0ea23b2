"""Every bad or pointless invocation gets one line naming the problem and the fix, exit 2, and
writes nothing; options are checked before any long work starts (issue 12's table)."""
from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import squeeze
from test_cli import _one_line_error

from compiler import zoo

MODEL = str(zoo.model_path("fmnist-resnet8"))
SHAPE = ("--input-shape", "input:1x1x28x28")


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    path = tmp_path_factory.mktemp("calib") / "calib.npz"
    np.savez(path, input=zoo.bundled_slice()["calib"][:16])
    return str(path)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    path = tmp_path_factory.mktemp("art") / "m.tar"
    assert squeeze("compile", MODEL, *SHAPE, "-o", path).returncode == 0
    return str(path)


def _recipe(tmp_path, text: str) -> str:
    path = tmp_path / "r.toml"
    path.write_text(text)
    return str(path)


CASES = {
    # name: (argv after the model/artifact, substring of the one-line error)
    "prune without calibration": (["--prune", "filter:0.3"], "without calibration data is not re-fitted"),
    "prune without a ratio": (["--prune", "filter", "--calib", "{calib}"], "filter pruning needs a ratio"),
    "recipe table typo": (["--recipe", "{recipe:[[passes]]\nname = 'fold_bn'\n}"], "unknown table(s) ['passes']"),
    "recipe unknown pass": (["--recipe", "{recipe:[[pass]]\nname = 'fold_bnn'\n}"], "unknown pass 'fold_bnn'"),
    "recipe [quantize] typo": (["--recipe", "{recipe:[quantize]\nschem = 'int8'\n}"], "unknown [quantize] keys"),
    "skip matches nothing": (["--quantize", "int8", "--calib", "{calib}", "--skip", "/nonexistent/Conv"],
                             "layers to keep float not found: /nonexistent/Conv"),
    "calib alone": (["--calib", "{calib}"], "--calib is used by --quantize, --prune or a recipe"),
    "observer alone": (["--observer", "entropy"], "--observer has no effect without --quantize"),
    "block that tiles nothing": (["--prune", "block:0.8,block=1x7", "--calib", "{calib}"],
                                 "block sparsity fits no layer"),
    "output not a tar": (["-o", "{tmp}/a.onnx"], "an artifact is a .tar file"),
}


def _argv(args: list[str], calib: str, tmp_path) -> list[str]:
    out = []
    for a in args:
        if a.startswith("{recipe:"):
            out.append(_recipe(tmp_path, a[len("{recipe:"):-1]))
        else:
            out.append(a.replace("{calib}", calib).replace("{tmp}", str(tmp_path)))
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_compile_refuses(case, calib, tmp_path):
    args, match = CASES[case]
    argv = _argv(args, calib, tmp_path)
    output = [] if "-o" in argv else ["-o", str(tmp_path / "m.tar")]
    proc = squeeze("compile", MODEL, *SHAPE, *argv, *output)
    _one_line_error(proc, match)
    assert [p.name for p in tmp_path.iterdir() if p.suffix != ".toml"] == []


def test_unknown_pass_fails_before_pruning(calib, tmp_path):
    recipe = _recipe(tmp_path, "[[pass]]\nname = 'fold_bnn'\n")
    start = time.monotonic()
    proc = squeeze("compile", MODEL, *SHAPE, "--prune", "filter:sensitivity,macs=0.5", "--calib", calib,
                   "--recipe", recipe, "-o", str(tmp_path / "m.tar"))
    _one_line_error(proc, "unknown pass 'fold_bnn'")
    assert time.monotonic() - start < 30  # a sensitivity prune of this model takes minutes


def test_recipe_prune_table_gets_the_command_line_calibration(calib, tmp_path):
    recipe = _recipe(tmp_path, "[prune]\ngranularity = 'filter'\nratio = 0.25\n\n[[pass]]\nname = 'dead_code'\n")
    out = tmp_path / "m.tar"
    proc = squeeze("compile", MODEL, *SHAPE, "--recipe", recipe, "--calib", calib, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "re-fit" in proc.stderr or "pruned" in proc.stderr
    assert "output SQNR" in proc.stderr  # the accuracy proxy of a compressing compile
    assert (out.stat().st_mode & 0o777) != 0o600  # created with the user's umask


@pytest.mark.parametrize("args,match", [
    (["inspect", "{art}", "--sensitivity"], "--sensitivity scans an ONNX model"),
    (["inspect", MODEL, "--profile"], "--profile times a compiled artifact"),
    (["inspect", MODEL, "--plot", "{tmp}/p.png"], "--plot draws the --sensitivity scan"),
    (["run", MODEL, "--inputs", "{tmp}/x.npz"], "is an ONNX model, not an artifact"),
    (["run", "{art}", "--inputs", "{tmp}/x.npz", "--print-time", "--repeat", "0"], "--repeat 0"),
    (["compile", "{tmp}", "-o", "{tmp}/m.tar"], "is a directory, not an ONNX model"),
    (["compile", MODEL, "-o", "{tmp}/m.tar", "--input-shpe", "input:1x1x28x28"], "did you mean --input-shape?"),
    (["compil", MODEL], "invalid choice: 'compil'"),
])
def test_command_refuses(args, match, artifact, tmp_path):
    np.savez(tmp_path / "x.npz", input=np.zeros((1, 1, 28, 28), np.float32))
    argv = [a.replace("{art}", artifact).replace("{tmp}", str(tmp_path)) for a in args]
    proc = squeeze(*argv)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and match in lines[0] and "usage:" not in proc.stderr, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npz"]


def _bad_model(kind: str):
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
    inits = [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "s"),
             numpy_helper.from_array(np.ones((2, 2, 3, 3), np.float32), "w")]
    inputs = [x]
    if kind == "resize":
        node = helper.make_node("Resize", ["x", "", "s"], ["y"], name="up1", mode="bicubic")
    elif kind == "conv_transpose":
        node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="deconv1", strides=[2, 2], pads=[1, 1])
    else:  # a Reshape whose target shape is a model input: known only at run time
        node = helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape1")
        inputs.append(helper.make_tensor_value_info("shape", TensorProto.INT64, [2]))
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("kind,match", [
    ("resize", "Resize 'up1': mode='bicubic' is not one of nearest, linear, cubic"),
    ("conv_transpose", "ConvTranspose 'deconv1': pads [1, 1] must be 4 non-negative numbers"),
    ("runtime_shape", "node 'reshape1' (Reshape) takes its shape from values known only at run time"),
])
def test_malformed_model_is_one_line_naming_the_node(kind, match, tmp_path):
    import onnx

    path = tmp_path / "bad.onnx"
    onnx.save(_bad_model(kind), path)
    proc = squeeze("compile", path, "-o", tmp_path / "m.tar")
    _one_line_error(proc, match)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]

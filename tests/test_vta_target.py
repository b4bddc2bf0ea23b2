"""The vta-sim target end to end: partitioning, bit-identical to the same shift-only model on x86,
the CLI (compile, run, inspect), the register-level driver against the simulator."""
import contextlib
import io
import json

import numpy as np
import onnx
import pytest
from graphs import GraphBuilder

import compiler
from targets import get_target
from targets.vta import driver as vta_driver
from targets.vta import isa, runtime, simulator
from targets.vta.config import BOARDS, VTAConfig
from targets.vta.lower import Step, lower_conv, reference
from targets.integer.kernels import ConvShape


def _net() -> onnx.ModelProto:
    """A 3-channel stem, two VTA convs with a residual add, a depthwise conv, pool and Gemm."""
    g = GraphBuilder(seed=3)
    x = g.op("Relu", [g.conv("input", 3, 16)])  # stem: does not pay
    y = g.op("Relu", [g.conv(x, 16, 32, stride=2)])
    z = g.conv(y, 32, 32)
    y = g.op("Relu", [g.op("Add", [y, z])])  # residual add: CPU
    y = g.op("Relu", [g.conv(y, 32, 32, group=32)])  # depthwise: CPU
    y = g.op("Flatten", [g.op("GlobalAveragePool", [y])])
    out = g.op("Gemm", [y, g.weight((10, 32)), g.weight((10,))], transB=1)  # float output: CPU
    return g.model({"input": (1, 3, 16, 16)}, out, (1, 10))


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    path = tmp_path_factory.mktemp("vta") / "net.onnx"
    onnx.save(_net(), path)
    calib = np.random.default_rng(0).standard_normal((8, 1, 3, 16, 16)).astype(np.float32)
    quant = compiler.QuantConfig("int8_pow2", calibration=[{"input": c} for c in calib])
    told = io.StringIO()
    with contextlib.redirect_stderr(told):
        arts = {name: compiler.compile(path, target=name, quantize=quant) for name in ("vta-sim", "x86")}
    return arts, path, told.getvalue()


def test_partition_and_bit_identical_to_x86(artifacts, tmp_path):
    arts = artifacts[0]
    paths = {}
    for name, art in arts.items():
        paths[name] = tmp_path / f"{name}.tar"
        art.save(paths[name])
    vta, cpu = compiler.load(paths["vta-sim"]), compiler.load(paths["x86"])
    runtime.RUNS.clear()  # loading may run the model (picking its thread count)
    rng = np.random.default_rng(1)
    for _ in range(4):
        x = {"input": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)}
        a, b = vta.run(x), cpu.run(x)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    assert len(runtime.RUNS) == 4 * 2  # two layers ran on VTA per inference
    assert all(r["stats"].gemm_counter > 0 for r in runtime.RUNS)


def test_inspect_shows_the_split(artifacts, tmp_path):
    from conftest import squeeze

    arts = artifacts[0]
    path = tmp_path / "vta.tar"
    arts["vta-sim"].save(path)
    proc = squeeze("inspect", path, "--json", tmp_path / "r.json")
    assert proc.returncode == 0, proc.stderr
    rows = [r for r in json.loads((tmp_path / "r.json").read_text())["layers"] if r.get("op") == "conv2d"]
    assert [r.get("schedule") == "int8 vta conv2d" for r in rows] == [False, True, True, False]


def test_cpu_layers_are_told_with_their_reason(artifacts):
    spec = get_target("vta-sim")
    assert spec.quant_scheme == "int8_pow2" and "conv2d" in spec.integer_ops
    lines = [line for line in artifacts[2].splitlines() if line.startswith("vta: ")]
    assert len(lines) == 5, lines
    assert "does not pay" in lines[0] and "on VTA" in lines[1] and "on VTA" in lines[2]
    assert "depthwise" in lines[3] and "not requantized to int8" in lines[4]  # the Gemm: a float output


@pytest.mark.slow
def test_cli_compile_run(tmp_path, artifacts):
    from conftest import squeeze

    model = artifacts[1]
    calib, art, out = tmp_path / "calib.npz", tmp_path / "a.tar", tmp_path / "y.npz"
    np.savez(calib, input=np.random.default_rng(2).standard_normal((4, 3, 16, 16)).astype(np.float32))
    proc = squeeze("compile", model, "--target", "vta-sim", "--quantize", "int8_pow2", "--calib", calib, "-o", art)
    assert proc.returncode == 0, proc.stderr
    x = tmp_path / "x.npz"
    np.savez(x, input=np.random.default_rng(3).standard_normal((1, 3, 16, 16)).astype(np.float32))
    proc = squeeze("run", art, "--inputs", x, "--outputs", out)
    assert proc.returncode == 0, proc.stderr
    assert np.load(out)[list(np.load(out))[0]].shape == (1, 10)


def test_driver_through_registers_matches_direct_simulation():
    """The MMIO driver's protocol (relocation, fetch registers, START, done polling) on SimDevice."""
    cfg = VTAConfig()
    rng = np.random.default_rng(4)
    shape = ConvShape(1, 9, 9, 32, 16, 3, 3, (1, 1), (1, 1, 1, 1))
    x = rng.integers(-128, 128, (1, 32, 9, 9)).astype(np.int8)
    w = rng.integers(-128, 128, (16, 32, 3, 3)).astype(np.int8)
    steps = [Step("add", rng.integers(-500, 500, 16)), Step("shr", 8), Step("max", 0), Step("min", 127)]
    program = lower_conv(shape, w, steps, cfg, BOARDS["pynq"])
    device = vta_driver.SimDevice(cfg, "pynq", arena_bytes=4096)  # grows to the program's size
    image = vta_driver.Driver(device).run(program.stream, program.image(x))
    np.testing.assert_array_equal(program.output(image), reference(x, w, shape, steps))
    assert device.read(vta_driver.COMPUTE, vta_driver.COMPUTE_DONE_RD) == vta_driver.DONE
    # the relocated stream really holds physical addresses: run unrelocated on the arena, it fails
    direct = program.image(x)
    simulator.run(program.stream, direct, cfg)
    np.testing.assert_array_equal(program.output(direct), program.output(image))
    relocated = vta_driver.relocate(program.stream, cfg, 8192)
    first = isa.decode(relocated[:16].tobytes(), cfg)
    assert first.dram_base == isa.decode(program.stream[:16].tobytes(), cfg).dram_base + 8192 // 4


def test_runtime_uses_the_installed_driver():
    class Counting(vta_driver.Driver):
        calls = 0

        def run(self, stream, dram):
            Counting.calls += 1
            return super().run(stream, dram)

    cfg = VTAConfig()
    shape = ConvShape(1, 4, 4, 16, 16, 1, 1)
    w = np.ones((16, 16, 1, 1), np.int8)
    program = lower_conv(shape, w, [], cfg, BOARDS["pynq"])
    program.header = runtime.header(program, "NCHW", "NCHW", BOARDS["pynq"])
    x = np.ones((1, 16, 4, 4), np.int8)
    runtime.set_driver(lambda c, board: Counting(vta_driver.SimDevice(c, board)))
    try:
        y = runtime.run_layer(x, program.stream, program.dram, program.header)
    finally:
        runtime.set_driver(None)
    assert Counting.calls == 1
    np.testing.assert_array_equal(y, np.full((1, 16, 4, 4), 16, np.int8))


@pytest.mark.slow
def test_squeeze_run_over_rpc_runs_the_layers_on_the_server(artifacts, tmp_path):
    """``squeeze run --rpc`` against ``python -m targets.vta.rpc_server`` (simulator driver): the
    server's worker registers squeeze.vta.run; outputs equal the local run's."""
    import sys

    from conftest import squeeze
    from test_rpc import _listening

    path, x = tmp_path / "vta.tar", tmp_path / "x.npz"
    artifacts[0]["vta-sim"].save(path)
    inputs = {"input": np.random.default_rng(5).standard_normal((1, 3, 16, 16)).astype(np.float32)}
    np.savez(x, **inputs)
    local = compiler.load(path).run(inputs)
    with _listening(sys.executable, "targets.vta.rpc_server", 120, [(tmp_path / "server.log", [])]) as (address,):
        proc = squeeze("run", path, "--inputs", x, "--outputs", tmp_path / "y.npz", "--rpc", address)
        assert proc.returncode == 0, proc.stderr
    remote = np.load(tmp_path / "y.npz")
    for k, v in local.items():
        np.testing.assert_array_equal(remote[k], v)


def test_inconsistent_config_is_one_line(tmp_path):
    """``SQUEEZE_VTA_CONFIG`` naming a bad vta_config.json: one line naming the field, exit 2."""
    import os
    import subprocess
    import sys

    bad = tmp_path / "vta_config.json"
    bad.write_text(json.dumps({"LOG_BLOCK": 4, "LOG_ACC_BUFF_SIZE": 5}))
    from compiler import zoo

    model = zoo.model_path("fmnist-resnet8")
    proc = subprocess.run([sys.executable, "-m", "compiler.cli", "compile", str(model), "--target", "vta-sim",
                           "-o", str(tmp_path / "a.tar")], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "SQUEEZE_VTA_CONFIG": str(bad)})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "LOG_ACC_BUFF_SIZE" in lines[0]

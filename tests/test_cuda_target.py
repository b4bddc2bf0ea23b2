"""The CUDA presets: declarations, bad input, the runtime's device checks, and an artifact that
embeds cubin (compiled here without a GPU, against the stand-in libcuda of targets/cuda/driver.py)."""
import subprocess
import sys

import numpy as np
import pytest

from compiler.errors import SqueezeError
from targets import get_target, target_names
from targets.cuda import PRESETS, driver

REPO = __file__.rsplit("/tests/", 1)[0]


def test_presets_declare_device_arch_and_scheme():
    for name, (arch, _, int4, host) in PRESETS.items():
        spec = get_target(name)
        assert spec.device == "cuda" and spec.target_json["arch"] == arch
        assert spec.quant_scheme == "int8_sym"
        assert {"conv2d", "matmul", "depthwise_conv2d", "grouped_conv2d"} <= spec.integer_ops
        assert ("no INT4 tensor-core MMA" in spec.description) == (not int4)
    assert get_target("jetson-orin").triple == "aarch64-linux-gnu"
    assert get_target("jetson-orin").cross_compiler == "aarch64-linux-gnu-gcc"


def test_unknown_architecture_lists_the_presets():
    with pytest.raises(SqueezeError) as err:
        get_target("cuda-sm75")
    assert all(name in str(err.value) for name in PRESETS)
    assert set(PRESETS) <= set(target_names())


def test_cubin_compatibility_rule():
    assert driver.compatible("sm_80", "sm_86") and driver.compatible("sm_80", "sm_80")
    assert not driver.compatible("sm_90", "sm_80") and not driver.compatible("sm_86", "sm_80")
    with pytest.raises(SqueezeError, match="bad CUDA architecture"):
        driver.compatible("ampere", "sm_80")


class _FakeGPU:
    exist, compute_version, device_name = True, "8.0", "NVIDIA A100"


def test_artifact_for_sm90_on_an_sm80_gpu_names_both(monkeypatch):
    import tvm

    monkeypatch.setattr(driver, "runtime_loaded", lambda: True)
    monkeypatch.setattr(driver, "_driver_present", lambda: True)
    monkeypatch.setattr(tvm, "cuda", lambda index=0: _FakeGPU())
    with pytest.raises(SqueezeError) as err:
        driver.open_device("sm_90")
    assert "sm_90" in str(err.value) and "sm_80" in str(err.value) and "\n" not in str(err.value)
    assert driver.open_device("sm_80").device_name == "NVIDIA A100"


def test_no_driver_is_one_line():
    if driver._driver_present():
        pytest.skip("this machine has an NVIDIA driver")
    with pytest.raises(SqueezeError, match="no NVIDIA driver") as err:
        driver.open_device("sm_80")
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_resnet8_artifact_embeds_cubin_and_run_says_one_line(tmp_path):
    """`squeeze compile --target cuda-sm80` on the bundled ResNet-8: fatbin with cubin in the
    library, no CUDA source; `squeeze run` on a machine without a driver: one line, exit 2."""
    import tarfile

    from compiler.zoo import bundled_slice, model_path

    calib, inputs = tmp_path / "calib.npz", tmp_path / "x.npz"
    np.savez(calib, input=bundled_slice()["calib"][:16])
    np.savez(inputs, input=bundled_slice()["test_x"][:1])
    art = tmp_path / "r8.tar"
    cli = [sys.executable, "-m", "compiler.cli"]
    subprocess.run(cli + ["compile", str(model_path("fmnist-resnet8")), "--target", "cuda-sm80", "--quantize",
                          "int8_sym", "--calib", str(calib), "-o", str(art)], check=True, cwd=REPO,
                   capture_output=True)
    with tarfile.open(art) as tar:
        lib = tar.extractfile("lib.so").read()
    assert b"\x50\xed\x55\xba" in lib and b".nv.info" in lib  # fatbin magic, cubin sections
    assert b"__global__" not in lib and b"mma.sync" not in lib  # neither CUDA source nor PTX
    if driver._driver_present():
        return
    run = subprocess.run(cli + ["run", str(art), "--inputs", str(inputs)], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "no NVIDIA driver" in run.stderr

"""CUDA integer kernels: generated code without a GPU, bit-exact results on one.

Without a GPU the integer layers (conv2d as implicit GEMM, matmul, with their fused bias /
requantize / clip epilogue) are legalized, fused and scheduled for the CUDA presets, and the
CUDA C TVM generates is compiled by nvcc for sm_80, sm_89 and sm_90: the PTX must hold the int8
tensor-core MMA, ``ldmatrix`` and ``cp.async``. The ``gpu`` tests run each layer of
:data:`CONV_CASES` / :data:`MATMUL_CASES` on the device against ``quant_utils``' independent
numpy integer references (skipped where no CUDA device exists).
"""
import shutil

import numpy as np
import pytest
import tvm

from compiler.build import compile_lowered, lower
from passes.quantize.realize import QOutput
from passes.quantize.schemes import QuantSpec
from quant_utils import conv_layer, matmul_layer
from targets import get_target
from targets.cuda import codegen
from targets.cuda.intrin import MMA_PTX

S8 = QuantSpec(8, symmetric=True)
OUT = QOutput(scale=0.05, zero=0, lo=-128, hi=127, dtype="int8")
CONV_CASES = [  # (N, C, H, W, O, k, stride, pad, dilation, groups)
    (1, 64, 14, 14, 64, 3, 1, 1, 1, 1),   # 3x3 implicit GEMM, channels 16-aligned: cp.async copies
    (2, 32, 9, 9, 48, 1, 2, 0, 1, 1),     # 1x1 stride 2, M and N not multiples of the tile
    (1, 3, 16, 16, 16, 7, 2, 3, 1, 1),    # stem: 3 channels padded per tap, byte copies
    (1, 32, 9, 9, 32, 3, 1, 1, 1, 32),    # depthwise: CUDA cores
    (2, 20, 7, 7, 40, 3, 2, 1, 2, 2),     # grouped, dilated: CUDA cores
]
MATMUL_CASES = [((4, 96), 40), ((2, 33, 64), 130), ((64, 512), 256)]
ARCHS = ("sm_80", "sm_89", "sm_90")
needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")


def _layer(kind: str, index: int, fixed: bool = False):
    if kind == "conv":
        return conv_layer(CONV_CASES[index], S8, 0, OUT, fixed, seed=index)
    shape, n_out = MATMUL_CASES[index]
    return matmul_layer(shape, n_out, S8, 0, OUT, fixed, seed=index)


def _kernels(mod: tvm.IRModule) -> tvm.IRModule:
    """The scheduled PrimFuncs of a lowered module, as public functions (compiled on their own)."""
    return tvm.IRModule({g: f.with_attr("global_symbol", g.name_hint) for g, f in mod.functions_items()
                         if isinstance(f, tvm.tirx.PrimFunc)})


@pytest.fixture(scope="module")
def gemm_layers() -> tvm.IRModule:
    """A 3x3 conv and a matmul layer, with float requantization, lowered for cuda-sm80."""
    spec = get_target("cuda-sm80")
    funcs = {}
    for kind in ("conv", "matmul"):
        funcs.update(_kernels(lower(_layer(kind, 0)[0], spec)).functions_items())
    return tvm.IRModule(funcs)


def test_layers_become_fused_tensor_core_kernels(gemm_layers):
    fused = [f for f in gemm_layers.functions.values() if (f.attrs or {}).get("squeeze.schedule_rule") == "schedule_cuda"]
    assert len(fused) == 2
    for func in fused:  # the epilogue is inside the kernel: int8 codes out, the int32 tile in shared memory
        script = func.script()
        signature = script[script.index("def "):script.index(":\n", script.index("def "))]
        assert signature.rstrip(")").endswith('"int8"'), signature
        assert 'scope="shared.dyn"' in script and "T.ptx_legacy.mma(" in script and "T.ptx_legacy.ldmatrix(" in script


@needs_nvcc
@pytest.mark.parametrize("arch", ARCHS)
def test_ptx_has_int8_mma_ldmatrix_and_cp_async(gemm_layers, arch):
    source = codegen.cuda_source(gemm_layers, arch)
    ptx = codegen.nvcc(source, arch).decode()
    assert f".target {arch}" in ptx
    assert ptx.count(MMA_PTX) >= 2
    assert "ldmatrix.sync.aligned.m8n8.x4.shared.b16" in ptx
    assert "cp.async.cg.shared.global" in ptx and "cp.async.wait_group" in ptx


@needs_nvcc
@pytest.mark.slow
@pytest.mark.parametrize("kind,index", [("conv", i) for i in range(len(CONV_CASES))]
                         + [("matmul", i) for i in range(len(MATMUL_CASES))])
def test_every_layer_compiles_to_cubin_for_sm90(kind, index):
    mod = _kernels(lower(_layer(kind, index, fixed=index % 2 == 1)[0], get_target("cuda-sm90")))
    ptx = codegen.nvcc(codegen.cuda_source(mod, "sm_90"), "sm_90").decode()
    direct = kind == "conv" and CONV_CASES[index][-1] > 1
    assert (MMA_PTX in ptx) != direct
    assert codegen.nvcc(codegen.cuda_source(mod, "sm_90"), "sm_90", "cubin")[:4] == b"\x7fELF"


def _device():
    dev = tvm.cuda(0)
    if not dev.exist:
        pytest.skip("no CUDA device")
    return dev


@pytest.mark.gpu
@pytest.mark.parametrize("fixed", [False, True])
@pytest.mark.parametrize("kind,index", [("conv", i) for i in range(len(CONV_CASES))]
                         + [("matmul", i) for i in range(len(MATMUL_CASES))])
def test_layer_bit_exact_on_gpu(kind, index, fixed):
    dev = _device()
    arch = "sm_" + dev.compute_version.replace(".", "")
    preset = {"sm_80": "cuda-sm80", "sm_86": "cuda-sm86", "sm_87": "jetson-orin", "sm_89": "cuda-sm89"}.get(
        arch, "cuda-sm90")
    program, x, want = _layer(kind, index, fixed)
    spec = get_target(preset)
    vm = tvm.relax.VirtualMachine(compile_lowered(lower(program, spec), spec), dev)
    got = vm["main"](tvm.runtime.tensor(x, dev)).numpy()
    np.testing.assert_array_equal(got, want)

"""Build the GPU bench bundle here (TVM + nvcc, no GPU needed) for a machine with a GPU and no TVM.

The bundle (``--out``, default ``bench/gpu/bundle``) holds everything ``run_gpu.py`` needs:

- ``kernels/``: the CUDA integer kernels as libraries with embedded cubin (``NAME.so``) and their
  inputs (``NAME.npz``: data, packed weight and, for the bit-exact table, the expected int32
  output from an independent numpy int64 reference); the GEMM 4096³ and ResNet-50-shaped
  implicit-GEMM convs are timed against ``torch._int_mm`` (cuBLASLt) and checked against it;
- ``models/``: Squeeze INT8 artifacts of the zoo models at the requested batches, and their
  FP32 ONNX files (the ONNX Runtime reference);
- ``pylib/``: a runtime-only TVM (the ``tvm`` package without ``libtvm_compiler.so`` and the
  ``tvm_ffi`` package for the GPU machine's Python, ``--python``), ~60 MB.

Usage: ``python bench/gpu/build_bundle.py --target cuda-sm90 --models fmnist-resnet8,resnet18``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import tvm  # noqa: E402

from compiler.progress import Progress  # noqa: E402
from targets import get_target  # noqa: E402
from targets.cuda import kernels  # noqa: E402
from targets.cuda.schedule import schedule_cuda  # noqa: E402
from targets.integer.kernels import ConvShape  # noqa: E402

# (name, kind, shape): the bit-exact table (small enough for a numpy reference)
EXACT = [
    ("gemm_64x512x256", "matmul", (64, 512, 256)),
    ("gemm_200x80x10", "matmul", (200, 80, 10)),
    ("gemm_33x1000x130", "matmul", (33, 1000, 130)),
    ("conv3x3_c64_14", "conv", ConvShape(1, 16, 16, 64, 64, 3, 3)),
    ("conv3x3_s2_c32_b2", "conv", ConvShape(2, 17, 17, 32, 48, 3, 3, (2, 2))),
    ("conv1x1_c256_b4", "conv", ConvShape(4, 7, 7, 256, 64, 1, 1)),
    ("conv7x7_s2_stem", "conv", ConvShape(1, 38, 38, 3, 64, 7, 7, (2, 2))),
    ("depthwise3x3_c32", "direct", ConvShape(1, 9, 9, 32, 32, 3, 3, (1, 1), (1, 1, 1, 1), groups=32)),
    ("grouped3x3_g2", "direct", ConvShape(2, 7, 7, 20, 40, 3, 3, (2, 2), (1, 1, 1, 1), (2, 2), groups=2)),
]
# timed against torch._int_mm on the same GEMM (ResNet-50 batch 64 convs, input pre-padded)
SPEED = [
    ("gemm_4096", "matmul", (4096, 4096, 4096)),
    ("r50_conv2_3x3", "conv", ConvShape(64, 58, 58, 64, 64, 3, 3)),
    ("r50_conv3_3x3", "conv", ConvShape(64, 30, 30, 128, 128, 3, 3)),
    ("r50_conv4_3x3", "conv", ConvShape(64, 16, 16, 256, 256, 3, 3)),
    ("r50_conv5_3x3", "conv", ConvShape(64, 9, 9, 512, 512, 3, 3)),
    ("r50_conv2_1x1", "conv", ConvShape(64, 56, 56, 256, 64, 1, 1)),
]


def _build_kernel(kind: str, shape, spec, path: Path, seed: int, exact: bool) -> dict:
    """Compile one raw kernel (int32 out) for ``spec`` to ``path``.so, and for the bit-exact table
    its inputs and expected output to ``path``.npz."""
    rng = np.random.default_rng(seed)
    if kind == "matmul":
        m, k, n = shape
        tile = kernels.pick_tile(m, n, k)
        func = kernels.matmul((), m, k, n, tile)
        data, weight = rng.integers(-128, 128, (m, k), dtype=np.int8), rng.integers(-128, 128, (k, n), dtype=np.int8)
        packed, gemm = kernels.pack_matmul_weight(weight, tile), (m, n, k)
        expected = (data.astype(np.int64) @ weight.astype(np.int64)) if exact else None
    else:
        data = rng.integers(-128, 128, (shape.batch, shape.height, shape.width, shape.in_channels), dtype=np.int8)
        weight = rng.integers(-128, 128, (shape.out_channels, shape.in_channels // shape.groups, shape.kernel_h,
                                          shape.kernel_w), dtype=np.int8)
        if kind == "conv":
            tile = kernels.pick_tile(*kernels.gemm_shape(shape))
            func, packed = kernels.conv2d(shape, tile), kernels.pack_conv_weight(weight, shape, tile)
            gemm = (shape.batch * shape.out_height * shape.out_width, shape.out_channels,
                    shape.kernel_h * shape.kernel_w * shape.in_channels)
        else:
            func, packed, gemm = kernels.direct_conv2d(shape), kernels.pack_direct_weight(weight), None
        expected = _numpy_conv(data, weight, shape) if exact else None
    sch = schedule_cuda(func)
    mod = tvm.IRModule({"main": sch.mod["main"].with_attr("global_symbol", "main")})
    with spec.build_context():
        lib = tvm.compile(mod, spec.target)
    lib.export_library(str(path.with_suffix(".so")))
    if exact:  # speed cases: run_gpu.py draws the operands itself (seed), 48 MB less to carry
        np.savez(path.with_suffix(".npz"), data=data, weight=weight, packed=packed, expected=expected.astype(np.int32))
    return {"name": path.stem, "kind": kind, "gemm": gemm, "exact": exact, "seed": seed,
            "data_shape": list(data.shape), "weight_shape": list(weight.shape), "packed_shape": list(packed.shape),
            "macs": int(np.prod(gemm)) if gemm else None,
            "out_shape": list(expected.shape) if expected is not None else _out_shape(kind, shape)}


def _out_shape(kind: str, shape) -> list[int]:
    if kind == "matmul":
        return [shape[0], shape[2]]
    return [shape.batch, shape.out_height, shape.out_width, shape.out_channels]


def _numpy_conv(data: np.ndarray, weight: np.ndarray, shape: ConvShape) -> np.ndarray:
    """int64 NHWC conv by explicit windows (independent of the kernels' im2col)."""
    top, left, bottom, right = shape.padding
    x = np.pad(data.astype(np.int64), ((0, 0), (top, bottom), (left, right), (0, 0)))
    (sh, sw), (dh, dw), g = shape.strides, shape.dilation, shape.groups
    icg, ocg = shape.in_channels // g, shape.out_channels // g
    out = np.zeros((shape.batch, shape.out_height, shape.out_width, shape.out_channels), np.int64)
    for ry in range(shape.kernel_h):
        for rx in range(shape.kernel_w):
            patch = x[:, ry * dh:ry * dh + sh * shape.out_height:sh, rx * dw:rx * dw + sw * shape.out_width:sw]
            for gi in range(g):
                w = weight[gi * ocg:(gi + 1) * ocg, :, ry, rx].astype(np.int64)  # [ocg, icg]
                out[..., gi * ocg:(gi + 1) * ocg] += patch[..., gi * icg:(gi + 1) * icg] @ w.T
    return out


def _models(names: list[str], spec, batches: list[int], out: Path, log) -> list[dict]:
    """Squeeze INT8 artifacts of zoo models (calibrated on the bundled / random data) + FP32 ONNX."""
    import compiler
    from compiler import zoo

    records = []
    for name in names:
        onnx_path, shape = zoo.model_path(name), list(zoo.INPUT_SHAPES[name])
        rng = np.random.default_rng(0)
        calib = zoo.bundled_slice()["calib"][:32] if name == "fmnist-resnet8" else \
            rng.standard_normal((8, *shape[1:])).astype(np.float32)
        import onnx

        feed = {onnx.load(str(onnx_path), load_external_data=False).graph.input[0].name: calib}
        art = compiler.compile(str(onnx_path), target=spec.name, batch_sizes=batches,
                               quantize=compiler.QuantConfig(spec.quant_scheme, calibration=feed), log=log)
        art.save(out / f"{name}.tar")
        shutil.copy(onnx_path, out / f"{name}.onnx")
        records.append({"name": name, "artifact": f"{name}.tar", "onnx": f"{name}.onnx", "batches": batches,
                        "input_shape": shape})
    return records


def _runtime(out: Path, python: str) -> None:
    """The tvm package without libtvm_compiler.so, and tvm_ffi for Python ``python`` (e.g. 3.12)."""
    import tvm_ffi

    shutil.copytree(Path(tvm.__file__).parent, out / "tvm",
                    ignore=shutil.ignore_patterns("libtvm_compiler.so", "__pycache__", "*.a"))
    cudart = _cudart()
    if cudart is not None:  # libtvm_runtime_cuda needs it ($ORIGIN runpath); torch may ship another major
        shutil.copy(cudart, out / "tvm" / "lib" / cudart.name)
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if python == here:
        shutil.copytree(Path(tvm_ffi.__file__).parent, out / "tvm_ffi", ignore=shutil.ignore_patterns("__pycache__"))
        return
    import importlib.metadata as md

    with tempfile.TemporaryDirectory() as tmp:  # the same tvm_ffi release, built for that Python
        subprocess.run([sys.executable, "-m", "pip", "download", f"apache-tvm-ffi=={md.version('apache-tvm-ffi')}",
                        "--python-version", python, "--only-binary=:all:", "--no-deps", "-d", tmp],
                       check=True, capture_output=True)
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(out, [n for n in zf.namelist() if n.startswith("tvm_ffi/")])


def _cudart() -> Path | None:
    """The ``libcudart.so.N`` libtvm_runtime_cuda.so was linked against, from this machine's CUDA."""
    lib = Path(tvm.__file__).parent / "lib" / "libtvm_runtime_cuda.so"
    needed = subprocess.run(["ldd", str(lib)], capture_output=True, text=True).stdout
    for line in needed.splitlines():
        if "libcudart.so" in line and "=>" in line and "not found" not in line:
            return Path(line.split("=>")[1].split("(")[0].strip())
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="cuda-sm90")
    parser.add_argument("--out", default=str(REPO / "bench" / "gpu" / "bundle"))
    parser.add_argument("--models", default="fmnist-resnet8,resnet18", help="zoo models ('' for none)")
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--speed", action=argparse.BooleanOptionalAction, default=True,
                        help="the GEMM 4096^3 and ResNet-50 conv kernels")
    parser.add_argument("--python", default="3.12", help="Python version of the GPU machine")
    parser.add_argument("--archive", action="store_true", help="also write OUT.tar.xz (what the device call carries)")
    args = parser.parse_args(argv)
    spec = get_target(args.target)
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    for sub in ("kernels", "models", "pylib"):
        (out / sub).mkdir(parents=True)
    cases = [(c, True) for c in EXACT] + ([(c, False) for c in SPEED] if args.speed else [])
    table = []
    progress = Progress(len(cases), "kernels")
    for seed, ((name, kind, shape), exact) in enumerate(cases):
        table.append(_build_kernel(kind, shape, spec, out / "kernels" / name, seed, exact))
        progress.step()
    models = _models([m for m in args.models.split(",") if m], spec,
                     [int(b) for b in args.batches.split(",")], out / "models", print)
    _runtime(out / "pylib", args.python)
    manifest = {"target": spec.name, "arch": spec.target_json["arch"], "kernels": table, "models": models}
    (out / "bundle.json").write_text(json.dumps(manifest, indent=1))
    if args.archive:  # the device call carries at most 64 MiB: an xz tarball that run_all.sh unpacks
        with tarfile.open(out.with_suffix(".tar.xz"), "w:xz") as tar:
            tar.add(out, arcname=out.name)
        print(f"wrote {out.with_suffix('.tar.xz')} ({out.with_suffix('.tar.xz').stat().st_size / 2**20:.0f} MB)")
    print(f"wrote {out} ({sum(f.stat().st_size for f in out.rglob('*') if f.is_file()) / 2**20:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

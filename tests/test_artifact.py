import json
import tarfile

import numpy as np
import pytest
from graphs import assert_close_to_scale, run_ort, small_cnn

import compiler
from compiler.artifact import Artifact
from compiler.errors import SqueezeError


def test_roundtrip_matches_onnxruntime(cnn_artifact, cnn_input):
    module = compiler.load(cnn_artifact)
    out = module.run({"input": cnn_input})
    assert list(out) == [small_cnn().graph.output[0].name]
    assert_close_to_scale(next(iter(out.values())), run_ort(small_cnn(), {"input": cnn_input})[0])
    t = module.benchmark({"input": cnn_input}, repeat=5)
    assert len(t["samples_ms"]) == 5 and t["min_ms"] <= t["median_ms"] <= t["max_ms"]


def test_manifest_contents(cnn_artifact):
    with tarfile.open(cnn_artifact) as tar:
        assert sorted(tar.getnames()) == ["lib.so", "manifest.json"]
        manifest = json.load(tar.extractfile("manifest.json"))
    assert manifest["inputs"] == [{"name": "input", "shape": [1, 3, 16, 16], "dtype": "float32"}]
    assert manifest["target"]["name"] == "x86" and manifest["versions"]["tvm"].startswith("0.27")
    assert set(manifest["files"]) == {"lib.so"} and len(manifest["files"]["lib.so"]) == 64
    assert [row["op"] for row in manifest["summary"]["layers"]] == ["conv2d", "conv2d", "max_pool2d",
                                                                    "mean", "matmul"]


def _rewrite(src, dst, edit):
    with tarfile.open(src) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    members = edit(members)
    with tarfile.open(dst, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            import io

            tar.addfile(info, io.BytesIO(data))


def test_corrupted_library_detected(cnn_artifact, tmp_path):
    bad = tmp_path / "bad.tar"
    _rewrite(cnn_artifact, bad, lambda m: {**m, "lib.so": m["lib.so"][:-10] + b"0" * 10})
    with pytest.raises(SqueezeError, match="checksum mismatch for lib.so"):
        compiler.load(bad)


def _edit_target(cnn_artifact, path, **changes):
    def edit(m):
        manifest = json.loads(m["manifest.json"])
        for key, value in changes.items():
            manifest["target"][key] = value(manifest["target"][key]) if callable(value) else value
        return {**m, "manifest.json": json.dumps(manifest).encode()}

    _rewrite(cnn_artifact, path, edit)
    return path


def test_foreign_isa_rejected(cnn_artifact, tmp_path):
    bad = _edit_target(cnn_artifact, tmp_path / "foreign.tar", isa=lambda isa: isa + ["avx10.9-512"])
    with pytest.raises(SqueezeError, match="lacks \\(avx10.9-512\\)"):
        compiler.load(bad)


def test_llvm_tuning_flags_are_not_required(cnn_artifact, tmp_path):
    """Older manifests listed every LLVM feature of the CPU (tuning flags included): only
    instruction-set extensions may refuse a load."""
    old = _edit_target(cnn_artifact, tmp_path / "old.tar", isa=lambda isa: isa + ["fast-15bytenop", "false-deps-popcnt",
                                                                                 "allow-light-256-bit"])
    assert compiler.load(old).run({"input": np.zeros((1, 3, 16, 16), np.float32)})


def test_other_architecture_rejected_with_rpc_hint(cnn_artifact, tmp_path):
    arm = _edit_target(cnn_artifact, tmp_path / "arm.tar", arch="aarch64", triple="aarch64-linux-gnu")
    with pytest.raises(SqueezeError, match="built for aarch64 .*this host is x86_64: run it on an aarch64 board "
                                           "with --rpc host:port"):
        compiler.load(arm)


def test_manifest_records_where_the_code_runs(cnn_artifact):
    target = Artifact.read(cnn_artifact).manifest.target
    assert target["arch"] == "x86_64" and target["triple"].startswith("x86_64")
    assert target["device"] == "cpu"
    assert "avx2" in target["isa"] or target["name"] == "llvm"
    assert not [f for f in target["isa"] if "fast" in f or "false-deps" in f or "tuning" in f]


def test_not_a_tar(tmp_path):
    path = tmp_path / "x.tar"
    path.write_bytes(b"garbage" * 100)
    with pytest.raises(SqueezeError, match="not a Squeeze artifact \\(not a tar file\\)"):
        Artifact.read(path)


def test_input_validation(cnn_artifact, cnn_input):
    module = compiler.load(cnn_artifact)
    with pytest.raises(SqueezeError, match="has shape \\[1, 3, 8, 8\\], the model expects \\[1, 3, 16, 16\\]"):
        module.run({"input": cnn_input[:, :, :8, :8]})
    with pytest.raises(SqueezeError, match="dtype float64"):
        module.run({"input": cnn_input.astype(np.float64)})
    with pytest.raises(SqueezeError, match="missing \\['input'\\], unexpected \\['x'\\]"):
        module.run({"x": cnn_input})


def test_save_is_atomic(cnn_artifact, tmp_path):
    art = Artifact.read(cnn_artifact)
    with pytest.raises(SqueezeError, match="does not exist"):
        art.save(tmp_path / "nodir" / "a.tar")
    art.save(tmp_path / "a.tar")
    assert [p.name for p in tmp_path.iterdir()] == ["a.tar"]


@pytest.mark.parametrize("name", ["x86-vnni", "x86-avx512", "x86-avx2"])
def test_named_isa_artifacts_load_where_the_extensions_are(name, cnn_path, cnn_input, tmp_path):
    """An artifact built for an ISA level (an LLVM CPU that has it) runs on any host with those
    extensions, whichever vendor's CPU it is."""
    from targets import get_target

    spec = get_target(name)
    if not spec.runs_on_host():
        pytest.skip(f"host lacks {sorted(set(spec.isa) - set(get_target('x86').features))}")
    path = compiler.compile(cnn_path, name).save(tmp_path / f"{name}.tar")
    got = compiler.load(path).run({"input": cnn_input})
    want = compiler.load(compiler.compile(cnn_path, "llvm").save(tmp_path / "llvm.tar")).run({"input": cnn_input})
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-5)


def _output(module, x: np.ndarray) -> np.ndarray:
    return next(iter(module.run({"input": x}).values()))


def test_outputs_are_fresh_arrays(cnn_artifact, cnn_input):
    """Outputs are arrays of their own: a later call, or writing into one, changes no other."""
    module = compiler.load(cnn_artifact)
    first = _output(module, cnn_input)
    kept = first.copy()
    second = _output(module, -cnn_input)
    np.testing.assert_array_equal(first, kept)
    assert first.flags.owndata and first.flags.writeable and not np.shares_memory(first, second)
    first[...] = 0
    np.testing.assert_array_equal(_output(module, cnn_input), kept)


def test_strided_inputs_match_contiguous_ones(cnn_artifact, cnn_input):
    """Inputs of any strides (views, Fortran order, read-only) give the contiguous input's outputs
    and are left unchanged."""
    module = compiler.load(cnn_artifact)
    want = _output(module, cnn_input)
    wide = np.zeros((1, 3, 16, 32), np.float32)
    wide[..., ::2] = cnn_input
    frozen = cnn_input.copy()
    frozen.flags.writeable = False
    for arr in (wide[..., ::2], np.asfortranarray(cnn_input), frozen):
        before = arr.copy()
        np.testing.assert_array_equal(_output(module, arr), want)
        np.testing.assert_array_equal(arr, before)


def test_each_module_runs_with_the_thread_count_it_chose(cnn_artifact, cnn_input, monkeypatch):
    """A module sets the calling thread's TVM pool to the thread count it ran fastest with at
    load (1 or the pool's own), so modules that chose differently do not inherit each other's;
    a model slower than SERIAL_CHECK_MS is not timed and keeps the pool's count."""
    from compiler import runtime

    runtime._set_threads(0)
    pool = runtime._POOL_THREADS()
    if pool < 2:
        pytest.skip("needs TVM_NUM_THREADS >= 2")
    monkeypatch.setattr(runtime, "SERIAL_CHECK_MS", 0.0)
    parallel = compiler.load(cnn_artifact)
    assert parallel._default.threads == 0
    serial = compiler.load(cnn_artifact)
    serial._default.threads = 1
    np.testing.assert_allclose(_output(serial, cnn_input), _output(parallel, cnn_input), rtol=1e-6, atol=1e-6)
    _output(serial, cnn_input)
    assert runtime._POOL_THREADS() == 1
    _output(parallel, cnn_input)
    assert runtime._POOL_THREADS() == pool

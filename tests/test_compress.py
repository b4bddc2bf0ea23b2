"""Deep Compression storage end to end: lifted Huffman-coded weights in the artifact, API and CLI."""
import json
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from conftest import squeeze
from test_artifact import _rewrite
from test_rpc import rpc_server

import compiler
from compiler import cli, zoo
from compiler.compress import CompressConfig, onnx_weight_bytes
from compiler.deploy import export_bundle
from compiler.errors import SqueezeError


@pytest.fixture(scope="module")
def fmnist():
    data = zoo.bundled_slice()
    return zoo.model_path("fmnist-resnet8"), data["calib"][:64], data["test_x"][:4]


@pytest.fixture(scope="module")
def artifacts(fmnist, tmp_path_factory):
    """INT8 + k-means 16 with the weights in the library, and Huffman-coded beside it (batches 1 and 4)."""
    model, calib, _ = fmnist
    quant = compiler.QuantConfig("int8", calibration={"input": calib})
    out = tmp_path_factory.mktemp("compress")
    return {c: compiler.compile(model, quantize=quant, compress=c, batch_sizes=batches).save(out / f"{i}.tar")
            for i, (c, batches) in enumerate([("kmeans:16", (1,)), ("kmeans:16,huffman", (1, 4))])}


def test_lifted_weights_are_bit_identical(artifacts, fmnist):
    x = fmnist[2]
    plain, coded = (compiler.load(p) for p in artifacts.values())
    assert np.array_equal(plain.run({"input": x[:1]})["output"], coded.run({"input": x[:1]})["output"])
    assert coded.run({"input": x})["output"].shape == (4, 10)
    with tarfile.open(artifacts["kmeans:16,huffman"]) as tar:
        sizes = {m.name: m.size for m in tar.getmembers()}
        manifest = json.load(tar.extractfile("manifest.json"))
    with tarfile.open(artifacts["kmeans:16"]) as tar:
        assert sizes["lib.so"] < tar.getmember("lib.so").size - 30_000 and "weights.bin" not in tar.getnames()
    assert set(manifest["files"]) == {"lib.so", "lib_b4.so", "weights.bin"}
    params = manifest["weights"]["params"]
    assert params["lib.so"] and params["lib.so"] == params["lib_b4.so"]  # one copy for both batches
    int8 = [w for w in compiler.Artifact.read(artifacts["kmeans:16,huffman"]).lifted_weights()["lib.so"]
            if w.dtype == np.int8]
    assert len(int8) == 8 and all(len(np.unique(w[w != 0])) <= 16 for w in int8)  # <= k codes (+ layout padding)
    storage = manifest["summary"]["storage"]
    assert storage["stored_weight_bytes"] < storage["weight_bytes"] / 1.6 and storage["ratio"] > 7


def test_corrupted_weights_detected(artifacts, tmp_path):
    bad = tmp_path / "bad.tar"
    _rewrite(artifacts["kmeans:16,huffman"], bad, lambda m: {**m, "weights.bin": m["weights.bin"][::-1]})
    with pytest.raises(SqueezeError, match="checksum mismatch for weights.bin"):
        compiler.load(bad)


def test_rpc_and_deploy_bundle(artifacts, fmnist, tmp_path):
    x = fmnist[2][:1]
    path = artifacts["kmeans:16,huffman"]
    expected = compiler.load(path).run({"input": x})["output"]
    with rpc_server(sys.executable, 60) as address:
        assert np.array_equal(compiler.load(path, rpc=address).run({"input": x})["output"], expected)
    bundle = export_bundle(path, "x86", tmp_path / "bundle")
    np.savez(tmp_path / "x.npz", input=x)
    proc = subprocess.run([sys.executable, "run.py", "--inputs", tmp_path / "x.npz", "--outputs", tmp_path / "y.npz",
                           "--repeat", "0"], cwd=bundle, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert np.array_equal(np.load(tmp_path / "y.npz")["output"], expected)


def test_inspect_shows_storage(artifacts, capsys):
    assert cli.main(["inspect", str(artifacts["kmeans:16,huffman"])]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "weights:" in ln)
    assert "FP32 ONNX" in line and "Huffman-coded" in line and "x smaller" in line


@pytest.mark.parametrize("text, options", [("kmeans:16", {"clusters": 16}), ("huffman", {"huffman": True}),
                                           ("kmeans:8:per_channel,huffman",
                                            {"clusters": 8, "per_channel": True, "huffman": True})])
def test_parse(text, options):
    assert CompressConfig.parse(text) == CompressConfig(**options)


@pytest.mark.parametrize("text, message", [("kmeans:300", "4 to 256"), ("kmeans:2", "4 to 256"),
                                           ("kmeans", "unknown compress item 'kmeans'"),
                                           ("kmeans:16,zip", "unknown compress item 'zip'")])
def test_bad_compress(text, message):
    with pytest.raises(SqueezeError, match=message):
        CompressConfig.parse(text)


@pytest.mark.parametrize("text, message", [("kmeans:300", "codebook size must be 4 to 256"),
                                           ("lz4", "unknown compress item 'lz4'")])
def test_cli_bad_compress(cnn_path, tmp_path, text, message):
    proc = squeeze("compile", cnn_path, "-o", tmp_path / "m.tar", "--compress", text)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "m.tar").exists()


def test_onnx_weight_bytes_counts_constant_nodes():
    """Initializers and Constant nodes both hold weights (older exporters use only the latter)."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.zeros((4, 8), np.float32), "w")
    b = numpy_helper.from_array(np.zeros(8, np.int64), "b")
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=w), helper.make_node("MatMul", ["x", "c"], ["y"]),
         helper.make_node("Add", ["y", "b"], ["z"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 8])], [b])
    assert onnx_weight_bytes(helper.make_model(graph)) == 4 * 8 * 4 + 8 * 8

"""Input shapes: --input-shape forms, static batch overrides, dynamic dims told, multi-batch artifacts."""
import argparse
import io
import json
import re
import tarfile

import numpy as np
import onnx
import pytest
from graphs import GraphBuilder, run_ort, small_cnn
from onnx import helper, numpy_helper

import compiler
from compiler import calibration
from compiler.cli import main
from compiler.cli_args import batch_arg, shape_arg
from compiler.errors import SqueezeError
from compiler.frontend import import_onnx
from compiler.runtime import Module, random_inputs
from test_rpc import rpc_address  # noqa: F401  (the RPC server fixture)

FORMS = "name:1x3x224x224, name:1,3,224,224 or name:[1,3,224,224]"


def reshape_cnn(batch: int | str = 1) -> onnx.ModelProto:
    """Conv → + bias reshaped to [1, 4, 1, 1] (not a batch) → ReLU → Reshape [1, -1] (the batch) → Gemm."""
    g = GraphBuilder()
    x = g.conv("input", 3, 4, bias=False)
    g.inits.append(numpy_helper.from_array(np.array([1, 4, 1, 1], np.int64), "bias_shape"))
    g.inits.append(numpy_helper.from_array(np.array([1, -1], np.int64), "flat_shape"))
    x = g.op("Relu", [g.op("Add", [x, g.op("Reshape", [g.weight((4,)), "bias_shape"])])])
    x = g.op("Reshape", [x, "flat_shape"])
    out = g.op("Gemm", [x, g.weight((10, 4 * 8 * 8)), g.weight((10,))], transB=1)
    return g.model({"input": (batch, 3, 8, 8)}, out, (batch, 10))


def per_sample_ort(model, x):
    return np.concatenate([run_ort(model, {"input": x[i:i + 1]})[0] for i in range(len(x))])


def _x(n, shape=(3, 8, 8), seed=0):
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


# --- --input-shape and --batch parsing ------------------------------------------------------

@pytest.mark.parametrize("text", ["input:1x3x224x224", "input:1,3,224,224", "input:[1,3,224,224]",
                                  "input:[1, 3, 224, 224]", "input:1X3X224X224"])
def test_shape_arg_forms(text):
    assert shape_arg(text) == ("input", (1, 3, 224, 224))


def test_shape_arg_keeps_colons_in_names():
    assert shape_arg("a:b:8x4") == ("a:b", (8, 4))


@pytest.mark.parametrize("text", ["input", ":1x3", "input:", "input:1x3x", "input:[1,3", "input:1x-1x2",
                                  "input:0x3", "input:axb", "input:1.5x2"])
def test_shape_arg_bad_forms_name_the_accepted_ones(text):
    with pytest.raises(argparse.ArgumentTypeError) as err:
        shape_arg(text)
    assert FORMS in str(err.value) and "\n" not in str(err.value)


def test_batch_arg():
    assert batch_arg("1,8,32") == (1, 8, 32)
    assert batch_arg("8") == (8,)
    assert batch_arg("8, 1, 8") == (8, 1)
    for bad in ("", "0", "1,,2", "a", "-1"):
        with pytest.raises(argparse.ArgumentTypeError, match="positive integers"):
            batch_arg(bad)


def test_cli_bad_shape_exits_2(cnn_path, tmp_path, capsys):
    with pytest.raises(SystemExit) as code:
        main(["compile", str(cnn_path), "--input-shape", "input:1x3x", "-o", str(tmp_path / "a.tar")])
    assert code.value.code == 2
    assert FORMS in capsys.readouterr().err
    assert not (tmp_path / "a.tar").exists()


# --- static batch override -------------------------------------------------------------------

def test_static_batch_is_overridden():
    program = import_onnx(small_cnn(), {"input": (8, 3, 16, 16)})
    assert program.inputs[0].shape == (8, 3, 16, 16) and program.outputs[0].shape == (8, 10)


def test_other_static_dims_are_not():
    with pytest.raises(SqueezeError) as err:
        import_onnx(small_cnn(), {"input": (8, 4, 16, 16)})
    message = str(err.value)
    assert "input 'input' has shape 1x3x16x16, not 8x4x16x16" in message and "only the batch" in message
    assert "\n" not in message
    with pytest.raises(SqueezeError, match="has shape 1x3x16x16, not 1x3x16"):
        import_onnx(small_cnn(), {"input": (1, 3, 16)})


def test_reshape_of_the_batch_follows_it_and_others_stay():
    program = import_onnx(reshape_cnn(), {"input": (8, 3, 8, 8)})
    assert program.outputs[0].shape == (8, 10)


def test_batch_hard_coded_elsewhere_is_one_line():
    g = GraphBuilder()
    out = g.op("ReduceMean", [g.op("Relu", ["input"])], axes=[0], keepdims=1)
    model = g.model({"input": (1, 4)}, out, (1, 4))
    with pytest.raises(SqueezeError, match=r"output '.*' keeps batch 1 .*re-export the model with a dynamic batch"):
        import_onnx(model, {"input": (8, 4)})


def test_input_shape_override_runs_per_sample_like_batch_1():
    model = small_cnn()
    module = Module(compiler.compile(model, input_shapes={"input": (8, 3, 16, 16)}))
    x = _x(8, (3, 16, 16))
    out = module.run({"input": x})
    np.testing.assert_allclose(next(iter(out.values())), per_sample_ort(model, x), rtol=1e-4, atol=1e-4)


# --- dynamic dims fixed by default are told --------------------------------------------------

def _dynamic_model(dim):
    g = GraphBuilder()
    out = g.op("Relu", ["input"])
    graph = helper.make_graph(g.nodes, "g", [helper.make_tensor_value_info("input", 1, [dim, 3, 4])],
                              [helper.make_tensor_value_info(out, 1, [dim, 3, 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("dim, label", [("batch", " ('batch')"), (None, ""), (0, ""), (-1, "")])
def test_dynamic_dim_fixed_to_1_is_logged(dim, label):
    lines = []
    program = import_onnx(_dynamic_model(dim), log=lines.append)
    assert program.inputs[0].shape == (1, 3, 4)
    assert lines == [f"input 'input': dynamic dim 0{label} fixed to 1; pass --input-shape input:Nx3x4 to choose"]
    lines.clear()
    assert import_onnx(_dynamic_model(dim), {"input": (5, 3, 4)}, log=lines.append).inputs[0].shape == (5, 3, 4)
    assert lines == []


def test_compile_tells_dynamic_dims_on_stderr_without_log(capsys):
    compiler.compile(small_cnn(batch="N"))
    err = capsys.readouterr().err
    assert "input 'input': dynamic dim 0 ('N') fixed to 1; pass --input-shape input:Nx3x16x16 to choose" in err


# --- multi-batch artifacts -------------------------------------------------------------------

@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    path = tmp_path_factory.mktemp("multi") / "multi.tar"
    compiler.compile(reshape_cnn(), batch_sizes=(1, 8)).save(path)
    return path


def test_multi_batch_manifest_and_files(multi):
    with tarfile.open(multi) as tar:
        names = set(tar.getnames())
        manifest = json.loads(tar.extractfile("manifest.json").read())
    assert names == {"manifest.json", "lib.so", "lib_b8.so"}
    assert set(manifest["files"]) == {"lib.so", "lib_b8.so"}
    assert [(b["batch"], b["library"], b["inputs"][0]["shape"], b["outputs"][0]["shape"])
            for b in manifest["batches"]] == [(1, "lib.so", [1, 3, 8, 8], [1, 10]), (8, "lib_b8.so", [8, 3, 8, 8], [8, 10])]
    assert manifest["inputs"][0]["shape"] == [1, 3, 8, 8]


def test_multi_batch_runs_by_leading_dim(multi):
    module = compiler.load(multi)
    assert module.batches == [1, 8]
    x = _x(8)
    y8 = next(iter(module.run({"input": x}).values()))
    y1 = np.concatenate([next(iter(module.run({"input": x[i:i + 1]}).values())) for i in range(8)])
    assert y8.shape == (8, 10)
    np.testing.assert_allclose(y8, y1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y8, per_sample_ort(reshape_cnn(), x), rtol=1e-4, atol=1e-4)
    assert module.benchmark({"input": x}, repeat=2, warmup=0)["median_ms"] > 0
    assert random_inputs(module.manifest, batch=8)["input"].shape == (8, 3, 8, 8)


def test_unknown_batch_lists_the_batches(multi):
    module = compiler.load(multi)
    with pytest.raises(SqueezeError) as err:
        module.run({"input": _x(3)})
    assert "has batch 3" in str(err.value) and "holds batches 1, 8" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(SqueezeError, match="holds no batch 3"):
        random_inputs(module.manifest, batch=3)
    with pytest.raises(SqueezeError, match=r"expects \[8, 3, 8, 8\]"):
        module.run({"input": _x(8, (3, 8, 9))})


def test_corrupted_batch_library_is_refused(multi, tmp_path):
    bad = tmp_path / "bad.tar"
    with tarfile.open(multi) as src, tarfile.open(bad, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            if member.name == "lib_b8.so":
                data = data[:-1] + bytes([data[-1] ^ 1])
            dst.addfile(member, io.BytesIO(data))
    with pytest.raises(SqueezeError, match="checksum mismatch for lib_b8.so"):
        compiler.load(bad)


def test_single_batch_manifest_is_unchanged(cnn_artifact):
    with tarfile.open(cnn_artifact) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
        assert set(tar.getnames()) == {"manifest.json", "lib.so"}
    assert "batches" not in manifest and set(manifest["files"]) == {"lib.so"}
    assert compiler.load(cnn_artifact).batches == [1]


def test_bad_batch_sizes():
    for bad in ((), (0,), (2, -1), (1.5,)):
        with pytest.raises(SqueezeError, match="bad batch sizes"):
            compiler.compile(small_cnn(), batch_sizes=bad)


def test_quantized_batches_calibrate_once(monkeypatch):
    calls = []
    real = calibration.calibrate_module

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(calibration, "calibrate_module", counted)
    data = {"input": _x(16, (3, 16, 16), seed=3)}
    art = compiler.compile(small_cnn(), batch_sizes=(4, 1), quantize=compiler.QuantConfig("int8", calibration=data))
    assert len(calls) == 1
    module = Module(art)
    assert module.batches == [4, 1]
    x = _x(4, (3, 16, 16))
    y4 = next(iter(module.run({"input": x}).values()))
    y1 = np.concatenate([next(iter(module.run({"input": x[i:i + 1]}).values())) for i in range(4)])
    np.testing.assert_array_equal(y4, y1)


def test_batches_refuse_an_input_that_leads_with_another_dim():
    g = GraphBuilder()
    model = g.model({"x": (1, 4), "state": (2, 4)}, g.op("Add", ["x", "state"]), (2, 4))
    with pytest.raises(SqueezeError, match="input 'state' leads with 2, not the batch 1 of 'x'"):
        compiler.compile(model, batch_sizes=(1, 8))


def test_tune_prepares_each_batch_calibrated_once(monkeypatch):
    from compiler.api import prepare
    from targets import get_target

    calls = []
    real = calibration.calibrate_module
    monkeypatch.setattr(calibration, "calibrate_module", lambda *a, **k: calls.append(1) or real(*a, **k))
    data = {"input": _x(16, (3, 16, 16), seed=3)}
    programs = prepare(small_cnn(), get_target("x86"), batch_sizes=(4, 1),
                       quantize=compiler.QuantConfig("int8", calibration=data))
    assert len(calls) == 1
    assert {b: p.inputs[0].shape[0] for b, p in programs.items()} == {4: 4, 1: 1}
    assert all("quantization" in p.summary for p in programs.values())


@pytest.mark.slow
def test_cli_tune_batches_gives_each_the_whole_budget(cnn_path, tmp_path, capsys):
    np.savez(tmp_path / "calib.npz", input=_x(8, (3, 16, 16)))
    assert main(["tune", str(cnn_path), "--input-shape", "input:1x3x16x16", "--batch", "1,2", "--trials", "8",
                 "--quantize", "int8", "--calib", str(tmp_path / "calib.npz"), "--tuning-db", str(tmp_path / "db")]) == 0
    out = capsys.readouterr()
    text = out.out + out.err
    assert "tuning batch 1:" in text and "tuning batch 2:" in text
    assert text.count("8 trials in all") == 2, text
    workloads = (tmp_path / "db" / "database_workload.json").read_text().splitlines()
    tasks = [int(n) for n in re.findall(r"tuning (\d+) tasks", text)]
    assert len(workloads) >= sum(tasks), (workloads, tasks)  # every op's shape holds the batch: none shared
    module = compiler.load(_compile_tuned(cnn_path, tmp_path))
    assert module.batches == [1, 2]


def _compile_tuned(cnn_path, tmp_path):
    out = tmp_path / "t.tar"
    assert main(["compile", str(cnn_path), "--input-shape", "input:1x3x16x16", "--batch", "1,2", "--quantize", "int8",
                 "--calib", str(tmp_path / "calib.npz"), "--tuning-db", str(tmp_path / "db"), "-o", str(out)]) == 0
    return out


def test_cli_compile_batches(cnn_path, tmp_path):
    out = tmp_path / "b.tar"
    assert main(["compile", str(cnn_path), "--input-shape", "input:[1,3,16,16]", "--batch", "2,1", "-o", str(out)]) == 0
    module = compiler.load(out)
    assert module.batches == [2, 1]
    assert next(iter(module.run({"input": _x(2, (3, 16, 16))}).values())).shape == (2, 10)


# --- the bundled model -----------------------------------------------------------------------

@pytest.mark.slow
def test_bundled_model_static_batch_1_runs_batch_8():
    from compiler import zoo

    model = onnx.load(zoo.model_path("fmnist-resnet8"))
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    dim.Clear()
    dim.dim_value = 1  # as exported with a static batch 1
    data = zoo.bundled_slice()
    x, labels = data["test_x"][:64], data["test_y"][:64]
    fp32 = Module(compiler.compile(model, input_shapes={"input": (8, 1, 28, 28)}))
    ref = per_sample_ort(model, x)
    out = np.concatenate([next(iter(fp32.run({"input": x[i:i + 8]}).values())) for i in range(0, 64, 8)])
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)

    int8 = Module(compiler.compile(model, batch_sizes=(8, 1),
                                   quantize=compiler.QuantConfig("int8", calibration={"input": data["calib"][:64]})))
    y8 = np.concatenate([next(iter(int8.run({"input": x[i:i + 8]}).values())) for i in range(0, 64, 8)])
    y1 = np.concatenate([next(iter(int8.run({"input": x[i:i + 1]}).values())) for i in range(64)])
    np.testing.assert_array_equal(y8, y1)
    assert (y8.argmax(1) == labels).mean() >= (ref.argmax(1) == labels).mean() - 0.05


@pytest.mark.slow
def test_multi_batch_over_rpc(multi, rpc_address):
    module = compiler.load(multi, rpc=rpc_address)
    x = _x(8)
    np.testing.assert_allclose(next(iter(module.run({"input": x}).values())),
                               next(iter(compiler.load(multi).run({"input": x}).values())), rtol=1e-6, atol=1e-6)
    assert next(iter(module.run({"input": x[:1]}).values())).shape == (1, 10)

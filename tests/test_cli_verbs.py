"""``squeeze bench``, ``eval``, ``--version``, ``run --top-k`` and ``inspect`` of artifacts: exit codes,
outputs checked against independent numpy / ONNX Runtime computations, nothing written on error.

The cases call ``compiler.cli.main`` in this process (no 3 s start-up per case; ``bench``'s engines
still run in their own worker processes; tests/test_cli.py runs the real command).
"""
import json
import re

import numpy as np
import pytest

import compiler
from compiler import zoo
from compiler.cli import main

FMNIST = zoo.model_path("fmnist-resnet8")
SAMPLES = 200


@pytest.fixture(scope="module")
def data():
    return zoo.bundled_slice()


@pytest.fixture(scope="module")
def int8_art(data, tmp_path_factory):
    path = tmp_path_factory.mktemp("verbs") / "fmnist_int8.tar"
    config = compiler.QuantConfig("int8", calibration={"input": data["calib"][:32]}, observer="moving_average")
    compiler.compile(FMNIST, quantize=config).save(path)
    return path


@pytest.fixture(scope="module")
def int4_art(cnn_path, tmp_path_factory):
    path = tmp_path_factory.mktemp("verbs") / "cnn_int4.tar"
    calib = np.random.default_rng(0).standard_normal((16, 3, 16, 16)).astype(np.float32)
    compiler.compile(cnn_path, quantize=compiler.QuantConfig("int4", calibration={"input": calib})).save(path)
    return path


@pytest.fixture(scope="module")
def cnn_b4(tmp_path_factory):
    """small_cnn compiled at batch 4, and the batch-1 (static) ONNX model it came from."""
    import onnx
    from graphs import small_cnn

    folder = tmp_path_factory.mktemp("verbs")
    onnx.save(small_cnn(batch=4), folder / "cnn4.onnx")
    onnx.save(small_cnn(batch=1), folder / "cnn1.onnx")
    compiler.compile(folder / "cnn4.onnx").save(folder / "cnn4.tar")
    return folder / "cnn4.tar", folder / "cnn1.onnx"


@pytest.fixture(scope="module")
def labelled(data, tmp_path_factory):
    path = tmp_path_factory.mktemp("verbs") / "labelled.npz"
    np.savez(path, input=data["test_x"][:SAMPLES], labels=data["test_y"][:SAMPLES])
    return path


def _cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(code, err, match):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("squeeze: error:"), err
    assert match in lines[0], lines[0]


# ------------------------------------------------------------------------------------------ --version
def test_version(capsys):
    import onnxruntime
    import tvm

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert f"squeeze {compiler.__version__}" in out
    assert f"TVM {tvm.__version__}" in out and f"ONNX Runtime {onnxruntime.__version__}" in out


# ------------------------------------------------------------------------------------------ eval
def _numpy_counts(art, data, k):
    """Top-1 / top-k counts of the artifact and of ONNX Runtime on FP32, computed here sample by sample."""
    import onnxruntime as ort

    module = compiler.load(art)
    x, y = data["test_x"][:SAMPLES], data["test_y"][:SAMPLES]
    scores = np.concatenate([module.run({"input": x[i:i + 1]})["output"] for i in range(SAMPLES)])
    ref = ort.InferenceSession(str(FMNIST), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    ours_k = np.argsort(scores, axis=1)[:, ::-1][:, :k]
    top1, ref1 = scores.argmax(1), ref.argmax(1)
    return {"top1": int((top1 == y).sum()), "topk": int(sum(y[i] in ours_k[i] for i in range(SAMPLES))),
            "reference_top1": int((ref1 == y).sum()), "agreement_top1": int((top1 == ref1).sum()),
            "agreement_topk": int(sum(ref1[i] in ours_k[i] for i in range(SAMPLES)))}


def test_eval_matches_numpy(capsys, int8_art, labelled, data, tmp_path):
    out_json = tmp_path / "eval.json"
    code, out, err = _cli(capsys, "eval", int8_art, "--data", labelled, "--top-k", 3, "--reference", FMNIST,
                          "--json", out_json)
    assert code == 0, err
    expected = _numpy_counts(int8_art, data, 3)
    report = json.loads(out_json.read_text())
    for key, count in expected.items():
        assert report[key]["correct"] == count, key
    assert f"({expected['top1']}/{SAMPLES})" in re.search(r"top-1 accuracy.*", out).group(0)
    assert f"({expected['topk']}/{SAMPLES})" in re.search(r"top-3 accuracy.*", out).group(0)
    assert f"({expected['agreement_top1']}/{SAMPLES})" in re.search(r"top-1 agreement.*", out).group(0)
    assert f"({expected['agreement_topk']}/{SAMPLES})" in re.search(r"within the top-3.*", out).group(0)
    assert expected["top1"] / SAMPLES > 0.8 and expected["agreement_top1"] / SAMPLES > 0.95


def _bad_data(kind, data, path):
    x, y = data["test_x"][:10], data["test_y"][:10]
    arrays = {
        "no_labels": {"input": x},
        "count": {"input": x, "labels": y[:9]},
        "shape": {"input": x[:, 0], "labels": y},
        "wrong_key": {"images": x, "labels": y},
        "extra": {"input": x, "labels": y, "other": y},
        "float_labels": {"input": x, "labels": y.astype(np.float32)},
        "label_range": {"input": x, "labels": y + 10},
        "int_input": {"input": (x * 10).astype(np.int64), "labels": y},
    }[kind]
    np.savez(path, **arrays)


@pytest.mark.parametrize("kind, match", [
    ("no_labels", "has no 'labels' array"),
    ("count", "has 10 samples and 'labels' 9: give one label per sample"),
    ("shape", "has shape [10, 28, 28], the model takes samples of shape [1, 28, 28]"),
    ("wrong_key", "has no array for input 'input' (found: images)"),
    ("extra", "arrays the model does not take (other)"),
    ("float_labels", "integer class id"),
    ("label_range", "the model has 10 classes"),
    ("int_input", "is int64, the model takes float32"),
])
def test_eval_bad_data(capsys, int8_art, data, tmp_path, kind, match):
    bad = tmp_path / "bad.npz"
    _bad_data(kind, data, bad)
    code, _, err = _cli(capsys, "eval", int8_art, "--data", bad, "--json", tmp_path / "e.json")
    _one_line_error(code, err, match)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz"]


@pytest.mark.parametrize("extra, match", [
    (["--top-k", "11"], "more than the 10 classes"),
    (["--top-k", "0"], "--top-k 0: give a positive number"),
    (["--reference", "missing.onnx"], "ONNX model not found"),
    (["--json", "nodir/e.json"], "does not exist"),
])
def test_eval_bad_options(capsys, int8_art, labelled, tmp_path, extra, match):
    code, _, err = _cli(capsys, "eval", int8_art, "--data", labelled, *extra)
    _one_line_error(code, err, match)


def test_eval_onnx_instead_of_artifact(capsys, labelled):
    code, _, err = _cli(capsys, "eval", FMNIST, "--data", labelled)
    _one_line_error(code, err, "is an ONNX model: compile it first")


# ------------------------------------------------------------------------------------------ bench
def test_bench_against_ort(capsys, cnn_b4, tmp_path):
    """Batch-4 artifact against ONNX Runtime on the batch-1 model (re-batched for the comparison)."""
    art, onnx1 = cnn_b4
    out_json = tmp_path / "bench.json"
    code, stdout, err = _cli(capsys, "bench", art, "--vs", onnx1, "--batch", 4, "--rounds", 2, "--runs", 3,
                             "--threads", 1, "--json", out_json)
    assert code == 0, err
    assert "round 1/2" in err and "round 2/2" in err
    report = json.loads(out_json.read_text())
    assert report["batch"] == 4 and report["threads"] == 1 and report["baseline"].startswith("onnxruntime")
    engines = report["engines"]
    assert len(engines) == 2
    ort_median = engines[report["baseline"]]["median_ms"]
    for name, s in engines.items():
        t = np.asarray(s["samples_ms"])
        assert len(t) == 2 * 3 and len(s["round_medians_ms"]) == 2
        assert s["median_ms"] == pytest.approx(np.median(t)) and s["min_ms"] == pytest.approx(t.min())
        assert s["p90_ms"] == pytest.approx(np.percentile(t, 90)) and s["p99_ms"] == pytest.approx(np.percentile(t, 99))
        assert s["mean_ms"] == pytest.approx(t.mean())
        assert s["throughput"] == pytest.approx(4e3 / s["median_ms"])
        assert s["vs_baseline"] == pytest.approx(ort_median / s["median_ms"])
        line = next(ln for ln in stdout.splitlines() if ln.startswith(name))
        cells = line[len(name):].split()
        assert cells[0] == f"{s['median_ms']:.3f}" and cells[4] == f"{s['mean_ms']:.3f}"
        assert cells[5] == f"{s['throughput']:,.1f}" and cells[6] == f"{s['vs_baseline']:.2f}x"
    assert "vs_ort" in stdout


@pytest.mark.parametrize("extra, match", [
    (["--batch", "8", "--json", "b.json"], "is compiled for batch 1, not 8: recompile with --input-shape input:8x1x28x28"),
    (["--rounds", "0", "--json", "b.json"], "--rounds 0: give a positive number"),
    (["--vs", "missing.onnx", "--json", "b.json"], "ONNX model not found"),
    (["--json", "out.txt"], "give a .json file name"),
])
def test_bench_errors(capsys, int8_art, tmp_path, monkeypatch, extra, match):
    monkeypatch.chdir(tmp_path)
    code, _, err = _cli(capsys, "bench", int8_art, *extra)
    _one_line_error(code, err, match)
    assert list(tmp_path.iterdir()) == []


def test_eval_pads_the_last_batch(capsys, cnn_b4, tmp_path):
    """10 samples on a batch-4 artifact: 3 calls, the last padded; counts as ONNX Runtime's."""
    import onnxruntime as ort
    from graphs import small_cnn

    art, _ = cnn_b4
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((10, 3, 16, 16)).astype(np.float32), rng.integers(0, 10, 10)
    np.savez(tmp_path / "d.npz", input=x, labels=y)
    code, out, err = _cli(capsys, "eval", art, "--data", tmp_path / "d.npz", "--top-k", 2, "--json", tmp_path / "e.json")
    assert code == 0, err
    ref = np.concatenate([ort.InferenceSession(small_cnn(batch=1).SerializeToString(),
                                               providers=["CPUExecutionProvider"]).run(None, {"input": x[i:i + 1]})[0]
                          for i in range(10)])
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["batch"] == 4 and report["samples"] == 10
    assert report["top1"]["correct"] == int((ref.argmax(1) == y).sum())
    assert report["topk"]["correct"] == int(sum(y[i] in np.argsort(ref[i])[-2:] for i in range(10)))


def test_bench_vs_other_inputs(capsys, int8_art, cnn_path):
    code, _, err = _cli(capsys, "bench", int8_art, "--vs", cnn_path)
    _one_line_error(code, err, "the artifact takes [1, 1, 28, 28]")


def test_bench_onnx_model(capsys):
    code, _, err = _cli(capsys, "bench", FMNIST)
    _one_line_error(code, err, "bench times a compiled artifact (.tar)")


# ------------------------------------------------------------------------------------------ run --top-k
def test_run_top_k(capsys, cnn_artifact, cnn_input, tmp_path):
    np.savez(tmp_path / "x.npz", input=cnn_input)
    code, out, err = _cli(capsys, "run", cnn_artifact, "--inputs", tmp_path / "x.npz", "--top-k", 3)
    assert code == 0, err
    scores = compiler.load(cnn_artifact).run({"input": cnn_input})
    name, arr = next(iter(scores.items()))
    expected = np.argsort(arr[0])[::-1][:3]
    assert out.splitlines()[0] == f"{name}: shape [1, 10] float32, top 3 of 10 per sample"
    got = [int(c) for c in re.findall(r"(\d+) \(", out.splitlines()[1])]
    assert got == list(expected)
    assert "[[" not in out  # not the whole array
    code, _, err = _cli(capsys, "run", cnn_artifact, "--inputs", tmp_path / "x.npz", "--top-k", 0)
    _one_line_error(code, err, "--top-k 0")


# ------------------------------------------------------------------------------------------ inspect
def test_inspect_int8_and_int4(capsys, int8_art, int4_art, tmp_path):
    code, out8, err = _cli(capsys, "inspect", int8_art, "--json", tmp_path / "i8.json")
    assert code == 0, err
    assert "quantization: int8 = w8_sym_per_channel__a8_asym_per_tensor" in out8 and "observer moving_average" in out8
    report = json.loads((tmp_path / "i8.json").read_text())
    layers = [r for r in report["layers"] if r["op"] in ("conv2d", "matmul")]
    assert len(layers) == 10 and all(r["bits"] == "w8a8" for r in layers)
    kernels = {k["name"]: k for k in report["kernels"]}
    assert len({r["kernel"] for r in layers}) == 10  # one kernel per layer
    for r in layers:  # the kernel tied to a layer does that layer's arithmetic
        assert kernels[r["kernel"]]["ops"] == 2 * r["macs"] and r["schedule"] == kernels[r["kernel"]]["kernel"]
        assert r["name"] in out8
    longest = max((r["kernel"] for r in layers), key=len)
    assert len(longest) > 60 and longest not in out8 and longest[:57] + "..." in out8
    code, wide, _ = _cli(capsys, "inspect", int8_art, "--wide")
    assert code == 0 and longest in wide and "w8_sym_per_channel__a8_asym_per_tensor  " in wide

    code, out4, err = _cli(capsys, "inspect", int4_art)
    assert code == 0, err
    assert "quantization: int4 = w4_sym_per_channel__a8_asym_per_tensor (4-bit weights" in out4
    assert " w4a8 " in out4 and " w8a8 " not in out4


def test_inspect_profile_ties_layers(capsys, cnn_artifact, tmp_path):
    out_json = tmp_path / "p.json"
    code, out, err = _cli(capsys, "inspect", cnn_artifact, "--profile", "--json", out_json)
    assert code == 0, err
    assert "quantization: none (float32)" in out and "kernels of one run (random inputs)" in out
    report = json.loads(out_json.read_text())
    layers = [r for r in report["layers"] if r["op"] in ("conv2d", "matmul")]
    prof = report["profile"]
    for r in layers:
        row = next(p for p in prof if p.get("layer") == r["name"])
        assert row["kernel"] == r["kernel"] and row["us"] == r["us"] and r["bits"] == "float"
    assert sum(1 for p in prof if p.get("layer")) == len(layers)


@pytest.mark.parametrize("extra, match", [
    (["--json", "nodir/x.json"], "does not exist"),
    (["--inputs", "x.npz"], "--inputs feeds --profile"),
])
def test_inspect_artifact_errors(capsys, cnn_artifact, tmp_path, extra, match):
    code, _, err = _cli(capsys, "inspect", cnn_artifact, *[str(tmp_path / e) if "/" in e else e for e in extra])
    _one_line_error(code, err, match)
    assert list(tmp_path.iterdir()) == []


def test_inspect_onnx_json_and_wide(capsys, cnn_path, tmp_path):
    code, _, err = _cli(capsys, "inspect", cnn_path, "--wide")
    _one_line_error(code, err, "--wide shows the full kernel names of an artifact")
    code, out, err = _cli(capsys, "inspect", cnn_path, "--json", tmp_path / "m.json")
    assert code == 0, err
    rows = json.loads((tmp_path / "m.json").read_text())["layers"]
    assert [r["op"] for r in rows].count("conv2d") == 2 == out.count(" conv2d ")

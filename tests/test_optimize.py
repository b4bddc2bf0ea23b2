"""``compiler.optimize`` / ``squeeze optimize``: goals, bad input, the Pareto front, resuming, the
per-layer precision map it compiles with, and one real search on the Fashion-MNIST ResNet-8."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import squeeze
from test_cli import _one_line_error

import compiler
from compiler import zoo
from compiler.errors import SqueezeError
from compiler.search import Candidate, _Search, choose, parse_budget, parse_goal, pareto_front

optimize = compiler.optimize  # the API entry point

MODEL = str(zoo.model_path("fmnist-resnet8"))
SHAPES = {"input": (1, 1, 28, 28)}


@pytest.fixture(scope="module")
def data():
    s = zoo.bundled_slice()
    return {"calib": {"input": s["calib"][:32]}, "val": {"input": s["test_x"][:200], "labels": s["test_y"][:200]}}


@pytest.fixture(scope="module")
def files(data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("opt")
    np.savez(folder / "calib.npz", **data["calib"])
    np.savez(folder / "val.npz", **data["val"])
    np.savez(folder / "unlabelled.npz", input=data["val"]["input"])
    return folder


# ---------------------------------------------------------------------------------------- goals
@pytest.mark.parametrize("text, quantity, bound", [("drop<=1%", "drop", 0.01), ("drop <= 0.5 %", "drop", 0.005),
                                                   ("agreement>=99%", "agreement", 0.99), ("top1>=90%", "top1", 0.9),
                                                   ("metric>=0.8", "metric", 0.8)])
def test_goal_parses(text, quantity, bound):
    goal = parse_goal(text)
    assert (goal.quantity, goal.bound) == (quantity, pytest.approx(bound))


@pytest.mark.parametrize("text, match", [("drop<=1", "in percent"), ("drop>=1%", "bounded with <="),
                                         ("accuracy>=90%", "does not parse"), ("top1>=120%", "above 100%"),
                                         ("", "does not parse")])
def test_bad_goal_is_one_line(text, match):
    with pytest.raises(SqueezeError, match=match) as err:
        parse_goal(text)
    assert "\n" not in str(err.value)


def test_goal_met_and_gap():
    goal = parse_goal("drop<=1%")
    assert goal.met(0.905, 0.914) and not goal.met(0.90, 0.914)
    assert goal.gap(0.90, 0.914) == pytest.approx(0.004)
    assert parse_goal("agreement>=99%").met(0.99, 1.0)


def test_budget_parses():
    assert parse_budget("15m") == 900 and parse_budget("90s") == 90 and parse_budget("1.5h") == 5400
    assert parse_budget(30) == 30
    for bad in ("soon", "0", "-5m"):
        with pytest.raises(SqueezeError, match="budget"):
            parse_budget(bad)


@pytest.mark.parametrize("goal, budget, match", [("drop<=1", "15m", "in percent"),
                                                 ("fast", "15m", "does not parse"),
                                                 ("drop<=1%", "later", "budget 'later' does not parse")])
def test_cli_bad_goal_or_budget_exit_2(goal, budget, match, files, tmp_path):
    proc = squeeze("optimize", MODEL, "--calib", files / "calib.npz", "--validation", files / "val.npz",
                   "--goal", goal, "--budget", budget, "-o", tmp_path / "best.tar")
    _one_line_error(proc, match)
    assert not (tmp_path / "best.tar").exists()


# ---------------------------------------------------------------------------------------- bad input
def test_labels_missing_is_one_line(data, files, tmp_path):
    with pytest.raises(SqueezeError, match="needs labels") as err:
        optimize(MODEL, calibration=data["calib"], validation={"input": data["val"]["input"]}, goal="top1>=90%",
                 output=tmp_path / "best.tar")
    assert "\n" not in str(err.value)
    proc = squeeze("optimize", MODEL, "--calib", files / "calib.npz", "--validation", files / "unlabelled.npz",
                   "--metric", "top1", "-o", tmp_path / "best.tar")
    _one_line_error(proc, "needs labels")


def test_search_dir_of_another_model_is_refused(data, tmp_path):
    folder = tmp_path / "best.search"
    folder.mkdir()
    (folder / "search.json").write_text(json.dumps({"format": 1, "records": [], "identity": {
        "model_name": "mobilenetv2.onnx", "model_sha256": "ab" * 32}}))
    with pytest.raises(SqueezeError) as err:
        optimize(MODEL, calibration=data["calib"], validation=data["val"], output=tmp_path / "best.tar",
                 input_shapes=SHAPES)
    assert "mobilenetv2.onnx" in str(err.value) and "fmnist_resnet8.onnx" in str(err.value)
    assert not (tmp_path / "best.tar").exists()


def test_budget_too_small_returns_int8_with_a_note(data, tmp_path):
    result = optimize(MODEL, calibration=data["calib"], validation=data["val"], output=tmp_path / "best.tar",
                      input_shapes=SHAPES, budget="1s")
    assert result.record is None and not result.met and "too small" in result.note and "INT8" in result.note
    out = compiler.load(tmp_path / "best.tar").run({"input": data["val"]["input"][:1]})  # usable
    assert next(iter(out.values())).shape == (1, 10)
    quant = compiler.Artifact.read(tmp_path / "best.tar").manifest.summary["quantization"]
    assert quant["layers"] and all(r["mode"].startswith("w8_") for r in quant["layers"])  # the plain INT8 model


# ---------------------------------------------------------------------------------------- Pareto front
def _rec(key, latency, metric, size, meets=True):
    return {"key": key, "latency_ms": latency, "metric": metric, "size_bytes": size, "meets": meets,
            "gap": 0.0 if meets else 0.9 - metric}


def test_pareto_front_and_choice():
    records = [_rec("a", 1.0, 0.92, 100), _rec("b", 0.5, 0.90, 100), _rec("c", 0.6, 0.89, 100),  # c: b dominates
               _rec("d", 0.3, 0.80, 100, meets=False), _rec("e", 0.5, 0.90, 50),  # e dominates b (smaller)
               {"key": "f", "error": "boom", "meets": False}, {**_rec("g", None, 0.95, 10), "latency_ms": None}]
    front = [r["key"] for r in pareto_front(records)]
    assert front == ["d", "e", "a"]
    best, met = choose(records)
    assert met and best["key"] == "e"  # fastest meeting the goal, ties broken by size
    best, met = choose([r for r in records if r["key"] == "d"])
    assert not met and best["key"] == "d"  # none meets: the closest, said so
    assert choose([records[5]]) == (None, False)


def test_candidate_keys_are_canonical():
    a = Candidate().set_precision("conv2d_3", "int4").set_prune("g", 0.5).set_precision("conv2d_1", "float")
    b = Candidate().set_prune("g", 0.5).set_precision("conv2d_1", "float").set_precision("conv2d_3", "int4")
    assert a.key == b.key and Candidate.from_json(json.loads(json.dumps(a.to_json()))) == a
    assert a.set_precision("conv2d_3", None).precision == (("conv2d_1", "float"),)


# ---------------------------------------------------------------------------------------- resume
def _fake_measure(calls):
    """A stand-in for compile + run + time: latency falls with pruning and low bits, the metric too."""
    def measure(self, c):
        calls.append(c.key)
        prune = sum(r for _, r in c.prune)
        low = sum(1 for _, m in c.precision if m != "float")
        path = self.artifact_path(c)
        path.write_bytes(c.key.encode())
        layers = [{"layer": row["layer"], "name": row["name"], "op": row["op"], "us": row["us"] * (1 - prune / 4),
                   "macs": row["macs"] - int(100 * prune)} for row in self.fake_layers]
        metric = 0.93 - 0.004 * low - 0.02 * prune
        latency = 0.02 * (1 - prune / 3 - low / 40)
        return {"artifact": str(path.relative_to(self.dir)), "metric": metric, "drop": 0.93 - metric,
                "size_bytes": 1000 - len(calls), "layers": layers, "meets": self.goal.met(metric, 0.93),
                "gap": self.goal.gap(metric, 0.93), "kernels_ms": latency, "int8_kernels_ms": 0.02,
                "estimated_ms": latency, "latency_ms": latency, "vs_int8": latency / 0.02}
    return measure


def test_resume_continues_without_re_evaluating(data, tmp_path, monkeypatch):
    import onnx

    model = onnx.load(MODEL)
    names = [n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    fake = [{"layer": f"{'matmul' if n.endswith('Gemm') else 'conv2d'}_{i}", "name": n,
             "op": "matmul" if n.endswith("Gemm") else "conv2d", "us": 1.0 + i, "macs": 1000} for i, n in enumerate(names)]
    calls: list[str] = []
    monkeypatch.setattr(_Search, "measure", _fake_measure(calls))
    monkeypatch.setattr(_Search, "build", lambda self, c: self.artifact_path(c).write_bytes(b"x") or
                        self.artifact_path(c))
    monkeypatch.setattr(_Search, "fake_layers", fake, raising=False)
    kwargs = dict(calibration=data["calib"], validation=data["val"], output=tmp_path / "best.tar",
                  input_shapes=SHAPES, goal="drop<=1%", budget="1h", metric=lambda out, d: 0.93)
    first = optimize(MODEL, max_candidates=4, **kwargs)
    assert first.evaluated == 4 and len(calls) == 4
    seen = list(calls)
    second = optimize(MODEL, max_candidates=3, **kwargs)
    assert second.evaluated == 3 and len(calls) == 7
    assert not set(calls[4:]) & set(seen)  # nothing evaluated twice
    state = json.loads((tmp_path / "best.search" / "search.json").read_text())
    assert [r["key"] for r in state["records"][:4]] == seen and len(state["records"]) == 7
    assert (tmp_path / "best.tar").read_bytes().decode() == second.record["key"]


# ---------------------------------------------------------------------------------------- precision map
def test_layer_schemes_give_one_layer_int4_weights(data, tmp_path):
    art = compiler.compile(MODEL, input_shapes=SHAPES, quantize=compiler.QuantConfig(
        "int8", calibration=data["calib"], layer_schemes={"conv2d_1": "int4"}, skip=["conv2d_0"]))
    modes = {r["index"]: r["mode"] for r in art.manifest.summary["quantization"]["layers"]}
    assert modes[0] == "float" and modes[1].startswith("w4_") and modes[2].startswith("w8_")
    with pytest.raises(SqueezeError, match="not in the model"):
        compiler.compile(MODEL, input_shapes=SHAPES, quantize=compiler.QuantConfig(
            "int8", calibration=data["calib"], layer_schemes={"conv2d_99": "int4"}))
    with pytest.raises(SqueezeError, match="activations"):
        compiler.compile(MODEL, input_shapes=SHAPES, quantize=compiler.QuantConfig(
            "int8", calibration=data["calib"], layer_schemes={"conv2d_1": "int8_sym"}))


# ---------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_small_real_search_from_the_cli(files, tmp_path):
    out, folder = tmp_path / "best.tar", tmp_path / "search"
    proc = squeeze("optimize", MODEL, "--input-shape", "input:1x1x28x28", "--calib", files / "calib.npz",
                   "--validation", files / "val.npz", "--goal", "drop<=2%", "--budget", "4m", "--rounds", "2",
                   "--runs", "20", "-o", out, "--search-dir", folder)
    assert proc.returncode == 0, proc.stderr
    state = json.loads((folder / "search.json").read_text())
    assert len(state["records"]) >= 2 and state["front"] and "chosen" in state
    chosen = next(r for r in state["records"] if r["key"] == state["chosen"])
    base = next(r for r in state["records"] if r["key"] == Candidate().key)
    assert chosen["latency_ms"] <= base["latency_ms"] and (chosen["meets"] == state["met"])
    model, val = compiler.load(out), np.load(files / "val.npz")
    scores = np.concatenate([next(iter(model.run({"input": x[None]}).values())) for x in val["input"][:50]])
    top1 = float(np.mean(np.argmax(scores, 1) == val["labels"][:50]))
    assert top1 > 0.8  # the returned model works
    assert "optimize [1]" in proc.stderr  # progress lines, one per candidate

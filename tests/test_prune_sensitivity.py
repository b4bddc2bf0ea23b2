"""Sensitivity-derived ratios: the validation cross-entropy score, the local search, the surface."""
import numpy as np
import pytest
from conftest import squeeze
from graphs import run_ort
from test_prune_graphs import GRAPHS

from compiler.errors import SqueezeError
from passes.prune import PruneConfig, prune_model
from passes.prune.calibration import Runner, outputs_of
from passes.prune.pruner import analyze
from passes.prune.ratios import local_search, make_plan
from passes.prune.validation import cross_entropy, load_validation


@pytest.fixture(scope="module")
def residual():
    model, shape = GRAPHS["residual"]()
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((32, *shape[1:])).astype(np.float32)
    val = rng.standard_normal((24, *shape[1:])).astype(np.float32)
    labels = np.array([int(run_ort(model, {"input": v[None]})[0].argmax()) for v in val])  # the model's own picks
    labels[::3] = (labels[::3] + 1) % 10                                                  # and some it gets wrong
    return model, calib, {"input": val, "labels": labels}


def test_cross_entropy_matches_numpy(residual):
    model, _, val = residual
    proto, program, graph, _ = analyze(model)
    batches, labels = load_validation(val, program.inputs)
    got = cross_entropy(Runner(program, outputs_of(program)), batches, labels, program.params)
    logits = np.concatenate([run_ort(model, b)[0] for b in batches]).astype(np.float64)
    logp = logits - logits.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    assert got == pytest.approx(-logp[np.arange(len(logits)), val["labels"]].mean(), rel=1e-5)


def test_local_search_moves_channels_to_where_they_cost_more(residual):
    _, program, graph, _ = analyze(residual[0])
    scores = {g.id: np.arange(g.size, 0, -1, dtype=float) for g in graph.groups}
    price = {g.id: float(i + 1) ** 2 for i, g in enumerate(graph.groups)}      # later groups cost more

    def error(plan):
        return sum(price[gid] * (1 - len(kept) / next(g.size for g in graph.groups if g.id == gid))
                   for gid, kept in plan.items())

    start = {g.id: 0.3 for g in graph.groups}
    target = 1 - graph.macs(make_plan(graph.groups, scores, start)) / graph.macs()
    ratios = local_search(graph, scores, error, start, target, steps=3)
    plan = make_plan(graph.groups, scores, ratios)
    assert error(plan) < error(make_plan(graph.groups, scores, start))
    assert target <= 1 - graph.macs(plan) / graph.macs() <= target + 0.02
    assert ratios[graph.groups[-1].id] < 0.3 < ratios[graph.groups[0].id]


def test_sensitivity_with_validation_meets_the_mac_target(residual):
    model, calib, val = residual
    config = PruneConfig("filter", "sensitivity", "l1", calibration={"input": calib}, max_samples=32,
                         macs_target=0.3, validation=val, search_steps=1)
    s = prune_model(model, config).summary
    assert 1 - s["macs_after"] / s["macs_before"] >= 0.3


@pytest.mark.parametrize("kwargs, match", [
    ({"ratio": 0.5, "validation": "v.npz"}, "serve ratio='sensitivity' only"),
    ({"ratio": "sensitivity", "search_steps": -1, "calibration": "c.npz"}, "search_steps must be"),
], ids=["validation-without-sensitivity", "negative-search"])
def test_bad_settings_fail_in_one_line(kwargs, match):
    with pytest.raises(SqueezeError, match=match) as err:
        PruneConfig(**kwargs)
    assert "\n" not in str(err.value)


def test_validation_without_labels_fails_in_one_line(residual):
    model, calib, val = residual
    config = PruneConfig("filter", "sensitivity", calibration={"input": calib}, max_samples=8,
                         validation={"input": val["input"]})
    with pytest.raises(SqueezeError, match="lacks 'labels'") as err:
        prune_model(model, config)
    assert "\n" not in str(err.value)


@pytest.mark.slow  # 25 s; test_sensitivity_with_validation_meets_the_mac_target covers the search
def test_squeeze_prune_with_validation(tmp_path, residual):
    import onnx

    model, calib, val = residual
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "c.npz", input=calib)
    np.savez(tmp_path / "v.npz", **val)
    out = squeeze("prune", str(tmp_path / "m.onnx"), "--ratio", "sensitivity", "--macs", "0.3", "--calib",
                  str(tmp_path / "c.npz"), "--validation", str(tmp_path / "v.npz"), "--search-steps", "1",
                  "-o", str(tmp_path / "p.onnx"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "p.onnx").exists()
    bad = squeeze("prune", str(tmp_path / "m.onnx"), "--ratio", "sensitivity", "--calib", str(tmp_path / "c.npz"),
                  "--validation", str(tmp_path / "c.npz"), "-o", str(tmp_path / "q.onnx"))
    assert bad.returncode != 0 and "lacks 'labels'" in bad.stderr and "Traceback" not in bad.stderr


def test_sensitivity_ratios_ignore_the_unpruned_score(residual):
    from passes.prune.ratios import sensitivity_ratios

    _, program, graph, _ = analyze(residual[0])
    scores = {g.id: np.arange(g.size, 0, -1, dtype=float) for g in graph.groups}
    gain = {g.id: graph.macs() - graph.macs(make_plan([g], scores, {g.id: 0.5})) for g in graph.groups}
    dear = max(gain, key=gain.get)                        # the group whose pruning saves the most MACs

    def error(plan):  # ... is by far the most harmful to prune; the others cost more the deeper they go
        return sum((100.0 if g.id == dear else 1.0) * ((g.size - len(plan.get(g.id, range(g.size)))) / g.size) ** 2
                   for g in graph.groups)

    plain = sensitivity_ratios(graph, scores, error, 0.2)
    assert plain[dear] == 0.0
    assert plain == sensitivity_ratios(graph, scores, lambda plan: error(plan) + 5.0, 0.2)  # e.g. a cross-entropy

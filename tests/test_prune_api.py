"""Reconstruction, the compile API with ``prune=``, pruning + INT8, and the ``squeeze`` commands."""
import numpy as np
import onnx
import pytest
from conftest import squeeze
from graphs import assert_close_to_scale, run_ort
from test_prune_graphs import GRAPHS

import compiler
from passes.prune import PruneConfig, prune_model
from passes.prune.calibration import Runner
from passes.prune.pruner import analyze
from passes.prune.reconstruct import recalibrate_bn
from passes.prune.surgery import masked_params


def _inputs(shape, n, seed):
    rng = np.random.default_rng(seed)
    return [{"input": rng.standard_normal(shape).astype(np.float32)} for _ in range(n)]


def _error(model, reference, batches):
    num = sum(float(((run_ort(model, b)[0] - run_ort(reference, b)[0]) ** 2).sum()) for b in batches)
    return (num / sum(float((run_ort(reference, b)[0] ** 2).sum()) for b in batches)) ** 0.5


@pytest.mark.parametrize("name, factor", [("residual", 0.7), ("attention", 0.95)])
def test_reconstruction_lowers_the_error(name, factor):
    model, shape = GRAPHS[name]()
    calib = np.concatenate([b["input"] for b in _inputs(shape, 48, 0)])
    held_out = _inputs(shape, 8, 1)
    plain = prune_model(model, PruneConfig("filter", 0.5, "l1"))
    refit = prune_model(model, PruneConfig("filter", 0.5, "l1", calibration={"input": calib}))
    assert [r["error_after"] < r["error_before"] for r in refit.summary["reconstruction"]] == \
        [True] * len(refit.summary["reconstruction"])
    assert _error(refit.onnx, model, held_out) < factor * _error(plain.onnx, model, held_out)


def test_batchnorm_statistics_are_re_estimated():
    model, shape = GRAPHS["groups"]()                     # grouped conv: not re-fitted, its BN is
    _, program, graph, _ = analyze(model)
    plan = {graph.groups[1].id: np.array([0, 1])}            # drop 2 input offsets of each group
    batches = _inputs(shape, 6, 0)
    params = recalibrate_bn(program, graph, plan, program.params, batches)
    (idx, (data, axis, stats)), = graph.tracer.batch_norms.items()
    acts = np.concatenate([o[0] for o in Runner(program, [data]).run(batches, masked_params(program.params, graph, plan))])
    assert np.allclose(params[stats[2][0]], acts.mean(axis=(0, 2, 3)), atol=1e-4)
    assert np.allclose(params[stats[3][0]], acts.var(axis=(0, 2, 3)), rtol=1e-3, atol=1e-5)


def test_compile_with_prune_equals_the_exported_model(tmp_path):
    model, shape = GRAPHS["se"]()
    calib = {"input": np.concatenate([b["input"] for b in _inputs(shape, 16, 0)])}
    config = PruneConfig("filter", 0.5, "fpgm", round_to=2, calibration=calib)
    art = compiler.compile(model, prune=config)
    summary = art.manifest.summary["prune"]
    assert summary["macs_after"] < summary["macs_before"] / 2
    x = _inputs(shape, 1, 3)[0]
    out = compiler.load(art.save(tmp_path / "m.tar")).run(x)
    assert_close_to_scale(next(iter(out.values())), run_ort(prune_model(model, config).onnx, x)[0])


def test_prune_and_int8_in_one_compile(tmp_path):
    model, shape = GRAPHS["residual"]()
    calib = {"input": np.concatenate([b["input"] for b in _inputs(shape, 32, 0)])}
    art = compiler.compile(model, prune=PruneConfig("filter", 0.5, calibration=calib),
                           quantize=compiler.QuantConfig("int8", calibration=calib))
    assert "prune" in art.manifest.summary and "quantization" in art.manifest.summary
    assert any("int8" in str(r.get("dtype")) for r in art.manifest.summary["layers"])
    x = _inputs(shape, 1, 5)[0]
    out = next(iter(compiler.load(art.save(tmp_path / "q.tar")).run(x).values()))
    ref = run_ort(prune_model(model, PruneConfig("filter", 0.5, calibration=calib)).onnx, x)[0]
    assert np.abs(out - ref).max() < 0.1 * np.abs(ref).max()


def test_squeeze_prune_writes_onnx_and_inspect_shows_it(tmp_path):
    model, shape = GRAPHS["concat"]()
    onnx.save(model, tmp_path / "m.onnx")
    proc = squeeze("prune", tmp_path / "m.onnx", "--ratio", "0.5", "--criterion", "l2", "-o", tmp_path / "p.onnx")
    assert proc.returncode == 0, proc.stderr
    assert "MACs" in proc.stdout and (tmp_path / "p.onnx").exists()
    x = _inputs(shape, 1, 0)[0]
    expected = run_ort(prune_model(model, PruneConfig("filter", 0.5, "l2")).onnx, x)[0]
    assert np.array_equal(run_ort(onnx.load(tmp_path / "p.onnx"), x)[0], expected)
    proc = squeeze("compile", tmp_path / "m.onnx", "--prune", "filter:0.5,criterion=l2", "-o", tmp_path / "p.tar")
    assert proc.returncode == 2 and "without calibration data" in proc.stderr  # the model would be broken
    np.savez(tmp_path / "c.npz", input=np.concatenate([b["input"] for b in _inputs(shape, 8, 0)]))
    proc = squeeze("compile", tmp_path / "m.onnx", "--prune", "filter:0.5,criterion=l2", "--calib", tmp_path / "c.npz",
                   "-o", tmp_path / "p.tar")
    assert proc.returncode == 0, proc.stderr
    proc = squeeze("inspect", tmp_path / "p.tar")
    assert proc.returncode == 0 and "kept" in proc.stdout and "4/8" in proc.stdout, proc.stdout


@pytest.mark.parametrize("args, match", [
    (["--ratio", "1.5"], "outside [0, 1)"),
    (["--ratio", "0.5", "--criterion", "taylor"], "unknown pruning criterion 'taylor'"),
    (["--ratio", "0.5", "--criterion", "apoz"], "needs calibration data"),
    (["--ratio", "0", "--layer-ratio", "conv_3=0.9", "--round-to", "8"], "would remove all 8 channels"),
], ids=["ratio", "criterion", "no_calibration", "empties_layer"])
def test_squeeze_prune_bad_input(tmp_path, args, match):
    onnx.save(GRAPHS["concat"]()[0], tmp_path / "m.onnx")
    proc = squeeze("prune", tmp_path / "m.onnx", *args, "-o", tmp_path / "p.onnx")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and match in lines[0], proc.stderr
    assert not (tmp_path / "p.onnx").exists()


def test_toml_recipe_prunes(tmp_path):
    model, shape = GRAPHS["flatten"]()
    recipe = tmp_path / "r.toml"
    recipe.write_text('[prune]\ngranularity = "filter"\nratio = 0.5\ncriterion = "l2"\n\n[[pass]]\nname = "fold_bn"\n')
    calib = {"input": np.concatenate([b["input"] for b in _inputs(shape, 8, 0)])}
    summary = compiler.compile(model, recipe=recipe, calibration=calib).manifest.summary["prune"]
    assert summary["criterion"] == "l2" and [g["kept"] for g in summary["groups"]] == [4, 6]


def _two_branches() -> tuple[onnx.ModelProto, tuple]:
    """out = conv(relu(conv(x))) + conv(relu(conv(x))): each branch's inner channels prunable."""
    from graphs import GraphBuilder

    g = GraphBuilder(5)
    x = g.op("Relu", [g.conv("input", 3, 8)])
    a = g.conv(g.op("Relu", [g.conv(x, 8, 12)]), 12, 8)
    b = g.conv(g.op("Relu", [g.conv(x, 8, 12)]), 12, 8)
    return g.model({"input": (1, 3, 8, 8)}, g.op("Add", [a, b]), (1, 8, 8, 8)), (1, 3, 8, 8)


def test_refit_absorbs_the_other_branch_error(monkeypatch):
    from passes.prune import reconstruct

    model, shape = _two_branches()
    _, program, graph, _ = analyze(model)
    t = graph.tracer
    last_a, last_b = graph.layers[2].var, graph.layers[4].var
    partners = [reconstruct.residual_branch(t, layer) for layer in graph.layers]
    assert [p is not None for p in partners] == [False, False, True, False, True]
    assert t.shape(partners[2]) == t.shape(last_b) and t.shape(partners[4]) == t.shape(last_a)
    calib = {"input": np.concatenate([b["input"] for b in _inputs(shape, 32, 0)])}
    config = PruneConfig("filter", {g.name: 0.5 for g in graph.groups[1:]}, "l1", calibration=calib)  # inner
    batches = _inputs(shape, 32, 0)
    joint = _error(prune_model(model, config).onnx, model, batches)
    monkeypatch.setattr(reconstruct, "residual_branch", lambda tracer, layer: None)
    separate = _error(prune_model(model, config).onnx, model, batches)
    assert joint < 0.95 * separate

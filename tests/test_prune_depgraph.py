"""Dependency groups and exact channel removal on every graph shape.

Exactness: the physically pruned model equals the original model with the removed channels
zeroed (every weight row of the removed channels set to 0), before any reconstruction.
"""
import numpy as np
import pytest
from graphs import assert_close_to_scale, run_ort
from test_prune_graphs import GRAPHS

from compiler import zoo
from passes.prune.pruner import analyze
from passes.prune.surgery import masked_params, prune_onnx

# Channel count of each prunable group, in graph order.
GROUP_SIZES = {
    "residual": [8, 12, 16, 16],         # stem+block tie, inner conv, downsample tie, inner conv
    "concat": [8, 6, 10, 4],             # each concat part is its own group; the input's part stays
    "groups": [2, 4, 6, 10],             # whole groups, in-group input offsets, in-group outputs, last conv
    "depthwise": [8, 24],                # stem ↔ residual ↔ projection; expansion ↔ depthwise
    "se": [16, 4, 12],                   # conv ↔ gate (Mul) ↔ excitation conv; squeeze; last conv
    "flatten": [8, 12],                  # conv channels expand into 16 Gemm rows each; hidden units
    "barrier": [10],                     # channels through the Slice are kept
    "attention": [4, 8, 64],             # heads, head dim, MLP hidden units
}


def _random_plan(graph, seed=0, keep=0.5):
    rng = np.random.default_rng(seed)
    return {g.id: np.sort(rng.choice(g.size, max(1, int(g.size * keep)), replace=False)) for g in graph.groups}


@pytest.mark.parametrize("name", GRAPHS)
def test_groups(name):
    model, _ = GRAPHS[name]()
    _, _, graph, _ = analyze(model)
    assert [g.size for g in graph.groups] == GROUP_SIZES[name]


def test_flatten_expands_channels_into_gemm_rows():
    _, _, graph, _ = analyze(GRAPHS["flatten"]()[0])
    rows = next(m for m in graph.groups[0].members if m.role == "in")
    assert rows.index.shape == (8, 16) and rows.index[1].tolist() == list(range(16, 32))


def test_attention_heads_cover_qkv_columns():
    _, _, graph, _ = analyze(GRAPHS["attention"]()[0])
    heads = graph.groups[0]
    qkv = next(m for m in heads.members if m.role == "out")
    # head 1 owns columns 8..15 of q, 40..47 of k and 72..79 of v (3 × 4 heads × 8 dims)
    assert sorted(qkv.index[1]) == [*range(8, 16), *range(40, 48), *range(72, 80)]


def test_barrier_is_reported_by_node_name():
    _, _, graph, _ = analyze(GRAPHS["barrier"]()[0])
    assert [n for n, _ in graph.barriers] == ["channel_slice"]
    assert "strided_slice" in graph.barriers[0][1]


@pytest.mark.parametrize("name", GRAPHS)
def test_pruned_equals_zeroed(name):
    model, shape = GRAPHS[name]()
    proto, program, graph, names = analyze(model)
    plan = _random_plan(graph)
    pruned = prune_onnx(proto, graph, plan, program.params, names)
    zeroed = prune_onnx(proto, graph, {}, masked_params(program.params, graph, plan), names)
    x = {"input": np.random.default_rng(1).standard_normal(shape).astype(np.float32)}
    expected = run_ort(zeroed, x)[0]
    assert_close_to_scale(run_ort(pruned, x)[0], expected, rtol=1e-5)
    assert np.abs(expected - run_ort(model, x)[0]).max() > 1e-3      # something was removed
    _, reimported, regraph, _ = analyze(pruned)
    assert sum(v.size for v in reimported.params.values()) < sum(v.size for v in program.params.values())
    assert regraph.macs() == graph.macs(plan) < graph.macs()


@pytest.mark.parametrize("name", ["fmnist-resnet8", "transformer-block", "resnet18", "mobilenetv2",
                                  "efficientnet-lite0"])
def test_zoo_model_pruned_equals_zeroed(name):
    proto, program, graph, names = analyze(zoo.model_path(name), {"input": zoo.INPUT_SHAPES[name]})
    assert graph.groups and not graph.barriers
    plan = _random_plan(graph, keep=0.6)
    x = {"input": np.random.default_rng(2).standard_normal(zoo.INPUT_SHAPES[name]).astype(np.float32)}
    pruned = run_ort(prune_onnx(proto, graph, plan, program.params, names), x)[0]
    zeroed = run_ort(prune_onnx(proto, graph, {}, masked_params(program.params, graph, plan), names), x)[0]
    assert_close_to_scale(pruned, zeroed, rtol=1e-5)

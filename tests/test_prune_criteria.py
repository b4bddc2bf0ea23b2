"""Criteria, ratios, round_to and the one-line errors of bad pruning settings."""
import numpy as np
import pytest
from test_prune_graphs import GRAPHS

from compiler.errors import SqueezeError
from passes.prune import FPGM, L1, L2, BNScale, PruneConfig, Random, ReconstructionError, make_criterion
from passes.prune.importance import ChannelStats
from passes.prune.pruner import analyze
from passes.prune.ratios import group_ratios, keep_count, make_plan


@pytest.fixture(scope="module")
def residual():
    return analyze(GRAPHS["residual"]()[0])


def test_l1_l2_rank_filters_by_norm(residual):
    _, program, graph, _ = residual
    params = dict(program.params)
    group = graph.groups[1]                                  # inner conv: one producer filter bank
    out = next(m for m in group.members if m.role == "out")
    params[out.param] = params[out.param].copy()
    params[out.param][3] *= 100.0                            # make filter 3 dominant
    params[out.param][5] *= 0.0                              # and filter 5 empty
    for crit in (L1(params), L2(params)):
        scores = crit(group)
        assert scores.argmax() == 3 and scores.argmin() == 5


def test_channel_granularity_scores_consumer_rows(residual):
    _, program, graph, _ = residual
    params = dict(program.params)
    group = graph.groups[1]
    consumer = next(m for m in group.members if m.role == "in")
    params[consumer.param] = params[consumer.param].copy()
    params[consumer.param][:, 7] = 0.0                        # nobody reads channel 7
    assert L1(params, "channel")(group).argmin() == 7


def test_fpgm_scores_the_duplicate_filter_lowest(residual):
    _, program, graph, _ = residual
    params = dict(program.params)
    group = graph.groups[1]
    out = next(m for m in group.members if m.role == "out")
    w = params[out.param].copy()
    w[:] = np.random.default_rng(0).standard_normal(w.shape) * 5
    w[2] = w.mean(axis=0)                                    # the geometric centre of the others
    params[out.param] = w
    assert FPGM(params)(group).argmin() == 2


def test_bn_scale_reads_gamma_and_needs_a_batchnorm(residual):
    _, program, graph, _ = residual
    group = graph.groups[0]
    params = dict(program.params)
    for gamma in (m for m in group.members if m.role == "bn_weight"):
        params[gamma.param] = np.arange(1, group.size + 1, dtype=np.float32)
    assert BNScale(params)(group).argmax() == group.size - 1
    _, program, graph, _ = analyze(GRAPHS["concat"]()[0])
    with pytest.raises(SqueezeError, match="needs a BatchNormalization"):
        BNScale(program.params)(graph.groups[0])


def test_activation_criteria_use_stats_and_random_is_seeded(residual):
    _, program, graph, _ = residual
    group = graph.groups[1]
    stats = {group.id: ChannelStats(np.linspace(0, 1, group.size), np.linspace(1, 0, group.size))}
    assert make_criterion("apoz", program.params, stats=stats)(group).argmin() == group.size - 1
    assert make_criterion("variance", program.params, stats=stats)(group).argmin() == group.size - 1
    assert np.array_equal(Random(3)(group), Random(3)(group))


def test_reconstruction_criterion_removes_cancelling_pair_first(residual):
    _, _, graph, _ = residual
    group = graph.groups[1]
    z = np.random.default_rng(0).standard_normal((group.size, 50))
    z[4] = -z[6]                                             # channels 4 and 6 cancel each other
    z[4] *= 0.1
    z[6] *= 0.1
    scores = ReconstructionError({group.id: z @ z.T})(group)
    assert set(np.argsort(scores)[:2]) == {4, 6}


def test_round_to_and_per_layer_ratios(residual):
    _, _, graph, _ = residual
    sizes = [keep_count(g, 0.5, round_to=8) for g in graph.groups]
    assert sizes == [8, 8, 8, 8]                              # 8→8 (4 rounds to 8), 12→8, 16→8
    ratios = group_ratios(graph.groups, {"w1": 0.5})          # the group holding weight w1
    assert list(ratios.values()) == [0.5]
    plan = make_plan(graph.groups, {g.id: np.arange(g.size) for g in graph.groups}, ratios)
    assert plan[graph.groups[0].id].tolist() == [4, 5, 6, 7]


@pytest.mark.parametrize("kwargs, match", [
    ({"ratio": 1.0}, "outside \\[0, 1\\)"),
    ({"ratio": -0.1}, "outside \\[0, 1\\)"),
    ({"ratio": "half"}, "not a number"),
    ({"criterion": "taylor"}, "unknown pruning criterion 'taylor'"),
    ({"granularity": "kernel"}, "unknown pruning granularity"),
    ({"criterion": "apoz", "ratio": 0.5}, "needs calibration data"),
    ({"criterion": "reconstruction", "ratio": 0.5}, "needs calibration data"),
    ({"ratio": "sensitivity"}, "needs calibration data"),
    ({"round_to": 0, "ratio": 0.5}, "round_to"),
    ({"granularity": "nm", "nm": (4, 4)}, "0 < N < M"),
    ({"granularity": "block"}, "block pruning needs a ratio"),
    ({}, "filter pruning needs a ratio"),
], ids=["one", "negative", "text", "criterion", "granularity", "apoz", "reconstruction", "sensitivity",
        "round_to", "nm", "no_block_ratio", "no_ratio"])
def test_bad_settings_fail_in_one_line(kwargs, match):
    with pytest.raises(SqueezeError, match=match) as err:
        PruneConfig(**kwargs)
    assert "\n" not in str(err.value)


def test_ratio_that_empties_a_layer(residual):
    _, _, graph, _ = residual
    with pytest.raises(SqueezeError, match="would remove all 8 channels") as err:
        keep_count(graph.groups[0], 0.9, round_to=16)
    assert "\n" not in str(err.value)
    with pytest.raises(SqueezeError, match="match no prunable group"):
        group_ratios(graph.groups, {"no_such_layer": 0.5})


def test_parse_cli_spec():
    cfg = PruneConfig.parse("filter:0.5,criterion=fpgm,round_to=8")
    assert (cfg.granularity, cfg.ratio, cfg.criterion, cfg.round_to) == ("filter", 0.5, "fpgm", 8)
    assert PruneConfig.parse("nm:2:4").nm == (2, 4)
    assert PruneConfig.parse("block:0.8,block=4x4").block == (4, 4)
    cfg = PruneConfig.parse("channel:sensitivity,macs=0.4", calibration="x.npz")
    assert (cfg.ratio, cfg.macs_target) == ("sensitivity", 0.4)
    with pytest.raises(SqueezeError, match="bad prune option"):
        PruneConfig.parse("filter:0.5,speed=fast")


def test_toml_prune_table(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('[prune]\ngranularity = "filter"\nratio = { "conv_*" = 0.25 }\ncriterion = "l2"\n'
                    'round_to = 4\n\n[[pass]]\nname = "fold_bn"\n')
    cfg = PruneConfig.from_toml(path)
    assert cfg.ratio == {"conv_*": 0.25} and cfg.criterion == "l2" and cfg.round_to == 4
    (tmp_path / "none.toml").write_text('[[pass]]\nname = "fold_bn"\n')
    assert PruneConfig.from_toml(tmp_path / "none.toml") is None

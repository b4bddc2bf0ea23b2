"""Lowered conv2d / dense layers run in the simulator bit-exact against a numpy integer reference."""
import zlib

import numpy as np
import pytest

from targets.integer.kernels import ConvShape
from targets.vta import simulator
from targets.vta.config import BOARDS, VTAConfig
from targets.vta.lower import Step, Unfit, lower_conv, reference

CONFIGS = {"default": VTAConfig(), "block32": VTAConfig(LOG_BLOCK=5), "batch2": VTAConfig(LOG_BATCH=1),
           "small": VTAConfig(LOG_BLOCK=3, LOG_UOP_BUFF_SIZE=13, LOG_INP_BUFF_SIZE=12, LOG_WGT_BUFF_SIZE=13,
                              LOG_ACC_BUFF_SIZE=14)}

LAYERS = {
    "3x3": ConvShape(1, 14, 14, 16, 16, 3, 3, (1, 1), (1, 1, 1, 1)),
    "3x3_s2_odd_channels": ConvShape(1, 15, 13, 20, 40, 3, 3, (2, 2), (1, 1, 1, 1)),
    "1x1_s2_batch3": ConvShape(3, 8, 8, 64, 24, 1, 1, (2, 2)),
    "asym_pad_dilated": ConvShape(2, 9, 11, 20, 33, 3, 3, (1, 2), (1, 2, 0, 1), (2, 1)),
    "5x5": ConvShape(1, 12, 12, 8, 16, 5, 5, (1, 1), (2, 2, 2, 2)),
    "dense": ConvShape(1, 1, 5, 100, 10, 1, 1),  # a matmul [5, 100] x [100, 10] as VTA runs it
}


def _epilogue(rng, channels):
    return [Step("add", rng.integers(-3000, 3000, channels)), Step("shr", rng.integers(-1, 12, channels)),
            Step("max", -100), Step("min", rng.integers(10, 128, channels))]


def _check(shape, cfg, steps, rng, board="pynq"):
    x = rng.integers(-128, 128, (shape.batch, shape.in_channels, shape.height, shape.width)).astype(np.int8)
    w = rng.integers(-128, 128, (shape.out_channels, shape.in_channels, shape.kernel_h, shape.kernel_w)).astype(np.int8)
    program = lower_conv(shape, w, steps, cfg, BOARDS[board])
    dram = program.image(x)
    stats = simulator.run(program.stream, dram, cfg, board)
    np.testing.assert_array_equal(program.output(dram), reference(x, w, shape, steps))
    return program, stats


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_layer_bit_exact(layer, config):
    rng = np.random.default_rng(zlib.crc32(f"{layer}-{config}".encode()))
    shape = LAYERS[layer]
    program, stats = _check(shape, CONFIGS[config], _epilogue(rng, shape.out_channels), rng)
    cfg = CONFIGS[config]
    padded = -(-shape.in_channels // cfg.block) * -(-shape.out_channels // cfg.block) * cfg.block ** 2
    assert stats.gemm_counter * cfg.macs_per_cycle >= program.macs
    assert stats.gemm_counter == (-(-shape.batch // cfg.batch) * shape.out_height * shape.out_width
                                  * shape.kernel_h * shape.kernel_w * padded // cfg.block ** 2)


def test_plain_conv_without_epilogue_truncates():
    rng = np.random.default_rng(5)
    _check(LAYERS["3x3"], CONFIGS["default"], [], rng)


def test_relu_only_and_scalar_steps():
    rng = np.random.default_rng(6)
    steps = [Step("add", 77), Step("shr", 9), Step("max", 0), Step("min", 127)]
    _check(LAYERS["3x3_s2_odd_channels"], CONFIGS["default"], steps, rng, board="ultra96")


def test_big_layer_pipelines_loads_behind_compute():
    """A ResNet-18 layer-4 conv: many chunks, double-buffered; the GEMM unit stays busy."""
    rng = np.random.default_rng(7)
    shape = ConvShape(1, 7, 7, 512, 512, 3, 3, (1, 1), (1, 1, 1, 1))
    program, stats = _check(shape, CONFIGS["default"], _epilogue(rng, 512), rng)
    assert stats.overlap > 1.3
    assert program.macs / (stats.cycles * 256) > 0.7


@pytest.mark.parametrize("shape, reason", [
    (ConvShape(1, 8, 8, 16, 16, 3, 3, groups=16), "depthwise"),
    (ConvShape(1, 40, 40, 16, 16, 33, 33, padding=(16, 16, 16, 16)), "padding 16"),
    (ConvShape(1, 8, 1500, 16, 16, 3, 3, padding=(1, 1, 1, 1)), "accumulator buffer|input buffer"),
])
def test_unfit_layer_says_why(shape, reason):
    w = np.zeros((shape.out_channels, shape.in_channels // shape.groups, shape.kernel_h, shape.kernel_w), np.int8)
    with pytest.raises(Unfit, match=reason):
        lower_conv(shape, w, [], CONFIGS["default"], BOARDS["pynq"])

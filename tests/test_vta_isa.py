"""VTA instruction encoding: field layout against the published hw_spec.h, round trips, configs."""
import dataclasses

import numpy as np
import pytest

from compiler.errors import SqueezeError
from targets.vta import isa
from targets.vta.config import VTAConfig

DEFAULT = VTAConfig()

# Bit positions (LSB of the first 64-bit word = 0) and widths of the published default design,
# worked out by hand from apache/tvm-vta include/vta/hw_spec.h + hw_spec_const.h with
# vta_config.json (uop depth 2^13, inp 2^11, wgt 2^10, acc 2^11): a field that does not fit in
# the rest of a 64-bit word starts the next one.
SPEC = {
    "mem": [("opcode", 0, 3), ("pop_prev", 3, 1), ("pop_next", 4, 1), ("push_prev", 5, 1), ("push_next", 6, 1),
            ("memory_type", 7, 3), ("sram_base", 10, 16), ("dram_base", 26, 32), ("y_size", 64, 16),
            ("x_size", 80, 16), ("x_stride", 96, 16), ("y_pad_0", 112, 4), ("y_pad_1", 116, 4),
            ("x_pad_0", 120, 4), ("x_pad_1", 124, 4)],
    "gemm": [("opcode", 0, 3), ("pop_prev", 3, 1), ("pop_next", 4, 1), ("push_prev", 5, 1), ("push_next", 6, 1),
             ("reset", 7, 1), ("uop_bgn", 8, 13), ("uop_end", 21, 14), ("iter_out", 35, 14), ("iter_in", 49, 14),
             ("dst_factor_out", 64, 11), ("dst_factor_in", 75, 11), ("src_factor_out", 86, 11),
             ("src_factor_in", 97, 11), ("wgt_factor_out", 108, 10), ("wgt_factor_in", 118, 10)],
    "alu": [("opcode", 0, 3), ("pop_prev", 3, 1), ("pop_next", 4, 1), ("push_prev", 5, 1), ("push_next", 6, 1),
            ("reset", 7, 1), ("uop_bgn", 8, 13), ("uop_end", 21, 14), ("iter_out", 35, 14), ("iter_in", 49, 14),
            ("dst_factor_out", 64, 11), ("dst_factor_in", 75, 11), ("src_factor_out", 86, 11),
            ("src_factor_in", 97, 11), ("alu_opcode", 108, 3), ("use_imm", 111, 1), ("imm", 112, 16)],
    "finish": [("opcode", 0, 3), ("pop_prev", 3, 1), ("pop_next", 4, 1), ("push_prev", 5, 1), ("push_next", 6, 1)],
    "uop": [("dst_idx", 0, 11), ("src_idx", 11, 11), ("wgt_idx", 22, 10)],
}


@pytest.mark.parametrize("kind", sorted(SPEC))
def test_layout_matches_published_spec(kind):
    got = [(f.name, f.pos, f.width) for f in isa.layouts(DEFAULT)[kind]]
    assert got == SPEC[kind]


def test_constants_match_spec():
    assert (isa.LOAD, isa.STORE, isa.GEMM, isa.FINISH, isa.ALU) == (0, 1, 2, 3, 4)
    assert (isa.ALU_MIN, isa.ALU_MAX, isa.ALU_ADD, isa.ALU_SHR, isa.ALU_MUL) == (0, 1, 2, 3, 4)
    assert (isa.MEM_UOP, isa.MEM_WGT, isa.MEM_INP, isa.MEM_ACC, isa.MEM_OUT) == (0, 1, 2, 3, 4)
    assert (DEFAULT.uop_depth, DEFAULT.inp_depth, DEFAULT.wgt_depth, DEFAULT.acc_depth) == (8192, 2048, 1024, 2048)
    assert (DEFAULT.inp_elem_bytes, DEFAULT.wgt_elem_bytes, DEFAULT.acc_elem_bytes) == (16, 256, 64)


def test_known_encoding_bits():
    """A LOAD whose bytes are written out by hand from the layout above."""
    insn = isa.Mem(opcode=isa.LOAD, memory_type=isa.MEM_INP, sram_base=0x1234, dram_base=0xDEADBEEF, y_size=3,
                   x_size=5, x_stride=7, y_pad_0=1, y_pad_1=2, x_pad_0=3, x_pad_1=15, pop_next=1, push_next=1)
    lo = 0 | (1 << 4) | (1 << 6) | (2 << 7) | (0x1234 << 10) | (0xDEADBEEF << 26)
    hi = 3 | (5 << 16) | (7 << 32) | (1 << 48) | (2 << 52) | (3 << 56) | (15 << 60)
    assert isa.encode(insn, DEFAULT) == lo.to_bytes(8, "little") + hi.to_bytes(8, "little")
    alu = isa.Alu(alu_opcode=isa.ALU_SHR, use_imm=1, imm=-3)
    word = int.from_bytes(isa.encode(alu, DEFAULT), "little")
    assert word & 7 == isa.ALU and (word >> 108) & 7 == isa.ALU_SHR and (word >> 111) & 1 == 1
    assert (word >> 112) == (-3) & 0xFFFF


def _random_insn(rng, cfg):
    kind = rng.integers(5)
    flags = {k: int(rng.integers(2)) for k in ("pop_prev", "pop_next", "push_prev", "push_next")}
    r = lambda bits: int(rng.integers(0, 1 << bits))  # noqa: E731
    if kind < 2:
        return isa.Mem(opcode=int(kind), memory_type=r(3), sram_base=r(16), dram_base=r(32), y_size=r(16),
                       x_size=r(16), x_stride=r(16), y_pad_0=r(4), y_pad_1=r(4), x_pad_0=r(4), x_pad_1=r(4), **flags)
    loop = dict(reset=r(1), uop_bgn=r(cfg.log_uop_depth), uop_end=r(cfg.log_uop_depth + 1), iter_out=r(14),
                iter_in=r(14), dst_factor_out=r(cfg.log_acc_depth), dst_factor_in=r(cfg.log_acc_depth))
    if kind == 2:
        return isa.Gemm(src_factor_out=r(cfg.log_inp_depth), src_factor_in=r(cfg.log_inp_depth),
                        wgt_factor_out=r(cfg.log_wgt_depth), wgt_factor_in=r(cfg.log_wgt_depth), **loop, **flags)
    if kind == 3:
        return isa.Alu(src_factor_out=r(cfg.log_acc_depth), src_factor_in=r(cfg.log_acc_depth), alu_opcode=r(3),
                       use_imm=r(1), imm=int(rng.integers(-32768, 32768)), **loop, **flags)
    return isa.Finish(**flags)


@pytest.mark.parametrize("cfg", [DEFAULT, VTAConfig(LOG_BLOCK=5), VTAConfig(LOG_BATCH=1),
                                 VTAConfig(LOG_BLOCK=3, LOG_WGT_BUFF_SIZE=14, LOG_ACC_BUFF_SIZE=16,
                                           LOG_INP_BUFF_SIZE=14)], ids=["default", "block32", "batch2",
                                                                                   "block8"])
def test_round_trip(cfg):
    cfg.validate()
    rng = np.random.default_rng(0)
    insns = [_random_insn(rng, cfg) for _ in range(500)]
    stream = isa.encode_stream(insns, cfg)
    assert stream.size == 16 * len(insns)
    assert isa.decode_stream(stream, cfg) == insns
    fields = isa.layouts(cfg)["uop"]
    dst, src, wgt = (rng.integers(0, 1 << f.width, 300) for f in fields)
    words = isa.encode_uops(dst, src, wgt, cfg)
    assert words.dtype == np.uint32
    for a, b in zip(isa.decode_uops(words, cfg), (dst, src, wgt)):
        np.testing.assert_array_equal(a, b)


def test_every_bit_of_every_field_is_its_own():
    """Setting one field to all ones sets exactly its bits (no overlaps, nothing lost)."""
    for kind, cls in (("mem", isa.Mem), ("gemm", isa.Gemm), ("alu", isa.Alu)):
        seen = 0
        opcode = {"mem": isa.LOAD, "gemm": isa.GEMM, "alu": isa.ALU}[kind]
        for f in isa.layouts(DEFAULT)[kind]:
            if f.name == "opcode":
                continue
            value = -1 if f.signed else (1 << f.width) - 1
            zero = {g.name: 0 for g in dataclasses.fields(cls) if g.name != "opcode"}
            insn = cls(opcode=opcode, **{**zero, f.name: value})
            word = int.from_bytes(isa.encode(insn, DEFAULT), "little") & ~7
            assert word == ((1 << f.width) - 1) << f.pos, f.name
            assert not seen & word
            seen |= word


def test_out_of_range_field_is_refused():
    with pytest.raises(ValueError, match="sram_base"):
        isa.encode(isa.Mem(sram_base=1 << 16), DEFAULT)
    with pytest.raises(ValueError, match="imm"):
        isa.encode(isa.Alu(imm=40000), DEFAULT)
    with pytest.raises(ValueError, match="unknown opcode 7"):
        isa.decode(b"\x07" + bytes(15), DEFAULT)


@pytest.mark.parametrize("doc, field", [
    ({"LOG_BLOCK": 9}, "LOG_BLOCK"),
    ({"LOG_ACC_WIDTH": 4}, "LOG_ACC_WIDTH"),
    ({"LOG_INP_BUFF_SIZE": 4}, "LOG_INP_BUFF_SIZE"),
    ({"LOG_BLOCK": 3}, "LOG_WGT_BUFF_SIZE"),
    ({"LOG_WGT_BUFF_SIZE": 26}, "LOG_WGT_BUFF_SIZE"),
    ({"LOG_BLOCK_IN": 4, "LOG_BLOCK_OUT": 5}, "LOG_BLOCK_OUT"),
    ({"LOG_BATCH": "1"}, "LOG_BATCH"),
    ({"LOG_BLOKC": 4}, "LOG_BLOKC"),
])
def test_bad_config_is_one_line_naming_the_field(doc, field):
    with pytest.raises(SqueezeError) as err:
        VTAConfig.from_json(doc)
    message = str(err.value)
    assert "\n" not in message and f"field {field}" in message


def test_published_config_file_is_accepted():
    doc = {"TARGET": "pynq", "HW_VER": "0.0.2", "LOG_INP_WIDTH": 3, "LOG_WGT_WIDTH": 3, "LOG_ACC_WIDTH": 5,
           "LOG_BATCH": 0, "LOG_BLOCK": 4, "LOG_UOP_BUFF_SIZE": 15, "LOG_INP_BUFF_SIZE": 15,
           "LOG_WGT_BUFF_SIZE": 18, "LOG_ACC_BUFF_SIZE": 17}
    assert VTAConfig.from_json(doc) == DEFAULT
    assert VTAConfig.from_json({"LOG_BLOCK": 5}).block == 32
    assert VTAConfig.from_json({"LOG_BATCH": 1}).batch == 2

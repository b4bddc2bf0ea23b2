"""The VTA simulator executes the binary stream: hand-written programs, counters, cycle model,
dependency tokens and corrupted streams (an error with the instruction index, never a hang)."""
import numpy as np
import pytest

from targets.vta import isa, simulator
from targets.vta.config import BOARDS, VTAConfig
from targets.vta.isa import Alu, Finish, Gemm, Mem
from targets.vta.simulator import StreamError

CFG = VTAConfig()
B = CFG.block


def _program(rng, alu_ops=()):
    """x[4, 16] @ w[16, 16]^T (+ ALU ops) by hand: DRAM = uops | weights | input | output."""
    x = rng.integers(-128, 128, (4, B)).astype(np.int8)
    w = rng.integers(-128, 128, (B, B)).astype(np.int8)
    dram = np.zeros(4096, np.uint8)
    uops = isa.encode_uops(np.array([0, 0]), np.array([0, 0]), np.array([0, 0]), CFG)
    dram[0:8] = uops.view(np.uint8)
    dram[256:512] = w.view(np.uint8).reshape(-1)  # wgt element 1
    dram[1024:1024 + x.size] = x.view(np.uint8).reshape(-1)  # inp elements 64..67
    insns = [
        Mem(opcode=isa.LOAD, memory_type=isa.MEM_INP, sram_base=0, dram_base=64, y_size=1, x_size=4, x_stride=4),
        Mem(opcode=isa.LOAD, memory_type=isa.MEM_WGT, sram_base=0, dram_base=1, y_size=1, x_size=1, x_stride=1,
            push_next=1),
        Mem(opcode=isa.LOAD, memory_type=isa.MEM_UOP, sram_base=0, dram_base=0, y_size=1, x_size=2, x_stride=2),
        Gemm(reset=1, uop_bgn=0, uop_end=1, iter_out=1, iter_in=4, dst_factor_in=1),
        # dst += inp[i] . wgt[0] over i = 0..3 (iter_in with dst/src factor 1)
        Gemm(uop_bgn=0, uop_end=1, iter_out=1, iter_in=4, dst_factor_in=1, src_factor_in=1, pop_prev=1,
             push_next=not alu_ops),
    ]
    for k, (op, imm) in enumerate(alu_ops):
        insns.append(Alu(uop_bgn=0, uop_end=1, iter_out=1, iter_in=4, dst_factor_in=1, alu_opcode=op, use_imm=1,
                         imm=imm, push_next=int(k == len(alu_ops) - 1)))
    insns += [Mem(opcode=isa.STORE, memory_type=isa.MEM_OUT, sram_base=0, dram_base=128, y_size=1, x_size=4,
                  x_stride=4, pop_prev=1, push_prev=1),
              Finish(pop_next=1)]
    return insns, dram, x, w


def test_gemm_alu_program_and_counters():
    rng = np.random.default_rng(0)
    ops = [(isa.ALU_ADD, 64), (isa.ALU_SHR, 7), (isa.ALU_MAX, -5), (isa.ALU_MIN, 100)]
    insns, dram, x, w = _program(rng, ops)
    stats = simulator.run(isa.encode_stream(insns, CFG), dram, CFG)
    acc = x.astype(np.int64) @ w.astype(np.int64).T
    expect = np.clip((acc + 64) >> 7, -5, 100).astype(np.int8)
    np.testing.assert_array_equal(dram[2048:2048 + 64].view(np.int8).reshape(4, B), expect)
    assert stats.inp_load_nbytes == 4 * 16 and stats.wgt_load_nbytes == 256 and stats.uop_load_nbytes == 8
    assert stats.out_store_nbytes == 64 and stats.acc_load_nbytes == 0
    assert stats.gemm_counter == 4 and stats.alu_counter == 16


def test_store_truncates_like_the_hardware():
    """Without a clip, STORE keeps the low 8 bits of each accumulator."""
    rng = np.random.default_rng(1)
    insns, dram, x, w = _program(rng)
    simulator.run(isa.encode_stream(insns, CFG), dram, CFG)
    acc = x.astype(np.int64) @ w.astype(np.int64).T
    np.testing.assert_array_equal(dram[2048:2048 + 64].view(np.int8).reshape(4, B), acc.astype(np.int8))


def test_load_pads_with_zeros():
    dram = np.zeros(2048, np.uint8)
    dram[:3 * 16] = 7
    uops = isa.encode_uops(np.array([0]), np.array([0]), np.array([0]), CFG)
    dram[1024:1028] = uops.view(np.uint8)
    w = np.eye(B, dtype=np.int8)
    dram[512:768] = w.view(np.uint8).reshape(-1)
    insns = [Mem(opcode=isa.LOAD, memory_type=isa.MEM_INP, dram_base=0, y_size=1, x_size=3, x_stride=3,
                 y_pad_0=1, x_pad_0=1, x_pad_1=1),  # 3 rows x 5 elements; only row 1, columns 1..3 hold 7
             Mem(opcode=isa.LOAD, memory_type=isa.MEM_WGT, dram_base=2, y_size=1, x_size=1, x_stride=1, push_next=1),
             Mem(opcode=isa.LOAD, memory_type=isa.MEM_UOP, dram_base=256, y_size=1, x_size=1, x_stride=1),
             Gemm(reset=1, uop_bgn=0, uop_end=1, iter_in=10, dst_factor_in=1),
             Gemm(uop_bgn=0, uop_end=1, iter_in=10, dst_factor_in=1, src_factor_in=1, pop_prev=1, push_next=1),
             Mem(opcode=isa.STORE, memory_type=isa.MEM_OUT, dram_base=100, y_size=1, x_size=10, x_stride=10,
                 pop_prev=1, push_prev=1),
             Finish(pop_next=1)]
    simulator.run(isa.encode_stream(insns, CFG), dram, CFG)
    out = dram[1600:1760].view(np.int8).reshape(10, B)
    expect = np.zeros((10, B), np.int8)
    expect[6:9] = 7
    np.testing.assert_array_equal(out, expect)


def _corrupt(insns, index, **changes):
    return [isa.Mem(**{**i.__dict__, **changes}) if k == index else i for k, i in enumerate(insns)]


@pytest.mark.parametrize("case, index, message", [
    ("opcode", 3, "unknown opcode 7"),
    ("sram", 0, "past the buffer"),
    ("dram", 1, "past the"),
    ("deadlock", 4, "deadlock"),
    ("finish", 6, "no FINISH"),
    ("uops", 4, "micro-op range"),
    ("tokens", 6, "left unpopped"),
    ("loadflag", 0, "previous stage"),
])
def test_corrupted_stream_names_the_instruction(case, index, message):
    rng = np.random.default_rng(2)
    insns, dram, _, _ = _program(rng)
    stream = isa.encode_stream(insns, CFG).reshape(-1, 16)
    if case == "opcode":
        stream[3, 0] |= 7
    elif case == "sram":
        stream = isa.encode_stream(_corrupt(insns, 0, sram_base=2047), CFG)
    elif case == "dram":
        stream = isa.encode_stream(_corrupt(insns, 1, dram_base=1 << 20), CFG)
    elif case == "deadlock":  # the GEMM waits for a load token that is never pushed
        stream = isa.encode_stream(_corrupt(insns, 1, push_next=0), CFG)
    elif case == "finish":
        stream = isa.encode_stream(insns[:-1] + [Mem(opcode=isa.LOAD, memory_type=isa.MEM_UOP, pop_next=1)], CFG)
    elif case == "uops":
        stream = isa.encode_stream([Gemm(**{**i.__dict__, "uop_end": 9000}) if k == 4 else i
                                    for k, i in enumerate(insns)], CFG)
    elif case == "tokens":
        stream = isa.encode_stream(insns[:-1] + [Finish()], CFG)
    elif case == "loadflag":
        stream = isa.encode_stream(_corrupt(insns, 0, pop_prev=1), CFG)
    with pytest.raises(StreamError, match=message) as err:
        simulator.run(stream.reshape(-1), dram, CFG)
    assert err.value.index == index


def test_random_corruption_never_hangs_or_crashes():
    rng = np.random.default_rng(3)
    insns, dram, _, _ = _program(rng)
    clean = isa.encode_stream(insns, CFG)
    outcomes = set()
    for _ in range(300):
        stream = clean.copy()
        for pos in rng.integers(0, stream.size, 3):
            stream[pos] ^= np.uint8(1 << int(rng.integers(8)))
        try:
            simulator.run(stream, dram.copy(), CFG)
            outcomes.add("ran")
        except StreamError as err:
            assert 0 <= err.index < len(insns)
            outcomes.add("error")
    assert outcomes == {"ran", "error"}


def test_cycle_model_dma_width_and_overlap():
    """The same stream takes fewer cycles with Ultra96's 128-bit AXI than Pynq's 64-bit one."""
    rng = np.random.default_rng(4)
    insns, dram, _, _ = _program(rng)
    stream = isa.encode_stream(insns, CFG)
    pynq = simulator.run(stream, dram.copy(), CFG, BOARDS["pynq"])
    ultra = simulator.run(stream, dram.copy(), CFG, "ultra96")
    assert ultra.load_busy < pynq.load_busy and ultra.cycles < pynq.cycles
    # a serial program: nothing overlaps beyond the stages' own hand-offs
    assert 1.0 <= pynq.overlap <= 1.5
    assert pynq.seconds(BOARDS["pynq"]) == pytest.approx(pynq.cycles / 100e6)


def test_bad_stream_length():
    with pytest.raises(StreamError, match="multiple of 16"):
        simulator.run(np.zeros(20, np.uint8), np.zeros(16, np.uint8), CFG)

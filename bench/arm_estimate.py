"""Whole-model INT8 latency on an ARM board (a Raspberry Pi 5) from ``llvm-mca``: estimates, not measurements.

Usage: ``python bench/arm_estimate.py [--models resnet18,mobilenetv2] [--board rpi5]
[--mca llvm-mca-19] [--out bench/results/arm_estimate.json]``

Each zoo model is quantized and lowered for the board as ``squeeze compile MODEL --target BOARD
--quantize int8`` does (the board's default scheme, default schedules; calibrated on a few real
photos, which sets scales only), and its fused kernels are linked into one AArch64 library. Then:

1. one inference runs under ``qemu-aarch64`` on the plain C host of ``tests/arm_emu.py``, only to
   count how often each translated block of the library executes (``-d exec,nochain``, no
   timing); the kernels have no data-dependent branches, so the board runs the same blocks;
2. every executed block goes to ``llvm-mca`` for the board's core (``bench/arm_mca.py``): its
   simulated cycles per execution in a steady state;
3. a layer's cycles are the sum of count × cycles over the blocks of its fused kernel (the dot
   loop, padding, requantization epilogue, residual add: all of it); time = cycles / clock, on
   one core and on all the board's cores with perfect scaling of the kernel's parallel loop
   (chunks of ceil(extent / cores) iterations, so uneven splits count).

Not modelled: cache misses and memory bandwidth (every load hits L1), branch mispredictions,
the thread pool's fork/join, the Relax VM between kernels, thermal throttling.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import onnx  # noqa: E402
import tvm  # noqa: E402
from tvm import relax, s_tir  # noqa: E402

import arm_emu  # noqa: E402  (tests/arm_emu.py: plan, library and host of the emulated runs)
from arm_mca import BOARDS, MACS, isa_of, mca_regions, peak  # noqa: E402
from compiler import QuantConfig, zoo  # noqa: E402
from compiler.api import prepare  # noqa: E402
from compiler.build import lower  # noqa: E402
from compiler.report import layer_table  # noqa: E402
from compiler.zoo.photos import calibration_photos  # noqa: E402
from targets import get_target  # noqa: E402
from targets.integer.kernels import KERNEL_ATTR, MACS_ATTR  # noqa: E402
from targets.integer.schedule import kernel_block  # noqa: E402

MODELS = ("resnet18", "mobilenetv2")
CALIB_PHOTOS = 8
LANE_MACS = {**MACS, "fmla": 4}  # multiply-accumulates per instruction (fmla: float32 x 4)
MCA_ITERATIONS = 200
BRANCHES = {"b", "bl", "br", "blr", "ret", "cbz", "cbnz", "tbz", "tbnz"}
TARGET = re.compile(r"0x[0-9a-f]+ <[^>]*>")  # an objdump branch / adrp target


def lowered(name: str, board: str) -> tuple[tvm.IRModule, list[dict]]:
    """``name`` quantized and lowered for ``board``, and the conv/matmul rows of its quantized graph."""
    spec = get_target(board)
    calib = calibration_photos()[:CALIB_PHOTOS]
    programs = prepare(zoo.model_path(name), spec, input_shapes={"input": zoo.INPUT_SHAPES[name]},
                       quantize=QuantConfig(calibration={"input": calib}))
    program = next(iter(programs.values()))
    layers = [r for r in layer_table(program.mod) if r["op"] in ("conv2d", "matmul")]
    return lower(program, spec), layers


def conv_shape(node: onnx.NodeProto, row: dict) -> str:
    """``3x3/2 112x112x32->64`` (dw: depthwise, gN: grouped) from the ONNX node and the layer row."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    (kh, kw), stride = attrs.get("kernel_shape", (1, 1)), attrs.get("strides", (1, 1))[0]
    _, c, h, w = row["input"]
    group = attrs.get("group", 1)
    kind = " dw" if group == c and group > 1 else (f" g{group}" if group > 1 else "")
    return f"{kh}x{kw}/{stride} {h}x{w}x{c}->{row['output'][1]}{kind}"


def parallel_extent(sch: s_tir.Schedule, kernel: s_tir.schedule.SBlockRV | None) -> int:
    """Extent of the parallel loop around ``kernel`` (None: the function's largest; 1 if none)."""
    blocks = [kernel] if kernel is not None else sch.get_child_blocks(sch.get_sblock("root"))
    return max((int(sch.get(loop).extent) for block in blocks for loop in sch.get_loops(block)
                if sch.get(loop).kind == tvm.tirx.ForKind.PARALLEL), default=1)


def take_layer(pending: list[dict], macs: int, output: list[int], func: str) -> dict:
    """Remove and return the first of ``pending`` (conv/matmul rows, NCHW) with ``macs`` MACs
    and the NHWC ``output`` of kernel ``func`` (lowering may reorder independent layers)."""
    def nhwc(row: dict) -> list[int]:
        out = row["output"]
        return [out[0], *out[2:], out[1]] if row["op"] == "conv2d" else out

    for i, row in enumerate(pending):
        if row["macs"] == macs and nhwc(row) == output:
            return pending.pop(i)
    raise RuntimeError(f"kernel {func} ({macs} MACs, output {output}) matches no conv/matmul layer of the model")


def calls(mod: tvm.IRModule, layers: list[dict], model: onnx.ModelProto) -> list[dict]:
    """One row per kernel call of ``main``, in order: its PrimFunc, kind, layer name, shape, MACs."""
    nodes = {n.name: n for n in model.graph.node}
    pending = list(layers)
    rows = []
    for binding in (b for block in mod["main"].body.blocks for b in block.bindings):
        call = binding.value
        if not (isinstance(call, relax.Call) and getattr(call.op, "name", "") == "relax.call_tir"):
            continue
        func_name = call.args[0].name_hint
        sch = s_tir.Schedule(mod[func_name])
        found = kernel_block(sch)
        row = {"func": func_name, "parallel_extent": parallel_extent(sch, found and found[0]),
               "output": [int(d) for d in call.ty.shape]}
        if found is None:
            ops = dict.fromkeys(re.sub(r"\d+", "", t) for t in func_name.removeprefix("fused_").split("_"))
            rows.append({**row, "name": "+".join(o for o in ops if o not in ("", "cast", "tir"))[:40],
                         "kind": "other", "shape": "x".join(map(str, row["output"])), "macs": 0})
            continue
        annotations = sch.get(found[0]).annotations
        layer = take_layer(pending, int(annotations[MACS_ATTR]), row["output"], func_name)
        kind, node = str(annotations[KERNEL_ATTR]), nodes.get(layer["name"])
        shape = (conv_shape(node, layer) if node is not None and node.op_type == "Conv"
                 else f"{'x'.join(map(str, layer['input']))}->{layer['output'][-1]}")
        rows.append({**row, "name": layer["name"], "kind": kind, "shape": shape, "macs": layer["macs"]})
    return rows


def profile(workdir: Path, lib: Path) -> dict[int, tuple[int, int]]:
    """Executed translation blocks of ``lib`` in one run of ``workdir``'s plan under qemu:
    ``{start offset: (offset of its last instruction, executions)}``."""
    cmd = ["qemu-aarch64", "-cpu", "max", "-L", arm_emu.SYSROOT, "-E", "LD_DEBUG=files", "-d", "in_asm,exec,nochain",
           "-D", "/dev/stdout", str(arm_emu.host_binary(workdir)), str(lib), str(workdir / "plan.bin"),
           str(workdir / "out.bin")]
    counts, last, start = Counter(), {}, None
    with tempfile.TemporaryFile("w+") as err:
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err) as proc:
            for line in proc.stdout:
                if line.startswith(b"Trace"):
                    counts[line.split(b"/", 2)[1]] += 1
                elif line.startswith(b"0x"):
                    addr = int(line[:line.index(b":")], 16)
                    start = addr if start is None else start
                    last[start] = addr
                elif line.startswith(b"IN:"):
                    start = None
        err.seek(0)
        log = err.read()
    if proc.returncode:
        raise RuntimeError(f"arm_host exited {proc.returncode} under qemu: {log[-2000:]}")
    base = int(re.search(rf"file={re.escape(str(lib))} .*generating link map\n.*base: (0x[0-9a-f]+)", log).group(1), 16)
    size = lib.stat().st_size
    return {pc - base: (last[pc] - base, n) for pc, n in ((int(k, 16), n) for k, n in counts.items())
            if 0 <= pc - base < size}


def disassemble(objdump: str, lib: Path) -> tuple[dict[int, str], list[tuple[int, str]]]:
    """Instructions of ``lib`` by offset (as llvm-mca reads them) and its symbols, by offset."""
    out = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(lib)], capture_output=True, text=True,
                         check=True).stdout
    insns, symbols = {}, []
    for line in out.splitlines():
        if m := re.match(r"^([0-9a-f]{16}) <(.+)>:$", line):
            symbols.append((int(m.group(1), 16), m.group(2)))
        elif m := re.match(r"^\s+([0-9a-f]+):\s+(\S.*)$", line):
            insns[int(m.group(1), 16)] = TARGET.sub(".", m.group(2).split("//")[0]).replace("\t", " ").strip()
    return insns, symbols


def owner(symbols: list[tuple[int, str]], offset: int) -> str:
    """The PrimFunc whose code holds ``offset`` (a parallel lambda has no symbol: it follows its function)."""
    name = max((s for s in symbols if s[0] <= offset), default=(0, "?"))[1]
    return name.removeprefix("__tvm_ffi_").removesuffix("_compute_")


def is_branch(insn: str) -> bool:
    """Whether ``insn`` ends a basic block (a branch, call or return)."""
    mnemonic = insn.split()[0]
    return mnemonic in BRANCHES or mnemonic.startswith("b.")


def block_costs(blocks: dict[int, tuple[int, int]], insns: dict[int, str], mca_bin: str, cpu: str) -> list[dict]:
    """Each executed block with its instructions, executions and llvm-mca cycles per execution.

    qemu also ends a block at a page boundary: such a block is simulated together with the
    block it falls into, which keeps only its other entries as its own executions.
    """
    starts = sorted(blocks)
    bodies = {s: [insns[a] for a in range(s, blocks[s][0] + 4, 4)] for s in starts}
    follows = {s: blocks[s][0] + 4 for s in starts if not is_branch(bodies[s][-1]) and blocks[s][0] + 4 in blocks}
    counts = {s: blocks[s][1] for s in starts}
    for s, nxt in follows.items():
        counts[nxt] -= blocks[s][1]
    regions = [bodies[s] + (bodies[follows[s]] if s in follows else []) for s in starts]
    stats = mca_regions(mca_bin, cpu, regions, MCA_ITERATIONS)
    return [{"start": s, "count": counts[s], "insns": body, **st} for s, body, st in zip(starts, regions, stats)]


def dot_instructions(board: str) -> dict[str, str]:
    """The instruction each integer kernel kind reduces with on ``board`` (depthwise: float32 ``fmla``)."""
    return {"depthwise": "fmla", **{op: isa_of(board, op).instruction.split("+")[0] for op in ("conv2d", "matmul")}}


def count_of(block: dict, mnemonic: str | None) -> int:
    """How many ``mnemonic`` instructions ``block`` holds."""
    return sum(i.split()[0] == mnemonic for i in block["insns"])


def layer_costs(rows: list[dict], costs: list[dict], symbols: list[tuple[int, str]], dot_of: dict[str, str],
                cores: int) -> None:
    """Add each call's cycles, dot loops (blocks with the ``dot_of`` its kind) and executed dot
    MACs to ``rows`` (the calls of one PrimFunc share its counts equally)."""
    by_func: dict[str, list[dict]] = {}
    for block in costs:
        by_func.setdefault(owner(symbols, block["start"]), []).append(block)
    uses = Counter(r["func"] for r in rows)
    for row in rows:
        blocks, share, dot = by_func[row["func"]], 1 / uses[row["func"]], dot_of.get(row["kind"])
        cycles = share * sum(b["count"] * b["cycles_per_iter"] for b in blocks)
        loops = [b for b in blocks if count_of(b, dot)] or blocks
        hot = max(loops, key=lambda b: b["count"] * b["cycles_per_iter"])
        dots = share * sum(b["count"] * count_of(b, dot) for b in blocks)
        extent = row["parallel_extent"]
        row.update({
            "instruction": dot or "-", "cycles": cycles, "dot_macs_executed": dots * LANE_MACS.get(dot, 0),
            "dot_loop_share": share * sum(b["count"] * b["cycles_per_iter"] for b in loops) / cycles if dot else 0,
            "hot_loop": {"instructions": len(hot["insns"]), "dot_per_iter": count_of(hot, dot),
                         "cycles_per_iter": hot["cycles_per_iter"]},
            "scaling": extent / math.ceil(extent / cores),
        })


def estimate(name: str, board: str, mca_bin: str, objdump: str, ghz: float, peak_macs: float) -> dict:
    """Per-layer and whole-model estimate of ``name`` on ``board`` (``peak_macs``: the core's
    MACs per cycle at the peak of its conv instruction)."""
    spec = get_target(board)
    cores, cpu = spec.target_json["num-cores"], spec.target_json["mcpu"]
    mod, layers = lowered(name, board)
    rows = calls(mod, layers, onnx.load(zoo.model_path(name), load_external_data=False))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        blob, _ = arm_emu.plan(mod, [calibration_photos()[:1]])
        (work / "plan.bin").write_bytes(blob)
        lib = arm_emu.library(mod, spec, work / "kernels.so")
        blocks = profile(work, lib)
        insns, symbols = disassemble(objdump, lib)
    layer_costs(rows, block_costs(blocks, insns, mca_bin, cpu), symbols, dot_instructions(board), cores)
    for row in rows:
        row["macs_per_cycle"] = row["macs"] / row["cycles"]
        row["pct_of_peak"] = 100 * row["macs_per_cycle"] / peak_macs
        row["us_1core"] = row["cycles"] / (ghz * 1e3)
        row[f"us_{cores}core"] = row["us_1core"] / row["scaling"]
    macs, cycles = sum(r["macs"] for r in rows), sum(r["cycles"] for r in rows)
    return {"input": list(zoo.INPUT_SHAPES[name]), "macs": macs, "cycles": cycles,
            "ms_1core": cycles / (ghz * 1e6), f"ms_{cores}core": sum(r[f"us_{cores}core"] for r in rows) / 1e3,
            "integer_layers_share": sum(r["cycles"] for r in rows if r["kind"] != "other") / cycles,
            "dot_loops_share": sum(r["cycles"] * r["dot_loop_share"] for r in rows) / cycles,
            "pct_of_peak": 100 * macs / cycles / peak_macs, "layers": rows}


def print_model(name: str, result: dict, cores: int) -> None:
    """Per-layer table and the totals of one model."""
    print(f"\n{name} {'x'.join(map(str, result['input']))}: {result['macs'] / 1e6:.0f} M MACs")
    print(f"{'#':>3s} {'layer':30s} {'kind':9s} {'shape':24s} {'MMACs':>6s} {'instr':5s} {'loop cyc/n':>10s}"
          f" {'loop%':>5s} {'MAC/cyc':>7s} {'%peak':>5s} {'us 1c':>7s} {f'us {cores}c':>7s}")
    for i, r in enumerate(result["layers"]):
        hot = r["hot_loop"]
        loop = f"{hot['cycles_per_iter']:.2f}/{hot['dot_per_iter']}" if hot["dot_per_iter"] else "-"
        label = r["name"].strip("/").removesuffix("/Conv").removesuffix("/Gemm")[-30:]
        print(f"{i:3d} {label:30s} {r['kind']:9s} {r['shape'][:24]:24s} {r['macs'] / 1e6:6.1f} {r['instruction']:5s}"
              f" {loop:>10s} {100 * r['dot_loop_share']:4.0f}% {r['macs_per_cycle']:7.1f}"
              f" {r['pct_of_peak']:4.0f}% {r['us_1core']:7.1f} {r[f'us_{cores}core']:7.1f}")
    print(f"    total: {result['ms_1core']:.1f} ms on 1 core, {result[f'ms_{cores}core']:.1f} ms on {cores} cores;"
          f" {100 * result['dot_loops_share']:.0f}% of the cycles in dot loops,"
          f" {100 * result['integer_layers_share']:.0f}% in integer-layer kernels;"
          f" {result['pct_of_peak']:.0f}% of the peak")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated zoo models")
    parser.add_argument("--board", default="rpi5", choices=sorted(BOARDS))
    parser.add_argument("--mca", default=shutil.which("llvm-mca-19") or "llvm-mca", help="llvm-mca binary")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "arm_estimate.json"))
    args = parser.parse_args()
    if arm_emu.missing_tools():
        sys.exit(f"arm_estimate: {arm_emu.missing_tools()}")
    objdump = args.mca.replace("llvm-mca", "llvm-objdump")
    version = re.search(r"LLVM version ([\d.]+)", subprocess.run([args.mca, "--version"], capture_output=True,
                                                                  text=True).stdout).group(1)
    spec = get_target(args.board)
    cores, ghz = spec.target_json["num-cores"], BOARDS[args.board]
    conv = dot_instructions(args.board)["conv2d"]
    peak_macs = MACS[conv] * peak(args.mca, spec.target_json["mcpu"], conv)
    results = {name: estimate(name, args.board, args.mca, objdump, ghz, peak_macs) for name in args.models.split(",")}
    print(f"ESTIMATES, not measurements: llvm-mca {version}, -mcpu={spec.target_json['mcpu']}, {ghz} GHz,"
          f" block counts from one emulated run; no cache misses")
    for name, result in results.items():
        print_model(name, result, cores)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "date": date.today().isoformat(), "board": args.board, "mcpu": spec.target_json["mcpu"], "clock_ghz": ghz,
        "cores": cores, "llvm_mca": version, "peak_instruction": conv, "peak_macs_per_cycle": peak_macs,
        "note": f"static estimates (llvm-mca cycles x block counts of one emulated run), not measurements: {ghz} GHz,"
                " every load hits L1, no branch mispredictions; the multi-core column scales each kernel's parallel"
                " loop perfectly, without fork/join or Relax VM time",
        "models": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()

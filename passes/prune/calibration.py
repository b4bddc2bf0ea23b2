"""Run a Program on calibration data with any weights, watching intermediate tensors.

The program is compiled once with its weights as run-time arguments, so criteria, the
sensitivity scan and reconstruction can try many weight sets (masked = pruned, exactly)
without recompiling.
"""
from __future__ import annotations

from typing import Iterator, Mapping, Sequence

import numpy as np
import tvm
from tvm import relax

from compiler.hostexec import host_vm
from compiler.program import Program
from passes.quantize.calibrate import instrument

from .depgraph import DepGraph
from .im2col import patches
from .importance import ChannelStats

Batch = Mapping[str, np.ndarray]


class Runner:
    """``program.mod["main"]`` returning the tensors ``watch`` (vars of that function).

    Parameters
    ----------
    program : Program
        Imported program, weights not bound.
    watch : sequence of relax.Var
        Tensors to return, in order.
    """

    def __init__(self, program: Program, watch: Sequence[relax.Var]) -> None:
        mod = instrument(program.mod, list(watch))
        self.vm = host_vm(Program(mod, {}, program.inputs, []))
        self.inputs = [s.name for s in program.inputs]
        self.names = list(program.params)

    def run(self, batches: Sequence[Batch], params: Mapping[str, np.ndarray]) -> Iterator[list[np.ndarray]]:
        """Yield the watched tensors for each batch, computed with weights ``params``."""
        weights = [tvm.runtime.tensor(np.ascontiguousarray(params[n])) for n in self.names]
        for batch in batches:
            args = [tvm.runtime.tensor(np.ascontiguousarray(batch[n])) for n in self.inputs]
            out = self.vm["main"](*args, *weights)
            yield [out[i].numpy() for i in range(len(out))]


def outputs_of(program: Program) -> list[relax.Var]:
    """The model outputs of ``main`` as vars."""
    ret = program.mod["main"].body.body
    return list(ret.fields) if isinstance(ret, relax.Tuple) else [ret]


def output_error(runner: Runner, batches: Sequence[Batch], params: Mapping[str, np.ndarray],
                 reference: list[list[np.ndarray]]) -> float:
    """Relative L2 error of the watched outputs against ``reference`` (one list per batch)."""
    num = den = 0.0
    for got, want in zip(runner.run(batches, params), reference):
        for g, w in zip(got, want):
            num += float(((g - w) ** 2).sum())
            den += float((w ** 2).sum())
    return (num / max(den, 1e-30)) ** 0.5


def channel_stats(program: Program, graph: DepGraph, batches: Sequence[Batch],
                  params: Mapping[str, np.ndarray]) -> dict[int, ChannelStats]:
    """Zero fraction and variance of each group's channels where the first layer reads them."""
    probes = {g.id: g.probes[0] for g in graph.groups if g.probes}
    watch = list(dict.fromkeys(p.var for p in probes.values()))
    sums: dict = {}
    for outs in Runner(program, watch).run(batches, params):
        for var, x in zip(watch, outs):
            for gid, p in probes.items():
                if p.var.same_as(var):
                    flat = np.moveaxis(x, p.axis, 0).reshape(x.shape[p.axis], -1).astype(np.float64)
                    acc = np.stack([(flat == 0).sum(1), flat.sum(1), (flat ** 2).sum(1), np.full(len(flat), flat.shape[1])])
                    sums[gid] = acc + sums.get(gid, 0)
    stats = {}
    for gid, (zeros, s1, s2, n) in sums.items():
        index = probes[gid].index
        mean = s1 / n
        stats[gid] = ChannelStats((zeros / n)[index].mean(1), np.maximum(s2 / n - mean ** 2, 0)[index].mean(1))
    return stats


def contribution_grams(program: Program, graph: DepGraph, batches: Sequence[Batch], params: Mapping[str, np.ndarray],
                       max_rows: int = 2048, seed: int = 0) -> dict[int, np.ndarray]:
    """Per group, ``G[c, d] = <z_c, z_d>`` where ``z_c`` is channel ``c``'s contribution to the
    outputs of the layers reading the group, at sampled positions (ThiNet's objective).

    With ``z[c, p, o] = sum_k x[p, c, k] w[o, c, k]`` (k: kernel taps), ``G`` is the Hadamard
    product of the input Gram ``sum_p x x^T`` and the weight Gram ``sum_o w w^T``, summed over
    tap pairs, so the cost grows with ``(C k)^2`` instead of ``C^2 × positions × outputs``.
    """

    layers = {p.layer.index: p.layer for g in graph.groups for p in g.probes
              if p.layer.op == "matmul" or int(p.layer.call.attrs.groups) == 1}
    watch = [layer.data for layer in layers.values()]
    rng = np.random.default_rng(seed)
    inputs: dict[int, np.ndarray] = {}
    runner = Runner(program, watch)
    for i in range(0, len(batches), 8):  # run a few batches, then the numpy work (thread pools)
        for outs in list(runner.run(batches[i:i + 8], params)):
            for (idx, layer), x in zip(layers.items(), outs):
                if layer.op == "conv2d":
                    shape = graph.tracer.shape(layer.var)
                    pos = rng.choice(shape[0] * shape[2] * shape[3], min(max_rows // len(batches) + 1, shape[2] * shape[3]),
                                     replace=False)
                    cols = patches(x, layer, pos)                                      # [P, C*taps]
                else:
                    rows = x.reshape(-1, x.shape[-1])
                    cols = rows[rng.choice(len(rows), min(len(rows), max_rows // len(batches) + 1), replace=False)]
                cols = cols.astype(np.float64)
                inputs[idx] = cols.T @ cols + inputs.get(idx, 0)
    grams: dict[int, np.ndarray] = {}
    for g in graph.groups:
        for p in g.probes:
            if p.layer.index not in inputs:
                continue
            layer, w = p.layer, params[p.layer.weight].astype(np.float64)
            if layer.op == "conv2d":
                w = w.reshape(w.shape[0], -1)                                          # [O, C*taps]
                taps = w.shape[1] // int(layer.call.args[1].ty.shape[1])
            else:
                w, taps = np.moveaxis(w, (layer.in_axis, layer.out_axis), (1, 0)), 1     # [N, K]
            channels = w.shape[1] // taps
            full = (inputs[layer.index] * (w.T @ w)).reshape(channels, taps, channels, taps).sum(axis=(1, 3))
            select = np.zeros((g.size, channels))
            np.put_along_axis(select, p.index, 1.0, axis=1)
            grams[g.id] = select @ full @ select.T + grams.get(g.id, 0)
    return grams

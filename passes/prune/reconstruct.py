"""Reconstruction without retraining.

After channels are removed, every layer that read them (a *consumer*) is re-fitted by least
squares so that, on calibration data, its output from the pruned network's activations matches
the original layer's output (ThiNet, Luo et al. 2017; channel pruning, He et al. 2017). An
intercept is fitted too and folded into the layer's bias or its BatchNorm mean, which recovers
the constant contribution of removed channels. Consumers are handled in graph order, each
seeing the already re-fitted layers before it, so each one also corrects the error that
pruning left upstream. A layer whose result is summed with another branch (a residual add)
also absorbs that branch's current error: its target is the original sum minus the branch as
the pruned network computes it (He et al. 2017, multi-branch case). BatchNorms after
consumers that could not be re-fitted (grouped convs) get their statistics re-estimated instead.

Everything runs at the original sizes with the removed channels zeroed, which computes exactly
what the pruned network computes; removed rows stay zero.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import tvm
from tvm import relax

from compiler.program import Program

from .calibration import Batch, Runner
from .im2col import patches
from .depgraph import DepGraph, Layer, Plan
from .tracer import Tracer
from .surgery import masked_params


def consumers(graph: DepGraph, plan: Plan) -> list[Layer]:
    """Layers whose input channels ``plan`` removes, in graph order."""
    removed = graph.removed(plan)
    return [layer for layer in graph.layers if graph.comp.get(layer.k_slot) in removed]


def residual_branch(tracer: Tracer, layer: Layer) -> relax.Var | None:
    """The other operand of the residual add that ``layer``'s result flows into (through
    broadcast adds such as its bias), or None: the first add along the single-user chain
    whose other operand has the full shape of the layer's result."""
    var, full = layer.var, tracer.shape(layer.var)
    while len(tracer.users.get(var, [])) == 1:
        binding = tracer.bindings[tracer.users[var][0]]
        call = binding.value
        if not isinstance(call, relax.Call) or not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.add":
            return None
        other = call.args[1] if call.args[0].same_as(var) else call.args[0]
        if isinstance(other, relax.Var) and tracer.shape(other) == full:
            return other
        var = binding.var
    return None


def refittable(layer: Layer) -> bool:
    """Least squares handles matmuls with a 2-D weight and ungrouped NCHW conv2d."""
    if layer.op == "matmul":
        return layer.call.args[1].ty.ndim == 2
    attrs = layer.call.attrs
    return layer.op == "conv2d" and int(attrs.groups) == 1 and str(attrs.data_layout) == "NCHW"


class _Problem:
    """Least squares for one consumer: sampled input features and outputs over all batches."""

    def __init__(self, layer: Layer, kept_in: np.ndarray, samples: list[np.ndarray], targets: np.ndarray) -> None:
        self.layer, self.kept, self.samples, self.target = layer, kept_in, samples, targets
        self.intercept = layer.bias is not None or layer.batch_norm is not None
        self.inputs: list[np.ndarray] = []
        self.outputs: list[np.ndarray] = []

    def add(self, x: np.ndarray, y_now: np.ndarray, i: int) -> None:
        """Record batch ``i``'s input features and current output at the sampled positions."""
        pos = self.samples[i]
        if self.layer.op == "matmul":
            self.inputs.append(x.reshape(-1, x.shape[-1])[pos][:, self.kept])
        else:
            self.inputs.append(patches(x[:, self.kept], self.layer, pos))
        self.outputs.append(_rows(y_now, self.layer, pos))

    def solve(self, ridge: float) -> tuple[np.ndarray, float, float]:
        """Weights ``[features (+1), out channels]`` and the relative errors before and after."""
        a = np.concatenate(self.inputs).astype(np.float64)
        if self.intercept:
            a = np.concatenate([a, np.ones((len(a), 1))], 1)
        gram = a.T @ a
        scale = max(np.trace(gram) / len(gram), 1e-12)
        w = np.linalg.solve(gram + np.eye(len(gram)) * ridge * scale, a.T @ self.target)
        energy = max(float((self.target ** 2).sum()), 1e-30)
        before = float(((np.concatenate(self.outputs) - self.target) ** 2).sum())
        after = float(((a @ w - self.target) ** 2).sum())
        return w, (before / energy) ** 0.5, (after / energy) ** 0.5


def _rows(y: np.ndarray, layer: Layer, pos: np.ndarray) -> np.ndarray:
    """Output rows (positions × channels) of a layer result at flat positions ``pos``."""
    flat = y.reshape(-1, y.shape[-1]) if layer.op == "matmul" else np.moveaxis(y, 1, -1).reshape(-1, y.shape[1])
    return flat[pos].astype(np.float64)


def _write(params: dict, graph: DepGraph, problem: _Problem, solution: np.ndarray) -> None:
    layer = problem.layer
    w = params[layer.weight].copy()
    k = len(problem.kept)
    if layer.op == "matmul":
        fitted = solution[:k]                                   # [K kept, N]
        view = np.moveaxis(w, (layer.in_axis, layer.out_axis), (0, 1))
        view[problem.kept] = fitted
    else:
        out_ch, _, kh, kw = w.shape
        w[:, problem.kept] = solution[:k * kh * kw].T.reshape(out_ch, k, kh, kw)
    params[layer.weight] = w
    if not problem.intercept:
        return
    shift = solution[-1]
    if layer.bias is not None:
        name, axis = layer.bias
        params[name] = params[name] + np.expand_dims(shift, tuple(i for i in range(params[name].ndim) if i != axis)).astype(params[name].dtype)
    else:
        mean = graph.tracer.batch_norms[layer.batch_norm][2][2][0]
        params[mean] = (params[mean] - shift).astype(params[mean].dtype)


class Refitter:
    """Least-squares re-fit of the consumers of removed channels, reusable across plans.

    The program is compiled once, watching the input and output of every re-fittable layer
    and the residual branch it is summed with; targets (the original layers' outputs and
    branches at sampled positions) are measured once.

    Parameters
    ----------
    program, graph
        The imported program and its dependency graph.
    batches : sequence of dict
        Calibration inputs.
    max_rows : int
        Output positions sampled per layer for the fit.
    ridge : float
        Tikhonov term, relative to the mean diagonal of the normal matrix.
    seed : int
        Seed of the position sampling.
    """

    def __init__(self, program: Program, graph: DepGraph, batches: Sequence[Batch], max_rows: int = 4096,
                 ridge: float = 1e-3, seed: int = 0) -> None:
        self.graph, self.batches, self.ridge = graph, list(batches), ridge
        self.layers = [layer for layer in graph.layers if refittable(layer)]
        branches = {layer.index: residual_branch(graph.tracer, layer) for layer in self.layers}
        self.branch = {}  # layer index -> position of its residual branch among the watched tensors
        watch = [v for layer in self.layers for v in (layer.data, layer.var)]
        for index, var in branches.items():
            if var is not None:
                self.branch[index] = len(watch)
                watch.append(var)
        self.runner = Runner(program, watch)
        rng = np.random.default_rng(seed)
        self.samples = {}
        for layer in self.layers:
            shape = graph.tracer.shape(layer.var)
            positions = int(np.prod(shape)) // shape[1 if layer.op == "conv2d" else -1]
            per_batch = min(positions, -(-max_rows // len(self.batches)))
            self.samples[layer.index] = [rng.choice(positions, per_batch, replace=False) for _ in self.batches]
        original = list(self.runner.run(self.batches, program.params))
        self.targets = {layer.index: self._rows(original, layer, 2 * j + 1) for j, layer in enumerate(self.layers)}
        self.branches = {layer.index: self._rows(original, layer, self.branch[layer.index])
                         for layer in self.layers if layer.index in self.branch}

    def _rows(self, outs: list[list[np.ndarray]], layer: Layer, k: int) -> np.ndarray:
        """Watched tensor ``k`` over all batches at ``layer``'s sampled output positions."""
        return np.concatenate([_rows(o[k], layer, self.samples[layer.index][i]) for i, o in enumerate(outs)])

    def __call__(self, plan: Plan, params: Mapping[str, np.ndarray],
                 log: Callable[[str], None] | None = None) -> tuple[dict[str, np.ndarray], list[dict]]:
        """Masked ``params`` with every consumer of ``plan``'s removed channels re-fitted, in
        graph order; and per layer the relative output error on the sampled rows before and
        after its fit."""
        todo = {layer.index for layer in consumers(self.graph, plan)}
        current = masked_params(params, self.graph, plan)
        kept = self.graph.param_kept(plan)
        records = []
        for j, layer in enumerate(self.layers):
            if layer.index not in todo:
                continue
            kept_in = next(k for axis, k in kept[layer.weight] if axis == layer.in_axis)
            # run everything first: interleaving TVM's thread pool with BLAS calls stalls both
            keep = [2 * j, 2 * j + 1] + ([self.branch[layer.index]] if layer.index in self.branch else [])
            outs = [[o[k] for k in keep] for o in self.runner.run(self.batches, current)]
            target = self.targets[layer.index]
            if layer.index in self.branch:  # absorb the residual branch's error
                target = target + self.branches[layer.index] - self._rows(outs, layer, 2)
            problem = _Problem(layer, kept_in, self.samples[layer.index], target)
            for i, o in enumerate(outs):
                problem.add(o[0], o[1], i)
            solution, before, after = problem.solve(self.ridge)
            _write(current, self.graph, problem, solution)
            records.append({"layer": layer.name, "error_before": round(before, 4), "error_after": round(after, 4)})
            if log is not None:
                log(f"re-fitted {layer.name}: relative output error {before:.3f} -> {after:.3f}")
        return masked_params(current, self.graph, plan), records


def recalibrate_bn(program: Program, graph: DepGraph, plan: Plan, params: Mapping[str, np.ndarray],
                   batches: Sequence[Batch], skip: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Re-estimate the running mean and variance of BatchNorms after consumers of removed
    channels (except layers named in ``skip``, e.g. those already re-fitted), in graph order."""
    t = graph.tracer
    todo = [layer.batch_norm for layer in consumers(graph, plan)
            if layer.batch_norm is not None and layer.name not in skip]
    current = masked_params(params, graph, plan)
    if not todo:
        return current
    runner = Runner(program, [t.batch_norms[idx][0] for idx in todo])
    for k, idx in enumerate(todo):
        data, axis, stats = t.batch_norms[idx]
        s1 = s2 = n = 0.0
        for outs in runner.run(batches, current):
            flat = np.moveaxis(outs[k], axis, 0).reshape(outs[k].shape[axis], -1).astype(np.float64)
            s1, s2, n = s1 + flat.sum(1), s2 + (flat ** 2).sum(1), n + flat.shape[1]
        mean_name, var_name = stats[2][0], stats[3][0]
        current[mean_name] = (s1 / n).astype(current[mean_name].dtype)
        current[var_name] = np.maximum(s2 / n - (s1 / n) ** 2, 0).astype(current[var_name].dtype)
    return masked_params(current, graph, plan)

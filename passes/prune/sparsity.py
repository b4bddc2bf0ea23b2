"""N:M, block and element-wise sparsity masks for dense layers and 1×1 convs.

Masks are computed on each weight seen as the ``[K, N]`` matrix of ``x @ W`` (K = input
features, N = outputs): N:M keeps the N largest of every M consecutive inputs of each output;
block sparsity keeps the blocks (``block = (rows along K, columns along N)``) of largest L2 norm;
element-wise keeps the largest magnitudes and only saves storage (no kernel uses it).
:mod:`targets.sparse.bsr` turns block-sparse dense layers into a block-sparse kernel.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from compiler.errors import SqueezeError
from compiler.program import Program

from .depgraph import DepGraph, Layer


def as_kn(w: np.ndarray, layer: Layer) -> np.ndarray:
    """View of a layer weight as ``[K, N]`` (a matmul weight or a 1×1 conv kernel)."""
    moved = np.moveaxis(w, (layer.in_axis, layer.out_axis), (0, 1))
    return moved.reshape(moved.shape[0], moved.shape[1])


def from_kn(kn: np.ndarray, like: np.ndarray, layer: Layer) -> np.ndarray:
    """Inverse of :func:`as_kn`."""
    moved_shape = np.moveaxis(like, (layer.in_axis, layer.out_axis), (0, 1)).shape
    return np.moveaxis(kn.reshape(moved_shape), (0, 1), (layer.in_axis, layer.out_axis))


def nm_mask(kn: np.ndarray, n: int, m: int) -> np.ndarray:
    """Keep the ``n`` largest |w| of every ``m`` consecutive rows, per column (K % m == 0)."""
    k, cols = kn.shape
    groups = np.abs(kn).reshape(k // m, m, cols)
    order = np.argsort(-groups, axis=1, kind="stable")[:, :n]
    mask = np.zeros_like(groups, dtype=bool)
    np.put_along_axis(mask, order, True, axis=1)
    return mask.reshape(k, cols)


def block_mask(kn: np.ndarray, block: tuple[int, int], sparsity: float) -> np.ndarray:
    """Keep the ``1 - sparsity`` fraction of ``block``-shaped tiles with the largest L2 norm."""
    bk, bn = block
    k, cols = kn.shape
    norms = (kn.reshape(k // bk, bk, cols // bn, bn) ** 2).sum(axis=(1, 3))
    keep = max(1, int(round(norms.size * (1.0 - sparsity))))
    tiles = np.zeros(norms.size, dtype=bool)
    tiles[np.argsort(-norms.ravel(), kind="stable")[:keep]] = True
    return np.kron(tiles.reshape(norms.shape), np.ones((bk, bn), dtype=bool)).astype(bool)


def element_mask(kn: np.ndarray, sparsity: float) -> np.ndarray:
    """Keep the ``1 - sparsity`` fraction of weights with the largest magnitude."""
    keep = max(1, int(round(kn.size * (1.0 - sparsity))))
    mask = np.zeros(kn.size, dtype=bool)
    mask[np.argsort(-np.abs(kn).ravel(), kind="stable")[:keep]] = True
    return mask.reshape(kn.shape)


def storage_bytes(kn: np.ndarray, pattern: str, block: tuple[int, int] = (1, 1), m: int = 4) -> int:
    """Bytes to store a masked float32 ``[K, N]`` weight in the pattern's compressed format:
    CSR (values + int32 column indices + row pointers), BSR (dense tiles + int32 indices), or
    N:M (kept values + ceil(log2 M)-bit positions)."""
    nnz = int(np.count_nonzero(kn))
    if pattern == "nm":
        return nnz * 4 + -(-nnz * max(1, int(np.ceil(np.log2(m)))) // 8)
    if pattern == "block":
        bk, bn = block
        tiles = int(np.count_nonzero(np.abs(kn).reshape(kn.shape[0] // bk, bk, -1, bn).sum(axis=(1, 3))))
        return tiles * bk * bn * 4 + tiles * 4 + (kn.shape[1] // bn + 1) * 4
    return nnz * 8 + (kn.shape[0] + 1) * 4


def eligible(layer: Layer, params: Mapping[str, np.ndarray], granularity: str, config) -> str:
    """Why ``layer`` cannot take the pattern ("" when it can)."""
    w = params[layer.weight]
    if granularity == "element":
        return ""
    if layer.op == "conv2d" and (w.shape[2:] != (1, 1) or int(layer.call.attrs.groups) != 1):
        return "not a 1x1 convolution"
    k, n = as_kn(w, layer).shape
    if granularity == "nm" and k % config.nm[1]:
        return f"K={k} is not a multiple of M={config.nm[1]}"
    if granularity == "block" and (k % config.block[0] or n % config.block[1]):
        return f"[{k}, {n}] does not tile into {config.block[0]}x{config.block[1]} blocks"
    return ""


def sparsify_params(program: Program, graph: DepGraph, config) -> tuple[dict[str, np.ndarray], dict]:
    """Apply ``config``'s sparsity pattern to every eligible layer; returns weights and summary."""
    params = dict(program.params)
    rows = []
    for layer in graph.layers:
        reason = eligible(layer, params, config.granularity, config)
        w = params[layer.weight]
        if reason:
            rows.append({"name": layer.name, "skipped": reason})
            continue
        if config.granularity == "element":
            mask = element_mask(w, config.ratio)
            masked = w * mask
            kn = masked.reshape(masked.shape[0], -1)
        else:
            kn = as_kn(w, layer)
            mask = nm_mask(kn, *config.nm) if config.granularity == "nm" else block_mask(kn, config.block, config.ratio)
            kn = kn * mask
            masked = from_kn(kn, w, layer)
        params[layer.weight] = masked.astype(w.dtype)
        rows.append({"name": layer.name, "sparsity": round(1.0 - float(mask.mean()), 4),
                     "dense_bytes": int(w.nbytes),
                     "sparse_bytes": storage_bytes(kn, config.granularity, config.block, config.nm[1])})
    done = [r for r in rows if "sparsity" in r]
    if not done:
        reasons = "; ".join(f"{r['name']}: {r['skipped']}" for r in rows[:3]) + ("; ..." if len(rows) > 3 else "")
        raise SqueezeError(f"{config.granularity} sparsity fits no layer ({reasons}): choose a pattern the layers "
                           "tile into (e.g. block=1x16, nm=2:4)")
    summary = {
        "granularity": config.granularity, "layers": rows,
        "pattern": {"nm": f"{config.nm[0]}:{config.nm[1]}", "block": "x".join(map(str, config.block)),
                    "element": "unstructured"}[config.granularity],
        "dense_bytes": sum(r["dense_bytes"] for r in done), "sparse_bytes": sum(r["sparse_bytes"] for r in done),
    }
    return params, summary

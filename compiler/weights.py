"""Weights stored beside the libraries (``--compress huffman``), decoded once at load time.

Each tensor is stored as the codebook of its distinct values (bit patterns, so decoding is
bit-exact) and the canonical Huffman code of the index of each element in it
(:mod:`compiler.huffman`) when that is smaller, raw bytes otherwise. All tensors lie one after
the other in the artifact member :data:`MEMBER`; the manifest lists where each one is.
"""
from __future__ import annotations

import numpy as np

from . import huffman

MEMBER = "weights.bin"
MAX_SYMBOLS = 4096  # more distinct values than this (float weights not shared): stored raw
_BITS = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}  # itemsize -> same-width unsigned type


def encode_tensor(arr: np.ndarray) -> tuple[dict, bytes]:
    """``({"shape", "dtype", "encoding", "symbols"}, bytes)`` of ``arr``: codebook + Huffman-coded
    indices (``encoding`` "huffman") when smaller than the raw bytes (``encoding`` "raw")."""
    arr = np.ascontiguousarray(arr)
    raw = arr.tobytes()
    entry = {"shape": list(arr.shape), "dtype": str(arr.dtype), "encoding": "raw", "symbols": 0}
    values, index = np.unique(arr.reshape(-1).view(_BITS[arr.itemsize]), return_inverse=True)
    if arr.size == 0 or len(values) > MAX_SYMBOLS:
        return entry, raw
    lengths = huffman.code_lengths(np.bincount(index))
    stream, offsets = huffman.encode(index, lengths)
    blob = lengths.tobytes() + values.tobytes() + offsets.tobytes() + stream
    if len(blob) >= len(raw):
        return entry, raw
    return {**entry, "encoding": "huffman", "symbols": len(values)}, blob


def decode_tensor(entry: dict, blob: bytes) -> np.ndarray:
    """The array :func:`encode_tensor` stored as ``(entry, blob)``."""
    dtype, shape = np.dtype(entry["dtype"]), tuple(entry["shape"])
    if entry["encoding"] == "raw":
        return np.frombuffer(blob, dtype).reshape(shape).copy()
    count, n = int(np.prod(shape, dtype=np.int64)), entry["symbols"]
    blocks = -(-count // huffman.BLOCK)
    at = [0, n, n + n * dtype.itemsize, n + n * dtype.itemsize + 4 * blocks]
    lengths = np.frombuffer(blob[:at[1]], np.uint8)
    values = np.frombuffer(blob[at[1]:at[2]], dtype)
    offsets = np.frombuffer(blob[at[2]:at[3]], np.uint32)
    return values[huffman.decode(blob[at[3]:], offsets, lengths, count)].reshape(shape)


def pack(arrays: list[np.ndarray]) -> tuple[list[dict], bytes]:
    """The manifest entries (with ``offset`` and ``nbytes`` into the member) and the member's bytes."""
    entries, blobs, offset = [], [], 0
    for arr in arrays:
        entry, blob = encode_tensor(arr)
        entries.append({**entry, "offset": offset, "nbytes": len(blob)})
        blobs.append(blob)
        offset += len(blob)
    return entries, b"".join(blobs)


def unpack(entries: list[dict], data: bytes) -> list[np.ndarray]:
    """The arrays :func:`pack` stored."""
    return [decode_tensor(e, data[e["offset"]:e["offset"] + e["nbytes"]]) for e in entries]

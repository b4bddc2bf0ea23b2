"""Canonical Huffman coding of symbol streams in numpy, decoded in blocks in parallel.

Written here, a few dozen lines, because nothing at hand separates Huffman coding from the rest:
zlib's Huffman stage cannot be used without its LZ77 stage (and its dynamic blocks re-learn the
table every few kilobytes), and no maintained pure-Python Huffman package is a dependency.

The code is canonical (only each symbol's code length is stored) and at most :data:`MAX_BITS`
long, so one table of ``2**MAX_BITS`` entries decodes it. The encoder records the bit offset of
every :data:`BLOCK`-th symbol, so the decoder steps all blocks at once: ``BLOCK`` vectorized steps
instead of one Python step per symbol (4 bytes of offsets per 1024 symbols).
"""
from __future__ import annotations

import heapq

import numpy as np

MAX_BITS = 16  # longest code; a window of MAX_BITS + 7 bits fits the 32-bit reads of the decoder
BLOCK = 1024  # symbols between two recorded bit offsets


def code_lengths(counts: np.ndarray) -> np.ndarray:
    """Huffman code length of each symbol (0 for unused ones), at most :data:`MAX_BITS`: over-long
    codes flatten the counts (halved, kept >= 1) until every code fits."""
    counts = np.asarray(counts, np.int64)
    used = np.flatnonzero(counts)
    while True:
        lengths = np.zeros(len(counts), np.uint8)
        if len(used) == 1:
            lengths[used] = 1
            return lengths
        heap = [(int(counts[s]), i, [int(s)]) for i, s in enumerate(used)]
        heapq.heapify(heap)
        tie = len(heap)
        while len(heap) > 1:  # merge the two rarest subtrees: each member's code grows by one bit
            c1, _, s1 = heapq.heappop(heap)
            c2, _, s2 = heapq.heappop(heap)
            lengths[s1 + s2] += 1
            heapq.heappush(heap, (c1 + c2, tie, s1 + s2))
            tie += 1
        if lengths.max() <= MAX_BITS:
            return lengths
        counts = np.where(counts > 0, np.maximum(counts >> 1, 1), 0)


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """The canonical code of each symbol: codes of one length are consecutive, by symbol order."""
    lengths = np.asarray(lengths, np.int64)
    codes = np.zeros(len(lengths), np.int64)
    code, previous = 0, 0
    for s in sorted(np.flatnonzero(lengths), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[s]) - previous
        codes[s], previous = code, int(lengths[s])
        code += 1
    return codes


def encode(symbols: np.ndarray, lengths: np.ndarray) -> tuple[bytes, np.ndarray]:
    """The bit stream of ``symbols`` (integers indexing ``lengths``) and the bit offset of every
    :data:`BLOCK`-th symbol (uint32)."""
    symbols = np.asarray(symbols, np.int64).ravel()
    size = lengths.astype(np.int64)[symbols]
    code = canonical_codes(lengths)[symbols]
    ends = np.cumsum(size)
    starts = ends - size
    bits = np.zeros(int(ends[-1]) if len(ends) else 0, np.uint8)
    for j in range(MAX_BITS):  # bit j (from the most significant) of every code that long
        has = size > j
        bits[starts[has] + j] = (code[has] >> (size[has] - 1 - j)) & 1
    return np.packbits(bits).tobytes(), starts[::BLOCK].astype(np.uint32)


def decode(stream: bytes, offsets: np.ndarray, lengths: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` symbols (int64) encoded by :func:`encode` into ``stream``."""
    lengths = np.asarray(lengths, np.int64)
    table = np.zeros(1 << MAX_BITS, np.int64)
    for s, c in zip(np.flatnonzero(lengths), canonical_codes(lengths)[lengths > 0]):
        shift = MAX_BITS - int(lengths[s])
        table[int(c) << shift:(int(c) + 1) << shift] = s
    data = np.frombuffer(stream + b"\0" * 4, np.uint8).astype(np.uint32)
    pos, end = np.asarray(offsets, np.int64).copy(), 8 * len(stream)
    out = np.zeros((len(pos), BLOCK), np.int64)
    for step in range(min(BLOCK, count)):
        byte = pos >> 3
        word = (data[byte] << 24) | (data[byte + 1] << 16) | (data[byte + 2] << 8) | data[byte + 3]
        window = (word >> (32 - MAX_BITS - (pos & 7)).astype(np.uint32)) & ((1 << MAX_BITS) - 1)
        out[:, step] = table[window]
        pos = np.minimum(pos + lengths[out[:, step]], end)  # a last, short block stops at the end
    return out.ravel()[:count]

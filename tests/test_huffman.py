"""Canonical Huffman coding (compiler.huffman) and the weight store built on it (compiler.weights)."""
import numpy as np
import pytest

from compiler import huffman
from compiler.weights import decode_tensor, encode_tensor, pack, unpack


def _reference_decode(stream: bytes, lengths: np.ndarray, count: int) -> list[int]:
    """Bit by bit, from the code strings: independent of the table-driven block decoder."""
    codes = huffman.canonical_codes(lengths)
    words = {format(int(c), f"0{int(n)}b"): s for s, (c, n) in enumerate(zip(codes, lengths)) if n}
    assert not any(a != b and b.startswith(a) for a in words for b in words)  # prefix-free
    bits = "".join(format(byte, "08b") for byte in stream)
    out, word = [], ""
    for bit in bits:
        word += bit
        if word in words:
            out.append(words[word])
            word = ""
            if len(out) == count:
                break
    return out


def _data(kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "uniform":
        return rng.integers(0, 256, 3000)
    if kind == "skewed":  # Fibonacci counts: codes of up to 21 bits without the length limit
        fib = [1, 1]
        while len(fib) < 22:
            fib.append(fib[-1] + fib[-2])
        return rng.permutation(np.repeat(np.arange(22), fib))
    return np.zeros(2500, np.int64)  # one symbol


@pytest.mark.parametrize("kind", ["uniform", "skewed", "constant"])
def test_round_trip_and_independent_decode(kind):
    x = _data(kind, np.random.default_rng(0))
    counts = np.bincount(x)
    lengths = huffman.code_lengths(counts)
    assert lengths.max() <= huffman.MAX_BITS and (lengths[counts > 0] > 0).all()
    assert (2.0 ** -lengths[lengths > 0].astype(float)).sum() <= 1  # Kraft
    stream, offsets = huffman.encode(x, lengths)
    assert np.array_equal(huffman.decode(stream, offsets, lengths, len(x)), x)
    assert _reference_decode(stream, lengths, len(x)) == x.tolist()
    p = counts[counts > 0] / len(x)
    entropy = float(-(p * np.log2(p)).sum())
    assert 8 * len(stream) / len(x) <= entropy + 1.01  # within a bit of the entropy


def test_many_blocks_round_trip():
    x = np.random.default_rng(1).choice(16, size=5 * huffman.BLOCK + 7, p=np.linspace(1, 3, 16) / 32)
    lengths = huffman.code_lengths(np.bincount(x, minlength=16))
    stream, offsets = huffman.encode(x, lengths)
    assert len(offsets) == 6 and np.array_equal(huffman.decode(stream, offsets, lengths, len(x)), x)


def test_tensor_store_is_bit_exact():
    rng = np.random.default_rng(2)
    shared = rng.choice(np.array([-0.0, 0.0, 0.5, -1.25, np.nan], np.float32), size=(64, 3, 3, 3))
    codes = rng.choice(np.arange(-7, 8, dtype=np.int8), size=(4, 8, 16, 4))
    dense = rng.standard_normal(2000).astype(np.float32)  # all distinct: stays raw
    entries, data = pack([shared, codes, dense])
    assert [e["encoding"] for e in entries] == ["huffman", "huffman", "raw"]
    assert entries[1]["nbytes"] < codes.nbytes / 1.8  # 15 codes: ~4 bits each
    for arr, back in zip([shared, codes, dense], unpack(entries, data)):
        assert back.dtype == arr.dtype and back.shape == arr.shape and back.tobytes() == arr.tobytes()
    entry, blob = encode_tensor(np.arange(4, dtype=np.int32))
    assert entry["encoding"] == "raw" and np.array_equal(decode_tensor(entry, blob), np.arange(4))

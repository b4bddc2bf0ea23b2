"""``compress=``: Deep Compression storage (Han et al.): k-means weight sharing, Huffman-coded weights."""
from __future__ import annotations

import math
from dataclasses import dataclass

import onnx

from passes.weight_sharing import MAX_CLUSTERS, MIN_CLUSTERS

from .errors import SqueezeError
from .pipeline import PassSpec, Recipe

FORMS = "kmeans:K (K in 4..256), kmeans:K:per_channel, huffman, or a mix such as kmeans:16,huffman"


@dataclass(frozen=True)
class CompressConfig:
    """Storage compression settings.

    Parameters
    ----------
    clusters : int, optional
        k-means weight sharing with a codebook of this many entries (4 to 256) per layer, before
        quantization (the ``kmeans`` pass); None: off.
    per_channel : bool
        One codebook per output channel instead of one per layer.
    huffman : bool
        Store the kernels' large weights outside the library, each as a codebook of its distinct
        values and Huffman-coded indices (:mod:`compiler.weights`), decoded once at load time.
    """

    clusters: int | None = None
    per_channel: bool = False
    huffman: bool = False

    def __post_init__(self):
        k = self.clusters
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not MIN_CLUSTERS <= k <= MAX_CLUSTERS):
            raise SqueezeError(f"compress kmeans:{k}: the codebook size must be {MIN_CLUSTERS} to {MAX_CLUSTERS} "
                               "entries: give e.g. kmeans:16")
        if self.per_channel and k is None:
            raise SqueezeError("compress per_channel shares weights per output channel: give kmeans:K:per_channel")

    @classmethod
    def parse(cls, text: str) -> "CompressConfig":
        """``kmeans:16``, ``kmeans:16:per_channel``, ``huffman`` or a comma-separated mix of them."""
        options: dict = {}
        for item in (i.strip() for i in text.split(",")):
            parts = item.split(":")
            if item == "huffman":
                options["huffman"] = True
            elif parts[0] == "kmeans" and len(parts) in (2, 3) and parts[1].isdigit() \
                    and parts[2:] in ([], ["per_channel"]):
                options.update(clusters=int(parts[1]), per_channel=len(parts) == 3)
            else:
                raise SqueezeError(f"unknown compress item {item!r}: use {FORMS}")
        return cls(**options)

    def sharing(self, relative: bool) -> Recipe:
        """The weight-sharing pass (none without ``clusters``); ``relative``: the quantizer scales
        weights per output channel (see :func:`passes.weight_sharing.kmeans`)."""
        if self.clusters is None:
            return Recipe()
        return Recipe([PassSpec("kmeans", {"clusters": self.clusters, "per_channel": self.per_channel,
                                           "relative": relative and not self.per_channel})])


def onnx_weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of an ONNX model's weights as stored: its initializers and its Constant nodes' tensors
    (older exporters, e.g. PaddlePaddle's, keep every weight in Constant nodes)."""
    constants = [a.t for node in model.graph.node if node.op_type == "Constant"
                 for a in node.attribute if a.name == "value"]
    return sum(math.prod(t.dims) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
               for t in [*model.graph.initializer, *constants])


def storage_line(storage: dict) -> str:
    """One line on a manifest's ``storage`` record: weight bytes of the FP32 ONNX model, compiled
    and as stored (and how), and the ratio of the first to the last."""
    how = storage["compress"]
    steps = [f"k-means {how['kmeans']} per {'channel' if how['per_channel'] else 'layer'}"] if how["kmeans"] else []
    steps += ["Huffman-coded outside the library"] if how["huffman"] else []
    detail = f" ({', '.join(steps)})" if steps else ""
    return (f"weights: {storage['onnx_weight_bytes']:,} B in the FP32 ONNX model, {storage['weight_bytes']:,} B "
            f"compiled, {storage['stored_weight_bytes']:,} B stored{detail}: {storage['ratio']:.2f}x smaller")

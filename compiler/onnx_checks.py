"""Attribute checks for ONNX ops whose importer would accept a malformed node silently.

TVM's Relax importer reads ``Resize``'s mode strings without checking them (an unknown mode
became nearest) and indexes ``scales``/``sizes`` by rank (an IndexError). Each check here
names the node, what is wrong and the values the ONNX spec allows.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import onnx
from onnx import helper

from .errors import SqueezeError

RESIZE_MODES = {
    "mode": ("nearest", "linear", "cubic"),
    "coordinate_transformation_mode": ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                                       "asymmetric", "tf_half_pixel_for_nn", "tf_crop_and_resize"),
    "nearest_mode": ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil"),
}


def _bad(node: onnx.NodeProto, what: str) -> SqueezeError:
    return SqueezeError(f"{node.op_type} '{node.name or node.output[0]}': {what}: fix the exporter's attributes")


def _check_resize(node: onnx.NodeProto, values: Mapping[str, np.ndarray], shapes: Mapping[str, tuple]) -> None:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    for name, allowed in RESIZE_MODES.items():
        value = attrs.get(name)
        value = value.decode() if isinstance(value, bytes) else value
        if value is not None and value not in allowed and not (node.op_type == "Upsample" and name != "mode"):
            raise _bad(node, f"{name}='{value}' is not one of {', '.join(allowed)}")
    rank = len(shapes[node.input[0]]) if node.input[0] in shapes else None
    extents = node.input[1:2] if node.op_type == "Upsample" else node.input[2:4]
    for name in extents:
        if name and name in values and values[name].size and rank is not None and values[name].size != rank:
            raise _bad(node, f"'{name}' has {values[name].size} values for a {rank}-D input")


CHECKS = {"Resize": _check_resize, "Upsample": _check_resize}


def check_attributes(proto: onnx.ModelProto, values: Mapping[str, np.ndarray], shapes: Mapping[str, tuple]) -> None:
    """Raise :class:`SqueezeError` on the first malformed node of :data:`CHECKS`' ops.

    ``values``: constant tensors by name; ``shapes``: static tensor shapes by name.
    """
    for node in proto.graph.node:
        check = CHECKS.get(node.op_type)
        if check is not None:
            check(node, values, shapes)

"""The Program: what the frontend produces and every pass acts on."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import tvm
from tvm import relax


@dataclass(frozen=True)
class TensorSpec:
    """Name, static shape and dtype of one model input or output."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, d: dict) -> "TensorSpec":
        return cls(d["name"], tuple(d["shape"]), d["dtype"])


@dataclass
class Program:
    """A Relax module plus its weights and interface.

    Attributes
    ----------
    mod : tvm.IRModule
        Relax module whose ``main`` takes the user inputs first, then (while
        ``params`` is non-empty) one argument per weight.
    params : dict[str, np.ndarray]
        Detached weights, in ``main``'s parameter order. Empty once bound.
    inputs, outputs : list[TensorSpec]
        The model's user-facing interface.
    summary : dict
        What compression did (filled by passes; written to the manifest).
    """

    mod: tvm.IRModule
    params: dict[str, np.ndarray]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    summary: dict = field(default_factory=dict)

    def with_mod(self, mod: tvm.IRModule, **changes) -> "Program":
        return replace(self, mod=mod, **changes)

    def bind_params(self) -> "Program":
        """Return a Program whose weights are Relax constants inside ``mod``."""
        if not self.params:
            return self
        mod = relax.transform.BindParams("main", dict(self.params))(self.mod)
        return replace(self, mod=mod, params={})


def batch_of(inputs: Sequence[TensorSpec]) -> int:
    """The batch of a model's inputs: the first input's leading dim (1 for a scalar or none)."""
    return int(inputs[0].shape[0]) if inputs and inputs[0].shape else 1

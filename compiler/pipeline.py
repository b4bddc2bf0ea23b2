"""Pass manager: a recipe (Python or TOML) becomes an ordered list of named passes.

Most names are IR → IR passes of the ``passes`` registry; a few are driver steps that need
to run the model first (``quantize``: calibrate on the host, then the ``realize`` pass).
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import tvm

import targets  # noqa: F401  (registers the targets' passes, e.g. block_sparse)
from passes import make_pass, pass_names
from passes.registry import reraise_user_error

from . import calibration
from .errors import SqueezeError
from .program import Program

# Recipe steps that are not pure passes: name -> factory(**options) -> (IRModule -> IRModule).
STEPS = {"quantize": calibration.quantize}


def step_names() -> list[str]:
    """Every name a recipe may use: the registered passes and the driver steps."""
    return sorted({*pass_names(), *STEPS})


def make_step(name: str, **options):
    """The pass or driver step ``name`` with ``options`` (unknown names and options: one-line errors)."""
    if name not in STEPS:
        if name not in pass_names():
            raise SqueezeError(f"unknown pass '{name}': choose one of {', '.join(step_names())}")
        return make_pass(name, **options)
    try:
        return STEPS[name](**options)
    except TypeError as err:
        raise SqueezeError(f"bad options for step '{name}': {err}") from None

CLEANUPS = ("fold_constant", "fold_bn", "canonicalize_clip", "canonicalize_layer_norm", "fold_constant", "dead_code")


@dataclass(frozen=True)
class PassSpec:
    """One named pass and its options."""

    name: str
    options: dict = field(default_factory=dict)


@dataclass
class Recipe:
    """An ordered, reviewable list of passes.

    A TOML recipe lists passes as tables, in order::

        [[pass]]
        name = "fold_bn"
    """

    passes: list[PassSpec] = field(default_factory=list)

    @classmethod
    def cleanups(cls) -> "Recipe":
        """The pure graph clean-ups every compile starts with."""
        return cls([PassSpec(n) for n in CLEANUPS])

    @classmethod
    def from_names(cls, names: Iterable[str]) -> "Recipe":
        return cls([PassSpec(n) for n in names])

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> "Recipe":
        """The ``[[pass]]`` list of a recipe file, checked (:func:`read_recipe_file`, :meth:`validate`)."""
        return cls.from_document(read_recipe_file(path), f"recipe {path}")

    @classmethod
    def from_document(cls, doc: dict, origin: str) -> "Recipe":
        """The ``[[pass]]`` list of a parsed recipe file, checked; errors name ``origin``."""
        specs = []
        for i, table in enumerate(doc.get("pass", [])):
            options = dict(table) if isinstance(table, dict) else {}
            if "name" not in options:
                raise SqueezeError(f"{origin}: [[pass]] #{i + 1} has no 'name'")
            specs.append(PassSpec(options.pop("name"), options))
        return cls(specs).validate(origin)

    def validate(self, origin: str = "recipe") -> "Recipe":
        """Fail now, before any work, on an unknown pass name or option (one line naming both)."""
        for spec in self.passes:
            try:
                make_step(spec.name, **spec.options)
            except SqueezeError as err:
                raise SqueezeError(f"{origin}: {err}") from None
        return self

    def __add__(self, other: "Recipe") -> "Recipe":
        return Recipe(self.passes + other.passes)


RECIPE_TABLES = ("pass", "prune", "quantize")


def read_recipe_file(path: str | os.PathLike) -> dict:
    """A recipe file's tables, checked against the schema: ``[[pass]]`` (a list), ``[prune]``
    and ``[quantize]``; any other table or key is an error naming the file."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise SqueezeError(f"recipe file not found: {path}") from None
    except IsADirectoryError:
        raise SqueezeError(f"recipe {path} is a directory: give a .toml file") from None
    except tomllib.TOMLDecodeError as err:
        raise SqueezeError(f"recipe {path} is not valid TOML: {err}") from None
    unknown = sorted(set(doc) - set(RECIPE_TABLES))
    if unknown:
        raise SqueezeError(f"recipe {path}: unknown table(s) {unknown}: a recipe holds [[pass]], [prune] and "
                           "[quantize]")
    if not isinstance(doc.get("pass", []), list):
        raise SqueezeError(f"recipe {path}: 'pass' must be a list of tables ([[pass]], not [pass])")
    return doc


def run_passes(
    program: Program,
    recipe: Recipe,
    dump_ir: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
) -> Program:
    """Bind weights and apply ``recipe``'s passes in order.

    Parameters
    ----------
    dump_ir : path, optional
        Directory receiving the IR before the first pass and after each pass
        (``00_input.py``, ``01_fold_bn.py``, ...).
    log : callable, optional
        Receives one line per pass.
    """
    program = program.bind_params()
    passes = [(spec.name, make_step(spec.name, **spec.options)) for spec in recipe.passes]
    out = Path(dump_ir) if dump_ir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "00_input.py").write_text(program.mod.script())
    mod = program.mod
    for i, (name, pass_) in enumerate(passes, start=1):
        try:
            with tvm.transform.PassContext(opt_level=3):
                mod = pass_(mod)
        except Exception:
            reraise_user_error()
            raise
        if log is not None:
            log(f"pass {i}/{len(passes)}: {name}")
        if out is not None:
            (out / f"{i:02d}_{name}.py").write_text(mod.script())
    return program.with_mod(mod)

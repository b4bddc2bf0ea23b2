"""``squeeze export model.tar --board NAME -o DIR``: a folder to copy to a board and run there.

The folder holds the artifact's libraries (``lib.so``, one more per batch size), its
``manifest.json``, ``run.py`` (:mod:`compiler.deploy_run`: the TVM runtime and numpy, nothing
else) and a README.txt with the ``pip install`` line of the runtime this Squeeze compiled with and
how to run the model there, locally or from here over TVM RPC.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from targets import TargetSpec, get_target, target_names
from targets.host import isa_extensions, triple_arch

from . import weights as stored
from .artifact import MANIFEST, Artifact, Manifest
from .atomic import atomic_dir
from .errors import SqueezeError

RUN_SCRIPT = Path(__file__).with_name("deploy_run.py")
RUNTIME_PACKAGES = ("apache-tvm", "apache-tvm-ffi")  # pinned to this Squeeze's; numpy: any
RPC_PORT = 9090
WEIGHTS = "weights.npz"  # the weights of artifacts that keep them outside the libraries (compress huffman)


def board_target(name: str) -> TargetSpec:
    """The target of board ``name``: a registered CPU target, else one line listing them."""
    boards = [n for n in target_names() if get_target(n).device == "cpu"]
    if name not in boards:
        raise SqueezeError(f"unknown board '{name}': choose one of {', '.join(boards)}")
    return get_target(name)


def check_board(manifest: Manifest, board: TargetSpec, path: str | os.PathLike) -> None:
    """Refuse, in one line, an artifact whose code ``board`` cannot run (another architecture,
    instruction-set extensions the board's core lacks)."""
    record = manifest.target
    arch = record.get("arch") or triple_arch(record.get("triple", ""))
    fix = f"recompile it with --target {board.name}"
    if arch != board.arch:
        raise SqueezeError(f"{path} is compiled for {arch} (target {record.get('name')}), board {board.name} is "
                           f"{board.arch}: {fix}")
    missing = sorted(set(isa_extensions(record.get("isa", []))) - set(board.isa))
    if missing:
        raise SqueezeError(f"{path} (target {record.get('name')}) needs CPU extensions board {board.name} lacks "
                           f"({', '.join(missing)}): {fix}")


def pip_line() -> str:
    """The ``pip install`` line of the runtime the libraries were built with."""
    pins = " ".join(f"{p}=={importlib.metadata.version(p)}" for p in RUNTIME_PACKAGES)
    return f"pip install {pins} numpy"


def readme(manifest: Manifest, board: TargetSpec, artifact: str) -> str:
    """README.txt of a bundle of ``artifact`` for ``board``."""
    t = manifest.target
    libraries = " ".join(name for name, _, _ in manifest.builds())
    inputs = ", ".join(f"{s.name} {list(s.shape)} {s.dtype}" for s in manifest.inputs)
    return f"""Squeeze deploy bundle for {board.name}: {board.description}
Compiled from {artifact}: target {t.get('name')} ({t.get('triple')}, -mcpu={t.get('cpu')}; needs \
{', '.join(t.get('isa', [])) or 'no extensions'}), Squeeze {manifest.versions.get('squeeze')}, \
TVM {manifest.versions.get('tvm')}.

  {libraries:<22} the compiled model (one library per batch size)
  {MANIFEST:<22} inputs, outputs, target, checksums
  run.py                 runs it with the TVM runtime alone (no Squeeze, no compiler)

On the board (64-bit Linux, Python >= 3.10), with this folder copied there:
  python3 -m venv venv && . venv/bin/activate
  {pip_line()}
  python run.py --inputs x.npz --outputs y.npz   # x.npz: {inputs}
  python run.py                                   # random inputs: latency only

From the machine that compiled it, over TVM RPC (pip install psutil cloudpickle on the board too):
  on the board:  python -m tvm.exec.rpc_server --host 0.0.0.0 --port {RPC_PORT}
  here:          squeeze run {artifact} --rpc BOARD_ADDRESS:{RPC_PORT} --inputs x.npz --print-time
"""


def export_bundle(artifact: str | os.PathLike, board: str, output: str | os.PathLike) -> Path:
    """Write the deploy bundle of ``artifact`` for ``board`` into folder ``output`` (atomically:
    a temporary folder renamed when complete; an earlier bundle there is replaced)."""
    spec = board_target(board)
    art = Artifact.read(artifact)
    check_board(art.manifest, spec, artifact)
    with atomic_dir(output, "run.py") as tmp:
        for name, _, _ in art.manifest.builds():
            (tmp / name).write_bytes(art.library_of(name))
        if art.manifest.weights:  # weights stored outside the libraries, decoded here: run.py needs numpy only
            tensors = stored.unpack(art.manifest.weights["tensors"], art.weights)
            with open(tmp / WEIGHTS, "wb") as f:
                np.savez(f, **{f"t{i}": t for i, t in enumerate(tensors)})
        (tmp / MANIFEST).write_text(json.dumps(art.manifest.to_json(), indent=2))
        shutil.copyfile(RUN_SCRIPT, tmp / "run.py")
        (tmp / "README.txt").write_text(readme(art.manifest, spec, os.path.basename(artifact)))
    return Path(output)


def cmd_deploy(args: argparse.Namespace, given: list[str], log: Callable[[str], None]) -> None:
    """``squeeze export ART --board NAME -o DIR``; ``given``: the quantization options passed, refused."""
    given = given + (["--calib"] if args.calib else [])
    if given:
        raise SqueezeError(f"--board bundles a compiled artifact as it is: drop {', '.join(given)}")
    out = export_bundle(args.model, args.board, args.output)
    size = sum(f.stat().st_size for f in out.iterdir())
    log(f"wrote {out}/ ({size / 1e6:.2f} MB: {', '.join(sorted(f.name for f in out.iterdir()))}) for board "
        f"{args.board}; see {out / 'README.txt'}")

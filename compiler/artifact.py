"""The artifact: one .tar holding the compiled library and a manifest with checksums."""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import tvm
from tvm.support import cc

from . import weights as stored
from .atomic import atomic_path
from .errors import SqueezeError
from .program import TensorSpec, batch_of

FORMAT = "squeeze-artifact/1"
LIBRARY = "lib.so"  # the default (first) batch's library; another batch B is in lib_bB.so
MANIFEST = "manifest.json"
CROSS_PACKAGES = {"aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu"}  # compiler -> Debian package


def require_compiler(cross_compiler: str) -> None:
    """One line naming the package to install when the cross compiler (linker) is missing."""
    if shutil.which(cross_compiler) is None:
        raise SqueezeError(f"cross compiler {cross_compiler} not found: install it (Debian: apt-get install "
                           f"{CROSS_PACKAGES.get(cross_compiler, cross_compiler)})")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def squeeze_version() -> str:
    from . import __version__

    return __version__


@dataclass
class Manifest:
    """What a loader needs to know about a compiled model."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    target: dict
    summary: dict
    files: dict
    versions: dict
    # Multi-batch artifacts: one entry per batch size, the default (``inputs``/``outputs``,
    # ``lib.so``) first: ``{"batch": B, "library": "lib_bB.so", "inputs": [...], "outputs": [...]}``.
    # Empty for a single-batch artifact (whose manifest is as before).
    batches: list = field(default_factory=list)
    # Weights lifted out of the libraries (``--compress huffman``), stored in ``weights.bin``:
    # ``{"file": "weights.bin", "tensors": [entry of compiler.weights.pack], "params": {library:
    # [tensor index of each extra parameter of its main, in order]}}``. Empty: in the libraries.
    weights: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        d = {
            "format": FORMAT,
            "inputs": [s.to_json() for s in self.inputs],
            "outputs": [s.to_json() for s in self.outputs],
            "target": self.target,
            "summary": self.summary,
            "files": self.files,
            "versions": self.versions,
        }
        if self.batches:
            d["batches"] = [{"batch": b["batch"], "library": b["library"],
                             "inputs": [s.to_json() for s in b["inputs"]],
                             "outputs": [s.to_json() for s in b["outputs"]]} for b in self.batches]
        if self.weights:
            d["weights"] = self.weights
        return d

    def builds(self) -> list[tuple[str, list[TensorSpec], list[TensorSpec]]]:
        """``(library file, inputs, outputs)`` of every batch the artifact holds, the default first."""
        if not self.batches:
            return [(LIBRARY, self.inputs, self.outputs)]
        return [(b["library"], b["inputs"], b["outputs"]) for b in self.batches]

    @classmethod
    def from_json(cls, d: dict) -> "Manifest":
        if d.get("format") != FORMAT:
            raise SqueezeError(f"unsupported artifact format {d.get('format')!r}: recompile with this Squeeze")
        return cls(
            [TensorSpec.from_json(s) for s in d["inputs"]],
            [TensorSpec.from_json(s) for s in d["outputs"]],
            d["target"],
            d.get("summary", {}),
            d["files"],
            d.get("versions", {}),
            [{"batch": int(b["batch"]), "library": b["library"],
              "inputs": [TensorSpec.from_json(s) for s in b["inputs"]],
              "outputs": [TensorSpec.from_json(s) for s in b["outputs"]]} for b in d.get("batches", [])],
            d.get("weights", {}),
        )


def library_name(batch: int, default: bool) -> str:
    """The file holding one batch's library: ``lib.so`` for the default batch, else ``lib_bB.so``."""
    return LIBRARY if default else f"lib_b{batch}.so"


@dataclass
class Artifact:
    """A compiled model in memory: the library bytes and its manifest.

    ``libraries`` holds the other batches' libraries of a multi-batch artifact, by file name;
    ``weights`` the bytes of the lifted weights' member (``manifest.weights``), if any.
    """

    library: bytes
    manifest: Manifest
    libraries: dict = field(default_factory=dict)
    weights: bytes = b""

    @classmethod
    def from_executable(cls, executable: tvm.runtime.Executable, manifest: Manifest,
                        cross_compiler: str | None = None) -> "Artifact":
        """Export ``executable`` to a shared library (linked by ``cross_compiler`` for another
        architecture, e.g. ``aarch64-linux-gnu-gcc``) and record its checksum."""
        return cls.from_executables([(executable, manifest.inputs, manifest.outputs)], manifest, cross_compiler)

    @classmethod
    def from_executables(cls, builds, manifest: Manifest, cross_compiler: str | None = None,
                         lifted: list[list] | None = None) -> "Artifact":
        """One library per batch size: ``builds`` lists ``(executable, inputs, outputs)``, the
        default batch (``manifest.inputs``) first; the batch is the inputs' leading dim.
        ``lifted``: per build, the weights its ``main`` takes after the inputs
        (:func:`compiler.build.lift_weights`), stored once each in :data:`compiler.weights.MEMBER`."""
        kwargs = {}
        if cross_compiler is not None:
            require_compiler(cross_compiler)
            kwargs["fcompile"] = cc.cross_compiler(cross_compiler)
        data, entries = {}, []
        with tempfile.TemporaryDirectory() as tmp:
            for i, (executable, inputs, outputs) in enumerate(builds):
                batch = batch_of(inputs)
                name = library_name(batch, i == 0)
                path = os.path.join(tmp, name)
                executable.export_library(path, **kwargs)
                data[name] = Path(path).read_bytes()
                entries.append({"batch": batch, "library": name, "inputs": list(inputs), "outputs": list(outputs)})
        manifest.files = {name: _sha256(lib) for name, lib in data.items()}
        manifest.versions = {"squeeze": squeeze_version(), "tvm": tvm.__version__}
        manifest.batches = entries if len(entries) > 1 else []
        member = b""
        if lifted is not None:
            manifest.weights, member = _store(lifted, [e["library"] for e in entries])
            manifest.files[stored.MEMBER] = _sha256(member)
        default = data.pop(LIBRARY)
        return cls(default, manifest, data, member)

    def library_of(self, name: str) -> bytes:
        """The bytes of library file ``name`` (see :meth:`Manifest.builds`)."""
        return self.library if name == LIBRARY else self.libraries[name]

    def lifted_weights(self) -> dict[str, list]:
        """``{library: arrays its main takes after the inputs}``, decoded (empty lists when the
        weights are in the libraries)."""
        params = self.manifest.weights.get("params", {})
        arrays = stored.unpack(self.manifest.weights.get("tensors", []), self.weights)
        return {name: [arrays[i] for i in params.get(name, [])] for name, _, _ in self.manifest.builds()}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the artifact atomically (temporary file, then rename)."""
        manifest = json.dumps(self.manifest.to_json(), indent=2).encode()
        with atomic_path(path) as tmp:
            with tarfile.open(tmp, "w") as tar:
                extra = [(stored.MEMBER, self.weights)] if self.manifest.weights else []
                for name, data in ((MANIFEST, manifest), (LIBRARY, self.library), *sorted(self.libraries.items()),
                                   *extra):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        return Path(path)

    @classmethod
    def read(cls, path: str | os.PathLike) -> "Artifact":
        """Read an artifact and verify every checksum in its manifest."""
        if os.path.isdir(path):
            raise SqueezeError(f"{path} is a directory, not an artifact: give the .tar that squeeze compile wrote")
        if not os.path.isfile(path):
            raise SqueezeError(f"artifact not found: {path}: check the path")
        if not tarfile.is_tarfile(path):
            if str(path).endswith(".onnx"):
                raise SqueezeError(f"{path} is an ONNX model, not an artifact: compile it first "
                                   f"(squeeze compile {path} -o model.tar)")
            raise SqueezeError(f"{path} is not a Squeeze artifact (not a tar file): give the .tar that squeeze "
                               "compile wrote, or recompile it")
        try:
            with tarfile.open(path, "r") as tar:
                members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
        except (tarfile.TarError, OSError, EOFError) as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise SqueezeError(f"{path} is not a readable Squeeze artifact ({reason}): recompile it") from None
        if MANIFEST not in members:
            raise SqueezeError(f"{path} has no {MANIFEST}: not a Squeeze artifact, recompile it")
        try:
            manifest = Manifest.from_json(json.loads(members[MANIFEST]))
        except (ValueError, KeyError) as err:
            raise SqueezeError(f"{path}: corrupted manifest ({err}): recompile it") from None
        for name, digest in manifest.files.items():
            if name not in members or _sha256(members[name]) != digest:
                raise SqueezeError(f"{path}: checksum mismatch for {name}: the artifact is corrupted, recompile it")
        libraries = [name for name, _, _ in manifest.builds()]
        for name in libraries + ([stored.MEMBER] if manifest.weights else []):
            if name not in manifest.files or name not in members:
                raise SqueezeError(f"{path}: {name} is missing: the artifact is corrupted, recompile it")
        return cls(members[LIBRARY], manifest, {n: members[n] for n in libraries if n != LIBRARY},
                   members.get(stored.MEMBER, b""))


def _store(lifted: list[list], libraries: list[str]) -> tuple[dict, bytes]:
    """``manifest.weights`` and the member's bytes for the ``lifted`` weights of each library
    (a tensor several batches' libraries take is stored once)."""
    index: dict = {}
    arrays, params = [], {}
    for name, tensors in zip(libraries, lifted):
        params[name] = []
        for arr in tensors:
            key = (arr.dtype.str, arr.shape, _sha256(arr.tobytes()))
            if key not in index:
                index[key] = len(arrays)
                arrays.append(arr)
            params[name].append(index[key])
    entries, member = stored.pack(arrays)
    return {"file": stored.MEMBER, "tensors": entries, "params": params}, member

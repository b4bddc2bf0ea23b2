"""The artifact: one .tar holding the compiled library and a manifest with checksums."""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import tvm
from tvm.support import cc

from .atomic import atomic_path
from .errors import SqueezeError
from .program import TensorSpec

FORMAT = "squeeze-artifact/1"
LIBRARY = "lib.so"
MANIFEST = "manifest.json"
CROSS_PACKAGES = {"aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu"}  # compiler -> Debian package


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

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "inputs": [s.to_json() for s in self.inputs],
            "outputs": [s.to_json() for s in self.outputs],
            "target": self.target,
            "summary": self.summary,
            "files": self.files,
            "versions": self.versions,
        }

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
        )


@dataclass
class Artifact:
    """A compiled model in memory: the library bytes and its manifest."""

    library: bytes
    manifest: Manifest

    @classmethod
    def from_executable(cls, executable: tvm.runtime.Executable, manifest: Manifest,
                        cross_compiler: str | None = None) -> "Artifact":
        """Export ``executable`` to a shared library (linked by ``cross_compiler`` for another
        architecture, e.g. ``aarch64-linux-gnu-gcc``) and record its checksum."""
        kwargs = {}
        if cross_compiler is not None:
            if shutil.which(cross_compiler) is None:
                raise SqueezeError(f"cross compiler {cross_compiler} not found: install it (Debian: apt-get install "
                                   f"{CROSS_PACKAGES.get(cross_compiler, cross_compiler)})")
            kwargs["fcompile"] = cc.cross_compiler(cross_compiler)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, LIBRARY)
            executable.export_library(path, **kwargs)
            data = Path(path).read_bytes()
        manifest.files = {LIBRARY: _sha256(data)}
        manifest.versions = {"squeeze": squeeze_version(), "tvm": tvm.__version__}
        return cls(data, manifest)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the artifact atomically (temporary file, then rename)."""
        manifest = json.dumps(self.manifest.to_json(), indent=2).encode()
        with atomic_path(path) as tmp:
            with tarfile.open(tmp, "w") as tar:
                for name, data in ((MANIFEST, manifest), (LIBRARY, self.library)):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        return Path(path)

    @classmethod
    def read(cls, path: str | os.PathLike) -> "Artifact":
        """Read an artifact and verify every checksum in its manifest."""
        if not os.path.isfile(path):
            raise SqueezeError(f"artifact not found: {path}: check the path")
        try:
            with tarfile.open(path, "r") as tar:
                members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
        except (tarfile.TarError, OSError, EOFError) as err:
            raise SqueezeError(f"{path} is not a readable Squeeze artifact ({err}): recompile it") from None
        if MANIFEST not in members:
            raise SqueezeError(f"{path} has no {MANIFEST}: not a Squeeze artifact, recompile it")
        try:
            manifest = Manifest.from_json(json.loads(members[MANIFEST]))
        except (ValueError, KeyError) as err:
            raise SqueezeError(f"{path}: corrupted manifest ({err}): recompile it") from None
        for name, digest in manifest.files.items():
            if name not in members or _sha256(members[name]) != digest:
                raise SqueezeError(f"{path}: checksum mismatch for {name}: the artifact is corrupted, recompile it")
        return cls(members[LIBRARY], manifest)

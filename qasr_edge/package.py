"""Model packages: the folder format shared by the offline tooling (writer) and the runtime (reader).

See docs/model-package.md. This module needs only the standard library.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT = "qasr-edge-package"
FORMAT_VERSION = 5       # 2: decoder caches are in-place buffers updated by GroupQueryAttention;
                         # 3: weights in <graph>.onnx.data, Whisper encoders take windows under 30 s,
                         #    outlier MatMuls in 8-bit blocks, int4 blocks of 64 (2026-11-27)
                         # 4: Whisper's decoder takes token vectors, looked up by the runtime in
                         #    embed_tokens.npy (2026-11-27)
                         # 5: Silero VAD as its sequence graph (manifest `vad.kind`
                         #    "silero-sequence"); int8 Whisper encoders with fc2's loud input
                         #    channels computed apart from fc1 on (2026-11-28)
OLDEST_READABLE = 2      # packages older than this must be exported again
MANIFEST = "manifest.json"
# what `export --precision` builds and `transcribe --precision` asks for (docs/model-package.md)
PRECISIONS = ("fp32", "fp16", "int8", "int8-static", "int4")


class PackageError(Exception):
    """A folder is not a usable model package (missing manifest, missing file, hash mismatch)."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


@dataclass(frozen=True)
class ModelPackage:
    """A loaded manifest plus the folder it lives in."""

    root: Path
    manifest: dict[str, Any] = field(repr=False)

    @property
    def family(self) -> str:
        return self.manifest["family"]

    @property
    def name(self) -> str:
        return self.manifest.get("name", self.root.name)

    @property
    def precision(self) -> str:
        return self.manifest.get("precision", "fp32")

    @property
    def dims(self) -> dict[str, Any]:
        return self.manifest["dims"]

    @property
    def special_tokens(self) -> dict[str, Any]:
        return self.manifest["special_tokens"]

    def graph(self, role: str) -> Path:
        try:
            return self.root / self.manifest["graphs"][role]
        except KeyError:
            raise PackageError(f"{self.root}: manifest names no '{role}' graph") from None

    @property
    def tokenizer_path(self) -> Path:
        return self.root / self.manifest["tokenizer"]

    def verify(self) -> None:
        """Check every file's hash against the manifest."""
        for name, expected in self.manifest.get("files", {}).items():
            actual = sha256_file(self.root / name)
            if actual != expected:
                raise PackageError(f"{self.root / name}: hash mismatch (manifest {expected}, file {actual})")


def is_package(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def is_current(path: str | Path) -> bool:
    """A package written in this runtime's format version: the cache of exported registry models
    builds again what an older version wrote (it still loads, with the older recipes)."""
    try:
        return read_package(path).manifest.get("format_version") == FORMAT_VERSION
    except PackageError:
        return False


def read_package(path: str | Path, verify: bool = False) -> ModelPackage:
    root = Path(path)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise PackageError(f"{root}: not a model package (no {MANIFEST})")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise PackageError(f"{manifest_path}: unreadable manifest ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise PackageError(f"{manifest_path}: not a {FORMAT} manifest")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise PackageError(
            f"{manifest_path}: format version {manifest['format_version']} is newer than this runtime "
            f"understands ({FORMAT_VERSION}); upgrade qasr_edge"
        )
    if manifest.get("format_version", 0) < OLDEST_READABLE:
        raise PackageError(
            f"{manifest_path}: format version {manifest.get('format_version', 0)} was written by an older "
            f"qasr_edge; export it again (qasr-edge export SOURCE --output {root} --overwrite)"
        )
    for name in manifest.get("files", {}):
        if not (root / name).is_file():
            raise PackageError(f"{root}: manifest lists {name}, which is missing")
    package = ModelPackage(root=root, manifest=manifest)
    if verify:
        package.verify()
    return package


def write_manifest(root: str | Path, manifest: dict[str, Any]) -> ModelPackage:
    """Hash every file in `root` (except the manifest) into `manifest['files']` and write it."""
    from . import __version__

    root = Path(root)
    files = {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    full = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest,
            "files": files, "created_by": f"qasr_edge {__version__}"}
    (root / MANIFEST).write_text(json.dumps(full, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return ModelPackage(root=root, manifest=full)

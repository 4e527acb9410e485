"""Artifacts: atomic writes, hashes, tool versions and the JSON manifest beside every file.

Every stage writes to a temporary name in the destination folder and renames into place, so a
kill leaves either the old artifact or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import platform
import re
import shutil
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from . import __version__
from .errors import UserError
from .hardware import cpu_facts


def _declared_tools() -> list[str]:
    """Every library the project declares (extras included, test tools not): pyproject.toml is the one list.

    Read from the installed project's metadata, else (a tree run through PYTHONPATH) from the pyproject.toml
    beside the package.
    """
    try:
        requirements = metadata.requires("rexnet-deploy") or []
    except metadata.PackageNotFoundError:
        requirements = _tree_requirements()
    names = [re.split(r"[\s;<>=!~\[(]", r, maxsplit=1)[0] for r in requirements if 'extra == "test"' not in r]
    return list(dict.fromkeys(names))


def _tree_requirements() -> list[str]:
    try:
        import tomllib
        project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
    except (ImportError, OSError, KeyError, ValueError):
        return ["torch", "torchvision", "numpy", "onnx"]
    extras = project.get("optional-dependencies", {})
    return [*project.get("dependencies", []), *(r for name, reqs in extras.items() if name != "test" for r in reqs)]


def tool_versions() -> dict[str, str]:
    """Versions of the libraries that shape an artifact (installed ones only)."""
    found = {"rexnet-deploy": __version__, "python": platform.python_version()}
    for name in _declared_tools():
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def ensure_writable_dir(path: str | Path) -> Path:
    """Create ``path`` if needed; one-line error when it cannot be written."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise UserError(f"output folder {path} is not writable ({exc.strerror}): choose another with --out") from None
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    ensure_writable_dir(path.parent)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def user_mode_dir(parent: str | Path, prefix: str) -> Path:
    """A new uniquely named folder in ``parent`` with the mode the user's umask gives (as ``mkdir`` would):
    ``tempfile.mkdtemp`` makes it 0700, and a folder renamed into place keeps that, so a service running as
    another user could not read a bundle."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    mask = os.umask(0)
    os.umask(mask)
    tmp.chmod(0o777 & ~mask)
    return tmp


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; it replaces ``path`` whole only if the block succeeds."""
    path = Path(path)
    ensure_writable_dir(path.parent)
    tmp = user_mode_dir(path.parent, f".{path.name}.tmp-")
    try:
        yield tmp
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | Path, data: Any) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    return Path(path)


def manifest_path(artifact: str | Path) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def write_manifest(artifact: str | Path, fields: dict[str, Any]) -> Path:
    """Write ``<artifact>.json``: the given provenance plus file hash, size, time and tool versions."""
    artifact = Path(artifact)
    manifest = {
        "artifact": artifact.name,
        "sha256": sha256_file(artifact) if artifact.is_file() else None,
        "size_bytes": artifact.stat().st_size if artifact.is_file() else None,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **fields,
        "tool_versions": tool_versions(),
        "built_on": cpu_facts(),  # INT8/BF16 speed and numerics depend on the CPU's ISA
    }
    return write_json(manifest_path(artifact), manifest)


def read_manifest(artifact: str | Path) -> dict[str, Any]:
    path = manifest_path(artifact)
    if not path.is_file():
        raise UserError(f"{artifact} has no manifest {path.name} beside it: re-create it with rexnet-deploy")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"manifest {path} is not valid JSON ({exc.msg}): re-create the artifact") from None


def read_manifest_if_any(artifact: str | Path) -> dict[str, Any]:
    """The manifest beside ``artifact``, or ``{}`` when it has none (a file made by another tool)."""
    return read_manifest(artifact) if manifest_path(artifact).is_file() else {}

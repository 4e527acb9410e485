"""Finished stages, reused by content: the one reuse mechanism of the pipeline and the experiments.

A stage is a folder of outputs made from settings and input files. Its key hashes the settings (as
JSON) and the inputs' SHA-256, and the folder's ``stage.json`` records the key once the outputs are
complete. The folder is reused when that key matches and every output exists; anything else runs
the stage again, so a run made with other settings or from other inputs is never taken for this one.

Two ways to run one:

- :meth:`Stage.run` builds in a temporary folder that replaces the old one whole (``atomic_dir``),
  so an interrupted stage leaves the previous one intact;
- :meth:`Stage.run_resumable` builds in the folder itself and records the key in ``pending.json``
  first: a killed run (training) resumes when it is called again with the same key, and starts over
  with another.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from .artifacts import atomic_dir, sha256_file, write_json

STAGE_FILE = "stage.json"
PENDING_FILE = "pending.json"


def stage_key(settings: dict[str, Any], inputs: Sequence[str | Path] = ()) -> str:
    """16 hex digits of SHA-256 over the settings (sorted JSON) and the inputs' contents."""
    blob = json.dumps(settings, sort_keys=True, default=str) + "".join(sha256_file(p) for p in inputs)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _recorded_key(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("key")
    except (OSError, json.JSONDecodeError, AttributeError):  # absent, half-written by hand, or not a mapping
        return None


@dataclass
class Stage:
    """``outputs`` (names inside ``folder``) made from ``settings`` and the files ``inputs``."""

    name: str
    folder: Path
    settings: dict[str, Any]
    inputs: Sequence[Path] = ()
    outputs: Sequence[str] = ()

    @cached_property
    def key(self) -> str:
        return stage_key(self.settings, self.inputs)

    def done(self) -> bool:
        """Whether ``folder`` holds this very stage, finished: the same key and every output."""
        return _recorded_key(self.folder / STAGE_FILE) == self.key and all(
            (self.folder / o).exists() for o in self.outputs)

    def _mark_done(self, folder: Path) -> None:
        write_json(folder / STAGE_FILE, {"stage": self.name, "key": self.key, "outputs": list(self.outputs),
                                         "settings": self.settings})

    def run(self, build: Callable[[Path], object], log: Callable[[str], None] = print) -> Path:
        """``build(tmp_folder)`` unless the folder is :meth:`done`; the new folder replaces the old one whole."""
        if self.done():
            log(f"[{self.name}] up to date, reused: {self.folder}")
            return self.folder
        log(f"[{self.name}] running → {self.folder}")
        with atomic_dir(self.folder) as tmp:
            build(tmp)
            self._mark_done(tmp)
        return self.folder

    def run_resumable(self, build: Callable[[Path, bool], object], log: Callable[[str], None] = print) -> Path:
        """``build(folder, resume)`` in place unless the folder is :meth:`done`.

        ``resume`` is True when the folder holds an interrupted run with this key; a folder with any other
        content is derived output of other settings and is emptied first.
        """
        if self.done():
            log(f"[{self.name}] up to date, reused: {self.folder}")
            return self.folder
        pending = self.folder / PENDING_FILE
        resume = _recorded_key(pending) == self.key
        if resume:
            log(f"[{self.name}] resuming the interrupted run in {self.folder}")
        else:
            if self.folder.exists():
                shutil.rmtree(self.folder)
            log(f"[{self.name}] running → {self.folder}")
            self.folder.mkdir(parents=True)
            write_json(pending, {"stage": self.name, "key": self.key})
        build(self.folder, resume)
        self._mark_done(self.folder)
        pending.unlink()
        return self.folder

"""Stage reuse by content key: reused when unchanged, rerun when its settings or inputs change, resumable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rexnet_deploy.stages import PENDING_FILE, STAGE_FILE, Stage, stage_key


class Builds:
    """A build function that records its calls and writes the stage's one output."""

    def __init__(self, text: str = "out") -> None:
        self.calls: list[tuple[Path, bool | None]] = []
        self.text = text

    def __call__(self, folder: Path, resume: bool | None = None) -> None:
        self.calls.append((folder, resume))
        (folder / "out.txt").write_text(self.text)


def _stage(folder: Path, inputs=(), **settings) -> Stage:
    return Stage("demo", folder, {"n": 1, **settings}, inputs, ["out.txt"])


def test_a_finished_stage_is_reused_and_other_settings_or_inputs_rerun_it(tmp_path):
    folder, source = tmp_path / "stage", tmp_path / "source.bin"
    source.write_bytes(b"a")
    build, lines = Builds(), []
    assert _stage(folder, [source]).run(build, lines.append) == folder
    assert len(build.calls) == 1 and build.calls[0][0] != folder  # built in a temporary folder beside it
    assert (folder / "out.txt").read_text() == "out" and _stage(folder, [source]).done()
    assert json.loads((folder / STAGE_FILE).read_text())["settings"] == {"n": 1}

    _stage(folder, [source]).run(build, lines.append)
    assert len(build.calls) == 1 and lines[-1] == f"[demo] up to date, reused: {folder}"

    _stage(folder, [source], n=2).run(Builds("n=2"), lines.append)  # other settings: rebuilt, not reused
    assert (folder / "out.txt").read_text() == "n=2" and not _stage(folder, [source]).done()
    source.write_bytes(b"b")  # the same settings from another input file
    assert not _stage(folder, [source], n=2).done()
    (folder / "out.txt").unlink()  # an output gone: not done either
    source.write_bytes(b"a")
    assert not _stage(folder, [source], n=2).done()


def test_a_failed_build_leaves_the_previous_stage_whole(tmp_path):
    folder = tmp_path / "stage"
    _stage(folder).run(Builds("first"))

    def broken(tmp: Path) -> None:
        (tmp / "out.txt").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        _stage(folder, n=2).run(broken)
    assert (folder / "out.txt").read_text() == "first" and _stage(folder).done()
    assert [p.name for p in tmp_path.iterdir()] == ["stage"]  # no temporary folder left behind


def test_a_resumable_stage_resumes_its_own_interrupted_run_and_restarts_another(tmp_path):
    folder = tmp_path / "train"

    def killed(path: Path, resume: bool) -> None:
        (path / "last.txt").write_text("epoch 1")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _stage(folder).run_resumable(killed)
    assert json.loads((folder / PENDING_FILE).read_text())["key"] == _stage(folder).key
    assert not _stage(folder).done()

    build = Builds()
    _stage(folder).run_resumable(build)  # the same key: resumes in place
    assert build.calls == [(folder, True)] and (folder / "last.txt").is_file()
    assert _stage(folder).done() and not (folder / PENDING_FILE).exists()
    _stage(folder).run_resumable(build)
    assert len(build.calls) == 1  # finished: reused

    with pytest.raises(KeyboardInterrupt):
        _stage(folder, n=2).run_resumable(killed)
    build = Builds()
    _stage(folder, n=3).run_resumable(build)  # another key: the folder is emptied and the run starts over
    assert build.calls == [(folder, False)] and not (folder / "last.txt").exists()


def test_the_key_hashes_settings_and_input_contents():
    assert stage_key({"a": 1, "b": [1, 2]}) == stage_key({"b": [1, 2], "a": 1})
    assert stage_key({"a": 1}) != stage_key({"a": 2})
    assert len(stage_key({})) == 16

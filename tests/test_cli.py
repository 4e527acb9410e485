"""One vocabulary across the commands (issue 26): every flag has help that states its default, the old spellings
still work with a one-line note, --threads and --no-progress mean the same everywhere, and --help imports no torch."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from rexnet_deploy.cli import build_parser, main

COMPUTING = ("train", "prune", "calib", "quantize", "export", "build", "bench", "profile", "pipeline", "predict")


def _commands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_flag_has_help_that_states_its_default():
    missing = []
    for name, parser in _commands().items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
                continue
            flag = f"{name} {'/'.join(action.option_strings) or action.dest}"
            if not action.help:
                missing.append(f"{flag}: no help")
            elif action.default not in (None, False, [], argparse.SUPPRESS) and "default" not in action.help:
                missing.append(f"{flag}: default {action.default!r} not stated")
    assert not missing, missing


def test_the_same_concept_has_the_same_flag_in_every_command():
    commands = _commands()
    flags = {name: {s for a in p._actions for s in a.option_strings if a.help != argparse.SUPPRESS}
             for name, p in commands.items()}
    for name in COMPUTING:
        assert {"--threads", "--no-progress"} <= flags[name], name
        threads = next(a for a in commands[name]._actions if "--threads" in a.option_strings)
        assert threads.help == commands["train"]._option_string_actions["--threads"].help  # one default, one text
    for name in ("calib", "export", "bench", "prune"):
        assert "--checkpoint" in flags[name], name
    assert "--calibration" in flags["quantize"] and "--calibration" in flags["export"]
    assert "--calibration-images" in flags["calib"] and "--calibration-images" in flags["pipeline"]
    assert "--max-drop" in flags["quantize"] and "--max-drop" in flags["export"]
    assert "--batch" in flags["export"] and "--batch" in flags["profile"] and "--batch" in flags["predict"]
    assert "--eval-images" in flags["train"] and "--eval-images" in flags["export"]
    old = {"quantize": "--calib", "calib": "--num-images", "pipeline": "--calib-images", "export": "--deploy-batch",
           "train": "--val-subset"}
    for name, flag in old.items():
        assert flag not in flags[name], f"{name} {flag} is listed in --help"


@pytest.mark.parametrize("old, new, dest, value", [
    (["export", "--deploy-batch", "16"], ["export", "--batch", "16"], "batch", 16),
    (["export", "--budget", "0.3"], ["export", "--max-drop", "0.3"], "max_drop", 0.3),
    (["export", "--int8-max-drop", "0.3"], ["export", "--max-drop", "0.3"], "max_drop", 0.3),
    (["quantize", "m.onnx", "--calib", "c.pt"], ["quantize", "m.onnx", "--calibration", "c.pt"], "calibration", None),
    (["calib", "--num-images", "64"], ["calib", "--calibration-images", "64"], "calibration_images", 64),
    (["train", "--val-subset", "100"], ["train", "--eval-images", "100"], "val_subset", 100),
])
def test_an_old_spelling_fills_the_new_flag_with_a_one_line_note(old, new, dest, value, capsys):
    parser = build_parser()
    capsys.readouterr()
    then, now = vars(parser.parse_args(old)), vars(parser.parse_args(new))
    note = capsys.readouterr().err.strip().splitlines()
    assert then[dest] == now[dest] and (value is None or now[dest] == value)
    new_flag = next(arg for arg in new if arg.startswith("--"))
    assert len(note) == 1 and "deprecated" in note[0] and new_flag in note[0]


def test_build_without_a_backend_picks_one_this_machine_can_build(random_rexnet, tmp_path, capsys):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(random_rexnet["onnx"].read_bytes())
    (tmp_path / "m.onnx.json").write_bytes(random_rexnet["onnx"].with_name("tiny.onnx.json").read_bytes())
    code = main(["build", str(onnx), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 0 and "tensorrt" not in err.lower(), err


def test_help_imports_no_torch():
    """Building the parser (what every --help does) must not import torch, timm or torchvision."""
    probe = ("import sys; from rexnet_deploy.cli import build_parser; build_parser(); "
             "print(sorted(m for m in ('torch', 'timm', 'torchvision', 'torch_pruning', 'onnx') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr

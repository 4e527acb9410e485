"""One vocabulary across the commands (issue 26): every flag has help that states its default, the old spellings
still work with a one-line note, --threads and --no-progress mean the same everywhere, and --help imports no torch."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest

from rexnet_deploy.cli import build_parser, main

COMPUTING = ("train", "prune", "calib", "quantize", "export", "build", "bench", "profile", "pipeline", "predict")


def _commands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


_STATES_DEFAULT = re.compile(r"\b(default|required)\b", re.IGNORECASE)


def test_every_flag_has_help_that_states_its_default():
    """Every flag has help; every flag that takes a value says what it is when not given (or that it is required)."""
    missing = []
    for name, parser in _commands().items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
                continue
            flag = f"{name} {'/'.join(action.option_strings) or action.dest}"
            if not action.help:
                missing.append(f"{flag}: no help")
            elif action.option_strings and action.nargs != 0 and not action.required \
                    and not _STATES_DEFAULT.search(action.help):
                missing.append(f"{flag}: its default is not stated")
    assert not missing, missing


# a concept's flag: the commands that must have it (the helper of rexnet_deploy/cli_args.py that defines it)
CONCEPTS = {
    "--threads": COMPUTING,
    "--no-progress": ("models", "inspect", "check", *COMPUTING),
    "--checkpoint": ("prune", "calib", "export", "bench"),
    "--calibration": ("quantize", "export", "build"),
    "--calibration-images": ("calib", "pipeline"),
    "--max-drop": ("quantize", "export"),
    "--batch": ("export", "pipeline", "profile", "predict"),
    "--eval-images": ("train", "prune", "export", "bench", "quantize", "pipeline"),
    "--device": ("train", "prune", "bench", "predict"),
}


def test_the_same_concept_has_the_same_flag_in_every_command():
    commands = _commands()
    flags = {name: {s: a for a in p._actions for s in a.option_strings if a.help != argparse.SUPPRESS}
             for name, p in commands.items()}
    for flag, names in CONCEPTS.items():
        for name in names:
            assert flag in flags[name], f"{name} has no {flag}"
    # shared helpers: one metavar, one value type and one wording per concept, wherever it appears
    helper_made = {"--threads", "--no-progress", "--checkpoint", "--calibration", "--calibration-images",
                   "--max-drop", "--eval-images"}
    for flag in helper_made:
        actions = {name: f[flag] for name, f in flags.items() if flag in f}
        assert len({a.metavar for a in actions.values()}) == 1, {n: a.metavar for n, a in actions.items()}
        if flag in ("--threads", "--no-progress"):
            assert len({a.help for a in actions.values()}) == 1, flag
    for name in CONCEPTS["--device"]:  # one flag, one set of words (tested below)
        assert flags[name]["--device"].metavar == "DEVICE", name
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
    (["pipeline", "--calib-images", "64"], ["pipeline", "--calibration-images", "64"], "calibration_images", 64),
    (["pipeline", "--deploy-batch", "8"], ["pipeline", "--batch", "8"], "batch", 8),
])
def test_an_old_spelling_fills_the_new_flag_with_a_one_line_note(old, new, dest, value, capsys):
    parser = build_parser()
    capsys.readouterr()
    then, now = vars(parser.parse_args(old)), vars(parser.parse_args(new))
    note = capsys.readouterr().err.strip().splitlines()
    assert then[dest] == now[dest] and (value is None or now[dest] == value)
    new_flag = next(arg for arg in new if arg.startswith("--"))
    assert len(note) == 1 and "deprecated" in note[0] and new_flag in note[0]


def test_the_positional_checkpoint_of_prune_still_works_with_a_note(tmp_path, capsys):
    code = main(["prune", str(tmp_path / "missing.pt"), "--width", "0.5", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 2, err
    assert "deprecated" in err[0] and "--checkpoint" in err[0] and "missing.pt" in err[1]


@pytest.mark.parametrize("command", [["train"], ["prune", "--checkpoint", "c.pt", "--width", "0.5"], ["bench"],
                                     ["predict", "m.onnx", "x.png"]])
def test_every_device_flag_takes_the_same_words(command):
    parser = build_parser()
    for word in ("cpu", "cuda", "CUDA"):
        assert parser.parse_args([*command, "--device", word]).device == word.lower()
    for bad in ("gpu", "cuda:x", "tpu"):
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args([*command, "--device", bad])
        assert exit_.value.code == 2
    # a bench row or a predict runner names no GPU index: their runtimes take the device's default GPU
    if command[0] in ("train", "prune"):
        assert parser.parse_args([*command, "--device", "cuda:1"]).device == "cuda:1"
    else:
        with pytest.raises(SystemExit):
            parser.parse_args([*command, "--device", "cuda:1"])
    if command[0] == "bench":
        assert parser.parse_args([*command, "--device", "tensorrt"]).device == "tensorrt"  # ORT's provider


@pytest.mark.parametrize("argv", [["calib", "--calibration-images", "0"], ["bench", "--device", "gpu"],
                                  ["export", "--threads", "two"], ["quantize"]])
def test_bad_usage_is_one_line_and_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1, err
    assert err[0].startswith(f"rexnet-deploy {argv[0]}: error: ") and f"rexnet-deploy {argv[0]} --help" in err[0]


def test_build_without_a_backend_picks_one_this_machine_can_build(random_rexnet, tmp_path, capsys):
    from rexnet_deploy.backends import builders

    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(random_rexnet["onnx"].read_bytes())
    (tmp_path / "m.onnx.json").write_bytes(random_rexnet["onnx"].with_name("tiny.onnx.json").read_bytes())
    code = main(["build", str(onnx), "--no-progress"])
    err = capsys.readouterr().err
    first = next(b.name for b in builders() if b.unavailable_reason() is None)
    assert code == 0 and "tensorrt" not in err.lower(), err
    assert f"building for {first}" in err and len(err.strip().splitlines()) == 1, err


def test_help_imports_no_torch():
    """Building the parser and printing every command's --help must not import torch, timm or torchvision."""
    probe = ("import contextlib, io, sys\n"
             "from rexnet_deploy.cli import build_parser, main\n"
             "commands = [a for a in build_parser()._actions if hasattr(a, 'choices') and a.choices][0].choices\n"
             "for argv in [['--help'], *([c, '--help'] for c in commands)]:\n"
             "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
             "        main(argv)\n"
             "print(len(commands), sorted(m for m in ('torch', 'timm', 'torchvision', 'torch_pruning', 'onnx')\n"
             "                            if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    count, imported = done.stdout.split(" ", 1)
    assert int(count) >= 13 and imported.strip() == "[]", done.stdout + done.stderr


# ---- CI output ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path, model", [
    ("export/rexnet-0.5/rexnet-0.5.fp32.pte", "rexnet-0.5"),
    ("rexnet-0.5.int8-nncf-pointwise.openvino.xml", "rexnet-0.5"),
    ("rexnet_100-1.fp32-int8-ort-cpu-minmax.onnx", "rexnet_100-1"),
    ("rexnet-0.5.fp32.uint8.onnx", "rexnet-0.5"),
    ("tiny.openvino.xml", "tiny"),
    ("runs/mine/finetuned.pt", "finetuned"),
    ("garbage.engine", "garbage"),
])
def test_bench_paths_are_grouped_under_the_model_their_file_names(path, model):
    from rexnet_deploy.bench.suite import model_named_by

    assert model_named_by(path) == model


def test_executorch_runtime_chatter_stays_out_and_real_lines_come_through(capfd):
    """Native code writes to file descriptor 2, the pybindings through sys.stderr: cpuinfo's probing of /sys is
    dropped from both, any other line reaches stderr once the block ends, and a failing block's lines stay with
    its error."""
    import os

    from rexnet_deploy.backends.executorch import _runtime_log

    with _runtime_log() as said:
        os.write(2, b"[cpuinfo_utils.cpp:71] Reading file /sys/devices/soc0/image_version\n")
        print("[cpuinfo_utils.cpp:125] CPU info and manual query on # of cpus dont match.", file=sys.stderr)
        os.write(2, b"[method.cpp:42] a warning the user can act on\n")
        assert said() == ["[method.cpp:42] a warning the user can act on"]
        assert capfd.readouterr().err == ""  # nothing reached the terminal while the block ran
    assert capfd.readouterr().err.splitlines() == ["[method.cpp:42] a warning the user can act on"]
    with pytest.raises(RuntimeError), _runtime_log():
        os.write(2, b"[program.cpp:1] Program identifier 'ageg' != expected 'ET12'\n")
        raise RuntimeError("the caller's one-line error carries the runtime's line")
    assert capfd.readouterr().err == ""


def test_executorch_cpuinfo_probing_does_not_reach_the_terminal():
    """The real probe, in a fresh process (cpuinfo logs only on the thread pool's first use in a process)."""
    from rexnet_deploy.backends.executorch import unavailable_reason

    if unavailable_reason() is not None:
        pytest.skip(unavailable_reason())
    probe = ("from rexnet_deploy.backends.executorch import _runtime_log, _runtime\n"
             "_runtime()\n"
             "from executorch.extension.pybindings import portable_lib\n"
             "with _runtime_log():\n"
             "    print('threads', portable_lib._threadpool_get_thread_count())\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.startswith("threads"), done.stderr
    assert "cpuinfo" not in done.stderr, done.stderr


def test_a_backends_own_progress_bars_stay_out_of_a_captured_build(random_rexnet, tmp_path, fmnist_available):
    """NNCF draws rich progress bars on stdout; a build whose stderr is not a terminal shows none."""
    from conftest import run_cli

    from rexnet_deploy.backends.openvino import nncf_unavailable_reason
    from rexnet_deploy.quant import build_calibration_set

    if nncf_unavailable_reason() is not None:
        pytest.skip(nncf_unavailable_reason())
    calib = build_calibration_set("fashion_mnist", num_images=64, out=tmp_path / "calib.pt")
    proc = run_cli("build", str(random_rexnet["onnx"]), "--backend", "openvino", "--precision", "int8",
                   "--calibration", str(calib), "--parity-images", "16", "--out", str(tmp_path / "m.openvino.xml"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "━" not in proc.stdout and "Statistics collection" not in proc.stdout, proc.stdout
    assert "m.openvino.xml" in proc.stdout  # the command's own table is still there

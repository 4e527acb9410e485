"""The backend table is the single place a runtime is registered: a runtime added through it alone is reached
by ``open_runner``, by a bench suite row, by ``build_engine`` and by the commands (``rexnet-deploy build`` with its
option as a flag, ``export --engines``), with no other file changed."""

from __future__ import annotations

import sys
import textwrap
import types

import numpy as np
import pytest
import torch
import yaml
from conftest import randomize_bn

from rexnet_deploy.artifacts import read_manifest, write_manifest
from rexnet_deploy.backends import (
    BACKENDS,
    Backend,
    BuildOption,
    backend_for,
    build_result,
    get_backend,
    open_runner,
)
from rexnet_deploy.bench import load_suite, run_bench
from rexnet_deploy.bundle import build_engine, read_bundle
from rexnet_deploy.cli import main
from rexnet_deploy.data.datasets import FASHION_MNIST_PREPROCESS
from rexnet_deploy.errors import UserError
from rexnet_deploy.export import export_onnx
from rexnet_deploy.models import create_model

# A runtime the project does not have: ONNX Runtime under another name, reading "*.fakeonnx" files that it
# "builds" by copying an ONNX file. It is written the way a real backend module is (backends/base.py).
FAKE_MODULE = '''
from pathlib import Path
import shutil

from rexnet_deploy.backends import BuildOption
from rexnet_deploy.backends.onnxruntime import OnnxRuntimeRunner
from rexnet_deploy.onnx_io import onnx_precision

BUILD_OPTIONS = (BuildOption("copies", "times the fake build copies the file", 1, int),)


def unavailable_reason(device):
    return None


def side_files(path):
    return []


def build(onnx_path, out_path, copies=1):
    for _ in range(copies):
        shutil.copyfile(onnx_path, out_path)
    return {"kind": "engine", "backend": "fakeort", "precision": onnx_precision(onnx_path),
            "source_onnx": Path(onnx_path).name, "copies": copies, "note": f"copied {copies}x"}


class FakeRunner(OnnxRuntimeRunner):
    backend = "fakeort"


def open_runner(path, device="cpu", threads=None):
    return FakeRunner(path, threads=threads, precision=onnx_precision(path))
'''


@pytest.fixture()
def fake_backend(monkeypatch) -> Backend:
    # registered as an imported module, not through sys.path: restoring sys.path afterwards would also drop the
    # folders libraries append on first import (onnxruntime.transformers'), breaking later tests
    module = types.ModuleType("fake_ort_backend")
    exec(textwrap.dedent(FAKE_MODULE), module.__dict__)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    row = Backend("fakeort", "fake_ort_backend", "engine", (".fakeonnx",), ("cpu",), ("fp32",), needs_gpu=False,
                  extra=None, packages=(), row_tag="fake", file_tag=".fake")
    monkeypatch.setitem(BACKENDS, row.name, row)
    return row


@pytest.fixture()
def small_onnx(tmp_path):
    torch.manual_seed(0)
    model = randomize_bn(create_model("rexnet", width=0.25, num_classes=10))
    path = export_onnx(model, tmp_path / "small.onnx", (3, 32, 32))
    preprocess = FASHION_MNIST_PREPROCESS.to_dict()
    write_manifest(path, {"precision": "fp32", "preprocess": preprocess})
    return path


def test_a_backend_added_to_the_table_alone_is_built_opened_and_benched(fake_backend, small_onnx, tmp_path,
                                                                         fmnist_available):
    images = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
    # build: the table's row names the file, its module builds it, the generic step checks parity
    engine = build_engine(small_onnx, None, "fakeort", images=images, parity_source="random", copies=2)
    assert engine.name == "small.fake.fakeonnx" and read_manifest(engine)["parity"]["passed"]
    with pytest.raises(UserError, match="--max-batch apply to .* builds only, not fakeort"):
        build_engine(small_onnx, None, "fakeort", max_batch=8)
    # open_runner: found by the suffix, through the table
    assert backend_for(engine) is fake_backend
    with open_runner(engine) as runner, open_runner(small_onnx) as reference:
        assert runner.backend == "fakeort" and reference.backend == "onnxruntime"
        np.testing.assert_array_equal(runner.infer(images), reference.infer(images))
    # a bench suite row: its device and format come from the table too
    suite = {"name": "fake", "eval_images": 16, "batches": [1], "threads": 1,
             "timing": {"warmup_steps": 1, "warmup_seconds": 0, "steps": 2, "min_steps": 2, "max_seconds": 1},
             "models": [{"name": "m", "artifacts": [{"name": "ort", "onnx": str(small_onnx)},
                                                     {"name": "fake", "engine": str(engine)}]}]}
    (tmp_path / "fake.yaml").write_text(yaml.safe_dump(suite))
    rows = {r["name"]: r for r in run_bench(load_suite(tmp_path / "fake.yaml"), progress=False)["rows"]}
    assert rows["fake"]["status"] == "ok", rows["fake"]["reason"]
    assert rows["fake"]["format"] == "fakeort" and rows["fake"]["runner"]["backend"] == "fakeort"
    assert rows["fake"]["accuracy"] == rows["ort"]["accuracy"]
    assert rows["fake"]["speed"][0]["img_per_s"] > 0


def test_the_commands_reach_a_backend_added_to_the_table_alone(fake_backend, small_onnx, tmp_path, capsys,
                                                              fmnist_available):
    """``rexnet-deploy build`` offers the row's one build option as a flag made from its module's spec and passes it
    to its build, prints the build's note; ``export --engines`` builds it into a bundle, whose table shows the note."""
    threads = torch.get_num_threads()  # the commands set torch's threads, and this process goes on after them
    try:
        with pytest.raises(SystemExit):
            main(["build", "--help"])
        assert "--copies COPIES" in capsys.readouterr().out
        with pytest.raises(SystemExit):
            main(["export", "--help"])
        # export's --engines lists every engine backend of the table, the ones built from the checkpoint too
        assert "openvino,tensorrt,executorch,fakeort" in " ".join(capsys.readouterr().out.split())
        out = tmp_path / "cli.fakeonnx"
        assert main(["build", str(small_onnx), "--backend", "fakeort", "--out", str(out), "--copies", "3",
                     "--parity-images", "8", "--no-progress"]) == 0
        assert read_manifest(out)["copies"] == 3 and "copied 3x" in capsys.readouterr().out
        # another backend's flag, given, is refused in one line rather than ignored
        assert main(["build", str(small_onnx), "--backend", "fakeort", "--max-batch", "8", "--no-progress"]) == 2
        assert "--max-batch apply to tensorrt builds only, not fakeort" in capsys.readouterr().err
        bundle = tmp_path / "bundle"
        assert main(["export", "--engines", "fakeort", "--out", str(bundle), "--parity-images", "8",
                     "--eval-images", "0", "--no-progress"]) == 0
    finally:
        torch.set_num_threads(threads)
    engines = [f for f in read_bundle(bundle)["files"] if f["backend"] == "fakeort"]
    # one engine per ONNX precision of the bundle, named by the row, each checked, each with its build's note
    assert "rexnet_tiny_cifar-0.5.fp32.fake.fakeonnx" in [f["file"] for f in engines]
    assert all(f["note"] == "copied 1x" and read_manifest(bundle / f["file"])["parity"]["passed"] for f in engines)
    assert "copied 1x" in (bundle / "bundle.md").read_text()


def test_the_table_answers_unknown_names_and_files_in_one_line(tmp_path):
    with pytest.raises(UserError, match="unknown backend 'nope': choose one of torch, onnxruntime"):
        get_backend("nope")
    with pytest.raises(UserError, match=r"x\.tflite is not a model file rexnet-deploy runs \(expected .*\.onnx"):
        backend_for(tmp_path / "x.tflite")
    with pytest.raises(UserError, match="onnxruntime runs files as they are and builds nothing"):
        build_engine(tmp_path / "m.onnx", None, "onnxruntime")


def test_every_table_row_has_a_module_that_provides_the_interface():
    for backend in BACKENDS.values():
        module = backend.impl()
        for name in ("unavailable_reason", "open_runner", "side_files"):
            assert callable(getattr(module, name, None)), (backend.name, name)
        if backend.builds_from_onnx:
            assert callable(getattr(module, "build", None))
        assert all(isinstance(option, BuildOption) for option in backend.build_options()), backend.name
        if backend.int8_layout:
            assert module.INT8_LAYOUT.name == backend.int8_layout
        assert backend.device_for(backend.devices[0]) == backend.devices[0]


def test_every_build_returns_the_fields_every_reader_expects():
    fields = {"kind": "engine", "backend": "x", "precision": "fp32", "note": "one line"}
    assert build_result("x", fields) is fields
    with pytest.raises(TypeError, match="a build returns kind, backend, precision and optionally a note string"):
        build_result("x", {"kind": "engine", "backend": "x"})
    with pytest.raises(TypeError, match="optionally a note string"):
        build_result("x", {**fields, "note": {"delegation": 1}})


def test_first_line_and_require_file(tmp_path):
    from rexnet_deploy.errors import first_line, require_file

    assert first_line(ValueError("")) == "ValueError"  # an empty message used to raise IndexError
    assert first_line(RuntimeError("\n  top line \nmore")) == "top line"
    assert first_line("x" * 300, limit=10) == "x" * 10
    with pytest.raises(UserError, match=r"ONNX file .*missing\.onnx does not exist: export it"):
        require_file(tmp_path / "missing.onnx", "ONNX file", "export it")
    (tmp_path / "a.onnx").write_bytes(b"")
    assert require_file(tmp_path / "a.onnx", "ONNX file", "export it") == tmp_path / "a.onnx"

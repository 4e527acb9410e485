"""The hand-off (issue 24): a bundle's runtime-only kit, run where neither torch nor rexnet_deploy imports, on real
image files, gives the top-1 the bundle records and the classes ``rexnet-deploy predict`` gives; ``predict`` agrees
across the runtimes of one bundle; ``inspect`` describes every kind of file; folders get the user's umask.

Two trees of real images: Fashion-MNIST test images written as 28×28 PNG (the pad contract), and an ImageFolder
tree of non-square JPEG and PNG images of mixed sizes (the shorter-side + center-crop contract)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FMNIST_PRE, run_cli

from rexnet_deploy.artifacts import atomic_dir
from rexnet_deploy.backends import get_backend
from rexnet_deploy.cli import main
from rexnet_deploy.data import FASHION_MNIST_CLASSES, load_fashion_mnist
from rexnet_deploy.onnx_io import read_metadata
from rexnet_deploy.preprocess import Preprocess

FMNIST_IMAGES = 1000
FOLDER_CLASSES = ("Trouser", "Bag", "Sneaker")
FOLDER_TRAIN, FOLDER_VAL = 40, 20


def _class_dir(name: str) -> str:
    return name.replace("/", "_").replace(" ", "_")


@pytest.fixture(scope="module")
def blocked(tmp_path_factory) -> Path:
    """A PYTHONPATH entry under which ``import torch`` and ``import rexnet_deploy`` fail."""
    root = tmp_path_factory.mktemp("blocked")
    for name in ("torch", "rexnet_deploy"):
        (root / name).mkdir()
        (root / name / "__init__.py").write_text(f"raise ImportError('{name} is not installed here')\n")
    return root


def run_kit(bundle: Path, images: Path, blocked: Path, *extra: str) -> list[dict]:
    """The bundle's predict.py in a fresh interpreter, from another folder, with torch and rexnet_deploy blocked."""
    env = {**os.environ, "PYTHONPATH": str(blocked)}
    done = subprocess.run([sys.executable, str(bundle / "predict.py"), str(images), "--json", "--top-k", "1", *extra],
                          capture_output=True, text=True, env=env, cwd=blocked, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


def predict_cli(artifact: Path, images: Path, out: Path, capsys) -> dict[str, str]:
    """``rexnet-deploy predict ARTIFACT FOLDER --out X.json``: image → top-1 class."""
    assert main(["predict", str(artifact), str(images), "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    return {r["image"]: r["top1"] for r in json.loads(out.read_text())["rows"]}


def kit_top1(rows: list[dict]) -> tuple[dict[str, str], float]:
    """image → top-1 class, and the top-1 accuracy against the class folder each image sits in."""
    classes = {row["image"]: row["topk"][0][0] for row in rows}
    correct = sum(_class_dir(c) == Path(image).parent.name for image, c in classes.items())
    return classes, 100.0 * correct / len(classes)


def agreement(a: dict[str, str], b: dict[str, str]) -> float:
    assert a.keys() == b.keys()
    return sum(a[k] == b[k] for k in a) / len(a)


def recorded_top1(bundle: Path, file_name: str) -> float:
    entry = next(f for f in json.loads((bundle / "bundle.json").read_text())["files"] if f["file"] == file_name)
    return entry["accuracy"]["top1"]


# ---------------------------------------------------------------- Fashion-MNIST as 28×28 PNG files
@pytest.fixture(scope="module")
def fmnist_pngs(tmp_path_factory, fmnist_available) -> Path:
    """The first FMNIST_IMAGES test images as the 28×28 grey PNG files a user would hold, one folder per class."""
    import gzip

    from PIL import Image

    from rexnet_deploy.data.datasets import FASHION_MNIST_DIR

    root = tmp_path_factory.mktemp("fmnist-png")
    raw = gzip.open(FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").read()
    images = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)[:FMNIST_IMAGES]
    labels = load_fashion_mnist("test").labels[:FMNIST_IMAGES].tolist()
    for index, (image, label) in enumerate(zip(images, labels)):
        folder = root / _class_dir(FASHION_MNIST_CLASSES[label])
        folder.mkdir(exist_ok=True)
        Image.fromarray(image, mode="L").save(folder / f"{index:05d}.png")
    return root


@pytest.fixture(scope="module")
def fmnist_bundle(fmnist_trained, tmp_path_factory) -> Path:
    engines = [name for name in ("openvino", "executorch") if get_backend(name).unavailable_reason() is None]
    out = tmp_path_factory.mktemp("fmnist-bundle") / "bundle"
    assert main(["export", "--checkpoint", str(fmnist_trained), "--precision", "fp32", "--engines",
                 ",".join(engines) or "none", "--parity-images", "32", "--eval-images", str(FMNIST_IMAGES),
                 "--embed-preprocess", "--out", str(out)]) == 0
    return out


def test_fashion_mnist_contract_is_the_pad_the_tool_trains_with(fmnist_available):
    record = FMNIST_PRE.to_dict()
    assert record["resize"] == "pad" and record["source_size"] == 28 and record["size"] == 32
    assert record["layout"] == "NCHW" and record["dtype"] == "float32" and record["input_name"] == "input"
    test = load_fashion_mnist("test")
    assert Preprocess.from_dict(record) == FMNIST_PRE
    # the contract on one decoded PNG's pixels is the tool's own evaluation input, bit for bit
    one = FMNIST_PRE.pixels(test.images[7, 0].numpy()[2:30, 2:30])
    assert np.array_equal(FMNIST_PRE.to_input(one[None]), test.inputs([7]).numpy())


def test_kit_reproduces_the_bundle_on_fashion_mnist_png_files(fmnist_bundle, fmnist_pngs, blocked, tmp_path, capsys):
    bundle = json.loads((fmnist_bundle / "bundle.json").read_text())
    assert bundle["preprocess"] == FMNIST_PRE.to_dict()  # the whole contract, identical in bundle.json ...
    for f in bundle["files"]:  # ... and in every manifest (the uint8 file's says its input is the pixels)
        expected = FMNIST_PRE.with_embedded(bool(f.get("embedded_preprocess"))).to_dict()
        assert json.loads((fmnist_bundle / f["manifest"]).read_text())["preprocess"] == expected
        if f["file"].endswith(".onnx"):  # ... and in the ONNX file's own metadata_props
            assert json.loads(read_metadata(fmnist_bundle / f["file"])["preprocess"]) == expected
    files = [f["file"] for f in bundle["files"] if Path(f["file"]).suffix in (".onnx", ".xml")]
    assert any(name.endswith(".xml") for name in files) or get_backend("openvino").unavailable_reason()
    for name in files:
        kit, top1 = kit_top1(run_kit(fmnist_bundle, fmnist_pngs, blocked, "--model", name))
        assert len(kit) == FMNIST_IMAGES
        assert abs(top1 - recorded_top1(fmnist_bundle, name)) <= 0.1, name
        tool = predict_cli(fmnist_bundle / name, fmnist_pngs, tmp_path / f"{name}.json", capsys)
        assert agreement(kit, tool) >= 0.999, name


def test_uint8_file_matches_the_float_file_on_real_images(fmnist_bundle, fmnist_pngs, blocked):
    """``--embed-preprocess``: uint8 NHWC pixels in, scaling and mean/std in the graph; its logits match the float
    file's fed by the host contract (FP32 parity limits) on PNG files, and the kit runs it from its manifest."""
    import onnxruntime as ort

    from rexnet_deploy.export import compare_logits

    uint8, fp32 = sorted(fmnist_bundle.glob("*.fp32.uint8.onnx")), sorted(fmnist_bundle.glob("*.fp32.onnx"))
    assert len(uint8) == 1 and len(fp32) == 1
    manifest = json.loads((fmnist_bundle / f"{uint8[0].name}.json").read_text())
    assert manifest["embedded_preprocess"] and manifest["parity"]["passed"]
    assert manifest["preprocess"]["layout"] == "NHWC" and manifest["preprocess"]["dtype"] == "uint8"
    files = sorted(fmnist_pngs.rglob("*.png"))[:300]
    pixels = np.stack([FMNIST_PRE.pixels(Preprocess.load_image(str(f))) for f in files])
    float_session, uint8_session = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
                                    for p in (fp32[0], uint8[0]))
    assert uint8_session.get_inputs()[0].type == "tensor(uint8)"
    reference = float_session.run(None, {"input": FMNIST_PRE.to_input(pixels)})[0]
    candidate = uint8_session.run(None, {"input": pixels})[0]
    assert compare_logits(reference, candidate, "fp32")["passed"]
    if get_backend("openvino").unavailable_reason() is None:  # OpenVINO runs the same uint8 ONNX
        import openvino as ov

        compiled = ov.Core().compile_model(str(uint8[0]), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        assert compare_logits(reference, compiled({0: pixels})[compiled.output(0)], "fp32")["passed"]
    _, top1 = kit_top1(run_kit(fmnist_bundle, fmnist_pngs, blocked, "--model", uint8[0].name))
    assert abs(top1 - recorded_top1(fmnist_bundle, fp32[0].name)) <= 0.1


def test_kit_runs_the_executorch_program(fmnist_bundle, fmnist_pngs, tmp_path_factory):
    """executorch.runtime's Python bindings need torch: only rexnet_deploy is blocked here."""
    pte = sorted(fmnist_bundle.glob("*.pte"))
    if not pte:
        pytest.skip("executorch is not installed: pip install 'rexnet-deploy[executorch]'")
    only_tool = tmp_path_factory.mktemp("no-rexnet")
    (only_tool / "rexnet_deploy").mkdir()
    (only_tool / "rexnet_deploy" / "__init__.py").write_text("raise ImportError('not here')\n")
    _, top1 = kit_top1(run_kit(fmnist_bundle, fmnist_pngs, only_tool, "--model", pte[0].name))
    assert abs(top1 - recorded_top1(fmnist_bundle, pte[0].name)) <= 0.1


def test_predict_on_an_executorch_program_prints_no_runtime_chatter(fmnist_bundle, fmnist_pngs):
    """ExecuTorch's C++ cpuinfo probing logs five lines on its first use: they stay out of the user's terminal."""
    pte = sorted(fmnist_bundle.glob("*.pte"))
    if not pte:
        pytest.skip("executorch is not installed: pip install 'rexnet-deploy[executorch]'")
    done = run_cli("predict", str(pte[0]), str(next(fmnist_pngs.rglob("*.png"))), "--threads", "2")
    assert done.returncode == 0 and "cpuinfo" not in done.stderr and "threadpool" not in done.stderr, done.stderr


def test_predict_agrees_across_the_runtimes_of_one_bundle(fmnist_bundle, fmnist_trained, fmnist_pngs, tmp_path,
                                                          capsys):
    artifacts = [fmnist_trained, *sorted(p for p in fmnist_bundle.iterdir() if p.suffix in (".onnx", ".xml", ".pte"))]
    answers = {a.name: predict_cli(a, fmnist_pngs, tmp_path / f"{a.name}.json", capsys) for a in artifacts}
    reference = answers[fmnist_trained.name]
    for name, answer in answers.items():
        assert agreement(answer, reference) >= 0.999, name


# ---------------------------------------------------------------- an ImageFolder tree of mixed sizes and formats
@pytest.fixture(scope="module")
def mixed_tree(tmp_path_factory, fmnist_available) -> Path:
    """Fashion-MNIST images of three classes, upscaled to non-square sizes between 30 and 70 px, saved as JPEG
    (every other one) and PNG."""
    from PIL import Image

    root = tmp_path_factory.mktemp("mixed") / "tree"
    test = load_fashion_mnist("test")
    rng = np.random.default_rng(0)
    for name in FOLDER_CLASSES:
        label = FASHION_MNIST_CLASSES.index(name)
        members = torch.nonzero(test.labels == label).flatten()[:FOLDER_TRAIN + FOLDER_VAL].tolist()
        for i, index in enumerate(members):
            folder = root / ("train" if i < FOLDER_TRAIN else "val") / name
            folder.mkdir(parents=True, exist_ok=True)
            w, h = (int(v) for v in rng.integers(30, 71, 2))
            image = Image.fromarray(test.images[index, 0].numpy()[2:30, 2:30]).resize((w, h), Image.BICUBIC)
            if i % 2:
                image.convert("RGB").save(folder / f"{index:05d}.jpg", quality=92)
            else:
                image.save(folder / f"{index:05d}.png")
    return root


@pytest.fixture(scope="module")
def mixed_bundle(mixed_tree, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("mixed-train") / "run"
    assert main(["train", "--dataset", "imagefolder", "--data-dir", str(mixed_tree), "--input-size", "32",
                 "--epochs", "3", "--batch-size", "30", "--out", str(run), "--no-progress"]) == 0
    engines = "openvino" if get_backend("openvino").unavailable_reason() is None else "none"
    out = tmp_path_factory.mktemp("mixed-bundle") / "bundle"
    assert main(["export", "--checkpoint", str(run / "best.pt"), "--precision", "fp32", "--engines", engines,
                 "--parity-images", "16", "--eval-images", "1000", "--out", str(out)]) == 0
    return out


def test_kit_reproduces_the_bundle_on_mixed_jpeg_and_png(mixed_bundle, mixed_tree, blocked, tmp_path, capsys):
    bundle = json.loads((mixed_bundle / "bundle.json").read_text())
    pre = Preprocess.from_dict(bundle["preprocess"])
    assert pre.resize == "shorter-side-crop" and pre.crop_pct == 0.875 and pre.interpolation == "bicubic"
    val = mixed_tree / "val"
    for f in bundle["files"]:
        if Path(f["file"]).suffix not in (".onnx", ".xml"):
            continue
        kit, top1 = kit_top1(run_kit(mixed_bundle, val, blocked, "--model", f["file"]))
        assert len(kit) == len(FOLDER_CLASSES) * FOLDER_VAL
        assert abs(top1 - f["accuracy"]["top1"]) <= 0.1, f["file"]
        assert agreement(kit, predict_cli(mixed_bundle / f["file"], val, tmp_path / "p.json", capsys)) >= 0.999


# ---------------------------------------------------------------- predict's inputs, inspect, folder modes
def test_predict_reports_an_undecodable_image_and_classifies_the_rest(random_rexnet, tmp_path, capsys):
    from PIL import Image

    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    code = main(["predict", str(random_rexnet["onnx"]), str(tmp_path / "*.png"), "--out", str(tmp_path / "p.csv"),
                 "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 1 and "1 of 2 images could not be classified" in err and "Traceback" not in err
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert rows[0].startswith("image,top1,probability") and len(rows) == 3
    assert "cannot be decoded" in next(r for r in rows if "broken.png" in r)
    assert next(r for r in rows if "a.png" in r).split(",")[1] in [str(i) for i in range(10)]  # records no names


@pytest.mark.parametrize("case", ["no images", "missing path", "unknown suffix", "no preprocessing"])
def test_predict_bad_input_is_one_line(case, random_rexnet, tmp_path, capsys):
    import onnx

    artifact, inputs = str(random_rexnet["onnx"]), [str(tmp_path)]
    if case == "missing path":
        inputs = [str(tmp_path / "nowhere.png")]
    elif case == "unknown suffix":
        artifact = str(tmp_path / "model.bin")
        Path(artifact).write_bytes(b"x")
    elif case == "no preprocessing":
        bare = onnx.load(str(random_rexnet["onnx"]))
        del bare.metadata_props[:]
        artifact = str(tmp_path / "bare.onnx")
        onnx.save(bare, artifact)
    if case != "no images":
        (tmp_path / "x.png").write_bytes(b"\x89PNG")
    code = main(["predict", artifact, *inputs, "--no-progress"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    expected = {"no images": "no image files", "missing path": "does not exist", "unknown suffix": "not a model file",
                "no preprocessing": "records no preprocessing"}[case]
    assert expected in lines[0]


def test_inspect_describes_every_kind_of_file(fmnist_bundle, fmnist_trained, capsys):
    files = [fmnist_trained, *sorted(p for p in fmnist_bundle.iterdir() if p.suffix in (".onnx", ".xml", ".pte"))]
    assert len(files) >= 2
    for path in files:
        assert main(["inspect", str(path)]) == 0
        out = capsys.readouterr().out
        assert "rexnet" in out and "Ankle boot" in out and "zero-pad to 32" in out, path


def test_folders_get_the_users_umask(tmp_path):
    before = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "bundle") as tmp:
            (tmp / "f").write_text("x")
        assert (tmp_path / "bundle").stat().st_mode & 0o777 == 0o755
        os.umask(0o027)
        with atomic_dir(tmp_path / "other"):
            pass
        assert (tmp_path / "other").stat().st_mode & 0o777 == 0o750
    finally:
        os.umask(before)


def test_bundle_folder_is_readable_by_others(fmnist_bundle):
    mask = os.umask(0)
    os.umask(mask)
    assert fmnist_bundle.stat().st_mode & 0o777 == 0o777 & ~mask

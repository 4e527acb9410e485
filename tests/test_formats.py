"""The dataset-format table (issue 27): a format added as one module plus one row of ``DATASET_FORMATS`` is trained
on, calibrated from and benched with no other file changed, as the backends' table allows for a runtime."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

from rexnet_deploy.cli import main
from rexnet_deploy.data import DATASET_FORMATS, DatasetFormat, dataset_spec, format_names, get_format, load_split
from rexnet_deploy.errors import UserError

FAKE_MODULE = """
    # a small fixed dataset: the first 600 training and 200 test images of Fashion-MNIST, under another name
    from rexnet_deploy.data.datasets import FASHION_MNIST_CLASSES, FASHION_MNIST_PREPROCESS, ImageDataset
    from rexnet_deploy.data.datasets import load_fashion_mnist

    def load_format(name, spec, split, workers=None):
        full = load_fashion_mnist("train" if split == "train" else "test")
        part = full.select(range(600 if split == "train" else 200))
        return ImageDataset(name, part.split, part.images, part.labels, part.classes, part.preprocess)

    def format_preprocess(name):
        return FASHION_MNIST_PREPROCESS

    def format_classes(name):
        return FASHION_MNIST_CLASSES
"""


@pytest.fixture()
def fake_format(tmp_path, monkeypatch, fmnist_available) -> DatasetFormat:
    (tmp_path / "fake_small_format.py").write_text(textwrap.dedent(FAKE_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    row = DatasetFormat("fmnist_small", "fake_small_format", description="600 + 200 Fashion-MNIST images")
    monkeypatch.setitem(DATASET_FORMATS, row.name, row)
    return row


def test_the_table_names_every_format():
    assert format_names() == "fashion_mnist, cifar10, cifar100 or imagefolder"
    assert get_format("imagefolder").user_tree and not get_format("fashion_mnist").user_tree
    assert get_format("cifar10").downloads and not get_format("fashion_mnist").downloads
    with pytest.raises(UserError, match="unknown dataset 'mnist': choose one of fashion_mnist, cifar10"):
        get_format("mnist")
    with pytest.raises(UserError, match="--download fetches cifar10, cifar100 only"):
        get_format("fashion_mnist").download(None)


def test_a_format_added_to_the_table_alone_is_trained_calibrated_and_benched(fake_format, tmp_path, capsys):
    spec = dataset_spec("fmnist_small")
    assert spec.preprocess.resize == "pad" and spec.classes[0] == "T-shirt/top" and not spec.is_folder
    assert len(load_split(spec, "train")) == 600 and len(load_split(spec, "val")) == 200
    run = tmp_path / "run"
    assert main(["train", "--dataset", "fmnist_small", "--epochs", "1", "--batch-size", "100", "--out", str(run),
                 "--no-progress"]) == 0
    meta = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
    assert meta["dataset_spec"]["name"] == "fmnist_small"
    calib = tmp_path / "calib.pt"
    assert main(["calib", "--checkpoint", str(run / "best.pt"), "--calibration-images", "64", "--out", str(calib)]) == 0
    assert json.loads((tmp_path / "calib.pt.json").read_text())["dataset"] == "fmnist_small"
    out = tmp_path / "bench"
    assert main(["bench", "--checkpoint", str(run / "best.pt"), "--batches", "1", "--steps", "2", "--min-steps", "1",
                 "--warmup-steps", "1", "--warmup-seconds", "0", "--max-seconds", "0.2", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["dataset"]["dataset"] == "fmnist_small" and results["dataset"]["num_images"] == 200
    assert results["rows"][0]["status"] == "ok" and results["rows"][0]["accuracy"]["num_images"] == 200
    capsys.readouterr()

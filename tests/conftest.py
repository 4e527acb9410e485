"""Shared fixtures: the real Fashion-MNIST data (Debian package) and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rexnet_deploy.data.datasets import FASHION_MNIST_DIR, FASHION_MNIST_PREPROCESS

ROOT = Path(__file__).resolve().parents[1]
FMNIST_PRE = FASHION_MNIST_PREPROCESS

torch.set_num_threads(2)


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm non-trivial statistics so eval-mode comparisons test real arithmetic."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


@pytest.fixture(scope="session")
def fmnist_available() -> bool:
    path = Path(os.environ.get("REXNET_DEPLOY_FMNIST", FASHION_MNIST_DIR))
    if not (path / "t10k-images-idx3-ubyte.gz").exists() and not (path / "t10k-images-idx3-ubyte").exists():
        pytest.skip(f"Fashion-MNIST not installed at {path}: run scripts/setup.sh")
    return True


@pytest.fixture(scope="session")
def random_rexnet(tmp_path_factory) -> dict:
    """A ReXNet w=0.25 for 10 classes at 32×32 with random weights (BN randomised), as checkpoint, FP32 ONNX and,
    where OpenVINO is installed, its IR (``xml``, else None); each file with its manifest."""
    from rexnet_deploy.artifacts import write_manifest
    from rexnet_deploy.backends import get_backend
    from rexnet_deploy.bundle import build_engine
    from rexnet_deploy.export import export_onnx
    from rexnet_deploy.models import create_model, save_model_checkpoint

    root = tmp_path_factory.mktemp("random-rexnet")
    torch.manual_seed(0)
    model = randomize_bn(create_model("rexnet", width=0.25, num_classes=10))
    ckpt = save_model_checkpoint(model, root / "tiny.pt", dataset="fashion_mnist", preprocess=FMNIST_PRE.to_dict())
    onnx_path = export_onnx(model, root / "tiny.onnx", (3, 32, 32))
    write_manifest(onnx_path, {"precision": "fp32", "preprocess": FMNIST_PRE.to_dict()})
    xml = None
    if get_backend("openvino").unavailable_reason() is None:  # a bare GPU machine may lack OpenVINO
        xml = build_engine(onnx_path, root / "tiny.openvino.xml", "openvino")
    return {"root": root, "model": model, "ckpt": ckpt, "onnx": onnx_path, "xml": xml}


def run_cli(*args: str, timeout: int = 600, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``rexnet-deploy`` as a user would, in a subprocess."""
    return subprocess.run([sys.executable, "-m", "rexnet_deploy", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd or ROOT)


# ---------------------------------------------------------------- training fixtures (issue 3)
FMNIST_TRAINED_SUBSET = 16000  # 2 epochs of 16000 images: about a minute on 2 idle cores
FMNIST_TRAINED_VAL = 2000


@pytest.fixture(scope="session")
def fmnist_trained(tmp_path_factory, fmnist_available) -> Path:
    """best.pt of a ``rexnet`` w=0.5, 10 classes, trained on Fashion-MNIST with the fmnist-cpu recipe
    (shortened to ~1 minute on 2 cores; ≥ 80 % top-1 on the test split). Load it with ``load_model``."""
    from rexnet_deploy.data import load_dataset
    from rexnet_deploy.train import TrainRequest, fit_stage, load_recipe

    recipe = load_recipe("fmnist-cpu", {"epochs": 2, "train_subset": FMNIST_TRAINED_SUBSET})
    data = (load_dataset("fashion_mnist", "train"), load_dataset("fashion_mnist", "test").subset(FMNIST_TRAINED_VAL))
    out = tmp_path_factory.mktemp("fmnist_trained")
    best, _ = fit_stage(TrainRequest(recipe, out, data=data, progress=False), log=lambda _: None)
    return best

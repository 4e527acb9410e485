"""Shared fixtures: the real Fashion-MNIST data (Debian package) and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rexnet_deploy.data.datasets import FASHION_MNIST_DIR

ROOT = Path(__file__).resolve().parents[1]

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
    # `make test` runs each file in its own process and names one folder for all of them in
    # REXNET_DEPLOY_TEST_SHARED: the first trains there, the others reuse the finished stage
    shared = os.environ.get("REXNET_DEPLOY_TEST_SHARED")
    out = Path(shared) / "fmnist_trained" if shared else tmp_path_factory.mktemp("fmnist_trained")
    best, _ = fit_stage(TrainRequest(recipe, out, data=data, progress=False), log=lambda _: None)
    return best

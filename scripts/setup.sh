#!/usr/bin/env bash
# Set up a fresh machine: the Fashion-MNIST dataset (Debian package) and a virtual environment in .venv
# with rexnet-deploy installed editable. Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -e /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ] && [ -z "${REXNET_DEPLOY_FMNIST:-}" ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "setup: installing Debian package dataset-fashion-mnist"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$PY" -m venv .venv
fi
stamp=.venv/.rexnet-deploy-installed
# the stamp covers these files: a new pin in constraints.txt or a new extra here reinstalls as a new dependency does
want=$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: installing rexnet-deploy and its dependencies into .venv (a few minutes)"
    # -c: the exact torch/torchvision builds of this project's machines (pyproject.toml has only ranges)
    .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[test,openvino,executorch]"
    echo "$want" > "$stamp"
fi

"""Datasets: Fashion-MNIST, CIFAR pickles and their checked download (real HTTP server), ImageFolder, augmentation."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import pickle
import signal
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli

from rexnet_deploy.data import load_dataset
from rexnet_deploy.data.cifar import download_cifar, load_cifar
from rexnet_deploy.data.imagefolder import load_image_folder, load_image_folder_splits
from rexnet_deploy.errors import UserError
from rexnet_deploy.models.registry import IMAGENET_MEAN, IMAGENET_STD
from rexnet_deploy.preprocess import Preprocess
from rexnet_deploy.train.augment import random_crop_flip

PER_BATCH = 4  # images per CIFAR pickle in the test archive


def test_fashion_mnist_is_32px_rgb(fmnist_available):
    test = load_dataset("fashion_mnist", "test")
    assert test.images.shape == (10000, 3, 32, 32) and test.images.dtype == torch.uint8
    assert torch.equal(test.images[:, 0], test.images[:, 2])
    assert test.images[:, :, :2].max() == 0  # the 2-pixel zero border
    assert sorted(test.labels.bincount().tolist()) == [1000] * 10
    sub = test.subset(100, seed=1)
    assert len(sub) == 100 and torch.equal(sub.labels, test.subset(100, seed=1).labels)


# ---------------------------------------------------------------- CIFAR
def _cifar_batch(rng: np.random.Generator, n: int, name: bytes) -> dict:
    return {b"batch_label": name, b"labels": rng.integers(0, 10, n).tolist(),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"img_{i}.png".encode() for i in range(n)]}


def make_cifar10_archive(path: Path) -> dict:
    """A small cifar-10-python.tar.gz in the official layout (protocol-2 pickles with bytes keys)."""
    rng = np.random.default_rng(0)
    files = {f"data_batch_{i}": _cifar_batch(rng, PER_BATCH, f"training batch {i} of 5".encode())
             for i in range(1, 6)}
    files["test_batch"] = _cifar_batch(rng, PER_BATCH, b"testing batch 1 of 1")
    files["batches.meta"] = {b"num_cases_per_batch": PER_BATCH, b"num_vis": 3072,
                             b"label_names": [n.encode() for n in ("airplane", "automobile", "bird", "cat", "deer",
                                                                   "dog", "frog", "horse", "ship", "truck")]}
    with tarfile.open(path, "w:gz") as tar:
        for name, obj in files.items():
            blob = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return files


@pytest.fixture
def http_server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving ``tmp_path/www``."""
    www = tmp_path / "www"
    www.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(www), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_cifar_download_checks_md5_and_loads(http_server, tmp_path):
    www, base = http_server
    files = make_cifar10_archive(www / "cifar-10-python.tar.gz")
    md5 = hashlib.md5((www / "cifar-10-python.tar.gz").read_bytes()).hexdigest()
    root = tmp_path / "data"
    folder = download_cifar("cifar10", root, url=f"{base}/cifar-10-python.tar.gz", md5=md5, progress=False)
    assert folder == root / "cifar-10-batches-py"
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py"]  # no archive or temp left
    train = load_dataset("cifar10", "train", root)
    test = load_cifar("cifar10", "test", folder)  # the folder itself works too
    assert train.images.shape == (5 * PER_BATCH, 3, 32, 32) and len(test) == PER_BATCH
    first = files["data_batch_1"]
    # row layout of the pickles: 1024 red, 1024 green, 1024 blue values, each row-major
    assert train.images[0, 1, 0, 5] == first[b"data"][0, 1024 + 5]
    assert train.images[1, 2, 3, 4] == first[b"data"][1, 2048 + 3 * 32 + 4]
    assert train.labels[:PER_BATCH].tolist() == first[b"labels"]
    assert train.classes[0] == "airplane" and train.preprocess.size == 32
    # a second call finds it in place and fetches nothing
    (www / "cifar-10-python.tar.gz").unlink()
    assert download_cifar("cifar10", root, url=f"{base}/cifar-10-python.tar.gz", md5=md5) == folder


def test_corrupted_cifar_archive_is_rejected_without_leaving_files(http_server, tmp_path, monkeypatch):
    www, base = http_server
    make_cifar10_archive(www / "cifar-10-python.tar.gz")
    good_md5 = hashlib.md5((www / "cifar-10-python.tar.gz").read_bytes()).hexdigest()
    blob = bytearray((www / "cifar-10-python.tar.gz").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (www / "cifar-10-python.tar.gz").write_bytes(bytes(blob))
    root = tmp_path / "data"
    with pytest.raises(UserError, match="MD5"):
        download_cifar("cifar10", root, url=f"{base}/cifar-10-python.tar.gz", md5=good_md5, progress=False)
    assert list(root.iterdir()) == []
    # through the CLI, from a mirror serving that file: checked against the official MD5
    monkeypatch.setenv("REXNET_DEPLOY_CIFAR_MIRROR", base)
    proc = run_cli("train", "--dataset", "cifar10", "--download", "--data-dir", str(root), "--out",
                   str(tmp_path / "run"))
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]  # after the download's progress bar
    assert last.startswith("rexnet-deploy train: error:") and "MD5" in last and "Traceback" not in proc.stderr
    assert list(root.iterdir()) == [] and not (tmp_path / "run").exists()


def test_missing_file_on_server_is_one_line(http_server, tmp_path):
    _, base = http_server
    with pytest.raises(UserError, match="could not download"):
        download_cifar("cifar10", tmp_path / "d", url=f"{base}/nothing.tar.gz", md5="0" * 32, progress=False)
    assert list((tmp_path / "d").iterdir()) == []


def test_malformed_cifar_folder_is_one_line(tmp_path):
    with pytest.raises(UserError, match="--download"):
        load_cifar("cifar10", "train", tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "batches.meta").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="not a readable CIFAR-10 pickle"):
        load_cifar("cifar10", "train", tmp_path)


def test_cifar_pickle_cannot_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "batches.meta").write_bytes(pickle.dumps(Evil(), protocol=2))
    with pytest.raises(UserError, match="refusing"):
        load_cifar("cifar10", "test", tmp_path)
    assert not (tmp_path / "pwned").exists()


# ---------------------------------------------------------------- ImageFolder
def _image_tree(root: Path, classes=("cat", "dog"), per_class: int = 3) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")


def test_image_folder_loads_with_imagenet_preprocessing(tmp_path):
    _image_tree(tmp_path)
    train, val = load_image_folder_splits(tmp_path, Preprocess(32, IMAGENET_MEAN, IMAGENET_STD), in_memory=False)
    assert train.classes == ("cat", "dog") and len(train) == 6 and len(val) == 6 and not train.in_memory
    x, y = val.torch_dataset(val.transform(False))[5]  # the classes take turns: cat, dog, cat, ...
    assert x.shape == (3, 32, 32) and y == 1
    xt, _ = train.torch_dataset(train.transform(True, auto_augment="rand-m9-n2-mstd0.5", random_erasing=0.2))[0]
    assert xt.shape == (3, 32, 32)


def test_small_image_folder_is_held_in_memory_and_evaluates_as_streamed(tmp_path):
    """A small tree is decoded once into uint8 (timm's eval resize + center crop) and gives the streamed path's
    normalised inputs bit for bit; grey and RGBA files are converted to RGB."""
    from PIL import Image
    from timm.data import create_transform

    from rexnet_deploy.data import DataSplit, dataset_spec, load_split
    from rexnet_deploy.data.imagefolder import _load_rgb

    _image_tree(tmp_path)
    Image.fromarray(np.full((30, 20), 90, np.uint8)).save(tmp_path / "val" / "cat" / "grey.png")
    Image.fromarray(np.full((33, 33, 4), 200, np.uint8), mode="RGBA").save(tmp_path / "val" / "dog" / "rgba.png")
    held = load_split(dataset_spec("imagefolder", tmp_path, input_size=32), "val")
    streamed = load_split(dataset_spec("imagefolder", tmp_path, input_size=32, in_memory=False), "val")
    assert isinstance(held, DataSplit) and isinstance(streamed, DataSplit)
    assert held.in_memory and not streamed.in_memory and held.images.dtype == torch.uint8
    assert held.images.shape == (8, 3, 32, 32) and torch.equal(held.labels, streamed.labels)
    assert held.spec.classes == ("cat", "dog") and held.spec.folder == str(tmp_path.resolve())
    timm_eval = create_transform(32, is_training=False, interpolation="bicubic", crop_pct=0.875, use_prefetcher=True)
    for i, (path, _) in enumerate(streamed.samples):
        assert torch.equal(held.images[i], timm_eval(_load_rgb(path)))
    assert torch.equal(held.inputs(range(8)), streamed.inputs(range(8)))
    assert torch.equal(torch.cat([x for x, _ in held.batches(3)]), torch.cat([x for x, _ in streamed.batches(3)]))


def test_streamed_batches_put_the_sigchld_handler_back(tmp_path):
    """torch's DataLoader installs a Python SIGCHLD handler for the rest of the process; with it in place, NNCF and
    OpenVINO work later in the process died of heap corruption once a subprocess had exited (the suite's SIGSEGV).
    The tool's loaders give SIGCHLD back the handler it had once their workers are done."""
    from rexnet_deploy.data import dataset_spec, load_split

    _image_tree(tmp_path)
    before = signal.getsignal(signal.SIGCHLD)
    streamed = load_split(dataset_spec("imagefolder", tmp_path, input_size=32, in_memory=False), "val")
    assert streamed.workers > 0 and len(streamed) > 3  # more images than a batch: the loader starts workers
    assert sum(len(labels) for _, labels in streamed.batches(3)) == len(streamed)
    assert signal.getsignal(signal.SIGCHLD) == before


def test_malformed_image_folder_is_one_line(tmp_path):
    with pytest.raises(UserError, match="train/ and val/"):
        load_image_folder(tmp_path, "train", Preprocess(32, IMAGENET_MEAN, IMAGENET_STD))
    (tmp_path / "train").mkdir()
    with pytest.raises(UserError, match="no class folders"):
        load_image_folder(tmp_path, "train", Preprocess(32, IMAGENET_MEAN, IMAGENET_STD))
    (tmp_path / "train" / "cat").mkdir()
    (tmp_path / "train" / "cat" / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="holds no images"):
        load_image_folder(tmp_path, "train", Preprocess(32, IMAGENET_MEAN, IMAGENET_STD))
    _image_tree(tmp_path / "other", classes=("a",))
    (tmp_path / "other" / "val" / "b").mkdir()
    (tmp_path / "other" / "val" / "a" / "0.png").rename(tmp_path / "other" / "val" / "b" / "0.png")
    with pytest.raises(UserError, match=r"class 'b' is in .*val/ but not in .*train/"):
        load_image_folder_splits(tmp_path / "other", Preprocess(32, IMAGENET_MEAN, IMAGENET_STD))


# ---------------------------------------------------------------- augmentation
def test_random_crop_is_a_window_of_the_padded_image():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    assert torch.equal(random_crop_flip(images, 0, False), images)
    out = random_crop_flip(images, 2, False)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    shifts = set()
    for i in range(len(images)):
        hits = [(dy, dx) for dy in range(5) for dx in range(5)
                if torch.equal(out[i], padded[i, :, dy:dy + 8, dx:dx + 8])]
        assert hits, f"image {i} is not a crop of its padded self"
        shifts.add(hits[0])
    assert len(shifts) > 5  # the offsets vary per image
    flipped = random_crop_flip(images, 0, True)
    mirrored = [torch.equal(flipped[i], images[i].flip(2)) for i in range(len(images))]
    unchanged = [torch.equal(flipped[i], images[i]) for i in range(len(images))]
    assert all(m or u for m, u in zip(mirrored, unchanged)) and 10 < sum(mirrored) < 54

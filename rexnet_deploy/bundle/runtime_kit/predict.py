#!/usr/bin/env python3
"""Classify images with this bundle's model, without rexnet-deploy: numpy, Pillow and one runtime.

    python predict.py IMAGE_OR_FOLDER... [--model FILE] [--top-k 3] [--json]

The model defaults to the bundle's recommended file, else its FP32 ONNX. ``.onnx`` runs in onnxruntime,
``.xml`` in openvino, ``.pte`` in executorch.runtime. The preprocessing is the contract ``bundle.json``
records, executed by ``preprocess.py`` beside this file: the same code rexnet-deploy measured the bundle's
accuracy with. Exit 0: every image classified; 1: some could not be decoded; 2: bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from preprocess import Preprocess, find_image_files  # noqa: E402 — the contract ships beside this script


def load_bundle(folder: Path = HERE) -> dict:
    return json.loads((folder / "bundle.json").read_text())


def default_model(bundle: dict) -> tuple[str, str | None]:
    """The recommended file (``--precision auto``) and its runner mode, else the FP32 ONNX."""
    recommended = bundle.get("recommended") or {}
    if recommended.get("path"):
        return recommended["path"], recommended.get("mode")
    return next(f["file"] for f in bundle["files"] if f["file"].endswith(".onnx") and f["precision"] == "fp32"), None


class Model:
    """One model file in its runtime: ``model(batch)`` → logits [N, classes].

    An OpenVINO IR computes in the arithmetic rexnet-deploy measured it in: its manifest's ``inference_precision``
    (f32 for an FP32 file, where OpenVINO's own default on a BF16 CPU is bf16), or ``mode`` bf16 / defaults as
    ``--precision auto`` recommended it.
    """

    def __init__(self, path: Path, threads: int | None = None, mode: str | None = None) -> None:
        self.path, suffix = path, path.suffix.lower()
        manifest = path.with_name(path.name + ".json")
        record = json.loads(manifest.read_text()) if manifest.is_file() else {}
        self.static_batch = None
        if suffix == ".onnx":
            import onnxruntime as ort

            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads = threads
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            self.input_name = self.session.get_inputs()[0].name
            self.run = lambda x: self.session.run(None, {self.input_name: x})[0]
        elif suffix == ".xml":
            import openvino as ov

            config: dict = {"INFERENCE_NUM_THREADS": threads} if threads else {}
            precision = {"bf16": "bf16", "defaults": None}.get(mode or "", record.get("inference_precision"))
            if precision:
                config["INFERENCE_PRECISION_HINT"] = precision
            compiled = ov.Core().compile_model(str(path), "CPU", config)
            self.run = lambda x: compiled({0: x})[compiled.output(0)]
        elif suffix == ".pte":
            from executorch.runtime import Runtime  # its Python bindings bring torch along

            method = Runtime.get().load_program(str(path)).load_method("forward")
            batch = record.get("batch", {})
            self.static_batch = None if batch.get("dynamic", True) else int(batch["size"])
            self.max_batch = int(batch.get("max") or batch.get("size") or 1)

            def run(x: np.ndarray) -> np.ndarray:
                import torch

                return method.execute([torch.from_numpy(np.ascontiguousarray(x))])[0].numpy()

            self.run = run
        else:
            raise SystemExit(f"predict.py: {path} is not a file this kit runs (.onnx, .xml, .pte)")

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if self.static_batch is None:
            return np.asarray(self.run(batch), dtype=np.float32)
        out = []
        for start in range(0, len(batch), self.static_batch):  # a static program: pad the last chunk
            chunk = batch[start:start + self.static_batch]
            padded = np.concatenate([chunk, np.zeros((self.static_batch - len(chunk), *chunk.shape[1:]), chunk.dtype)])
            out.append(np.asarray(self.run(padded), dtype=np.float32)[:len(chunk)])
        return np.concatenate(out)


def classify(model: Model, preprocess: Preprocess, classes: list[str], paths: list[Path], *, batch_size: int = 32,
             top_k: int = 3) -> list[dict]:
    """One record per image: ``image``, ``topk`` [(class, probability)], or ``error``."""
    rows: list[dict] = []
    pending: list[tuple[Path, np.ndarray]] = []

    def flush() -> None:
        if not pending:
            return
        logits = model(preprocess.to_input(np.stack([pixels for _, pixels in pending]))).astype(np.float64)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        for (path, _), p in zip(pending, probs):
            rows.append({"image": str(path), "topk": [(classes[i], float(p[i])) for i in np.argsort(-p)[:top_k]]})
        pending.clear()

    for path in paths:
        try:
            pending.append((path, preprocess.pixels(Preprocess.load_image(str(path)))))
        except Exception as exc:  # Pillow raises many types for a file that is not an image
            rows.append({"image": str(path), "error": f"cannot be decoded: {exc}"})
        if len(pending) == batch_size:
            flush()
    flush()
    order = {str(p): i for i, p in enumerate(paths)}
    return sorted(rows, key=lambda row: order[row["image"]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    parser.add_argument("--model", help="the model file in this bundle (default: the recommended one, else FP32 ONNX)")
    parser.add_argument("--top-k", type=int, default=3, help="classes per image (default 3)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per inference call (default 32)")
    parser.add_argument("--threads", type=int, help="runtime threads (default: the runtime's own)")
    parser.add_argument("--json", action="store_true", help="one JSON record per line instead of text")
    args = parser.parse_args(argv)
    bundle = load_bundle()
    preprocess = Preprocess.from_dict(bundle["preprocess"])
    name, mode = (args.model, None) if args.model else default_model(bundle)
    model_path = HERE / name
    model = Model(model_path, args.threads, mode)
    # a file made with --embed-preprocess takes uint8 pixels: its own manifest says so
    manifest = model_path.with_name(model_path.name + ".json")
    if manifest.is_file():
        preprocess = Preprocess.from_dict(json.loads(manifest.read_text()).get("preprocess", bundle["preprocess"]))
    try:
        paths = find_image_files(args.paths)
    except FileNotFoundError as exc:
        print(f"predict.py: {exc}", file=sys.stderr)
        return 2
    if not paths:
        print("predict.py: no image files found", file=sys.stderr)
        return 2
    rows = classify(model, preprocess, bundle["classes"], paths, batch_size=args.batch_size, top_k=args.top_k)
    for row in rows:
        if args.json:
            print(json.dumps(row))
        elif "error" in row:
            print(f"{row['image']}\tERROR\t{row['error']}")
        else:
            print(f"{row['image']}\t" + "\t".join(f"{c}\t{p:.4f}" for c, p in row["topk"]))
    return 1 if any("error" in row for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

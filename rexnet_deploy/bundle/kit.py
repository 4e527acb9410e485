"""The runtime-only kit every bundle carries: ``predict.py``, ``preprocess.py`` and a README.

``preprocess.py`` is :mod:`rexnet_deploy.preprocess` itself, copied byte for byte (it imports nothing from the
package), so an application that reads only the bundle runs the preprocessing the tool measured with.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from .. import preprocess as contract
from ..backends import get_backend

KIT_DIR = Path(__file__).with_name("runtime_kit")
KIT_FILES = ("predict.py", "preprocess.py", "README.md")



def write_kit(folder: Path, bundle: dict[str, Any]) -> None:
    """Copy the kit into a bundle folder and write its README for this bundle's files."""
    shutil.copyfile(KIT_DIR / "predict.py", folder / "predict.py")
    shutil.copyfile(contract.__file__, folder / "preprocess.py")
    (folder / "README.md").write_text(kit_readme(bundle))


def kit_readme(bundle: dict[str, Any]) -> str:
    runs = {f["file"]: get_backend(f["backend"]) for f in bundle["files"]}
    runs = {name: backend for name, backend in runs.items() if backend.kit_package}
    onnx = next((f["file"] for f in bundle["files"] if f["file"].endswith(".onnx") and f["precision"] == "fp32"),
                "model.onnx")  # the application example runs the FP32 ONNX file
    pre = contract.Preprocess.from_dict(bundle["preprocess"])
    lines = [f"# {bundle['model_name']} width {bundle['width']:g} — using this bundle without rexnet-deploy", "",
             "Classify images with numpy, Pillow and one runtime:", "", "```bash",
             "python predict.py IMAGE_OR_FOLDER... [--model FILE] [--top-k 3] [--json]", "```", "",
             f"Preprocessing (`bundle.json` → `preprocess`, run by `preprocess.py`): {pre.describe()}.",
             f"Classes: {', '.join(bundle['classes'])}.", "", "| file | runtime | install |", "|---|---|---|"]
    lines += [f"| {name} | {backend.name} | `pip install {backend.kit_package} numpy pillow` |"
              for name, backend in runs.items()]
    lines += ["", "In an application:", "", "```python", "import json", "import onnxruntime as ort",
              "from preprocess import Preprocess", "",
              'bundle = json.load(open("bundle.json"))', 'pre = Preprocess.from_dict(bundle["preprocess"])',
              f'session = ort.InferenceSession("{onnx}")',
              'x = pre.to_input(pre.pixels(Preprocess.load_image("photo.jpg"))[None])  # [1, 3, H, W] float32',
              'logits = session.run(None, {"input": x})[0]', 'print(bundle["classes"][int(logits.argmax())])', "```",
              ""]
    return "\n".join(lines)

"""A dataset named by a spec: which data, where, and how the model sees it.

:class:`DatasetSpec` is what a checkpoint records (``dataset_spec`` in its metadata, also in ONNX
``metadata_props``, manifests and bench results): the dataset's name (``fashion_mnist``, ``cifar10``,
``cifar100`` or ``imagefolder``), its folder, its class names, the input size and the preprocessing. A
later stage rebuilds the spec from the checkpoint (:func:`resolve_spec`), so ``prune``, ``export``,
``calib`` and ``bench`` find the data without flags, and hands it to
:func:`~rexnet_deploy.data.load_split`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..models.registry import IMAGENET_MEAN, IMAGENET_STD
from ..preprocess import Preprocess
from .formats import DATASET_FORMATS, get_format

DEFAULT_INPUT_SIZE = 224  # a user's tree described without a model: the ImageNet families' size


def check_name(name: str) -> str:
    return get_format(name).name


def model_input_size(model_name: str | None) -> int:
    """The input size a registered model takes (32 for tiny-cifar, 224 for V1/Lite); 224 when unknown."""
    if not model_name:
        return DEFAULT_INPUT_SIZE
    from ..models.registry import get_model_info

    return int(get_model_info(model_name).spec.input_size[1])


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset and how its images become the model's input.

    ``folder``: where its files are (an ImageFolder's root; None: a built-in dataset's default place).
    ``classes``: the class names, once known (a spec read from a checkpoint has them; a fresh one gets them
    from the data). ``preprocess``: the whole preprocessing contract (fixed for the built-in datasets; an
    ImageFolder's resize, crop_pct and interpolation live there too). ``in_memory``:
    None decides by size (small trees are decoded once into memory). ``origin`` names where the spec was
    read (a checkpoint), for error messages only.
    """

    name: str
    folder: str | None = None
    preprocess: Preprocess | None = None
    classes: tuple[str, ...] | None = None
    in_memory: bool | None = field(default=None, compare=False)
    origin: str | None = field(default=None, compare=False)

    @property
    def input_size(self) -> int:
        return self.preprocess.size if self.preprocess is not None else DEFAULT_INPUT_SIZE

    @property
    def crop_pct(self) -> float:
        return self.preprocess.crop_pct if self.preprocess is not None else 0.875

    @property
    def interpolation(self) -> str:
        return self.preprocess.interpolation if self.preprocess is not None else "bicubic"

    @property
    def is_folder(self) -> bool:
        """A tree of the user's own images (the format's ``user_tree``): its folder, size and normalisation vary."""
        return get_format(self.name).user_tree

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "folder": self.folder, "classes": list(self.classes) if self.classes else None,
                "input_size": self.input_size,
                "preprocess": self.preprocess.to_dict() if self.preprocess is not None else None}

    @classmethod
    def from_dict(cls, d: dict[str, Any], origin: str | None = None) -> "DatasetSpec":
        try:
            # a record older than the contract kept crop_pct/interpolation beside the preprocessing
            raw = {"crop_pct": d.get("crop_pct", 0.875), "interpolation": d.get("interpolation", "bicubic"),
                   **d["preprocess"]} if d.get("preprocess") else None
            name = check_name(str(d["name"]))
            # a built-in dataset's preprocessing is fixed by its name (older records held only size/mean/std)
            fmt = get_format(name)
            preprocess = fmt.fixed_preprocess() if not fmt.user_tree else Preprocess.from_dict(raw) if raw else None
            classes = tuple(str(c) for c in d["classes"]) if d.get("classes") else None
            return cls(name, str(d["folder"]) if d.get("folder") else None, preprocess,
                       classes, origin=origin)
        except (KeyError, TypeError, ValueError):
            where = origin or "the file"
            raise UserError(f"{where} records an unreadable dataset spec ({str(d)[:80]}): pass --dataset and "
                            f"--data-dir") from None

    def replace(self, **changes: Any) -> "DatasetSpec":
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        """In words, for messages: ``imagefolder /data/tree (32 px)``, ``fashion_mnist``."""
        where = f" {self.folder}" if self.folder else ""
        return f"{self.name}{where}" + (f" ({self.input_size} px)" if self.is_folder else "")


def tree_preprocess(crop_pct: float = 0.875, interpolation: str = "bicubic", size: int = DEFAULT_INPUT_SIZE,
                    ) -> Preprocess:
    """A tree of the user's images under ImageNet's normalisation, resized and center-cropped as a recipe says."""
    try:
        return Preprocess(size, IMAGENET_MEAN, IMAGENET_STD, crop_pct=crop_pct, interpolation=interpolation)
    except ValueError as exc:
        raise UserError(f"{exc}: fix the recipe's crop_pct/interpolation") from None


def dataset_spec(name: str, folder: str | Path | None = None, *, input_size: int | None = None,
                 model: str | None = None, like: Preprocess | None = None,
                 in_memory: bool | None = None) -> DatasetSpec:
    """The spec command-line flags describe: ``--dataset``, ``--data-dir``, ``--input-size`` (and the model).

    A built-in format has its own size, preprocessing and classes. A tree of the user's images needs its folder;
    its input size defaults to ``model``'s own (32 for tiny-cifar, 224 for V1/Lite), its resize rule, crop and
    normalisation to ``like``'s (a recipe's or a checkpoint's contract), else ImageNet's center crop.
    """
    if input_size is not None and input_size < 8:
        raise UserError(f"--input-size {input_size} is too small: give at least 8 (pixels)")
    fmt = get_format(name)
    if not fmt.user_tree:
        fixed = fmt.fixed_preprocess()
        if input_size is not None and input_size != fixed.size:
            raise UserError(f"{name} images are {fixed.size}×{fixed.size}: --input-size applies to a tree of your "
                            f"own images only; drop it")
        return DatasetSpec(name, str(folder) if folder else None, fixed, fmt.fixed_classes(), in_memory=True)
    if not folder:
        raise UserError(f"dataset {name} needs --data-dir ({fmt.description})")
    size = int(input_size if input_size is not None else model_input_size(model))
    like = like or tree_preprocess(size=size)
    return DatasetSpec(name, str(Path(folder).resolve()), dataclasses.replace(like, size=size), None,
                       in_memory=in_memory)


def _json(value: Any) -> Any:
    """ONNX ``metadata_props`` hold JSON text: decode it (anything else is passed through)."""
    if not isinstance(value, str):
        return value
    import json

    try:
        return json.loads(value) if value else None
    except ValueError:
        return value


def recorded_spec(meta: dict[str, Any], origin: str | None = None) -> DatasetSpec | None:
    """The spec a checkpoint, manifest or ONNX file (``metadata_props``, JSON text) records; older files'
    ``dataset``/``preprocess``/``classes`` keys too.

    None when the file names no dataset.
    """
    meta = {k: _json(v) if k in ("dataset_spec", "preprocess", "classes") else v for k, v in meta.items()}
    raw = meta.get("dataset_spec")
    if isinstance(raw, str):
        raw = {"unreadable": raw}
    if isinstance(raw, dict):
        return DatasetSpec.from_dict(raw, origin)
    name = meta.get("dataset")
    if isinstance(name, dict):  # an older bench-results style record
        name = name.get("dataset")
    if not name or not isinstance(name, str) or name not in DATASET_FORMATS:
        return None
    preprocess = None
    if isinstance(meta.get("preprocess"), dict):
        try:
            preprocess = Preprocess.from_dict({"crop_pct": meta.get("crop_pct", 0.875),
                                               "interpolation": meta.get("interpolation", "bicubic"),
                                               **meta["preprocess"]})
        except (KeyError, TypeError, ValueError):
            preprocess = None
    if not get_format(name).user_tree:
        preprocess = get_format(name).fixed_preprocess()
    classes = meta.get("classes")
    classes = tuple(str(c) for c in classes) if isinstance(classes, (list, tuple)) and classes else None
    return DatasetSpec(name, None, preprocess, classes, origin=origin)


def resolve_spec(meta: dict[str, Any] | None, *, dataset: str | None = None, data_dir: str | Path | None = None,
                 input_size: int | None = None, model: str | None = None, origin: str | None = None,
                 required: bool = True) -> DatasetSpec | None:
    """The data a stage reads for a model: flags first, then what its checkpoint records.

    ``dataset``/``data_dir``/``input_size`` given on the command line win; what they leave open comes from
    ``meta`` (a checkpoint's metadata): the dataset, its folder, its classes (checked against the data when
    it loads), the input size and preprocessing. A recorded folder that no longer exists is one line naming
    it. None (or, with ``required``, an error) when neither names a dataset.
    """
    recorded = recorded_spec(meta or {}, origin)
    name = dataset or (recorded.name if recorded else None)
    if name is None:
        if required:
            raise UserError(f"{origin or 'the model'} records no dataset: pass --dataset (and --data-dir)")
        return None
    fmt = get_format(name)
    same = recorded is not None and recorded.name == name
    if not fmt.user_tree:
        spec = dataset_spec(name, data_dir or (recorded.folder if same else None), input_size=input_size)
        if same and recorded.classes:
            spec = spec.replace(classes=recorded.classes)
        return spec.replace(origin=origin)
    folder = data_dir or (recorded.folder if same else None)
    if folder is None:
        if same:
            raise UserError(f"{origin or 'the model'} was trained on an ImageFolder tree but does not record where: "
                            f"pass --data-dir to the folder with train/ and val/")
        raise UserError(f"dataset {name} needs --data-dir ({fmt.description})")
    if not Path(folder).is_dir():
        if data_dir is None:
            raise UserError(f"{origin or 'the model'} was trained on the ImageFolder tree {folder}, which is not there "
                            f"any more: pass --data-dir to where it is now")
        raise UserError(f"ImageFolder root {folder} does not exist: --data-dir must be a folder holding train/ and "
                        f"val/, one sub-folder of images per class")
    if same and recorded.preprocess is not None and input_size in (None, recorded.preprocess.size):
        return DatasetSpec(name, str(Path(folder).resolve()), recorded.preprocess, recorded.classes, origin=origin)
    if same:
        spec = dataset_spec(name, folder, input_size=input_size, model=model, like=recorded.preprocess)
        return spec.replace(classes=recorded.classes, origin=origin)
    return dataset_spec(name, folder, input_size=input_size, model=model).replace(origin=origin)

"""Datasets and preprocessing: a dataset named by a :class:`DatasetSpec` (its format a row of
``DATASET_FORMATS``), any split of it by :func:`load_split`."""

from .datasets import FASHION_MNIST_CLASSES, ImageDataset, Preprocess, load_dataset, load_fashion_mnist
from .formats import DATASET_FORMATS, DatasetFormat, format_names, get_format
from .spec import DatasetSpec, dataset_spec, recorded_spec, resolve_spec
from .splits import (
    DataSplit,
    calibration_draw,
    check_classes,
    check_num_classes,
    data_record,
    load_datasets,
    load_split,
    recipe_spec,
    split_spec,
    stratified_indices,
)

__all__ = ["DATASET_FORMATS", "FASHION_MNIST_CLASSES", "DataSplit", "DatasetFormat", "DatasetSpec", "ImageDataset",
           "Preprocess", "calibration_draw", "check_classes", "check_num_classes", "data_record", "dataset_spec",
           "format_names", "get_format", "load_dataset", "load_datasets", "load_fashion_mnist", "load_split",
           "recipe_spec", "recorded_spec", "resolve_spec", "split_spec", "stratified_indices"]

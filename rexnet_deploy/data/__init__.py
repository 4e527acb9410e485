"""Datasets and preprocessing: a dataset named by a :class:`DatasetSpec` (its format a row of
``DATASET_FORMATS``), any split of it by :func:`load_split`."""

from ..lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "FASHION_MNIST_CLASSES": ".datasets",
    "ImageDataset": ".datasets",
    "Preprocess": ".datasets",
    "load_dataset": ".datasets",
    "load_fashion_mnist": ".datasets",
    "DATASET_FORMATS": ".formats",
    "DatasetFormat": ".formats",
    "format_names": ".formats",
    "get_format": ".formats",
    "DatasetSpec": ".spec",
    "dataset_spec": ".spec",
    "recorded_spec": ".spec",
    "resolve_spec": ".spec",
    "DataSplit": ".splits",
    "calibration_draw": ".splits",
    "check_classes": ".splits",
    "check_num_classes": ".splits",
    "data_record": ".splits",
    "load_datasets": ".splits",
    "load_split": ".splits",
    "recipe_spec": ".splits",
    "split_spec": ".splits",
    "stratified_indices": ".splits",
})

__all__ = ["DATASET_FORMATS", "FASHION_MNIST_CLASSES", "DataSplit", "DatasetFormat", "DatasetSpec", "ImageDataset",
           "Preprocess", "calibration_draw", "check_classes", "check_num_classes", "data_record", "dataset_spec",
           "format_names", "get_format", "load_dataset", "load_datasets", "load_fashion_mnist", "load_split",
           "recipe_spec", "recorded_spec", "resolve_spec", "split_spec", "stratified_indices"]

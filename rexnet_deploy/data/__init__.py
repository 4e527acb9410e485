"""Datasets and preprocessing."""

from .datasets import DATASETS, FASHION_MNIST_CLASSES, ImageDataset, Preprocess, load_dataset, load_fashion_mnist

__all__ = ["DATASETS", "FASHION_MNIST_CLASSES", "ImageDataset", "Preprocess", "load_dataset", "load_fashion_mnist"]

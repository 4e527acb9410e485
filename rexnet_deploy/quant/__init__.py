"""Calibration sets, INT8 post-training quantization (per target layout) and FP16 conversion of ONNX models."""

from .calibration import (
    DEFAULT_NUM_IMAGES,
    MIN_CALIBRATION_IMAGES,
    CalibrationSet,
    build_calibration_set,
    default_calibration_path,
    onnx_preprocess,
)
from .fp16 import convert_fp16
from .int8 import AccuracyBudget, quantize_onnx
from .layouts import METHODS, targets

__all__ = ["AccuracyBudget", "DEFAULT_NUM_IMAGES", "METHODS", "MIN_CALIBRATION_IMAGES", "CalibrationSet",
           "build_calibration_set", "convert_fp16", "default_calibration_path", "onnx_preprocess", "quantize_onnx",
           "targets"]

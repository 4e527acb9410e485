"""Calibration sets, INT8 post-training quantization (per target layout) and FP16 conversion of ONNX models."""

from ..lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "CalibrationSet": ".calibration",
    "DEFAULT_NUM_IMAGES": ".calibration",
    "MIN_CALIBRATION_IMAGES": ".calibration",
    "build_calibration_set": ".calibration",
    "default_calibration_path": ".calibration",
    "onnx_preprocess": ".calibration",
    "convert_fp16": ".fp16",
    "AccuracyBudget": ".int8",
    "quantize_onnx": ".int8",
    "METHODS": ".layouts",
    "targets": ".layouts",
})

__all__ = ["AccuracyBudget", "DEFAULT_NUM_IMAGES", "METHODS", "MIN_CALIBRATION_IMAGES", "CalibrationSet",
           "build_calibration_set", "convert_fp16", "default_calibration_path", "onnx_preprocess", "quantize_onnx",
           "targets"]

"""Calibration methods and the Q/DQ layout each deployment target wants (no heavy imports: the CLI reads them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TargetLayout:
    """How one target wants its Q/DQ: activation/weight types and which ranges are symmetric."""

    name: str
    activations: str  # "uint8" | "int8"
    symmetric_activations: bool
    quantize_bias: bool
    why: str

    def quantize_options(self) -> dict[str, Any]:
        from onnxruntime.quantization import QuantType

        act = QuantType.QUInt8 if self.activations == "uint8" else QuantType.QInt8
        return {"activation_type": act, "weight_type": QuantType.QInt8, "per_channel": True, "reduce_range": False,
                "extra_options": {"ActivationSymmetric": self.symmetric_activations, "WeightSymmetric": True,
                                  "QuantizeBias": self.quantize_bias}}

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.name, "activations": f"{self.activations} "
                f"{'symmetric' if self.symmetric_activations else 'asymmetric'} per-tensor",
                "weights": "int8 symmetric per-channel", "bias": "int32" if self.quantize_bias else "float32",
                "format": "QDQ", "why": self.why}


TARGETS = {
    "ort-cpu": TargetLayout(
        "ort-cpu", "uint8", False, True,
        "ONNX Runtime's x86 (VNNI) kernels run uint8 activations × int8 weights fast; int8 activations "
        "ran 2.9× slower than FP32 on this CPU"),
    "tensorrt": TargetLayout(
        "tensorrt", "int8", True, False,
        "TensorRT explicit quantization takes only symmetric int8 Q/DQ (zero point 0), and its ONNX parser "
        "rejects the DequantizeLinear of an int32 bias (onnx/onnx-tensorrt#850), so biases stay float"),
}
METHODS = ("minmax", "entropy", "percentile")

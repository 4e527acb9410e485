"""The ReXNet model zoo: ReXNetV1, ReXNetV1-Lite, ReXNet-tiny-cifar."""

from .checkpoint import checkpoint_filter_fn, load_checkpoint, load_model, read_checkpoint, save_model_checkpoint
from .profile import count_macs, count_params
from .registry import FAMILIES, ModelInfo, create_model, get_model_info, list_models, resolve_width
from .rexnet import BlockSpec, ChannelPlan, LinearBottleneck, ReXNet, rexnet_lite_plan, rexnet_plan

__all__ = [
    "FAMILIES", "BlockSpec", "ChannelPlan", "LinearBottleneck", "ModelInfo", "ReXNet", "checkpoint_filter_fn",
    "count_macs", "count_params", "create_model", "get_model_info", "list_models", "load_checkpoint", "load_model",
    "save_model_checkpoint",
    "read_checkpoint", "resolve_width", "rexnet_lite_plan", "rexnet_plan",
]

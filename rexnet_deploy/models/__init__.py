"""The ReXNet model zoo: ReXNetV1, ReXNetV1-Lite, ReXNet-tiny-cifar."""

from ..lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "checkpoint_filter_fn": ".checkpoint",
    "load_checkpoint": ".checkpoint",
    "load_model": ".checkpoint",
    "read_checkpoint": ".checkpoint",
    "save_model_checkpoint": ".checkpoint",
    "count_macs": ".profile",
    "count_params": ".profile",
    "FAMILIES": ".registry",
    "ModelInfo": ".registry",
    "create_model": ".registry",
    "get_model_info": ".registry",
    "list_models": ".registry",
    "resolve_width": ".registry",
    "BlockSpec": ".rexnet",
    "ChannelPlan": ".rexnet",
    "LinearBottleneck": ".rexnet",
    "ReXNet": ".rexnet",
    "rexnet_lite_plan": ".rexnet",
    "rexnet_plan": ".rexnet",
})

__all__ = ["FAMILIES", "BlockSpec", "ChannelPlan", "LinearBottleneck", "ModelInfo", "ReXNet", "checkpoint_filter_fn",
           "count_macs", "count_params", "create_model", "get_model_info", "list_models", "load_checkpoint",
           "load_model", "save_model_checkpoint", "read_checkpoint", "resolve_width", "rexnet_lite_plan", "rexnet_plan"]

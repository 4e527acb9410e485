"""Prune stage: structured channel pruning with torch-pruning, then fine-tuning and the pruning report."""

from ..lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "IMPORTANCES": ".engine",
    "PruneOutcome": ".engine",
    "PruneSpec": ".engine",
    "prune_model": ".engine",
    "prune_outcome": ".engine",
    "prune_to_budget": ".engine",
    "prune_to_width": ".engine",
    "ChannelGroup": ".groups",
    "channel_groups": ".groups",
    "prepare_graph": ".groups",
    "read_plan": ".groups",
    "widths_off_multiple": ".groups",
    "FinetuneSpec": ".stage",
    "PruneRequest": ".stage",
    "prune_checkpoint": ".stage",
})

__all__ = ["IMPORTANCES", "ChannelGroup", "FinetuneSpec", "PruneOutcome", "PruneRequest", "PruneSpec",
           "channel_groups", "prepare_graph", "prune_checkpoint", "prune_model", "prune_outcome", "prune_to_budget",
           "prune_to_width", "read_plan", "widths_off_multiple"]

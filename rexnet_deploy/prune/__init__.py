"""Prune stage: structured channel pruning with torch-pruning, then fine-tuning and the pruning report."""

from .engine import IMPORTANCES, PruneOutcome, PruneSpec, prune_model, prune_outcome, prune_to_budget, prune_to_width
from .groups import ChannelGroup, channel_groups, prepare_graph, read_plan, widths_off_multiple
from .stage import FinetuneSpec, PruneRequest, prune_checkpoint

__all__ = ["IMPORTANCES", "ChannelGroup", "FinetuneSpec", "PruneOutcome", "PruneRequest", "PruneSpec",
           "channel_groups", "prepare_graph", "prune_checkpoint", "prune_model", "prune_outcome", "prune_to_budget",
           "prune_to_width", "read_plan", "widths_off_multiple"]

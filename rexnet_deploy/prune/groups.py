"""ReXNet's coupled channel groups, and torch-pruning's dependency graph made to see them correctly.

A ReXNet has five kinds of channel groups, each pruned as one unit:

- ``stem``: the stem conv's outputs (and, since block 0 has no expansion, block 0's depthwise channels);
- ``features.A-B.out``: the outputs of blocks A..B, where blocks A+1..B add a partial residual. The
  residual is ``y + pad(x)``, so output channel ``k`` of block ``j`` is channel ``k`` of every later block
  of the chain; block ``j`` adds new channels at the end. The group's channels are the last block's
  outputs; its *segments* are the channels each block adds (block A: all of its outputs);
- ``features.N.mid``: block N's expanded (depthwise) channels, with the SE gate's outputs;
- ``features.N.se``: block N's SE reduction channels;
- ``head``: the 1×1 head conv's outputs.

torch-pruning 1.6.1 treats ``F.pad`` as an element-wise op and maps channel ``k`` of the padded tensor
to channel ``k`` of the input even where ``k`` is a padded (zero) channel, so a group rooted at a
chain's later block asks to prune input channels that do not exist. :func:`prepare_graph` gives each
pad the index mapping it needs (keep ``k`` < the block's current input width) and orders the graph so
``get_all_groups`` roots every chain at its last block, making the channels each block adds prunable
(rooted at the first block, as torch-pruning's default order does, they never are).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch_pruning as tp
from torch import nn
from torch_pruning import ops

from ..models.rexnet import BlockSpec, ChannelPlan, LinearBottleneck, ReXNet


@dataclass(frozen=True)
class ChannelGroup:
    """One coupled set of channels; ``root`` is the conv whose output channels index the group."""

    name: str
    kind: str  # "stem", "chain", "mid", "se", "head"
    root: nn.Conv2d
    blocks: tuple[int, ...] = ()  # chain: its blocks in order; mid/se: the block

    def segments(self, plan: ChannelPlan) -> list[int]:
        """Sizes of the group's channel segments under ``plan``, in the root's channel order.

        Only a chain has more than one: the channels each of its blocks adds.
        """
        if self.kind == "stem":
            return [plan.stem]
        if self.kind == "head":
            return [plan.head]
        if self.kind == "mid":
            return [plan.blocks[self.blocks[0]].mid_chs]
        if self.kind == "se":
            return [plan.blocks[self.blocks[0]].se_chs]
        outs = [plan.blocks[j].out_chs for j in self.blocks]
        return [outs[0]] + [b - a for a, b in zip(outs, outs[1:])]


def bottlenecks(model: ReXNet) -> list[LinearBottleneck]:
    """The inverted-residual blocks (``features`` without the head conv)."""
    return list(model.features)[:-1]


def chains(model: ReXNet) -> list[list[int]]:
    """Blocks grouped into residual chains: each chain starts at a block without a shortcut."""
    out: list[list[int]] = []
    for i, blk in enumerate(bottlenecks(model)):
        if blk.use_shortcut and out:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def channel_groups(model: ReXNet) -> list[ChannelGroup]:
    """Every prunable channel group of ``model``, stem first, head last."""
    blocks = bottlenecks(model)
    groups = [ChannelGroup("stem", "stem", model.stem.conv)]
    for chain in chains(model):
        a, b = chain[0], chain[-1]
        name = f"features.{a}.out" if a == b else f"features.{a}-{b}.out"
        groups.append(ChannelGroup(name, "chain", blocks[b].conv_pwl.conv, tuple(chain)))
    for i, blk in enumerate(blocks):
        if blk.conv_exp is not None:
            groups.append(ChannelGroup(f"features.{i}.mid", "mid", blk.conv_exp.conv, (i,)))
        if blk.se is not None:
            groups.append(ChannelGroup(f"features.{i}.se", "se", blk.se.fc1, (i,)))
    groups.append(ChannelGroup("head", "head", model.features[-1].conv))
    return groups


def fixed_layers(model: ReXNet) -> list[nn.Module]:
    """Layers whose outputs are never pruned: the classifier, and Lite's 1024-wide head conv."""
    return [m for m in (model.head.fc, model.head.conv) if m is not None]


def block_in_channels(block: LinearBottleneck) -> int:
    first = block.conv_exp.conv if block.conv_exp is not None else block.conv_dw.conv
    return first.in_channels


class _PadInputIndexMapping:
    """Padded channel ``k`` is input channel ``k`` only for ``k`` below the block's current input width."""

    def __init__(self, block: LinearBottleneck) -> None:
        self.block = block

    def __call__(self, idxs: list) -> list:
        width = block_in_channels(self.block)  # read now: earlier pruning steps change it
        return [i for i in idxs if i.idx < width]


def prepare_graph(graph: tp.DependencyGraph, model: ReXNet) -> list[ChannelGroup]:
    """Fix the pads' index mapping and put each group's root first; returns the groups.

    ``graph`` must have been built on ``model`` (``build_dependency`` or a ``BasePruner``'s ``DG``).
    """
    by_bn = {blk.conv_pwl.bn: blk for blk in bottlenecks(model) if blk.use_shortcut}
    patched = 0
    for node in graph.module2node.values():
        if node.type != ops.OPTYPE.ELEMENTWISE or node.grad_fn is None:
            continue
        if not node.grad_fn.name().startswith("ConstantPadNd"):
            continue
        # pad → add ← conv_pwl.bn: the add's other input names the block
        block = next((by_bn[n.module] for out in node.outputs for n in out.inputs if n.module in by_bn), None)
        if block is None:
            raise RuntimeError("a pad in the traced graph does not feed a residual add: model layout changed")
        for dep in node.dependencies:
            if dep.target in node.inputs:
                dep.index_mapping[0] = _PadInputIndexMapping(block)
        patched += 1
    if patched != len(by_bn):
        raise RuntimeError(f"found {patched} residual pads in the traced graph, expected {len(by_bn)}")
    groups = channel_groups(model)
    roots = [g.root for g in groups]
    graph.module2node = {**{m: graph.module2node[m] for m in roots},
                         **{m: n for m, n in graph.module2node.items() if m not in roots}}
    return groups


def read_plan(model: ReXNet) -> ChannelPlan:
    """The channel plan the modules actually have (after pruning ``model.plan`` is stale until set)."""
    specs = []
    for blk in bottlenecks(model):
        dw = blk.conv_dw.conv
        specs.append(BlockSpec(
            in_chs=block_in_channels(blk), out_chs=blk.conv_pwl.conv.out_channels, mid_chs=dw.out_channels,
            se_chs=blk.se.fc1.out_channels if blk.se is not None else 0, stride=dw.stride[0],
            expand=blk.conv_exp is not None, shortcut=blk.use_shortcut, kernel_size=dw.kernel_size[0]))
    head_conv = model.head.conv
    return ChannelPlan(stem=model.stem.conv.out_channels, blocks=tuple(specs),
                       head=model.features[-1].conv.out_channels,
                       head_hidden=head_conv.out_channels if head_conv is not None else 0)


def widths_off_multiple(model: ReXNet, multiple: int = 8) -> dict[str, list[str]]:
    """Layer widths that are not multiples of ``multiple``, split by whether a group can be rounded.

    ``roundable``: a group's root width (stem, mid, SE, head, a chain's last block). ``chain_inner``:
    the output of a chain's earlier block, which is fixed by the channels that block and the ones
    before it add; making it a multiple of 8 would need every block to add 0, 8, 16… channels.
    """
    plan = read_plan(model)
    roundable, inner = [], []
    for g in channel_groups(model):
        seg = g.segments(plan)
        if sum(seg) % multiple:
            roundable.append(f"{g.name}={sum(seg)}")
        if g.kind == "chain":
            for j in g.blocks[:-1]:
                width = plan.blocks[j].out_chs
                if width % multiple:
                    inner.append(f"features.{j}.out={width}")
    return {"roundable": roundable, "chain_inner": inner}

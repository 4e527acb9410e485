"""Structured pruning of ReXNet with torch-pruning: to a family's width plan, or globally to a budget.

Both modes remove whole channel groups (:mod:`.groups`) through torch-pruning's dependency graph; the
importance criterion (torch-pruning's L1/L2 magnitude, BN scale or Taylor) decides which channels go.

- width: every group is cut to the size the family's width formula gives at the target width, so the
  result *is* ``create_model(family, width=W)``'s architecture (loadable without a stored plan).
  Chain groups are cut segment by segment: the channels each block adds are ranked among themselves,
  so block ``j`` keeps exactly the plan's ``out_j - out_{j-1}`` new channels.
- budget: torch-pruning's ``BasePruner`` with global ranking across groups, ``round_to=8`` and
  ``steps`` iterative steps; the global channel ratio is searched so that MACs (or parameters) land
  at, or within 1 % under, ``ratio`` × the source's. A last pass rounds groups the global
  threshold left untouched down to a multiple of 8 as well.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
import torch_pruning as tp
from tqdm.auto import tqdm

from ..errors import UserError
from ..models import count_macs, count_params, get_model_info, list_models
from ..models.registry import Family
from ..models.rexnet import ChannelPlan, ReXNet
from .groups import ChannelGroup, fixed_layers, prepare_graph, read_plan

IMPORTANCES: dict[str, Callable[[], tp.importance.Importance]] = {
    "l1": lambda: tp.importance.MagnitudeImportance(p=1),
    "l2": lambda: tp.importance.MagnitudeImportance(p=2),
    "bn_scale": lambda: tp.importance.BNScaleImportance(),
    "taylor": lambda: tp.importance.TaylorImportance(),
}
ROUND_TO = 8
MAX_CHANNEL_RATIO = 0.9  # the most channels the budget search may remove
BUDGET_TOLERANCE = 0.01  # stop searching once within 1 % of the source's MACs/params under the budget
MAX_TRIALS = 8


@dataclass
class PruneOutcome:
    """The pruned model and which original channels each group kept (in the root's channel order)."""

    model: ReXNet
    kept: dict[str, list[int]]
    info: dict = field(default_factory=dict)  # mode-specific facts for the report


def family_of(model: ReXNet) -> Family:
    name = getattr(model, "model_name", None)
    if name is None:
        raise ValueError("model was not built by create_model (no model_name)")
    return get_model_info(name).spec


def registry_name(family: Family, width: float) -> str:
    """The registry entry for ``family`` at ``width``: the named one (rexnet_090) if any, else the any-width one."""
    infos = [i for i in list_models() if i.family == family.name]
    named = [i.name for i in infos if i.width is not None and abs(i.width - width) < 1e-9]
    return named[0] if named else next(i.name for i in infos if i.width is None)


def make_importance(name: str) -> tp.importance.Importance:
    try:
        return IMPORTANCES[name]()
    except KeyError:
        raise UserError(f"unknown importance {name!r}: choose one of {', '.join(IMPORTANCES)}") from None


def _taylor_gradients(model: ReXNet, batch: tuple[torch.Tensor, torch.Tensor] | None) -> None:
    """Gradients of the loss on ``batch`` (eval mode: BN statistics stay as trained) for Taylor importance."""
    if batch is None:
        raise UserError("--importance taylor needs labelled images: give the checkpoint's dataset (--dataset)")
    model.zero_grad(set_to_none=True)
    model.eval()
    with torch.enable_grad():
        F.cross_entropy(model(batch[0]), batch[1]).backward()


def _drop(kept: list[int], idxs: list[int]) -> list[int]:
    gone = set(int(i) for i in idxs)
    return [k for pos, k in enumerate(kept) if pos not in gone]


def _prune_group(graph: tp.DependencyGraph, group: ChannelGroup, idxs: list[int]) -> None:
    pruning = graph.get_pruning_group(group.root, tp.prune_conv_out_channels, sorted(int(i) for i in idxs))
    if not graph.check_pruning_group(pruning):
        raise RuntimeError(f"pruning {len(idxs)} channels of {group.name} would empty a layer")
    pruning.prune()


def _group_scores(graph: tp.DependencyGraph, importance: tp.importance.Importance, group: ChannelGroup) -> torch.Tensor:
    width = group.root.out_channels
    return importance(graph.get_pruning_group(group.root, tp.prune_conv_out_channels, list(range(width))))


def check_narrower(model: ReXNet, width: float, source: str) -> None:
    if width >= model.width - 1e-9:
        raise UserError(f"--width {width:g} is not narrower than {source} (width {model.width:g}): "
                        f"pruning only removes channels; pick a width below {model.width:g}")
    if width < 0.1:
        raise UserError(f"--width {width:g} is below the smallest supported width 0.1")


# --- to a width plan -----------------------------------------------------------------------------------------

def _check_reachable(groups: list[ChannelGroup], source: ChannelPlan, target: ChannelPlan, width: float) -> None:
    """Refuse (one line) a target plan that removing channels from ``source`` cannot give exactly."""
    shape = [(b.stride, b.expand, b.shortcut, b.kernel_size, b.se_chs > 0) for b in source.blocks]
    if shape != [(b.stride, b.expand, b.shortcut, b.kernel_size, b.se_chs > 0) for b in target.blocks] \
            or source.head_hidden != target.head_hidden:
        raise UserError(f"the width-{width:g} plan has another block layout than the source model "
                        f"(strides/expansion/shortcuts/SE differ): prune within one family")
    for g in groups:
        for k, (have, want) in enumerate(zip(g.segments(source), g.segments(target))):
            if want > have:
                where = f"block {g.blocks[k]} adds" if g.kind == "chain" else "has"
                raise UserError(f"the width-{width:g} plan needs {want} channels where {g.name} {where} {have}: "
                                f"pruning cannot add channels; pick a narrower --width")


def prune_to_width(model: ReXNet, width: float, *, importance: str = "l2", steps: int = 1,
                   example_input: torch.Tensor, taylor_batch: tuple[torch.Tensor, torch.Tensor] | None = None,
                   progress: bool = False) -> PruneOutcome:
    """A copy of ``model`` pruned to its family's exact channel plan at ``width``.

    ``steps`` > 1 shrinks every segment linearly over that many steps, re-ranking channels each step.
    """
    family = family_of(model)
    check_narrower(model, width, "the source model")
    model = copy.deepcopy(model).eval()
    source = read_plan(model)
    target = family.plan(width)
    graph = tp.DependencyGraph().build_dependency(model, example_input, verbose=False)
    groups = prepare_graph(graph, model)
    _check_reachable(groups, source, target, width)
    scorer = make_importance(importance)
    kept = {g.name: list(range(sum(g.segments(source)))) for g in groups}
    current = {g.name: g.segments(source) for g in groups}
    for step in tqdm(range(1, steps + 1), desc=f"prune to width {width:g}", disable=not progress, leave=False):
        if importance == "taylor":
            _taylor_gradients(model, taylor_batch)
        removals = []
        for g in groups:
            want = [src - (src - tgt) * step // steps for src, tgt in zip(g.segments(source), g.segments(target))]
            if want == current[g.name]:
                continue
            scores = _group_scores(graph, scorer, g)
            idxs, start = [], 0
            for have, keep in zip(current[g.name], want):
                order = torch.argsort(scores[start:start + have])  # least important first, within the segment
                idxs += (order[:have - keep] + start).tolist()
                start += have
            removals.append((g, idxs, want))
        # all groups ranked on the same model, then pruned: groups are disjoint, so indices stay valid
        for g, idxs, want in removals:
            _prune_group(graph, g, idxs)
            kept[g.name] = _drop(kept[g.name], idxs)
            current[g.name] = want
    model.zero_grad(set_to_none=True)
    if read_plan(model) != target:
        raise RuntimeError(f"pruned model does not have the width-{width:g} plan")
    model.plan = target
    model.width = width
    model.model_name = registry_name(family, width)
    return PruneOutcome(model, kept, {"mode": "width", "width": width})


# --- to a MACs/params budget ------------------------------------------------------------------------------------

def _global_prune(model: ReXNet, channel_ratio: float, importance: str, steps: int, example_input: torch.Tensor,
                  taylor_batch: tuple[torch.Tensor, torch.Tensor] | None) -> dict[str, list[int]]:
    """Global pruning of ``model`` in place (torch-pruning BasePruner), then round every group to 8."""
    scorer = make_importance(importance)
    pruner = tp.pruner.BasePruner(model, example_input, importance=scorer, global_pruning=True,
                                  pruning_ratio=channel_ratio, iterative_steps=steps, round_to=ROUND_TO,
                                  ignored_layers=fixed_layers(model))
    groups = prepare_graph(pruner.DG, model)
    by_root = {g.root: g for g in groups}
    kept = {g.name: list(range(g.root.out_channels)) for g in groups}
    for _ in range(steps):
        if importance == "taylor":
            _taylor_gradients(model, taylor_batch)
        for pruning in pruner.step(interactive=True):
            g = by_root[pruning[0].dep.target.module]
            idxs = list(pruning[0].idxs)
            pruning.prune()
            kept[g.name] = _drop(kept[g.name], idxs)
    # groups the global threshold never reached keep their odd widths: round them down too
    if importance == "taylor":
        _taylor_gradients(model, taylor_batch)
    for g in groups:
        extra = g.root.out_channels % ROUND_TO
        if extra and g.root.out_channels > ROUND_TO:
            idxs = torch.argsort(_group_scores(pruner.DG, scorer, g))[:extra].tolist()
            _prune_group(pruner.DG, g, idxs)
            kept[g.name] = _drop(kept[g.name], idxs)
    model.zero_grad(set_to_none=True)
    return kept


def prune_to_budget(model: ReXNet, *, macs_ratio: float | None = None, params_ratio: float | None = None,
                    importance: str = "l2", steps: int = 1, example_input: torch.Tensor,
                    taylor_batch: tuple[torch.Tensor, torch.Tensor] | None = None,
                    progress: bool = False) -> PruneOutcome:
    """A copy of ``model`` globally pruned until MACs (or params) ≤ ratio × the source's, within 1 % of it.

    The global channel ratio that meets the budget is searched by regula falsi (Illinois) on whole
    pruning runs of ``steps`` steps each, starting from the guess that MACs shrink with width squared.
    """
    metric, ratio = ("macs", macs_ratio) if macs_ratio is not None else ("params", params_ratio)
    input_size = tuple(example_input.shape[1:])
    measure = (lambda m: count_macs(m, input_size)) if metric == "macs" else count_params
    base = measure(model)
    bar = tqdm(total=None, desc=f"prune to {ratio:g}x {metric}", unit="trial", disable=not progress, leave=False)

    def trial(channel_ratio: float) -> tuple[float, ReXNet, dict[str, list[int]]]:
        """``(metric / base − ratio, model, kept)``: ≤ 0 means the budget holds."""
        pruned = copy.deepcopy(model).eval()
        kept = _global_prune(pruned, channel_ratio, importance, steps, example_input, taylor_batch)
        bar.update()
        return measure(pruned) / base - ratio, pruned, kept

    lo, f_lo = 0.0, 1.0 - ratio  # no pruning: over budget by 1 - ratio
    hi = 1.0 - ratio ** 0.5
    f_hi, *best = trial(hi)
    if f_hi > 0:
        lo, f_lo = hi, f_hi
        hi = MAX_CHANNEL_RATIO
        f_hi, *best = trial(hi)
        if f_hi > 0:
            raise UserError(f"--{metric} {ratio:g} is out of reach: removing {hi:.0%} of the channels still "
                            f"leaves {f_hi + ratio:.3f}x the {metric}; ask for a larger ratio")
    side, f_best = 0, f_hi
    for _ in range(MAX_TRIALS):
        if f_best >= -BUDGET_TOLERANCE:
            break
        guess = hi - f_hi * (hi - lo) / (f_hi - f_lo)
        guess = min(max(guess, lo + 0.05 * (hi - lo)), hi - 0.05 * (hi - lo))  # stay inside the bracket
        f, *result = trial(guess)
        if f <= 0:
            hi, f_hi, f_best, best = guess, f, f, result
            f_lo = f_lo / 2 if side == 1 else f_lo  # Illinois: halve the stale end's value
            side = 1
        else:
            lo, f_lo = guess, f
            f_hi = f_hi / 2 if side == -1 else f_hi
            side = -1
    bar.close()
    pruned, kept = best
    pruned.plan = read_plan(pruned)
    reached = measure(pruned) / base
    return PruneOutcome(pruned, kept, {"mode": metric, "ratio": ratio, "channel_ratio": hi,
                                       f"{metric}_ratio_reached": reached})


@dataclass(frozen=True)
class PruneSpec:
    """What to prune to and how: exactly one of the family's plan at ``width``, a MACs or a params ratio
    (0 < r < 1); the channel ``importance`` and the number of iterative ``steps``."""

    width: float | None = None
    macs_ratio: float | None = None
    params_ratio: float | None = None
    importance: str = "l2"
    steps: int = 1

    def check(self) -> "PruneSpec":
        check_request(self.width, self.macs_ratio, self.params_ratio, self.importance, self.steps)
        return self


def prune_model(model: ReXNet, spec: PruneSpec, *, example_input: torch.Tensor,
                taylor_batch: tuple[torch.Tensor, torch.Tensor] | None = None, progress: bool = False) -> ReXNet:
    """A pruned copy of ``model`` as ``spec`` says.

    ``example_input`` is a batch at the model's input size (traced, and MACs are counted at its size);
    ``taylor_batch`` (images, labels) is needed for ``importance="taylor"``.
    """
    return prune_outcome(model, spec, example_input=example_input, taylor_batch=taylor_batch,
                         progress=progress).model


def prune_outcome(model: ReXNet, spec: PruneSpec, *, example_input: torch.Tensor,
                  taylor_batch: tuple[torch.Tensor, torch.Tensor] | None = None,
                  progress: bool = False) -> PruneOutcome:
    """:func:`prune_model` with the kept-channel record (the prune stage's report reads it)."""
    spec.check()
    how = {"importance": spec.importance, "steps": spec.steps, "example_input": example_input,
           "taylor_batch": taylor_batch, "progress": progress}
    if spec.width is not None:
        return prune_to_width(model, spec.width, **how)
    return prune_to_budget(model, macs_ratio=spec.macs_ratio, params_ratio=spec.params_ratio, **how)


def check_request(width: float | None, macs_ratio: float | None, params_ratio: float | None, importance: str,
                  steps: int) -> None:
    """One-line refusals of a malformed request, before any model or data is touched."""
    given = [name for name, v in (("--width", width), ("--macs", macs_ratio), ("--params", params_ratio))
             if v is not None]
    if len(given) != 1:
        raise UserError(f"give exactly one of --width, --macs, --params (got {', '.join(given) or 'none'})")
    make_importance(importance)
    if steps < 1:
        raise UserError(f"--steps {steps} must be at least 1")
    if width is not None and width <= 0:
        raise UserError(f"--width {width:g} must be positive")
    ratio = macs_ratio if macs_ratio is not None else params_ratio
    if ratio is not None and not 0.0 < ratio < 1.0:
        raise UserError(f"{given[0]} {ratio:g} is outside (0, 1): give the fraction of the source's "
                        f"{given[0][2:]} to keep, e.g. 0.5")

"""Structured pruning: coupling kept exact, exact width plans, budgets, ONNX parity, bad input."""

from __future__ import annotations

import copy
import dataclasses
import json
import re

import numpy as np
import pytest
import torch
from conftest import randomize_bn, run_cli

from rexnet_deploy.backends.onnxruntime import OnnxRuntimeRunner
from rexnet_deploy.errors import UserError
from rexnet_deploy.export import export_onnx
from rexnet_deploy.models import count_macs, count_params, create_model, load_model, save_model_checkpoint
from rexnet_deploy.models.checkpoint import read_checkpoint
from rexnet_deploy.models.rexnet import ChannelPlan, ReXNet
from rexnet_deploy.prune import PruneSpec, prune_model, prune_outcome, read_plan, widths_off_multiple


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These are batch-1..4 passes on tiny tensors: OpenMP's thread hand-offs cost more than they give."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- the coupling test's own model of ReXNet's channel coupling (independent of the pruning code) --------------


def _zero_out(conv, bn, c: int) -> None:
    conv.weight[c] = 0
    if conv.bias is not None:
        conv.bias[c] = 0
    if bn is not None:
        bn.weight[c] = 0
        bn.bias[c] = 0


def _block_output_reader(model: ReXNet, k: int):
    """The layer that mixes block k's output channels: the next block's expansion conv, or the head conv."""
    blocks = list(model.features)[:-1]
    if k + 1 < len(blocks):
        assert blocks[k + 1].conv_exp is not None
        return blocks[k + 1].conv_exp.conv
    return model.features[-1].conv


@torch.no_grad()
def zero_removed_channels(model: ReXNet, kept: dict[str, list[int]]) -> ReXNet:
    """Zero, in the unpruned ``model``, every channel the pruning removed and everything coupled to it.

    For each removed channel: its producing conv's filter and bias, its BN scale and shift (so the channel
    is exactly 0 after the activation), the depthwise conv/BN and SE gate that carry it, and the input
    weights of every layer that reads it — through the residual, every later block of the chain.
    """
    blocks = list(model.features)[:-1]
    for name, keep in kept.items():
        if name == "stem":
            width = model.stem.conv.out_channels
        elif name == "head":
            width = model.features[-1].conv.out_channels
        else:
            m = re.fullmatch(r"features\.(\d+)(?:-(\d+))?\.(out|mid|se)", name)
            first, last, kind = int(m.group(1)), int(m.group(2) or m.group(1)), m.group(3)
            blk = blocks[last]
            width = {"out": blk.conv_pwl.conv.out_channels, "mid": blk.conv_dw.conv.out_channels,
                     "se": blk.se.fc1.out_channels if blk.se is not None else 0}[kind]
        for c in sorted(set(range(width)) - set(keep)):
            if name == "stem":
                _zero_out(model.stem.conv, model.stem.bn, c)
                _zero_out(blocks[0].conv_dw.conv, blocks[0].conv_dw.bn, c)  # block 0 has no expansion
                blocks[0].conv_pwl.conv.weight[:, c] = 0
            elif name == "head":
                _zero_out(model.features[-1].conv, model.features[-1].bn, c)
                reader = model.head.conv if model.head.conv is not None else model.head.fc
                reader.weight[:, c] = 0
            elif kind == "out":
                for k in range(first, last + 1):  # the residual carries channel c through the chain
                    if c < blocks[k].conv_pwl.conv.out_channels:
                        _zero_out(blocks[k].conv_pwl.conv, blocks[k].conv_pwl.bn, c)
                        _block_output_reader(model, k).weight[:, c] = 0
            elif kind == "mid":
                blk = blocks[first]
                _zero_out(blk.conv_exp.conv, blk.conv_exp.bn, c)
                _zero_out(blk.conv_dw.conv, blk.conv_dw.bn, c)
                if blk.se is not None:
                    _zero_out(blk.se.fc2, None, c)
                    blk.se.fc1.weight[:, c] = 0
                blk.conv_pwl.conv.weight[:, c] = 0
            else:  # se
                blk = blocks[first]
                _zero_out(blk.se.fc1, blk.se.bn, c)
                blk.se.fc2.weight[:, c] = 0
    return model


def _test_model(name: str, width: float | None, num_classes: int = 10) -> ReXNet:
    """A model with non-trivial BN statistics and an O(1)-scale classifier, so logits differences show."""
    model = randomize_bn(create_model(name, width=width, num_classes=num_classes))
    with torch.no_grad():
        model.head.fc.weight.normal_(0, 1, generator=torch.Generator().manual_seed(0))
    return model


def _max_diff(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor) -> float:
    """Largest logit difference, computed in float64 so rounding noise cannot hide or fake a mismatch."""
    a, b = copy.deepcopy(a).double().eval(), copy.deepcopy(b).double().eval()
    with torch.no_grad():
        return (a(x.double()) - b(x.double())).abs().max().item()


CASES = {
    # SE blocks, depthwise convs, three residual chains; every group but the stem cut to the 0.5 plan
    "tiny-cifar 0.7 -> width 0.5": ("rexnet_tiny_cifar", 0.7, {"width": 0.5}, 16),
    # iterative: two steps, channels re-ranked by Taylor importance in between
    "rexnet 0.7 -> width 0.5, taylor, 2 steps": ("rexnet", 0.7, {"width": 0.5, "importance": "taylor", "steps": 2},
                                                 32),
    # global ranking across groups, round_to 8, two iterative steps
    "rexnet 0.5 -> macs 0.5, bn scale, 2 steps": ("rexnet", 0.5, {"macs_ratio": 0.5, "importance": "bn_scale",
                                                                  "steps": 2}, 32),
    # no SE, ReLU6 everywhere, a 1024-wide head conv after pooling
    "lite 0.6 -> params 0.8, l1": ("rexnet_lite", 0.6, {"params_ratio": 0.8, "importance": "l1"}, 32),
}
BUDGET_CASE = "rexnet 0.5 -> macs 0.5, bn scale, 2 steps"


@pytest.fixture(scope="module")
def pruned_case():
    """``pruned_case(case) -> (source model, PruneOutcome, example batch)``, each case pruned once per module."""
    cache = {}

    def get(case: str):
        if case not in cache:
            name, width, kwargs, size = CASES[case]
            model = _test_model(name, width)
            x = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(1))
            labels = torch.arange(4) % 10
            cache[case] = model, prune_outcome(model, PruneSpec(**kwargs), example_input=x[:1],
                                               taylor_batch=(x, labels)), x
        return cache[case]

    return get


@pytest.mark.parametrize("case", list(CASES))
def test_pruned_model_equals_unpruned_with_removed_channels_zeroed(pruned_case, case):
    model, outcome, x = pruned_case(case)
    pruned = outcome.model
    assert count_params(pruned) < count_params(model)
    if outcome.info["mode"] != "width":  # a budget holds, within the search tolerance
        assert outcome.info["ratio"] - 0.02 <= outcome.info[f"{outcome.info['mode']}_ratio_reached"] \
            <= outcome.info["ratio"]
    zeroed = zero_removed_channels(copy.deepcopy(model), outcome.kept)  # prune_outcome leaves `model` as it was
    assert _max_diff(pruned, zeroed, x) <= 1e-5
    # the comparison can fail: keep one wrong channel in the last chain and the outputs differ
    chain = [n for n in outcome.kept if n.endswith(".out")][-1]
    wrong = dict(outcome.kept)
    last = int(re.findall(r"\d+", chain)[-1])
    dropped = sorted(set(range(read_plan(model).blocks[last].out_chs)) - set(wrong[chain]))
    assert dropped, f"{chain} lost no channels"
    wrong[chain] = sorted(wrong[chain][1:] + dropped[:1])
    mis = zero_removed_channels(copy.deepcopy(model), wrong)
    assert _max_diff(pruned, mis, x) > 1e-2


def test_width_case_prunes_every_kind_of_group_but_the_stem(pruned_case):
    model, outcome, _ = pruned_case("tiny-cifar 0.7 -> width 0.5")
    full = read_plan(model)
    lost = {n for n, k in outcome.kept.items() if len(k) < _group_width(full, n)}
    kinds = {n.rsplit(".", 1)[1] if n.startswith("features") else n for n in lost}
    assert kinds == {"out", "mid", "se", "head"}
    # the w<1 rule keeps the stem at 32 at both widths
    assert "stem" not in lost and full.stem == outcome.model.plan.stem == 32
    # the chain groups lost channels in their later blocks' segments too, not only the first block's
    chain = outcome.kept["features.11-15.out"]
    assert any(c >= full.blocks[11].out_chs for c in chain)
    assert len([c for c in chain if c >= full.blocks[14].out_chs]) == 100 - 95


def _group_width(plan, name: str) -> int:
    if name == "stem":
        return plan.stem
    if name == "head":
        return plan.head
    blk = plan.blocks[int(re.findall(r"\d+", name)[-1])]
    return {"out": blk.out_chs, "mid": blk.mid_chs, "se": blk.se_chs}[name.rsplit(".", 1)[1]]


# --- exact width plans --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("source, src_width, width, target", [
    ("rexnet_tiny_cifar", 0.7, 0.5, ("rexnet_tiny_cifar", 0.5)),
    ("rexnet_100", None, 0.9, ("rexnet_090", None)),
])
def test_width_prune_loads_into_the_registry_model(tmp_path, source, src_width, width, target):
    model = randomize_bn(create_model(source, width=src_width, num_classes=10))
    pruned = prune_model(model, PruneSpec(width=width), example_input=torch.randn(1, 3, 32, 32))
    path = save_model_checkpoint(pruned, tmp_path / "pruned.pt")
    assert "plan" not in read_checkpoint(path)  # it is the standard plan of that width
    name, tw = target
    loaded = create_model(name, width=tw, num_classes=10, checkpoint=path)  # raises on any key/shape mismatch
    reference = create_model(name, width=tw, num_classes=10)
    assert loaded.plan == read_plan(pruned) == reference.plan
    assert count_params(pruned) == count_params(reference)
    assert count_macs(pruned, (3, 32, 32)) == count_macs(reference, (3, 32, 32))
    assert _max_diff(loaded, pruned, torch.randn(2, 3, 32, 32)) == 0.0


# --- budgets --------------------------------------------------------------------------------------------------

def test_budget_result_is_saved_as_plan_and_state_dict_and_rebuilt(pruned_case, tmp_path):
    _, outcome, _ = pruned_case(BUDGET_CASE)
    pruned = outcome.model
    assert pruned.plan == read_plan(pruned)  # the plan read off the modules is what gets saved
    path = save_model_checkpoint(pruned, tmp_path / "pruned.pt")
    saved = read_checkpoint(path)
    assert saved["plan"] == pruned.plan.to_dict()
    assert all(isinstance(v, torch.Tensor) for v in saved["model"].values())  # a state_dict, no module
    loaded, _ = load_model(path)
    assert _max_diff(loaded, pruned, torch.randn(2, 3, 32, 32)) == 0.0


def test_budget_widths_are_multiples_of_8_except_inside_residual_chains(pruned_case):
    _, outcome, _ = pruned_case(BUDGET_CASE)
    plan = outcome.model.plan
    off = widths_off_multiple(outcome.model)
    assert off["roundable"] == []
    assert plan.stem % 8 == 0 and plan.head % 8 == 0
    assert all(b.mid_chs % 8 == 0 and b.se_chs % 8 == 0 for b in plan.blocks)
    last_of_chain = [i for i, b in enumerate(plan.blocks) if i + 1 == len(plan.blocks) or
                     not plan.blocks[i + 1].shortcut]
    assert all(plan.blocks[i].out_chs % 8 == 0 for i in last_of_chain)


# --- export --------------------------------------------------------------------------------------------------

def test_pruned_model_exports_to_onnx_and_matches_torch(pruned_case, tmp_path):
    _, outcome, _ = pruned_case(BUDGET_CASE)
    path = export_onnx(outcome.model, tmp_path / "pruned.onnx", (3, 32, 32))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = outcome.model.eval()(x).numpy()
    with OnnxRuntimeRunner(path) as runner:
        got = runner.infer(x.numpy())
    assert np.abs(got - expected).max() <= 1e-4


# --- bad input -------------------------------------------------------------------------------------------------

def test_api_refuses_bad_requests():
    model = create_model("rexnet_tiny_cifar", width=0.5)
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(UserError, match="not narrower"):
        prune_model(model, PruneSpec(width=0.7), example_input=x)
    for ratio in (0.0, 1.0, 1.5, -0.2):
        with pytest.raises(UserError, match=r"outside \(0, 1\)"):
            prune_model(model, PruneSpec(macs_ratio=ratio), example_input=x)
    with pytest.raises(UserError, match="exactly one"):
        prune_model(model, PruneSpec(width=0.3, macs_ratio=0.5), example_input=x)
    with pytest.raises(UserError, match="unknown importance"):
        prune_model(model, PruneSpec(width=0.3, importance="l3"), example_input=x)


def test_width_plan_out_of_reach_of_a_budget_pruned_model_is_refused(pruned_case):
    _, outcome, x = pruned_case(BUDGET_CASE)  # rexnet 0.5 at half the MACs: stem 32 → fewer
    assert outcome.model.plan.stem < 32
    with pytest.raises(UserError, match=r"the width-0.45 plan needs 32 channels where stem has \d+"):
        prune_model(outcome.model, PruneSpec(width=0.45), example_input=x[:1])


def _one_line_exit_2(result) -> str:
    assert result.returncode == 2, result.stderr
    message = result.stderr.strip()
    assert "\n" not in message and "Traceback" not in message, message
    return message


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "rexnet05.pt"
    return save_model_checkpoint(create_model("rexnet", width=0.5, num_classes=10), path)


def test_cli_refuses_a_wider_target(small_checkpoint, tmp_path):
    message = _one_line_exit_2(run_cli("prune", "--checkpoint", str(small_checkpoint), "--width", "0.7",
                                       "--out", str(tmp_path)))
    assert "--width 0.7 is not narrower" in message and str(small_checkpoint) in message
    assert not any(tmp_path.iterdir())  # nothing written


def test_cli_takes_the_checkpoint_as_a_flag_once(small_checkpoint, tmp_path):
    """--checkpoint PATH as export and bench take it; the old positional form still reads the file, with a one-line
    deprecation note; both or neither: one line."""
    result = run_cli("prune", str(small_checkpoint), "--width", "0.7", "--out", str(tmp_path))
    note, message = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "positional CHECKPOINT is deprecated, use --checkpoint" in note
    assert "--width 0.7 is not narrower" in message and str(small_checkpoint) in message
    for args in ([str(small_checkpoint), "--checkpoint", str(small_checkpoint)], []):
        message = _one_line_exit_2(run_cli("prune", *args, "--width", "0.3", "--out", str(tmp_path)))
        assert "give the checkpoint once" in message and "--checkpoint CHECKPOINT" in message
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("flag, value", [("--macs", "1.5"), ("--params", "0")])
def test_cli_refuses_a_ratio_outside_0_1(small_checkpoint, tmp_path, flag, value):
    message = _one_line_exit_2(run_cli("prune", "--checkpoint", str(small_checkpoint), flag, value,
                                       "--out", str(tmp_path)))
    assert f"{flag} {float(value):g} is outside (0, 1)" in message


def test_cli_refuses_a_checkpoint_of_another_family(tmp_path):
    lite = save_model_checkpoint(create_model("rexnet_lite_100"), tmp_path / "lite.pt")
    message = _one_line_exit_2(run_cli("prune", "--checkpoint", str(lite), "--model", "rexnet", "--width", "0.5",
                                       "--out", str(tmp_path / "out")))
    assert "rexnet_lite_100" in message and "not a rexnet model" in message
    # without metadata (timm/official layout) the shapes tell: a Lite state_dict does not fit rexnet_100
    bare = tmp_path / "lite_bare.pt"
    torch.save(create_model("rexnet_lite_100").state_dict(), bare)
    message = _one_line_exit_2(run_cli("prune", "--checkpoint", str(bare), "--model", "rexnet_100", "--macs", "0.5",
                                       "--out", str(tmp_path / "out2")))
    assert "Lite" in message


def test_cli_prunes_fine_tunes_and_reports(fmnist_trained, tmp_path):
    out = tmp_path / "pruned"
    result = run_cli("prune", "--checkpoint", str(fmnist_trained), "--macs", "0.6", "--epochs", "1",
                     "--set", "train_subset=3000", "--set", "val_subset=1000", "--eval-images", "2000",
                     "--kd-weight", "0.5", "--threads", "1", "--out", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    source, pruned, tuned = report["rows"]
    assert [r["stage"] for r in report["rows"]] == ["source", "pruned", "pruned + fine-tuned"]
    assert pruned["macs"] <= 0.6 * source["macs"] and pruned["params"] < source["params"]
    assert tuned["macs"] == pruned["macs"]
    assert source["top1"] >= 80 and tuned["top1"] >= 60
    assert report["finetune"]["kd_weight"] == 0.5 and report["threads"] == 1
    # the checkpoints rebuild from plan + state_dict; the plan file is the same plan
    model, meta = load_model(out / "finetuned.pt")
    assert model.plan == ChannelPlan.from_dict(json.loads((out / "plan.json").read_text()))
    assert model.plan == ChannelPlan.from_dict(report["plan"])
    assert meta["pruning"]["mode"] == "macs" and meta["dataset"] == "fashion_mnist"
    assert (out / "report.md").read_text().count("|") > 10


def test_compression_table_keys_a_prune_run_by_everything_it_depends_on(tmp_path):
    """Equal requests share a key; another KD weight, fine-tuning lr or seed, or an edited recipe file, do not."""
    from rexnet_deploy.experiments.compression_table import prune_settings
    from rexnet_deploy.prune import FinetuneSpec, PruneRequest
    from rexnet_deploy.stages import stage_key
    from rexnet_deploy.train.recipe import load_recipe, write_recipe

    recipe = write_recipe(load_recipe("fmnist-cpu"), tmp_path / "mine.yaml")
    finetune = FinetuneSpec(recipe=str(recipe), epochs=3, overrides={"lr": 0.03, "seed": 0})
    request = PruneRequest(tmp_path / "source.pt", tmp_path / "a", width=0.5, finetune=finetune)

    def key(r: PruneRequest) -> str:
        return stage_key(prune_settings(r))

    same = dataclasses.replace(request, out_dir=tmp_path / "b", device="cpu", progress=False)
    assert key(same) == key(request)  # where it goes and how it shows progress do not change the result
    others = [dataclasses.replace(request, finetune=dataclasses.replace(finetune, kd_weight=0.5)),
              dataclasses.replace(request, finetune=dataclasses.replace(finetune, overrides={"lr": 0.1, "seed": 0})),
              dataclasses.replace(request, finetune=dataclasses.replace(finetune, overrides={"lr": 0.03, "seed": 1})),
              dataclasses.replace(request, width=None, macs_ratio=0.5)]
    assert len({key(request), *map(key, others)}) == 1 + len(others)
    before = key(request)
    write_recipe(load_recipe("fmnist-cpu", {"weight_decay": 0.1}), recipe)  # the same file name, other content
    assert key(request) != before


def test_compression_table_shows_each_seed_when_there_are_several():
    from rexnet_deploy.experiments.compression_table import display_rows

    row = {"model": "m", "params": 1e6, "macs": 4e6, "delta_top1_vs_source": 0.1, "img_per_s": 1000.0,
           "epochs": "6 + 3"}
    single = display_rows([{**row, "top1": 92.0, "top1_runs": [92.0]}])
    assert "top-1 per seed" not in single[0]
    several = display_rows([{**row, "top1": 92.0, "top1_runs": [92.0]},
                            {**row, "top1": 92.25, "top1_runs": [92.1, 92.4]}])
    assert [r["top-1 per seed"] for r in several] == ["92.00", "92.10 / 92.40"]


def test_compression_table_runs_end_to_end_with_two_seeds_and_reuses_its_runs(fmnist_available, tmp_path, capsys):
    from rexnet_deploy.experiments.compression_table import main
    from rexnet_deploy.train.recipe import load_recipe, write_recipe

    recipe = write_recipe(load_recipe("fmnist-cpu", {"train_subset": 256, "val_subset": 256, "batch_size": 64}),
                          tmp_path / "tiny.yaml")
    args = ["--recipe", str(recipe), "--source-width", "0.6", "--target-width", "0.5", "--source-epochs", "1",
            "--finetune-epochs", "1", "--seeds", "0", "1", "--eval-images", "500", "--threads", "2",
            "--work", str(tmp_path / "work"),
            "--out", str(tmp_path / "out"), "--no-progress"]
    assert main(args) == 0
    table = json.loads((tmp_path / "out" / "compression.json").read_text())
    assert table["seeds"] == [0, 1] and table["test_images"] == 500
    assert [len(r["top1_runs"]) for r in table["rows"]] == [1, 2, 2, 2, 2]
    for row in table["rows"]:
        assert row["top1"] == pytest.approx(sum(row["top1_runs"]) / len(row["top1_runs"]))
    runs = sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "work").iterdir())
    assert runs == sorted(["source", *(f"{kind}-seed{s}" for s in (0, 1) for kind in
                                       ("prune-width", "prune-width-kd", "scratch", "prune-macs"))])
    assert all((p / "stage.json").is_file() for p in (tmp_path / "work").iterdir())
    assert table["runs_total"] == 9 and table["runs_reused"] == 0
    md = (tmp_path / "out" / "compression.md").read_text()
    assert "top-1 per seed" in md and "reused" not in md
    capsys.readouterr()
    assert main(args) == 0  # everything is reused: nothing is trained again
    out = capsys.readouterr().out
    assert out.count("up to date, reused") == 9 and "running" not in out and "epoch 1/1" not in out
    assert "(9 of its 9 training runs reused finished" in (tmp_path / "out" / "compression.md").read_text()
    # another KD weight is another run, in its own folder; the runs it does not touch are reused
    seed0 = [*args[:args.index("--seeds")], "--seeds", "0", *args[args.index("--seeds") + 3:], "--kd-weight", "0.3"]
    assert main(seed0) == 0
    out = capsys.readouterr().out
    assert out.count("up to date, reused") == 4 and out.count("running") == 1
    assert "[prune-width-kd-seed0] running" in out
    assert len(list((tmp_path / "work").glob("prune-width-kd-seed0-*"))) == 2

"""The model zoo: exact channel plans and counts, timm/official checkpoint mapping, clean ONNX export."""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch_pruning as tp
from conftest import randomize_bn, run_cli

from rexnet_deploy.errors import UserError
from rexnet_deploy.export import export_onnx
from rexnet_deploy.models import (
    count_macs,
    count_params,
    create_model,
    get_model_info,
    list_models,
    rexnet_lite_plan,
    rexnet_plan,
)

# shared/reference/REXNET.md
V1_BLOCKS = {
    0.9: "16,26,36,46,56,67,77,87,97,107,117,127,138,148,158,168",
    1.0: "16,27,38,50,61,72,84,95,106,117,128,140,151,162,174,185",
    1.3: "21,35,50,65,79,94,109,123,138,152,167,182,196,211,226,240",
    1.5: "24,41,58,75,92,108,125,142,159,176,193,210,226,243,260,277",
    2.0: "32,54,77,100,122,144,167,190,212,234,257,280,302,324,347,370",
    2.2: "35,60,85,109,134,159,184,208,233,258,283,307,332,357,382,406",
    3.0: "48,82,116,149,183,217,250,284,318,352,386,419,453,487,520,554",
}
V1_STEM_HEAD = {0.9: (32, 1152), 1.0: (32, 1280), 1.3: (42, 1664), 1.5: (48, 1920), 2.0: (64, 2560),
                2.2: (70, 2816), 3.0: (96, 3840)}
LITE_BLOCKS = {
    1.0: (32, "16,32,40,48,64,72,80,96,104,112,128,136,144,160,168,184"),
    1.3: (40, "24,32,48,64,80,96,104,120,136,152,160,176,192,208,224,232"),
    1.5: (48, "24,40,56,72,88,104,120,136,152,176,192,208,224,240,256,272"),
    2.0: (64, "32,56,80,96,120,144,160,184,208,232,248,272,296,320,336,360"),
}
PARAMS_M = {"rexnet_090": 4.091, "rexnet_100": 4.797, "rexnet_130": 7.557, "rexnet_150": 9.729,
            "rexnet_200": 16.367, "rexnet_220": 19.485, "rexnet_300": 34.709, "rexnet_lite_100": 4.740,
            "rexnet_lite_130": 6.748, "rexnet_lite_150": 8.332, "rexnet_lite_200": 12.966}
MACS_G = {"rexnet_090": 0.348, "rexnet_100": 0.398, "rexnet_130": 0.662, "rexnet_150": 0.876,
          "rexnet_200": 1.529, "rexnet_220": 1.843, "rexnet_300": 3.396, "rexnet_lite_100": 0.407,
          "rexnet_lite_130": 0.646, "rexnet_lite_150": 0.836, "rexnet_lite_200": 1.498, "rexnet_tiny_cifar": 0.232}
ALL_NAMES = [m.name for m in list_models()]


def _ints(s: str) -> list[int]:
    return [int(v) for v in s.split(",")]


@pytest.mark.parametrize("width", sorted(V1_BLOCKS))
def test_v1_channel_plan_matches_reference(width):
    plan = rexnet_plan(width)
    assert [b.out_chs for b in plan.blocks] == _ints(V1_BLOCKS[width])
    assert (plan.stem, plan.head) == V1_STEM_HEAD[width]


@pytest.mark.parametrize("width", sorted(LITE_BLOCKS))
def test_lite_channel_plan_matches_reference(width):
    plan = rexnet_lite_plan(width)
    stem, blocks = LITE_BLOCKS[width]
    assert plan.stem == stem and [b.out_chs for b in plan.blocks] == _ints(blocks)
    assert all(b.out_chs % 8 == 0 for b in plan.blocks)


def test_rounding_is_python_round_half_even():
    # 16 + 2·11.25 = 38.5 → 38 and 16 + 10·11.25 = 128.5 → 128 at w=1.0 (not 39 / 129)
    outs = [b.out_chs for b in rexnet_plan(1.0).blocks]
    assert outs[2] == 38 and outs[10] == 128


@pytest.mark.parametrize("name", sorted(PARAMS_M))
def test_params_and_macs_match_published(name):
    model = create_model(name)
    assert round(count_params(model) / 1e6, 3) == PARAMS_M[name]
    macs = count_macs(model, get_model_info(name).spec.input_size)
    assert abs(macs / 1e9 - MACS_G[name]) / MACS_G[name] < 0.01


def test_tiny_cifar_counts():
    model = create_model("rexnet_tiny_cifar")
    assert model.width == 0.7
    assert count_params(model) == 1_944_440
    assert [b.out_chs for b in model.plan.blocks] == _ints("16,24,32,40,48,55,63,71,79,87,95,103,110,118,126,134")
    assert model.plan.head == 896 and model.stem.conv.stride == (1, 1)
    assert abs(count_macs(model, (3, 32, 32)) / 1e9 - MACS_G["rexnet_tiny_cifar"]) / 0.232 < 0.01
    assert create_model("rexnet_tiny_cifar", width=0.5).plan.head == 640


def test_activation_placement():
    v1 = create_model("rexnet_100")
    blk = v1.features[5]
    assert isinstance(v1.stem.act, torch.nn.SiLU) and isinstance(blk.conv_exp.act, torch.nn.SiLU)
    assert isinstance(blk.act_dw, torch.nn.ReLU6) and not hasattr(blk.conv_dw, "act")
    assert isinstance(blk.se.bn, torch.nn.BatchNorm2d) and blk.se.fc1.out_channels == blk.se.fc1.in_channels // 12
    assert v1.features[0].se is None and v1.features[2].se is None and v1.features[3].se is not None
    tiny = create_model("rexnet_tiny_cifar")
    assert type(tiny.features[5].act_dw) is torch.nn.ReLU
    lite = create_model("rexnet_lite_100")
    assert isinstance(lite.stem.act, torch.nn.ReLU6) and isinstance(lite.features[5].conv_dw.act, torch.nn.ReLU6)
    assert lite.features[5].se is None and lite.head.conv.out_channels == 1024


def test_create_model_rejects_bad_names_and_widths():
    with pytest.raises(UserError, match="unknown model"):
        create_model("resnet50")
    with pytest.raises(UserError, match="has width 1.0"):
        create_model("rexnet_100", width=0.5)


@pytest.mark.parametrize("name", ["rexnet_100", "rexnet_130", "rexnet_150", "rexnet_200", "rexnet_300"])
def test_timm_state_dict_gives_same_logits(name):
    timm = pytest.importorskip("timm")
    ref = randomize_bn(timm.create_model(name, pretrained=False))
    ours = create_model(name, checkpoint=None)
    from rexnet_deploy.models.checkpoint import load_state_dict_checked

    load_state_dict_checked(ours, {f"module.{k}": v for k, v in ref.state_dict().items()}, "timm")
    ours.eval()
    x = torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (ref(x) - ours(x)).abs().max().item() <= 1e-5


def _official_state_dict(model) -> dict[str, torch.Tensor]:
    """Our weights under the official clovaai key layout, built from the rules in REXNET.md."""
    sd = model.state_dict()
    out = {}

    def put(dst: str, src: str) -> None:
        for k, v in sd.items():
            if k.startswith(src + "."):
                out[dst + k[len(src):]] = v

    put("features.0", "stem.conv")
    put("features.1", "stem.bn")
    for i, spec in enumerate(model.plan.blocks):
        o, s = f"features.{3 + i}.out", f"features.{i}"
        if not spec.expand:
            put(f"{o}.0", f"{s}.conv_dw.conv"), put(f"{o}.1", f"{s}.conv_dw.bn")
            put(f"{o}.3", f"{s}.conv_pwl.conv"), put(f"{o}.4", f"{s}.conv_pwl.bn")
            continue
        put(f"{o}.0", f"{s}.conv_exp.conv"), put(f"{o}.1", f"{s}.conv_exp.bn")
        put(f"{o}.3", f"{s}.conv_dw.conv"), put(f"{o}.4", f"{s}.conv_dw.bn")
        if spec.se_chs:
            put(f"{o}.5.fc.0", f"{s}.se.fc1"), put(f"{o}.5.fc.1", f"{s}.se.bn"), put(f"{o}.5.fc.3", f"{s}.se.fc2")
            put(f"{o}.7", f"{s}.conv_pwl.conv"), put(f"{o}.8", f"{s}.conv_pwl.bn")
        else:
            put(f"{o}.6", f"{s}.conv_pwl.conv"), put(f"{o}.7", f"{s}.conv_pwl.bn")
    put("features.19", "features.16.conv")
    put("features.20", "features.16.bn")
    out["output.1.weight"] = sd["head.fc.weight"][:, :, None, None].clone()
    out["output.1.bias"] = sd["head.fc.bias"]
    return out


def test_official_layout_round_trips(tmp_path):
    src = randomize_bn(create_model("rexnet_100"), seed=3)
    official = _official_state_dict(src)
    assert len(official) == 413  # the reference count, num_batches_tracked included
    assert all(re.match(r"(features\.\d+\.|output\.1\.)", k) for k in official)
    path = tmp_path / "rexnetv1_1.0.pth"
    torch.save({f"module.{k}": v for k, v in official.items()}, path)
    loaded = create_model("rexnet_100", checkpoint=path).eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(src(x), loaded(x))


def _onnx_ops(path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


@pytest.mark.parametrize("name", ALL_NAMES)
def test_every_variant_exports_with_dynamic_batch(name, tmp_path):
    model = randomize_bn(create_model(name))
    size = get_model_info(name).spec.input_size
    size = size if size[1] == 32 else (3, 96, 96)  # a smaller image keeps the test fast; the graph is the same
    path = export_onnx(model, tmp_path / f"{name}.onnx", size)
    assert "ScatterND" not in _onnx_ops(path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):  # batch 1 catches a .squeeze() that would drop the batch axis
        x = torch.randn(batch, *size)
        with torch.no_grad():
            expected = model(x).numpy()
        got = sess.run(None, {"input": x.numpy()})[0]
        assert got.shape == expected.shape == (batch, model.num_classes)
        assert np.abs(got - expected).max() <= 1e-4


def test_partial_residual_survives_structured_pruning(tmp_path):
    model = randomize_bn(create_model("rexnet_tiny_cifar", width=0.5))
    before = count_params(model)
    x = torch.randn(2, 3, 32, 32)
    pruner = tp.pruner.BasePruner(model, x, importance=tp.importance.MagnitudeImportance(p=2),
                                  pruning_ratio=0.3, ignored_layers=[model.head.fc])
    pruner.step()
    assert count_params(model) < 0.75 * before
    # widths changed inside shortcut blocks, and the shortcut still adds the (pruned) input
    blk = model.features[2]
    assert blk.use_shortcut and blk.conv_pwl.conv.out_channels < 32
    with torch.no_grad():
        assert model(x).shape == (2, 10)
    path = export_onnx(model, tmp_path / "pruned.onnx", (3, 32, 32))
    assert "ScatterND" not in _onnx_ops(path)


# --- bad checkpoints ---------------------------------------------------------------------------------

def test_wrong_width_names_the_width_that_fits(tmp_path):
    path = tmp_path / "w07.pt"
    torch.save({"model": create_model("rexnet_tiny_cifar", width=0.7).state_dict()}, path)
    with pytest.raises(UserError) as err:
        create_model("rexnet_tiny_cifar", width=0.5, checkpoint=path)
    msg = str(err.value)
    assert "\n" not in msg and "width 0.7" in msg and str(path) in msg


def test_lite_into_v1_and_wrong_classes_are_refused(tmp_path):
    lite = tmp_path / "lite.pt"
    torch.save(create_model("rexnet_lite_100").state_dict(), lite)
    with pytest.raises(UserError, match="Lite of width 1"):
        create_model("rexnet_100", checkpoint=lite)
    ten = tmp_path / "ten.pt"
    torch.save(create_model("rexnet_100", num_classes=10).state_dict(), ten)
    with pytest.raises(UserError, match="10 classes"):
        create_model("rexnet_100", checkpoint=ten)


def test_bad_files_exit_2_with_one_line(tmp_path):
    good = tmp_path / "good.pt"
    torch.save(create_model("rexnet_tiny_cifar").state_dict(), good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:5000])
    text = tmp_path / "notes.pt"
    text.write_text("this is not a checkpoint\n")
    for path in (truncated, text, tmp_path / "missing.pt"):
        proc = run_cli("inspect", str(path), "--model", "rexnet_tiny_cifar")
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and str(path) in proc.stderr
        assert "Traceback" not in proc.stderr
    proc = run_cli("inspect", str(good), "--model", "rexnet_tiny_cifar", "--width", "0.5")
    assert proc.returncode == 2 and "width 0.7" in proc.stderr
    proc = run_cli("inspect", str(good), "--model", "rexnet_tiny_cifar")
    assert proc.returncode == 0 and "1,944,440" in proc.stdout


def test_cli_help_version_models():
    assert run_cli("--help").returncode == 0
    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("rexnet-deploy ")
    proc = run_cli("models", "--json")
    assert proc.returncode == 0
    import json

    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["rexnet_tiny_cifar"]["params"] == 1_944_440 and len(rows) == 14
    assert run_cli("no-such-command").returncode == 2


@pytest.mark.parametrize("command", [["prune", "--checkpoint", "x.pt", "--width", "0.5", "--out", "o"], ["train"],
                                     ["bench", "--suite", "fmnist-cpu"], ["pipeline"]])
def test_cli_refuses_a_thread_count_below_1_in_one_line(command):
    result = run_cli(*command, "--threads", "0")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "argument --threads: expected a positive integer, not '0'" in result.stderr

"""``rexnet-deploy models``: the model zoo as a table or JSON."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    add_models_parser(sub)
    add_inspect_parser(sub)


def add_models_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the ReXNet variants (width, input, params, MACs, published top-1)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def model_rows() -> list[dict]:
    """One row per registered variant, with params and MACs counted on the built model."""
    from . import count_macs, count_params, create_model, list_models

    rows = []
    for info in list_models():
        model = create_model(info.name)
        fam = info.spec
        rows.append({**info.to_dict(), "width": model.width,
                     "params": count_params(model), "macs": count_macs(model, fam.input_size)})
    return rows


def run(args: argparse.Namespace) -> int:
    from ..report import format_table

    rows = model_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = [{"name": r["name"], "width": r["width"], "input": "×".join(map(str, r["input_size"][1:])),
              "params (M)": r["params"] / 1e6, "MACs (G)": round(r["macs"] / 1e9, 3),
              "top-1": r["top1"], "top-5": r["top5"], "source": r["source"]} for r in rows]
    print(format_table(table))
    return 0


def add_inspect_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="say what a checkpoint holds and check that it loads into a model")
    p.add_argument("checkpoint", help="a .pt/.pth file: ours, timm's or the official clovaai layout")
    p.add_argument("--model", help="registry name to load it into, e.g. rexnet_tiny_cifar")
    p.add_argument("--width", type=float, help="width multiplier for families that take any width")
    p.add_argument("--num-classes", type=int, help="classifier size (default: the family's)")
    p.set_defaults(func=inspect)


def inspect(args: argparse.Namespace) -> int:
    from . import count_params, create_model
    from .checkpoint import checkpoint_filter_fn, describe_state_dict, extract_state_dict, read_checkpoint

    ckpt = read_checkpoint(args.checkpoint)
    sd = checkpoint_filter_fn(extract_state_dict(ckpt))
    print(f"{args.checkpoint}: {len(sd)} tensors; {describe_state_dict(sd)}")
    for key in ("model_name", "width", "epoch", "dataset"):
        if key in ckpt:
            print(f"  {key}: {ckpt[key]}")
    if args.model:
        model = create_model(args.model, width=args.width, num_classes=args.num_classes, checkpoint=args.checkpoint)
        print(f"loads into {args.model} width {model.width:g}: {count_params(model):,} parameters")
    return 0

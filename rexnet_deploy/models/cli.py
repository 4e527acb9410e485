"""``rexnet-deploy models``: the model zoo as a table or JSON."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
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

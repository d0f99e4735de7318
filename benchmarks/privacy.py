"""NDCG@10 of DP-SGD query towers at several epsilons beside the non-private ones (one fold).

Rows, all on wands-subset fold 0 with the same groups (a training query with its judged
positives, weighted by gain, and its judged-irrelevant products as negatives), the same
frozen MiniLM catalog vectors, the same epochs, batch size and learning rate, the epoch kept
by validation NDCG@10, scored on the fold's test queries over the whole catalog:

* zero-shot MiniLM;
* non-private query tower (:func:`~shopaug.train.grouped.fit_query_groups`: in-batch
  negatives, every transformer layer);
* non-private with DP's restrictions (own negatives only, top ``--layers`` layers, Poisson
  batches, no clipping, no noise): what the restrictions cost before any noise;
* DP-SGD at each ``--epsilons`` value (delta 1e-5, RDP accountant, clipping norm 1).

Usage:
    nice -n 10 python benchmarks/privacy.py --epsilons 1 8 --epochs 3 --batch-size 32
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fold_setup import query_tower_fold
from results_file import invocation, write_section
from shopaug.models.query_tower import QueryTowerModel
from shopaug.train import TrainConfig
from shopaug.train.grouped import fit_query_groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 8.0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/out/privacy")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    fold = query_tower_fold(args.fold)
    valid, test, groups, base, ndcg = fold.valid, fold.test, fold.groups, fold.base, fold.ndcg
    common = {"batch_size": args.batch_size, "epochs": args.epochs, "lr": args.lr}
    layers = args.layers
    runs: list[tuple[str, dict[str, Any]]] = [
        ("non-private query tower (in-batch negatives, all layers)", {}),
        (
            f"non-private, DP's restrictions (own negatives, top {layers} layers, no noise)",
            {"enabled": True, "noise_multiplier": 0.0, "max_grad_norm": 1e6},
        ),
    ]
    for epsilon in args.epsilons:
        runs.append(
            (
                f"DP-SGD, target epsilon {epsilon:g}",
                {"enabled": True, "target_epsilon": epsilon, "max_grad_norm": 1.0},
            )
        )
    lines = [
        "| system | epsilon (delta 1e-5) | noise multiplier | validation NDCG@10 "
        "| test NDCG@10 | steps | training |",
        "|---|---|---|---|---|---|---|",
        f"| zero-shot MiniLM | 0 | - | {ndcg(base, valid):.3f} | {ndcg(base, test):.3f} | - | - |",
    ]
    print(lines[-1], flush=True)
    for number, (name, privacy) in enumerate(runs):
        if privacy:
            privacy = {**privacy, "trainable_layers": layers}
        config = TrainConfig(**common, temperature=0.05, seed=0, privacy=privacy)
        tower = fold.tower()
        started = time.perf_counter()
        result = fit_query_groups(
            tower,
            groups,
            config,
            run_dir=Path(args.out) / f"run-{number}",
            validate=lambda m: ndcg(m, valid),
            show_progress=False,
        )
        seconds = time.perf_counter() - started
        best = QueryTowerModel.load(result.model_dir, item_encoder=base.item_encoder)
        report = result.privacy or {}
        epsilon = report.get("epsilon")
        shown = (
            "∞ (no noise)" if privacy and epsilon is None else f"{epsilon:.2f}" if epsilon else "∞"
        )
        noise = f"{report['noise_multiplier']:.3f}" if report else "-"
        best_epoch = next(p["epoch"] for p in result.curve if p["step"] == result.best_step)
        lines.append(
            f"| {name} | {shown} | {noise} | {result.best_metric:.3f} (epoch {best_epoch}) "
            f"| {ndcg(best, test):.3f} | {result.steps} | {seconds:.0f} s |"
        )
        print(lines[-1], flush=True)
    load = os.getloadavg()[0]
    body = "\n".join(
        [
            f"## Differential privacy: DP-SGD query towers (wands-subset, fold {args.fold})",
            "",
            f"{len(groups)} training queries (the protected unit: one query with its judged "
            f"products), {len(valid)} validation and {len(test)} test queries, the whole "
            f"catalog; {args.epochs} epochs, batch {args.batch_size} (DP: Poisson, expected "
            f"{args.batch_size}), lr {args.lr:g}, the epoch kept by validation NDCG@10. DP rows: "
            f"clipping norm 1, delta 1e-5, RDP accountant, noise calibrated so that the "
            f"planned steps spend the target epsilon; top {layers} transformer layers of the "
            "query encoder train, embeddings and the catalog side frozen; each query is "
            "scored against its own judged negatives only (in-batch negatives would couple "
            "examples).",
            "",
            *lines,
            "",
            f"Load average at the end: {load:.1f} on 2 cores (shared with other work). "
            "Validation queries are not protected; the epsilon is that of the last step's "
            "model (the kept epoch's model spent at most that).",
        ]
    )
    print(body)
    if not args.no_write:
        write_section("privacy", invocation(), body)


if __name__ == "__main__":
    main()

"""Federated (FedAvg, Flower simulation) against central training of the MiniLM query tower.

wands-subset fold 0 as ``fold_setup.query_tower_fold`` builds it: one group per training query
(its judged positives weighted by gain, its judged-irrelevant products as negatives), the
frozen MiniLM catalog vectors. The training groups are dealt to ``--shops`` shops (a seeded
permutation cut into equal parts): each keeps its own queries. Rows, all scored by NDCG@10 on
the fold's validation and test queries over the whole catalog:

* zero-shot MiniLM;
* central: :func:`~shopaug.train.grouped.fit_query_groups` on every group for ``--rounds``
  epochs (one warm-up + linear-decay schedule), the last epoch's model;
* federated: :func:`~shopaug.train.federated.federated_fit`, ``--rounds`` rounds of FedAvg;
  each round every shop trains one pass over its own groups from the global weights (its own
  optimizer and schedule, restarted each round), the server averages the shops' weights
  weighted by their group counts. The same passes over the same groups as central.

Needs ``pip install 'shopaug[federated]'``.

Usage:
    nice -n 10 python benchmarks/federated.py --shops 3 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fold_setup import query_tower_fold
from results_file import invocation, write_section
from shopaug.models.query_tower import QueryTowerModel
from shopaug.train import TrainConfig
from shopaug.train.federated import federated_fit
from shopaug.train.grouped import fit_query_groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shops", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="Print only.")
    args = parser.parse_args()
    fold = query_tower_fold(0)
    order = np.random.default_rng(args.seed).permutation(len(fold.groups))
    shops = [[fold.groups[i] for i in part] for part in np.array_split(order, args.shops)]
    config = TrainConfig(
        batch_size=args.batch_size, lr=args.lr, temperature=0.05, seed=args.seed, num_threads=1
    )
    lines = [
        "| system | validation NDCG@10 | test NDCG@10 | passes over the groups | wall s |",
        "|---|---|---|---|---|",
        f"| zero-shot MiniLM | {fold.ndcg(fold.base, fold.valid):.3f} | "
        f"{fold.ndcg(fold.base, fold.test):.3f} | 0 | - |",
    ]
    print(lines[-1], flush=True)

    with tempfile.TemporaryDirectory() as folder:
        central = fold.tower()
        started = time.perf_counter()
        fit_query_groups(
            central,
            fold.groups,
            config.model_copy(update={"epochs": args.rounds, "num_threads": None}),
            run_dir=Path(folder) / "central",
            show_progress=False,
        )
        seconds = time.perf_counter() - started
    lines.append(
        f"| central (every shop's groups in one place) | {fold.ndcg(central, fold.valid):.3f} | "
        f"{fold.ndcg(central, fold.test):.3f} | {args.rounds} | {seconds:.0f} |"
    )
    print(lines[-1], flush=True)

    result = federated_fit(
        partial(QueryTowerModel.from_base, "minilm"),
        shops,
        config,
        rounds=args.rounds,
        cpus_per_shop=1,
    )
    federated = fold.tower()
    federated.load_state_dict(result.state)
    lines.append(
        f"| federated, FedAvg over {args.shops} shops | {fold.ndcg(federated, fold.valid):.3f} "
        f"| {fold.ndcg(federated, fold.test):.3f} | {args.rounds} | {result.seconds:.0f} |"
    )
    print(lines[-1], flush=True)
    sizes = ", ".join(str(len(shop)) for shop in shops)
    losses = "; ".join(
        f"round {r}: "
        + ", ".join(f"{row['loss']:.3f}" for row in result.rounds if row["round"] == r)
        for r in range(1, args.rounds + 1)
    )
    body = "\n".join(
        [
            "## Federated training: FedAvg over simulated shops (wands-subset, fold 0)",
            "",
            f"{len(fold.groups)} training queries dealt to {args.shops} shops ({sizes} queries; "
            f"seed {args.seed}); {len(fold.valid)} validation and {len(fold.test)} test "
            f"queries, the whole catalog. MiniLM query tower against the frozen catalog "
            f"vectors, batch {args.batch_size}, lr {args.lr:g}, temperature 0.05, in-batch "
            f"negatives; {args.rounds} passes over the groups in each trained row, the last "
            "model scored (no early stopping). Federated: Flower "
            "simulation (Ray backend), every shop every round, one pass each, FedAvg weighted "
            "by the shops' query counts; each shop's own schedule restarts every round.",
            "",
            *lines,
            "",
            f"Shops' last-step losses per round: {losses}. Load average at the end: "
            f"{os.getloadavg()[0]:.1f} on 2 cores shared with other work (wall times are "
            "not comparable across rows: the federated row runs two shops at a time in Ray "
            "workers of one thread each, and starts Ray and the model in each). One fold, "
            "one seed: differences of a few thousandths are within the noise of the test "
            "queries.",
        ]
    )
    print(body)
    if not args.no_write:
        write_section("federated", invocation(), body)


if __name__ == "__main__":
    main()

"""Query-side fine-tuning against the base model's cached catalog vectors, on one fold.

The frozen-catalog option of ``shopaug run`` (``tower: query``), measured outside the ablation:
a :class:`~shopaug.models.query_tower.QueryTowerModel` trained with
:func:`~shopaug.train.grouped.fit_query_groups` on the fold's judged positives (weighted by
gain) with the judged-irrelevant products as negatives, the epoch kept by validation NDCG@10,
then scored on the fold's test queries over the whole catalog.

Usage:
    python benchmarks/query_tower.py --fold 0 --epochs 10 --batch-size 8 --lr 1e-4
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fold_setup import query_tower_fold
from shopaug.models.query_tower import QueryTowerModel
from shopaug.train import TrainConfig
from shopaug.train.grouped import fit_query_groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--out", default="benchmarks/out/query-tower")
    args = parser.parse_args()
    fold = query_tower_fold(args.fold)
    valid, test = fold.valid, fold.test
    tower = fold.tower()
    zero_shot = fold.ndcg(fold.base, test), fold.ndcg(fold.base, valid)
    config = TrainConfig(
        batch_size=args.batch_size, epochs=args.epochs, lr=args.lr, temperature=0.05
    )
    started = time.perf_counter()
    result = fit_query_groups(
        tower,
        fold.groups,
        config,
        run_dir=args.out,
        validate=lambda m: fold.ndcg(m, valid),
        show_progress=False,
    )
    seconds = time.perf_counter() - started
    best = QueryTowerModel.load(result.model_dir, item_encoder=tower.item_encoder)
    print(f"fold {args.fold}: {len(fold.groups)} training queries, ", end="")
    print(f"{len(valid)} validation, {len(test)} test")
    print(f"zero-shot: test {zero_shot[0]:.4f}, validation {zero_shot[1]:.4f}")
    curve = ", ".join(f"{p['epoch']}: {p['val_ndcg@10']:.4f}" for p in result.curve)
    print(f"validation by epoch: {curve}")
    print(f"kept model (step {result.best_step}): test {fold.ndcg(best, test):.4f}; ", end="")
    print(f"last epoch: test {fold.ndcg(tower, test):.4f}")
    print(f"training {seconds:.0f} s, {result.steps} steps")


if __name__ == "__main__":
    main()

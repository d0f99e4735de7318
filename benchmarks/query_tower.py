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
import os
import time

import numpy as np

from shopaug.data import kfold_queries, load_dataset, validation_split
from shopaug.eval.metrics import evaluate_run
from shopaug.models.query_tower import QueryTowerModel
from shopaug.retrieval.ranking import CatalogRanker
from shopaug.train import TrainConfig
from shopaug.train.grouped import QueryGroup, fit_query_groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--out", default="benchmarks/out/query-tower")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    dataset = load_dataset("wands-subset")
    qrels = dataset.qrels()
    fold = kfold_queries([q.id for q in dataset.queries], n_folds=5, seed=0)[args.fold]
    train_ids, valid_ids = validation_split(fold.train, fraction=0.15, seed=0)

    def scored(ids: list[str] | tuple[str, ...]) -> list[str]:
        return [q for q in ids if any(g > 0 for g in qrels.get(q, {}).values())]

    valid, test = scored(valid_ids), scored(fold.test)
    tower = QueryTowerModel.from_base("minilm")
    ranker = CatalogRanker(
        tower.encode_items(dataset.product_texts()), [p.id for p in dataset.products]
    )

    def ndcg(model: QueryTowerModel, ids: list[str]) -> float:
        vectors = model.encode([dataset.query_by_id[q].text for q in ids])
        run = ranker.run(ids, vectors, depth=100)
        return float(
            np.mean(evaluate_run(run, qrels, metrics=["ndcg@10"], query_ids=ids)["ndcg@10"])
        )

    zero_shot = ndcg(tower, test), ndcg(tower, valid)
    groups = []
    for qid in train_ids:
        judged = qrels.get(qid, {})
        positives = sorted(p for p, g in judged.items() if g > 0)
        if positives:
            groups.append(
                QueryGroup(
                    dataset.query_by_id[qid].text,
                    tuple(dataset.product(p).render() for p in positives),
                    tuple(dataset.product(p).render() for p, g in judged.items() if g == 0),
                    tuple(float(judged[p]) for p in positives),
                )
            )
    config = TrainConfig(
        batch_size=args.batch_size, epochs=args.epochs, lr=args.lr, temperature=0.05
    )
    started = time.perf_counter()
    result = fit_query_groups(
        tower,
        groups,
        config,
        run_dir=args.out,
        validate=lambda m: ndcg(m, valid),
        show_progress=False,
    )
    seconds = time.perf_counter() - started
    best = QueryTowerModel.load(result.model_dir, item_encoder=tower.item_encoder)
    print(f"fold {args.fold}: {len(groups)} training queries, ", end="")
    print(f"{len(valid)} validation, {len(test)} test")
    print(f"zero-shot: test {zero_shot[0]:.4f}, validation {zero_shot[1]:.4f}")
    curve = ", ".join(f"{p['epoch']}: {p['val_ndcg@10']:.4f}" for p in result.curve)
    print(f"validation by epoch: {curve}")
    print(f"kept model (step {result.best_step}): test {ndcg(best, test):.4f}; ", end="")
    print(f"last epoch: test {ndcg(tower, test):.4f}")
    print(f"training {seconds:.0f} s, {result.steps} steps")


if __name__ == "__main__":
    main()

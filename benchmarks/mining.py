"""Mining quality (audit against human labels) and speed (against sentence-transformers).

Usage:
    python benchmarks/mining.py [--data wands-subset] [--label-fraction 0.25]

Quality: mine for the train queries of fold 0 while the miner sees only ``label_fraction`` of
each query's relevant labels (a shop with few labels); the audit then counts how many mined
"negatives" humans judged Exact or Partial (false negatives), per method, with and without the
margin filter. With every label visible the rate is 0 by construction (known positives are never
negatives), so that setting would measure nothing.

Speed: sentence-transformers' ``mine_hard_negatives`` and ours on the same (query, positive)
pairs, same MiniLM, same candidate window (range_max 100), 5 negatives, relative margin 0.05,
FAISS for both; each cold (nothing cached) and warm (embeddings cached: ST's ``cache_folder``,
our content-hash cache), measured in the same run, reported as queries per second and ratio.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from results_file import write_section
from shopaug.augment.audit import audit_samples
from shopaug.augment.mining import (
    MiningConfig,
    mine_hard_negatives,
    positive_rows,
    sample_baseline_negatives,
)
from shopaug.augment.pipeline import AugmentConfig, augment
from shopaug.data import kfold_queries, load_dataset
from shopaug.encoders.cache import CachedEncoder, EmbeddingCache
from shopaug.encoders.dense import SentenceTransformerEncoder
from shopaug.retrieval import DenseRetriever


def quality(data: str, label_fraction: float) -> list[str]:
    dataset = load_dataset(data)
    fold = kfold_queries([q.id for q in dataset.queries], n_folds=5, seed=0)[0]
    lines = [
        f"### Audit of mined negatives ({data}, fold 0 train queries, miner sees "
        f"{label_fraction:.0%} of the relevant labels)",
        "",
        "| method | margin | range | negatives | judged | false-negative rate | "
        "FNR ranks 1-10 | tail share | filtered |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    settings = [
        ("random", 0.0, 0),
        ("popular", 0.0, 0),
        ("bm25", 0.0, 0),
        ("bm25", 0.05, 0),
        ("dense", 0.0, 0),
        ("dense", 0.05, 0),
        ("dense", 0.1, 0),
        ("dense", 0.05, 10),
        ("hybrid", 0.05, 0),
    ]
    for method, margin, range_min in settings:
        config = MiningConfig(
            method=method,
            margin=margin,
            range_min=range_min,
            label_fraction=label_fraction,
            negatives_per_query=8,
            show_progress=False,
        )
        run = (
            mine_hard_negatives
            if method in ("bm25", "dense", "hybrid")
            else (sample_baseline_negatives)
        )
        frame, stats = run(dataset, list(fold.train), config)
        lines.append(
            _audit_line(frame, dataset, method, margin, range_min, stats.filtered_false_negatives)
        )
    frame, _ = augment(
        dataset,
        "near-miss",
        list(fold.train),
        config=AugmentConfig(mining={"label_fraction": label_fraction}),
        show_progress=False,
    )
    lines.append(_audit_line(frame, dataset, "near-miss", None, None, 0))
    lines += [
        "",
        "Near-miss variants that are rewritten texts have synthetic ids and no human label, so "
        "only its catalog products can be judged. Note: the near-miss generator avoids every "
        "judged positive of the query, not only the visible ones, so its rate is optimistic.",
    ]
    return lines


def _audit_line(frame, dataset, method, margin, range_min, filtered) -> str:
    report = audit_samples(frame, dataset).payload
    values = report["by_method"][method]
    band = report["by_rank_band"].get(method, {}).get("1-10", {})

    def fmt(value: object) -> str:
        return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    window = "-" if range_min is None else f"{range_min}-100"
    return (
        f"| {method} | {fmt(margin)} | {window} | {values['negatives']} | {values['judged']} | "
        f"**{fmt(values['false_negative_rate'])}** | {fmt(band.get('false_negative_rate'))} | "
        f"{fmt(values['tail_share'])} | {filtered} |"
    )


def speed(data: str) -> list[str]:
    import datasets as hf_datasets
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives as st_mine

    from shopaug.encoders.dense import minilm_path

    dataset = load_dataset(data)
    query_ids = [q.id for q in dataset.queries]
    config = MiningConfig(
        method="dense",
        negatives_per_query=5,
        range_max=100,
        margin=0.05,
        max_positives_per_query=1,
        show_progress=False,
    )
    positives = positive_rows(dataset, query_ids, config)
    pairs = hf_datasets.Dataset.from_dict(
        {
            "query": [dataset.query_by_id[q].text for q in positives],
            "positive": [dataset.product(ps[0][0]).render() for ps in positives.values()],
        }
    )
    corpus = dataset.product_texts()
    model = SentenceTransformer(str(minilm_path()), device="cpu")
    model.max_seq_length = 128
    encoder = SentenceTransformerEncoder()  # the same weights, loaded once outside the timing
    encoder.model  # noqa: B018 - load now, as sentence-transformers gets a loaded model
    n = len(positives)
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as st_cache, tempfile.TemporaryDirectory() as our_cache:
        memory_cache = EmbeddingCache(Path(our_cache) / "e.sqlite")
        for label in ("cold", "warm"):
            start = time.perf_counter()
            st_mine(
                pairs,
                model,
                corpus=corpus,
                range_max=100,
                relative_margin=0.05,
                num_negatives=5,
                sampling_strategy="top",
                batch_size=64,
                use_faiss=True,
                verbose=False,
                cache_folder=st_cache,
            )
            times[f"st-{label}"] = time.perf_counter() - start
            # A new cache object reads from disk (as a new process would); the first one also
            # keeps vectors in memory (as later stages of one `shopaug run` do).
            caches = (
                {"": memory_cache}
                if label == "cold"
                else {
                    "": EmbeddingCache(Path(our_cache) / "e.sqlite", memory=False),
                    "-memory": memory_cache,
                }
            )
            for suffix, cache in caches.items():
                start = time.perf_counter()
                retriever = DenseRetriever(
                    corpus, CachedEncoder(encoder, cache), show_progress=False
                )
                mine_hard_negatives(dataset, list(positives), config, retriever=retriever)
                times[f"ours-{label}{suffix}"] = time.perf_counter() - start
    lines = [
        f"### Mining speed ({data}: {n} queries, {len(corpus):,} products, MiniLM, FAISS)",
        "",
        "| cache | sentence-transformers q/s | shopaug q/s | ratio |",
        "|---|---|---|---|",
    ]
    for label, st_label in (("cold", "cold"), ("warm", "warm"), ("warm-memory", "warm")):
        st_qps, our_qps = n / times[f"st-{st_label}"], n / times[f"ours-{label}"]
        lines.append(f"| {label} | {st_qps:.1f} | {our_qps:.1f} | **{our_qps / st_qps:.2f}x** |")
    lines += [
        "",
        "Both get the same loaded MiniLM (max 128 tokens) and encode the catalog inside the "
        "timing. Cold: nothing cached; encoding dominates both. Warm: the second call, with "
        "sentence-transformers' `cache_folder` (.npy files) and our content-hash cache read "
        "from disk (SQLite); warm-memory: our cache object that already holds the vectors in "
        "memory, as later stages of one `shopaug run` see it.",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="wands-subset")
    parser.add_argument("--label-fraction", type=float, default=0.25)
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    lines = ["## Augmentation: negative quality and mining speed", ""]
    lines += quality(args.data, args.label_fraction)
    if not args.skip_speed:
        lines += ["", *speed(args.data)]
    print("\n".join(lines))
    command = "python benchmarks/" + " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
    write_section("mining", command, "\n".join(lines))


if __name__ == "__main__":
    main()

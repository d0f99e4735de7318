"""Mining quality (audit against human labels) and speed (against sentence-transformers).

Usage:
    python benchmarks/mining.py [--data wands-subset] [--label-fraction 0.25] [--repeats 7]
        [--skip-quality] [--skip-speed]

Quality: mine for the train queries of fold 0 while the miner sees only ``label_fraction`` of
each query's relevant labels (a shop with few labels); the audit then counts how many mined
"negatives" humans judged Exact or Partial (false negatives), per method, with and without the
margin filter. With every label visible the rate is 0 by construction (known positives are never
negatives), so that setting would measure nothing.

Speed (section ``mining-speed``): sentence-transformers' ``mine_hard_negatives`` and ours on
the same (query, positive) pairs, same MiniLM, same candidate window (range_max 100), 5
negatives, relative margin 0.05, FAISS for both: cold (nothing cached) once each, then warm
(embeddings cached: ST's ``cache_folder``, our content-hash cache) ``--repeats`` times in
alternating order, reported as queries per second and per-repeat ratios.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from results_file import invocation, write_section
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


def speed(data: str, repeats: int, cold: bool, cache_dir: Path | None) -> list[str]:
    import datasets as hf_datasets
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives as st_mine

    from shopaug.encoders.dense import minilm_path

    dataset = load_dataset(data)
    config = MiningConfig(
        method="dense",
        negatives_per_query=5,
        range_max=100,
        margin=0.05,
        max_positives_per_query=1,
        show_progress=False,
    )
    positives = positive_rows(dataset, [q.id for q in dataset.queries], config)
    # The same work on both sides: sentence-transformers knows only the (query, positive) pairs
    # it is given, so our miner sees a copy of the data whose only judgments are those pairs
    # (else it would also exclude every other judged product and search deeper for them).
    pairs = {(qid, products[0][0]) for qid, products in positives.items()}
    pair_data = replace(
        dataset,
        judgments=[j for j in dataset.judgments if (j.query_id, j.product_id) in pairs],
    )
    query_ids = list(positives)
    st_pairs = hf_datasets.Dataset.from_dict(
        {
            "query": [dataset.query_by_id[q].text for q in query_ids],
            "positive": [dataset.product(positives[q][0][0]).render() for q in query_ids],
        }
    )
    corpus = dataset.product_texts()
    model = SentenceTransformer(str(minilm_path()), device="cpu")
    model.max_seq_length = 128
    encoder = SentenceTransformerEncoder()  # the same weights, loaded once outside the timing
    encoder.model  # noqa: B018 - load now, as sentence-transformers gets a loaded model
    n = len(query_ids)
    times: dict[str, list[float]] = {}
    outputs: dict[str, object] = {}

    def timed(label: str, run) -> None:
        started = time.perf_counter()
        outputs[label] = run()
        times.setdefault(label, []).append(time.perf_counter() - started)

    def st(folder: Path):
        def run() -> object:
            return st_mine(
                st_pairs,
                model,
                corpus=corpus,
                range_max=100,
                relative_margin=0.05,
                num_negatives=5,
                sampling_strategy="top",
                batch_size=64,
                use_faiss=True,
                verbose=False,
                cache_folder=str(folder),
            )

        return run

    def ours(cache: EmbeddingCache, data_set=pair_data):
        def run() -> object:
            retriever = DenseRetriever(corpus, CachedEncoder(encoder, cache), show_progress=False)
            return mine_hard_negatives(data_set, query_ids, config, retriever=retriever)[0]

        return run

    if cold:  # nothing cached; encoding dominates: one run each, not repeated
        with tempfile.TemporaryDirectory() as fresh:
            timed("st-cold", st(Path(fresh) / "st"))
            timed("ours-cold", ours(EmbeddingCache(Path(fresh) / "e.sqlite")))
    with tempfile.TemporaryDirectory() as scratch:
        folder = cache_dir or Path(scratch)
        memory_cache = EmbeddingCache(folder / "e.sqlite")
        st(folder / "st")()  # fill both caches (untimed)
        ours(memory_cache)()

        def disk() -> object:
            # A new cache object reads from disk, as a new process would.
            return ours(EmbeddingCache(folder / "e.sqlite", memory=False))()

        sides = {
            "st": st(folder / "st"),
            "ours-warm": disk,
            "ours-warm-memory": ours(memory_cache),
            # every judged positive excluded (what `shopaug run` does): more exclusions, deeper
            "ours-all-judged": ours(memory_cache, dataset),
        }
        for repeat in range(repeats):  # alternating order
            for label in list(sides) if repeat % 2 == 0 else list(sides)[::-1]:
                timed(label, sides[label])
    agreement = _same_negatives(outputs["st"], outputs["ours-warm"], dataset)
    lines = [
        f"### Mining speed ({data}: {n} queries, {len(corpus):,} products, MiniLM, FAISS)",
        "",
        "| run | cache | sentence-transformers q/s | shopaug q/s | ratio (median, min-max) |",
        "|---|---|---|---|---|",
    ]
    if cold:
        ratio = times["st-cold"][0] / times["ours-cold"][0]
        lines.append(
            f"| same pairs | cold (1 run) | {n / times['st-cold'][0]:.1f} | "
            f"{n / times['ours-cold'][0]:.1f} | {ratio:.2f}x |"
        )
    st_times = np.array(times["st"])
    for label, run, cache in (
        ("ours-warm", "same pairs", "warm (disk)"),
        ("ours-warm-memory", "same pairs", "warm (memory)"),
        ("ours-all-judged", "every judged positive excluded", "warm (memory)"),
    ):
        ours_times = np.array(times[label])
        ratios = st_times / ours_times  # paired: the same repeat
        lines.append(
            f"| {run} | {cache} | {n / np.median(st_times):.0f} | "
            f"{n / np.median(ours_times):.0f} | **{np.median(ratios):.2f}x** "
            f"({ratios.min():.2f}-{ratios.max():.2f}) |"
        )
    lines += [
        "",
        f"Warm rows: {repeats} repeats in alternating order, q/s from the median time, the "
        "ratio is the median of the per-repeat ratios (the range in brackets). Both sides get "
        "the same loaded MiniLM (max 128 tokens), the same (query, positive) pairs (one per "
        "query), the same window (range_max 100), 5 negatives, relative margin 0.05 and an "
        "exact FAISS `IndexFlatIP`; each builds its index from cached vectors inside the "
        "timing. Warm: sentence-transformers' `cache_folder` (.npy files) against our "
        "embedding cache opened anew (disk: the catalog's .npy matrix, the queries from "
        "SQLite) or one that already holds the query vectors (memory, as later stages of one "
        "`shopaug run` see it). "
        f"Same negatives: {agreement:.1%} of the queries get the same 5 negative texts from "
        "both (sentence-transformers drops duplicate catalog texts, we keep each product). "
        "The last row excludes every judged positive of a query (what `shopaug run` does): "
        "more exclusions and a deeper search than sentence-transformers' one positive. Cold "
        "(with `--cold`): nothing cached, one run each; encoding dominates both, so it is no "
        "speed-up.",
        "",
        f"Threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')} for both; "
        f"1-minute load average at the end: {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores (other jobs shared the machine).",
    ]
    return lines


def _same_negatives(st_output, frame, dataset) -> float:
    """Share of queries whose negative texts are the same in both outputs."""
    theirs: dict[str, set[str]] = {}
    for row in st_output:
        theirs.setdefault(row["query"], set()).add(row["negative"])
    ours: dict[str, set[str]] = {}
    negatives = frame[frame["kind"] == "negative"]
    for query, product_id in zip(negatives["query"], negatives["product_id"]):
        ours.setdefault(query, set()).add(dataset.product(product_id).render())
    return float(np.mean([theirs.get(query, set()) == texts for query, texts in ours.items()]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="wands-subset")
    parser.add_argument("--label-fraction", type=float, default=0.25)
    parser.add_argument("--repeats", type=int, default=7, help="warm speed repeats")
    parser.add_argument("--cold", action="store_true", help="also time one cold run each")
    parser.add_argument("--cache-dir", type=Path, help="warm caches (default: a temporary one)")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    command = invocation()
    if not args.skip_quality:
        lines = ["## Augmentation: negative quality", ""]
        lines += quality(args.data, args.label_fraction)
        print("\n".join(lines))
        write_section("mining", command, "\n".join(lines))
    if not args.skip_speed:
        lines = [
            "## Augmentation: mining speed",
            "",
            *speed(args.data, args.repeats, args.cold, args.cache_dir),
        ]
        print("\n".join(lines))
        write_section("mining-speed", command, "\n".join(lines))


if __name__ == "__main__":
    main()

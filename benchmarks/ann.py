"""Approximate nearest neighbours against exact search: recall@10, build time, memory, latency.

Usage:
    python benchmarks/ann.py [--data-dir ../shared/data] [--synthetic 1000000]
        [--queries 1000] [--threads 1] [--no-results]

Two catalogs:

* **real**: the `wands-subset` products encoded by all-MiniLM-L6-v2 (name + class, through the
  embedding cache), searched with the WANDS queries encoded by the same model;
* **synthetic**: ``--synthetic`` unit vectors of 384 dimensions drawn from a mixture of 10,000
  Gaussian clusters (seeded), queries drawn near random catalog points: what a catalog of a
  million products looks like to an index (the figures are the index's, not relevance).

For each catalog, every index (:func:`shopaug.index.vector.build_index`: exact ``IndexFlatIP``,
HNSW, IVF-PQ, IVF-PQ with exact re-scoring of its 4k best) is built once; recall@10 is the share
of the exact top 10 found, latency is one query at a time (what a request does), p50/p99 over
``--queries`` queries, memory the serialised index. FAISS runs on ``--threads`` threads (1: what
one server core gives a request). Writes the ``ann`` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from results_file import invocation, write_section
from shopaug.index.vector import AnnConfig, build_index

ROOT = Path(__file__).resolve().parent.parent
DIM = 384


def real_catalog(data_dir: Path, cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(items, queries) of wands-subset under MiniLM, through the embedding cache."""
    from shopaug.data import load_dataset
    from shopaug.encoders.dense import SentenceTransformerEncoder
    from shopaug.retrieval.catalog import encode_catalog

    dataset = load_dataset("wands-subset", data_dir=data_dir)
    encoder = SentenceTransformerEncoder("minilm")
    items = encode_catalog(encoder, dataset.product_texts(("title", "category")), cache_dir)
    queries = encode_catalog(encoder, sorted({q.text for q in dataset.queries}), cache_dir)
    return items, queries


def synthetic_catalog(size: int, n_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``size`` clustered unit vectors and ``n_queries`` queries near catalog points."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((10_000, DIM), dtype=np.float32)
    items = np.empty((size, DIM), dtype=np.float32)
    for start in range(0, size, 100_000):  # in chunks: the temporary stays small
        stop = min(size, start + 100_000)
        chunk = centres[rng.integers(len(centres), size=stop - start)]
        chunk += 0.7 * rng.standard_normal(chunk.shape, dtype=np.float32)
        items[start:stop] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    queries = items[rng.integers(size, size=n_queries)]
    queries = queries + 0.3 * rng.standard_normal(queries.shape, dtype=np.float32) / np.sqrt(DIM)
    return items, (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)


def indexes(size: int) -> dict[str, tuple[str, AnnConfig | None]]:
    nlist = int(min(4 * np.sqrt(size), size // 39, 4096))
    ivf = AnnConfig(nlist=max(nlist, 1), nprobe=16, pq_m=48, train_size=min(size, 65_536))
    return {
        "exact (IndexFlatIP)": ("exact", None),
        "HNSW (M=32, efSearch=64)": ("hnsw", AnnConfig()),
        f"IVF-PQ (nlist={nlist}, nprobe=16, 48 B)": ("ivf-pq", ivf),
        "IVF-PQ + exact re-score (k x 4)": ("ivf-pq", AnnConfig(**{**ivf.__dict__, "refine": 4})),
    }


def measure(
    items: np.ndarray, queries: np.ndarray, threads: int, results: list[dict], on_row
) -> list[dict]:
    """Appends one row per index to ``results`` and calls ``on_row()`` after each (the section
    is written as the run goes, so a run cut short keeps the rows it measured)."""
    import faiss

    exact_rows = None
    for name, (kind, config) in indexes(len(items)).items():
        faiss.omp_set_num_threads(os.cpu_count() or 1)  # build and batched search: every core
        started = time.perf_counter()
        index = build_index(items, kind, config)  # type: ignore[arg-type]
        build_s = time.perf_counter() - started
        rows, _ = index.search(queries, 10)  # batched: the recall
        faiss.omp_set_num_threads(threads)  # one request: ``threads`` threads
        if exact_rows is None:
            exact_rows = rows
        recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, exact_rows)]))
        latencies = []
        for query in queries:
            started = time.perf_counter()
            index.search(query, 10)
            latencies.append((time.perf_counter() - started) * 1000.0)
        memory = getattr(index, "memory_bytes", items.nbytes)  # exact: the vectors themselves
        results.append(
            {
                "index": name,
                "recall@10": recall,
                "build_s": build_s,
                "memory_mb": memory / 2**20,
                "p50_ms": float(np.percentile(latencies, 50)),
                "p99_ms": float(np.percentile(latencies, 99)),
            }
        )
        print(json.dumps({"n": len(items), **results[-1]}), flush=True)
        on_row()
        del index
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    default_data = os.environ.get("SHOPAUG_DATA_DIR") or str(ROOT.parent / "shared" / "data")
    parser.add_argument("--data-dir", type=Path, default=Path(default_data))
    parser.add_argument("--synthetic", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "ann")
    parser.add_argument("--cache-dir", type=Path, help="embedding cache (default: OUT/cache)")
    parser.add_argument("--no-results", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    catalogs: dict[str, list[dict]] = {}

    def report(complete: bool) -> None:
        (args.out / "ann.json").write_text(json.dumps(catalogs, indent=1), "utf-8")
        lines = section(catalogs, args.threads, complete)
        if complete:
            print("\n".join(lines))
        if not args.no_results:
            write_section("ann", invocation(), "\n".join(lines))

    items, queries = real_catalog(args.data_dir, args.cache_dir or args.out / "cache")
    rows = catalogs[f"wands-subset, MiniLM ({len(items):,} x {DIM})"] = []
    measure(items, queries, args.threads, rows, on_row=lambda: report(False))
    items, queries = synthetic_catalog(args.synthetic, args.queries, args.seed)
    rows = catalogs[f"synthetic ({len(items):,} x {DIM}, clustered)"] = []
    measure(items, queries, args.threads, rows, on_row=lambda: report(False))
    report(True)


def section(catalogs: dict[str, list[dict]], threads: int, complete: bool) -> list[str]:
    lines = [
        "## Approximate nearest neighbours (index/vector.py)",
        "",
        "Recall@10 against exact search, build time, serialised size and single-query latency "
        f"(p50/p99 over the queries, one at a time, FAISS on {threads} thread(s); builds "
        "use every core). The service switches to an ANN index from `--ann-threshold` "
        "products (default 200,000; `--ann-kind hnsw` or `ivf-pq`); filtered searches stay "
        "exact.",
        "",
        "| catalog | index | recall@10 | build s | memory MB | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for catalog, rows in catalogs.items():
        lines += [
            f"| {catalog} | {r['index']} | {r['recall@10']:.3f} | {r['build_s']:.1f} | "
            f"{r['memory_mb']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |"
            for r in rows
        ]
    if not complete:
        lines += ["", "**Incomplete run**: the rows above are those measured when it stopped."]
    lines += ["", f"1-minute load average when written: {os.getloadavg()[0]:.1f}."]
    return lines


if __name__ == "__main__":
    main()

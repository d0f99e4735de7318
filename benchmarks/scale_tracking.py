"""What MLflow tracking and the Ray engine cost: ratios measured in one run, repeated.

``--part tracking``: a tiny training (the hashing model on demo training groups, ``log_every``
1) with tracking ``none``, ``tensorboard`` and ``mlflow``, in alternating order; the time to
open the MLflow store (SQLite schema) is reported apart from the training time.

``--part engine``: ``shopaug run`` of a small demo config (one fold, one dense-mined row, one
epoch) with ``--engine local`` and ``--engine ray``, alternating, each with a cold embedding
cache, so both really encode; wall time of the whole command.

``--part train``: the MiniLM bi-encoder fine-tuned on demo training groups by ``fit`` in this
process and by ``fit_on_ray`` (Ray Train, a local instance) with 1 and 2 workers of one CPU,
alternating; wall time of the call (Ray: worker start-up, the model shipped to each worker,
the run folder copied back) and the loop's own time.

Usage:
    python benchmarks/scale_tracking.py --part tracking --repeats 3
    python benchmarks/scale_tracking.py --part engine --repeats 2
    python benchmarks/scale_tracking.py --part train --repeats 2 --steps 20
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from results_file import invocation, write_section

ENGINE_CONFIG = {
    "name": "engine-bench",
    "data": "demo",
    "folds": 2,
    "train_folds": 1,
    "validation_fraction": 0.25,
    "train": {"batch_size": 16, "epochs": 1, "lr": 1.0e-4},
    "augment": {"mining": {"max_positives_per_query": 2, "negatives_per_query": 3}},
    "ablation": [{"name": "dense hard", "methods": ["dense"]}],
    "fusion": {"enabled": False},
    "reranker": {"enabled": False},
    "show_progress": False,
}


def _demo_examples():
    from shopaug.data import load_dataset
    from shopaug.train import TrainingExample

    dataset = load_dataset("demo")
    positives = dataset.positives(query_ids=[q.id for q in dataset.queries])
    texts = dataset.product_texts(("title",))
    index = dataset.product_index
    examples = []
    for query in dataset.queries:
        for k, product in enumerate(sorted(positives.get(query.id, ()))[:4]):
            row = index[product]
            negatives = [texts[(row + 7 * (k + 1)) % len(texts)], texts[(row + 13) % len(texts)]]
            examples.append(TrainingExample(query.text, texts[row], negatives))
    return examples


def tracking_part(repeats: int, epochs: int) -> str:
    from shopaug.models.hashing_model import HashingProjection
    from shopaug.train import TrainConfig, fit
    from shopaug.train.config import TrackingConfig
    from shopaug.train.tracking import tracking_session

    examples = _demo_examples()
    config = TrainConfig(batch_size=16, epochs=epochs, lr=1e-3, log_every=1, seed=0)
    backends = ["none", "tensorboard", "mlflow"]
    train_s: dict[str, list[float]] = {b: [] for b in backends}
    open_s: list[float] = []
    steps = 0
    for repeat in range(repeats):
        order = backends if repeat % 2 == 0 else backends[::-1]
        for backend in order:
            with tempfile.TemporaryDirectory() as folder:
                start = time.perf_counter()
                with tracking_session(
                    TrackingConfig(backend=backend), Path(folder), run_name="bench", params={}
                ):
                    opened = time.perf_counter()
                    result = fit(
                        HashingProjection(256),
                        examples,
                        config,
                        run_dir=Path(folder) / "train",
                        show_progress=False,
                    )
                    trained = time.perf_counter()
                if backend == "mlflow":
                    open_s.append(opened - start)
                train_s[backend].append(trained - opened)
                steps = result.steps
    base = statistics.median(train_s["none"])
    lines = [
        f"Tiny training: hashing model (256-d), {len(examples)} demo groups, {steps} steps, "
        f"every step logged; {repeats} repeats, alternating order; median seconds (spread).",
        "",
        "| tracking | training s | per step ms | ratio to none |",
        "|---|---|---|---|",
    ]
    for backend in backends:
        median = statistics.median(train_s[backend])
        lines.append(
            f"| {backend} | {median_spread(train_s[backend], 2)} | {1000 * median / steps:.1f} | "
            f"{median / base:.2f}x |"
        )
    lines += [
        "",
        f"Opening the MLflow SQLite store (schema creation, once per run directory): median "
        f"{statistics.median(open_s):.1f} s ({min(open_s):.1f}-{max(open_s):.1f}). Metrics go "
        "through MLflow's asynchronous queue; the time above includes waiting for it to drain "
        "at the end of the training. The cost is per logged step: a step of this tiny model "
        "(the none row) is the worst case; a real model's step is longer by its forward and "
        "backward pass. On a shared two-core machine the spread between repeats can exceed "
        "the difference between backends; read the ratios with the spreads.",
    ]
    return "\n".join(lines)


def engine_part(repeats: int) -> str:
    wall: dict[str, list[float]] = {"local": [], "ray": []}
    samples: dict[str, dict[str, bytes]] = {}
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "bench.yaml"
        config.write_text(yaml.safe_dump(ENGINE_CONFIG))
        for repeat in range(repeats):
            order = ["local", "ray"] if repeat % 2 == 0 else ["ray", "local"]
            for engine in order:
                out = Path(folder) / f"{engine}-{repeat}"
                cache = Path(folder) / f"cache-{engine}-{repeat}"
                env = {**os.environ, "SHOPAUG_CACHE_DIR": str(cache)}
                command = [sys.executable, "-c", "from shopaug.cli import app; app()"]
                command += ["run", str(config), "--out", str(out), "--engine", engine]
                start = time.perf_counter()
                subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
                wall[engine].append(time.perf_counter() - start)
                samples[engine] = {
                    path.name: path.read_bytes()
                    for path in sorted((out / "cache" / "samples").glob("*.parquet"))
                }
            if samples["local"] != samples["ray"] or not samples["local"]:
                raise SystemExit("the engines made different samples")
    ratios = [r / loc for r, loc in zip(wall["ray"], wall["local"])]
    lines = [
        "`shopaug run` on the demo data (one fold, one dense-mined row, one epoch of MiniLM "
        f"query-tower training, cold embedding cache), {repeats} repeats alternating; "
        "wall seconds of the whole command. Both engines wrote byte-identical samples (the "
        "row's cached Parquet files).",
        "",
        "| engine | wall s per repeat | median |",
        "|---|---|---|",
    ]
    for engine in ("local", "ray"):
        values = ", ".join(f"{v:.0f}" for v in wall[engine])
        lines.append(f"| {engine} | {values} | {statistics.median(wall[engine]):.0f} |")
    lines += [
        "",
        f"Ratio ray / local per repeat: {', '.join(f'{r:.2f}' for r in ratios)}. On two "
        "cores Ray only adds work (its processes, worker start-up, torch and the model loaded "
        "again in each worker); whether it pays off with shards on other machines is not "
        "measured here (no cluster).",
    ]
    return "\n".join(lines)


def train_part(repeats: int, steps: int) -> str:
    import ray

    from shopaug.models import BiEncoder
    from shopaug.scale.training import fit_on_ray
    from shopaug.train import TrainConfig, fit

    examples = _demo_examples()
    config = TrainConfig(batch_size=16, max_steps=steps, epochs=10, lr=5e-5, seed=0)
    setups = ["local", "ray-1", "ray-2"]
    wall: dict[str, list[float]] = {name: [] for name in setups}
    loop: dict[str, list[float]] = {name: [] for name in setups}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for repeat in range(repeats):
            for name in setups if repeat % 2 == 0 else setups[::-1]:
                with tempfile.TemporaryDirectory() as folder:
                    model = BiEncoder(None)
                    start = time.perf_counter()
                    if name == "local":
                        result = fit(model, examples, config, run_dir=folder, show_progress=False)
                    else:
                        workers = int(name.split("-")[1])
                        result = fit_on_ray(
                            model, examples, config, run_dir=folder, workers=workers
                        )
                    wall[name].append(time.perf_counter() - start)
                    loop[name].append(result.elapsed_seconds)
    finally:
        ray.shutdown()
    base = statistics.median(wall["local"])
    lines = [
        f"MiniLM bi-encoder, {len(examples)} demo training groups, {steps} steps of 16 groups "
        f"(Ray: 8 per worker with 2 workers), {repeats} repeats alternating; median seconds "
        "(spread). Local: `fit` in this process with torch on both cores; Ray: `fit_on_ray`, "
        "a local Ray instance of 2 CPUs started once beforehand, workers of 1 CPU (1 torch "
        "thread) each. Wall: the whole call; loop: `fit`'s own time (rank 0).",
        "",
        "| training | wall s | loop s | wall ratio to local |",
        "|---|---|---|---|",
    ]
    for name in setups:
        median = statistics.median(wall[name])
        lines.append(
            f"| {name} | {median_spread(wall[name], 1)} | {statistics.median(loop[name]):.1f} | "
            f"{median / base:.2f}x |"
        )
    two_over_one = statistics.median(loop["ray-2"]) / statistics.median(loop["ray-1"])
    lines += [
        "",
        f"Loop time, 2 workers over 1: {two_over_one:.2f}x. Ray's wall time adds what the "
        "loop does not see: worker processes starting, torch and the pickled model loaded in "
        "each, the process group, the run folder copied back. Load average at the end: "
        f"{os.getloadavg()[0]:.1f} on 2 cores shared with other jobs. On a cluster each "
        "worker has its own cores; not measured here (no cluster).",
    ]
    return "\n".join(lines)


def median_spread(values: list[float], digits: int) -> str:
    """``median (min-max)`` of repeated timings."""
    low, high = min(values), max(values)
    return f"{statistics.median(values):.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("tracking", "engine", "train"), required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="Training steps (--part train).")
    parser.add_argument("--no-results", action="store_true", help="Print only.")
    args = parser.parse_args()
    parts = {
        "tracking": lambda: tracking_part(args.repeats, args.epochs),
        "engine": lambda: engine_part(args.repeats),
        "train": lambda: train_part(args.repeats, args.steps),
    }
    body = parts[args.part]()
    print(body)
    if not args.no_results:
        command = invocation()
        title = {
            "tracking": "MLflow tracking overhead",
            "engine": "Engine: local vs Ray",
            "train": "Engine: training local vs Ray Train",
        }[args.part]
        write_section(f"scale-{args.part}", command, f"## {title}\n\n{body}")


if __name__ == "__main__":
    main()

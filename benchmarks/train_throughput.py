"""Training throughput: shopaug's ``fit`` against sentence-transformers' own trainer.

Usage:
    python benchmarks/train_throughput.py [--steps 10] [--repeats 3] [--data wands-subset]

Both train all-MiniLM-L6-v2 on the same (query, positive, negative) triples of wands-subset,
built from the human judgments: each Exact product of a query is a positive, paired with one of
the query's Irrelevant products (seeded draw); texts are ``Product.render()`` (name + class).
Same batch (32 triples), same learning rate, warm-up ratio, weight decay and gradient clipping,
same loss (InfoNCE over the batch's positives and negatives at temperature 0.05, which is
``MultipleNegativesRankingLoss`` at scale 20), same maximum sequence length (sized from the
data: the smallest length that keeps 99 % of the texts whole, capped at 128), same torch threads,
one process. Each repeat runs both, in alternating order, on a freshly loaded model.

Reported per framework: examples per second over the whole training call (``fit`` with its
up-front tokenisation, final model and checkpoint writes; ``trainer.train()`` with its
set-up, nothing saved) and in steady state (steps 2 to N-1, so neither the first step nor the
final writes count). The ratio is shopaug / sentence-transformers per repeat, median and range.
With ``--query-tower`` (default on when ``shopaug.models.query_tower`` exists) shopaug's
frozen-catalog query tower is timed too; its item vectors are computed (and cached) before the
timing, as a run that reuses the catalog cache sees them.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from results_file import invocation, write_section
from shopaug.data import load_dataset
from shopaug.models.tokens import TokenCache, length_covering
from shopaug.train import TrainConfig, TrainingExample, fit
from shopaug.train.loop import set_torch_threads

BATCH_SIZE = 32
LR = 5e-5
WARMUP_RATIO = 0.1
WEIGHT_DECAY = 0.01
TEMPERATURE = 0.05  # MultipleNegativesRankingLoss scale 20
MODEL_MAX_LENGTH = 128  # BiEncoder's default


@dataclass(frozen=True)
class Timing:
    """One training call: its wall time and the time at the end of each step."""

    wall_seconds: float
    step_ends: list[float]  # seconds since the call started

    def examples_per_second(self, batch_size: int) -> float:
        return batch_size * len(self.step_ends) / self.wall_seconds

    def steady_examples_per_second(self, batch_size: int) -> float:
        """Steps 2 to N-1: neither the first step nor the last one (and its writes)."""
        ends = self.step_ends
        if len(ends) < 3:
            return self.examples_per_second(batch_size)
        return batch_size * (len(ends) - 2) / (ends[-2] - ends[0])


def judged_triples(data: str, seed: int) -> list[TrainingExample]:
    """(query, Exact product, one Irrelevant product of the same query), shuffled by ``seed``."""
    dataset = load_dataset(data)
    products = {product.id: product.render() for product in dataset.products}
    queries = {query.id: query.text for query in dataset.queries}
    exact: dict[str, list[str]] = {}
    irrelevant: dict[str, list[str]] = {}
    for judgment in dataset.judgments:
        if judgment.label == "Exact":
            exact.setdefault(judgment.query_id, []).append(judgment.product_id)
        elif judgment.label == "Irrelevant":
            irrelevant.setdefault(judgment.query_id, []).append(judgment.product_id)
    rng = np.random.default_rng(seed)
    triples = [
        TrainingExample(
            query=queries[query_id],
            positive=products[positive],
            negatives=[products[irrelevant[query_id][rng.integers(len(irrelevant[query_id]))]]],
        )
        for query_id in sorted(exact)
        if irrelevant.get(query_id)
        for positive in exact[query_id]
    ]
    return [triples[i] for i in rng.permutation(len(triples))]


def sized_length(examples: list[TrainingExample]) -> int:
    """The data-sized sequence length shopaug's ``fit`` picks by default (99 % coverage)."""
    from transformers import AutoTokenizer

    from shopaug.encoders.dense import minilm_path

    tokens = TokenCache(
        AutoTokenizer.from_pretrained(str(minilm_path())), max_length=MODEL_MAX_LENGTH
    )
    texts = list({t for e in examples for t in (e.query, e.positive, *e.negatives)})
    return length_covering(tokens.counts(texts), coverage=0.99, cap=MODEL_MAX_LENGTH)


def run_sentence_transformers(
    examples: list[TrainingExample], steps: int, max_length: int, workdir: Path
) -> Timing:
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import TrainerCallback

    from shopaug.encoders.dense import minilm_path

    model = SentenceTransformer(str(minilm_path()), device="cpu")
    model.max_seq_length = max_length
    train = Dataset.from_dict(
        {
            "anchor": [e.query for e in examples],
            "positive": [e.positive for e in examples],
            "negative": [e.negatives[0] for e in examples],
        }
    )
    step_ends: list[float] = []
    started = 0.0

    class StepClock(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            step_ends.append(time.perf_counter() - started)

    arguments = SentenceTransformerTrainingArguments(
        output_dir=str(workdir),
        per_device_train_batch_size=BATCH_SIZE,
        learning_rate=LR,
        warmup_ratio=WARMUP_RATIO,
        weight_decay=WEIGHT_DECAY,
        max_grad_norm=1.0,
        max_steps=steps,
        save_strategy="no",
        report_to="none",
        logging_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=arguments,
        train_dataset=train,
        loss=MultipleNegativesRankingLoss(model, scale=1 / TEMPERATURE),
        callbacks=[StepClock()],
    )
    started = time.perf_counter()
    trainer.train()
    return Timing(time.perf_counter() - started, step_ends)


def run_shopaug(
    model: Any, examples: list[TrainingExample], steps: int, max_length: int, workdir: Path
) -> Timing:
    config = TrainConfig(
        lr=LR,
        weight_decay=WEIGHT_DECAY,
        warmup_ratio=WARMUP_RATIO,
        grad_clip=1.0,
        batch_size=BATCH_SIZE,
        max_steps=steps,
        temperature=TEMPERATURE,
        loss="infonce",
        in_batch_negatives=True,
        max_seq_length=max_length,
        length_buckets=True,
    )
    step_ends: list[float] = []
    started = time.perf_counter()
    fit(
        model,
        examples,
        config,
        run_dir=workdir,
        resume=False,
        metrics_logger=None,
        on_step=lambda info: step_ends.append(time.perf_counter() - started),
        show_progress=False,
    )
    return Timing(time.perf_counter() - started, step_ends)


def new_bi_encoder() -> Any:
    from shopaug.models import BiEncoder

    return BiEncoder(max_seq_length=MODEL_MAX_LENGTH)


def query_tower_factory(examples: list[TrainingExample], cache_dir: Path) -> Callable[[], Any]:
    """A maker of fresh query towers whose item vectors are already in the cache."""
    from shopaug.models.query_tower import QueryTowerModel, cached_item_encoder

    items = cached_item_encoder("minilm", cache_dir)
    items.encode(sorted({t for e in examples for t in (e.positive, *e.negatives)}))
    return lambda: QueryTowerModel.from_base("minilm", item_encoder=items)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def nproc() -> str:
    try:
        return subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return str(os.cpu_count())


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="wands-subset")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--query-tower",
        action=argparse.BooleanOptionalAction,
        default=importlib.util.find_spec("shopaug.models.query_tower") is not None,
        help="also time shopaug's frozen-catalog query tower",
    )
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    args = parser.parse_args()
    if args.steps < 3:
        parser.error("--steps must be at least 3 (steady state leaves out the first and last)")
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    threads = set_torch_threads()
    triples = judged_triples(args.data, args.seed)
    examples = triples[: args.steps * BATCH_SIZE]
    if len(examples) < args.steps * BATCH_SIZE:
        parser.error(f"{args.data} has {len(triples)} triples; lower --steps")
    max_length = sized_length(examples)
    print(
        f"{len(triples)} judged triples, {len(examples)} used; max length {max_length} tokens; "
        f"{threads} torch threads",
        flush=True,
    )

    runs: dict[str, list[Timing]] = {"sentence-transformers": [], "shopaug": []}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        contenders: dict[str, Callable[[Path], Timing]] = {
            "sentence-transformers": lambda d: run_sentence_transformers(
                examples, args.steps, max_length, d
            ),
            "shopaug": lambda d: run_shopaug(new_bi_encoder(), examples, args.steps, max_length, d),
        }
        if args.query_tower:
            try:
                make_tower = query_tower_factory(examples, root / "cache")
            except (ImportError, AttributeError, TypeError) as error:
                print(f"query tower left out: {error}", flush=True)
            else:
                runs["shopaug query tower"] = []
                contenders["shopaug query tower"] = lambda d: run_shopaug(
                    make_tower(), examples, args.steps, max_length, d
                )
        names = list(contenders)
        for repeat in range(args.repeats):
            order = names if repeat % 2 == 0 else names[::-1]
            for name in order:
                timing = contenders[name](root / f"{name}-{repeat}".replace(" ", "-"))
                runs[name].append(timing)
                print(
                    f"repeat {repeat}: {name}: {timing.examples_per_second(BATCH_SIZE):.1f} ex/s "
                    f"whole call, {timing.steady_examples_per_second(BATCH_SIZE):.1f} steady",
                    flush=True,
                )

    baseline = runs["sentence-transformers"]
    lines = [
        "## Training throughput (bi-encoder fine-tuning on CPU)",
        "",
        f"{args.data}: {len(examples)} (query, Exact, Irrelevant) triples from the judgments, "
        f"name + class text, all-MiniLM-L6-v2, batch {BATCH_SIZE}, lr {LR}, {args.steps} steps, "
        f"max sequence length {max_length} tokens (sized from the data: 99 % of texts whole), "
        f"{threads} torch threads, {args.repeats} repeats in alternating order, one process. "
        "Examples per second, median (min-max) over repeats; ratio = shopaug / "
        "sentence-transformers per repeat.",
        "",
        "| trainer | ex/s whole call | ex/s steady | ratio whole call | ratio steady |",
        "|---|---|---|---|---|",
    ]
    for name, timings in runs.items():
        whole = [t.examples_per_second(BATCH_SIZE) for t in timings]
        steady = [t.steady_examples_per_second(BATCH_SIZE) for t in timings]
        ratio_whole = [a / b.examples_per_second(BATCH_SIZE) for a, b in zip(whole, baseline)]
        ratio_steady = [
            a / b.steady_examples_per_second(BATCH_SIZE) for a, b in zip(steady, baseline)
        ]
        lines.append(
            f"| {name} | {spread(whole)} | {spread(steady)} | **{spread(ratio_whole)}** | "
            f"{spread(ratio_steady)} |"
        )
    lines += [
        "",
        "sentence-transformers: `SentenceTransformerTrainer` with `MultipleNegativesRankingLoss` "
        "(scale 20), columns (anchor, positive, negative), nothing saved. shopaug: `fit` with "
        "`TrainConfig(max_seq_length=<sized>, length_buckets=True)`, loss `infonce` at "
        "temperature 0.05 with in-batch negatives (the same objective), token cache, per-batch "
        "padding; its whole call includes tokenising every text once and writing the final "
        "model and checkpoint. Steady state leaves out the first and the last step. "
        "The query tower trains only the query encoder against the frozen base model's "
        "cached item vectors (computed before the timing).",
        "",
        f"Machine: `nproc` {nproc()}, {cpu_model()}.",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("train-throughput", invocation(), text)


if __name__ == "__main__":
    main()

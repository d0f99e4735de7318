"""LoRA adapters against full fine-tuning at the same budget (wands-subset, one fold).

Bi-encoder: the experiment's query-side training (``tower: query``,
:func:`~shopaug.train.grouped.fit_query_groups`) on the fold of ``fold_setup.py``: the query
encoder trains (every weight but the word embeddings, or LoRA adapters of rank r on the
attention's query and value layers, ``train.lora``) against the frozen MiniLM catalog vectors,
the same groups, epochs, batch size and seed for every variant; the epoch kept by validation
NDCG@10. Each variant tries each learning rate of its grid, and the one with the best
validation NDCG@10 is reported (test NDCG@10 is read for every run but never used to choose).

Cross-encoder reranker (``reranker.lora``): :class:`~shopaug.models.CrossEncoderReranker`
trained with :func:`shopaug.train.fit` as ``experiment/rerank.py`` does (InfoNCE over a
positive and its judged-irrelevant negatives, temperature 1, no in-batch negatives) on a
smaller budget, reranking the zero-shot MiniLM top ``--rerank-top-k`` of the validation and
test queries.

Every run is a subprocess, so its peak memory is its own: the peak resident set size during
training (``VmHWM`` reset before training through ``/proc/self/clear_refs``) minus the
resident size when training starts, and the whole process's peak.

Usage:
    nice -n 10 python benchmarks/lora.py --epochs 2 --batch-size 32
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fold_setup import QueryTowerFold, query_tower_fold
from results_file import invocation, write_section


def _status_kb(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    return int(match.group(1)) if match else 0


def _reset_peak() -> bool:
    """Reset this process's peak RSS (Linux >= 4.0); False where it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _lora(rank: int) -> Any:
    from shopaug.models.lora import LoraSettings

    return LoraSettings(r=rank, seed=0) if rank else None


def _train_bi_encoder(fold: QueryTowerFold, spec: dict[str, Any], out: Path) -> dict[str, Any]:
    from shopaug.models.query_tower import QueryTowerModel
    from shopaug.train import TrainConfig
    from shopaug.train.grouped import fit_query_groups

    tower = fold.tower(lora=_lora(spec["rank"]))
    encoder = tower.query_model
    config = TrainConfig(
        batch_size=spec["batch_size"],
        epochs=spec["epochs"],
        lr=spec["lr"],
        temperature=0.05,
        seed=0,
        lora={"r": spec["rank"]} if spec["rank"] else None,
    )
    meter = PeakMeter()
    save = tower.save

    def saved(directory: Any) -> None:
        save(directory)
        meter.close("other")

    def validate(model: Any) -> float:
        meter.close("steps")  # the epoch's steps end where validation starts
        metric = fold.ndcg(model, fold.valid)
        meter.close("other")
        return metric

    tower.save = saved  # type: ignore[method-assign]
    result = fit_query_groups(
        tower, fold.groups, config, run_dir=out, validate=validate, show_progress=False
    )
    meter.close("other")
    figures = meter.figures()
    best = QueryTowerModel.load(result.model_dir, item_encoder=fold.base.item_encoder)
    best_epoch = next(p["epoch"] for p in result.curve if p["step"] == result.best_step)
    return {
        **figures,
        "valid": result.best_metric,
        "best_epoch": best_epoch,
        "test": fold.ndcg(best, fold.test),
        "steps": result.steps,
        "trainable": sum(p.numel() for p in encoder.parameters() if p.requires_grad),
        "parameters": sum(p.numel() for p in encoder.parameters()),
    }


def _rerank_examples(fold: QueryTowerFold, positives: int) -> list[Any]:
    """Per training query its ``positives`` highest-gain products, each with 3 of the query's
    judged-irrelevant products (a seeded draw)."""
    from shopaug.train import TrainingExample

    rng = np.random.default_rng(0)
    examples = []
    for qid in fold.train_ids:
        judged = fold.qrels.get(qid, {})
        relevant = sorted((p for p, g in judged.items() if g > 0), key=lambda p: (-judged[p], p))
        irrelevant = sorted(p for p, g in judged.items() if g == 0)
        query = fold.dataset.query_by_id[qid].text
        for product in relevant[:positives]:
            drawn = rng.permutation(len(irrelevant))[:3]
            examples.append(
                TrainingExample(
                    query,
                    fold.dataset.product(product).render(),
                    [fold.dataset.product(irrelevant[i]).render() for i in drawn],
                )
            )
    return examples


def _train_reranker(fold: QueryTowerFold, spec: dict[str, Any], out: Path) -> dict[str, Any]:
    from shopaug.eval.metrics import evaluate_run
    from shopaug.models import CrossEncoderReranker
    from shopaug.train import TrainConfig, fit

    reranker = CrossEncoderReranker(seed=0, lora=_lora(spec["rank"]))
    examples = _rerank_examples(fold, spec["positives"])
    config = TrainConfig(
        seed=0,
        batch_size=spec["batch_size"],
        epochs=spec["epochs"],
        lr=spec["lr"],
        loss="infonce",
        temperature=1.0,
        in_batch_negatives=False,
        lora={"r": spec["rank"]} if spec["rank"] else None,
    )
    meter = PeakMeter()
    result = fit(
        reranker,
        examples,
        config,
        run_dir=out,
        show_progress=False,
        on_step=lambda info: meter.close("steps" if info.checkpoint is None else "other"),
    )
    meter.close("other")
    figures = meter.figures()

    def ndcg(ids: list[str]) -> float:
        first = fold.ranker.run(ids, fold.base.encode(fold.query_texts(ids)), depth=100)
        top = spec["top_k"]
        reranked = {}
        for qid, ranked in first.items():  # the top k reordered, as experiment/rerank.py does
            head = [(pid, fold.dataset.product(pid).render()) for pid, _ in ranked[:top]]
            scored = reranker.rerank(fold.dataset.query_by_id[qid].text, head, top_k=top)
            reranked[qid] = [(pid, float(s)) for pid, s in scored] + ranked[top:]
        scores = evaluate_run(reranked, fold.qrels, metrics=["ndcg@10"], query_ids=ids)
        return float(np.mean(scores["ndcg@10"]))

    return {
        **figures,
        "valid": ndcg(fold.valid),
        "best_epoch": spec["epochs"],
        "test": ndcg(fold.test),
        "steps": result.steps,
        "examples": len(examples),
        "trainable": sum(p.numel() for p in reranker.parameters() if p.requires_grad),
        "parameters": sum(p.numel() for p in reranker.parameters()),
    }


class PeakMeter:
    """Peak resident memory and time of a training run, split into windows: optimizer steps,
    and the rest (validation, saving, checkpoints). Each window's peak is ``VmHWM`` (reset
    through ``/proc/self/clear_refs`` when the window opens) above the resident size when the
    run started."""

    def __init__(self) -> None:
        self.resets = _reset_peak()
        self.start = _status_kb("VmRSS")
        self.peaks = {"steps": 0, "other": 0}
        self.seconds = {"steps": 0.0, "other": 0.0}
        self.opened = time.perf_counter()

    def close(self, kind: str) -> None:
        """Close the window that ends now as ``steps`` or ``other``; open the next."""
        self.peaks[kind] = max(self.peaks[kind], _status_kb("VmHWM") - self.start)
        now = time.perf_counter()
        self.seconds[kind] += now - self.opened
        self.opened = now
        _reset_peak()

    def figures(self) -> dict[str, Any]:
        return {
            "seconds": sum(self.seconds.values()),
            "step_seconds": self.seconds["steps"],
            "rss_start_mb": self.start / 1024,
            "step_peak_mb": self.peaks["steps"] / 1024 if self.resets else None,
            "train_peak_mb": max(self.peaks.values()) / 1024 if self.resets else None,
        }


def child(spec: dict[str, Any], result_path: Path) -> None:
    """One training run in this process; its figures go to ``result_path`` as JSON."""
    import torch

    torch.set_num_threads(spec["threads"])
    fold = query_tower_fold(spec["fold"])
    with tempfile.TemporaryDirectory() as work:
        train = _train_bi_encoder if spec["model"] == "bi-encoder" else _train_reranker
        figures = train(fold, spec, Path(work) / "run")
    figures["process_peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures["zero_shot"] = (
        {"valid": fold.ndcg(fold.base, fold.valid), "test": fold.ndcg(fold.base, fold.test)}
        if spec["zero"]
        else None
    )
    result_path.write_text(json.dumps(figures))


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        path = Path(handle.name)
    command = [sys.executable, __file__, "--child", json.dumps(spec), "--result", str(path)]
    subprocess.run(command, check=True)
    figures = json.loads(path.read_text())
    path.unlink()
    print(json.dumps({**spec, **figures}), flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--ranks", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--full-lrs", type=float, nargs="+", default=[5e-5, 1e-4])
    parser.add_argument("--lora-lrs", type=float, nargs="+", default=[5e-4, 2e-3])
    parser.add_argument("--rerank", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--rerank-epochs", type=int, default=1)
    parser.add_argument("--rerank-positives", type=int, default=2)
    parser.add_argument("--rerank-top-k", type=int, default=20)
    parser.add_argument("--rerank-full-lr", type=float, default=3e-5)
    parser.add_argument("--rerank-lora-lr", type=float, default=5e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "--raw", default="benchmarks/out/lora.json", help="every run's figures, as they come"
    )
    parser.add_argument(
        "--from-raw", action="store_true", help="write the report of the --raw file's runs"
    )
    parser.add_argument("--note", default="", help="a sentence added to the report")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.child:
        child(json.loads(args.child), Path(args.result))
        return
    if args.from_raw:  # the runs a stopped benchmark saved
        saved = json.loads(Path(args.raw).read_text())
        body = report(args, [tuple(row) for row in saved["rows"]], saved["zero_shot"], None)
        print(body)
        if not args.no_write:
            runs = " ".join(
                shlex.quote(a)
                for a in sys.argv[1:]
                if a not in ("--from-raw", "--note") and a != args.note
            )
            command = (
                f"nice -n 10 python benchmarks/lora.py {runs} (stopped before it finished), "
                "then python benchmarks/lora.py " + " ".join(map(shlex.quote, sys.argv[1:]))
            )
            write_section("lora", command, body)
        return
    started = time.perf_counter()
    common = {"fold": args.fold, "threads": args.threads}
    bi = {"model": "bi-encoder", "epochs": args.epochs, "batch_size": args.batch_size, **common}
    rows: list[tuple[str, int, list[dict[str, Any]]]] = []
    zero_shot: dict[str, float] = {}
    for rank in [0, *args.ranks]:
        tried = []
        for lr in args.full_lrs if rank == 0 else args.lora_lrs:
            spec = {**bi, "rank": rank, "lr": lr, "zero": not zero_shot}
            figures = run_child(spec)
            zero_shot = zero_shot or (figures["zero_shot"] or {})
            tried.append({"lr": lr, **figures})
        rows.append(("bi-encoder (query tower)", rank, tried))
        _save(args.raw, rows, zero_shot)
    if args.rerank:
        rerank = {
            "model": "reranker",
            "epochs": args.rerank_epochs,
            "batch_size": 16,
            "positives": args.rerank_positives,
            "top_k": args.rerank_top_k,
            "zero": False,
            **common,
        }
        for rank in [0, *args.ranks]:
            lr = args.rerank_full_lr if rank == 0 else args.rerank_lora_lr
            figures = run_child({**rerank, "rank": rank, "lr": lr})
            rows.append(("cross-encoder reranker", rank, [{"lr": lr, **figures}]))
            _save(args.raw, rows, zero_shot)
    body = report(args, rows, zero_shot, time.perf_counter() - started)
    print(body)
    if not args.no_write:
        write_section("lora", invocation(), body)


def _save(path: str, rows: list[Any], zero_shot: dict[str, float]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({"rows": rows, "zero_shot": zero_shot}, indent=1))


def _ratio(row: dict[str, Any], baseline: dict[str, Any], key: str) -> str:
    """`` (0.81x)``: ``row[key]`` over the full fine-tuning baseline's, if both exist."""
    if row is baseline or not row.get(key) or not baseline.get(key):
        return ""
    return f" ({row[key] / baseline[key]:.2f}x)"


def report(
    args: argparse.Namespace,
    rows: list[tuple[str, int, list[dict[str, Any]]]],
    zero_shot: dict[str, float],
    seconds: float | None,
) -> str:
    lines = [
        "| model | training | lr (chosen on validation; tried) | validation NDCG@10 "
        "| test NDCG@10 | trainable parameters | peak memory: steps / whole fit / process "
        "| time: steps / whole fit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    baselines: dict[str, dict[str, Any]] = {}
    for model, rank, tried in rows:
        chosen = max(tried, key=lambda t: t["valid"])
        baseline = baselines.setdefault(model, chosen)
        tried_text = ", ".join(f"{t['lr']:g}: {t['valid']:.3f}" for t in tried)
        share = chosen["trainable"] / chosen["parameters"]
        memory = " / ".join(
            "-" if chosen[key] is None else f"{chosen[key]:.0f}{_ratio(chosen, baseline, key)}"
            for key in ("step_peak_mb", "train_peak_mb", "process_peak_mb")
        )
        timing = " / ".join(
            f"{chosen[key]:.0f}{_ratio(chosen, baseline, key)}"
            for key in ("step_seconds", "seconds")
        )
        lines.append(
            f"| {model} | {'LoRA r=' + str(rank) if rank else 'full fine-tuning'} "
            f"| {chosen['lr']:g} ({tried_text}) "
            f"| {chosen['valid']:.3f} (epoch {chosen['best_epoch']}) | {chosen['test']:.3f} "
            f"| {chosen['trainable']:,} ({share:.2%}) | {memory} MB | {timing} s |"
        )
    load = os.getloadavg()[0]
    text = [
        f"## LoRA adapters against full fine-tuning (wands-subset, fold {args.fold})",
        "",
        f"Bi-encoder: the query tower of `tower: query` (query encoder trains, catalog vectors "
        f"frozen MiniLM), every variant on the same training groups (one per training query: "
        f"judged positives weighted by gain, judged-irrelevant negatives), {args.epochs} "
        f"epochs, batch {args.batch_size}, seed 0, the epoch kept by validation NDCG@10; full "
        "fine-tuning trains every encoder weight except the word embeddings (as the query "
        "tower does), LoRA trains adapters on the attention's query and value layers "
        "(alpha = 2r, dropout 0.1). The learning rate of each variant is the best of its grid "
        "on validation; test NDCG@10 is reported for the chosen one only. Zero-shot MiniLM "
        f"(also the rerankers' first stage): validation {zero_shot.get('valid', float('nan')):.3f}"
        f", test {zero_shot.get('test', float('nan')):.3f}.",
    ]
    measured_reranker = any(model.startswith("cross-encoder") for model, _, _ in rows)
    if args.rerank and not measured_reranker:
        text.append(
            "The cross-encoder reranker (the same comparison, `reranker.lora`) was not "
            "measured: its runs did not fit in the time this shared machine left."
            + (f" {args.note}" if args.note else "")
        )
    if measured_reranker:
        text.append(
            f"Cross-encoder reranker, a smaller budget: {args.rerank_epochs} epoch(s) over at most "
            f"{args.rerank_positives} judged positives per training query, each with 3 "
            "judged-irrelevant negatives (InfoNCE, temperature 1, batch 16), reranking the "
            f"zero-shot MiniLM top {args.rerank_top_k}; one learning rate per variant "
            f"(full {args.rerank_full_lr:g}, LoRA {args.rerank_lora_lr:g}), not tuned."
        )
    for model in sorted({model for model, _, _ in rows}):
        missing = sorted(set([0, *args.ranks]) - {rank for m, rank, _ in rows if m == model})
        if missing:
            names = ", ".join("full fine-tuning" if r == 0 else f"LoRA r={r}" for r in missing)
            text.append(f"Not measured ({model}): {names}; the runs did not fit in the time.")
    caution = []
    for model in sorted({model for model, _, _ in rows}):
        variants = [tried for m, _, tried in rows if m == model]
        by_lr = max(max(t["test"] for t in v) - min(t["test"] for t in v) for v in variants)
        chosen = [max(v, key=lambda t: t["valid"])["test"] for v in variants]
        spread = (
            f"{model}: the chosen rows' test NDCG@10 differ by up to "
            f"{max(chosen) - min(chosen):.3f}"
        )
        if any(len(v) > 1 for v in variants):
            spread += f", the learning rate alone moved it by up to {by_lr:.3f} within one variant"
        else:
            spread += " (one learning rate each, so how much the rate alone moves it is not known)"
        caution.append(spread)
    text += [
        "",
        *lines,
        "",
        "One fold, one seed. " + "; ".join(caution) + ".",
        "",
        "Peak memory (MB): the rise of the resident set over its size when training "
        "started (model, data and catalog vectors loaded), during the optimizer steps and "
        "during the whole fit (validation after each epoch, saving the kept model: a LoRA "
        "model saves a merged copy, checkpoints for the reranker), and the whole subprocess's "
        "peak; time (s): the optimizer steps and the whole fit. Ratios are against full "
        "fine-tuning of the same model in this run. Gradients and AdamW's two moments take "
        "12 bytes per trainable parameter (fp32; computed, not measured): "
        + "; ".join(
            f"{model} {'LoRA r=' + str(rank) if rank else 'full'} "
            f"{tried[0]['trainable'] * 12 / 2**20:.1f} MB"
            for model, rank, tried in rows
        )
        + ". The rest of the rise is not optimizer state: activations, autograd and "
        "allocator buffers, and for the whole fit validation and saving. "
        f"{args.threads} torch threads per run, one run at a time"
        + (f"; whole benchmark {seconds / 60:.0f} min" if seconds is not None else "")
        + f"; load average at the end {load:.1f} on 2 cores shared with other work, so "
        "times are rough.",
    ]
    return "\n".join(text)


if __name__ == "__main__":
    main()

"""The continuous-feedback loop, simulated: served NDCG@10 on held-out queries round by round.

Usage:
    python benchmarks/online_loop.py [--data demo] [--data wands-subset] [--rounds 3]
        [--queries-per-round 60] [--steps 20] [--model minilm|hashing]

For each data set a run directory is made under ``benchmarks/out/online-loop/`` from the
packaged all-MiniLM-L6-v2 (copied as ``model/``; the loop starts from the zero-shot model) and
``--folds`` query folds (3 by default, as the ``quick`` profile) written as ``shopaug run``
would. Then :func:`shopaug.simulate.loop.simulate`
serves it (uvicorn in a thread, on 127.0.0.1), and for each round simulated users issue
feedback queries (half of the first test fold), click by the human labels with position bias
(examination 1/rank, click probability Exact 0.9 / Partial 0.4 / Irrelevant 0.05), and one
online round fine-tunes a challenger on the clicks (IPW weights, skip-above and mined
negatives), gates it against the champion on the held-out half and hot-swaps it on
promotion. NDCG@10 is measured through the service's ``GET /search`` on the held-out queries,
which no simulated user ever issued. The run directory is made anew each time.
Writes the ``online-loop`` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from results_file import invocation, write_section
from shopaug.data import kfold_queries, load_dataset, write_folds
from shopaug.encoders.dense import minilm_path
from shopaug.models.model_dir import write_hashing_model
from shopaug.online.retrain import OnlineConfig
from shopaug.simulate.loop import SimulationConfig, simulate

ROOT = Path(__file__).resolve().parent.parent


def make_run_dir(out: Path, data: str, data_dir: Path, model: str, folds: int) -> Path:
    run = out / f"{data}-{model}"
    if run.exists():
        shutil.rmtree(run)
    run.mkdir(parents=True)
    if model == "minilm":
        shutil.copytree(minilm_path(), run / "model")
    else:
        write_hashing_model(run / "model")
    (run / "config.yaml").write_text(
        f"data: {data}\ndata_dir: {data_dir}\ntext_fields: [title, category]\nseed: 0\n", "utf-8"
    )
    dataset = load_dataset(data, data_dir=data_dir)
    split = kfold_queries([q.id for q in dataset.queries], n_folds=folds, seed=0)
    write_folds(split, run / "folds.json", seed=0)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    default_data = os.environ.get("SHOPAUG_DATA_DIR") or str(ROOT.parent / "shared" / "data")
    parser.add_argument("--data", action="append", default=None)
    parser.add_argument("--data-dir", type=Path, default=Path(default_data))
    parser.add_argument("--model", choices=("minilm", "hashing"), default="minilm")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--queries-per-round", type=int, default=60)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--tolerance", type=float, default=0.005)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "online-loop")
    args = parser.parse_args()
    cache_dir = args.out / "cache"
    model_name = (
        "all-MiniLM-L6-v2 as shipped (zero-shot start)" if args.model == "minilm" else "hashing"
    )
    lines = [
        "## Online loop (simulated users, champion/challenger)",
        "",
        f"Model: {model_name}; "
        f"{args.rounds} rounds of {args.queries_per_round} simulated sessions, then one online "
        f"round each ({args.steps} fine-tuning steps, batch 16, IPW-weighted clicks with "
        f"skip-above and mined negatives, gate tolerance {args.tolerance} NDCG@10). Users "
        f"issue half of the judged queries of the first of {args.folds} test folds; NDCG@10 "
        "is measured through `GET /search` of the running service on half of the other half "
        "(held out: never issued, never trained on, never read by the gate). Round 0 is the "
        "model before any feedback.",
        "",
    ]
    for data in args.data or ["demo"]:
        run = make_run_dir(args.out, data, args.data_dir.resolve(), args.model, args.folds)
        config = SimulationConfig(
            rounds=args.rounds,
            queries_per_round=args.queries_per_round,
            online=OnlineConfig(steps=args.steps, tolerance=args.tolerance),
        )
        started = time.perf_counter()
        payload = simulate(
            run,
            config,
            cache_dir=cache_dir,
            on_round=lambda r: print(json.dumps(r.__dict__), flush=True),
        )
        seconds = time.perf_counter() - started
        lines += [
            f"**{data}** ({len(payload['feedback_queries'])} feedback queries, "
            f"{len(payload['held_out_queries'])} held-out queries, {seconds:.0f} s in all):",
            "",
            "| round | sessions | clicks | champion (gate) | challenger (gate) | decision "
            "| served NDCG@10 (held out) |",
            "|---|---|---|---|---|---|---|",
            f"| 0 | - | - | - | - | - | {payload['initial_ndcg_at_10']:.4f} |",
        ]
        for r in payload["rounds"]:
            champion = "-" if r["champion_ndcg"] is None else f"{r['champion_ndcg']:.4f}"
            challenger = "-" if r["challenger_ndcg"] is None else f"{r['challenger_ndcg']:.4f}"
            lines.append(
                f"| {r['round']} | {r['sessions']} | {r['clicks']} | {champion} | {challenger} "
                f"| {r['decision']} | {r['served_ndcg']:.4f} |"
            )
        lines += [
            "",
            f"The gate's columns are measured on its own {len(payload['gate_queries'])} "
            "queries: the held-out queries are split in two by a hash of the query id "
            "(`online.retrain.is_gate_query`), the gate reads one half and never the other, "
            "which the served column reports, so the served figure is not the one the gate "
            "selected on. A challenger carries the champion's whole pipeline (fusion, "
            "reranker) and the gate ranks as the service ranks. The gate's reasons (paired "
            f"t-test p-values) are in `benchmarks/out/online-loop/{run.name}/simulation.json`.",
            "",
        ]
    write_section("online-loop", invocation(), "\n".join(lines))
    print("wrote the online-loop section of benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()

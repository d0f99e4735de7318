"""Serving runtimes compared: NDCG@10 against latency and throughput of ``GET /search``, for
the pipeline ``shopaug run`` serves and for the bare encoder.

Usage:
    shopaug run benchmarks/configs/full-rerank.yaml --out runs/wands-rerank   # once
    python benchmarks/serve_latency.py [--data-dir ../shared/data] [--rate 50]
        [--runtimes torch,onnx,onnx-int8,static] [--systems served,minilm,hashing]
        [--served-run runs/wands-rerank] [--repeats 3] [--seconds 15]
        [--generators wrk,python] [--server-cpus 1 --client-cpus 0] [--resume]

**served** rows serve the run directory ``--served-run``: what ``shopaug run`` chose on
``wands-subset`` (``full-rerank``: the zero-shot MiniLM + BM25 fusion with LambdaMART over the
top 100), in every runtime but ``static`` (a static model would feed the reranker features of
another encoder than the one it was trained with). Beside them, the bare encoder:
a run directory over ``wands-subset`` (5,113 products) is made under
``benchmarks/out/serve-latency/`` from the packaged all-MiniLM-L6-v2 (copied as ``model/``,
no training) and a config.yaml. For every encoder runtime (``shopaug serve
--encoder-runtime``: torch, ONNX fp32, ONNX int8, a static model distilled from MiniLM) and
every repeat, a fresh ``shopaug serve`` subprocess (empty query cache), pinned with
``taskset`` to ``--server-cpus``, takes:

* **cold**: each WANDS query once, in a seeded random order (the query is encoded in the
  request), at ``--rate`` requests/s;
* **warm**: queries drawn at random from those already sent (the query vector is in the
  server's LRU cache), at the same rate;
* **capacity**: warm queries as fast as 4 connections allow (wrk only, closed loop).

The load comes from Debian's ``wrk`` (compiled, pinned to ``--client-cpus``; the query mix and
the pacing are ``serve_latency.lua``: plain wrk has no fixed-rate mode, so each of 8
connections pauses an exponential time between requests, and the achieved rate is reported)
and, as the cross-check, from the Python open-loop generator in this process (Poisson
arrivals from a thread pool, latency from the scheduled send time, so a server that falls
behind is charged for it; pinned to the client CPUs too). NDCG@10 of each runtime comes from
the same backend in this process (all judged WANDS queries of the subset). The hashing model
(no neural encoder) is the baseline of what HTTP, JSON and the index cost.

After each cold phase the server's ``/metrics`` gives the per-stage split of those requests
(``shopaug_search_stage_seconds``: encode, dense search, BM25, fusion, features, rerank,
serialise; mean milliseconds per request), a column group of the table.

Figures are medians over the repeats with [min, max]. Writes the ``serve-latency`` section of
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode

import httpx
import numpy as np

from results_file import invocation, write_section
from serve_process import ServeProcess, pinned
from shopaug.data import load_dataset
from shopaug.encoders.dense import minilm_path
from shopaug.eval.metrics import evaluate_run
from shopaug.models.model_dir import write_hashing_model
from shopaug.serve.metrics import SEARCH_STAGES

ROOT = Path(__file__).resolve().parent.parent
LUA = Path(__file__).with_name("serve_latency.lua")
#: wrk connections of the paced phases (each pauses between its requests).
CONNECTIONS = 8


def make_run_dir(out: Path, data_dir: Path, kind: str) -> Path:
    run = out / f"run-{kind}"
    if not (run / "model").is_dir():
        run.mkdir(parents=True, exist_ok=True)
        if kind == "minilm":
            shutil.copytree(minilm_path(), run / "model")
        else:
            write_hashing_model(run / "model")
    (run / "config.yaml").write_text(
        f"data: wands-subset\ndata_dir: {data_dir}\ntext_fields: [title, category]\n", "utf-8"
    )
    return run


def start_service(run: Path, cache_dir: Path, runtime: str, cpus: str | None) -> ServeProcess:
    """``shopaug serve RUN_DIR --encoder-runtime R`` in a subprocess, pinned to ``cpus``."""
    return ServeProcess(
        run,
        ["--encoder-runtime", runtime],
        log=cache_dir.parent / "server.log",
        cpus=cpus,
        env={"SHOPAUG_CACHE_DIR": str(cache_dir)},
    )


def search_path(query: str) -> str:
    return "/search?" + urlencode({"q": query, "k": 10})


def wrk(url: str, queries: list[str], mode: str, *, rate: float | None, seconds: float, args):
    """One wrk run (see serve_latency.lua); ``rate`` None: no pauses, 4 connections."""
    connections = CONNECTIONS if rate else 4
    with tempfile.TemporaryDirectory() as tmp:
        paths, out = Path(tmp) / "paths.txt", Path(tmp) / "out.json"
        paths.write_text("".join(search_path(q) + "\n" for q in queries), "utf-8")
        delay_ms = connections * 1000.0 / rate if rate else 0.0
        env = {**os.environ, "QUERIES_FILE": str(paths), "MODE": mode, "OUT_FILE": str(out)}
        env |= {"DELAY_MS": f"{delay_ms:.3f}", "SEED": str(args.seed)}
        command = [*pinned(args.client_cpus), "wrk", "-t1", f"-c{connections}"]
        command += [f"-d{max(1, round(seconds))}s", "--timeout", "30s", "-s", str(LUA), url]
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
        result = json.loads(out.read_text("utf-8"))
    return {
        "requests": result["requests"],
        "achieved_rps": result["requests"] / max(result["duration_us"] / 1e6, 1e-9),
        "p50_ms": result["p50_us"] / 1000.0,
        "p99_ms": result["p99_us"] / 1000.0,
        "max_ms": result["max_us"] / 1000.0,
        "errors": result["errors"],
    }


def stage_means(url: str) -> dict[str, float]:
    """Mean milliseconds per request of each search stage so far (the server's /metrics)."""
    text = httpx.get(url + "/metrics", timeout=10).text
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for line in text.splitlines():
        for suffix, into in (("_sum", sums), ("_count", counts)):
            prefix = f'shopaug_search_stage_seconds{suffix}{{stage="'
            if line.startswith(prefix):
                stage = line[len(prefix) :].split('"', 1)[0]
                into[stage] = float(line.rsplit(" ", 1)[1])
    return {s: 1000.0 * sums[s] / counts[s] for s in sums if counts.get(s)}


def open_loop(
    url: str, queries: list[str], rate: float, rng: np.random.Generator, cpus: str | None
):
    """Send ``queries`` at Poisson times of mean ``rate`` per second; latency percentiles."""
    offsets = np.cumsum(rng.exponential(1.0 / rate, size=len(queries)))
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    limits = httpx.Limits(max_connections=128, max_keepalive_connections=128)
    before = os.sched_getaffinity(0)
    if cpus:
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})  # this thread and its pool
    try:
        with httpx.Client(base_url=url, timeout=30.0, limits=limits) as client:
            client.get("/healthz")

            def send(scheduled: float, query: str) -> None:
                nonlocal errors
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                try:
                    ok = client.get("/search", params={"q": query, "k": 10}).status_code == 200
                except httpx.HTTPError:
                    ok = False
                elapsed = time.perf_counter() - scheduled
                with lock:
                    latencies.append(elapsed)
                    errors += 0 if ok else 1

            start = time.perf_counter() + 0.2
            with ThreadPoolExecutor(max_workers=128) as pool:
                for offset, query in zip(offsets, queries):
                    pool.submit(send, start + float(offset), query)
            duration = time.perf_counter() - start
    finally:
        os.sched_setaffinity(0, before)
    values = np.array(latencies) * 1000.0
    return {
        "requests": len(values),
        "achieved_rps": len(values) / max(duration, 1e-9),
        "p50_ms": float(np.percentile(values, 50)),
        "p99_ms": float(np.percentile(values, 99)),
        "max_ms": float(values.max()),
        "errors": errors,
    }


def measure(run: Path, runtime: str, queries: list[str], repeat: int, generator: str, args):
    """One fresh server: cold, warm (and, with wrk, capacity) phases."""
    rng = np.random.default_rng([args.seed, repeat])
    count = int(args.rate * args.seconds)
    order = [queries[i] for i in rng.permutation(len(queries))]
    cold_queries = order[: min(count, len(order))]
    warm_queries = [cold_queries[i] for i in rng.integers(len(cold_queries), size=count)]
    try:
        service = start_service(run, args.out / "cache", runtime, args.server_cpus)
    except RuntimeError as error:  # e.g. the free port taken by another process meanwhile
        print(f"server start failed, trying once more: {error}", file=sys.stderr, flush=True)
        service = start_service(run, args.out / "cache", runtime, args.server_cpus)
    phases = {}
    try:
        if generator == "wrk":
            cold_seconds = len(cold_queries) / args.rate
            phases["cold"] = wrk(
                service.url, cold_queries, "cold", rate=args.rate, seconds=cold_seconds, args=args
            )
            phases["cold"]["stages_ms"] = stage_means(service.url)
            phases["warm"] = wrk(
                service.url, cold_queries, "warm", rate=args.rate, seconds=args.seconds, args=args
            )
            phases["capacity"] = wrk(
                service.url,
                cold_queries,
                "warm",
                rate=None,
                seconds=args.capacity_seconds,
                args=args,
            )
        else:
            phases["cold"] = open_loop(service.url, cold_queries, args.rate, rng, args.client_cpus)
            phases["cold"]["stages_ms"] = stage_means(service.url)
            phases["warm"] = open_loop(service.url, warm_queries, args.rate, rng, args.client_cpus)
    finally:
        service.stop()
    return {"startup_s": service.startup_seconds, **phases}


def quality(run: Path, runtime: str, dataset, cache_dir: Path) -> float:
    """Mean NDCG@10 over the judged queries, ranked by the served backend of ``runtime``."""
    from shopaug.serve.catalog_backend import CatalogLoader
    from shopaug.serve.runtime import ServingOptions

    os.environ["SHOPAUG_CACHE_DIR"] = str(cache_dir)
    options = ServingOptions(encoder_runtime=runtime)  # type: ignore[arg-type]
    backend = CatalogLoader(run, dataset=dataset, cache_dir=cache_dir, options=options)(
        run / "model"
    )
    qrels = dataset.qrels()
    texts = {q.id: q.text for q in dataset.queries if q.id in qrels}
    ranked = {
        qid: [(h.product_id, h.score) for h in backend.search(text, 10, None)]
        for qid, text in texts.items()
    }
    return float(evaluate_run(ranked, qrels, metrics=["ndcg@10"])["ndcg@10"].mean())


def served_system(run: Path) -> str:
    """What the run serves, in words (its metrics.json's chosen system)."""
    try:
        metrics = json.loads((run / "metrics.json").read_text("utf-8"))
        return f"served: {metrics['selected']['system']}"
    except (OSError, KeyError, ValueError):
        return f"served: {run.name}"


def offline_text(args: argparse.Namespace) -> str:
    """``, 0.7615`` : the served run's test NDCG@10 of its chosen system, if recorded."""
    try:
        metrics = json.loads((args.served_run / "metrics.json").read_text("utf-8"))
        value = metrics["metrics"]["ndcg@10"]["mean"]  # the chosen system's, test folds
    except (OSError, KeyError, TypeError, ValueError):
        return ""
    return f", {float(value):.4f}"


def spread(values: list[float]) -> str:
    """``median [min, max]`` (just the value for one repeat)."""
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{np.median(values):.1f} [{min(values):.1f}, {max(values):.1f}]"


def prepare(run: Path, runtimes: list[str]) -> None:
    """Export / distil the model once here, so no server start pays for it."""
    from shopaug.encoders.onnx import export_onnx
    from shopaug.encoders.static import distill_static

    for runtime in runtimes:
        if runtime.startswith("onnx"):
            export_onnx(run / "model", precision="int8" if runtime == "onnx-int8" else "fp32")
        elif runtime == "static":
            distill_static(run / "model")


def stage_cells(runs: list[dict]) -> str:
    """The per-stage column group of cold rows: median over repeats of the mean ms."""
    cells = []
    for stage in SEARCH_STAGES:
        values = [r["stages_ms"][stage] for r in runs if stage in r.get("stages_ms", {})]
        cells.append(f"{np.median(values):.2f}" if values else "-")
    return " | ".join(cells)


def table(results: dict, systems: list[tuple[str, str]], generators: list[str]) -> list[str]:
    stages = " | ".join(stage.replace("_", " ") for stage in SEARCH_STAGES)
    lines = [
        "| system | runtime | NDCG@10 | generator | phase | achieved req/s | p50 ms | p99 ms "
        f"| errors | {stages} |",
        "|---|---|---|---|---|---|---|---|---|" + "---|" * len(SEARCH_STAGES),
    ]
    for label, _ in systems:
        row = results[label]
        for generator in generators:
            for phase in ("cold", "warm", "capacity"):
                runs = [r[phase] for r in row[generator] if phase in r]
                if not runs:
                    continue
                split = stage_cells(runs) if phase == "cold" else " | " * (len(SEARCH_STAGES) - 1)
                lines.append(
                    f"| {row['system']} | {row['runtime']} | {row['ndcg']:.4f} | {generator} | "
                    f"{phase} | {spread([r['achieved_rps'] for r in runs])} | "
                    f"{spread([r['p50_ms'] for r in runs])} | "
                    f"{spread([r['p99_ms'] for r in runs])} | {sum(r['errors'] for r in runs)} | "
                    f"{split} |"
                )
    return lines


def repeats_text(results: dict, generators: list[str], planned: int) -> str:
    """``3 repeats`` or, when the journal holds fewer for some, what each got."""
    counts = {(label, g): len(row[g]) for label, row in results.items() for g in generators}
    if all(n == planned for n in counts.values()):
        return f"{planned} repeats"
    got = ", ".join(f"{label} / {g}: {n}" for (label, g), n in counts.items())
    return f"repeats (of {planned} planned; the rest not measured yet): {got}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    default_data = os.environ.get("SHOPAUG_DATA_DIR") or str(ROOT.parent / "shared" / "data")
    parser.add_argument("--data-dir", type=Path, default=Path(default_data))
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--runtimes", default="torch,onnx,onnx-int8,static")
    parser.add_argument(
        "--systems",
        default="served,minilm,hashing",
        help="served (the run of --served-run), minilm (the bare encoder), hashing (no encoder)",
    )
    parser.add_argument(
        "--served-run",
        type=Path,
        default=ROOT / "runs" / "wands-rerank",
        help="run directory of `shopaug run benchmarks/configs/full-rerank.yaml`",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--capacity-seconds", type=float, default=5.0)
    parser.add_argument("--generators", default="wrk,python")
    parser.add_argument("--server-cpus", default="1", help="taskset list of the server ('' off)")
    parser.add_argument("--client-cpus", default="0", help="taskset list of the load generator")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "serve-latency")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the measurements of an earlier run with the same settings (measurements.jsonl)",
    )
    parser.add_argument(
        "--no-results", action="store_true", help="print the section, leave RESULTS.md alone"
    )
    parser.add_argument(
        "--journal-only",
        action="store_true",
        help="with --resume: report what the journal holds, measure nothing more",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    generators = args.generators.split(",")
    if "wrk" in generators and shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk (or --generators python)")
    dataset = load_dataset("wands-subset", data_dir=args.data_dir)
    queries = sorted({q.text for q in dataset.queries})
    runtimes = args.runtimes.split(",")
    chosen = args.systems.split(",")
    systems: list[tuple[str, str]] = []  # (label, runtime)
    runs: dict[str, Path] = {}
    names: dict[str, str] = {}
    if "served" in chosen:
        served_run = args.served_run.resolve()
        if not (served_run / "model").is_dir():
            raise SystemExit(
                f"{served_run} has no model/: run `shopaug run benchmarks/configs/full-rerank.yaml"
                f" --out {args.served_run}` first (or leave 'served' out of --systems)"
            )
        served_name = served_system(served_run)
        served_runtimes = [r for r in runtimes if r != "static"]
        prepare(served_run, served_runtimes)
        for runtime in served_runtimes:
            label = f"served {runtime}"
            systems.append((label, runtime))
            runs[label], names[label] = served_run, served_name
    if "minilm" in chosen:
        minilm_run = make_run_dir(args.out, args.data_dir.resolve(), "minilm")
        prepare(minilm_run, runtimes)
        for runtime in runtimes:
            label = f"MiniLM {runtime}"
            systems.append((label, runtime))
            runs[label], names[label] = minilm_run, "bare MiniLM (dense)"
    if "hashing" in chosen:
        label = "hashing (baseline)"
        systems.append((label, "torch"))
        runs[label] = make_run_dir(args.out, args.data_dir.resolve(), "hashing")
        names[label] = "hashing (no encoder)"
    results: dict[str, dict] = {}
    for label, runtime in systems:
        ndcg = quality(runs[label], runtime, dataset, args.out / "cache")
        results[label] = {
            "system": names[label],
            "runtime": runtime,
            "ndcg": ndcg,
            **{g: [] for g in generators},
        }
        print(f"{label}: ndcg@10 {ndcg:.4f}", flush=True)

    # Every measurement is appended to measurements.jsonl as it is made; --resume keeps those
    # of the same settings, so an interrupted run continues where it stopped.
    journal = args.out / "measurements.jsonl"
    settings = {"rate": args.rate, "seconds": args.seconds, "seed": args.seed}
    done: dict[tuple[str, int, str], dict] = {}
    if args.resume and journal.exists():
        for line in journal.read_text("utf-8").splitlines():
            entry = json.loads(line)
            if entry.get("settings") == settings:
                done[(entry["system"], entry["repeat"], entry["generator"])] = entry
    elif journal.exists():
        journal.unlink()
    loads = []
    for repeat in range(args.repeats):
        order = systems if repeat % 2 == 0 else systems[::-1]  # drift hits every system alike
        for label, runtime in order:
            for generator in generators:
                entry = done.get((label, repeat, generator))
                if entry is None and args.journal_only:
                    continue
                if entry is None:
                    load = os.getloadavg()[0]
                    measured = measure(runs[label], runtime, queries, repeat, generator, args)
                    entry = {
                        "system": label,
                        "repeat": repeat,
                        "generator": generator,
                        "settings": settings,
                        "load": [load, os.getloadavg()[0]],
                        "measured": measured,
                    }
                    with journal.open("a", encoding="utf-8") as out:
                        out.write(json.dumps(entry) + "\n")
                    print(json.dumps(entry), flush=True)
                results[label][generator].append(entry["measured"])
                loads.extend(entry.get("load", []))
    (args.out / "latency.json").write_text(json.dumps(results, indent=1), "utf-8")

    lines = [
        "## Serving latency: the served pipeline and the bare encoder, by runtime (GET /search)",
        "",
        f"`wands-subset` ({len(dataset.products):,} products, name + class). **served**: the "
        f"model directory of `{args.served_run}`, what `shopaug run "
        "benchmarks/configs/full-rerank.yaml` chose on validation (zero-shot MiniLM fused "
        "with BM25, LambdaMART over the top 100; its NDCG@10 here is over every judged query, "
        "which the served reranker was trained on, so compare it between runtimes, not with "
        f"the run's cross-validated test figure{offline_text(args)}); "
        "**bare MiniLM**: all-MiniLM-L6-v2 as shipped (no training), dense only; "
        f"exact FAISS index, {len(queries)} distinct WANDS queries, "
        f"k=10, {args.rate:.0f} requests/s. Runtimes (`shopaug serve --encoder-runtime`): "
        "torch fp32; ONNX Runtime fp32 and int8 (dynamic, MatMul weights per channel; the "
        "catalog keeps the torch vectors); a static model distilled from MiniLM by model2vec "
        "(256 dims; it encodes the catalog too). Server pinned to CPU "
        f"{args.server_cpus or 'any'}, load generator to CPU {args.client_cpus or 'any'}; "
        f"{repeats_text(results, generators, args.repeats)}, each a fresh server, order "
        "alternating; figures are the "
        "median [min, max] over the repeats. **cold**: each query's first request (encoded in "
        "the request); **warm**: repeated queries (LRU cache); **capacity**: warm queries from "
        "4 connections without pauses. `wrk`: Debian's wrk 4.1 with `serve_latency.lua` (8 "
        "connections, exponential pauses for the target rate: closed loop, so a slow server "
        "lowers the achieved rate); `python`: the open-loop Poisson generator (latency from "
        "the scheduled send time). NDCG@10 over every judged query of the subset, ranked by "
        "the same backend in process. The stage columns (cold rows only) are the mean "
        "milliseconds per request of each stage (`shopaug_search_stage_seconds` from the "
        "server's /metrics after the cold phase; median over repeats); '-': a stage the "
        "system does not have. `wrk` is Debian's package (`apt-get install -y wrk`).",
        "",
        *table(results, systems, generators),
        "",
        (
            f"1-minute load average at the start and end of each measurement: median "
            f"{np.median(loads):.1f}, range {min(loads):.1f} to {max(loads):.1f} on "
            f"{os.cpu_count()} cores (above 2 means other jobs shared the CPUs, which inflates "
            "the tails)."
            if loads
            else "The load average was not recorded."
        ),
    ]
    print("\n".join(lines))
    if not args.no_results:
        write_section("serve-latency", invocation(), "\n".join(lines))
        print("wrote the serve-latency section of benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()

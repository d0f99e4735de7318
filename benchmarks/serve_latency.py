"""Latency of ``GET /search`` under an open-loop load, cold and warm query cache.

Usage:
    python benchmarks/serve_latency.py [--data-dir ../shared/data] [--rates 10,25,50]
        [--seconds 15]

A run directory over ``wands-subset`` (5,113 products) is made under
``benchmarks/out/serve-latency/`` from the packaged all-MiniLM-L6-v2 (copied as ``model/``, no
training) and a config.yaml. For every rate, ``shopaug serve`` is started in a subprocess
(so its query-vector cache is empty), and a load generator in this process, on the same
machine, sends requests at Poisson arrival times (open loop: a request is sent at its
scheduled time whether or not earlier ones have been answered) from a pool of threads:

* **cold**: each WANDS query once, in a seeded random order (the server has never seen it:
  the query is encoded by MiniLM in the request);
* **warm**: then queries drawn at random from those already sent (the query vector is in the
  server's LRU cache; the request costs the index search and HTTP).

Latency is measured from the scheduled send time to the end of the response, so a client that
falls behind counts against the server (no coordinated omission). The same load against a run
with the hashing model (no neural network) is the baseline: what HTTP, JSON and the index cost.
Writes the ``serve-latency`` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from results_file import write_section
from shopaug.data import load_dataset
from shopaug.encoders.dense import minilm_path
from shopaug.models.model_dir import write_hashing_model

ROOT = Path(__file__).resolve().parent.parent


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    """``shopaug serve RUN_DIR`` in a subprocess."""

    def __init__(self, run: Path, cache_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "SHOPAUG_CACHE_DIR": str(cache_dir), "HF_HUB_OFFLINE": "1"}
        command = "from shopaug.cli import app; app()"
        self.process = subprocess.Popen(
            [sys.executable, "-c", command, "serve", str(run), "--port", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started = time.monotonic()
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"shopaug serve exited with {self.process.returncode}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() - started > 900:
                raise RuntimeError("the service did not become ready in 15 minutes")
            time.sleep(0.5)
        self.startup_seconds = time.monotonic() - started

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def open_loop(
    url: str, queries: list[str], rate: float, rng: np.random.Generator
) -> dict[str, float]:
    """Send ``queries`` at Poisson times of mean ``rate`` per second; latency percentiles."""
    offsets = np.cumsum(rng.exponential(1.0 / rate, size=len(queries)))
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    limits = httpx.Limits(max_connections=128, max_keepalive_connections=128)
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
    values = np.array(latencies) * 1000.0
    return {
        "requests": len(values),
        "achieved_rps": len(values) / max(duration, 1e-9),
        "p50_ms": float(np.percentile(values, 50)),
        "p99_ms": float(np.percentile(values, 99)),
        "max_ms": float(values.max()),
        "errors": errors,
    }


def measure(run: Path, cache_dir: Path, queries: list[str], rate: float, seconds: float, seed: int):
    rng = np.random.default_rng(seed)
    service = Service(run, cache_dir)
    try:
        count = int(rate * seconds)
        order = [queries[i] for i in rng.permutation(len(queries))]
        cold_queries = order[: min(count, len(order))]
        cold = open_loop(service.url, cold_queries, rate, rng)
        warm_queries = [cold_queries[i] for i in rng.integers(len(cold_queries), size=count)]
        warm = open_loop(service.url, warm_queries, rate, rng)
    finally:
        service.stop()
    return service.startup_seconds, cold, warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    default_data = os.environ.get("SHOPAUG_DATA_DIR") or str(ROOT.parent / "shared" / "data")
    parser.add_argument("--data-dir", type=Path, default=Path(default_data))
    parser.add_argument("--rates", default="10,25,50")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--baseline-rate", type=float, default=50.0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "serve-latency")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cache_dir = args.out / "cache"
    dataset = load_dataset("wands-subset", data_dir=args.data_dir)
    queries = sorted({q.text for q in dataset.queries})
    rates = [float(r) for r in args.rates.split(",")]

    results = []
    load_before = os.getloadavg()[0]
    minilm_run = make_run_dir(args.out, args.data_dir.resolve(), "minilm")
    for rate in rates:
        startup, cold, warm = measure(minilm_run, cache_dir, queries, rate, args.seconds, args.seed)
        results.append(
            {"model": "MiniLM", "rate": rate, "startup_s": startup, "cold": cold, "warm": warm}
        )
        print(json.dumps(results[-1]), flush=True)
    hashing_run = make_run_dir(args.out, args.data_dir.resolve(), "hashing")
    startup, cold, warm = measure(
        hashing_run, cache_dir, queries, args.baseline_rate, args.seconds, args.seed
    )
    results.append(
        {
            "model": "hashing (baseline)",
            "rate": args.baseline_rate,
            "startup_s": startup,
            "cold": cold,
            "warm": warm,
        }
    )
    print(json.dumps(results[-1]), flush=True)
    load_after = os.getloadavg()[0]
    (args.out / "latency.json").write_text(json.dumps(results, indent=1), "utf-8")

    baseline = results[-1]
    lines = [
        "## Serving latency (GET /search)",
        "",
        f"`wands-subset` ({len(dataset.products):,} products, name + class), "
        "all-MiniLM-L6-v2 as shipped (no training), exact FAISS inner-product index, "
        f"{len(queries)} distinct WANDS queries, k=10. `shopaug serve` runs in a subprocess "
        "(one uvicorn worker); the load generator runs on the same 2-core machine (httpx, "
        "thread pool, Poisson arrivals, open loop, latency from the scheduled send time), so "
        "client and server share the CPUs. Each rate starts a fresh server: **cold** = each "
        "query's first request (MiniLM encodes it), **warm** = repeated queries (query vector "
        "in the server's LRU cache). Baseline: the same load on the hashing model (no neural "
        "encoder).",
        "",
        "| model | rate (req/s) | phase | requests | achieved req/s | p50 ms | p99 ms | max ms "
        "| errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results:
        for phase in ("cold", "warm"):
            m = row[phase]
            lines.append(
                f"| {row['model']} | {row['rate']:.0f} | {phase} | {m['requests']} | "
                f"{m['achieved_rps']:.1f} | {m['p50_ms']:.1f} | {m['p99_ms']:.1f} | "
                f"{m['max_ms']:.1f} | {m['errors']} |"
            )
    top = next((r for r in results if r["model"] == "MiniLM" and r["rate"] == max(rates)), None)
    if top is not None:
        lines += [
            "",
            f"At {max(rates):.0f} req/s: MiniLM p99 cold {top['cold']['p99_ms']:.1f} ms, warm "
            f"{top['warm']['p99_ms']:.1f} ms (target: under 15 ms); ratio to the hashing "
            f"baseline at {baseline['rate']:.0f} req/s: cold p99 x"
            f"{top['cold']['p99_ms'] / baseline['cold']['p99_ms']:.2f}, warm p99 x"
            f"{top['warm']['p99_ms'] / baseline['warm']['p99_ms']:.2f}. Server start-up "
            f"(catalog embeddings from the cache): {top['startup_s']:.1f} s.",
        ]
    lines += [
        "",
        f"1-minute load average at the start and end of the run: {load_before:.1f} and "
        f"{load_after:.1f} on 2 cores (above 2 means other jobs shared the CPUs with the "
        "server and the load generator, which inflates the tails).",
    ]
    command = "python benchmarks/serve_latency.py " + " ".join(sys.argv[1:])
    write_section("serve-latency", command.strip(), "\n".join(lines))
    print("wrote the serve-latency section of benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()

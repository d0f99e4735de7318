"""A bounded soak of the real service on loopback: mixed /search and /feedback at a fixed rate,
a hot swap (/admin/reload) in the middle, the server's memory sampled throughout.

The service runs in a subprocess (uvicorn, the run's catalog backend, a fresh SQLite feedback
database in a temporary folder). The load is open-loop: a request starts every 1/rate seconds
whatever the earlier ones are doing (at most ``--max-in-flight`` at once; beyond that the
client counts the request as not sent). Every /feedback request carries its own
Idempotency-Key; after the run the store is read back and every acknowledged event must be
there (``lost`` must be 0). Memory: the server's RSS every ``--rss-every`` seconds; growth is
the median of the last tenth of the run against the median of the tenth after warm-up, and
the same within each half: warm-up to the swap, one minute after the swap to the end (the swap
itself raises the high-water mark once: two models live while the new one loads).

    nice -n 10 python benchmarks/soak.py /tmp/quick-run --minutes 10 --rate 20

Figures go into the ``soak`` section of benchmarks/RESULTS.md (``--no-write`` to skip).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil

from results_file import write_section

SERVER = """
import sys
from shopaug.serve import run
from shopaug.serve.catalog_backend import make_catalog_loader
run_dir, port, url = sys.argv[1], int(sys.argv[2]), sys.argv[3]
run(run_dir, "127.0.0.1", port, loader=make_catalog_loader(run_dir), log_level="warning",
    database_url=url)
"""
SEED_WORDS = ("sofa", "lamp", "table", "chair", "rug", "bed", "desk", "mirror", "shelf", "stool")


@dataclass
class Tally:
    latency: dict[str, list[float]] = field(default_factory=lambda: {"search": [], "feedback": []})
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    transport_errors: Counter[str] = field(default_factory=Counter)
    acknowledged: dict[str, list[int]] = field(default_factory=dict)
    not_sent: int = 0
    rss: list[tuple[float, int]] = field(default_factory=list)
    load: list[float] = field(default_factory=list)
    swap: str = "not done"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(run_dir: Path, port: int, url: str, token: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SHOPAUG_ADMIN_TOKEN": token}
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(run_dir), str(port), url],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(process.stderr.read().decode() if process.stderr else "exited")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError("the service did not become ready within 600 s")


async def vocabulary(client: httpx.AsyncClient) -> tuple[list[str], list[str]]:
    """Queries (pairs of title words) and product ids, from searches for common words."""
    titles: list[str] = []
    products: list[str] = []
    for word in SEED_WORDS:
        response = await client.get("/search", params={"q": word, "k": 20})
        for hit in response.json()["results"]:
            titles.append(hit["title"])
            products.append(hit["product_id"])
    words = sorted({w.lower() for t in titles for w in t.split() if w.isalpha() and len(w) > 2})
    rng = np.random.default_rng(0)
    queries = [" ".join(rng.choice(words, size=2, replace=False)) for _ in range(500)]
    return queries, sorted(set(products))


async def one_request(
    client: httpx.AsyncClient, tally: Tally, kind: str, number: int, queries, products
) -> None:
    started = time.perf_counter()
    try:
        if kind == "search":
            response = await client.get(
                "/search", params={"q": queries[number % len(queries)], "k": 10}
            )
        else:
            key = f"soak-{number}"
            body = {
                "event": "click",
                "product_id": products[number % len(products)],
                "query": queries[number % len(queries)],
                "position": number % 10 + 1,
                "session_id": f"s{number % 97}",
            }
            response = await client.post("/feedback", json=body, headers={"Idempotency-Key": key})
            if response.status_code == 200:
                tally.acknowledged[key] = response.json()["event_ids"]
    except httpx.HTTPError as error:
        tally.transport_errors[f"{kind}: {type(error).__name__}"] += 1
        return
    tally.latency[kind].append(time.perf_counter() - started)
    tally.statuses[(kind, response.status_code)] += 1


async def sample_rss(pid: int, tally: Tally, every: float, stop: asyncio.Event) -> None:
    process = psutil.Process(pid)
    start = time.monotonic()
    while not stop.is_set():
        tally.rss.append((time.monotonic() - start, process.memory_info().rss))
        tally.load.append(os.getloadavg()[0])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every)


async def soak(args: argparse.Namespace, port: int, pid: int, token: str) -> Tally:
    tally = Tally()
    rng = np.random.default_rng(args.seed)
    # Idle connections are dropped before uvicorn's 5 s keep-alive ends, so a request never
    # goes out on a connection the server is closing.
    limits = httpx.Limits(max_connections=args.max_in_flight, keepalive_expiry=2.0)
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        queries, products = await vocabulary(client)
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_rss(pid, tally, args.rss_every, stop))
        total = int(args.minutes * 60 * args.rate)
        swap_at = int(total * args.swap_at)
        in_flight: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        for number in range(total):
            await asyncio.sleep(max(0.0, start + number / args.rate - time.monotonic()))
            if number == swap_at:
                in_flight.add(asyncio.create_task(hot_swap(client, token, tally)))
            if len(in_flight) >= args.max_in_flight:
                tally.not_sent += 1
                continue
            kind = "feedback" if rng.random() < args.feedback_share else "search"
            task = asyncio.create_task(one_request(client, tally, kind, number, queries, products))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        await asyncio.gather(*in_flight)
        stop.set()
        await sampler
    return tally


async def hot_swap(client: httpx.AsyncClient, token: str, tally: Tally) -> None:
    started = time.perf_counter()
    response = await client.post(
        "/admin/reload", headers={"Authorization": f"Bearer {token}"}, timeout=600
    )
    took = time.perf_counter() - started
    tally.swap = f"/admin/reload answered {response.status_code} after {took:.1f} s"


def percentile(values: list[float], q: float) -> str:
    return f"{1000 * float(np.percentile(values, q)):.0f}" if values else "-"


def growth(mib: np.ndarray) -> tuple[float, float]:
    """(median of the first tenth, median of the last tenth) of ``mib``."""
    window = max(1, len(mib) // 10)
    return float(np.median(mib[:window])), float(np.median(mib[-window:]))


def memory_figures(
    rss: list[tuple[float, int]], warmup_s: float, swap_s: float
) -> dict[str, float]:
    mib = np.array([r for _, r in rss], dtype=float) / 2**20
    times = np.array([t for t, _ in rss])
    after = mib[times >= warmup_s]
    if len(after) < 4:
        after = mib
    first, last = growth(after)
    before_swap = mib[(times >= warmup_s) & (times < swap_s)]
    after_swap = mib[times >= swap_s + 60]
    figures = {"after_warmup": first, "end": last, "max": float(mib.max()), "growth": last - first}
    for name, part in (("growth_before_swap", before_swap), ("growth_after_swap", after_swap)):
        start, end = growth(part) if len(part) >= 2 else (float("nan"), float("nan"))
        figures[name] = end - start
    return figures


def report(args: argparse.Namespace, tally: Tally, stored: dict[str, list[int]]) -> str:
    lost = [key for key, ids in tally.acknowledged.items() if stored.get(key) != ids]
    fivexx = sum(n for (_, status), n in tally.statuses.items() if status >= 500)
    other = sum(n for (_, status), n in tally.statuses.items() if 300 <= status < 500)
    memory = memory_figures(
        tally.rss, args.minutes * 60 * args.warmup, args.minutes * 60 * args.swap_at
    )
    sent = {kind: sum(n for (k, _), n in tally.statuses.items() if k == kind) for kind in
            ("search", "feedback")}  # fmt: skip
    load = np.array(tally.load) if tally.load else np.array([float("nan")])
    rss_trace = ", ".join(
        f"{t / 60:.0f} min {r / 2**20:.0f}" for t, r in tally.rss[:: max(1, len(tally.rss) // 10)]
    )
    lines = [
        "## Soak: mixed /search and /feedback on loopback with a hot swap",
        "",
        f"{args.minutes:g} minutes at {args.rate:g} requests/s (open loop, "
        f"{args.feedback_share:.0%} /feedback), the run directory's catalog backend, a fresh "
        f"SQLite feedback store; {tally.swap} at {args.swap_at:.0%} of the run. "
        f"Load average of the machine during the run (1 min): mean {np.nanmean(load):.1f}, "
        f"max {np.nanmax(load):.1f} on {os.cpu_count()} cores (a long benchmark shares it).",
        "",
        "| route | answered | p50 ms | p99 ms |",
        "|---|---:|---:|---:|",
        f"| /search | {sent['search']} | {percentile(tally.latency['search'], 50)} | "
        f"{percentile(tally.latency['search'], 99)} |",
        f"| /feedback | {sent['feedback']} | {percentile(tally.latency['feedback'], 50)} | "
        f"{percentile(tally.latency['feedback'], 99)} |",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| transport errors (reset, timeout) | {sum(tally.transport_errors.values())} |",
        f"| 5xx answers | {fivexx} |",
        f"| 3xx/4xx answers | {other} |",
        f"| not sent (client at --max-in-flight) | {tally.not_sent} |",
        f"| feedback events acknowledged | {len(tally.acknowledged)} |",
        f"| feedback events stored | {sum(len(ids) for ids in stored.values())} |",
        f"| acknowledged but lost | {len(lost)} |",
        f"| server RSS after warm-up (MiB) | {memory['after_warmup']:.0f} |",
        f"| server RSS at the end (MiB) | {memory['end']:.0f} |",
        f"| growth after warm-up (MiB) | {memory['growth']:+.1f} |",
        f"| growth from warm-up to the swap (MiB) | {memory['growth_before_swap']:+.1f} |",
        f"| growth from 1 min after the swap to the end (MiB) | "
        f"{memory['growth_after_swap']:+.1f} |",
        f"| server RSS max (MiB) | {memory['max']:.0f} |",
        "",
        f"RSS over time (MiB): {rss_trace}.",
    ]
    if tally.transport_errors:
        lines.append(f"Transport errors: {dict(tally.transport_errors)}.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second")
    parser.add_argument("--feedback-share", type=float, default=0.3)
    parser.add_argument("--swap-at", type=float, default=0.5, help="fraction of the run")
    parser.add_argument("--warmup", type=float, default=0.2, help="fraction of the run")
    parser.add_argument("--rss-every", type=float, default=5.0, help="seconds")
    parser.add_argument("--max-in-flight", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--section", default="soak")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    token = secrets.token_hex(16)
    folder = Path(tempfile.mkdtemp(prefix="shopaug-soak-"))
    url = f"sqlite:///{folder / 'feedback.sqlite'}"
    port = free_port()
    server = start_server(args.run_dir, port, url, token)
    try:
        tally = asyncio.run(soak(args, port, server.pid, token))
    finally:
        server.terminate()
        server.wait(timeout=60)
    from shopaug.feedback.store import FeedbackStore

    store = FeedbackStore(url, create=False)
    stored: dict[str, list[int]] = {}
    for event in store.read_new(0):
        stored.setdefault(event.idempotency_key or "", []).append(event.id)
    store.close()
    body = report(args, tally, stored)
    print(body)
    if not args.no_write:
        command = "nice -n 10 python benchmarks/soak.py " + shlex.join(sys.argv[1:])
        write_section(args.section, command, body)


if __name__ == "__main__":
    main()

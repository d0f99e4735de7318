"""Replay the Online Retail invoices after the cut through the running service, in time order.

Usage:
    shopaug run retail-quick --out runs/retail-quick
    python benchmarks/recommend_replay.py runs/retail-quick [--out benchmarks/out/recommend-replay]
        [--limit N] [--restart-at 0.5] [--server-cpus 1 --client-cpus 0] [--no-write]
    python benchmarks/recommend_replay.py runs/retail-quick --out ... --render-only

A fresh feedback store (``OUT/feedback.sqlite``) and ``shopaug serve RUN`` in a subprocess;
then, for each invoice at or after the run's cut (the invoice lines of the run's data slice,
ordered by time, then invoice number), one client:

1. asks ``POST /recommend {"customer_id": ..., "k": K}`` (K: the run's ``k``, 20) and keeps the
   ranking (a 404, a customer with nothing known yet, is an empty ranking);
2. posts the invoice's items to ``POST /feedback`` as ``purchase`` events with the customer as
   ``user_id`` and the invoice time as ``timestamp`` (batches of at most 1,000, each with the
   ``Idempotency-Key`` ``replay-<invoice>-<batch>``).

At ``--restart-at`` (a share of the invoices; 0 for none) the service is stopped and a new one
started over the same store, so the second half is served from histories rebuilt from the store.

Each invoice is scored (Recall@K of the ranking against the invoice's items) twice:

* **replay**: what the service answered, its history growing with each posted invoice;
* **frozen**: what it answered before purchases reached ``/recommend``: the ranking of the
  customer's history at the cut stored with the model (``model/customers.json``), the same for
  every invoice of the customer; a customer with no purchase before the cut gets nothing.

Repeat customers (a purchase before the cut) and new customers (first purchase on or after the
cut) are reported apart; per row, the mean over customers of their mean Recall@K over the row's
invoices, with a paired bootstrap over customers (replay - frozen). The first invoice after the
cut of a repeat customer is the offline table's test basket: its frozen Recall@K is checked
against the run's ``metrics.json`` (the served system's test figure). After the replay, every
served ranking is compared with what the same model computes in this process from the
history at the cut plus the invoices posted before (:class:`RecommenderBackend`).

Throughput is invoices (one ``/recommend`` and the ``/feedback`` posts) per second of the
replay loop, one client, one request at a time, restart excluded; latencies are measured by the
client from send to answer. Writes the ``recommend-replay`` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import yaml
from tqdm import tqdm

from results_file import invocation, write_section
from serve_process import ServeProcess
from shopaug.eval.recommend import per_customer_metrics
from shopaug.eval.significance import paired_bootstrap
from shopaug.experiment.recommend_data import load_views, parse_recommend_config
from shopaug.models.two_tower import load_serving_data
from shopaug.serve.recommender_backend import RecommenderBackend, load_recommender_backend

ROOT = Path(__file__).resolve().parent.parent
#: Events per /feedback request (the service's default max_batch_events).
BATCH = 1000


@dataclass(frozen=True)
class Invoice:
    invoice: str
    customer: str
    timestamp: pd.Timestamp
    items: tuple[str, ...]


@dataclass
class Replayed:
    """What the service answered for each invoice, and the timings."""

    served: list[list[str]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    recommend_s: list[float] = field(default_factory=list)
    feedback_s: list[float] = field(default_factory=list)
    loop_s: float = 0.0
    restarted_at: int | None = None
    startup_s: list[float] = field(default_factory=list)


def start_service(run: Path, database_url: str, log: Path, cpus: str | None) -> ServeProcess:
    """``shopaug serve RUN --database-url URL`` in a subprocess (pinned to ``cpus``)."""
    return ServeProcess(
        run,
        ["--database-url", database_url],
        log=log,
        cpus=cpus,
        append_log=True,
        ready_timeout=600.0,
        poll_seconds=0.3,
    )


def invoices_after_cut(lines: pd.DataFrame, cut: pd.Timestamp) -> list[Invoice]:
    """The invoices at or after ``cut``, by time, then invoice number (the split's order)."""
    after = lines.loc[lines["timestamp"] >= cut].sort_values(
        ["timestamp", "invoice"], kind="stable"
    )
    grouped = after.groupby(["invoice", "customer_id"], sort=False)
    return [
        Invoice(str(invoice), str(customer), rows["timestamp"].iloc[0], tuple(rows["item_id"]))
        for (invoice, customer), rows in grouped
    ]


def post_invoice(client: httpx.Client, invoice: Invoice) -> None:
    seconds = float(invoice.timestamp.timestamp())
    events = [
        {"event": "purchase", "product_id": item, "user_id": invoice.customer, "timestamp": seconds}
        for item in invoice.items
    ]
    for start in range(0, len(events), BATCH):
        answer = client.post(
            "/feedback",
            json={"events": events[start : start + BATCH]},
            headers={"Idempotency-Key": f"replay-{invoice.invoice}-{start // BATCH}"},
        )
        if answer.status_code != 200:
            raise RuntimeError(f"/feedback for invoice {invoice.invoice}: {answer.text[:500]}")


def replay(
    run: Path, out: Path, invoices: list[Invoice], k: int, args: argparse.Namespace
) -> Replayed:
    store = out / "feedback.sqlite"
    for suffix in ("", "-wal", "-shm"):  # a fresh store: nothing of an earlier replay is known
        Path(f"{store}{suffix}").unlink(missing_ok=True)
    url = f"sqlite:///{store.resolve().as_posix()}"
    log = out / "server.log"
    log.unlink(missing_ok=True)
    restart = int(len(invoices) * args.restart_at) if args.restart_at > 0 else None
    if args.client_cpus:
        os.sched_setaffinity(0, {int(cpu) for cpu in args.client_cpus.split(",")})
    result = Replayed(restarted_at=restart)
    service = start_service(run, url, log, args.server_cpus)
    result.startup_s.append(service.startup_seconds)
    client = httpx.Client(base_url=service.url, timeout=60)
    try:
        for position, invoice in enumerate(tqdm(invoices, desc="replay", unit="invoice")):
            if position == restart:
                client.close()
                service.stop()
                service = start_service(run, url, log, args.server_cpus)
                result.startup_s.append(service.startup_seconds)
                client = httpx.Client(base_url=service.url, timeout=60)
            started = time.perf_counter()
            answer = client.post("/recommend", json={"customer_id": invoice.customer, "k": k})
            asked = time.perf_counter()
            if answer.status_code not in (200, 404):
                raise RuntimeError(f"/recommend for {invoice.customer}: {answer.text[:500]}")
            post_invoice(client, invoice)
            done = time.perf_counter()
            result.statuses.append(answer.status_code)
            items = answer.json()["items"] if answer.status_code == 200 else []
            result.served.append([str(item["product_id"]) for item in items])
            result.recommend_s.append(asked - started)
            result.feedback_s.append(done - asked)
            result.loop_s += done - started
    finally:
        client.close()
        service.stop()
    return result


def expected_rankings(
    backend: RecommenderBackend,
    at_cut: dict[str, tuple[str, ...]],
    invoices: list[Invoice],
    k: int,
) -> tuple[list[list[str]], list[list[str]]]:
    """Per invoice: the model's ranking of the history at the cut plus the invoices posted
    before (what the service must answer), and of the history at the cut alone (frozen)."""
    posted: dict[str, list[str]] = defaultdict(list)
    frozen_cache: dict[str, list[str]] = {}
    live, frozen = [], []
    for invoice in tqdm(invoices, desc="in-process rankings", unit="invoice"):
        customer = invoice.customer
        stored = list(at_cut.get(customer, ()))
        if customer not in frozen_cache:
            hits = backend.recommend(stored, k) if stored else []
            frozen_cache[customer] = [hit.product_id for hit in hits]
        frozen.append(frozen_cache[customer])
        history = [*stored, *posted[customer]]
        live.append([hit.product_id for hit in backend.recommend(history, k)] if history else [])
        posted[customer].extend(invoice.items)
    return live, frozen


def recall(ranked: list[list[str]], invoices: list[Invoice], k: int) -> np.ndarray:
    baskets = [set(invoice.items) for invoice in invoices]
    return per_customer_metrics(ranked=ranked, baskets=baskets, k=k)[f"recall@{k}"]


def segment_row(
    name: str,
    chosen: np.ndarray,
    invoices: list[Invoice],
    live: np.ndarray,
    frozen: np.ndarray,
    answered: np.ndarray,
) -> dict:
    """Mean over customers of their mean recall over the chosen invoices; paired bootstrap."""
    per_customer: dict[str, list[int]] = defaultdict(list)
    for index in np.flatnonzero(chosen):
        per_customer[invoices[index].customer].append(int(index))
    customers = sorted(per_customer)
    a = np.array([live[per_customer[c]].mean() for c in customers])
    b = np.array([frozen[per_customer[c]].mean() for c in customers])
    row = {
        "row": name,
        "customers": len(customers),
        "invoices": int(chosen.sum()),
        "answered_replay": float(answered[chosen].mean()) if chosen.any() else 0.0,
        "replay": float(a.mean()) if customers else 0.0,
        "frozen": float(b.mean()) if customers else 0.0,
    }
    if len(customers) >= 2:
        test = paired_bootstrap(a, b, n_resamples=10_000, seed=0)
        row["difference"] = [test.mean_difference, test.low, test.high, test.p_value]
    return row


def measure(run: Path, out: Path, args: argparse.Namespace) -> dict:
    mapping = yaml.safe_load((run / "config.yaml").read_text("utf-8"))
    config = parse_recommend_config(mapping, str(run / "config.yaml"))
    views = load_views(config)
    cut = views.test.split.cut
    k = config.k
    backend = load_recommender_backend(run / "model")
    invoices = invoices_after_cut(views.data.lines, cut)
    if args.limit:
        invoices = invoices[: args.limit]
    at_cut = dict(load_serving_data(run / "model").histories)  # what /recommend started from
    known = set(at_cut)  # customers with a purchase before the cut
    replayed = replay(run, out, invoices, k, args)

    expected_live, frozen_ranked = expected_rankings(backend, at_cut, invoices, k)
    mismatches = [
        index
        for index, (served, expected) in enumerate(zip(replayed.served, expected_live, strict=True))
        if served != expected
    ]
    live_recall = recall(replayed.served, invoices, k)
    frozen_recall = recall(frozen_ranked, invoices, k)
    answered = np.array([status == 200 for status in replayed.statuses])
    repeat = np.array([invoice.customer in known for invoice in invoices])
    seen: set[str] = set()
    first = np.zeros(len(invoices), dtype=bool)
    for index, invoice in enumerate(invoices):
        first[index] = invoice.customer not in seen
        seen.add(invoice.customer)
    everyone = np.ones(len(invoices), dtype=bool)
    rows = [
        segment_row(name, chosen, invoices, live_recall, frozen_recall, answered)
        for name, chosen in (
            ("repeat customers, every invoice after the cut", repeat),
            (
                "repeat customers, first invoice after the cut (the offline test basket)",
                repeat & first,
            ),
            ("repeat customers, later invoices", repeat & ~first),
            ("new customers, every invoice", ~repeat),
            (
                "new customers, later invoices (the first has no history either way)",
                ~repeat & ~first,
            ),
            ("all customers, every invoice", everyone),
        )
    ]
    metrics = json.loads((run / "metrics.json").read_text("utf-8"))
    served_system = metrics.get("served", {}).get("system")
    offline = next(
        (
            entry["test"][f"recall@{k}"]["mean"]
            for entry in metrics["systems"]
            if entry["name"] == served_system
        ),
        None,
    )
    latency = np.array(replayed.recommend_s) * 1000
    feedback = np.array(replayed.feedback_s) * 1000
    return {
        "limited": bool(args.limit),
        "run": str(run),
        "profile_customers": config.customers,
        "cut": str(cut.date()),
        "k": k,
        "served_system": served_system,
        "offline_test_recall": offline,
        "model_version": backend.version,
        "repeat_first": backend.repeat_first,
        "invoices": len(invoices),
        "events": int(sum(len(invoice.items) for invoice in invoices)),
        "customers": {
            "repeat": len({i.customer for i in invoices if i.customer in known}),
            "new": len({i.customer for i in invoices if i.customer not in known}),
        },
        "rows": rows,
        "served_equals_in_process": len(invoices) - len(mismatches),
        "mismatches": mismatches[:20],
        "restarted_at": replayed.restarted_at,
        "startup_s": replayed.startup_s,
        "loop_s": replayed.loop_s,
        "invoices_per_s": len(invoices) / replayed.loop_s,
        "events_per_s": sum(len(i.items) for i in invoices) / replayed.loop_s,
        "recommend_ms": {
            "p50": float(np.percentile(latency, 50)),
            "p99": float(np.percentile(latency, 99)),
            "max": float(latency.max()),
        },
        "feedback_ms": {
            "p50": float(np.percentile(feedback, 50)),
            "p99": float(np.percentile(feedback, 99)),
        },
        "load_average": os.getloadavg(),
        "pinning": {"server": args.server_cpus, "client": args.client_cpus},
    }


def render(result: dict) -> str:
    k = result["k"]
    lines = [
        "## Recommendation: a replay of the invoices after the cut through the live service",
        "",
        f"Run `{result['run']}` (customers slice: {result['profile_customers'] or 'all'}; "
        f"served: {result['served_system']}, {result['model_version']}, repeat-first "
        f"{'on' if result['repeat_first'] else 'off'}). {result['invoices']:,} invoices on or "
        f"after the cut {result['cut']} ({result['events']:,} purchase lines) of "
        f"{result['customers']['repeat']} repeat customers (a purchase before the cut) and "
        f"{result['customers']['new']} new customers, replayed in time order through "
        "`shopaug serve`: `POST /recommend {customer_id}` before each invoice, then its items "
        "to `POST /feedback` as purchase events. **Replay**: what the service answered, "
        "each customer's history growing with every posted invoice (model weights unchanged). "
        "**Frozen**: the ranking of the history at the cut stored with the model, what "
        "`/recommend` answered before purchases reached it (new customers: a 404, nothing).",
        "",
        f"| invoices of | customers | invoices | answered (replay) | R@{k} replay | "
        f"R@{k} frozen | Δ [95% CI], p |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        difference = row.get("difference")
        delta = (
            f"{difference[0]:+.4f} [{difference[1]:+.4f}, {difference[2]:+.4f}], "
            f"p={difference[3]:.2g}"
            if difference
            else "-"
        )
        lines.append(
            f"| {row['row']} | {row['customers']} | {row['invoices']} | "
            f"{row['answered_replay']:.3f} | {row['replay']:.4f} | {row['frozen']:.4f} | {delta} |"
        )
    offline = result["offline_test_recall"]
    first = result["rows"][1]
    lines += [
        "",
        f"R@{k} is per customer (the mean over their invoices in the row), then the mean over "
        "customers; Δ is replay - frozen, paired bootstrap over customers (10,000 resamples). "
        f"Check against the offline table: the frozen R@{k} of the repeat customers' first "
        f"invoice after the cut is {first['frozen']:.4f}; the run's metrics.json gives its "
        f"served system {offline if offline is None else f'{offline:.4f}'} on the same "
        "baskets. Served rankings equal to the ones the model computes in the benchmark's own "
        "process from the history at the cut plus the invoices posted before: "
        f"{result['served_equals_in_process']:,} of {result['invoices']:,}"
        + (
            f" (the service was restarted over the same store before invoice "
            f"{result['restarted_at']:,}: the second part was served from histories read back "
            "from the store)."
            if result["restarted_at"] is not None
            else "."
        ),
        "",
        "| replay (one client, one request at a time) | value |",
        "|---|---|",
        f"| invoices / s | {result['invoices_per_s']:.1f} |",
        f"| purchase events / s | {result['events_per_s']:.1f} |",
        f"| /recommend p50 / p99 / max (ms) | {result['recommend_ms']['p50']:.1f} / "
        f"{result['recommend_ms']['p99']:.1f} / {result['recommend_ms']['max']:.1f} |",
        f"| /feedback per invoice p50 / p99 (ms) | {result['feedback_ms']['p50']:.1f} / "
        f"{result['feedback_ms']['p99']:.1f} |",
        f"| replay loop (s, restart excluded) | {result['loop_s']:.1f} |",
        f"| service start-up (s) | {', '.join(f'{s:.1f}' for s in result['startup_s'])} |",
        "",
        "Latency is measured by the client, send to answer, on loopback; the server "
        + (
            f"pinned to CPU {result['pinning']['server']}, the client to "
            f"{result['pinning']['client']}"
            if result["pinning"]["server"]
            else "and the client unpinned"
        )
        + "; load average at the end "
        + ", ".join(f"{value:.1f}" for value in result["load_average"])
        + " (the machine was shared).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="A recommendation run directory (shopaug run).")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/out/recommend-replay")
    parser.add_argument("--limit", type=int, default=None, help="Replay the first N invoices.")
    parser.add_argument(
        "--restart-at", type=float, default=0.5, help="Restart the service at this share."
    )
    parser.add_argument("--server-cpus", default=None, help="taskset CPUs of the service.")
    parser.add_argument("--client-cpus", default=None, help="CPUs of this process.")
    parser.add_argument("--no-write", action="store_true", help="Do not write RESULTS.md.")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="Write the section from OUT/metrics.json of an earlier replay (its command kept).",
    )
    args = parser.parse_args()
    metrics_path = args.out / "metrics.json"
    if args.render_only:
        result = json.loads(metrics_path.read_text("utf-8"))
    else:
        if not (args.run / "model" / "customers.json").is_file():
            parser.error(
                f"{args.run}: no model/customers.json; run `shopaug run retail-quick` first"
            )
        args.out.mkdir(parents=True, exist_ok=True)
        result = measure(args.run, args.out, args)
        result["command"] = invocation()
        metrics_path.write_text(json.dumps(result, indent=2) + "\n", "utf-8")
    text = render(result)
    print(text)
    if args.limit or result.get("limited"):
        print("not written to RESULTS.md: --limit replays part of the invoices")
    elif not args.no_write:
        # the replay's own command, then this one when the section is rendered later
        command = f"{result['command']} && {invocation()}" if args.render_only else invocation()
        path = write_section("recommend-replay", command, text)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()

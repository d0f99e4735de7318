"""RecBole rows (BPR, LightGCN, SASRec) beside the recommendation baselines, on one split.

Usage:
    pip install -r benchmarks/requirements-recbole.txt && pip install --no-deps recbole==1.2.1
    SHOPAUG_DATA_DIR=/path/to/data nice -n 10 python benchmarks/recommend_recbole.py \\
        --profile retail-full --out benchmarks/out/recommend-recbole

The split, the customers, the catalog and the metrics are those of ``shopaug run retail-full``
(:func:`shopaug.experiment.recommend_data.load_views`); the baselines of the profile are fitted
and measured again in the same process (:func:`shopaug.experiment.recommend.baseline_systems`),
and every row goes through :func:`shopaug.experiment.recommend.measure_systems`: bootstrap
intervals over customers and the paired difference in Recall@20 against repeat purchase. How the
RecBole rows are trained and early-stopped: benchmarks/recbole_rows.py. The two-tower rows are
not retrained here (about 25 minutes); their figures are in the section recommend-online-retail.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
import warnings
from dataclasses import asdict
from pathlib import Path

from recbole_rows import ROWS, fit_row, import_recbole
from recommend import delta, fmt, interval, verdict
from results_file import write_section
from shopaug.experiment.recommend import baseline_systems, measure_systems
from shopaug.experiment.recommend_data import load_views
from shopaug.experiment.tasks import load_task
from shopaug.manifest import write_json


def table(metrics: dict) -> list[str]:
    k = metrics["k"]
    lines = [
        f"| system | valid R@{k} | test R@{k} [95% CI] | NDCG@{k} [95% CI] | MRR [95% CI] | "
        f"coverage@{k} | tail@{k} | Gini@{k} | Δ R@{k} vs repeat purchase | |",
        "|" + "---|" * 10,
    ]
    for entry in metrics["systems"]:
        test = entry["test"]
        lines.append(
            f"| {entry['name']} | {fmt(entry['validation'][f'recall@{k}']['mean'])} | "
            f"{interval(test[f'recall@{k}'])} | {interval(test[f'ndcg@{k}'])} | "
            f"{interval(test['mrr'])} | {fmt(test[f'coverage@{k}']['mean'], 3)} | "
            f"{fmt(test[f'tail_share@{k}']['mean'], 3)} | {fmt(test[f'gini@{k}']['mean'], 3)} | "
            f"{delta(entry)} | {verdict(entry)} |"
        )
    return lines


def budget_table(metrics: dict) -> list[str]:
    lines = [
        "| RecBole row | settings (RecBole defaults otherwise) | validation epochs run | "
        "best epoch = refit epochs | validation R@20 per epoch | wall seconds (both fits) |",
        "|---|---|---|---|---|---|",
    ]
    for entry in metrics["systems"]:
        if entry["kind"] != "recbole":
            continue
        info = entry["info"]
        curve = ", ".join(f"{v:.3f}" for v in info["validation_curve"])
        lines.append(
            f"| {entry['name']} | {info['budget']} | {info['epochs_run']} | "
            f"{info['best_epoch']} | {curve} | {info['seconds']:.0f} |"
        )
    return lines


def fingerprint(config, views, row_key: str) -> dict:
    """What a cached RecBole row depends on: the data, the split, the row and the seed."""
    from importlib.metadata import version

    return {
        "data_checksum": views.data.checksum,
        "cut": config.cut,
        "validation_days": config.validation_days,
        "customers": config.customers,
        "eval_customers": config.eval_customers,
        "seed": config.seed,
        "k": config.k,
        "depth": config.depth,
        "row": asdict(ROWS[row_key]),
        "recbole": version("recbole"),
    }


def recbole_row(key: str, config, views, cache: Path) -> dict:
    """The system entry of RecBole row ``key``, from ``cache/<key>.json`` when it holds this
    exact row on this split (an interrupted benchmark resumes), else trained now."""
    expected = json.loads(json.dumps(fingerprint(config, views, key), default=str))
    path = cache / f"{key}.json"
    if path.exists():
        stored = json.loads(path.read_text("utf-8"))
        if stored.get("fingerprint") == expected:
            logging.info("%s: reusing %s", ROWS[key].name, path)
            return stored["system"]
    with tempfile.TemporaryDirectory(prefix="recbole-") as work:
        fitted = fit_row(
            ROWS[key],
            views.validation,
            views.test,
            Path(work),
            seed=config.seed,
            k=config.k,
            depth=config.depth,
        )
    system = {"name": ROWS[key].name, "kind": "recbole", "runs": fitted.runs, "info": fitted.info}
    cache.mkdir(parents=True, exist_ok=True)
    write_json(path, {"fingerprint": expected, "system": system})
    return system


def measure(profile: str, keys: list[str], out: Path) -> dict:
    """Baselines and RecBole rows of ``profile`` on its split, measured together."""
    import_recbole()
    config = load_task(profile).config
    timings: dict[str, float] = {}
    started = time.perf_counter()
    views = load_views(config)
    valid, test = views.validation, views.test
    timings["load"] = time.perf_counter() - started

    start = time.perf_counter()
    systems = baseline_systems(config, valid, test)
    timings["baselines"] = time.perf_counter() - start
    result: dict = {}
    for key in [None, *keys]:  # measured and saved after each row: an interruption keeps them
        if key is not None:
            system = recbole_row(key, config, views, out / "rows")
            systems.append(system)
            timings[key] = system["info"]["seconds"]
        result = measure_systems(systems, valid, test, config)
        result["profile"] = profile
        result["depth"] = config.depth
        result["timings_s"] = {name: round(seconds, 1) for name, seconds in timings.items()}
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "metrics.json", result)
    return result


def section(result: dict, note: str) -> str:
    """The RESULTS.md section of a :func:`measure` result."""
    k = result["k"]
    recbole_names = [e["info"]["model"] for e in result["systems"] if e["kind"] == "recbole"]
    lines = [
        "## Recommendation: RecBole yardstick rows on the same split",
        "",
        f"Profile {result['profile']}: cut {result['cut']} (validation cut "
        f"{result['validation_cut']}); {result['customers']['test']} test customers, "
        f"{result['customers']['validation']} validation customers; catalog "
        f"{result['catalog']['test']} items. The baselines were fitted and measured again in "
        f"this run, beside RecBole 1.2.1's {', '.join(recbole_names)} trained on the same "
        "training lines; every row is scored by shopaug's own metrics (eval/recommend.py; no "
        f"history masking) over the top {result['depth']}, with 95 % bootstrap intervals over "
        f"customers and the paired bootstrap difference in Recall@{k} against repeat purchase.",
        "",
        *table(result),
        "",
        "RecBole rows train on every line before the validation cut and stop early on shopaug's "
        f"Recall@{k} of the validation baskets (RecBole's Trainer, our score); the best "
        "validation epoch fixes the number of epochs of a refit, from the same seed, on every "
        "line before the test cut (as the implicit baselines are fitted), which ranks the test "
        "customers. SASRec reads each customer's most recent purchases (MAX_ITEM_LIST_LENGTH "
        "below; the sequential view); BPR and LightGCN look customers up by id. Items first sold "
        "after the cut have no RecBole id (new-item recall 0, as for ALS/BPR).",
        "",
        *budget_table(result),
    ]
    if note:
        lines += ["", note]
    lines += [
        "",
        "Timings (s): " + ", ".join(f"{name} {s:.0f}" for name, s in result["timings_s"].items()),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="retail-full", help="Profile or config file.")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"Of {', '.join(ROWS)}.")
    parser.add_argument("--out", type=Path, required=True, help="Folder for metrics.json.")
    parser.add_argument("--section", default="recommend-recbole")
    parser.add_argument("--command", default="", help="The command line, for RESULTS.md.")
    parser.add_argument("--note", default="", help="A paragraph added under the tables.")
    parser.add_argument("--no-write", action="store_true", help="Do not touch RESULTS.md.")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="Measure nothing: write the section from the metrics.json in --out (written after "
        "the baselines and after each RecBole row).",
    )
    args = parser.parse_args()
    keys = [key.strip() for key in args.rows.split(",") if key.strip()]
    unknown = sorted(set(keys) - set(ROWS))
    if unknown:
        parser.error(f"unknown row(s) {unknown}; expected some of {sorted(ROWS)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # RecBole 1.2.1 under pandas 3 / torch 2.13: chained-assignment and deprecation warnings from
    # code paths that do nothing here (no missing values to fill, no GPU scaler)
    warnings.filterwarnings("ignore", module=r"recbole\.")
    metrics_path = args.out / "metrics.json"
    if args.render_only:
        if not metrics_path.exists():
            parser.error(f"--render-only: {metrics_path} does not exist; measure first")
        result = json.loads(metrics_path.read_text("utf-8"))
    else:
        result = measure(args.profile, keys, args.out)
    text = section(result, args.note)
    print(text)
    if not args.no_write:
        command = args.command or (
            f"python benchmarks/recommend_recbole.py --profile {result['profile']} --out {args.out}"
        )
        write_section(args.section, command, text)


if __name__ == "__main__":
    main()

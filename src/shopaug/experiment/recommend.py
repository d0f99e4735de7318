"""The recommendation task of ``shopaug run`` (``task: recommend``): next-basket ranking on
UCI Online Retail, baselines against a text two-tower model trained with each negative sampler.

Order of a run: load and clean (:mod:`shopaug.data.retail`), split by time (validation cut for
selection and early stopping, test cut for the figure), encode item names once through the
embedding cache, fit the baselines on each split, train every two-tower row on the validation
split, rank each split's customers, measure (:mod:`shopaug.eval.recommend`), choose the served
system on validation recall only, and write the run directory: ``config.yaml``,
``manifest.json``, ``metrics.json``, ``report.html``, ``samples.parquet`` (the training
examples of the served row) and ``model/`` (the best two-tower row, safetensors, with the item
titles and each customer's history up to the cut: what ``shopaug serve`` answers ``/recommend``
with, see :mod:`shopaug.serve.recommender_backend`).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from shopaug.augment.samples import samples_frame, write_samples
from shopaug.config import to_mapping
from shopaug.eval.recommend import evaluate_recommendations, per_customer_metrics
from shopaug.eval.significance import paired_bootstrap
from shopaug.experiment.recommend_data import (
    TUNED_BASELINES,
    RecommendConfig,
    SplitView,
    TwoTowerRow,
    load_views,
    parse_recommend_config,
)
from shopaug.experiment.recommend_report import render_recommend_report
from shopaug.experiment.recommend_systems import (
    baseline,
    rank_two_tower,
    rank_with,
    repeat_then,
    train_row,
    training_examples,
    tune_tifu_knn,
)
from shopaug.manifest import prepare_run_dir, write_json, write_manifest
from shopaug.models.two_tower import TwoTowerRecommender, save_serving_data

logger = logging.getLogger(__name__)
#: Every system is compared with this one (paired bootstrap over customers).
REFERENCE = "repeat purchase"
#: ... and with this one, the strongest repeat-aware baseline of the literature, when it ran.
STRONGEST = "TIFU-KNN"
BASELINE_NAMES = {
    "popularity": "popularity",
    "repeat": REFERENCE,
    "cooccurrence": "item-item co-occurrence",
    "als": "ALS (implicit)",
    "bpr": "BPR (implicit)",
    "decayed_frequency": "personal frequency, time-decayed",
    "tifu_knn": "TIFU-KNN",
}


def parse_config(mapping: Mapping[str, Any], source: str) -> RecommendConfig:
    return parse_recommend_config(mapping, source)


def item_texts(
    titles: Mapping[str, str], catalog: tuple[str, ...], augment: set[str], config: RecommendConfig
) -> list[str]:
    """The text each item is encoded from: its title, plus generated text for ``augment``."""
    texts = [titles[item] for item in catalog]
    if not augment:
        return texts
    from shopaug.llm.prompts import QUERY_STOPS, query_prompt
    from shopaug.llm.registry import GeneratorConfig, build_generator

    settings = GeneratorConfig(**{"seed": config.seed, **config.generator})
    generator = build_generator(settings)
    rows = [row for row, item in enumerate(catalog) if item in augment]
    outputs = generator.generate(
        [query_prompt([], texts[row]) for row in rows],
        max_tokens=settings.max_tokens,
        temperature=settings.temperature,
        seed=settings.seed,
        stop=list(QUERY_STOPS),
    )
    for row, extra in zip(rows, outputs, strict=True):
        if extra.strip():
            texts[row] = f"{texts[row]} | {extra.strip()}"
    logger.info("augmented the text of %d items without history (%s)", len(rows), generator.id)
    return texts


def run(config: RecommendConfig, out: Path, command: str) -> dict[str, Any]:
    """Run the task into ``out``; returns the metrics.json payload."""
    from shopaug.retrieval.retrievers import build_encoder

    started = time.perf_counter()
    timings: dict[str, float] = {}
    run_dir = prepare_run_dir(out)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(to_mapping(config), sort_keys=False))
    views = load_views(config)
    data, splits, valid, test = views.data, views.splits, views.validation, views.test
    timings["load"] = time.perf_counter() - started

    systems = baseline_systems(config, valid, test)
    timings["baselines"] = time.perf_counter() - started - timings["load"]

    start = time.perf_counter()
    encoder = build_encoder(config.encoder) if config.rows else None  # no rows: no text model
    no_history = set(test.catalog) - set(valid.split.train["item_id"])
    vectors: dict[bool, Any] = {}

    def build_model(row: TwoTowerRow) -> TwoTowerRecommender:
        if row.augment_text not in vectors:
            texts = item_texts(
                data.titles, test.catalog, no_history if row.augment_text else set(), config
            )
            assert encoder is not None  # built whenever there are rows
            vectors[row.augment_text] = encoder.encode(texts)
        return TwoTowerRecommender(
            test.catalog, vectors[row.augment_text], max_history=config.max_history
        )

    trained: dict[str, Any] = {}
    for row in config.rows:
        fitted = train_row(row, build_model, valid, config, run_dir / "training" / _slug(row.name))
        trained[row.name] = fitted
        runs = {
            "validation": rank_two_tower(fitted.model, valid, config.depth),
            "test": rank_two_tower(fitted.model, test, config.depth),
        }
        systems.append({"name": row.name, "kind": "two-tower", "runs": runs, "info": fitted.info})
    timings["two_tower"] = time.perf_counter() - start
    if config.repeat_then:
        systems += repeat_then_systems(systems, valid, test, config)

    result = measure_systems(systems, valid, test, config)
    served = _serve(result, trained, run_dir, (valid, test), data.titles, config)
    result["served"] = served
    write_json(run_dir / "metrics.json", result)
    timings["total"] = time.perf_counter() - started
    write_manifest(
        run_dir,
        command=command or "shopaug run",
        config=to_mapping(config),
        data={
            **data.summary(),
            "source": data.source,
            "checksums": {"online_retail": data.checksum},
            "validation_split": splits.validation.counts,
            "test_split": splits.test.counts,
        },
        seeds={"run": config.seed},
        timings=timings,
        metrics={e["name"]: e["test"][f"recall@{config.k}"]["mean"] for e in result["systems"]},
        models={
            "served": served.get("model_dir", ""),
            "item_encoder": encoder.id if encoder else "",
        },
    )
    render_recommend_report(result, run_dir / "report.html")
    return result


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def baseline_systems(
    config: RecommendConfig, valid: SplitView, test: SplitView
) -> list[dict[str, Any]]:
    """Each baseline of ``config`` fitted on each split's training baskets and ranked: the
    ``systems`` entries :func:`measure_systems` reads (``name``, ``kind``, ``runs``, ``info``)."""
    systems: list[dict[str, Any]] = []
    for key in config.baselines:
        start = time.perf_counter()
        tuned, info = tune_tifu_knn(key, valid, config) if key in TUNED_BASELINES else (None, {})
        runs = {
            view_name: rank_with(baseline(key, view, config, tuned), view, config.depth)
            for view_name, view in (("validation", valid), ("test", test))
        }
        systems.append(
            {
                "name": BASELINE_NAMES[key],
                "kind": "repeat-aware" if key in TUNED_BASELINES else "baseline",
                "runs": runs,
                "info": {**info, "seconds": round(time.perf_counter() - start, 1)},
            }
        )
    return systems


def repeat_then_systems(
    systems: list[dict[str, Any]], valid: SplitView, test: SplitView, config: RecommendConfig
) -> list[dict[str, Any]]:
    """ "<first>, then X": the customer's own past items in <first>'s order, then X's ranking of
    the rest (:func:`~shopaug.experiment.recommend_systems.repeat_then`).

    <first> is repeat purchase, and also the repeat-aware system (personal frequency, TIFU-KNN)
    with the best validation Recall@k when that is not repeat purchase. X is a learned system:
    one among the baselines that are not repeat-aware (co-occurrence, ALS, BPR) and one among
    the two-tower rows, each the one whose combined system has the best validation Recall@k
    (all X adds are items new to the customer, so this is X judged on exploration). The
    combined systems are then measured like every other. None without a repeat-purchase
    baseline.
    """
    by_name = {system["name"]: system for system in systems}
    if REFERENCE not in by_name:
        return []
    aware = [s for s in systems if s["kind"] == "repeat-aware"]
    firsts = [by_name[REFERENCE]]
    if aware:
        best_aware = max(
            [by_name[REFERENCE], *aware],
            key=lambda s: (validation_recall(s["runs"]["validation"], valid, config.k), s["name"]),
        )
        if best_aware["name"] != REFERENCE:
            firsts.append(best_aware)
    fills = {
        "baseline": [
            s
            for s in systems
            if s["kind"] == "baseline" and s["name"] not in (REFERENCE, "popularity")
        ],
        "two-tower": [s for s in systems if s["kind"] == "two-tower"],
    }
    combined = []
    for first in firsts:
        for kind, candidates in fills.items():
            if not candidates:
                continue
            options = []
            for candidate in candidates:
                runs = {
                    split: repeat_then(
                        first["runs"][split], candidate["runs"][split], view, config.depth
                    )
                    for split, view in (("validation", valid), ("test", test))
                }
                score = validation_recall(runs["validation"], valid, config.k)
                options.append((score, candidate["name"], runs))
            score, then, runs = max(options, key=lambda option: (option[0], option[1]))
            info = {
                "first": first["name"],
                "then": then,
                "then_chosen_on": "validation recall of the combined system",
            }
            combined.append(
                {
                    "name": f"{first['name']}, then {then}",
                    "kind": f"repeat + {kind}",
                    "runs": runs,
                    "info": info,
                }
            )
    return combined


def validation_recall(ranked: Mapping[str, Sequence[str]], valid: SplitView, k: int) -> float:
    """Mean Recall@k of a validation ranking over the validation customers (no bootstrap)."""
    customers = sorted(valid.truth.baskets)
    values = per_customer_metrics(
        ranked=[list(ranked[c]) for c in customers],
        baskets=[valid.truth.baskets[c] for c in customers],
        k=k,
    )
    return float(values[f"recall@{k}"].mean())


def measure_systems(
    systems: list[dict[str, Any]], valid: SplitView, test: SplitView, config: RecommendConfig
) -> dict[str, Any]:
    """Metrics with intervals per system and split, paired differences against the reference.

    Args:
        systems: ``{"name", "kind", "runs": {"validation": ranked, "test": ranked}, "info"}``
            per system, ``ranked`` mapping each customer of the split to item ids in rank order.
        valid: The validation split's view.
        test: The test split's view.
        config: ``k``, ``bootstrap`` and ``seed`` of the measurement.
    """
    k = config.k
    key = f"recall@{k}"
    entries = []
    per_customer: dict[str, dict[str, float]] = {}
    split_customers: dict[str, int] = {}
    for system in systems:
        entry: dict[str, Any] = {
            "name": system["name"],
            "kind": system["kind"],
            "info": system["info"],
        }
        for split_name, view in (("validation", valid), ("test", test)):
            measured = evaluate_recommendations(
                system["runs"][split_name],
                view.truth,
                k=k,
                n_resamples=config.bootstrap,
                seed=config.seed,
            )
            entry[split_name] = {
                **measured["metrics"],
                **{name: {"mean": value} for name, value in measured["exposure"].items()},
            }
            if split_name == "test":
                per_customer[system["name"]] = measured["per_customer"][key]
                entry["new_item_customers"] = measured["new_item_customers"]
                split_customers = {
                    part: measured[f"{part}_customers"] for part in ("repeat", "explore")
                }
        entries.append(entry)
    for reference_name, field_name in ((REFERENCE, "vs_reference"), (STRONGEST, "vs_tifu_knn")):
        if reference_name not in per_customer:
            continue
        reference = per_customer[reference_name]
        ids = sorted(reference)
        for entry in entries:
            if entry["name"] == reference_name:
                continue
            ours = per_customer[entry["name"]]
            paired = paired_bootstrap(
                [ours[c] for c in ids],
                [reference[c] for c in ids],
                n_resamples=config.bootstrap,
                seed=config.seed,
            )
            entry[field_name] = {
                "reference": reference_name,
                "metric": key,
                "difference": paired.mean_difference,
                "ci95": [paired.low, paired.high],
                "p_value": paired.p_value,
            }
    chosen = max(entries, key=lambda e: (e["validation"][key]["mean"], e["name"]))
    return {
        "task": "recommend",
        "dataset": "online-retail",
        "k": k,
        "reference": REFERENCE,
        "customers": {"validation": len(valid.customers), "test": len(test.customers)},
        "catalog": {"validation": len(valid.catalog), "test": len(test.catalog)},
        "new_items": {"validation": len(valid.split.new_items), "test": len(test.split.new_items)},
        "split_customers": split_customers,
        "cut": str(test.split.cut),
        "validation_cut": str(valid.split.cut),
        "systems": entries,
        "selected": {"system": chosen["name"], "on": f"validation {key}"},
    }


def _serve(
    result: dict[str, Any],
    trained: dict[str, Any],
    run_dir: Path,
    views: tuple[SplitView, SplitView],
    titles: Mapping[str, str],
    config: RecommendConfig,
) -> dict[str, Any]:
    """Copy the best two-tower row (by validation recall) to ``model/`` with the titles and
    every customer's history before the test cut (what the test figure ranked from); its
    examples go to ``samples.parquet``. When "repeat purchase, then" that row has the better
    validation recall, the service ranks each customer's own past items first too
    (``repeat_first``): the served system is the best one that can be served, even when a
    baseline (not saved as a model) won the selection."""
    valid, test = views
    key = f"recall@{config.k}"
    rows = [e for e in result["systems"] if e["kind"] == "two-tower"]
    if not rows:
        return {}
    best = max(rows, key=lambda e: (e["validation"][key]["mean"], e["name"]))
    # the servable systems are the two-tower rows and "repeat purchase, then <best row>":
    # the one of them with the best validation recall is served
    combined = [
        e
        for e in result["systems"]
        if e["kind"] == "repeat + two-tower" and e["info"]["first"] == REFERENCE
    ]
    chosen = max(
        [best, *combined], key=lambda e: (e["validation"][key]["mean"], e["kind"] == "two-tower")
    )
    repeat_first = chosen is not best
    model_dir = run_dir / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    model = trained[best["name"]].model
    model.save(model_dir)
    histories = test.split.histories()
    save_serving_data(
        model_dir,
        model,
        titles=titles,
        histories=histories,
        cut=str(test.split.cut.date()),
        repeat_first=repeat_first,
    )
    examples = training_examples(valid, config)
    frame = samples_frame(
        [
            {
                "query_id": hashlib.sha256(e.query.encode()).hexdigest()[:16],
                "query": e.query,
                "product_id": e.positive,
                "label": 1,
                "kind": "positive",
                "method": "next-basket",
                "source": "online-retail",
                "seed": config.seed,
                "score": None,
                "rank": None,
            }
            for e in examples
        ]
    )
    write_samples(
        frame.sort_values(["query", "product_id"], kind="stable"),
        run_dir / "samples.parquet",
        scrub_pii=False,
    )
    return {
        "system": chosen["name"],
        "repeat_first": repeat_first,
        "model_dir": str(model_dir),
        "kind": "two-tower-recommender",
        "customers": len(histories),
    }


def summary_lines(result: Mapping[str, Any]) -> list[str]:
    """The table the CLI prints after a run."""
    k = result["k"]
    lines = [
        f"online-retail: {result['customers']['test']} test customers, cut {result['cut']}, "
        f"{result['new_items']['test']} new items",
        f"{'system':<34} {'valid R@' + str(k):>10} {'R@' + str(k):>7}  {'95% CI':<15} "
        f"{'NDCG':>6} {'MRR':>6} {'cov':>5} {'newR':>5} {'repR':>5} {'expR':>5}",
    ]
    for entry in result["systems"]:
        test = entry["test"]
        recall = test[f"recall@{k}"]
        low, high = recall["ci95"]
        interval = "[-, -]" if low is None else f"[{low:.3f}, {high:.3f}]"
        new = test[f"new_recall@{k}"]["mean"]
        split = [test.get(f"{part}_recall@{k}", {}).get("mean") for part in ("repeat", "explore")]
        lines.append(
            f"{entry['name'][:34]:<34} {entry['validation'][f'recall@{k}']['mean']:>10.4f} "
            f"{recall['mean']:>7.4f}  {interval:<15} {test[f'ndcg@{k}']['mean']:>6.4f} "
            f"{test['mrr']['mean']:>6.4f} {test[f'coverage@{k}']['mean']:>5.2f} "
            f"{'-' if new is None else f'{new:.3f}':>5} "
            + " ".join(f"{'-' if v is None else f'{v:.3f}':>5}" for v in split)
        )
    lines.append(f"chosen on validation: {result['selected']['system']}")
    return lines

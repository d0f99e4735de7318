"""The CTR task of ``shopaug run`` (``task: ctr``): ad click models on the Open Bandit sample.

Every (policy, campaign) log is cut by time: the earlier part trains (its last
``validation_fraction`` is held out to choose the served variant), the later ``test_fraction``
is read once for the figures. Each variant (learner x position handling x negative rate) is
trained on the same rows and scored on the same test impressions: AUC, log loss, normalized
entropy (log loss over the training base rate's) and expected calibration error with bootstrap
intervals, a reliability diagram, and off-policy estimates (IPS, SNIPS, DR) of the policy that
ranks by its predicted CTR, on the uniform-random test logs.

Where the signal is (``feature_sets``): each of ``feature_models`` with the slot as a feature,
reading one :data:`~shopaug.models.ctr.FEATURE_SETS` entry at a time (the item alone, the item,
its slot and their cross, the context alone, ...). How the signal grows with data
(``learning_curve``): the same learners on nested random fractions of the training rows, scored
on the same test impressions.

The estimators are validated where the truth is known: the uniform-random policy's value,
estimated from the Thompson-sampling (bts) test logs with their propensities, against its
on-policy click rate in the random test logs of the same days.

The run directory holds ``config.yaml``, ``manifest.json``, ``metrics.json``, ``report.html``
and ``model/`` (the chosen variant retrained on the whole training window, its items per
campaign in ``model/items.json``), as ``shopaug run`` does for search.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from shopaug.config import from_mapping, to_mapping
from shopaug.data.open_bandit import (
    CAMPAIGNS,
    POLICIES,
    BanditLog,
    candidate_table,
    impression_table,
    load_open_bandit,
    time_split,
)
from shopaug.errors import ConfigError
from shopaug.eval import calibration, off_policy
from shopaug.eval.ctr_report import render_ctr_report
from shopaug.experiment.ctr_privacy import fit_model, parse_privacy, privacy_label
from shopaug.manifest import prepare_run_dir, write_json, write_manifest
from shopaug.models.ctr import (
    FEATURE_SETS,
    POSITION_MODES,
    SERVING_POSITION,
    CtrModel,
    CtrSettings,
)
from shopaug.models.ctr_estimators import ESTIMATORS, EstimatorSettings

logger = logging.getLogger(__name__)

DATASETS = ("open-bandit",)


@dataclass
class CtrRunConfig:
    """A CTR run (the YAML keys; ``estimator`` is a mapping of
    :class:`~shopaug.models.ctr_estimators.EstimatorSettings`, ``privacy`` one of DP-SGD
    settings for the neural model, see :mod:`shopaug.experiment.ctr_privacy`)."""

    data: str = "open-bandit"
    data_dir: str | None = None
    campaigns: tuple[str, ...] = CAMPAIGNS
    train_policies: tuple[str, ...] = POLICIES
    rows: int | None = None
    test_fraction: float = 0.3
    validation_fraction: float = 0.2
    models: tuple[str, ...] = ("logistic", "lightgbm", "neural")
    positions: tuple[str, ...] = ("feature", "ipw", "none")
    negative_rates: tuple[float, ...] = (1.0, 0.1)
    policy_temperature: float = 0.5
    calibration_bins: int = 10
    bootstrap: int = 1000
    seed: int = 0
    feature_models: tuple[str, ...] = ("logistic", "lightgbm")
    feature_sets: tuple[str, ...] = ()
    learning_curve: tuple[float, ...] = ()
    estimator: EstimatorSettings = field(default_factory=EstimatorSettings)
    privacy: dict[str, Any] = field(default_factory=dict)

    def variants(self) -> list[CtrSettings]:
        return [
            CtrSettings(model, position, rate, self.seed, self.estimator)
            for model in self.models
            for position in self.positions
            for rate in self.negative_rates
        ]


def _check_names(source: str, key: str, values: tuple[Any, ...], known: tuple[Any, ...]) -> None:
    unknown = [v for v in values if v not in known]
    if unknown or not values:
        raise ConfigError(
            f"{source}: {key} {list(values)!r}; expected a non-empty list of {', '.join(known)}"
        )


def parse_config(mapping: Mapping[str, Any], source: str) -> CtrRunConfig:
    """The run config of a YAML mapping (without ``task``); unknown keys name the file."""
    body = dict(mapping)
    estimator = from_mapping(EstimatorSettings, body.pop("estimator", None), section="estimator")
    privacy = body.pop("privacy", None)
    config = from_mapping(CtrRunConfig, body, section=source)
    config = CtrRunConfig(**{**asdict(config), "estimator": estimator})
    config.privacy = parse_privacy(privacy, source=source, models=config.models)
    if config.data not in DATASETS:
        raise ConfigError(f"{source}: data {config.data!r}; expected one of {', '.join(DATASETS)}")
    _check_names(source, "campaigns", config.campaigns, CAMPAIGNS)
    _check_names(source, "train_policies", config.train_policies, POLICIES)
    _check_names(source, "models", config.models, tuple(ESTIMATORS))
    _check_names(source, "positions", config.positions, POSITION_MODES)
    _check_names(source, "feature_models", config.feature_models, tuple(ESTIMATORS))
    if config.feature_sets:
        _check_names(source, "feature_sets", config.feature_sets, tuple(FEATURE_SETS))
    if not all(0 < fraction <= 1 for fraction in config.learning_curve):
        raise ConfigError(f"{source}: learning_curve must list fractions in (0, 1]")
    if not all(0 < rate <= 1 for rate in config.negative_rates) or not config.negative_rates:
        raise ConfigError(f"{source}: negative_rates must be numbers in (0, 1]")
    for key in ("test_fraction", "validation_fraction"):
        if not 0 < getattr(config, key) < 1:
            raise ConfigError(f"{source}: {key} must be in (0, 1)")
    if config.rows is not None and config.rows < 100:
        raise ConfigError(f"{source}: rows is {config.rows}; expected at least 100 (or null)")
    if config.policy_temperature <= 0 or config.bootstrap < 10:
        raise ConfigError(f"{source}: policy_temperature > 0 and bootstrap >= 10 are required")
    return config


@dataclass
class Split:
    """Training, validation and test logs of every (policy, campaign) read."""

    train: list[BanditLog] = field(default_factory=list)
    valid: list[BanditLog] = field(default_factory=list)
    test: list[BanditLog] = field(default_factory=list)

    def table(self, part: str) -> pd.DataFrame:
        return pd.concat([impression_table(log) for log in getattr(self, part)], ignore_index=True)

    def test_logs(self, policy: str) -> list[BanditLog]:
        return [log for log in self.test if log.policy == policy]


def load_split(config: CtrRunConfig) -> tuple[Split, dict[str, Any]]:
    """Read and cut every log; the random logs are always read (they are the OPE truth)."""
    split, data = Split(), {}
    for policy in POLICIES:
        for campaign in config.campaigns:
            log = load_open_bandit(policy, campaign, root=config.data_dir)
            if config.rows is not None:
                log = log.head(config.rows)
            early, test = time_split(log, config.test_fraction)
            train, valid = time_split(early, config.validation_fraction)
            split.test.append(test)
            if policy in config.train_policies:
                split.train.append(train)
                split.valid.append(valid)
            data[log.name] = {
                "impressions": len(log.impressions),
                "clicks": int(log.impressions["click"].sum()),
                "items": log.n_items,
                "file": str(log.source),
                "test_from": str(test.impressions["timestamp"].iloc[0]),
            }
    return split, data


def _ope_terms(
    model: CtrModel | None, logs: list[BanditLog], config: CtrRunConfig, policy: str
) -> dict[str, np.ndarray]:
    """Per-round IPS weights and terms (and DR terms with a model) pooled over campaigns, for
    the ``softmax``/``greedy`` ranking by the model's CTR or the ``uniform`` policy."""
    pooled: dict[str, list[np.ndarray]] = {"weights": [], "ips": [], "dr": []}
    for log in logs:
        frame = log.impressions
        n, n_items = len(frame), log.n_items
        actions = frame["item_id"].to_numpy()
        slots = frame["position"].to_numpy() - 1
        rewards = frame["click"].to_numpy()
        if policy == "uniform":
            dist = off_policy.uniform_policy(rounds=n, n_items=n_items, n_slots=3)
        else:
            assert model is not None
            scores = model.predict(candidate_table(log, position=SERVING_POSITION))
            scores = scores.reshape(n, n_items)
            dist = (
                off_policy.greedy_ranking(scores, n_slots=3)
                if policy == "greedy"
                else off_policy.softmax_policy(
                    np.log(np.clip(scores, 1e-12, None)),
                    n_slots=3,
                    temperature=config.policy_temperature,
                )
            )
        weights = off_policy.importance_weights(
            action_dist=dist,
            actions=actions,
            slots=slots,
            propensities=frame["propensity_score"].to_numpy(),
        )
        pooled["weights"].append(weights)
        pooled["ips"].append(off_policy.ips_terms(rewards=rewards, weights=weights))
        if model is not None:
            logged_slot = candidate_table(log, position=SERVING_POSITION).assign(
                position=np.repeat(frame["position"].to_numpy(), n_items)
            )
            q = np.zeros((n, n_items, 3))
            q[np.arange(n), :, slots] = model.predict(logged_slot).reshape(n, n_items)
            pooled["dr"].append(
                off_policy.dr_terms(
                    rewards=rewards,
                    weights=weights,
                    action_dist=dist,
                    estimated_rewards=q,
                    actions=actions,
                    slots=slots,
                )
            )
    return {key: np.concatenate(parts) for key, parts in pooled.items() if parts}


def off_policy_estimates(terms: Mapping[str, np.ndarray], config: CtrRunConfig) -> dict[str, Any]:
    """IPS, SNIPS and (with DR terms) DR with bootstrap intervals, and the mean weight."""

    def estimate(numerators: np.ndarray, denominators: np.ndarray | None = None) -> Any:
        return off_policy.bootstrap_estimate(
            numerators, denominators, n_resamples=config.bootstrap, seed=config.seed
        ).as_dict()

    out = {
        "ips": estimate(terms["ips"]),
        "snips": estimate(terms["ips"], terms["weights"]),
        "mean_weight": float(terms["weights"].mean()),
        "rounds_with_weight": int((terms["weights"] > 0).sum()),
    }
    if "dr" in terms:
        out["dr"] = estimate(terms["dr"])
    return out


def score_predictions(
    labels: np.ndarray,
    predicted: np.ndarray,
    config: CtrRunConfig,
    base_rate: float | None = None,
) -> dict[str, Any]:
    """Calibration, AUC and log loss of ``predicted`` with the config's bins and bootstrap (and
    the normalized entropy against ``base_rate``, the training click rate, when given)."""
    return calibration.summarize_probabilities(
        labels=labels,
        probabilities=predicted,
        bins=config.calibration_bins,
        n_resamples=config.bootstrap,
        seed=config.seed,
        base_rate=base_rate,
    )


def _study_row(
    train: pd.DataFrame,
    test: pd.DataFrame,
    settings: CtrSettings,
    config: CtrRunConfig,
    base_rate: float,
) -> dict[str, Any]:
    """One model of the feature study or the learning curve, fitted on ``train``, scored on
    ``test`` against the full training window's ``base_rate``."""
    tick = time.perf_counter()
    model, _ = fit_model(train, settings, config.privacy)
    scores = score_predictions(test["click"].to_numpy(), model.predict(test), config, base_rate)
    return {
        "model": settings.model,
        "features": settings.features,
        "train_impressions": len(train),
        "train_clicks": int(train["click"].sum()),
        **scores,
        "seconds": round(time.perf_counter() - tick, 2),
    }


def feature_study(
    train: pd.DataFrame, test: pd.DataFrame, config: CtrRunConfig, base_rate: float
) -> list[dict[str, Any]]:
    """Each of ``feature_models`` (slot as a feature, all impressions) on each feature set."""
    return [
        _study_row(
            train,
            test,
            CtrSettings(model, "feature", 1.0, config.seed, config.estimator, features),
            config,
            base_rate,
        )
        for model in config.feature_models
        for features in config.feature_sets
    ]


def learning_curve(
    train: pd.DataFrame, test: pd.DataFrame, config: CtrRunConfig, base_rate: float
) -> list[dict[str, Any]]:
    """Each of ``feature_models`` (all features, slot as a feature) trained on nested random
    fractions of the training rows (one seeded permutation, its first ``fraction``)."""
    order = np.random.default_rng(config.seed).permutation(len(train))
    rows = []
    for fraction in config.learning_curve:
        part = train.iloc[np.sort(order[: max(1, round(fraction * len(train)))])]
        for model in config.feature_models:
            settings = CtrSettings(model, "feature", 1.0, config.seed, config.estimator)
            row = _study_row(part.reset_index(drop=True), test, settings, config, base_rate)
            rows.append({"fraction": fraction, **row})
    return rows


def _variant_name(settings: CtrSettings) -> str:
    rate = "all impressions" if settings.negative_rate == 1 else f"neg {settings.negative_rate:g}"
    return f"{settings.model} / position {settings.position} / {rate}"


def _ope_validation(split: Split, chosen: CtrModel, config: CtrRunConfig) -> dict[str, Any]:
    """The uniform policy estimated from the bts test logs vs its on-policy value."""
    clicks = np.concatenate(
        [log.impressions["click"].to_numpy() for log in split.test_logs("random")]
    )
    truth = off_policy.bootstrap_estimate(clicks, n_resamples=config.bootstrap, seed=config.seed)
    terms = _ope_terms(chosen, split.test_logs("bts"), config, "uniform")
    estimates = off_policy_estimates(terms, config)
    for name in off_policy.ESTIMATORS:
        value = estimates[name]["value"]
        low, high = estimates[name]["ci95"]
        estimates[name]["covers_truth"] = bool(low <= truth.value <= high)
        estimates[name]["relative_error"] = (value - truth.value) / truth.value
    return {"truth": truth.as_dict(), "estimates": estimates, "rounds": int(clicks.size)}


def run(config: CtrRunConfig, out: Path, command: str) -> dict[str, Any]:
    """Train and evaluate every variant into ``out``; returns the metrics.json payload."""
    started = time.perf_counter()
    run_dir = prepare_run_dir(out)
    (run_dir / "config.yaml").write_text(
        yaml.safe_dump({"task": "ctr", **to_mapping(config)}, sort_keys=False), "utf-8"
    )
    split, data = load_split(config)
    train, valid, test = split.table("train"), split.table("valid"), split.table("test")
    random_test = split.test_logs("random")
    test_labels = test["click"].to_numpy()
    base_rate = float(train["click"].mean())
    constant = np.full(len(test), base_rate)
    rows = [
        {
            "name": "base rate (constant)",
            "kind": "baseline",
            **score_predictions(test_labels, constant, config, base_rate),
        }
    ]
    curves = {}
    models: dict[str, CtrModel] = {}
    for settings in config.variants():
        name = _variant_name(settings) + privacy_label(config.privacy)
        tick = time.perf_counter()
        model, guarantee = fit_model(train, settings, config.privacy)
        predicted = model.predict(test)
        valid_loss = calibration.log_losses(
            labels=valid["click"].to_numpy(), probabilities=model.predict(valid)
        ).mean()
        entry = {
            "name": name,
            "kind": "model",
            "settings": {k: v for k, v in asdict(settings).items() if k != "estimator"},
            "validation_log_loss": float(valid_loss),
            **score_predictions(test_labels, predicted, config, base_rate),
            "ope": off_policy_estimates(_ope_terms(model, random_test, config, "softmax"), config),
            "seconds": round(time.perf_counter() - tick, 2),
            **({"privacy": guarantee.to_json()} if guarantee else {}),
        }
        rows.append(entry)
        curves[name] = calibration.reliability_bins(
            labels=test_labels, probabilities=predicted, bins=config.calibration_bins
        )
        models[name] = model
        logger.info(
            "%s: test AUC %.4f, log loss %.5f",
            name,
            entry["auc"]["mean"],
            entry["log_loss"]["mean"],
        )
    chosen = min((r for r in rows if r["kind"] == "model"), key=lambda r: r["validation_log_loss"])
    chosen_model = models[chosen["name"]]
    greedy = off_policy_estimates(_ope_terms(chosen_model, random_test, config, "greedy"), config)
    logged = np.concatenate([log.impressions["click"].to_numpy() for log in random_test])
    result = {
        "task": "ctr",
        "dataset": config.data,
        "campaigns": list(config.campaigns),
        "impressions": {"train": len(train), "validation": len(valid), "test": len(test)},
        "clicks": {
            "train": int(train["click"].sum()),
            "validation": int(valid["click"].sum()),
            "test": int(test_labels.sum()),
        },
        "selected": {"system": chosen["name"], "by": "validation log loss"},
        "base_rate": base_rate,
        "variants": rows,
        "feature_study": feature_study(train, test, config, base_rate),
        "learning_curve": learning_curve(train, test, config, base_rate),
        "reliability": {name: table.as_dict() for name, table in curves.items()},
        "ope": {
            "logged_policy": off_policy.bootstrap_estimate(
                logged, n_resamples=config.bootstrap, seed=config.seed
            ).as_dict(),
            "greedy_chosen": greedy,
            "policy_temperature": config.policy_temperature,
            "validation": _ope_validation(split, chosen_model, config),
        },
    }
    served = _serve(run_dir, split, config, models[chosen["name"]].settings)
    result["served"] = served
    write_json(run_dir / "metrics.json", result)
    # the chart shows the chosen position handling's variants; metrics.json holds every one
    shown = chosen_model.settings.position
    charted = {n: c for n, c in curves.items() if models[n].settings.position == shown}
    render_ctr_report(result, charted, run_dir / "report.html")
    write_manifest(
        run_dir,
        command=command,
        config={"task": "ctr", **to_mapping(config)},
        data=data,
        seeds={"seed": config.seed},
        timings={"total": time.perf_counter() - started},
        metrics={"selected": chosen["name"], "test_auc": chosen["auc"]["mean"]},
        models={"model": str(run_dir / "model")},
        privacy=served.get("privacy"),
    )
    return result


def _serve(
    run_dir: Path, split: Split, config: CtrRunConfig, settings: CtrSettings
) -> dict[str, Any]:
    """Retrain the chosen variant on training + validation rows into ``model/`` with the items
    of each campaign (from the random folder) the service ranks."""
    table = pd.concat([split.table("train"), split.table("valid")], ignore_index=True)
    model, guarantee = fit_model(table, settings, config.privacy)
    model_dir = model.save(run_dir / "model")
    items = {}
    for log in split.test_logs("random"):
        candidates = candidate_table(log.head(1), position=SERVING_POSITION)
        items[log.campaign] = candidates.drop(
            columns=[c for c in candidates.columns if c.startswith("user_feature")]
            + ["affinity", "affinity_total", "position"]
        ).to_dict("records")
    write_json(model_dir / "items.json", items)
    served = {"model_dir": str(model_dir), "settings": _variant_name(settings), "rows": len(table)}
    if guarantee is not None:
        from shopaug.train.dp_sgd import write_privacy

        write_privacy(model_dir, guarantee)
        served["privacy"] = guarantee.to_json()
    return served


def summary_lines(result: Mapping[str, Any]) -> list[str]:
    """The table the CLI prints after a run."""
    lines = [
        f"{result['dataset']}: {result['impressions']['test']} test impressions, "
        f"{result['clicks']['test']} clicks",
        f"{'variant':<44} {'AUC':>7} {'log loss':>9} {'NE':>7} {'ECE':>8} {'OPE DR':>8}",
    ]
    for row in result["variants"]:
        dr = row.get("ope", {}).get("dr", {}).get("value")
        entropy = row.get("normalized_entropy", {}).get("mean")
        lines.append(
            f"{row['name'][:44]:<44} {row['auc']['mean']:>7.4f} {row['log_loss']['mean']:>9.5f} "
            f"{'-' if entropy is None else f'{entropy:.4f}':>7} "
            f"{row['ece']['mean']:>8.5f} {'-' if dr is None else f'{dr:.5f}':>8}"
        )
    logged = result["ope"]["logged_policy"]["value"]
    lines.append(f"logged (uniform) policy click rate: {logged:.5f}")
    lines.append(f"chosen on validation log loss: {result['selected']['system']}")
    return lines

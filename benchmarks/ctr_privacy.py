"""AUC and log loss of the neural CTR model trained with DP-SGD at several epsilons beside the
non-private one, on the Open Bandit sample.

The split, features and training are those of ``shopaug run ctr-full`` (``task: ctr``): every
(policy, campaign) log cut by time, the neural learner with the slot as a feature on all
impressions, the profile's estimator settings; the DP rows go through the same
``experiment.ctr_privacy.fit_model`` a run with a ``privacy`` section uses (Opacus, one
impression one example, delta 1e-5, clipping norm 1, RDP accountant). Rows:

* the base rate (a constant: every impression gets the training click rate);
* the non-private network (the plain loop);
* DP-SGD's mechanics without noise (Poisson batches, per-impression clipping; epsilon
  infinite): what clipping alone costs;
* DP-SGD at each ``--epsilons`` value.

Each network row is trained with each ``--seeds`` seed (the seed moves the initialisation,
the batches and the noise); the table gives the mean over seeds with their range, and the
bootstrap 95 % interval over test impressions of the first seed.

Usage:
    nice -n 10 python benchmarks/ctr_privacy.py --epsilons 1 8 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_file import invocation, write_section
from shopaug.eval import calibration
from shopaug.experiment.ctr import load_split, score_predictions
from shopaug.experiment.ctr_privacy import fit_model
from shopaug.experiment.tasks import load_task
from shopaug.models.ctr import CtrSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 8.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    started = time.perf_counter()
    config = dataclasses.replace(
        load_task("ctr-full").config,
        models=("neural",),
        positions=("feature",),
        negative_rates=(1.0,),
        bootstrap=args.bootstrap,
    )
    split, _ = load_split(config)
    train, valid, test = split.table("train"), split.table("valid"), split.table("test")
    labels = test["click"].to_numpy()
    dp = {"enabled": True, "delta": args.delta, "max_grad_norm": 1.0}
    rows: list[tuple[str, dict[str, Any]]] = [
        ("neural, non-private", {}),
        ("neural, DP-SGD without noise (clipping only)", {**dp, "noise_multiplier": 0.0}),
    ]
    for epsilon in sorted(args.epsilons, reverse=True):
        rows.append(
            (f"neural, DP-SGD target epsilon {epsilon:g}", {**dp, "target_epsilon": epsilon})
        )
    base = np.full(len(test), float(train["click"].mean()))
    constant = score_predictions(labels, base, config)
    lines = [
        "| model | epsilon (delta " + f"{args.delta:g}) | noise multiplier | valid log loss "
        "| **test AUC** (seeds: mean [min, max]) | 95% CI, seed "
        f"{args.seeds[0]} | test log loss (seeds: mean [min, max]) | 95% CI, seed "
        f"{args.seeds[0]} | training s |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| base rate (constant) | - (not private) | - | - | {constant['auc']['mean']:.4f} | - "
        f"| {constant['log_loss']['mean']:.5f} | {_ci(constant['log_loss'], 5)} | - |",
    ]
    print(lines[-1], flush=True)
    intervals: list[tuple[str, dict[str, Any]]] = []
    seed_losses: list[list[float]] = []
    for name, privacy in rows:
        runs = []
        for seed in args.seeds:
            settings = CtrSettings("neural", "feature", 1.0, seed, config.estimator)
            tick = time.perf_counter()
            model, report = fit_model(train, settings, privacy)
            seconds = time.perf_counter() - tick
            valid_loss = calibration.log_losses(
                labels=valid["click"].to_numpy(), probabilities=model.predict(valid)
            ).mean()
            predicted = model.predict(test)
            scores = score_predictions(labels, predicted, config) if not runs else None
            runs.append(
                {
                    "auc": calibration.roc_auc(labels=labels, scores=predicted),
                    "log_loss": float(
                        calibration.log_losses(labels=labels, probabilities=predicted).mean()
                    ),
                    "valid_log_loss": float(valid_loss),
                    "seconds": seconds,
                    "report": report,
                    "scores": scores,
                }
            )
        first = runs[0]
        report = first["report"]
        epsilon = (
            "∞" if report is None or report.epsilon == float("inf") else f"{report.epsilon:.2f}"
        )
        noise = "-" if report is None else f"{report.noise_multiplier:.3f}"
        lines.append(
            f"| {name} | {epsilon} | {noise} "
            f"| {np.mean([r['valid_log_loss'] for r in runs]):.5f} "
            f"| {_spread([r['auc'] for r in runs], 4)} | {_ci(first['scores']['auc'], 4)} "
            f"| {_spread([r['log_loss'] for r in runs], 5)} "
            f"| {_ci(first['scores']['log_loss'], 5)} "
            f"| {np.mean([r['seconds'] for r in runs]):.0f} |"
        )
        print(lines[-1], flush=True)
        intervals.append((name, first["scores"]))
        seed_losses.append([r["log_loss"] for r in runs])
    body = "\n".join(
        [
            "## Differential privacy: DP-SGD for the neural CTR model (Open Bandit sample)",
            "",
            f"The split and training of `shopaug run ctr-full`: {len(train):,} training "
            f"impressions ({int(train['click'].sum())} clicks), {len(valid):,} validation, "
            f"{len(test):,} test ({int(labels.sum())} clicks); the neural learner (one hidden "
            f"layer of {config.estimator.hidden}, {config.estimator.epochs} epochs, batch "
            f"{config.estimator.batch_size}, AdamW lr {config.estimator.learning_rate:g}) with "
            "the slot as a feature, all impressions. DP rows: `privacy` section of the run "
            f"config, Poisson batches (expected {config.estimator.batch_size}), clipping norm 1, "
            f"delta {args.delta:g}, RDP accountant, noise calibrated so that the planned steps "
            "spend the target epsilon; the protected unit is one impression. Seeds "
            f"{', '.join(map(str, args.seeds))}.",
            "",
            *lines,
            "",
            reading(intervals, constant, seed_losses),
            "",
            "Not covered by the guarantee: the "
            "feature vocabulary (which user and item values exist), the output bias's start at "
            "the training click rate, and the slot propensities, computed from the training "
            f"rows without noise. Whole benchmark {(time.perf_counter() - started) / 60:.1f} "
            f"min; load average at the end {os.getloadavg()[0]:.1f} on 2 cores.",
        ]
    )
    print(body)
    if not args.no_write:
        write_section("ctr-privacy", invocation(), body)


def reading(
    intervals: list[tuple[str, dict[str, Any]]],
    constant: dict[str, Any],
    seed_losses: list[list[float]],
) -> str:
    """What the intervals and the seeds allow one to say, computed, not assumed. The first
    row of ``intervals`` and ``seed_losses`` is the non-private network."""
    aucs = [scores["auc"]["ci95"] for _, scores in intervals]
    overlap = max(low for low, _ in aucs) <= min(high for _, high in aucs)
    with_half = [name for name, scores in intervals if scores["auc"]["ci95"][0] <= 0.5]
    below_base = [
        name
        for name, scores in intervals
        if scores["log_loss"]["ci95"][1] < constant["log_loss"]["mean"]
    ]
    plain = max(seed_losses[0])
    worse = [name for (name, _), losses in zip(intervals, seed_losses) if min(losses) > plain]
    auc_text = (
        "Test AUC: the intervals of the network rows "
        + ("all overlap" if overlap else "do not all overlap")
        + f" and {len(with_half)} of {len(intervals)} include 0.5"
        + (
            ": no network ranks better than chance with confidence, so a cost of privacy in "
            "ranking cannot be seen on this sample."
            if overlap and len(with_half) == len(intervals)
            else "."
        )
    )
    loss_text = (
        "Test log loss: rows whose whole interval lies below the constant's: "
        + (
            ", ".join(below_base)
            if below_base
            else "none (none is clearly better than the base rate)"
        )
        + "; "
        + (
            f"in every seed, the log loss of {' and '.join(worse)} is above the non-private "
            "network's (the seed ranges do not overlap), a cost in calibration, although one "
            "seed's bootstrap intervals overlap"
            if worse
            else "the seed ranges of the private rows overlap the non-private one's"
        )
        + "."
    )
    return "Clicks are rare, so the intervals are wide. " + auc_text + " " + loss_text


def _spread(values: list[float], digits: int) -> str:
    return f"{np.mean(values):.{digits}f} [{min(values):.{digits}f}, {max(values):.{digits}f}]"


def _ci(summary: dict[str, Any], digits: int) -> str:
    low, high = summary["ci95"]
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


if __name__ == "__main__":
    main()

"""Write the CTR figures of a ``shopaug run ctr-...`` directory into benchmarks/RESULTS.md, with
the off-policy estimators cross-checked against the Open Bandit Pipeline (``obp``) on the same
test logs.

Usage:
    nice -n 10 shopaug run ctr-full --out benchmarks/out/ctr-full
    python benchmarks/ctr.py benchmarks/out/ctr-full --command "shopaug run ctr-full ..."

The cross-check rebuilds the run's split from its config.yaml, loads the served model from
``model/`` and, for each campaign, computes IPS, SNIPS and DR of (a) the uniform policy on the
Thompson-sampling test log and (b) the softmax policy of the served model on the random test
log, with shopaug's estimators and with obp's (``pip install obp``; 0.4.1 on Python 3.11).
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import yaml

from results_file import write_section
from shopaug.data.open_bandit import candidate_table
from shopaug.eval import off_policy
from shopaug.experiment.ctr import load_split, parse_config
from shopaug.models.ctr import SERVING_POSITION, CtrModel


def _ci(summary: dict, digits: int = 4) -> str:
    value = summary.get("mean", summary.get("value"))
    low, high = summary["ci95"]
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def variants_table(metrics: dict) -> list[str]:
    lines = [
        "| variant | valid log loss | **test AUC** [95% CI] | test log loss [95% CI] | "
        "ECE [95% CI] | mean predicted | OPE softmax policy: IPS | SNIPS | DR |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    selected = metrics["selected"]["system"]
    for row in metrics["variants"]:
        ope = row.get("ope")
        name = f"**{row['name']}** (chosen)" if row["name"] == selected else row["name"]
        valid = row.get("validation_log_loss")
        lines.append(
            f"| {name} | {'-' if valid is None else f'{valid:.5f}'} | {_ci(row['auc'])} | "
            f"{_ci(row['log_loss'], 5)} | {_ci(row['ece'], 5)} | {row['mean_predicted']:.5f} | "
            + (" | ".join(_ci(ope[k], 5) for k in ("ips", "snips", "dr")) if ope else "- | - | -")
            + " |"
        )
    return lines


def validation_table(metrics: dict) -> list[str]:
    check = metrics["ope"]["validation"]
    lines = [
        f"Truth: on-policy click rate of the uniform policy on the random test logs "
        f"({check['rounds']} impressions): {_ci(check['truth'], 5)}.",
        "",
        "| estimator (uniform policy from the bts test logs) | estimate [95% CI] | error | "
        "CI covers truth |",
        "|---|---|---|---|",
    ]
    for name in ("ips", "snips", "dr"):
        entry = check["estimates"][name]
        lines.append(
            f"| {name.upper()} | {_ci(entry, 5)} | {entry['relative_error']:+.1%} | "
            f"{'yes' if entry['covers_truth'] else 'no'} |"
        )
    return lines


def obp_cross_check(run_dir: Path) -> list[str]:
    """Per campaign: shopaug's and obp's IPS/SNIPS/DR on the same arrays."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import obp.ope as ope
        except ImportError:
            return ["obp is not installed (`pip install obp`): cross-check skipped."]
    mapping = yaml.safe_load((run_dir / "config.yaml").read_text())
    mapping.pop("task", None)
    config = parse_config(mapping, str(run_dir / "config.yaml"))
    split, _ = load_split(config)
    model = CtrModel.load(run_dir / "model")
    lines = [
        "| log | policy | estimator | shopaug | obp | abs. difference |",
        "|---|---|---|---|---|---|",
    ]
    largest = 0.0
    for log in split.test:
        frame = log.impressions
        n, items = len(frame), log.n_items
        candidates = candidate_table(log, position=SERVING_POSITION)
        scores = model.predict(candidates).reshape(n, items)
        if log.policy == "bts":
            policy, dist = "uniform", off_policy.uniform_policy(rounds=n, n_items=items, n_slots=3)
        else:
            policy = f"softmax / {config.policy_temperature:g}"
            dist = off_policy.softmax_policy(
                np.log(np.clip(scores, 1e-12, None)),
                n_slots=3,
                temperature=config.policy_temperature,
            )
        slots = frame["position"].to_numpy() - 1
        logged = candidates.assign(position=np.repeat(frame["position"].to_numpy(), items))
        q = np.zeros((n, items, 3))
        q[np.arange(n), :, slots] = model.predict(logged).reshape(n, items)
        arrays = {
            "reward": frame["click"].to_numpy(),
            "action": frame["item_id"].to_numpy(),
            "position": slots,
            "pscore": frame["propensity_score"].to_numpy(),
            "action_dist": dist,
        }
        ours = off_policy.evaluate_policy(
            action_dist=dist,
            actions=arrays["action"],
            slots=slots,
            rewards=arrays["reward"],
            propensities=arrays["pscore"],
            estimated_rewards=q,
            n_resamples=10,
        )
        theirs = {
            "ips": ope.InverseProbabilityWeighting().estimate_policy_value(**arrays),
            "snips": ope.SelfNormalizedInverseProbabilityWeighting().estimate_policy_value(
                **arrays
            ),
            "dr": ope.DoublyRobust().estimate_policy_value(
                **arrays, estimated_rewards_by_reg_model=q
            ),
        }
        for name, value in theirs.items():
            difference = abs(ours[name].value - float(value))
            largest = max(largest, difference)
            lines.append(
                f"| {log.name} (test) | {policy} | {name.upper()} | {ours[name].value:.6f} | "
                f"{float(value):.6f} | {difference:.1e} |"
            )
    lines += ["", f"Largest difference: {largest:.1e}."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--command", required=True, help="the shopaug run command that made it")
    args = parser.parse_args()
    metrics = json.loads((args.run_dir / "metrics.json").read_text())
    manifest = json.loads((args.run_dir / "manifest.json").read_text())
    ope = metrics["ope"]
    greedy = ope["greedy_chosen"]
    body = [
        "## CTR on the Open Bandit sample (`task: ctr`)",
        "",
        f"Train / validation / test impressions: {metrics['impressions']['train']} / "
        f"{metrics['impressions']['validation']} / {metrics['impressions']['test']} "
        f"(clicks {metrics['clicks']['train']} / {metrics['clicks']['validation']} / "
        f"{metrics['clicks']['test']}); every (policy, campaign) log cut by time; the variant "
        f"is chosen on validation log loss. Run time {manifest['timings_s']['total']:.0f} s.",
        "",
        *variants_table(metrics),
        "",
        f"Logged uniform policy, on-policy click rate on the random test logs: "
        f"{_ci(ope['logged_policy'], 5)}. Greedy ranking by the chosen model's CTR: IPS "
        f"{_ci(greedy['ips'], 5)}, SNIPS {_ci(greedy['snips'], 5)}, DR {_ci(greedy['dr'], 5)} "
        f"({greedy['rounds_with_weight']} rounds with a non-zero weight).",
        "",
        "### Off-policy estimators where the truth is known",
        "",
        *validation_table(metrics),
        "",
        "### The same estimates through obp",
        "",
        *obp_cross_check(args.run_dir),
    ]
    print(write_section("ctr", args.command, "\n".join(body)))


if __name__ == "__main__":
    main()

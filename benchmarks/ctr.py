"""Write the CTR figures of a ``shopaug run ctr-...`` directory into benchmarks/RESULTS.md: the
variants with normalized entropy, the feature study and the learning curve, and off-policy
evaluation as the Open Bandit Pipeline (``obp``) publishes it, obp run in the same process.

Usage:
    nice -n 10 shopaug run ctr-full --out benchmarks/out/ctr-full
    nice -n 10 python benchmarks/ctr.py benchmarks/out/ctr-full --command "shopaug run ctr-full ..."

obp 0.5.7 declares Python < 3.11 and pins old packages; it runs here once its dependencies are
installed: ``pip install --no-deps --ignore-requires-python obp==0.5.7`` (see the environment
notes). Without it the obp columns are left out with a note.

OPE as obp publishes it (``examples/obd/evaluate_off_policy_estimators.py --evaluation_policy bts
--behavior_policy random --base_model logistic_regression``): for each campaign, the Bernoulli
TS policy's click rate estimated from the random log (one run on the whole log, ``--ope-runs``
bootstrap runs), relative error against the mean click of the bts log. The policy's action
distribution is obp's ``BernoulliTS(is_zozotown_prior=True, campaign=...)
.compute_batch_action_dist(n_sim=...)``, the same array for both columns. shopaug's column: its
estimators (``eval.off_policy.policy_values``) with a cross-fitted shopaug CTR model
(``experiment.ctr_ope``); obp's column: obp's dataset class, regression model (logistic
regression, C=100, 3-fold cross-fitting) and estimators over the same bootstrap resamples. A
third check feeds obp's own arrays and regression estimates to shopaug's estimators.

The run's own cross-check rebuilds its split from config.yaml, loads the served model from
``model/`` and compares IPS, SNIPS and DR of the run's policies with obp's on the same arrays.
"""

from __future__ import annotations

import argparse
import json
import lzma
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from results_file import invocation, write_section
from shopaug.data.loaders import data_dir
from shopaug.data.open_bandit import CAMPAIGNS, FOLDER, candidate_table, load_open_bandit
from shopaug.eval import off_policy
from shopaug.experiment.ctr import load_split, parse_config
from shopaug.experiment.ctr_ope import OpeBenchmarkSettings, bts_from_random
from shopaug.models.ctr import SERVING_POSITION, CtrModel

OBP_INSTALL = "pip install --no-deps --ignore-requires-python obp==0.5.7"
#: obp's names of the estimators of ``off_policy.POLICY_VALUE_ESTIMATORS``.
OBP_NAMES = {
    "ips": "ipw",
    "snips": "snipw",
    "dm": "dm",
    "dr": "dr",
    "dr-os": "dr-os",
    "switch-dr": "switch-dr",
}
LABELS = {
    "ips": "IPW",
    "snips": "SNIPW",
    "dm": "DM",
    "dr": "DR",
    "dr-os": "DR-OS",
    "switch-dr": "Switch-DR",
}


def _ci(summary: dict, digits: int = 4) -> str:
    value = summary.get("mean", summary.get("value"))
    low, high = summary["ci95"]
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def variants_table(metrics: dict) -> list[str]:
    lines = [
        "| variant | valid log loss | **test AUC** [95% CI] | test log loss [95% CI] | "
        "**NE** [95% CI] | ECE [95% CI] | mean predicted | OPE softmax policy: IPS | SNIPS | DR |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    selected = metrics["selected"]["system"]
    for row in metrics["variants"]:
        ope = row.get("ope")
        name = f"**{row['name']}** (chosen)" if row["name"] == selected else row["name"]
        valid = row.get("validation_log_loss")
        lines.append(
            f"| {name} | {'-' if valid is None else f'{valid:.5f}'} | {_ci(row['auc'])} | "
            f"{_ci(row['log_loss'], 5)} | {_ci(row['normalized_entropy'])} | "
            f"{_ci(row['ece'], 5)} | {row['mean_predicted']:.5f} | "
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


def _below_one(row: dict) -> bool:
    return row["normalized_entropy"]["ci95"][1] < 1.0


def signal_tables(metrics: dict) -> list[str]:
    """Normalized entropy by feature set and along the learning curve, and what they say."""
    study, curve = metrics.get("feature_study", []), metrics.get("learning_curve", [])
    lines = [
        f"Normalized entropy (NE): test log loss over the log loss of the constant training "
        f"click rate ({metrics['base_rate']:.5f}) on the same impressions, with a paired "
        "bootstrap interval; below 1, a model predicts clicks better than the base rate.",
        "",
    ]
    if study:
        lines += [
            "| learner | features (+ slot) | **NE** [95% CI] | test AUC [95% CI] | test log loss |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {row['model']} | {row['features']} | {_ci(row['normalized_entropy'])} | "
            f"{_ci(row['auc'])} | {row['log_loss']['mean']:.5f} |"
            for row in study
        ]
        lines.append("")
    if curve:
        lines += [
            "| share of the training rows | impressions (clicks) | learner | **NE** [95% CI] | "
            "test AUC [95% CI] |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {row['fraction']:.0%} | {row['train_impressions']} ({row['train_clicks']}) | "
            f"{row['model']} | {_ci(row['normalized_entropy'])} | {_ci(row['auc'])} |"
            for row in curve
        ]
        lines.append("")
    rows = [r for r in metrics["variants"] if r["kind"] == "model"] + study + curve
    winners = sorted(
        {r.get("name") or f"{r['model']} / {r['features']}" for r in rows if _below_one(r)}
    )
    if winners:
        lines.append(
            f"NE interval wholly below 1.0 (better than the base rate with confidence): "
            f"{', '.join(winners)}."
        )
    else:
        best = min(rows, key=lambda r: r["normalized_entropy"]["mean"]) if rows else None
        lines.append(
            "No model's NE interval lies wholly below 1.0: on this sample no model beats the "
            "constant base rate with confidence"
            + (
                f" (lowest NE {best['normalized_entropy']['mean']:.4f}, interval "
                f"{_ci(best['normalized_entropy'])})"
                if best
                else ""
            )
            + f". With {metrics['clicks']['train']} training clicks in "
            f"{metrics['impressions']['train']} impressions the ~60,000-impression sample is too "
            "small to support a CTR model; the learning curve above shows how NE moves as the "
            "training rows grow."
        )
    return lines


def _decompressed_sample(root: Path, target: Path, campaigns: list[str]) -> Path:
    """The sample's ``.csv.xz`` files as the plain CSVs obp's ``OpenBanditDataset`` reads."""
    for policy in ("random", "bts"):
        for campaign in campaigns:
            folder = root / FOLDER / "obd" / policy / campaign
            out = target / policy / campaign
            out.mkdir(parents=True, exist_ok=True)
            for stem in (campaign, "item_context"):
                plain, packed = folder / f"{stem}.csv", folder / f"{stem}.csv.xz"
                data = (
                    plain.read_bytes() if plain.exists() else lzma.decompress(packed.read_bytes())
                )
                (out / f"{stem}.csv").write_bytes(data)
    return target


def _obp_dataset_class(base: Any) -> Any:
    """obp's ``OpenBanditDataset`` with its own ``pre_process`` (its documented extension point)
    restated for pandas 3, which refuses ``drop(columns=..., axis=1)`` as obp 0.5.7 calls it;
    the features are obp's: user features one-hot (first level dropped), item attributes
    label-encoded, ``item_feature_0``."""
    import pandas as pd
    from sklearn.preprocessing import LabelEncoder

    class Dataset(base):  # type: ignore[misc, valid-type]
        def pre_process(self) -> None:
            users = self.data.loc[:, self.data.columns.str.contains("user_feature")]
            self.context = pd.get_dummies(users, drop_first=True).to_numpy(dtype=float)
            items = self.item_context.drop(columns=["item_id", "item_feature_0"])
            self.action_context = pd.concat(
                [items.apply(LabelEncoder().fit_transform), self.item_context["item_feature_0"]],
                axis=1,
            ).to_numpy(dtype=float)

    return Dataset


def _obp_estimators(ope: Any) -> list[Any]:
    lambdas = list(off_policy.OBP_LAMBDAS)
    return [
        ope.InverseProbabilityWeighting(),
        ope.SelfNormalizedInverseProbabilityWeighting(),
        ope.DirectMethod(),
        ope.DoublyRobust(),
        ope.DoublyRobustWithShrinkageTuning(lambdas=list(lambdas)),
        ope.SwitchDoublyRobustTuning(lambdas=list(lambdas)),
    ]


def _obp_run(obp: Any, dataset: Any, feedback: dict, dist: np.ndarray, truth: float) -> dict:
    """obp's example for one (resampled) log: its regression model, its estimators."""
    from sklearn.linear_model import LogisticRegression

    regression = obp.ope.RegressionModel(
        n_actions=dataset.n_actions,
        len_list=dataset.len_list,
        action_context=dataset.action_context,
        base_model=LogisticRegression(max_iter=10000, C=100, random_state=12345),
    )
    q = regression.fit_predict(
        context=feedback["context"],
        action=feedback["action"],
        reward=feedback["reward"],
        position=feedback["position"],
        pscore=feedback["pscore"],
        n_folds=3,
        random_state=12345,
    )
    evaluation = obp.ope.OffPolicyEvaluation(
        bandit_feedback=feedback, ope_estimators=_obp_estimators(obp.ope)
    )
    action_dist = np.tile(dist, (feedback["n_rounds"], 1, 1))
    values = evaluation.estimate_policy_values(
        action_dist=action_dist, estimated_rewards_by_reg_model=q
    )
    values = {name: float(values[OBP_NAMES[name]]) for name in OBP_NAMES}
    ours = off_policy.policy_values(
        action_dist=action_dist,
        actions=feedback["action"],
        slots=feedback["position"],
        rewards=feedback["reward"],
        propensities=feedback["pscore"],
        estimated_rewards=q,
    )
    same_input = max(abs(ours.values[name] - values[name]) for name in values)
    errors = {name: abs(value - truth) / truth for name, value in values.items()}
    return {"values": values, "relative_error": errors, "same_input_difference": same_input}


def _mean_std(runs: list[dict[str, float]], name: str) -> str:
    values = np.array([run[name] for run in runs])
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}" if values.size > 1 else "-"


def ope_benchmark(campaigns: list[str], runs: int, n_sim: int) -> tuple[list[str], dict]:
    """The obp benchmark table per campaign (see the module docstring)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import obp
            import obp.ope
            from obp.dataset import OpenBanditDataset as ObpDataset
            from obp.policy import BernoulliTS
        except ImportError as error:
            return [
                f"obp could not be imported ({error}); install it with `{OBP_INSTALL}`. The "
                "Bernoulli TS policy evaluated here is obp's (its ZOZOTOWN prior), so the "
                "table is left out."
            ], {}
    present = [
        campaign
        for campaign in campaigns
        if all(
            any((data_dir() / FOLDER / "obd" / policy / campaign).glob(f"{campaign}.csv*"))
            for policy in ("random", "bts")
        )
    ]
    lines = [
        f"obp {obp.__version__}; campaigns present in the sample: {', '.join(present)} "
        f"(asked: {', '.join(campaigns)}). Evaluation policy: Bernoulli TS with the ZOZOTOWN "
        f"prior, action distribution by obp's Monte Carlo (n_sim {n_sim:,}, random_state "
        f"12345); logging policy: uniform random. Truth: mean click of the bts log. One run: "
        f"the whole random log; bootstrap: {runs} resamples, the same rows for both columns "
        f"(obp's `sample_bootstrap_bandit_feedback(random_state=b)`). shopaug's reward model: "
        f"logistic regression over one-hot user and item features, affinities and the slot "
        f"(C 0.1), 3-fold cross-fitted; obp's: its example's (per-slot logistic regression, "
        "C 100, user features and item attributes, 3-fold cross-fitted). Relative error "
        "|estimate - truth| / truth; bootstrap: mean ± standard deviation over the runs.",
        "",
        "| campaign | estimator | one run: shopaug estimate (rel. error) | obp estimate "
        "(rel. error) | bootstrap rel. error: shopaug | obp |",
        "|---|---|---|---|---|---|",
    ]
    OpenBanditDataset = _obp_dataset_class(ObpDataset)
    record: dict[str, Any] = {}
    largest, order_ok = 0.0, True
    settings = OpeBenchmarkSettings(runs=runs)
    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
        warnings.simplefilter("ignore")
        root = _decompressed_sample(data_dir(), Path(tmp), present)
        for campaign in present:
            tick = time.perf_counter()
            dataset = OpenBanditDataset(behavior_policy="random", campaign=campaign, data_path=root)
            policy = BernoulliTS(
                n_actions=dataset.n_actions,
                len_list=dataset.len_list,
                is_zozotown_prior=True,
                campaign=campaign,
                random_state=12345,
            )
            dist = policy.compute_batch_action_dist(n_sim=n_sim)[0]  # (n_items, 3)
            truth_obp = float(
                OpenBanditDataset.calc_on_policy_policy_value_estimate(
                    behavior_policy="bts", campaign=campaign, data_path=root
                )
            )
            random_log = load_open_bandit("random", campaign)
            truth = float(load_open_bandit("bts", campaign).impressions["click"].mean())
            order_ok &= bool(
                np.array_equal(random_log.impressions["item_id"], dataset.action)
                and np.array_equal(random_log.impressions["click"], dataset.reward)
                and truth == truth_obp
            )
            ours = bts_from_random(random_log, truth, dist, settings)
            theirs_one = _obp_run(
                obp, dataset, dataset.obtain_batch_bandit_feedback(), dist, truth_obp
            )
            theirs = [
                _obp_run(
                    obp,
                    dataset,
                    dataset.sample_bootstrap_bandit_feedback(random_state=run),
                    dist,
                    truth_obp,
                )
                for run in range(runs)
            ]
            largest = max(
                [largest, theirs_one["same_input_difference"]]
                + [run["same_input_difference"] for run in theirs]
            )
            obp_runs = [run["relative_error"] for run in theirs]
            for name in off_policy.POLICY_VALUE_ESTIMATORS:
                ours_one = ours["single"]
                lines.append(
                    f"| {campaign} | {LABELS[name]} | {ours_one['values'][name]:.5f} "
                    f"({ours_one['relative_error'][name]:.3f}) | "
                    f"{theirs_one['values'][name]:.5f} "
                    f"({theirs_one['relative_error'][name]:.3f}) | "
                    f"{_mean_std(ours['bootstrap']['per_run'], name)} | "
                    f"{_mean_std(obp_runs, name)} |"
                )
            record[campaign] = {
                "truth": truth,
                "bts_rounds": len(random_log.impressions),
                "lambdas": ours["single"]["lambdas"],
                "seconds": time.perf_counter() - tick,
            }
    lines += [
        "",
        "Truth (on-policy click rate of the bts log): "
        + "; ".join(f"{c} {r['truth']:.5f}" for c, r in record.items())
        + ". SLOPE's lambda on the whole log (shopaug): "
        + "; ".join(
            f"{c} DR-OS {r['lambdas']['dr-os']:g}, Switch-DR {r['lambdas']['switch-dr']:g}"
            for c, r in record.items()
        )
        + ". Time per campaign (both pipelines): "
        + ", ".join(f"{c} {r['seconds']:.0f} s" for c, r in record.items())
        + ".",
        "",
        f"Same input (obp's arrays and regression estimates into shopaug's estimators, every "
        f"run): largest difference {largest:.1e}. Rows read by obp and by shopaug's loader "
        f"{'are the same, in the same order' if order_ok else 'DIFFER (order or values)'}.",
        "",
        "For reference, obp's README (examples/obd, campaign all, 30 runs, logistic regression, "
        "n_sim 1,000,000) reports mean relative errors DM 0.157, IPW 0.311, SNIPW 0.312, DR "
        "0.292, Switch-DR 0.258, DR-OS 0.160.",
    ]
    return lines, record


def obp_cross_check(run_dir: Path) -> list[str]:
    """Per campaign: shopaug's and obp's IPS/SNIPS/DR on the same arrays."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import obp.ope as ope
        except ImportError:
            return [f"obp is not installed (`{OBP_INSTALL}`): cross-check skipped."]
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
    parser.add_argument("--ope-runs", type=int, default=30, help="bootstrap runs of the obp table")
    parser.add_argument(
        "--n-sim", type=int, default=1_000_000, help="obp's Monte Carlo draws of the bts policy"
    )
    parser.add_argument("--campaigns", nargs="+", default=list(CAMPAIGNS))
    args = parser.parse_args()
    benchmark, _ = ope_benchmark(args.campaigns, args.ope_runs, args.n_sim)
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
        "### Does any model beat the base rate? Normalized entropy, features, sample size",
        "",
        *signal_tables(metrics),
        "",
        "### Off-policy evaluation as obp publishes it: Bernoulli TS from the random logs",
        "",
        *benchmark,
        "",
        "### Off-policy estimators where the truth is known (the run's own check)",
        "",
        *validation_table(metrics),
        "",
        "### The same estimates through obp",
        "",
        *obp_cross_check(args.run_dir),
    ]
    command = f"{args.command} && {invocation()}"
    print(write_section("ctr", command, "\n".join(body)))


if __name__ == "__main__":
    main()

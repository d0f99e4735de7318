"""The ``shopaug`` command. Parses options, calls the library, prints results; no logic here.

Why one module of this length: one Typer command per verb, each only parsing options and
printing what the library returns.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from shopaug.errors import ShopaugError
from shopaug.index.vector import DEFAULT_ANN_THRESHOLD

app = typer.Typer(
    help="Augment e-commerce ranking training samples with language models, and measure it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def extra(name: str) -> str:
    """``shopaug[name]`` as help text: Typer renders help as rich markup, which would drop
    ``[name]`` as a tag, so the bracket is escaped."""
    return escape(f"shopaug[{name}]")


data_app = typer.Typer(help="Inspect and validate data sets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

DataOption = Annotated[
    str,
    typer.Option(
        "--data",
        help="demo, wands-subset, wands, esci, or a folder in the generic schema "
        "(products, queries, judgments, optional interactions).",
    ),
]
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Folder holding wands/ and esci-subset/ (default $SHOPAUG_DATA_DIR)."
    ),
]
ProductsOption = Annotated[
    Path | None,
    typer.Option("--products", help="Product file: WANDS product.csv, or ESCI product text."),
]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed of every random choice.")]


class Device(StrEnum):
    """The choices of ``--device``."""

    cpu = "cpu"
    cuda = "cuda"
    auto = "auto"


class Tracking(StrEnum):
    """The choices of ``--tracking``."""

    tensorboard = "tensorboard"
    mlflow = "mlflow"
    none = "none"


class Engine(StrEnum):
    """The choices of ``--engine``."""

    local = "local"
    ray = "ray"


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress.")] = False,
) -> None:
    _setup_logging(verbose)


def _fail(error: Exception) -> typer.Exit:
    typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


def _load(data: str, data_dir: Path | None, products: Path | None, skip: bool = False):
    from shopaug.data import load_dataset

    return load_dataset(data, data_dir=data_dir, products_path=products, skip_bad_rows=skip)


@data_app.command("check")
def data_check(
    data: DataOption = "demo",
    data_dir: DataDirOption = None,
    products: ProductsOption = None,
    skip_bad_rows: Annotated[
        bool, typer.Option("--skip-bad-rows", help="Skip and count bad rows instead of stopping.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Load and validate a data set; print products, queries and judgments per grade."""
    try:
        dataset = _load(data, data_dir, products, skip=skip_bad_rows)
    except (ShopaugError, FileNotFoundError) as error:
        raise _fail(error) from error
    summary = dataset.summary()
    summary["checksums"] = dataset.checksums
    summary["warnings"] = dataset.gaps()
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    typer.echo(f"data set     {summary['dataset']}")
    typer.echo(f"products     {summary['products']:,}")
    typer.echo(f"queries      {summary['queries']:,}")
    typer.echo(f"judgments    {summary['judgments']:,}")
    for label, count in summary["judgments_per_label"].items():  # type: ignore[union-attr]
        gain = dataset.gains.get(label, 0)
        typer.echo(f"  {label:<12} {count:>8,}  (gain {gain})")
    typer.echo(f"interactions {summary['interactions']:,}")
    if dataset.skipped:
        typer.secho(f"skipped rows {sum(dataset.skipped.values()):,}", fg=typer.colors.YELLOW)
        for reason, count in dataset.skipped.items():
            typer.echo(f"  {count:>6,}  {reason}")
    if not dataset.has_text:
        typer.secho(
            "products have no text (ids only): give --products to rank", fg=typer.colors.YELLOW
        )
    for gap in dataset.gaps():
        typer.secho(f"warning: {gap}", fg=typer.colors.YELLOW)


@app.command("eval")
def eval_command(
    out: Annotated[Path, typer.Option("--out", help="Run directory to write.")],
    data: DataOption = "demo",
    retriever: Annotated[
        str, typer.Option("--retriever", help="bm25, dense or hybrid (RRF of both).")
    ] = "bm25",
    model: Annotated[
        str, typer.Option("--model", help="Dense model: 'minilm' or a model directory.")
    ] = "minilm",
    folds: Annotated[int, typer.Option("--folds", help="Query-level folds.")] = 5,
    seed: SeedOption = 0,
    text_fields: Annotated[
        str,
        typer.Option(
            "--text-fields",
            help="Product fields in the text, comma-separated: "
            "title, category, text (description), attributes.",
        ),
    ] = "title,category",
    data_dir: DataDirOption = None,
    products: ProductsOption = None,
    depth: Annotated[int, typer.Option("--depth", help="Products ranked per query.")] = 100,
) -> None:
    """Evaluate a zero-shot retriever over the full catalog with query-level k-fold splits."""
    from shopaug.eval.runner import EvalConfig, evaluate_retriever

    config = EvalConfig(
        data=data,
        retriever=retriever,
        model=model,
        folds=folds,
        seed=seed,
        text_fields=tuple(f.strip() for f in text_fields.split(",") if f.strip()),
        data_dir=str(data_dir) if data_dir else None,
        products=str(products) if products else None,
        depth=depth,
    )
    try:
        result = evaluate_retriever(config, out, command=" ".join(sys.argv))
    except (ShopaugError, FileNotFoundError) as error:
        raise _fail(error) from error
    _print_metrics(result)
    typer.echo(f"wrote {out}/metrics.json, run.trec, qrels.trec, folds.json, manifest.json")


def _print_metrics(result: dict) -> None:
    typer.echo(f"{result['dataset']} / {result['retriever']} ({result['folds']} folds)")
    for metric, values in result["metrics"].items():
        lo, hi = values["ci95"]
        # a t interval over a few folds can reach past the [0, 1] every metric lives in
        interval = "-" if lo is None else f"[{max(lo, 0.0):.4f}, {min(hi, 1.0):.4f}]"
        typer.echo(f"  {metric:<11} {values['mean']:.4f}  95% CI {interval}")
    typer.echo("95% CI: t interval over folds, clipped to [0, 1]")


@app.command("augment")
def augment_command(
    out: Annotated[Path, typer.Option("--out", help="samples.parquet to write.")],
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help="random, popular, bm25, dense, hybrid, near-miss or synthetic-queries.",
        ),
    ],
    data: DataOption = "demo",
    fold: Annotated[
        int | None,
        typer.Option("--fold", help="Use only the train folds of fold K (0-based)."),
    ] = None,
    folds: Annotated[int, typer.Option("--folds", help="Number of query-level folds.")] = 5,
    seed: SeedOption = 0,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", help="YAML with sections mining, near_miss, synthetic_queries, generator."
        ),
    ] = None,
    data_dir: DataDirOption = None,
    products: ProductsOption = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
) -> None:
    """Write augmented training samples with provenance (samples.parquet + a JSON summary)."""
    from shopaug.augment.pipeline import AugmentConfig, augment
    from shopaug.augment.samples import write_samples
    from shopaug.config import from_mapping, read_yaml
    from shopaug.data import select_fold
    from shopaug.manifest import write_json
    from shopaug.rundir import check_output_file

    try:
        check_output_file(out, force=force)
        augment_config = (
            from_mapping(AugmentConfig, read_yaml(config), section="(top level)")
            if config
            else AugmentConfig()
        )
        dataset = _load(data, data_dir, products)
        query_ids = [q.id for q in dataset.queries]
        if fold is not None:
            chosen = select_fold(query_ids, fold, n_folds=folds, seed=seed, name="--fold")
            query_ids = list(chosen.train)
        frame, summary = augment(dataset, method, query_ids, config=augment_config, seed=seed)
        summary["fold"] = fold
        write_samples(frame, out)
        summary_path = out.with_suffix(".summary.json")
        write_json(summary_path, summary)
    except (ShopaugError, FileNotFoundError) as error:
        raise _fail(error) from error
    typer.echo(f"{method}: {summary['rows']:,} rows in {summary['seconds']:.1f}s -> {out}")
    for key, count in summary["counts"].items():
        typer.echo(f"  {key:<28} {count:>8,}")
    typer.echo(f"summary: {summary_path}")


@app.command("audit")
def audit_command(
    samples: Annotated[Path, typer.Argument(help="samples.parquet to audit.")],
    data: DataOption = "demo",
    fold: Annotated[
        int | None, typer.Option("--fold", help="Check leakage against this fold's test queries.")
    ] = None,
    folds: Annotated[int, typer.Option("--folds", help="Number of query-level folds.")] = 5,
    seed: SeedOption = 0,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the report as JSON.")
    ] = None,
    data_dir: DataDirOption = None,
    products: ProductsOption = None,
) -> None:
    """Audit samples against human labels: false negatives, tail share, duplicates, leakage."""
    from rich.console import Console
    from rich.table import Table

    from shopaug.augment.audit import audit_samples
    from shopaug.augment.samples import read_samples
    from shopaug.data import select_fold
    from shopaug.manifest import write_json

    try:
        frame = read_samples(samples)
        dataset = _load(data, data_dir, products)
        test_ids = None
        if fold is not None:
            query_ids = [q.id for q in dataset.queries]
            test_ids = list(
                select_fold(query_ids, fold, n_folds=folds, seed=seed, name="--fold").test
            )
        report = audit_samples(frame, dataset, test_query_ids=test_ids)
    except (ShopaugError, FileNotFoundError, ValueError) as error:
        raise _fail(error) from error
    payload = report.payload
    table = Table(title=f"audit of {samples} against {dataset.name} labels")
    for column in ("method", "negatives", "judged", "false-neg. rate", "tail share"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in report.table():
        table.add_row(*row)
    Console().print(table)
    rate = payload["false_negative_rate"]
    typer.echo(
        f"overall false-negative rate: {'-' if rate is None else f'{rate:.3f}'} "
        f"over {payload['judged_negatives']} judged negatives; duplicates {payload['duplicates']}; "
        f"positive-and-negative pairs {payload['positive_and_negative_pairs']}"
    )
    if payload["leakage"]["checked"]:
        leak = payload["leakage"]
        typer.echo(
            f"leakage vs fold {fold} test queries: {leak['rows_with_test_query_id']} rows by id, "
            f"{leak['rows_with_test_query_text']} by text"
        )
    if json_path is not None:
        write_json(json_path, payload)
        typer.echo(f"wrote {json_path}")


@app.command("run")
def run_command(
    config: Annotated[str, typer.Argument(help="Profile (quick, full) or a YAML config file.")],
    out: Annotated[Path, typer.Option("--out", help="Run directory to write.")],
    data: Annotated[
        str | None, typer.Option("--data", help="Override the profile's data set.")
    ] = None,
    data_dir: DataDirOption = None,
    products: ProductsOption = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Override the seed.")] = None,
    train_folds: Annotated[
        int | None, typer.Option("--train-folds", help="Train only the first N folds.")
    ] = None,
    device: Annotated[
        Device | None,
        typer.Option(
            "--device",
            help="Where to train and encode: cpu, cuda, or auto (cuda when available). "
            "Default: the config's device (cpu unless it says otherwise).",
        ),
    ] = None,
    tracking: Annotated[
        Tracking | None,
        typer.Option(
            "--tracking",
            help=f"Where training is recorded: tensorboard, mlflow (needs {extra('tracking')}; "
            "a SQLite store in RUN_DIR/mlflow unless the config's tracking.uri says otherwise) "
            "or none. Default: the config's tracking section (tensorboard).",
        ),
    ] = None,
    engine: Annotated[
        Engine | None,
        typer.Option(
            "--engine",
            help=f"local, or ray: the same steps on Ray (needs {extra('scale')}; joins the "
            "cluster of RAY_ADDRESS, else starts a local one). See docs/scale.md.",
        ),
    ] = None,
) -> None:
    """Data -> augment -> train -> evaluate -> report, every stage cached by content hash.

    The config's ``task`` (search by default; see ``shopaug.experiment.tasks``) decides what is
    trained and measured; every task writes the same run directory.
    """
    from shopaug.config import apply_overrides
    from shopaug.experiment.tasks import load_task

    try:
        task = load_task(config)
        apply_overrides(
            task.config,
            {
                "data": data,
                "data_dir": data_dir,
                "products": products,
                "seed": seed,
                "train_folds": train_folds,
                "device": device,
                "engine": engine,
                "tracking": None
                if tracking is None
                else {**getattr(task.config, "tracking", {}), "backend": tracking.value},
            },
            source="command line",
        )
        result = task.module.run(task.config, out, " ".join(sys.argv))
    except (ShopaugError, FileNotFoundError) as error:
        raise _fail(error) from error
    for line in task.module.summary_lines(result):
        typer.echo(line)
    typer.echo(f"wrote {out}/metrics.json, report.html, manifest.json, model/")


@app.command("tune")
def tune_command(
    config: Annotated[str, typer.Argument(help="Profile (quick, full) or a YAML config file.")],
    out: Annotated[Path, typer.Option("--out", help="Tuning folder (resumed if it exists).")],
    trials: Annotated[
        int, typer.Option("--trials", help="Trials the study should hold when done (total).")
    ] = 20,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Start no new trial after S seconds.")
    ] = None,
    metric: Annotated[str, typer.Option("--metric", help="Metric to maximise.")] = "ndcg@10",
    split: Annotated[
        str,
        typer.Option(
            "--split",
            help="validation (held out from train queries) or test (optimistic: tunes on the "
            "test folds).",
        ),
    ] = "validation",
    tune_folds: Annotated[
        int | None, typer.Option("--tune-folds", help="Train only the first N folds per trial.")
    ] = None,
    space: Annotated[
        Path | None, typer.Option("--space", help="YAML search space (see docs/tuning.md).")
    ] = None,
    study: Annotated[
        str | None, typer.Option("--study", help="Study name (default shopaug-<config name>).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the TPE sampler.")] = 0,
    data: Annotated[
        str | None, typer.Option("--data", help="Override the config's data set.")
    ] = None,
    data_dir: DataDirOption = None,
    products: ProductsOption = None,
) -> None:
    """Optuna search over a run config: one `shopaug run` per trial, resumable."""
    import optuna

    from shopaug.config import apply_overrides, read_yaml
    from shopaug.experiment.config import load_run_config
    from shopaug.tune import SearchSpace, TrialReport, TuneSettings, parse_search_space, tune

    if logging.getLogger().getEffectiveLevel() > logging.INFO:
        optuna.logging.set_verbosity(optuna.logging.WARNING)

    def report(trial: TrialReport) -> None:
        params = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items()
        )
        value = "-" if trial.value is None else f"{trial.value:.4f}"
        test = "-" if trial.test_metric is None else f"{trial.test_metric:.4f}"
        best = "-" if trial.best_value is None else f"{trial.best_number} ({trial.best_value:.4f})"
        typer.echo(
            f"trial {trial.number:>3} {trial.state:<8} {settings.objective_name} {value}  "
            f"test_{metric} {test}  {trial.seconds:.0f}s  best: {best}\n    {params}"
        )
        if trial.error:
            typer.secho(f"    failed: {trial.error}", fg=typer.colors.YELLOW)

    try:
        run_config = apply_overrides(
            load_run_config(config),
            {"data": data, "data_dir": data_dir, "products": products},
            source="command line",
        )
        search_space = (
            parse_search_space(read_yaml(space), source=str(space)) if space else SearchSpace()
        )
        settings = TuneSettings(
            trials=trials,
            timeout=timeout,
            metric=metric,
            split=split,
            tune_folds=tune_folds,
            seed=seed,
            study_name=study,
            space=search_space,
        )
        if split == "test":
            typer.secho(
                "tuning on the test folds: the best trial's test numbers are optimistic",
                fg=typer.colors.YELLOW,
                err=True,
            )
        result = tune(run_config, out, settings, on_trial=report)
    except (ShopaugError, FileNotFoundError) as error:
        raise _fail(error) from error
    if result.timed_out:
        typer.echo(f"timeout: stopped after {result.new_trials} new trial(s)")
    typer.echo(f"study {result.study_name}: {result.trials} trial(s) in {result.storage}")
    if result.best_number is None:
        typer.secho("no trial completed", fg=typer.colors.YELLOW)
        return
    typer.echo(
        f"best trial {result.best_number}: {settings.objective_name} {result.best_value:.4f}"
    )
    typer.echo(f"wrote {result.best_config}, {result.trials_csv}")


@app.command("train")
def train_command(
    samples: Annotated[
        Path, typer.Option("--samples", help="samples.parquet from `shopaug augment`.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Model folder to write.")],
    data: DataOption = "demo",
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            help="Profile or run-config YAML: its train section, text_fields, "
            "negatives_per_example and model are used.",
        ),
    ] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Optimizer steps.")] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Override the config's seed (default 0).")
    ] = None,
    lora_r: Annotated[
        int | None,
        typer.Option(
            "--lora-r",
            help="Train LoRA adapters of this rank instead of every weight (needs peft, in "
            f"{extra('train')}; "
            "sets train.lora.r; the model folder holds the merged weights).",
        ),
    ] = None,
    data_dir: DataDirOption = None,
    products: ProductsOption = None,
    engine: Annotated[
        Engine | None,
        typer.Option(
            "--engine",
            help="local, or ray: data-parallel training on Ray Train workers (needs "
            f"{extra('scale')}; joins the cluster of RAY_ADDRESS, else starts a local one), the "
            "same model folder. Default: the config's engine. See docs/scale.md.",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers", min=1, help="With --engine ray: training workers (default: every CPU)."
        ),
    ] = None,
) -> None:
    """Fine-tune the bi-encoder (MiniLM) on a samples file into a model folder."""
    from shopaug.config import apply_overrides
    from shopaug.experiment.config import RunConfig, load_run_config
    from shopaug.experiment.finetune import finetune_from_samples

    try:
        run_config = apply_overrides(
            load_run_config(config) if config else RunConfig(),
            {"seed": seed, "engine": engine},
            source="command line",
        )
        if lora_r is not None:
            lora = run_config.train.get("lora") or {}
            run_config.train = {**run_config.train, "lora": {**lora, "r": lora_r}}
        result = finetune_from_samples(
            samples,
            _load(data, data_dir, products),
            out,
            config=run_config,
            max_steps=steps,
            command=" ".join(sys.argv),
            workers=workers,
        )
    except (ShopaugError, FileNotFoundError) as error:
        raise _fail(error) from error
    losses = [p["loss"] for p in result.curve if p.get("loss") is not None]
    last = f", last loss {losses[-1]:.4f}" if losses else ""
    typer.echo(
        f"trained {result.steps} steps on {result.examples:,} groups in {result.seconds:.1f}s{last}"
    )
    typer.echo(f"wrote {result.model_dir} (safetensors) and {result.record}")


RunDirArgument = Annotated[
    Path, typer.Argument(help="Run directory (config.yaml, model/ or current, folds.json).")
]


@app.command("serve")
def serve_command(
    run_dir: RunDirArgument,
    host: Annotated[str, typer.Option("--host", help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="Feedback store, e.g. postgresql+psycopg://user@host/db "
            "(default: SQLite in the run directory).",
        ),
    ] = None,
    encoder_runtime: Annotated[
        str,
        typer.Option(
            "--encoder-runtime",
            help="Query encoder: auto (ONNX fp32 for a neural model when ONNX Runtime is "
            f"installed, as {extra('serve')} installs it, else torch), torch, onnx, onnx-int8 "
            f"(ONNX Runtime; needs {extra('fast')}) or static (a distilled static model; needs "
            f"{extra('fast')}).",
        ),
    ] = "auto",
    ann_threshold: Annotated[
        int,
        typer.Option(
            "--ann-threshold", help="Catalogs of at least this many products use an ANN index."
        ),
    ] = DEFAULT_ANN_THRESHOLD,
    ann_kind: Annotated[
        str, typer.Option("--ann-kind", help="The ANN index: hnsw or ivf-pq.")
    ] = "hnsw",
) -> None:
    """Serve search, recommendations and feedback for a run (admin token: $SHOPAUG_ADMIN_TOKEN)."""
    from shopaug.serve import run as serve_run
    from shopaug.serve.catalog_backend import make_catalog_loader
    from shopaug.serve.runtime import ServingOptions

    speed: dict[str, Any] = {
        "encoder_runtime": encoder_runtime,
        "ann_threshold": ann_threshold,
        "ann_kind": ann_kind,
    }
    try:
        loader = make_catalog_loader(run_dir, options=ServingOptions(**speed))
    except (ShopaugError, FileNotFoundError) as error:
        raise _fail(error) from error
    settings = {"database_url": database_url} if database_url else {}
    serve_run(run_dir, host, port, loader=loader, **settings, **speed)


def _online_options(tolerance: float, steps: int, seed: int):
    from shopaug.online.retrain import OnlineConfig

    return OnlineConfig(tolerance=tolerance, steps=steps, seed=seed)


ToleranceOption = Annotated[
    float, typer.Option("--tolerance", help="Largest accepted NDCG@10 loss of the challenger.")
]
StepsOption = Annotated[int, typer.Option("--steps", help="Fine-tuning steps per round.")]


@app.command("online")
def online_command(
    run_dir: RunDirArgument,
    tolerance: ToleranceOption = 0.005,
    steps: StepsOption = 20,
    service_url: Annotated[
        str | None,
        typer.Option("--service-url", help="Running service to reload after a promotion."),
    ] = None,
    seed: SeedOption = 0,
) -> None:
    """One online round: new feedback -> samples -> fine-tune -> champion/challenger gate."""
    from shopaug.online.retrain import run_online_round

    try:
        report = run_online_round(
            run_dir,
            _online_options(tolerance, steps, seed),
            service_url=service_url,
            admin_token=os.environ.get("SHOPAUG_ADMIN_TOKEN"),
        )
    except (ShopaugError, FileNotFoundError) as error:
        raise _fail(error) from error
    typer.echo(
        f"round {report.round}: {report.events} events, {report.positives} clicks, "
        f"{report.examples} training groups ({report.mined_negatives} mined negatives)"
    )
    if report.champion_ndcg is not None and report.challenger_ndcg is not None:
        typer.echo(
            f"ndcg@10 on {len(report.held_out_queries)} held-out queries: champion "
            f"{report.champion_ndcg:.4f}, challenger {report.challenger_ndcg:.4f}"
        )
    typer.echo(("promoted: " if report.promoted else "") + report.reason)


@app.command("simulate")
def simulate_command(
    run_dir: RunDirArgument,
    rounds: Annotated[int, typer.Option("--rounds", help="Rounds of feedback.")] = 3,
    queries_per_round: Annotated[
        int, typer.Option("--queries-per-round", help="Simulated sessions per round.")
    ] = 50,
    port: Annotated[int, typer.Option("--port", help="Service port; 0 picks a free one.")] = 0,
    tolerance: ToleranceOption = 0.005,
    steps: StepsOption = 20,
    seed: SeedOption = 0,
) -> None:
    """Serve the run, play simulated users, run an online round after each round of feedback."""
    from shopaug.simulate.loop import SimulationConfig, simulate

    def show(result) -> None:
        typer.echo(
            f"round {result.round}: {result.sessions} sessions, {result.clicks} clicks, "
            f"{result.decision}; served ndcg@10 {result.served_ndcg:.4f} ({result.reason})"
        )

    try:
        config = SimulationConfig(
            rounds=rounds,
            queries_per_round=queries_per_round,
            seed=seed,
            online=_online_options(tolerance, steps, seed),
        )
        payload = simulate(run_dir, config, port=port, on_round=show)
    except (ShopaugError, FileNotFoundError) as error:
        raise _fail(error) from error
    typer.echo(
        f"ndcg@10 on {len(payload['held_out_queries'])} held-out queries: "
        f"{payload['initial_ndcg_at_10']:.4f} before, "
        + ", ".join(f"{value:.4f}" for value in payload["ndcg_at_10"])
        + " after each round"
    )
    typer.echo(f"wrote {run_dir / 'simulation.json'}")


def run() -> None:  # pragma: no cover - console entry alias
    start = time.time()
    app()
    logging.getLogger(__name__).debug("done in %.1fs", time.time() - start)

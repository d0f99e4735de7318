"""``shopaug tune``: an Optuna search over a run config, one ``run_experiment`` per trial.

Layout of the output folder ``DIR``::

    DIR/optuna.sqlite        the study (Optuna RDB storage); a killed tune resumes from it
    DIR/trials/<n>/          trial n's run directory (metrics.json, report.html, manifest.json)
    DIR/samples-cache/       augmented samples shared by every trial (they do not depend on
                             the tuned settings)
    DIR/trials.csv           one row per trial: number, state, value, params, test metric
    DIR/best.yaml            the best trial's full run config (``shopaug run DIR/best.yaml``)

The objective (see :func:`read_objective`) is by default the row's validation NDCG@10 in the
trial's ``metrics.json``: validation queries are held out from each fold's *train* queries, so
tuning never reads a test label. ``split="test"`` tunes on the
test folds' metric instead, which makes the reported numbers of the best trial optimistic.

Why one module of this length: one Optuna study's life (trials, resume after a kill, the lock,
the CSV and best.yaml) is one piece of state.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from shopaug.config import to_mapping
from shopaug.errors import ConfigError, ShopaugError, require
from shopaug.eval.pipeline import HEADLINE_METRICS
from shopaug.experiment.config import RunConfig
from shopaug.manifest import MANIFEST, write_json
from shopaug.tune.space import SearchSpace, TrialChoice, suggest_choice, trial_config

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)

#: Where the objective comes from.
SPLITS = ("validation", "test")
#: The metric ``shopaug run`` records on validation queries.
VALIDATION_METRIC = "ndcg@10"
STORAGE_FILE = "optuna.sqlite"
LOCK_FILE = "tune.lock"
SAMPLES_CACHE = "samples-cache"
#: Trial user attribute: the trial did not finish (killed, or aborted by a config or data
#: error); it does not count against ``--trials`` and its params are tried again.
RETRY_ATTR = "retry"

RunFunction = Callable[[RunConfig, Path], dict[str, Any]]


@dataclass(frozen=True)
class TuneSettings:
    """How long and on what to tune; checked on construction.

    Attributes:
        trials: total trials the study should hold when done (finished ones, across resumes).
        timeout: start no new trial after this many seconds of this session (``None``: no
            limit); a running trial is never cut short.
        metric: metric to maximise; ``ndcg@10`` for ``split="validation"``, any of
            :data:`shopaug.eval.pipeline.HEADLINE_METRICS` for ``split="test"``.
        split: ``validation`` (held out from each fold's train queries) or ``test``.
        tune_folds: train only the first N folds per trial (``None``: the config's
            ``train_folds``).
        seed: seed of the TPE sampler.
        study_name: Optuna study name (default ``shopaug-<config name>``).
        space: the search space.
    """

    trials: int
    timeout: float | None = None
    metric: str = VALIDATION_METRIC
    split: str = "validation"
    tune_folds: int | None = None
    seed: int = 0
    study_name: str | None = None
    space: SearchSpace = field(default_factory=SearchSpace)

    def __post_init__(self) -> None:
        if not isinstance(self.trials, int) or self.trials < 1:
            raise ConfigError(f"--trials must be an integer >= 1, got {self.trials!r}")
        if self.timeout is not None and not self.timeout > 0:
            raise ConfigError(f"--timeout must be > 0 seconds, got {self.timeout!r}")
        if self.split not in SPLITS:
            raise ConfigError(f"--split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if self.split == "validation" and self.metric != VALIDATION_METRIC:
            raise ConfigError(
                f"--metric {self.metric}: training curves record only {VALIDATION_METRIC} on "
                f"validation queries; use --metric {VALIDATION_METRIC} or --split test"
            )
        if self.metric not in HEADLINE_METRICS:
            raise ConfigError(
                f"--metric must be one of {', '.join(HEADLINE_METRICS)}, got {self.metric!r}"
            )

    @property
    def objective_name(self) -> str:
        return f"{'val' if self.split == 'validation' else 'test'}_{self.metric}"


@dataclass(frozen=True)
class TrialReport:
    """What one finished trial gave (passed to ``on_trial`` and printed by the CLI).

    Attributes:
        number: Optuna trial number (also the folder ``DIR/trials/<number>``).
        state: ``COMPLETE`` or ``FAIL``.
        value: the objective, ``None`` when the trial failed.
        test_metric: mean test-fold value of the metric (reported, not optimised, unless
            ``split="test"``).
        params: the Optuna params.
        seconds: wall time of the trial.
        run_dir: the trial's run directory.
        error: why it failed, if it did.
        best_number: the study's best trial after this one (``None`` if none completed).
        best_value: its objective.
    """

    number: int
    state: str
    value: float | None
    test_metric: float | None
    params: dict[str, Any]
    seconds: float
    run_dir: Path
    error: str | None = None
    best_number: int | None = None
    best_value: float | None = None


@dataclass(frozen=True)
class TuneResult:
    """Outcome of :func:`tune`.

    Attributes:
        study_name: the Optuna study.
        storage: its RDB storage URL.
        trials: finished trials in the study (complete or failed, across resumes).
        new_trials: trials run by this call.
        best_number: best trial number (``None`` if no trial completed).
        best_value: its objective value.
        best_params: its params.
        best_config: ``DIR/best.yaml`` (``None`` if no trial completed).
        trials_csv: ``DIR/trials.csv``.
        timed_out: the timeout stopped the search before ``trials`` was reached.
    """

    study_name: str
    storage: str
    trials: int
    new_trials: int
    best_number: int | None
    best_value: float | None
    best_params: dict[str, Any]
    best_config: Path | None
    trials_csv: Path
    timed_out: bool


def read_objective(
    run_dir: Path, result: dict[str, Any], *, metric: str, split: str, row_name: str
) -> float:
    """The objective of one trial's run directory.

    ``split="validation"``: the row's validation ``metric`` in ``metrics.json`` (the mean over
    folds of the validation queries carved from each fold's training side, ranked over the
    whole catalog by the model each fold keeps). ``split="test"``: the row's mean over test
    folds of ``metric`` (its ``ablation`` entry's ``metrics``).

    Raises:
        ValueError: if the run holds no such value, or it is not finite.
    """
    del run_dir  # everything is in metrics.json
    if split == "test":
        value = row_test_metric(result, metric=metric, row_name=row_name)
    else:
        entry = next((e for e in result.get("ablation", []) if e.get("name") == row_name), None)
        validation = (entry or {}).get("validation") or {}
        if metric not in validation:
            raise ValueError(
                f"metrics.json has no validation {metric} for row {row_name!r} "
                f"(validation metrics: {sorted(validation)})"
            )
        value = float(validation[metric])
    if not math.isfinite(value):
        raise ValueError(f"the objective is {value} (no validation query scored?)")
    return value


def row_test_metric(result: dict[str, Any], *, metric: str, row_name: str) -> float:
    """The row's mean test ``metric`` over folds, from its ``ablation`` entry of metrics.json."""
    entry = next((e for e in result.get("ablation", []) if e.get("name") == row_name), None)
    if entry is None or metric not in entry.get("metrics", {}):
        raise ValueError(f"metrics.json has no test {metric} for row {row_name!r}")
    return float(entry["metrics"][metric]["mean"])


@contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out/tune.lock``: one tuner writes a folder at a time.

    The lock goes with the process, so a killed tuner never leaves a stale one.
    """
    import fcntl

    with open(out / LOCK_FILE, "w", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise ConfigError(
                f"{out}: another shopaug tune is writing this folder; wait for it or use "
                "another --out"
            ) from error
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    ours = {STORAGE_FILE, LOCK_FILE}
    if (
        out.exists()
        and any(p.name not in ours for p in out.iterdir())
        and not (out / STORAGE_FILE).exists()
    ):
        raise ConfigError(
            f"--out {out} already holds files that shopaug tune did not write (no "
            f"{STORAGE_FILE}); choose an empty or new folder"
        )
    out.mkdir(parents=True, exist_ok=True)


def _fingerprint(base: RunConfig, settings: TuneSettings) -> dict[str, Any]:
    """What must not change when a study is resumed."""
    config = to_mapping(base)
    config.pop("show_progress", None)
    return {
        "config": config,
        "space": settings.space.as_mapping(),
        "objective": settings.objective_name,
        "tune_folds": settings.tune_folds,
    }


def _open_study(out: Path, base: RunConfig, settings: TuneSettings) -> tuple[Any, str, str]:
    optuna = require("optuna", "train")
    storage = optuna.storages.RDBStorage(f"sqlite:///{(out / STORAGE_FILE).resolve()}")
    name = settings.study_name or f"shopaug-{base.name}"
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=settings.seed),
        load_if_exists=True,
    )
    fingerprint = json.loads(json.dumps(_fingerprint(base, settings), default=str))
    saved = study.user_attrs.get("fingerprint")
    if saved is None:
        study.set_user_attr("fingerprint", fingerprint)
    elif saved != fingerprint:
        changed = sorted(k for k in fingerprint if saved.get(k) != fingerprint[k])
        raise ConfigError(
            f"{out / STORAGE_FILE}: study {name!r} was created with another "
            f"{', '.join(changed)}; resume with the same config and options, or use a new "
            "--out (or --study name)"
        )
    return storage, name, str(storage.url)


def _retry_interrupted(study: optuna.Study, storage: Any, name: str) -> int:
    """Fail trials left RUNNING by a killed tuner and queue their params again."""
    from optuna.trial import TrialState

    study_id = storage.get_study_id_from_name(name)
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        storage.set_trial_user_attr(trial_id, RETRY_ATTR, True)
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
        study.enqueue_trial(dict(trial.params), skip_if_exists=False)
        logger.info("trial %d was interrupted; its params are queued again", trial.number)
    return len(stale)


def _finished(study: optuna.Study) -> int:
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
    return sum(1 for t in done if not t.user_attrs.get(RETRY_ATTR))


def _prepare_trial_dir(trial_dir: Path, samples_cache: Path, number: int) -> None:
    """Create the trial's run directory with the shared samples cache linked in.

    A stub manifest marks the folder as a shopaug run directory (``run_experiment`` reuses
    those, and rewrites the manifest when it finishes).
    """
    trial_dir.mkdir(parents=True, exist_ok=True)
    if not (trial_dir / MANIFEST).exists():
        write_json(trial_dir / MANIFEST, {"command": f"shopaug tune (trial {number}, running)"})
    cache = trial_dir / "cache"
    cache.mkdir(exist_ok=True)
    link = cache / "samples"
    samples_cache.mkdir(parents=True, exist_ok=True)
    if not link.exists() and not link.is_symlink():
        link.symlink_to(samples_cache.resolve(), target_is_directory=True)


def _drop_weights(trial_dir: Path, *, keep_served: bool) -> None:
    """Fold models (about 90 MB each) go once a trial is scored; ``model/`` stays only for
    the best trial so far."""
    for model in (trial_dir / "training").glob("fold-*/**/model"):
        shutil.rmtree(model, ignore_errors=True)
    if not keep_served:
        shutil.rmtree(trial_dir / "model", ignore_errors=True)


def _write_trials_csv(study: optuna.Study, path: Path) -> None:
    frame = study.trials_dataframe(
        attrs=("number", "state", "value", "params", "user_attrs", "datetime_start", "duration")
    )
    temporary = path.with_name(path.name + ".tmp")
    frame.to_csv(temporary, index=False)
    temporary.replace(path)


def _write_best(
    study: optuna.Study, base: RunConfig, settings: TuneSettings, out: Path
) -> Path | None:
    optuna = require("optuna", "train")
    try:
        best = study.best_trial
    except ValueError:  # no trial completed yet
        return None
    choice = suggest_choice(optuna.trial.FixedTrial(best.params), settings.space, base)
    config = _trial_config(base, choice, best.number, settings)
    # Trials switch these off for speed; they do not change the bi-encoder's results.
    config.reranker, config.show_progress = base.reranker, base.show_progress
    path = out / "best.yaml"
    header = (
        f"# shopaug tune: best of {len(study.trials)} trials: trial {best.number}, "
        f"{settings.objective_name} = {best.value:.4f}\n"
        f"# run it: shopaug run {path}\n"
    )
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(header + yaml.safe_dump(to_mapping(config), sort_keys=False), "utf-8")
    temporary.replace(path)
    return path


def _trial_config(
    base: RunConfig, choice: TrialChoice, number: int, settings: TuneSettings
) -> RunConfig:
    return trial_config(
        base, choice, name=f"{base.name}-trial-{number}", train_folds=settings.tune_folds
    )


def _default_run(config: RunConfig, out: Path) -> dict[str, Any]:
    from shopaug.experiment.runner import run_experiment

    return run_experiment(config, out, command=f"shopaug tune (trial {config.name})")


def tune(
    base: RunConfig,
    out: str | Path,
    settings: TuneSettings,
    *,
    run: RunFunction | None = None,
    on_trial: Callable[[TrialReport], None] | None = None,
) -> TuneResult:
    """Search ``settings.space`` around ``base`` until the study holds ``settings.trials``.

    Each trial draws a :class:`~shopaug.tune.space.TrialChoice` with a TPE sampler seeded by
    ``settings.seed + <finished trials>`` (so a resumed search draws what an uninterrupted
    one would), runs ``run(trial_config, out/trials/<n>)`` and reads its objective with
    :func:`read_objective`. A trial whose training fails (a ``ValueError`` or
    ``RuntimeError``, a non-finite loss for instance) is recorded as failed and the search goes
    on; a :class:`~shopaug.errors.ShopaugError` (bad config or data) stops it.

    Rerunning with the same ``out`` resumes: finished trials are kept, trials left running by
    a killed tuner are run again with the same params.

    Args:
        base: the config to tune (a profile or a YAML file, loaded).
        out: output folder (see the module docstring).
        settings: trials, timeout, objective, search space.
        run: runs one trial config into a folder and returns its metrics.json payload;
            default :func:`shopaug.experiment.runner.run_experiment`.
        on_trial: called after every trial (progress).

    Returns:
        A :class:`TuneResult`.

    Raises:
        ConfigError: if ``out`` holds other files, another tuner holds it, or the study there
            was made with another config, search space or objective.
    """
    optuna = require("optuna", "train")
    from optuna.trial import TrialState

    run = run or _default_run
    out = Path(out)
    _check_out(out)
    settings.space.source_rows(base)  # fails early without sources
    samples_cache = out / SAMPLES_CACHE
    started = time.monotonic()
    new_trials = 0
    timed_out = False
    with _exclusive(out):
        storage, name, url = _open_study(out, base, settings)
        study = optuna.load_study(study_name=name, storage=storage)
        retried = _retry_interrupted(study, storage, name)
        if retried:
            logger.info("%d interrupted trial(s) queued again", retried)
        while _finished(study) < settings.trials:
            if settings.timeout is not None and time.monotonic() - started >= settings.timeout:
                timed_out = True
                logger.info("timeout: no new trial after %.0f s", settings.timeout)
                break
            study = optuna.load_study(
                study_name=name,
                storage=storage,
                sampler=optuna.samplers.TPESampler(seed=settings.seed + _finished(study)),
            )
            trial = study.ask()
            choice = suggest_choice(trial, settings.space, base)
            config = _trial_config(base, choice, trial.number, settings)
            trial_dir = out / "trials" / str(trial.number)
            _prepare_trial_dir(trial_dir, samples_cache, trial.number)
            trial.set_user_attr("run_dir", str(trial_dir))
            begin = time.monotonic()
            value: float | None = None
            test_metric: float | None = None
            error: str | None = None
            try:
                result = run(config, trial_dir)
                test_metric = row_test_metric(
                    result, metric=settings.metric, row_name=choice.row.name
                )
                value = read_objective(
                    trial_dir,
                    result,
                    metric=settings.metric,
                    split=settings.split,
                    row_name=choice.row.name,
                )
            except ShopaugError:
                trial.set_user_attr(RETRY_ATTR, True)
                study.tell(trial, state=TrialState.FAIL)
                raise
            except (ValueError, RuntimeError, ArithmeticError) as failure:
                error = f"{type(failure).__name__}: {failure}"
                logger.warning("trial %d failed: %s", trial.number, error)
                trial.set_user_attr("error", error[:500])
            if test_metric is not None:
                trial.set_user_attr(f"test_{settings.metric}", test_metric)
            seconds = time.monotonic() - begin
            trial.set_user_attr("seconds", round(seconds, 2))
            previous_best = _best_number(study)
            if value is None:
                study.tell(trial, state=TrialState.FAIL)
            else:
                study.tell(trial, value)
            new_trials += 1
            best_number = _best_number(study)
            _drop_weights(trial_dir, keep_served=best_number == trial.number)
            if previous_best is not None and previous_best != best_number:
                _drop_weights(out / "trials" / str(previous_best), keep_served=False)
            _write_trials_csv(study, out / "trials.csv")
            best_path = _write_best(study, base, settings, out)
            if on_trial is not None:
                on_trial(
                    TrialReport(
                        number=trial.number,
                        state="COMPLETE" if value is not None else "FAIL",
                        value=value,
                        test_metric=test_metric,
                        params=dict(trial.params),
                        seconds=seconds,
                        run_dir=trial_dir,
                        error=error,
                        best_number=best_number,
                        best_value=study.best_value if best_number is not None else None,
                    )
                )
        _write_trials_csv(study, out / "trials.csv")
        best_path = _write_best(study, base, settings, out)
        best_number = _best_number(study)
        return TuneResult(
            study_name=name,
            storage=url,
            trials=_finished(study),
            new_trials=new_trials,
            best_number=best_number,
            best_value=study.best_value if best_number is not None else None,
            best_params=dict(study.best_params) if best_number is not None else {},
            best_config=best_path,
            trials_csv=out / "trials.csv",
            timed_out=timed_out,
        )


def _best_number(study: optuna.Study) -> int | None:
    try:
        return int(study.best_trial.number)
    except ValueError:
        return None

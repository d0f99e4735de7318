"""Where training metrics go: a small protocol, TensorBoard, MLflow, and ``curve.jsonl``.

A training loop asks :func:`default_logger` for its logger. Outside a tracking session that is
TensorBoard under the training folder (as always); inside one (``with tracking_session(...)``,
opened by ``shopaug run`` from the run config's ``tracking:`` section) it is what the session's
backend says: TensorBoard, a nested MLflow run per training folder, or nothing. The session is
held in a context variable, so the experiment layer needs no logger parameter threaded through
every function between ``shopaug run`` and the loop.

MLflow (``pip install 'shopaug[tracking]'``) records, per ``shopaug run``: the flattened config
as params, a nested run per training (``train/loss`` and ``train/lr`` per step, the validation
metric per evaluation), the run's final metrics, the run directory as artifacts and the served
model as a pyfunc model with its signature (:mod:`shopaug.train.mlflow_pyfunc`, logged from
code: nothing is pickled). Its default store is SQLite inside the run directory
(``RUN_DIR/mlflow/mlflow.db``): MLflow 3 refuses new file stores (``./mlruns``) by default.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from shopaug.errors import ConfigError, require
from shopaug.train.config import TrackingConfig

logger = logging.getLogger(__name__)

MLFLOW_FOLDER = "mlflow"
"""The default MLflow store's folder inside a run directory (never logged as an artifact)."""
SKIPPED_ARTIFACTS = frozenset({MLFLOW_FOLDER, "cache"})
"""Top-level entries of a run directory not copied to MLflow: the store itself, and the stage
cache (content-keyed intermediate results that a rerun recomputes)."""
_PARAM_BATCH = 100  # MLflow takes at most 100 params per log_batch call
_PARAM_LENGTH = 6000  # and values of at most 6000 characters


@runtime_checkable
class MetricsLogger(Protocol):
    """Receives scalar metrics by step (TensorBoard, MLflow)."""

    def log_scalars(self, values: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


class TensorBoardLogger:
    """Writes scalars with ``torch.utils.tensorboard.SummaryWriter``.

    Args:
        log_dir: Event folder (``run_dir/tb``).
        purge_step: On resume, the first step to be written again: events of that step and
            later, left by the interrupted run, are dropped so that curves do not double back.
    """

    def __init__(self, log_dir: Path, *, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        for name, value in values.items():
            self._writer.add_scalar(name, value, global_step=step)

    def close(self) -> None:
        self._writer.close()


def import_mlflow() -> Any:
    """The ``mlflow`` module, or :class:`~shopaug.errors.MissingExtraError` naming the pip
    command (``pip install 'shopaug[tracking]'``)."""
    return require("mlflow", "tracking")


def metric_key(name: str) -> str:
    """``name`` as an MLflow metric key: ``@`` becomes ``_at_`` (``ndcg@10`` -> ``ndcg_at_10``)
    and any other character MLflow refuses becomes ``_``."""
    return re.sub(r"[^\w\-./ :]", "_", name.replace("@", "_at_"))


def flatten_params(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> ``{"train.lr": "0.0001", ...}``; lists and empty mappings as JSON."""
    flat: dict[str, str] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, prefix=f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            flat[name] = text[:_PARAM_LENGTH]
    return flat


class MlflowLogger:
    """A :class:`MetricsLogger` writing to one MLflow run.

    Each ``log_scalars`` is one asynchronous ``log_batch`` (MLflow's background queue), so a
    training step does not wait for the store; ``close`` waits for every pending batch and,
    with ``end_run``, marks the run finished.

    Args:
        client: An ``mlflow.MlflowClient``.
        run_id: The run the metrics go to.
        end_run: Mark the run ``FINISHED`` on ``close``.
    """

    def __init__(self, client: Any, run_id: str, *, end_run: bool = True) -> None:
        self._client = client
        self.run_id = run_id
        self._end_run = end_run
        self._pending: list[Any] = []

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(metric_key(k), float(v), now, step) for k, v in values.items()]
        operation = self._client.log_batch(self.run_id, metrics=metrics, synchronous=False)
        if operation is not None:
            self._pending.append(operation)

    def flush(self) -> None:
        """Wait until every batch logged so far is in the store."""
        for operation in self._pending:
            operation.wait()
        self._pending.clear()

    def close(self) -> None:
        self.flush()
        if self._end_run:
            self._client.set_terminated(self.run_id)


class TrackingSession:
    """One ``shopaug run`` (or any work) recorded by one tracking backend.

    Use :func:`tracking_session` to open one; the training loops reach it through
    :func:`default_logger`.

    Attributes:
        config: The tracking settings.
        root: The run directory; child runs are named by their folder relative to it.
        run_id: The MLflow parent run (``None`` for the other backends).
    """

    def __init__(self, config: TrackingConfig, root: Path) -> None:
        self.config = config
        self.root = root
        self.run_id: str | None = None
        self.tracking_uri: str | None = None
        self._client: Any = None
        self._experiment_id: str | None = None

    def start(self, *, run_name: str, params: Mapping[str, Any]) -> None:
        """Open the MLflow parent run and log ``params`` (nothing for other backends)."""
        if self.config.backend != "mlflow":
            return
        mlflow = import_mlflow()
        self.tracking_uri = self.config.uri or default_tracking_uri(self.root)
        self._client = mlflow.MlflowClient(tracking_uri=self.tracking_uri)
        self._experiment_id = self._experiment()
        run = self._client.create_run(self._experiment_id, run_name=run_name)
        self.run_id = run.info.run_id
        self.log_params(params)
        logger.info("MLflow run %s in %s", self.run_id, self.tracking_uri)

    def _experiment(self) -> str:
        found = self._client.get_experiment_by_name(self.config.experiment)
        if found is not None:
            return str(found.experiment_id)
        location = None
        if self.config.uri is None:
            location = (self.root / MLFLOW_FOLDER / "artifacts").resolve().as_uri()
        return str(self._client.create_experiment(self.config.experiment, location))

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log nested ``params`` flattened (``train.lr``) on the parent run."""
        if self.run_id is None:
            return
        from mlflow.entities import Param

        flat = sorted(flatten_params(params).items())
        for start in range(0, len(flat), _PARAM_BATCH):
            batch = [Param(k, v) for k, v in flat[start : start + _PARAM_BATCH]]
            self._client.log_batch(self.run_id, params=batch)

    def logger_for(self, run_dir: Path, *, purge_step: int | None) -> MetricsLogger | None:
        """The logger of one training folder: TensorBoard under it, a nested MLflow run
        named by its path below the session's root, or ``None`` for ``backend: none``."""
        if self.config.backend == "none":
            return None
        if self.config.backend == "tensorboard" or self.run_id is None:
            return tensorboard_logger(run_dir, purge_step=purge_step)
        try:
            name = str(Path(run_dir).resolve().relative_to(self.root.resolve()))
        except ValueError:
            name = str(run_dir)
        child = self._client.create_run(
            self._experiment_id,
            run_name=name,
            tags={"mlflow.parentRunId": self.run_id, "shopaug.training_dir": name},
        )
        return MlflowLogger(self._client, child.info.run_id)

    def log_metrics(self, values: Mapping[str, float], *, step: int = 0) -> None:
        """Log final metrics on the parent run (keys through :func:`metric_key`)."""
        if self.run_id is None:
            return
        parent = MlflowLogger(self._client, self.run_id, end_run=False)
        parent.log_scalars(dict(values), step)
        parent.flush()

    def log_run_directory(self) -> None:
        """Copy the run directory into the parent run's artifacts, without
        :data:`SKIPPED_ARTIFACTS`."""
        if self.run_id is None or not self.config.log_artifacts:
            return
        for entry in sorted(self.root.iterdir()):
            if entry.name in SKIPPED_ARTIFACTS or entry.name.endswith(".tmp"):
                continue
            if entry.is_dir():
                self._client.log_artifacts(self.run_id, str(entry), artifact_path=entry.name)
            elif entry.is_file():
                self._client.log_artifact(self.run_id, str(entry))

    def log_served_model(self, model_dir: Path, *, example: str = "red leather sofa") -> str | None:
        """Log ``model_dir`` as an MLflow pyfunc model (see :func:`log_model_dir`); returns its
        URI (``None`` when nothing is logged)."""
        if self.run_id is None or not self.config.log_model:
            return None
        return log_model_dir(
            model_dir, run_id=self.run_id, tracking_uri=self.tracking_uri, example=example
        )

    def close(self, status: str = "FINISHED") -> None:
        if self.run_id is not None:
            self._client.set_terminated(self.run_id, status=status)


def default_tracking_uri(run_dir: Path) -> str:
    """``sqlite:///RUN_DIR/mlflow/mlflow.db`` (the folder is created)."""
    folder = (Path(run_dir) / MLFLOW_FOLDER).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


_ACTIVE: ContextVar[TrackingSession | None] = ContextVar("shopaug_tracking", default=None)


def active_session() -> TrackingSession | None:
    """The session opened by the innermost :func:`tracking_session`, if any."""
    return _ACTIVE.get()


@contextmanager
def tracking_session(
    config: TrackingConfig, run_dir: str | Path, *, run_name: str, params: Mapping[str, Any]
) -> Iterator[TrackingSession]:
    """Record the work inside the ``with`` block with ``config``'s backend.

    The MLflow parent run ends ``FINISHED``, or ``FAILED`` when the block raises.

    Raises:
        MissingExtraError: ``backend: mlflow`` without ``shopaug[tracking]`` installed.
    """
    session = TrackingSession(config, Path(run_dir))
    session.start(run_name=run_name, params=params)
    token = _ACTIVE.set(session)
    try:
        yield session
    except BaseException:
        session.close("FAILED")
        raise
    else:
        session.close("FINISHED")
    finally:
        _ACTIVE.reset(token)


def tensorboard_logger(run_dir: Path, *, purge_step: int | None) -> MetricsLogger | None:
    """A TensorBoard logger under ``run_dir/tb``, or ``None`` (logged) if tensorboard is absent."""
    try:
        return TensorBoardLogger(run_dir / "tb", purge_step=purge_step)
    except ImportError as error:
        logger.warning("tensorboard is not installed, no TensorBoard logs (%s)", error)
        return None


def default_logger(run_dir: Path, *, purge_step: int | None) -> MetricsLogger | None:
    """The logger of a training folder: the active session's (see :class:`TrackingSession`),
    else TensorBoard under ``run_dir/tb`` (``None`` if tensorboard is absent)."""
    session = active_session()
    if session is not None:
        return session.logger_for(run_dir, purge_step=purge_step)
    return tensorboard_logger(run_dir, purge_step=purge_step)


def log_model_dir(
    model_dir: Path, *, run_id: str, tracking_uri: str | None, example: str = "red leather sofa"
) -> str:
    """Log a shopaug model directory to run ``run_id`` as an MLflow pyfunc model.

    The model is logged from code (:mod:`shopaug.train.mlflow_pyfunc`, nothing pickled) with
    the directory as its artifact; ``predict`` takes a frame with a ``text`` column and returns
    float32 vectors ``(n, dim)`` (param ``side``: ``query`` or ``item``). The signature is
    inferred from encoding ``example`` with the model, so its output size is the real one.

    Returns:
        The logged model's URI (``models:/<model id>``).

    Raises:
        ConfigError: ``model_dir`` is not a model directory.
    """
    mlflow = import_mlflow()
    import numpy as np
    import pandas as pd
    from mlflow.models import infer_signature
    from mlflow.types.schema import ParamSchema, ParamSpec

    from shopaug.models.model_dir import load_towers

    if not Path(model_dir).is_dir():
        raise ConfigError(f"cannot log {model_dir} to MLflow: it is not a model directory")
    frame = pd.DataFrame({"text": [example]})
    vectors = np.asarray(load_towers(model_dir).query.encode([example]), dtype=np.float32)
    signature = infer_signature(frame, vectors)
    signature.params = ParamSchema([ParamSpec("side", "string", "query")])
    code = Path(__file__).with_name("mlflow_pyfunc.py")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri or previous)
    try:
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="served-model",
                python_model=str(code),
                artifacts={"model_dir": str(model_dir)},
                signature=signature,
                pip_requirements=[f"shopaug[train]=={_shopaug_version()}"],
            )
    finally:
        mlflow.set_tracking_uri(previous)
    return str(info.model_uri)


def _shopaug_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("shopaug")
    except PackageNotFoundError:
        return "0.1.0"


def write_curve(path: Path, points: Sequence[dict[str, Any]]) -> None:
    """Rewrite ``curve.jsonl`` (one JSON object per line) atomically."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        for point in points:
            handle.write(json.dumps(point) + "\n")
    os.replace(temporary, path)


def append_curve(path: Path, point: dict[str, Any]) -> None:
    """Append one point to ``curve.jsonl``."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(point) + "\n")

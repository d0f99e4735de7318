"""Data-parallel training on Ray Train: the unchanged :func:`shopaug.train.fit` in each worker.

:func:`fit_on_ray` starts a ``ray.train.torch.TorchTrainer`` with ``workers`` CPU workers
(``cpus_per_worker`` each) and a gloo process group. Every worker gets a copy of the model
(through Ray's object store), reads the same training groups and runs
:func:`~shopaug.train.fit` with a :class:`~shopaug.train.data_parallel.DataParallelGroup`:
its share of every batch, gradients summed over the workers, rank 0 writing. Rank 0 reports
its run folder (``model/``, ``checkpoints/``, ``curve.jsonl``, ``tb/``) as a Ray Train
checkpoint; the driver copies it into ``run_dir``, so the folder is the one a local ``fit``
writes, and a run stopped on Ray resumes (on Ray or locally) from its checkpoints like a
local one.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from shopaug.errors import ConfigError, require
from shopaug.train.checkpoint import checkpoint_root, latest_checkpoint
from shopaug.train.config import TrainConfig, TrainingExample
from shopaug.train.loop import TrainResult

logger = logging.getLogger(__name__)

_RESULT_FIELDS = ("steps", "best_metric", "best_step", "elapsed_seconds", "stopped_early")


def import_ray_train() -> Any:
    """``ray.train.torch``, or a :class:`~shopaug.errors.MissingExtraError` naming
    ``pip install 'shopaug[scale]'``."""
    require("ray", "scale")
    require("ray.train", "scale")
    return require("ray.train.torch", "scale")


def train_worker(settings: dict[str, Any]) -> None:
    """What each Ray Train worker runs: :func:`~shopaug.train.fit` on its share of every
    batch, in a scratch run folder (rank 0's is reported as the run's checkpoint)."""
    import ray
    import ray.train

    from shopaug.train.data_parallel import DataParallelGroup
    from shopaug.train.loop import fit

    group = DataParallelGroup.from_process_group()
    config: TrainConfig = settings["config"]
    if config.num_threads is None:  # the worker's CPUs, not every core of its node
        config = config.model_copy(update={"num_threads": settings["threads"]})
    with tempfile.TemporaryDirectory(prefix=f"shopaug-train-{group.rank}-") as folder:
        run_dir = Path(folder) / "run"
        resume_from = settings["resume_from"]
        if resume_from is not None:  # every worker restores the same state
            shutil.copytree(resume_from, checkpoint_root(run_dir) / Path(resume_from).name)
        result = fit(
            ray.get(settings["model"]),
            settings["examples"],
            config,
            run_dir=run_dir,
            validate=settings["validate"],
            show_progress=settings["show_progress"] and group.writes,
            data_parallel=group,
        )
        metrics = {name: getattr(result, name) for name in _RESULT_FIELDS}
        if group.writes:
            checkpoint = ray.train.Checkpoint.from_directory(str(run_dir))
            ray.train.report(metrics, checkpoint=checkpoint)
        else:
            ray.train.report(metrics)


def fit_on_ray(
    model: nn.Module,
    train_examples: Sequence[TrainingExample],
    config: TrainConfig,
    *,
    run_dir: str | Path,
    workers: int,
    cpus_per_worker: int = 1,
    validate: Callable[[Any], float] | None = None,
    resume: bool = True,
    storage_path: str | None = None,
    show_progress: bool = False,
) -> TrainResult:
    """:func:`shopaug.train.fit` data-parallel over ``workers`` Ray Train workers.

    Needs a running Ray instance (:func:`shopaug.scale.ray_engine` joins or starts one).

    Args:
        model: The model to train, as :func:`~shopaug.train.fit` takes it; every worker
            trains a copy (it is pickled once into Ray's object store) and starts from rank
            0's weights. The model object here is left untrained: the result is in
            ``run_dir/model``.
        train_examples: The training groups (shipped to every worker).
        config: Hyper-parameters; ``batch_size`` is the global batch, dealt out to the workers.
            ``num_threads`` unset: ``cpus_per_worker`` torch threads per worker.
        run_dir: Gets what :func:`~shopaug.train.fit` writes there.
        workers: Training workers.
        cpus_per_worker: CPUs Ray reserves for each.
        validate: As in :func:`~shopaug.train.fit` (picklable; every worker runs it, so that
            early stopping decides alike everywhere).
        resume: Continue from the newest checkpoint in ``run_dir`` (every worker must be able
            to read ``run_dir``: a local instance or a shared file system); ``False`` starts
            over.
        storage_path: Ray Train's storage for the reported run folder: a folder every node
            can reach (NFS) or a URI (``s3://...``) on a multi-node cluster; default a scratch
            folder on this machine, removed afterwards.
        show_progress: A progress bar in rank 0's log.

    Returns:
        The :class:`~shopaug.train.loop.TrainResult` of rank 0, its paths in ``run_dir``.

    Raises:
        MissingExtraError: ``shopaug[scale]`` is not installed.
        ConfigError: ``workers`` or ``cpus_per_worker`` is below 1, or the training failed
            on Ray (the message carries the workers' error).
    """
    torch_train = import_ray_train()
    import ray
    import ray.train

    if workers < 1 or cpus_per_worker < 1:
        raise ConfigError(
            f"Ray training needs workers >= 1 and cpus_per_worker >= 1; got {workers} and "
            f"{cpus_per_worker}"
        )
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        for stale in (checkpoint_root(run_dir), run_dir / "tb", run_dir / "model"):
            shutil.rmtree(stale, ignore_errors=True)
        (run_dir / "curve.jsonl").unlink(missing_ok=True)
    resume_from = latest_checkpoint(run_dir) if resume else None
    scratch = None if storage_path is not None else tempfile.mkdtemp(prefix="shopaug-ray-train-")
    trainer = torch_train.TorchTrainer(
        train_worker,
        train_loop_config={
            "model": ray.put(model),
            "examples": list(train_examples),
            "config": config,
            "validate": validate,
            "resume_from": None if resume_from is None else str(resume_from.resolve()),
            "threads": cpus_per_worker,
            "show_progress": show_progress,
        },
        torch_config=torch_train.TorchConfig(backend="gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=workers, use_gpu=False, resources_per_worker={"CPU": cpus_per_worker}
        ),
        run_config=ray.train.RunConfig(
            name=f"shopaug-fit-{uuid.uuid4().hex[:12]}", storage_path=storage_path or scratch
        ),
    )
    try:
        try:
            outcome = trainer.fit()
        except Exception as error:  # Ray wraps the workers' exception in its own
            raise ConfigError(f"training on Ray failed: {error}") from error
        if outcome.checkpoint is None:
            raise ConfigError("training on Ray finished without rank 0's run folder")
        _replace_from(Path(outcome.checkpoint.to_directory()), run_dir)
        metrics = outcome.metrics
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    curve_path = run_dir / "curve.jsonl"
    curve = [json.loads(line) for line in curve_path.read_text("utf-8").splitlines() if line]
    logger.info("trained %d steps on %d Ray workers -> %s", metrics["steps"], workers, run_dir)
    return TrainResult(
        best_metric=metrics["best_metric"],
        best_step=metrics["best_step"],
        steps=int(metrics["steps"]),
        curve=curve,
        model_dir=run_dir / "model",
        checkpoint_path=latest_checkpoint(run_dir),
        elapsed_seconds=float(metrics["elapsed_seconds"]),
        stopped_early=bool(metrics["stopped_early"]),
    )


def _replace_from(reported: Path, run_dir: Path) -> None:
    """Move what rank 0 reported into ``run_dir``, each entry replacing its namesake (a run
    that was already finished reports no ``model/``: the one in ``run_dir`` stays)."""
    try:
        for entry in reported.iterdir():
            if entry.name.startswith("."):  # Ray's own marker files
                continue
            target = run_dir / entry.name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            shutil.move(str(entry), target)
    finally:
        shutil.rmtree(reported, ignore_errors=True)

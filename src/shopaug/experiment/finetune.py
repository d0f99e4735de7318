"""``shopaug train``: fine-tune the bi-encoder on one samples file into a model folder.

The folder it writes is a sentence-transformers model (``model.safetensors``, tokenizer,
config), loadable with ``BiEncoder(folder)`` or ``SentenceTransformer(folder)``, plus
``train.json`` (settings, data and samples hashes, the training curve) and ``training/``
(``curve.jsonl``, TensorBoard logs; checkpoints while it runs). A killed run resumes exactly
when the same command is run again.

With ``engine: ray`` (``shopaug train --engine ray``) the same training runs data-parallel on
Ray Train workers (:func:`shopaug.scale.training.fit_on_ray`) and writes the same folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shopaug.augment.samples import read_samples
from shopaug.config import seeded, to_mapping
from shopaug.data.records import Dataset
from shopaug.errors import ConfigError, DataError
from shopaug.experiment.config import RunConfig, train_settings
from shopaug.experiment.examples import build_examples
from shopaug.manifest import package_versions, write_json
from shopaug.train.config import TrainConfig, TrainingExample

logger = logging.getLogger(__name__)

TRAIN_RECORD = "train.json"


@dataclass(frozen=True)
class FinetuneResult:
    """Outcome of :func:`finetune_from_samples`.

    Attributes:
        model_dir: the model folder (``BiEncoder(model_dir)`` loads it).
        steps: optimizer steps done.
        examples: training groups built from the samples.
        seconds: training time.
        curve: the training curve points.
        record: ``model_dir/train.json``.
    """

    model_dir: Path
    steps: int
    examples: int
    seconds: float
    curve: list[dict[str, Any]]
    record: Path


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dataset_hash(dataset: Dataset) -> str:
    """A hash of the data set: its files' checksums, else its summary counts."""
    payload = json.dumps(
        [dataset.name, dataset.checksums or dataset.summary()], sort_keys=True, default=str
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def check_model_dir(out: Path) -> None:
    """Refuse a file, or a non-empty folder that ``shopaug train`` did not write."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    if out.exists() and any(out.iterdir()) and not (out / TRAIN_RECORD).exists():
        raise ConfigError(
            f"--out {out} already holds files that shopaug train did not write (no "
            f"{TRAIN_RECORD}); choose an empty or new folder"
        )


def _finished_before(out: Path) -> bool:
    try:
        return json.loads((out / TRAIN_RECORD).read_text("utf-8")).get("status") == "finished"
    except (FileNotFoundError, json.JSONDecodeError):
        return False


def train_config_for(
    config: RunConfig, *, examples: int, seed: int, max_steps: int | None
) -> TrainConfig:
    """``config.train`` as a :class:`TrainConfig`, seeded, with ``max_steps`` reachable.

    With ``max_steps``, ``epochs`` is raised so that the data is long enough for that many
    steps (the loop stops at whichever comes first).
    """
    values: dict[str, Any] = seeded(config.train, seed, name="train")
    if max_steps is not None:
        if max_steps < 1:
            raise ConfigError(f"--steps must be >= 1, got {max_steps}")
        batch = int(values.get("batch_size", TrainConfig.model_fields["batch_size"].default))
        needed = math.ceil(max_steps * batch / max(1, examples))
        values["max_steps"] = max_steps
        values["epochs"] = max(int(values.get("epochs", 1)), needed)
    return train_settings(values, seed=seed)


def examples_from_samples(
    samples_path: Path, dataset: Dataset, config: RunConfig, *, seed: int
) -> tuple[list[TrainingExample], dict[str, Any]]:
    """Training groups from a samples file, and a description of the file for the record.

    Raises:
        FileNotFoundError: if the file does not exist.
        DataError: if it is not a samples file, has no positives, or names products that are
            not in ``dataset``.
    """
    try:
        frame = read_samples(samples_path)
    except ValueError as error:
        raise DataError(str(error), path=samples_path) from error
    positives = int((frame["kind"] == "positive").sum())
    if positives == 0:
        raise DataError(
            "no positive rows (kind == 'positive'); training needs (query, positive) pairs",
            path=samples_path,
            field="kind",
        )
    unknown = sorted(set(map(str, frame["product_id"])) - set(dataset.product_index))
    if unknown:
        raise DataError(
            f"{len(unknown)} product ids are not in data set {dataset.name!r} (first: "
            f"{unknown[:3]}); were the samples made from another data set? (give --data)",
            path=samples_path,
            field="product_id",
        )
    examples = build_examples(
        frame,
        dataset,
        text_fields=config.text_fields,
        negatives_per_example=config.negatives_per_example,
        seed=seed,
    )
    description = {
        "path": str(samples_path),
        "sha256": file_sha256(samples_path),
        "rows": len(frame),
        "positives": positives,
        "negatives": int((frame["kind"] == "negative").sum()),
        "methods": sorted(set(map(str, frame["method"]))),
        "queries": int(frame["query_id"].nunique()),
    }
    return examples, description


def finetune_from_samples(
    samples_path: str | Path,
    dataset: Dataset,
    out: str | Path,
    *,
    config: RunConfig,
    max_steps: int | None = None,
    command: str = "",
    workers: int | None = None,
) -> FinetuneResult:
    """Fine-tune the bi-encoder (``config.model``, MiniLM by default) on a samples file.

    Uses ``config.train`` (a :class:`~shopaug.train.TrainConfig` mapping),
    ``config.text_fields`` and ``config.negatives_per_example``; groups are built with
    :func:`shopaug.experiment.examples.build_examples` and trained with
    :func:`shopaug.train.fit` (no validation: the model of the last step is kept). With
    ``train.lora`` only LoRA adapters train; the folder holds the merged weights.
    ``config.seed`` is the one seed of the groups' negatives, the data order and the weights'
    RNG; the data set does not depend on it.

    Args:
        samples_path: a samples.parquet (from ``shopaug augment``).
        dataset: the data set the samples were made from (product texts come from it).
        out: the model folder to write; a non-empty folder without ``train.json`` is refused.
        config: run config whose train settings, text fields and model are used.
        max_steps: optimizer steps (``None``: ``config.train``'s ``max_steps``/``epochs``).
        command: the command line, for the record.
        workers: with ``config.engine == "ray"``, data-parallel Ray Train workers of one CPU
            each (default: the Ray cluster's CPUs).

    Returns:
        A :class:`FinetuneResult`.

    Raises:
        ConfigError: bad settings, a folder that is not shopaug's, or a checkpoint in
            ``out/training`` from other settings or samples.
        DataError: a bad samples file.
        MissingExtraError: ``engine: ray`` without ``shopaug[scale]``.
    """
    from shopaug.models import BiEncoder

    samples_path, out = Path(samples_path), Path(out)
    check_model_dir(out)
    train_settings(config.train, seed=config.seed)  # bad settings fail before samples are read
    if config.engine == "ray":
        from shopaug.scale.training import import_ray_train

        import_ray_train()  # a missing extra is named before any work
    seed = config.seed
    examples, samples = examples_from_samples(samples_path, dataset, config, seed=seed)
    train_config = train_config_for(config, examples=len(examples), seed=seed, max_steps=max_steps)
    record: dict[str, Any] = {
        "status": "running",
        "command": command,
        "base_model": config.model,
        "train": train_config.model_dump(),
        "text_fields": list(config.text_fields),
        "negatives_per_example": config.negatives_per_example,
        "run_config": to_mapping(config),
        "data": {"name": dataset.name, "hash": dataset_hash(dataset)},
        "samples": samples,
        "examples": len(examples),
        "engine": config.engine,
        "versions": package_versions(),
    }
    training = out / "training"
    if _finished_before(out):
        shutil.rmtree(training, ignore_errors=True)  # a finished run is trained again, afresh
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / TRAIN_RECORD, record)
    lora = None if train_config.lora is None else train_config.lora.settings(seed)
    model = BiEncoder(None if config.model == "minilm" else config.model, lora=lora)
    result = _fit(model, examples, train_config, training, config=config, workers=workers)
    shutil.copytree(result.model_dir, out, dirs_exist_ok=True)
    for leftover in (result.model_dir, training / "checkpoints"):
        shutil.rmtree(leftover, ignore_errors=True)
    record.update(
        status="finished",
        steps=result.steps,
        seconds=round(result.elapsed_seconds, 3),
        curve=result.curve,
    )
    write_json(out / TRAIN_RECORD, record)
    logger.info("trained %d steps on %d groups -> %s", result.steps, len(examples), out)
    return FinetuneResult(
        model_dir=out,
        steps=result.steps,
        examples=len(examples),
        seconds=float(result.elapsed_seconds),
        curve=list(result.curve),
        record=out / TRAIN_RECORD,
    )


def _fit(
    model: Any,
    examples: list[TrainingExample],
    train_config: TrainConfig,
    training: Path,
    *,
    config: RunConfig,
    workers: int | None,
) -> Any:
    """:func:`shopaug.train.fit` here, or data-parallel on Ray Train (``engine: ray``)."""
    if config.engine != "ray":
        from shopaug.train import fit

        return fit(
            model, examples, train_config, run_dir=training, show_progress=config.show_progress
        )
    from shopaug.scale import ray_engine
    from shopaug.scale.training import fit_on_ray

    with ray_engine() as engine:
        return fit_on_ray(
            model,
            examples,
            train_config,
            run_dir=training,
            workers=workers or engine.shards,
            show_progress=config.show_progress,
        )

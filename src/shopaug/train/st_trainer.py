"""The yardstick trainer: sentence-transformers' own ``SentenceTransformerTrainer``.

A search engineer's first fine-tune of a bi-encoder is the short script of the
sentence-transformers documentation: (anchor, positive, negative) triples,
``MultipleNegativesRankingLoss``, the ``NO_DUPLICATES`` batch sampler, a linear warm-up. That
script, run by the library itself and not by :func:`shopaug.train.fit`, is the row every
shopaug training recipe is measured against (``trainer: sentence-transformers`` of an ablation
row, :mod:`shopaug.experiment.rows`). Nothing here chooses an epoch on validation data: the
script trains ``config.epochs`` epochs and keeps the last model, as the script does.

Settings taken from :class:`~shopaug.train.config.TrainConfig`: ``epochs``, ``batch_size``,
``lr``, ``warmup_ratio``, ``seed``, ``temperature`` (the loss's ``scale`` is its inverse, 20 for
0.05, the library's default), ``max_seq_length`` when set; everything else stays at the
library's defaults (AdamW, no weight decay, gradient norm clipped at 1, linear decay).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shopaug.errors import ConfigError
from shopaug.train.config import TrainConfig, TrainingExample

logger = logging.getLogger(__name__)


def triples_dataset(examples: Sequence[TrainingExample]) -> Any:
    """A ``datasets.Dataset`` with columns ``anchor``, ``positive``, ``negative`` (one
    negative per example: its first).

    Raises:
        ValueError: an example without a negative (the triple format needs one each).
    """
    from datasets import Dataset

    missing = [i for i, example in enumerate(examples) if not example.negatives]
    if missing:
        raise ValueError(
            f"{len(missing)} training examples have no negative (first: #{missing[0]}); "
            "a triple needs one"
        )
    return Dataset.from_dict(
        {
            "anchor": [example.query for example in examples],
            "positive": [example.positive for example in examples],
            "negative": [example.negatives[0] for example in examples],
        }
    )


def fit_sentence_transformers(
    base_model: str | Path,
    examples: Sequence[TrainingExample],
    config: TrainConfig,
    *,
    run_dir: str | Path,
    device: str = "cpu",
    show_progress: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """Fine-tune ``base_model`` (a sentence-transformers folder) on ``examples`` with
    sentence-transformers' trainer and ``MultipleNegativesRankingLoss``.

    Returns:
        The folder of the trained model (``run_dir/model``) and what the run cost
        (``steps``, ``epochs``, ``seconds``, ``curve``: the trainer's logged losses).

    Raises:
        ConfigError: ``config`` asks for something the yardstick script does not do (LoRA,
            DP-SGD, another loss).
    """
    try:
        from sentence_transformers import (
            SentenceTransformer,
            SentenceTransformerTrainer,
            SentenceTransformerTrainingArguments,
        )
        from sentence_transformers.losses import MultipleNegativesRankingLoss
        from sentence_transformers.training_args import BatchSamplers
    except ImportError as error:  # pragma: no cover - the train extra has both
        raise ConfigError(
            "the sentence-transformers trainer needs sentence-transformers and datasets: "
            'pip install "shopaug[train]"'
        ) from error
    if config.lora is not None or config.privacy.enabled or config.loss != "infonce":
        raise ConfigError(
            "trainer: sentence-transformers runs the library's plain recipe "
            "(MultipleNegativesRankingLoss, every weight trained); drop train.lora, "
            "train.privacy and keep loss: infonce for this row"
        )
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    model = SentenceTransformer(str(base_model), device=device)
    if config.max_seq_length is not None:
        model.max_seq_length = min(config.max_seq_length, model.max_seq_length or 512)
    loss = MultipleNegativesRankingLoss(model, scale=1.0 / config.temperature)
    arguments = SentenceTransformerTrainingArguments(
        output_dir=str(run_dir / "trainer"),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.lr,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a ratio of the steps
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        seed=config.seed,
        data_seed=config.seed,
        save_strategy="no",
        eval_strategy="no",
        logging_steps=10,
        report_to="none",
        disable_tqdm=not show_progress,
        use_cpu=device == "cpu",
        dataloader_num_workers=0,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=arguments, train_dataset=triples_dataset(examples), loss=loss
    )
    started = time.monotonic()
    output = trainer.train()
    seconds = time.monotonic() - started
    model_dir = run_dir / "model"
    model.save(str(model_dir))
    curve = [
        {"step": int(entry["step"]), "epoch": float(entry["epoch"]), "loss": float(entry["loss"])}
        for entry in trainer.state.log_history
        if "loss" in entry and "step" in entry
    ]
    logger.info(
        "sentence-transformers trainer: %d steps, %.0f s, final loss %.4f",
        output.global_step,
        seconds,
        output.training_loss,
    )
    return model_dir, {
        "steps": int(output.global_step),
        "epochs": float(config.epochs),
        "seconds": float(seconds),
        "curve": curve,
    }

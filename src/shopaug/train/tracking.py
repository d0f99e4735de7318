"""Where training metrics go: a small protocol, TensorBoard, and the ``curve.jsonl`` file."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

logger = logging.getLogger(__name__)


@runtime_checkable
class MetricsLogger(Protocol):
    """Receives scalar metrics by step (TensorBoard here; MLflow or others can plug in)."""

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


def default_logger(run_dir: Path, *, purge_step: int | None) -> MetricsLogger | None:
    """A TensorBoard logger under ``run_dir/tb``, or ``None`` (logged) if tensorboard is absent."""
    try:
        return TensorBoardLogger(run_dir / "tb", purge_step=purge_step)
    except ImportError as error:
        logger.warning("tensorboard is not installed, no TensorBoard logs (%s)", error)
        return None


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

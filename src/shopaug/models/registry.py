"""Model versions of a run directory and the atomic "current" pointer the service follows.

Layout inside a run directory::

    run_dir/
      model/                 the model the training run wrote (never touched here)
      models/v0001-<name>/   every promoted model, kept (nothing is ever deleted)
      current -> models/v0002-<name>     the pointer: a relative symlink, or a small text
                                         file holding the relative path where symlinks
                                         are not available
      promotions.jsonl       one JSON line per promotion (time, previous, new)

A promotion copies the new model under ``models/`` (to a temporary name, then renamed), writes
a new pointer next to the old one and moves it over the old one with :func:`os.replace`, which
is atomic on POSIX and Windows: a reader sees either the old or the new pointer, never a
missing or half-written one. The user's own directories are only read.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import uuid
from pathlib import Path

from shopaug.errors import ConfigError

logger = logging.getLogger(__name__)

#: Name of the pointer inside a run directory.
CURRENT = "current"
#: Directory (inside a run directory) that keeps every promoted model.
MODELS = "models"
#: The model a training run writes; served when no pointer exists yet.
TRAINED_MODEL = "model"
PROMOTIONS_LOG = "promotions.jsonl"

_VERSION_DIR = re.compile(r"^v(\d{4,})-")


def resolve_model_dir(pointer: str | Path) -> Path:
    """The model directory a pointer designates.

    Args:
        pointer: a symlink to a directory, a text file whose content is a path (relative to the
            file's directory, or absolute), or a plain directory. When it does not exist, the
            sibling ``model/`` directory written by training is used if there is one.

    Returns:
        The absolute, resolved model directory.

    Raises:
        ConfigError: nothing usable is found; the message names the path.
    """
    pointer = Path(pointer)
    if pointer.is_symlink() or pointer.is_dir():
        target = pointer.resolve()
    elif pointer.is_file():
        text = pointer.read_text(encoding="utf-8").strip()
        if not text:
            raise ConfigError(f"model pointer file {pointer} is empty; expected a directory path")
        target = (pointer.parent / text).resolve()
    elif (pointer.parent / TRAINED_MODEL).is_dir():
        target = (pointer.parent / TRAINED_MODEL).resolve()
    else:
        raise ConfigError(
            f"model_dir {pointer} does not exist and there is no {pointer.parent / TRAINED_MODEL}; "
            "expected a model directory, a symlink to one, or a pointer file"
        )
    if not target.is_dir():
        raise ConfigError(f"model pointer {pointer} designates {target}, which is not a directory")
    return target


def stage_model(run_dir: str | Path, new_model_dir: str | Path) -> Path:
    """Copy ``new_model_dir`` to ``run_dir/models/vNNNN-<name>`` and return that directory.

    A directory already inside ``run_dir/models`` is used as it is. The copy is written to a
    temporary name and renamed, so a crash never leaves a half-copied version under a real name.

    Raises:
        ConfigError: ``new_model_dir`` is not a directory.
    """
    run_dir = Path(run_dir).resolve()
    source = Path(new_model_dir).resolve()
    if not source.is_dir():
        raise ConfigError(f"model directory {new_model_dir} does not exist or is not a directory")
    models = run_dir / MODELS
    if source.parent == models:
        return source
    models.mkdir(parents=True, exist_ok=True)
    numbers = [
        int(match.group(1))
        for entry in models.iterdir()
        if (match := _VERSION_DIR.match(entry.name)) is not None
    ]
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", source.name).strip("-") or "model"
    target = models / f"v{max(numbers, default=0) + 1:04d}-{name}"
    staging = models / f".staging-{uuid.uuid4().hex}"
    shutil.copytree(source, staging, symlinks=False)
    os.replace(staging, target)
    logger.info("staged model %s as %s", source, target)
    return target


def activate_model(pointer: str | Path, model_dir: str | Path) -> Path | None:
    """Atomically point ``pointer`` at ``model_dir``; return the previously designated directory.

    The pointer is a relative symlink when the file system allows it, else a pointer file. It
    must not be a real directory (that would be a user's model, which is never replaced).

    Raises:
        ConfigError: the pointer is a real directory.
    """
    pointer = Path(pointer)
    model_dir = Path(model_dir).resolve()
    if pointer.is_dir() and not pointer.is_symlink():
        raise ConfigError(
            f"model_dir {pointer} is a directory, not a pointer; serve from "
            f"{pointer.parent / CURRENT} to allow promotions"
        )
    previous: Path | None = None
    if pointer.is_symlink() or pointer.exists():
        try:
            previous = resolve_model_dir(pointer)
        except ConfigError:
            previous = None
    pointer.parent.mkdir(parents=True, exist_ok=True)
    relative = os.path.relpath(model_dir, pointer.parent.resolve())
    temporary = pointer.with_name(f".{pointer.name}.{uuid.uuid4().hex}")
    try:
        os.symlink(relative, temporary, target_is_directory=True)
    except OSError:  # no symlinks here (some Windows setups): a pointer file instead
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(relative + "\n")
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(temporary, pointer)
    _fsync_directory(pointer.parent)
    logger.info("model pointer %s now designates %s (was %s)", pointer, model_dir, previous)
    return previous


def promote_model(run_dir: str | Path, new_model_dir: str | Path) -> Path:
    """Make ``new_model_dir`` the current model of ``run_dir``; keep every previous version.

    Copies the directory under ``run_dir/models/`` (see :func:`stage_model`), swaps the
    ``run_dir/current`` pointer atomically (see :func:`activate_model`) and appends a line to
    ``run_dir/promotions.jsonl``. Nothing is deleted: not the source, not earlier versions.

    Returns:
        The promoted (staged) model directory the pointer now designates.
    """
    staged = stage_model(run_dir, new_model_dir)
    previous = activate_model(Path(run_dir) / CURRENT, staged)
    record_promotion(run_dir, previous=previous, new=staged)
    return staged


def record_promotion(run_dir: str | Path, *, previous: Path | None, new: Path) -> None:
    """Append one line to ``run_dir/promotions.jsonl``."""
    line = {
        "time": time.time(),
        "previous": None if previous is None else str(previous),
        "new": str(new),
    }
    with open(Path(run_dir) / PROMOTIONS_LOG, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(line, sort_keys=True) + "\n")


def model_versions(run_dir: str | Path) -> list[Path]:
    """The promoted model directories of ``run_dir``, oldest first."""
    models = Path(run_dir) / MODELS
    if not models.is_dir():
        return []
    return sorted(p for p in models.iterdir() if p.is_dir() and _VERSION_DIR.match(p.name))


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX); a no-op where that is impossible."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)

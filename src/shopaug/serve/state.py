"""The backend the service is using, and how it is swapped for a new one without failing a
request.

A model directory is checked before it is loaded (:func:`check_model_files`): a half-written
one (a copy still running, a crash mid-write) is refused with the name of the incomplete file,
and the model in service stays.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shopaug.models.registry import (
    activate_model,
    record_promotion,
    resolve_model_dir,
    stage_model,
)
from shopaug.serve.backend import BackendLoader, SearchBackend

logger = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """A model directory could not be loaded; the message names it and the loader's error."""


def check_model_files(model_dir: Path) -> None:
    """Refuse a half-written model directory before loading it.

    Every ``*.json`` file must parse and every ``*.safetensors`` file must be complete (its
    header read by the safetensors library, which checks that the data covers the file).
    Loaders report such damage without the file's name; this check names it.

    Raises:
        ModelLoadError: a file is incomplete or unreadable; the message names it.
    """
    from safetensors import safe_open

    for path in sorted(Path(model_dir).rglob("*")):
        try:
            if path.suffix == ".json" and path.is_file():
                json.loads(path.read_text(encoding="utf-8"))
            elif path.suffix == ".safetensors" and path.is_file():
                with safe_open(str(path), framework="numpy"):
                    pass
        except (OSError, ValueError, UnicodeDecodeError) as error:  # incl. JSONDecodeError
            raise ModelLoadError(
                f"{path} is incomplete or unreadable ({error}): a half-written model directory"
            ) from error
        except Exception as error:  # safetensors raises its own SafetensorError
            raise ModelLoadError(
                f"{path} is not a complete safetensors file ({error}): a half-written model "
                "directory"
            ) from error


@dataclass(frozen=True, slots=True)
class Swap:
    """The outcome of a reload or promotion."""

    model_version: str
    previous_version: str | None
    model_dir: Path


class ModelHolder:
    """Holds the current backend; loads new ones and swaps them in atomically.

    A request takes a reference with :attr:`backend` once and uses it to the end, so a request
    that started before a swap finishes on the old model. A new backend is loaded completely
    before the reference is replaced (under a lock); reloads and promotions are serialised.
    The old backend is not closed: in-flight requests may still use it; it is garbage-collected
    when the last one finishes.

    Args:
        loader: builds a backend from a model directory.
        pointer: the model pointer (symlink or pointer file) to load from and to promote into.
        run_dir: where promoted models are kept.
        on_swap: called with (new version, previous version) after every swap.
    """

    def __init__(
        self,
        loader: BackendLoader,
        pointer: Path,
        run_dir: Path,
        on_swap: Callable[[str, str | None], None] | None = None,
    ) -> None:
        self._loader = loader
        self._pointer = pointer
        self._run_dir = run_dir
        self._on_swap = on_swap
        self._backend: SearchBackend | None = None
        self._model_dir: Path | None = None
        self._reference_lock = threading.Lock()
        self._load_lock = threading.Lock()
        self.load_error: str | None = None

    @property
    def backend(self) -> SearchBackend | None:
        """The backend to use for one request (None until the first load succeeds)."""
        with self._reference_lock:
            return self._backend

    @property
    def model_dir(self) -> Path | None:
        with self._reference_lock:
            return self._model_dir

    def reload(self) -> Swap:
        """Load the model the pointer designates now and swap it in.

        Raises:
            ModelLoadError: the pointer or the model cannot be loaded (the old one stays).
        """
        with self._load_lock:
            try:
                model_dir = resolve_model_dir(self._pointer)
            except Exception as error:
                self.load_error = str(error)
                raise ModelLoadError(str(error)) from error
            backend = self._load(model_dir)
            return self._swap(backend, model_dir)

    def promote(self, new_model_dir: Path) -> Swap:
        """Load ``new_model_dir``, copy it into the run directory, move the pointer, swap.

        The directory is loaded before anything is copied (so a directory that is not a model
        is refused without copying it) and the pointer moves only after that, so a broken
        model is never made current. The backend loaded from ``new_model_dir`` is the one
        served; the copy under ``run_dir/models`` is what later restarts load.

        Raises:
            ModelLoadError: the directory is missing or cannot be loaded (nothing changes).
        """
        with self._load_lock:
            source = Path(new_model_dir)
            if not source.is_dir():
                raise ModelLoadError(
                    f"model directory {new_model_dir} does not exist or is not a directory"
                )
            backend = self._load(source)
            try:
                staged = stage_model(self._run_dir, source)
            except Exception as error:
                raise ModelLoadError(f"could not copy {source} into the run: {error}") from error
            previous_dir = activate_model(self._pointer, staged)
            record_promotion(self._run_dir, previous=previous_dir, new=staged)
            return self._swap(backend, staged)

    def _load(self, model_dir: Path) -> SearchBackend:
        logger.info("loading model from %s", model_dir)
        try:
            check_model_files(model_dir)
        except ModelLoadError as error:
            logger.error("%s", error)
            raise
        try:
            backend = self._loader(model_dir)
        except Exception as error:
            message = f"model directory {model_dir} could not be loaded: {error}"
            logger.exception(message)
            raise ModelLoadError(message) from error
        if not isinstance(getattr(backend, "version", None), str):
            raise ModelLoadError(
                f"the loader returned {type(backend).__name__} for {model_dir}, which has no "
                "string 'version'; expected a SearchBackend"
            )
        return backend

    def _swap(self, backend: SearchBackend, model_dir: Path) -> Swap:
        with self._reference_lock:
            previous = self._backend
            self._backend = backend
            self._model_dir = model_dir
        self.load_error = None
        previous_version = None if previous is None else previous.version
        logger.info(
            "serving model %s from %s (was %s)", backend.version, model_dir, previous_version
        )
        if self._on_swap is not None:
            self._on_swap(backend.version, previous_version)
        return Swap(backend.version, previous_version, model_dir)

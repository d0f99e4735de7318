"""The stage cache of a run directory: samples and results keyed by the content they depend on.

A rerun with the same config and data reuses every finished stage; changing a setting
recomputes only what depends on it; an interrupted run resumes at the first unfinished stage.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from shopaug.augment.pipeline import AugmentConfig, augment
from shopaug.augment.samples import read_samples, write_samples
from shopaug.config import from_mapping
from shopaug.data import Dataset
from shopaug.manifest import write_json

#: ``augment(dataset, method, query_ids, *, config, seed, show_progress) -> (samples, summary)``:
#: :func:`shopaug.augment.pipeline.augment`, or the same on Ray (:mod:`shopaug.scale`).
MakeSamples = Callable[..., tuple[pd.DataFrame, dict[str, Any]]]


def content_hash(*parts: Any) -> str:
    """A short sha256 of the JSON of ``parts`` (dataclasses and paths through ``str``)."""
    payload = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


class Stages:
    """Cached stage results of one run directory (under ``run_dir/cache``).

    ``make_samples`` makes the samples that are not cached yet (default: :func:`augment` in
    this process; ``--engine ray`` passes :meth:`shopaug.scale.RayEngine.augment`).
    """

    def __init__(
        self, run_dir: Path, data_key: str, *, make_samples: MakeSamples = augment
    ) -> None:
        self.root = run_dir / "cache"
        self.data_key = data_key
        self.make_samples = make_samples
        self.root.mkdir(parents=True, exist_ok=True)

    def samples_key(
        self,
        method: str,
        train_ids: Sequence[str],
        augment_section: dict[str, Any],
        *,
        text_fields: Sequence[str],
        seed: int,
        model: str,
    ) -> str:
        """Content hash of everything one method's samples depend on."""
        return content_hash(
            "samples",
            self.data_key,
            method,
            list(train_ids),
            augment_section,
            list(text_fields),
            seed,
            model,
        )

    def samples(
        self,
        dataset: Dataset,
        method: str,
        train_ids: Sequence[str],
        augment_section: dict[str, Any],
        *,
        text_fields: Sequence[str],
        seed: int,
        model: str,
        show_progress: bool,
    ) -> tuple[pd.DataFrame, str]:
        """``method``'s samples for ``train_ids`` (made once, then read back) and their key."""
        key = self.samples_key(
            method, train_ids, augment_section, text_fields=text_fields, seed=seed, model=model
        )
        path = self.root / "samples" / f"{method}-{key}.parquet"
        if path.exists():
            return read_samples(path), key
        config = from_mapping(AugmentConfig, augment_section, section="augment")
        config.mining = {"text_fields": tuple(text_fields), **config.mining}
        frame, summary = self.make_samples(
            dataset, method, list(train_ids), config=config, seed=seed, show_progress=show_progress
        )
        write_samples(frame, path)
        write_json(path.with_suffix(".summary.json"), summary)
        return frame, key

    def result_path(self, *parts: Any) -> Path:
        """Where the result keyed by ``parts`` (and the data) is stored."""
        return self.root / "results" / f"{content_hash(self.data_key, *parts)}.json"

    def read(self, *parts: Any) -> Any | None:
        """The stored result for ``parts``, or None."""
        path = self.result_path(*parts)
        return json.loads(path.read_text("utf-8")) if path.exists() else None

    def write(self, value: Any, *parts: Any) -> Any:
        """Store ``value`` for ``parts`` (atomically) and return it."""
        write_json(self.result_path(*parts), value)
        return value

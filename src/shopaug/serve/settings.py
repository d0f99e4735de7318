"""Configuration of the HTTP service."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from shopaug.index.vector import DEFAULT_ANN_THRESHOLD
from shopaug.models.registry import CURRENT

#: Environment variable read by :meth:`Settings.for_run_dir` when no token is given.
ADMIN_TOKEN_ENV = "SHOPAUG_ADMIN_TOKEN"
#: Environment variable read by :meth:`Settings.for_run_dir` when no ad model folder is given.
ADS_MODEL_ENV = "SHOPAUG_ADS_MODEL_DIR"


class Settings(BaseModel):
    """Service settings.

    Attributes:
        run_dir: the run directory (model versions, pointer, default feedback database).
        model_dir: the pointer to the current model: a symlink or pointer file, by default
            ``run_dir/current`` (which falls back to ``run_dir/model`` until the first promotion).
        database_url: SQLAlchemy URL of the feedback store; default
            ``sqlite:///RUN_DIR/feedback.sqlite``.
        table_prefix: prefix of the feedback tables.
        admin_token: bearer token of ``/admin/*``; None disables those routes (404).
        max_query_chars: longest accepted query (422 above).
        max_k: largest accepted ``k`` (422 above).
        max_batch_events: most events in one ``/feedback`` request (422 above).
        max_body_bytes: largest request body (413 above).
        max_history: most product ids in one ``/recommend`` history (422 above).
        load_in_background: load the model in a thread after start-up, so ``/healthz`` answers
            at once and ``/readyz`` turns ready when the model is loaded; when False, start-up
            waits for the model and fails if it cannot be loaded.
        encoder_runtime: how queries are encoded: ``auto`` (ONNX Runtime fp32 when installed,
            else torch), ``torch`` (the model as saved), ``onnx`` / ``onnx-int8`` (ONNX
            Runtime, fp32 / int8 weights) or ``static`` (a static model distilled from it);
            see :mod:`shopaug.serve.runtime`.
        ann_threshold: catalogs of at least this many products are searched through an ANN
            index (unfiltered searches); smaller ones exactly.
        ann_kind: the ANN index: ``hnsw`` or ``ivf-pq``.
        feedback_writes_in_flight: most ``/feedback`` writes in the store at once.
        feedback_writes_waiting: most ``/feedback`` requests waiting for a write slot; one more
            is answered 503 with ``Retry-After`` at once (the queue is bounded, so is memory).
        feedback_wait_timeout_s: longest wait for a write slot (503 with ``Retry-After`` after).
        feedback_store_timeout_s: longest wait of a write for a database connection or lock
            (503 with ``Retry-After`` after; PostgreSQL ``statement_timeout``/``lock_timeout``).
        retry_after_s: the ``Retry-After`` of 503/507 answers, in seconds.
        ads_model_dir: the CTR model of ``/ads/*`` (a CTR run's ``model/``); default
            ``run_dir/ads``; without a model there the ad routes answer 404.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_dir: Path
    model_dir: Path | None = None
    database_url: str | None = None
    table_prefix: str = ""
    admin_token: SecretStr | None = None
    max_query_chars: int = Field(512, ge=1)
    max_k: int = Field(100, ge=1)
    max_batch_events: int = Field(1000, ge=1)
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    max_history: int = Field(200, ge=1)
    load_in_background: bool = False
    encoder_runtime: Literal["auto", "torch", "onnx", "onnx-int8", "static"] = "auto"
    ann_threshold: int = Field(DEFAULT_ANN_THRESHOLD, ge=0)
    ann_kind: Literal["hnsw", "ivf-pq"] = "hnsw"
    feedback_writes_in_flight: int = Field(4, ge=1)
    feedback_writes_waiting: int = Field(64, ge=0)
    feedback_wait_timeout_s: float = Field(5.0, gt=0)
    feedback_store_timeout_s: float = Field(10.0, gt=0)
    retry_after_s: int = Field(1, ge=1)
    ads_model_dir: Path | None = None

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        if self.model_dir is None:
            object.__setattr__(self, "model_dir", self.run_dir / CURRENT)
        if self.database_url is None:
            path = (self.run_dir / "feedback.sqlite").resolve()
            object.__setattr__(self, "database_url", f"sqlite:///{path.as_posix()}")
        if self.admin_token is not None and not self.admin_token.get_secret_value():
            raise ValueError("admin_token is empty; give a token or None to disable admin routes")
        return self

    @property
    def pointer(self) -> Path:
        """The model pointer (``model_dir`` with the default filled in)."""
        if self.model_dir is None:  # filled in by the validator; kept for the type checker
            raise RuntimeError("Settings.model_dir was not filled in")
        return self.model_dir

    @property
    def ads_model_path(self) -> Path:
        """The ad model folder (``ads_model_dir``, default ``run_dir/ads``)."""
        return self.ads_model_dir or self.run_dir / "ads"

    @property
    def feedback_url(self) -> str:
        """The feedback database URL (with the default filled in)."""
        if self.database_url is None:  # filled in by the validator; kept for the type checker
            raise RuntimeError("Settings.database_url was not filled in")
        return self.database_url

    @classmethod
    def for_run_dir(cls, run_dir: str | Path, **overrides: object) -> Settings:
        """Settings for ``run_dir``; the admin token defaults to ``$SHOPAUG_ADMIN_TOKEN``."""
        if "admin_token" not in overrides and os.environ.get(ADMIN_TOKEN_ENV):
            overrides["admin_token"] = os.environ[ADMIN_TOKEN_ENV]
        if "ads_model_dir" not in overrides and os.environ.get(ADS_MODEL_ENV):
            overrides["ads_model_dir"] = Path(os.environ[ADS_MODEL_ENV])
        return cls(run_dir=Path(run_dir), **overrides)  # type: ignore[arg-type]

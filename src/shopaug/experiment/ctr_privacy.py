"""DP-SGD for the neural CTR model of ``task: ctr`` (the run config's ``privacy`` section).

The section takes the fields of :class:`~shopaug.train.config.PrivacyConfig` that apply to a
network over table rows (``enabled``, ``target_epsilon`` or ``noise_multiplier``, ``delta``,
``max_grad_norm``, ``accountant``); the network trains through
:class:`~shopaug.train.dp_sgd.PrivateRowTraining`, one impression being one example, and the
guarantee is recorded per variant in ``metrics.json``, in ``model/privacy.json`` and in the
manifest. Only the neural learner trains with DP-SGD here, so a private run lists no other.

Example (YAML)::

    task: ctr
    models: [neural]
    privacy: {enabled: true, target_epsilon: 8, delta: 1.0e-5, max_grad_norm: 1.0}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
import pydantic

from shopaug.errors import ConfigError
from shopaug.models.ctr import CtrModel, CtrSettings
from shopaug.train.config import PrivacyConfig

if TYPE_CHECKING:
    from shopaug.train.dp_sgd import PrivacyReport

#: PrivacyConfig fields that mean nothing for a network over table rows.
NOT_FOR_ROWS = ("trainable_layers",)


def parse_privacy(values: Any, *, source: str, models: Sequence[str]) -> dict[str, Any]:
    """Check a CTR config's ``privacy`` mapping; returns it as given (``{}``: off).

    Raises:
        ConfigError: A field is unknown, out of range or meaningless here, or ``models`` lists
            a learner other than ``neural`` while privacy is on.
    """
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"{source}: privacy must be a mapping, got {values!r}")
    misplaced = [key for key in NOT_FOR_ROWS if key in values]
    if misplaced:
        raise ConfigError(
            f"{source}: privacy.{misplaced[0]} applies to query towers, not the CTR network "
            "(every layer of it trains)"
        )
    settings = privacy_config(values, source=source)
    others = [model for model in models if model != "neural"]
    if settings.enabled and others:
        raise ConfigError(
            f"{source}: privacy (DP-SGD) trains the neural model only, but models also lists "
            f"{others}; set models: [neural] (the other learners would not be private)"
        )
    return dict(values)


def privacy_config(values: Mapping[str, Any], *, source: str = "privacy") -> PrivacyConfig:
    """The ``privacy`` mapping as a :class:`PrivacyConfig`; errors name the field."""
    try:
        return PrivacyConfig(**values)
    except pydantic.ValidationError as error:
        problems = "; ".join(
            f"privacy.{'.'.join(map(str, e['loc'])) or '(section)'}: {e['msg']} "
            f"(got {e.get('input')!r})"
            for e in error.errors()
        )
        raise ConfigError(f"{source}: {problems}") from error


def fit_model(
    table: pd.DataFrame, settings: CtrSettings, privacy: Mapping[str, Any]
) -> tuple[CtrModel, PrivacyReport | None]:
    """``CtrModel.fit``, through DP-SGD when ``privacy`` is on; the model and its guarantee
    (None without DP)."""
    config = privacy_config(privacy)
    if not config.enabled:
        return CtrModel.fit(table, settings), None
    from shopaug.train.dp_sgd import PrivateRowTraining

    trainer = PrivateRowTraining(config)
    model = CtrModel.fit(table, settings, trainer=trainer)
    assert trainer.report is not None  # set by the training it just did
    return model, trainer.report


def privacy_label(privacy: Mapping[str, Any]) -> str:
    """`` / DP-SGD eps 8`` (or ``sigma 1.1``) for a variant's name; empty without DP."""
    config = privacy_config(privacy)
    if not config.enabled:
        return ""
    if config.target_epsilon is not None:
        return f" / DP-SGD eps {config.target_epsilon:g}"
    return f" / DP-SGD sigma {config.noise_multiplier:g}"

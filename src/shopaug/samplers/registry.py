"""The sampler registry and :func:`build_sampler`, which turns a :class:`SamplerConfig` into one."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from shopaug.errors import ConfigError
from shopaug.samplers.base import NegativeSampler, check_int
from shopaug.samplers.draws import DEFAULT_MAX_RETRIES
from shopaug.samplers.dynamic import DynamicSampler, Scorer
from shopaug.samplers.hard_pool import HardPoolSampler
from shopaug.samplers.in_batch import InBatchSampler
from shopaug.samplers.mixed import MixedSampler
from shopaug.samplers.popularity import PopularitySampler
from shopaug.samplers.uniform import UniformSampler

#: Sampler name (as written in configs) -> class.
SAMPLERS: dict[str, type] = {
    "uniform": UniformSampler,
    "popularity": PopularitySampler,
    "in_batch": InBatchSampler,
    "mixed": MixedSampler,
    "hard_pool": HardPoolSampler,
    "dynamic": DynamicSampler,
}

#: Samplers over a fixed catalog distribution: the extra negatives of ``mixed`` and the fallback
#: of ``hard_pool`` come from one of these.
CATALOG_SAMPLERS = ("uniform", "popularity")


@dataclass(frozen=True)
class SamplerConfig:
    """Which negative sampler to build, and its settings; checked on construction.

    Attributes:
        name: a key of :data:`SAMPLERS`.
        alpha: popularity exponent (``popularity``), >= 0.
        smoothing: added to every count (``popularity``, ``in_batch`` log_q), >= 0.
        replace: draw with replacement (``uniform``, ``popularity``, ``dynamic``).
        n_uniform: catalog negatives per row in ``mixed``, >= 0.
        catalog_sampler: ``"uniform"`` or ``"popularity"``: the extra negatives of ``mixed``
            and the fallback of ``hard_pool``.
        temperature: softmax temperature of ``dynamic``, > 0.
        refresh_every: sample calls between score refreshes of ``dynamic``, >= 1.
        candidates: size of the scored candidate subset of ``dynamic``; ``None`` for all items.
        max_retries: rounds of redrawing excluded items (``uniform``, ``popularity``), >= 0.
    """

    name: str = "uniform"
    alpha: float = 0.75
    smoothing: float = 1.0
    replace: bool = True
    n_uniform: int = 1
    catalog_sampler: str = "uniform"
    temperature: float = 1.0
    refresh_every: int = 100
    candidates: int | None = None
    max_retries: int = DEFAULT_MAX_RETRIES

    def __post_init__(self) -> None:
        if self.name not in SAMPLERS:
            raise ConfigError(
                f"SamplerConfig.name: unknown sampler {self.name!r}; "
                f"expected one of {sorted(SAMPLERS)}"
            )
        if self.catalog_sampler not in CATALOG_SAMPLERS:
            raise ConfigError(
                f"SamplerConfig.catalog_sampler must be one of {list(CATALOG_SAMPLERS)}, "
                f"got {self.catalog_sampler!r}"
            )
        for field in ("alpha", "smoothing"):
            value = getattr(self, field)
            if not isinstance(value, int | float) or not np.isfinite(value) or value < 0:
                raise ConfigError(
                    f"SamplerConfig.{field} must be a finite number >= 0, got {value!r}"
                )
        if (
            not isinstance(self.temperature, int | float)
            or not np.isfinite(self.temperature)
            or self.temperature <= 0
        ):
            raise ConfigError(
                f"SamplerConfig.temperature must be a finite number > 0, got {self.temperature!r}"
            )
        if not isinstance(self.replace, bool):
            raise ConfigError(f"SamplerConfig.replace must be true or false, got {self.replace!r}")
        check_int(self.n_uniform, name="SamplerConfig.n_uniform", minimum=0)
        check_int(self.refresh_every, name="SamplerConfig.refresh_every", minimum=1)
        check_int(self.max_retries, name="SamplerConfig.max_retries", minimum=0)
        if self.candidates is not None:
            check_int(self.candidates, name="SamplerConfig.candidates", minimum=2)


@dataclass(frozen=True)
class _Inputs:
    """What :func:`build_sampler` was given besides the config."""

    n_items: int
    counts: np.ndarray | None
    pool: Mapping[int, np.ndarray] | None
    scorer: Scorer | None

    def need_counts(self, why: str) -> np.ndarray:
        if self.counts is None:
            raise ConfigError(f"{why} needs item counts: pass counts=... to build_sampler")
        return self.counts


def _uniform(config: SamplerConfig, inputs: _Inputs) -> UniformSampler:
    return UniformSampler(inputs.n_items, replace=config.replace, max_retries=config.max_retries)


def _popularity(config: SamplerConfig, inputs: _Inputs) -> PopularitySampler:
    return PopularitySampler(
        inputs.need_counts(f"sampler {config.name!r} with popularity negatives"),
        config.alpha,
        smoothing=config.smoothing,
        replace=config.replace,
        max_retries=config.max_retries,
    )


def _catalog(config: SamplerConfig, inputs: _Inputs) -> UniformSampler | PopularitySampler:
    if config.catalog_sampler == "popularity":
        return _popularity(config, inputs)
    return _uniform(config, inputs)


def _in_batch(config: SamplerConfig, inputs: _Inputs) -> InBatchSampler:
    return InBatchSampler(inputs.n_items, counts=inputs.counts, smoothing=config.smoothing)


def _mixed(config: SamplerConfig, inputs: _Inputs) -> MixedSampler:
    return MixedSampler(_in_batch(config, inputs), _catalog(config, inputs), config.n_uniform)


def _hard_pool(config: SamplerConfig, inputs: _Inputs) -> HardPoolSampler:
    if inputs.pool is None:
        raise ConfigError(
            "sampler 'hard_pool' needs pool={query_row: item_rows} (from samples.parquet)"
        )
    return HardPoolSampler(inputs.pool, _catalog(config, inputs))


def _dynamic(config: SamplerConfig, inputs: _Inputs) -> DynamicSampler:
    if inputs.scorer is None or not isinstance(inputs.scorer, Scorer):
        raise ConfigError(
            "sampler 'dynamic' needs scorer=... with a score(query_rows, item_rows) method, "
            f"got {inputs.scorer!r}"
        )
    return DynamicSampler(
        inputs.scorer,
        inputs.n_items,
        temperature=config.temperature,
        refresh_every=config.refresh_every,
        candidates=config.candidates,
        replace=config.replace,
    )


_BUILDERS: dict[str, Callable[[SamplerConfig, _Inputs], NegativeSampler]] = {
    "uniform": _uniform,
    "popularity": _popularity,
    "in_batch": _in_batch,
    "mixed": _mixed,
    "hard_pool": _hard_pool,
    "dynamic": _dynamic,
}


def build_sampler(
    config: SamplerConfig,
    *,
    n_items: int,
    counts: np.ndarray | None = None,
    pool: Mapping[int, np.ndarray] | None = None,
    scorer: Scorer | None = None,
) -> NegativeSampler:
    """Build the sampler ``config`` names, checking that it has what it needs.

    Args:
        config: the sampler settings.
        n_items: catalog size.
        counts: ``(n_items,)`` item counts; needed by ``popularity`` (and a popularity
            ``catalog_sampler``), used by ``in_batch`` and ``mixed`` for log_q.
        pool: ``{query_row: item_rows}`` hard pools; needed by ``hard_pool``.
        scorer: a :class:`Scorer`; needed by ``dynamic``.

    Returns:
        A :class:`NegativeSampler`.

    Raises:
        ConfigError: naming the field or argument that is missing or wrong.

    Example:
        >>> import numpy as np
        >>> from shopaug.samplers import SamplerConfig, build_sampler
        >>> sampler = build_sampler(SamplerConfig(name="popularity", alpha=0.5),
        ...                         n_items=3, counts=np.array([4, 1, 0]))
        >>> type(sampler).__name__
        'PopularitySampler'
    """
    check_int(n_items, name="n_items (catalog size)", minimum=2)
    if counts is not None and np.asarray(counts).shape != (n_items,):
        raise ConfigError(
            f"counts must have one entry per item, shape ({n_items},), "
            f"got {np.asarray(counts).shape}"
        )
    if config.candidates is not None and config.candidates > n_items:
        raise ConfigError(f"SamplerConfig.candidates={config.candidates} exceeds n_items={n_items}")
    inputs = _Inputs(n_items=int(n_items), counts=counts, pool=pool, scorer=scorer)
    return _BUILDERS[config.name](config, inputs)

"""Negative samplers over item rows, sharing one protocol and an explicit numpy Generator.

Every sampler is called the same way and never returns a query's positives::

    out = sampler.sample(query_rows=q, positive_rows=p, n=8, rng=np.random.default_rng(0),
                         exclude=known_positives)   # out.items, out.log_q: (batch, 8)

| name         | class               | negatives                                | log_q          |
|--------------|---------------------|------------------------------------------|----------------|
| `uniform`    | `UniformSampler`    | uniform over the catalog                 | -log n_items   |
| `popularity` | `PopularitySampler` | (count + smoothing) ** alpha             | log q(j)       |
| `in_batch`   | `InBatchSampler`    | the other positives in the batch         | log popularity |
| `mixed`      | `MixedSampler`      | in-batch plus catalog (Yang et al. 2020) | log mixture    |
| `hard_pool`  | `HardPoolSampler`   | a fixed hard pool per query + fallback   | 0              |
| `dynamic`    | `DynamicSampler`    | softmax(score / temperature) (IRGAN)     | log softmax    |

A loss applies the logQ correction by subtracting ``log_q`` from the logits of the negatives.
"""

from shopaug.samplers.base import (
    Exclusions,
    NegativeSample,
    NegativeSampler,
    SamplingError,
)
from shopaug.samplers.dynamic import DynamicSampler, Scorer
from shopaug.samplers.hard_pool import HardPoolSampler, pool_from_samples
from shopaug.samplers.in_batch import InBatchSampler
from shopaug.samplers.mixed import MixedSampler
from shopaug.samplers.popularity import PopularitySampler
from shopaug.samplers.registry import (
    CATALOG_SAMPLERS,
    SAMPLERS,
    SamplerConfig,
    build_sampler,
)
from shopaug.samplers.uniform import UniformSampler

__all__ = [
    "CATALOG_SAMPLERS",
    "SAMPLERS",
    "DynamicSampler",
    "Exclusions",
    "HardPoolSampler",
    "InBatchSampler",
    "MixedSampler",
    "NegativeSample",
    "NegativeSampler",
    "PopularitySampler",
    "SamplerConfig",
    "SamplingError",
    "Scorer",
    "UniformSampler",
    "build_sampler",
    "pool_from_samples",
]

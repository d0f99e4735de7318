"""Identity of in-memory weights: a sha256 that changes whenever a parameter changes."""

from __future__ import annotations

import hashlib

import torch
from torch import nn


class WeightsFingerprint:
    """sha256 prefix of a module's ``state_dict``, recomputed only after the weights change.

    Every in-place update of a tensor (an optimizer step, ``load_state_dict``) bumps its
    ``_version`` counter, so the hash is cached against those counters and costs nothing while
    the weights stay the same.
    """

    def __init__(self, module: nn.Module, length: int = 16) -> None:
        self._module = module
        self._length = length
        self._versions: tuple[int, ...] | None = None
        self._digest = ""

    def __call__(self) -> str:
        state = self._module.state_dict()
        versions = tuple(tensor._version for tensor in state.values())
        if versions != self._versions:
            digest = hashlib.sha256()
            for name in sorted(state):
                tensor = state[name].detach().cpu().contiguous()
                digest.update(name.encode())
                digest.update(str(tensor.dtype).encode())
                digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
            self._digest = digest.hexdigest()[: self._length]
            self._versions = versions
        return self._digest

"""Optional LoRA adapters (through ``peft``) for the transformer inside a model.

LoRA (Hu et al., 2021) trains two small matrices ``A (r x in)`` and ``B (out x r)`` beside each
target linear layer, whose output becomes ``W x + (alpha / r) B A x``; ``W`` stays frozen.
``B`` starts at 0, so a model with fresh adapters computes exactly what it computed before.

The adapters are injected in place (``peft.inject_adapter_in_model``), so the transformer keeps
its class and its forward signature; saving writes a *merged* copy (``W + (alpha / r) B A``),
a plain model that loads without ``peft``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from shopaug.errors import require

LORA_MARK = "lora_"


@dataclass(frozen=True)
class LoraSettings:
    """LoRA hyper-parameters.

    Attributes:
        r: Rank of the update (the ``lora_r`` of a config).
        alpha: Scale numerator; the update is multiplied by ``alpha / r``. Default ``2 * r``.
        dropout: Dropout on the adapter input.
        target_modules: Names of the linear layers to adapt (BERT attention: query, value).
        seed: Seeds the random initialisation of ``A``.
    """

    r: int = 8
    alpha: int | None = None
    dropout: float = 0.1
    target_modules: Sequence[str] = ("query", "value")
    seed: int = 0

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"lora r must be >= 1, got {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora dropout must be in [0, 1), got {self.dropout}")


def inject_lora(transformer: nn.Module, settings: LoraSettings) -> int:
    """Add LoRA adapters to ``transformer`` in place and freeze its other weights.

    Args:
        transformer: The module to adapt (its linear layers named in ``target_modules``).
        settings: LoRA hyper-parameters.

    Returns:
        The number of trainable (adapter) parameters.

    Raises:
        MissingExtraError: If ``peft`` is not installed.
        ValueError: If no layer matches ``target_modules``.
    """
    peft = require("peft", "train")
    config = peft.LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha if settings.alpha is not None else 2 * settings.r,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        try:
            peft.inject_adapter_in_model(config, transformer)
        except ValueError as error:
            raise ValueError(
                f"no layer of {type(transformer).__name__} matches lora target_modules "
                f"{list(settings.target_modules)}: {error}"
            ) from error
    trainable = 0
    for name, parameter in transformer.named_parameters():
        parameter.requires_grad = LORA_MARK in name
        trainable += parameter.numel() if parameter.requires_grad else 0
    return trainable


def has_lora(module: nn.Module) -> bool:
    """Whether ``module`` holds LoRA adapter weights."""
    return any(LORA_MARK in name for name, _ in module.named_parameters())


def merged_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` with every LoRA layer merged into its base layer and removed.

    The original keeps its adapters, so training can go on after a save.
    """
    lora_layers = require("peft", "train").tuners.lora.LoraLayer
    merged = copy.deepcopy(module)
    for name, layer in list(merged.named_modules()):
        if isinstance(layer, lora_layers):
            layer.merge()
            parent_name, _, child = name.rpartition(".")
            parent = merged.get_submodule(parent_name) if parent_name else merged
            setattr(parent, child, layer.base_layer)
    for parameter in merged.parameters():
        parameter.requires_grad = True
    return merged

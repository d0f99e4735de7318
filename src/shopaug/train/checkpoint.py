"""Checkpoints for exact resume: safetensors for tensors, JSON for everything else.

A checkpoint is a folder ``checkpoints/step-00000012/`` holding:

* ``model.safetensors``: the model's ``state_dict`` (``safetensors.torch.save_model``, which
  handles tied weights);
* ``optimizer.safetensors``: every tensor of the optimizer state, keyed ``"<param>.<name>"``;
* ``rng.safetensors``: the torch CPU (and CUDA) generator states and numpy's MT19937 key;
* ``state.json``: the loop state (step, epoch, position in the epoch, best metric, curve...),
  the optimizer's param groups and non-tensor state, the scheduler's state and python's and
  numpy's scalar RNG state.

Nothing is pickled. The folder is written under a temporary name and renamed into place, so a
process killed while writing leaves either the previous checkpoint or the new one, never half.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

logger = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"^step-(\d+)$")
STATE_FILE = "state.json"


def checkpoint_root(run_dir: Path) -> Path:
    """Folder that holds the checkpoints of a run."""
    return run_dir / "checkpoints"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of ``run_dir``, oldest first."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        match = _STEP_DIR.match(entry.name)
        if match and (entry / STATE_FILE).is_file():
            found.append((int(match.group(1)), entry))
    return [path for _, path in sorted(found)]


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint, or ``None``."""
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def _optimizer_to_files(
    optimizer: torch.optim.Optimizer,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, param_state in state["state"].items():
        for name, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{param_id}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(param_id), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalar_state": scalars}


def _optimizer_from_files(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        param_id, name = key.split(".", 1)
        state.setdefault(int(param_id), {})[name] = tensor
    for param_id, values in meta["scalar_state"].items():
        state.setdefault(int(param_id), {}).update(values)
    groups = []
    for group in meta["param_groups"]:
        group = dict(group)
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _rng_to_files() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{index}"] = cuda_state
    kind, key, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    tensors["numpy_key"] = torch.from_numpy(np.asarray(key, dtype=np.int64))
    version, internal, gauss_next = random.getstate()
    meta = {
        "numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "cached": cached},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }
    return tensors, meta


def _rng_from_files(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
        if states:
            torch.cuda.set_rng_state_all(states)
    numpy_meta = meta["numpy"]
    np.random.set_state(
        (
            numpy_meta["kind"],
            tensors["numpy_key"].numpy().astype(np.uint32),
            numpy_meta["pos"],
            numpy_meta["has_gauss"],
            numpy_meta["cached"],
        )
    )
    python_meta = meta["python"]
    random.setstate(
        (python_meta["version"], tuple(python_meta["internal"]), python_meta["gauss_next"])
    )


def save_checkpoint(
    run_dir: Path,
    *,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loop_state: dict[str, Any],
    keep: int,
) -> Path:
    """Write a checkpoint atomically and keep only the ``keep`` newest ones.

    Args:
        run_dir: The run folder.
        step: Optimizer steps done; names the folder.
        model: The model being trained.
        optimizer: Its optimizer.
        scheduler: Its learning-rate scheduler.
        loop_state: JSON-serialisable state of the loop.
        keep: Checkpoints to keep, newest first.

    Returns:
        The checkpoint folder.
    """
    root = checkpoint_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    for stale in root.glob(".tmp-step-*"):  # left by a process killed while writing
        shutil.rmtree(stale, ignore_errors=True)
    temporary = root / f".tmp-step-{step:08d}-{os.getpid()}"
    temporary.mkdir()
    save_model(model, str(temporary / "model.safetensors"))
    optimizer_tensors, optimizer_meta = _optimizer_to_files(optimizer)
    save_file(optimizer_tensors, str(temporary / "optimizer.safetensors"))
    rng_tensors, rng_meta = _rng_to_files()
    save_file(rng_tensors, str(temporary / "rng.safetensors"))
    scheduler_state = scheduler.state_dict()  # LambdaLR: lr_lambdas is [None] for functions
    document = {
        "format": 1,
        "step": step,
        "loop": loop_state,
        "optimizer": optimizer_meta,
        "scheduler": scheduler_state,
        "rng": rng_meta,
    }
    with open(temporary / STATE_FILE, "w", encoding="utf-8") as handle:
        json.dump(document, handle)
        handle.flush()
        os.fsync(handle.fileno())
    if final.exists():  # a rerun of the same step (resume after a crash): replace it
        shutil.rmtree(final)
    os.replace(temporary, final)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    logger.debug("checkpoint written: %s", final)
    return final


def load_checkpoint(
    path: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> dict[str, Any]:
    """Restore model, optimizer, scheduler and RNG states from ``path``; return the loop state.

    Raises:
        FileNotFoundError: If a file of the checkpoint is missing.
    """
    for name in ("model.safetensors", "optimizer.safetensors", "rng.safetensors", STATE_FILE):
        if not (path / name).is_file():
            raise FileNotFoundError(f"checkpoint {path} lacks {name}")
    with open(path / STATE_FILE, encoding="utf-8") as handle:
        document = json.load(handle)
    load_model(model, str(path / "model.safetensors"), strict=True)
    optimizer_tensors = load_file(str(path / "optimizer.safetensors"))
    _optimizer_from_files(optimizer, optimizer_tensors, document["optimizer"])
    scheduler.load_state_dict(document["scheduler"])
    _rng_from_files(load_file(str(path / "rng.safetensors")), document["rng"])
    loop_state: dict[str, Any] = document["loop"]
    return loop_state

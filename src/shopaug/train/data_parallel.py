"""Data-parallel training inside :func:`shopaug.train.fit`: every worker takes its share of each
batch, and the gradients are combined before the optimizer steps.

The workers and their ``torch.distributed`` process group (gloo on CPUs) are someone else's job:
Ray Train's ``TorchTrainer`` starts them (:mod:`shopaug.scale.training`), ``torchrun`` would do
as well. This module only says what a worker does with the group, inside the unchanged loop:

* before the first step, rank 0's weights are broadcast (every worker starts from the same
  model, as ``DistributedDataParallel`` does);
* each global batch of ``config.batch_size`` groups (the same batches, from the same
  :func:`~shopaug.train.loop.epoch_batches`, on every worker) is dealt out round-robin:
  worker ``r`` trains on groups ``r, r + n, r + 2n, ...``;
* after ``backward`` every gradient is summed over the workers, each weighted by its share of
  the batch's group weights. The losses are weighted means (``sum(w_i l_i) / sum(w_i)``), so
  the combined gradient is the gradient of the whole batch's loss, exactly, whenever a
  group's loss depends on its own candidates alone (``in_batch_negatives: false``, no
  dropout); with in-batch negatives each worker's groups only see the other groups of its
  share. Clipping, the optimizer and the schedule then run on identical gradients, so every
  worker keeps identical weights;
* only rank 0 writes the model folder and the checkpoints.

Why not ``DistributedDataParallel``: it starts its gradient all-reduce from ``forward``, and the
loop embeds through ``embed`` / ``embed_queries`` / ``embed_items`` (twice a step). The sum
here is the same collective (one ``all_reduce`` of the flattened gradients a step), without
bucketing it into the backward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from shopaug.errors import ConfigError
from shopaug.train.config import TrainingExample


@dataclass(frozen=True)
class DataParallelGroup:
    """This worker's place in a data-parallel training.

    Attributes:
        rank: This worker's index, ``0 <= rank < world_size``.
        world_size: Workers in the group.

    Example:
        >>> group = DataParallelGroup(rank=1, world_size=2)
        >>> rows, share = group.shard([TrainingExample(q, "p") for q in "abc"])
        >>> [row.query for row in rows], share
        (['b'], 0.3333333333333333)
    """

    rank: int
    world_size: int

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(
                f"DataParallelGroup: rank {self.rank} of world_size {self.world_size}; expected "
                "world_size >= 1 and 0 <= rank < world_size"
            )

    @classmethod
    def from_process_group(cls) -> DataParallelGroup:
        """The group of the initialised default ``torch.distributed`` process group.

        Raises:
            ConfigError: No process group is initialised in this process.
        """
        import torch.distributed as dist

        if not dist.is_available() or not dist.is_initialized():
            raise ConfigError(
                "data-parallel training needs an initialised torch.distributed process group "
                "(Ray Train's TorchTrainer or torchrun starts one); none is running here"
            )
        return cls(rank=dist.get_rank(), world_size=dist.get_world_size())

    @property
    def writes(self) -> bool:
        """Whether this worker writes the model folder and checkpoints (rank 0)."""
        return self.rank == 0

    def shard(self, batch: Sequence[TrainingExample]) -> tuple[list[TrainingExample], float]:
        """This worker's groups of ``batch`` and their share of its weight.

        A worker left without a group (a batch smaller than the group of workers) trains on
        the batch's first group with share 0, so that it still takes part in the gradient sum
        with the same parameters as the others.

        Returns:
            ``(groups, share)``: ``share`` is their weight over the batch's (their count over
            the batch's when every weight is 0); the shares of all workers sum to 1.
        """
        if not batch:
            raise ValueError("shard: the batch is empty")
        rows = list(batch[self.rank :: self.world_size])
        if not rows:
            return [batch[0]], 0.0
        total = sum(example.weight for example in batch)
        if total > 0:
            return rows, sum(example.weight for example in rows) / total
        return rows, len(rows) / len(batch)

    def broadcast_parameters(self, model: nn.Module) -> None:
        """Copy rank 0's parameters and buffers into every worker's ``model``."""
        import torch.distributed as dist

        if self.world_size == 1:
            return
        with torch.no_grad():
            for tensor in model.state_dict().values():
                dist.broadcast(tensor, src=0)

    def combine_gradients(self, model: nn.Module, loss: float, share: float) -> float:
        """Replace every gradient of ``model`` by the share-weighted sum over the workers.

        Args:
            model: This worker's model after ``backward`` on its groups.
            loss: This worker's loss (the weighted mean over its groups).
            share: Its share of the batch (:meth:`shard`).

        Returns:
            The batch's loss: the share-weighted sum of the workers' losses.
        """
        import torch.distributed as dist

        if self.world_size == 1:
            return loss
        gradients = [p.grad for p in model.parameters() if p.grad is not None]
        flat = torch.cat(
            [g.reshape(-1).to(torch.float64) for g in gradients]
            + [torch.tensor([loss], dtype=torch.float64)]
        )  # (parameters + 1,)
        flat.mul_(share)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for gradient in gradients:
            size = gradient.numel()
            gradient.copy_(flat[offset : offset + size].view_as(gradient))
            offset += size
        return float(flat[-1])

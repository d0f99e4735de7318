"""DataParallelGroup: how a batch is dealt out and how gradients are combined (a real gloo
process group of two processes; no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from shopaug.errors import ConfigError
from shopaug.train import TrainingExample
from shopaug.train.data_parallel import DataParallelGroup


def _groups(weights: list[float]) -> list[TrainingExample]:
    return [TrainingExample(f"q{i}", "p", weight=w) for i, w in enumerate(weights)]


def test_shard_deals_round_robin_with_weight_shares() -> None:
    batch = _groups([1, 1, 2, 0, 1])
    rows, share = DataParallelGroup(rank=0, world_size=2).shard(batch)
    assert [r.query for r in rows] == ["q0", "q2", "q4"] and share == pytest.approx(4 / 5)
    rows, share = DataParallelGroup(rank=1, world_size=2).shard(batch)
    assert [r.query for r in rows] == ["q1", "q3"] and share == pytest.approx(1 / 5)
    # a worker beyond the batch trains on the first group with share 0
    rows, share = DataParallelGroup(rank=2, world_size=3).shard(batch[:2])
    assert [r.query for r in rows] == ["q0"] and share == 0.0
    # every weight 0: shares by count
    assert DataParallelGroup(rank=0, world_size=2).shard(_groups([0, 0, 0]))[1] == 2 / 3


def test_bad_ranks_and_missing_process_group_are_refused() -> None:
    with pytest.raises(ValueError, match="rank 2 of world_size 2"):
        DataParallelGroup(rank=2, world_size=2)
    with pytest.raises(ConfigError, match="process group"):
        DataParallelGroup.from_process_group()


def _worker(rank: int, store: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    group = DataParallelGroup.from_process_group()
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(10.0 * (rank + 1))
    group.broadcast_parameters(model)
    model.weight.grad = torch.full((1, 2), float(rank + 1))
    loss = group.combine_gradients(model, 10.0 * (rank + 1), [0.25, 0.75][rank])
    result = {
        "weight": model.weight.detach().tolist(),
        "grad": model.weight.grad.tolist(),
        "loss": loss,
    }
    Path(out, f"rank-{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_share_weights_and_sum_share_weighted_gradients(tmp_path: Path) -> None:
    """Rank 0's weights reach rank 1; gradients 1 and 2 with shares 1/4 and 3/4 become 1.75
    on both ranks, losses 10 and 20 become 17.5."""
    mp.start_processes(
        _worker,
        args=(str(tmp_path / "store"), str(tmp_path)),
        nprocs=2,
        start_method="spawn",
    )
    for rank in (0, 1):
        result = json.loads((tmp_path / f"rank-{rank}.json").read_text())
        assert result["weight"] == [[10.0, 10.0]]
        assert result["grad"] == [[1.75, 1.75]]
        assert result["loss"] == pytest.approx(17.5)

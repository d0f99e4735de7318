"""Federated training: shops keep their own training groups; a Flower simulation averages the
models they fine-tune (FedAvg).

Each round the server (Flower's ``ServerApp`` with its ``FedAvg`` strategy) sends the global
weights to every shop; each shop (a ``ClientApp``, run by Flower's simulation engine on Ray)
loads them into a fresh model, trains one pass over its own groups with the unchanged loop
(:func:`shopaug.train.grouped.fit_query_groups` for query towers, or :func:`shopaug.train.fit`)
and sends back its weights and its group count; the server's new weights are the average of
the shops' weights, each weighted by its group count. No shop's queries, feedback or gradients
leave it; only whole-model weights do (FedAvg alone is no formal privacy guarantee: see
docs/privacy.md).

Needs ``pip install 'shopaug[federated]'`` (Flower with its simulation engine); importing this
module does not import Flower.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shopaug.errors import ConfigError, require
from shopaug.train.config import TrainConfig

logger = logging.getLogger(__name__)

TrainShop = Callable[..., Any]
"""``train(model, groups, config, *, run_dir, show_progress)``, as
:func:`~shopaug.train.grouped.fit_query_groups` and :func:`~shopaug.train.fit` are called."""


@dataclass
class FederatedResult:
    """What :func:`federated_fit` returns.

    Attributes:
        state: The global weights after the last round (a ``state_dict``).
        rounds: Per round, per shop: ``{"round", "shop", "groups", "loss", "seconds"}``.
        seconds: Wall time of the simulation.
    """

    state: dict[str, torch.Tensor]
    rounds: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def import_flower() -> Any:
    """``flwr``, or a :class:`~shopaug.errors.MissingExtraError` naming
    ``pip install 'shopaug[federated]'``."""
    require("flwr.simulation", "federated")
    return require("flwr", "federated")


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a shop sends: the model's ``state_dict`` (float tensors, detached)."""
    return {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()}


def federated_fit(
    build_model: Callable[[], nn.Module],
    shops: Sequence[Sequence[Any]],
    config: TrainConfig,
    *,
    rounds: int,
    train_shop: TrainShop | None = None,
    work_dir: str | Path | None = None,
    cpus_per_shop: float = 1.0,
) -> FederatedResult:
    """FedAvg over ``shops`` for ``rounds`` rounds in a Flower simulation (Ray backend).

    Args:
        build_model: Makes the model (picklable, e.g. a class or a ``functools.partial``);
            the server's initial weights are one such model's, and every shop loads the global
            weights into a fresh one each round.
        shops: Each shop's training groups (what ``train_shop`` takes).
        config: The loop's settings for one round of one shop: ``epochs`` is forced to 1 (a
            round is one pass over the shop's groups); the seed is ``config.seed + round``.
        rounds: Rounds of FedAvg.
        train_shop: The loop (default :func:`~shopaug.train.grouped.fit_query_groups`).
        work_dir: Where each shop's round writes its run folder
            (``round-R/shop-S/``: curve, model); default a scratch folder, removed after.
        cpus_per_shop: CPUs Ray reserves for each shop's training.

    Returns:
        A :class:`FederatedResult`.

    Raises:
        MissingExtraError: ``shopaug[federated]`` is not installed.
        ConfigError: Fewer than two shops, a shop without groups, or ``rounds`` < 1.
    """
    flwr = import_flower()
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    if len(shops) < 2 or any(len(groups) == 0 for groups in shops) or rounds < 1:
        raise ConfigError(
            f"federated training needs at least two shops with groups and rounds >= 1; got "
            f"{[len(groups) for groups in shops]} groups per shop and {rounds} rounds"
        )
    if train_shop is None:
        from shopaug.train import fit_groups

        train_shop = fit_groups
    scratch = tempfile.mkdtemp(prefix="shopaug-federated-") if work_dir is None else None
    root = Path(work_dir or scratch or ".")
    shop_data = [list(groups) for groups in shops]
    threads = max(1, int(cpus_per_shop))
    client_app = ClientApp()

    @client_app.train()
    def train(message: Message, context: Context) -> Message:
        shop = int(context.node_config["partition-id"])
        round_number = int(message.content["config"]["server-round"])
        torch.set_num_threads(threads)
        model = build_model()
        model.load_state_dict(message.content["arrays"].to_torch_state_dict())
        settings = config.model_copy(
            update={"epochs": 1, "max_steps": None, "seed": config.seed + round_number}
        )
        started = time.perf_counter()
        result = train_shop(
            model,
            shop_data[shop],
            settings,
            run_dir=root / f"round-{round_number}" / f"shop-{shop}",
            show_progress=False,
        )
        losses = [p["loss"] for p in result.curve if p.get("loss") is not None]
        metrics = {
            "num-examples": len(shop_data[shop]),
            "shop": shop,
            "loss": float(losses[-1]) if losses else float("nan"),
            "seconds": time.perf_counter() - started,
        }
        reply = RecordDict(
            {"arrays": ArrayRecord(trainable_state(model)), "metrics": MetricRecord(metrics)}
        )
        return Message(content=reply, reply_to=message)

    outcome: dict[str, Any] = {}
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = FedAvg(
            fraction_train=1.0,
            fraction_evaluate=0.0,
            min_train_nodes=len(shop_data),
            min_available_nodes=len(shop_data),
            train_metrics_aggr_fn=_keep_every_shop(outcome),
        )
        result = strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(trainable_state(build_model())),
            num_rounds=rounds,
            train_config=ConfigRecord({}),
        )
        outcome["arrays"] = result.arrays

    started = time.perf_counter()
    try:
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=len(shop_data),
            backend_name="ray",
            backend_config={"client_resources": {"num_cpus": cpus_per_shop, "num_gpus": 0.0}},
        )
    finally:
        if scratch is not None:
            import shutil

            shutil.rmtree(scratch, ignore_errors=True)
    if "arrays" not in outcome:
        raise ConfigError(
            f"the Flower simulation (flwr {flwr.__version__}) ended without global weights; "
            "see its log above"
        )
    return FederatedResult(
        state=outcome["arrays"].to_torch_state_dict(),
        rounds=outcome.get("rounds", []),
        seconds=time.perf_counter() - started,
    )


def _keep_every_shop(outcome: dict[str, Any]) -> Callable[[list[Any], str], Any]:
    """A ``train_metrics_aggr_fn`` that records every shop's metrics of each round in
    ``outcome["rounds"]`` and returns the group-weighted mean loss (Flower logs it)."""
    from flwr.app import MetricRecord

    def aggregate(replies: list[Any], weight_key: str) -> Any:
        rows = [dict(reply["metrics"]) for reply in replies]
        done = outcome.setdefault("rounds", [])
        round_number = 1 + (len(done) // max(1, len(rows)))
        for row in sorted(rows, key=lambda r: r["shop"]):
            done.append(
                {
                    "round": round_number,
                    "shop": int(row["shop"]),
                    "groups": int(row[weight_key]),
                    "loss": float(row["loss"]),
                    "seconds": round(float(row["seconds"]), 2),
                }
            )
        weights = np.array([float(r[weight_key]) for r in rows])
        losses = np.array([float(r["loss"]) for r in rows])
        return MetricRecord({"loss": float((weights * losses).sum() / weights.sum())})

    return aggregate

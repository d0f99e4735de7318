"""RecBole yardstick rows (BPR, LightGCN, SASRec) on the recommendation task's own split.

RecBole (https://recbole.io) is the library recommender engineers already use; its rows show
where shopaug stands. Install it beside the project (benchmark only, never in the base install):
``pip install -r benchmarks/requirements-recbole.txt`` then ``pip install --no-deps
recbole==1.2.1`` (its metadata pins ray<=2.6.3 and colorlog==4.7.2, which would fight the dev
extra; see docs/recommendation.md).

How our split reaches RecBole, so nothing after a cut leaks into training:

1. :func:`write_atomic_file` writes a split's *training* lines (``SplitView.split.train``: every
   invoice line before the cut, in time order) as RecBole's atomic file ``NAME.inter``
   (``user_id:token``, ``item_id:token``, ``timestamp:float``). No basket after the cut is
   written anywhere: RecBole never sees a validation or test basket.
2. RecBole builds its own ``Dataset`` (id remapping; for SASRec the prefix -> next-item
   sequences) from that file alone, with ``eval_args.split = {'RS': [1, 0, 0]}`` so every line
   is a training line, and trains the model with its own ``Trainer`` (optimiser, batches,
   negative sampler, losses).
3. Early stopping: RecBole's ``Trainer`` calls ``_valid_epoch`` after every epoch; ours ranks the
   validation customers (histories before the validation cut) and returns *our* Recall@k on
   their validation baskets (no history masking, unlike RecBole's own evaluator: in retail a
   customer's past items are the best guesses). RecBole's ``stopping_step`` stops training.
4. Refit: the validation run fixes the number of epochs (the best validation epoch); the model
   is then trained again from the same seed, that many epochs, on every line before the *test*
   cut (as the ``implicit`` baselines are fitted on everything before the test cut), and ranks
   the test customers from their histories up to the test cut.
5. Ranking: ``model.full_sort_predict`` scores every item RecBole knows (items sold before the
   cut; new items have no id, so new-item recall is 0 as for ALS/BPR); the top ``depth`` go to
   :func:`shopaug.eval.recommend.evaluate_recommendations` like every other row. BPR and
   LightGCN look customers up by id; SASRec reads each customer's last ``MAX_ITEM_LIST_LENGTH``
   purchases (:func:`sequence_batch`), its session/sequential view.

Compatibility patches, applied in :func:`import_recbole` (never by editing site-packages):
``Config.compatibility_settings`` aliases ``np.float = np.float_``, which numpy 2 removed
(``AttributeError``), so it is replaced by a no-op (none of the code paths used here reads
``np.float``); ``LightGCN.get_norm_adj_mat`` calls ``dok_matrix._update``, which scipy 1.13
removed, so it is replaced by :func:`normalized_adjacency` (the same matrix); RecBole's
``Config`` parses ``sys.argv`` (``--key=value``, through ``eval``), so
:func:`recbole_config` hides the benchmark's own arguments from it; RecBole's tensorboard writer
goes to ``./log_tensorboard``, so training runs inside the work folder.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shopaug.eval.recommend import per_customer_metrics
from shopaug.experiment.recommend_data import SplitView

logger = logging.getLogger(__name__)
Ranked = dict[str, list[str]]
#: The columns of the atomic file, in RecBole's ``name:type`` header form.
ATOMIC_HEADER = ("user_id:token", "item_id:token", "timestamp:float")
DATASET = "retail"


@dataclass(frozen=True)
class RecBoleRow:
    """One RecBole system and its budget.

    Attributes:
        name: Row label in the table.
        model: RecBole model class name (``BPR``, ``LightGCN``, ``SASRec``).
        max_epochs: Most epochs of the validation run.
        patience: RecBole's ``stopping_step``: epochs without a better validation recall.
        settings: Further RecBole config keys (model size, learning rate, batch size); RecBole's
            defaults for the rest.
    """

    name: str
    model: str
    max_epochs: int
    patience: int
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def sequential(self) -> bool:
        return self.model == "SASRec"

    def budget(self) -> str:
        """A short description of the budget for the table."""
        keys = (
            "embedding_size",
            "hidden_size",
            "n_layers",
            "MAX_ITEM_LIST_LENGTH",
            "learning_rate",
            "train_batch_size",
        )
        shown = ", ".join(f"{k}={self.settings[k]}" for k in keys if k in self.settings)
        return f"{shown}; <= {self.max_epochs} epochs, patience {self.patience}"


ROWS = {
    "bpr": RecBoleRow(
        "BPR (RecBole)",
        "BPR",
        max_epochs=20,
        patience=3,
        settings={"embedding_size": 64, "learning_rate": 0.01, "train_batch_size": 2048},
    ),
    # every LightGCN batch propagates the whole graph: large batches keep an epoch affordable
    "lightgcn": RecBoleRow(
        "LightGCN (RecBole)",
        "LightGCN",
        max_epochs=60,
        patience=3,
        settings={
            "embedding_size": 64,
            "n_layers": 2,
            "reg_weight": 1e-5,
            "learning_rate": 0.01,
            "train_batch_size": 8192,
        },
    ),
    "sasrec": RecBoleRow(
        "SASRec (RecBole)",
        "SASRec",
        max_epochs=4,
        patience=2,
        settings={
            "hidden_size": 64,
            "n_layers": 2,
            "n_heads": 2,
            "inner_size": 128,
            "MAX_ITEM_LIST_LENGTH": 20,
            "loss_type": "CE",
            "train_neg_sample_args": None,
            "learning_rate": 0.005,
            "train_batch_size": 2048,
        },
    ),
}


def write_atomic_file(lines: pd.DataFrame, folder: Path, name: str = DATASET) -> Path:
    """Write training lines as RecBole's atomic interaction file ``folder/name/name.inter``.

    Args:
        lines: ``customer_id, item_id, timestamp`` (``datetime64``) per invoice line, e.g.
            ``SplitView.split.train``; written in time order (stable: invoice, then item order
            of ``lines`` is kept, which RecBole's stable sort preserves).
        folder: RecBole's ``data_path``.
        name: RecBole's ``dataset`` name.

    Returns:
        The file written.

    Raises:
        ValueError: A column is missing, the timestamp is not a datetime, a value is missing, or
            an id holds a tab or a line break (RecBole's separators).
    """
    missing = [c for c in ("customer_id", "item_id", "timestamp") if c not in lines.columns]
    if missing:
        raise ValueError(f"training lines lack column(s) {missing}; got {list(lines.columns)}")
    if not pd.api.types.is_datetime64_any_dtype(lines["timestamp"]):
        raise ValueError(f"column 'timestamp' must be datetime64, got {lines['timestamp'].dtype}")
    frame = pd.DataFrame(
        {
            "user_id": lines["customer_id"].astype(str),
            "item_id": lines["item_id"].astype(str),
            "timestamp": (lines["timestamp"] - pd.Timestamp("1970-01-01")).dt.total_seconds(),
        }
    )
    if frame.isna().any().any():
        column = frame.columns[frame.isna().any()][0]
        raise ValueError(f"training lines have a missing {column!r}")
    for column in ("user_id", "item_id"):
        bad = frame[column].str.contains(r"[\t\r\n]", regex=True)
        if bad.any():
            raise ValueError(
                f"{column} {frame[column][bad].iloc[0]!r} holds a tab or line break, which "
                "RecBole's atomic files cannot hold"
            )
    frame = frame.sort_values("timestamp", kind="stable")
    target = folder / name
    target.mkdir(parents=True, exist_ok=True)
    path = target / f"{name}.inter"
    frame.to_csv(path, sep="\t", index=False, header=list(ATOMIC_HEADER), float_format="%.0f")
    return path


def sequence_batch(
    histories: Sequence[Sequence[str]], token_ids: Mapping[str, int], max_length: int
) -> tuple[np.ndarray, np.ndarray]:
    """SASRec's input for customers: the last ``max_length`` purchases as RecBole item ids.

    Args:
        histories: Item ids per customer, oldest first.
        token_ids: Item id -> RecBole's internal id (``dataset.field2token_id['item_id']``).
        max_length: RecBole's ``MAX_ITEM_LIST_LENGTH``.

    Returns:
        ``(n, max_length)`` ids, left-aligned and zero-padded as RecBole stores its training
        sequences, and ``(n,)`` lengths.

    Raises:
        ValueError: An empty history, or an item RecBole does not know.
    """
    ids = np.zeros((len(histories), max_length), dtype=np.int64)
    lengths = np.zeros(len(histories), dtype=np.int64)
    for row, history in enumerate(histories):
        recent = list(history)[-max_length:]
        if not recent:
            raise ValueError(f"history {row} is empty: SASRec needs at least one purchase")
        unknown = [item for item in recent if item not in token_ids]
        if unknown:
            raise ValueError(f"history {row} holds item(s) RecBole does not know: {unknown[:3]}")
        ids[row, : len(recent)] = [token_ids[item] for item in recent]
        lengths[row] = len(recent)
    return ids, lengths


def import_recbole() -> None:
    """Import RecBole with the patches this module needs; a clear error when it is missing."""
    try:
        from recbole.config import Config
    except ImportError as error:
        raise ImportError(
            "RecBole is not installed: pip install -r benchmarks/requirements-recbole.txt && "
            "pip install --no-deps recbole==1.2.1"
        ) from error
    from recbole.model.general_recommender.lightgcn import LightGCN

    # numpy 2 has no np.float_, which Config.compatibility_settings reads (AttributeError).
    Config.compatibility_settings = lambda self: None
    # LightGCN builds its graph through scipy's dok_matrix._update, gone from scipy >= 1.13.
    LightGCN.get_norm_adj_mat = lambda self: normalized_adjacency(
        self.interaction_matrix, self.n_users, self.n_items
    )


def normalized_adjacency(interactions: Any, n_users: int, n_items: int) -> Any:
    """LightGCN's graph ``D^-1/2 A D^-1/2`` as a float32 torch sparse tensor.

    The same matrix as RecBole's ``LightGCN.get_norm_adj_mat``: ``A`` is the symmetric 0/1
    user-item adjacency over ``n_users + n_items`` nodes (repeated purchases count once) and each
    degree gets ``1e-7`` added (nodes without an edge, such as the padding ids, stay zero).

    Args:
        interactions: ``(n_users, n_items)`` scipy sparse matrix of interaction counts.
        n_users: Users, RecBole's padding id 0 included.
        n_items: Items, the padding id included.
    """
    import scipy.sparse as sp
    import torch

    binary = sp.csr_matrix(interactions, dtype=np.float32)
    binary.sum_duplicates()
    binary.data[:] = 1.0
    adjacency = sp.bmat([[None, binary], [binary.T, None]], format="csr")  # (n, n)
    degree = np.asarray(adjacency.sum(axis=1)).ravel() + 1e-7
    scale = sp.diags(np.power(degree, -0.5).astype(np.float32))
    laplacian = (scale @ adjacency @ scale).tocoo()
    indices = torch.from_numpy(np.vstack([laplacian.row, laplacian.col]).astype(np.int64))
    values = torch.from_numpy(laplacian.data.astype(np.float32))
    return torch.sparse_coo_tensor(indices, values, (n_users + n_items, n_users + n_items))


def recbole_config(row: RecBoleRow, *, folder: Path, seed: int, epochs: int) -> Any:
    """RecBole's ``Config`` for ``row`` over the atomic file in ``folder`` (CPU, seeded)."""
    from recbole.config import Config

    settings = {
        "data_path": str(folder),
        "checkpoint_dir": str(folder / "saved"),
        "seed": seed,
        "reproducibility": True,
        "use_gpu": False,
        "gpu_id": "",
        "show_progress": False,
        "state": "WARNING",
        "epochs": epochs,
        "stopping_step": row.patience,
        "eval_step": 1,
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "eval_args": {"split": {"RS": [1.0, 0.0, 0.0]}, "order": "TO", "group_by": None},
        "repeatable": row.sequential,
        **row.settings,
    }
    argv = sys.argv
    sys.argv = argv[:1]  # Config reads (and evaluates) --key=value arguments of the command line
    try:
        return Config(model=row.model, dataset=DATASET, config_dict=settings)
    finally:
        sys.argv = argv


@dataclass
class Trained:
    """A trained RecBole model, the dataset it was built from, and its validation curve."""

    model: Any
    dataset: Any
    curve: list[float]
    seconds: float


def train(
    row: RecBoleRow,
    lines: pd.DataFrame,
    folder: Path,
    *,
    seed: int,
    epochs: int,
    validate: Callable[[Any, Any], float] | None = None,
) -> Trained:
    """Train ``row`` on ``lines`` through RecBole's Dataset, DataLoader and Trainer.

    ``validate(model, dataset)`` (our Recall@k on validation baskets) runs after every epoch and
    drives RecBole's early stopping; without it, training runs ``epochs`` epochs.
    """
    from recbole.data import create_dataset
    from recbole.data.dataloader import TrainDataLoader
    from recbole.sampler import Sampler
    from recbole.trainer import Trainer
    from recbole.utils import get_model, init_seed

    started = time.perf_counter()
    write_atomic_file(lines, folder)
    config = recbole_config(row, folder=folder, seed=seed, epochs=epochs)
    init_seed(seed, True)
    dataset = create_dataset(config)
    train_set = dataset.build()[0]
    distribution = config["train_neg_sample_args"]["distribution"]
    sampler = None
    if distribution != "none":
        sampler = Sampler(["train"], [train_set], distribution).set_phase("train")
    loader = TrainDataLoader(config, train_set, sampler, shuffle=True)
    init_seed(seed, True)
    model = get_model(row.model)(config, train_set).to(config["device"])
    curve: list[float] = []

    class ValidatedTrainer(Trainer):  # type: ignore[misc, valid-type]
        """RecBole's Trainer whose validation score is our Recall@k (see module docstring)."""

        def _valid_epoch(self, valid_data: Any, show_progress: bool = False):
            score = float(valid_data(self.model, train_set))
            curve.append(score)
            logger.info(
                "%s epoch %d: validation recall %.4f (%.0f s so far)",
                row.name,
                len(curve),
                score,
                time.perf_counter() - started,
            )
            return score, {"recall": score}

    with contextlib.chdir(folder):  # RecBole's tensorboard writer goes to ./log_tensorboard
        trainer = ValidatedTrainer(config, model)
        trainer.fit(loader, valid_data=validate, saved=False, show_progress=False, verbose=False)
    model.eval()
    return Trained(model, train_set, curve, round(time.perf_counter() - started, 1))


def rank(model: Any, dataset: Any, view: SplitView, depth: int) -> Ranked:
    """Each customer of ``view`` -> RecBole's top ``depth`` items (ids as in our catalog)."""
    import torch
    from recbole.data.interaction import Interaction

    model.eval()
    items = dataset.field2id_token[dataset.iid_field]
    depth = min(depth, len(items) - 1)  # id 0 is RecBole's padding
    histories = [[view.catalog[r] for r in history] for history in view.histories]
    ranked: Ranked = {}
    with torch.no_grad():
        for start in range(0, len(view.customers), 256):
            customers = list(view.customers[start : start + 256])
            if getattr(model, "ITEM_SEQ", None):  # sequential: the customer's recent purchases
                ids, lengths = sequence_batch(
                    histories[start : start + 256],
                    dataset.field2token_id[dataset.iid_field],
                    model.max_seq_length,
                )
                batch = {
                    model.ITEM_SEQ: torch.from_numpy(ids),
                    model.ITEM_SEQ_LEN: torch.from_numpy(lengths),
                }
            else:
                users = dataset.token2id(dataset.uid_field, customers)
                batch = {dataset.uid_field: torch.as_tensor(np.atleast_1d(users))}
            scores = model.full_sort_predict(Interaction(batch)).view(len(customers), -1)
            scores[:, 0] = -torch.inf
            top = torch.topk(scores, depth, dim=1).indices.numpy()
            for customer, row in zip(customers, top, strict=True):
                ranked[customer] = [str(items[i]) for i in row]
    return ranked


@dataclass
class FittedRow:
    """A RecBole row's validation and test rankings and what training cost."""

    runs: dict[str, Ranked]
    info: dict[str, Any]


def fit_row(
    row: RecBoleRow,
    valid: SplitView,
    test: SplitView,
    workdir: Path,
    *,
    seed: int,
    k: int,
    depth: int,
) -> FittedRow:
    """Validation run (early stopping on our Recall@k), then the refit before the test cut."""
    best: dict[str, Any] = {"score": -1.0, "ranked": None}
    baskets = [valid.truth.baskets[c] for c in valid.customers]

    def validate(model: Any, dataset: Any) -> float:
        ranked = rank(model, dataset, valid, depth)
        lists = [ranked[c] for c in valid.customers]
        score = float(
            per_customer_metrics(ranked=lists, baskets=baskets, k=k)[f"recall@{k}"].mean()
        )
        if score > best["score"]:
            best.update(score=score, ranked=ranked)
        return score

    first = train(
        row,
        valid.split.train,
        workdir / "validation",
        seed=seed,
        epochs=row.max_epochs,
        validate=validate,
    )
    best_epoch = int(np.argmax(first.curve)) + 1
    final = train(row, test.split.train, workdir / "test", seed=seed, epochs=best_epoch)
    info = {
        "model": row.model,
        "budget": row.budget(),
        "epochs_run": len(first.curve),
        "best_epoch": best_epoch,
        "validation_curve": [round(v, 4) for v in first.curve],
        "seconds": round(first.seconds + final.seconds, 1),
        "items": len(final.dataset.field2id_token[final.dataset.iid_field]) - 1,
    }
    logger.info("%s: %s", row.name, info)
    return FittedRow(
        runs={"validation": best["ranked"], "test": rank(final.model, final.dataset, test, depth)},
        info=info,
    )

"""MLflow tracking: params and per-step metrics read back with the MLflow client, the served
model logged with its signature, the run directory as artifacts, and a clear error without the
extra."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shopaug.errors import ConfigError, MissingExtraError
from shopaug.experiment.config import parse_run_config
from shopaug.train.config import TrackingConfig
from shopaug.train.tracking import (
    MLFLOW_FOLDER,
    MlflowLogger,
    TensorBoardLogger,
    default_logger,
    flatten_params,
    metric_key,
    tracking_session,
)

mlflow = pytest.importorskip("mlflow")

sys.path.insert(0, str(Path(__file__).parent))
from test_train import TinyEncoder, tiny_config, toy_examples  # noqa: E402


def test_metric_keys_and_params_are_what_mlflow_accepts() -> None:
    assert metric_key("ndcg@10") == "ndcg_at_10"
    assert metric_key("ablation/dense hard + bm25 (rrf)/ndcg@10") == (
        "ablation/dense hard _ bm25 _rrf_/ndcg_at_10"
    )
    flat = flatten_params({"train": {"lr": 0.1, "epochs": 2}, "ablation": [{"name": "a"}]})
    assert flat == {"train.lr": "0.1", "train.epochs": "2", "ablation": '[{"name": "a"}]'}


def test_a_tiny_training_run_logs_params_and_every_step_to_mlflow(tmp_path: Path) -> None:
    from shopaug.train import fit

    config = tiny_config(epochs=2, log_every=1)
    examples = toy_examples(12)  # 3 steps an epoch at batch_size 4: 6 steps
    scores = iter([0.25, 0.5])
    with tracking_session(
        TrackingConfig(backend="mlflow"),
        tmp_path,
        run_name="tiny",
        params={"train": config.model_dump(mode="json"), "data": "toy"},
    ) as session:
        result = fit(
            TinyEncoder(),
            examples,
            config,
            run_dir=tmp_path / "training" / "fold-0" / "row",
            validate=lambda model: next(scores),
            show_progress=False,
        )
        session.log_metrics({"test/ndcg@10": 0.75})
        parent_id = session.run_id
        uri = session.tracking_uri
    assert result.steps == 6
    assert uri == f"sqlite:///{(tmp_path / MLFLOW_FOLDER / 'mlflow.db').resolve()}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["train.lr"] == "0.05" and parent.data.params["data"] == "toy"
    assert parent.data.params["train.batch_size"] == "4"
    assert parent.data.metrics["test/ndcg_at_10"] == 0.75
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    assert [c.info.run_name for c in children] == ["training/fold-0/row"]
    child = children[0].info.run_id
    losses = client.get_metric_history(child, "train/loss")
    assert sorted(m.step for m in losses) == [1, 2, 3, 4, 5, 6]
    curve = [json.loads(line) for line in (result.model_dir.parent / "curve.jsonl").open()]
    # log_every=1: the curve holds each step's loss, the same numbers MLflow received
    by_step = {m.step: m.value for m in losses}
    for point in curve:
        assert by_step[point["step"]] == pytest.approx(point["loss"])
    lrs = client.get_metric_history(child, "train/lr")
    assert len(lrs) == 6 and max(m.value for m in lrs) <= config.lr
    ndcg = client.get_metric_history(child, "val_ndcg_at_10")
    assert sorted((m.step, m.value) for m in ndcg) == [(3, 0.25), (6, 0.5)]
    assert not (result.model_dir.parent / "tb").exists()  # MLflow instead of TensorBoard


def test_query_group_training_logs_each_step(tmp_path: Path) -> None:
    from shopaug.train.grouped import QueryGroup, fit_query_groups
    from test_grouped_training import BagOfWordsTowers

    words = [f"w{i}" for i in range(6)]
    groups = [QueryGroup(f"w{i}", (f"w{i}",), (f"w{(i + 1) % 6}",)) for i in range(6)]
    with tracking_session(
        TrackingConfig(backend="mlflow"), tmp_path, run_name="groups", params={}
    ) as session:
        result = fit_query_groups(
            BagOfWordsTowers(words),
            groups,
            tiny_config(epochs=2, batch_size=3),
            run_dir=tmp_path / "row",
            show_progress=False,
        )
        parent_id, uri = session.run_id, session.tracking_uri
    client = mlflow.MlflowClient(tracking_uri=uri)
    (child,) = client.search_runs(
        [client.get_run(parent_id).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
    )
    history = client.get_metric_history(child.info.run_id, "train/loss")
    assert sorted(m.step for m in history) == [1, 2, 3, 4] == list(range(1, result.steps + 1))


def test_backends_tensorboard_and_none(tmp_path: Path) -> None:
    with tracking_session(TrackingConfig(backend="none"), tmp_path, run_name="x", params={}):
        assert default_logger(tmp_path / "a", purge_step=None) is None
    with tracking_session(TrackingConfig(), tmp_path, run_name="x", params={}) as session:
        logger = default_logger(tmp_path / "b", purge_step=None)
        assert isinstance(logger, TensorBoardLogger) and session.run_id is None
        logger.close()
    assert not (tmp_path / MLFLOW_FOLDER).exists()
    logger = default_logger(tmp_path / "c", purge_step=None)  # no session: TensorBoard
    assert isinstance(logger, TensorBoardLogger)
    logger.close()


def test_a_failed_run_is_marked_failed(tmp_path: Path) -> None:
    with (
        pytest.raises(RuntimeError, match="boom"),
        tracking_session(
            TrackingConfig(backend="mlflow"), tmp_path, run_name="x", params={}
        ) as session,
    ):
        raise RuntimeError("boom")
    client = mlflow.MlflowClient(tracking_uri=session.tracking_uri)
    assert client.get_run(session.run_id).info.status == "FAILED"


def test_the_served_model_and_run_directory_are_logged(tmp_path: Path) -> None:
    from shopaug.models.model_dir import load_towers, write_hashing_model

    run_dir = tmp_path / "run"
    model_dir = write_hashing_model(run_dir / "model", 32)
    (run_dir / "metrics.json").write_text("{}")
    (run_dir / "cache").mkdir()
    (run_dir / "cache" / "big.parquet").write_text("x")
    with tracking_session(
        TrackingConfig(backend="mlflow"), run_dir, run_name="x", params={}
    ) as session:
        model_uri = session.log_served_model(model_dir)
        session.log_run_directory()
    client = mlflow.MlflowClient(tracking_uri=session.tracking_uri)
    logged = {a.path for a in client.list_artifacts(session.run_id)}
    assert {"metrics.json", "model"} <= logged
    assert "cache" not in logged and MLFLOW_FOLDER not in logged
    mlflow.set_tracking_uri(session.tracking_uri)
    try:
        experiment = client.get_run(session.run_id).info.experiment_id
        models = mlflow.search_logged_models(experiment_ids=[experiment], output_format="list")
        assert [m.source_run_id for m in models] == [session.run_id]
        assert model_uri == f"models:/{models[0].model_id}"
        info = mlflow.models.get_model_info(model_uri)
        assert info.signature.inputs.input_names() == ["text"]
        assert info.signature.outputs.inputs[0].shape == (-1, 32)
        loaded = mlflow.pyfunc.load_model(model_uri)
    finally:
        mlflow.set_tracking_uri(None)
    texts = ["red leather sofa", "oak table"]
    vectors = loaded.predict(pd.DataFrame({"text": texts}))
    expected = load_towers(model_dir).query.encode(texts)
    np.testing.assert_allclose(vectors, expected, rtol=1e-6)
    items = loaded.predict(pd.DataFrame({"text": texts}), params={"side": "item"})
    np.testing.assert_allclose(items, load_towers(model_dir).item.encode(texts), rtol=1e-6)


def test_without_the_extra_the_error_names_the_pip_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    with (
        pytest.raises(MissingExtraError, match=r"pip install 'shopaug\[tracking\]'"),
        tracking_session(TrackingConfig(backend="mlflow"), tmp_path, run_name="x", params={}),
    ):
        pass


def test_the_tracking_section_is_checked() -> None:
    config = parse_run_config(
        {"tracking": {"backend": "mlflow", "uri": "sqlite:///x.db"}}, source="c"
    )
    assert config.tracking_config.backend == "mlflow"
    with pytest.raises(ConfigError, match="backend"):
        parse_run_config({"tracking": {"backend": "wandb"}}, source="run.yaml")
    with pytest.raises(ConfigError, match=r"run\.yaml: tracking: colour"):
        parse_run_config({"tracking": {"colour": 1}}, source="run.yaml")
    with pytest.raises(ConfigError, match="engine must be one of"):
        parse_run_config({"engine": "spark"}, source="run.yaml")


def test_mlflow_logger_waits_for_pending_batches(tmp_path: Path) -> None:
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    experiment = client.create_experiment("e", artifact_location=(tmp_path / "a").as_uri())
    run = client.create_run(experiment)
    logger = MlflowLogger(client, run.info.run_id)
    for step in range(1, 21):
        logger.log_scalars({"loss": 1.0 / step}, step)
    logger.close()
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(1, 21))
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


@pytest.mark.slow
def test_shopaug_run_tracking_mlflow_end_to_end(tmp_path: Path) -> None:
    """``shopaug run --tracking mlflow``: the config as params, a nested run per training with
    every step, the final metrics, the run directory and the served model."""
    import yaml
    from typer.testing import CliRunner

    from shopaug.cli import app

    payload = {
        "name": "tracked",
        "data": "demo",
        "folds": 2,
        "train_folds": 1,
        "validation_fraction": 0.25,
        "train": {"batch_size": 16, "epochs": 1, "lr": 1.0e-4},
        "ablation": [{"name": "plain fine-tune", "methods": ["positives"]}],
        "fusion": {"enabled": False},
        "reranker": {"enabled": False},
        "show_progress": False,
    }
    config = tmp_path / "tracked.yaml"
    config.write_text(yaml.safe_dump(payload))
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["run", str(config), "--out", str(out), "--tracking", "mlflow"]
    )
    assert result.exit_code == 0, result.output
    client = mlflow.MlflowClient(
        tracking_uri=f"sqlite:///{(out / 'mlflow' / 'mlflow.db').resolve()}"
    )
    (experiment,) = [e for e in client.search_experiments() if e.name == "shopaug"]
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.run_name == "tracked" and parent.info.status == "FINISHED"
    assert parent.data.params["tracking.backend"] == "mlflow"
    assert parent.data.params["train.batch_size"] == "16"
    metrics = json.loads((out / "metrics.json").read_text())
    assert parent.data.metrics["test/ndcg_at_10"] == pytest.approx(
        metrics["metrics"]["ndcg@10"]["mean"]
    )
    children = {
        r.info.run_name: r for r in runs if r is not parent and r.info.run_id != parent.info.run_id
    }
    # training/served too when the trained row is chosen over the baselines
    assert "training/fold-0/plain-fine-tune" in children
    assert set(children) <= {"training/fold-0/plain-fine-tune", "training/served"}
    for child in children.values():
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "train/loss")]
        assert sorted(steps) == list(range(1, len(steps) + 1)) and steps
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"metrics.json", "manifest.json", "model", "report.html"} <= artifacts
    mlflow.set_tracking_uri(client.tracking_uri)
    try:
        (model,) = mlflow.search_logged_models(
            experiment_ids=[experiment.experiment_id], output_format="list"
        )
        info = mlflow.models.get_model_info(f"models:/{model.model_id}")
    finally:
        mlflow.set_tracking_uri(None)
    assert info.signature.outputs.inputs[0].shape == (-1, 384)  # MiniLM's size

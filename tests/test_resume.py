"""Exact resume: a run stopped (or SIGKILLed) mid-way and resumed ends where an uninterrupted
run with the same seed ends: same weights (``torch.equal``), same metrics, same curve."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import shopaug.train.checkpoint as checkpoint_module
from shopaug.train import StepInfo, TrainConfig, TrainResult, fit
from shopaug.train.checkpoint import latest_checkpoint
from test_train import TinyEncoder, ranking_accuracy, tiny_config, toy_examples


class Interrupted(Exception):
    """Raised from ``on_step`` to stop a run the way a crash would."""


def _config(optimizer: str = "adamw") -> TrainConfig:
    # 12 examples, batch 4 -> 3 steps an epoch, 9 steps; checkpoints at 2, 4, 6, 8 and 9
    return tiny_config(
        optimizer=optimizer,
        epochs=3,
        checkpoint_every=2,
        eval_every=3,
        grad_clip=0.5,
        early_stopping_patience=5,
    )


def _validate(model: torch.nn.Module) -> float:
    return ranking_accuracy(model, toy_examples())


def _run(
    run_dir: Path,
    config: TrainConfig,
    *,
    model_seed: int = 0,
    stop_at: int | None = None,
) -> tuple[TinyEncoder, TrainResult]:
    model = TinyEncoder(seed=model_seed)

    def on_step(info: StepInfo) -> None:
        if stop_at is not None and info.step == stop_at:
            raise Interrupted

    result = fit(
        model,
        toy_examples(),
        config,
        run_dir=run_dir,
        validate=_validate,
        on_step=on_step,
        show_progress=False,
    )
    return model, result


def _assert_same_run(
    first: tuple[TinyEncoder, TrainResult], second: tuple[TinyEncoder, TrainResult]
) -> None:
    (model_a, result_a), (model_b, result_b) = first, second
    for (name, tensor_a), tensor_b in zip(
        model_a.state_dict().items(), model_b.state_dict().values(), strict=True
    ):
        assert torch.equal(tensor_a, tensor_b), name
    assert result_b.steps == result_a.steps
    assert result_b.best_metric == result_a.best_metric
    assert result_b.best_step == result_a.best_step
    assert result_b.curve == result_a.curve


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_stopped_and_resumed_run_matches_uninterrupted_run(tmp_path: Path, optimizer: str) -> None:
    config = _config(optimizer)
    uninterrupted = _run(tmp_path / "a", config)
    assert uninterrupted[1].steps == 9

    with pytest.raises(Interrupted):
        _run(tmp_path / "b", config, stop_at=5)  # step 5 is done but not checkpointed
    assert latest_checkpoint(tmp_path / "b") == tmp_path / "b" / "checkpoints" / "step-00000004"
    # a NEW model object with other initial weights: everything must come from the checkpoint
    resumed = _run(tmp_path / "b", config, model_seed=123)
    _assert_same_run(uninterrupted, resumed)
    assert (tmp_path / "b" / "curve.jsonl").read_text() == (
        tmp_path / "a" / "curve.jsonl"
    ).read_text()


def test_resume_without_the_rng_state_would_differ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards the test above: dropout makes the torch RNG state matter for exactness."""
    config = _config()
    uninterrupted = _run(tmp_path / "a", config)
    with pytest.raises(Interrupted):
        _run(tmp_path / "b", config, stop_at=5)
    monkeypatch.setattr(checkpoint_module, "_rng_from_files", lambda tensors, meta: None)
    torch.manual_seed(999)
    model, _ = _run(tmp_path / "b", config, model_seed=123)
    assert not torch.equal(model.bag.weight, uninterrupted[0].bag.weight)


_CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_resume import _config, _validate
    from test_train import TinyEncoder, toy_examples
    from shopaug.train import fit

    config = _config().model_copy(update={{"epochs": 8}})
    fit(TinyEncoder(), toy_examples(), config, run_dir=sys.argv[1], validate=_validate,
        on_step=lambda info: time.sleep(0.3), show_progress=False)
    """
)


@pytest.mark.slow
def test_sigkilled_run_resumes_to_the_same_weights(tmp_path: Path) -> None:
    config = _config().model_copy(update={"epochs": 8})  # 24 steps
    script = tmp_path / "child.py"
    script.write_text(_CHILD.format(tests=str(Path(__file__).parent)))
    run_dir = tmp_path / "killed"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    child = subprocess.Popen([sys.executable, str(script), str(run_dir)], env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and child.poll() is None:
            checkpoint = latest_checkpoint(run_dir)
            if checkpoint is not None and int(checkpoint.name.split("-")[1]) >= 4:
                break
            time.sleep(0.05)
        assert child.poll() is None, "the child ended before it could be killed"
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    killed_at = latest_checkpoint(run_dir)
    assert killed_at is not None
    assert int(killed_at.name.split("-")[1]) < 24

    resumed = _run(run_dir, config, model_seed=123)
    uninterrupted = _run(tmp_path / "whole", config)
    assert uninterrupted[1].steps == 24
    _assert_same_run(uninterrupted, resumed)

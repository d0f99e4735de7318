"""Loading MiniLM prints no transformers "LOAD REPORT" table and no "Loading weights" bar, and
what the report would have said beyond the expected unused pooler still reaches the log."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from transformers.utils import logging as transformers_logging

from shopaug.encoders.dense import loading_quietly
from shopaug.models.cross_encoder import _report_loading

REPORT_LOGGER = logging.getLogger("transformers.modeling_utils")


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_only_the_load_report_is_dropped_and_only_inside_the_block() -> None:
    records = Records()
    REPORT_LOGGER.addHandler(records)
    try:
        with loading_quietly(load_report=False):
            assert not transformers_logging.is_progress_bar_enabled()
            REPORT_LOGGER.warning("BertModel LOAD REPORT from: x")
            REPORT_LOGGER.warning("something else")
        REPORT_LOGGER.warning("BertModel LOAD REPORT from: y")
        with loading_quietly():  # the report is kept unless the caller reports it itself
            REPORT_LOGGER.warning("BertModel LOAD REPORT from: z")
    finally:
        REPORT_LOGGER.removeHandler(records)
    assert records.messages == [
        "something else",
        "BertModel LOAD REPORT from: y",
        "BertModel LOAD REPORT from: z",
    ]
    assert transformers_logging.is_progress_bar_enabled()  # restored
    assert REPORT_LOGGER.filters == []


def test_the_bar_stays_off_when_the_user_turned_it_off() -> None:
    transformers_logging.disable_progress_bar()
    try:
        with loading_quietly():
            pass
        assert not transformers_logging.is_progress_bar_enabled()
    finally:
        transformers_logging.enable_progress_bar()


def test_unexpected_weights_beyond_the_pooler_are_still_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loading = {
        "missing_keys": {"encoder.layer.0.output.dense.bias"},
        "unexpected_keys": {"pooler.dense.weight", "pooler.dense.bias", "classifier.weight"},
        "mismatched_keys": set(),
    }
    with caplog.at_level(logging.WARNING, logger="shopaug.models.cross_encoder"):
        _report_loading(Path("/m"), loading)
    assert caplog.messages == [
        "/m: 1 weights missing from the checkpoint (newly initialised): "
        "encoder.layer.0.output.dense.bias",
        "/m: 1 weights in the checkpoint but unused: classifier.weight",
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="shopaug.models.cross_encoder"):
        _report_loading(Path("/m"), {"unexpected_keys": {"pooler.dense.weight"}})
    assert caplog.messages == []


def test_loading_minilm_prints_no_report_and_no_bar(capfd: pytest.CaptureFixture[str]) -> None:
    from shopaug.encoders.dense import SentenceTransformerEncoder
    from shopaug.models.cross_encoder import CrossEncoderReranker

    CrossEncoderReranker()  # drops MiniLM's pooler: transformers lists it as UNEXPECTED
    assert SentenceTransformerEncoder("minilm").dim == 384
    err = capfd.readouterr().err
    assert "LOAD REPORT" not in err and "UNEXPECTED" not in err
    assert "Loading weights" not in err
    assert "not sharded" not in err

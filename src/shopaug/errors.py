"""Errors shared by every stage, and the lazy import of optional extras."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType


class ShopaugError(Exception):
    """Base class of every error shopaug raises on purpose."""


class DataError(ShopaugError, ValueError):
    """Bad input data. The message names the file, the line (1-based, header = line 1) and the
    field when they are known, and what was expected."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field
        where = []
        if self.path is not None:
            where.append(self.path)
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"column {field!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class ConfigError(ShopaugError, ValueError):
    """A configuration value that cannot work; the message names the field."""


class MissingExtraError(ShopaugError, ImportError):
    """An optional dependency is not installed; the message names the pip command."""


def require(module: str, extra: str) -> ModuleType:
    """Import ``module``, or raise :class:`MissingExtraError` naming the pip command."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtraError(
            f"{module!r} is needed here but is not installed; "
            f"run: pip install 'shopaug[{extra}]'  ({error})"
        ) from error

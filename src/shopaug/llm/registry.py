"""Generator configuration and the registry that builds a generator from it."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

from shopaug.errors import ConfigError
from shopaug.llm.base import Generator
from shopaug.llm.llama_cpp import LlamaCppGenerator
from shopaug.llm.openai_compatible import OpenAICompatibleGenerator
from shopaug.llm.template import TemplateGenerator

GeneratorKind = Literal["template", "openai", "llama-cpp"]


@dataclass(frozen=True)
class GeneratorConfig:
    """Which generator to use and the sampling settings its callers pass on.

    Attributes:
        kind: ``template`` (no model), ``openai`` (any OpenAI-compatible endpoint) or
            ``llama-cpp`` (local GGUF).
        base_url: server root, for ``openai``.
        model: model name for ``openai``; path of a ``.gguf`` file for ``llama-cpp`` (None:
            the packaged Gemma 3 270M).
        temperature: sampling temperature (0 = greedy).
        max_tokens: most tokens per completion.
        seed: sampling seed.
        api_key_env: name of the environment variable holding the API key, for ``openai``.
            The key itself never goes into a config file.
        chat: for ``openai``, use ``/v1/chat/completions`` instead of ``/v1/completions``.
        timeout_s: seconds per HTTP request, for ``openai``.
        max_retries: retries on 5xx, 429 and timeouts, for ``openai``.
        n_threads: CPU threads, for ``llama-cpp``.
        n_ctx: context window in tokens, for ``llama-cpp``.
    """

    kind: GeneratorKind = "template"
    base_url: str | None = None
    model: str | None = None
    temperature: float = 0.8
    max_tokens: int = 24
    seed: int = 0
    api_key_env: str | None = None
    chat: bool = False
    timeout_s: float = 60.0
    max_retries: int = 3
    n_threads: int = 2
    n_ctx: int = 2048

    def __post_init__(self) -> None:
        if self.kind not in GENERATORS:
            raise ConfigError(
                f"generator.kind: unknown kind {self.kind!r}; expected one of {sorted(GENERATORS)}"
            )
        if self.temperature < 0:
            raise ConfigError(f"generator.temperature must be >= 0, got {self.temperature}")
        if self.max_tokens <= 0:
            raise ConfigError(f"generator.max_tokens must be positive, got {self.max_tokens}")
        if self.timeout_s <= 0:
            raise ConfigError(f"generator.timeout_s must be positive, got {self.timeout_s}")
        if self.max_retries < 0:
            raise ConfigError(f"generator.max_retries must be >= 0, got {self.max_retries}")
        if self.n_threads <= 0 or self.n_ctx <= 0:
            raise ConfigError(
                f"generator.n_threads and generator.n_ctx must be positive, got "
                f"{self.n_threads} and {self.n_ctx}"
            )


def _build_template(config: GeneratorConfig) -> Generator:
    return TemplateGenerator()


def _build_openai(config: GeneratorConfig) -> Generator:
    if not config.base_url:
        raise ConfigError("generator.base_url is required when generator.kind is 'openai'")
    if not config.base_url.startswith(("http://", "https://")):
        raise ConfigError(
            f"generator.base_url must start with http:// or https://, got {config.base_url!r}"
        )
    if not config.model:
        raise ConfigError("generator.model (the served model's name) is required for 'openai'")
    api_key = None
    if config.api_key_env:
        api_key = os.environ.get(config.api_key_env)
        if not api_key:
            raise ConfigError(
                f"generator.api_key_env names {config.api_key_env!r}, but that environment "
                "variable is not set or empty"
            )
    return OpenAICompatibleGenerator(
        config.base_url,
        config.model,
        api_key=api_key,
        timeout=config.timeout_s,
        max_retries=config.max_retries,
        chat=config.chat,
    )


def _build_llama_cpp(config: GeneratorConfig) -> Generator:
    if config.base_url:
        raise ConfigError(
            "generator.base_url is set but generator.kind is 'llama-cpp' (a local model); "
            "use kind 'openai' for a server"
        )
    try:
        return LlamaCppGenerator(config.model, n_threads=config.n_threads, n_ctx=config.n_ctx)
    except FileNotFoundError as error:
        raise ConfigError(f"generator.model: {error}") from error


#: kind -> builder. Explicit, so a reader sees every generator shopaug can build.
GENERATORS: dict[str, Callable[[GeneratorConfig], Generator]] = {
    "template": _build_template,
    "openai": _build_openai,
    "llama-cpp": _build_llama_cpp,
}
assert set(GENERATORS) == set(get_args(GeneratorKind))


def build_generator(config: GeneratorConfig) -> Generator:
    """The generator ``config`` describes.

    Raises:
        ConfigError: a field is missing or cannot work (the message names it).
        MissingExtraError: the generator's optional dependency is not installed.
    """
    return GENERATORS[config.kind](config)

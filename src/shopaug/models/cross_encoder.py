"""Cross-encoder reranker: MiniLM reads "query [SEP] product" and a linear head scores it."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from shopaug.encoders.dense import loading_quietly, minilm_path
from shopaug.errors import require
from shopaug.models.fingerprint import WeightsFingerprint
from shopaug.models.lora import LoraSettings, has_lora, inject_lora, merged_copy

logger = logging.getLogger(__name__)

CONFIG_FILE = "reranker.json"
HEAD_FILE = "head.safetensors"
Pooling = Literal["mean", "cls"]


#: Checkpoint weights the reranker leaves out on purpose: the pooler of a sentence encoder
#: (it pools tokens itself), which transformers lists as UNEXPECTED at every load.
EXPECTED_UNUSED_PREFIXES = ("pooler.",)


def _report_loading(path: Path, loading: dict[str, Any]) -> None:
    """Log what transformers' silenced load report held beyond the expected unused pooler:
    weights missing from the checkpoint (newly initialised), other unused or mismatched ones."""
    unexpected = sorted(
        key
        for key in loading.get("unexpected_keys", ())
        if not key.startswith(EXPECTED_UNUSED_PREFIXES)
    )
    missing = sorted(loading.get("missing_keys", ()))
    mismatched = sorted(str(entry[0]) for entry in loading.get("mismatched_keys", ()))
    for what, keys in (
        ("missing from the checkpoint (newly initialised)", missing),
        ("in the checkpoint but unused", unexpected),
        ("of another shape in the checkpoint (newly initialised)", mismatched),
    ):
        if keys:
            logger.warning("%s: %d weights %s: %s", path, len(keys), what, ", ".join(keys[:10]))


class CrossEncoderReranker(nn.Module):
    """A transformer over the pair ``[CLS] query [SEP] product [SEP]`` plus a linear head.

    No pretrained cross-encoder is available offline, so the transformer starts from the
    packaged all-MiniLM-L6-v2 and the head (``hidden -> 1``) from a seeded small normal: the
    scores mean nothing until the model is trained (:func:`shopaug.train.fit` trains it
    through :meth:`score_pairs`).

    Args:
        model_dir: A folder written by :meth:`save`, or a Hugging Face BERT-like folder to
            start from; ``None``: the packaged MiniLM.
        pooling: ``mean`` (attention-masked mean of the last hidden states) or ``cls``.
        max_length: Pair length in tokens; longer pairs lose the end of the product text.
        seed: Seeds the head initialisation (when the folder has no trained head).
        device: Torch device.
        lora: Train LoRA adapters in the transformer (needs ``peft``) and the head, instead
            of every weight; :meth:`save` writes the merged weights.

    Raises:
        FileNotFoundError: If ``model_dir`` is not a folder.
        MissingExtraError: If transformers (or, with ``lora``, peft) is not installed.

    Example:
        >>> reranker = CrossEncoderReranker()  # doctest: +SKIP
        >>> reranker.rerank("blue sofa", [("p1", "blue velvet sofa"), ("p2", "oak table")])
        ... # doctest: +SKIP
        [('p1', 0.41), ('p2', -0.12)]
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        pooling: Pooling = "mean",
        max_length: int = 128,
        seed: int = 0,
        device: str = "cpu",
        lora: LoraSettings | None = None,
    ) -> None:
        super().__init__()
        path = minilm_path() if model_dir is None else Path(model_dir)
        if not path.is_dir():
            raise FileNotFoundError(
                f"reranker folder {path} does not exist; give one written by "
                "CrossEncoderReranker.save, a BERT-like model folder, or None for MiniLM"
            )
        if (path / CONFIG_FILE).is_file():
            saved = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
            pooling, max_length = saved["pooling"], saved["max_length"]
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        transformers = require("transformers", "train")
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
        with loading_quietly(load_report=False):
            self.transformer, loading = transformers.AutoModel.from_pretrained(
                str(path), add_pooling_layer=False, output_loading_info=True
            )
        _report_loading(path, loading)
        hidden = int(self.transformer.config.hidden_size)
        self.head = nn.Linear(hidden, 1)
        if (path / HEAD_FILE).is_file():
            self.head.load_state_dict(load_file(str(path / HEAD_FILE)))
        else:
            generator = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                self.head.weight.normal_(0.0, 0.02, generator=generator)
                self.head.bias.zero_()
        if lora is not None:
            trainable = inject_lora(self.transformer, lora)
            logger.info("LoRA r=%d: %d trainable transformer parameters", lora.r, trainable)
        self.pooling: Pooling = pooling
        self.max_length = max_length
        self.to(device)
        self._fingerprint = WeightsFingerprint(self)
        self.eval()  # like a loaded Hugging Face model; fit() switches to train mode

    @property
    def id(self) -> str:
        """``cross-minilm@<sha256 prefix of the current weights>``."""
        return f"cross-minilm@{self._fingerprint()}"

    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        return next(self.parameters()).device

    def score_pairs(self, queries: Sequence[str], documents: Sequence[str]) -> torch.Tensor:
        """Differentiable scores ``(len(queries),)`` of the aligned (query, document) pairs."""
        if len(queries) != len(documents):
            raise ValueError(
                f"queries and documents must align: {len(queries)} vs {len(documents)}"
            )
        encoded = self.tokenizer(
            list(queries),
            list(documents),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self.device)
        hidden = self.transformer(**encoded).last_hidden_state  # (pairs, tokens, hidden)
        if self.pooling == "cls":
            pooled = hidden[:, 0]  # (pairs, hidden)
        else:
            mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (pairs, tokens, 1)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
        return self.head(pooled).squeeze(-1)  # (pairs,)

    def score(self, pairs: Sequence[tuple[str, str]], *, batch_size: int = 32) -> np.ndarray:
        """float32 scores ``(len(pairs),)`` of (query, product text) pairs, without gradients."""
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        was_training = self.training
        self.eval()
        chunks = []
        try:
            with torch.no_grad():
                for start in range(0, len(pairs), batch_size):
                    chunk = pairs[start : start + batch_size]
                    scores = self.score_pairs([q for q, _ in chunk], [d for _, d in chunk])
                    chunks.append(scores.float().cpu().numpy())
        finally:
            self.train(was_training)
        return np.concatenate(chunks).astype(np.float32)

    def rerank(
        self,
        query: str,
        candidates: Sequence[tuple[str, str]],
        top_k: int | None = None,
        *,
        batch_size: int = 32,
    ) -> list[tuple[str, float]]:
        """Order ``(product_id, text)`` candidates by score, best first; ties keep input order.

        Returns:
            Up to ``top_k`` (all when ``None``) ``(product_id, score)`` pairs.
        """
        if top_k is not None and top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {top_k}")
        scores = self.score([(query, text) for _, text in candidates], batch_size=batch_size)
        order = np.argsort(-scores, kind="stable")
        if top_k is not None:
            order = order[:top_k]
        return [(candidates[i][0], float(scores[i])) for i in order]

    def save(self, directory: str | Path) -> None:
        """Write transformer (safetensors), tokenizer, head (safetensors) and settings."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        transformer = self.transformer
        if has_lora(transformer):
            transformer = merged_copy(transformer)
        transformer.save_pretrained(str(directory), safe_serialization=True)
        self.tokenizer.save_pretrained(str(directory))
        head = {
            key: value.detach().contiguous().cpu() for key, value in self.head.state_dict().items()
        }
        save_file(head, str(directory / HEAD_FILE))
        settings = {"format": 1, "pooling": self.pooling, "max_length": self.max_length}
        (directory / CONFIG_FILE).write_text(json.dumps(settings, indent=2), encoding="utf-8")
        logger.info("reranker saved to %s", directory)

    @classmethod
    def load(cls, directory: str | Path, *, device: str = "cpu") -> CrossEncoderReranker:
        """Read a folder written by :meth:`save`.

        Raises:
            FileNotFoundError: If the folder lacks ``reranker.json`` or ``head.safetensors``.
        """
        directory = Path(directory)
        for name in (CONFIG_FILE, HEAD_FILE):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"{directory} is not a saved reranker: {name} is missing")
        return cls(directory, device=device)

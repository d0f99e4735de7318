"""A sentence-transformers model exported to ONNX Runtime, fp32 or int8, behind :class:`Encoder`.

Why: on two CPU cores the torch forward pass of MiniLM dominates the latency of a new query;
ONNX Runtime runs the same graph several times faster, and its dynamic int8 quantisation
(``onnxruntime.quantization.quantize_dynamic``) roughly halves that again.

How: :func:`export_onnx` traces the whole sentence-transformers pipeline (transformer + pooling)
with ``torch.onnx.export`` into one graph whose output is the sentence embedding, and, for int8,
quantises the weights of its ``MatMul`` s per channel (embeddings and layer norms stay fp32:
this keeps the cosine to the fp32 vectors above 0.99 on MiniLM, where quantising every op
gives about 0.97). Texts are tokenised by the model's own ``tokenizer.json`` (the Rust
``tokenizers`` library), truncated to ``max_seq_length`` tokens as the torch encoder does, and
the vectors are L2-normalised.

Exports are cached in :func:`shopaug.encoders.exports.export_dir` (beside the model), with
``export.json`` naming the model id they came from, so changed weights are exported again and
an unchanged model never is.

The ``[fast]`` extra installs ONNX Runtime and ``onnx``; exporting needs torch too (``[train]``).
"""

from __future__ import annotations

import json
import logging
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from shopaug.encoders.dense import (
    DEFAULT_MAX_SEQ_LENGTH,
    DEFAULT_MODEL,
    loading_quietly,
    model_id,
)
from shopaug.encoders.exports import (
    ExportedEncoder,
    export_dir,
    export_is_current,
    resolve_model_path,
    write_export_record,
)
from shopaug.errors import ConfigError, require

logger = logging.getLogger(__name__)

#: ONNX file names by precision.
ONNX_FILES = {"fp32": "model.onnx", "int8": "model-int8.onnx"}
#: ONNX opset of the export.
OPSET = 17


def export_onnx(
    model: str | Path,
    *,
    precision: str = "fp32",
    max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH,
) -> Path:
    """The ONNX file of ``model`` at ``precision`` (``fp32`` or ``int8``), exported if missing.

    Args:
        model: ``"minilm"`` or a sentence-transformers folder.
        precision: ``fp32`` (the traced graph) or ``int8`` (dynamic int8 weights of the
            ``MatMul`` s, per channel).
        max_seq_length: the truncation the encoder will use (recorded with the export).

    Raises:
        ConfigError: ``precision`` is not one of ``fp32`` / ``int8``.
        MissingExtraError: onnx / onnxruntime (``[fast]``) or torch (``[train]``) is missing.
    """
    if precision not in ONNX_FILES:
        raise ConfigError(f"precision is {precision!r}; expected one of {tuple(ONNX_FILES)}")
    path = resolve_model_path(model)
    source_id = model_id(path, max_seq_length)
    folder = export_dir(model)
    target = folder / ONNX_FILES[precision]
    if export_is_current(folder, target.name, source_id):
        return target
    folder.mkdir(parents=True, exist_ok=True)
    fp32 = folder / ONNX_FILES["fp32"]
    if not export_is_current(folder, fp32.name, source_id):
        _trace(path, fp32, max_seq_length)
        write_export_record(folder, model_id=source_id, inputs=_input_names(path))
    if precision == "int8":
        _quantize(fp32, target)
    return target


def _input_names(path: Path) -> list[str]:
    """The tokenizer outputs the model takes: ``input_ids``, ``attention_mask`` and, for
    models with token types (BERT's ``type_vocab_size`` > 0), ``token_type_ids``."""
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        config = {}
    names = ["input_ids", "attention_mask"]
    return [*names, "token_type_ids"] if int(config.get("type_vocab_size", 0)) > 0 else names


def _trace(path: Path, target: Path, max_seq_length: int) -> None:
    """Trace the sentence-transformers pipeline of ``path`` into ``target`` (fp32 ONNX)."""
    require("onnx", "fast")
    torch = require("torch", "train")
    st = require("sentence_transformers", "train")
    with loading_quietly():
        model = st.SentenceTransformer(str(path), device="cpu")
    model.max_seq_length = max_seq_length
    names = _input_names(path)

    module: Any = torch.nn.Module  # torch is imported lazily, so the base is a value here

    class SentenceEmbedding(module):
        """The pipeline as a module of positional tensors (what the tracer wants)."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors):  # each (batch, seq)
            return self.model(dict(zip(names, tensors)))["sentence_embedding"]  # (batch, dim)

    example = tuple(torch.ones((2, 8), dtype=torch.long) for _ in names)
    axes = {name: {0: "batch", 1: "sequence"} for name in names} | {"embedding": {0: "batch"}}
    tmp = target.with_suffix(".tmp")
    logger.info("exporting %s to ONNX (%s)", path, target)
    with torch.no_grad(), warnings.catch_warnings():
        # the tracer notes Python conditions on shapes (padding, causal masks) that are constant
        # for an encoder; the tests compare padded batches with torch
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            SentenceEmbedding().eval(),
            example,
            str(tmp),
            dynamo=False,
            input_names=names,
            output_names=["embedding"],
            dynamic_axes=axes,
            opset_version=OPSET,
        )
    tmp.replace(target)


def _quantize(source: Path, target: Path) -> None:
    """Dynamic int8 quantisation of the ``MatMul`` weights of ``source``, per channel."""
    quantization = require("onnxruntime.quantization", "fast")
    tmp = target.with_suffix(".tmp")
    logger.info("quantising %s to int8 (%s)", source, target)
    quantization.quantize_dynamic(
        str(source),
        str(tmp),
        weight_type=quantization.QuantType.QInt8,
        op_types_to_quantize=["MatMul"],
        per_channel=True,
    )
    tmp.replace(target)


def _tokenizer(path: Path, max_seq_length: int) -> Any:
    """The fast tokenizer of ``path`` (``tokenizer.json``), truncating and padding."""
    tokenizers = require("tokenizers", "fast")
    file = path / "tokenizer.json"
    if not file.is_file():
        raise ConfigError(
            f"{path} has no tokenizer.json; the ONNX runtime needs a fast tokenizer "
            "(save the model with sentence-transformers >= 2)"
        )
    tokenizer = tokenizers.Tokenizer.from_file(str(file))
    tokenizer.enable_truncation(max_length=max_seq_length)
    padding = tokenizer.padding or {}
    tokenizer.enable_padding(
        pad_id=int(padding.get("pad_id", 0)), pad_token=str(padding.get("pad_token", "[PAD]"))
    )
    return tokenizer


class OnnxEncoder(ExportedEncoder):
    """A sentence-transformers model run by ONNX Runtime (see the module docstring).

    Args:
        model: ``"minilm"`` or a sentence-transformers folder.
        precision: ``fp32`` or ``int8``.
        threads: ONNX Runtime intra-op threads (1 keeps one request on one core).
        max_seq_length: truncate longer inputs (as :class:`SentenceTransformerEncoder`).
        batch_size: texts per run of the graph.

    Its ``id`` is the weights' id with the runtime: ``st@<hash>+onnx-fp32`` / ``+onnx-int8``.

    Example:
        >>> encoder = OnnxEncoder("minilm", precision="int8")  # doctest: +SKIP
        >>> encoder.encode(["blue velvet sofa"]).shape  # doctest: +SKIP
        (1, 384)
    """

    def __init__(
        self,
        model: str | Path = DEFAULT_MODEL,
        *,
        precision: str = "fp32",
        threads: int = 1,
        max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH,
        batch_size: int = 64,
    ) -> None:
        ort = require("onnxruntime", "fast")
        self.path = resolve_model_path(model)
        if not self.path.is_dir():
            raise FileNotFoundError(f"model directory {self.path} does not exist")
        self.precision = precision
        self.batch_size = batch_size
        self.onnx_path = export_onnx(model, precision=precision, max_seq_length=max_seq_length)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(self.onnx_path), options, providers=["CPUExecutionProvider"]
        )
        self._inputs = [node.name for node in self._session.get_inputs()]
        self._tokenizer = _tokenizer(self.path, max_seq_length)
        self._lock = threading.Lock()  # the tokenizer's padding state is shared
        self._id = f"{model_id(self.path, max_seq_length)}+onnx-{precision}"
        self._dim = int(self._session.get_outputs()[0].shape[-1])

    def _vectors(self, texts: list[str], show_progress: bool) -> np.ndarray:
        parts = [
            self._encode_batch(texts[start : start + self.batch_size])
            for start in range(0, len(texts), self.batch_size)
        ]
        return np.concatenate(parts)  # (n, dim)

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            encodings = self._tokenizer.encode_batch(texts)
        columns = {
            "input_ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
        }
        feeds = {name: np.asarray(columns[name], dtype=np.int64) for name in self._inputs}
        return np.asarray(self._session.run(None, feeds)[0], dtype=np.float32)  # (batch, dim)

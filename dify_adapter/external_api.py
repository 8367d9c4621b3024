"""Dify's External Knowledge API (``POST <endpoint>/retrieval``) over the workspace's store.

Request (what Dify's ``ExternalDatasetService.fetch_external_knowledge_retrieval`` sends, as
``data=json.dumps(...)`` with ``Content-Type: application/json`` and ``Authorization: Bearer <key>``)::

    {"knowledge_id": "...", "query": "...", "retrieval_setting": {"top_k": 4, "score_threshold": 0.0},
     "metadata_condition": {"logical_operator": "and",
                            "conditions": [{"name": "lang", "comparison_operator": "is", "value": "zh"}]}}

``metadata_condition`` may be absent or null. Dify's connection check posts no body (1.x) or an
empty ``knowledge_id`` (mainline); both get ``200 {"records": []}``. Errors use Dify's documented
codes with 4xx statuses (Dify retries 5xx, so a user error must never be one).
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from dify_adapter.workspace import StorageNotConfigured
from kb import (
    DEFAULT_FUSION,
    FUSIONS,
    MAX_TOP_K,
    MODES,
    EmbedderError,
    EmbedderMismatch,
    InvalidInput,
    KBError,
    NotFound,
    StoreBusy,
)

log = logging.getLogger("chroma_kb")

DEFAULT_TOP_K = 4


@dataclass
class Reply:
    status: int
    body: dict


def _error(status: int, code: int, message: str) -> Reply:
    return Reply(status, {"error_code": code, "error_msg": message})


# Dify comparison operators (api/core/rag/entities/metadata_entities.py) -> Chroma where operators.
_EQUALITY = {"is": "$eq", "=": "$eq", "is not": "$ne", "≠": "$ne", "!=": "$ne"}
_ORDER = {">": "$gt", "<": "$lt", "≥": "$gte", ">=": "$gte", "≤": "$lte", "<=": "$lte", "after": "$gt", "before": "$lt"}
_MEMBERSHIP = {"in": "$in", "not in": "$nin"}
UNSUPPORTED = ("contains", "not contains", "start with", "end with", "empty", "not empty")


def _number(value: Any, name: str, op: str) -> int | float:
    if isinstance(value, bool):
        raise InvalidInput(f"metadata condition on {name!r}: {op!r} needs a number, got {value!r}.")
    if isinstance(value, int | float):
        return value
    try:
        number = float(str(value).strip())
    except ValueError:
        raise InvalidInput(f"metadata condition on {name!r}: {op!r} needs a number, got {value!r}.") from None
    return int(number) if number.is_integer() else number


def _scalar(value: Any) -> str | int | float | bool:
    if isinstance(value, str | int | float | bool):
        return value
    raise InvalidInput(f"metadata condition value {value!r} must be text or a number.")


def condition_to_where(condition: Any) -> dict | None:
    """Map Dify's ``metadata_condition`` to the engine's filter, or raise InvalidInput naming the
    condition we cannot honour (never a silently different filter)."""
    if condition is None:
        return None
    if not isinstance(condition, dict):
        raise InvalidInput("metadata_condition must be an object with logical_operator and conditions.")
    logical = str(condition.get("logical_operator") or "and").lower()
    if logical not in ("and", "or"):
        raise InvalidInput(f"metadata_condition.logical_operator must be 'and' or 'or', got {logical!r}.")
    items = condition.get("conditions") or []
    if not isinstance(items, list):
        raise InvalidInput("metadata_condition.conditions must be a list.")
    parts = [p for p in (_one_condition(c) for c in items) if p is not None]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {f"${logical}": parts}


def _one_condition(item: Any) -> dict | None:
    if not isinstance(item, dict):
        raise InvalidInput("each metadata condition must be an object with name, comparison_operator and value.")
    name = item.get("name")
    if isinstance(name, list):  # the published API docs show a one-element list
        name = name[0] if len(name) == 1 else None
    if not isinstance(name, str) or not name:
        raise InvalidInput("each metadata condition needs a field name.")
    op = str(item.get("comparison_operator", "")).strip()
    value = item.get("value")
    if op in UNSUPPORTED:
        raise InvalidInput(
            f"metadata condition on {name!r}: the operator {op!r} is not supported by this knowledge base; "
            f"use is, is not, in, not in, =, ≠, >, <, ≥, ≤, before or after."
        )
    if value is None:  # Dify skips a condition without a value
        return None
    if op in _EQUALITY:
        if op in ("=", "≠", "!="):
            value = _number(value, name, op)
        return {name: {_EQUALITY[op]: _scalar(value)}}
    if op in _ORDER:
        return {name: {_ORDER[op]: _number(value, name, op)}}
    if op in _MEMBERSHIP:
        values = value if isinstance(value, list) else [v.strip() for v in str(value).split(",") if v.strip()]
        if not values:
            return None
        return {name: {_MEMBERSHIP[op]: [_scalar(v) for v in values]}}
    raise InvalidInput(f"metadata condition on {name!r}: unknown comparison_operator {op!r}.")


# A model provider id is ``organization/plugin/provider`` (lower-case letters, digits, _ and -); a
# bare provider name means one of Dify's own, ``langgenius/<name>/<name>`` (Dify's GenericProviderID).
_FULL_PROVIDER = re.compile(r"^([a-z0-9_-]+/[a-z0-9_-]+/[a-z0-9_-]+)/(.+)$")
_SHORT_PROVIDER = re.compile(r"^([a-z0-9_-]+)/(.+)$")
RERANK_EXAMPLE = "langgenius/jina/jina/jina-reranker-v2-base-multilingual"


def rerank_model(value: Any) -> tuple[str, str] | None:
    """The endpoint's rerank model setting -> (provider id, model), or None when not set.

    The setting is text, ``<provider>/<model>``: Dify's endpoint form sends a model selector as
    ``{provider, model, model_type}`` and the plugin daemon refuses to save a rerank selector
    without ``score_threshold`` and ``top_n`` (plugin_entities.ValidateProviderConfigs), which the
    form never sends. A selector-shaped dict is still accepted."""
    if isinstance(value, dict):
        provider, model = str(value.get("provider") or "").strip(), str(value.get("model") or "").strip()
        return (provider, model) if provider and model else None
    text = str(value or "").strip()
    if not text:
        return None
    found = _FULL_PROVIDER.match(text) or _SHORT_PROVIDER.match(text)
    if not found or not found.group(2).strip("/ "):
        raise InvalidInput(
            f"The endpoint setting 'Rerank model' must be <provider>/<model>, e.g. {RERANK_EXAMPLE} "
            f"(or jina/jina-reranker-v2-base-multilingual for Dify's own providers); got {text!r}."
        )
    provider, model = found.group(1), found.group(2).strip()
    if "/" not in provider:
        provider = f"langgenius/{provider}/{provider}"
    return provider, model


@dataclass
class Settings:
    api_key: str
    mode: str = "hybrid"
    fusion: str = DEFAULT_FUSION
    vector_weight: float | None = None  # None: the fusion's own default
    keyword_fallback: bool = True
    rerank: tuple[str, str] | None = None  # (provider id, model)

    @classmethod
    def parse(cls, settings: dict) -> Settings:
        mode = settings.get("mode") or "hybrid"
        fusion = settings.get("fusion") or DEFAULT_FUSION
        raw = settings.get("vector_weight")
        try:
            weight = None if raw is None or str(raw).strip() == "" else float(raw)
        except (TypeError, ValueError):
            weight = -1
        if mode not in MODES or fusion not in FUSIONS or (weight is not None and not 0 <= weight <= 1):
            raise InvalidInput(
                "The endpoint settings are invalid (mode, fusion, or a vector weight outside 0-1); fix them in Dify."
            )
        fallback = settings.get("keyword_fallback")
        return cls(
            str(settings.get("api_key") or ""),
            mode,
            fusion,
            weight,
            fallback is None or bool(fallback),
            rerank_model(settings.get("rerank_model")),
        )


def check_authorization(header: str | None, api_key: str) -> Reply | None:
    scheme, _, token = (header or "").partition(" ")
    if scheme != "Bearer" or not token.strip():
        return _error(403, 1001, "Invalid Authorization header format. Expected 'Bearer <api-key>' format.")
    if not api_key or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        return _error(403, 1002, "Authorization failed")
    return None


def _parse_body(raw: bytes, content_type: str) -> dict | None:
    """The JSON body, or None for Dify's connection check (an empty body, or one that is not JSON
    and not declared as JSON). A JSON body is read whatever its content type says."""
    if not raw.strip():
        return None
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        if "json" not in (content_type or "").lower():
            return None
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise InvalidInput(
            f"The request body is not valid JSON ({reason}); note that Dify's plugin daemon cuts bodies at 10 MB."
        ) from None
    if not isinstance(body, dict):
        raise InvalidInput("The request body must be a JSON object.")
    return body


def _retrieval_setting(body: dict) -> tuple[int, float]:
    setting = body.get("retrieval_setting") or {}
    if not isinstance(setting, dict):
        raise InvalidInput("retrieval_setting must be an object with top_k and score_threshold.")
    top_k, threshold = setting.get("top_k", DEFAULT_TOP_K), setting.get("score_threshold", 0.0)
    if top_k is None:
        top_k = DEFAULT_TOP_K
    if (
        isinstance(top_k, bool)
        or not isinstance(top_k, int | float)
        or not math.isfinite(top_k)
        or top_k < 1
        or int(top_k) != top_k
    ):
        raise InvalidInput(f"retrieval_setting.top_k must be a whole number of at least 1, got {top_k!r}.")
    if threshold is None:
        threshold = 0.0
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 <= threshold <= 1:  # NaN fails
        raise InvalidInput(f"retrieval_setting.score_threshold must be between 0 and 1, got {threshold!r}.")
    return min(int(top_k), MAX_TOP_K), float(threshold)


def find_kb(library, knowledge_id: str):
    """By name (any language), or by the collection id the manage tool shows. A keyword index that
    must be rebuilt (after a crash, an upgrade of its format) is rebuilt in the background: Dify
    gives up after 5 s, and a rebuild takes about 45 s per 100,000 chunks (bench.cold_endpoint)."""
    return library.get(knowledge_id, background_repair=True)


def record(hit) -> dict:
    return {
        "content": hit.content,
        "score": hit.score,
        "title": hit.title or hit.doc_id,
        "metadata": {
            **hit.metadata,
            "document_id": hit.doc_id,
            "source": hit.source,
            "position": hit.position,
            "chunk_id": hit.id,
            "semantic_score": hit.semantic_score,
            "keyword_score": hit.keyword_score,
        },
    }


# Dify turns every non-200 answer into "no results" and retries 429, 5xx and time-outs three times
# (then fails the node), so an expected failure is a 4xx other than 429, with a message.
STATUS: list[tuple[type[KBError] | tuple[type[KBError], ...], int, int]] = [
    (InvalidInput, 400, 400),
    (NotFound, 404, 2001),
    (StoreBusy, 409, 3002),
    ((EmbedderError, EmbedderMismatch), 424, 3001),
    (StorageNotConfigured, 424, 3003),
    (KBError, 422, 3000),
]
NOT_READY = 404  # the connection check fails with it (Dify refuses to register), see probe()


class RerankFailed(KBError):
    """The endpoint's rerank model failed; the answer is given without reranking."""


def _failure(exc: KBError) -> Reply:
    for kinds, status, code in STATUS:
        if isinstance(exc, kinds):
            return _error(status, code, str(exc))
    raise AssertionError("unreachable: KBError is the last row")


def retrieve(
    *,
    authorization: str | None,
    raw_body: bytes,
    content_type: str,
    settings: dict,
    library_factory: Callable[[], Any],
    embedder_for: Callable[[str], Any],
    reranker_for: Callable[[str, str], Callable[[str, list[str]], list[float]]] | None = None,
) -> Reply:
    """Answer one request. Expected failures are 4xx with a message (see STATUS); an unexpected one
    is logged with its traceback and answered 500 in one line."""
    denied = check_authorization(authorization, str(settings.get("api_key") or ""))
    if denied:
        return denied
    try:
        config = Settings.parse(settings)
        body = _parse_body(raw_body, content_type)
        if body is None or not str(body.get("knowledge_id") or "").strip() or not str(body.get("query") or "").strip():
            library_factory()  # the data directory must be usable before Dify registers the endpoint
            return Reply(200, {"records": []})  # Dify's connection check
        knowledge_id, query = str(body["knowledge_id"]).strip(), str(body["query"])
        top_k, threshold = _retrieval_setting(body)
        where = condition_to_where(body.get("metadata_condition"))
        try:
            kb = find_kb(library_factory(), knowledge_id)
        except NotFound:
            return _error(404, 2001, f"The knowledge base {knowledge_id!r} does not exist.")
        warnings: list[str] = []
        hits = _search(kb, query, top_k, threshold, where, config, embedder_for, reranker_for, warnings)
    except KBError as exc:
        log.warning("external knowledge request failed: %s", exc)
        if body_is_probe(raw_body, content_type):
            return _error(NOT_READY, 3004, f"This endpoint cannot answer: {exc}")
        return _failure(exc)
    except Exception as exc:
        log.exception("external knowledge request failed unexpectedly")
        return _error(500, 500, f"Internal error ({type(exc).__name__}); the plugin's log has the details.")
    reply = {"records": [record(h) for h in hits]}
    if warnings:
        reply["warnings"] = warnings
    return Reply(200, reply)


def body_is_probe(raw_body: bytes, content_type: str) -> bool:
    """Dify's connection check: no JSON body, or an empty ``knowledge_id`` or query."""
    try:
        body = _parse_body(raw_body, content_type)
    except InvalidInput:
        return False
    return body is None or not str(body.get("knowledge_id") or "").strip() or not str(body.get("query") or "").strip()


def _search(kb, query, top_k, threshold, where, config: Settings, embedder_for, reranker_for, warnings: list[str]):
    options = dict(
        top_k=top_k, fusion=config.fusion, vector_weight=config.vector_weight, where=where, score_threshold=threshold
    )
    reranker = None
    if config.rerank and reranker_for is not None:
        reranker = _tagged(reranker_for(*config.rerank))
    try:
        return _channels(kb, query, config, embedder_for, options | {"reranker": reranker}, warnings)
    except RerankFailed as exc:
        warnings.append(f"{exc}; answered without reranking.")
        log.warning("%s: %s; answered without reranking", kb.name, exc)
        return _channels(kb, query, config, embedder_for, options, warnings)


def _channels(kb, query, config: Settings, embedder_for, options: dict, warnings: list[str]):
    if not kb.keyword_ready:  # its keyword index is being rebuilt in the background
        if config.mode == "keyword" or kb.keyword_only:
            raise StoreBusy(f"The keyword index of {kb.name!r} is being rebuilt; try again in a minute.")
        if config.mode == "hybrid":
            warnings.append("The keyword index is being rebuilt; answered from the vectors alone.")
            config = replace(config, mode="semantic", keyword_fallback=False)
    if config.mode == "keyword" or kb.keyword_only:
        return kb.search(query, mode="keyword", **options)
    try:
        return kb.search(query, mode=config.mode, embedder=embedder_for(kb.embedder_name), **options)
    except (EmbedderError, EmbedderMismatch) as exc:
        if not config.keyword_fallback:
            raise
        warnings.append(f"The embedding model is unavailable ({exc}); answered from the keyword channel.")
        log.warning("%s: semantic channel unavailable (%s); answering from the keyword channel", kb.name, exc)
        return kb.search(query, mode="keyword", **options)


def _tagged(reranker):
    """A reranker whose failure is told apart from the embedder's (it raises RerankFailed)."""

    def rerank(query: str, texts: list[str]) -> list[float]:
        try:
            return reranker(query, texts)
        except KBError as exc:
            raise RerankFailed(str(exc)) from exc

    return rerank

"""Shape engine results for Dify: knowledge items the LLM node accepts as context with citations,
readable text, and caps that keep every stdout frame far below the daemon's 5 MiB limit."""

from __future__ import annotations

import hashlib

from kb import Hit

MAX_TEXT_CHARS = 400_000  # one text message
MAX_RESULT_CHARS = 1_500_000  # all contents of one result variable (JSON-escaped CJK can triple it)
DATA_SOURCE_TYPE = "chroma_kb"


def knowledge_items(hits: list[tuple[str, Hit]]) -> list[dict]:
    """``[(kb_name, hit)]`` best first -> items shaped like Dify's Knowledge Retrieval ``Source``.

    ``metadata._source == "knowledge"`` is what makes the LLM node turn an item into a citation
    (``LLMNode._convert_to_original_retriever_resource``); it copies ``position``, ``dataset_id``,
    ``dataset_name``, ``document_id``, ``document_name``, ``data_source_type`` (before Dify 1.x:
    ``document_data_source_type``), ``segment_id``, ``retriever_from``, ``score``,
    ``segment_hit_count``, ``segment_word_count``, ``segment_position``, ``segment_index_node_hash``,
    ``page`` and ``doc_metadata`` into a ``RetrievalSourceMetadata`` (ints, strings, a float and a
    dict; a wrong type fails the LLM node). The chat's citation popup groups by ``document_id`` and
    shows ``segment_position``, ``content``, ``word_count``, ``hit_count``, the first 7 characters of
    ``index_node_hash`` and ``score``."""
    items, used = [], 0
    for position, (kb_name, hit) in enumerate(hits, start=1):
        content = hit.content
        if used + len(content) > MAX_RESULT_CHARS:
            break
        used += len(content)
        items.append(
            {
                "content": content,
                "title": hit.title or hit.doc_id,
                "metadata": {
                    "_source": "knowledge",
                    "position": position,
                    "dataset_id": kb_name,
                    "dataset_name": kb_name,
                    "document_id": hit.doc_id,
                    "document_name": hit.title or hit.doc_id,
                    "data_source_type": DATA_SOURCE_TYPE,
                    "document_data_source_type": DATA_SOURCE_TYPE,
                    "segment_id": hit.id,
                    "segment_position": hit.position + 1,  # Dify numbers a document's segments from 1
                    "segment_word_count": len(content),  # characters, as Dify counts them
                    "segment_hit_count": None,  # not tracked: the popup shows no count
                    "segment_index_node_hash": hashlib.sha256(content.encode("utf-8")).hexdigest(),
                    "page": None,
                    "retriever_from": "workflow",
                    "score": hit.score,
                    "doc_metadata": {
                        **hit.metadata,
                        "source": hit.source,
                        "semantic_rank": hit.semantic_rank,
                        "semantic_score": hit.semantic_score,
                        "keyword_rank": hit.keyword_rank,
                        "keyword_score": hit.keyword_score,
                        "rerank_score": hit.rerank_score,
                    },
                    **({"child_chunks": hit.children} if hit.children else {}),
                },
            }
        )
    return items


def context_text(items: list[dict]) -> str:
    if not items:
        return "No matching passages were found."
    blocks = []
    for item in items:
        meta = item["metadata"]
        heading = f"[{meta['position']}] {item['title']} ({meta['dataset_name']}, score {meta['score']:.3f})"
        blocks.append(f"{heading}\n{item['content']}")
    return cap("\n\n".join(blocks))


def cap(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + "\n… (truncated)"

"""Search over one and several knowledge bases: one meaningful order, metadata that cannot break it."""

from __future__ import annotations

import pytest
from plugin_session import make_session, make_tool

from kb import Library, SourceDocument
from tools.retrieve import RetrieveTool

pytestmark = pytest.mark.unit

HANDBOOK = [
    ("leave-days", "Annual leave", "Every employee gets fifteen days of paid annual leave per year of service."),
    ("leave-carry", "Carrying leave over", "Unused annual leave days can be carried over until the end of March."),
    ("leave-request", "Requesting leave", "Request annual leave days in the HR portal two weeks in advance."),
    ("sick-days", "Sick leave", "Sick leave of up to ten days per year is paid in full with a doctor's note."),
    ("expenses", "Travel expenses", "Taxi receipts are reimbursed within thirty days of the trip."),
    ("laptops", "Equipment", "New staff receive a laptop and a monitor on their first day."),
]
RECIPES = [
    ("soup", "Tomato soup", "Simmer tomatoes with onion and garlic for twenty minutes, then blend."),
    ("bread", "Flat bread", "Knead flour, water and salt; rest the dough for an hour before baking."),
    ("picnic", "Holiday picnic", "A picnic basket for a day off: sandwiches, fruit and lemonade."),
    ("curry", "Vegetable curry", "Fry the spices, add vegetables and coconut milk, cook until tender."),
    ("salad", "Green salad", "Toss lettuce, cucumber and herbs with olive oil and lemon juice."),
    ("cake", "Sponge cake", "Whisk eggs and sugar until pale, fold in flour, bake at 180 degrees."),
]
QUERY = "how many days of paid annual leave do employees get"


def _fill(library: Library, name: str, rows, e5) -> None:
    kb = library.get_or_create(name, e5)
    kb.ingest([SourceDocument(text, doc_id, title) for doc_id, title, text in rows])


@pytest.fixture
def two_kbs(tmp_path, monkeypatch, e5):
    monkeypatch.setenv("CHROMA_KB_DATA_DIR", str(tmp_path / "plugin-data"))
    session = make_session(e5)
    library = make_tool(RetrieveTool, session).library
    _fill(library, "handbook", HANDBOOK, e5)
    _fill(library, "recipes", RECIPES, e5)
    return session, library


def test_searching_one_kb_through_the_library_equals_searching_it_directly(two_kbs):
    _, library = two_kbs
    for mode, fusion in (("hybrid", "zscore"), ("hybrid", "rrf"), ("hybrid", "weighted"), ("semantic", "zscore")):
        direct = library.get("handbook").search(QUERY, top_k=5, mode=mode, fusion=fusion)
        pooled = library.search(["handbook"], QUERY, top_k=5, mode=mode, fusion=fusion)
        assert [(h.id, h.score) for h in direct] == [(h.id, h.score) for h in pooled]
        assert {h.knowledge_base for h in pooled} == {"handbook"}


def test_hits_of_several_kbs_keep_their_own_channel_evidence(two_kbs):
    _, library = two_kbs
    hits = library.search(["recipes", "handbook"], "annual leave days", top_k=12)
    assert {h.knowledge_base for h in hits} == {"recipes", "handbook"}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    for h in hits:  # ranks are within the hit's own KB: each KB has a first semantic hit
        assert h.semantic_rank is not None and 1 <= h.semantic_rank <= 6
    assert sorted(h.semantic_rank for h in hits if h.knowledge_base == "recipes") == list(range(1, 7))


def test_a_keyword_only_kb_searched_with_an_embedded_one(tmp_path, e5):
    library = Library(tmp_path)
    _fill(library, "handbook", HANDBOOK, e5)
    library.create("notes", None).ingest([SourceDocument("annual leave days are fifteen per year", "note")])
    hits = library.search(["notes", "handbook"], QUERY, top_k=7)
    assert {h.knowledge_base for h in hits} == {"notes", "handbook"}
    note = next(h for h in hits if h.knowledge_base == "notes")
    assert note.semantic_score is None and note.keyword_score > 0


@pytest.mark.parametrize("mode", ["keyword", "hybrid"])
def test_a_rare_word_of_a_weak_kb_does_not_outrank_a_strong_kb(tmp_path, mode):
    """ "day" is rare among recipes (one picnic "day off") and "paid" absent, so the recipes KB alone
    gives "day" a high IDF and its picnic the whole of its own query bound: it came first, above the
    handbook's chunks holding both words. Scored with IDFs and a bound over both KBs (DFS), the
    handbook's two chunks with "paid" and "days" rank above it."""
    library = Library(tmp_path)
    for name, rows in (("handbook", HANDBOOK), ("recipes", RECIPES)):
        library.create(name, None).ingest([SourceDocument(text, doc_id, title) for doc_id, title, text in rows])
    query = "paid days off"
    hits = library.search(["recipes", "handbook"], query, mode=mode, top_k=12)
    order = [h.doc_id for h in hits]
    assert order[:2] == ["leave-days", "sick-days"] and order.index("picnic") > 1, order
    # Each KB alone ranks as it did: the shared statistics only matter between KBs.
    for name in ("handbook", "recipes"):
        alone = [h.id for h in library.get(name).search(query, mode=mode, top_k=12)]
        assert alone == [h.id for h in hits if h.knowledge_base == name]


def test_user_metadata_named_like_internal_fields_is_kept_and_cannot_break_search(tmp_path, e5):
    from kb import ChunkingOptions

    library = Library(tmp_path)
    odd = {"_parent_text": "x", "_parent_position": "y", "parent": 3}
    flat = library.get_or_create("flat", e5)
    flat.ingest([SourceDocument("Annual leave is fifteen days.", "d", "Leave", metadata=odd)])
    hit = flat.search("annual leave")[0]
    assert hit.metadata == odd and hit.children == []
    nested = library.get_or_create("nested", e5)
    options = ChunkingOptions(mode="parent_child", max_tokens=60, overlap=0, child_max_tokens=20, child_overlap=0)
    text = "Annual leave is fifteen days.\nUnused days carry over to March.\nSick leave needs a note."
    nested.ingest([SourceDocument(text, "d", "Leave", metadata=odd)], options)
    hit = nested.search("annual leave")[0]
    assert hit.metadata == odd and hit.content == text and hit.children
    assert "_parent" not in hit.as_dict() and hit.as_dict()["metadata"] == odd

import itertools

import pytest

from kb.chunking import ChunkingOptions, chunk_text, count_tokens, decode_separator, split_text
from kb.errors import InvalidInput

EN = " ".join(f"Sentence number {i} talks about hybrid retrieval." for i in range(200))
ZH = "".join(f"第{i}句讲的是混合检索与关键词索引。" for i in range(200))


def test_defaults_follow_dify():
    o = ChunkingOptions()
    assert (o.separator, o.max_tokens, o.overlap) == ("\n\n", 1024, 50)


def test_encoding_is_offline_cl100k():
    assert count_tokens("hello world") == 2


@pytest.mark.parametrize("text", [EN, ZH, EN[:3000] + ZH[:3000]])
def test_chunks_respect_max_tokens_and_cover_the_text(text):
    chunks = chunk_text(text, ChunkingOptions(max_tokens=100, overlap=20))
    assert len(chunks) > 5
    assert all(c.tokens <= 100 for c in chunks)
    assert [c.position for c in chunks] == list(range(len(chunks)))
    joined = "".join(c.text for c in chunks)
    for probe in ("Sentence number 150", "第150句"):
        if probe in text:
            assert probe in joined


def test_chinese_splits_on_sentence_marks():
    chunks = chunk_text(ZH, ChunkingOptions(max_tokens=60, overlap=0))
    assert all(c.text.endswith("。") for c in chunks)


def test_overlap_repeats_the_tail_of_the_previous_chunk():
    chunks = chunk_text(EN, ChunkingOptions(max_tokens=80, overlap=20))
    for a, b in itertools.pairwise(chunks):
        last_sentence = a.text.rsplit(". ", 1)[-1]
        assert b.text.startswith(last_sentence.strip()[:20]) or last_sentence in b.text


def test_no_overlap_means_disjoint_chunks():
    chunks = chunk_text(EN, ChunkingOptions(max_tokens=80, overlap=0))
    assert sum(c.text.count("Sentence number") for c in chunks) == 200


def test_separator_splits_first_and_is_removed():
    chunks = chunk_text("alpha one\n***\nbeta two", ChunkingOptions(separator="\\n***\\n"))
    assert [c.text for c in chunks] == ["alpha one", "beta two"]
    assert decode_separator("\\n\\n") == "\n\n"


def test_unbreakable_text_is_cut_on_token_boundaries_without_breaking_characters():
    pieces = split_text("汉" * 500 + "a" * 500, "\n\n", 50, 0)
    assert all(count_tokens(p) <= 50 for p in pieces)
    assert "".join(pieces) == "汉" * 500 + "a" * 500


def test_parent_child_children_point_to_their_parent():
    text = "\n\n".join(
        f"Paragraph {p}.\n" + "\n".join(f"Line {p}.{i} about topic {p}." for i in range(30)) for p in range(3)
    )
    chunks = chunk_text(
        text, ChunkingOptions(mode="parent_child", max_tokens=400, child_max_tokens=40, child_overlap=0)
    )
    parents = {c.parent_position for c in chunks}
    assert len(parents) >= 3
    for c in chunks:
        assert c.tokens <= 40
        assert c.text in c.parent_text


def test_control_characters_are_cleaned():
    assert chunk_text("a\x00b\x07c")[0].text == "abc"


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(max_tokens=5),
        dict(max_tokens=10000),
        dict(overlap=600),
        dict(overlap=-1),
        dict(mode="qa"),
        dict(mode="parent_child", child_max_tokens=2000),
    ],
)
def test_bad_options_are_rejected(kwargs):
    with pytest.raises(InvalidInput):
        ChunkingOptions(**kwargs)

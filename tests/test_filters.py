import pytest

from kb.errors import InvalidInput
from kb.filters import matches, parse_filter


def test_plain_and_json_filters():
    assert parse_filter('{"lang": "zh"}') == {"lang": "zh"}
    assert parse_filter({"lang": "zh", "year": {"$gte": 2024}}) == {"$and": [{"lang": "zh"}, {"year": {"$gte": 2024}}]}
    assert parse_filter({"$or": [{"a": 1}]}) == {"a": 1}
    assert parse_filter(None) is None and parse_filter("") is None


@pytest.mark.parametrize(
    "bad,message",
    [
        ("{nope", "not valid JSON"),
        ('["a"]', "JSON object"),
        ({"a": {"$like": "x"}}, "unknown operator"),
        ({"a": {"$in": []}}, "non-empty list"),
        ({"a": {"$in": [1, "x"]}}, "same type"),
        ({"a": {"$gt": "x"}}, "numbers only"),
        ({"$and": "x"}, "non-empty list"),
        ({"$not": [{"a": 1}]}, "unknown operator"),
        ({"a": [1, 2]}, "one operator"),
    ],
)
def test_bad_filters_explain_themselves(bad, message):
    with pytest.raises(InvalidInput, match=message):
        parse_filter(bad)


@pytest.mark.parametrize(
    "where,meta,expected",
    [
        ({"lang": "zh"}, {"lang": "zh"}, True),
        ({"lang": "zh"}, {"lang": "en"}, False),
        ({"n": {"$eq": 3.5}}, {"n": 3}, False),
        ({"n": {"$eq": 3}}, {"n": 3.0}, True),
        ({"n": {"$gte": 3}}, {"n": 2}, False),
        ({"n": {"$lt": 3}}, {"n": "2"}, False),
        ({"n": {"$ne": 1}}, {}, True),
        ({"n": {"$in": [1, 2]}}, {"n": 2}, True),
        ({"n": {"$nin": [1, 2]}}, {"n": 2}, False),
        ({"flag": True}, {"flag": 1}, False),
        ({"$or": [{"a": 1}, {"b": 2}]}, {"b": 2}, True),
        ({"$and": [{"a": 1}, {"b": 2}]}, {"a": 1, "b": 3}, False),
    ],
)
def test_exact_recheck(where, meta, expected):
    assert matches(parse_filter(where), meta) is expected

import pytest

from kb.errors import InvalidInput
from kb.filters import parse_filter


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

import pytest

from kb.errors import InvalidInput
from kb.names import collection_name, normalize_name


def test_unicode_names_map_to_valid_distinct_collections():
    a, b = collection_name("产品手册"), collection_name("员工手册")
    assert a != b
    for name in (a, b, collection_name("HR FAQ")):
        assert 3 <= len(name) <= 63 and name[0].isalnum() and name[-1].isalnum()
        assert all(c.isascii() and (c.isalnum() or c in "-_.") for c in name)


def test_case_and_spacing_do_not_make_a_new_kb():
    assert collection_name("HR FAQ") == collection_name("  hr   faq ")
    assert normalize_name("  HR   FAQ ") == "HR FAQ"
    assert collection_name("HR FAQ").startswith("kb-hr-faq-")


@pytest.mark.parametrize("bad", ["", "   ", "x" * 65, "a\x00b", 5])
def test_bad_names_are_rejected_with_a_reason(bad):
    with pytest.raises(InvalidInput):
        normalize_name(bad)

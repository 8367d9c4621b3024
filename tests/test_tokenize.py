from kb.tokenize import KeywordTokenizer, index_text, word_terms


def test_chinese_becomes_character_bigrams():
    assert KeywordTokenizer()("高血压") == ["高血", "血压"]
    assert KeywordTokenizer()("我") == ["我"]


def test_english_is_casefolded_stemmed_and_stopwords_dropped():
    assert KeywordTokenizer()("The Running DOGS of the") == ["run", "dog"]
    assert KeywordTokenizer(stem=False, stopwords=False)("The Dogs") == ["the", "dogs"]


def test_mixed_text_keeps_both_scripts_and_numbers():
    tokens = KeywordTokenizer()("Chroma数据库 version 2024版")
    assert tokens == ["chroma", "数据", "据库", "version", "2024", "版"]


def test_fullwidth_forms_are_normalised():
    assert KeywordTokenizer()("ＡＢＣ１２") == KeywordTokenizer()("abc12")


def test_signature_changes_with_configuration():
    assert KeywordTokenizer().signature != KeywordTokenizer(stem=False).signature


def test_index_text_prefixes_title():
    assert index_text("T", "body") == "T\nbody"
    assert index_text("", "body") == "body"


def test_word_terms_leave_out_cjk_bigrams_and_repeats():
    tok = KeywordTokenizer()
    assert word_terms(tok("糖尿病 insulin 2型 insulin")) == ["insulin", "2"]

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genret.indexing import Page, UnitConfig, sentence_spans
from genret.indexing._units import split_page

PAGE = Page("p1", "Title", (
    "  First paragraph has five words.  ",
    "",
    "Second one. It has two sentences! Dr. Smith agrees, e.g. with J. Doe.",
    "third paragraph words here",
))


def _check_provenance(page: Page, unit) -> None:
    """The unit's text is exactly what its provenance points at."""
    if unit.start_paragraph == unit.end_paragraph:
        assert page.paragraphs[unit.start_paragraph - 1][unit.start_char:unit.end_char] == unit.text
    else:
        first = page.paragraphs[unit.start_paragraph - 1][unit.start_char:]
        assert unit.text.startswith(first.strip())
        last = page.paragraphs[unit.end_paragraph - 1][:unit.end_char]
        assert unit.text.endswith(last.strip())


def test_paragraph_units_skip_empty_and_trim():
    units = list(split_page(PAGE, UnitConfig(kind="paragraph")))
    assert [u.start_paragraph for u in units] == [1, 3, 4]
    assert units[0].text == "First paragraph has five words."
    assert (units[0].start_char, units[0].end_char) == (2, 33)
    for u in units:
        _check_provenance(PAGE, u)
        assert u.page_id == "p1" and u.title == "Title"


def test_sentence_units_respect_abbreviations():
    units = list(split_page(PAGE, UnitConfig(kind="sentence")))
    texts = [u.text for u in units if u.start_paragraph == 3]
    assert texts == ["Second one.", "It has two sentences!", "Dr. Smith agrees, e.g. with J. Doe."]
    for u in units:
        _check_provenance(PAGE, u)


def test_window_units_span_paragraphs_with_stride():
    units = list(split_page(PAGE, UnitConfig(kind="window", window_words=6, stride=3)))
    words = [w for p in PAGE.paragraphs for w in p.split()]
    assert units[0].text.split() == words[:6]
    assert units[1].text.split() == words[3:9]
    assert units[-1].text.split()[-1] == words[-1]
    spanning = [u for u in units if u.start_paragraph != u.end_paragraph]
    assert spanning, "some window must cross a paragraph boundary"
    for u in units:
        _check_provenance(PAGE, u)


def test_window_config_validation():
    with pytest.raises(ValueError):
        UnitConfig(kind="window", window_words=5, stride=6)
    assert UnitConfig(kind="window", window_words=5).params() == {"window_words": 5, "stride": 5}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from("ab .!?\nXY1é"), max_size=60), max_size=5),
       st.integers(1, 7), st.integers(1, 7))
def test_every_unit_kind_covers_all_words_with_exact_offsets(paragraphs, size, stride):
    page = Page("x", "t", tuple(paragraphs))
    all_words = [w for p in paragraphs for w in p.split()]
    for kind in ("paragraph", "sentence", "window"):
        cfg = UnitConfig(kind=kind, window_words=max(size, stride), stride=stride)
        units = list(split_page(page, cfg))
        for u in units:
            _check_provenance(page, u)
        if kind != "window":
            assert [w for u in units for w in u.text.split()] == all_words
        else:
            covered = set()
            for u in units:
                assert len(u.text.split()) <= cfg.window_words
            assert (not all_words) == (not units)
            # windows start every `stride` words: every word is in some window
            step = stride
            for i in range(0, len(all_words), step):
                covered.update(range(i, min(i + cfg.window_words, len(all_words))))
            assert covered == set(range(len(all_words)))


def test_sentence_spans_plain():
    text = "One. Two? Three! four. 5 is a number."
    assert [text[s:e] for s, e in sentence_spans(text)] == ["One.", "Two?", "Three! four.", "5 is a number."]

"""Tests of the stdlib demo corpus and its gold KILT question file."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest

from genret.eval import write_demo
from genret.eval._demo_task import DEMO_MODULES, MIN_QUESTIONS, build_questions, iter_stdlib_pages, load_templates


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    corpus_path, questions_path = write_demo(tmp_path_factory.mktemp("demo"))
    assert corpus_path.name == "corpus.jsonl" and questions_path.name == "questions.jsonl"
    return _read_jsonl(corpus_path), _read_jsonl(questions_path)


def test_corpus_is_deterministic() -> None:
    assert list(iter_stdlib_pages()) == list(iter_stdlib_pages())


def test_pages_have_unique_module_ids_and_non_empty_paragraphs(demo: tuple[list, list]) -> None:
    pages, _ = demo
    ids = [page["id"] for page in pages]
    assert len(ids) == len(set(ids))
    assert len(pages) >= 0.9 * len(DEMO_MODULES)
    assert set(ids) <= set(DEMO_MODULES)
    for page in pages:
        assert set(page) == {"id", "title", "text"}
        assert page["title"] == page["id"]
        assert page["text"], page["id"]
        for paragraph in page["text"]:
            assert isinstance(paragraph, str) and paragraph.strip() == paragraph and paragraph
            assert len(paragraph) <= 1200
            assert "\n" not in paragraph
            assert " at 0x" not in paragraph  # no per-process memory addresses


def test_corpus_file_matches_generator(demo: tuple[list, list]) -> None:
    pages, _ = demo
    assert pages == list(iter_stdlib_pages())


def test_questions_resolve_to_their_objects(demo: tuple[list, list]) -> None:
    pages, questions = demo
    assert len(questions) >= MIN_QUESTIONS
    by_id = {page["id"]: page for page in pages}
    templates = {t["id"]: t for t in load_templates()}
    assert len({q["id"] for q in questions}) == len(questions)
    for question in questions:
        assert question["meta"] == {"task": "generic"}  # a registered task: no fallback warning
        assert question["input"].strip()
        template = templates[question["id"]]
        [output] = question["output"]
        assert output["answer"] == template["answer"]
        [prov] = output["provenance"]
        page = by_id[prov["wikipedia_id"]]
        assert prov["title"] == page["title"] == template["module"]
        assert prov["start_paragraph_id"] == prov["end_paragraph_id"]
        assert 1 <= prov["start_paragraph_id"] <= len(page["text"])
        paragraph = page["text"][prov["start_paragraph_id"] - 1]
        if template["object"] is None:
            docstring = importlib.import_module(page["id"]).__doc__ or ""
            first = " ".join(docstring.strip().split("\n\n")[0].split())
            assert prov["start_paragraph_id"] == 1 and paragraph == first
        else:
            name = f"{page['id']}.{template['object']}"
            assert paragraph.startswith(name) and paragraph[len(name)] in "(:"
        start, end = prov["start_character"], prov["end_character"]
        assert 0 <= start < end <= len(paragraph)
        if output["answer"] in paragraph:
            assert paragraph[start:end] == output["answer"]
        else:
            assert (start, end) == (0, len(paragraph))


def test_every_shipped_template_resolves_here(demo: tuple[list, list]) -> None:
    _, questions = demo
    assert len(questions) == len(load_templates())


def test_templates_are_well_formed() -> None:
    templates = load_templates()
    assert len(templates) >= 36
    assert len({t["id"] for t in templates}) == len(templates)
    assert len({t["input"] for t in templates}) == len(templates)
    for template in templates:
        assert template["module"] in DEMO_MODULES
        assert template["object"] is None or isinstance(template["object"], str)


def test_missing_templates_are_dropped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    pages = [{"id": "json", "title": "json", "text": ["JSON intro.", "json.dumps(obj): Serialize obj."]}]
    templates = [
        {"id": "a", "input": "q?", "answer": "json.dumps", "module": "json", "object": "dumps"},
        {"id": "b", "input": "q?", "answer": "x", "module": "json", "object": "no_such_function"},
        {"id": "c", "input": "q?", "answer": "x", "module": "no_such_module", "object": None},
    ]
    with caplog.at_level("WARNING", logger="genret.eval._demo_task"):
        questions = build_questions(pages, templates)
    assert [q["id"] for q in questions] == ["a"]
    assert "no_such_function" in caplog.text and "no_such_module" in caplog.text


def test_write_demo_raises_when_too_few_questions_resolve(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import genret.eval._demo_task as demo_module
    from genret.core import GenretError

    monkeypatch.setattr(demo_module, "load_templates", lambda: load_templates()[:MIN_QUESTIONS - 1])
    with pytest.raises(GenretError):
        demo_module.write_demo(tmp_path)


def test_gathering_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    list(iter_stdlib_pages())
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""

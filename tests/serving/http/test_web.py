"""The web page (``GET /``) in headless Chromium, driven by Selenium, against a real uvicorn server: indexes and
retrievers filled from ``/v1/indexes``, search hits with provenance, matched n-grams in ``<mark>``, corpus text
that looks like markup shown as text (never run), streamed answers whose citations scroll to their passage, and
the API key field.

Debian's ``chromium`` and ``chromium-driver`` (``make setup`` installs them with apt when it can); skipped when
they are missing.  Nothing is downloaded: Selenium is given both paths.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import httpx
import pytest

from tests._openai_server import ServerThread
from tests.serving.helpers import ScriptedGenerator, generator_swapped, tiny_settings

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1200,900"]

pytestmark = [
    pytest.mark.skipif(not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
                       reason="needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver): "
                              "apt-get install chromium chromium-driver, or `make setup` as root"),
    pytest.mark.slow,
]
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the dev extra)")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

SCRIPTY_TITLE = '<img src=x onerror="window.__pwned=1">'
SCRIPTY_TEXT = "Bebop harmonies <script>window.__pwned=2</script> and <b>bold</b> solos & more."


@pytest.fixture(scope="module")
def web(tiny_index, tiny_lm_dir, tiny_chat_lm_dir, tmp_path_factory):
    """A real server over the tiny index and a BM25 index whose page looks like markup; ``(base URL, service)``."""
    from genret.indexing import IndexConfig, build_index
    from genret.serving import create_app
    from genret.serving.http._service import SearchService

    d = tmp_path_factory.mktemp("web")
    (d / "corpus.jsonl").write_text(json.dumps({"id": "p-x", "title": SCRIPTY_TITLE, "text": [SCRIPTY_TEXT]}) + "\n")
    build_index(d / "corpus.jsonl", d / "scripty", IndexConfig(components=("bm25",)), progress=False)
    settings = tiny_settings(tiny_index, tiny_lm_dir, tiny_chat_lm_dir).model_copy(
        update={"indexes": [tiny_index, d / "scripty"]})
    service = SearchService(settings)
    app = create_app(settings, service)
    keyed = create_app(settings.model_copy(update={"server": settings.server.model_copy(
        update={"api_keys": ["s3cret"]})}), service)
    try:
        with ServerThread(app) as server, ServerThread(keyed) as keyed_server:
            yield server.base_url, keyed_server.base_url, service
    finally:
        app.state.dispatcher.close()
        keyed.state.dispatcher.close()
        service.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _wait(driver, predicate, timeout=60):
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: predicate(d))


def _open(driver, base):
    driver.get(base + "/")
    _wait(driver, lambda d: len(Select(d.find_element(By.ID, "index")).options) > 0)


def _query(driver, index, retriever, text, task=""):
    Select(driver.find_element(By.ID, "index")).select_by_value(index)
    Select(driver.find_element(By.ID, "retriever")).select_by_value(retriever)
    Select(driver.find_element(By.ID, "task")).select_by_value(task)
    box = driver.find_element(By.ID, "q")
    box.clear()
    box.send_keys(text)


def _search(driver, index, retriever, text, task=""):
    _query(driver, index, retriever, text, task)
    driver.execute_script("document.getElementById('hits').replaceChildren()")
    driver.find_element(By.ID, "search").click()
    _wait(driver, lambda d: "hits from" in d.find_element(By.ID, "status").text)
    return driver.find_elements(By.CSS_SELECTOR, "#hits li.hit")


def _ask(driver, index, retriever, text, task=""):
    """Fill the form, press Ask, wait for the answer."""
    _query(driver, index, retriever, text, task)
    driver.find_element(By.ID, "ask").click()
    _wait(driver, lambda d: d.find_element(By.ID, "status").text.startswith("answered"))


def test_search_shows_hits_with_provenance(web, browser, tiny_index):
    base, _, _ = web
    _open(browser, base)
    assert [o.get_attribute("value") for o in Select(browser.find_element(By.ID, "index")).options] == [
        tiny_index.name, "scripty"]
    assert {o.get_attribute("value") for o in Select(browser.find_element(By.ID, "retriever")).options} == {
        "dense", "bm25", "generative", "hybrid"}
    assert "qa" in [o.get_attribute("value") for o in Select(browser.find_element(By.ID, "task")).options]
    hits = _search(browser, tiny_index.name, "dense", "Who created the Python programming language?")
    assert len(hits) == 10
    first = hits[0]
    assert first.find_element(By.CSS_SELECTOR, ".title").text == "Python (programming language)"
    assert first.find_element(By.CSS_SELECTOR, ".prov").text.startswith("p-python ¶1")
    assert first.find_element(By.CSS_SELECTOR, ".score").text.startswith("score ")
    assert first.find_element(By.CSS_SELECTOR, ".text").text.startswith("Python is a high-level")


def _bare(html: str) -> str:
    """``html`` with its marks' attributes (strength, weight, tooltip) left out."""
    return re.sub(r"<mark [^>]*>", "<mark>", html)


def test_matched_ngrams_are_highlighted(web, browser, tiny_index):
    base, _, _ = web
    _open(browser, base)
    # the page's highlighter: every occurrence in <mark>, the text escaped
    html = browser.execute_script("const p = document.createElement('p');"
                                  "p.append(highlighted('a <b> and <b>, x', [[' <b>', 1.5], ['x', 1]]));"
                                  "return p.innerHTML")
    assert _bare(html) == "a <mark>&lt;b&gt;</mark> and <mark>&lt;b&gt;</mark>, x"
    title = browser.execute_script("const p = document.createElement('p');"
                                   "p.append(highlighted('Mount Everest', [['title: Mount Ev…', 2]], true));"
                                   "p.append(' / ', highlighted('Mount Everest', [['title: Mount Ev…', 2]], false));"
                                   "return p.innerHTML")
    assert _bare(title) == "<mark>Mount Ev</mark>erest / Mount Everest"
    query = "When did the oil embargo start?"
    hits = _search(browser, tiny_index.name, "generative", query, task="qa")
    api = httpx.post(base + "/v1/search", json={"query": query, "retriever": "generative", "task": "qa"}).json()
    assert len(hits) == len(api["hits"]) > 0
    for li, hit in zip(hits, api["hits"]):
        grams = {g.strip() for g, _ in hit["matched"] if len(g.strip()) >= 2 and not g.startswith("title: ")}
        marks = [m.text for m in li.find_elements(By.CSS_SELECTOR, ".text mark")]
        assert bool(marks) == any(g in hit["text"] for g in grams), (marks, grams)
        assert all(any(m in g or g in m for g in grams) for m in marks)
        assert li.find_element(By.CSS_SELECTOR, ".grams").text.startswith("matched:")


def test_corpus_text_that_looks_like_markup_stays_text(web, browser):
    base, _, _ = web
    _open(browser, base)
    (hit,) = _search(browser, "scripty", "bm25", "bebop harmonies solos")
    assert hit.find_element(By.CSS_SELECTOR, ".title").text == SCRIPTY_TITLE
    assert hit.find_element(By.CSS_SELECTOR, ".text").text == SCRIPTY_TEXT
    inner = hit.get_attribute("innerHTML")
    assert "&lt;script&gt;" in inner and "&lt;img" in inner
    assert not browser.find_elements(By.CSS_SELECTOR, "#hits script, #hits img, #hits b")
    assert browser.execute_script("return window.__pwned === undefined")


def test_ask_streams_an_answer_with_passages(web, browser, tiny_index):
    base, _, _ = web
    _open(browser, base)
    _ask(browser, tiny_index.name, "bm25", "Who created the Python programming language?", task="qa")
    assert browser.find_element(By.ID, "answer").is_displayed()
    assert browser.find_element(By.ID, "answer-text").text  # the model's words, or that it gave none
    passages = browser.find_elements(By.CSS_SELECTOR, "#hits li.hit")
    numbers = [p.find_element(By.CSS_SELECTOR, ".num").text for p in passages]  # those the prompt budget kept
    assert numbers and numbers == [f"[{i}]" for i in range(1, len(numbers) + 1)]
    assert passages[0].find_element(By.CSS_SELECTOR, ".prov").text.startswith("p-python")


def test_citations_link_to_their_passage(web, browser, tiny_index):
    base, _, service = web
    _open(browser, base)
    with generator_swapped(service, ScriptedGenerator("Guido van Rossum created it [2].")):
        _ask(browser, tiny_index.name, "bm25", "Who created the Python programming language?", task="generic")
    links = browser.find_elements(By.CSS_SELECTOR, "#answer-text a.cite")
    assert [a.text for a in links] == ["[2]"]
    assert browser.find_element(By.ID, "answer-text").text == "Guido van Rossum created it [2]."
    listed = browser.find_elements(By.CSS_SELECTOR, "#citations li")
    assert len(listed) == 1 and listed[0].text.startswith("[2] ")
    links[0].click()
    target = browser.find_element(By.ID, "hit-2")
    _wait(browser, lambda d: "flash" in target.get_attribute("class"))
    assert not browser.find_elements(By.CSS_SELECTOR, "#hit-1.flash")


def test_api_key_field(web, browser, tiny_index):
    _, keyed, _ = web
    browser.get(keyed + "/")
    _wait(browser, lambda d: "401" in d.find_element(By.ID, "status").text)
    assert "API key" in browser.find_element(By.ID, "status").text
    key = browser.find_element(By.ID, "key")
    key.send_keys("s3cret")
    browser.execute_script("arguments[0].dispatchEvent(new Event('change'))", key)
    _wait(browser, lambda d: len(Select(d.find_element(By.ID, "index")).options) > 0)
    hits = _search(browser, tiny_index.name, "bm25", "highest mountain")
    assert hits[0].find_element(By.CSS_SELECTOR, ".title").text == "Mount Everest"


def test_no_console_errors(browser):
    """The page's own script and style pass its Content-Security-Policy; nothing failed to load."""
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and "401" not in e["message"]]
    assert errors == [], errors


def _marks(hit, where=".text"):
    return [m.text for m in hit.find_elements(By.CSS_SELECTOR, f"{where} mark")]


def test_k_control_and_whole_word_query_highlighting(web, browser, tiny_index):
    """BM25 and dense hits mark the query's words (whole words, any case, stopwords left); k sets the count."""
    base, _, _ = web
    _open(browser, base)
    k = browser.find_element(By.ID, "k")
    k.clear()
    k.send_keys("3")
    hits = _search(browser, tiny_index.name, "dense", "Where did jazz music originate?")
    assert len(hits) == 3 and hits[0].find_element(By.CSS_SELECTOR, ".title").text == "Jazz"
    marks = {m.lower() for h in hits for m in _marks(h)}
    assert "jazz" in marks and marks <= {"jazz", "music", "originate"}  # "where", "did" are stopwords
    # BM25 matches "solos" for "solo" (stemming), but the page marks whole words only: not "solo" inside "solos"
    (hit,) = _search(browser, "scripty", "bm25", "solo bold")
    assert _marks(hit) == ["bold"]
    html = browser.execute_script("const p = document.createElement('p');"
                                  "p.append(highlighted('Py 1999 Pyc. was py', [['Py', 1.0]], false));"
                                  "return p.innerHTML")
    assert _bare(html) == "<mark>Py</mark> 1999 Pyc. was py"


def test_hybrid_hits_show_each_members_rank(web, browser, tiny_index):
    base, _, _ = web
    _open(browser, base)
    hits = _search(browser, tiny_index.name, "hybrid", "highest mountain above sea level")
    api = httpx.post(base + "/v1/search", json={"query": "highest mountain above sea level", "retriever": "hybrid",
                                                "index": tiny_index.name, "k": 10}).json()
    first = hits[0].find_element(By.CSS_SELECTOR, ".members").text
    assert first == "ranks: " + " · ".join(f"{m} #{r}" for m, r in api["hits"][0]["member_ranks"])
    assert "bm25 #" in first and "dense #" in first


def test_the_query_lives_in_the_url(web, browser, tiny_index):
    base, _, _ = web
    _open(browser, base)
    _search(browser, tiny_index.name, "bm25", "oil embargo")
    url = browser.current_url
    assert "q=oil+embargo" in url and "retriever=bm25" in url and "mode=search" in url
    browser.get(base + f"/?q=highest+mountain&index={tiny_index.name}&retriever=dense&k=2&mode=search")
    _wait(browser, lambda d: "hits from dense" in d.find_element(By.ID, "status").text)
    hits = browser.find_elements(By.CSS_SELECTOR, "#hits li.hit")
    assert len(hits) == 2 and hits[0].find_element(By.CSS_SELECTOR, ".title").text == "Mount Everest"
    assert browser.find_element(By.ID, "q").get_attribute("value") == "highest mountain"


def test_a_truncated_answer_is_marked(web, browser, tiny_index):
    base, _, service = web
    _open(browser, base)
    with generator_swapped(service, ScriptedGenerator("word " * 500)):
        _ask(browser, tiny_index.name, "bm25", "Who created the Python programming language?", task="generic")
    assert browser.find_element(By.ID, "truncated").is_displayed()
    assert "cut at the limit" in browser.find_element(By.ID, "status").text
    with generator_swapped(service, ScriptedGenerator("Guido van Rossum [1].")):
        browser.find_element(By.ID, "ask").click()
        _wait(browser, lambda d: d.find_element(By.ID, "status").text.startswith("answered")
              and "Guido" in d.find_element(By.ID, "answer-text").text)
    assert not browser.find_element(By.ID, "truncated").is_displayed()


# ---- issue 29 (6): weights, the match list, the answer's span, one row of controls ------------------------------
_HIT = {"rank": 1, "score": 573.5, "text": "The 1973 oil crisis began when the members of OAPEC proclaimed an oil "
        "embargo; the embargo was lifted in March 1974.", "member_ranks": [],
        "provenance": {"wikipedia_id": "p-oil", "title": "1973 oil crisis", "start_paragraph_id": 1,
                       "end_paragraph_id": 1, "start_character": 0, "end_character": 110},
        "matched": [["oil embargo", 386.0], ["embargo", 26.7], ["proclaimed", 47.4], ["oil", 0.87], ["1", 2.0],
                    ["9", 3.7], ["O", 4.8], ["sh", 4.96], ["Export", 2.67], ["the", 3.1], [" of the", 2.2],
                    ["title: 1973 oil", 5.0]]}


def _render(browser, hits):
    browser.execute_script("renderHits(arguments[0], false, 'who proclaimed the oil embargo')", hits)
    return browser.find_elements(By.CSS_SELECTOR, "#hits li.hit")


def test_highlight_strength_follows_the_key_weight_with_the_weight_shown(web, browser):
    base, _, _ = web
    _open(browser, base)
    (hit,) = _render(browser, [_HIT])
    marks = {m.text: m for m in hit.find_elements(By.CSS_SELECTOR, ".text mark")}
    assert {"oil embargo", "proclaimed", "oil", "embargo"} <= set(marks)

    def level(text):
        return int(marks[text].get_attribute("data-level"))

    assert level("oil embargo") > level("proclaimed") > level("oil") >= 1  # 386 > 47.4 > 0.87
    assert level("oil embargo") > level("embargo")
    colours = browser.execute_script("return arguments[0].map(m => getComputedStyle(m).backgroundColor)",
                                     [marks["oil embargo"], marks["oil"]])
    assert colours[0] != colours[1]  # a different strength on screen, not one yellow for all
    assert "386" in marks["oil embargo"].get_attribute("title") and "0.87" in marks["oil"].get_attribute("title")
    legend = browser.find_element(By.ID, "legend")
    assert legend.is_displayed() and "weight" in legend.text
    assert len(legend.find_elements(By.CSS_SELECTOR, "mark")) >= 3  # one swatch per strength


def test_the_match_list_leaves_out_subword_fragments_and_stopwords(web, browser, tiny_index):
    base, _, _ = web
    _open(browser, base)
    (hit,) = _render(browser, [_HIT])
    listed = [g.get_attribute("data-key") for g in hit.find_elements(By.CSS_SELECTOR, ".grams .gram")]
    assert listed[:3] == ["oil embargo", "proclaimed", "embargo"]  # strongest first
    assert set(listed) == {"oil embargo", "proclaimed", "embargo", "oil", "title: 1973 oil"}
    for junk in ("1", "9", "O", "sh", "Export", "the", "of the"):  # pieces of words, or stopwords only
        assert junk not in listed and f"“{junk}”" not in hit.find_element(By.CSS_SELECTOR, ".grams").text
    # a real generative search lists only keys found as whole words in their hit
    hits = _search(browser, tiny_index.name, "generative", "When did the oil embargo start?", task="qa")
    for li in hits:
        text = li.find_element(By.CSS_SELECTOR, ".text").text + " " + li.find_element(By.CSS_SELECTOR, ".title").text
        for key in [g.get_attribute("data-key") for g in li.find_elements(By.CSS_SELECTOR, ".grams .gram")]:
            key = key.removeprefix("title: ")
            assert re.search(rf"(?<!\w){re.escape(key)}(?!\w)", text), (key, text)


def test_the_cited_span_of_a_short_answer_is_marked_in_its_passage(web, browser, tiny_index):
    base, _, service = web
    _open(browser, base)
    with generator_swapped(service, ScriptedGenerator("Guido van Rossum")):
        _ask(browser, tiny_index.name, "bm25", "Who created the Python programming language?", task="qa")
        api = httpx.post(base + "/v1/rag", json={"query": "Who created the Python programming language?",
                                                 "index": tiny_index.name, "retriever": "bm25", "task": "qa"},
                         timeout=60).json()
    span = api["span"]
    assert api["answer"] == "Guido van Rossum" and span is not None
    passage = browser.find_element(By.ID, f"hit-{span['number']}")
    (marked,) = passage.find_elements(By.CSS_SELECTOR, ".text mark.answer")
    assert marked.text == api["passages"][span["number"] - 1]["text"][span["start"]:span["end"]] == "Guido van Rossum"
    assert "answer" in marked.get_attribute("title")
    assert not browser.find_elements(By.CSS_SELECTOR, f"#hits li.hit:not(#hit-{span['number']}) mark.answer")


def test_the_controls_fit_one_row_at_1280_px(web, browser):
    base, _, _ = web
    browser.set_window_size(1280, 900)
    try:
        _open(browser, base)
        Select(browser.find_element(By.ID, "retriever")).select_by_value("hybrid")  # the longest option label
        assert browser.execute_script("return window.innerWidth") >= 1264
        boxes = browser.execute_script(
            "return ['index', 'retriever', 'task', 'k', 'search', 'ask'].map(id => {"
            "const r = document.getElementById(id).getBoundingClientRect(); return [id, r.top, r.bottom]; })")
        top, bottom = max(b[1] for b in boxes), min(b[2] for b in boxes)
        assert top < bottom, boxes  # one horizontal line runs through every control
    finally:
        browser.set_window_size(1200, 900)

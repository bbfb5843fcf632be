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


def test_matched_ngrams_are_highlighted(web, browser, tiny_index):
    base, _, _ = web
    _open(browser, base)
    # the page's highlighter: every occurrence in <mark>, the text escaped
    html = browser.execute_script("const p = document.createElement('p');"
                                  "p.append(highlighted('a <b> and <b>, x', [[' <b>', 1.5], ['x', 1]]));"
                                  "return p.innerHTML")
    assert html == "a <mark>&lt;b&gt;</mark> and <mark>&lt;b&gt;</mark>, x"
    title = browser.execute_script("const p = document.createElement('p');"
                                   "p.append(highlighted('Mount Everest', [['title: Mount Ev…', 2]], true));"
                                   "p.append(' / ', highlighted('Mount Everest', [['title: Mount Ev…', 2]], false));"
                                   "return p.innerHTML")
    assert title == "<mark>Mount Ev</mark>erest / Mount Everest"
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
    _query(browser, tiny_index.name, "bm25", "Who created the Python programming language?", task="qa")
    browser.find_element(By.ID, "ask").click()
    _wait(browser, lambda d: d.find_element(By.ID, "status").text.startswith("answered"))
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
        _query(browser, tiny_index.name, "bm25", "Who created the Python programming language?", task="generic")
        browser.find_element(By.ID, "ask").click()
        _wait(browser, lambda d: d.find_element(By.ID, "status").text.startswith("answered"))
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
                                  "p.append(highlighted('In 1999 Inc. was in', [['In', 1.0]], false));"
                                  "return p.innerHTML")
    assert html == "<mark>In</mark> 1999 Inc. was in"


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
        _query(browser, tiny_index.name, "bm25", "Who created the Python programming language?", task="generic")
        browser.find_element(By.ID, "ask").click()
        _wait(browser, lambda d: d.find_element(By.ID, "status").text.startswith("answered"))
    assert browser.find_element(By.ID, "truncated").is_displayed()
    assert "cut at the limit" in browser.find_element(By.ID, "status").text
    with generator_swapped(service, ScriptedGenerator("Guido van Rossum [1].")):
        browser.find_element(By.ID, "ask").click()
        _wait(browser, lambda d: d.find_element(By.ID, "status").text.startswith("answered")
              and "Guido" in d.find_element(By.ID, "answer-text").text)
    assert not browser.find_element(By.ID, "truncated").is_displayed()

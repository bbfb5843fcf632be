"""index → search → serve → eval on the tiny corpus, through the public entry points."""

import json

from fastapi.testclient import TestClient

from genret.serving import Settings, create_app, main


def test_index_search_serve_eval(data_dir, tmp_path, capsys):
    index = tmp_path / "kilt-index"
    assert main(["index", str(data_dir / "kilt_ks.jsonl.gz"), "--out", str(index), "--quiet",
                 "--device", "cpu"]) == 0
    assert "5 pages -> 10 paragraph units" in capsys.readouterr().out

    assert main(["search", str(index), "Who created Python?", "-k", "2", "--json", "--device", "cpu"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["provenance"]["wikipedia_id"] == "p-python" and len(hits) == 2

    settings = Settings(indexes=[index], retrieval={"dense": {"device": "cpu"}})
    with TestClient(create_app(settings)) as client:
        r = client.post("/v1/search", json={"query": "first ascent of Everest", "k": 1})
        assert r.status_code == 200
        assert r.json()["hits"][0]["provenance"]["start_paragraph_id"] == 2

    preds = tmp_path / "preds.jsonl"
    assert main(["eval", str(index), str(data_dir / "questions.jsonl"), "-k", "5", "--ks", "1,5",
                 "--out", str(preds), "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["records"] == 5 and report["retriever"] == "dense"
    page, passage = report["levels"]["page"], report["levels"]["passage"]
    assert page["Rprec"] >= 0.8 and page["recall@5"] == 1.0
    assert passage["Rprec"] <= page["Rprec"]
    lines = [json.loads(x) for x in preds.read_text().splitlines()]
    assert [x["id"] for x in lines] == ["q1", "q2", "q3", "q4", "q5"]
    prov = lines[0]["output"][0]["provenance"]
    assert len(prov) == 5 and prov[0]["score"] >= prov[1]["score"]

    # score the written predictions as any other system's guess file
    assert main(["eval", "score", str(preds), str(data_dir / "questions.jsonl"), "--ks", "1,5"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert abs(scored["retrieval"]["Rprec"] - page["Rprec"]) < 1e-12

"""Suites: tasks × retrievers → one table (terminal/Markdown/JSON) and a recall plot per task."""

import json

import pytest

from genret.core import InputError
from genret.eval import load_suite, run_suite
from genret.serving import main


def _suite_file(tmp_path, tiny_index, data_dir, extra=""):
    f = tmp_path / "suite.toml"
    f.write_text(f'''name = "tiny"
k = 5
ks = [1, 2, 5]
retrievers = ["dense"]
{extra}
[[tasks]]
name = "tiny-qa"
index = "{tiny_index}"
file = "{data_dir / 'questions.jsonl'}"

[[tasks]]
name = "tiny-qa-passages"
index = "{tiny_index}"
file = "{data_dir / 'questions.jsonl'}"
levels = ["passage"]
''')
    return f


def test_suite_writes_table_json_predictions_and_plots(tmp_path, tiny_index, data_dir):
    result = run_suite(_suite_file(tmp_path, tiny_index, data_dir), tmp_path / "out", progress=False)
    rows = result["rows"]
    assert [(r["task"], r["level"]) for r in rows] == [("tiny-qa", "page"), ("tiny-qa", "passage"),
                                                      ("tiny-qa-passages", "passage")]
    assert rows[1]["metrics"] == rows[2]["metrics"]
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| task | retriever | level | R-Prec | R@2 | R@5 | AiC@1 | AiC@2 | AiC@5 |" in md
    assert json.loads((tmp_path / "out" / "results.json").read_text())["rows"] == rows
    png = (tmp_path / "out" / "recall_tiny-qa.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    preds = (tmp_path / "out" / "predictions" / "tiny-qa.dense.jsonl").read_text().splitlines()
    assert len(preds) == 5


def test_suite_cli_prints_the_table(tmp_path, tiny_index, data_dir, capsys):
    assert main(["eval", "suite", str(_suite_file(tmp_path, tiny_index, data_dir)), "--out",
                 str(tmp_path / "o"), "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("| task | retriever | level |")


BAD_TASK = '[[tasks]]\nname = "bad name!"\nindex = "x"\nfile = "y"'


@pytest.mark.parametrize("extra, field", [('levels = ["chapter"]', "levels"), (BAD_TASK, "tasks.0.name"),
                                          ('surprise = 1', "surprise")])
def test_bad_suite_files(tmp_path, tiny_index, data_dir, extra, field):
    with pytest.raises(InputError, match=f"field '{field}"):
        load_suite(_suite_file(tmp_path, tiny_index, data_dir, extra))

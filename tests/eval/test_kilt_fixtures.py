"""The official KILT test files give exactly the values KILT's own unit tests assert (expected.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from genret.eval import downstream_scores, read_kilt, retrieval_scores, score
from genret.eval._kilt_io import align

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "minikilt" / "kilt_fixtures"
TOLERANCE = 1e-6


def _expected() -> dict[str, Any]:
    path = FIXTURES / "expected.json"
    if not path.is_file():
        return {"retrieval": [], "downstream": []}
    return json.loads(path.read_text(encoding="utf-8"))


def _retrieval_cases() -> list[Any]:
    return [pytest.param(case, keys, id=f"{case['guess']}-{'+'.join(keys)}")
            for case in _expected()["retrieval"] for keys in case["rank_keys_variants"]]


def _downstream_cases() -> list[Any]:
    return [pytest.param(case, id=f"{case['guess']}-vs-{case['gold']}") for case in _expected()["downstream"]]


@pytest.fixture(autouse=True)
def _need_fixtures() -> None:
    if not (FIXTURES / "expected.json").is_file():
        pytest.skip(f"KILT fixtures not found at {FIXTURES}")


@pytest.mark.parametrize(("case", "rank_keys"), _retrieval_cases())
def test_retrieval_matches_kilt(case: dict[str, Any], rank_keys: list[str]) -> None:
    pairs = align(read_kilt(FIXTURES / case["guess"]), read_kilt(FIXTURES / case["gold"]))
    result = retrieval_scores(pairs, ks=case["ks"], rank_keys=rank_keys)
    for name, value in case["expected"].items():
        assert result[name] == pytest.approx(value, abs=TOLERANCE), name
    assert "recall@1" not in result and "success_rate@1" not in result


@pytest.mark.parametrize(("case", "rank_keys"), _retrieval_cases())
def test_retrieval_via_score(case: dict[str, Any], rank_keys: list[str]) -> None:
    result = score(FIXTURES / case["guess"], FIXTURES / case["gold"], ks=case["ks"], rank_keys=rank_keys)
    for name, value in case["expected"].items():
        assert result["retrieval"][name] == pytest.approx(value, abs=TOLERANCE), name
    assert result["count"] == 1


@pytest.mark.parametrize("case", _downstream_cases())
def test_downstream_matches_kilt(case: dict[str, Any]) -> None:
    pairs = align(read_kilt(FIXTURES / case["guess"]), read_kilt(FIXTURES / case["gold"]))
    for rouge_impl in ("fast", "package"):
        result = downstream_scores(pairs, rouge_impl=rouge_impl)
        for section, values in case["expected"].items():
            for name, value in values.items():
                assert result[section][name] == pytest.approx(value, abs=TOLERANCE), \
                    (rouge_impl, section, name)


@pytest.mark.parametrize("rank_keys", [("wikipedia_id",), ("wikipedia_id", "start_paragraph_id")])
@pytest.mark.parametrize("case", _downstream_cases())
def test_downstream_via_score(case: dict[str, Any], rank_keys: tuple[str, ...]) -> None:
    result = score(FIXTURES / case["guess"], FIXTURES / case["gold"], rank_keys=rank_keys)
    for section in ("kilt", "downstream"):  # the KILT gate is page level whatever the rank keys
        for name, value in case["expected"][section].items():
            assert result[section][name] == pytest.approx(value, abs=TOLERANCE), (section, name)
    if rank_keys == ("wikipedia_id",):
        for name, value in case["expected"].get("retrieval", {}).items():
            assert result["retrieval"][name] == pytest.approx(value, abs=TOLERANCE), name


def test_identical_strings_rouge_is_kilts_constant() -> None:
    pairs = align(read_kilt(FIXTURES / "gold1.jsonl"), read_kilt(FIXTURES / "gold1.jsonl"))
    assert downstream_scores(pairs)["downstream"]["rougel"] == 0.999999995


def test_pretty_printed_guess_reads_like_jsonl() -> None:
    assert read_kilt(FIXTURES / "guess3_1.json") == read_kilt(FIXTURES / "guess3_1.jsonl")

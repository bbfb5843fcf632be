"""KILT retrieval metrics: R-Precision, precision/recall/success@k and the in-context metrics.

A re-implementation of facebookresearch/KILT ``kilt/eval_retrieval.py`` that gives the same numbers
(checked against KILT's own test fixtures and, for the evidence-set rank, against a literal
transcription of KILT's algorithm on random inputs):

* an id is ``"+".join(str(provenance[key]).strip() for key in rank_keys)``; provenance items missing
  a rank key are skipped and ids are de-duplicated in rank order (``_get_ids_list``);
* R-Precision is the maximum over the gold outputs of ``|top-R guess ids in the output's ids| / R``;
* for P/R/success@k every gold evidence set (one gold output; here items missing a key are *not*
  skipped, only the present keys are joined) takes one position in the rank, the position of its
  last retrieved item. KILT builds that rank with ``list.remove`` of placeholders (quadratic); this
  module reaches the same rank in linear time by tombstoning the dropped positions;
* ``recall@k`` and ``success_rate@k`` are reported for ``k > 1`` only, as KILT does; ``recall@1``
  (computed the same way) is available with ``include_recall_at_1=True``.

Differences, all on inputs where the script crashes or misbehaves: a gold record without ``input``
scores ``entity_in_input`` 0 (KILT HEAD raises ``KeyError``); duplicate ``ks`` are counted once (KILT
adds them twice); a gold record without outputs raises :class:`InputError`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from genret.core import GenretError, InputError

from ._downstream_metrics import gold_answers, gold_titles, normalize_answer
from ._kilt_io import gc_paused

__all__ = ["DEFAULT_KS", "PAGE_KEYS", "answer_and_ent_in_context_at_k", "answer_in_context_at_k",
           "entity_in_context_at_k", "entity_in_input", "evidence_sets", "get_rank", "ids_list",
           "precision_at_k", "recall_at_k", "retrieval_scores", "rprecision", "rprecision_of_ids",
           "success_rate_at_k"]

Record = Mapping[str, Any]
RankKeys = Sequence[str] | str

DEFAULT_KS: tuple[int, ...] = (1, 5, 10, 20)
PAGE_KEYS: tuple[str, ...] = ("wikipedia_id",)

_FALSE, _TRUE = 0, 1  # rank codes; a placeholder of evidence set i is -1 - i, a dropped one None


def check_rank_keys(rank_keys: RankKeys) -> tuple[str, ...]:
    keys = tuple(rank_keys.split(",")) if isinstance(rank_keys, str) else tuple(rank_keys)
    if not keys or not all(isinstance(key, str) and key for key in keys):
        raise GenretError(f"rank_keys must be one or more non-empty field names, got {rank_keys!r}")
    return keys


def check_ks(ks: Iterable[int]) -> list[int]:
    values = sorted({int(k) for k in ks})
    if not values or values[0] < 1:
        raise GenretError(f"ks must be one or more positive integers, got {list(ks)!r}")
    return values


# ------------------------------------------------------------------------------------------------ ids
def _output_ids(output: Record, keys: tuple[str, ...]) -> list[str]:
    """KILT ids of one output's provenance: items missing a key skipped, duplicates dropped in order."""
    if "provenance" not in output:
        return []
    provenance = output["provenance"]
    if len(keys) == 1:
        key = keys[0]
        ids = [str(item[key]).strip() for item in provenance if key in item]
    elif len(keys) == 2:  # the common passage level, spelled out: twice as fast as the general join
        first, second = keys
        ids = [f"{str(item[first]).strip()}+{str(item[second]).strip()}"
               for item in provenance if first in item and second in item]
    else:
        ids = ["+".join([str(item[key]).strip() for key in keys])
               for item in provenance if all(key in item for key in keys)]
    return list(dict.fromkeys(ids))


def ids_list(record: Record, rank_keys: RankKeys = PAGE_KEYS) -> list[list[str]]:
    """KILT's ``_get_ids_list``: one de-duplicated id list per output (empty without provenance)."""
    keys = check_rank_keys(rank_keys)
    return [_output_ids(output, keys) for output in record["output"]]


def rprecision_of_ids(guess_ids: Sequence[str], gold_ids_list: Sequence[Sequence[str]]) -> float:
    """R-Precision of de-duplicated guess ids against each gold output's ids (``ids_list``), maximised over
    the outputs; only the first ``max(len(ids))`` guess ids are read.  ``ValueError`` without gold outputs."""
    best: float = 0
    if not gold_ids_list:
        raise ValueError("the gold record has no output")
    for gold_ids in gold_ids_list:
        r = len(gold_ids)
        if r == 0:
            continue
        members = set(gold_ids)
        value = sum(1 for guess_id in guess_ids[:r] if guess_id in members) / r
        if value > best:
            best = value
    return best


def rprecision(guess: Record, gold: Record, rank_keys: RankKeys = PAGE_KEYS) -> float:
    """R-Precision of the guess's single output, maximised over the gold outputs (KILT ``rprecision``)."""
    keys = check_rank_keys(rank_keys)
    try:
        return rprecision_of_ids(_output_ids(guess["output"][0], keys),
                           [_output_ids(output, keys) for output in gold["output"]])
    except ValueError as exc:
        raise InputError(f"gold id {gold.get('id')!r}: {exc}", field="output") from exc


# ----------------------------------------------------------------------------------- evidence-set rank
def evidence_sets(gold: Record, rank_keys: RankKeys = PAGE_KEYS) -> list[set[str]]:
    """Distinct evidence sets of a gold record, in output order (KILT ``get_rank`` step 1)."""
    keys = check_rank_keys(rank_keys)
    sets: list[set[str]] = []
    seen: set[frozenset[str]] = set()
    for output in gold["output"]:
        if "provenance" not in output:
            continue
        current = {"+".join([str(item[key]).strip() for key in keys if key in item])
                   for item in output["provenance"]}
        frozen = frozenset(current)
        if frozen not in seen:
            seen.add(frozen)
            sets.append(current)
    return sets


def _rank_codes(guess_ids: list[str], sets: list[set[str]]) -> list[int]:
    """KILT's evidence-set rank in O(len(guess_ids) + total set size).

    KILT appends, for each guess id and each set holding it (in set order), ``True`` when the set is
    now complete or a placeholder for the set, after removing the set's earlier placeholder; an id in
    no set appends ``False``. Removing an element from a list only closes the gap, so marking the
    removed placeholder as dropped and filtering at the end yields the same list. Codes: 1 = True,
    0 = False, ``-1 - i`` = placeholder of set ``i``.
    """
    where: dict[str, list[int]] = {}
    for index, evidence in enumerate(sets):
        for evidence_id in evidence:
            where.setdefault(evidence_id, []).append(index)
    remaining = [len(evidence) for evidence in sets]
    placeholder_at = [-1] * len(sets)
    entries: list[int | None] = []
    append = entries.append
    for guess_id in guess_ids:
        indices = where.get(guess_id)
        if indices is None:
            append(_FALSE)
            continue
        for index in indices:
            position = placeholder_at[index]
            if position >= 0:
                entries[position] = None
            remaining[index] -= 1
            if remaining[index] == 0:
                placeholder_at[index] = -1
                append(_TRUE)
            else:
                placeholder_at[index] = len(entries)
                append(-1 - index)
    return [entry for entry in entries if entry is not None]


def _true_positions(guess_ids: list[str], sets: list[set[str]], limit: int) -> list[int]:
    """Positions (< limit) of the ``True`` entries of :func:`_rank_codes`'s rank, touching only the
    guess ids that belong to an evidence set.

    Every other id contributes one ``False``; an id in ``s`` sets contributes ``s`` entries. So an
    entry's index among all appended entries is known without building the list, and its final
    position is that index minus the number of earlier entries dropped (placeholders replaced later).
    """
    where: dict[str, list[int]] = {}
    for index, evidence in enumerate(sets):
        for evidence_id in evidence:
            where.setdefault(evidence_id, []).append(index)
    if where.keys().isdisjoint(guess_ids):
        return []
    hits = [(position, where[guess_id]) for position, guess_id in enumerate(guess_ids) if guess_id in where]
    remaining = [len(evidence) for evidence in sets]
    placeholder_at = [-1] * len(sets)
    entries: list[int] = []  # appended index of each entry from a hit id, in append order
    kinds: list[int] = []  # 1 = True, 0 = placeholder, -1 = dropped placeholder
    extra = 0  # entries appended so far beyond one per guess id
    for position, indices in hits:
        appended = position + extra
        for index in indices:
            slot = placeholder_at[index]
            if slot >= 0:
                kinds[slot] = -1
            remaining[index] -= 1
            entries.append(appended)
            if remaining[index] == 0:
                placeholder_at[index] = -1
                kinds.append(1)
            else:
                placeholder_at[index] = len(kinds)
                kinds.append(0)
            appended += 1
        extra += len(indices) - 1
    positions: list[int] = []
    dropped = 0
    for appended, kind in zip(entries, kinds, strict=True):
        if kind < 0:
            dropped += 1
        elif kind == 1:
            final = appended - dropped
            if final >= limit:
                break
            positions.append(final)
    return positions


def get_rank(guess: Record, gold: Record, rank_keys: RankKeys = PAGE_KEYS) -> tuple[list[bool | str], int]:
    """KILT's ``get_rank``: the rank (``True``/``False``/``"evidence_set:i"``) and the number of sets.

    Independent of ``k``. A guess without ids gives ``([], 0)``.
    """
    keys = check_rank_keys(rank_keys)
    guess_ids = _output_ids(guess["output"][0], keys)
    if not guess_ids:
        return [], 0
    sets = evidence_sets(gold, keys)
    rank: list[bool | str] = [code == _TRUE if code >= 0 else f"evidence_set:{-1 - code}"
                              for code in _rank_codes(guess_ids, sets)]
    return rank, len(sets)


def precision_at_k(rank: Sequence[Any], k: int) -> float:
    """``rank[:k].count(True) / k``."""
    return sum(1 for entry in rank[:k] if entry is True) / k


def recall_at_k(rank: Sequence[Any], num_distinct_evidence_sets: int, k: int) -> float:
    """``rank[:k].count(True) / num_distinct_evidence_sets``."""
    return sum(1 for entry in rank[:k] if entry is True) / num_distinct_evidence_sets


def success_rate_at_k(rank: Sequence[Any], k: int) -> int:
    """1 if a complete evidence set is among the first ``k`` rank positions."""
    return int(any(entry is True for entry in rank[:k]))


# ---------------------------------------------------------------------------------- in-context metrics
def _context_firsts(guess_output: Record, gold: Record, titles: list[str] | None,
                    limit: int) -> tuple[int, int, int]:
    """First provenance index (< limit, else ``limit``) whose normalised ``text`` contains a normalised
    gold answer / a gold title / both (KILT ``_answer_in_context_at_k`` and friends).

    ``titles`` are the gold titles already normalised (``None``: compute them here).
    """
    first_answer = first_entity = first_both = limit
    if "provenance" not in guess_output:
        return first_answer, first_entity, first_both
    head = guess_output["provenance"][:limit]
    for item in head:
        if "text" in item:
            break
    else:
        return first_answer, first_entity, first_both
    answers = [normalize_answer(answer) for answer in gold_answers(gold)]
    if titles is None:
        titles = _normalized_titles(gold)
    if not answers and not titles:
        return first_answer, first_entity, first_both
    for index, item in enumerate(head):
        if "text" not in item:
            continue
        text = normalize_answer(item["text"])
        has_answer = any(answer in text for answer in answers)
        has_entity = any(title in text for title in titles)
        if has_answer and first_answer == limit:
            first_answer = index
        if has_entity and first_entity == limit:
            first_entity = index
        if has_answer and has_entity:
            first_both = index
            break
    return first_answer, first_entity, first_both


def _normalized_titles(gold: Record) -> list[str]:
    return [normalize_answer(title) for title in gold_titles(gold)]


def answer_in_context_at_k(guess: Record, gold: Record, k: int) -> int:
    """1 if one of the first ``k`` guess provenance texts contains a gold answer (both normalised)."""
    return int(_context_firsts(guess["output"][0], gold, None, k)[0] < k)


def entity_in_context_at_k(guess: Record, gold: Record, k: int) -> int:
    """1 if one of the first ``k`` guess provenance texts contains a gold provenance title."""
    return int(_context_firsts(guess["output"][0], gold, None, k)[1] < k)


def answer_and_ent_in_context_at_k(guess: Record, gold: Record, k: int) -> int:
    """1 if one of the first ``k`` guess provenance texts contains both a gold answer and a gold title."""
    return int(_context_firsts(guess["output"][0], gold, None, k)[2] < k)


def _entity_in_input(gold: Record, titles: list[str] | None) -> int:
    text = gold.get("input")
    if text is None or not titles:
        return 0
    normalized = normalize_answer(text)
    return int(any(title in normalized for title in titles))


def entity_in_input(gold: Record) -> int:
    """1 if a normalised gold title occurs in the normalised ``input`` (0 without ``input``)."""
    return _entity_in_input(gold, _normalized_titles(gold))


# ----------------------------------------------------------------------------------------- aggregation
def _result_keys(ks: list[int], include_recall_at_1: bool) -> list[str]:
    names = ["Rprec", "entity_in_input"]
    for k in ks:
        names += [f"precision@{k}", f"answer_in_context@{k}", f"answer_and_ent_in_context@{k}",
                  f"entity_in_context@{k}"]
        if k > 1:
            names += [f"recall@{k}", f"success_rate@{k}"]
        elif include_recall_at_1:
            names.append("recall@1")
    return names


def retrieval_scores(pairs: Iterable[tuple[Record, Record]], ks: Iterable[int] = DEFAULT_KS,
                     rank_keys: RankKeys = PAGE_KEYS, include_recall_at_1: bool = False) -> dict[str, float]:
    """KILT's ``compute``: mean retrieval metrics over aligned ``(guess, gold)`` pairs.

    Each guess must hold exactly one output (see :func:`genret.eval._kilt_io.align`). Keys and their order
    are KILT's: ``Rprec``, ``entity_in_input``, then per k ``precision@k``, ``answer_in_context@k``,
    ``answer_and_ent_in_context@k``, ``entity_in_context@k`` and, for ``k > 1``, ``recall@k`` and
    ``success_rate@k`` (``recall@1`` too when ``include_recall_at_1``).
    """
    ks_sorted, keys = check_ks(ks), check_rank_keys(rank_keys)
    with gc_paused():
        return checked_retrieval_scores(pairs, ks_sorted, keys, include_recall_at_1)


def checked_retrieval_scores(pairs: Iterable[tuple[Record, Record]], ks_sorted: list[int], keys: tuple[str, ...],
                      include_recall_at_1: bool, rprec_values: list[float] | None = None) -> dict[str, float]:
    """:func:`retrieval_scores` on checked arguments; appends each pair's R-Precision to ``rprec_values``."""
    limit = ks_sorted[-1]
    width = len(ks_sorted)
    rprec_sum = 0.0
    eii_sum = 0
    precision, recall = [0.0] * width, [0.0] * width
    success, in_answer, in_both, in_entity = [0] * width, [0] * width, [0] * width, [0] * width
    count = 0
    for guess, gold in pairs:
        count += 1
        try:
            guess_output = guess["output"][0]
            guess_ids = _output_ids(guess_output, keys)
            gold_outputs = gold["output"]
            rprec = rprecision_of_ids(guess_ids, [_output_ids(output, keys) for output in gold_outputs])
            rprec_sum += rprec
            if rprec_values is not None:
                rprec_values.append(rprec)
            titles = _normalized_titles(gold) if gold.get("input") is not None else None
            if titles:
                eii_sum += _entity_in_input(gold, titles)
            if guess_ids:
                sets = evidence_sets(gold, keys)
                if sets:
                    trues = _true_positions(guess_ids, sets, limit)
                    for slot, k in enumerate(ks_sorted):
                        hits = bisect_left(trues, k)
                        precision[slot] += hits / k
                        recall[slot] += hits / len(sets)
                        success[slot] += hits > 0
            first_answer, first_entity, first_both = _context_firsts(guess_output, gold, titles, limit)
        except (AttributeError, TypeError, KeyError, IndexError, ValueError) as exc:
            raise InputError(f"record id {gold.get('id')!r}: cannot score retrieval "
                             f"({type(exc).__name__}: {exc})") from exc
        for slot, k in enumerate(ks_sorted):
            in_answer[slot] += first_answer < k
            in_entity[slot] += first_entity < k
            in_both[slot] += first_both < k
    result = dict.fromkeys(_result_keys(ks_sorted, include_recall_at_1), 0.0)
    if count == 0:
        return result
    result["Rprec"] = rprec_sum / count
    result["entity_in_input"] = eii_sum / count
    for slot, k in enumerate(ks_sorted):
        result[f"precision@{k}"] = precision[slot] / count
        result[f"answer_in_context@{k}"] = in_answer[slot] / count
        result[f"answer_and_ent_in_context@{k}"] = in_both[slot] / count
        result[f"entity_in_context@{k}"] = in_entity[slot] / count
        if k > 1 or include_recall_at_1:
            result[f"recall@{k}"] = recall[slot] / count
        if k > 1:
            result[f"success_rate@{k}"] = success[slot] / count
    return result

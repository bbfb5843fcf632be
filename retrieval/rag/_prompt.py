"""RAG prompt assembly: answer tasks, the prompt layout, the token budget, citations.

Layout (chat messages; demonstrations are few-shot turns, which instruction-tuned models follow best)::

    system:    [the conversation's system text]  the task instruction and the answer form
    user:      <Question|Claim>: demonstration input        ┐ k demonstrations, least similar first,
    assistant: demonstration output                         ┘ most similar last
    user / assistant: the conversation's earlier turns      (a chat's history, oldest first)
    user:      Passages: [1] (title) text … [n] (title) text   (retrieval rank order)
               <Question|Claim>: the input
               <how to answer, how to cite>

A conversation (``history``: the chat messages before the input) gives its system (and developer) messages'
text, put before the task instruction, and its user and assistant turns (``conversation``).

Budget: every passage is first cut to ``max_passage_tokens``; if the whole prompt is still over ``budget``
tokens, items are dropped in this order until it fits: demonstrations beyond the most similar one (least
similar first), the conversation's earlier turns (oldest first), passages beyond the first (lowest ranked
first), the last demonstration, the conversation's system text (cut from its end), the last passage; the input
itself is cut last (from its end).  Passage numbers always follow the passages kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from .._contract import Demo, Hit
from .._tasks import ANSWER_TASKS, AnswerTask, resolve_task
from ._generator import Prompt

_MARGIN = 8  # tokens kept free for the chat template's generation prompt
_PER_MESSAGE = 4  # the chat template's markup around each message (role name, start/end markers)


def resolve_answer_task(task: str | None, registry: dict[str, AnswerTask] | None = None) -> tuple[str, AnswerTask]:
    """``(name used, spec)``; an unknown or missing task falls back to ``generic``."""
    return resolve_task(task, registry or ANSWER_TASKS, ANSWER_TASKS)


def one_line(text: str) -> str:
    return " ".join(text.split())


def _passage_line(number: int, hit: Hit) -> str:
    return f"[{number}] ({hit.provenance.title}) {one_line(hit.text or '')}"


def _how_to_answer(task: AnswerTask, with_passages: bool) -> str:
    if task.form == "label":
        how = f"Answer with one word: {' or '.join(task.labels)}."
    elif task.form == "short":
        how = "Answer with a short answer only."
    else:
        how = "Answer in one or two sentences."
    if with_passages:
        how += " Cite the passages you used, like [1]."
    return how


def _truncate(text: str, limit: int, count_tokens: Callable[[str], int]) -> str:
    """The longest word prefix of ``text`` with at most ``limit`` tokens."""
    if count_tokens(text) <= limit:
        return text
    words = text.split()
    lo, hi = 0, len(words)
    while lo < hi:  # largest n with count(words[:n]) <= limit
        mid = (lo + hi + 1) // 2
        if count_tokens(" ".join(words[:mid])) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo])


def render_user(task: AnswerTask, query: str, passages: Sequence[Hit]) -> str:
    """The final user message for the given (already budgeted) passages."""
    parts = []
    if passages:
        parts.append("Passages:\n" + "\n".join(_passage_line(i, h) for i, h in enumerate(passages, 1)))
    parts.append(f"{task.input_name}: {one_line(query)}\n{_how_to_answer(task, bool(passages))}")
    return "\n\n".join(parts)


def demo_turns(task: AnswerTask, demos: Sequence[Demo]) -> Prompt:
    """Demonstrations as few-shot turns: the input as a user message, the output as the assistant's answer."""
    turns: Prompt = []
    for d in demos:
        turns.append({"role": "user", "content": f"{task.input_name}: {one_line(d.input)}"})
        turns.append({"role": "assistant", "content": one_line(d.output)})
    return turns


def prompt_size(prompt: Prompt, count_tokens: Callable[[str], int]) -> int:
    """Tokens of a chat prompt: its messages' contents plus the template's markup around each."""
    return sum(count_tokens(m["content"]) + _PER_MESSAGE for m in prompt)


def conversation(history: Sequence[dict]) -> tuple[str, Prompt]:
    """``(system text, turns)`` of chat messages (``{"role", "content"}``): the text of the system and developer
    messages, joined; the user and assistant turns with text, in order, consecutive turns of one role merged and
    starting with a user turn; other roles (tool, function) are left out."""
    system = "\n\n".join(m["content"].strip() for m in history
                           if m["role"] in ("system", "developer") and m["content"].strip())
    turns: Prompt = []
    for m in history:
        if m["role"] not in ("user", "assistant") or not m["content"].strip():
            continue
        if turns and turns[-1]["role"] == m["role"]:
            turns[-1] = {"role": m["role"], "content": f"{turns[-1]['content']}\n\n{m['content']}"}
        elif turns or m["role"] == "user":
            turns.append({"role": m["role"], "content": m["content"]})
    return system, turns


def _drop_oldest_turn(turns: Prompt) -> None:
    """Drop the oldest turn, and an assistant turn it leaves first."""
    turns.pop(0)
    while turns and turns[0]["role"] == "assistant":
        turns.pop(0)


def build_prompt(task: AnswerTask, query: str, *, demos: Sequence[Demo] = (), passages: Sequence[Hit] = (),
                 history: Sequence[dict] = (), count_tokens: Callable[[str], int], budget: int,
                 max_passage_tokens: int = 200) -> tuple[Prompt, list[Hit], list[Demo]]:
    """``(prompt, passages kept, demonstrations kept)``; ``demos`` come most similar last, ``passages`` best first,
    ``history`` (chat messages before the input, oldest first) as :func:`conversation` reads it.

    Kept passages have their text cut to ``max_passage_tokens`` (their numbers in the prompt are their
    positions in the returned list, from 1).
    """
    from dataclasses import replace

    cut = [replace(h, text=_truncate(h.text or "", max_passage_tokens, count_tokens)) for h in passages]
    kept_demos, kept_passages = list(demos), cut
    system, turns = conversation(history)
    instruction = f"{task.instruction} {_how_to_answer(task, bool(passages))}"
    limit = budget - _MARGIN

    def assemble() -> Prompt:
        return [{"role": "system", "content": f"{system}\n\n{instruction}" if system else instruction},
                *demo_turns(task, kept_demos), *turns,
                {"role": "user", "content": render_user(task, query, kept_passages)}]

    def size() -> int:
        return prompt_size(assemble(), count_tokens)

    while size() > limit:
        if len(kept_demos) > 1:
            kept_demos.pop(0)
        elif turns:
            _drop_oldest_turn(turns)
        elif len(kept_passages) > 1:
            kept_passages.pop()
        elif kept_demos:
            kept_demos.pop()
        elif system:
            whole, system = system, ""
            room = limit - size() - 1  # the blank line between it and the instruction
            system = _truncate(whole, room, count_tokens) if room > 0 else ""
            if size() > limit:
                system = ""
        elif kept_passages:
            kept_passages.pop()
        else:
            fixed = size() - count_tokens(one_line(query))
            query = _truncate(query, max(1, limit - fixed), count_tokens)
            break
    return assemble(), kept_passages, kept_demos


_CITE = re.compile(r"\[(\d{1,3})\]")
_LEAD = re.compile(r"^(answer|a)\s*[:\-]\s*", re.IGNORECASE)
_HEAD = re.compile(r"^\s*(here is |here's )?(the )?(final |short )?answer( is)?\s*[:\-]\s*", re.IGNORECASE)
_TAIL = re.compile(r"\s*(so |therefore,? )?(the )?(final |short )?answer( is)?\s*[:\-]?\s*$", re.IGNORECASE)
_SPACE_PUNCT = re.compile(r"[ \t]+([.,;:!?])")
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s|$)")
_MARKS_AFTER_END = re.compile(r"(?<=\w)([.!?])((?:\s*\[\d{1,3}\])+)")  # "acted. [1]": the markers of that sentence
TRUNCATED = "…"  # ends a free answer that stopped before a sentence's end


def whole_sentences(text: str) -> str:
    """A free answer that ends at a sentence end: ``text`` up to its last sentence end; with none, its words but
    the last (which the token budget may have cut) followed by the truncation marker ``…``."""
    text = text.strip()
    end = _last_end(text)
    if not text or end:
        return text[:end]
    words = text.split()
    return " ".join(words[:-1] if len(words) > 1 else words) + " " + TRUNCATED


def _last_end(text: str, *, final: bool = True) -> int:
    """Where ``text``'s last sentence end is (0: none); not ``final`` (more text may follow): only an end that the
    next word follows (``3.`` may go on as ``3.5``, ``acted.`` as ``acted. [1]``)."""
    ends = [m.end() for m in _SENTENCE_END.finditer(text)
            if final or text[m.end():].strip()[:1] not in ("", "[")]
    return ends[-1] if ends else 0


def _clean(text: str) -> str:
    """Spacing around punctuation, and a preamble ("The answer is:") or a closing "so the answer is" dropped."""
    text = _SPACE_PUNCT.sub(r"\1", re.sub(r"[ \t]{2,}", " ", text)).strip()
    return _TAIL.sub("", _HEAD.sub("", text)).strip() or text


def _marked(raw: str, n_passages: int) -> str:
    """A free answer's text with its citation markers of passages (others dropped), those written after a sentence's
    full stop moved before it (``acted [1].``: they stay with their sentence when the answer is cut), cleaned."""
    text = _CITE.sub(lambda m: m.group() if 1 <= int(m.group(1)) <= n_passages else "", raw)
    text = _MARKS_AFTER_END.sub(lambda m: " " + "".join(re.findall(r"\[\d+\]", m.group(2))) + m.group(1), text)
    return _clean(text)


def readable(task: AnswerTask, raw: str, answer: str, cited: Sequence[int], n_passages: int, *,
             truncated: bool = True) -> str:
    """The answer as a person reads it: the parsed ``answer`` followed by its citations ``[n]`` — a free answer keeps
    the markers where the model put them (markers of no passage dropped; cut to whole sentences as the parsed answer
    is when ``truncated``) and gets the ``cited`` ones it lacks at its end."""
    text = answer
    if task.form == "free":
        text = _marked(raw, n_passages)
        text = whole_sentences(text) if truncated else text
    missing = "".join(f"[{n}]" for n in cited if f"[{n}]" not in text)
    return f"{text} {missing}" if text and missing else text


def readable_prefix(task: AnswerTask, raw: str, n_passages: int) -> str:
    """What of :func:`readable` is already sure while ``raw`` is still being written: a free answer's whole
    sentences so far (cleaned as at the end); nothing for other forms, whose answer comes whole."""
    if task.form != "free":
        return ""
    text = _marked(raw, n_passages)
    return text[:_last_end(text, final=False)]


def parse_answer(task: AnswerTask, raw: str, n_passages: int, *, truncated: bool = True) -> tuple[str, list[int]]:
    """``(answer, cited passage numbers)`` from a model's raw output: citations ``[n]`` (1 ≤ n ≤ n_passages,
    in order of first mention) are taken out of the text; a free answer that the token budget cut (``truncated``;
    not known: assumed) ends at its last sentence end (``whole_sentences``) and cites what those sentences cite;
    short and label answers keep their first line; a label answer becomes the first label it names
    (case-insensitive), else stays as written."""
    cited: list[int] = []
    for m in _CITE.finditer(raw):
        n = int(m.group(1))
        if 1 <= n <= n_passages and n not in cited:
            cited.append(n)
    text = _clean(_CITE.sub("", raw))
    if task.form == "free" and truncated:
        kept = whole_sentences(_marked(raw, n_passages))
        return _clean(_CITE.sub("", kept)), [n for n in cited if f"[{n}]" in kept]
    if task.form == "free":
        return text, cited
    if task.form != "free":
        text = next((line for line in text.splitlines() if line.strip()), "").strip()
    text = _LEAD.sub("", text).strip().rstrip(".").strip() if task.form != "free" else text
    if task.form == "label":
        upper = text.upper()
        hits = [(upper.find(label.upper()), label) for label in task.labels if label.upper() in upper]
        if hits:
            text = min(hits)[1]
    return " ".join(text.split()) if task.form != "free" else text, cited

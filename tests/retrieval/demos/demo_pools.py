"""Two tiny hand-written demonstration pools (QA as KILT records, claims as plain JSONL) for the demo tests."""

from __future__ import annotations

import json
from pathlib import Path

QA = [
    ("qa-1", "What is the capital of France?", "Paris"),
    ("qa-2", "Who wrote the novel Pride and Prejudice?", "Jane Austen"),
    ("qa-3", "How many legs does a spider have?", "eight"),
    ("qa-4", "What is the boiling point of water at sea level?", "100 degrees Celsius"),
    ("qa-5", "Which planet is known as the Red Planet?", "Mars"),
    ("qa-6", "Who painted the Mona Lisa?", "Leonardo da Vinci"),
]
CLAIMS = [
    ("fc-1", "The Eiffel Tower is located in Berlin.", "REFUTES"),
    ("fc-2", "Water is composed of hydrogen and oxygen.", "SUPPORTS"),
    ("fc-3", "The Great Wall of China is visible from the Moon with the naked eye.", "REFUTES"),
    ("fc-4", "Mount Everest is the tallest mountain on Earth.", "SUPPORTS"),
    ("fc-5", "Bats are blind mammals that cannot see at all.", "REFUTES"),
    ("fc-6", "The Pacific is the largest ocean on the planet.", "SUPPORTS"),
]


def write_pools(d: Path) -> tuple[Path, Path]:
    """``(qa.jsonl, claims.jsonl)``: the QA pool in KILT format (plus one record without an answer), the claims
    pool as plain JSONL."""
    qa, claims = d / "qa.jsonl", d / "claims.jsonl"
    with open(qa, "w", encoding="utf-8") as fh:
        for rid, text, answer in QA:
            fh.write(json.dumps({"id": rid, "input": text, "output": [{"provenance": []}, {"answer": answer}]}) + "\n")
        fh.write(json.dumps({"id": "qa-none", "input": "A question nobody answered?", "output": [{"answer": ""}]})
                 + "\n")
    with open(claims, "w", encoding="utf-8") as fh:
        for rid, text, label in CLAIMS:
            fh.write(json.dumps({"id": rid, "input": text, "output": label}) + "\n")
    return qa, claims

"""Scores answers to the QA set (benchmarks/qa/questions.jsonl); see benchmarks/qa/README.md.

Usage: python benchmarks/qa/score.py ANSWERS.jsonl [--questions benchmarks/qa/questions.jsonl]
       [--out RESULT.json] [--md RESULT.md]

ANSWERS.jsonl holds one ``{"id": ..., "answer": "...", "evidence": [...]}`` per line (the
``streamvid ask --json`` output plus the question's id). Only ``answer`` is scored.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
_TIME = re.compile(r"\b(?:(\d{1,2}):)?(\d{1,2}):(\d{2})(?:\.\d+)?\b")
_NUMBER_WORDS = {"no": 0, "zero": 0, "none": 0, "one": 1, "two": 2, "three": 3, "four": 4,
                 "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
                 "eleven": 11, "twelve": 12}
#: an answer saying that nothing matching was found
NOT_FOUND = re.compile(r"\b(found no|nothing (?:matching|in memory matches|was found)|"
                       r"no (?:\w+ ){0,3}(?:was|were) (?:found|seen|detected|read)|"
                       r"not (?:found|seen|detected)|no match)\b", re.I)
#: when a question's time span counts as hit (seconds of slack either side)
WHEN_TOLERANCE = 1.0
#: counts within this many of the truth are right
COUNT_TOLERANCE = 1


def first_time(text: str) -> float | None:
    m = _TIME.search(text)
    if not m:
        return None
    return int(m.group(1) or 0) * 3600 + int(m.group(2)) * 60 + int(m.group(3))


def first_number(text: str) -> int | None:
    """The first count in ``text``, ignoring times (``00:00:30``)."""
    for w in re.findall(r"[a-z0-9]+", _TIME.sub(" ", text.lower())):
        if w.isdigit():
            return int(w)
        if w in _NUMBER_WORDS:
            return _NUMBER_WORDS[w]
    return None


def normalise(text: str) -> str:
    """Lower case, words only; the multiplication sign reads as x (``1024 × 768``)."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower().replace("×", "x")))


def choice_of(text: str) -> str | None:
    m = re.match(r"\s*\(?([A-Da-d])\b[\).:]?", text)
    return m.group(1).upper() if m else None


def not_found(answer: str) -> bool:
    return bool(NOT_FOUND.search(answer))


def correct(q: dict[str, Any], answer: str) -> bool:
    """Whether ``answer`` answers question ``q`` right (rules in benchmarks/qa/README.md)."""
    kind, truth = q["type"], q["truth"]
    if kind == "absent":
        return not_found(answer)
    if not_found(answer):
        return False
    if kind == "count":
        n = first_number(answer)
        return n is not None and abs(n - truth["count"]) <= COUNT_TOLERANCE
    if kind == "when":
        t = first_time(answer)
        return t is not None and any(a - WHEN_TOLERANCE <= t <= b + WHEN_TOLERANCE
                                     for a, b in truth["spans"])
    if kind in ("text", "summary"):
        got = normalise(answer)
        return any(normalise(w) in got for w in truth["any_of"])
    if kind == "choice":
        return choice_of(answer) == truth["letter"]
    raise ValueError(f"unknown question type {kind!r} in {q['id']}")


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def score(questions: list[dict[str, Any]], answers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    per_type: dict[str, list[bool]] = defaultdict(list)
    rows = []
    for q in questions:
        a = answers.get(q["id"])
        ok = a is not None and correct(q, a.get("answer", ""))
        per_type[q["type"]].append(ok)
        rows.append({"id": q["id"], "type": q["type"], "correct": ok,
                     "answer": None if a is None else a.get("answer", "")})
    summary = {t: {"n": len(v), "correct": sum(v), "accuracy": round(sum(v) / len(v), 3)}
               for t, v in sorted(per_type.items())}
    allv = [r["correct"] for r in rows]
    summary["all"] = {"n": len(allv), "correct": sum(allv),
                      "accuracy": round(sum(allv) / max(len(allv), 1), 3)}
    absent = per_type.get("absent", [])
    found_rate = round(1 - sum(absent) / len(absent), 3) if absent else None
    return {"summary": summary, "false_found_rate": found_rate, "questions": rows}


def markdown(result: dict[str, Any], title: str = "") -> str:
    lines = [f"### {title}", ""] if title else []
    lines += ["| question type | questions | correct | accuracy |", "|---|---|---|---|"]
    for t, s in result["summary"].items():
        lines.append(f"| {t} | {s['n']} | {s['correct']} | {100 * s['accuracy']:.0f} % |")
    if result.get("false_found_rate") is not None:
        lines += ["", f"False \"found\" rate on absent things: {100 * result['false_found_rate']:.0f} %"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("answers", type=Path)
    ap.add_argument("--questions", type=Path, default=HERE / "questions.jsonl")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--md", type=Path)
    args = ap.parse_args(argv)
    answers = {a["id"]: a for a in load_jsonl(args.answers)}
    result = score(load_jsonl(args.questions), answers)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    md = markdown(result)
    if args.md:
        args.md.write_text(md, encoding="utf-8")
    sys.stdout.write(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The extractive answerer (the offline default): answers from what the memory holds —
when the best moment is, what was seen there, the on-screen text quoted — and always returns
the evidence."""

from __future__ import annotations

import re
from typing import Sequence

from memory.lexical import SPEECH_CUES, is_speech_question
from streamvid.config import AnswerConfig
from streamvid.types import Answer, Answerer, Context, ContextItem, Evidence, Question, format_time

from .base import ANSWERERS

_TEXT_Q = re.compile(r"\b(say|says|said|written|write|writes|text|sign|signs|read|reads|password|"
                     r"code|number|caption|title|spell|spelled|message|banner|screen)\b", re.I)
_WHEN_Q = re.compile(r"\b(when|what time|which moment|at what point|how long into)\b", re.I)
_OPTION = re.compile(r"^\s*\(?([A-Da-d])[\).:]\s*(.+?)\s*$")
_TIME = re.compile(r"\b(?:(\d{1,2}):)?(\d{1,2}):(\d{2})\b")
_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
_STOP = frozenset("""a an the is are was were be been of on in at to for and or what which who when
where how does do did this that these those it its there their video appear appears shown show
shows seen see is's please tell me any some""".split())


def words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP]


def evidence_of(item: ContextItem) -> Evidence:
    clip = item.clip
    text = clip.description or "; ".join(lbl for lbl, _ in clip.labels)
    if clip.merged > 1:
        text = f"[{clip.merged} clips merged] {text}"
    return Evidence(start=clip.start, end=clip.end, score=float(item.score), text=text,
                    keyframe=float(clip.keyframe))


def _span(ev: Evidence) -> str:
    return f"{format_time(ev.start)}–{format_time(ev.end)}"


_WHOLE_SIGN = re.compile(r"\b(say|says|said|read|reads|written|message)\b", re.I)


def best_text_line(ocr_text: str, question: str) -> str:
    """The on-screen text that answers ``question``.

    "What does the sign say?" gets all of it; otherwise the line sharing most words with the
    question, continued on the next line when it adds nothing the question did not already
    say (a sign wrapped after "The door code is").
    """
    lines = [ln.strip() for ln in re.split(r"[\n|]+", ocr_text) if ln.strip()]
    if not lines:
        return ""
    q = set(words(question))
    scored = [(len(q & set(words(ln))), -i, ln) for i, ln in enumerate(lines)]
    best = max(scored)
    if best[0] == 0 or (_WHOLE_SIGN.search(question) and len(lines) <= 4):
        return " / ".join(lines)
    i = -best[1]
    out = lines[i]
    while set(words(out)) <= q and i + 1 < len(lines):
        i += 1
        out = f"{out} {lines[i]}"
    return out


def parse_options(text: str) -> list[tuple[str, str]]:
    """Multiple-choice options written one per line as ``A) ...`` / ``(B) ...`` / ``C. ...``."""
    out = []
    for line in text.splitlines():
        m = _OPTION.match(line)
        if m:
            out.append((m.group(1).upper(), m.group(2)))
    return out


def _seconds(text: str) -> float | None:
    m = _TIME.search(text)
    if not m:
        return None
    h = int(m.group(1) or 0)
    return h * 3600 + int(m.group(2)) * 60 + int(m.group(3))


def spoken_answer(question: str, hits: Sequence[ContextItem]) -> str | None:
    """``At HH:MM:SS the speaker said: "…"`` from the transcript of the best moments, or None.

    The segment quoted shares the most words with the question; its time is when the first
    of those words was said. Speech answers a question about what was said, or one whose
    words were said in the best moment.
    """
    q = set(words(question)) - SPEECH_CUES
    asked = is_speech_question(question)
    for rank, it in enumerate(hits[:3]):
        if rank and not asked:
            break
        best = max(((len(q & set(words(sg.text))), -i, sg) for i, sg in enumerate(it.clip.speech)),
                   default=None, key=lambda x: x[:2])
        if best is None or (best[0] == 0 and not (asked and rank == 0)):
            continue
        sg = best[2]
        times = [t for t in (sg.time_of(w) for w in words(sg.text) if w in q) if t is not None]
        return f'At {format_time(times[0] if times else sg.start)} the speaker said: "{sg.text}"'
    return None


@ANSWERERS.register("extractive")
class ExtractiveAnswerer(Answerer):
    """Answers from the retrieved moments themselves: times, labels, OCR text."""

    name = "extractive"

    def __init__(self, config: AnswerConfig | None = None):
        self.config = config or AnswerConfig()

    def answer(self, question: Question, context: Context) -> Answer:
        hits = context.hits()
        evidence = tuple(evidence_of(it) for it in hits)
        if not hits:
            return Answer("Nothing in memory matches the question.", evidence)
        ev = evidence[0]
        options = parse_options(question.text)
        if options:
            return Answer(self._choose(options, evidence, question), evidence)
        when = f"{format_time(ev.keyframe)} ({_span(ev)})"
        q = question.text
        said = spoken_answer(q, hits) if q else None
        if said is not None:
            return Answer(said, evidence)
        if q and _TEXT_Q.search(q) and not _WHEN_Q.search(q):
            for it, e in zip(hits, evidence):
                if it.clip.ocr_text.strip():
                    line = best_text_line(it.clip.ocr_text, q)
                    return Answer(f'"{line}" (on screen at {format_time(e.keyframe)}, {_span(e)})',
                                  evidence)
            return Answer(f"No on-screen text was read near the best moment; best match at {when}: "
                          f"{ev.text}", evidence)
        if question.image is not None or (q and _WHEN_Q.search(q)):
            return Answer(f"At {when}: {ev.text}" if ev.text else f"At {when}.", evidence)
        return Answer(f"{ev.text} (at {when})" if ev.text else f"At {when}.", evidence)

    @staticmethod
    def _choose(options: Sequence[tuple[str, str]], evidence: Sequence[Evidence],
                question: Question) -> str:
        """Pick the option best supported by the evidence (times by distance, else words)."""
        top = evidence[:3]
        best_key, best_score = options[0][0], float("-inf")
        for key, text in options:
            secs = _seconds(text)
            if secs is not None:
                score = -min(abs(secs - e.keyframe) if not (e.start <= secs <= e.end) else 0.0
                             for e in top[:1])
            else:
                ow = set(words(text))
                score = sum(len(ow & set(words(e.text))) * e.score for e in top) / (len(ow) or 1)
            if score > best_score:
                best_key, best_score = key, score
        label = dict(options)[best_key]
        return f"{best_key}) {label}"

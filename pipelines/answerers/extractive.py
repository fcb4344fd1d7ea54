"""The extractive answerer (the offline default): answers in sentences from what the memory
holds — the objects detected (with counts and times), the on-screen text quoted, the labels
— by the kind of question (``question.parsed``), and always returns the evidence. When the
memory holds nothing that matches, it says so and still lists the nearest moments."""

from __future__ import annotations

import re
from typing import Sequence

from streamvid.compress.clips import plural
from streamvid.config import AnswerConfig
from streamvid.question import SPEECH_WORDS, frame_match, named_objects, parse_number, parse_time
from streamvid.types import (Answer, Answerer, ClipMemory, Context, ContextItem, Evidence, FrameObjects,
                             Question, format_time)

from .base import ANSWERERS

_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
_STOP = frozenset("""a an the is are was were be been of on in at to for and or what which who when
where how does do did this that these those it its there their video appear appears shown show
shows seen see is's please tell me any some from with by as can could would should about into
visible happen happens happening""".split())
#: words that say a question is about text without naming what the text is about
_TEXT_CUES = frozenset("""say says said read reads written write writes text sign signs screen
label labels caption title banner board poster message tooltip dialog window button menu
shown displayed display ask asks name named called word words line lines""".split())
#: questions asking for one value: the line holding a number is preferred
_VALUE_Q = re.compile(r"\b(what|which)\s+(resolution|number|code|password|price|time|date|year|"
                      r"size|version|percentage|temperature|speed|score|phone|address)\b", re.I)
_DIGIT = re.compile(r"\d")
_WHOLE_SIGN = re.compile(r"\b(say|says|said|read|reads|written|message)\b", re.I)
#: nearest moments listed when nothing matches
NEAREST = 3


def words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP]


def _same_word(a: str, b: str) -> bool:
    """``drag`` ~ ``dragging``, ``keeps`` ~ ``keep``: equal, or sharing a prefix of at least
    four letters that covers most of the shorter word."""
    if a == b:
        return True
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n >= 4 and n >= 0.75 * min(len(a), len(b))


def _overlap(q: Sequence[str], line_words: Sequence[str]) -> int:
    return sum(any(_same_word(w, lw) for lw in line_words) for w in q)


def content_words(question: str) -> list[str]:
    """The words of a text question that name what the text is about (not "sign", "say")."""
    objects = {w for g in named_objects(question)[1] for w in g.split()}
    return [w for w in words(question) if w not in _TEXT_CUES and w not in objects]


def _split_lines(ocr_text: str) -> list[str]:
    return [ln.strip() for ln in re.split(r"[\n|]+", ocr_text) if ln.strip()]


def best_text_line(ocr_text: str, question: str) -> str:
    """The on-screen text that answers ``question``.

    "What does the sign say?" gets all of it; otherwise the line sharing most words with the
    question (a question asking for one value — "what resolution" — prefers lines with a
    number), continued on the next line when it adds nothing the question did not already
    say (a sign wrapped after "The door code is", a "Resolution:" label before its value).
    """
    lines = _split_lines(ocr_text)
    if not lines:
        return ""
    q = words(question)
    value = bool(_VALUE_Q.search(question))
    scored = [(_overlap(q, words(ln)) + (0.5 if value and _DIGIT.search(ln) else 0.0), -i, ln)
              for i, ln in enumerate(lines)]
    best = max(scored)
    if best[0] == 0 or (_WHOLE_SIGN.search(question) and not content_words(question) and len(lines) <= 4):
        return " / ".join(lines)
    i = -best[1]
    out = lines[i]
    while i + 1 < len(lines) and (set(words(out)) <= set(q) or (value and not _DIGIT.search(out))):
        i += 1
        out = f"{out} {lines[i]}"
    return out


def parse_options(text: str) -> list[tuple[str, str]]:
    """Multiple-choice options written one per line as ``A) ...`` / ``(B) ...`` / ``C. ...``."""
    return list(Question(text=text).parsed.options)


def evidence_of(item: ContextItem, keyframe: float | None = None) -> Evidence:
    clip = item.clip
    text = clip.description or "; ".join(lbl for lbl, _ in clip.labels)
    if clip.merged > 1:
        text = f"[{clip.merged} clips merged] {text}"
    return Evidence(start=clip.start, end=clip.end, score=float(item.score), text=text,
                    keyframe=float(clip.keyframe if keyframe is None else keyframe),
                    clip_id=int(clip.id), source_id=clip.source_id)


def _at(t: float, clip: ClipMemory) -> str:
    return f"{format_time(t)} in {clip.source_id}" if clip.source_id else format_time(t)


def _thing(groups: tuple[tuple[str, ...], ...], words_: tuple[str, ...]) -> str:
    """``a person with a bag``, ``people``: the things asked about, in the asker's words."""
    names = list(words_) or [g[0] for g in groups]
    return " with ".join(n if _is_plural(n) else f"{'an' if n[0] in 'aeiou' else 'a'} {n}" for n in names)


def _is_plural(word: str) -> bool:
    return word in ("people", "men", "women", "children") or (word.endswith("s") and not word.endswith("ss"))


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def spoken_answer(question: Question, hits: Sequence[ContextItem]) -> str | None:
    """``At HH:MM:SS the speaker said: "…"`` from the transcript of the best moments, or None.

    The segment quoted shares the most words with the question; its time is when the first
    of those words was said. Speech answers a question about what was said, or one whose
    words were said in the best moment.
    """
    q = set(words(question.text)) - SPEECH_WORDS
    asked = question.parsed.speech
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
    """Answers from the retrieved moments themselves: detections, times, OCR text, labels."""

    name = "extractive"

    def __init__(self, config: AnswerConfig | None = None):
        self.config = config or AnswerConfig()

    def answer(self, question: Question, context: Context) -> Answer:
        hits = context.hits()
        if not hits:
            return Answer("Nothing in memory matches the question.", ())
        pq = question.parsed
        if question.image is not None and not question.text.strip():
            return self._best_moment(hits)
        kind = pq.kind
        if kind == "choice":
            return self._choose(question, context, hits)
        said = spoken_answer(question, hits) if question.text.strip() else None
        if said is not None:
            return Answer(said, self._evidence(hits))
        if kind == "count":
            return self._count(question, context, hits)
        if kind == "summary":
            return self._summary(question, context, hits)
        if kind == "speech":
            return Answer("No speech was found: this store holds no transcript of what was said.",
                          self._evidence(hits))
        if kind == "text":
            return self._text(question, hits)
        if pq.groups:
            return self._when_objects(question, hits)
        if kind == "what":
            quoted = self._text(question, hits, strict=True)
            if quoted is not None:
                return quoted
        return self._when_words(question, hits)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _evidence(hits: Sequence[ContextItem], keyframes: dict[int, float] | None = None) -> tuple[Evidence, ...]:
        keyframes = keyframes or {}   # by id() of the item: the moment the asked thing was seen
        return tuple(evidence_of(it, keyframes.get(id(it))) for it in hits)

    def _nearest(self, hits: Sequence[ContextItem]) -> str:
        return "; ".join(f"{_at(it.clip.keyframe, it.clip)} ({it.clip.description or 'no description'})"
                         for it in hits[:NEAREST])

    def _best_moment(self, hits: Sequence[ContextItem]) -> Answer:
        ev = self._evidence(hits)
        top = hits[0].clip
        what = f": {top.description}" if top.description else "."
        return Answer(f"At {_at(ev[0].keyframe, top)} ({format_time(top.start)}–{format_time(top.end)}){what}", ev)

    # ------------------------------------------------------------------ when / what: objects
    def _when_objects(self, question: Question, hits: Sequence[ContextItem]) -> Answer:
        pq = question.parsed
        thing = _thing(pq.groups, pq.words)
        moments: list[tuple[float, ContextItem, list]] = []
        for it in hits:
            for fo in it.clip.objects:
                m = frame_match(fo, pq.groups)
                if m:
                    moments.append((fo.time, it, m))
                    break   # the first frame of the clip that shows it
        detected = any(it.clip.objects for it in hits)
        if not moments:
            named = self._named_in_words(question, hits)
            if named is not None or not detected:
                return named if named is not None else self._when_words(question, hits)
            return Answer(f"Found no {' with '.join(pq.words) or thing} in the moments searched; "
                          f"nearest: {self._nearest(hits)}.",
                          self._evidence(hits))
        keyframes = {id(it): t for t, it, _ in moments}
        ordered = sorted(moments, key=lambda m: m[0]) if pq.first else moments
        t0, it0, m0 = ordered[0]
        names = sorted({d.label for d in m0})
        details = [f"{' and '.join(sorted({d.where() for d in m0}))} of the frame"]
        if pq.words and not any(n in pq.words or plural(n) in pq.words for n in names):
            details.append(f"detected as {', '.join(names)}")
        first = " first" if pq.first or len(moments) == 1 else ""
        verb = "appear" if _is_plural(thing.split(" with ")[0]) else "appears"
        others = sorted({t for t, _, _ in moments if abs(t - t0) > 0.5})
        also = f"; also at {', '.join(format_time(t) for t in others[:5])}" if others else ""
        text = f"{_cap(thing)}{first} {verb} at {_at(t0, it0.clip)} ({', '.join(details)}){also}."
        ev = self._evidence([it0] + [it for it in hits if it is not it0], keyframes)
        return Answer(text, ev)

    def _named_in_words(self, question: Question, hits: Sequence[ContextItem]) -> Answer | None:
        """A moment whose labels or text name the thing asked about (when no detection does)."""
        asked = set(question.parsed.words) | {plural(w) for w in question.parsed.words}
        q = set(words(" ".join(question.parsed.words)))
        for it in hits:
            # a whole label naming the thing ("lemon"), not a part of one ("horse cart")
            labels = {n.lower() for n, _ in it.clip.labels} | {plural(n.lower()) for n, _ in it.clip.labels}
            if asked & labels or (q and _overlap(sorted(q), words(it.clip.ocr_text)) == len(q)):
                return self._best_moment([it] + [h for h in hits if h is not it])
        return None

    # ------------------------------------------------------------------ when: words
    def _when_words(self, question: Question, hits: Sequence[ContextItem]) -> Answer:
        """Something not among the detector's classes: the best moment whose description,
        labels or text share a word with the question, else nothing found."""
        q = content_words(question.text) if question.parsed.kind != "what" else words(question.text)
        q = [w for w in q if w not in ("first", "time", "moment")]
        for it in hits:
            c = it.clip
            text_words = words(c.ocr_text)
            if q and _overlap(q, text_words):
                line = best_text_line(c.ocr_text, question.text)
                t = c.text_time(line)
                ev = self._evidence([it] + [h for h in hits if h is not it], {id(it): t})
                return Answer(f'At {_at(t, c)}: "{line}" is on screen '
                              f"({format_time(c.start)}–{format_time(c.end)}).", ev)
            if q and _overlap(q, words(c.description + " " + " ".join(n for n, _ in c.labels))):
                return self._best_moment([it] + [h for h in hits if h is not it])
        return Answer(f"Found nothing matching the question; nearest: {self._nearest(hits)}.",
                      self._evidence(hits))

    # ------------------------------------------------------------------ what text
    def _text(self, question: Question, hits: Sequence[ContextItem], strict: bool = False) -> Answer | None:
        q = content_words(question.text)
        best: tuple[float, int, ContextItem, str] | None = None
        for rank, it in enumerate(hits):
            if not it.clip.ocr_text.strip():
                continue
            line = best_text_line(it.clip.ocr_text, question.text)
            score = _overlap(q, words(line)) if q else 1
            if best is None or (score, -rank) > (best[0], -best[1]):
                best = (score, rank, it, line)
        if best is None or (q and best[0] == 0):
            if strict:
                return None
            about = " ".join(q) or "text"
            return Answer(f"Found no on-screen text about {about}; nearest: {self._nearest(hits)}.",
                          self._evidence(hits))
        _, _, it, line = best
        c = it.clip
        t = c.text_time(line)
        ev = self._evidence([it] + [h for h in hits if h is not it], {id(it): t})
        return Answer(f'"{line}" — read on screen at {_at(t, c)} '
                      f"({format_time(c.start)}–{format_time(c.end)}).", ev)

    # ------------------------------------------------------------------ how many
    def _count(self, question: Question, context: Context, hits: Sequence[ContextItem]) -> Answer:
        pq = question.parsed
        groups = pq.groups[:1]
        thing = pq.words[0] if pq.words else "objects"
        items = list(context.items)
        frames: list[tuple[FrameObjects, ContextItem]] = [(fo, it) for it in items for fo in it.clip.objects]
        if not groups or not frames:
            why = "no object the detector knows is named" if not groups else "no object detections are stored"
            return Answer(f"Cannot count {thing}: {why}; nearest: {self._nearest(hits)}.", self._evidence(hits))
        name = groups[0][0]

        def n_in(fo: FrameObjects) -> int:
            return sum(1 for d in fo.objects if d.label in groups[0])

        if pq.at is not None:
            fo, it = min(frames, key=lambda f: (abs(f[0].time - pq.at), f[0].time))
            n = n_in(fo)
            off = abs(fo.time - pq.at)
            when = _at(fo.time, it.clip)
            note = f" (the nearest look was {off:.0f} s away)" if off > 2.5 else ""
            text = (f"{n} {plural(name, n)} at {when}{note}." if n else
                    f"No {plural(name)} were detected at {when}{note}.")
            hit = it
            t_key = fo.time
        else:
            fo, it = max(frames, key=lambda f: (n_in(f[0]), -f[0].time))
            n = n_in(fo)
            if n == 0:
                return Answer(f"Found no {plural(name)} in the moments searched; nearest: {self._nearest(hits)}.",
                              self._evidence(hits))
            text = f"{n} {plural(name, n)} at {_at(fo.time, it.clip)}, the most seen at once"
            others = sorted({(n_in(f), f.time) for f, _ in frames if f is not fo and n_in(f)}, reverse=True)[:3]
            if others:
                text += "; " + ", ".join(f"{k} at {format_time(t)}" for k, t in others)
            text += "."
            hit, t_key = it, fo.time
        ordered = [hit] + [h for h in hits if h is not hit]
        return Answer(text, self._evidence(ordered, {id(hit): t_key}))

    # ------------------------------------------------------------------ summary
    def _summary(self, question: Question, context: Context, hits: Sequence[ContextItem]) -> Answer:
        from pipelines.summarize import summarize_clips

        unique = {(it.clip.source_id, it.clip.start, it.clip.end): it.clip for it in context.items}
        clips = sorted(unique.values(), key=lambda c: c.start)
        sums = summarize_clips(clips, with_segments=False)
        pq = question.parsed
        parts = []
        for s in sums:
            span = f"{format_time(s.start)}–{format_time(s.end)}"
            head = f"Around {format_time(pq.at)} in {s.source_id} ({span})" if pq.at is not None \
                else f"{s.source_id} ({span})"
            parts.append(f"{head}: {s.overview}")
        return Answer(" ".join(parts), self._evidence(hits))

    # ------------------------------------------------------------------ multiple choice
    def _choose(self, question: Question, context: Context, hits: Sequence[ContextItem]) -> Answer:
        """Pick the option best supported by the evidence: a count by the count, a time by
        its distance to the best moment, objects by their detections, else shared words."""
        pq = question.parsed
        options = pq.options
        evidence = self._evidence(hits)
        stem = question.text.splitlines()[0]
        scores: dict[str, float] = {}
        counted = None
        if Question(text=stem).parsed.kind == "count":
            counted = parse_number(self._count(Question(text=stem), context, hits).answer)
        top = hits[:3]
        for key, text in options:
            secs = parse_time(text)
            num = parse_number(text)
            groups, _ = named_objects(text)
            if counted is not None and num is not None:
                scores[key] = -abs(num - counted)
            elif secs is not None:
                e = evidence[0]
                scores[key] = -(0.0 if e.start <= secs <= e.end else min(abs(secs - e.start), abs(secs - e.end)))
            elif groups:
                scores[key] = sum(max((max((d.score for d in frame_match(fo, groups)), default=0.0)
                                       for fo in it.clip.objects), default=0.0) * (1.0 - 0.1 * i)
                                  for i, it in enumerate(top))
            else:
                ow = set(words(text))
                scores[key] = sum(_overlap(list(ow), words(it.clip.description + " " + it.clip.ocr_text))
                                  * (1.0 - 0.1 * i) for i, it in enumerate(top)) / (len(ow) or 1)
        best = max(options, key=lambda o: (scores[o[0]], -ord(o[0])))
        return Answer(f"{best[0]}) {best[1]}", evidence)

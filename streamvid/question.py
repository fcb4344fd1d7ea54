"""What a question asks, parsed once: its kind, the time it names, the objects it names.

:func:`parse_question` is called by :class:`~streamvid.types.Question` itself, so retrieval
and every answerer read the same reading of a question (``question.parsed``).

Kinds:

- ``choice``: options written one per line (``A) ...``);
- ``when``: when something appears or happens (``first`` when it asks for the first time);
- ``count``: how many of something;
- ``text``: what is written (a sign, a label, a quoted phrase, a password);
- ``speech``: what was said;
- ``summary``: what the video (or a span of it) is about, what happens;
- ``what``: anything else (what is seen at a moment, where is something).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: the 80 COCO detection classes, in the order detectors trained on COCO number them
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)

#: words people use for things a COCO detector names otherwise (a van is detected as a truck
#: or a car; "bag" is any of three classes)
OBJECT_WORDS: dict[str, tuple[str, ...]] = {
    "people": ("person",), "persons": ("person",), "pedestrian": ("person",),
    "pedestrians": ("person",), "man": ("person",), "men": ("person",), "woman": ("person",),
    "women": ("person",), "someone": ("person",), "somebody": ("person",), "child": ("person",),
    "children": ("person",), "kid": ("person",), "kids": ("person",), "boy": ("person",),
    "girl": ("person",), "human": ("person",), "humans": ("person",), "anyone": ("person",),
    "walker": ("person",), "walkers": ("person",),
    "car": ("car", "truck"), "cars": ("car", "truck"), "van": ("truck", "car"),
    "vans": ("truck", "car"), "lorry": ("truck",), "vehicle": ("car", "truck", "bus", "motorcycle"),
    "vehicles": ("car", "truck", "bus", "motorcycle"), "bike": ("bicycle", "motorcycle"),
    "bikes": ("bicycle", "motorcycle"), "motorbike": ("motorcycle",), "plane": ("airplane",),
    "bag": ("handbag", "backpack", "suitcase"), "bags": ("handbag", "backpack", "suitcase"),
    "luggage": ("suitcase",), "phone": ("cell phone",), "phones": ("cell phone",),
    "television": ("tv",), "sofa": ("couch",), "table": ("dining table",), "ball": ("sports ball",),
    "plant": ("potted plant",), "puppy": ("dog",), "kitten": ("cat",),
}

_NUMBER_WORDS = {"no": 0, "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5,
                 "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12}

_OPTION = re.compile(r"^\s*\(?([A-Da-d])[\).:]\s*(.+?)\s*$")
_TIME = re.compile(r"\b(?:(\d{1,2}):)?(\d{1,2}):(\d{2})\b")
_SECONDS = re.compile(r"\b(?:at|after|around)\s+(\d+(?:\.\d+)?)\s*(?:s|sec|secs|seconds)\b", re.I)
_WORD = re.compile(r"[a-z0-9]+")
_COUNT = re.compile(r"\b(how many|number of|count|how much .* (?:people|cars|persons))\b", re.I)
_WHEN = re.compile(r"\b(when|what time|which moment|at what point|how long into|what second|"
                   r"what minute)\b", re.I)
_FIRST = re.compile(r"\b(first|earliest|the first time|start to appear|begins? to appear|"
                    r"first time)\b", re.I)
_TEXT = re.compile(r"\b(written|write|writes|text|sign|signs|read|reads|password|code|caption|"
                   r"title|spell|spelled|message|banner|screen|label|labelled|labeled|button|"
                   r"menu|dialog|window|poster|board|plate|resolution|number|word|words|wifi|"
                   r"name|named|note|setting|settings|option|displayed|shown on|tooltip)\b", re.I)
#: words that ask about what was said (retrieval drops them before matching transcripts)
SPEECH_WORDS = frozenset("""say says said saying mention mentions mentioned mentioning speaker
speakers narrator spoken speak speaks spoke talk talks talked talking tell tells told discuss
discussed discusses announce announced announces hear heard voice""".split())
#: words of written text: a question naming one asks what is written, which speech never answers
#: ("what does the sign say?")
WRITTEN_WORDS = frozenset("""sign signs written text read reads label labelled labeled password
poster banner screen caption title board note wifi plate""".split())
_QUOTED = re.compile(r"[\"“”‘’]([^\"“”‘’]{2,})[\"“”‘’]")
_SUMMARY = re.compile(r"\b(about|summar\w*|overview|what happens|what is happening|what's happening|"
                      r"going on|describe the video|the gist|what is this video|what does the video show|"
                      r"what is shown|what can be seen)\b", re.I)
_SAY_TEXT = re.compile(r"\b(sign|screen|button|label|banner|poster|board|caption|title|dialog|"
                       r"window|message)\b.*\b(say|says|said|read|reads)\b|\b(say|says|read|reads)\b"
                       r".*\b(sign|screen|button|label|banner|poster|board)\b", re.I)


@dataclass(frozen=True)
class ParsedQuestion:
    """One reading of a question, shared by retrieval and answerers.

    ``at`` is the time the question names in seconds (``at 00:00:30``), else None; ``groups``
    the COCO classes each object word names (``people`` -> ``person``, ``bag`` -> handbag,
    backpack or suitcase), in the order named: a moment matches when it shows one class of
    every group; ``words`` those object words as written (to answer with the asker's word);
    ``options`` the multiple-choice options ``(letter, text)``; ``quoted`` phrases in quotes;
    ``speech`` whether it asks about what was said, whatever its kind ("when does the speaker
    mention the budget?" is a ``when`` question about speech).
    """

    kind: str
    at: float | None = None
    first: bool = False
    groups: tuple[tuple[str, ...], ...] = ()   # per object word, the classes it may be
    words: tuple[str, ...] = ()
    options: tuple[tuple[str, str], ...] = ()
    quoted: tuple[str, ...] = ()
    speech: bool = False

    @property
    def objects(self) -> tuple[str, ...]:
        """Every COCO class the question names, in order."""
        return tuple(dict.fromkeys(c for g in self.groups for c in g))


def parse_time(text: str) -> float | None:
    """The first ``HH:MM:SS`` / ``MM:SS`` time (or ``at 30 s``) in ``text``, in seconds."""
    m = _TIME.search(text)
    if m:
        return int(m.group(1) or 0) * 3600 + int(m.group(2)) * 60 + int(m.group(3))
    m = _SECONDS.search(text)
    return float(m.group(1)) if m else None


def parse_options(text: str) -> tuple[tuple[str, str], ...]:
    """Multiple-choice options written one per line as ``A) ...`` / ``(B) ...`` / ``C. ...``."""
    out = []
    for line in text.splitlines():
        m = _OPTION.match(line)
        if m:
            out.append((m.group(1).upper(), m.group(2)))
    return tuple(out) if len(out) >= 2 else ()


def named_objects(text: str) -> tuple[tuple[tuple[str, ...], ...], tuple[str, ...]]:
    """Per object word in ``text``, the COCO classes it may be; and those words, in order."""
    low = " ".join(_WORD.findall(text.lower()))
    found: list[tuple[int, str, str]] = []
    taken: list[tuple[int, int]] = []
    names = sorted(set(COCO_CLASSES) | set(OBJECT_WORDS), key=len, reverse=True)
    for name in names:   # longest first: "cell phone" before "phone"
        variants = {name} if name in OBJECT_WORDS else {name, name + "s", name + "es"}
        for v in variants:
            for m in re.finditer(rf"\b{re.escape(v)}\b", low):
                if any(a < m.end() and m.start() < b for a, b in taken):
                    continue
                taken.append((m.start(), m.end()))
                found.append((m.start(), OBJECT_WORDS.get(name, (name,)), v))
    found.sort()
    groups: list[tuple[str, ...]] = []
    words: list[str] = []
    for _, g, w in found:
        if g not in groups:
            groups.append(g)
            words.append(w)
    return tuple(groups), tuple(words)


def parse_number(text: str) -> int | None:
    """The first count in ``text``: digits or a number word (``six``)."""
    for w in _WORD.findall(text.lower()):
        if w.isdigit():
            return int(w)
        if w in _NUMBER_WORDS:
            return _NUMBER_WORDS[w]
    return None


def parse_question(text: str) -> ParsedQuestion:
    """The kind of question ``text`` is, and what it names (see the module's docstring)."""
    options = parse_options(text)
    stem = "\n".join(ln for ln in text.splitlines() if not _OPTION.match(ln)) if options else text
    groups, words = named_objects(stem)
    at = parse_time(stem)
    first = bool(_FIRST.search(stem))
    quoted = tuple(m.strip() for m in _QUOTED.findall(stem))
    said = set(_WORD.findall(stem.lower()))
    speech = bool(said & SPEECH_WORDS) and not said & WRITTEN_WORDS
    if options:
        kind = "choice"
    elif _COUNT.search(stem):
        kind = "count"
    elif _WHEN.search(stem):
        kind = "when"
    elif quoted or _TEXT.search(stem) or _SAY_TEXT.search(stem):
        kind = "text"
    elif speech:
        kind = "speech"
    elif _SUMMARY.search(stem):
        kind = "summary"
    elif first and groups:
        kind = "when"
    else:
        kind = "what"
    return ParsedQuestion(kind=kind, at=at, first=first, groups=groups, words=words,
                          options=options, quoted=quoted, speech=speech)


def frame_match(frame_objects, groups: tuple[tuple[str, ...], ...]) -> list:
    """The detections of one frame (a :class:`~streamvid.types.FrameObjects`) that show every
    group of ``groups`` (one class of each); empty when some group is missing."""
    out = []
    for g in groups:
        hit = [d for d in frame_objects.objects if d.label in g]
        if not hit:
            return []
        out.extend(hit)
    return out

"""NIAH configuration (YAML) and the plan it expands to: haystacks, needles and questions.

A NIAH config file::

    name: niah-small
    seed: 0
    haystack:  {videos: [a.mp4, b.mp4], fps: 2.0, size: [640, 360], cache_dir: null}
    needles:   {dir: needles/, duration: 3.0, area: 0.08, text_area: 0.1, min_gap: 10.0,
                max_shift: 0.05, text: true, multihop: 1, multihop_k: 3}
    grid:      {lengths: [1m, 5m, 10m], depths: [0.0, 0.25, 0.5, 0.75, 1.0]}
    questions: {types: [image, when, text, choice, multihop, speech, speech_when], top_k: 5,
                time_tolerance: 5.0}

The types ``speech`` ("What did the speaker say the meeting day is?") and ``speech_when``
("When is Thursday mentioned?") hide one spoken sentence per depth in the haystack's sound
track (synthesised with espeak-ng).
    baseline:  null            # reserved: uniform sampling / pooling at the same token count
    pipeline:  configs/lite.yaml   # or a mapping with the sections of a streamvid Config
    pipeline_overrides: {retrieval.token_budget: 256}   # dotted keys applied on top

Comparisons (cache on/off, keep ratios, token budgets) are configs that differ only in
``pipeline``/``pipeline_overrides``; haystacks are shared, and so are indexes when only
query-time sections (retrieval, answer) differ.

Relative paths are read from the config file's folder. Lengths are seconds or strings such
as ``90s``, ``5m``, ``1h30m``. A video may also be an FFmpeg filter graph, ``lavfi:<graph>``
(e.g. ``lavfi:testsrc2=size=640x360:rate=2``): generated footage.

A ``general`` section turns the grid into a generalisation grid (see :mod:`.general`): it
varies what the grid above keeps fixed (needle size, position, opaque or cut-out, drawings
or photos, the footage) and asks image questions; ``grid`` is then left out::

    general:
      footage: {testsrc2: [lavfi:testsrc2=size=640x360:rate=2], handheld: [cup.mp4, box.mp4]}
      heights: [0.03, 0.08, 0.15, 0.3, 0.45, 0.6]     # needle height / frame height
      positions: [centre, top-left, ..., out-left]    # see general.POSITIONS
      pictures: [drawn-cutout, drawn-opaque, photo-opaque, photo-cutout]
      photos: [astronaut, coffee, rocket, chelsea]    # scikit-image sample photos
      repeats: 2                                      # each (height, position) this often

Planning shares work: for each haystack length, the needles of all depths (one image needle
per depth, one text sign per depth, and the multi-hop sets) go into as few videos as
possible. Each needle keeps at least ``min_gap`` seconds to its neighbours; a needle may
move by at most ``max_shift`` of the length away from its depth to fit, otherwise it opens
another video. Each video is indexed once and every question about its needles is asked
against the same index, so the cells (length, depth) share the index.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from streamvid.config import Config
from streamvid.errors import ConfigError

from .haystack import LAVFI, NeedleSpec, is_generated
from .needles import NeedleEntry, choose_needles, load_needle_set

QUESTION_TYPES = ("image", "when", "text", "choice", "multihop", "speech", "speech_when")
SPEECH_TYPES = ("speech", "speech_when")

# what a text sign says: "The <subject> is <value>"; the question asks for the subject
SIGN_SUBJECTS = ("wifi password", "door code", "meeting room", "secret word", "parking spot",
                 "locker number", "guest name", "train platform", "backup key", "lunch order",
                 "project name", "team colour")
# what a spoken needle says: "Please note that the <subject> is <word>."; "speech" asks what
# the speaker said the subject is, "speech_when" when the word is mentioned
SPEECH_SUBJECTS = ("meeting day", "code word", "team mascot", "holiday destination",
                   "favourite colour", "new instrument", "lunch dessert", "guest speaker city")
# (screened once: violin, dolphin and piano, which Whisper tiny.en mis-hears in espeak-ng's
# voice even alone, were left out; how well it hears running speech is measured by the word
# error rate in benchmarks/speech.py)
SPEECH_WORDS = ("Thursday", "Tuesday", "orange", "purple", "elephant", "guitar", "Paris",
                "Tokyo", "pineapple", "yellow", "tiger", "London", "Friday", "Berlin", "camel",
                "banana", "Madrid")
SPOKEN_MAX = 6.0       # seconds a spoken needle may take (its start keeps this from the end)
_VALUE_WORDS = ("tulip", "falcon", "cobalt", "maple", "orbit", "pepper", "harbor", "lemon",
                "quartz", "willow", "ember", "saffron", "glacier", "violet", "copper", "meadow")


# --------------------------------------------------------------------------- config


def parse_length(v: Any, where: str) -> float:
    """Seconds from a number or a string like ``90s``, ``5m``, ``1h30m``."""
    if isinstance(v, bool):
        raise ConfigError(f"{where}: expected a length (seconds or e.g. '5m', '1h'), got {v!r}")
    if isinstance(v, (int, float)):
        sec = float(v)
    elif isinstance(v, str):
        m = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", v)
        if not m or not any(m.groups()):
            raise ConfigError(f"{where}: expected a length such as 90, '90s', '5m', '1h30m', got {v!r}")
        h, mi, s = (float(g) if g else 0.0 for g in m.groups())
        sec = h * 3600 + mi * 60 + s
    else:
        raise ConfigError(f"{where}: expected a length (seconds or e.g. '5m', '1h'), got {v!r}")
    if sec <= 0:
        raise ConfigError(f"{where}: expected a length > 0, got {v!r}")
    return sec


def _section(data: Any, cls: type, where: str, base: Path) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    known = {f.name for f in dataclasses.fields(cls)}
    bad = sorted(set(data) - known)
    if bad:
        raise ConfigError(f"{where}: unknown key(s) {bad}; known: {sorted(known)}")
    return cls.from_mapping(dict(data), where, base)


@dataclass(frozen=True)
class HaystackSection:
    videos: tuple[str, ...]
    fps: float = 2.0
    size: tuple[int, int] = (640, 360)
    cache_dir: str | None = None

    @classmethod
    def from_mapping(cls, d: dict, where: str, base: Path) -> "HaystackSection":
        vids = d.get("videos")
        if isinstance(vids, str):
            vids = [vids]
        if not vids or not isinstance(vids, (list, tuple)):
            raise ConfigError(f"{where}.videos: expected a list of video files, got {vids!r}")
        videos = tuple(_video(v, f"{where}.videos", base) for v in vids)
        fps = float(d.get("fps", 2.0))
        if not 0 < fps <= 30:
            raise ConfigError(f"{where}.fps: expected in (0, 30], got {fps}")
        size = d.get("size", [640, 360])
        if (not isinstance(size, (list, tuple)) or len(size) != 2
                or not all(isinstance(s, int) and s >= 16 and s % 2 == 0 for s in size)):
            raise ConfigError(f"{where}.size: expected [width, height], even integers >= 16, got {size!r}")
        cache = d.get("cache_dir")
        return cls(videos, fps, (int(size[0]), int(size[1])),
                   str(_resolve(cache, base)) if cache else None)


@dataclass(frozen=True)
class NeedleSection:
    dir: str
    duration: float = 3.0
    area: float = 0.08
    text_area: float = 0.1
    text: bool = True
    min_gap: float = 10.0
    max_shift: float = 0.05
    multihop: int = 0
    multihop_k: int = 3

    @classmethod
    def from_mapping(cls, d: dict, where: str, base: Path) -> "NeedleSection":
        if "dir" not in d:
            raise ConfigError(f"{where}.dir: expected the folder of needle pictures; fix: set needles.dir")
        out = cls(dir=str(_resolve(d["dir"], base)),
                  **{k: v for k, v in d.items() if k != "dir"})
        checks = [("duration", out.duration, 0.1, 600), ("area", out.area, 0.001, 1.0),
                  ("text_area", out.text_area, 0.001, 1.0), ("min_gap", out.min_gap, 0.0, 3600),
                  ("max_shift", out.max_shift, 0.0, 1.0), ("multihop", out.multihop, 0, 100),
                  ("multihop_k", out.multihop_k, 2, 10)]
        for name, val, lo, hi in checks:
            if isinstance(val, bool) or not isinstance(val, (int, float)) or not lo <= val <= hi:
                raise ConfigError(f"{where}.{name}: expected a number in [{lo}, {hi}], got {val!r}")
        if not isinstance(out.text, bool):
            raise ConfigError(f"{where}.text: expected true or false, got {out.text!r}")
        return out


@dataclass(frozen=True)
class GridSection:
    lengths: tuple[float, ...]
    depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)

    @classmethod
    def from_mapping(cls, d: dict, where: str, base: Path) -> "GridSection":
        lens = d.get("lengths")
        if not lens or not isinstance(lens, (list, tuple)):
            raise ConfigError(f"{where}.lengths: expected a list of lengths, got {lens!r}")
        lengths = tuple(sorted({parse_length(v, f"{where}.lengths") for v in lens}))
        depths = d.get("depths", list(cls.depths))
        if (not isinstance(depths, (list, tuple)) or not depths
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x <= 1 for x in depths)):
            raise ConfigError(f"{where}.depths: expected a list of fractions in [0, 1], got {depths!r}")
        return cls(lengths, tuple(sorted({float(x) for x in depths})))


@dataclass(frozen=True)
class QuestionSection:
    types: tuple[str, ...] = ("image", "when", "text", "choice", "multihop")
    top_k: int = 5
    time_tolerance: float = 5.0

    @classmethod
    def from_mapping(cls, d: dict, where: str, base: Path) -> "QuestionSection":
        types = tuple(d.get("types", cls.types))
        bad = [t for t in types if t not in QUESTION_TYPES]
        if bad or not types:
            raise ConfigError(f"{where}.types: expected some of {list(QUESTION_TYPES)}, got {list(types)}")
        top_k = d.get("top_k", 5)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 3:
            raise ConfigError(f"{where}.top_k: expected an integer >= 3 (hit@3 needs 3), got {top_k!r}")
        tol = d.get("time_tolerance", 5.0)
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or tol < 0:
            raise ConfigError(f"{where}.time_tolerance: expected seconds >= 0, got {tol!r}")
        return cls(types, top_k, float(tol))


POSITIONS: dict[str, tuple[float, float, float]] = {
    # name: (x, y) of the needle's centre as fractions of the frame (0/1: on that edge), and
    # the fraction of its width/height left in view ("out-": partly outside the frame)
    "centre": (0.5, 0.5, 1.0),
    "top-left": (0.0, 0.0, 1.0), "top-right": (1.0, 0.0, 1.0),
    "bottom-left": (0.0, 1.0, 1.0), "bottom-right": (1.0, 1.0, 1.0),
    "top": (0.5, 0.0, 1.0), "bottom": (0.5, 1.0, 1.0), "left": (0.0, 0.5, 1.0), "right": (1.0, 0.5, 1.0),
    "out-left": (0.0, 0.5, 0.6), "out-right": (1.0, 0.5, 0.6),
    "out-top": (0.5, 0.0, 0.6), "out-bottom": (0.5, 1.0, 0.6),
}
PICTURES = ("drawn-cutout", "drawn-opaque", "photo-opaque", "photo-cutout")
PHOTOS = ("astronaut", "coffee", "rocket", "chelsea")   # scikit-image sample photos (skimage.data)
# ... and others that ship with scikit-image, for grids of other photos
PHOTO_CHOICES = PHOTOS + ("colorwheel", "hubble_deep_field", "immunohistochemistry", "retina")


@dataclass(frozen=True)
class GeneralSection:
    """The generalisation grid: footage by name, needle heights, positions, pictures, photos."""

    footage: tuple[tuple[str, tuple[str, ...]], ...]
    heights: tuple[float, ...] = (0.03, 0.08, 0.15, 0.3, 0.45, 0.6)
    positions: tuple[str, ...] = tuple(POSITIONS)
    pictures: tuple[str, ...] = PICTURES
    photos: tuple[str, ...] = PHOTOS
    repeats: int = 2

    @classmethod
    def from_mapping(cls, d: dict, where: str, base: Path) -> "GeneralSection":
        foot = d.get("footage")
        if not isinstance(foot, Mapping) or not foot:
            raise ConfigError(f"{where}.footage: expected a mapping of name: [videos], got {foot!r}")
        footage = []
        for name, vids in foot.items():
            if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9._-]+", name):
                raise ConfigError(f"{where}.footage: expected names of letters, digits, '.', '_' or '-', "
                                  f"got {name!r}")
            vids = [vids] if isinstance(vids, str) else vids
            if not vids or not isinstance(vids, (list, tuple)):
                raise ConfigError(f"{where}.footage.{name}: expected a list of videos, got {vids!r}")
            footage.append((name, tuple(_video(v, f"{where}.footage.{name}", base.resolve())
                                        for v in vids)))
        heights = d.get("heights", list(cls.heights))
        if (not isinstance(heights, (list, tuple)) or not heights or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x <= 1 for x in heights)):
            raise ConfigError(f"{where}.heights: expected fractions of the frame height in (0, 1], "
                              f"got {heights!r}")
        choices = (("positions", tuple(POSITIONS)), ("pictures", PICTURES), ("photos", PHOTO_CHOICES))
        picked = {}
        for key, allowed in choices:
            vals = d.get(key, list(getattr(cls, key)))
            if (not isinstance(vals, (list, tuple)) or not vals or any(v not in allowed for v in vals)
                    or len(set(vals)) != len(vals)):
                raise ConfigError(f"{where}.{key}: expected distinct names from {list(allowed)}, got {vals!r}")
            picked[key] = tuple(vals)
        repeats = d.get("repeats", cls.repeats)
        if isinstance(repeats, bool) or not isinstance(repeats, int) or not 1 <= repeats <= 20:
            raise ConfigError(f"{where}.repeats: expected an integer in [1, 20], got {repeats!r}")
        bad = sorted(set(d) - {"footage", "heights", "repeats", *picked})
        if bad:
            raise ConfigError(f"{where}: unknown key(s) {bad}")
        return cls(tuple(footage), tuple(float(h) for h in heights), repeats=repeats, **picked)


@dataclass(frozen=True)
class NiahConfig:
    """A whole NIAH run: the grid, the needles, the haystack footage and the pipeline config."""

    name: str
    haystack: HaystackSection
    needles: NeedleSection
    grid: GridSection
    questions: QuestionSection = field(default_factory=QuestionSection)
    pipeline: Config = field(default_factory=Config)
    seed: int = 0
    baseline: Mapping[str, Any] | None = None
    path: str = ""
    general: GeneralSection | None = None

    @classmethod
    def load(cls, path: str | Path) -> "NiahConfig":
        import yaml

        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"NIAH config {p} does not exist; fix: pass a YAML file such as configs/niah-small.yaml")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"NIAH config {p} is not valid YAML: {err}".splitlines()[0]) from err
        return cls.from_dict(data, base=p.parent, where=str(p), path=str(p))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, base: str | Path = ".", where: str = "niah config",
                  path: str = "") -> "NiahConfig":
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
        known = {"name", "seed", "haystack", "needles", "grid", "questions", "baseline", "pipeline",
                 "pipeline_overrides", "general"}
        bad = sorted(set(data) - known)
        if bad:
            raise ConfigError(f"{where}: unknown key(s) {bad}; known: {sorted(known)}")
        base = Path(base)
        name = data.get("name") or (Path(path).stem if path else "niah")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9._-]+", name):
            raise ConfigError(f"{where}.name: expected letters, digits, '.', '_' or '-', got {name!r}")
        seed = data.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"{where}.seed: expected an integer >= 0, got {seed!r}")
        pipe = data.get("pipeline")
        over = data.get("pipeline_overrides") or {}
        if not isinstance(over, Mapping):
            raise ConfigError(f"{where}.pipeline_overrides: expected a mapping of section.key: value, got {over!r}")
        if isinstance(pipe, str):
            pipeline = Config.load(_resolve(pipe, base), dict(over))
        elif pipe is None or isinstance(pipe, Mapping):
            pipeline = Config.from_dict(pipe or {}, where=f"{where}: pipeline")
            if over:
                merged = pipeline.to_dict()
                for key, val in over.items():
                    sec, _, name = str(key).partition(".")
                    if not name or sec not in merged:
                        raise ConfigError(f"{where}.pipeline_overrides: {key!r} is not section.key "
                                          f"(sections: {sorted(merged)})")
                    merged[sec][name] = val
                pipeline = Config.from_dict(merged, where=f"{where}: pipeline_overrides")
        else:
            raise ConfigError(f"{where}.pipeline: expected a mapping of config sections or a YAML path, got {pipe!r}")
        baseline = data.get("baseline")
        if baseline is not None:
            if not isinstance(baseline, Mapping) or baseline.get("kind") not in ("uniform_frames", "uniform_pool"):
                raise ConfigError(f"{where}.baseline: expected null or {{kind: uniform_frames|uniform_pool}}, "
                                  f"got {baseline!r}")
            raise ConfigError(f"{where}.baseline: the {baseline['kind']} baseline is not implemented yet; "
                              "fix: remove the baseline key")
        general = None
        data = dict(data)
        if data.get("general") is not None:
            general = _section(data["general"], GeneralSection, f"{where}: general", base)
            if "grid" in data:
                raise ConfigError(f"{where}: a generalisation grid (general) has no grid section; "
                                  "fix: remove grid")
            hay = data.get("haystack") or {}
            if not isinstance(hay, Mapping) or "videos" in hay:
                raise ConfigError(f"{where}: haystack.videos is general.footage in a generalisation "
                                  "grid; fix: list the videos under general.footage")
            data["haystack"] = {**hay, "videos": [v for _, vids in general.footage for v in vids]}
            data["grid"] = {"lengths": [general_length(general, data.get("needles") or {})]}
        if "haystack" not in data or "needles" not in data or "grid" not in data:
            raise ConfigError(f"{where}: expected the sections haystack, needles and grid")
        return cls(name=name, seed=seed,
                   haystack=_section(data["haystack"], HaystackSection, f"{where}: haystack", base),
                   needles=_section(data["needles"], NeedleSection, f"{where}: needles", base),
                   grid=_section(data["grid"], GridSection, f"{where}: grid", base),
                   questions=_section(data.get("questions"), QuestionSection, f"{where}: questions", base),
                   pipeline=pipeline, baseline=None, path=path, general=general)

    def to_dict(self) -> dict[str, Any]:
        # as JSON has it (lists), so that a run folder's record compares equal
        extra = {"general": json.loads(json.dumps(dataclasses.asdict(self.general)))} if self.general else {}
        return {**extra, "name": self.name, "seed": self.seed,
                "haystack": {**dataclasses.asdict(self.haystack), "videos": list(self.haystack.videos),
                             "size": list(self.haystack.size)},
                "needles": dataclasses.asdict(self.needles),
                "grid": {"lengths": list(self.grid.lengths), "depths": list(self.grid.depths)},
                "questions": {**dataclasses.asdict(self.questions), "types": list(self.questions.types)},
                "baseline": None, "pipeline": self.pipeline.to_dict()}

    def with_lengths(self, max_length: float | None) -> "NiahConfig":
        """The same config with the grid cut to lengths up to ``max_length`` seconds."""
        if max_length is None:
            return self
        lengths = tuple(x for x in self.grid.lengths if x <= max_length)
        if not lengths:
            raise ConfigError(f"{self.name}: no grid length is <= {max_length:g} s; "
                              f"the grid has {list(self.grid.lengths)}")
        return dataclasses.replace(self, grid=dataclasses.replace(self.grid, lengths=lengths))


def _video(v: Any, where: str, base: Path) -> str:
    """A haystack video: an existing file (relative to ``base``) or a ``lavfi:`` graph."""
    if isinstance(v, str) and is_generated(v):
        if len(v) <= len(LAVFI):
            raise ConfigError(f"{where}: {v!r} names no filter graph; fix: e.g. "
                              "lavfi:testsrc2=size=640x360:rate=2")
        return v
    p = str(_resolve(v, base))
    if not Path(p).is_file():
        raise ConfigError(f"{where}: {p} does not exist; fix: list existing video files "
                          "(relative paths are read from the config file's folder)")
    return p


def _resolve(p: Any, base: Path) -> Path:
    if not isinstance(p, str) or not p:
        raise ConfigError(f"expected a path, got {p!r}")
    q = Path(p).expanduser()
    return q if q.is_absolute() else (base / q)


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class PlannedNeedle:
    """A needle of the plan: what it is, the depth it stands for and its start time."""

    id: str
    kind: str
    label: str
    depth: float | None          # None for multi-hop needles (their own cell)
    start: float
    image: str | None = None
    text: str | None = None
    value: str = ""              # text needles: the answer (what follows "is")
    subject: str = ""            # text needles: what the question asks for
    category: str = ""
    height: float | None = None  # generalisation grid: fraction of the frame height ...
    position: tuple[float, float] | None = None   # ... centre (fractions of the frame) ...
    visible: float = 1.0         # ... and the fraction left in view (see NeedleSpec)

    def spec(self, duration: float, area: float) -> NeedleSpec:
        return NeedleSpec(kind=self.kind, label=self.label, image=self.image, text=self.text,
                          start=self.start, duration=duration, area=area, position=self.position,
                          height=self.height, visible=self.visible)


@dataclass(frozen=True)
class PlannedQuestion:
    """One question: its type, the needles it is about, its text/image, options and answer."""

    id: str
    qtype: str
    needles: tuple[str, ...]
    length: float
    depth: float | None
    text: str = ""
    image: str | None = None
    options: tuple[str, ...] = ()
    expected: str = ""           # text: the value; choice/multihop order: the option letter
    category: str = ""
    variant: tuple[tuple[str, str], ...] = ()   # generalisation grid: (factor, level) pairs

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["needles"] = list(self.needles)
        d["options"] = list(self.options)
        if self.variant:
            d["variant"] = dict(self.variant)
        else:
            del d["variant"]
        return d


@dataclass
class HaystackPlan:
    """One haystack video: its length, its seed and the needles and questions it carries."""

    length: float
    group: int
    seed: int
    needles: list[PlannedNeedle] = field(default_factory=list)
    questions: list[PlannedQuestion] = field(default_factory=list)
    videos: tuple[str, ...] = ()   # its own footage (generalisation grid); else the config's
    label: str = ""                # its name when set (generalisation grid: the footage's)

    @property
    def name(self) -> str:
        return self.label or f"L{self.length:g}-g{self.group}"


def _article(label: str) -> str:
    return "an" if label[:1].lower() in "aeiou" else "a"


def _fmt(t: float) -> str:
    t = int(round(t))
    return f"{t // 3600:02d}:{t % 3600 // 60:02d}:{t % 60:02d}"


def _value(rng: np.random.Generator) -> str:
    return f"{_VALUE_WORDS[int(rng.integers(len(_VALUE_WORDS)))]}-{int(rng.integers(10, 100))}"


def _options(right: str, distractors: Sequence[str], rng: np.random.Generator) -> tuple[tuple[str, ...], str]:
    opts = [right, *distractors[:3]]
    order = [int(i) for i in rng.permutation(len(opts))]
    shuffled = tuple(opts[i] for i in order)
    return shuffled, "ABCD"[shuffled.index(right)]


def options_text(question: str, options: Sequence[str]) -> str:
    return question + "\n" + "\n".join(f"{'ABCD'[i]}) {o}" for i, o in enumerate(options))


def plan(cfg: NiahConfig) -> list[HaystackPlan]:
    """Expand a config into haystack videos with placed needles and their questions."""
    if cfg.general is not None:
        from .general import plan_general

        return plan_general(cfg)
    entries = load_needle_set(cfg.needles.dir)
    ns = cfg.needles
    types = set(cfg.questions.types)
    plans: list[HaystackPlan] = []
    for li, length in enumerate(cfg.grid.lengths):
        if length < ns.duration + 1:
            raise ConfigError(f"{cfg.name}: grid length {length:g} s is too short for {ns.duration:g} s needles")
        rng = np.random.default_rng([cfg.seed, li, 0x9E1D])
        span = length - ns.duration
        n_img = len(cfg.grid.depths) if types & {"image", "when", "choice"} else 0
        n_hop = ns.multihop * ns.multihop_k if "multihop" in types else 0
        chosen: list[NeedleEntry] = choose_needles(entries, n_img + n_hop, cfg.seed * 1000 + li)
        wanted: list[PlannedNeedle] = []
        for di, depth in enumerate(cfg.grid.depths if n_img else ()):
            e = chosen[di]
            wanted.append(PlannedNeedle(f"img{di}", "image", e.label, depth, depth * span,
                                        image=e.path, category=e.category))
        if ns.text and "text" in types or ("choice" in types and ns.text):
            subjects = list(SIGN_SUBJECTS)
            for di, depth in enumerate(cfg.grid.depths):
                subj = subjects[int(rng.integers(len(subjects)))]
                subjects.remove(subj)
                if not subjects:
                    subjects = [s for s in SIGN_SUBJECTS if s != subj]
                val = _value(rng)
                wanted.append(PlannedNeedle(f"txt{di}", "text", f"sign {subj}", depth, depth * span,
                                            text=f"The {subj} is {val}", value=val, subject=subj,
                                            category="sign"))
        if types & set(SPEECH_TYPES):
            subjects = [SPEECH_SUBJECTS[int(i)] for i in rng.permutation(len(SPEECH_SUBJECTS))]
            said = [SPEECH_WORDS[int(i)] for i in rng.permutation(len(SPEECH_WORDS))]
            for di, depth in enumerate(cfg.grid.depths):
                subj, val = subjects[di % len(subjects)], said[di % len(said)]
                wanted.append(PlannedNeedle(f"spk{di}", "speech", f"said {val}", depth,
                                            min(depth * span, length - SPOKEN_MAX),
                                            text=f"Please note that the {subj} is {val}.",
                                            value=val, subject=subj, category="speech"))
        for h in range(n_hop // ns.multihop_k if n_hop else 0):
            for j in range(ns.multihop_k):
                e = chosen[n_img + h * ns.multihop_k + j]
                wanted.append(PlannedNeedle(f"hop{h}.{j}", "image", e.label, None,
                                            float(rng.uniform(0, span)), image=e.path, category=e.category))
        groups = _pack(wanted, length, ns)
        for g, needles in enumerate(groups):
            hp = HaystackPlan(length=length, group=g, seed=cfg.seed * 1000 + li * 10 + g, needles=needles)
            hp.questions = _questions(hp, cfg, rng)
            plans.append(hp)
    return plans


def _pack(wanted: Sequence[PlannedNeedle], length: float, ns: NeedleSection) -> list[list[PlannedNeedle]]:
    """Put needles into as few haystacks as possible, ``min_gap`` apart, moved at most ``max_shift``."""
    sep = ns.duration + ns.min_gap
    span = length - ns.duration
    max_move = ns.max_shift * length
    groups: list[list[PlannedNeedle]] = []
    # multi-hop sets must share one video: pack them first, together
    hop_sets: dict[str, list[PlannedNeedle]] = {}
    singles: list[PlannedNeedle] = []
    for n in wanted:
        if n.id.startswith("hop"):
            hop_sets.setdefault(n.id.split(".")[0], []).append(n)
        else:
            singles.append(n)

    def fits(group: list[PlannedNeedle], start: float) -> bool:
        return all(abs(start - m.start) >= sep - 1e-9 for m in group)

    for hs in hop_sets.values():
        placed: list[PlannedNeedle] = []
        for n in sorted(hs, key=lambda m: m.start):
            s = n.start
            if placed and s - placed[-1].start < sep:
                s = placed[-1].start + sep
            placed.append(dataclasses.replace(n, start=min(s, span)))
        for g in groups:
            if all(fits(g, m.start) for m in placed):
                g.extend(placed)
                break
        else:
            groups.append(list(placed))
    for n in singles:
        done = False
        cands = sorted({n.start, *[m.start + d for m in (x for g in groups for x in g) for d in (-sep, sep)]},
                       key=lambda s: abs(s - n.start))
        cands = [s for s in cands if 0 <= s <= span and abs(s - n.start) <= max_move + 1e-9]
        for g in groups:
            for s in cands:
                if fits(g, s):
                    g.append(dataclasses.replace(n, start=s))
                    done = True
                    break
            if done:
                break
        if not done:
            groups.append([n])
    return [sorted(g, key=lambda m: m.start) for g in groups]


def _questions(hp: HaystackPlan, cfg: NiahConfig, rng: np.random.Generator) -> list[PlannedQuestion]:
    types = cfg.questions.types
    ns = cfg.needles
    L = hp.length
    out: list[PlannedQuestion] = []
    qid = lambda n, t: f"{hp.name}-{n}-{t}"  # noqa: E731
    images = [n for n in hp.needles if n.kind == "image" and n.depth is not None]
    for n in images:
        q_when = f"When does {_article(n.label)} {n.label} appear?"
        if "image" in types:
            out.append(PlannedQuestion(qid(n.id, "image"), "image", (n.id,), L, n.depth, image=n.image,
                                       category=n.category))
        if "when" in types:
            out.append(PlannedQuestion(qid(n.id, "when"), "when", (n.id,), L, n.depth, text=q_when,
                                       category=n.category))
        if "choice" in types:
            right = _fmt(n.start + ns.duration / 2)
            distract = _time_distractors(n.start, L, ns.duration, rng)
            opts, letter = _options(right, distract, rng)
            out.append(PlannedQuestion(qid(n.id, "choice"), "choice", (n.id,), L, n.depth,
                                       text=options_text(q_when, opts), options=opts, expected=letter,
                                       category=n.category))
    for n in (m for m in hp.needles if m.kind == "text"):
        q = f"What is the {n.subject}?"
        if "text" in types:
            out.append(PlannedQuestion(qid(n.id, "text"), "text", (n.id,), L, n.depth, text=q,
                                       expected=n.value, category="sign"))
        if "choice" in types:
            distract: list[str] = []
            while len(distract) < 3:
                v = _value(rng)
                if v != n.value and v not in distract:
                    distract.append(v)
            opts, letter = _options(n.value, distract, rng)
            out.append(PlannedQuestion(qid(n.id, "choice"), "choice", (n.id,), L, n.depth,
                                       text=options_text(q, opts), options=opts, expected=letter,
                                       category="sign"))
    for n in (m for m in hp.needles if m.kind == "speech"):
        if "speech" in types:
            out.append(PlannedQuestion(qid(n.id, "speech"), "speech", (n.id,), L, n.depth,
                                       text=f"What did the speaker say the {n.subject} is?",
                                       expected=n.value, category="speech"))
        if "speech_when" in types:
            out.append(PlannedQuestion(qid(n.id, "speech_when"), "speech_when", (n.id,), L, n.depth,
                                       text=f"When is {n.value} mentioned?", expected=n.value,
                                       category="speech"))
    if "multihop" in types:
        sets: dict[str, list[PlannedNeedle]] = {}
        for n in hp.needles:
            if n.id.startswith("hop"):
                sets.setdefault(n.id.split(".")[0], []).append(n)
        for name, hs in sets.items():
            hs = sorted(hs, key=lambda m: m.id)  # listed in drawing order, not by time
            names = [f"{_article(m.label)} {m.label}" for m in hs]
            hs = sorted(hs, key=lambda m: m.start)
            listed = ", ".join(names[:-1]) + f" and {names[-1]}"
            out.append(PlannedQuestion(f"{hp.name}-{name}-all", "multihop", tuple(m.id for m in hs), L, None,
                                       text=f"When do {listed} appear?", category="multihop"))
            right = ", then ".join(m.label for m in hs)
            perms: list[str] = []
            labels = [m.label for m in hs]
            for _ in range(50):
                p = ", then ".join(labels[int(i)] for i in rng.permutation(len(labels)))
                if p != right and p not in perms:
                    perms.append(p)
                if len(perms) == 3:
                    break
            opts, letter = _options(right, perms, rng)
            out.append(PlannedQuestion(f"{hp.name}-{name}-order", "order", tuple(m.id for m in hs), L, None,
                                       text=options_text(f"In which order do {listed} appear?", opts),
                                       options=opts, expected=letter, category="multihop"))
    return out


def _time_distractors(start: float, length: float, duration: float, rng: np.random.Generator) -> list[str]:
    """Three times at least a tenth of the haystack (and 10 s) away from the needle and each other."""
    gap = max(10.0, length / 10)
    picked: list[float] = []
    for _ in range(200):
        t = float(rng.uniform(0, max(1.0, length - duration))) + duration / 2
        if abs(t - (start + duration / 2)) >= gap and all(abs(t - p) >= gap / 2 for p in picked):
            picked.append(t)
            if len(picked) == 3:
                break
    while len(picked) < 3:  # very short haystacks: evenly spread fallbacks far from the needle
        picked.append((start + duration / 2 + (len(picked) + 1) * length / 4) % length)
    return [_fmt(t) for t in picked]


def plan_fingerprint(plans: Sequence[HaystackPlan]) -> str:
    """A short hash of the questions planned (to refuse resuming a run with another plan)."""
    payload = [[_needle_json(n) for n in hp.needles] + [q.to_json() for q in hp.questions]
               for hp in plans]
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _needle_json(n: PlannedNeedle) -> dict[str, Any]:
    """A planned needle as plain data; fields added later are left out at their defaults."""
    d = dataclasses.asdict(n)
    for key, default in (("height", None), ("position", None), ("visible", 1.0)):
        if d[key] == default:
            del d[key]
    return d


def general_length(general: GeneralSection, needles: Mapping[str, Any]) -> float:
    """The length of each haystack of a generalisation grid: its share of the needles, each
    on screen ``needles.duration`` seconds with ``needles.min_gap`` seconds around it."""
    per = -(-general.repeats * len(general.heights) * len(general.positions) // len(general.footage))
    dur = float(needles.get("duration", NeedleSection.duration))
    gap = float(needles.get("min_gap", NeedleSection.min_gap))
    return per * (dur + gap) + gap

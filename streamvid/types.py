"""Values that travel between stages, and one small interface per stage.

Values are frozen dataclasses that validate themselves; a bad value raises
:class:`~streamvid.errors.ValidationError` whose message states what was expected and what
was got. Stateful stages take ``push(item)`` and ``flush()`` and return the items that are
ready, so the same code serves files (flush at the end) and endless streams (never flush).

Arrays are numpy. Shapes: tokens ``[N, D]`` float32 (or float16 in memory), pooled ``[D]``,
images ``[H, W, 3]`` uint8 RGB, upright.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from .errors import ValidationError
from .question import ParsedQuestion, parse_question

# --------------------------------------------------------------------------- helpers


def _check(cond: bool, what: str, expected: str, got: Any) -> None:
    if not cond:
        raise ValidationError(f"{what}: expected {expected}, got {got}")


def check_array(arr: Any, what: str, *, ndim: int | None = None, dtypes: Sequence[Any] = (),
                shape: Sequence[int | None] | None = None) -> None:
    """Raise ValidationError unless ``arr`` is an ndarray of the given rank/dtype/shape."""
    _check(isinstance(arr, np.ndarray), what, "a numpy array", type(arr).__name__)
    if ndim is not None:
        _check(arr.ndim == ndim, what, f"{ndim} dimensions", f"shape {arr.shape}")
    if dtypes:
        _check(any(arr.dtype == np.dtype(d) for d in dtypes), what,
               "dtype " + "/".join(np.dtype(d).name for d in dtypes), arr.dtype.name)
    if shape is not None:
        ok = len(shape) == arr.ndim and all(s is None or s == a for s, a in zip(shape, arr.shape))
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        _check(ok, what, f"shape {want}", f"{list(arr.shape)}")


def _finite_time(t: float, what: str) -> None:
    _check(isinstance(t, (int, float)) and math.isfinite(t) and t >= 0, what,
           "a finite time >= 0 in seconds", t)


def format_time(t: float) -> str:
    """Seconds -> ``HH:MM:SS`` (``HH:MM:SS.s`` would be noise in a moments list)."""
    t = max(0.0, float(t))
    h, rem = divmod(int(round(t)), 3600)
    m, s = divmod(rem, 60)
    return f"{h:02d}:{m:02d}:{s:02d}"


# --------------------------------------------------------------------------- read


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded frame: upright RGB pixels and its presentation time in seconds.

    ``pts`` comes from the container's presentation timestamps (never ``index / fps``).
    ``index`` counts frames delivered by the source (after sampling). ``recv_time`` is the
    wall-clock time (``time.time()``) at which a live source received it, else None.
    """

    pts: float
    index: int
    image: np.ndarray
    source_id: str = ""
    recv_time: float | None = None

    def __post_init__(self) -> None:
        _finite_time(self.pts, "Frame.pts")
        _check(isinstance(self.index, (int, np.integer)) and self.index >= 0, "Frame.index",
               "an int >= 0", self.index)
        check_array(self.image, "Frame.image", ndim=3, dtypes=(np.uint8,))
        _check(self.image.shape[2] == 3, "Frame.image", "[H, W, 3] RGB", list(self.image.shape))

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass(frozen=True, eq=False)
class AudioChunk:
    """A stretch of a source's audio track: mono float32 samples in [-1, 1] at ``rate`` Hz,
    the first one presented at ``start`` seconds (the same clock as the frames' ``pts``)."""

    start: float
    samples: np.ndarray  # [n] float32
    rate: int = 16000
    source_id: str = ""

    def __post_init__(self) -> None:
        _finite_time(self.start, "AudioChunk.start")
        check_array(self.samples, "AudioChunk.samples", ndim=1, dtypes=(np.float32,))
        _check(isinstance(self.rate, int) and self.rate > 0, "AudioChunk.rate", "an int > 0 (Hz)",
               self.rate)

    @property
    def end(self) -> float:
        return self.start + len(self.samples) / self.rate


@dataclass
class SourceStats:
    """Counters a source keeps while it runs (mutable: the source updates it)."""

    frames: int = 0             # frames delivered
    decode_errors: int = 0      # packets/frames that could not be decoded and were skipped
    dropped: int = 0            # frames dropped by a live source's bounded queue
    reconnects: int = 0         # successful reconnects of a live source
    gaps: list[tuple[float, float]] = field(default_factory=list)  # (pts before, pts after)
    ended_at: float | None = None  # pts of the last decodable frame when input ended early
    truncated: bool = False
    audio_errors: int = 0       # audio packets that could not be decoded and were skipped
    audio_dropped: int = 0      # audio chunks dropped by a live source's bounded queue


class FrameSource(ABC):
    """A video file, camera or stream, read as upright RGB frames.

    Use as a context manager and iterate. ``fps`` is the container's nominal rate (None if
    unknown), ``duration`` seconds (None when live or unknown).
    """

    uri: str = ""
    source_id: str = ""

    @property
    @abstractmethod
    def fps(self) -> Fraction | None: ...

    @property
    @abstractmethod
    def duration(self) -> float | None: ...

    @property
    def is_live(self) -> bool:
        return False

    @property
    def is_seekable(self) -> bool:
        return not self.is_live

    @property
    def stats(self) -> SourceStats:
        st = getattr(self, "_stats", None)
        if st is None:
            st = SourceStats()
            self._stats = st
        return st

    @abstractmethod
    def __iter__(self) -> Iterator[Frame]: ...

    # The audio side channel: sources with an audio track override these two.
    @property
    def has_audio(self) -> bool:
        """True when the source has an audio track that :meth:`read_audio` delivers."""
        return False

    def read_audio(self, until: float) -> list[AudioChunk]:
        """The audio not yet delivered that starts before ``until`` seconds, as 16 kHz mono
        chunks in presentation order (files decode up to there; live sources return what
        has arrived). ``math.inf`` reads to the end. Broken audio is logged and skipped."""
        return []

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- encode


@dataclass(frozen=True, eq=False)
class EncoderOutput:
    """A batch of encoded images: a spatial token grid and one pooled vector per image."""

    tokens: np.ndarray  # [B, N, D] float32, N = grid[0] * grid[1] (row-major)
    pooled: np.ndarray  # [B, D] float32
    grid: tuple[int, int]

    def __post_init__(self) -> None:
        check_array(self.tokens, "EncoderOutput.tokens", ndim=3, dtypes=(np.float32,))
        check_array(self.pooled, "EncoderOutput.pooled", ndim=2, dtypes=(np.float32,))
        b, n, d = self.tokens.shape
        _check(self.pooled.shape[0] == b, "EncoderOutput.pooled", f"batch {b}",
               self.pooled.shape[0])
        _check(n == self.grid[0] * self.grid[1], "EncoderOutput.tokens",
               f"{self.grid[0]}x{self.grid[1]}={self.grid[0] * self.grid[1]} tokens", n)


@dataclass(frozen=True)
class TokenSpec:
    """What a stored visual token is: which model's tower made it, taken where, in which space.

    ``model`` names the weights (hub name or path), ``feature_layer`` says where in the model
    the tokens were taken (e.g. ``"-1+projector+pool2x2"``), ``space`` the vector space they
    live in (``"llm:qwen2_5_vl:2048"`` for tokens a VideoLLM reads as input embeddings) and
    ``grid`` the (rows, cols) of one frame's tokens. It travels from the encoder into the
    store's manifest and from retrieval to the answerer, which refuses tokens of another tower.
    """

    model: str
    feature_layer: str
    space: str
    grid: tuple[int, int]

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "feature_layer": self.feature_layer, "space": self.space,
                "grid": [int(self.grid[0]), int(self.grid[1])]}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "TokenSpec":
        g = d["grid"]
        return cls(str(d["model"]), str(d["feature_layer"]), str(d["space"]), (int(g[0]), int(g[1])))

    def __str__(self) -> str:
        return (f"{self.model} (tokens from {self.feature_layer}, space {self.space}, "
                f"grid {self.grid[0]}x{self.grid[1]})")


class VisionEncoder(ABC):
    """Images -> token grid + pooled vector. ``model_id`` identifies weights for stores."""

    name: str = ""
    model_id: str = ""
    dim: int = 0                         # token / pooled dimension
    pooled_dim: int = 0                  # pooled dimension (== dim unless the model projects)
    grid: tuple[int, int] = (0, 0)       # token grid (rows, cols)
    input_size: tuple[int, int] = (224, 224)  # (height, width) fed to the network
    concurrent: bool = False             # encode may run on several threads at once, one core each

    @abstractmethod
    def encode(self, images: Sequence[np.ndarray]) -> EncoderOutput:
        """Encode a batch of ``[H, W, 3]`` uint8 RGB images of any size."""

    @property
    def token_spec(self) -> TokenSpec:
        """What this encoder's tokens are (recorded in stores; see :class:`TokenSpec`)."""
        return TokenSpec(self.model_id, "last", f"{self.name}:{self.dim}", tuple(self.grid))

    @property
    def supports_text(self) -> bool:
        """True when the model has a text tower aligned with ``pooled`` (CLIP, SigLIP)."""
        return False

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:  # pragma: no cover - optional
        raise NotImplementedError(f"encoder {self.name!r} has no text tower")

    def labels(self, pooled: np.ndarray, k: int = 5) -> list[list[tuple[str, float]]]:
        """Top-k class labels for pooled features, where the model has a classifier."""
        raise NotImplementedError(f"encoder {self.name!r} has no classifier")


class TextEncoder(ABC):
    """Text -> L2-normalised sentence vectors, for questions and clip descriptions."""

    name: str = ""
    model_id: str = ""
    dim: int = 0

    @abstractmethod
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``[B, dim]`` float32, each row unit length."""


@dataclass(frozen=True, eq=False)
class FrameFeatures:
    """Encoder output for one frame, from a fresh encode or from the feature cache.

    ``reused`` is True when the features were reused from an earlier frame (frame-level
    cache); ``tokens_recomputed`` is the fraction of tokens the encoder actually computed for
    this frame (1.0 for a full encode, 0.0 for a reused frame). ``change`` is the cheap
    change score against the previous frame (0 = identical), ``cut`` marks a scene cut.
    """

    pts: float
    index: int
    tokens: np.ndarray      # [N, D] float32
    pooled: np.ndarray      # [D] float32
    grid: tuple[int, int]
    reused: bool = False
    tokens_recomputed: float = 1.0
    change: float = 1.0
    cut: bool = False
    source_id: str = ""

    def __post_init__(self) -> None:
        _finite_time(self.pts, "FrameFeatures.pts")
        check_array(self.tokens, "FrameFeatures.tokens", ndim=2, dtypes=(np.float32,))
        check_array(self.pooled, "FrameFeatures.pooled", ndim=1, dtypes=(np.float32,))
        _check(self.tokens.shape[0] == self.grid[0] * self.grid[1], "FrameFeatures.tokens",
               f"{self.grid[0] * self.grid[1]} tokens for grid {self.grid}", self.tokens.shape[0])
        _check(0.0 <= self.tokens_recomputed <= 1.0, "FrameFeatures.tokens_recomputed",
               "a fraction in [0, 1]", self.tokens_recomputed)


class FeatureCache(ABC):
    """Frames in, features out; reuses work on frames that barely changed."""

    @abstractmethod
    def push(self, frame: Frame) -> list[FrameFeatures]:
        """Add a frame; return the features that are ready (batched internally)."""

    @abstractmethod
    def flush(self) -> list[FrameFeatures]:
        """Encode whatever is pending and return it."""

    @property
    def stats(self) -> Mapping[str, float]:
        return {}


# --------------------------------------------------------------------------- compress


@dataclass(frozen=True, eq=False)
class CompressedFrame:
    """The tokens of one frame that the pruner kept, with where they came from.

    ``positions`` index the frame's token grid (row-major). ``weights`` count how many
    original tokens each kept token stands for (1 unless dropped tokens were merged into it).
    """

    features: FrameFeatures
    tokens: np.ndarray        # [K, D] float32
    positions: np.ndarray     # [K] int32, indices into the grid
    weights: np.ndarray       # [K] float32
    is_keyframe: bool = False
    is_shot_boundary: bool = False
    novelty: float = 0.0

    def __post_init__(self) -> None:
        check_array(self.tokens, "CompressedFrame.tokens", ndim=2, dtypes=(np.float32,))
        k = self.tokens.shape[0]
        check_array(self.positions, "CompressedFrame.positions", shape=(k,),
                    dtypes=(np.int32, np.int64))
        check_array(self.weights, "CompressedFrame.weights", shape=(k,), dtypes=(np.float32,))
        n = self.features.tokens.shape[0]
        if k:
            _check(int(self.positions.min()) >= 0 and int(self.positions.max()) < n,
                   "CompressedFrame.positions", f"indices in [0, {n})",
                   f"[{self.positions.min()}, {self.positions.max()}]")

    @property
    def pts(self) -> float:
        return self.features.pts


class TokenPruner(ABC):
    """Keeps, per frame, the tokens that are new against spatial and temporal anchors."""

    @abstractmethod
    def push(self, features: FrameFeatures, *, is_keyframe: bool = False,
             is_shot_boundary: bool = False) -> list[CompressedFrame]: ...

    @abstractmethod
    def flush(self) -> list[CompressedFrame]: ...


class KeyframeSelector(ABC):
    """Decides which frames are keyframes (more tokens) and where shots change."""

    @abstractmethod
    def push(self, features: FrameFeatures, image: np.ndarray | None = None) -> list[tuple[FrameFeatures, bool, bool]]:
        """Return ``(features, is_keyframe, is_shot_boundary)`` for frames now decided."""

    @abstractmethod
    def flush(self) -> list[tuple[FrameFeatures, bool, bool]]: ...


# --------------------------------------------------------------------------- describe


@dataclass(frozen=True)
class Detection:
    """One object a detector found: its COCO class, score, and box ``(x0, y0, x1, y1)`` in
    fractions of the frame's width and height."""

    label: str
    score: float
    box: tuple[float, float, float, float]

    def __post_init__(self) -> None:
        x0, y0, x1, y1 = self.box
        _check(0 <= x0 <= x1 <= 1 and 0 <= y0 <= y1 <= 1, "Detection.box",
               "(x0, y0, x1, y1) fractions with x0 <= x1, y0 <= y1", self.box)

    def where(self) -> str:
        """Where in the frame, in words: ``left``, ``centre``, ``top right``, ..."""
        cx, cy = (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2
        v = "top " if cy < 1 / 3 else "bottom " if cy > 2 / 3 else ""
        h = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else "centre"
        return (v + h) if not (v and h == "centre") else v.strip()


@dataclass(frozen=True)
class FrameObjects:
    """The objects detected in one described frame at time ``time`` (seconds)."""

    time: float
    objects: tuple[Detection, ...] = ()

    def counts(self) -> dict[str, int]:
        """Objects per class, most first."""
        out: dict[str, int] = {}
        for d in self.objects:
            out[d.label] = out.get(d.label, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


@dataclass(frozen=True)
class Description:
    """What a frame shows, in words: class labels with probabilities, on-screen text and the
    objects a detector found (empty when no detector ran on it)."""

    labels: tuple[tuple[str, float], ...] = ()
    text: str = ""
    objects: tuple[Detection, ...] | None = None

    def as_text(self) -> str:
        parts = [f"{n} {name}" for name, n in FrameObjects(0.0, self.objects or ()).counts().items()]
        parts += [lbl for lbl, _ in self.labels]
        if self.text:
            parts.append(f'text: "{self.text}"')
        return "; ".join(parts)


@dataclass(frozen=True)
class SpeechSegment:
    """Words spoken between ``start`` and ``end`` seconds, with each word's own times."""

    start: float
    end: float
    text: str
    words: tuple[tuple[str, float, float], ...] = ()

    def __post_init__(self) -> None:
        _finite_time(self.start, "SpeechSegment.start")
        _check(math.isfinite(self.end) and self.end >= self.start, "SpeechSegment.end",
               f">= start ({self.start})", self.end)

    def said_between(self, start: float, end: float) -> str:
        """The words whose middle falls in ``[start, end)`` (the whole text when the segment
        has no word times and overlaps that span)."""
        if not self.words:
            return self.text if self.start < end and self.end > start else ""
        return " ".join(w for w, a, b in self.words if start <= (a + b) / 2 < end)

    def time_of(self, word: str) -> float | None:
        """When ``word`` (lower case, letters and digits) was said first, or None."""
        for w, a, _ in self.words:
            if "".join(ch for ch in w.lower() if ch.isalnum()) == word:
                return a
        return None


class Describer(ABC):
    name: str = ""

    @abstractmethod
    def describe(self, frame: Frame, features: FrameFeatures | None = None) -> Description: ...


# --------------------------------------------------------------------------- remember


@dataclass(frozen=True, eq=False)
class ClipMemory:
    """A few seconds of video, remembered.

    ``id`` is assigned by the store (-1 before). ``vector`` is the visual summary (unit
    length, the encoder's pooled space); ``text_vector`` embeds ``description`` with the text
    encoder (unit length) or is None. ``tokens`` are the kept visual tokens with their frame
    times and grid positions. ``speech`` holds the transcript segments that overlap the
    clip. ``level`` 0 is original; > 0 consolidated from ``merged``
    original clips covering ``start``..``end``. ``keyframe_jpeg`` is the picture at
    :attr:`keyframe` as a small JPEG (longer side at most 384 px), or None when the clip was
    stored without one. ``frame_pictures`` are ``(time, JPEG)`` of the clip's sampled frames
    at a larger size (``memory.frame_pictures``), where they changed, in time order: image
    questions search them for the query picture at any scale (``retrieval.pictures``).
    """

    source_id: str
    start: float
    end: float
    vector: np.ndarray                       # [Dv] float32
    keyframes: tuple[float, ...] = ()
    text_vector: np.ndarray | None = None    # [Dt] float32
    tokens: np.ndarray | None = None         # [K, D] float16/float32 (the encoder's token space)
    token_times: np.ndarray | None = None    # [K] float32 seconds
    token_positions: np.ndarray | None = None  # [K] int32 grid indices
    labels: tuple[tuple[str, float], ...] = ()
    ocr_text: str = ""
    description: str = ""
    novelty: float = 0.0
    level: int = 0
    merged: int = 1
    id: int = -1
    speech: tuple[SpeechSegment, ...] = ()   # what was said during the clip (whole segments)
    keyframe_jpeg: bytes | None = None
    objects: tuple[FrameObjects, ...] = ()   # per described frame, in time order
    text_times: tuple[float, ...] = ()       # when each line of ocr_text was first read (or empty)
    frame_pictures: tuple[tuple[float, bytes], ...] = ()   # (time, JPEG) of sampled frames

    def text_time(self, line: str) -> float:
        """When ``line`` (or the first ``ocr_text`` line it contains) was first read, else the keyframe."""
        lines = [ln.strip() for ln in self.ocr_text.split(" | ")]
        if len(lines) == len(self.text_times):
            for ln, t in zip(lines, self.text_times):
                if ln and ln in line:
                    return t
        return self.keyframe

    def __post_init__(self) -> None:
        _finite_time(self.start, "ClipMemory.start")
        _finite_time(self.end, "ClipMemory.end")
        _check(self.end >= self.start, "ClipMemory.end", f">= start ({self.start})", self.end)
        check_array(self.vector, "ClipMemory.vector", ndim=1, dtypes=(np.float32,))
        if self.text_vector is not None:
            check_array(self.text_vector, "ClipMemory.text_vector", ndim=1, dtypes=(np.float32,))
        if self.tokens is not None:
            check_array(self.tokens, "ClipMemory.tokens", ndim=2, dtypes=(np.float16, np.float32))
            k = self.tokens.shape[0]
            if self.token_times is not None:
                check_array(self.token_times, "ClipMemory.token_times", shape=(k,))
            if self.token_positions is not None:
                check_array(self.token_positions, "ClipMemory.token_positions", shape=(k,))
        _check(all(self.start - 1e-6 <= t <= self.end + 1e-6 for t in self.keyframes),
               "ClipMemory.keyframes", f"times within [{self.start}, {self.end}]", self.keyframes)
        _check(self.level >= 0 and self.merged >= 1, "ClipMemory.level/merged",
               "level >= 0 and merged >= 1", (self.level, self.merged))
        if self.keyframe_jpeg is not None:
            _check(isinstance(self.keyframe_jpeg, bytes) and self.keyframe_jpeg[:2] == b"\xff\xd8",
                   "ClipMemory.keyframe_jpeg", "JPEG bytes or None",
                   type(self.keyframe_jpeg).__name__)
        for t, jpeg in self.frame_pictures:
            _finite_time(t, "ClipMemory.frame_pictures time")
            _check(isinstance(jpeg, bytes) and jpeg[:2] == b"\xff\xd8",
                   "ClipMemory.frame_pictures", "(time, JPEG bytes) pairs", type(jpeg).__name__)

    @property
    def n_tokens(self) -> int:
        return 0 if self.tokens is None else int(self.tokens.shape[0])

    @property
    def keyframe(self) -> float:
        """The representative moment: the first keyframe, else the middle."""
        return self.keyframes[0] if self.keyframes else (self.start + self.end) / 2


class ClipBuilder(ABC):
    """Groups compressed frames (and their descriptions) into clip memories."""

    @abstractmethod
    def push(self, frame: CompressedFrame, description: Description | None = None) -> list[ClipMemory]: ...

    @abstractmethod
    def flush(self) -> list[ClipMemory]: ...


# --------------------------------------------------------------------------- recall / answer


@dataclass(frozen=True, eq=False)
class Question:
    """A text question, an image question, or both.

    ``parsed`` is what the text asks (:func:`streamvid.question.parse_question`): its kind
    (when, count, text, speech, summary, choice, what), the time it names, the objects it
    names; an image question alone asks *when*.

    ``image`` is ``[H, W, 3]`` uint8 RGB, or ``[H, W, 4]`` RGBA whose transparent pixels are
    not part of what is looked for (a cut-out object).
    """

    text: str = ""
    image: np.ndarray | None = None
    image_path: str = ""
    parsed: ParsedQuestion = field(init=False)   # what the text asks, read once (kind, time, objects)

    def __post_init__(self) -> None:
        _check(bool(self.text.strip()) or self.image is not None, "Question",
               "a text, an image or both", "neither")
        object.__setattr__(self, "parsed", parse_question(self.text) if self.text.strip()
                           else ParsedQuestion(kind="when"))
        if self.image is not None:
            check_array(self.image, "Question.image", ndim=3, dtypes=(np.uint8,))
            _check(self.image.shape[2] in (3, 4), "Question.image", "[H, W, 3] RGB or [H, W, 4] RGBA",
                   list(self.image.shape))


@dataclass(frozen=True, eq=False)
class ContextItem:
    """One retrieved clip in a Context, with its relevance and its share of the budget."""

    clip: ClipMemory
    score: float
    tokens: np.ndarray        # [k, D] the visual tokens given to the answerer (k <= clip's)
    token_times: np.ndarray   # [k] frame time of each token (s)
    is_anchor: bool = False
    rank: int = -1            # rank by score among the hits (0 = best), -1 for anchors
    token_positions: np.ndarray | None = None  # [k] row-major index in the frame's token grid

    def __post_init__(self) -> None:
        k = self.tokens.shape[0]
        check_array(self.token_times, "ContextItem.token_times", shape=(k,))
        if self.token_positions is not None:
            check_array(self.token_positions, "ContextItem.token_positions", shape=(k,))

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.shape[0])

    def coords(self, grid: tuple[int, int]) -> np.ndarray:
        """``[k, 3]`` (time s, row, col) of each token in a frame grid of ``grid`` (rows, cols);
        tokens without a recorded position (a pooled vector standing in for a clip) get -1."""
        pos = self.token_positions
        if pos is None:
            rc = np.full((self.n_tokens, 2), -1.0)
        else:
            pos = np.asarray(pos, np.int64)
            rc = np.stack([pos // grid[1], pos % grid[1]], axis=1).astype(np.float64)
        return np.concatenate([np.asarray(self.token_times, np.float64)[:, None], rc], axis=1)


@dataclass(frozen=True, eq=False)
class Context:
    """What the answerer sees: clips in chronological order within a fixed token budget."""

    items: tuple[ContextItem, ...]
    budget: int
    question: Question
    tokens: TokenSpec | None = None   # what the items' tokens are (from the store)

    def __post_init__(self) -> None:
        used = self.tokens_used
        _check(used <= self.budget, "Context", f"at most {self.budget} tokens", used)
        starts = [it.clip.start for it in self.items]
        _check(starts == sorted(starts), "Context.items", "chronological order", starts)

    @property
    def tokens_used(self) -> int:
        return sum(it.n_tokens for it in self.items)

    def hits(self) -> list[ContextItem]:
        """Retrieved (non-anchor) items, best first."""
        return sorted((it for it in self.items if not it.is_anchor), key=lambda it: -it.score)


@dataclass(frozen=True)
class Evidence:
    """A moment an answer rests on: its span, score, what it holds in words, the moment
    itself (``keyframe``: where the asked thing was seen or read) and its video."""

    start: float
    end: float
    score: float
    text: str
    keyframe: float
    clip_id: int = -1        # the store's id of the clip (its keyframe image, its tokens)
    source_id: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"source_id": self.source_id, "start": round(self.start, 3), "end": round(self.end, 3),
                "score": round(float(self.score), 4), "text": self.text,
                "keyframe": round(self.keyframe, 3), "clip_id": int(self.clip_id)}

    def line(self) -> str:
        """``vtest.avi 00:00:28–00:00:33  0.71  seen: 6 people …`` (one line of ``ask`` output)."""
        where = f"{self.source_id} " if self.source_id else ""
        return f"{where}{format_time(self.start)}–{format_time(self.end)}  {self.score:.2f}  {self.text}"


@dataclass(frozen=True)
class Answer:
    """An answer with its evidence (best first) and measurements.

    ``timings`` holds seconds and counts; the keys every answerer may set are
    ``prefill_s`` and ``generate_s`` (the model's time to read the context and to write the
    answer), ``visual_tokens`` (visual tokens given to the model) and ``images`` (pictures
    sent); an answerer leaves out what it cannot measure.
    """

    answer: str
    evidence: tuple[Evidence, ...]
    timings: Mapping[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"answer": self.answer, "evidence": [e.to_json() for e in self.evidence],
                "timings": {k: round(float(v), 4) for k, v in self.timings.items()}}


class Answerer(ABC):
    name: str = ""

    @abstractmethod
    def answer(self, question: Question, context: Context) -> Answer: ...

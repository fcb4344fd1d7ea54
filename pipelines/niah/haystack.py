"""Haystack videos: real footage, concatenated and looped to a length, with needles in the pixels.

:func:`build_haystack` reads any list of videos with PyAV (upright, sampled at the haystack
frame rate by presentation time), letterboxes every frame to one size, loops the list (its
order reshuffled with the seed on every pass) until the target length is reached, pastes the
needles into the frames they cover, and writes one H.264 (or MPEG-4 Part 2) file at a low
frame rate. A JSON sidecar ``<out>.json`` records the inputs' key and where every needle
went; building again with the same inputs returns the sidecar without touching the video.

Because needles live in the pixel stream, every stage downstream (decode, encoder, feature
cache, pruner, memory, retrieval) sees them exactly as it would see real content. Spoken
needles live in the sound track the same way: a haystack with any is written with an AAC
audio track (quiet noise, the sentences mixed in at their times).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from streamvid.errors import DecodeError, SourceError, StreamvidError, ValidationError
from streamvid.io import atomic_write_json, file_digest
from streamvid.progress import progress as progress_bar

from .needles import composite, load_rgba, render_sign, scale_to_area, scale_to_height

log = logging.getLogger(__name__)

FORMAT_VERSION = 1               # part of every cache key: bump when the pixels written change
_DIGEST_LIMIT = 8 << 20          # bytes of each input hashed for the cache key (plus its size)
_FRAME_CACHE_BYTES = 384 << 20   # sampled source frames kept in memory for looping


@dataclass(frozen=True)
class NeedleSpec:
    """What to hide and when.

    ``kind`` is ``"image"`` (``image`` is a picture path), ``"text"`` (``text`` is the
    sentence on a sign) or ``"speech"`` (``text`` is spoken with espeak-ng; it lasts as long
    as it takes to say, whatever ``duration`` is). ``start`` and ``duration`` are seconds of haystack time; ``area`` is
    the fraction of the frame area the needle covers, unless ``height`` gives its height as a
    fraction of the frame's; ``position`` is its centre as fractions of (width, height), or
    None for a seeded random place. ``visible`` below 1 puts a needle whose position is on an
    edge (a coordinate 0 or 1) partly outside the frame: that fraction of its width (height)
    stays in view.
    """

    kind: str
    label: str
    image: str | None = None
    text: str | None = None
    start: float = 0.0
    duration: float = 3.0
    area: float = 0.08
    position: tuple[float, float] | None = None
    height: float | None = None
    visible: float = 1.0

    def __post_init__(self) -> None:
        name = f"needle {self.label!r}"
        if self.kind not in ("image", "text", "speech"):
            raise ValidationError(f"{name}: kind expected 'image', 'text' or 'speech', got {self.kind!r}")
        if self.kind == "image" and not self.image:
            raise ValidationError(f"{name}: an image needle needs image=<path of a PNG/JPG>")
        if self.kind in ("text", "speech") and not (self.text or "").strip():
            raise ValidationError(f"{name}: a {self.kind} needle needs text=<the sentence>")
        if not (isinstance(self.start, (int, float)) and math.isfinite(self.start) and self.start >= 0):
            raise ValidationError(f"{name}: start expected a time >= 0 in seconds, got {self.start!r}")
        if not (isinstance(self.duration, (int, float)) and 0 < self.duration < math.inf):
            raise ValidationError(f"{name}: duration expected seconds > 0, got {self.duration!r}")
        if not (isinstance(self.area, (int, float)) and 0.0 < self.area <= 1.0):
            raise ValidationError(f"{name}: area expected a fraction of the frame in (0, 1], got {self.area!r}")
        if self.position is not None:
            pos = tuple(float(v) for v in self.position)
            if len(pos) != 2 or not all(0.0 <= v <= 1.0 for v in pos):
                raise ValidationError(f"{name}: position expected (x, y) fractions in [0, 1], "
                                      f"got {self.position!r}")
            object.__setattr__(self, "position", pos)
        if self.height is not None and not (isinstance(self.height, (int, float)) and 0 < self.height <= 1):
            raise ValidationError(f"{name}: height expected a fraction of the frame height in (0, 1], "
                                  f"got {self.height!r}")
        if not (isinstance(self.visible, (int, float)) and 0 < self.visible <= 1):
            raise ValidationError(f"{name}: visible expected a fraction in (0, 1], got {self.visible!r}")
        if self.visible < 1 and (self.position is None or not set(self.position) & {0.0, 1.0}):
            raise ValidationError(f"{name}: a partly visible needle needs a position on an edge "
                                  f"(x or y 0 or 1), got {self.position!r}")

    def key(self) -> dict[str, Any]:
        """The needle as plain data, with the picture's content hash instead of only its path."""
        d = dataclasses.asdict(self)
        if self.height is None:   # fields added later: absent at their default (same keys as before)
            del d["height"]
        if self.visible == 1.0:
            del d["visible"]
        if self.image:
            p = Path(self.image)
            if not p.is_file():
                raise SourceError(f"needle {self.label!r}: image {p} does not exist; "
                                  "fix: give the path of a PNG/JPG file")
            d["image"] = file_digest(p)
        if self.kind == "speech":
            from .speech import VOICE_KEY

            d["voice"] = VOICE_KEY
        return d


@dataclass(frozen=True)
class PlacedNeedle:
    """A needle as it was written: the spec's fields, its real interval and its pixel box.

    ``start``/``end`` are the haystack times of the first frame showing the needle and of the
    end of the last one (frame-aligned). ``box`` is ``(x0, y0, x1, y1)`` in pixels of the
    haystack frame, ``x1``/``y1`` exclusive (reaching outside the frame for a partly
    visible needle). ``position`` is the centre actually used.
    """

    kind: str
    label: str
    image: str | None
    text: str | None
    start: float
    duration: float
    area: float
    position: tuple[float, float]
    end: float
    box: tuple[int, int, int, int]

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["position"] = list(self.position)
        d["box"] = list(self.box)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "PlacedNeedle":
        d = dict(d)
        d["position"] = tuple(d["position"])
        d["box"] = tuple(int(v) for v in d["box"])
        return cls(**d)

    def overlaps(self, start: float, end: float) -> bool:
        """True when ``[start, end]`` shares time with this needle's interval."""
        return start < self.end and end > self.start


@dataclass(frozen=True)
class HaystackInfo:
    """A written haystack: the file, its length (s), frame rate, ``(width, height)`` and needles."""

    path: Path
    length: float
    fps: float
    size: tuple[int, int]
    needles: list[PlacedNeedle] = field(default_factory=list)
    frames: int = 0
    key: str = ""
    sources: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "path": str(self.path), "length": self.length,
                "fps": self.fps, "size": list(self.size), "frames": self.frames, "key": self.key,
                "sources": list(self.sources), "needles": [n.to_json() for n in self.needles]}

    @classmethod
    def from_json(cls, d: dict[str, Any], path: Path | None = None) -> "HaystackInfo":
        return cls(path=Path(path or d["path"]), length=float(d["length"]), fps=float(d["fps"]),
                   size=(int(d["size"][0]), int(d["size"][1])),
                   needles=[PlacedNeedle.from_json(n) for n in d["needles"]],
                   frames=int(d["frames"]), key=str(d["key"]), sources=list(d["sources"]))


def sidecar_path(out: str | Path) -> Path:
    """Where the JSON description of a haystack video lives."""
    p = Path(out)
    return p.with_name(p.name + ".json")


LAVFI = "lavfi:"   # a video named "lavfi:<filter graph>" is generated by FFmpeg's lavfi sources


def is_generated(video: str | Path) -> bool:
    """Whether a haystack video is an FFmpeg filter graph (``lavfi:testsrc2=size=640x360``)."""
    return str(video).startswith(LAVFI)


def haystack_key(videos: Sequence[str | Path], *, length: float, fps: float = 2.0,
                 size: tuple[int, int] = (640, 360), needles: Sequence[NeedleSpec] = (),
                 seed: int = 0) -> str:
    """A short hash of everything a haystack is built from (video and needle file contents)."""
    vids = []
    for v in videos:
        if is_generated(v):
            vids.append(str(v))
            continue
        p = Path(v)
        if not p.is_file():
            raise SourceError(f"haystack video {p} does not exist; fix: list existing video files")
        vids.append(file_digest(p, limit=_DIGEST_LIMIT))
    payload = {"v": FORMAT_VERSION, "videos": vids, "length": round(float(length), 6),
               "fps": round(float(fps), 6), "size": list(size), "seed": int(seed),
               "needles": [n.key() for n in needles]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def load_haystack(out: str | Path) -> HaystackInfo | None:
    """The sidecar of a finished haystack at ``out``, or None when there is none."""
    p = Path(out)
    side = sidecar_path(p)
    if not (p.is_file() and side.is_file()):
        return None
    try:
        d = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if d.get("format_version") != FORMAT_VERSION:
        return None
    return HaystackInfo.from_json(d, path=p)


# --------------------------------------------------------------------------- reading sources


def _letterbox_dims(w: int, h: int, size: tuple[int, int]) -> tuple[int, int]:
    tw, th = size
    s = min(tw / w, th / h)
    return max(2, int(round(w * s))) // 2 * 2, max(2, int(round(h * s))) // 2 * 2


def _upright_letterboxed(frame: Any, size: tuple[int, int]) -> np.ndarray:
    """A decoded PyAV frame as an upright RGB image letterboxed (black bars) into ``size``."""
    rot = int(round(getattr(frame, "rotation", 0) or 0)) % 360
    quarter = rot // 90 if rot % 90 == 0 else 0
    w, h = frame.width, frame.height
    uw, uh = (h, w) if quarter % 2 else (w, h)
    sw, sh = _letterbox_dims(uw, uh, size)
    rw, rh = (sh, sw) if quarter % 2 else (sw, sh)
    img = frame.to_ndarray(format="rgb24", width=rw, height=rh)
    if quarter:
        img = np.rot90(img, quarter)
    tw, th = size
    out = np.zeros((th, tw, 3), dtype=np.uint8)
    y0, x0 = (th - img.shape[0]) // 2, (tw - img.shape[1]) // 2
    out[y0:y0 + img.shape[0], x0:x0 + img.shape[1]] = img
    return out


def sample_video(path: str | Path, fps: float, size: tuple[int, int]) -> Iterator[np.ndarray]:
    """The frames of a video at ``fps``, chosen by presentation time, upright and letterboxed.

    Slot ``k`` (time ``k / fps`` from the first frame) shows the last frame whose timestamp is
    at or before it; the video ends after its last frame's display time.
    """
    import av

    p = Path(path)
    if not is_generated(path) and not p.is_file():
        raise SourceError(f"haystack video {p} does not exist; fix: list existing video files")
    try:
        if is_generated(path):   # endless unless the graph ends it (e.g. with trim)
            container = av.open(str(path)[len(LAVFI):], format="lavfi")
        else:
            container = av.open(str(p))
    except av.FFmpegError as err:
        raise SourceError(f"haystack video {p} cannot be opened ({err}); fix: give a readable video file") from err
    with container:
        if not container.streams.video:
            raise SourceError(f"{p} has no video stream; fix: give a video file")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        frame_dur = float(1 / rate) if rate else 1.0 / fps
        t0: float | None = None
        prev = None
        prev_img: np.ndarray | None = None
        last_t = 0.0
        k = 0
        n = 0
        try:
            for fr in container.decode(stream):
                if fr.time is None:
                    continue
                if t0 is None:
                    t0 = fr.time
                t = fr.time - t0
                if t < last_t - 1e-9:   # out-of-order timestamp: keep time monotonic
                    continue
                while prev is not None and k / fps < t - 1e-9:
                    if prev_img is None:
                        prev_img = _upright_letterboxed(prev, size)
                    yield prev_img
                    k += 1
                prev, prev_img, last_t = fr, None, t
                n += 1
        except av.FFmpegError as err:
            if prev is None:
                raise DecodeError(f"haystack video {p} could not be decoded ({err}); "
                                  "fix: re-encode it or leave it out") from err
            log.warning("%s: decoding stopped at %.2fs (%s); using the frames before it", p, last_t, err)
        if prev is None:
            raise DecodeError(f"haystack video {p} has no decodable frames; fix: re-encode it or leave it out")
        end = last_t + frame_dur
        while k / fps < end - 1e-9:
            if prev_img is None:
                prev_img = _upright_letterboxed(prev, size)
            yield prev_img
            k += 1


class _Footage:
    """Endless letterboxed frames from a list of videos, looped, order reshuffled per pass."""

    def __init__(self, videos: Sequence[str | Path], fps: float, size: tuple[int, int], seed: int):
        self.videos = list(videos)
        self.fps = fps
        self.size = size
        self.rng = np.random.default_rng([seed, 0x5EED])
        self.cache: dict[int, list[np.ndarray]] = {}
        self.cached_bytes = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        first = True
        while True:
            order = list(range(len(self.videos)))
            if len(order) > 1 and not first:
                order = [int(i) for i in self.rng.permutation(len(order))]
            first = False
            for i in order:
                if i in self.cache:
                    yield from self.cache[i]
                    continue
                keep: list[np.ndarray] | None = []
                for img in sample_video(self.videos[i], self.fps, self.size):
                    if keep is not None:
                        keep.append(img)
                        if self.cached_bytes + len(keep) * img.nbytes > _FRAME_CACHE_BYTES:
                            keep = None
                    yield img
                if keep:
                    self.cache[i] = keep
                    self.cached_bytes += sum(a.nbytes for a in keep)


# --------------------------------------------------------------------------- placing needles


def _sprite(spec: NeedleSpec, size: tuple[int, int]) -> np.ndarray | None:
    if spec.kind == "speech":
        return None
    rgba = load_rgba(spec.image) if spec.kind == "image" else render_sign(spec.text or "")
    if spec.height is not None:
        return scale_to_height(rgba, spec.height, size)
    return scale_to_area(rgba, spec.area, size)


def _place(specs: Sequence[NeedleSpec], sprites: Sequence[np.ndarray | None], *, length: float,
           fps: float, size: tuple[int, int], seed: int,
           spoken: Sequence[np.ndarray | None] = ()) -> list[PlacedNeedle]:
    total = max(1, int(round(length * fps)))
    fw, fh = size
    placed: list[PlacedNeedle] = []
    for i, (spec, spr) in enumerate(zip(specs, sprites)):
        if spr is None:   # spoken: from its start for as long as the sentence takes
            said = len(spoken[i]) / 16000 if i < len(spoken) and spoken[i] is not None else spec.duration
            if spec.start + said > length:
                raise ValidationError(f"needle {spec.label!r}: the sentence ({said:.1f} s from "
                                      f"{spec.start:.1f} s) runs past the haystack's end "
                                      f"({length:.2f} s); fix: start it earlier")
            placed.append(PlacedNeedle(
                kind=spec.kind, label=spec.label, image=None, text=spec.text, start=float(spec.start),
                duration=round(said, 3), area=spec.area, position=(0.5, 0.5),
                end=round(float(spec.start) + said, 3), box=(0, 0, 0, 0)))
            continue
        first = int(math.ceil(spec.start * fps - 1e-9))
        if first >= total:
            raise ValidationError(f"needle {spec.label!r}: start {spec.start:.2f}s is at or past the "
                                  f"haystack's end ({length:.2f}s); fix: start it earlier")
        count = max(1, int(round(spec.duration * fps)))
        last = min(total, first + count)
        if first + count > total:
            log.warning("needle %r: cut to the haystack's end (%.2fs)", spec.label, length)
        h, w = spr.shape[:2]
        rng = np.random.default_rng([seed, i, 0x4E1])
        busy = [n.box for n in placed if n.overlaps(first / fps, last / fps)]
        for attempt in range(32):
            if spec.position is not None:
                cx, cy = spec.position
            else:
                cx = float(rng.uniform(w / 2 / fw, 1 - w / 2 / fw)) if w < fw else 0.5
                cy = float(rng.uniform(h / 2 / fh, 1 - h / 2 / fh)) if h < fh else 0.5
            x0 = min(max(0, int(round(cx * fw - w / 2))), fw - w)
            y0 = min(max(0, int(round(cy * fh - h / 2))), fh - h)
            if spec.visible < 1:   # pushed over the edge it sits on
                out_w, out_h = int(round((1 - spec.visible) * w)), int(round((1 - spec.visible) * h))
                x0 = -out_w if cx == 0.0 else fw - w + out_w if cx == 1.0 else x0
                y0 = -out_h if cy == 0.0 else fh - h + out_h if cy == 1.0 else y0
            box = (x0, y0, x0 + w, y0 + h)
            if spec.position is not None or not any(_intersects(box, b) for b in busy):
                break
        placed.append(PlacedNeedle(
            kind=spec.kind, label=spec.label, image=spec.image, text=spec.text,
            start=first / fps, duration=spec.duration, area=spec.area,
            position=((x0 + w / 2) / fw, (y0 + h / 2) / fh), end=last / fps, box=box))
    return placed


def _intersects(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


# --------------------------------------------------------------------------- writing


def _open_audio(container: Any) -> Any:
    """An AAC mono 16 kHz stream in ``container``."""
    from .speech import RATE

    return container.add_stream("aac", rate=RATE, layout="mono")


def _write_audio(container: Any, astream: Any, track: Any, a: int, b: int) -> None:
    """Encode samples ``[a, b)`` of ``track`` into ``astream`` (``b`` None: flush)."""
    import av

    if b is not None and b > a:
        fr = av.AudioFrame.from_ndarray(track.block(a, b)[None, :], format="fltp", layout="mono")
        fr.sample_rate = astream.rate
        fr.pts = a
        fr.time_base = Fraction(1, astream.rate)
        packets = astream.encode(fr)
    else:
        packets = astream.encode(None)
    for pkt in packets:
        container.mux(pkt)


def _open_writer(path: Path, fps: float, size: tuple[int, int]) -> tuple[Any, Any, Fraction]:
    import av

    rate = Fraction(fps).limit_denominator(1001)
    fmt = {".mp4": "mp4", ".mkv": "matroska", ".mov": "mov", ".avi": "avi"}.get(path.suffix.lower())
    if fmt is None:
        raise ValidationError(f"haystack output {path}: expected a .mp4, .mkv, .mov or .avi name, "
                              f"got {path.suffix or 'no suffix'}")
    container = av.open(str(path), "w", format=fmt)
    try:
        stream = container.add_stream("libx264", rate=rate)
        stream.options = {"preset": "veryfast", "crf": "23"}
    except (av.FFmpegError, ValueError):
        log.info("libx264 is not available; writing the haystack with mpeg4")
        stream = container.add_stream("mpeg4", rate=rate)
        stream.options = {"qscale": "3"}
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    stream.codec_context.thread_count = 2
    return container, stream, rate


def build_haystack(videos: Sequence[str | Path], out: str | Path, *, length: float,
                   fps: float = 2.0, size: tuple[int, int] = (640, 360),
                   needles: Sequence[NeedleSpec] = (), seed: int = 0,
                   progress: bool = True) -> HaystackInfo:
    """Write a haystack video of ``length`` seconds at ``fps`` and ``size`` with ``needles`` in it.

    ``videos`` are played in order, then looped (reshuffled with ``seed`` on each further
    pass) until the length is reached. A haystack already at ``out`` that was built from the
    same inputs is returned as it is.
    """
    if not videos:
        raise ValidationError("build_haystack: expected at least one video, got none")
    if not (isinstance(length, (int, float)) and 0 < length < math.inf):
        raise ValidationError(f"build_haystack: length expected seconds > 0, got {length!r}")
    if not (isinstance(fps, (int, float)) and 0 < fps <= 60):
        raise ValidationError(f"build_haystack: fps expected in (0, 60], got {fps!r}")
    size = (int(size[0]), int(size[1]))
    if size[0] < 16 or size[1] < 16 or size[0] % 2 or size[1] % 2:
        raise ValidationError(f"build_haystack: size expected even (width, height) >= 16, got {size}")
    out = Path(out)
    paths = [v if is_generated(v) else Path(v) for v in videos]
    key = haystack_key(paths, length=length, fps=fps, size=size, needles=needles, seed=seed)
    done = load_haystack(out)
    if done is not None and done.key == key:
        log.info("haystack %s is up to date (key %s)", out, key)
        return done

    sprites = [_sprite(s, size) for s in needles]
    spoken = [None] * len(needles)
    if any(s.kind == "speech" for s in needles):
        from .speech import synthesise

        spoken = [synthesise(s.text or "") if s.kind == "speech" else None for s in needles]
    placed = _place(needles, sprites, length=length, fps=fps, size=size, seed=seed, spoken=spoken)
    total = max(1, int(round(length * fps)))
    by_frame: dict[int, list[int]] = {}
    for i, n in enumerate(placed):
        if sprites[i] is None:
            continue
        for k in range(int(round(n.start * fps)), int(round(n.end * fps))):
            by_frame.setdefault(k, []).append(i)

    out.parent.mkdir(parents=True, exist_ok=True)
    side = sidecar_path(out)
    if side.exists():
        side.unlink()
    tmp = out.with_name(f".{out.stem}.partial{out.suffix}")
    import av

    bar = progress_bar(total=total, desc=f"haystack {out.name}", unit="frame", enabled=progress)
    try:
        container, stream, rate = _open_writer(tmp, fps, size)
        tb = 1 / rate
        astream = track = None
        done = 0   # audio samples written
        if any(x is not None for x in spoken):
            from .speech import RATE, SoundTrack

            astream = _open_audio(container)
            track = SoundTrack([(n.start, x) for n, x in zip(placed, spoken) if x is not None], seed)
        with container:
            footage = iter(_Footage(paths, fps, size, seed))
            for k in range(total):
                img = next(footage)
                if k in by_frame:
                    img = img.copy()
                    for i in by_frame[k]:
                        x0, y0, _, _ = placed[i].box
                        composite(img, sprites[i], x0, y0)
                vf = av.VideoFrame.from_ndarray(img, format="rgb24")
                vf.pts = k
                vf.time_base = tb
                for pkt in stream.encode(vf):
                    container.mux(pkt)
                if astream is not None:
                    upto = int(round((k + 1) / fps * RATE))
                    while done + 1024 <= upto:   # AAC takes 1024 samples a frame
                        _write_audio(container, astream, track, done, done + 1024)
                        done += 1024
                bar.update(1)
            for pkt in stream.encode(None):
                container.mux(pkt)
            if astream is not None:
                end = int(round(total / fps * RATE))
                if end > done:
                    _write_audio(container, astream, track, done, end)
                _write_audio(container, astream, track, end, None)
        os.replace(tmp, out)
    except av.FFmpegError as err:
        raise StreamvidError(f"haystack {out} could not be written ({err}); "
                             "fix: check the output folder is writable and has space") from err
    finally:
        bar.close()
        if tmp.exists():
            tmp.unlink()
    info = HaystackInfo(path=out, length=total / fps, fps=float(fps), size=size, needles=placed,
                        frames=total, key=key, sources=[str(p) for p in paths])
    atomic_write_json(side, info.to_json())
    log.info("wrote haystack %s: %d frames, %d needles", out, total, len(placed))
    return info

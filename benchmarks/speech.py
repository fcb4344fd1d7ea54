"""Speech memory: indexing speed with continuous speech (ASR on) and the word error rate of
the transcripts on synthesised speech.

A recording is made once (cached under benchmarks/_work/): the development footage in
../shared/media/videos looped to ``--minutes`` at 640x360, 2 fps, with a sound track of
sentences spoken back to back by espeak-ng (a seeded text from templates, 0.4 s between
sentences). It is indexed with the default lite config (ASR on, labels and OCR on, 1 fps);
the stored transcript is compared with the text.

    python benchmarks/speech.py [--minutes 5] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared" / "media" / "videos"
VIDEOS = ["world.mp4", "vtest.avi", "cityCC0.mpg", "bigbuckbunny.mp4"]
PAUSE = 0.4

_TEMPLATES = (
    "The {who} will review the {thing} on {day} morning.",
    "We moved the {thing} meeting to {day} because the {who} was away.",
    "Please send the {thing} report to the {who} before {day}.",
    "On {day} the {who} asked about the {colour} {thing}.",
    "The {colour} folder holds the notes for the {thing} project.",
    "Our {who} thinks the {thing} plan needs another week.",
    "Remember that the {thing} review starts at {hour} o'clock on {day}.",
    "The {who} said the {colour} samples arrived late again.",
    "Let us look at the {thing} numbers for {month} first.",
    "In {month} the {who} will present the new {thing} design.",
)
_WORDS = {
    "who": ["manager", "designer", "engineer", "director", "teacher", "doctor", "driver", "lawyer"],
    "thing": ["budget", "garden", "kitchen", "marketing", "travel", "safety", "library", "website"],
    "day": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"],
    "colour": ["red", "green", "blue", "yellow", "purple", "orange", "brown"],
    "hour": ["two", "three", "four", "five", "nine", "ten", "eleven"],
    "month": ["January", "March", "April", "June", "August", "October"],
}


def script(n: int, seed: int = 0) -> list[str]:
    """``n`` sentences from the templates, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        t = _TEMPLATES[int(rng.integers(len(_TEMPLATES)))]
        out.append(t.format(**{k: v[int(rng.integers(len(v)))] for k, v in _WORDS.items()}))
    return out


def norm_words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower().replace("o'clock", "oclock"))


def wer(ref: list[str], hyp: list[str]) -> tuple[float, int, int]:
    """Word error rate (substitutions + deletions + insertions) / reference words."""
    d = np.arange(len(hyp) + 1)
    for i, r in enumerate(ref, 1):
        prev, d[0] = d.copy(), i
        for j, h in enumerate(hyp, 1):
            d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (r != h))
    return float(d[-1]) / max(1, len(ref)), int(d[-1]), len(ref)


def make_recording(minutes: float, out: Path) -> tuple[Path, list[tuple[float, str]]]:
    """The looped footage with sentences spoken back to back; ``(start, sentence)`` pairs."""
    from pipelines.niah.haystack import NeedleSpec, build_haystack
    from pipelines.niah.speech import synthesise

    length = minutes * 60
    spoken, t = [], 1.0
    for s in script(10_000):
        n = len(synthesise(s)) / 16000
        if t + n > length - 1:
            break
        spoken.append((round(t, 3), s))
        t += n + PAUSE
    needles = [NeedleSpec(kind="speech", label=f"s{i}", text=s, start=t0)
               for i, (t0, s) in enumerate(spoken)]
    build_haystack([SHARED / v for v in VIDEOS], out, length=length, fps=2.0, needles=needles,
                   seed=0, progress=True)
    return out, spoken


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from pipelines.index import index_video
    from pipelines.models import Models
    from memory.store import MemoryStore
    from streamvid.config import Config

    missing = [v for v in VIDEOS if not (SHARED / v).exists()]
    if missing:
        sys.exit(f"videos not found in {SHARED}: {missing}")
    load_before = os.getloadavg()
    video, spoken = make_recording(args.minutes, ROOT / "benchmarks" / "_work" /
                                   f"speech_{args.minutes:g}min.mp4")
    config = Config()
    models = Models(config)
    t = time.perf_counter()
    _ = models.encoder, models.text_encoder, models.describer, models.recogniser
    load_s = time.perf_counter() - t
    store_dir = Path(tempfile.mkdtemp(prefix="speech-bench-")) / "store"
    try:
        load_start = os.getloadavg()
        summary = index_video(str(video), store_dir, config, models=models, progress=True)
        load_end = os.getloadavg()
        with MemoryStore.open(store_dir) as store:
            segs = sorted({s for c in store.get(store.ids()) for s in c.speech},
                          key=lambda s: (s.start, s.end))
    finally:
        shutil.rmtree(store_dir.parent, ignore_errors=True)
    ref = norm_words(" ".join(s for _, s in spoken))
    hyp = norm_words(" ".join(s.text for s in segs))
    rate, errors, n_ref = wer(ref, hyp)
    res = {
        "machine": f"{platform.machine()} {os.cpu_count()}-core CPU, no GPU, shared with other jobs",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average": {"before": [round(x, 2) for x in load_before],
                         "start": [round(x, 2) for x in load_start],
                         "end": [round(x, 2) for x in load_end]},
        "video": video.name, "minutes": args.minutes, "sentences": len(spoken),
        "model_load_s": round(load_s, 2),
        "summary": summary.to_json(),
        "x_realtime": round(summary.x_realtime, 2),
        "wer": round(rate, 4), "word_errors": errors, "reference_words": n_ref,
        "transcript_segments": len(segs),
        "examples": [{"said": s, "heard": " ".join(g.text for g in segs if t0 - 0.5 <= g.start < t0 + 3)}
                     for t0, s in spoken[:5]],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "speech.json").write_text(json.dumps(res, indent=2) + "\n")
    st = summary.stage_seconds
    lines = [
        "# Speech memory benchmark (speech)", "",
        f"{res['machine']}, {res['date']}. Load average (1/5/15 min) at the start "
        f"{'/'.join(map(str, res['load_average']['start']))}, at the end "
        f"{'/'.join(map(str, res['load_average']['end']))}.",
        f"{video.name}: {args.minutes:g} min of the development footage looped at 640x360, 2 fps, "
        f"with {len(spoken)} espeak-ng sentences spoken back to back ({PAUSE} s apart) in its "
        "sound track; default lite config (ASR on: Whisper tiny.en int8, beam 1; labels, OCR, "
        "1 fps).", "",
        "| measure | value |", "|---|---|",
        f"| video duration | {summary.duration:.0f} s |",
        f"| wall time | {summary.seconds:.1f} s |",
        f"| **x real time (ASR on)** | **{summary.x_realtime:.1f}x** |",
        f"| audio / voiced (transcribed) | {summary.audio_seconds:.0f} s / {summary.voiced_seconds:.0f} s |",
        f"| transcript segments stored | {summary.speech_segments} |",
        f"| transcription time (its own thread, overlapped) | {summary.asr_seconds:.1f} s |",
        f"| **word error rate** | **{100 * rate:.1f} %** ({errors} errors / {n_ref} words) |",
        f"| model load (not counted) | {load_s:.1f} s |",
        "", "| stage (frame thread) | time |", "|---|---|",
        *[f"| {k} | {v:.1f} s |" for k, v in st.items()],
        "", "`speech` is the time the frame loop waited to hand audio to the transcription "
        "thread (its queue was full); transcription itself runs in that thread.", "",
        "| said | heard |", "|---|---|",
        *[f"| {e['said']} | {e['heard']} |" for e in res["examples"]],
    ]
    (out / "speech.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

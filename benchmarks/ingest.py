"""Ingest speed: index a 10-minute 720p video on the lite profile; x real time and per stage.

The video is made once (cached under benchmarks/_work/) by concatenating and looping the real
footage in ../shared/media/videos (or --videos), each scaled and letterboxed to 1280x720,
encoded as H.264 at 25 fps. Then ``streamvid index`` runs on it at 1 fps sampling.

    python benchmarks/ingest.py [--minutes 10] [--fps 1] [--no-cache] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared" / "media" / "videos"
DEFAULT_VIDEOS = ["vtest.avi", "world.mp4", "cup.mp4", "bigbuckbunny.mp4", "box.mp4",
                  "cityCC0.mpg", "display-dual-monitors.webm"]


def letterbox(img: np.ndarray, w: int, h: int) -> np.ndarray:
    from PIL import Image

    ih, iw = img.shape[:2]
    s = min(w / iw, h / ih)
    nw, nh = max(1, round(iw * s)), max(1, round(ih * s))
    small = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR))
    out = np.zeros((h, w, 3), np.uint8)
    y, x = (h - nh) // 2, (w - nw) // 2
    out[y:y + nh, x:x + nw] = small
    return out


def make_video(videos: list[Path], out: Path, minutes: float, fps: int = 25) -> Path:
    """Concatenate and loop ``videos`` to ``minutes`` of 1280x720 H.264 at ``fps``."""
    import av

    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.mp4")
    total = int(minutes * 60 * fps)
    container = av.open(str(tmp), "w")
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
    stream.options = {"preset": "ultrafast", "crf": "26"}
    n = 0
    while n < total:
        for path in videos:
            with av.open(str(path)) as src:
                vs = src.streams.video[0]
                vs.thread_type = "AUTO"
                try:
                    for frame in src.decode(vs):
                        img = letterbox(frame.to_ndarray(format="rgb24"), 1280, 720)
                        vf = av.VideoFrame.from_ndarray(img, format="rgb24")
                        vf.pts = n
                        vf.time_base = Fraction(1, fps)
                        for pkt in stream.encode(vf):
                            container.mux(pkt)
                        n += 1
                        if n >= total:
                            break
                except av.error.InvalidDataError:
                    pass
            if n >= total:
                break
    for pkt in stream.encode():
        container.mux(pkt)
    container.close()
    tmp.rename(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--fps", type=float, default=1.0)
    ap.add_argument("--no-cache", action="store_true")
    ap.add_argument("--videos", nargs="*", default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from pipelines.index import index_video
    from pipelines.models import Models
    from streamvid.config import Config

    videos = [Path(v) for v in args.videos] if args.videos else [SHARED / v for v in DEFAULT_VIDEOS]
    missing = [str(v) for v in videos if not v.exists()]
    if missing:
        sys.exit(f"videos not found: {missing}; pass --videos")
    work = ROOT / "benchmarks" / "_work"
    video = make_video(videos, work / f"ingest_720p_{args.minutes:g}min.mp4", args.minutes)

    config = Config.load(None, {"source.fps": args.fps, "cache.enabled": not args.no_cache})
    t = time.perf_counter()
    models = Models(config)
    _ = models.encoder, models.text_encoder, models.describer
    load_s = time.perf_counter() - t
    store = Path(tempfile.mkdtemp(prefix="ingest-bench-")) / "store"
    try:
        summary = index_video(str(video), store, config, models=models, progress=True)
    finally:
        shutil.rmtree(store.parent, ignore_errors=True)
    res = {
        "machine": f"{platform.machine()} {os.cpu_count()}-core CPU, no GPU",
        "date": time.strftime("%Y-%m-%d"),
        "video": f"{video.name}: {args.minutes:g} min 1280x720 H.264 25 fps",
        "sample_fps": args.fps,
        "cache": not args.no_cache,
        "model_load_s": round(load_s, 2),
        **summary.to_json(),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "ingest" + ("-nocache" if args.no_cache else "")
    (out / f"{tag}.json").write_text(json.dumps(res, indent=1))
    rows = "\n".join(f"| {k} | {v:.1f} s | {100 * v / summary.seconds:.0f} % |"
                     for k, v in summary.stage_seconds.items())
    md = (f"# Ingest benchmark ({tag})\n\n{res['machine']}, {res['date']}. {res['video']}, "
          f"sampled at {args.fps:g} fps, feature cache {'on' if res['cache'] else 'off'}.\n\n"
          f"| measure | value |\n|---|---|\n"
          f"| video duration | {summary.duration:.0f} s |\n| wall time | {summary.seconds:.1f} s |\n"
          f"| **x real time** | **{summary.x_realtime:.1f}x** |\n| frames | {summary.frames} |\n"
          f"| frames reused by the cache | {summary.frames_reused} |\n| clips | {summary.clips} |\n"
          f"| frames described (labels/OCR) | {summary.described} |\n"
          f"| tokens kept per minute | {summary.tokens_per_minute:.0f} |\n"
          f"| model load (not counted) | {load_s:.1f} s |\n\n"
          f"| stage | time | share |\n|---|---|---|\n{rows}\n")
    (out / f"{tag}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()

"""Ingest speed: index a 10-minute 720p video on the lite profile; x real time and per stage,
against reading the frames alone (decode only) in the same run, with the stages overlapped
(``source.overlap``, the default) and one after another.

The video is made once (cached under benchmarks/_work/) by concatenating and looping the real
footage in ../shared/media/videos (or --videos), each scaled and letterboxed to 1280x720,
encoded as H.264 at 25 fps. Then ``streamvid index`` runs on it at 1 fps sampling.

    python benchmarks/ingest.py [--minutes 10] [--fps 1] [--no-cache] [--overlapped-only]
                                 [--out benchmarks/results]
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
    ap.add_argument("--overlapped-only", action="store_true",
                    help="skip the run with the stages one after another (source.overlap: false)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from pipelines.models import Models
    from streamvid.config import Config

    videos = [Path(v) for v in args.videos] if args.videos else [SHARED / v for v in DEFAULT_VIDEOS]
    missing = [str(v) for v in videos if not v.exists()]
    if missing:
        sys.exit(f"videos not found: {missing}; pass --videos")
    work = ROOT / "benchmarks" / "_work"
    video = make_video(videos, work / f"ingest_720p_{args.minutes:g}min.mp4", args.minutes)

    sets = {"source.fps": args.fps, "cache.enabled": not args.no_cache}
    config = Config.load(None, sets)
    t = time.perf_counter()
    models = Models(config)
    _ = models.encoder, models.text_encoder, models.describer
    load_s = time.perf_counter() - t
    decode_s = decode_only(video, config)
    runs = {}
    for name, overlapped in (("overlapped", True), ("sequential", False))[:1 if args.overlapped_only else 2]:
        cfg = Config.load(None, {**sets, "source.overlap": overlapped})
        runs[name] = index_once(video, cfg, models)
    summary, cpu_s = runs["overlapped"]
    res = {
        "machine": f"{platform.machine()} {os.cpu_count()}-core CPU, no GPU",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average": os.getloadavg(),
        "video": f"{video.name}: {args.minutes:g} min 1280x720 H.264 25 fps",
        "sample_fps": args.fps,
        "cache": not args.no_cache,
        "model_load_s": round(load_s, 2),
        "decode_only_s": round(decode_s, 3),
        "decode_only_x_realtime": round(summary.duration / decode_s, 2),
        "wall_over_decode_only": round(summary.seconds / decode_s, 2),
        "cpu_s": round(cpu_s, 2),
        **summary.to_json(),
        "runs": {name: {"seconds": round(s.seconds, 3), "x_realtime": round(s.x_realtime, 2),
                        "cpu_s": round(c, 2), "clips": s.clips,
                        "describe_counts": getattr(s, "describe_counts", {}),
                        "stage_seconds": {k: round(v, 3) for k, v in s.stage_seconds.items()}}
                 for name, (s, c) in runs.items()},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "ingest" + ("-nocache" if args.no_cache else "")
    (out / f"{tag}.json").write_text(json.dumps(res, indent=1))
    names = list(runs)
    head = " | ".join(names)
    stages = list(dict.fromkeys(k for s, _ in runs.values() for k in s.stage_seconds))
    rows = "\n".join(
        f"| {k} | " + " | ".join(f"{s.stage_seconds.get(k, 0.0):.1f} s ({100 * s.stage_seconds.get(k, 0.0) / s.seconds:.0f} %)"
                                 for s, _ in runs.values()) + " |" for k in stages)
    wall = " | ".join(f"{s.seconds:.1f} s" for s, _ in runs.values())
    xrt = " | ".join(f"**{s.x_realtime:.1f}x**" for s, _ in runs.values())
    cpu = " | ".join(f"{c:.1f} s" for _, c in runs.values())
    counts = getattr(summary, "describe_counts", {})
    work = ", ".join(f"{k} {v}" for k, v in counts.items())
    md = (f"# Ingest benchmark ({tag})\n\n{res['machine']}, {res['date']}, load average "
          f"{res['load_average'][0]:.2f} at the end (the machine is shared). {res['video']}, "
          f"sampled at {args.fps:g} fps, feature cache {'on' if res['cache'] else 'off'}, "
          f"default (lite) profile.\n\n"
          f"| measure | value |\n|---|---|\n"
          f"| video duration | {summary.duration:.0f} s |\n"
          f"| decode only (same video, same sampling, same run) | {decode_s:.1f} s "
          f"({summary.duration / decode_s:.1f}x real time) |\n"
          f"| wall time, overlapped | {summary.seconds:.1f} s |\n"
          f"| **x real time, overlapped** | **{summary.x_realtime:.1f}x** |\n"
          f"| wall time / decode only | {summary.seconds / decode_s:.2f} |\n"
          f"| frames | {summary.frames} |\n"
          f"| frames reused by the cache | {summary.frames_reused} |\n| clips | {summary.clips} |\n"
          f"| frames described (labels/OCR/objects) | {summary.described} |\n"
          f"| tokens kept per minute | {summary.tokens_per_minute:.0f} |\n"
          f"| model load (not counted) | {load_s:.1f} s |\n\n"
          f"Time per stage (busy seconds of its thread, and their share of the wall time: "
          f"overlapped stages run at once, so the shares add up to more than 100 %):\n\n"
          f"| stage | {head} |\n|---|{'---|' * len(names)}\n{rows}\n"
          f"| wall time | {wall} |\n| x real time | {xrt} |\n| CPU time (both cores) | {cpu} |\n"
          f"\nDescribe work (overlapped run): {work}.\n")
    (out / f"{tag}.md").write_text(md)
    print(md)


def decode_only(video: Path, config) -> float:
    """Seconds to read the sampled frames alone, as indexing reads them."""
    from streamvid.sources import open_source

    t = time.perf_counter()
    source = open_source(str(video), config.source)
    try:
        for _ in source:
            pass
    finally:
        source.close()
    return time.perf_counter() - t


def index_once(video: Path, config, models):
    """``(summary, CPU seconds)`` of one index run into a new temporary store."""
    from pipelines.index import index_video

    store = Path(tempfile.mkdtemp(prefix="ingest-bench-")) / "store"
    before = dict(models.describer.stats)
    cpu = time.process_time()
    try:
        summary = index_video(str(video), store, config, models=models, progress=True)
    finally:
        shutil.rmtree(store.parent, ignore_errors=True)
    cpu = time.process_time() - cpu
    # what the describe stage did in this run: frames per describer and their seconds
    summary.stage_seconds.update({f"describe: {k[:-2]}": v - before[k]
                                  for k, v in models.describer.stats.items() if k.endswith("_s")})
    log = {k: int(v - before.get(k, 0)) for k, v in models.describer.stats.items() if not k.endswith("_s")}
    print("describer:", log)
    summary.describe_counts = log
    return summary, cpu


if __name__ == "__main__":
    main()

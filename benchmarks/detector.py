"""How much time the object detector adds to indexing at 1 fps (the issue's target: <= 35 %).

Usage: python benchmarks/detector.py [--video ../shared/media/videos/vtest.avi] [--seconds 40]
       [--out benchmarks/results/detector.md]

Indexes the first ``--seconds`` of the video twice into fresh stores, with
``describe.detector: none`` and with the default detector, and reports both wall times
(model loading excluded) and, from the run with the detector, the seconds spent in it
(``detect_s``): added share = detect_s / (wall - detect_s). On a shared machine the in-run
share is the steadier number; both are reported with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# benchmarks/memory.py would shadow the memory package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", type=Path, default=HERE.parents[1] / "shared" / "media" / "videos" / "vtest.avi")
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "detector.md")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from pipelines.cli import load_config
    from pipelines.index import index_video
    from pipelines.models import Models

    rows = {}
    for name in ("none", "nanodet"):
        cfg = load_config(None, (f"describe.detector={name}", "source.fps=1",
                                 f"source.duration={args.seconds}"))
        models = Models(cfg)
        with tempfile.TemporaryDirectory() as tmp:
            s = index_video(str(args.video), Path(tmp) / "store", cfg, models=models, progress=False)
        stats = models.describer.stats if models.describer is not None else {}
        rows[name] = {"wall_s": round(s.seconds, 2), "frames": s.frames, "described": s.described,
                      "detected": int(stats.get("detected", 0)), "detect_s": round(stats.get("detect_s", 0.0), 2),
                      "stages": {k: round(v, 2) for k, v in s.stage_seconds.items()}}
        print(name, json.dumps(rows[name]), file=sys.stderr)
    on, off = rows["nanodet"], rows["none"]
    in_run = on["detect_s"] / max(on["wall_s"] - on["detect_s"], 1e-9)
    ab = on["wall_s"] / max(off["wall_s"], 1e-9) - 1
    load = open("/proc/loadavg").read().split()[:3]
    md = [f"# Object detector cost at 1 fps ({args.video.name}, first {args.seconds:.0f} s)", "",
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; x86_64 2-core CPU shared with other "
          f"work (load average {' '.join(load)} at the end); default config, describe.detect_interval 2 s.", "",
          "| run | wall (s) | frames | described | detector runs | detector (s) |", "|---|---|---|---|---|---|",
          f"| describe.detector: none | {off['wall_s']} | {off['frames']} | {off['described']} | 0 | 0 |",
          f"| describe.detector: nanodet | {on['wall_s']} | {on['frames']} | {on['described']} | {on['detected']} | {on['detect_s']} |",
          "", f"Added by the detector, within the run with it: **{100 * in_run:.0f} %** "
          f"(detector seconds / the rest of that run); between the two runs: {100 * ab:.0f} %.", "",
          "```json", json.dumps(rows, indent=1), "```", ""]
    args.out.write_text("\n".join(md), encoding="utf-8")
    print("\n".join(md[:12]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

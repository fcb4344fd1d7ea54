"""Peak memory of indexing long files: 10, 30 and 60 minutes of video on the lite profile.

A file is committed every ``memory.commit_clips`` clips, so the memory an index run holds
should not grow with the length of the video. Each length is indexed by its own
``streamvid index`` process; its peak resident set (``ru_maxrss`` of that child, from
``wait4``) and its resident set over time (``/proc/PID/status``, anonymous and file-backed)
are recorded.

The haystacks are real footage: the development videos (../shared/media/videos or
--videos) letterboxed to 640x360 at 25 fps and concatenated once (one cycle, about 3 min),
then that cycle looped to each length with ``ffmpeg -stream_loop`` (no re-encoding).

    python benchmarks/rss.py [--minutes 10 30 60] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "media" / "videos"
VIDEOS = ["vtest.avi", "world.mp4", "cup.mp4", "bigbuckbunny.mp4", "box.mp4", "cityCC0.mpg",
          "display-dual-monitors.webm"]


def make_cycle(videos: list[Path], out: Path) -> Path:
    """The videos letterboxed to 640x360, 25 fps, one after the other (H.264)."""
    if out.exists():
        return out
    args = ["ffmpeg", "-v", "error", "-y"]
    for v in videos:
        args += ["-i", str(v)]
    chains = [f"[{i}:v]scale=640:360:force_original_aspect_ratio=decrease,"
              f"pad=640:360:(ow-iw)/2:(oh-ih)/2,fps=25,setsar=1,format=yuv420p[v{i}]"
              for i in range(len(videos))]
    graph = ";".join(chains) + ";" + "".join(f"[v{i}]" for i in range(len(videos))) + \
        f"concat=n={len(videos)}:v=1:a=0[out]"
    tmp = out.with_suffix(".tmp.mp4")
    subprocess.run(args + ["-filter_complex", graph, "-map", "[out]", "-c:v", "libx264",
                           "-preset", "veryfast", "-crf", "26", "-g", "50", str(tmp)], check=True)
    tmp.rename(out)
    return out


def make_haystack(cycle: Path, minutes: float, out: Path) -> Path:
    """``cycle`` looped (stream copy) to ``minutes`` of video."""
    if not out.exists():
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", "-1", "-i", str(cycle),
                        "-c", "copy", "-t", str(minutes * 60), str(out)], check=True)
    return out


def _status(pid: int) -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key, _, val = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                    out[key] = int(val.split()[0])  # kB
    except OSError:
        pass
    return out


def index_peak(video: Path, store: Path, extra: list[str]) -> dict:
    """Run ``streamvid index`` as a child; its peak RSS and RSS samples over time."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "index", str(video),
                             "--store", str(store), "--json", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    samples: list[tuple[float, dict[str, int]]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(2.0):
            st = _status(proc.pid)
            if st:
                samples.append((time.monotonic() - t0, st))

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    # read pipes without blocking the child, then reap it with wait4 to get its own rusage
    chunks: dict[str, bytes] = {}

    def drain(name: str, fh) -> None:
        chunks[name] = fh.read()

    readers = [threading.Thread(target=drain, args=(n, f)) for n, f in
               (("out", proc.stdout), ("err", proc.stderr))]
    for r in readers:
        r.start()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    for r in readers:
        r.join()
    done.set()
    th.join()
    out, err = chunks.get("out", b""), chunks.get("err", b"")
    if proc.returncode != 0:
        raise SystemExit(f"index failed ({proc.returncode}): {err.decode(errors='replace')[-2000:]}")
    summary = json.loads(out.decode())
    manifest = json.loads((store / "manifest.json").read_text())
    # the steady part: after the models are loaded and the first commit is done
    steady = [s for t, s in samples if t > 0.25 * (time.monotonic() - t0)]
    return {
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "wall_s": round(time.monotonic() - t0, 1),
        "clips": summary["clips"], "frames": summary["frames"],
        "duration_s": summary["duration"], "x_realtime": summary["x_realtime"],
        "commits": int(manifest["generation"]), "segments": len(manifest["segments"]),
        "store_mib": round(manifest["counts"]["bytes"] / 2**20, 1),
        "rss_anon_mib_max_steady": round(max((s.get("RssAnon", 0) for s in steady), default=0) / 1024, 1),
        "rss_file_mib_max_steady": round(max((s.get("RssFile", 0) for s in steady), default=0) / 1024, 1),
        "samples": [[round(t, 1), s.get("VmRSS", 0), s.get("RssAnon", 0), s.get("RssFile", 0)]
                    for t, s in samples],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, nargs="+", default=[10, 30, 60])
    ap.add_argument("--videos", type=Path, default=SHARED)
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "_work")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--set", dest="sets", action="append", default=[],
                    help="config override passed to streamvid index (repeatable)")
    args = ap.parse_args()
    if not shutil.which("ffmpeg"):
        raise SystemExit("ffmpeg is needed to build the haystacks (apt-get install ffmpeg)")
    args.work.mkdir(parents=True, exist_ok=True)
    cycle = make_cycle([args.videos / v for v in VIDEOS], args.work / "rss_cycle.mp4")
    extra = [a for s in args.sets for a in ("--set", s)]
    load_start = os.getloadavg()
    rows = []
    for minutes in args.minutes:
        video = make_haystack(cycle, minutes, args.work / f"rss_{minutes:g}min.mp4")
        with tempfile.TemporaryDirectory(dir=args.work) as tmp:
            r = index_peak(video, Path(tmp) / "store", extra)
        r["minutes"] = minutes
        rows.append(r)
        print(f"{minutes:g} min: peak RSS {r['peak_rss_mib']} MiB, {r['clips']} clips, "
              f"{r['commits']} commits, {r['wall_s']} s", flush=True)
    base = rows[0]["peak_rss_mib"]
    load = os.getloadavg()
    result = {
        "machine": f"{platform.machine()} {os.cpu_count()}-core CPU, shared with other jobs",
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average": [round(x, 2) for x in load],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "python": platform.python_version(), "overrides": args.sets,
        "cycle": [v for v in VIDEOS], "runs": rows,
        "growth_vs_first": [round(r["peak_rss_mib"] / base - 1, 4) for r in rows],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rss.json").write_text(json.dumps(result, indent=1))
    lines = [
        "# Peak memory of indexing long files (rss)",
        "",
        f"{result['machine']}; load average {', '.join(map(str, result['load_average_start']))} "
        f"at the start, {', '.join(map(str, result['load_average']))} (1/5/15 min) at the end; "
        f"{result['date']}. Command: `python benchmarks/rss.py"
        + "".join(f" --set {s}" for s in args.sets) + "`.",
        "",
        "Each length is one `streamvid index` process on the default lite profile (1 fps "
        "sampling, labels and OCR on, `memory.commit_clips` 100). Haystack: the development "
        f"videos ({', '.join(VIDEOS)}) letterboxed to 640x360 and concatenated, looped to "
        "the length with `ffmpeg -stream_loop` (stream copy).",
        "",
        "| video | clips | commits | peak RSS MiB | vs 10 min | RssAnon max MiB* | RssFile max MiB* | store MiB | wall s | x real time |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r, g in zip(rows, result["growth_vs_first"]):
        lines.append(f"| {r['minutes']:g} min | {r['clips']} | {r['commits']} | "
                     f"{r['peak_rss_mib']} | {100 * g:+.1f} % | {r['rss_anon_mib_max_steady']} | "
                     f"{r['rss_file_mib_max_steady']} | {r['store_mib']} | {r['wall_s']} | "
                     f"{r['x_realtime']} |")
    lines += ["", "\\* sampled every 2 s after the first quarter of the run (models loaded).",
              "Peak RSS is `ru_maxrss` of the index process (`wait4`); target: the 60 min peak "
              "within 10 % of the 10 min peak."]
    (args.out / "rss.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

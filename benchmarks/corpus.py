"""Corpus indexing throughput: 2 workers against 1, and the Ray path against the local one.

    python benchmarks/corpus.py [--media DIR] [--split-long 30]

Indexes the development footage (every video of ``DIR``) three times into fresh stores:
``--engine local`` with 1 worker, ``--engine ray`` with 1 worker, ``--engine ray`` with 2
workers, on one local Ray cluster started before the timed runs (a cluster outlives a job;
its start-up time is reported apart). Every worker uses one core (``worker_cpus=1``: its
encoder, detector, OCR and speech recogniser each on one thread), so that 2 workers use the
2 cores and 1 worker one of them.
Writes ``benchmarks/results/corpus.md`` and ``.json`` with the machine's load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pipelines.corpus import expand_inputs, index_corpus  # noqa: E402
from streamvid.config import Config  # noqa: E402


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--media", default=str(ROOT.parent / "shared" / "media" / "videos"))
    ap.add_argument("--split-long", type=float, default=30.0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "corpus"))
    args = ap.parse_args()

    import ray

    files = expand_inputs([str(p) for p in sorted(Path(args.media).glob("*")) if p.is_file()])
    cfg = Config.load(None)
    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "STREAMVID_PROGRESS": "0",
                                       "PYTHONPATH": str(ROOT)}})
    ray_start = time.perf_counter() - t
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, engine, workers in (("local, 1 worker", "local", 1),
                                      ("ray, 1 worker", "ray", 1),
                                      ("ray, 2 workers", "ray", 2)):
            before = load()
            s = index_corpus(files, Path(tmp) / name.replace(" ", "").replace(",", "-"), cfg,
                             engine=engine, workers=workers, split_long=args.split_long,
                             worker_cpus=1, progress=False)
            after = load()
            j = s.to_json()
            runs.append({"run": name, "engine": engine, "workers": workers,
                         "seconds": j["seconds"], "video_seconds": round(s.video_seconds, 1),
                         "items": j["items"], "clips": j["clips"], "failed": j["failed"],
                         "x_realtime": j["x_realtime"], "phases": j["phases"],
                         "load_before": before,
                         "load_after": after})
            print(json.dumps(runs[-1]), flush=True)
    ray.shutdown()
    local1, ray1, ray2 = (r["seconds"] for r in runs)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), {platform.platform()}",
        "ray": ray.__version__, "media": args.media, "inputs": len(files),
        "split_long": args.split_long, "ray_start_seconds": round(ray_start, 1),
        "runs": runs,
        "speedup_2_vs_1": round(ray1 / ray2, 3),
        "ray_overhead_1_worker": round(ray1 / local1 - 1.0, 3),
    }
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        "# Corpus indexing: workers and engines",
        "",
        f"{result['date']}; {result['machine']}; Ray {result['ray']}. `python benchmarks/corpus.py`: "
        f"{len(files)} videos of the development media (`{args.media}`), `--split-long "
        f"{args.split_long:g}`, lite profile, one core per worker (`--worker-cpus 1`: encoder, detector, OCR and "
        f"speech recogniser each on one thread); one local Ray "
        f"cluster (`num_cpus=2`, started in {ray_start:.1f} s before the timed runs). Time is the "
        "whole `index_corpus` call: planning (digests, probes), workers starting and loading "
        "their models, indexing, merging.",
        "",
        "The machine's 2 cores were shared with other work while this ran; the load average "
        "(1, 5, 15 min) before and after each run is in the table.",
        "",
        "| run | video | items | clips | time | plan / index / merge | x real time | load before | load after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lb = r["load_before"].split("load average:")[-1].strip()
        la = r["load_after"].split("load average:")[-1].strip()
        ph = " / ".join(f"{r['phases'][k]:.1f}" for k in ("plan", "index", "merge"))
        lines.append(f"| {r['run']} | {r['video_seconds']:.0f} s | {r['items']} | {r['clips']} | "
                     f"{r['seconds']:.1f} s | {ph} s | {r['x_realtime']:.2f} | {lb} | {la} |")
    lines += [
        "",
        f"- 2 workers against 1 (Ray): **{result['speedup_2_vs_1']:.2f}x** (target >= 1.6x)",
        f"- Ray against local, 1 worker: **{100 * result['ray_overhead_1_worker']:+.1f} %** "
        "(target <= 15 %)",
        "",
    ]
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

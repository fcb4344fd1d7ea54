"""Question latency at 10 minutes, 3 hours and 1 week of memory.

Stores are built once (outside the timed part) by ``benchmarks/simstore.py`` from a real
NIAH store (the ``niah-large`` 5-minute haystack): its clips stay as they are and are then
repeated, needle clips left out, up to each length. Its image and text needle questions
(from the NIAH run's ``results.jsonl``) are asked:

- warm (Python API, ``pipelines.ask.Asker``, models loaded): text and image p50/p95 and
  hit@1, image questions with the token-index shortlist (the default) and, where it runs
  in reasonable time, with exhaustive scoring (``retrieval.image_shortlist: 0``);
- cold (a new ``streamvid ask`` process per question): a text question, wall time.

    python benchmarks/ask.py --base STORE --haystack HAYSTACK.json --results RESULTS.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "benchmarks"))   # after the packages (benchmarks/memory.py)

from pipelines.ask import Asker, load_image  # noqa: E402
from pipelines.niah.score import hit_at  # noqa: E402
from streamvid.config import Config, RetrievalConfig  # noqa: E402
from streamvid.types import Question  # noqa: E402

import simstore  # noqa: E402

SIZES = {"10m": 600.0, "3h": 10800.0, "1w": 604800.0}
EXHAUSTIVE_UP_TO = 20000.0   # seconds of memory: exhaustive image scoring is run up to this


def _questions(results: Path, haystack: str, needles: Path) -> list[dict]:
    out = []
    for line in results.read_text().splitlines():
        r = json.loads(line)
        if r["haystack"] != haystack or r["qtype"] not in ("image", "text"):
            continue
        q = {"kind": r["qtype"], "truth": tuple(r["truth"][0]), "label": r["question"]}
        if r["qtype"] == "image":
            q["image"] = str(needles / r["question"].split("] ", 1)[1])
        else:
            q["text"] = r["question"]
        out.append(q)
    return out


def _pct(xs: list[float], p: float) -> float:
    return round(float(np.percentile(xs, p)), 4) if xs else float("nan")


def _ask_all(store: Path, cfg: Config, qs: list[dict], reps: int) -> dict:
    t0 = time.perf_counter()
    with Asker(store, cfg) as asker:
        opened = time.perf_counter() - t0
        lat, hits, enc, tops = [], [], [], []
        questions = [Question(text=q.get("text", ""),
                              image=load_image(q["image"]) if "image" in q else None) for q in qs]
        t0 = time.perf_counter()
        asker.ask(questions[-1])   # warm: the model loaded, the store's indexes read
        first = time.perf_counter() - t0
        for q, question in zip(qs, questions):
            for _ in range(reps):
                e0 = asker.retriever.query_encoder.encode_seconds if "image" in q else 0.0
                t = time.perf_counter()
                ans = asker.ask(question)
                lat.append(time.perf_counter() - t)
                if "image" in q:
                    enc.append(asker.retriever.query_encoder.encode_seconds - e0)
            ev = [(e.start, e.end) for e in ans.evidence]
            hits.append(float(hit_at(ev, q["truth"], 1)))
            tops.append(ev[0] if ev else None)
    out = {"n": len(qs), "reps": reps, "open_s": round(opened, 3), "first_s": round(first, 3),
           "p50_s": _pct(lat, 50), "p95_s": _pct(lat, 95),
           "hit1": round(float(np.mean(hits)), 3) if hits else None, "top1": tops}
    if enc:
        out["encode_p50_s"] = _pct(enc, 50)
        out["match_p50_s"] = _pct([a - b for a, b in zip(lat, enc)], 50)
    return out


def _cold_text(store: Path, text: str, runs: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    walls = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pipelines.cli", "ask", "--store", str(store), text,
                        "--json"], check=True, capture_output=True, env=env, cwd=ROOT)
        walls.append(time.perf_counter() - t)
    return {"runs": runs, "p50_s": _pct(walls, 50), "max_s": round(max(walls), 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, required=True, help="the NIAH store to build from")
    ap.add_argument("--haystack", type=Path, required=True, help="its haystack JSON (needles)")
    ap.add_argument("--results", type=Path, required=True, help="the NIAH run's results.jsonl")
    ap.add_argument("--haystack-id", default="L300-g0")
    ap.add_argument("--needles", type=Path, default=ROOT.parent / "shared/media/needles")
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks/_work")
    ap.add_argument("--sizes", default=",".join(SIZES))
    ap.add_argument("--reps", type=int, default=3, help="repeats of each text question")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/ask")
    a = ap.parse_args(argv)
    qs = _questions(a.results, a.haystack_id, a.needles)
    texts = [q for q in qs if q["kind"] == "text"]
    images = [q for q in qs if q["kind"] == "image"]
    rows = {}
    for size in a.sizes.split(","):
        store = a.work / f"ask-{size}"
        if not (store / "simstore.json").exists():   # built once, not timed
            simstore.build(a.base, store, SIZES[size], a.haystack)
        info = json.loads((store / "simstore.json").read_text())
        # the store's config with this version's query-time defaults for image questions
        # (a store built before them records image_exhaustive 20000: every clip scored)
        cfg = Config.load(store / "config.yaml")
        cfg = cfg.replace(retrieval=dataclasses.replace(
            cfg.retrieval, image_exhaustive=RetrievalConfig().image_exhaustive,
            image_shortlist=RetrievalConfig().image_shortlist))
        row = {"store": info, "text": _ask_all(store, cfg, texts, a.reps),
               "image": _ask_all(store, cfg, images, 1),
               "cold_text": _cold_text(store, texts[0]["text"], 3)}
        if SIZES[size] <= EXHAUSTIVE_UP_TO:
            ex = cfg.replace(retrieval=dataclasses.replace(cfg.retrieval, image_shortlist=0))
            row["image_exhaustive"] = _ask_all(store, ex, images, 1)
            row["same_top1"] = row["image"]["top1"] == row["image_exhaustive"]["top1"]
        rows[size] = row
        print(size, json.dumps({k: v for k, v in row.items() if k != "store"}), flush=True)
    # where exhaustive scoring takes too long: every clip of a longer store is a copy of one
    # of the shortest store's clips (identical tokens, later ids), so exhaustive scoring ranks
    # the same clips first there (ties go to the lowest id: the original); its top clips are
    # compared with the shortest store's exhaustive ones
    ref = next((r for r in rows.values() if "image_exhaustive" in r), None)
    for row in rows.values():
        if ref is not None and "image_exhaustive" not in row:
            row["same_top1_as_shortest_exhaustive"] = row["image"]["top1"] == ref["image_exhaustive"]["top1"]
    load = os.getloadavg()
    res = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "machine": f"{platform.platform()}, {os.cpu_count()} CPUs",
           "load_avg": [round(x, 2) for x in load], "base": str(a.base.name),
           "questions": {"text": len(texts), "image": len(images)}, "sizes": rows}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    a.out.with_suffix(".md").write_text(report(res))
    print(report(res))
    return 0


def _s(x) -> str:
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else (
        f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s")


def _same(r: dict) -> str:
    if "same_top1" in r:
        return "yes" if r["same_top1"] else "no"
    if "same_top1_as_shortest_exhaustive" in r:
        return ("yes" if r["same_top1_as_shortest_exhaustive"] else "no") + " (†)"
    return "–"


def report(res: dict) -> str:
    lines = [f"# Question latency by memory size ({res['date']})", "",
             f"Machine: {res['machine']} (shared; load average {res['load_avg']} at the end of "
             f"the run). Stores built from the real clip memories of `{res['base']}` (niah-large, "
             "5 minutes) by benchmarks/simstore.py; "
             f"{res['questions']['text']} text and {res['questions']['image']} image needle "
             "questions; warm = Python API after one question of the kind (models loaded, indexes "
             "read); cold = a new `streamvid ask` process (a text question).", "",
             "| memory | clips | text p50 / p95 | text hit@1 | image p50 / p95 (shortlist) | "
             "of which view encoding | image hit@1 | exhaustive image p50 | exhaustive hit@1 | "
             "same top clip | cold CLI text |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for size, r in res["sizes"].items():
        ex = r.get("image_exhaustive")
        lines.append(
            f"| {size} | {r['store']['clips']} | {_s(r['text']['p50_s'])} / {_s(r['text']['p95_s'])} | "
            f"{r['text']['hit1']:.0%} | {_s(r['image']['p50_s'])} / {_s(r['image']['p95_s'])} | "
            f"{_s(r['image'].get('encode_p50_s'))} | {r['image']['hit1']:.0%} | "
            f"{_s(ex['p50_s']) if ex else 'not run'} | {format(ex['hit1'], '.0%') if ex else '–'} | "
            f"{_same(r)} | {_s(r['cold_text']['p50_s'])} |")
    if any("same_top1_as_shortest_exhaustive" in r for r in res["sizes"].values()):
        lines += ["", "(†) exhaustive scoring not run at this size (minutes a question); its clips "
                  "are copies of the shortest store's (identical tokens, later ids), so exhaustive "
                  "scoring ranks the same clips first: compared with the shortest store's "
                  "exhaustive top clips."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

"""Answers the QA set with streamvid and scores it (see benchmarks/qa/README.md).

Usage: python benchmarks/qa/run.py [--media ../shared/media] [--stores DIR] [--out DIR]
       [--config FILE] [--set SECTION.KEY=VALUE ...] [--only ID_PREFIX]

Each video of the set is indexed once into ``--stores`` (kept between runs; a store built
with another config is rebuilt), then every question is asked through the same code as
``streamvid ask --store``. Writes ``answers.jsonl``, ``result.json`` and ``result.md`` into
``--out``. Runs on any checkout that has ``pipelines.ask.Asker`` (for before/after tables).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from score import load_jsonl, markdown, score  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=Path, default=HERE / "questions.jsonl")
    ap.add_argument("--media", type=Path, default=HERE.parents[2] / "shared" / "media")
    ap.add_argument("--stores", type=Path, default=HERE.parent / "_work" / "qa-stores")
    ap.add_argument("--out", type=Path, default=HERE.parent / "results" / "qa")
    ap.add_argument("--config")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--only", default="", help="ask only questions whose id starts with this")
    ap.add_argument("--title", default="")
    args = ap.parse_args(argv)

    from pipelines.ask import Asker
    from pipelines.cli import load_config
    from pipelines.index import index_video
    from pipelines.models import INDEX_SECTIONS, Models
    from streamvid.types import Question

    cfg = load_config(args.config, tuple(args.sets))
    questions = [q for q in load_jsonl(args.questions) if q["id"].startswith(args.only)]
    models = Models(cfg)
    args.out.mkdir(parents=True, exist_ok=True)
    answers: dict[str, dict] = {}
    timings: dict[str, dict] = {}
    for video in dict.fromkeys(q["video"] for q in questions):
        path = args.media / video
        store = args.stores / (cfg.fingerprint(*INDEX_SECTIONS) + "-" + Path(video).stem)
        if not (store / "manifest.json").exists():
            shutil.rmtree(store, ignore_errors=True)
            t = time.perf_counter()
            summary = index_video(str(path), store, cfg, models=models, progress=False)
            timings[video] = {"index_s": round(time.perf_counter() - t, 2),
                              "stages": summary.stage_seconds}
            print(f"indexed {video} in {timings[video]['index_s']} s", file=sys.stderr)
        with Asker(store, cfg, models=models) as asker:
            for q in (q for q in questions if q["video"] == video):
                ans = asker.ask(Question(text=q["question"]))
                answers[q["id"]] = {"id": q["id"], **ans.to_json()}
                print(f"{q['id']}: {ans.answer[:160]!r}", file=sys.stderr)
    with open(args.out / "answers.jsonl", "w", encoding="utf-8") as fh:
        for q in questions:
            fh.write(json.dumps(answers[q["id"]], ensure_ascii=False) + "\n")
    result = score(questions, answers)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=False).stdout.strip()
    except OSError:
        commit = ""
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    result["run"] = {"commit": commit, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                     "load_average": load, "index": timings}
    (args.out / "result.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    md = markdown(result, args.title)
    (args.out / "result.md").write_text(md, encoding="utf-8")
    sys.stdout.write(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())

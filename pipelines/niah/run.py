"""Running a NIAH grid: build haystacks, index each once, ask every question, score, plot.

A run directory holds::

    run.json          the resolved NIAH config and the fingerprint of each length's plan
    results.jsonl     one line per question (appended and synced as soon as it is answered)
    summary.json      the aggregate scores (see score.summarise)
    summary.md        the same as tables
    heatmap.png       image questions, hit@1 (depth x length); heatmap-<type>-<metric>.png others

Runs resume: questions already in ``results.jsonl`` are not asked again, a haystack whose
questions are all answered is neither built nor indexed, and a finished run does no work at
all. Haystack videos and stores are cached by the key of their inputs (in
``haystack.cache_dir``, default ``$STREAMVID_CACHE/niah``), so every config that runs on the
same footage, needles and index settings reuses them; only query-time settings may differ.
While one haystack is indexed, the next one is written in a background thread.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from streamvid.errors import ConfigError, StreamvidError
from streamvid.io import atomic_write_json, atomic_write_text
from streamvid.progress import progress as progress_bar

from .grid import HaystackPlan, NiahConfig, PlannedQuestion, plan, plan_fingerprint
from .haystack import HaystackInfo, build_haystack, haystack_key, load_haystack
from .plots import format_length, heatmap
from .score import (by_variant, choice_correct, hit_at, recall_at, summarise, text_correct,
                    time_correct)

log = logging.getLogger(__name__)

RESULTS = "results.jsonl"
SUMMARY = "summary.json"
# (question type, metric) drawn as heatmaps; the first is heatmap.png
FIGURES = (("image", "hit1"), ("image", "correct"), ("when", "hit3"), ("when", "correct"),
           ("text", "correct"), ("choice", "correct"), ("speech", "hit1"), ("speech", "correct"))


@dataclass
class RunReport:
    """What one call of :func:`run_niah` did, and the run's summary."""

    out: Path
    summary: dict[str, Any]
    asked: int = 0
    indexed: int = 0
    built: int = 0
    skipped: int = 0
    seconds: float = 0.0
    figures: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"out": str(self.out), "asked": self.asked, "indexed": self.indexed,
                "built": self.built, "skipped": self.skipped, "seconds": round(self.seconds, 2),
                "figures": self.figures, "summary": self.summary}


def cache_dir(cfg: NiahConfig) -> Path:
    if cfg.haystack.cache_dir:
        return Path(cfg.haystack.cache_dir)
    from ..ask import cache_root

    return cache_root() / "niah"


def _specs(hp: HaystackPlan, cfg: NiahConfig):
    ns = cfg.needles
    return [n.spec(ns.duration, ns.area if n.kind == "image" else ns.text_area) for n in hp.needles]


def haystack_path(hp: HaystackPlan, cfg: NiahConfig) -> Path:
    """Where the haystack video of a plan is cached (named by the key of its inputs)."""
    key = haystack_key(hp.videos or cfg.haystack.videos, length=hp.length, fps=cfg.haystack.fps,
                       size=cfg.haystack.size, needles=_specs(hp, cfg), seed=hp.seed)
    return cache_dir(cfg) / "haystacks" / f"{key}.mp4"


def _build(hp: HaystackPlan, cfg: NiahConfig, progress: bool) -> tuple[HaystackInfo, bool]:
    path = haystack_path(hp, cfg)
    cached = load_haystack(path)
    if cached is not None and cached.key == path.stem:
        return cached, False
    return build_haystack(hp.videos or cfg.haystack.videos, haystack_path(hp, cfg), length=hp.length,
                          fps=cfg.haystack.fps, size=cfg.haystack.size, needles=_specs(hp, cfg),
                          seed=hp.seed, progress=progress), True


def read_results(path: Path) -> dict[str, dict[str, Any]]:
    """Records by question id; a torn last line (a killed run) is dropped from the file."""
    if not path.is_file():
        return {}
    good: list[str] = []
    out: dict[str, dict[str, Any]] = {}
    torn = False
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            torn = True
            continue
        if isinstance(rec, dict) and "id" in rec:
            out[rec["id"]] = rec
            good.append(line)
    raw = path.read_bytes()
    if torn or (raw and not raw.endswith(b"\n")):
        log.warning("%s: dropping an incomplete line left by an interrupted run", path)
        atomic_write_text(path, "".join(g + "\n" for g in good))
    return out


def _append(path: Path, rec: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(rec, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _index(info: HaystackInfo, hp: HaystackPlan, cfg: NiahConfig, models: Any,
           progress: bool) -> tuple[Path, float, bool]:
    """The store of a haystack, its index time, and whether it was indexed now (not cached)."""
    from .. import index as index_mod
    from ..models import INDEX_SECTIONS

    store = cache_dir(cfg) / "stores" / f"{Path(info.path).stem}-{cfg.pipeline.fingerprint(*INDEX_SECTIONS)}"
    marker = store.with_name(store.name + ".done.json")
    if marker.is_file() and (store / "manifest.json").is_file():
        return store, float(json.loads(marker.read_text()).get("seconds", 0.0)), False
    if store.exists():
        shutil.rmtree(store)
    summary = index_mod.index_video(str(info.path), store, cfg.pipeline, models=models,
                                    progress=progress, source_id=hp.name)
    atomic_write_json(marker, summary.to_json())
    return store, float(summary.seconds), True


def score_question(q: PlannedQuestion, info: HaystackInfo, hp: HaystackPlan, answer: Any,
                   cfg: NiahConfig) -> dict[str, Any]:
    """One result record: the question, the truth, the answer and its scores."""
    by_id = dict(zip((n.id for n in hp.needles), info.needles))
    truth = [(by_id[i].start, by_id[i].end) for i in q.needles]
    ev = [(e.start, e.end) for e in answer.evidence]
    rec: dict[str, Any] = {
        "id": q.id, "qtype": q.qtype, "haystack": hp.name, "length": hp.length, "depth": q.depth,
        "category": q.category, "needles": [by_id[i].label for i in q.needles],
        "truth": [[round(a, 3), round(b, 3)] for a, b in truth],
        "question": q.text or f"[image] {Path(q.image or '').name}", "expected": q.expected,
        "answer": answer.answer,
        "evidence": [[round(e.start, 3), round(e.end, 3), round(float(e.score), 4)] for e in answer.evidence],
        **dict(q.variant),
    }
    tol = cfg.questions.time_tolerance
    if q.qtype in ("image", "when", "text", "choice", "speech", "speech_when"):
        rec["hit1"] = float(hit_at(ev, truth[0], 1))
        rec["hit3"] = float(hit_at(ev, truth[0], 3))
    if q.qtype in ("image", "when", "speech_when"):
        rec["correct"] = float(time_correct(answer.answer, truth[0], tol))
    elif q.qtype in ("text", "speech"):   # the asked word is in the answer
        rec["correct"] = float(text_correct(answer.answer, q.expected))
    elif q.qtype in ("choice", "order"):
        rec["correct"] = float(choice_correct(answer.answer, q.expected))
    elif q.qtype == "multihop":
        rec["recall3"] = round(recall_at(ev, truth, 3), 4)
        rec["correct"] = float(recall_at(ev, truth, cfg.questions.top_k) == 1.0)
    return rec


def _identity(cfg: NiahConfig) -> dict[str, Any]:
    """What must match to resume a run: everything but the list of lengths (--max-length)."""
    d = cfg.to_dict()
    d["grid"] = {"depths": d["grid"]["depths"]}
    return d


def _check_run_dir(out: Path, cfg: NiahConfig, plans: Sequence[HaystackPlan]) -> None:
    """Refuse a run folder of another config; record the plan of each length run so far.

    Lengths may be added to a run (e.g. after ``--max-length``): each length's needles and
    questions depend only on the seed and its place among the sorted lengths.
    """
    meta = out / "run.json"
    by_length = {f"{L:g}": plan_fingerprint([hp for hp in plans if hp.length == L])
                 for L in sorted({hp.length for hp in plans})}
    if meta.is_file():
        old = json.loads(meta.read_text())
        if "identity" not in old and old.get("plan") == plan_fingerprint(plans) \
                and old.get("pipeline") == cfg.pipeline.to_dict():   # first run.json layout
            old = {"name": old.get("name"), "config_path": old.get("config_path"),
                   "identity": _identity(cfg), "plans": by_length, "started": old.get("started")}
            atomic_write_json(meta, old)
        same = old.get("identity") == _identity(cfg)
        clash = [L for L, fp in by_length.items() if old.get("plans", {}).get(L, fp) != fp]
        if not same or clash:
            raise ConfigError(f"{out} holds a NIAH run of another config ({old.get('name')!r}); "
                              "fix: pass another --out, or delete the folder to start again")
        if set(by_length) <= set(old.get("plans", {})):
            return
        old["plans"] = {**old.get("plans", {}), **by_length}
        atomic_write_json(meta, old)
        return
    atomic_write_json(meta, {"name": cfg.name, "config_path": cfg.path, "identity": _identity(cfg),
                             "plans": by_length, "started": time.strftime("%Y-%m-%dT%H:%M:%S")})


def run_niah(cfg: NiahConfig, out: str | Path, *, progress: bool = True,
             models: Any = None) -> RunReport:
    """Run (or resume) a NIAH grid into ``out`` and return what was done and the summary."""
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plans = plan(cfg)
    _check_run_dir(out, cfg, plans)
    results_path = out / RESULTS
    done = read_results(results_path)
    todo = [hp for hp in plans if any(q.id not in done for q in hp.questions)]
    report = RunReport(out=out, summary={})
    report.skipped = sum(1 for hp in plans for q in hp.questions if q.id in done)
    if not todo and (out / SUMMARY).is_file():
        report.summary = json.loads((out / SUMMARY).read_text())
        report.seconds = time.perf_counter() - t0
        log.info("%s: every question is answered already; nothing to do", out)
        return report
    if todo:
        _run_plans(todo, cfg, results_path, done, report, progress, models)
    _finish(cfg, plans, results_path, out, report)
    report.seconds = time.perf_counter() - t0
    return report


def _run_plans(todo: Sequence[HaystackPlan], cfg: NiahConfig, results_path: Path,
               done: dict[str, dict[str, Any]], report: RunReport, progress: bool, models: Any) -> None:
    from ..ask import Asker, load_image
    from ..models import Models
    from streamvid.types import Question

    models = models or Models(cfg.pipeline)
    n_q = sum(1 for hp in todo for q in hp.questions if q.id not in done)
    bar = progress_bar(total=n_q, desc=f"niah {cfg.name}", unit="q", enabled=progress)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="niah-haystack")
    try:
        def submit(hp: HaystackPlan) -> Future:
            return pool.submit(_build, hp, cfg, False)

        nxt: Future | None = submit(todo[0])
        for i, hp in enumerate(todo):
            t = time.perf_counter()
            info, built = nxt.result()
            report.built += int(built)
            nxt = submit(todo[i + 1]) if i + 1 < len(todo) else None
            log.info("haystack %s ready (%.1f s)", hp.name, time.perf_counter() - t)
            store, index_s, fresh = _index(info, hp, cfg, models, progress)
            report.indexed += int(fresh)
            with Asker(store, cfg.pipeline, models=models) as asker:
                for q in hp.questions:
                    if q.id in done:
                        continue
                    question = Question(text=q.text, image=load_image(q.image) if q.image else None,
                                        image_path=q.image or "")
                    tq = time.perf_counter()
                    ans = asker.ask(question, top_k=cfg.questions.top_k)
                    query_s = time.perf_counter() - tq
                    rec = score_question(q, info, hp, ans, cfg)
                    ctx = asker.last_context
                    rec["tokens"] = int(ctx.tokens_used) if ctx is not None else 0
                    rec["query_s"] = round(query_s, 4)
                    rec["index_s"] = round(index_s, 3)
                    _append(results_path, rec)
                    done[q.id] = rec
                    report.asked += 1
                    bar.update(1)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        bar.close()
    pool.shutdown(wait=True)


def _finish(cfg: NiahConfig, plans: Sequence[HaystackPlan], results_path: Path, out: Path,
            report: RunReport) -> None:
    records = list(read_results(results_path).values())
    wanted = {q.id for hp in plans for q in hp.questions}
    records = [r for r in records if r["id"] in wanted]
    summary = summarise(records, lengths=cfg.grid.lengths, depths=cfg.grid.depths, name=cfg.name)
    if cfg.general is not None:
        summary["general"] = by_variant(records, cfg.general)
    summary["complete"] = len(records) == len(wanted)
    summary["pipeline"] = {"encoder": cfg.pipeline.encoder.name, "cache": cfg.pipeline.cache.enabled,
                           "keep_ratio": cfg.pipeline.compress.keep_ratio,
                           "token_budget": cfg.pipeline.retrieval.token_budget,
                           "source_fps": cfg.pipeline.source.fps}
    summary["haystack_fps"] = cfg.haystack.fps
    summary["machine"] = {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
                          "platform": platform.platform(), "python": platform.python_version()}
    atomic_write_json(out / SUMMARY, summary)
    figures = []
    for qt, metric in FIGURES:
        if metric in summary["cells"].get(qt, {}):
            name = "heatmap.png" if (qt, metric) == FIGURES[0] else f"heatmap-{qt}-{metric}.png"
            heatmap(summary, out / name, qtype=qt, metric=metric)
            figures.append(name)
    atomic_write_text(out / "summary.md", summary_markdown(summary))
    report.summary = summary
    report.figures = figures


def summary_markdown(summary: dict[str, Any]) -> str:
    """Tables: per question type, per length, and "when" hit@3 per needle category."""
    lines = [f"# NIAH {summary['name']}", "",
             f"{summary['questions']} questions; answer accuracy {_pct(summary.get('accuracy'))}; "
             f"mean visual tokens in context {summary.get('tokens')}.", "",
             _machine_line(summary), "",
             "| question type | n | hit@1 | hit@3 | recall@3 | accuracy | tokens | query s |",
             "|---|---|---|---|---|---|---|---|"]
    for qt, o in summary["overall"].items():
        lines.append(f"| {qt} | {o['n']} | {_pct(o.get('hit1'))} | {_pct(o.get('hit3'))} | "
                     f"{_pct(o.get('recall3'))} | {_pct(o.get('correct'))} | {o.get('tokens', '')} | "
                     f"{o.get('query_s', '')} |")
    lines += ["", "| length | questions | index s | image hit@1 | image+when hit@1 | accuracy |",
              "|---|---|---|---|---|---|"]
    for L, o in summary["per_length"].items():
        lines.append(f"| {format_length(float(L))} | {o['questions']} | {o.get('index_s')} | "
                     f"{_pct(o.get('image_hit1'))} | {_pct(o.get('hit1'))} | {_pct(o.get('correct'))} |")
    for factor, rows in (summary.get("general") or {}).items():
        lines += ["", f"| {factor} | n | image hit@1 | hit@3 |", "|---|---|---|---|"]
        for level, o in rows.items():
            lines.append(f"| {level} | {o['n']} | {_pct(o.get('hit1'))} | {_pct(o.get('hit3'))} |")
    if summary.get("when_hit3_by_category"):
        lines += ["", "| needle category | n | \"when does a X appear\" hit@3 |", "|---|---|---|"]
        for c, o in summary["when_hit3_by_category"].items():
            lines.append(f"| {c} | {o['n']} | {_pct(o.get('hit3'))} |")
    return "\n".join(lines) + "\n"


def _machine_line(summary: dict[str, Any]) -> str:
    m = summary.get("machine") or {}
    p = summary.get("pipeline") or {}
    return (f"Ran {m.get('date', '?')} on {m.get('cpus', '?')} CPUs ({m.get('platform', '?')}); "
            f"encoder {p.get('encoder')}, feature cache {'on' if p.get('cache') else 'off'}, "
            f"keep ratio {p.get('keep_ratio')}, token budget {p.get('token_budget')}, "
            f"sampled at {p.get('source_fps')} fps from a {summary.get('haystack_fps')} fps haystack.")


def _pct(x: Any) -> str:
    return "–" if x is None else f"{100 * float(x):.0f}%"


def load_summary(run_dir: str | Path) -> dict[str, Any]:
    """The summary of a finished run directory."""
    p = Path(run_dir) / SUMMARY
    if not p.is_file():
        raise StreamvidError(f"{run_dir} is not a finished NIAH run (no {SUMMARY}); "
                             "fix: run `streamvid niah --config FILE --out DIR` first")
    return json.loads(p.read_text())

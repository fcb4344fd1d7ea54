"""Collect the token pruning comparison: a table and accuracy against tokens per method.

    STREAMVID_CACHE=runs/prune-cache streamvid niah --out runs/prune --compare configs/niah-prune-*.yaml
    python benchmarks/results/prune/collect.py runs/prune configs/niah-prune-*.yaml

Reads each run's ``summary.json`` and, for tokens per minute of video, the index summaries
that the NIAH harness keeps beside each cached store; writes ``summary.json``,
``summary.md`` and ``accuracy_vs_tokens.png`` next to this file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
METHODS = {"novelty": "novelty pruner", "uniform_frames": "uniform frames", "avg_pool": "average pooling"}


def _index_stats(cfg) -> dict:
    """Tokens kept per minute of video over the config's haystacks (from the store markers)."""
    from pipelines.models import INDEX_SECTIONS
    from pipelines.niah.grid import plan
    from pipelines.niah.run import cache_dir, haystack_path

    kept = seconds = dur = 0.0
    for hp in plan(cfg):
        stem = haystack_path(hp, cfg).stem
        store = cache_dir(cfg) / "stores" / f"{stem}-{cfg.pipeline.fingerprint(*INDEX_SECTIONS)}"
        m = json.loads(store.with_name(store.name + ".done.json").read_text())
        kept += m["tokens_kept"]
        dur += m["duration"]
        seconds += m["seconds"]
    return {"tokens_per_minute": round(kept / (dur / 60.0), 1), "index_s": round(seconds, 1)}


def main(run_root: str, configs: list[str]) -> None:
    from pipelines.niah.grid import NiahConfig

    rows = []
    for path in configs:
        cfg = NiahConfig.load(path)
        s = json.loads((Path(run_root) / cfg.name / "summary.json").read_text())
        img = s["overall"]["image"]
        rows.append({"name": cfg.name, "method": cfg.pipeline.compress.method,
                     "keep_ratio": cfg.pipeline.compress.keep_ratio,
                     "late_interaction": cfg.pipeline.retrieval.late_interaction,
                     "questions": img["n"], "hit1": img["hit1"], "hit3": img["hit3"],
                     "accuracy": img["correct"], "context_tokens": img.get("tokens"),
                     **_index_stats(cfg), "machine": s.get("machine")})
    (HERE / "summary.json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = ["| config | method | kept | retrieval | n | hit@1 | hit@3 | accuracy | tokens / min | "
             "context tokens | index s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['method']} | {100 * r['keep_ratio']:g} % | "
                     f"{'kept tokens only' if r['late_interaction'] >= 1 else 'default mix (0.5)'} | "
                     f"{r['questions']} | {100 * r['hit1']:.1f} % | {100 * r['hit3']:.1f} % | "
                     f"{100 * r['accuracy']:.1f} % | {r['tokens_per_minute']:g} | {r['context_tokens']} | "
                     f"{r['index_s']} |")
    (HERE / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for i, (m, label) in enumerate(METHODS.items()):
        pts = sorted((r["tokens_per_minute"], r["accuracy"]) for r in rows
                     if r["method"] == m and r["late_interaction"] >= 1)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="os^"[i], color=f"C{i}", label=label)
        li = sorted((r["tokens_per_minute"], r["accuracy"]) for r in rows
                    if r["method"] == m and r["late_interaction"] < 1)
        if li:
            ax.scatter([p[0] for p in li], [p[1] for p in li], marker="os^"[i], facecolors="none",
                       edgecolors=f"C{i}", s=70, label=f"{label}, default retrieval mix")
    ax.set_xscale("log")
    ax.set_xlabel("visual tokens kept per minute of video (log)")
    ax.set_ylabel("NIAH image-needle answer accuracy")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Token pruning: accuracy vs tokens kept (needles 5 % of the frame)")
    fig.tight_layout()
    fig.savefig(HERE / "accuracy_vs_tokens.png", dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])

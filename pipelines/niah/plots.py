"""NIAH figures: a depth x length heatmap of one metric, and accuracy vs visual tokens across configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from streamvid.errors import ValidationError
from streamvid.io import atomic_write

METRIC_NAMES = {"hit1": "hit@1", "hit3": "hit@3", "correct": "answer accuracy"}


def format_length(sec: float) -> str:
    """Seconds as a short axis label: ``45s``, ``5m``, ``1h30m``."""
    sec = int(round(sec))
    if sec < 60:
        return f"{sec}s"
    h, rem = divmod(sec, 3600)
    m, s = divmod(rem, 60)
    out = (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{s}s" if s and not h else "")
    return out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def heatmap(summary: Mapping[str, Any], path: str | Path, *, qtype: str = "image",
            metric: str = "hit1", title: str | None = None) -> Path:
    """Draw ``summary["cells"][qtype][metric]`` as a heatmap: rows depth, columns length."""
    cells = summary.get("cells", {}).get(qtype, {}).get(metric)
    if cells is None:
        raise ValidationError(f"heatmap: the summary has no {metric!r} cells for {qtype!r} questions; "
                              f"it has {sorted(summary.get('cells', {}))}")
    import numpy as np

    plt = _pyplot()
    lengths, depths = summary["lengths"], summary["depths"]
    mat = np.array([[np.nan if v is None else v for v in row] for row in cells], dtype=float)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(lengths) + 2.5), max(3.2, 0.55 * len(depths) + 1.8)))
    im = ax.imshow(mat, cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto")
    for i in range(mat.shape[0]):
        for j in range(mat.shape[1]):
            v = mat[i, j]
            ax.text(j, i, "–" if np.isnan(v) else f"{v:.2f}", ha="center", va="center",
                    fontsize=9, color="black")
    ax.set_xticks(range(len(lengths)), [format_length(x) for x in lengths])
    ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths])
    ax.set_xlabel("haystack length")
    ax.set_ylabel("needle depth")
    name = summary.get("name", "")
    ax.set_title(title or f"{name} — {qtype} questions, {METRIC_NAMES.get(metric, metric)}")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return _save(fig, plt, path)


def comparison(points: Sequence[Mapping[str, Any]], path: str | Path, *,
               title: str = "NIAH: accuracy vs visual tokens in context") -> Path:
    """Accuracy vs mean visual tokens in context, one labelled point per config.

    Each point: ``{"name", "tokens", "accuracy", "by_type": {qtype: accuracy}}``; per-type
    accuracies are drawn as smaller markers joined to the config's overall point.
    """
    if not points:
        raise ValidationError("comparison: expected at least one finished run, got none")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    markers = {"image": "s", "when": "^", "text": "D", "choice": "v", "multihop": "P", "order": "X"}
    for i, p in enumerate(points):
        color = f"C{i % 10}"
        x = p.get("tokens") or 0.0
        ax.scatter([x], [p.get("accuracy") or 0.0], s=80, color=color, zorder=3, label=p["name"])
        for qt, acc in sorted((p.get("by_type") or {}).items()):
            if acc is None:
                continue
            ax.scatter([x], [acc], s=22, color=color, marker=markers.get(qt, "o"), alpha=0.6, zorder=2)
            ax.annotate(qt, (x, acc), textcoords="offset points", xytext=(5, -3), fontsize=7, alpha=0.7)
    xs = sorted((p.get("tokens") or 0.0, p.get("accuracy") or 0.0) for p in points)
    if len(xs) > 1:
        ax.plot([a for a, _ in xs], [b for _, b in xs], color="0.6", lw=1, zorder=1)
    ax.set_xlabel("visual tokens in the answerer's context (mean per question)")
    ax.set_ylabel("answer accuracy")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title)
    fig.tight_layout()
    return _save(fig, plt, path)


def _save(fig: Any, plt: Any, path: str | Path) -> Path:
    p = Path(path)
    try:
        atomic_write(p, lambda fh: fig.savefig(fh, format="png", dpi=110))
    finally:
        plt.close(fig)
    return p

"""``streamvid niah``: run a needle-in-a-video-haystack grid, or compare several runs."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click

from streamvid.errors import ConfigError

log = logging.getLogger(__name__)


def _progress_enabled(ctx: click.Context) -> bool:
    obj = ctx.find_root().obj
    return bool(obj.get("progress", True)) if isinstance(obj, dict) else True


def _point(summary: dict[str, Any]) -> dict[str, Any]:
    return {"name": summary.get("name", "?"), "tokens": summary.get("tokens"),
            "accuracy": summary.get("accuracy"),
            "by_type": {qt: o.get("correct") for qt, o in summary.get("overall", {}).items()}}


def _lines(report: Any) -> list[str]:
    s = report.summary
    out = [f"{s.get('name')}: {s.get('questions')} questions, accuracy "
           f"{_pct(s.get('accuracy'))}, mean visual tokens {s.get('tokens')}  "
           f"(this call: {report.asked} asked, {report.indexed} indexed, {report.built} haystacks built, "
           f"{report.skipped} already answered; {report.seconds:.1f} s)"]
    for qt, o in s.get("overall", {}).items():
        parts = [f"{k} {_pct(o[k])}" for k in ("hit1", "hit3", "recall3", "correct") if k in o]
        out.append(f"  {qt:<9} n={o['n']:<4} " + "  ".join(parts))
    out.append(f"  results: {report.out}")
    return out


def _pct(x: Any) -> str:
    return "–" if x is None else f"{100 * float(x):.0f}%"


@click.command("niah")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="NIAH config YAML (see configs/niah-small.yaml).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Run folder (resumed when it exists); with --compare, the parent of every run.")
@click.option("--compare", is_flag=True, default=False,
              help="Compare: run each NIAH config given after the flags (or read each finished "
                   "run folder) and draw accuracy vs visual tokens.")
@click.option("--max-length", type=float, default=None, metavar="SECONDS",
              help="Run only the grid lengths up to this many seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.argument("items", nargs=-1, type=click.Path(exists=True))
@click.pass_context
def niah_command(ctx: click.Context, config_path: str | None, out_dir: str, compare: bool,
                 max_length: float | None, as_json: bool, items: tuple[str, ...]) -> None:
    """Needle-in-a-video-haystack evaluation over a grid of lengths x depths.

    \b
    streamvid niah --config configs/niah-small.yaml --out runs/small
    streamvid niah --out runs/cmp --compare runs/small configs/niah-small-budget256.yaml
    """
    from .grid import NiahConfig
    from .plots import comparison
    from .run import load_summary, run_niah

    progress = _progress_enabled(ctx)
    out = Path(out_dir)
    if items and not compare:
        raise ConfigError("extra arguments are only read with --compare; fix: add --compare, "
                          "or pass a single config with --config")
    if not compare:
        if not config_path:
            raise ConfigError("streamvid niah needs --config FILE (or --compare CONFIG_OR_RUN ...)")
        report = run_niah(NiahConfig.load(config_path).with_lengths(max_length), out, progress=progress)
        if as_json:
            click.echo(json.dumps(report.to_json()))
        else:
            for line in _lines(report):
                click.echo(line)
        return
    sources = ([config_path] if config_path else []) + list(items)
    if len(sources) < 2:
        raise ConfigError("--compare needs at least two NIAH configs or finished run folders")
    summaries, reports = [], []
    names: set[str] = set()
    for src in sources:
        p = Path(src)
        if p.is_dir():
            summary = load_summary(p)
        else:
            cfg = NiahConfig.load(p).with_lengths(max_length)
            if cfg.name in names:
                raise ConfigError(f"--compare: two configs are named {cfg.name!r}; fix: give each a distinct name")
            rep = run_niah(cfg, out / cfg.name, progress=progress)
            reports.append(rep)
            summary = rep.summary
        names.add(summary.get("name", ""))
        summaries.append(summary)
    fig = comparison([_point(s) for s in summaries], out / "comparison.png")
    points = [_point(s) for s in summaries]
    if as_json:
        click.echo(json.dumps({"comparison": str(fig), "points": points,
                               "runs": [r.to_json() for r in reports]}))
        return
    for rep in reports:
        for line in _lines(rep):
            click.echo(line)
    click.echo("config                      tokens  accuracy")
    for p in points:
        click.echo(f"{p['name']:<27} {p['tokens'] if p['tokens'] is not None else '–':>6}  {_pct(p['accuracy'])}")
    click.echo(f"comparison plot: {fig}")

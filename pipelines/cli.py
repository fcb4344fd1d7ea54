"""The ``streamvid`` command line: index, ask, live, niah, demo.

Errors that streamvid raises on purpose (:class:`StreamvidError`) print one line and exit 1;
``STREAMVID_DEBUG=1`` shows the traceback. ``--json`` prints exactly one JSON object.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

import click

from streamvid import __version__
from streamvid.config import Config
from streamvid.errors import ConfigError, SourceError, StreamvidError
from streamvid.types import Answer, Question, format_time

log = logging.getLogger("streamvid")


def _parse_set(values: tuple[str, ...]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. --set retrieval.top_k=8")
        out[key.strip()] = yaml.safe_load(raw)
    return out


def load_config(path: str | None, sets: tuple[str, ...] = (), **flags: Any) -> Config:
    """YAML file (or defaults) + ``--set`` overrides + named flags (flag wins)."""
    overrides = _parse_set(sets)
    overrides.update({k: v for k, v in flags.items() if v is not None})
    return Config.load(path, overrides)


def _print_answer(ans: Answer, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(ans.to_json(), ensure_ascii=False))
        return
    click.echo(ans.answer)
    for e in ans.evidence:
        click.echo(f"{format_time(e.start)}–{format_time(e.end)}  {e.score:.2f}  {e.text}")


def _check_video_arg(video: str) -> None:
    """Fail early, in one line, on a path that cannot be a video (URIs pass through)."""
    if "://" in video or video.isdigit() or video.startswith("/dev/video"):
        return
    p = Path(video)
    if not p.exists():
        raise SourceError(f"video {video} does not exist; fix: check the path")


common_config = [
    click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                 help="YAML config (see configs/lite.yaml)."),
    click.option("--set", "sets", multiple=True, metavar="SECTION.KEY=VALUE",
                 help="Override one config value; repeatable."),
]


def with_config(fn):
    for opt in reversed(common_config):
        fn = opt(fn)
    return fn


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="streamvid")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, no_progress: bool) -> None:
    """Ask questions of long videos, files or live streams, on a CPU, offline."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = {"progress": not no_progress and (sys.stderr.isatty()
                                                or os.environ.get("STREAMVID_PROGRESS") == "1")}


# ---------------------------------------------------------------------------- index

@cli.command()
@click.argument("video")
@click.option("--store", required=True, type=click.Path(file_okay=False), help="Store directory (created or extended).")
@with_config
@click.option("--fps", type=float, default=None, help="Frames sampled per second (default 1).")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds (live sources run until stopped otherwise).")
@click.option("--source-id", default=None, help="Name of this video in the store (default: file name).")
@click.option("--no-cache", is_flag=True, help="Encode every frame (switch off the feature cache).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.pass_context
def index(ctx: click.Context, video: str, store: str, config_path: str | None, sets: tuple[str, ...],
          fps: float | None, duration: float | None, source_id: str | None, no_cache: bool,
          as_json: bool) -> None:
    """Index VIDEO (a file, rtsp:// URL or camera index) into a store."""
    from .index import index_video

    cfg = load_config(config_path, sets, **{"source.fps": fps, "source.duration": duration,
                                            "cache.enabled": False if no_cache else None})
    _check_video_arg(video)
    summary = index_video(video, store, cfg, progress=ctx.obj["progress"], source_id=source_id)
    if as_json:
        click.echo(json.dumps(summary.to_json()))
    else:
        for line in summary.lines():
            click.echo(line)


@cli.command("index-corpus")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--store", required=True, type=click.Path(file_okay=False), help="Store directory (built from its shards in STORE/shards).")
@with_config
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True, help="local: in this process; ray: actors of a Ray cluster (pip install 'streamvid[ray]').")
@click.option("--address", default=None, help="Ray cluster to join (ray://HOST:10001 or auto); default: start one on this machine.")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True, help="Parallel workers (Ray actors, each loads the models once).")
@click.option("--split-long", type=click.FloatRange(min=1.0), default=None, help="Index videos longer than this many seconds in ranges of this length, in parallel.")
@click.option("--retries", type=click.IntRange(0), default=2, show_default=True, help="Times an item is retried when its worker process dies.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.pass_context
def index_corpus(ctx: click.Context, inputs: tuple[str, ...], store: str, config_path: str | None,
                 sets: tuple[str, ...], engine: str, address: str | None, workers: int,
                 split_long: float | None, retries: int, as_json: bool) -> None:
    """Index many videos (files, folders, globs, a .txt of URIs) into one store.

    A re-run skips what is done; inputs that fail are listed (exit code 1) and retried next time.
    """
    from .corpus import index_corpus as run

    cfg = load_config(config_path, sets)
    summary = run(list(inputs), store, cfg, engine=engine, workers=workers, address=address,
                  split_long=split_long, retries=retries, progress=ctx.obj["progress"])
    if as_json:
        click.echo(json.dumps(summary.to_json()))
    else:
        for line in summary.lines():
            click.echo(line)
    if summary.failures:
        raise SourceError(f"{len(summary.failures)} of the inputs failed (listed in the summary); "
                          "fix: repair or remove them and run again (finished inputs are skipped)")


# ---------------------------------------------------------------------------- ask

@cli.command()
@click.argument("args", nargs=-1)
@click.option("--store", type=click.Path(file_okay=False), default=None, help="Ask an existing store.")
@click.option("--image", "image", type=click.Path(dir_okay=False), default=None, help="Image query: when does this appear?")
@click.option("--top-k", type=click.IntRange(1, 1000), default=None, help="Moments returned (default 5).")
@click.option("--budget", type=click.IntRange(1), default=None, help="Visual token budget of the context.")
@with_config
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object.")
@click.pass_context
def ask(ctx: click.Context, args: tuple[str, ...], store: str | None, image: str | None,
        top_k: int | None, budget: int | None, config_path: str | None, sets: tuple[str, ...],
        as_json: bool) -> None:
    """Ask a question: `ask --store DIR "QUESTION"` or `ask VIDEO "QUESTION"` (indexes first, cached)."""
    from .ask import Asker, cached_store_dir, load_image

    user_cfg = load_config(config_path, sets) if (config_path or sets) else None
    if store is None:
        if not args:
            raise click.UsageError("give a VIDEO or --store DIR")
        video, rest = args[0], args[1:]
    else:
        video, rest = None, args
    if len(rest) > 1:
        raise click.UsageError(f"expected one QUESTION, got {len(rest)} words; quote the question")
    text = rest[0] if rest else ""
    img = load_image(image) if image else None
    if not text.strip() and img is None:
        raise click.UsageError("give a QUESTION, --image PATH, or both")
    question = Question(text=text, image=img, image_path=image or "")
    timings: dict[str, float] = {}
    if video is not None:
        from .index import index_video

        _check_video_arg(video)
        cfg = user_cfg or load_config(None)
        store_dir = cached_store_dir(video, cfg)
        if not (store_dir / "manifest.json").exists():
            summary = index_video(video, store_dir, cfg, progress=ctx.obj["progress"])
            timings["index"] = summary.seconds
            if not as_json:
                click.echo(summary.lines()[0], err=True)
        store = str(store_dir)
    with Asker(store, user_cfg) as asker:
        ans = asker.ask(question, top_k=top_k, budget=budget)
    if timings:
        ans = Answer(ans.answer, ans.evidence, {**timings, **ans.timings})
    _print_answer(ans, as_json)


# ---------------------------------------------------------------------------- live

@cli.command()
@click.argument("uri")
@click.option("--store", required=True, type=click.Path(file_okay=False))
@with_config
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option("--top-k", type=click.IntRange(1, 1000), default=None)
@click.option("--json", "as_json", is_flag=True, help="Answers as JSON lines.")
@click.pass_context
def live(ctx: click.Context, uri: str, store: str, config_path: str | None, sets: tuple[str, ...],
         duration: float | None, top_k: int | None, as_json: bool) -> None:
    """Index URI (rtsp://…, a camera, a file) and answer questions typed on stdin meanwhile.

    One question per line; a line starting with `image:` names an image query. The store is
    committed every memory.commit_every seconds, so answers cover what was seen until then.
    """
    from .ask import Asker, load_image
    from .index import index_video

    cfg = load_config(config_path, sets, **{"source.duration": duration})
    cfg = cfg.replace(memory=dataclasses.replace(cfg.memory,
                                                 commit_every=min(cfg.memory.commit_every, 5.0)))
    _check_video_arg(uri)
    stop = threading.Event()
    result: dict[str, Any] = {}
    ready = threading.Event()

    def run() -> None:
        try:
            result["summary"] = index_video(uri, store, cfg, progress=False, stop=stop,
                                            on_commit=lambda s: ready.set())
        except BaseException as err:  # forwarded to the main thread
            result["error"] = err
        finally:
            ready.set()
            stop.set()

    worker = threading.Thread(target=run, name="streamvid-live", daemon=True)
    worker.start()
    click.echo(f"ingesting {uri}; type a question per line (Ctrl-D ends input, Ctrl-C stops)", err=True)
    try:
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            ready.wait()
            if "error" in result:
                break
            if line.startswith("image:"):
                q = Question(image=load_image(line[6:].strip()), image_path=line[6:].strip())
            else:
                q = Question(text=line)
            with Asker(store, cfg) as asker:
                _print_answer(asker.ask(q, top_k=top_k), as_json)
        while worker.is_alive():
            worker.join(0.5)
    except KeyboardInterrupt:
        click.echo("stopping…", err=True)
    finally:
        stop.set()
        worker.join()
    if "error" in result:
        raise result["error"]
    summary = result.get("summary")
    if summary is not None:
        for line in summary.lines():
            click.echo(line, err=True)


# ---------------------------------------------------------------------------- demo

@cli.command()
@click.option("--seed", type=int, default=None, help="Seed for the needle's time (default: random).")
@click.option("--length", type=float, default=120.0, show_default=True, help="Haystack length in seconds.")
@click.option("--keep", type=click.Path(file_okay=False), default=None, help="Keep the haystack and store in this directory.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def demo(ctx: click.Context, seed: int | None, length: float, keep: str | None, as_json: bool) -> None:
    """Splice a needle into a bundled public-domain video at a random time, then find it."""
    from .demo import run_demo

    report = run_demo(seed=seed, length=length, keep=keep, progress=ctx.obj["progress"])
    if as_json:
        click.echo(json.dumps(report))
    else:
        for line in report["lines"]:
            click.echo(line)


def _register_optional() -> None:
    try:
        from .niah.cli import niah_command
    except ImportError:  # pragma: no cover - the niah package is part of the install
        return
    cli.add_command(niah_command, name="niah")


_register_optional()


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning a StreamvidError into one line and exit code 1."""
    try:
        cli.main(args=argv, prog_name="streamvid", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except click.exceptions.Exit as err:
        return err.exit_code
    except StreamvidError as err:
        if os.environ.get("STREAMVID_DEBUG") == "1":
            traceback.print_exc()
        click.echo(f"error: {err}", err=True)
        return 1
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

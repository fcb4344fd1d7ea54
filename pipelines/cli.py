"""The ``streamvid`` command line: index, ask, live, serve, niah, demo.

Every failure — a :class:`StreamvidError`, a usage error, an OS error (permissions, a full
disk), undecodable input — prints one ``error: … fix: …`` line and exits 1 (:func:`main`);
``STREAMVID_DEBUG=1`` shows the traceback. ``--json`` prints exactly one JSON object.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import click

from streamvid import __version__
from streamvid.config import AnswerConfig, Config
from streamvid.errors import ConfigError, SourceError, StreamvidError
from streamvid.types import Answer, Question

log = logging.getLogger("streamvid")


def _parse_set(values: tuple[str, ...]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. --set retrieval.top_k=8")
        try:
            out[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML "
                              f"({str(err).splitlines()[0]}); fix: quote it, e.g. "
                              f"--set '{key.strip()}=\"...\"'") from err
    return out


def clean_text(text: str) -> str:
    """Command-line or stdin text with undecodable bytes replaced (U+FFFD), never an error."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def load_config(path: str | None, sets: tuple[str, ...] = (), **flags: Any) -> Config:
    """YAML file (or defaults) + ``--set`` overrides + named flags (flag wins)."""
    overrides = _parse_set(sets)
    overrides.update({k: v for k, v in flags.items() if v is not None})
    return Config.load(path, overrides)


def _print_answer(ans: Answer, as_json: bool, answer_cfg: AnswerConfig) -> None:
    from .ask import answer_json

    if as_json:
        click.echo(json.dumps(answer_json(ans, answer_cfg), ensure_ascii=False))
        return
    click.echo(ans.answer)
    for e in ans.evidence:
        click.echo(e.line())


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
@click.option("--worker-cpus", type=click.IntRange(1), default=None, help="Cores per worker: its models (torch, onnxruntime, CTranslate2, OpenCV) run on this many threads and a Ray actor reserves this many CPUs. Default: 1 with Ray; in-process, as the config says.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.pass_context
def index_corpus(ctx: click.Context, inputs: tuple[str, ...], store: str, config_path: str | None,
                 sets: tuple[str, ...], engine: str, address: str | None, workers: int,
                 split_long: float | None, retries: int, worker_cpus: int | None,
                 as_json: bool) -> None:
    """Index many videos (files, folders, globs, a .txt of URIs) into one store.

    A re-run skips what is done; inputs that fail are listed (exit code 1) and retried next time.
    """
    from .corpus import index_corpus as run

    cfg = load_config(config_path, sets)
    summary = run(list(inputs), store, cfg, engine=engine, workers=workers, address=address,
                  split_long=split_long, retries=retries, worker_cpus=worker_cpus,
                  progress=ctx.obj["progress"])
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
@click.option("--answerer", default=None, metavar="NAME", help="Who answers: extractive (default, offline), hf, openai (sets answer.name).")
@click.option("--model", default=None, help="The answerer's model: hub name or path (hf), served model name (openai).")
@click.option("--url", default=None, help="openai: the server's base URL, e.g. http://127.0.0.1:8080/v1.")
@with_config
@click.option("--allow-download", is_flag=True, help="Let a store that names a hub model download it (opening a store never downloads otherwise).")
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object.")
@click.pass_context
def ask(ctx: click.Context, args: tuple[str, ...], store: str | None, image: str | None,
        top_k: int | None, budget: int | None, answerer: str | None, model: str | None,
        url: str | None, config_path: str | None, sets: tuple[str, ...], allow_download: bool,
        as_json: bool) -> None:
    """Ask a question: `ask --store DIR "QUESTION"` or `ask VIDEO "QUESTION"` (indexes first, cached)."""
    from .ask import Asker, cached_store_dir, load_image

    flags = {"answer.name": answerer, "answer.model": model, "answer.url": url}
    user_cfg = load_config(config_path, sets, **flags) \
        if (config_path or sets or any(v is not None for v in flags.values())) else None
    if store is None:
        if not args:
            raise click.UsageError("give a VIDEO or --store DIR")
        video, rest = args[0], args[1:]
    else:
        video, rest = None, args
    if len(rest) > 1:
        raise click.UsageError(f"expected one QUESTION, got {len(rest)} words; quote the question")
    text = clean_text(rest[0]) if rest else ""
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
    with Asker(store, user_cfg, allow_download=allow_download) as asker:
        ans = asker.ask(question, top_k=top_k, budget=budget)
        answer_cfg = asker.config.answer
    if timings:
        ans = Answer(ans.answer, ans.evidence, {**timings, **ans.timings})
    _print_answer(ans, as_json, answer_cfg)


# ---------------------------------------------------------------------------- live

@cli.command()
@click.argument("uri")
@click.option("--store", required=True, type=click.Path(file_okay=False))
@with_config
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option("--source-id", default=None, help="Name of this stream in the store (default: its URI or file name).")
@click.option("--top-k", type=click.IntRange(1, 1000), default=None)
@click.option("--json", "as_json", is_flag=True, help="Answers as JSON lines.")
@click.pass_context
def live(ctx: click.Context, uri: str, store: str, config_path: str | None, sets: tuple[str, ...],
         duration: float | None, source_id: str | None, top_k: int | None, as_json: bool) -> None:
    """Index URI (rtsp://…, a camera, a file) and answer questions typed on stdin meanwhile.

    One question per line; a line starting with `image:` names an image query. The models
    load once; the store is committed every memory.commit_every seconds (at most 5), so
    answers cover what was seen until then. A question that cannot be asked (an unreadable
    image) is answered with an `error:` line and the session goes on.
    """
    from .ask import load_image
    from .live import LiveSession

    cfg = load_config(config_path, sets, **{"source.duration": duration})
    _check_video_arg(uri)
    with LiveSession(store, cfg, commit_every=min(cfg.memory.commit_every, 5.0)) as session:
        sid = session.add(uri, source_id)["source_id"]
        click.echo(f"ingesting {uri}; type a question per line (Ctrl-D ends input, Ctrl-C stops)", err=True)
        try:
            waited = False
            stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace") \
                if hasattr(sys.stdin, "buffer") else sys.stdin
            for line in stdin:
                line = line.strip()
                if not line:
                    continue
                if not waited:  # the first answer needs a first commit
                    session.wait_commit(after=0)
                    waited = True
                if session.exception(sid) is not None:
                    break
                try:
                    if line.startswith("image:"):
                        q = Question(image=load_image(line[6:].strip()), image_path=line[6:].strip())
                    else:
                        q = Question(text=line)
                    _print_answer(session.ask(q, top_k=top_k), as_json, cfg.answer)
                except StreamvidError as err:  # one bad question does not end the session
                    click.echo(error_line(err), err=True)
            while session.running():
                time.sleep(0.2)
        except KeyboardInterrupt:
            click.echo("stopping…", err=True)
    err = session.exception(sid)
    if err is not None:
        raise err if isinstance(err, StreamvidError) else SourceError(f"{uri}: {err}")
    for line in session.summary(sid).lines():
        click.echo(line, err=True)


# ---------------------------------------------------------------------------- serve

@cli.command()
@click.option("--store", required=True, type=click.Path(file_okay=False), help="Store directory (created or reopened).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on; any but loopback needs --token.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--token", envvar="STREAMVID_TOKEN", default=None,
              help="Bearer token every request must carry (env STREAMVID_TOKEN).")
@click.option("--media-root", "media_roots", multiple=True, type=click.Path(file_okay=False, exists=True),
              help="Directory whose files may be added as streams; repeatable. No file sources without one.")
@click.option("--max-upload-mb", type=click.FloatRange(0.01, 1024), default=8.0, show_default=True,
              help="Largest request body (an uploaded image).")
@click.option("--commit-every", type=click.FloatRange(0.1), default=None,
              help="Seconds between commits (default: memory.commit_every, at most 5).")
@click.option("--torch-threads", type=click.IntRange(0), default=1, show_default=True,
              help="Threads inside each model call (0 = torch's default). Streams and questions "
                   "run in parallel threads already; more threads per call contend on a busy CPU.")
@with_config
def serve(store: str, host: str, port: int, token: str | None, media_roots: tuple[str, ...],
          max_upload_mb: float, commit_every: float | None, torch_threads: int,
          config_path: str | None, sets: tuple[str, ...]) -> None:
    """Serve live questioning of many streams over HTTP, with a web page at /.

    Streams and alerts are saved with the store: after a restart they resume.
    """
    from .live import LiveSession
    from .serve import LOOPBACK, create_app, run

    if host not in LOOPBACK and not token:
        raise ConfigError(f"--host {host} is reachable from other machines; fix: give --token "
                          "(or STREAMVID_TOKEN), or bind 127.0.0.1")
    cfg = load_config(config_path, sets)
    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)
    every = commit_every if commit_every is not None else min(cfg.memory.commit_every, 5.0)
    with LiveSession(store, cfg, commit_every=every, persist=True) as session:
        resumed = session.resume()
        app = create_app(session, token=token, media_roots=list(media_roots),
                         max_body=int(max_upload_mb * (1 << 20)))
        if resumed:
            click.echo(f"resumed {len(resumed)} streams: {', '.join(resumed)}", err=True)
        click.echo(f"serving {store} on http://{host}:{port}/", err=True)
        run(app, host, port)


# ---------------------------------------------------------------------------- demo

# ---------------------------------------------------------------------------- summarize

def _time_arg(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    from streamvid.question import parse_time

    t = parse_time(value) if ":" in value else None
    if t is None:
        try:
            t = float(value)
        except ValueError:
            raise click.BadParameter(f"{value!r}: expected HH:MM:SS, MM:SS or seconds") from None
    return t


@cli.command()
@click.option("--store", required=True, type=click.Path(file_okay=False), help="The store to summarise.")
@click.option("--from", "start", default=None, callback=_time_arg, help="Start of the span (HH:MM:SS or seconds).")
@click.option("--to", "end", default=None, callback=_time_arg, help="End of the span (HH:MM:SS or seconds).")
@click.option("--source", default=None, help="Only this video of the store (its source id).")
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object.")
def summarize(store: str, start: float | None, end: float | None, source: str | None, as_json: bool) -> None:
    """A timeline of what a store holds: objects seen with counts, text on screen, an overview."""
    from .summarize import summarize_store

    sums = summarize_store(store, start=start, end=end, source=source)
    if as_json:
        click.echo(json.dumps({"store": str(store), "from": start, "to": end,
                               "videos": [s.to_json() for s in sums]}, ensure_ascii=False))
        return
    if not sums:
        click.echo("The store holds nothing in that span.")
    for s in sums:
        for line in s.lines():
            click.echo(line)


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


def _os_error_line(err: OSError) -> str:
    name = err.filename if err.filename is not None else "a file"
    why = err.strerror or type(err).__name__
    if err.errno == errno.ENOSPC:
        return (f"no space left on the device while writing {name}; what was committed before "
                "is intact; fix: free disk space (or use a --store on another disk) and run again")
    if err.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied: {name}; fix: check the permissions of {name}"
    if err.errno == errno.EROFS:
        return f"{name} is on a read-only file system; fix: use a writable --store"
    return f"{why}: {name}; fix: check the path {name}"


def error_line(err: BaseException) -> str:
    """The one ``error: … fix: …`` line that stands for a failure."""
    from PIL import Image

    if isinstance(err, click.ClickException):
        msg = err.format_message()
        ctx = getattr(err, "ctx", None)
        cmd = ctx.command_path if ctx is not None else "streamvid"
        msg = f"{msg}; fix: see `{cmd} --help`"
    elif isinstance(err, StreamvidError):
        msg = str(err)
    elif isinstance(err, OSError):
        msg = _os_error_line(err)
    elif isinstance(err, UnicodeError):
        msg = (f"input is not valid UTF-8 text ({err}); fix: pass UTF-8 text (files: re-save "
               "them as UTF-8)")
    elif isinstance(err, Image.DecompressionBombError):
        msg = f"an image is too large to open safely ({err}); fix: shrink it"
    elif isinstance(err, MemoryError):
        msg = "out of memory; fix: use a smaller input or close other programs"
    else:
        msg = f"unexpected {type(err).__name__}: {err}"
    if "fix:" not in msg:
        msg += "; fix: run again with STREAMVID_DEBUG=1 to see where it failed"
    return "error: " + " ".join(msg.split())


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI. Every failure is one ``error:`` line and exit code 1
    (Ctrl-C: 130); ``STREAMVID_DEBUG=1`` adds the traceback."""
    try:
        cli.main(args=argv, prog_name="streamvid", standalone_mode=False)
    except click.exceptions.Abort:  # click's form of Ctrl-C (and of EOF at a prompt)
        click.echo("interrupted", err=True)
        return 130
    except click.exceptions.Exit as err:
        return err.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except Exception as err:  # the one place failures become a line and an exit code
        if os.environ.get("STREAMVID_DEBUG") == "1":
            traceback.print_exc()
        click.echo(error_line(err), err=True)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Ctrl-C, kill -9, a lost lock race, a full disk and a bad live question, on real processes
and real video: the user's files stay byte-identical and committed clips survive."""

from __future__ import annotations

import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from memory.store import MemoryStore, file_check

from .conftest import assert_one_error, run_cli, snapshot
from .media import DATA, looped

ROOT = Path(__file__).resolve().parents[2]
# cheap settings for the long runs: what is tested is committing and cleaning up
FAST = ["--set", "describe.ocr=false", "--set", "encoder.size=256"]


def cli_proc(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", *args],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT),
                                           "HF_HUB_OFFLINE": "1", **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def wait_for(cond, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    t0 = time.monotonic()
    while not cond():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the process ended early ({proc.returncode}): {err[-3000:]}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            pytest.fail("timed out")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def long_video(tmp_path_factory) -> Path:
    """Six minutes of real video: the 8 s Earth fixture looped 48 times (packets copied), long
    enough that indexing still runs when the signal comes, however fast indexing gets."""
    return looped(DATA / "world_8s.mp4", 48, tmp_path_factory.mktemp("long") / "long.mp4")


def user_dir(root: Path) -> Path:
    d = root / "mine"
    (d / "photos").mkdir(parents=True)
    (d / "notes.txt").write_text("my notes\n")
    (d / "photos" / "a.jpg").write_bytes(bytes(range(256)) * 40)
    (d / "seg-notes.txt").write_text("a name like a store's\n")
    (d / ".hidden").write_text("x")
    return d


def test_ctrl_c_leaves_the_users_directory_byte_identical(tmp_path, long_video):
    """`index V --store DIR` into a directory of the user's files, then SIGINT mid-run."""
    d = user_dir(tmp_path)
    before = snapshot(d)
    proc = cli_proc("index", str(long_video), "--store", str(d), "--set",
                    "memory.commit_clips=0", *FAST)
    wait_for(lambda: (d / "config.yaml").exists(), proc)   # the store exists, indexing runs
    time.sleep(random.uniform(0.0, 1.0))
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    assert snapshot(d) == before


def test_losing_the_lock_race_removes_nothing(tmp_path, capsys):
    """Another process holds the writer lock of a directory that has no manifest yet: the
    refused run must not remove that directory (the other process is writing into it)."""
    d = user_dir(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time; "
         f"fd = os.open({str(d / '.writer.lock')!r}, os.O_RDWR | os.O_CREAT, 0o644); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(d)
        code, _, err = run_cli(capsys, ["index", str(DATA / "world_3s.mp4"), "--store", str(d)])
        assert_one_error(code, err, "another process")
        assert snapshot(d) == before
    finally:
        holder.kill()
        holder.wait()


def test_kill_9_mid_file_keeps_every_commit(tmp_path, long_video):
    """SIGKILL at a random point of a long file index: the store opens, and at most one
    commit interval (memory.commit_clips clips) is lost."""
    interval = 3
    store = tmp_path / "store"
    proc = cli_proc("-vv", "index", str(long_video), "--store", str(store), "--set",
                    f"memory.commit_clips={interval}", *FAST)
    errs: list[str] = []
    reader = threading.Thread(target=lambda: errs.extend(proc.stderr), daemon=True)
    reader.start()

    def generation() -> int:
        try:
            return json.loads((store / "manifest.json").read_text())["generation"]
        except (OSError, ValueError, KeyError):
            return 0

    rng = random.Random()
    after = rng.randint(1, 3)
    wait_for(lambda: generation() >= after, proc)
    time.sleep(rng.uniform(0.0, 1.5))
    assert proc.poll() is None, "the index ended before the kill; use a longer video"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    reader.join(10)
    built = sum(1 for ln in errs if "clip built:" in ln)
    with MemoryStore.open(store, mode="r") as s:
        kept = len(s)
        clips = s.get(s.ids())
    assert kept >= after and built >= kept
    assert built - kept <= interval, (built, kept)
    starts = [c.start for c in clips]
    assert starts == sorted(starts) and starts[0] < 1.0
    for a, b in zip(clips, clips[1:]):   # a prefix of the video, no hole
        assert b.start - a.end < 8.0
    assert all(np.isfinite(c.vector).all() for c in clips)


@pytest.fixture()
def small_disk(tmp_path):
    """A 4 MiB tmpfs, unmounted again however the test ends (lazily if a mapping of one of
    its files is still alive)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield disk
    finally:
        import gc

        gc.collect()   # memory-mapped store files keep the mount busy
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(disk)], check=True)
        assert not os.path.ismount(disk)


def test_full_disk_during_commit_keeps_the_store(built_store, small_disk, capsys):
    """ENOSPC while committing: one error line, the store as it was, no temp files."""
    import shutil

    disk = small_disk
    store = disk / "store"
    shutil.copytree(built_store, store)
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    (disk / "filler").write_bytes(b"\0" * max(0, free - 64 * 1024))
    manifest = (store / "manifest.json").read_bytes()
    code, _, err = run_cli(capsys, ["index", str(DATA / "world_3s.mp4"), "--store",
                                    str(store), "--source-id", "more"])
    assert_one_error(code, err, "no space left")
    assert (store / "manifest.json").read_bytes() == manifest
    assert not [p.name for p in store.iterdir() if p.name.startswith(".tmp") or
                p.name.endswith(".tmp")]
    with MemoryStore.open(store, mode="r") as s:
        assert s.sources() == ["world_8s.mp4"] and len(s) == len(s.get(s.ids()))


def test_live_bad_question_is_an_error_line_and_the_session_goes_on(tmp_path, capsys,
                                                                    monkeypatch):
    from PIL import Image

    tiny = tmp_path / "dot.png"
    Image.fromarray(np.full((1, 1, 3), 128, np.uint8)).save(tiny)
    lines = (f"image: {tmp_path / 'missing.png'}\nimage: {tiny}\n".encode()
             + b"what is shown\xff\xfe?\n")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(lines)))
    code, out, err = run_cli(capsys, ["live", str(DATA / "world_3s.mp4"), "--store",
                                      str(tmp_path / "s"), "--json"])
    assert code == 0, err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 2 and "missing.png" in errors[0] and "too small" in errors[1], err
    answers = [json.loads(ln) for ln in out.splitlines() if ln.strip()]
    assert len(answers) == 1 and answers[0]["evidence"]
    assert "Traceback" not in err


class _Hub(BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self):  # noqa: N802
        _Hub.requests.append(self.path)
        self.send_response(404)
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


def test_opening_a_store_never_downloads(built_store, tmp_path):
    """A store whose config names a hub model: `ask` refuses without a single request to the
    hub (a real HTTP server on loopback stands in for it); --allow-download lets it try."""
    import shutil

    store = tmp_path / "store"
    shutil.copytree(built_store, store)
    cfg = (store / "config.yaml").read_text()
    cfg = re.sub(r"(?m)^(encoder:\n  name:) lite", r"\1 hf", cfg)
    cfg = re.sub(r"(?m)^(  model:) ''", r"\1 someone/tempting-model", cfg, count=1)
    assert "someone/tempting-model" in cfg and "name: hf" in cfg
    (store / "config.yaml").write_text(cfg)
    m = json.loads((store / "manifest.json").read_text())   # a consistent crafted store
    m["files"]["config.yaml"] = file_check(store / "config.yaml")
    (store / "manifest.json").write_text(json.dumps(m))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
           "HF_HOME": str(tmp_path / "hf")}
    try:
        _Hub.requests.clear()
        proc = cli_proc("ask", "--store", str(store), "earth?", env=env)
        _, err = proc.communicate(timeout=300)
        assert_one_error(proc.returncode, err, "someone/tempting-model", "--allow-download")
        assert _Hub.requests == []
        proc = cli_proc("ask", "--store", str(store), "earth?", "--allow-download", env=env)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 1 and "Traceback" not in err
        assert any("tempting-model" in r for r in _Hub.requests), _Hub.requests
    finally:
        server.shutdown()


def test_the_answer_section_never_downloads(built_store, capsys):
    """An hf answerer named by the asker's answer section (or a store's) whose model is not on
    this machine: one error line naming the model and --allow-download, before any model
    loads; the answerer itself loads only local files unless downloads are allowed."""
    from pipelines.answerers import create_answerer
    from streamvid.config import AnswerConfig
    from streamvid.errors import ModelError

    model = "someone/answer-model-not-here"
    code, _, err = run_cli(capsys, ["ask", "--store", str(built_store), "--set",
                                    "answer.name=hf", "--set", f"answer.model={model}", "earth?"])
    assert_one_error(code, err, model, "answer.model", "--allow-download")
    answerer = create_answerer(AnswerConfig(name="hf", model=model), allow_download=False)
    with pytest.raises(ModelError, match=model):
        answerer.vlm_for(None)
    assert answerer._local_only
    assert not create_answerer(AnswerConfig(name="hf", model=model))._local_only

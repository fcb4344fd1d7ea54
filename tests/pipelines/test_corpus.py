"""index-corpus: a small corpus through a real local Ray cluster, checked against indexing
the same plan one item after another; a worker process killed mid-item; the local engine's
resume and failure handling through the CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from memory.store import MemoryStore
from pipelines.cli import main
from pipelines.corpus import expand_inputs, index_corpus, plan, with_threads
from pipelines.index import index_video
from pipelines.models import Models
from streamvid.config import Config
from tests.safety.media import looped

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DATA = Path(__file__).resolve().parents[1] / "data"
# four small videos; world_8s.mp4 (8 s) is the one split in 3 ranges by --split-long 3
VIDEOS = ("box_2s.mp4", "world_8s.mp4", "bbb_rot90_1s.mp4", "vtest_mjpeg_2s.avi")
SPLIT = 3.0
QUESTIONS = ("the earth at night from space", "people walking on a street", "a box on a table",
             "a rabbit in the grass", "city lights", "text on a sign")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("corpus") / "videos"
    d.mkdir()
    for name in VIDEOS:
        shutil.copy(DATA / name, d / name)
    return d


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=80 * 1024 * 1024, _node_ip_address="127.0.0.1",
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "STREAMVID_PROGRESS": "0"}})
    yield ray
    ray.shutdown()


def _top(store: MemoryStore, queries: np.ndarray, space: str, k: int = 4):
    out = []
    for q in queries:
        hits = store.search(q, k, space=space)
        clips = store.get([i for i, _ in hits])
        out.append([(i, c.source_id.split("#")[0], round(c.start, 3), round(c.end, 3),
                     round(s, 4)) for (i, s), c in zip(hits, clips)])
    return out


def test_ray_corpus_equals_sequential_indexing(corpus, ray_cluster, tmp_path):
    # the object detector is off here: its scores near the threshold depend on the torch
    # thread count (a worker runs one thread, this process more), which can change a clip's
    # description; what is compared is the merge, not the detector
    cfg = Config()
    cfg = cfg.replace(describe=dataclasses.replace(cfg.describe, detector="none"))
    files = [str(corpus / n) for n in VIDEOS]
    summary = index_corpus(files, tmp_path / "store", cfg, engine="ray", workers=2,
                           split_long=SPLIT, progress=False)
    assert summary.failures == [] and (summary.inputs, summary.items) == (4, 6)
    assert 12.0 <= summary.video_seconds <= 14.5

    # the same plan, one item after another, into one store in this process (a split range
    # under its own name, since `index` refuses a name already in the store)
    items, failed = plan(files, cfg, split_long=SPLIT)
    assert failed == [] and [it.parts for it in items] == [1, 3, 3, 3, 1, 1]
    models = Models(cfg)
    ref_dir = tmp_path / "ref"
    for it in items:
        sid = it.source_id if it.parts == 1 else f"{it.source_id}#{it.part}"
        index_video(it.uri, ref_dir, it.config(cfg), models=models, progress=False, source_id=sid)

    merged = MemoryStore.open(tmp_path / "store", mode="r")
    ref = MemoryStore.open(ref_dir, mode="r")
    assert len(merged) == len(ref) == summary.clips >= 6
    # a split video reads as one source whose clips keep the video's own times
    assert merged.sources() == sorted(VIDEOS)
    start, end = merged.span("world_8s.mp4")
    assert start == 0.0 and 7.0 <= end <= 8.1
    assert {round(c.start) for c in merged.get(merged.ids())
            if c.source_id == "world_8s.mp4"} >= {0, 3, 6}
    # same top-k, same scores, for text questions and for picture queries
    text = models.text_encoder.encode(list(QUESTIONS))
    assert _top(merged, text, "text") == _top(ref, text, "text")
    pictures = ref.vectors(ref.ids()[::2])
    assert _top(merged, pictures, "visual") == _top(ref, pictures, "visual")
    merged.close()
    ref.close()


def _kill_first_running_worker(stop: threading.Event, killed: list[int]) -> None:
    """SIGKILL the first Ray worker process seen running a ShardWorker.run task."""
    while not stop.is_set():
        for p in psutil.process_iter(["pid", "cmdline"]):
            cmd = " ".join(p.info["cmdline"] or ())
            if "ShardWorker.run" in cmd:
                time.sleep(0.5)  # well inside the item
                os.kill(p.info["pid"], signal.SIGKILL)
                killed.append(p.info["pid"])
                return
        time.sleep(0.05)


def test_killed_worker_is_replaced_and_its_item_retried(corpus, ray_cluster, tmp_path):
    # items long enough (16 s of video each) that the kill lands inside one on any machine
    long = tmp_path / "long"
    long.mkdir()
    files = [str(looped(corpus / name, n, long / name))
             for name, n in (("box_2s.mp4", 8), ("world_8s.mp4", 2))]
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_first_running_worker, args=(stop, killed))
    killer.start()
    try:
        summary = index_corpus(files, tmp_path / "store", Config(), engine="ray", workers=2,
                               progress=False)
    finally:
        stop.set()
        killer.join()
    assert len(killed) == 1, "no worker was seen running"
    assert summary.failures == []
    assert summary.retried == 1 and sorted(r.attempts for r in summary.results) == [1, 2]
    with MemoryStore.open(tmp_path / "store", mode="r") as s:
        assert s.sources() == ["box_2s.mp4", "world_8s.mp4"]
    # no partial shard of the killed attempt is left behind as done
    shards = sorted(p.name for p in (tmp_path / "store" / "shards").iterdir()
                    if not p.name.startswith("."))
    assert shards == sorted(r.key for r in summary.results)


def test_a_worker_runs_every_model_on_its_cores(corpus):
    from streamvid.describe import create_describer

    cfg = with_threads(Config(), 1)
    assert (cfg.encoder.threads, cfg.describe.threads, cfg.describe.asr_threads) == (1, 1, 1)
    describer = create_describer(dataclasses.replace(cfg.describe, labels=False))
    assert describer.ocr.threads == 1
    # the plan knows each item's length (the longest are handed out first)
    items, _ = plan([str(corpus / "world_8s.mp4")], Config(), split_long=SPLIT)
    assert [round(it.length, 1) for it in items] == [3.0, 3.0, 2.0]


def test_inputs_expand_from_folders_globs_and_uri_lists(corpus, tmp_path):
    lst = tmp_path / "videos.txt"
    lst.write_text(f"# my corpus\n{corpus / 'box_2s.mp4'}\n\nrtsp://cam.local/1\n")
    got = expand_inputs([str(corpus), str(corpus / "*.mp4"), str(lst)])
    assert got == [str(corpus / n) for n in sorted(VIDEOS)] + ["rtsp://cam.local/1"]


def test_local_engine_resumes_and_a_bad_input_fails_alone(corpus, tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    store = tmp_path / "store"
    args = ["index-corpus", str(corpus / "bbb_rot90_1s.mp4"), str(bad), str(tmp_path / "nope.mp4"),
            "--store", str(store), "--json"]
    assert main(args) == 1  # some inputs failed: exit code 1, the rest indexed
    first = json.loads(capsys.readouterr().out)
    assert (first["inputs"], first["indexed"], first["failed"]) == (3, 1, 2)
    errors = {f["input"]: f["error"] for f in first["failures"]}
    assert "broken.mp4" in errors[str(bad)] and "does not exist" in errors[str(tmp_path / "nope.mp4")]
    assert first["clips"] >= 1
    manifest = (store / "manifest.json").read_text()

    # a re-run skips the finished input and leaves the store as it was
    assert main(args) == 1
    again = json.loads(capsys.readouterr().out)
    assert (again["indexed"], again["skipped"], again["failed"]) == (0, 1, 2)
    assert (store / "manifest.json").read_text() == manifest

    # a store built by `index` is not overwritten
    assert main(["index-corpus", str(corpus / "box_2s.mp4"), "--store", str(store / "shards" /
                 os.listdir(store / "shards")[0])]) == 1
    assert "not built by index-corpus" in capsys.readouterr().err

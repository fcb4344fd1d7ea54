"""People, vehicles, counts, absent things and summaries through the real CLI on a real
street-camera clip (tests/data/vtest_10s_1fps.mp4: 10 s of vtest.avi at 1 fps)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipelines.cli import main

os.environ.setdefault("HF_HUB_OFFLINE", "1")
VIDEO = Path(__file__).resolve().parents[1] / "data" / "vtest_10s_1fps.mp4"


def _ask(capsys, *args: str) -> dict:
    assert main(["ask", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """The clip asked once as `streamvid ask VIDEO QUESTION` (which indexes it), its store."""
    cache = tmp_path_factory.mktemp("cache")
    os.environ["STREAMVID_CACHE"] = str(cache)
    try:
        assert main(["ask", str(VIDEO), "how many people are there at 00:00:05?", "--json"]) == 0
    finally:
        del os.environ["STREAMVID_CACHE"]
    (found,) = list((cache / "stores").iterdir())
    return found


def test_count_at_a_time_through_ask_video(store, capsys):
    ans = _ask(capsys, "--store", str(store), "how many people are there at 00:00:05?")
    n = int(ans["answer"].split()[0])
    assert 4 <= n <= 8, ans["answer"]     # six people walk there (counted by eye)
    ev = ans["evidence"][0]
    assert abs(ev["keyframe"] - 5) <= 1 and ev["source_id"] == "vtest_10s_1fps.mp4"


def test_when_a_vehicle_appears(store, capsys):
    ans = _ask(capsys, "--store", str(store), "when does a car appear?")
    assert " appears at 00:00:" in ans["answer"] and "top right" in ans["answer"], ans["answer"]


def test_absent_things_are_not_found(store, capsys):
    for q in ("what does the sign about the wifi say?", "when does a dog appear?"):
        ans = _ask(capsys, "--store", str(store), q)
        assert ans["answer"].startswith("Found no"), ans["answer"]
        assert ans["evidence"]   # the nearest moments are still listed


def test_summary_and_summarize_json(store, capsys):
    ans = _ask(capsys, "--store", str(store), "what is this video about?")
    assert "people" in ans["answer"]
    assert main(["summarize", "--store", str(store), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    (video,) = out["videos"]
    assert video["source_id"] == "vtest_10s_1fps.mp4" and video["end"] == pytest.approx(10, abs=1)
    person = next(o for o in video["objects"] if o["label"] == "person")
    assert person["max_count"] >= 4 and video["segments"]
    assert main(["summarize", "--store", str(store), "--from", "00:00:06", "--to", "8"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("vtest_10s_1fps.mp4 ") and "people" in text

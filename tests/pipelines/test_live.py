"""LiveSession: models loaded once, many sources into one store, asked while it grows."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

import streamvid.encoders as encoders
from pipelines.cli import main
from pipelines.demo import DEMO_VIDEO
from pipelines.live import STATE_FILE, LiveSession
from streamvid.config import Config
from streamvid.errors import QueryError, SourceError
from streamvid.types import Question

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture()
def load_counts(monkeypatch) -> dict[str, int]:
    """How many times the vision and text encoders are built."""
    counts = {"encoder": 0, "text": 0}
    make_enc, make_txt = encoders.create_encoder, encoders.create_text_encoder

    def enc(*a, **k):
        counts["encoder"] += 1
        return make_enc(*a, **k)

    def txt(*a, **k):
        counts["text"] += 1
        return make_txt(*a, **k)

    monkeypatch.setattr(encoders, "create_encoder", enc)
    monkeypatch.setattr(encoders, "create_text_encoder", txt)
    return counts


def test_live_answers_a_second_question_without_reloading(tmp_path, capsys, monkeypatch,
                                                          load_counts):
    monkeypatch.setattr("sys.stdin", io.StringIO("what is shown?\nwhen does the earth appear?\n"))
    code = main(["live", str(DEMO_VIDEO), "--store", str(tmp_path / "s"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    answers = [json.loads(ln) for ln in out.splitlines() if ln.strip()]
    assert len(answers) == 2 and all(a["evidence"] for a in answers)
    assert answers[0]["evidence"][0]["source_id"] == "world.mp4"
    assert load_counts == {"encoder": 1, "text": 1}
    assert "indexed world.mp4" in err


def test_two_sources_into_one_store(tmp_path, load_counts):
    cfg = Config.load(None)
    store = tmp_path / "s"
    events: list[dict] = []
    with LiveSession(store, cfg, commit_every=0.5) as session:
        session.subscribe(events.append)
        session.add(str(DATA / "world_8s.mp4"), "earth")
        session.add(str(DATA / "city_4s.mp4"), "city")
        with pytest.raises(SourceError, match="already running"):
            session.add(str(DATA / "city_4s.mp4"), "city")
        assert session.wait_commit(120, after=0)
        while session.running():
            session.wait_commit(5)
        status = {s["source_id"]: s for s in session.streams()}
        assert set(status) == {"earth", "city"}
        for s in status.values():
            assert s["state"] == "ended" and s["frames_out"] == s["frames_in"] > 0
            assert s["clips"] > 0 and s["drops"] == 0 and s["last_commit"] is not None
        assert status["earth"]["frames_in"] == 8 and status["city"]["frames_in"] == 4
        both = session.ask(Question(text="what is shown?"), top_k=10)
        assert {e.source_id for e in both.evidence} == {"earth", "city"}
        city = session.ask(Question(text="what is shown?"), source_ids=["city"], top_k=10)
        assert city.evidence and {e.source_id for e in city.evidence} == {"city"}
        early = session.ask(Question(text="what is shown?"), source_ids=["earth", "city"],
                            time_range=(0.0, 2.0), top_k=10)
        assert early.evidence and all(e.start <= 2.0 for e in early.evidence)
        with pytest.raises(QueryError, match="nope"):
            session.ask(Question(text="x"), source_ids=["nope"])
    assert load_counts == {"encoder": 1, "text": 1}
    kinds = [e["type"] for e in events]
    assert "commit" in kinds and kinds.count("stream") >= 4
    assert not (store / STATE_FILE).exists(), "persist=False writes no state"


def test_saved_alerts_resume_and_a_finished_file_is_not_read_again(tmp_path):
    cfg = Config.load(None)
    store = tmp_path / "s"
    with LiveSession(store, cfg, commit_every=0.5, persist=True) as session:
        session.add(str(DATA / "city_4s.mp4"), "city")
        alert = session.add_alert(text="tower", threshold=0.0)
        saved = json.loads((store / STATE_FILE).read_text())
        assert [s["source_id"] for s in saved["streams"]] == ["city"]
        session.wait_commit(120, after=0)
        while session.running():
            session.wait_commit(5)
        first = session.ask(Question(text="what is shown?"), top_k=10).evidence
        assert alert.fired > 0, "threshold 0 fires on every new clip"
        fired = alert.fired
    saved = json.loads((store / STATE_FILE).read_text())
    assert saved["streams"] == [], "a file read to its end is not resumed"
    assert saved["alerts"][0]["id"] == alert.id
    with LiveSession(store, cfg, commit_every=0.5, persist=True) as session:
        assert session.resume() == []
        assert [a.id for a in session.alerts()] == [alert.id]
        session.add(str(DATA / "city_4s.mp4"), "city")  # goes on after its committed end
        while session.running():
            session.wait_commit(5)
        assert session.stream("city")["frames_in"] == 0
        assert session.alerts()[0].fired == fired, "clips already checked do not fire again"
        late = session.add_alert(text="tower", threshold=0.0)
        assert late.checked_to == max(e.clip_id for e in first), "a new alert watches new clips"
        again = session.ask(Question(text="what is shown?"), top_k=10).evidence
    assert sorted((e.start, e.clip_id) for e in again) == sorted((e.start, e.clip_id) for e in first)

"""Speech memory end to end: espeak-ng speech muxed into a fixture video (made at test time),
indexed with the real Whisper tiny.en model, asked about; files without audio, with a broken
audio stream and with audio only."""

from __future__ import annotations

import logging
import math
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from pipelines.ask import Asker
from pipelines.index import index_video
from pipelines.models import Models
from pipelines.niah.haystack import NeedleSpec, build_haystack
from pipelines.niah.score import parse_time
from pipelines.niah.speech import espeak_available, synthesise
from streamvid.config import Config
from streamvid.sources import open_source
from streamvid.types import Question

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DATA = Path(__file__).resolve().parents[1] / "data"
VIDEO = DATA / "world_8s.mp4"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SENTENCE = "The budget meeting has moved to Thursday afternoon."


@pytest.fixture(scope="module")
def espeak() -> None:
    if not espeak_available():
        if IN_CI:
            pytest.fail("espeak-ng is missing in CI; fix: run .ci/system-deps.sh")
        pytest.skip("espeak-ng not installed (apt-get install espeak-ng)")


def _config(**describe) -> Config:
    # labels and OCR off: these tests are about the sound track
    return Config.from_dict({"describe": {"labels": False, "ocr": False, **describe}})


@pytest.fixture(scope="module")
def models() -> Models:
    return Models(_config())


@pytest.fixture(scope="module")
def spoken(espeak, tmp_path_factory, models):
    """A 20 s video from the fixture footage with the sentence spoken from 8 s, indexed."""
    work = tmp_path_factory.mktemp("speech")
    info = build_haystack([VIDEO], work / "talk.mp4", length=20.0, fps=2.0, seed=3, progress=False,
                          needles=[NeedleSpec(kind="speech", label="thursday", text=SENTENCE,
                                              start=8.0)])
    summary = index_video(str(info.path), work / "store", models.config, models=models,
                          progress=False)
    asker = Asker(work / "store", models.config, models=models)
    yield info, summary, asker
    asker.close()


def test_haystack_has_the_spoken_sentence_in_its_sound_track(spoken):
    info, _, _ = spoken
    needle = info.needles[0]
    assert needle.kind == "speech" and needle.start == 8.0
    assert 1.5 < needle.end - needle.start < 6.0   # as long as it takes to say
    with open_source(str(info.path)) as src:
        assert src.has_audio
        chunks = src.read_audio(math.inf)
    audio = np.concatenate([c.samples for c in chunks])
    t0 = chunks[0].start
    loud = lambda a, b: float(np.abs(audio[int((a - t0) * 16000):int((b - t0) * 16000)]).max())  # noqa: E731
    assert loud(needle.start + 0.5, needle.end - 0.5) > 0.1   # speech
    assert loud(1.0, 7.0) < 0.05                               # quiet before it


def test_when_is_thursday_mentioned(spoken):
    info, summary, asker = spoken
    needle = info.needles[0]
    assert summary.audio == "speech" and summary.speech_segments >= 1
    assert summary.voiced_seconds < 0.6 * summary.audio_seconds   # only voiced audio transcribed
    ans = asker.ask(Question(text="when is Thursday mentioned?"))
    said = parse_time(ans.answer)
    assert said is not None and needle.start - 1 <= said <= needle.end + 1, ans.answer
    ev = ans.evidence[0]
    assert ev.start <= said <= ev.end, (ev, ans.answer)
    assert "the speaker said" in ans.answer and "thursday" in ans.answer.lower(), ans.answer
    assert "moved to thursday" in ans.answer.lower()   # the sentence is quoted


def test_transcript_is_stored_with_word_times(spoken):
    info, _, asker = spoken
    needle = info.needles[0]
    clips = [c for c in asker.store.get(asker.store.ids()) if c.speech]
    assert clips and all(needle.start - 1 <= s.start <= needle.end for c in clips for s in c.speech)
    seg = clips[0].speech[0]
    t = seg.time_of("thursday")
    assert t is not None and seg.start <= t <= seg.end
    assert [w for w, _, _ in seg.words][-1].lower().startswith("afternoon")


def test_file_without_audio_indexes_without_speech(tmp_path, models):
    with open_source(str(VIDEO)) as src:
        assert not src.has_audio and src.read_audio(math.inf) == []
    s = index_video(str(VIDEO), tmp_path / "store", models.config, models=models, progress=False)
    assert s.clips > 0 and s.audio == "" and s.speech_segments == 0


def _with_broken_audio(out: Path) -> Path:
    """The fixture's pictures with an MP3 audio stream whose packets are noise."""
    import av

    rng = np.random.default_rng(0)
    with av.open(str(VIDEO)) as src, av.open(str(out), "w", format="matroska") as dst:
        vin = src.streams.video[0]
        vout = dst.add_stream_from_template(vin)
        aout = dst.add_stream("mp3", rate=16000, layout="mono")
        tb = Fraction(1, 1000)
        t = 0
        for pkt in src.demux(vin):
            if pkt.dts is None:
                continue
            pkt.stream = vout
            dst.mux(pkt)
            while t <= float(pkt.pts * vin.time_base) * 1000:
                bad = av.Packet(rng.integers(0, 256, 200, dtype=np.uint8).tobytes())
                bad.stream, bad.pts, bad.dts, bad.time_base = aout, t, t, tb
                dst.mux(bad)
                t += 72
    return out


def test_broken_audio_warns_and_the_frames_go_on(tmp_path, models, caplog):
    path = _with_broken_audio(tmp_path / "broken.mkv")
    with caplog.at_level(logging.WARNING):
        s = index_video(str(path), tmp_path / "store", models.config, models=models, progress=False)
    assert s.frames == 8 and s.clips > 0
    assert s.audio_errors > 0 and s.speech_segments == 0
    assert any("audio" in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert "undecodable audio" in "\n".join(s.lines())


def test_audio_only_file_gives_the_speech_memory_alone(espeak, tmp_path, models):
    import av

    audio = np.concatenate([np.zeros(16000, np.float32), synthesise(SENTENCE),
                            np.zeros(16000, np.float32)])
    path = tmp_path / "memo.m4a"
    with av.open(str(path), "w") as c:
        st = c.add_stream("aac", rate=16000, layout="mono")
        for i in range(0, len(audio), 1024):
            fr = av.AudioFrame.from_ndarray(audio[None, i:i + 1024], format="fltp", layout="mono")
            fr.sample_rate, fr.pts = 16000, i
            for p in st.encode(fr):
                c.mux(p)
        for p in st.encode(None):
            c.mux(p)
    s = index_video(str(path), tmp_path / "store", models.config, models=models, progress=False)
    assert s.frames == 0 and s.audio == "audio only"
    assert s.speech_segments >= 1 and s.clips == s.speech_segments
    assert any("audio only" in line for line in s.lines())
    assert abs(s.duration - len(audio) / 16000) < 0.3
    with Asker(tmp_path / "store", models.config, models=models) as asker:
        ans = asker.ask(Question(text="What did the speaker say about the budget meeting?"))
    assert "thursday" in ans.answer.lower() and ans.answer.startswith("At 00:00:0"), ans.answer


def test_asr_off_stores_no_speech(spoken, tmp_path):
    info, _, _ = spoken
    cfg = _config(asr=False)
    s = index_video(str(info.path), tmp_path / "store", cfg, models=Models(cfg), progress=False)
    assert s.audio == "not transcribed" and s.speech_segments == 0


def test_spoken_needles_in_the_niah_grid(espeak, tmp_path, models):
    import yaml

    from pipelines.niah.grid import NiahConfig, plan
    from pipelines.niah.run import run_niah

    cfg_path = tmp_path / "spoken.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "name": "spoken", "seed": 2,
        "haystack": {"videos": [str(VIDEO)], "fps": 2.0, "size": [320, 180],
                     "cache_dir": str(tmp_path / "cache")},
        "needles": {"dir": str(DATA / "needles"), "text": False, "min_gap": 3.0},
        "grid": {"lengths": [40], "depths": [0.0, 1.0]},
        "questions": {"types": ["speech", "speech_when"], "top_k": 5},
        "pipeline": {"describe": {"labels": False, "ocr": False}},
    }))
    cfg = NiahConfig.load(cfg_path)
    plans = plan(cfg)
    needles = [n for hp in plans for n in hp.needles]
    assert [n.kind for n in needles] == ["speech", "speech"] and needles[-1].start <= 40 - 6
    qs = {q.qtype: q for hp in plans for q in hp.questions}
    assert qs["speech"].text.startswith("What did the speaker say the ")
    assert qs["speech_when"].text == f"When is {qs['speech_when'].expected} mentioned?"
    report = run_niah(cfg, tmp_path / "run", progress=False, models=models)
    o = report.summary["overall"]
    assert o["speech"]["n"] == 2 and o["speech_when"]["n"] == 2
    assert o["speech"]["hit1"] == 1.0 and o["speech"]["correct"] == 1.0, report.summary
    assert o["speech_when"]["hit1"] == 1.0, report.summary

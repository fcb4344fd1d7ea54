"""The CLI contract, driven through its entry point: index/ask, JSON, bad inputs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.demo import DEMO_NEEDLE, DEMO_VIDEO

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def indexed(tmp_path_factory) -> Path:
    """The bundled 15 s Earth clip indexed once for the module."""
    store = tmp_path_factory.mktemp("cli") / "store"
    assert main(["index", str(DEMO_VIDEO), "--store", str(store), "--json"]) == 0
    return store


def test_index_summary_json(tmp_path, capsys):
    store = tmp_path / "s"
    code, out, err = run_cli(capsys, "index", str(DEMO_VIDEO), "--store", str(store), "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["source_id"] == "world.mp4"
    assert 13.0 <= summary["duration"] <= 16.0
    assert summary["frames"] == pytest.approx(15, abs=1)
    assert summary["clips"] >= 2
    assert summary["x_realtime"] > 0
    assert (store / "manifest.json").is_file() and (store / "config.yaml").is_file()


def test_index_human_summary(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "index", str(DEMO_VIDEO), "--store", str(tmp_path / "s"))
    assert code == 0
    assert "x real time" in out and "clips" in out and "frames reused" in out


def test_ask_json_contract(indexed, capsys):
    code, out, err = run_cli(capsys, "ask", "--store", str(indexed), "when is the earth visible?",
                             "--json", "--top-k", "3")
    assert code == 0, err
    obj = json.loads(out)  # exactly one JSON object on stdout
    assert set(obj) == {"answer", "evidence", "timings", "answerer", "model", "visual_tokens",
                        "prefill_s", "generate_s"}
    assert isinstance(obj["answer"], str) and obj["answer"]
    assert 1 <= len(obj["evidence"]) <= 3
    scores = [e["score"] for e in obj["evidence"]]
    assert scores == sorted(scores, reverse=True)
    for e in obj["evidence"]:
        assert set(e) == {"source_id", "start", "end", "score", "text", "keyframe", "clip_id"}
        assert 0.0 <= e["start"] <= e["keyframe"] <= e["end"] <= 16.0
    assert "retrieve" in obj["timings"]


def test_ask_human_lines(indexed, capsys):
    code, out, _ = run_cli(capsys, "ask", "--store", str(indexed), "what is shown?")
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) >= 2
    # 00:00:03–00:00:06  0.82  what was seen
    import re
    assert re.match(r"^(.+ )?\d\d:\d\d:\d\d–\d\d:\d\d:\d\d  -?\d\.\d\d  ", lines[1])


def test_ask_video_indexes_once_into_cache(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("STREAMVID_CACHE", str(tmp_path / "cache"))
    video = tmp_path / "clip.mp4"
    shutil.copy(DEMO_VIDEO, video)
    code, out, _ = run_cli(capsys, "ask", str(video), "what is shown?", "--json")
    assert code == 0
    first = json.loads(out)
    assert "index" in first["timings"]
    stores = list((tmp_path / "cache" / "stores").iterdir())
    assert len(stores) == 1
    code, out, _ = run_cli(capsys, "ask", str(video), "what is shown?", "--json")
    second = json.loads(out)
    assert "index" not in second["timings"]  # reused, not re-indexed
    assert second["evidence"] == first["evidence"]


def test_console_script_entry_point(indexed):
    exe = Path(sys.executable).with_name("streamvid")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "pipelines.cli"]
    res = subprocess.run(cmd + ["ask", "--store", str(indexed), "earth", "--json"],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["evidence"]


# ----------------------------------------------------------------------------- bad input

def _one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 1
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err           # one clear line, no traceback
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_missing_file(tmp_path, capsys):
    missing = tmp_path / "nope.mp4"
    code, _, err = run_cli(capsys, "index", str(missing), "--store", str(tmp_path / "s"))
    _one_line_error(code, err, str(missing), "fix")
    assert not (tmp_path / "s").exists()


def test_directory_instead_of_video(tmp_path, capsys):
    d = tmp_path / "somedir"
    d.mkdir()
    code, _, err = run_cli(capsys, "index", str(d), "--store", str(tmp_path / "s"))
    _one_line_error(code, err, str(d))
    assert not (tmp_path / "s").exists()


def test_empty_file(tmp_path, capsys):
    f = tmp_path / "empty.mp4"
    f.write_bytes(b"")
    code, _, err = run_cli(capsys, "index", str(f), "--store", str(tmp_path / "s"))
    _one_line_error(code, err, str(f), "empty")
    assert not (tmp_path / "s").exists()


def test_not_a_video(tmp_path, capsys):
    f = tmp_path / "notes.mp4"
    f.write_text("this is not a video\n")
    code, _, err = run_cli(capsys, "index", str(f), "--store", str(tmp_path / "s"))
    _one_line_error(code, err, str(f))
    assert not (tmp_path / "s").exists()


def test_truncated_unopenable(tmp_path, capsys):
    data = DEMO_VIDEO.read_bytes()
    assert data.find(b"moov") > len(data) // 2, "fixture must keep its index at the end"
    f = tmp_path / "cut.mp4"
    f.write_bytes(data[: int(len(data) * 0.6)])
    code, _, err = run_cli(capsys, "index", str(f), "--store", str(tmp_path / "s"))
    _one_line_error(code, err, str(f))
    assert not (tmp_path / "s").exists()


def test_unknown_config_key(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("retrieval:\n  top_kk: 3\n")
    code, _, err = run_cli(capsys, "index", str(DEMO_VIDEO), "--store", str(tmp_path / "s"),
                           "--config", str(cfg))
    _one_line_error(code, err, "retrieval.top_kk", "top_k")
    assert not (tmp_path / "s").exists()


def test_out_of_range_flag(tmp_path, capsys):
    code, _, err = run_cli(capsys, "index", str(DEMO_VIDEO), "--store", str(tmp_path / "s"),
                           "--fps", "-2")
    _one_line_error(code, err, "source.fps", ">= ")


def test_store_from_other_config(indexed, tmp_path, capsys):
    store = tmp_path / "s"
    shutil.copytree(indexed, store)
    code, _, err = run_cli(capsys, "index", str(DEMO_VIDEO), "--store", str(store),
                           "--source-id", "again", "--set", "clips.max_length=3.5")
    _one_line_error(code, err, str(store), "clips.max_length", "fix")


def test_store_from_other_model(indexed, tmp_path, capsys):
    store = tmp_path / "s"
    shutil.copytree(indexed, store)
    man = json.loads((store / "manifest.json").read_text())
    text = json.dumps(man).replace("all-MiniLM-L6-v2", "some-other-text-model")
    (store / "manifest.json").write_text(text)
    code, _, err = run_cli(capsys, "ask", "--store", str(store), "earth")
    _one_line_error(code, err, "some-other-text-model")


def test_not_a_store(tmp_path, capsys):
    code, _, err = run_cli(capsys, "ask", "--store", str(tmp_path / "none"), "earth")
    _one_line_error(code, err, str(tmp_path / "none"), "streamvid index")


def test_unreadable_image_query(indexed, tmp_path, capsys):
    bad = tmp_path / "query.png"
    bad.write_bytes(b"\x89PNG but not really")
    code, _, err = run_cli(capsys, "ask", "--store", str(indexed), "--image", str(bad))
    _one_line_error(code, err, str(bad), "fix")
    code, _, err = run_cli(capsys, "ask", "--store", str(indexed), "--image", str(tmp_path / "missing.png"))
    _one_line_error(code, err, "missing.png")


def test_same_source_twice_is_refused(indexed, tmp_path, capsys):
    store = tmp_path / "s"
    shutil.copytree(indexed, store)
    before = json.loads((store / "manifest.json").read_text())
    code, _, err = run_cli(capsys, "index", str(DEMO_VIDEO), "--store", str(store))
    _one_line_error(code, err, "world.mp4", "--source-id")
    assert json.loads((store / "manifest.json").read_text()) == before


def test_debug_shows_traceback(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("STREAMVID_DEBUG", "1")
    code, _, err = run_cli(capsys, "index", str(tmp_path / "nope.mp4"), "--store", str(tmp_path / "s"))
    assert code == 1 and "Traceback" in err


def test_needle_image_exists():
    assert DEMO_NEEDLE.is_file() and DEMO_VIDEO.is_file()


def test_live_answers_questions_from_stdin(tmp_path):
    """`streamvid live` ingests in the background and answers each line typed on stdin."""
    store = tmp_path / "live"
    res = subprocess.run([sys.executable, "-m", "pipelines.cli", "live", str(DEMO_VIDEO),
                          "--store", str(store), "--json"],
                         input="what is shown?\n", capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr
    answers = [json.loads(ln) for ln in res.stdout.splitlines() if ln.strip()]
    assert len(answers) == 1 and answers[0]["evidence"]
    assert "indexed world.mp4" in res.stderr
    assert (store / "manifest.json").is_file()


def test_a_question_loads_only_what_it_needs(indexed):
    """A text question imports no vision encoder (torch) nor transformers; an image question
    no sentence encoder. A new process, as `streamvid ask` is."""
    code = f"""
import sys
from pipelines.ask import Asker, load_image
from pipelines.demo import DEMO_NEEDLE
from streamvid.types import Question
with Asker({str(indexed)!r}) as asker:
    assert asker.ask(Question(text="earth")).evidence
    heavy = sorted(m for m in ("torch", "transformers", "sentence_transformers", "cv2", "rapidocr")
                   if m in sys.modules)
    assert not heavy, heavy
with Asker({str(indexed)!r}) as asker:
    assert asker.ask(Question(image=load_image(DEMO_NEEDLE))).evidence
    assert "torch" in sys.modules
    assert "sentence_transformers" not in sys.modules and "transformers" not in sys.modules
print("ok")
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr

"""The ``openai`` answerer through the CLI against real HTTP servers on loopback: what the
server receives (keyframes in time order, each after its time), text-only mode, retries,
and one clear error line when the server is down, refuses images or replies garbage."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from memory.store import MemoryStore
from pipelines.cli import main
from pipelines.index import index_video
from streamvid.config import Config, DescribeConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
VIDEO = HERE.parent / "data" / "vtest_10s_1fps.mp4"
TIME = re.compile(r"^Frame from (\d\d:\d\d:\d\d) \(")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """Ten seconds of real footage indexed once (labels, no OCR), clips of 2 s."""
    path = tmp_path_factory.mktemp("oa") / "store"
    cfg = Config.load(None, {"describe.ocr": False, "clips.max_length": 2.0,
                             "clips.min_length": 1.0})
    index_video(str(VIDEO), path, cfg, progress=False)
    return path


class Recorder:
    """tests/pipelines/chat_recorder.py as a process; ``requests()`` reads what it got."""

    def __init__(self, tmp: Path, mode: str = "ok"):
        self.log = tmp / f"requests-{mode}.jsonl"
        self.proc = subprocess.Popen([sys.executable, str(HERE / "chat_recorder.py"),
                                      "--log", str(self.log), "--mode", mode],
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("PORT "), line
        self.url = f"http://127.0.0.1:{int(line.split()[1])}/v1"

    def requests(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(x) for x in self.log.read_text().splitlines()]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def recorder(tmp_path, request):
    rec = Recorder(tmp_path, getattr(request, "param", "ok"))
    yield rec
    rec.stop()


def ask(capsys, store: Path, url: str, *extra: str, question: str = "what is the ball doing?"):
    code = main(["ask", "--store", str(store), question, "--answerer", "openai", "--url", url,
                 "--json", *extra])
    out, err = capsys.readouterr()
    return code, out, err


def seconds(hms: str) -> int:
    h, m, s = (int(x) for x in hms.split(":"))
    return 3600 * h + 60 * m + s


def test_keyframes_are_sent_in_time_order_after_their_times(store, recorder, capsys):
    code, out, err = ask(capsys, store, recorder.url, "--top-k", "4", "--model", "tiny-vlm")
    assert code == 0, err
    obj = json.loads(out)
    reqs = recorder.requests()
    assert len(reqs) == 1 and reqs[0]["path"] == "/v1/chat/completions"
    body = reqs[0]["body"]
    assert body["model"] == "tiny-vlm" and body["max_tokens"] == 128
    parts = body["messages"][-1]["content"]
    assert parts[-1] == {"type": "text", "text": "Question: what is the ball doing?"}
    images = [i for i, p in enumerate(parts) if p["type"] == "image_url"]
    assert len(images) == 4 and obj["answer"] == "received 4 images"
    # each picture follows the text with its time; times ascend; the picture is the store's
    # keyframe of the clip at that time
    reader = MemoryStore.open(store, mode="r")
    by_time = {round(c.keyframe): reader.keyframe(c.id) for c in reader.get(reader.ids())}
    times = []
    for i in images:
        m = TIME.match(parts[i - 1]["text"])
        assert m, parts[i - 1]
        url = parts[i]["image_url"]["url"]
        assert url.startswith("data:image/jpeg;base64,")
        assert base64.b64decode(url.split(",", 1)[1]) == by_time[seconds(m.group(1))]
        times.append(seconds(m.group(1)))
    assert times == sorted(times) and len(set(times)) == 4
    # the evidence is the retrieval's, and the JSON says who answered and what it cost
    assert sorted(round(e["keyframe"]) for e in obj["evidence"]) == times
    assert (obj["answerer"], obj["model"], obj["visual_tokens"]) == ("openai", "tiny-vlm", 0)
    assert obj["generate_s"] > 0 and obj["prefill_s"] is None
    assert obj["timings"]["images"] == 4 and obj["timings"]["prompt_tokens"] == 11


def test_max_images_sends_the_best_scored_pictures(store, recorder, capsys):
    code, out, err = ask(capsys, store, recorder.url, "--top-k", "5",
                         "--set", "answer.max_images=2")
    assert code == 0, err
    obj = json.loads(out)
    parts = recorder.requests()[0]["body"]["messages"][-1]["content"]
    with_picture = [TIME.match(parts[i - 1]["text"]).group(1)
                    for i, p in enumerate(parts) if p["type"] == "image_url"]
    best = sorted(obj["evidence"], key=lambda e: -e["score"])[:2]
    assert sorted(seconds(t) for t in with_picture) == sorted(round(e["keyframe"]) for e in best)
    # every moment is still described in words
    assert sum(bool(TIME.match(p.get("text", ""))) for p in parts) == 5


def test_text_only_mode_sends_times_and_descriptions(store, recorder, capsys, monkeypatch):
    monkeypatch.setenv("STREAMVID_TEST_KEY", "sk-local-123")
    code, out, err = ask(capsys, store, recorder.url, "--top-k", "3",
                         "--set", "answer.images=false",
                         "--set", "answer.api_key_env=STREAMVID_TEST_KEY")
    assert code == 0, err
    req = recorder.requests()[0]
    assert req["headers"].get("Authorization") == "Bearer sk-local-123"
    content = req["body"]["messages"][-1]["content"]
    assert isinstance(content, str) and "data:image" not in content
    times = [seconds(m) for m in re.findall(r"^Frame from (\d\d:\d\d:\d\d) \(", content, re.M)]
    assert len(times) == 3 and times == sorted(times)
    assert json.loads(out)["answer"] == "received 0 images"
    assert "model" not in req["body"]  # none given: the server's default


def test_no_key_no_authorization_header(store, recorder, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert ask(capsys, store, recorder.url)[0] == 0
    assert "Authorization" not in recorder.requests()[0]["headers"]


@pytest.mark.parametrize("recorder", ["busy-twice"], indirect=True)
def test_busy_server_is_retried_with_backoff(store, recorder, capsys):
    code, out, err = ask(capsys, store, recorder.url, "--top-k", "2")
    assert code == 0, err
    assert len(recorder.requests()) == 3 and json.loads(out)["answer"] == "received 2 images"


@pytest.mark.parametrize("recorder, words", [
    ("refuse-images", ["refused the 2 keyframe image(s)", "answer.images=false"]),
    ("malformed", ["not JSON", "OpenAI-compatible"]),
    ("no-choices", ["malformed chat completion"]),
], indirect=["recorder"])
def test_refusals_and_garbage_give_one_error_line(store, recorder, words, capsys):
    code, out, err = ask(capsys, store, recorder.url, "--top-k", "2")
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the answer server")
    assert all(w in lines[0] for w in words), lines[0]
    assert len(recorder.requests()) == 1  # a refusal is not retried


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_down_gives_one_error_line(store, capsys):
    code, out, err = ask(capsys, store, f"http://127.0.0.1:{free_port()}/v1",
                         "--set", "answer.retries=1")
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: the answer server http://127.0.0.1:")
    assert "cannot be reached" in lines[0] and "after 2 tries" in lines[0]


def test_missing_url_and_unknown_answerer(store, capsys):
    code = main(["ask", "--store", str(store), "what?", "--answerer", "openai"])
    err = capsys.readouterr().err
    assert code == 1 and "needs answer.url" in err and "--url" in err
    code = main(["ask", "--store", str(store), "what?", "--answerer", "nope"])
    err = capsys.readouterr().err
    assert code == 1 and "unknown answerer backend 'nope'" in err and "openai" in err


def test_extractive_json_has_the_same_keys(store, capsys):
    code = main(["ask", "--store", str(store), "what is the ball doing?", "--json"])
    obj = json.loads(capsys.readouterr().out)
    assert code == 0
    assert (obj["answerer"], obj["model"], obj["visual_tokens"]) == ("extractive", None, 0)
    assert obj["prefill_s"] is None and obj["generate_s"] is None


def test_image_question_sends_its_picture_first(store, recorder, capsys):
    needle = HERE.parent / "data" / "needles" / "coffee.png"
    code = main(["ask", "--store", str(store), "--image", str(needle), "--answerer", "openai",
                 "--url", recorder.url, "--top-k", "3", "--set", "answer.max_images=3", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    parts = recorder.requests()[0]["body"]["messages"][-1]["content"]
    assert parts[0] == {"type": "text", "text": "The picture asked about:"}
    sent = Image.open(io.BytesIO(base64.b64decode(parts[1]["image_url"]["url"].split(",", 1)[1])))
    assert sent.format == "JPEG" and sent.size == Image.open(needle).size
    # the question's picture counts against max_images: two keyframes follow
    assert sum(p["type"] == "image_url" for p in parts) == 3
    assert json.loads(out)["answer"] == "received 3 images"

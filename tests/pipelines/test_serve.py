"""`streamvid serve` end to end: the real uvicorn server in a child process on a loopback
port, a real HTTP client, files under an allowed media root."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

requests = pytest.importorskip("requests")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from pipelines.cli import main  # noqa: E402
from pipelines.live import STATE_FILE  # noqa: E402
from tests.live_helpers import ServeProcess  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data"


def wait_for(fn, timeout: float = 120.0, every: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"not true within {timeout} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    media = root / "media"
    media.mkdir()
    for name in ("world_8s.mp4", "city_4s.mp4"):
        shutil.copy(DATA / name, media / name)
    (root / "secret.mp4").write_bytes((DATA / "city_4s.mp4").read_bytes())
    srv = ServeProcess(root / "store", "--media-root", str(media), "--max-upload-mb", "0.05",
                       "--commit-every", "0.5").start()
    srv.media = media
    yield srv
    assert srv.stop() == 0, srv.log.read_text()


@pytest.fixture(scope="module")
def indexed(server):
    """Both files ingested to their end (the store holds their clips)."""
    events: list[dict] = []
    stream = requests.get(server.url + "/events", stream=True, timeout=60)
    assert stream.status_code == 200
    assert stream.headers["content-type"].startswith("text/event-stream")

    def read() -> None:
        kind = None
        try:
            for line in stream.iter_lines(decode_unicode=True):
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    events.append({"kind": kind, **json.loads(line[6:])})
        except (requests.RequestException, AttributeError):  # closed by the test
            pass

    threading.Thread(target=read, daemon=True).start()
    time.sleep(0.5)
    r = requests.post(server.url + "/streams", json={"uri": "world_8s.mp4", "source_id": "earth"})
    assert r.status_code == 201, r.text
    assert r.json()["source_id"] == "earth" and r.json()["state"] == "starting"
    r = requests.post(server.url + "/streams", json={"uri": str(server.media / "city_4s.mp4"),
                                                      "source_id": "city", "fps": 2})
    assert r.status_code == 201, r.text
    wait_for(lambda: all(s["state"] == "ended" for s in
                         requests.get(server.url + "/streams").json()["streams"]))
    wait_for(lambda: any(e["kind"] == "commit" and e["clips"] > 0 for e in events), 30)
    stream.close()
    return events


def test_streams_are_listed_with_status(server, indexed):
    streams = {s["source_id"]: s for s in requests.get(server.url + "/streams").json()["streams"]}
    assert set(streams) == {"earth", "city"}
    assert streams["earth"]["frames_in"] == 8 and streams["city"]["frames_in"] == 8  # 4 s at 2 fps
    for s in streams.values():
        assert s["clips"] > 0 and s["last_commit"] and s["frames_out"] == s["frames_in"]
    one = requests.get(server.url + "/streams/city").json()
    assert one["source_id"] == "city" and one["fps"] == 2
    kinds = {e["kind"] for e in indexed}
    assert {"stream", "commit"} <= kinds


def test_ask_returns_the_json_of_ask_cli(server, indexed, capsys):
    r = requests.post(server.url + "/ask", json={"text": "what is shown?", "top_k": 3})
    assert r.status_code == 200, r.text
    got = r.json()
    assert main(["ask", "--store", str(server.store), "what is shown?", "--top-k", "3", "--json"]) == 0
    want = json.loads(capsys.readouterr().out)
    assert set(got) == set(want) == {"answer", "evidence", "timings", "answerer", "model",
                                     "visual_tokens", "prefill_s", "generate_s"}
    assert got["answer"] == want["answer"] and got["evidence"] == want["evidence"]
    assert {e["source_id"] for e in got["evidence"]} <= {"earth", "city"}
    for e in got["evidence"]:
        jpg = requests.get(server.url + f"/clips/{e['clip_id']}/keyframe")
        assert jpg.status_code == 200 and jpg.headers["content-type"] == "image/jpeg"
        assert jpg.content[:3] == b"\xff\xd8\xff"


def test_ask_filters_and_image_upload(server, indexed):
    r = requests.post(server.url + "/ask", json={"text": "what is shown?", "source_ids": ["city"],
                                                 "top_k": 10})
    assert r.status_code == 200 and {e["source_id"] for e in r.json()["evidence"]} == {"city"}
    r = requests.post(server.url + "/ask", json={"text": "what is shown?", "start": 0, "end": 2,
                                                 "top_k": 10})
    assert r.status_code == 200 and all(e["start"] <= 2 for e in r.json()["evidence"])
    png = (DATA / "needles" / "cat.png").read_bytes()
    assert len(png) < 0.05 * (1 << 20)
    r = requests.post(server.url + "/ask", data={"source_ids": "earth"},
                      files={"image": ("cat.png", png, "image/png")})
    assert r.status_code == 200, r.text
    assert r.json()["evidence"] and {e["source_id"] for e in r.json()["evidence"]} == {"earth"}


def test_alerts_fire_on_commits_and_can_be_removed(server, indexed):
    r = requests.post(server.url + "/alerts", json={"text": "what is shown?", "threshold": 0.0,
                                                    "source_ids": ["earth2"]})
    assert r.status_code == 201
    alert = r.json()
    assert [a["id"] for a in requests.get(server.url + "/alerts").json()["alerts"]] == [alert["id"]]
    saved = json.loads((server.store / STATE_FILE).read_text())
    assert [a["id"] for a in saved["alerts"]] == [alert["id"]]
    # a new stream, and the alert fires on its clips
    r = requests.post(server.url + "/streams", json={"uri": "city_4s.mp4", "source_id": "earth2"})
    assert r.status_code == 201
    wait_for(lambda: requests.get(server.url + "/alerts").json()["alerts"][0]["fired"] > 0, 60)
    assert requests.delete(server.url + f"/alerts/{alert['id']}").status_code == 200
    assert requests.get(server.url + "/alerts").json()["alerts"] == []
    assert requests.delete(server.url + f"/alerts/{alert['id']}").status_code == 404


def test_delete_stream_and_metrics_health_keyframe(server, indexed):
    r = requests.delete(server.url + "/streams/city")
    assert r.status_code == 200 and r.json()["source_id"] == "city"
    assert "city" not in [s["source_id"] for s in requests.get(server.url + "/streams").json()["streams"]]
    h = requests.get(server.url + "/health").json()
    assert h["status"] == "ok" and h["clips"] > 0
    m = requests.get(server.url + "/metrics")
    assert m.headers["content-type"].startswith("text/plain")
    assert 'streamvid_frames_indexed_total{source_id="earth"} 8' in m.text
    assert "streamvid_ask_seconds_count" in m.text and "streamvid_lag_seconds" in m.text
    r = requests.get(server.url + "/clips/999999/keyframe")
    assert r.status_code == 404 and "clip 999999" in r.json()["error"]
    assert requests.get(server.url + "/clips/abc/keyframe").status_code == 400


BAD_STREAMS = [
    ({"uri": "ftp://example.org/x"}, 400, "scheme"),
    ({"uri": "not-here.mp4"}, 404, "does not exist"),
    ({"uri": "../secret.mp4"}, 403, "outside the allowed media roots"),
    ({"uri": "/etc/passwd"}, 403, "outside the allowed media roots"),
    ({"uri": "world_8s.mp4", "source_id": "../x"}, 400, "source_id"),
    ({"uri": "world_8s.mp4", "source_id": "earth"}, 409, "already running"),
    ({"uri": "world_8s.mp4", "fps": 0}, 400, "fps"),
    ({"uri": "world_8s.mp4", "colour": "red"}, 400, "unknown field"),
    ({}, 400, "uri is missing"),
]


@pytest.mark.parametrize("body,status,words", BAD_STREAMS)
def test_bad_streams_are_refused_and_nothing_is_written(server, indexed, body, status, words):
    before = requests.get(server.url + "/streams").json()
    state = (server.store / STATE_FILE).read_text()
    r = requests.post(server.url + "/streams", json=body)
    assert r.status_code == status and words in r.json()["error"], r.text
    assert "Traceback" not in r.text
    after = requests.get(server.url + "/streams").json()
    assert [s["source_id"] for s in after["streams"]] == [s["source_id"] for s in before["streams"]]
    assert (server.store / STATE_FILE).read_text() == state


def test_bad_requests_get_4xx_json(server, indexed):
    url = server.url
    cases = [
        (requests.get(url + "/streams/nope"), 404, "no stream 'nope'"),
        (requests.delete(url + "/streams/nope"), 404, "no stream 'nope'"),
        (requests.post(url + "/ask", json={}), 400, "give a text"),
        (requests.post(url + "/ask", data=b"{not json"), 400, "not JSON"),
        (requests.post(url + "/ask", json={"text": "x", "source_ids": ["nope"]}), 400, "nope"),
        (requests.post(url + "/ask", json={"text": "x", "top_k": "many"}), 400, "top_k"),
        (requests.post(url + "/ask", files={"image": ("x.png", b"not an image", "image/png")}),
         400, "PNG or JPEG"),
        (requests.post(url + "/ask", files={"image": ("big.png", b"\0" * 60_000, "image/png")}),
         413, "over the limit"),
        (requests.post(url + "/alerts", json={"text": "x", "threshold": 3}), 400, "threshold"),
        (requests.post(url + "/alerts", json={"text": "x", "webhook": "file:///etc"}), 400, "webhook"),
        (requests.get(url + "/nothing/here"), 404, "no route"),
        (requests.put(url + "/ask"), 405, "not allowed"),
    ]
    for r, status, words in cases:
        assert r.status_code == status, (r.request.method, r.request.url, r.text)
        assert r.headers["content-type"] == "application/json" and words in r.json()["error"], r.text
    assert requests.get(url + "/alerts").json()["alerts"] == []
    assert not (server.store / "live-alerts").exists() or not any((server.store / "live-alerts").iterdir())


def test_the_page_and_its_files_are_served(server):
    page = requests.get(server.url + "/")
    assert page.status_code == 200 and "<title>streamvid</title>" in page.text
    js = requests.get(server.url + "/static/app.js")
    assert js.status_code == 200 and "EventSource" in js.text
    assert "http" not in page.text.replace("http-equiv", ""), "no CDN: every file is local"


def test_non_loopback_bind_needs_a_token(tmp_path):
    res = subprocess.run([sys.executable, "-m", "pipelines.cli", "serve", "--store",
                          str(tmp_path / "s"), "--host", "0.0.0.0"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and "--token" in res.stderr
    assert not (tmp_path / "s").exists()


def test_token_is_checked_on_every_route(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(DATA / "city_4s.mp4", media / "city_4s.mp4")
    ok = {"Authorization": "Bearer s3cret"}
    srv = ServeProcess(tmp_path / "store", "--token", "s3cret", "--media-root", str(media),
                       host="0.0.0.0").start(headers=ok)
    try:
        url = srv.url
        for method, path in [("GET", "/streams"), ("POST", "/streams"), ("GET", "/streams/x"),
                             ("DELETE", "/streams/x"), ("POST", "/ask"), ("GET", "/alerts"),
                             ("POST", "/alerts"), ("DELETE", "/alerts/x"), ("GET", "/events"),
                             ("GET", "/health"), ("GET", "/metrics"), ("GET", "/clips/1/keyframe")]:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
                r = requests.request(method, url + path, headers=headers,
                                     json={"uri": "city_4s.mp4"}, timeout=10)
                assert r.status_code == 401, (method, path, headers, r.text)
                assert "token" in r.json()["error"]
        assert requests.get(url + "/streams?token=wrong").status_code == 401
        assert json.loads((srv.store / STATE_FILE).read_text())["streams"] == [] \
            if (srv.store / STATE_FILE).exists() else True
        assert requests.get(url + "/").status_code == 200, "the page loads, then asks for the token"
        r = requests.post(url + "/streams", headers=ok, json={"uri": "city_4s.mp4", "source_id": "c"})
        assert r.status_code == 201, r.text
        assert requests.get(url + "/streams?token=s3cret").json()["streams"][0]["source_id"] == "c"
        ev = requests.get(url + "/events?token=s3cret", stream=True, timeout=10)
        assert ev.status_code == 200
        ev.close()
    finally:
        assert srv.stop() == 0

"""`kill -9` of `streamvid serve` while it ingests two RTSP streams, then a restart: the store
opens at its last commit with every committed clip, the streams and alerts resume, and each
stream's times go on after what was committed."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

requests = pytest.importorskip("requests")
pytest.importorskip("uvicorn")

from memory.store import MemoryStore  # noqa: E402
from tests.live_helpers import RtspServer, ServeProcess, free_port, gst_available  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def cameras():
    if not gst_available():
        if IN_CI:
            pytest.fail("the GStreamer RTSP server stack is missing in CI; fix: run .ci/system-deps.sh")
        pytest.skip("GStreamer RTSP server not installed (see .ci/system-deps.sh)")
    servers = [RtspServer(free_port(), fps=10).start() for _ in range(2)]
    yield servers
    for s in servers:
        s.stop()


def committed(store) -> dict[str, dict[int, tuple[float, float]]]:
    """Per source: clip id -> (start, end) of the store's last commit."""
    with MemoryStore.open(store, mode="r") as st:
        return st.clip_spans()


def streams(srv) -> dict[str, dict]:
    return {s["source_id"]: s for s in requests.get(srv.url + "/streams").json()["streams"]}


def wait_for(fn, timeout: float = 180.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return
        time.sleep(0.5)
    raise AssertionError(f"not true within {timeout} s")


@pytest.mark.rtsp
@pytest.mark.slow
def test_kill9_then_restart_loses_nothing(tmp_path, cameras):
    store = tmp_path / "store"
    srv = ServeProcess(store, "--commit-every", "1").start()
    try:
        r = requests.post(srv.url + "/alerts", json={"text": "ball", "threshold": 0.99})
        assert r.status_code == 201
        alert_id = r.json()["id"]
        for name, cam in zip(("cam1", "cam2"), cameras):
            r = requests.post(srv.url + "/streams", json={"uri": cam.url, "source_id": name, "fps": 2})
            assert r.status_code == 201, r.text
        wait_for(lambda: all(s["state"] == "live" and s["clips"] >= 2 for s in streams(srv).values()))
        time.sleep(1.5)  # mid-ingest: frames queued, clips pending, a commit due
        srv.kill9()
    finally:
        srv.stop()
    before = committed(store)
    assert set(before) == {"cam1", "cam2"} and all(len(v) >= 2 for v in before.values())

    again = ServeProcess(store, "--commit-every", "1", port=srv.port).start()
    try:
        assert [a["id"] for a in requests.get(again.url + "/alerts").json()["alerts"]] == [alert_id]
        assert set(streams(again)) == {"cam1", "cam2"}
        wait_for(lambda: all(s["state"] == "live" and s["clips"] >= s_before + 2 for s, s_before in
                             ((streams(again)[n], len(before[n])) for n in ("cam1", "cam2"))))
        after = committed(store)
    finally:
        assert again.stop() == 0
    for name in ("cam1", "cam2"):
        old, new = before[name], after[name]
        assert set(old) <= set(new), f"{name}: committed clips lost"
        assert all(new[c] == old[c] for c in old)
        added = sorted(v for c, v in new.items() if c not in old)
        assert len(added) >= 2
        assert added[0][0] > max(e for _, e in old.values()), f"{name}: times go on after a restart"
        starts = np.array([s for s, _ in sorted(new.values())])
        assert np.all(np.diff(starts) > 0)

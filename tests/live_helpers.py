"""Real producers for the live tests: GStreamer's RTSP server on loopback in a child process."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

SERVER = Path(__file__).parent / "sources" / "rtsp_server.py"
SYSTEM_PY = "/usr/bin/python3"


def gst_available() -> bool:
    if not os.path.exists(SYSTEM_PY):
        return False
    probe = ("import gi; gi.require_version('Gst','1.0'); gi.require_version('GstRtspServer','1.0'); "
             "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
             "assert Gst.ElementFactory.find('x264enc') and Gst.ElementFactory.find('rtph264pay')")
    return subprocess.run([SYSTEM_PY, "-c", probe], capture_output=True).returncode == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RtspServer:
    """GStreamer's RTSP server in a child process, serving a 25 fps H.264 test pattern."""

    def __init__(self, port: int, fps: int = 25, audio: bool = False) -> None:
        self.port, self.fps, self.audio = port, fps, audio
        self.url = f"rtsp://127.0.0.1:{port}/live"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "RtspServer":
        deadline = time.monotonic() + 20
        while True:
            self.proc = subprocess.Popen([SYSTEM_PY, str(SERVER), "--port", str(self.port),
                                          "--fps", str(self.fps)] + (["--audio"] if self.audio else []),
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            line = self.proc.stdout.readline().strip()
            if line.startswith("READY"):
                return self
            self.proc.wait()
            if time.monotonic() > deadline:  # the port may linger briefly after a stop
                raise RuntimeError(f"RTSP server did not start: {line}")
            time.sleep(0.3)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class ServeProcess:
    """``streamvid serve`` in a child process on a free loopback port, like a user starts it."""

    def __init__(self, store: Path, *args: str, host: str = "127.0.0.1", port: int | None = None):
        self.store, self.args, self.host = Path(store), list(args), host
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = self.store.parent / f"serve-{self.port}.log"

    def start(self, timeout: float = 120.0, headers: dict | None = None) -> "ServeProcess":
        import sys

        import requests

        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pipelines.cli", "serve", "--store", str(self.store),
                 "--host", self.host, "--port", str(self.port), *self.args],
                stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited with {self.proc.returncode}: {self.log.read_text()}")
            try:
                if requests.get(self.url + "/health", headers=headers, timeout=2).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"serve did not answer within {timeout:g} s: {self.log.read_text()}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

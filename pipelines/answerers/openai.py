"""The ``openai`` answerer: any OpenAI-compatible chat server (vLLM, Ollama, llama.cpp's
server, llama-cpp-python, SGLang, hosted APIs) answers from the retrieved moments.

One ``POST {answer.url}/chat/completions`` per question. The user message holds, in time
order, each retrieved moment: its time as text (``Frame from 00:12:31 (00:12:29–00:12:35):``),
its keyframe as a base64 JPEG data URL (the best-scored ``answer.max_images`` moments that
have one; none with ``answer.images: false``, for servers without vision), and what the
memory knows of it (labels, on-screen text); then the question. The evidence returned is
the retrieval's, as with the extractive answerer.

HTTP goes through httpx: a small, well-kept client whose timeouts and errors are explicit,
so that connection failures, refusals and malformed replies each become one
:class:`~streamvid.errors.AnswerError` naming the server and the fix. The ``openai``
package would add a large dependency whose own retry and error layers hide the raw reply.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from typing import Any

import httpx

from streamvid.config import AnswerConfig
from streamvid.errors import AnswerError, ConfigError
from streamvid.io import encode_jpeg
from streamvid.types import Answer, Answerer, Context, ContextItem, Question, format_time

from .base import ANSWERERS
from .extractive import evidence_of

log = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You answer questions about a video. You are given moments retrieved from it, in time "
    "order: each moment's time (HH:MM:SS), what was recognised in it and any text read on "
    "screen, and, when available, its picture. Answer from these moments only, briefly. "
    "When the question asks when, give the time of the moment. For multiple choice, answer "
    "with the option's letter and text. If the moments do not show the answer, say so.")

#: first wait before a retry (seconds), doubled per try
BACKOFF = 0.5
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}
_IMAGE_WORDS = ("image", "vision", "multimodal", "mmproj", "image_url", "clip model")


def chat_url(base: str) -> str:
    """``base`` (``http://host:port/v1``) -> its chat completions endpoint."""
    base = base.strip().rstrip("/")
    return base if base.endswith("/chat/completions") else f"{base}/chat/completions"


def moment_text(item: ContextItem) -> str:
    """What the memory knows of one moment, in words: its time, labels and on-screen text."""
    clip = item.clip
    head = (f"Frame from {format_time(clip.keyframe)} "
            f"({format_time(clip.start)}–{format_time(clip.end)}):")
    what = clip.description or "; ".join(lbl for lbl, _ in clip.labels) or "nothing recognised"
    if clip.merged > 1:
        what = f"{clip.merged} clips merged: {what}"
    return f"{head} {what}"


def data_url(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def build_messages(question: Question, context: Context, *, images: bool,
                   max_images: int) -> tuple[list[dict[str, Any]], int]:
    """The chat messages for ``question`` over ``context``, and the number of images in them.

    Moments are the retrieved (non-anchor) clips in time order; pictures go to the
    ``max_images`` best-scored ones that have a keyframe JPEG.
    """
    moments = [it for it in context.items if not it.is_anchor]  # already chronological
    # the picture of an image question goes first and counts against max_images
    asked = encode_jpeg(question.image) if question.image is not None and images and \
        max_images > 0 else None
    with_picture: set[int] = set()
    if images:
        ranked = sorted((it for it in moments if it.clip.keyframe_jpeg is not None),
                        key=lambda it: -it.score)
        with_picture = {id(it) for it in ranked[:max(0, max_images - (asked is not None))]}
    q = question.text.strip()
    if not q:
        q = "When does the picture given with the question appear, and what happens then?"
    intro = ("Moments retrieved from the video, in time order:" if moments
             else "No moment of the video matches the question.")
    if not with_picture and asked is None:  # plain text: what servers without vision accept
        lines = [intro, *(moment_text(it) for it in moments), "", f"Question: {q}"]
        user: Any = "\n".join(lines)
    else:
        user = []
        if asked is not None:
            user += [{"type": "text", "text": "The picture asked about:"},
                     {"type": "image_url", "image_url": {"url": data_url(asked)}}]
        user.append({"type": "text", "text": intro})
        for it in moments:
            user.append({"type": "text", "text": moment_text(it)})
            if id(it) in with_picture:
                user.append({"type": "image_url",
                             "image_url": {"url": data_url(it.clip.keyframe_jpeg)}})
        user.append({"type": "text", "text": f"Question: {q}"})
    return ([{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}],
            len(with_picture) + (asked is not None))


@ANSWERERS.register("openai")
class OpenAIAnswerer(Answerer):
    """Asks an OpenAI-compatible chat server, sending the retrieved moments."""

    name = "openai"

    def __init__(self, config: AnswerConfig | None = None):
        self.config = config or AnswerConfig(name="openai")
        if not self.config.url.strip():
            raise ConfigError("the openai answerer needs answer.url, the server's base URL; fix: "
                              "pass --url http://HOST:PORT/v1 (or set answer.url)")
        if not self.config.url.strip().startswith(("http://", "https://")):
            raise ConfigError(f"answer.url {self.config.url!r} is not an http(s) URL; fix: pass "
                              "--url http://HOST:PORT/v1")
        self.url = chat_url(self.config.url)
        key = os.environ.get(self.config.api_key_env, "") if self.config.api_key_env else ""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(timeout=httpx.Timeout(self.config.timeout, connect=10.0),
                                    headers=headers)

    def answer(self, question: Question, context: Context) -> Answer:
        cfg = self.config
        messages, n_images = build_messages(question, context, images=cfg.images,
                                            max_images=cfg.max_images)
        body: dict[str, Any] = {"messages": messages, "max_tokens": cfg.max_new_tokens,
                                "temperature": cfg.temperature, "stream": False}
        if cfg.model:
            body["model"] = cfg.model
        t0 = time.perf_counter()
        reply = self._post(body, n_images)
        elapsed = time.perf_counter() - t0
        text = self._content(reply)
        timings: dict[str, float] = {"images": float(n_images), "generate_s": elapsed}
        server = reply.get("timings")  # llama.cpp's server reports its own split
        if isinstance(server, dict) and isinstance(server.get("prompt_ms"), (int, float)) \
                and isinstance(server.get("predicted_ms"), (int, float)):
            timings["prefill_s"] = float(server["prompt_ms"]) / 1000.0
            timings["generate_s"] = float(server["predicted_ms"]) / 1000.0
        usage = reply.get("usage")
        if isinstance(usage, dict):
            for key in ("prompt_tokens", "completion_tokens"):
                if isinstance(usage.get(key), int):
                    timings[key] = float(usage[key])
        evidence = tuple(evidence_of(it) for it in context.hits())
        return Answer(text, evidence, timings)

    # ------------------------------------------------------------------ HTTP
    def _post(self, body: dict[str, Any], n_images: int) -> dict[str, Any]:
        cfg = self.config
        tries = cfg.retries + 1
        problem = ""
        for attempt in range(tries):
            if attempt:
                delay = BACKOFF * 2 ** (attempt - 1)
                log.info("retrying %s in %.1f s (%s)", self.url, delay, problem)
                time.sleep(delay)
            try:
                resp = self._client.post(self.url, json=body)
            except httpx.TimeoutException as err:
                problem = f"no reply within {cfg.timeout:g} s ({type(err).__name__})"
                continue
            except httpx.TransportError as err:
                problem = f"cannot connect ({type(err).__name__}: {err})"
                continue
            if resp.status_code in _RETRY_STATUS:
                problem = f"HTTP {resp.status_code}: {_snippet(resp.text)}"
                continue
            if resp.status_code >= 400:
                raise self._refusal(resp, n_images)
            try:
                reply = resp.json()
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise AnswerError(
                    f"the answer server {self.url} replied with something that is not JSON "
                    f"({err.__class__.__name__}: {_snippet(resp.text)!r}); fix: point --url at "
                    "an OpenAI-compatible server's /v1 endpoint") from err
            if not isinstance(reply, dict):
                raise AnswerError(f"the answer server {self.url} replied with JSON that is not an "
                                  "object; fix: point --url at an OpenAI-compatible /v1 endpoint")
            return reply
        raise AnswerError(
            f"the answer server {self.url} cannot be reached: {problem} (after {tries} "
            f"tr{'y' if tries == 1 else 'ies'}); fix: start the server (e.g. `python -m "
            "llama_cpp.server --model MODEL.gguf`) or pass the right --url")

    def _refusal(self, resp: httpx.Response, n_images: int) -> AnswerError:
        msg = _snippet(resp.text)
        where = f"the answer server {self.url}"
        if n_images and resp.status_code in (400, 415, 422, 500, 501) and \
                any(w in msg.lower() for w in _IMAGE_WORDS):
            return AnswerError(f"{where} refused the {n_images} keyframe image(s) (HTTP "
                               f"{resp.status_code}: {msg}); fix: serve a vision model, or ask "
                               "text only with --set answer.images=false")
        if resp.status_code in (401, 403):
            return AnswerError(f"{where} refused the request (HTTP {resp.status_code}: {msg}); "
                               f"fix: put the API key in ${self.config.api_key_env}")
        if resp.status_code == 404:
            return AnswerError(f"{where} has no such endpoint or model (HTTP 404: {msg}); fix: "
                               "pass the base URL ending in /v1 as --url and a model it serves "
                               "as --model")
        return AnswerError(f"{where} refused the request (HTTP {resp.status_code}: {msg}); fix: "
                           "check --model and the server's log")

    def _content(self, reply: dict[str, Any]) -> str:
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as err:
            err_obj = reply.get("error")
            detail = f"error {err_obj}" if err_obj else f"no choices[0].message.content ({err!r})"
            raise AnswerError(f"the answer server {self.url} replied with a malformed chat "
                              f"completion: {_snippet(str(detail))}; fix: point --url at an "
                              "OpenAI-compatible /v1 endpoint") from None
        if isinstance(content, list):  # some servers answer in parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise AnswerError(f"the answer server {self.url} replied with a malformed chat "
                              f"completion (content is {type(content).__name__}); fix: point "
                              "--url at an OpenAI-compatible /v1 endpoint")
        return content.strip()

    def close(self) -> None:
        self._client.close()


def _snippet(text: str, n: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[:n] + "…"

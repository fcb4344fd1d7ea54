"""A small OpenAI-compatible chat server for the tests: it records every request it receives
(headers and JSON body, one JSON line each) and answers with a chat completion that names
what it received, or misbehaves on purpose.

    python chat_recorder.py --log FILE [--mode ok|refuse-images|malformed|no-choices|busy-twice]

Prints ``PORT <n>`` on stdout once it listens on 127.0.0.1 (port chosen by the system).
"""

from __future__ import annotations

import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--log", required=True)
    ap.add_argument("--mode", default="ok",
                    choices=("ok", "refuse-images", "malformed", "no-choices", "busy-twice"))
    args = ap.parse_args()
    state = {"requests": 0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):  # keep stderr quiet
            pass

        def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state["requests"] += 1
            try:
                body = json.loads(raw)
            except json.JSONDecodeError:
                body = None
            with open(args.log, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"path": self.path, "headers": dict(self.headers),
                                     "body": body}) + "\n")
            if self.path != "/v1/chat/completions":
                return self._send(404, b'{"error": "not found"}')
            content = body["messages"][-1]["content"] if body else ""
            parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
            n_img = sum(p.get("type") == "image_url" for p in parts)
            if args.mode == "refuse-images" and n_img:
                return self._send(400, json.dumps({"error": {
                    "message": "image input is not supported by this model (no mmproj)",
                    "type": "invalid_request_error"}}).encode())
            if args.mode == "busy-twice" and state["requests"] <= 2:
                return self._send(503, b'{"error": "loading model"}')
            if args.mode == "malformed":
                return self._send(200, b"<html>proxy error</html>", "text/html")
            if args.mode == "no-choices":
                return self._send(200, b'{"object": "chat.completion", "choices": []}')
            reply = {"id": "rec-1", "object": "chat.completion", "model": body.get("model", ""),
                     "choices": [{"index": 0, "finish_reason": "stop", "message": {
                         "role": "assistant", "content": f"received {n_img} images"}}],
                     "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}}
            self._send(200, json.dumps(reply).encode())

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"PORT {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()

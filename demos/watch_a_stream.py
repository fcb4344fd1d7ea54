"""User story: "Keep watching my camera and tell me when the delivery van shows up."

    python demos/watch_a_stream.py rtsp://camera.local/stream --store cam/ --image van.png

Indexes a live source (RTSP, a camera index such as 0, or a file) with a live session that
commits every few seconds; the picture is a standing question (an alert) checked on every
commit, and each new match is printed until the source ends or Ctrl-C.
"""

from __future__ import annotations

import argparse
import time

from pipelines.ask import load_image
from pipelines.live import LiveSession
from streamvid.config import Config
from streamvid.types import format_time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("uri")
    ap.add_argument("--store", required=True)
    ap.add_argument("--image", required=True, help="a picture of what to watch for")
    ap.add_argument("--threshold", type=float, default=0.5, help="match score that counts (0..1)")
    args = ap.parse_args()

    def show(event: dict) -> None:
        if event["type"] == "alert":
            print(f"match: {event['source_id']} {format_time(event['start'])}"
                  f"–{format_time(event['end'])} score {event['score']:.2f}", flush=True)
        elif event["type"] == "error":
            print(f"error: {event['error']}", flush=True)

    config = Config.load(None)
    with LiveSession(args.store, config, commit_every=5.0) as session:
        session.subscribe(show)
        session.add_alert(image=load_image(args.image), threshold=args.threshold)
        session.add(args.uri)
        try:
            while session.running():
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()

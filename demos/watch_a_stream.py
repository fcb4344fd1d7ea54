"""User story: "Keep watching my camera and tell me when the delivery van shows up."

    python demos/watch_a_stream.py rtsp://camera.local/stream --store cam/ --image van.png

Indexes a live source (RTSP, a camera index such as 0, or a file) in a background thread,
committing every few seconds, and asks the image question against what has been seen so
far every ``--every`` seconds until Ctrl-C.
"""

from __future__ import annotations

import argparse
import threading
import time

from pipelines.ask import Asker, load_image
from pipelines.index import index_video
from pipelines.models import Models
from streamvid.config import Config
from streamvid.types import Question, format_time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("uri")
    ap.add_argument("--store", required=True)
    ap.add_argument("--image", required=True, help="a picture of what to watch for")
    ap.add_argument("--every", type=float, default=10.0, help="seconds between checks")
    args = ap.parse_args()

    config = Config.load(None, {"memory.commit_every": 5.0})
    models = Models(config)
    stop = threading.Event()
    committed = threading.Event()
    worker = threading.Thread(target=index_video, args=(args.uri, args.store, config),
                              kwargs={"models": models, "progress": False, "stop": stop,
                                      "on_commit": lambda s: committed.set()}, daemon=True)
    worker.start()
    query = Question(image=load_image(args.image), image_path=args.image)
    try:
        committed.wait()
        while worker.is_alive():
            with Asker(args.store, config, models=models) as asker:
                best = asker.ask(query, top_k=1).evidence
            if best:
                print(f"best match so far: {format_time(best[0].start)} score {best[0].score:.2f}")
            time.sleep(args.every)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        worker.join()


if __name__ == "__main__":
    main()

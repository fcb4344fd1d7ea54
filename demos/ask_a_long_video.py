"""User story: "I have a long recording; when does this object appear, and what does the sign say?"

    python demos/ask_a_long_video.py VIDEO [--image PICTURE] [--question TEXT] [--store DIR]

Indexes VIDEO once into a store (reused on the next run), then asks the questions through
the Python API — the same calls `streamvid index` and `streamvid ask` make.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.ask import Asker, load_image
from pipelines.index import index_video
from pipelines.models import Models
from streamvid.config import Config
from streamvid.types import Question


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video")
    ap.add_argument("--image", help="a picture of what to look for")
    ap.add_argument("--question", default="What does the sign say?")
    ap.add_argument("--store", default=None, help="store directory (default: VIDEO.store)")
    args = ap.parse_args()

    config = Config()                      # the offline lite profile
    models = Models(config)                # loaded once, shared by indexing and asking
    store = Path(args.store or f"{args.video}.store")
    if not (store / "manifest.json").exists():
        summary = index_video(args.video, store, config, models=models)
        print("\n".join(summary.lines()))
    with Asker(store, config, models=models) as asker:
        questions = [Question(text=args.question)]
        if args.image:
            questions.append(Question(image=load_image(args.image), image_path=args.image))
        for q in questions:
            ans = asker.ask(q)
            print(f"\nQ: {q.text or '[image] ' + q.image_path}\nA: {ans.answer}")
            for e in ans.evidence[:3]:
                print(f"   {e.start:7.1f}–{e.end:7.1f} s  {e.score:.2f}  {e.text}")


if __name__ == "__main__":
    main()

"""``streamvid demo``: the main job on the offline default, start to finish.

It builds a haystack by looping a bundled public-domain clip (NASA's rotating Earth), splices
an image needle (an espresso cup) and a text sign in at random times, indexes the result with
the lite profile, asks "when does this appear?" with the needle image and "what is the wifi
password on the sign?", and prints each answer next to the truth.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from streamvid.config import Config
from streamvid.types import Question, format_time

DATA = Path(__file__).parent / "data"
DEMO_VIDEO = DATA / "world.mp4"
DEMO_NEEDLE = DATA / "needle_espresso.png"
SIGN_TEXT = "WIFI PASSWORD: tulip-42"


def run_demo(*, seed: int | None = None, length: float = 120.0, keep: str | None = None,
             progress: bool = True) -> dict[str, Any]:
    from .ask import Asker, load_image
    from .index import index_video
    from .models import Models
    from .niah.haystack import NeedleSpec, build_haystack

    seed = random.SystemRandom().randrange(1 << 30) if seed is None else seed
    rng = random.Random(seed)
    length = max(30.0, float(length))
    # two needles, 3 s each, apart from each other and from the ends
    t_img = rng.uniform(5.0, length / 2 - 8.0)
    t_txt = rng.uniform(length / 2 + 2.0, length - 8.0)
    if rng.random() < 0.5:
        t_img, t_txt = t_txt, t_img
    workdir = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="streamvid-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        info = build_haystack(
            [DEMO_VIDEO], workdir / "haystack.mp4", length=length, fps=2.0, seed=seed,
            needles=[NeedleSpec(kind="image", label="espresso", image=str(DEMO_NEEDLE), text=None,
                                start=t_img, duration=3.0, area=0.08),
                     NeedleSpec(kind="text", label="sign", image=None, text=SIGN_TEXT,
                                start=t_txt, duration=3.0)],
            progress=progress)
        config = Config()
        models = Models(config)
        store = workdir / "store"
        if store.exists():
            shutil.rmtree(store)
        summary = index_video(str(info.path), store, config, models=models, progress=progress,
                              source_id="demo-haystack")
        placed = {n.label: n for n in info.needles}
        img_needle, txt_needle = placed["espresso"], placed["sign"]
        with Asker(store, config, models=models) as asker:
            a_img = asker.ask(Question(image=load_image(DEMO_NEEDLE), image_path=str(DEMO_NEEDLE)))
            a_txt = asker.ask(Question(text="What is the wifi password on the sign?"))
        found = bool(a_img.evidence) and (a_img.evidence[0].start < img_needle.end
                                          and a_img.evidence[0].end > img_needle.start)
        read = "tulip-42" in a_txt.answer.lower()
        lines = [
            f"haystack: {format_time(length)} of looped NASA Earth footage, seed {seed} "
            f"({summary.frames} frames indexed in {summary.seconds:.1f} s, {summary.x_realtime:.1f}x real time)",
            "",
            "Q: when does this appear? [image: espresso cup]",
            f"A: {a_img.answer}",
            f"   truth: {format_time(img_needle.start)}–{format_time(img_needle.end)}  -> "
            + ("FOUND (evidence #1 overlaps the needle)" if found else "MISSED"),
            "",
            "Q: What is the wifi password on the sign?",
            f"A: {a_txt.answer}",
            f"   truth: \"{SIGN_TEXT}\" at {format_time(txt_needle.start)}–{format_time(txt_needle.end)}  -> "
            + ("READ" if read else "NOT READ"),
            "",
            f"total {time.perf_counter() - t0:.1f} s" + (f"; files kept in {workdir}" if keep else ""),
        ]
        return {"seed": seed, "length": length, "lines": lines,
                "image": {"truth": [img_needle.start, img_needle.end], "answer": a_img.to_json(), "found": found},
                "text": {"truth": SIGN_TEXT, "answer": a_txt.to_json(), "read": read},
                "index": summary.to_json()}
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)

"""Pictures of the image questions a NIAH run missed: the query, the frame with the needle and
the frame retrieval put first, side by side (one JPEG per miss), to see what fails.

    python benchmarks/niah_failures.py --config configs/niah-general.yaml --run runs/niah-general \
        --out benchmarks/results/niah-general/failures [--limit 12]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
# benchmarks/memory.py would shadow the memory package; the project root is imported instead
sys.path[:] = [str(HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]


def _frame_at(video: Path, t: float) -> np.ndarray:
    import av

    with av.open(str(video)) as c:
        best = None
        for fr in c.decode(video=0):
            if fr.time is not None and fr.time > t + 1e-6:
                break
            best = fr
        return best.to_ndarray(format="rgb24")


def _tile(img: np.ndarray, h: int) -> np.ndarray:
    import cv2

    if img.shape[-1] == 4:   # a cut-out: shown on mid-grey
        a = img[..., 3:4].astype(np.float32) / 255
        img = (img[..., :3] * a + 128 * (1 - a)).astype(np.uint8)
    s = h / img.shape[0]
    return cv2.resize(img, (max(1, int(round(img.shape[1] * s))), h), interpolation=cv2.INTER_AREA)


def main() -> None:
    from pipelines.ask import load_image
    from pipelines.niah.grid import NiahConfig, plan
    from pipelines.niah.run import haystack_path, read_results

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--run", required=True, help="the run folder (results.jsonl)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--limit", type=int, default=0, help="at most this many pictures (0: all)")
    args = ap.parse_args()
    cfg = NiahConfig.load(args.config)
    plans = {hp.name: hp for hp in plan(cfg)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    misses = [r for r in read_results(Path(args.run) / "results.jsonl").values()
              if r["qtype"] == "image" and not r.get("hit1")]
    misses.sort(key=lambda r: r["id"])
    from PIL import Image

    lines = []
    for r in misses[:args.limit or None]:
        hp = plans[r["haystack"]]
        q = next(q for q in hp.questions if q.id == r["id"])
        video = haystack_path(hp, cfg)
        t0, t1 = r["truth"][0]
        needle = _frame_at(video, (t0 + t1) / 2)
        top = _frame_at(video, (r["evidence"][0][0] + r["evidence"][0][1]) / 2) if r["evidence"] \
            else np.zeros_like(needle)
        h = needle.shape[0]
        gap = np.full((h, 8, 3), 255, np.uint8)
        row = np.concatenate([_tile(load_image(q.image), h), gap, needle, gap, top], axis=1)
        name = f"{r['id']}.jpg"
        Image.fromarray(row).save(out / name, quality=80)
        lines.append({"id": r["id"], "file": name, **{k: r.get(k) for k in
                      ("footage", "height", "position", "picture", "truth", "evidence")}})
    (out / "failures.json").write_text(json.dumps(lines, indent=1) + "\n")
    print(f"{len(lines)} of {len(misses)} misses drawn into {out}")


if __name__ == "__main__":
    main()

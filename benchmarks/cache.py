"""Feature-cache benchmark: token-level speed (ViT-B/16) and frame-level reuse (lite).

(a) Token-level cache: a CLIP ViT-B/16 vision tower built from its config with random
    weights (speed does not depend on the weights; no download), over real footage sampled
    at 1 fps; ms/frame of the plain forward and of the token-level cache in the same run,
    recomputed share of tokens, and the cosine between cached and plain outputs.
(b) Frame-level cache with the lite encoder (real ImageNet weights) on four kinds of real
    footage: share of frames and tokens recomputed and the mean cosine of the features the
    cache returns against a full encode of every frame, for the default settings and a small
    grid of thresholds.

Usage: python benchmarks/cache.py [--media /work/shared/media/videos] [--out benchmarks/results/cache.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from streamvid.cache import FrameCache, TokenCache  # noqa: E402
from streamvid.config import CacheConfig, EncoderConfig  # noqa: E402
from streamvid.encoders import create_encoder  # noqa: E402
from streamvid.types import EncoderOutput, Frame, VisionEncoder  # noqa: E402


def frames_1fps(path: Path, limit: float | None = None) -> list[Frame]:
    """Decode ``path`` with PyAV and keep the first frame at or after each whole second."""
    import av

    out: list[Frame] = []
    nxt = 0.0
    with av.open(str(path)) as box:
        stream = box.streams.video[0]
        for fr in box.decode(stream):
            if fr.pts is None:
                continue
            t = float(fr.pts * stream.time_base)
            if limit is not None and t > limit:
                break
            if t + 1e-6 >= nxt:
                img = fr.to_ndarray(format="rgb24")
                h, w = img.shape[:2]
                if max(h, w) > 720:
                    import cv2

                    s = 720 / max(h, w)
                    img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
                out.append(Frame(pts=t, index=len(out), image=img, source_id=path.name))
                nxt = np.floor(t) + 1.0
    return out


def cos_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row cosines; two all-zero rows (ReLU6 tokens of flat padding) count as identical."""
    na, nb = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
    cos = (a * b).sum(-1) / (na * nb + 1e-12)
    return np.where((na < 1e-6) & (nb < 1e-6), 1.0, cos)


class Lookup(VisionEncoder):
    """Serves precomputed full encodes, so cache policies can be compared on the same data."""

    def __init__(self, enc: VisionEncoder, frames: list[Frame], full: EncoderOutput):
        self.name, self.model_id, self.grid = enc.name, enc.model_id, enc.grid
        self.dim, self.pooled_dim = enc.dim, enc.pooled_dim
        self._by_id = {id(f.image): i for i, f in enumerate(frames)}
        self._full = full
        self.calls = 0

    def encode(self, images):
        idx = [self._by_id[id(im)] for im in images]
        self.calls += len(idx)
        return EncoderOutput(self._full.tokens[idx], self._full.pooled[idx], self.grid)


def frame_level(videos: dict[str, Path], lines: list[str]) -> None:
    enc = create_encoder(EncoderConfig(name="lite", batch_size=8))
    default = CacheConfig()
    lines += ["## (b) Frame-level cache, lite encoder (EfficientNet-Lite0, real weights), 1 fps", "",
              f"Encoder `{enc.model_id}`, grid {enc.grid}. Defaults: threshold {default.threshold}, "
              f"cut_threshold {default.cut_threshold}, max_age {default.max_age}, thumb {default.thumb_size}. "
              "Fidelity = mean cosine of the returned features against a full encode of the same frame, "
              "over all frames (reused ones are where it can drop; min over reused frames in brackets).", "",
              "| video | frames | full encode ms/frame | frames reused | tokens recomputed | cos pooled (min) | cos tokens (min) | change p50 / p90 |",
              "|---|---|---|---|---|---|---|---|"]
    grid_rows = []
    for name, path in videos.items():
        frames = frames_1fps(path)
        t0 = time.perf_counter()
        full = enc.encode([f.image for f in frames])
        ms = (time.perf_counter() - t0) / len(frames) * 1000
        for cfg in [default] + [dataclasses.replace(default, threshold=th, max_age=ma)
                                for th in (0.01, 0.02, 0.03, 0.05) for ma in (4, 8, 16)]:
            look = Lookup(enc, frames, full)
            cache = FrameCache(look, cfg, batch_size=8)
            out = []
            for f in frames:
                out += cache.push(f)
            out += cache.flush()
            cp = np.array([cos_rows(o.pooled, full.pooled[o.index]) for o in out])
            ct = np.array([cos_rows(o.tokens, full.tokens[o.index]).mean() for o in out])
            reused = np.array([o.reused for o in out])
            st = cache.stats
            ch = np.array([o.change for o in out[1:]]) if len(out) > 1 else np.zeros(1)
            mins = (cp[reused].min() if reused.any() else 1.0, ct[reused].min() if reused.any() else 1.0)
            row = (name, len(frames), ms, st["frames_reused"] / st["frames"], st["recompute_ratio"],
                   cp.mean(), mins[0], ct.mean(), mins[1], np.percentile(ch, 50), np.percentile(ch, 90))
            if cfg is default:
                lines.append(f"| {name} | {row[1]} | {row[2]:.1f} | {row[3]:.0%} | {row[4]:.0%} | "
                             f"{row[5]:.4f} ({row[6]:.3f}) | {row[7]:.4f} ({row[8]:.3f}) | {row[9]:.4f} / {row[10]:.4f} |")
            else:
                grid_rows.append((cfg.threshold, cfg.max_age) + row)
        print(lines[-1], flush=True)
    lines += ["", "Threshold / max_age grid (same frames, same full encodes):", "",
              "| threshold | max_age | video | frames reused | cos pooled | cos tokens |", "|---|---|---|---|---|---|"]
    for r in grid_rows:
        lines.append(f"| {r[0]} | {r[1]} | {r[2]} | {r[5]:.0%} | {r[7]:.4f} | {r[9]:.4f} |")
    lines.append("")


def token_level(videos: dict[str, Path], lines: list[str], ratios=(0.25,), limit: float = 40.0) -> None:
    import torch
    import transformers

    tmp = Path(tempfile.mkdtemp(prefix="vitb16-"))
    torch.manual_seed(0)
    cfg = transformers.CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                        num_attention_heads=12, image_size=224, patch_size=16,
                                        projection_dim=512)
    transformers.CLIPVisionModelWithProjection(cfg).save_pretrained(tmp)
    enc = create_encoder(EncoderConfig(name="hf", model=str(tmp), batch_size=1))
    lines += ["## (a) Token-level cache, CLIP ViT-B/16 shape (random weights, built from config)", "",
              "Speed does not depend on the weights; fidelity numbers on random weights are only a "
              f"sanity check. Batch 1, {torch.get_num_threads()} torch threads, frames at 1 fps "
              f"(vtest: first {limit:.0f} s). Plain = the transformers forward; cached = the token-level "
              "cache (full pass on references). Same process, alternating per frame.", "",
              "| video | frames | ratio | adaptive | plain ms/frame | cached ms/frame | saved | tokens recomputed | full passes | cos tokens | cos pooled |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, path in videos.items():
        frames = frames_1fps(path, limit)
        for ratio in ratios:
            for adaptive in (False, True):
                cc = CacheConfig(mode="token", recompute_ratio=ratio, adaptive=adaptive)
                cache = TokenCache(enc, cc)
                tp = tc = 0.0
                cts, cps = [], []
                with torch.inference_mode():
                    enc.encode([frames[0].image])  # warm-up
                for f in frames:
                    t0 = time.perf_counter()
                    plain = enc.encode([f.image])
                    t1 = time.perf_counter()
                    (got,) = cache.push(f)
                    t2 = time.perf_counter()
                    tp += t1 - t0
                    tc += t2 - t1
                    cts.append(cos_rows(got.tokens, plain.tokens[0]).mean())
                    cps.append(cos_rows(got.pooled, plain.pooled[0]))
                st = cache.stats
                n = len(frames)
                lines.append(f"| {name} | {n} | {ratio} | {adaptive} | {tp / n * 1000:.0f} | {tc / n * 1000:.0f} | "
                             f"{1 - tc / tp:.0%} | {st['recompute_ratio']:.0%} | {n - st['frames_partial']} | "
                             f"{np.mean(cts):.4f} | {np.mean(cps):.4f} |")
                print(lines[-1], flush=True)
    lines.append("")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--media", default="/work/shared/media/videos")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "cache.md"))
    ap.add_argument("--skip-token", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    media = Path(args.media)
    lines = ["# Feature cache benchmark", "",
             f"Machine: {os.cpu_count()}-core CPU ({platform.machine()}, shared with other jobs), no GPU; "
             f"torch {torch.__version__}; date {datetime.date.today().isoformat()}. "
             "Produced by `python benchmarks/cache.py`.", ""]
    frame_level({"vtest.avi (static camera)": media / "vtest.avi",
                 "cup.mp4 (handheld)": media / "cup.mp4",
                 "bigbuckbunny.mp4 (animation)": media / "bigbuckbunny.mp4",
                 "display-dual-monitors.webm (screencast)": media / "display-dual-monitors.webm"}, lines)
    if not args.skip_token:
        token_level({"vtest.avi": media / "vtest.avi", "cup.mp4": media / "cup.mp4"}, lines)
    lines += ["## NIAH with / without the feature cache", "",
              "<!-- niah-cache:start -->",
              "Not measured yet: this section is filled by the NIAH harness (accuracy and index time "
              "with `cache.enabled: true` and `false`).",
              "<!-- niah-cache:end -->", ""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Feature-cache benchmark: token-level speed (ViT-B/16) and frame-level reuse (lite).

(a) Token-level cache: a CLIP ViT-B/16 vision tower built from its config with random
    weights (speed does not depend on the weights; no download), over real footage sampled
    at 1 fps; ms/frame of the plain forward and of the token-level cache, alternating chunk
    by chunk in the same run, at a fixed recompute ratio 0.25 (batch 1 and 4) and with the
    adaptive ratio; recomputed share of tokens, and the cosine between cached and plain
    outputs.
(b) Frame-level cache with the lite encoder (real ImageNet weights) on four kinds of real
    footage: share of frames and tokens recomputed and the mean cosine of the features the
    cache returns against a full encode of every frame, for the default settings and a small
    grid of thresholds; then the threshold -> reuse / fidelity curve on the static-camera
    video at 1 and 2 fps, for the shipped change test and a local (per-cell) one, beside the
    best fidelity any whole-frame reuse policy could reach at the same reuse.

Load averages are recorded: the machine is shared, so compare ratios within one run.

Usage: python benchmarks/cache.py [--media ../shared/media/videos] [--out benchmarks/results/cache.md]
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


def frames_1fps(path: Path, limit: float | None = None, fps: float = 1.0) -> list[Frame]:
    """Decode ``path`` with PyAV and keep the first frame at or after each ``1/fps`` step."""
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
                nxt = (np.floor(t * fps + 1e-6) + 1.0) / fps
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
    load0 = os.getloadavg()
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
    for fps in (1.0, 2.0):
        reuse_curve(enc, videos[next(iter(videos))], fps, lines)
    load1 = os.getloadavg()
    lines += [f"Load average (1 min) at the start / end of this part: {load0[0]:.1f} / {load1[0]:.1f} "
              "on 2 cores.", ""]


def _simulate(thumbs: np.ndarray, threshold: float, cells: int, max_age: int, cut: float) -> np.ndarray:
    """Which encoded frame each frame takes its features from, for a change test that is the
    global mean (cells=1) or the largest per-cell mean on a cells x cells grid."""
    src, ref, age, prev = [], -1, 0, None
    for i, th in enumerate(thumbs):
        ch = 1.0 if prev is None else float(np.abs(th - prev).mean())
        prev = th
        reuse = False
        if ref >= 0 and ch < cut and age < max_age:
            d = np.abs(th - thumbs[ref]).mean(-1)
            s = d.shape[0] // cells
            score = float(d[:s * cells, :s * cells].reshape(cells, s, cells, s).mean((1, 3)).max())
            reuse = score < threshold
        if reuse:
            age += 1
        else:
            ref, age = i, 0
        src.append(ref)
    return np.array(src)


def _oracle(pooled: np.ndarray, encoded: int) -> float:
    """Best mean pooled cosine any reuse policy can reach with ``encoded`` full encodes, each
    reused frame taking the latest encoded one (dynamic programming over the segments)."""
    n = len(pooled)
    unit = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    sim = unit @ unit.T
    seg = np.zeros((n, n + 1))
    for j in range(n):
        seg[j, j + 1:] = np.cumsum(sim[j, j:])
    best = np.full((encoded + 1, n + 1), -np.inf)
    best[0, 0] = 0.0
    for k in range(1, encoded + 1):
        for e in range(1, n + 1):
            best[k, e] = np.max(best[k - 1, :e] + seg[np.arange(e), e])
    return float(best[encoded, n] / n)


def reuse_curve(enc: VisionEncoder, path: Path, fps: float, lines: list[str]) -> None:
    """Threshold -> reuse and fidelity on one video, for the shipped change test (global mean,
    run through FrameCache) and a local one (largest 4x4-cell mean, simulated), with the
    best any policy could do at the same reuse."""
    from streamvid.cache import thumbnail

    frames = frames_1fps(path, fps=fps)
    full = enc.encode([f.image for f in frames])
    thumbs = np.stack([thumbnail(f.image, CacheConfig().thumb_size) for f in frames])
    cons = cos_rows(full.pooled[1:], full.pooled[:-1])
    lines += [f"### Reuse curve: {path.name} at {fps:g} fps ({len(frames)} frames, max_age 8)", "",
              f"Pooled cosine between consecutive samples (full encodes): mean {cons.mean():.4f}, "
              f"p10 {np.percentile(cons, 10):.4f}. `bound` = the best mean pooled cosine any policy "
              "that reuses whole frames could reach at that reuse (oracle choice of the encoded "
              "frames, no max_age).", "",
              "| change test | threshold | frames reused | cos pooled | cos tokens | bound (pooled) |",
              "|---|---|---|---|---|---|"]
    n = len(frames)
    for cells, ths in ((1, (0.01, 0.0125, 0.015, 0.0175, 0.02, 0.025, 0.03)),
                       (4, (0.04, 0.06, 0.08, 0.1, 0.12))):
        for th in ths:
            if cells == 1:
                look = Lookup(enc, frames, full)
                cache = FrameCache(look, CacheConfig(threshold=th, max_age=8), batch_size=8)
                out = []
                for f in frames:
                    out += cache.push(f)
                out += cache.flush()
                src = np.array([o.index for o in out])
                cp = np.array([cos_rows(o.pooled, full.pooled[o.index]) for o in out])
                ct = np.array([cos_rows(o.tokens, full.tokens[o.index]).mean() for o in out])
                reused = float(np.mean([o.reused for o in out]))
            else:
                src = _simulate(thumbs, th, cells, 8, CacheConfig().cut_threshold)
                cp = cos_rows(full.pooled[src], full.pooled)
                ct = cos_rows(full.tokens[src], full.tokens).mean(1)
                reused = float(np.mean(src != np.arange(n)))
            encoded = max(1, n - int(round(reused * n)))
            name = "global mean (shipped)" if cells == 1 else "max of 4x4 cells"
            lines.append(f"| {name} | {th} | {reused:.0%} | {cp.mean():.4f} | {ct.mean():.4f} | "
                         f"{_oracle(full.pooled, encoded):.4f} |")
    for frac in (0.5, 0.6, 0.7, 0.8):
        k = max(1, int(np.ceil(n * (1 - frac))))
        lines.append(f"| oracle | - | {1 - k / n:.0%} | {_oracle(full.pooled, k):.4f} | - | - |")
    lines.append("")
    print("\n".join(lines[-20:]), flush=True)


def token_level(videos: dict[str, Path], lines: list[str], limit: float = 24.0) -> None:
    import torch
    import transformers

    tmp = Path(tempfile.mkdtemp(prefix="vitb16-"))
    torch.manual_seed(0)
    cfg = transformers.CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                        num_attention_heads=12, image_size=224, patch_size=16,
                                        projection_dim=512)
    transformers.CLIPVisionModelWithProjection(cfg).save_pretrained(tmp)
    enc = create_encoder(EncoderConfig(name="hf", model=str(tmp), batch_size=8))
    load0 = os.getloadavg()
    lines += ["## (a) Token-level cache, CLIP ViT-B/16 shape (random weights, built from config)", "",
              "Random weights (no download): speed does not depend on them; the cosines are a check "
              "that the cached outputs stay close to the plain forward, not a claim about trained "
              f"features. 224 px, {torch.get_num_threads()} torch threads, frames at 1 fps "
              f"(vtest: first {limit:.0f} s). Plain = the transformers forward at the same batch "
              "size; cached = the token-level cache, including its full passes on reference frames "
              "and its change test. Plain and cached alternate chunk by chunk (a chunk = `batch` "
              "frames) in the same process, so their ratio is comparable on the loaded machine. "
              "`fixed` = `adaptive: false`, refresh on jumps and max_age as configured.", "",
              "| video | frames | policy | batch | plain ms/frame | cached ms/frame | saved | tokens recomputed | full passes | cos tokens | cos pooled |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    runs = [("fixed 0.25", False, 1), ("fixed 0.25", False, 4), ("adaptive 0.25", True, 4)]
    for name, path in videos.items():
        frames = frames_1fps(path, limit)
        for label, adaptive, batch in runs:
            cc = CacheConfig(mode="token", recompute_ratio=0.25, adaptive=adaptive)
            cache = TokenCache(enc, cc, batch_size=batch)
            enc.encode([frames[0].image])  # warm-up
            tp = tc = 0.0
            plain: dict[int, tuple[np.ndarray, np.ndarray]] = {}
            got = []
            for c in range(0, len(frames), batch):
                chunk = frames[c:c + batch]
                t0 = time.perf_counter()
                out = enc.encode([f.image for f in chunk])
                t1 = time.perf_counter()
                for f in chunk:
                    got += cache.push(f)
                if c + batch >= len(frames):
                    got += cache.flush()
                t2 = time.perf_counter()
                tp += t1 - t0
                tc += t2 - t1
                for k, f in enumerate(chunk):
                    plain[f.index] = (out.tokens[k], out.pooled[k])
            cts = [cos_rows(g.tokens, plain[g.index][0]).mean() for g in got]
            cps = [cos_rows(g.pooled, plain[g.index][1]) for g in got]
            st = cache.stats
            n = len(frames)
            lines.append(f"| {name} | {n} | {label} | {batch} | {tp / n * 1000:.0f} | {tc / n * 1000:.0f} | "
                         f"{1 - tc / tp:.0%} | {st['recompute_ratio']:.0%} | {n - st['frames_partial']} | "
                         f"{np.mean(cts):.4f} | {np.mean(cps):.4f} |")
            print(lines[-1], flush=True)
    load1 = os.getloadavg()
    lines += ["", f"Load average (1 min) at the start / end of this part: {load0[0]:.1f} / {load1[0]:.1f} "
              "on 2 cores.", ""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--media", default=str(Path(__file__).resolve().parents[2] / "shared" / "media" / "videos"))
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "cache.md"))
    ap.add_argument("--skip-token", action="store_true")
    ap.add_argument("--skip-frame", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    media = Path(args.media)
    lines = ["# Feature cache benchmark", "",
             f"Machine: {os.cpu_count()}-core CPU ({platform.machine()}, shared with other jobs), no GPU; "
             f"torch {torch.__version__}; date {datetime.date.today().isoformat()}. "
             "Produced by `python benchmarks/cache.py`.", ""]
    if not args.skip_frame:
        frame_level({"vtest.avi (static camera)": media / "vtest.avi",
                     "cup.mp4 (handheld)": media / "cup.mp4",
                     "bigbuckbunny.mp4 (animation)": media / "bigbuckbunny.mp4",
                     "display-dual-monitors.webm (screencast)": media / "display-dual-monitors.webm"},
                    lines)
    if not args.skip_token:
        token_level({"vtest.avi": media / "vtest.avi", "cup.mp4": media / "cup.mp4"}, lines)
    lines += ["## NIAH with / without the feature cache", "",
              "<!-- niah-cache:start -->",
              "Not measured yet: this section is filled by the NIAH harness (accuracy and index time "
              "with `cache.enabled: true` and `false`).",
              "<!-- niah-cache:end -->", ""]
    out = Path(args.out)
    text = "\n".join(lines)
    a, b = "<!-- niah-cache:start -->", "<!-- niah-cache:end -->"
    if out.is_file() and a in out.read_text() and b in out.read_text():
        old = out.read_text()  # keep what the NIAH harness wrote and the notes after it
        kept = old[old.index(a):]
        text = text[:text.index(a)] + kept
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

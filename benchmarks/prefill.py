"""LLM prefill time and peak memory of the hf answerer at several fractions of visual tokens kept.

A real-size VideoLLM architecture with random weights (timing does not depend on the
weights): its config is written out here, never fetched from the hub. The context is what
retrieval hands the answerer for a question about an hour of video: 64 frames in 16 clips of
4 frames spread over 3600 s, each clip introduced by its time and followed by its on-screen
text. At each keep ratio every frame keeps that fraction of its tokens (as the pruner
would), and the answer goes through the real path (prompt, injection, prefill, first token)
with ``max_new_tokens=1``: prefill time, time to first token and the peak resident memory
over the call are measured, all ratios in one process.

    PYTHONPATH=. python benchmarks/prefill.py --model llava-ov-0.5b      # results/prefill.{md,json}
    PYTHONPATH=. python benchmarks/prefill.py --model qwen2.5-vl-3b --out benchmarks/results/prefill-qwen
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Architectures as published in the checkpoints' config.json (llava-hf/llava-onevision-qwen2-
# 0.5b-ov-hf, Qwen/Qwen2.5-VL-3B-Instruct), written out so nothing is downloaded.
ARCHS = {
    "llava-ov-0.5b": dict(
        cls="LlavaOnevisionConfig", model="LlavaOnevisionForConditionalGeneration",
        kw=dict(text_config=dict(model_type="qwen2", hidden_size=896, intermediate_size=4864,
                                 num_hidden_layers=24, num_attention_heads=14,
                                 num_key_value_heads=2, vocab_size=152000, rope_theta=1e6,
                                 max_position_embeddings=32768, tie_word_embeddings=True),
                vision_config=dict(model_type="siglip_vision_model", hidden_size=1152,
                                   intermediate_size=4304, num_hidden_layers=26,
                                   num_attention_heads=16, image_size=384, patch_size=14),
                image_token_id=151646, video_token_id=151647, vision_feature_layer=-1,
                vision_feature_select_strategy="full", tie_word_embeddings=True)),
    "qwen2.5-vl-3b": dict(
        cls="Qwen2_5_VLConfig", model="Qwen2_5_VLForConditionalGeneration",
        kw=dict(text_config=dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                                 num_attention_heads=16, num_key_value_heads=2, vocab_size=151936,
                                 rope_theta=1e6, max_position_embeddings=128000,
                                 rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]},
                                 tie_word_embeddings=True),
                vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                                   out_hidden_size=2048, patch_size=14, spatial_merge_size=2,
                                   temporal_patch_size=2, window_size=112,
                                   fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2),
                image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
                vision_end_token_id=151653, tie_word_embeddings=True)),
}


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Peak resident memory while the block runs (sampled every 5 ms), minus the start."""

    def __enter__(self):
        self.start = self.peak = rss_bytes()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def extra_mib(self) -> float:
        return (self.peak - self.start) / 2 ** 20


def build_model(name: str, path: Path) -> str:
    import torch
    import transformers

    from tests.vlm_models import save_tokenizer

    arch = ARCHS[name]
    torch.manual_seed(0)
    cfg = getattr(transformers, arch["cls"])(**arch["kw"])
    model = getattr(transformers, arch["model"])(cfg)
    model.save_pretrained(path)
    save_tokenizer(path)
    del model
    return str(path)


def context(vlm, grid, keep: float, frames: int, clips: int, seed: int = 0):
    from streamvid.types import ClipMemory, Context, ContextItem, Question, TokenSpec

    rng = np.random.default_rng(seed)
    n = grid[0] * grid[1]
    per = frames // clips
    items = []
    for c in range(clips):
        start = (c + 0.5) * 3600.0 / clips
        toks = (rng.standard_normal((per * n, vlm.hidden)) * 0.02).astype(np.float32)
        times = np.repeat(start + np.arange(per, dtype=np.float32), n)
        pos = np.tile(np.arange(n, dtype=np.int32), per)
        k = max(1, int(round(n * keep)))
        idx = np.concatenate([f * n + np.sort(rng.choice(n, k, replace=False)) for f in range(per)])
        clip = ClipMemory(source_id="hour.mp4", start=start, end=start + per - 1,
                          vector=toks.mean(0), keyframes=(start,), tokens=toks, token_times=times,
                          token_positions=pos, ocr_text="EXIT 12 NORTH", id=c)
        items.append(ContextItem(clip=clip, score=1.0, tokens=toks[idx], token_times=times[idx],
                                 token_positions=pos[idx], rank=c))
    spec: TokenSpec = vlm.token_spec(grid)
    return Context(items=tuple(items), budget=10 ** 9, tokens=spec,
                   question=Question("What does the driver do after the exit sign appears?"))


def measure(model_dir: str, keep: float, args) -> dict:
    """One keep ratio in this (fresh) process: load, warm up on one frame, then answer."""
    import torch

    from pipelines.answerers.hf import HFAnswerer
    from streamvid.config import AnswerConfig
    from streamvid.encoders.vlm import load_vlm

    if args.threads:
        torch.set_num_threads(args.threads)
    vlm = load_vlm(model_dir, dtype=args.dtype, device="cpu")
    _, grid = vlm.geometry(0)
    ans = HFAnswerer(AnswerConfig(name="hf", model=model_dir, device="cpu", dtype=args.dtype,
                                  max_new_tokens=1))
    warm = context(vlm, grid, 0.01, 1, 1)
    ans.answer(warm.question, warm)             # first-call allocations, one frame
    ctx = context(vlm, grid, keep, args.frames, args.clips)
    with PeakRSS() as mem:
        t = time.perf_counter()
        out = ans.answer(ctx.question, ctx)
        ttft = time.perf_counter() - t
    return {"keep": keep, "visual_tokens": int(out.timings["visual_tokens"]),
            "prompt_tokens": int(out.timings["prompt_tokens"]),
            "prefill_s": round(out.timings["prefill_s"], 3), "ttft_s": round(ttft, 3),
            "peak_extra_mib": round(mem.extra_mib, 1), "grid": list(grid),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "load": [round(x, 2) for x in os.getloadavg()]}


def render(meta: dict) -> str:
    """The results table (markdown) of one run."""
    rows = meta["rows"]
    full = next((x for x in rows if x["keep"] == 1.0), None)
    lines = [f"# VideoLLM prefill: {meta['model']} ({meta['dtype']}, random weights)", "",
             f"Context: {meta['frames']} frames retrieved out of an hour ({meta['clips']} clips of "
             f"{meta['frames'] // meta['clips']} frames), each clip introduced by its time and followed "
             f"by its on-screen text; {rows[0]['grid'][0]}x{rows[0]['grid'][1]} tokens per frame. "
             "Each keep ratio measured in a fresh process of the same run (`benchmarks/prefill.py`).",
             "", f"Machine: {meta['cpu']}, {meta['cores']} cores, torch {rows[0]['torch']} with "
             f"{rows[0]['torch_threads']} threads, {meta['date']}. The machine was shared with other "
             f"work: load average (1/5/15 min) {meta['load_before']} at the start and "
             f"{meta.get('load_after')} at the end; the load column is the 1-minute load average when "
             "the row finished.", "",
             "| tokens kept | visual tokens | prompt tokens | prefill (s) | time to first token (s) "
             "| prefill saved | peak memory over the call (MiB) | memory saved | load |",
             "|---|---|---|---|---|---|---|---|---|"]
    for x in rows:
        saved = f"{100 * x['prefill_saved']:.1f} %" if full else "—"
        msaved = f"{100 * x['memory_saved']:.1f} %" if full else "—"
        lines.append(f"| {100 * x['keep']:.0f} % | {x['visual_tokens']} | {x['prompt_tokens']} | "
                     f"{x['prefill_s']:.2f} | {x['ttft_s']:.2f} | {saved} | {x['peak_extra_mib']:.0f} | "
                     f"{msaved} | {x['load'][0]} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(ARCHS), default="llava-ov-0.5b")
    ap.add_argument("--keep", default="0.1,0.25,1.0", help="keep ratios, comma separated")
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "prefill"),
                    help="results as OUT.json and OUT.md")
    ap.add_argument("--render", default="", help="only write the .md of an existing results .json")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)  # model dir: measure one ratio
    args = ap.parse_args()
    if args.render:
        p = Path(args.render)
        p.with_suffix(".md").write_text(render(json.loads(p.read_text())))
        return 0
    if args.child:
        print("RESULT " + json.dumps(measure(args.child, float(args.keep), args)), flush=True)
        return 0

    load_before = os.getloadavg()
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    cpu_name = next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines()
                     if ln.startswith("Model name")), platform.processor())
    meta = {"model": args.model, "arch": ARCHS[args.model]["kw"], "dtype": args.dtype,
            "frames": args.frames, "clips": args.clips, "cpu": cpu_name, "cores": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load_before": [round(x, 2) for x in load_before], "rows": []}
    out = Path(f"{args.out}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model(args.model, Path(tmp) / args.model)
        for r in [float(x) for x in args.keep.split(",")]:
            # each ratio in a fresh process, so its peak memory is its own
            cmd = [sys.executable, __file__, "--child", model_dir, "--keep", str(r),
                   "--frames", str(args.frames), "--clips", str(args.clips), "--dtype", args.dtype,
                   "--threads", str(args.threads)]
            res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ,
                                 "PYTHONPATH": str(ROOT)})
            line = next((ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                raise SystemExit(f"keep {r} failed:\n{res.stderr[-2000:]}")
            meta["rows"].append(json.loads(line[7:]))
            print(json.dumps(meta["rows"][-1]), flush=True)
            full = next((x for x in meta["rows"] if x["keep"] == 1.0), None)
            for x in meta["rows"]:
                if full:
                    x["prefill_saved"] = round(1 - x["prefill_s"] / full["prefill_s"], 4)
                    x["memory_saved"] = round(1 - x["peak_extra_mib"] / max(full["peak_extra_mib"], 1e-9), 4)
            meta["load_after"] = [round(x, 2) for x in os.getloadavg()]
            out.write_text(json.dumps(meta, indent=1) + "\n")   # partial results survive
            out.with_suffix(".md").write_text(render(meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

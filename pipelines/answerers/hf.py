"""The hf answerer: a VideoLLM run in-process, fed the retrieved visual tokens themselves.

The store's tokens are already in the LLM's input space (the ``vlm`` encoder stores what the
model's projector, merger or pixel shuffle puts out), so nothing is re-encoded: the prompt is
built as token ids with a placeholder where each kept visual token goes, embedded by the
model, and the kept tokens are written into those rows (``inputs_embeds``), clip by clip in
chronological order. Each clip is introduced by its time as text ("Frame from 00:12:31:")
and followed by the on-screen text read there.

Positions are the real ones: LLaVA-OneVision and SmolVLM number the sequence as sent (1-D
RoPE) and LLaVA-OneVision ends each clip with its newline embedding, as it ends a video.
Qwen2.5-VL gets M-RoPE ids as its own ``get_rope_index`` computes them for each clip as a
video (temporal channel from the tokens' real times: ``tokens_per_second`` per second since
the clip's start; rows and columns from the kept tokens' grid positions), so a pruned token
keeps the ids it has in the full clip; decoding continues from the largest id + 1, as
``generate`` does after a full prefill. ``generate`` given ``inputs_embeds`` alone cannot
derive these ids (transformers issue 35463), so the answerer runs its own greedy loop with
the KV cache and explicit position ids at every step.

An answerer refuses a context whose tokens come from another tower (:class:`TokenSpec`
mismatch). ``Answer.timings`` gets ``prefill_s``, ``generate_s``, ``visual_tokens`` and
``prompt_tokens``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamvid.config import AnswerConfig
from streamvid.errors import StoreError
from streamvid.types import Answer, Answerer, Context, TokenSpec, format_time

from .base import ANSWERERS
from .extractive import evidence_of

log = logging.getLogger(__name__)

_CHAT = {  # family -> (before the moments, after the question)
    "llava-ov": ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n",
                 "<|im_end|>\n<|im_start|>assistant\n"),
    "qwen2.5-vl": ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n",
                   "<|im_end|>\n<|im_start|>assistant\n"),
    "smolvlm": ("<|im_start|>User: ", "<end_of_utterance>\nAssistant:"),
}
_STOP = ("<|im_end|>", "<end_of_utterance>", "<|endoftext|>")


@dataclass
class Prompt:
    """A context laid out for one model: ids with placeholders, and what goes in them."""

    ids: list[int]              # token ids; visual rows hold the family's placeholder id
    visual: Any                 # [V, D] tensor: the embeddings of the visual rows, in order
    is_visual: np.ndarray       # [L] bool
    positions: Any = None       # [3, 1, L] M-RoPE ids (Qwen2.5-VL), else None (1-D: 0..L-1)
    visual_tokens: int = 0      # stored tokens sent (LLaVA-OV newline rows not counted)
    clips: int = 0              # clips sent with visual tokens

    @property
    def next_position(self) -> int:
        return int(self.positions.max()) + 1 if self.positions is not None else len(self.ids)


def check_tokens(spec: TokenSpec | None, model: TokenSpec) -> None:
    """Refuse tokens that the model cannot read (another tower, layer or token space)."""
    if spec is None:
        raise StoreError(f"the store records no vision tower for its tokens, so the hf answerer "
                         f"cannot use them with {model.model}; fix: re-index with the profile of "
                         "this model (configs/hf-*.yaml, encoder.name: vlm)")
    if (spec.model, spec.feature_layer, spec.space) != (model.model, model.feature_layer, model.space):
        hint = (f"ask with answer.model: {spec.model}" if spec.space.startswith("llm-input:")
                else "re-index with the profile of this model (configs/hf-*.yaml)")
        raise StoreError(f"the store's visual tokens come from {spec}, but the hf answerer's model "
                         f"reads {model}; fix: {hint}, or re-index with encoder.name: vlm, "
                         f"encoder.model: {model.model}")


@ANSWERERS.register("hf")
class HFAnswerer(Answerer):
    """A VideoLLM (LLaVA-OneVision, Qwen2.5-VL, SmolVLM2) fed the retrieved tokens."""

    name = "hf"

    def __init__(self, config: AnswerConfig | None = None, *, local_files_only: bool = False):
        """``local_files_only``: load a hub model only from the local cache, never download."""
        self.config = config or AnswerConfig(name="hf")
        self._local_only = local_files_only
        self._vlm: Any = None

    # ------------------------------------------------------------------ model
    def vlm_for(self, spec: TokenSpec | None):
        """The model named by ``answer.model`` (or, when empty, the store's own), loaded once,
        after checking that it reads the context's tokens."""
        from streamvid.encoders.vlm import load_vlm, model_name

        model = self.config.model
        if not model:
            if spec is None or not spec.space.startswith("llm-input:"):
                raise StoreError("answer.model is empty and the store was not built with a "
                                 "VideoLLM's vision tower; fix: re-index with a configs/hf-*.yaml "
                                 "profile, or set answer.model")
            model = spec.model
        if self._vlm is None or self._vlm.name != model_name(model):
            self._vlm = load_vlm(model, dtype=self.config.dtype, device=self.config.device,
                                 local_files_only=self._local_only)
        grid = spec.grid if spec is not None else (0, 0)
        check_tokens(spec, self._vlm.token_spec(grid))
        return self._vlm

    # ------------------------------------------------------------------ prompt
    def prompt(self, context: Context, vlm=None) -> Prompt:
        """Lay out ``context`` for the model (see the module docstring)."""
        import torch

        vlm = vlm or self.vlm_for(context.tokens)
        tok = vlm.tokenizer
        fam = vlm.family
        cfg = vlm.config
        grid = context.tokens.grid
        ids: list[int] = []
        is_vis: list[bool] = []
        visual: list[Any] = []
        pos: list[tuple[int, int, int]] = []
        cur = 0
        n_vis = n_clips = 0

        def text(s: str) -> None:
            nonlocal cur
            new = tok(s, add_special_tokens=False)["input_ids"] if s else []
            ids.extend(new)
            is_vis.extend([False] * len(new))
            pos.extend((cur + i,) * 3 for i in range(len(new)))
            cur += len(new)

        def slots(n: int, placeholder: int, coords: list[tuple[int, int, int]] | None = None) -> None:
            ids.extend([placeholder] * n)
            is_vis.extend([True] * n)
            if coords is not None:
                pos.extend(coords)

        before, after = _CHAT[fam]
        text(before)
        dim = vlm.hidden
        for it in context.items:
            c = it.clip
            visual_ok = it.token_positions is not None and it.tokens.shape[1] == dim and it.n_tokens
            text(f"Frame from {format_time(c.start if visual_ok else c.keyframe)}:")
            if not visual_ok:
                if c.description:
                    text(" " + c.description)
            else:
                n_clips += 1
                n_vis += it.n_tokens
                rows = torch.from_numpy(np.ascontiguousarray(it.tokens, np.float32))
                if fam == "llava-ov":
                    slots(it.n_tokens + 1, cfg.video_token_id)
                    visual.append(rows)
                    visual.append(vlm.model.model.image_newline.detach().float()[None].cpu())
                elif fam == "qwen2.5-vl":
                    text("<|vision_start|>")
                    tps = float(cfg.vision_config.tokens_per_second)
                    st = cur
                    coords = [(st + int(math.floor((t - c.start) * tps + 1e-6)), st + int(r), st + int(q))
                              for t, r, q in it.coords(grid)]
                    slots(it.n_tokens, cfg.video_token_id, coords)
                    visual.append(rows)
                    cur = st + max(grid)
                    text("<|vision_end|>")
                else:
                    times = np.asarray(it.token_times)
                    for t in _unique(times):
                        sel = times == t
                        text("<fake_token_around_image><global-img>")
                        slots(int(sel.sum()), cfg.image_token_id)
                        visual.append(rows[torch.from_numpy(sel)])
                        text("<fake_token_around_image>")
            ocr = " ".join(c.ocr_text.split())
            text(f"\nOn screen: {ocr}\n" if ocr else "\n")
        q = context.question.text.strip() or "Where in the video does the given picture appear?"
        text(q)
        text(after)
        if fam != "qwen2.5-vl":
            cur_pos = None
        else:
            cur_pos = torch.tensor(pos, dtype=torch.long).T[:, None, :]
        vis = torch.cat(visual) if visual else torch.zeros((0, dim))
        return Prompt(ids, vis, np.asarray(is_vis, bool), cur_pos, n_vis, n_clips)

    def embeds(self, prompt: Prompt, vlm):
        """``[1, L, D]`` input embeddings: the ids embedded, the visual rows replaced."""
        import torch

        emb = vlm.embed(prompt.ids).clone()
        mask = torch.from_numpy(prompt.is_visual).to(emb.device)
        emb[mask] = prompt.visual.to(emb.device, emb.dtype)
        return emb[None]

    # ------------------------------------------------------------------ answer
    def answer(self, question, context: Context) -> Answer:
        import torch

        vlm = self.vlm_for(context.tokens)
        p = self.prompt(context, vlm)
        emb = self.embeds(p, vlm)
        model = vlm.model
        tok = vlm.tokenizer
        stop = {i for i in (tok.convert_tokens_to_ids(s) for s in _STOP)
                if isinstance(i, int) and i != tok.unk_token_id}
        if tok.eos_token_id is not None:
            stop.add(int(tok.eos_token_id))
        dev = emb.device
        out_ids: list[int] = []
        with vlm.lock, torch.inference_mode():
            t0 = time.perf_counter()
            pos = p.positions.to(dev) if p.positions is not None else None
            out = model(inputs_embeds=emb, position_ids=pos, use_cache=True, logits_to_keep=1)
            logits = out.logits[0, -1]
            t1 = time.perf_counter()
            nxt = p.next_position
            for step in range(self.config.max_new_tokens):
                tid = int(logits.argmax())
                if tid in stop:
                    break
                out_ids.append(tid)
                if step + 1 == self.config.max_new_tokens:
                    break
                e = vlm.embed([tid])[None]
                kw = {}
                if p.positions is not None:
                    kw["position_ids"] = torch.full((3, 1, 1), nxt + step, dtype=torch.long, device=dev)
                out = model(inputs_embeds=e, cache=out.cache, use_cache=True, logits_to_keep=1, **kw)
                logits = out.logits[0, -1]
            t2 = time.perf_counter()
        text = tok.decode(out_ids, skip_special_tokens=True).strip()
        evidence = tuple(evidence_of(it) for it in context.hits())
        timings = {"prefill_s": t1 - t0, "generate_s": t2 - t1, "visual_tokens": float(p.visual_tokens),
                   "prompt_tokens": float(len(p.ids)), "generated_tokens": float(len(out_ids))}
        return Answer(text or "(the model gave no answer)", evidence, timings)


def _unique(times: np.ndarray) -> list[float]:
    out: list[float] = []
    for t in times.tolist():
        if not out or t != out[-1]:
            out.append(t)
    return out

